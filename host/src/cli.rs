//! The `specwright` command line; `main.rs` only calls [`main`].

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use serde_json::json;

use crate::audit::Audit;
use crate::cache::CacheUse;
use crate::policy::{Limits, PolicyRuntime};
use crate::state::{Owner, StateDir, DEFAULT_STATE_DIR};
use crate::step::{gc, release_step, GcOutcome, StepOptions};
use crate::sys::{Op, RealSyscalls, RecordingSyscalls, Syscalls};
use crate::StepContext;

#[derive(Parser)]
#[command(
    name = "specwright",
    version,
    about = "Build-step requests in, OCI runtime specs out, through sandboxed WebAssembly policies."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the policy chain for one step and write its config.json.
    Spec {
        /// A policy component, `FILE[:SETTINGS.json]`; repeat for a chain.
        /// `default` names the embedded default policy. Without any, the
        /// default policy runs alone.
        #[arg(long = "policy", value_name = "FILE[:SETTINGS.json]")]
        policies: Vec<String>,
        /// The step request (format v1 JSON); `-` reads standard input.
        #[arg(long, value_name = "FILE|-", default_value = "-")]
        request: String,
        /// Host facts to use instead of detecting them (for reproducible output).
        #[arg(long, value_name = "FILE")]
        host_facts: Option<PathBuf>,
        #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// Write config.json into this directory instead of standard output.
        #[arg(long, value_name = "DIR")]
        bundle: Option<PathBuf>,
        /// Run the policies against a host that performs nothing; print the
        /// planned operations with the spec.
        #[arg(long)]
        dry_run: bool,
        /// Bind each resolved selector, by file descriptor, onto its own
        /// mountpoint and give the runtime that: a later symlink swap cannot
        /// redirect it (the spec's paths then differ from BuildKit's).
        #[arg(long)]
        pin_selectors: bool,
        /// The process the step belongs to (default: the caller of
        /// specwright); `gc` releases the step once it is gone.
        #[arg(long, value_name = "PID")]
        owner_pid: Option<u32>,
        /// Time limit of one policy call, in milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 1000)]
        policy_timeout_ms: u64,
        /// Memory limit of one policy instance, in MiB.
        #[arg(long, value_name = "MIB", default_value_t = 64)]
        policy_memory_mib: usize,
    },
    /// Run one step under an OCI runtime: prepare a bundle, run the policy
    /// chain, run the container, release everything; exits with the
    /// container's exit code.
    Run {
        #[arg(long = "policy", value_name = "FILE[:SETTINGS.json]")]
        policies: Vec<String>,
        /// The step request (format v1 JSON); `-` reads standard input.
        #[arg(long, value_name = "FILE|-")]
        request: String,
        /// The root filesystem to run in (bound at the bundle's rootfs).
        #[arg(long, value_name = "DIR")]
        rootfs: PathBuf,
        /// `crun`, `runc`, or a path to an OCI runtime.
        #[arg(long, value_name = "crun|runc|PATH", default_value = "crun")]
        runtime: String,
        #[arg(long, value_name = "FILE")]
        host_facts: Option<PathBuf>,
        #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        #[arg(long)]
        pin_selectors: bool,
        #[arg(long, value_name = "MS", default_value_t = 1000)]
        policy_timeout_ms: u64,
        #[arg(long, value_name = "MIB", default_value_t = 64)]
        policy_memory_mib: usize,
    },
    /// Unmount and remove everything `spec` made for step ID.
    Release {
        #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        id: String,
    },
    /// Release every step whose owner process is gone.
    Gc {
        #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
    /// Work with policy components.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Precompile policies into the state dir's cache, so steps do not
    /// compile them (`default` names the embedded policy).
    Compile {
        #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Show a policy's world and version, imports, exports, size and metadata.
    Inspect {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the command line with the process's arguments; returns the exit code.
pub fn main() -> i32 {
    main_with_args(std::env::args_os())
}

/// Runs the command line with `args` (the first is the program name).
pub fn main_with_args<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    // Read first: a caller that exits at once leaves us to pid 1 soon.
    let parent = std::os::unix::process::parent_id();
    stop_on_signals();
    init_tracing();
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    match run(cli, parent) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("specwright: {e:#}");
            match crate::interrupt::requested() {
                Some(signal) => 128 + signal,
                None => 1,
            }
        }
    }
}

/// SIGINT and SIGTERM ask the process to stop: at once while it holds
/// nothing, after releasing what it holds otherwise (see `interrupt`).
fn stop_on_signals() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        return;
    };
    let _ = std::thread::Builder::new().name("signals".to_string()).spawn(move || {
        for signal in signals.forever() {
            crate::interrupt::request(signal);
        }
    });
}

