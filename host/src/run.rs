//! `specwright run`: one build step under a real OCI runtime, the way
//! BuildKit's runc executor uses GenerateSpec.
//!
//! Prepare (rootfs bind, user, resolv.conf, hosts) → the policy chain →
//! config.json → `crun|runc run --bundle` with stdio passed through and
//! SIGINT/SIGTERM forwarded → release everything, whatever happened.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use specwright_core::request::{parse_user, Network};
use specwright_core::{HostFacts, Request};

use crate::policy::{LoadedPolicy, PolicyRuntime};
use crate::resolve::resolve_in_root;
use crate::state::{Bundle, StepLock};
use crate::step::StepHost;
use crate::StepContext;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Prepare(String),
    #[error(transparent)]
    Spec(#[from] crate::SpecError),
    #[error("running {runtime}: {message}")]
    Runtime { runtime: String, message: String },
    #[error("the container exited with {code}, but releasing the step failed: {message}")]
    Release { code: i32, message: String },
    #[error("{error}; releasing the step also failed: {release}")]
    ReleaseAfterError { error: Box<RunError>, release: String },
}

/// Which OCI runtime, and how to call it.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub path: PathBuf,
}

impl Runtime {
    /// `crun`, `runc` (looked up on PATH), or a path to a runtime binary.
    pub fn find(name: &str) -> Result<Runtime, RunError> {
        if name.contains('/') {
            let path = PathBuf::from(name);
            return if path.exists() {
                Ok(Runtime { path })
            } else {
                Err(RunError::Prepare(format!("runtime {name} does not exist")))
            };
        }
        let dirs = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&dirs)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
            .map(|path| Runtime { path })
            .ok_or_else(|| RunError::Prepare(format!("runtime {name} is not on PATH (apt-get install {name})")))
    }

    fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// A cgroup v2 hierarchy mounted at /sys/fs/cgroup/unified beside v1
/// controllers: crun refuses to run there.
pub fn hybrid_cgroups() -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| {
            m.lines()
                .any(|l| l.split(' ').nth(4) == Some("/sys/fs/cgroup/unified") && l.contains(" - cgroup2 "))
        })
        .unwrap_or(false)
}

/// A user resolved against the rootfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// Reads a file inside the rootfs without following symlinks out of it.
fn read_in_rootfs(rootfs: &Path, path: &str) -> Option<String> {
    let resolved = resolve_in_root(rootfs, path).ok()?;
    let object = resolved.object?;
    // Reopening the resolved object through its descriptor reads exactly
    // what was resolved, whatever happens to the path meanwhile.
    std::fs::read_to_string(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&object))).ok()
}

/// Resolves `user` ("name|uid[:group|gid]") as runc does: names through the
/// rootfs's /etc/passwd and /etc/group, the primary group from passwd when
/// none is given, supplementary groups from /etc/group membership.
pub fn resolve_user(rootfs: &Path, user: &str) -> Result<ResolvedUser, RunError> {
    if user.is_empty() {
        return Ok(ResolvedUser {
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
        });
    }
    let passwd = read_in_rootfs(rootfs, "/etc/passwd").unwrap_or_default();
    let group = read_in_rootfs(rootfs, "/etc/group").unwrap_or_default();
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    // name:x:uid:gid:...
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && (f[0] == user_part || (user_part.parse::<u32>().is_ok() && f[2] == user_part)));
    let (name, uid, passwd_gid) = match (&entry, user_part.parse::<u32>()) {
        (Some(f), _) => (
            Some(f[0].to_string()),
            f[2].parse::<u32>()
                .map_err(|_| RunError::Prepare(format!("bad uid for {} in /etc/passwd", f[0])))?,
            f[3].parse::<u32>().ok(),
        ),
        (None, Ok(uid)) => (None, uid, None),
        (None, Err(_)) => {
            return Err(RunError::Prepare(format!(
                "user {user_part:?} is not in the rootfs's /etc/passwd ({})",
                rootfs.join("etc/passwd").display()
            )))
        }
    };
    let groups: Vec<Vec<&str>> = group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 3)
        .collect();
    let gid = match group_part {
        None => passwd_gid.unwrap_or(0),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => groups
                .iter()
                .find(|f| f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| RunError::Prepare(format!("group {g:?} is not in the rootfs's /etc/group")))?,
        },
    };
    let mut additional_gids = Vec::new();
    if let Some(name) = &name {
        for f in &groups {
            let members = f.get(3).copied().unwrap_or("");
            if members.split(',').any(|m| m == name) {
                if let Ok(g) = f[2].parse::<u32>() {
                    if g != gid && !additional_gids.contains(&g) {
                        additional_gids.push(g);
                    }
                }
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
    })
}

