//! `specwright-runc`: the policy chain in front of a real OCI runtime, for
//! engines that already write the container's spec (buildah, podman,
//! containerd, Docker, BuildKit). It takes runc's command line; on
//! `create` and `run` it runs the configured chain over the bundle's
//! config.json and writes the result back atomically; then, for every
//! subcommand, it `exec`s the real runtime with the engine's arguments
//! (without ours), so the runtime's pid, signals and exit code are the
//! engine's to see.
//!
//! A denial or any other failure stops before the real runtime runs: the
//! message goes to stderr and to the runtime's `--log` file (where
//! containerd looks), config.json stays as it was, and the exit code is 1.

pub mod args;
pub mod config;

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::policy::{Limits, PolicyRuntime};
use crate::state::{Owner, DEFAULT_STATE_DIR};
use crate::step::StepOptions;
use crate::sys::{RealSyscalls, Syscalls};
use crate::StepContext;
use args::{Creation, Invocation, LogTarget, OwnFlags};
use config::{RuntimeConfig, CONFIG_ENV};

/// The most an engine's config.json may hold.
pub const MAX_ENGINE_SPEC_BYTES: u64 = 16 << 20;

/// Runs the wrapper with the process's arguments: on success this does
/// not return (the real runtime replaces the process); the exit code of a
/// failure otherwise.
pub fn main() -> i32 {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    crate::cli::stop_on_signals();
    let invocation = match args::parse(&args) {
        Ok(invocation) => invocation,
        Err(e) => {
            eprintln!("specwright-runc: {e}");
            return 1;
        }
    };
    match run(invocation) {
        Ok(never) => match never {},
        Err((log, e)) => {
            let message = format!("specwright-runc: {e:#}");
            eprintln!("{message}");
            if let Err(log_error) = write_log(&log, &message) {
                eprintln!("specwright-runc: writing the runtime log: {log_error:#}");
            }
            match crate::interrupt::requested() {
                Some(signal) => 128 + signal,
                None => 1,
            }
        }
    }
}

/// What cannot happen: `run` only returns with an error.
enum Never {}

fn run(invocation: Invocation) -> std::result::Result<Never, (LogTarget, anyhow::Error)> {
    let Invocation {
        own,
        passthrough,
        log,
        subcommand: _,
        creation,
    } = invocation;
    let result = (|| {
        let config = RuntimeConfig::load(&RealSyscalls, std::env::var_os(CONFIG_ENV).as_deref())?;
        let settings = config.overridden_by(own);
        let real = real_runtime(settings.real_runtime.as_deref())?;
        if let Some(creation) = &creation {
            if !settings.policies.is_empty() {
                review(creation, &settings)?;
            }
        }
        let error = Command::new(&real).args(&passthrough).exec();
        Err(anyhow::Error::new(error).context(format!("running {}", real.display())))
    })();
    result.map_err(|e| (log, e))
}

/// Runs the chain over the bundle's config.json and writes the result back.
fn review(creation: &Creation, settings: &OwnFlags) -> Result<()> {
    crate::validate::prepare_in_background();
    if let Some(config) = &creation.config {
        if config != Path::new("config.json") {
            bail!(
                "--config {}: with policies the engine's spec must be the bundle's config.json",
                config.display()
            );
        }
    }
    let bundle_dir = match &creation.bundle {
        Some(dir) => dir.clone(),
        None => std::env::current_dir().context("the working directory (the bundle, as no --bundle was given)")?,
    };
    let config_path = bundle_dir.join("config.json");
    let sys: Arc<dyn Syscalls> = Arc::new(RealSyscalls);
    let text = sys
        .read_host_file(&config_path, MAX_ENGINE_SPEC_BYTES)
        .with_context(|| format!("reading the engine's spec {}", config_path.display()))?
        .with_context(|| format!("the engine's spec {}: no such file", config_path.display()))?;
    let bundle = sys
        .open_given_bundle(&bundle_dir)
        .with_context(|| format!("bundle {}", bundle_dir.display()))?;
    let limits = Limits {
        time: crate::cli::time_limit(
            settings
                .policy_timeout_ms
                .unwrap_or(Limits::default().time.as_millis() as u64),
        )?,
        memory_bytes: crate::cli::memory_limit(
            settings
                .policy_memory_mib
                .unwrap_or(Limits::default().memory_bytes >> 20),
        )?,
    };
    let state_dir = settings
        .state_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
    let state = sys
        .open_state_dir(&state_dir)
        .with_context(|| format!("state dir {}", state_dir.display()))?;
    let audit = Arc::new(sys.open_audit(&state).context("audit log")?);
    let runtime = PolicyRuntime::new(limits)?.with_cache(&sys.open_cache_dir(&state)?)?;
    let chain = settings
        .policies
        .iter()
        .map(|p| runtime.load_spec(p))
        .collect::<Result<Vec<_>, _>>()?;
    let facts = crate::facts::detect()?;
    let ctx = StepContext {
        state,
        sys: sys.clone(),
        audit,
        // review_engine_spec makes the step's mounting the engine's.
        options: StepOptions {
            owner: Owner::this_process(),
            ..StepOptions::default()
        },
    };
    let spec = crate::review_engine_spec(&runtime, &chain, &creation.id, &text, &facts, ctx)
        .with_context(|| format!("container {}", creation.id))?;
    let text = crate::validate::pretty(&spec)?;
    sys.write_config(&bundle, text.as_bytes())
        .with_context(|| format!("writing {}", config_path.display()))?;
    Ok(())
}

