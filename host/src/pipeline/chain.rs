//! Running a chain: each policy in a fresh instance, its output checked
//! (parsed once, strictly, against the runtime-spec schema), audited, and
//! handed to the next; whatever happens, the step's holdings are released
//! on failure.

use std::time::Instant;

use serde_json::Value;
use specwright_core::spec::Spec;
use specwright_core::{HostFacts, Request};

use super::{Chain, Error};
use crate::audit::{Audit, Decision, Mode, Verdict};
use crate::policy::{Engine, LoadedPolicy, PolicyFacts, PolicyFailure};
use crate::step::StepHost;
use crate::validate;
use specwright_host_core::metrics::Outcome;
use specwright_host_core::patch;

/// The spec an engine wrote, read as every runtime reads it or refused
/// ([`validate::validate_engine_json`]), before any policy runs.
pub(crate) fn read_engine_spec(text: &str) -> Result<Spec, Error> {
    validate::validate_engine_json(text).map_err(|e| Error::EngineSpec(e.to_string()))
}

/// Runs `chain` for `request` on `step`, validating each policy's output
/// ([`run_policy`]) and keeping the last one typed; on failure everything
/// the step holds is released.
pub(crate) fn run(
    engine: &Engine,
    chain: &Chain,
    step: StepHost,
    request: &Request,
    facts: &HostFacts,
    audit: &Audit,
) -> Result<(StepHost, Spec), Error> {
    if let Some(first) = &chain.monitored_first {
        return Err(release_after(step, Error::MonitoredFirst(first.clone())));
    }
    let start = Instant::now();
    record_unloaded(chain, &request.id, audit);
    let result = run_chain(engine, &chain.policies, step, request, facts, audit);
    audit.review(outcome(result.as_ref().map(drop)), start.elapsed());
    result
}

fn run_chain(
    engine: &Engine,
    chain: &[LoadedPolicy],
    mut step: StepHost,
    request: &Request,
    facts: &HostFacts,
    audit: &Audit,
) -> Result<(StepHost, Spec), Error> {
    let input = match Input::of(request) {
        Ok(input) => input,
        Err(e) => return Err(release_after(step, e)),
    };
    let facts = PolicyFacts::from(facts);
    let mut last: Option<Output> = None;
    for policy in chain {
        let (previous, before) = match &last {
            Some(out) => (Some(out.text.as_str()), &out.value),
            None => (None, &Value::Null),
        };
        let received = Received { previous, before };
        let (returned, outcome) = run_policy(engine, policy, step, &input, &facts, received, Carried::Text, audit);
        step = returned;
        match outcome {
            Ok(Some(out)) => last = Some(out),
            Ok(None) => {}
            Err(e) => return Err(release_after(step, e)),
        }
    }
    match last {
        Some(out) => Ok((step, out.spec)),
        None => Err(release_after(step, Error::EmptyChain)),
    }
}

/// Runs `chain` over `spec`, the spec an engine already wrote for
/// container `id` and the host read strictly (`specwright-runc`), on
/// `step` (whose host mounts nothing: [`Mounting::Engine`]). Each policy
/// gets the spec the one before it returned (the engine's for the first),
/// as its canonical JSON, and the request derived from that spec
/// ([`specwright_core::derive`]), so that no policy judges a request the
/// spec no longer stands for; the host answers `canonical-path` for the
/// namespaces the spec joins. Returns what the last policy approved. The
/// step is released before this returns, whatever happens.
///
/// [`Mounting::Engine`]: crate::step::Mounting::Engine
pub(crate) fn review(
    engine: &Engine,
    chain: &Chain,
    step: StepHost,
    id: &str,
    spec: Spec,
    facts: &HostFacts,
    audit: &Audit,
) -> Result<Spec, Error> {
    let start = Instant::now();
    record_unloaded(chain, id, audit);
    let result = review_chain(engine, &chain.policies, step, id, spec, facts, audit);
    audit.review(outcome(result.as_ref().map(drop)), start.elapsed());
    result
}

/// Records each monitored policy of `chain` that could not be loaded as
/// failed on step `step`.
fn record_unloaded(chain: &Chain, step: &str, audit: &Audit) {
    for unloaded in &chain.unloaded {
        audit.decision(Decision {
            step,
            policy: &unloaded.name,
            digest: None,
            mode: Mode::Monitor,
            verdict: Verdict::Failed(unloaded.error.clone()),
            took: std::time::Duration::ZERO,
        });
    }
}

/// A review's outcome for the metrics: a denial by an enforced policy, or
/// any other failure.
fn outcome(result: Result<(), &Error>) -> Outcome {
    match result {
        Ok(()) => Outcome::Approved,
        Err(Error::Policy(PolicyFailure::Denied { .. })) => Outcome::Denied,
        Err(Error::ReleaseAfterError { error, .. })
            if matches!(**error, Error::Policy(PolicyFailure::Denied { .. })) =>
        {
            Outcome::Denied
        }
        Err(_) => Outcome::Failed,
    }
}

