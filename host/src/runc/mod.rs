//! `specwright-runc`: the policy chain in front of a real OCI runtime, for
//! engines that already write the container's spec (buildah, podman,
//! containerd, Docker, BuildKit). It takes runc's command line and, with
//! policies configured, reviews every subcommand that changes what a
//! container may do before it `exec`s the real runtime, so that the
//! runtime's pid, signals and exit code are the engine's to see:
//!
//! - `create`, `run`, `restore`: the bundle's config.json, read strictly
//!   (a spec runtimes would read otherwise than the policies is refused),
//!   run through the chain, and written back in canonical form with its
//!   mode and owner; the approved spec is kept in the state dir.
//! - `exec`: the process it asks for (its flags, or `--process FILE`),
//!   reviewed as the container's approved spec with that process; the
//!   runtime is handed the approved process as `--process`.
//! - `update`: the resources it asks for, laid over the container's
//!   approved spec and reviewed again; the runtime is handed the approved
//!   resources as `--resources`.
//! - [`args::PASS_THROUGH`] passes untouched; anything else, and any
//!   command line runc and crun might read differently, is refused.
//!
//! A denial or any other failure stops before the real runtime runs: the
//! message goes to stderr and to the runtime's `--log` file (where
//! containerd looks), config.json stays as it was, and the exit code is 1.

pub mod args;
pub mod config;
mod paths;
mod process;
mod runtime;

use std::ffi::OsString;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use specwright_core::spec::Spec;
use specwright_core::HostFacts;

use crate::pipeline::{Chain, Workspace};
use crate::policy::{Engine, Limits};
use crate::state::DEFAULT_STATE_DIR;
use crate::step::StepOptions;
use crate::sys::{RealSyscalls, Store, Syscalls};
use args::{Command, CreateKind, Creation, Exec, Invocation, LogTarget, OwnFlags, Update};
use config::{WrapperConfig, CONFIG_ENV};
use paths::{anchor_to_bundle, check_fixed_files, check_fixed_paths, flag_files, join_to_bundle};
use runtime::RealRuntime;

/// The most an engine's config.json may hold.
pub const MAX_ENGINE_SPEC_BYTES: u64 = 16 << 20;

/// The most an `exec` process document or `update` resources may hold.
const MAX_DOCUMENT_BYTES: u64 = 1 << 20;

/// How old a kept spec gets before a `create` checks whether its
/// container is gone (a container `run` deleted by itself).
const PRUNE_AFTER: Duration = Duration::from_secs(600);

/// How many kept specs one listing checks for that: enough to keep pace
/// with a node that starts (and deletes, which leaves each spec's
/// directory to pruning) hundreds of containers a minute, few enough that
/// the `create` that lists does not wait long.
const PRUNE_AT_MOST: usize = 512;

/// How often the kept specs are listed for that (a `create` in between
/// only looks at when they last were).
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Runs the wrapper's front (the `specwright-runc` binary) with the
/// process's arguments: a command line that needs no policy to run goes to
/// the real runtime, having done no more than read the command line and the
/// configuration, find the runtime and check what every command is checked
/// for; one the chain must review goes to the reviewing binary
/// (`specwright`, installed beside it), which reads it again the same way.
/// On success this does not return (the runtime or the reviewer replaces
/// the process); the exit code of a failure otherwise.
pub fn front_main() -> i32 {
    with_invocation(|invocation, passed| {
        let (_, real, route) = route(invocation, passed)?;
        match route {
            Route::Runtime(handoff) => Err(real.exec(&handoff.args)),
            Route::Chain(_) => Err(runtime::exec_reviewer()),
        }
    })
}

/// Runs the wrapper's review (the `specwright` binary started as
/// `specwright-runc`): what [`front_main`] does, and the chain's review
/// of what it would hand the reviewer. On success this does not return
/// (the real runtime replaces the process); the exit code of a failure
/// otherwise.
pub fn main() -> i32 {
    with_invocation(|invocation, passed| {
        crate::binary::stop_on_signals();
        crate::tick_policies_by_timer();
        let (settings, real, route) = route(invocation, passed)?;
        let handoff = match route {
            Route::Runtime(handoff) => handoff,
            Route::Chain(reviewed) => review(invocation, reviewed, &settings, &real)?,
        };
        Err(real.exec(&handoff.args))
    })
}

/// Whether this process was started as the wrapper (`specwright-runc` is
/// its program name's last component): the front starts the reviewer so.
pub fn started_as_wrapper() -> bool {
    std::env::args_os()
        .next()
        .is_some_and(|argv0| Path::new(&argv0).file_name() == Some(std::ffi::OsStr::new(runtime::WRAPPER_NAME)))
}

/// Reads the command line and runs `wrapper` on it; a failure goes to
/// stderr and to the runtime's `--log`, and is the exit code.
fn with_invocation(wrapper: impl FnOnce(&Invocation, PassedFds) -> Result<Never>) -> i32 {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let invocation = match args::parse(&args) {
        Ok(invocation) => invocation,
        Err(e) => {
            eprintln!("specwright-runc: {e}");
            return 1;
        }
    };
    // Before this process opens anything of its own.
    let passed = passed_fds(&invocation);
    match wrapper(&invocation, passed) {
        Ok(never) => match never {},
        Err(e) => {
            let message = format!("specwright-runc: {e:#}");
            eprintln!("{message}");
            if let Err(log_error) = write_log(&invocation.log, &message) {
                eprintln!("specwright-runc: writing the runtime log: {log_error:#}");
            }
            match crate::interrupt::requested() {
                Some(signal) => 128 + signal,
                None => 1,
            }
        }
    }
}

