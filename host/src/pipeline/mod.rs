//! The front door: every way in (the `specwright` command line, the
//! `specwright-runc` wrapper, a library user) goes through these types.
//!
//! - [`Workspace`]: where a step's privileged work happens, opened once
//!   (the state directory, the [`Syscalls`] every operation goes through,
//!   the audit log, the step options); it also releases and collects
//!   steps ([`Workspace::release`], [`Workspace::gc`]).
//! - [`Engine`]: the policy sandbox and its [`Limits`](crate::Limits); it loads policies
//!   into a [`Chain`] tied to it.
//! - A step's life: [`Engine::prepare`] (the chain run for a request, the
//!   mounts held by the returned [`Step`]), [`Step::write_bundle`],
//!   [`Step::release`] or [`Step::keep`]; [`Engine::run`] does all of it
//!   around an OCI runtime's `run`; [`Engine::review`] runs the chain over
//!   a spec an engine already wrote (the wrapper's `create`).
//!
//! Each step stops between operations when its [`Cancel`] token (in its
//! [`StepOptions`]) is cancelled, releasing what it holds.

mod chain;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use specwright_core::spec::Spec;
use specwright_core::{HostFacts, Request};

use crate::audit::Audit;
use crate::cache::CompileCache;
use crate::interrupt::Cancel;
use crate::oci_runtime::OciRuntime;
use crate::policy::{Engine, LoadedPolicy, PolicyArg, PolicyFailure};
use crate::state::{StateDir, StateError, StepLock};
use crate::step::{gc, release_locked, release_step, GcOutcome, ReleaseError, ReleaseReport, StepHost, StepOptions};
use crate::sys::{RealSyscalls, Syscalls};
use specwright_host_core::metrics::CacheUses;

pub(crate) use chain::{read_engine_spec, run as run_chain};