/// Where a runtime is looked for after PATH.
const SYSTEM_PATH: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// The runtime to hand the bundle to: `choice` (`runc`, `crun`, or a
/// path), or `runc` then `crun` on PATH (then in the system directories);
/// never this binary itself, which
/// may be installed as `runc`.
pub fn real_runtime(choice: Option<&str>) -> Result<PathBuf> {
    let this = std::fs::canonicalize("/proc/self/exe").context("/proc/self/exe")?;
    let is_this = |p: &Path| std::fs::canonicalize(p).is_ok_and(|real| real == this);
    if let Some(path) = choice.filter(|c| c.contains('/')) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("real runtime {}: no such file", path.display());
        }
        if is_this(&path) {
            bail!("real runtime {}: is specwright-runc itself", path.display());
        }
        return Ok(path);
    }
    let names: &[&str] = match choice {
        Some(name) => &[name][..],
        None => &["runc", "crun"],
    };
    // Engines do not always pass PATH on (podman's cleanup `delete` runs
    // without one): the system directories come after it.
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .chain(SYSTEM_PATH.iter().map(PathBuf::from))
        .collect();
    for name in names {
        if let Some(found) = dirs.iter().map(|d| d.join(name)).find(|p| p.is_file() && !is_this(p)) {
            return Ok(found);
        }
    }
    bail!(
        "no real runtime: {} not on PATH or in {} (other than specwright-runc itself); set --real-runtime or real_runtime in the configuration",
        names.join(" or "),
        SYSTEM_PATH.join(":")
    )
}

/// Adds `message` to the runtime's log file, as runc would write it
/// (`--log-format json`: one JSON object a line).
fn write_log(log: &LogTarget, message: &str) -> Result<()> {
    use std::io::Write;
    let Some(path) = &log.file else {
        return Ok(());
    };
    let line = if log.json {
        let mut line = serde_json::to_string(&serde_json::json!({
            "level": "error",
            "msg": message,
            "time": rfc3339_now(),
        }))?;
        line.push('\n');
        line
    } else {
        format!("time=\"{}\" level=error msg={:?}\n", rfc3339_now(), message)
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("{}", path.display()))?;
    file.write_all(line.as_bytes())
        .with_context(|| format!("{}", path.display()))?;
    Ok(())
}

/// Now in UTC, as RFC 3339 with seconds (`2026-12-04T17:02:03Z`).
fn rfc3339_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

/// Seconds since the epoch as an RFC 3339 UTC time (civil-from-days, as
/// in Howard Hinnant's date algorithms).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_403_723), "2026-12-04T17:02:03Z");
    }

    #[test]
    fn a_json_log_gets_one_error_object_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("log.json");
        std::fs::write(&file, "{\"level\":\"info\",\"msg\":\"before\"}\n").unwrap();
        let log = LogTarget {
            file: Some(file.clone()),
            json: true,
        };
        write_log(&log, "specwright-runc: denied: \"x\"").unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        let last: serde_json::Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
        assert_eq!(last["level"], "error");
        assert_eq!(last["msg"], "specwright-runc: denied: \"x\"");
    }

    #[test]
    fn the_real_runtime_is_never_this_binary() {
        let this = std::fs::canonicalize("/proc/self/exe").unwrap();
        let err = real_runtime(Some(this.to_str().unwrap())).unwrap_err().to_string();
        assert!(err.contains("itself"), "{err}");
        let err = real_runtime(Some("/nonexistent/runc")).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/runc"), "{err}");
    }
}
