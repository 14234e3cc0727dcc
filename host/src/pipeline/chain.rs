//! Running a chain: each policy in a fresh instance, its output checked
//! (parsed once, strictly, against the runtime-spec schema), audited, and
//! handed to the next; whatever happens, the step's holdings are released
//! on failure.

use std::time::Instant;

use serde_json::{json, Value};
use specwright_core::spec::Spec;
use specwright_core::{HostFacts, Request};

use super::Error;
use crate::audit::Audit;
use crate::policy::{Engine, LoadedPolicy, PolicyFacts, PolicyFailure};
use crate::step::StepHost;
use crate::validate;

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
        let (returned, outcome) = run_policy(engine, policy, step, &input, &facts, previous, before, audit);
        step = returned;
        match outcome {
            Ok(out) => last = Some(out),
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
    chain: &[LoadedPolicy],
    mut step: StepHost,
    id: &str,
    spec: Spec,
    facts: &HostFacts,
    audit: &Audit,
) -> Result<Spec, Error> {
    let facts = PolicyFacts::from(facts);
    // What the audit compares each policy's output with: the engine's
    // spec, then the output before it, each made into a value once.
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
        let (returned, outcome) = run_policy(engine, policy, step, &input, &facts, Some(&previous), &before, audit);
        step = returned;
        (current, before) = match outcome {
            Ok(out) => (out.spec, out.value),
            Err(e) => return Err(release_after(step, e)),
        };
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

/// What a policy returned, checked: its text (handed to the next policy
/// as it was written), the parsed value (for the audit's changed fields)
/// and the typed spec.
struct Output {
    text: String,
    value: Value,
    spec: Spec,
}

/// Runs one policy of a chain on `step` and checks what it returns (parsed
/// once, strictly, against the runtime-spec schema and for what runtimes
/// would read otherwise); audits the outcome, with the top-level fields it
/// changed from `before`.
#[allow(clippy::too_many_arguments)]
fn run_policy(
    engine: &Engine,
    policy: &LoadedPolicy,
    mut step: StepHost,
    request: &Input<'_>,
    facts: &PolicyFacts,
    previous: Option<&str>,
    before: &Value,
    audit: &Audit,
) -> (StepHost, Result<Output, Error>) {
    if let Some(signal) = step_cancelled(&step) {
        return (step, Err(Error::Interrupted(signal)));
    }
    step.set_actor(&policy.name);
    let start = Instant::now();
    let (step, result) = engine.call_with(policy, step, &request.json, facts, previous);
    let checked = result.and_then(|text| {
        validate::validate_json(&text)
            .map(|(value, spec)| Output { text, value, spec })
            .map_err(|e| PolicyFailure::InvalidSpec {
                policy: policy.name.clone(),
                message: e.to_string(),
            })
    });
    let message = checked.as_ref().err().map(ToString::to_string);
    let outcome = match (&checked, &message) {
        (Ok(out), _) => Ok(json!({"changed": changed_fields(before, &out.value)})),
        (Err(_), message) => Err(message.as_deref().unwrap_or_default()),
    };
    audit.record(request.id, &policy.name, "policy", json!({}), outcome, start.elapsed());
    (step, checked.map_err(Error::from))
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
pub(crate) fn release_after(step: StepHost, error: Error) -> Error {
    match step.release_all() {
        Ok(_) => error,
        Err(release) => Error::ReleaseAfterError {
            error: Box::new(error),
            release,
        },
    }
}