/// What cannot happen: the wrapper only returns with an error.
enum Never {}

/// Where a command line goes.
enum Route<'a> {
    /// To the real runtime, as it is: no policy is configured, or the
    /// command changes nothing a policy judges.
    Runtime(Handoff),
    /// Through the chain first (with policies configured).
    Chain(Reviewed<'a>),
}

/// A command the chain reviews.
enum Reviewed<'a> {
    /// `create`, `run`, `restore`.
    Creation(&'a Creation),
    Exec(&'a Exec),
    Update(&'a Update),
}

/// The configuration, the real runtime, and where the command line goes;
/// with policies configured, after the checks every command gets (a
/// command line the runtimes might read otherwise, the runtime's state
/// root, its log) and `delete`'s forgetting of the approved spec.
fn route(invocation: &Invocation, passed: PassedFds) -> Result<(OwnFlags, RealRuntime, Route<'_>)> {
    runtime::check_not_handed_to()?;
    let loaded = WrapperConfig::load(std::env::var_os(CONFIG_ENV).as_deref())?;
    let settings = loaded.with_flags(invocation.own.clone())?;
    let real = RealRuntime::find(settings.real_runtime.as_deref())?;
    let route = if settings.policies.is_empty() {
        Route::Runtime(Handoff::unchanged(invocation))
    } else {
        passed.check()?;
        route_with_policies(invocation, &settings, &real)?
    };
    Ok((settings, real, route))
}

/// The real runtime's command line, and the documents it names (kept open
/// until the runtime replaces this process).
struct Handoff {
    args: Vec<OsString>,
    _documents: Vec<OwnedFd>,
}

impl Handoff {
    fn unchanged(invocation: &Invocation) -> Handoff {
        Handoff {
            args: invocation.passthrough(),
            _documents: Vec::new(),
        }
    }
}

/// Checks what every command is checked for with policies configured, and
/// routes it.
fn route_with_policies<'a>(invocation: &'a Invocation, settings: &OwnFlags, real: &RealRuntime) -> Result<Route<'a>> {
    if let Some(why) = &invocation.uncertain {
        bail!("{why}; with policies configured, specwright-runc refuses a command line it cannot read exactly as the runtime would");
    }
    // What the runtime does with a container, it does from what its state
    // root says (runc's delete runs the poststop hooks its state.json
    // names): the root must be one no other user can write, whatever the
    // subcommand.
    let acts_on_state = match &invocation.command {
        Command::Nothing | Command::Unknown(_) => false,
        Command::PassThrough(name) => !matches!(name.as_str(), "spec" | "features"),
        Command::Delete(_) | Command::Create(_) | Command::Exec(_) | Command::Update(_) => true,
    };
    if acts_on_state {
        check_runtime_root(&runtime_root(invocation, real)?)?;
    }
    // The runtime appends to its log as root.
    if let Some(log) = &invocation.log.file {
        let path = std::path::absolute(log).with_context(|| format!("--log {}", log.display()))?;
        RealSyscalls
            .check_fixed_path(&path, &[])
            .with_context(|| format!("--log {}", log.display()))?;
    }
    match &invocation.command {
        Command::Nothing | Command::PassThrough(_) => Ok(Route::Runtime(Handoff::unchanged(invocation))),
        Command::Delete(id) => {
            // Forgetting is best effort: a spec kept too long is pruned
            // later, and a delete must not fail for it.
            let forgotten = open_workspace(settings).and_then(|workspace| {
                let key = container_key(invocation, real, id)?;
                Ok(workspace.sys.remove_reviewed(&workspace.state, &key.name, true)?)
            });
            if let Err(e) = forgotten {
                eprintln!("specwright-runc: warning: forgetting container {id}'s approved spec: {e:#}");
            }
            Ok(Route::Runtime(Handoff::unchanged(invocation)))
        }
        Command::Unknown(name) => bail!(
            "subcommand {name:?} is not one specwright-runc reviews or lets pass ({}); with policies configured it is refused",
            args::PASS_THROUGH.join(", ")
        ),
        Command::Create(creation) => Ok(Route::Chain(Reviewed::Creation(creation))),
        Command::Exec(exec) => Ok(Route::Chain(Reviewed::Exec(exec))),
        Command::Update(update) => Ok(Route::Chain(Reviewed::Update(update))),
    }
}

/// The state dir the configuration names, as a workspace.
fn open_workspace(settings: &OwnFlags) -> Result<Workspace> {
    let state_dir = settings
        .state_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
    Ok(Workspace::open(&state_dir)
        .with_context(|| format!("state dir {}", state_dir.display()))?
        .with_options(crate::binary::step_options(StepOptions::default())))
}

/// Reviews what a command line routed to the chain asks for.
fn review(invocation: &Invocation, reviewed: Reviewed<'_>, settings: &OwnFlags, real: &RealRuntime) -> Result<Handoff> {
    let reviewer = match Reviewer::open(settings) {
        Ok(reviewer) => reviewer,
        Err(e) => {
            // A chain that does not load fails the review: counted so.
            if let Some(textfile) = &settings.metrics_file {
                let counted = open_workspace(settings).and_then(|workspace| {
                    workspace.count_chain_not_loaded();
                    Ok(workspace.write_metrics(textfile)?)
                });
                if let Err(e) = counted {
                    eprintln!("specwright-runc: warning: writing the metrics: {e:#}");
                }
            }
            return Err(e);
        }
    };
    let handoff = review_with(&reviewer, invocation, reviewed, real, settings);
    if let Some(textfile) = &settings.metrics_file {
        // The metrics never stop a container.
        if let Err(e) = reviewer.workspace.write_metrics(textfile) {
            eprintln!("specwright-runc: warning: writing the metrics: {e:#}");
        }
    }
    handoff
}

