//! `specwright run`: one build step under a real OCI runtime, the way
//! BuildKit's runc executor uses GenerateSpec.
//!
//! Prepare (rootfs bind, user, resolv.conf, hosts) → the policy chain →
//! config.json → `crun|runc run --bundle` with stdio passed through and
//! SIGINT/SIGTERM forwarded → release everything, whatever happened.

use std::path::{Path, PathBuf};
use std::process::Command;

use specwright_core::request::parse_user;
use specwright_core::{HostFacts, Request};

use crate::oci_runtime::OciRuntime;
use crate::pipeline::Workspace;
use crate::policy::Engine;
use crate::state::{Bundle, StepLock};
use crate::step::StepHost;

pub mod edits;
pub mod etc;
pub mod probe;
pub mod user;

pub use etc::{hosts_for, resolv_conf_for};
pub use user::{resolve_user, ResolvedUser};

/// Why a step did not run; each variant keeps its cause's type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The request does not parse or validate (the message names the field).
    #[error(transparent)]
    Request(specwright_core::PolicyError),
    /// The OCI runtime named is not there.
    #[error(transparent)]
    FindRuntime(#[from] crate::oci_runtime::FindError),
    #[error("crun refuses this host's hybrid cgroups (cgroup v1 with cgroup2 at /sys/fs/cgroup/unified); use --runtime runc, or run in a private mount namespace with /sys/fs/cgroup/unified unmounted")]
    HybridCgroups,
    #[error("rootfs: {source}")]
    Rootfs {
        path: String,
        source: crate::resolve::ResolveError,
    },
    #[error("rootfs {0} is not a directory")]
    RootfsNotDirectory(String),
    /// The rootfs's /etc/passwd or /etc/group could not be read.
    #[error("the rootfs's {path}: {source}")]
    AccountFile {
        path: &'static str,
        source: crate::resolve::ResolveError,
    },
    /// The step's user or group is not what the rootfs's files say.
    #[error(transparent)]
    User(#[from] user::UserError),
    #[error("the host's /etc/resolv.conf: {0}")]
    HostResolvConf(std::io::Error),
    #[error("step {0} was not released (specwright release {0})")]
    NotReleased(String),
    /// The state dir: the step's lock, record or bundle.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("rootfs: {0}")]
    BindRootfs(specwright_core::HostError),
    #[error("the runner's changes to the spec: {0}")]
    Edit(#[from] edits::EditError),
    #[error("the spec after the runner's changes (root, groups, capabilities) {0}")]
    Invalid(crate::validate::SpecValidationError),
    #[error("interrupted by {0}")]
    Interrupted(&'static str),
    #[error("recording the container: {0}")]
    RecordContainer(specwright_core::HostError),
    #[error("deleting the container: {0}")]
    DeleteContainer(crate::step::ReleaseError),
    #[error(transparent)]
    Spec(#[from] crate::pipeline::Error),
    #[error("running {runtime}: {source}")]
    Runtime { runtime: String, source: std::io::Error },
    #[error("the container exited with {code}, but releasing the step failed: {release}")]
    Release {
        code: i32,
        release: crate::step::ReleaseError,
    },
    #[error("{error}; releasing the step also failed: {release}")]
    ReleaseAfterError {
        error: Box<RunError>,
        release: crate::step::ReleaseError,
    },
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

pub(crate) struct RunArgs<'a> {
    pub engine: &'a Engine,
    pub chain: &'a crate::Chain,
    pub request_json: &'a str,
    pub facts: &'a HostFacts,
    pub rootfs: &'a Path,
    pub oci_runtime: OciRuntime,
    /// What `oci_runtime --version` declares: remembered, or being asked
    /// since as early as the caller could.
    pub declared_version: probe::DeclaredVersion,
    pub workspace: Workspace,
}

/// Runs the step; returns the container's exit code. Everything the step
/// made is released before this returns, on success and on error; a step
/// another process holds, or that an earlier run left, is refused and
/// left as it is.
pub(crate) fn run(mut args: RunArgs<'_>) -> Result<i32, RunError> {
    let declared_version = std::mem::take(&mut args.declared_version);
    let mut request = Request::parse_json(args.request_json).map_err(RunError::Request)?;
    let (state, sys) = (&args.workspace.state, args.workspace.sys.as_ref());
    let lock = sys.lock_step(state, &request.id)?;
    if sys.read_record(state, &request.id)?.is_some() || sys.has_bundle(state, &request.id)? {
        return Err(RunError::NotReleased(request.id.clone()));
    }
    // From here on, everything in the state dir under this id is ours.
    let bundle = sys.create_bundle(state, &request.id)?;
    let result = run_in_bundle(&args, &mut request, &bundle, lock, declared_version);
    then_released(result, sys.remove_bundle(state, &request.id))
}

/// The run's outcome with what releasing after it said: a release that
/// failed is reported with the exit code or the error it followed.
fn then_released(
    result: Result<i32, RunError>,
    released: Result<(), impl Into<crate::step::ReleaseError>>,
) -> Result<i32, RunError> {
    match released.map_err(Into::into) {
        Ok(()) => result,
        Err(release) => Err(match result {
            Ok(code) => RunError::Release { code, release },
            Err(error) => RunError::ReleaseAfterError {
                error: Box::new(error),
                release,
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
    let sys = args.workspace.sys.as_ref();
    if args.oci_runtime.name() == "crun" && hybrid_cgroups() {
        return Err(RunError::HybridCgroups);
    }
    let given = args.rootfs.display().to_string();
    let rootfs = sys
        .canonical_path(&given)
        .map_err(|source| RunError::Rootfs { path: given, source })?;
    let rootfs = PathBuf::from(rootfs);
    let is_directory = sys.is_directory(&rootfs).map_err(|errno| RunError::Rootfs {
        path: rootfs.display().to_string(),
        source: crate::resolve::ResolveError::Io {
            path: rootfs.display().to_string(),
            errno,
        },
    })?;
    if !is_directory {
        return Err(RunError::RootfsNotDirectory(rootfs.display().to_string()));
    }
    let user = resolve_user(sys, &rootfs, &request.user)?;
    if parse_user(&request.user).is_err() {
        request.user = format!("{}:{}", user.uid, user.gid);
    }
    request.validate().map_err(RunError::Request)?;
    if request.resolv_conf.is_empty() {
        let host = sys
            .read_host_file(Path::new("/etc/resolv.conf"), crate::input::MAX_RESOLV_CONF_BYTES)
            .map_err(RunError::HostResolvConf)?
            .unwrap_or_default();
        let text = resolv_conf_for(&host, &request.network);
        let path = sys.write_bundle_file(bundle, "resolv.conf", text.as_bytes())?;
        request.resolv_conf = path.display().to_string();
    }
    if request.hosts_file.is_empty() {
        let text = hosts_for(&request.hostname);
        let path = sys.write_bundle_file(bundle, "hosts", text.as_bytes())?;
        request.hosts_file = path.display().to_string();
    }
    Ok((rootfs, user))
}

/// What the runner settled for the container besides the request.
struct Prepared {
    rootfs: PathBuf,
    user: ResolvedUser,
    /// The runtime-spec version the OCI runtime declares.
    runtime_spec: Option<edits::DeclaredSpecVersion>,
}

fn run_in_bundle(
    args: &RunArgs<'_>,
    request: &mut Request,
    bundle: &Bundle,
    lock: StepLock,
    declared_version: probe::DeclaredVersion,
) -> Result<i32, RunError> {
    let (rootfs, user) = match prepare_request(args, request, bundle) {
        Ok(prepared) => prepared,
        Err(e) => {
            // Nothing was recorded: the step's lock file goes too.
            if let Err(lock_error) = args.workspace.sys.remove_lock(lock) {
                tracing::warn!(step = %request.id, error = %lock_error, "removing the step's lock file");
            }
            return Err(e);
        }
    };
    let step = args.workspace.step_host(request, lock)?;
    let (mut step, spec) = crate::pipeline::run_chain(
        args.engine,
        args.chain,
        step,
        request,
        args.facts,
        &args.workspace.audit,
    )?;
    let prepared = Prepared {
        rootfs,
        user,
        runtime_spec: declared_version.declared(args.workspace.sys.as_ref()),
    };
    let result = start_container(args, &mut step, spec, &prepared, request, bundle);
    let released = step.release_all().map(|report| {
        for warning in report.warnings() {
            eprintln!("specwright: warning: {warning}");
        }
    });
    then_released(result, released)
}

/// The runner's edits of the spec (its rootfs, the user's groups, what the
/// host cannot grant, the spec version the runtime takes), then
/// config.json and the container itself.
fn start_container(
    args: &RunArgs<'_>,
    step: &mut StepHost,
    mut spec: specwright_core::spec::Spec,
    prepared: &Prepared,
    request: &Request,
    bundle: &Bundle,
) -> Result<i32, RunError> {
    let Prepared {
        rootfs,
        user,
        runtime_spec,
    } = prepared;
    let root = step
        .bind_rootfs(rootfs, request.readonly_rootfs)
        .map_err(RunError::BindRootfs)?;
    let sys = args.workspace.sys.as_ref();
    let host = edits::HostHas {
        bounding: edits::host_bounding_set(),
        // A path that cannot be checked is left for the runtime to report.
        has_path: |path: &Path| sys.exists(path).unwrap_or(true),
    };
    let applied = edits::apply(&mut spec, &root, user, host)?;
    if !applied.dropped_capabilities.is_empty() {
        eprintln!(
            "specwright: warning: this host's bounding set lacks {}; the container runs without them",
            applied.dropped_capabilities.join(", ")
        );
    }
    if !applied.dropped_devices.is_empty() {
        eprintln!(
            "specwright: warning: this host has no {}; the container (in a user namespace, where nodes are bound from the host) runs without them",
            applied.dropped_devices.join(", ")
        );
    }
    if let Some(replaced) = edits::with_runtime_oci_version(&mut spec, runtime_spec.as_ref()) {
        tracing::debug!(replaced, written = %spec.oci_version, "the runtime declares an older runtime-spec version");
    }
    // The policies' output was validated; what the runner changed is too.
    let text = crate::validate::config_json(&spec).map_err(RunError::Invalid)?;
    args.workspace
        .sys
        .write_bundle_file(bundle, "config.json", text.as_bytes())?;
    if let Some(signal) = step.cancel().requested() {
        return Err(RunError::Interrupted(crate::interrupt::name(signal)));
    }
    step.record_container(&args.oci_runtime.path)
        .map_err(RunError::RecordContainer)?;
    let ended = {
        let _forwarding = crate::interrupt::Forwarding::start();
        run_container(&args.oci_runtime, bundle.path(), &request.id)
    };
    match &ended {
        Ok(RuntimeEnded::Exited(_)) => step.end_finished_container(),
        Ok(RuntimeEnded::Killed(_)) | Err(_) => step.end_container(),
    }
    .map_err(RunError::DeleteContainer)?;
    ended.map(RuntimeEnded::code)
}

/// How the runtime's `run` ended.
enum RuntimeEnded {
    /// It exited, with the container's exit code (the container is gone).
    Exited(i32),
    /// It was killed by this signal (the container may be left).
    Killed(i32),
}

impl RuntimeEnded {
    /// The exit code the runner passes on: 128 + the signal when killed.
    fn code(self) -> i32 {
        match self {
            RuntimeEnded::Exited(code) => code,
            RuntimeEnded::Killed(signal) => 128 + signal,
        }
    }
}

/// Runs the container in the foreground, forwarding SIGINT and SIGTERM to
/// the runtime (which passes them to the container); returns how the
/// runtime ended.
fn run_container(runtime: &OciRuntime, bundle: &Path, id: &str) -> Result<RuntimeEnded, RunError> {
    use std::os::unix::process::ExitStatusExt;
    let failed = |source: std::io::Error| RunError::Runtime {
        runtime: runtime.path.display().to_string(),
        source,
    };
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])
        .map_err(|e| {
            failed(std::io::Error::new(
                e.kind(),
                format!("installing signal handlers: {e}"),
            ))
        })?;
    let handle = signals.handle();
    let null_streams = NullStdStreams::of_this_process();
    let mut command = Command::new(&runtime.path);
    command.arg("run").arg("--bundle").arg(bundle).arg(id);
    null_streams.replace_with_pipes(&mut command);
    let mut child = command.spawn().map_err(failed)?;
    null_streams.drain(&mut child);
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let forwarder = std::thread::spawn(move || {
        for signal in signals.forever() {
            if let Ok(signal) = nix::sys::signal::Signal::try_from(signal) {
                let _ = nix::sys::signal::kill(pid, signal);
            }
        }
    });
    let status = child.wait().map_err(failed);
    handle.close();
    let _ = forwarder.join();
    let status = status?;
    if let Some(signal) = status.signal() {
        eprintln!(
            "specwright: {} was killed by signal {signal}; the container is deleted",
            runtime.path.display()
        );
        return Ok(RuntimeEnded::Killed(signal));
    }
    Ok(RuntimeEnded::Exited(status.code().unwrap_or(1)))
}

/// Which of this process's stdin, stdout and stderr are the host's
/// /dev/null. A runtime chowns its standard streams to the container's
/// root, and crun before 1.23 does so for /dev/null too (containers/crun
/// #1845): under an idmap that changes the host's /dev/null. Such a
/// stream reaches the runtime as a pipe instead, which reads as empty and
/// whose writes are dropped, as /dev/null's are.
#[derive(Debug, Clone, Copy)]
struct NullStdStreams([bool; 3]);

impl NullStdStreams {
    /// The device number of /dev/null (1:3).
    const DEV_NULL: (u64, u64) = (1, 3);

    fn of_this_process() -> NullStdStreams {
        use std::os::fd::AsFd;
        let is_null = |fd: std::os::fd::BorrowedFd<'_>| {
            nix::sys::stat::fstat(fd).is_ok_and(|st| {
                let kind = nix::sys::stat::SFlag::from_bits_truncate(st.st_mode) & nix::sys::stat::SFlag::S_IFMT;
                kind == nix::sys::stat::SFlag::S_IFCHR
                    && (nix::sys::stat::major(st.st_rdev), nix::sys::stat::minor(st.st_rdev)) == Self::DEV_NULL
            })
        };
        NullStdStreams([
            is_null(std::io::stdin().as_fd()),
            is_null(std::io::stdout().as_fd()),
            is_null(std::io::stderr().as_fd()),
        ])
    }

    fn replace_with_pipes(self, command: &mut Command) {
        let [stdin, stdout, stderr] = self.0;
        if stdin {
            command.stdin(std::process::Stdio::piped());
        }
        if stdout {
            command.stdout(std::process::Stdio::piped());
        }
        if stderr {
            command.stderr(std::process::Stdio::piped());
        }
    }

    /// Closes the stdin pipe (end of input) and discards what comes out of
    /// the others until whatever holds them closes them (a detached thread
    /// each: a process the container left may hold a pipe past the run).
    fn drain(self, child: &mut std::process::Child) {
        drop(child.stdin.take());
        let discard = |mut from: Box<dyn std::io::Read + Send>| {
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from, &mut std::io::sink());
            });
        };
        if let Some(out) = child.stdout.take() {
            discard(Box::new(out));
        }
        if let Some(err) = child.stderr.take() {
            discard(Box::new(err));
        }
    }
}
