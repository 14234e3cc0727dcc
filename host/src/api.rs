//! specwright in-process: an [`Engine`] runs a [`Chain`] of policies for a
//! request on a [`Host`], and hands back the prepared [`Step`]: its spec,
//! the mounts it holds, and the means to write its bundle and release it.
//!
//! The sequence is the command line's: `Engine::prepare` takes the step
//! for this process (its lock), runs each policy with the host performing
//! the mounts it asks for, and validates each output; the `Step` holds the
//! mounts until [`Step::release`], or until it is dropped, or for good with
//! [`Step::keep`] (then `specwright release ID` undoes them).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use specwright_core::spec::Spec;
use specwright_core::{HostFacts, Request};

use crate::policy::{Limits, LoadedPolicy, PolicyError, PolicyRuntime};
use crate::state::{StateError, StepLock};
use crate::step::{release_locked, ReleaseError, ReleaseReport, StepOptions};
use crate::sys::{RealSyscalls, Syscalls};
use crate::{SpecError, StepContext};

/// What can go wrong in the library: each variant keeps its typed cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Loading, running or validating a policy.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The state directory or a bundle directory.
    #[error(transparent)]
    State(#[from] StateError),
    /// Preparing the step (the request, the host's side, the chain).
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// Releasing what the step held.
    #[error(transparent)]
    Release(#[from] ReleaseError),
    /// Encoding the spec.
    #[error("encoding the spec: {0}")]
    Encode(#[from] crate::validate::SpecValidationError),
}

/// The policy runtime: a wasmtime engine, the sandbox limits of every
/// policy call, and (optionally) the compile cache.
pub struct Engine {
    runtime: PolicyRuntime,
}

impl Engine {
    /// An engine whose policies run within `limits`.
    pub fn new(limits: Limits) -> Result<Engine, Error> {
        Ok(Engine {
            runtime: PolicyRuntime::new(limits)?,
        })
    }

    /// Keeps compiled policies in `dir` (ours, writable by no one else).
    pub fn with_cache(self, dir: &Path) -> Result<Engine, Error> {
        Ok(Engine {
            runtime: self.runtime.with_cache(dir)?,
        })
    }

    /// The embedded default policy (BuildKit v0.32.2's `GenerateSpec`).
    pub fn default_policy(&self) -> Result<LoadedPolicy, Error> {
        Ok(self.runtime.load_default()?)
    }

    /// A policy from `FILE[:SETTINGS.json]`, as `--policy` takes it
    /// (`default`, `buildkit` and `buildkit-v0.8` name the embedded ones).
    pub fn load(&self, arg: &str) -> Result<LoadedPolicy, Error> {
        Ok(self.runtime.load_spec(arg)?)
    }

    /// Runs `chain` for `request` on `host`: the step is this process's
    /// until the returned [`Step`] lets it go. On any failure nothing the
    /// step made is left.
    pub fn prepare(&self, chain: &Chain, host: &Host, request: &Request, facts: &HostFacts) -> Result<Step, Error> {
        let (spec, lock) = crate::prepare_step(&self.runtime, &chain.policies, request, facts, host.ctx.clone())?;
        Ok(Step {
            spec,
            lock: Some(lock),
            host: host.clone(),
        })
    }

    /// Runs `chain` over `spec_json`, the spec an engine already wrote for
    /// container `id` (what `specwright-runc` does on `create` and `run`):
    /// read strictly (refused when runtimes would read it otherwise), then
    /// each policy gets the spec before it, with the request derived from
    /// that spec (README's table). The host mounts nothing here, so
    /// nothing is held once this returns; each policy's result is
    /// validated as the engine's spec was.
    pub fn review(
        &self,
        chain: &Chain,
        host: &Host,
        id: &str,
        spec_json: &str,
        facts: &HostFacts,
    ) -> Result<Spec, Error> {
        let spec = crate::read_engine_spec(spec_json)?;
        Ok(crate::review_engine_spec(
            &self.runtime,
            &chain.policies,
            id,
            spec,
            facts,
            host.ctx.clone(),
        )?)
    }
}

/// The policies a step runs through, in order; each gets the previous
/// one's spec.
pub struct Chain {
    policies: Vec<LoadedPolicy>,
}

impl Chain {
    /// `policies`, run in the order given.
    pub fn new(policies: Vec<LoadedPolicy>) -> Chain {
        Chain { policies }
    }
}

/// Where a step's privileged work happens: the state directory, the
/// syscalls (real ones, or a recording implementation for a dry run or
/// fault injection) and the audit log.
#[derive(Clone)]
pub struct Host {
    ctx: StepContext,
}

impl Host {
    /// Opens (creating if needed) the state directory at `state_dir`, with
    /// real syscalls and the audit log in it.
    pub fn open(state_dir: &Path) -> Result<Host, Error> {
        Host::open_with(state_dir, Arc::new(RealSyscalls))
    }

    /// Opens the state directory at `state_dir` and its audit log through
    /// `sys`, which performs every operation of the host's steps: a
    /// recording implementation makes a dry run (nothing is made, not even
    /// the state dir) or injects faults.
    pub fn open_with(state_dir: &Path, sys: Arc<dyn Syscalls>) -> Result<Host, Error> {
        let state = sys.open_state_dir(state_dir)?;
        let ctx = StepContext::new(state, sys)?;
        Ok(Host { ctx })
    }

    /// The same host treating steps as `options` say (pinned selectors,
    /// the owner process `gc` watches).
    pub fn with_options(mut self, options: StepOptions) -> Host {
        self.ctx.options = options;
        self
    }
}

/// A prepared step: its validated spec and the mounts it holds. Dropping
/// it releases them (errors are logged); [`Step::release`] reports them.
pub struct Step {
    spec: Spec,
    /// `None` once released or kept.
    lock: Option<StepLock>,
    host: Host,
}

impl Step {
    /// The spec, as the last policy wrote it (runtime-spec field order).
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// config.json's text.
    pub fn config_json(&self) -> Result<String, Error> {
        Ok(crate::validate::pretty(&self.spec)?)
    }

    /// Writes config.json into `dir` (made if missing; refused when
    /// another user could change it) atomically; returns its path.
    pub fn write_bundle(&self, dir: &Path) -> Result<PathBuf, Error> {
        let text = self.config_json()?;
        let sys = self.host.ctx.sys.as_ref();
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
        self.release_held().map_err(Error::from)
    }

    /// Leaves the mounts in place beyond this process: `specwright release
    /// ID` (or `gc`, once the owner is gone) undoes them.
    pub fn keep(mut self) {
        self.lock = None;
    }

    fn release_held(&mut self) -> Result<ReleaseReport, ReleaseError> {
        match self.lock.take() {
            Some(lock) if lock.is_held() => {
                let ctx = &self.host.ctx;
                release_locked(&ctx.state, ctx.sys.as_ref(), &ctx.audit, lock)
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
