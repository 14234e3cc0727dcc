//! specwright: build-step requests in, OCI runtime specs out, through
//! sandboxed WebAssembly policies and a small privileged host.
//!
//! One step, as [`Engine::prepare`] (and `specwright spec`) makes it:
//!
//! 1. the request, parsed once into a [`Request`] (the message of a bad
//!    one names the field);
//! 2. the step taken for this process: its lock and record in the state
//!    dir, through the [`Syscalls`] trait like every other operation;
//! 3. each policy of the [`Chain`] run in a fresh sandboxed instance, the
//!    host performing the mounts it asks for (`StepHost`, in
//!    `specwright-host-core`), its output parsed once and checked against
//!    the runtime-spec schema;
//! 4. the last output kept typed as a [`Spec`], which `run` edits by named
//!    steps (rootfs path, groups, capabilities) and checks once more;
//! 5. config.json written from it once, in runtime-spec's field order;
//! 6. the mounts held until the [`Step`] is released (or dropped), or kept
//!    for `specwright release ID`.
//!
//! Embedded in a build system:
//!
//! ```
//! use specwright::{Chain, Engine, Host, Limits, Request};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Engine::new(Limits::default())?;
//! let chain = Chain::new(vec![engine.default_policy()?]);
//! let state = tempfile::tempdir()?;
//! let host = Host::open(state.path())?;
//! let request = Request::from_json(r#"{"id": "doc-step", "args": ["/bin/true"], "env": ["PATH=/bin"]}"#)?;
//! let facts = specwright::detect_host_facts()?;
//!
//! let step = engine.prepare(&chain, &host, &request, &facts)?;
//! assert_eq!(step.spec().process.as_ref().map(|p| &p.args[..]), Some(&["/bin/true".to_string()][..]));
//! let bundle = tempfile::tempdir()?;
//! let config = step.write_bundle(bundle.path())?;
//! assert!(config.ends_with("config.json"));
//! let report = step.release()?;
//! assert!(report.busy.is_empty());
//! # Ok(())
//! # }
//! ```

mod api;
mod cache;
#[cfg(feature = "cli")]
pub mod cli;
mod policy;
mod run;
#[cfg(feature = "cli")]
pub mod runc;

// The privileged operations live in their own crate, which builds without
// wasmtime (for the fuzz targets, and for whoever audits them); embedders
// and tests reach its modules there, this crate re-exports what its API
// names.
use specwright_host_core::{audit, facts, input, interrupt, resolve, state, step, strict_json, sys, validate};

pub use api::{Chain, Engine, Error, Host, Step};
pub use policy::{
    import_use, write_perf_map, ImportUse, Inspection, Limits, LoadedPolicy, PolicyError, PolicyRuntime,
    ReusedInstance, DEFAULT_POLICY_NAME, DEFAULT_POLICY_WASM, WASI_LINKED, WASI_OUTPUT_BYTES, WASI_TRAPPED,
};
pub use run::{RunError, Runtime};
pub use specwright_core::spec::Spec;
pub use specwright_core::{HostFacts, Request};
pub use specwright_host_core::facts::{detect as detect_host_facts, read_facts_file};
pub use specwright_host_core::state::{Owner, StateError};
pub use specwright_host_core::step::{Mounting, ReleaseError, ReleaseReport, StepOptions};
pub use specwright_host_core::sys::{Op, RealSyscalls, RecordingSyscalls, Syscalls};

use std::sync::Arc;
use std::time::Instant;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::audit::Audit;
use crate::state::{StateDir, StepLock};
use crate::step::StepHost;

/// Where and how a step's privileged work happens.
#[derive(Clone)]
pub(crate) struct StepContext {
    pub(crate) state: StateDir,
    pub(crate) sys: Arc<dyn Syscalls>,
    pub(crate) audit: Arc<Audit>,
    pub(crate) options: StepOptions,
}

impl StepContext {
    /// Real syscalls, the audit log in the state dir, default options.
    pub(crate) fn new(state: StateDir, sys: Arc<dyn Syscalls>) -> Result<StepContext, state::StateError> {
        let audit = Arc::new(sys.open_audit(&state)?);
        Ok(StepContext {
            state,
            sys,
            audit,
            options: StepOptions::default(),
        })
    }

    /// Takes step `id` for this process (a planned lock for a dry run).
    pub(crate) fn lock(&self, id: &str) -> Result<StepLock, SpecError> {
        Ok(self.sys.lock_step(&self.state, id)?)
    }