fn review_chain(
    engine: &Engine,
    chain: &[LoadedPolicy],
    mut step: StepHost,
    id: &str,
    spec: Spec,
    facts: &HostFacts,
    audit: &Audit,
) -> Result<Spec, Error> {
    let facts = PolicyFacts::from(facts);
    // What each policy's verdict is taken against: the engine's spec,
    // then the last enforced output, each made into a value once.
    let mut before = match serde_json::to_value(&spec) {
        Ok(value) => value,
        Err(e) => return Err(release_after(step, Error::EncodeRequest(e))),
    };
    let mut current = spec;
    for policy in chain {
        let request = match specwright_core::derive::request_from_spec(id, &current) {
            Ok(request) => request,
            Err(e) => {
                let error = PolicyFailure::InvalidSpec {
                    policy: policy.name.clone(),
                    message: format!("the spec it was given stands for no request: {e}"),
                };
                return Err(release_after(step, error.into()));
            }
        };
        if let Err(e) = step.set_engine_request(&request, &specwright_core::derive::spec_host_paths(&current)) {
            return Err(release_after(step, e.into()));
        }
        let previous = current.to_json();
        let input = match Input::of(&request) {
            Ok(input) => input,
            Err(e) => return Err(release_after(step, e)),
        };
        let received = Received {
            previous: Some(&previous),
            before: &before,
        };
        let (returned, outcome) = run_policy(engine, policy, step, &input, &facts, received, Carried::Typed, audit);
        step = returned;
        match outcome {
            Ok(Some(out)) => (current, before) = (out.spec, out.value),
            Ok(None) => {}
            Err(e) => return Err(release_after(step, e)),
        }
    }
    let cancelled = step_cancelled(&step);
    step.release_all()?;
    match cancelled {
        Some(signal) => Err(Error::Interrupted(signal)),
        None => Ok(current),
    }
}

fn step_cancelled(step: &StepHost) -> Option<&'static str> {
    step.cancel().requested().map(crate::interrupt::name)
}

/// A policy's request: its step id, and its canonical JSON (made once).
struct Input<'r> {
    id: &'r str,
    json: String,
}

impl<'r> Input<'r> {
    fn of(request: &'r Request) -> Result<Input<'r>, Error> {
        Ok(Input {
            id: &request.id,
            json: serde_json::to_string(request).map_err(Error::EncodeRequest)?,
        })
    }
}

/// The spec a policy receives: the text it is handed (none for a build
/// step's first policy) and the same as a value, which its verdict and
/// patch are taken against.
#[derive(Clone, Copy)]
struct Received<'a> {
    previous: Option<&'a str>,
    before: &'a Value,
}

/// How a policy's output goes on to the next policy: as it wrote it (a
/// build step's chain) or as the typed spec's canonical JSON (an engine's
/// spec under review, where the runtime gets the typed spec).
#[derive(Clone, Copy)]
enum Carried {
    Text,
    Typed,
}

/// What a policy returned, checked: its text (handed to the next policy
/// of a build step as it was written), its value as it is carried on
/// (what the next policy's patch is taken against) and the typed spec.
struct Output {
    text: String,
    value: Value,
    spec: Spec,
}

/// Runs one policy of a chain on `step` and checks what it returns (parsed
/// once, strictly, against the runtime-spec schema and for what runtimes
/// would read otherwise); records its decision (its verdict on `before`,
/// the spec it received). Returns what the chain goes on with: the
/// policy's output when it is enforced, nothing (the spec it received)
/// when it is monitored. A monitored policy's denial or failure is
/// recorded, never returned; an interruption stops the chain whatever the
/// mode.
#[allow(clippy::too_many_arguments)]
fn run_policy(
    engine: &Engine,
    policy: &LoadedPolicy,
    mut step: StepHost,
    request: &Input<'_>,
    facts: &PolicyFacts,
    received: Received<'_>,
    carried: Carried,
    audit: &Audit,
) -> (StepHost, Result<Option<Output>, Error>) {
    if let Some(signal) = step_cancelled(&step) {
        return (step, Err(Error::Interrupted(signal)));
    }
    step.set_actor(&policy.name);
    let budget = step.budget_used();
    let start = Instant::now();
    let Received { previous, before } = received;
    let (mut step, result) = engine.call_with(policy, step, &request.json, facts, previous);
    if policy.mode == Mode::Monitor {
        step.restore_budget(budget);
    }
    let checked = result.and_then(|text| {
        let invalid = |message: String| PolicyFailure::InvalidSpec {
            policy: policy.name.clone(),
            message,
        };
        let (value, spec) = validate::validate_json(&text).map_err(|e| invalid(e.to_string()))?;
        let value = match carried {
            Carried::Text => value,
            Carried::Typed => serde_json::to_value(&spec).map_err(|e| invalid(e.to_string()))?,
        };
        Ok(Output { text, value, spec })
    });
    let took = start.elapsed();
    let verdict = match &checked {
        Ok(out) => match patch::diff(before, &out.value) {
            patch if patch.is_empty() => Verdict::Allowed,
            patch => Verdict::Changed(patch),
        },
        Err(PolicyFailure::Denied { reason, .. }) => Verdict::Denied(reason.clone()),
        Err(e) => Verdict::Failed(e.to_string()),
    };
    let digest = policy.digest();
    audit.decision(Decision {
        step: request.id,
        policy: &policy.name,
        digest: digest.as_deref(),
        mode: policy.mode,
        verdict,
        took,
    });
    let outcome = match (policy.mode, checked) {
        (Mode::Enforce, checked) => checked.map(Some).map_err(Error::from),
        (Mode::Monitor, Err(e @ PolicyFailure::Interrupted { .. })) => Err(e.into()),
        (Mode::Monitor, _) => Ok(None),
    };
    (step, outcome)
}

/// Releases everything after `error`, reporting both if the release fails too.
pub(crate) fn release_after(step: StepHost, error: Error) -> Error {
    match step.release_all() {
        Ok(_) => error,
        Err(release) => Error::ReleaseAfterError {
            error: Box::new(error),
            release,
        },
    }
}