/// The host's resolv.conf without loopback nameservers (they mean nothing
/// in another network namespace), unless the step uses the host network.
pub fn resolv_conf_for(host_resolv: &str, network: &Network) -> String {
    host_resolv
        .lines()
        .filter(|l| {
            if *network == Network::Host {
                return true;
            }
            let mut words = l.split_whitespace();
            match (words.next(), words.next()) {
                (Some("nameserver"), Some(addr)) => !(addr.starts_with("127.") || addr == "::1"),
                _ => true,
            }
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Capability names by number, as the kernel numbers them.
const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// This process's capability bounding set (`CapBnd` in /proc/self/status).
pub fn host_bounding_set() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapBnd:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Removes from every capability set what the host cannot grant (a
/// runtime refuses a spec asking for more than it has, as BuildKit's
/// insecure mode does on hosts without, say, CAP_SYS_RESOURCE); returns
/// what was dropped.
pub fn limit_to_host_capabilities(spec: &mut Value, bounding: Option<u64>) -> Vec<String> {
    let Some(bounding) = bounding else {
        return Vec::new();
    };
    let allowed = |name: &str| match CAPABILITIES.iter().position(|c| *c == name) {
        Some(bit) => bounding & (1u64 << bit) != 0,
        // A capability newer than this table: let the runtime decide.
        None => true,
    };
    let mut dropped: Vec<String> = Vec::new();
    if let Some(sets) = spec["process"]["capabilities"].as_object_mut() {
        for set in sets.values_mut() {
            if let Some(list) = set.as_array_mut() {
                list.retain(|c| {
                    let name = c.as_str().unwrap_or_default();
                    let keep = allowed(name);
                    if !keep && !dropped.iter().any(|d| d == name) {
                        dropped.push(name.to_string());
                    }
                    keep
                });
            }
        }
    }
    dropped
}

/// localhost and the step's hostname.
pub fn hosts_for(hostname: &str) -> String {
    let hostname = if hostname.is_empty() {
        specwright_core::buildkit::DEFAULT_HOSTNAME
    } else {
        hostname
    };
    format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.0.1\t{hostname}\n")
}

pub struct RunArgs<'a> {
    pub runtime: &'a PolicyRuntime,
    pub chain: &'a [LoadedPolicy],
    pub request_json: &'a str,
    pub facts: &'a HostFacts,
    pub rootfs: &'a Path,
    pub oci_runtime: Runtime,
    pub ctx: StepContext,
}

/// Runs the step; returns the container's exit code. Everything the step
/// made is released before this returns, on success and on error; a step
/// another process holds, or that an earlier run left, is refused and
/// left as it is.
pub fn run(args: RunArgs<'_>) -> Result<i32, RunError> {
    let prepare = |m: String| RunError::Prepare(m);
    let mut request = Request::parse_json(args.request_json).map_err(|e| prepare(e.to_string()))?;
    let state = &args.ctx.state;
    let lock = state.lock(&request.id).map_err(|e| prepare(e.to_string()))?;
    if state
        .read_record(&request.id)
        .map_err(|e| prepare(e.to_string()))?
        .is_some()
        || state.has_bundle(&request.id).map_err(|e| prepare(e.to_string()))?
    {
        return Err(prepare(format!(
            "step {} was not released (specwright release {})",
            request.id, request.id
        )));
    }
    // From here on, everything in the state dir under this id is ours.
    let bundle = state.create_bundle(&request.id).map_err(|e| prepare(e.to_string()))?;
    let result = run_in_bundle(&args, &mut request, &bundle, lock);
    then_released(result, state.remove_bundle(&request.id))
}

/// The run's outcome with what releasing after it said: a release that
/// failed is reported with the exit code or the error it followed.
fn then_released<E: std::fmt::Display>(
    result: Result<i32, RunError>,
    released: Result<(), E>,
) -> Result<i32, RunError> {
    match released {
        Ok(()) => result,
        Err(release) => Err(match result {
            Ok(code) => RunError::Release {
                code,
                message: release.to_string(),
            },
            Err(error) => RunError::ReleaseAfterError {
                error: Box::new(error),
                release: release.to_string(),
            },
        }),
    }
}

/// What the runner settles before the policies run: the rootfs, the user
/// (names resolved in the rootfs) and the bundle's resolv.conf and hosts.
fn prepare_request(
    args: &RunArgs<'_>,
    request: &mut Request,
    bundle: &Bundle,
) -> Result<(PathBuf, ResolvedUser), RunError> {
    let prepare = |m: String| RunError::Prepare(m);
    if args.oci_runtime.name() == "crun" && hybrid_cgroups() {
        return Err(prepare(
            "crun refuses this host's hybrid cgroups (cgroup v1 with cgroup2 at /sys/fs/cgroup/unified); use --runtime runc, or run in a private mount namespace with /sys/fs/cgroup/unified unmounted".to_string(),
        ));
    }
    let rootfs =
        std::fs::canonicalize(args.rootfs).map_err(|e| prepare(format!("rootfs {}: {e}", args.rootfs.display())))?;
    if !rootfs.is_dir() {
        return Err(prepare(format!("rootfs {} is not a directory", rootfs.display())));
    }
    let user = resolve_user(&rootfs, &request.user)?;
    if parse_user(&request.user).is_err() {
        request.user = format!("{}:{}", user.uid, user.gid);
    }
    request.validate().map_err(|e| prepare(e.to_string()))?;
    let written = |e: crate::state::StateError| prepare(e.to_string());
    if request.resolv_conf.is_empty() {
        let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let path = bundle
            .write("resolv.conf", resolv_conf_for(&host, &request.network).as_bytes())
            .map_err(written)?;
        request.resolv_conf = path.display().to_string();
    }
    if request.hosts_file.is_empty() {
        let path = bundle
            .write("hosts", hosts_for(&request.hostname).as_bytes())
            .map_err(written)?;
        request.hosts_file = path.display().to_string();
    }
    Ok((rootfs, user))
}

fn run_in_bundle(args: &RunArgs<'_>, request: &mut Request, bundle: &Bundle, lock: StepLock) -> Result<i32, RunError> {
    let (rootfs, user) = match prepare_request(args, request, bundle) {
        Ok(prepared) => prepared,
        Err(e) => {
            // Nothing was recorded: the step's lock file goes too.
            lock.remove();
            return Err(e);
        }
    };
    let step = args.ctx.step_host(request, lock)?;
    let (mut step, spec) = crate::run_chain(args.runtime, args.chain, step, request, args.facts, &args.ctx.audit)?;
    let result = start_container(args, &mut step, spec, &rootfs, &user, request, bundle);
    let released = step.release_all().map(|report| {
        for warning in report.warnings() {
            eprintln!("specwright: warning: {warning}");
        }
    });
    then_released(result, released)
}

/// The runner's edits of the spec (its rootfs, the user's groups, what the
/// host cannot grant), then config.json and the container itself.
fn start_container(
    args: &RunArgs<'_>,
    step: &mut StepHost,
    mut spec: Value,
    rootfs: &Path,
    user: &ResolvedUser,
    request: &Request,
    bundle: &Bundle,
) -> Result<i32, RunError> {
    let prepare = |m: String| RunError::Prepare(m);
    let root = step
        .bind_rootfs(rootfs, request.readonly_rootfs)
        .map_err(|e| prepare(format!("rootfs: {e}")))?;
    spec["root"]["path"] = Value::String(root.display().to_string());
    let dropped = limit_to_host_capabilities(&mut spec, host_bounding_set());
    if !dropped.is_empty() {
        eprintln!(
            "specwright: warning: this host's bounding set lacks {}; the container runs without them",
            dropped.join(", ")
        );
    }
    if !user.additional_gids.is_empty() {
        spec["process"]["user"]["additionalGids"] = serde_json::json!(user.additional_gids);
    }
    // The policies' output was validated; what the runner changed is too.
    crate::validate::validate_value(&spec).map_err(|e| {
        prepare(format!(
            "the spec after the runner's changes (root, groups, capabilities) {e}"
        ))
    })?;
    let text = serde_json::to_vec_pretty(&spec).map_err(|e| prepare(e.to_string()))?;
    bundle.write("config.json", &text).map_err(|e| prepare(e.to_string()))?;
    if let Some(signal) = crate::interrupt::requested() {
        return Err(prepare(format!("interrupted by {}", crate::interrupt::name(signal))));
    }
    step.record_container(&args.oci_runtime.path)
        .map_err(|e| prepare(format!("recording the container: {e}")))?;
    let code = {
        let _forwarding = crate::interrupt::Forwarding::start();
        run_container(&args.oci_runtime, bundle.path(), &request.id)
    };
    step.end_container()
        .map_err(|e| prepare(format!("deleting the container: {e}")))?;
    code
}

/// Runs the container in the foreground, forwarding SIGINT and SIGTERM to
/// the runtime (which passes them to the container); returns its exit code
/// (128 + the signal when it was killed).
fn run_container(runtime: &Runtime, bundle: &Path, id: &str) -> Result<i32, RunError> {
    use std::os::unix::process::ExitStatusExt;
    let failed = |message: String| RunError::Runtime {
        runtime: runtime.path.display().to_string(),
        message,
    };
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])
        .map_err(|e| failed(format!("installing signal handlers: {e}")))?;
    let handle = signals.handle();
    let mut child = Command::new(&runtime.path)
        .arg("run")
        .arg("--bundle")
        .arg(bundle)
        .arg(id)
        .spawn()
        .map_err(|e| failed(e.to_string()))?;
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let forwarder = std::thread::spawn(move || {
        for signal in signals.forever() {
            if let Ok(signal) = nix::sys::signal::Signal::try_from(signal) {
                let _ = nix::sys::signal::kill(pid, signal);
            }
        }
    });
    let status = child.wait().map_err(|e| failed(e.to_string()));
    handle.close();
    let _ = forwarder.join();
    let status = status?;
    Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nbuilder:x:1000:1000::/home/builder:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\nbuilder:x:1000:\nwheel:x:10:builder,other\naudio:x:29:builder\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn users_resolve_like_runc() {
        let r = rootfs();
        let u = |s: &str| resolve_user(r.path(), s);
        assert_eq!(
            u("builder").unwrap(),
            ResolvedUser {
                uid: 1000,
                gid: 1000,
                additional_gids: vec![10, 29]
            }
        );
        assert_eq!(
            u("builder:wheel").unwrap(),
            ResolvedUser {
                uid: 1000,
                gid: 10,
                additional_gids: vec![29]
            }
        );
        assert_eq!(u("1000").unwrap().gid, 1000, "a numeric uid in passwd takes its group");
        assert_eq!(
            u("4242:7").unwrap(),
            ResolvedUser {
                uid: 4242,
                gid: 7,
                additional_gids: vec![]
            }
        );
        assert_eq!(u("").unwrap().uid, 0);
        let err = u("nobody").unwrap_err().to_string();
        assert!(err.contains("\"nobody\"") && err.contains("etc/passwd"), "{err}");
        assert!(u("builder:nogroup").unwrap_err().to_string().contains("nogroup"));
    }

    #[test]
    fn passwd_is_read_inside_the_rootfs() {
        let r = rootfs();
        std::fs::remove_file(r.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", r.path().join("etc/passwd")).unwrap();
        // The link points at the host's file; inside the rootfs it names
        // itself, a loop, so nothing is read.
        assert!(resolve_user(r.path(), "root").is_err());
    }

    #[test]
    fn loopback_nameservers_are_dropped_unless_host_network() {
        let host = "nameserver 127.0.0.53\nnameserver 10.0.0.2\nnameserver ::1\nsearch example.com\n";
        assert_eq!(
            resolv_conf_for(host, &Network::None),
            "nameserver 10.0.0.2\nsearch example.com\n"
        );
        assert_eq!(resolv_conf_for(host, &Network::Host), host);
    }

    #[test]
    fn capabilities_the_host_lacks_are_dropped_everywhere() {
        let mut spec = serde_json::json!({"process": {"capabilities": {
            "bounding": ["CAP_CHOWN", "CAP_SYS_RESOURCE", "CAP_SYS_RESOURCE"],
            "ambient": ["CAP_SYS_RESOURCE", "CAP_SYS_ADMIN"]
        }}});
        let all_but_resource = !(1u64 << 24);
        let dropped = limit_to_host_capabilities(&mut spec, Some(all_but_resource));
        assert_eq!(dropped, ["CAP_SYS_RESOURCE"]);
        assert_eq!(
            spec["process"]["capabilities"]["bounding"],
            serde_json::json!(["CAP_CHOWN"])
        );
        assert_eq!(
            spec["process"]["capabilities"]["ambient"],
            serde_json::json!(["CAP_SYS_ADMIN"])
        );
        assert!(limit_to_host_capabilities(&mut spec, None).is_empty());
    }

    #[test]
    fn hosts_name_the_step() {
        assert!(hosts_for("").contains("127.0.0.1\tbuildkitsandbox"));
        assert!(hosts_for("h1").contains("127.0.0.1\th1"));
    }
}