/// Tracing events go to stderr when `SPECWRIGHT_LOG` is set (e.g. `info`).
fn init_tracing() {
    if let Ok(filter) = std::env::var("SPECWRIGHT_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .try_init();
    }
}

fn open_state(dir: &Path) -> Result<(StateDir, Arc<Audit>)> {
    let state = StateDir::open(dir).with_context(|| format!("state dir {}", dir.display()))?;
    let audit = Audit::to_file(state.open_audit_log().context("audit log")?);
    Ok((state, Arc::new(audit)))
}

/// Who owns a step `spec` makes: `--owner-pid`, or the caller. A caller
/// that has already exited (we were handed to pid 1) would leave a step
/// nobody collects, so it must be named.
fn step_owner(owner_pid: Option<u32>, parent: u32) -> Result<Owner> {
    match owner_pid {
        Some(pid) => Ok(Owner::of_pid(pid)),
        None if parent == 1 => bail!(
            "the calling process has exited (specwright's parent is pid 1): nothing would own the step; pass --owner-pid"
        ),
        None => Ok(Owner::of_pid(parent)),
    }
}

fn run(cli: Cli, parent: u32) -> Result<i32> {
    match cli.command {
        Command::Run {
            policies,
            request,
            rootfs,
            runtime,
            host_facts,
            state_dir,
            pin_selectors,
            policy_timeout_ms,
            policy_memory_mib,
        } => {
            crate::validate::prepare_in_background();
            let limits = Limits {
                time: time_limit(policy_timeout_ms)?,
                memory_bytes: memory_limit(policy_memory_mib)?,
            };
            let oci_runtime = crate::run::Runtime::find(&runtime)?;
            let request = read_request(&request)?;
            let facts = match &host_facts {
                Some(path) => crate::facts::read_facts_file(path)?,
                None => crate::facts::detect()?,
            };
            let (state, audit) = open_state(&state_dir)?;
            let policy_runtime = PolicyRuntime::new(limits)?.with_cache(&state.open_cache_dir()?)?;
            let chain = load_chain(&policy_runtime, &policies)?;
            let ctx = StepContext {
                state,
                sys: Arc::new(RealSyscalls),
                audit,
                options: StepOptions {
                    dry_run: false,
                    pin_selectors,
                    owner: Owner::this_process(),
                },
            };
            let _holding = crate::interrupt::Holding::start();
            Ok(crate::run::run(crate::run::RunArgs {
                runtime: &policy_runtime,
                chain: &chain,
                request_json: &request,
                facts: &facts,
                rootfs: &rootfs,
                oci_runtime,
                ctx,
            })?)
        }
        Command::Spec {
            policies,
            request,
            host_facts,
            state_dir,
            bundle,
            dry_run,
            pin_selectors,
            owner_pid,
            policy_timeout_ms,
            policy_memory_mib,
        } => {
            let memory_bytes = memory_limit(policy_memory_mib)?;
            let owner = step_owner(owner_pid, parent)?;
            spec(SpecArgs {
                policies,
                request,
                host_facts,
                state_dir,
                bundle,
                options: StepOptions {
                    dry_run,
                    pin_selectors,
                    owner,
                },
                limits: Limits {
                    time: time_limit(policy_timeout_ms)?,
                    memory_bytes,
                },
            })
            .map(|()| 0)
        }
        Command::Release { state_dir, id } => {
            if !specwright_core::request::is_valid_id(&id) {
                bail!("{id:?} is not a valid step id");
            }
            let (state, audit) = open_state(&state_dir)?;
            let report =
                release_step(&state, &RealSyscalls, &audit, &id).with_context(|| format!("releasing step {id}"))?;
            for warning in report.warnings() {
                eprintln!("specwright: warning: {warning}");
            }
            Ok(0)
        }
        Command::Policy { command } => policy_command(command).map(|()| 0),
        Command::Gc { state_dir } => {
            let (state, audit) = open_state(&state_dir)?;
            let mut failed = 0;
            for outcome in gc(&state, &RealSyscalls, &audit)? {
                match outcome {
                    GcOutcome::Kept { id, owner } => {
                        println!("kept {id}: owner {owner} still runs")
                    }
                    GcOutcome::Held { id, pid } => {
                        println!("skipped {id}: held by pid {pid}, which is working on it")
                    }
                    GcOutcome::Released { id, report } => {
                        println!("released {id}: {} mountpoints", report.released);
                        for warning in report.warnings() {
                            eprintln!("specwright: warning: {warning}");
                        }
                    }
                    GcOutcome::Failed { id, error } => {
                        failed += 1;
                        eprintln!("specwright: {id}: {error}");
                    }
                }
            }
            if failed > 0 {
                bail!("{failed} steps could not be released");
            }
            Ok(0)
        }
    }
}