/// [`review`] by `reviewer`.
fn review_with(
    reviewer: &Reviewer,
    invocation: &Invocation,
    reviewed: Reviewed<'_>,
    real: &RealRuntime,
    settings: &OwnFlags,
) -> Result<Handoff> {
    match reviewed {
        Reviewed::Creation(creation) => review_creation(reviewer, invocation, creation, real, settings)
            .with_context(|| format!("container {}", creation.id)),
        Reviewed::Exec(exec) => {
            review_exec(reviewer, invocation, exec, real).with_context(|| format!("exec in container {}", exec.id))
        }
        Reviewed::Update(update) => review_update(reviewer, invocation, update, real)
            .with_context(|| format!("update of container {}", update.id)),
    }
}

/// What a review needs: the workspace (the state dir, where approved
/// specs are kept), the chain, the host facts. While it lives, SIGINT and
/// SIGTERM finish the review (releasing its step) before the process
/// exits.
struct Reviewer {
    workspace: Workspace,
    /// The engine and its chain.
    chain: (Engine, Chain),
    facts: HostFacts,
    _holding: crate::interrupt::Holding,
}

impl Reviewer {
    /// Everything, the chain loaded (every policy and settings file must
    /// be trusted).
    fn open(settings: &OwnFlags) -> Result<Reviewer> {
        crate::binary::init_tracing();
        let holding = crate::interrupt::Holding::start();
        let workspace = open_workspace(settings)?;
        let limits = Limits::from_flags(settings.policy_timeout_ms, settings.policy_memory_mib)?;
        let engine = Engine::new(limits)?
            .with_cache(workspace.compile_cache()?)
            .with_pulled_policies(&workspace);
        let chain = engine.load_trusted_chain(&settings.policies)?;
        Ok(Reviewer {
            workspace,
            chain: (engine, chain),
            facts: crate::facts::detect()?,
            _holding: holding,
        })
    }

    fn sys(&self) -> &dyn Syscalls {
        self.workspace.sys.as_ref()
    }

    /// Runs the chain over `spec` as step `step_id`; what it approved.
    fn review(&self, step_id: &str, spec: Spec) -> Result<Spec> {
        let (engine, chain) = &self.chain;
        Ok(engine.review_spec(chain, &self.workspace, step_id, spec, &self.facts)?)
    }

    fn kept(&self, key: &ContainerKey) -> Result<Kept> {
        let bytes = self
            .sys()
            .read_reviewed(&self.workspace.state, &key.name)?
            .with_context(|| {
                format!(
                    "no spec approved for it is kept in {}: it was not made through specwright-runc with policies, or under another --root",
                    self.workspace.state.root().display()
                )
            })?;
        serde_json::from_slice(&bytes).context("the kept spec is corrupt")
    }

    /// Keeps `spec` as the container's approved spec, and `config` (its
    /// text) as the config.json of the bundle the runtime is handed;
    /// returns that bundle.
    fn keep(&self, key: &ContainerKey, spec: &Spec, config: Option<&str>) -> Result<PathBuf> {
        let kept = Kept {
            runtime_state: key.runtime_state.clone(),
            spec: spec.clone(),
        };
        let bytes = serde_json::to_vec(&kept).context("encoding the approved spec")?;
        Ok(self
            .sys()
            .write_reviewed(&self.workspace.state, &key.name, &bytes, config.map(str::as_bytes))?)
    }

    /// Forgets kept specs whose container is gone, a few at a time.
    fn prune(&self, now: SystemTime) {
        let Ok(Some(keys)) = self.sys().due_reviewed_keys(&self.workspace.state, now, PRUNE_EVERY) else {
            return;
        };
        let mut old: Vec<(String, SystemTime)> = keys
            .into_iter()
            .filter(|(_, written)| now.duration_since(*written).is_ok_and(|age| age > PRUNE_AFTER))
            .collect();
        old.sort_by_key(|(_, written)| *written);
        for (key, _) in old.into_iter().take(PRUNE_AT_MOST) {
            let gone = match self.sys().read_reviewed(&self.workspace.state, &key) {
                Ok(Some(bytes)) => {
                    serde_json::from_slice::<KeptState>(&bytes).map_or(true, |kept| !kept.runtime_state.exists())
                }
                // Forgotten by a delete, which kept the runtime's bundle
                // for the runtime's own delete, long done.
                Ok(None) => true,
                Err(_) => true,
            };
            if gone {
                let _ = self.sys().remove_reviewed(&self.workspace.state, &key, false);
            }
        }
    }
}

/// What is kept for a container: the spec the chain approved for it, and
/// where its runtime keeps it (gone once the container is).
#[derive(Serialize, Deserialize)]
struct Kept {
    runtime_state: PathBuf,
    spec: Spec,
}

/// Where a kept container's runtime keeps it, read without the spec
/// (pruning asks only whether the container is gone).
#[derive(Deserialize)]
struct KeptState {
    runtime_state: PathBuf,
}