/// Why a step could not be prepared, reviewed, written or released; each
/// variant keeps its cause's type. A policy's denial is always
/// [`Error::Policy`] with [`PolicyFailure::Denied`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request does not parse or validate (the message names the field).
    #[error(transparent)]
    Request(specwright_core::PolicyError),
    /// The request could not be encoded for the policies.
    #[error("encoding the request: {0}")]
    EncodeRequest(serde_json::Error),
    /// The state dir: the step's lock or record, a bundle directory.
    #[error(transparent)]
    State(#[from] StateError),
    /// The host refused or failed to start the step.
    #[error(transparent)]
    Host(#[from] specwright_core::HostError),
    /// The step's token was cancelled (or a signal arrived) between two
    /// policies.
    #[error("interrupted by {0}")]
    Interrupted(&'static str),
    /// Loading, running or validating a policy, and a policy's denial.
    #[error(transparent)]
    Policy(#[from] PolicyFailure),
    #[error("{error}; releasing the step's mounts also failed: {release}")]
    ReleaseAfterError { error: Box<Error>, release: ReleaseError },
    /// A chain without a policy makes no spec.
    #[error("the chain has no policy")]
    EmptyChain,
    /// A build step's chain whose first policy is monitored: no enforced
    /// policy before it makes the spec the chain would go on with.
    #[error("policy {0} is monitored but comes first in a build step's chain: an enforced policy (the default one) must make the spec before it")]
    MonitoredFirst(String),
    /// A policy of the chain was loaded by another engine.
    #[error("policy {0} was loaded by another engine than the one asked to run it (load it with this engine, or Engine::adopt it)")]
    ForeignPolicy(String),
    /// The spec an engine wrote (`specwright-runc`) is not one.
    #[error("the engine's spec: {0}")]
    EngineSpec(String),
    /// Releasing what the step held.
    #[error("releasing the step: {0}")]
    Release(#[from] ReleaseError),
    /// Encoding the spec.
    #[error("encoding the spec: {0}")]
    Encode(#[from] crate::validate::SpecValidationError),
}

/// Where a step's privileged work happens: the state directory, the
/// syscalls (real ones, or a recording implementation for a dry run or
/// fault injection), the audit log, and how steps are treated.
#[derive(Clone)]
pub struct Workspace {
    pub(crate) state: StateDir,
    pub(crate) sys: Arc<dyn Syscalls>,
    pub(crate) audit: Arc<Audit>,
    pub(crate) options: StepOptions,
    /// The hits and compilations of the compile caches it hands out.
    cache_uses: Arc<CacheUses>,
}

impl Workspace {
    /// Opens (creating if needed) the state directory at `state_dir`, with
    /// real syscalls and the audit log in it.
    pub fn open(state_dir: &Path) -> Result<Workspace, Error> {
        Workspace::open_with(state_dir, Arc::new(RealSyscalls))
    }

    /// Opens the state directory at `state_dir` and its audit log through
    /// `sys`, which performs every operation of the workspace's steps: a
    /// recording implementation makes a dry run (nothing is made, not even
    /// the state dir) or injects faults.
    pub fn open_with(state_dir: &Path, sys: Arc<dyn Syscalls>) -> Result<Workspace, Error> {
        let state = sys.open_state_dir(state_dir)?;
        let audit = Arc::new(sys.open_audit(&state)?);
        Ok(Workspace {
            state,
            sys,
            audit,
            options: StepOptions::default(),
            cache_uses: Arc::default(),
        })
    }

    /// The same workspace treating steps as `options` say (pinned
    /// selectors, the owner process `gc` watches, the cancellation token).
    pub fn with_options(mut self, options: StepOptions) -> Workspace {
        self.options = options;
        self
    }

    /// The token that stops this workspace's steps.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use specwright::{Chain, Engine, Error, Limits, Request, StepOptions, Workspace};
    /// let state = tempfile::tempdir()?;
    /// let workspace = Workspace::open(state.path())?.with_options(StepOptions::default());
    /// let engine = Engine::new(Limits::default())?;
    /// let chain = Chain::new(vec![engine.load_default()?]);
    /// let request = Request::from_json(r#"{"id": "stopped", "args": ["/bin/true"]}"#)?;
    /// workspace.cancel_token().cancel();
    /// let stopped = engine.prepare(&chain, &workspace, &request, &specwright::HostFacts::default());
    /// assert!(matches!(stopped, Err(Error::Interrupted("cancellation"))));
    /// # Ok(())
    /// # }
    /// ```
    pub fn cancel_token(&self) -> &Cancel {
        &self.options.cancel
    }

    /// The state dir's compile cache (made if missing), for
    /// [`Engine::with_cache`]; its entries are read and written through
    /// this workspace's syscalls.
    pub fn compile_cache(&self) -> Result<CompileCache, Error> {
        Ok(CompileCache::counting(
            self.sys.open_cache_dir(&self.state)?,
            self.sys.clone(),
            self.cache_uses.clone(),
        ))
    }

    /// Counts a review whose chain could not be loaded as failed (the
    /// chain never ran, so nothing else counted it).
    pub fn count_chain_not_loaded(&self) {
        self.audit.review(
            specwright_host_core::metrics::Outcome::Failed,
            std::time::Duration::ZERO,
        );
    }

    /// Adds what this workspace's reviews did in this process (reviews by
    /// outcome, policy decisions by verdict and mode, their durations,
    /// its compile caches' hits and compilations) to the state dir's
    /// metrics totals, and writes the totals to `textfile` in
    /// Prometheus' text format for node_exporter's textfile collector,
    /// replacing it atomically. Concurrent processes lose no count (the
    /// totals are added to under a lock).
    pub fn write_metrics(&self, textfile: &Path) -> Result<(), Error> {
        let mut tally = self.audit.tally();
        let (hits, compiled) = self.cache_uses.counts();
        tally.cache_hits = hits;
        tally.cache_compiled = compiled;
        Ok(self.sys.add_metrics(&self.state, &tally, textfile)?)
    }

    /// Unmounts and removes everything a kept step `id` made (what
    /// `specwright release ID` does); releasing a step that holds nothing
    /// is no error.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use specwright::{Chain, Engine, Limits, Request, Workspace};
    /// let state = tempfile::tempdir()?;
    /// let workspace = Workspace::open(state.path())?;
    /// let engine = Engine::new(Limits::default())?;
    /// let chain = Chain::new(vec![engine.load_default()?]);
    /// let request = Request::from_json(r#"{"id": "kept", "args": ["/bin/true"]}"#)?;
    /// engine.prepare(&chain, &workspace, &request, &specwright::HostFacts::default())?.keep();
    /// let report = workspace.release("kept")?;
    /// assert!(report.busy.is_empty());
    /// # Ok(())
    /// # }
    /// ```
    pub fn release(&self, id: &str) -> Result<ReleaseReport, Error> {
        Ok(release_step(&self.state, self.sys.as_ref(), &self.audit, id)?)
    }

    /// Releases every step whose owner process is gone (`specwright gc`);
    /// what happened to each step.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let state = tempfile::tempdir()?;
    /// let workspace = specwright::Workspace::open(state.path())?;
    /// assert!(workspace.gc()?.is_empty(), "no step, nothing to collect");
    /// # Ok(())
    /// # }
    /// ```
    pub fn gc(&self) -> Result<Vec<GcOutcome>, Error> {
        Ok(gc(&self.state, self.sys.as_ref(), &self.audit)?)
    }

    /// Takes step `id` for this process (a planned lock for a dry run).
    fn lock(&self, id: &str) -> Result<StepLock, Error> {
        Ok(self.sys.lock_step(&self.state, id)?)
    }

    /// The host side of a step this process holds.
    pub(crate) fn step_host(&self, request: &Request, lock: StepLock) -> Result<StepHost, Error> {
        StepHost::new(
            self.state.clone(),
            self.sys.clone(),
            self.audit.clone(),
            self.options.clone(),
            request,
            lock,
        )
        .map_err(Error::from)
    }
}

/// The policies a step runs through, in order; each gets the previous
/// one's spec. A chain runs only on the engine that loaded its policies.
pub struct Chain {
    policies: Vec<LoadedPolicy>,
    /// Monitored policies that could not be loaded: each review records
    /// them as failed, and goes on (a monitored policy never blocks).
    unloaded: Vec<Unloaded>,
    /// The first policy named, when it is monitored (loaded or not): a
    /// build step's chain needs an enforced one first to make the spec.
    monitored_first: Option<String>,
}

/// A monitored policy that could not be loaded, and why.
pub(crate) struct Unloaded {
    pub(crate) name: String,
    pub(crate) error: String,
}

impl Chain {
    /// `policies`, run in the order given.
    pub fn new(policies: Vec<LoadedPolicy>) -> Chain {
        let monitored_first = policies
            .first()
            .filter(|p| p.mode == crate::policy::Mode::Monitor)
            .map(|p| p.name.clone());
        Chain {
            policies,
            unloaded: Vec::new(),
            monitored_first,
        }
    }

    /// The policies, in order.
    pub fn policies(&self) -> &[LoadedPolicy] {
        &self.policies
    }
}

impl Engine {
    /// The chain `--policy` arguments name (`FILE[:SETTINGS.json]`,
    /// `default`, `buildkit-v0.8`); the embedded default alone for none.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let engine = specwright::Engine::new(specwright::Limits::default())?;
    /// let chain = engine.load_chain(&["default".into(), "buildkit-v0.8".into()])?;
    /// let names: Vec<&str> = chain.policies().iter().map(|p| p.name.as_str()).collect();
    /// assert_eq!(names, ["default", "buildkit-v0.8"]);
    /// assert!(engine.load_chain(&["/nonexistent.wasm".into()]).is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn load_chain(&self, args: &[PolicyArg]) -> Result<Chain, Error> {
        if args.is_empty() {
            return Ok(Chain::new(vec![self.load_default()?]));
        }
        self.load_args(args, false)
    }

    /// The chain `args` name; a monitored policy that cannot be loaded is
    /// kept as one that failed (never fatal), an enforced one fails the
    /// chain.
    fn load_args(&self, args: &[PolicyArg], trusted: bool) -> Result<Chain, Error> {
        let mut chain = Chain::new(Vec::new());
        for arg in args {
            match self.load_policy_arg(arg, trusted) {
                Ok(policy) => chain.policies.push(policy),
                Err(e) if arg.mode == crate::policy::Mode::Monitor => {
                    tracing::warn!(policy = %arg.arg, error = %e, "a monitored policy could not be loaded; every review records it as failed");
                    chain.unloaded.push(Unloaded {
                        name: arg.name(),
                        error: e.to_string(),
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
        chain.monitored_first = args
            .first()
            .filter(|a| a.mode == crate::policy::Mode::Monitor)
            .map(PolicyArg::name);
        Ok(chain)
    }

    /// [`Engine::load_chain`] for a chain that decides what containers may
    /// do (`specwright-runc`'s): every policy and settings file must be a
    /// trusted file; no policy, no chain.
    pub fn load_trusted_chain(&self, args: &[PolicyArg]) -> Result<Chain, Error> {
        self.load_args(args, true)
    }

    /// The chain's policies, each checked to be this engine's.
    fn policies_of<'c>(&self, chain: &'c Chain) -> Result<&'c Chain, Error> {
        if chain.policies.is_empty() && chain.unloaded.is_empty() {
            return Err(Error::EmptyChain);
        }
        match chain.policies.iter().find(|p| !self.owns(p)) {
            Some(foreign) => Err(Error::ForeignPolicy(foreign.name.clone())),
            None => Ok(chain),
        }
    }

    /// Runs `chain` for `request` in `workspace`: the step is this
    /// process's until the returned [`Step`] lets it go. The request is
    /// validated here (its fields are public; no policy is trusted to
    /// check it). On any failure nothing the step made is left.
    pub fn prepare(
        &self,
        chain: &Chain,
        workspace: &Workspace,
        request: &Request,
        facts: &HostFacts,
    ) -> Result<Step, Error> {
        request.validate().map_err(Error::Request)?;
        let policies = self.policies_of(chain)?;
        let lock = workspace.lock(&request.id)?;
        let step = workspace.step_host(request, lock)?;
        let (step, spec) = chain::run(self, policies, step, request, facts, &workspace.audit)?;
        Ok(Step {
            spec,
            lock: Some(step.keep()),
            workspace: workspace.clone(),
        })
    }

    /// Runs `chain` over `spec_json`, the spec an engine already wrote for
    /// container `id` (what `specwright-runc` does on `create` and `run`):
    /// read strictly (refused when runtimes would read it otherwise), then
    /// each policy gets the spec before it, with the request derived from
    /// that spec (README's table). The host mounts nothing here, so
    /// nothing is held once this returns; each policy's result is
    /// validated as the engine's spec was.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use specwright::{Chain, Engine, Limits, Request, Workspace};
    /// let state = tempfile::tempdir()?;
    /// let workspace = Workspace::open(state.path())?;
    /// let engine = Engine::new(Limits::default())?;
    /// let chain = Chain::new(vec![engine.load_default()?]);
    /// let facts = specwright::HostFacts::default();
    /// // A spec as an engine would write it: here, the default policy's.
    /// let request = Request::from_json(r#"{"id": "written", "args": ["/bin/sh"]}"#)?;
    /// let written = engine.prepare(&chain, &workspace, &request, &facts)?.config_json()?;
    /// let approved = engine.review(&chain, &workspace, "ctr-1", &written, &facts)?;
    /// assert_eq!(approved.process.map(|p| p.args), Some(vec!["/bin/sh".to_string()]));
    /// // A spec runtimes would read otherwise than the policies is refused.
    /// let doubled = written.replacen("{", r#"{"Process": {"args": ["/evil"]},"#, 1);
    /// assert!(engine.review(&chain, &workspace, "ctr-2", &doubled, &facts).is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn review(
        &self,
        chain: &Chain,
        workspace: &Workspace,
        id: &str,
        spec_json: &str,
        facts: &HostFacts,
    ) -> Result<Spec, Error> {
        self.review_spec(chain, workspace, id, read_engine_spec(spec_json)?, facts)
    }

    /// [`Engine::review`] of a spec already read strictly.
    pub(crate) fn review_spec(
        &self,
        chain: &Chain,
        workspace: &Workspace,
        id: &str,
        spec: Spec,
        facts: &HostFacts,
    ) -> Result<Spec, Error> {
        let policies = self.policies_of(chain)?;
        let request = specwright_core::derive::request_from_spec(id, &spec).map_err(Error::Request)?;
        let mut engine_workspace = workspace.clone();
        engine_workspace.options.mounting = crate::step::Mounting::Engine;
        let lock = engine_workspace.lock(&request.id)?;
        let step = engine_workspace.step_host(&request, lock)?;
        chain::review(self, policies, step, id, spec, facts, &workspace.audit)
    }

    /// Runs one step under `runtime` (`specwright run`): the rootfs bound,
    /// the user resolved in it, resolv.conf and hosts made, the chain run,
    /// config.json written, the container run in the foreground; everything
    /// released before this returns. The container's exit code.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use specwright::{Engine, Limits, OciRuntime, Workspace};
    /// let workspace = Workspace::open("/var/lib/specwright".as_ref())?;
    /// let engine = Engine::new(Limits::default())?.with_cache(workspace.compile_cache()?);
    /// let chain = engine.load_chain(&[])?;
    /// let code = engine.run(
    ///     &chain,
    ///     &workspace,
    ///     r#"{"id": "step-1", "args": ["/bin/sh", "-c", "echo hi > /out"]}"#,
    ///     &specwright::detect_host_facts()?,
    ///     "/var/lib/rootfs/busybox".as_ref(),
    ///     &OciRuntime::find("runc")?,
    /// )?;
    /// assert_eq!(code, 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn run(
        &self,
        chain: &Chain,
        workspace: &Workspace,
        request_json: &str,
        facts: &HostFacts,
        rootfs: &Path,
        runtime: &OciRuntime,
    ) -> Result<i32, crate::run::RunError> {
        let cache = workspace.sys.open_cache_dir(&workspace.state).ok();
        let declared_version =
            crate::run::probe::DeclaredVersion::start(workspace.sys.as_ref(), runtime, cache.as_ref());
        self.run_declared(chain, workspace, request_json, facts, rootfs, runtime, declared_version)
    }

    /// [`Engine::run`] with the runtime's declared version asked for
    /// already (the command line asks as early as it can).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run_declared(
        &self,
        chain: &Chain,
        workspace: &Workspace,
        request_json: &str,
        facts: &HostFacts,
        rootfs: &Path,
        runtime: &OciRuntime,
        declared_version: crate::run::probe::DeclaredVersion,
    ) -> Result<i32, crate::run::RunError> {
        let policies = self.policies_of(chain)?;
        crate::run::run(crate::run::RunArgs {
            engine: self,
            chain: policies,
            request_json,
            facts,
            rootfs,
            oci_runtime: runtime.clone(),
            declared_version,
            workspace: workspace.clone(),
        })
    }
}

/// A prepared step: its validated spec and the mounts it holds. Dropping
/// it releases them (errors are logged); [`Step::release`] reports them.
pub struct Step {
    spec: Spec,
    /// `None` once released or kept.
    lock: Option<StepLock>,
    workspace: Workspace,
}

impl Step {
    /// The spec the last policy returned.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// config.json's text: runtime-spec's field order, two-space indents.
    pub fn config_json(&self) -> Result<String, Error> {
        Ok(crate::validate::pretty(&self.spec)?)
    }

    /// Writes config.json into `dir` (made if missing; refused when
    /// another user could change it) atomically; returns its path. The
    /// directories this made are removed again when writing fails.
    pub fn write_bundle(&self, dir: &Path) -> Result<PathBuf, Error> {
        let text = self.config_json()?;
        let sys = self.workspace.sys.as_ref();
        let bundle = sys.open_given_bundle(dir)?;
        match sys.write_config(&bundle, text.as_bytes()) {
            Ok(path) => Ok(path),
            Err(e) => {
                sys.remove_given_bundle(bundle);
                Err(e.into())
            }
        }
    }

    /// Unmounts and removes everything the step holds.
    pub fn release(mut self) -> Result<ReleaseReport, Error> {
        Ok(self.release_held()?)
    }

    /// Leaves the mounts in place beyond this process:
    /// [`Workspace::release`] (or `gc`, once the owner is gone) undoes them.
    pub fn keep(mut self) {
        self.lock = None;
    }

    fn release_held(&mut self) -> Result<ReleaseReport, ReleaseError> {
        match self.lock.take() {
            Some(lock) if lock.is_held() => {
                let ws = &self.workspace;
                release_locked(&ws.state, ws.sys.as_ref(), &ws.audit, lock)
            }
            _ => Ok(ReleaseReport::default()),
        }
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if let Err(e) = self.release_held() {
            tracing::error!(error = %e, "releasing a dropped step");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Limits;

    #[test]
    fn the_host_validates_a_request_built_by_hand() {
        let state = tempfile::tempdir().unwrap();
        let workspace = Workspace::open(state.path()).unwrap();
        let engine = Engine::new(Limits::default()).unwrap();
        let chain = Chain::new(vec![engine.load_default().unwrap()]);
        let mut request = Request::from_json(r#"{"id": "fine", "args": ["/bin/true"]}"#).unwrap();
        request.id = "../../etc".into();
        let err = engine
            .prepare(&chain, &workspace, &request, &HostFacts::example())
            .err()
            .unwrap();
        assert!(matches!(err, Error::Request(_)), "{err}");
        let locks: Vec<_> = std::fs::read_dir(state.path().join("locks")).unwrap().collect();
        assert!(locks.is_empty(), "nothing taken: {locks:?}");
    }
}