fn load_chain(runtime: &PolicyRuntime, policies: &[String]) -> Result<Vec<crate::policy::LoadedPolicy>> {
    if policies.is_empty() {
        return Ok(vec![runtime.load_default()?]);
    }
    Ok(policies
        .iter()
        .map(|p| runtime.load_spec(p))
        .collect::<Result<Vec<_>, _>>()?)
}

fn policy_command(command: PolicyCommand) -> Result<()> {
    match command {
        PolicyCommand::Compile { state_dir, files } => {
            let (state, _) = open_state(&state_dir)?;
            let runtime = PolicyRuntime::new(Limits::default())?.with_cache(&state.open_cache_dir()?)?;
            for file in files {
                let (name, bytes) = PolicyRuntime::read_policy_file(&file)?;
                let (_, used) = runtime.compile(&name, &bytes)?;
                let verb = match used {
                    Some(CacheUse::Hit) => "already cached",
                    _ => "compiled",
                };
                println!("{name}: {verb}");
            }
            Ok(())
        }
        PolicyCommand::Inspect { file, json } => {
            let runtime = PolicyRuntime::new(Limits::default())?;
            let (name, bytes) = PolicyRuntime::read_policy_file(&file)?;
            let info = runtime.inspect(&name, &bytes)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
                return Ok(());
            }
            println!("policy:      {} {}", info.name, info.version);
            println!("description: {}", info.description);
            println!(
                "targets:     {}",
                info.targets
                    .as_deref()
                    .unwrap_or("(does not import the specwright host)")
            );
            println!("size:        {} bytes", info.size_bytes);
            println!("exports:     {}", info.exports.join(", "));
            println!("imports:");
            for import in &info.imports {
                println!("  {import}");
            }
            Ok(())
        }
    }
}

struct SpecArgs {
    policies: Vec<String>,
    request: String,
    host_facts: Option<PathBuf>,
    state_dir: PathBuf,
    bundle: Option<PathBuf>,
    options: StepOptions,
    limits: Limits,
}

fn read_request(arg: &str) -> Result<String> {
    let max = specwright_core::request::MAX_REQUEST_BYTES;
    let bounded = |reader: &mut dyn Read, what: &str| -> Result<String> {
        let mut bytes = Vec::new();
        reader
            .take(max as u64 + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("reading {what}"))?;
        if bytes.len() > max {
            bail!("{what}: more than the {max} bytes a request may have");
        }
        String::from_utf8(bytes).with_context(|| format!("{what}: not UTF-8"))
    };
    if arg == "-" {
        return bounded(&mut std::io::stdin(), "the request from standard input");
    }
    let mut file = std::fs::File::open(arg).with_context(|| format!("reading request file {arg}"))?;
    bounded(&mut file, &format!("request file {arg}"))
}

/// The memory limit in bytes: at least 1 MiB and at most the 4 GiB a
/// 32-bit WebAssembly memory can address.
fn memory_limit(mib: usize) -> Result<usize> {
    const MAX_MIB: usize = 4096;
    if mib == 0 || mib > MAX_MIB {
        bail!("--policy-memory-mib {mib}: must be between 1 and {MAX_MIB} (a policy's memory is 32-bit)");
    }
    Ok(mib << 20)
}

/// The time limit of one policy call: at least 1 ms (counted in 10 ms
/// ticks) and at most an hour, so a typo cannot lift it.
fn time_limit(ms: u64) -> Result<Duration> {
    const MAX_MS: u64 = 3_600_000;
    if ms == 0 || ms > MAX_MS {
        bail!("--policy-timeout-ms {ms}: must be between 1 and {MAX_MS} (one hour)");
    }
    Ok(Duration::from_millis(ms))
}

fn op_json(op: &Op) -> serde_json::Value {
    match op {
        Op::CreateDir(p) => json!({"op": "mkdir", "path": p}),
        Op::RemoveDir(p) => json!({"op": "rmdir", "path": p}),
        Op::CreateFile(p) => json!({"op": "create-file", "path": p}),
        Op::RemoveFile(p) => json!({"op": "remove-file", "path": p}),
        Op::Mount {
            source,
            target,
            fstype,
            flags,
            data,
        } => {
            json!({"op": "mount", "source": source, "target": target, "fstype": fstype, "flags": format!("{:?}", nix::mount::MsFlags::from_bits_truncate(*flags)), "data": data})
        }
        Op::Unmount { target, flags } => json!({"op": "umount", "target": target, "flags": flags}),
        Op::DeleteContainer { runtime, id } => json!({"op": "delete-container", "runtime": runtime, "id": id}),
        Op::HasSubmounts(p) => json!({"op": "list-submounts", "path": p}),
    }
}