    /// The step's host side, for a step this process holds.
    pub(crate) fn step_host(&self, request: &Request, lock: StepLock) -> Result<StepHost, SpecError> {
        StepHost::new(
            self.state.clone(),
            self.sys.clone(),
            self.audit.clone(),
            self.options.clone(),
            request,
            lock,
        )
        .map_err(SpecError::from)
    }
}

/// Why a step could not be prepared; each variant keeps its cause's type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The request does not parse or validate (the message names the field).
    #[error(transparent)]
    Request(specwright_core::PolicyError),
    /// The request could not be encoded for the policies.
    #[error("encoding the request: {0}")]
    EncodeRequest(serde_json::Error),
    /// The state dir: the step's lock or record.
    #[error(transparent)]
    State(#[from] state::StateError),
    /// The host refused or failed to start the step.
    #[error(transparent)]
    Host(#[from] specwright_core::HostError),
    /// SIGINT or SIGTERM arrived between two policies.
    #[error("interrupted by {0}")]
    Interrupted(&'static str),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("{error}; releasing the step's mounts also failed: {release}")]
    ReleaseAfterError {
        error: Box<SpecError>,
        release: ReleaseError,
    },
    /// A chain without a policy makes no spec.
    #[error("the chain has no policy")]
    EmptyChain,
    /// The spec an engine wrote (`specwright-runc`) is not one.
    #[error("the engine's spec: {0}")]
    EngineSpec(String),
    /// The chain succeeded but releasing what the step held did not.
    #[error("releasing the step: {0}")]
    Release(ReleaseError),
}

/// Takes the step for this process, runs the chain, and keeps the mounts;
/// returns the validated spec and the step's lock.
pub(crate) fn prepare_step(
    runtime: &PolicyRuntime,
    chain: &[LoadedPolicy],
    request: &Request,
    facts: &HostFacts,
    ctx: StepContext,
) -> Result<(Spec, StepLock), SpecError> {
    let lock = ctx.lock(&request.id)?;
    let step = ctx.step_host(request, lock)?;
    let (step, spec) = run_chain(runtime, chain, step, request, facts, &ctx.audit)?;
    Ok((spec, step.keep()))
}

/// The spec an engine wrote, read as every runtime reads it or refused
/// ([`validate::validate_engine_json`]), before any policy runs.
pub(crate) fn read_engine_spec(text: &str) -> Result<Spec, SpecError> {
    let value = validate::validate_engine_json(text).map_err(|e| SpecError::EngineSpec(e.to_string()))?;
    Spec::deserialize(&value).map_err(|e| SpecError::EngineSpec(format!("does not fit the spec model: {e}")))
}

/// Runs `chain` over `spec`, the spec an engine already wrote for
/// container `id` and the host read strictly (`specwright-runc`). Each
/// policy gets the spec the one before it returned (the engine's for the
/// first), as its canonical JSON, and the request derived from that spec
/// ([`specwright_core::derive`]), so that no policy judges a request the
/// spec no longer stands for; the host mounts nothing for it
/// ([`Mounting::Engine`](specwright_host_core::step::Mounting)) and
/// answers `canonical-path` for the namespaces the spec joins. Returns
/// what the last policy approved. The step is released before this
/// returns, whatever happens.
pub(crate) fn review_engine_spec(
    runtime: &PolicyRuntime,
    chain: &[LoadedPolicy],
    id: &str,
    spec: Spec,
    facts: &HostFacts,
    mut ctx: StepContext,
) -> Result<Spec, SpecError> {
    if chain.is_empty() {
        return Err(SpecError::EmptyChain);
    }
    let request = specwright_core::derive::request_from_spec(id, &spec).map_err(SpecError::Request)?;
    ctx.options.mounting = specwright_host_core::step::Mounting::Engine;
    let lock = ctx.lock(&request.id)?;
    let mut step = ctx.step_host(&request, lock)?;
    let mut current = spec;
    for policy in chain {
        let request = match specwright_core::derive::request_from_spec(id, &current) {
            Ok(request) => request,
            Err(e) => {
                let error = PolicyError::InvalidSpec {
                    policy: policy.name.clone(),
                    message: format!("the spec it was given stands for no request: {e}"),
                };
                return Err(release_after(step, error.into()));
            }
        };
        if let Err(e) = step.set_engine_request(&request, &specwright_core::derive::spec_host_paths(&current)) {
            return Err(release_after(step, e.into()));
        }
        let before = match serde_json::to_value(&current) {
            Ok(value) => value,
            Err(e) => return Err(release_after(step, SpecError::EncodeRequest(e))),
        };
        let previous = current.to_json();
        let (returned, outcome) = run_policy(
            runtime,
            policy,
            step,
            &request,
            facts,
            Some(&previous),
            &before,
            &ctx.audit,
        );
        step = returned;
        let value = match outcome {
            Ok((_, value)) => value,
            Err(e) => return Err(release_after(step, e)),
        };
        current = match Spec::deserialize(&value) {
            Ok(spec) => spec,
            Err(e) => {
                let error = PolicyError::InvalidSpec {
                    policy: policy.name.clone(),
                    message: format!("does not fit the spec model: {e}"),
                };
                return Err(release_after(step, error.into()));
            }
        };
    }
    step.release_all().map_err(SpecError::Release)?;
    Ok(current)
}

/// Runs one policy of a chain on `step` and checks what it returns (parsed
/// once, strictly, against the runtime-spec schema and for what runtimes
/// would read otherwise); audits the outcome, with the top-level fields it
/// changed from `before`. On success, the output's text and value.
#[allow(clippy::too_many_arguments)]
fn run_policy(
    runtime: &PolicyRuntime,
    policy: &LoadedPolicy,
    mut step: StepHost,
    request: &Request,
    facts: &HostFacts,
    previous: Option<&str>,
    before: &Value,
    audit: &Audit,
) -> (StepHost, Result<(String, Value), SpecError>) {
    if let Some(signal) = interrupt::requested() {
        return (step, Err(SpecError::Interrupted(interrupt::name(signal))));
    }
    let canonical = match serde_json::to_string(request) {
        Ok(text) => text,
        Err(e) => return (step, Err(SpecError::EncodeRequest(e))),
    };
    step.set_actor(&policy.name);
    let start = Instant::now();
    let (step, result) = runtime.run(policy, step, &canonical, facts, previous);
    let checked = result.and_then(|json| {
        validate::validate_json(&json)
            .map(|value| (json, value))
            .map_err(|e| PolicyError::InvalidSpec {
                policy: policy.name.clone(),
                message: e.to_string(),
            })
    });
    let message = checked.as_ref().err().map(ToString::to_string);
    let outcome = match (&checked, &message) {
        (Ok((_, value)), _) => Ok(json!({"changed": changed_fields(before, value)})),
        (Err(_), message) => Err(message.as_deref().unwrap_or_default()),
    };
    audit.record(&request.id, &policy.name, "policy", json!({}), outcome, start.elapsed());
    (step, checked.map_err(SpecError::from))
}

/// Runs `chain` for `request` on `step`, validating each policy's output
/// ([`run_policy`]) and keeping the last one typed; on failure everything
/// the step holds is released.
pub(crate) fn run_chain(
    runtime: &PolicyRuntime,
    chain: &[LoadedPolicy],
    mut step: StepHost,
    request: &Request,
    facts: &HostFacts,
    audit: &Audit,
) -> Result<(StepHost, Spec), SpecError> {
    if chain.is_empty() {
        return Err(release_after(step, SpecError::EmptyChain));
    }
    let mut previous: Option<String> = None;
    let mut spec = Value::Null;
    for policy in chain {
        let (returned, outcome) = run_policy(runtime, policy, step, request, facts, previous.as_deref(), &spec, audit);
        step = returned;
        match outcome {
            Ok((json, value)) => {
                previous = Some(json);
                spec = value;
            }
            Err(e) => return Err(release_after(step, e)),
        }
    }
    let last = chain.last().map(|p| p.name.clone()).unwrap_or_default();
    match serde_json::from_value::<Spec>(spec) {
        Ok(spec) => Ok((step, spec)),
        Err(e) => {
            let error = PolicyError::InvalidSpec {
                policy: last,
                message: format!("does not fit the spec model: {e}"),
            };
            Err(release_after(step, error.into()))
        }
    }
}

/// Top-level spec fields that differ between two policies' outputs.
fn changed_fields(before: &Value, after: &Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let b = before.as_object().unwrap_or(&empty);
    let a = after.as_object().unwrap_or(&empty);
    let mut keys: Vec<&String> = b.keys().chain(a.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter().filter(|k| b.get(*k) != a.get(*k)).cloned().collect()
}

/// Releases everything after `error`, reporting both if the release fails too.
pub(crate) fn release_after(step: StepHost, error: SpecError) -> SpecError {
    match step.release_all() {
        Ok(_) => error,
        Err(release) => SpecError::ReleaseAfterError {
            error: Box::new(error),
            release,
        },
    }
}