/// Where a container's approved spec is kept: its runtime's state root
/// and its id, hashed into a file name.
struct ContainerKey {
    name: String,
    runtime_state: PathBuf,
}

fn container_key(invocation: &Invocation, real: &RealRuntime, id: &str) -> Result<ContainerKey> {
    check_container_id(id)?;
    let root = runtime_root(invocation, real)?;
    let mut hash = sha2::Sha256::new();
    hash.update(root.as_os_str().as_encoded_bytes());
    hash.update([0]);
    hash.update(id.as_bytes());
    let digest = hash.finalize();
    let name: String = digest.iter().take(20).map(|b| format!("{b:02x}")).collect();
    Ok(ContainerKey {
        name,
        runtime_state: root.join(id),
    })
}

/// The runtime's state root as the runtime names it: `--root`, else its
/// default; absolute and spelled plainly (no `.` or `..` component, no
/// `//`, no trailing `/`), so that the wrapper and the runtime (which
/// cleans a path, or makes what is missing and walks `..` after it) name
/// one directory by one spelling.
fn runtime_root(invocation: &Invocation, real: &RealRuntime) -> Result<PathBuf> {
    let root = match &invocation.root {
        Some(root) => PathBuf::from(root),
        None => real.default_root(),
    };
    if !args::is_plain_absolute(root.as_os_str()) {
        bail!(
            "the runtime's state root {}: not an absolute path spelled plainly (without '.', '..', '//' or a trailing '/')",
            root.display()
        );
    }
    Ok(root)
}

/// A container id the runtimes keep at `<root>/<id>`: runc and crun
/// refuse the others.
fn check_container_id(id: &str) -> Result<()> {
    if id.is_empty() || id == "." || id == ".." || id.contains('/') || id.contains('\0') {
        bail!("container id {id:?}: not one a runtime keeps in its state root");
    }
    Ok(())
}

/// The step a review of `id` takes: the container id for a creation, one
/// of its own for each `exec` and `update` (which may run side by side).
fn step_id(id: &str, what: &str) -> String {
    let own = format!("{id}.{what}-{}", std::process::id());
    if specwright_core::request::is_valid_id(&own) {
        own
    } else {
        format!("{what}-{}", std::process::id())
    }
}

/// `create`, `run`, `restore`: the bundle's config.json reviewed and
/// written back as approved; the approved spec kept for the container.
fn review_creation(
    reviewer: &Reviewer,
    invocation: &Invocation,
    creation: &Creation,
    real: &RealRuntime,
    settings: &OwnFlags,
) -> Result<Handoff> {
    if let Some(config) = &creation.config {
        if config != Path::new("config.json") {
            bail!(
                "--config {}: with policies the engine's spec must be the bundle's config.json",
                config.display()
            );
        }
    }
    if creation.kind == CreateKind::Restore && !settings.allow_restore {
        bail!("restore: a checkpoint's processes keep the credentials, seccomp filters and memory CRIU saved, which no policy reviews; refused unless the configuration file says allow_restore = true");
    }
    if let Some(flag) = &creation.lsm_override {
        bail!("restore {flag} labels the restored process otherwise than its config.json; refused with policies configured");
    }
    let key = container_key(invocation, real, &creation.id)?;
    if std::fs::symlink_metadata(&key.runtime_state).is_ok() {
        bail!(
            "the runtime has a container of this id already ({}); nothing is kept for it",
            key.runtime_state.display()
        );
    }
    let bundle_dir = match &creation.bundle {
        Some(dir) => dir.clone(),
        None => std::env::current_dir().context("the working directory (the bundle, as no --bundle was given)")?,
    };
    // load → review → write back → exec.
    let engine_spec = load_engine_spec(reviewer.sys(), &bundle_dir)?;
    let approved = review_engine_spec(
        reviewer,
        &creation_step_id(&creation.id),
        &engine_spec,
        &creation.host_files,
    )?;
    let reviewed_bundle = write_back(reviewer, &key, &engine_spec, &approved)?;
    if creation.kind != CreateKind::Restore {
        reviewer.prune(SystemTime::now());
    }
    Ok(Handoff {
        args: creation_args(invocation, creation, &reviewed_bundle),
        _documents: Vec::new(),
    })
}

/// What a creation reviews: the engine's bundle, its config.json as read
/// (for its mode and owner), and the spec in it, read strictly once and
/// anchored to the bundle (a relative rootfs, `/proc/<pid>/exe` hooks).
struct EngineSpec {
    bundle: crate::state::GivenBundle,
    config: crate::state::EngineConfig,
    spec: Spec,
}

impl EngineSpec {
    fn config_path(&self) -> PathBuf {
        self.bundle.path().join("config.json")
    }
}

/// Load: the bundle at `dir` (trusted as its owner is vouched for) and its
/// config.json, read as every runtime reads it or refused.
fn load_engine_spec(sys: &dyn Syscalls, dir: &Path) -> Result<EngineSpec> {
    let bundle = sys
        .open_engine_bundle(dir)
        .with_context(|| format!("bundle {}", dir.display()))?;
    let config_path = bundle.path().join("config.json");
    let config = sys
        .read_engine_config(&bundle, MAX_ENGINE_SPEC_BYTES)
        .with_context(|| format!("the engine's spec {}", config_path.display()))?;
    let text = std::str::from_utf8(&config.bytes)
        .with_context(|| format!("the engine's spec {}: not UTF-8", config_path.display()))?;
    let mut spec = crate::pipeline::read_engine_spec(text).with_context(|| format!("{}", config_path.display()))?;
    vouch_for_owner(&bundle, &spec)?;
    anchor_to_bundle(&mut spec, bundle.path()).with_context(|| format!("{}", config_path.display()))?;
    Ok(EngineSpec { bundle, config, spec })
}