fn spec(args: SpecArgs) -> Result<()> {
    crate::validate::prepare_in_background();
    let request = read_request(&args.request)?;
    let facts = match &args.host_facts {
        Some(path) => crate::facts::read_facts_file(path)?,
        None => crate::facts::detect()?,
    };
    // A dry run writes nothing, not even the compile cache.
    let opened = if args.options.dry_run {
        None
    } else {
        Some(open_state(&args.state_dir)?)
    };
    let runtime = match &opened {
        None => PolicyRuntime::new(args.limits)?,
        Some((state, _)) => PolicyRuntime::new(args.limits)?.with_cache(&state.open_cache_dir()?)?,
    };
    let chain = load_chain(&runtime, &args.policies)?;

    if args.options.dry_run {
        let state = StateDir::at(&args.state_dir);
        let recorder = Arc::new(RecordingSyscalls::dry_run());
        let ctx = StepContext {
            state,
            sys: recorder.clone(),
            audit: Arc::new(Audit::events_only()),
            options: args.options,
        };
        let outcome = crate::generate_spec(&runtime, &chain, &request, &facts, ctx)?;
        let operations: Vec<_> = recorder.ops().iter().map(op_json).collect();
        let plan = json!({"spec": outcome.spec, "operations": operations});
        println!("{}", serde_json::to_string_pretty(&plan).context("encoding the plan")?);
        return Ok(());
    }

    // The bundle directory, and any parent of it, this step creates is
    // removed again if it fails.
    let created = match &args.bundle {
        Some(bundle) => create_dirs(bundle).with_context(|| format!("creating bundle dir {}", bundle.display()))?,
        None => Vec::new(),
    };
    let result = spec_into(&args, &runtime, &chain, &request, &facts, opened);
    if result.is_err() {
        // Only what this step made, deepest first: empty directories (the
        // config is written last, and only on success).
        for dir in created.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
    result
}

/// Creates `path` and its missing parents, returning those this call
/// made, outermost first (one another process makes meanwhile is not ours).
fn create_dirs(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    let missing: Vec<&Path> = path
        .ancestors()
        .take_while(|p| !p.as_os_str().is_empty() && !p.exists())
        .collect();
    let mut created = Vec::new();
    for dir in missing.into_iter().rev() {
        match std::fs::create_dir(dir) {
            Ok(()) => created.push(dir.to_path_buf()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(e) => {
                for made in created.iter().rev() {
                    let _ = std::fs::remove_dir(made);
                }
                return Err(e);
            }
        }
    }
    Ok(created)
}

fn spec_into(
    args: &SpecArgs,
    runtime: &PolicyRuntime,
    chain: &[crate::policy::LoadedPolicy],
    request: &str,
    facts: &specwright_core::HostFacts,
    opened: Option<(StateDir, Arc<Audit>)>,
) -> Result<()> {
    let (state, audit) = match opened {
        Some(opened) => opened,
        None => open_state(&args.state_dir)?,
    };
    let sys: Arc<dyn Syscalls> = Arc::new(RealSyscalls);
    let ctx = StepContext {
        state: state.clone(),
        sys: sys.clone(),
        audit: audit.clone(),
        options: args.options,
    };
    let _holding = crate::interrupt::Holding::start();
    let outcome = crate::generate_spec(runtime, chain, request, facts, ctx)?;
    let written = (|| -> Result<()> {
        if let Some(signal) = crate::interrupt::requested() {
            bail!("interrupted by {}; released the step", crate::interrupt::name(signal));
        }
        if !args.options.owner.is_alive() {
            bail!(
                "the step's owner, pid {}, exited while the step was made; released it",
                args.options.owner.pid
            );
        }
        let mut text = serde_json::to_string_pretty(&outcome.spec).context("encoding the spec")?;
        text.push('\n');
        match &args.bundle {
            Some(bundle) => crate::state::write_file_in(bundle, "config.json", text.as_bytes())
                .with_context(|| format!("writing {}", bundle.join("config.json").display())),
            None => std::io::stdout()
                .write_all(text.as_bytes())
                .context("writing the spec to standard output"),
        }
    })();
    if let Err(e) = written {
        if let Err(release) = crate::step::release_locked(&state, sys.as_ref(), &audit, outcome.lock) {
            return Err(e.context(format!("releasing the step's mounts also failed: {release}")));
        }
        return Err(e);
    }
    Ok(())
}