/// Review: the chain over the engine's spec, what it approved relative to
/// the bundle named against the engine's, then the host paths the runtime will open (the spec's, and
/// the files its flags name) checked as ones no other user can redirect.
fn review_engine_spec(
    reviewer: &Reviewer,
    step_id: &str,
    engine_spec: &EngineSpec,
    host_files: &[(&'static str, PathBuf)],
) -> Result<Spec> {
    let mut approved = reviewer.review(step_id, engine_spec.spec.clone())?;
    // What a policy names relative to the bundle is the engine's bundle's,
    // as the runtime would read it there, not the wrapper's: joined, never
    // resolved (the fixed-path check walks what was approved; resolving
    // it again would hand the runtime what a swapped link names now).
    join_to_bundle(&mut approved, engine_spec.bundle.path())
        .with_context(|| format!("the approved spec for {}", engine_spec.config_path().display()))?;
    check_fixed_paths(reviewer.sys(), &approved)?;
    check_fixed_files(reviewer.sys(), &approved, &flag_files(host_files)?)?;
    Ok(approved)
}

/// Write back: the approved spec kept for the container, its canonical
/// config.json in a bundle of the wrapper's (which no one else can change
/// between this review and the runtime's reading) and in the engine's
/// bundle with the mode and owner it had. The wrapper's bundle.
fn write_back(reviewer: &Reviewer, key: &ContainerKey, engine_spec: &EngineSpec, approved: &Spec) -> Result<PathBuf> {
    let text = crate::validate::config_json(approved)?;
    let reviewed_bundle = reviewer.keep(key, approved, Some(&text))?;
    reviewer
        .sys()
        .write_engine_config(&engine_spec.bundle, text.as_bytes(), engine_spec.config.ownership)
        .with_context(|| format!("writing {}", engine_spec.config_path().display()))?;
    Ok(reviewed_bundle)
}

/// Exec's command line for a creation: the global flags, the subcommand,
/// the flags kept, the wrapper's bundle, the id.
fn creation_args(invocation: &Invocation, creation: &Creation, reviewed_bundle: &Path) -> Vec<OsString> {
    let mut args = invocation.global.clone();
    args.push(invocation.rest[0].clone());
    args.extend(creation.kept.iter().cloned());
    args.push("--bundle".into());
    args.push(reviewed_bundle.as_os_str().to_owned());
    push_id(&mut args, &creation.id);
    args
}

/// The step a creation's review takes: the container's id, or one of its
/// own when the id is not a step id (runc's `a+b`).
fn creation_step_id(id: &str) -> String {
    if specwright_core::request::is_valid_id(id) {
        id.to_string()
    } else {
        format!("create-{}", std::process::id())
    }
}

/// Whether the descriptors the engine says go to the container
/// (`--preserve-fds N`, `LISTEN_FDS`: 3 and up) are open in this process
/// as it starts (the first that is not, if one is not), and whether
/// `LISTEN_FDS` reads alike to both runtimes.
struct PassedFds {
    closed: Option<i32>,
    /// `LISTEN_FDS` when it is not a plain decimal number.
    odd_listen_fds: Option<String>,
}

impl PassedFds {
    /// Refuses descriptors said to be passed but not open (the runtime
    /// would hand the container descriptors of its own there: runc's
    /// handle on the host's /sys/fs/cgroup), and a `LISTEN_FDS` runc and
    /// crun read differently.
    fn check(&self) -> Result<()> {
        if let Some(value) = &self.odd_listen_fds {
            bail!(
                "LISTEN_FDS={value:?} is not a plain decimal number: runc ignores it, crun reads its leading digits and hands the container that many descriptors; refused with policies configured"
            );
        }
        if let Some(fd) = self.closed {
            bail!(
                "descriptor {fd} is to go to the container (--preserve-fds, LISTEN_FDS) but is not open: the runtime would hand it one of its own"
            );
        }
        Ok(())
    }
}

fn passed_fds(invocation: &Invocation) -> PassedFds {
    let preserve = match &invocation.command {
        Command::Create(c) => c.preserve_fds,
        Command::Exec(e) => e.preserve_fds,
        _ => 0,
    };
    let passed = preserve.saturating_add(listen_fds());
    let closed = (3..3u32.saturating_add(passed)).find_map(|fd| {
        let fd = i32::try_from(fd).unwrap_or(i32::MAX);
        // SAFETY: the descriptor is only asked about, never used or closed.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        nix::fcntl::fcntl(borrowed, nix::fcntl::FcntlArg::F_GETFD)
            .is_err()
            .then_some(fd)
    });
    let odd_listen_fds = std::env::var_os("LISTEN_FDS")
        .filter(|v| !v.as_encoded_bytes().iter().all(u8::is_ascii_digit))
        .map(|v| v.to_string_lossy().into_owned());
    PassedFds { closed, odd_listen_fds }
}

/// The runtime's state root holds what it trusts about its containers
/// (their init process, namespaces, seccomp, hooks): it must be a directory
/// no other user can change. One that does not exist yet is made by the
/// runtime below its nearest existing directory, which must be such a
/// directory itself.
fn check_runtime_root(root: &Path) -> Result<()> {
    let existing = root
        .ancestors()
        .find(|dir| std::fs::symlink_metadata(dir).is_ok())
        .unwrap_or(Path::new("/"));
    RealSyscalls
        .check_trusted_dir(existing)
        .with_context(|| format!("the runtime's state root {}", root.display()))?;
    Ok(())
}

/// A bundle owned by another user than this one (or root) is accepted
/// only when the spec maps that user to the container's root (podman's
/// with `--uidmap`): that user is the container's, whom no host process
/// should run as. Anyone else could change the bundle under the runtime.
fn vouch_for_owner(bundle: &crate::state::GivenBundle, spec: &Spec) -> Result<()> {
    let owner = bundle.owner();
    if owner == 0 || owner == nix::unistd::geteuid().as_raw() {
        return Ok(());
    }
    let maps_root = spec.linux.as_ref().is_some_and(|l| {
        l.uid_mappings
            .iter()
            .any(|m| m.container_id == 0 && m.host_id == owner && m.size > 0)
    });
    if !maps_root {
        bail!(
            "bundle {}: not trusted: owned by uid {owner}, which is neither root nor the user the spec maps to the container's root",
            bundle.path().display()
        );
    }
    Ok(())
}

/// `exec`: the process reviewed as the container's approved spec with it;
/// the runtime gets the approved process as `--process`.
fn review_exec(reviewer: &Reviewer, invocation: &Invocation, exec: &Exec, real: &RealRuntime) -> Result<Handoff> {
    if !exec.cgroups.is_empty() && real.flavor == runtime::Flavor::Crun {
        bail!("--cgroup: crun leaves a process whose sub-cgroup does not exist in the engine's own cgroups, outside the container's limits; refused with crun");
    }
    for cgroup in &exec.cgroups {
        let path = cgroup.split_once(':').map_or(cgroup.as_str(), |(_, path)| path);
        if path.split('/').any(|c| c == "..") {
            bail!("--cgroup {cgroup:?}: not below the container's cgroup (crun would leave it)");
        }
    }
    let key = container_key(invocation, real, &exec.id)?;
    let container = reviewer.kept(&key)?.spec;
    check_fixed_files(reviewer.sys(), &container, &flag_files(&exec.host_files)?)?;
    let document = match &exec.process_file {
        Some(path) => Some(
            crate::input::read_trusted_text(path, MAX_DOCUMENT_BYTES)
                .with_context(|| format!("--process {}", path.display()))?,
        ),
        None => None,
    };
    let spec = process::exec_spec(&container, exec, document.as_deref()).with_context(|| match &exec.process_file {
        Some(path) => format!("--process {}", path.display()),
        None => "its flags".to_string(),
    })?;
    let approved = reviewer.review(&step_id(&exec.id, "exec"), spec)?;
    let process = approved.process.context("the approved spec has no process")?;
    let text = serde_json::to_string_pretty(&process).context("encoding the approved process")?;
    let floor = 3u32.saturating_add(exec.preserve_fds).saturating_add(listen_fds());
    handoff_with_document(invocation, "exec", &exec.kept, "--process", &text, floor, &exec.id)
}

/// `update`: the resources laid over the container's approved spec and
/// reviewed; the runtime gets the update, approved unchanged, as
/// `--resources` (only what it asks for, as both runtimes read a
/// resources document: crun would apply a whole `linux.resources` again,
/// device rules included).
fn review_update(reviewer: &Reviewer, invocation: &Invocation, update: &Update, real: &RealRuntime) -> Result<Handoff> {
    let key = container_key(invocation, real, &update.id)?;
    let mut container = reviewer.kept(&key)?.spec;
    let document = match &update.resources_file {
        Some(path) if path == Path::new("-") => {
            let mut text = String::new();
            std::io::stdin()
                .take(MAX_DOCUMENT_BYTES + 1)
                .read_to_string(&mut text)
                .context("--resources - (standard input)")?;
            if text.len() as u64 > MAX_DOCUMENT_BYTES {
                bail!("--resources -: more than {MAX_DOCUMENT_BYTES} bytes");
            }
            Some(text)
        }
        Some(path) => Some(
            crate::input::read_trusted_text(path, MAX_DOCUMENT_BYTES)
                .with_context(|| format!("--resources {}", path.display()))?,
        ),
        None => None,
    };
    let resources = process::update_resources(update, document.as_deref())?;
    let spec = process::updated_spec(&container, &resources)?;
    let asked = spec.linux.as_ref().and_then(|l| l.resources.clone());
    let approved = reviewer.review(&step_id(&update.id, "update"), spec)?;
    let approved = approved.linux.as_ref().and_then(|l| l.resources.clone());
    // The runtime applies the update as asked, so the chain must approve
    // it as asked: a chain that changes it is not overruled by the runtime.
    if approved != asked {
        bail!("the chain approved other resources than the update asks for; specwright-runc applies an update only as the chain approves it unchanged");
    }
    let text = serde_json::to_string_pretty(&resources).context("encoding the approved resources")?;
    container.linux_mut().resources = approved;
    reviewer.keep(&key, &container, None)?;
    handoff_with_document(
        invocation,
        "update",
        &update.kept,
        "--resources",
        &text,
        3u32.saturating_add(listen_fds()),
        &update.id,
    )
}

/// The runtime's command line for `subcommand` of container `id`: the
/// global flags, the `kept` ones, and `flag` naming `document` (in a
/// sealed file above descriptor `floor`).
fn handoff_with_document(
    invocation: &Invocation,
    subcommand: &str,
    kept: &[OsString],
    flag: &str,
    document: &str,
    floor: u32,
    id: &str,
) -> Result<Handoff> {
    let document = sealed_document(document.as_bytes(), floor)?;
    let mut args = invocation.global.clone();
    args.push(subcommand.into());
    args.extend(kept.iter().cloned());
    args.push(flag.into());
    args.push(format!("/proc/self/fd/{}", document.as_raw_fd()).into());
    push_id(&mut args, id);
    Ok(Handoff {
        args,
        _documents: vec![document],
    })
}

fn push_id(args: &mut Vec<OsString>, id: &str) {
    if id.starts_with('-') {
        args.push("--".into());
    }
    args.push(id.into());
}

/// Descriptors the runtime passes on to the container by systemd's
/// socket activation (`LISTEN_FDS`, from 3 up).
/// How many descriptors `LISTEN_FDS` passes, as crun reads it (its
/// leading digits, after blanks): the most either runtime passes.
fn listen_fds() -> u32 {
    let value = std::env::var_os("LISTEN_FDS").unwrap_or_default();
    let digits: String = value
        .to_string_lossy()
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap_or(if digits.is_empty() { 0 } else { u32::MAX })
}

/// `bytes` in a sealed in-memory file the runtime reads as
/// `/proc/self/fd/N`: no one can change it, it leaves nothing behind, and
/// its descriptor is above every one the runtime hands the container
/// (`floor`), so the container does not get it.
fn sealed_document(bytes: &[u8], floor: u32) -> Result<OwnedFd> {
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    use nix::sys::memfd::{memfd_create, MFdFlags};
    let fd = memfd_create(
        c"specwright-approved",
        MFdFlags::MFD_ALLOW_SEALING | MFdFlags::MFD_CLOEXEC,
    )
    .context("making the approved document")?;
    let mut file = std::fs::File::from(fd);
    std::io::Write::write_all(&mut file, bytes).context("writing the approved document")?;
    fcntl(
        &file,
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_SEAL,
        ),
    )
    .context("sealing the approved document")?;
    // Not closed on exec: the runtime opens it by its number.
    let floor = i32::try_from(floor.max(3)).unwrap_or(i32::MAX).max(64);
    let high = fcntl(&file, FcntlArg::F_DUPFD(floor)).context("placing the approved document")?;
    // SAFETY: F_DUPFD returned a new descriptor this process owns alone.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(high) })
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
    // Written as root: only where no other user can redirect it.
    let path = std::path::absolute(path).with_context(|| format!("{}", path.display()))?;
    RealSyscalls
        .check_fixed_path(&path, &[])
        .with_context(|| format!("{}", path.display()))?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
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
    use std::os::unix::fs::PermissionsExt;

    /// A reviewer whose chain is the embedded default, on a fresh state dir.
    fn reviewer(work: &Path) -> Reviewer {
        let workspace = Workspace::open(&work.join("state")).unwrap();
        let engine = Engine::new(Limits::default()).unwrap();
        let chain = engine.load_chain(&[]).unwrap();
        Reviewer {
            workspace,
            chain: (engine, chain),
            facts: HostFacts::example(),
            _holding: crate::interrupt::Holding::start(),
        }
    }

    /// A create forgets kept specs whose container is gone once they are
    /// old enough, and keeps those whose container is still there.
    #[test]
    fn pruning_forgets_only_the_specs_of_containers_that_are_gone() {
        let work = tempfile::tempdir().unwrap();
        let r = reviewer(work.path());
        let runtime_root = work.path().join("runtime");
        std::fs::create_dir_all(runtime_root.join("alive")).unwrap();
        let spec = Spec::default();
        let key = |name: &str, id: &str| ContainerKey {
            name: name.to_string(),
            runtime_state: runtime_root.join(id),
        };
        r.keep(&key("aa", "alive"), &spec, None).unwrap();
        r.keep(&key("bb", "gone"), &spec, None).unwrap();
        // Not old enough yet: both stay.
        r.prune(SystemTime::now());
        assert!(r.kept(&key("aa", "alive")).is_ok() && r.kept(&key("bb", "gone")).is_ok());
        let later = SystemTime::now() + PRUNE_AFTER + Duration::from_secs(60);
        r.prune(later);
        assert!(
            r.kept(&key("aa", "alive")).is_ok(),
            "the live container's spec was forgotten"
        );
        assert!(
            r.kept(&key("bb", "gone")).is_err(),
            "the gone container's spec is still kept"
        );
        // Listed at most once a PRUNE_EVERY: a create soon after does not
        // look; one after that does.
        r.keep(&key("cc", "gone"), &spec, None).unwrap();
        r.prune(later + Duration::from_secs(1));
        assert!(r.kept(&key("cc", "gone")).is_ok(), "listed again within PRUNE_EVERY");
        r.prune(later + PRUNE_EVERY);
        assert!(r.kept(&key("cc", "gone")).is_err(), "not listed after PRUNE_EVERY");
    }

    /// An engine's bundle: the default policy's spec for `args`, its rootfs
    /// `rootfs` beside it, config.json with `mode`.
    fn engine_bundle(work: &Path, args: &[&str], mode: u32) -> PathBuf {
        let r = reviewer(work);
        let (engine, chain) = &r.chain;
        let request =
            specwright_core::Request::from_json(&serde_json::json!({"id": "made", "args": args}).to_string()).unwrap();
        let step = engine.prepare(chain, &r.workspace, &request, &r.facts).unwrap();
        let mut spec = step.spec().clone();
        step.release().unwrap();
        if let Some(root) = spec.root.as_mut() {
            root.path = "rootfs".into();
        }
        let bundle = work.join("bundle");
        std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
        let config = bundle.join("config.json");
        std::fs::write(&config, serde_json::to_string(&spec).unwrap()).unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(mode)).unwrap();
        bundle
    }

    fn key(work: &Path, id: &str) -> ContainerKey {
        ContainerKey {
            name: id.bytes().map(|b| format!("{b:02x}")).collect(),
            runtime_state: work.join("runtime").join(id),
        }
    }

    #[test]
    fn load_reads_the_spec_strictly_and_anchors_the_rootfs() {
        let work = tempfile::tempdir().unwrap();
        let bundle = engine_bundle(work.path(), &["/bin/sh"], 0o600);
        let loaded = load_engine_spec(&RealSyscalls, &bundle).unwrap();
        assert_eq!(
            loaded
                .spec
                .root
                .as_ref()
                .map(|r| PathBuf::from(r.path.as_ref() as &str)),
            Some(bundle.join("rootfs")),
            "a relative rootfs is the engine's bundle's"
        );
        let config = bundle.join("config.json");
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(&config, text.replacen('{', r#"{"Process": {"args": ["/evil"]},"#, 1)).unwrap();
        let err = format!("{:#}", load_engine_spec(&RealSyscalls, &bundle).err().unwrap());
        assert!(err.contains("Process") && err.contains("config.json"), "{err}");
    }

    #[test]
    fn review_then_write_back_keeps_and_writes_what_the_chain_approved() {
        let work = tempfile::tempdir().unwrap();
        let bundle = engine_bundle(work.path(), &["/bin/sh", "-c", "true"], 0o600);
        let r = reviewer(work.path());
        let loaded = load_engine_spec(r.sys(), &bundle).unwrap();
        let approved = review_engine_spec(&r, "ctr-1", &loaded, &[]).unwrap();
        assert_eq!(
            approved.process.as_ref().map(|p| p.args.clone()),
            Some(vec!["/bin/sh".to_string(), "-c".into(), "true".into()])
        );
        assert_eq!(
            approved.root.as_ref().map(|r| PathBuf::from(r.path.as_ref() as &str)),
            Some(bundle.join("rootfs")),
            "the default policy's relative rootfs is the engine bundle's"
        );
        let key = key(work.path(), "ctr-1");
        let reviewed = write_back(&r, &key, &loaded, &approved).unwrap();
        let canonical = crate::validate::config_json(&approved).unwrap();
        assert_eq!(
            std::fs::read_to_string(reviewed.join("config.json")).unwrap(),
            canonical
        );
        let engine_config = bundle.join("config.json");
        assert_eq!(std::fs::read_to_string(&engine_config).unwrap(), canonical);
        assert_eq!(
            std::fs::metadata(&engine_config).unwrap().permissions().mode() & 0o777,
            0o600,
            "the engine's mode is kept"
        );
        assert_eq!(r.kept(&key).unwrap().spec, approved);
    }

    #[test]
    fn review_refuses_a_bind_source_another_user_can_redirect() {
        let work = tempfile::tempdir().unwrap();
        let bundle = engine_bundle(work.path(), &["/bin/true"], 0o644);
        let theirs = work.path().join("theirs");
        std::fs::create_dir_all(theirs.join("data")).unwrap();
        nix::unistd::chown(&theirs, Some(nix::unistd::Uid::from_raw(4242)), None).unwrap();
        let config = bundle.join("config.json");
        let mut spec: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
        spec["mounts"].as_array_mut().unwrap().push(serde_json::json!({
            "destination": "/data", "type": "bind", "source": theirs.join("data"), "options": ["rbind", "ro"]
        }));
        std::fs::write(&config, spec.to_string()).unwrap();
        let r = reviewer(work.path());
        let loaded = load_engine_spec(r.sys(), &bundle).unwrap();
        let err = format!("{:#}", review_engine_spec(&r, "ctr-2", &loaded, &[]).unwrap_err());
        assert!(err.contains("4242") && err.contains("theirs"), "{err}");
    }

    #[test]
    fn the_runtime_gets_the_flags_kept_the_wrappers_bundle_and_the_id() {
        let given: Vec<OsString> = [
            "--root",
            "/run/x",
            "create",
            "--bundle",
            "/engine",
            "--pid-file",
            "/p",
            "ctr1",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let invocation = args::parse(&given).unwrap();
        let Command::Create(creation) = &invocation.command else {
            panic!("{:?}", invocation.command)
        };
        let args = creation_args(&invocation, creation, Path::new("/state/reviewed/k"));
        let args: Vec<&str> = args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args,
            [
                "--root",
                "/run/x",
                "create",
                "--pid-file",
                "/p",
                "--bundle",
                "/state/reviewed/k",
                "ctr1"
            ]
        );
    }

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
    fn a_sealed_document_reads_back_and_cannot_be_changed() {
        let fd = sealed_document(b"{\"args\": [\"sh\"]}", 10).unwrap();
        assert!(fd.as_raw_fd() >= 64);
        let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"args\": [\"sh\"]}");
        let mut writer = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        assert!(
            std::io::Write::write_all(&mut writer, b"{}").is_err(),
            "sealed against writes"
        );
    }
}
