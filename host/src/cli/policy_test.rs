//! `specwright policy test POLICY[:SETTINGS.json] CASES_DIR`: a policy run
//! on cases, each an input and what is expected of it.
//!
//! A case `NAME` is `NAME.request.json` (a build step: run through the
//! default policy and then the one under test, as `specwright spec
//! --policy default --policy POLICY` runs it) or `NAME.engine.json` (an
//! engine's config.json, reviewed by the policy alone as `specwright-runc`
//! reviews it, container id `NAME`), and `NAME.expected.json`:
//! `{"denied": "text the message contains"}` or `{"spec": {...}}`, where
//! every key given must equal the result's (objects compared key by key,
//! anything else whole) and keys not given are not compared. The host
//! facts are `NAME.host.json` when there is one, else fixed ones
//! ([`HostFacts::default`]). Nothing is mounted: the host is a dry run's.
//! Other files in the directory are not read.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use specwright_core::HostFacts;

use crate::policy::{Engine, PolicyArg, PolicyFailure};
use crate::sys::RecordingSyscalls;
use crate::{Chain, Error, Request, Workspace};

/// The most bytes of a case file.
const MAX_CASE_BYTES: u64 = 16 << 20;

/// Runs every case in `cases` against `policy`, printing a line a case and
/// `N passed, M failed`; returns whether all passed.
pub(super) fn run_cases(engine: &Engine, policy: &str, cases: &Path) -> Result<bool> {
    let found = find_cases(cases)?;
    if found.is_empty() {
        bail!(
            "{}: no cases (NAME.request.json or NAME.engine.json, each with NAME.expected.json)",
            cases.display()
        );
    }
    let build_chain = engine.load_chain(&[PolicyArg::enforced("default"), PolicyArg::enforced(policy)])?;
    let engine_chain = engine.load_chain(&[PolicyArg::enforced(policy)])?;
    let state = dry_state_dir();
    let (mut passed, mut failed) = (0, 0);
    for case in &found {
        let outcome = match case.kind {
            Kind::Request => run_request(engine, &build_chain, &state, case),
            Kind::Engine => run_engine(engine, &engine_chain, &state, case),
        }
        .and_then(|got| judge(case, got));
        match outcome {
            Ok(()) => {
                passed += 1;
                println!("ok      {}", case.name);
            }
            Err(why) => {
                failed += 1;
                println!("FAILED  {}: {why:#}", case.name);
            }
        }
    }
    for orphan in orphan_expectations(cases, &found)? {
        failed += 1;
        println!(
            "FAILED  {orphan}: {orphan}.expected.json has no {orphan}.request.json or {orphan}.engine.json beside it"
        );
    }
    println!("{passed} passed, {failed} failed");
    Ok(failed == 0)
}

/// A dry run's state dir: named, never made.
fn dry_state_dir() -> PathBuf {
    std::env::temp_dir().join(format!("specwright-policy-test-{}", std::process::id()))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Request,
    Engine,
}

#[derive(Debug)]
struct Case {
    name: String,
    kind: Kind,
    input: PathBuf,
    dir: PathBuf,
}

impl Case {
    fn file(&self, suffix: &str) -> PathBuf {
        self.dir.join(format!("{}{suffix}", self.name))
    }
}

/// The cases in `dir`, by name; a name with both inputs is an error.
fn find_cases(dir: &Path) -> Result<Vec<Case>> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("cases dir {}", dir.display()))?;
    let mut cases: Vec<Case> = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cases dir {}", dir.display()))?;
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        let (name, kind) = if let Some(name) = file_name.strip_suffix(".request.json") {
            (name, Kind::Request)
        } else if let Some(name) = file_name.strip_suffix(".engine.json") {
            (name, Kind::Engine)
        } else {
            continue;
        };
        if let Some(other) = cases.iter().find(|c| c.name == name) {
            bail!(
                "{}: case {name} is both a build step and an engine's spec ({} and {file_name}); rename one",
                dir.display(),
                other.input.file_name().unwrap_or_default().to_string_lossy()
            );
        }
        cases.push(Case {
            name: name.to_string(),
            kind,
            input: entry.path(),
            dir: dir.to_path_buf(),
        });
    }
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(cases)
}

/// Names of `NAME.expected.json` files in `dir` with no input beside them
/// (a misspelt input would otherwise drop its case silently).
fn orphan_expectations(dir: &Path, cases: &[Case]) -> Result<Vec<String>> {
    let mut orphans = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cases dir {}", dir.display()))? {
        let file_name = entry
            .with_context(|| format!("cases dir {}", dir.display()))?
            .file_name();
        if let Some(name) = file_name.to_str().and_then(|f| f.strip_suffix(".expected.json")) {
            if !cases.iter().any(|c| c.name == name) {
                orphans.push(name.to_string());
            }
        }
    }
    orphans.sort();
    Ok(orphans)
}

/// What the chain made of a case: a spec, or a denial's reason.
enum Got {
    Spec(Value),
    Denied(String),
}

fn read_text(path: &Path) -> Result<String> {
    crate::input::read_bounded_text(path, MAX_CASE_BYTES).with_context(|| format!("{}", path.display()))
}

fn facts_of(case: &Case) -> Result<HostFacts> {
    let path = case.file(".host.json");
    if !path.exists() {
        return Ok(HostFacts::default());
    }
    Ok(crate::facts::read_facts_file(&path)?)
}

/// A dry run's workspace: nothing is made, not even the state dir.
fn dry_workspace(state: &Path) -> Result<Workspace> {
    Ok(Workspace::open_with(state, Arc::new(RecordingSyscalls::dry_run()))?)
}

/// A denial is the case's result; any other failure fails the case.
fn denial_or(error: Error) -> Result<Got> {
    match error {
        Error::Policy(PolicyFailure::Denied { reason, .. }) => Ok(Got::Denied(reason)),
        error => Err(error.into()),
    }
}

fn run_request(engine: &Engine, chain: &Chain, state: &Path, case: &Case) -> Result<Got> {
    let text = read_text(&case.input)?;
    let request = Request::from_json(&text)
        .map_err(Error::Request)
        .with_context(|| format!("{}", case.input.display()))?;
    let facts = facts_of(case)?;
    match engine.prepare(chain, &dry_workspace(state)?, &request, &facts) {
        Ok(step) => {
            let spec = serde_json::to_value(step.spec())?;
            step.keep();
            Ok(Got::Spec(spec))
        }
        Err(e) => denial_or(e),
    }
}

fn run_engine(engine: &Engine, chain: &Chain, state: &Path, case: &Case) -> Result<Got> {
    let text = read_text(&case.input)?;
    let facts = facts_of(case)?;
    match engine.review(chain, &dry_workspace(state)?, &case.name, &text, &facts) {
        Ok(spec) => Ok(Got::Spec(serde_json::to_value(&spec)?)),
        Err(e) => denial_or(e),
    }
}

/// Whether `got` is what `NAME.expected.json` says.
fn judge(case: &Case, got: Got) -> Result<()> {
    let path = case.file(".expected.json");
    let expected: Value = serde_json::from_str(&read_text(&path)?).with_context(|| format!("{}", path.display()))?;
    let expectation = match expected.as_object() {
        Some(map) if map.len() == 1 => map.iter().next(),
        _ => None,
    };
    match (expectation, got) {
        (Some((key, Value::String(text))), Got::Denied(reason)) if key == "denied" => {
            if reason.contains(text.as_str()) {
                Ok(())
            } else {
                bail!("denied, but saying {reason:?}, which does not contain {text:?}")
            }
        }
        (Some((key, Value::String(_))), Got::Spec(_)) if key == "denied" => bail!("expected a denial, got a spec"),
        (Some((key, spec @ Value::Object(_))), Got::Spec(got)) if key == "spec" => match mismatch("", spec, &got) {
            None => Ok(()),
            Some(why) => bail!("{why}"),
        },
        (Some((key, Value::Object(_))), Got::Denied(reason)) if key == "spec" => {
            bail!("expected a spec, but the step was denied: {reason}")
        }
        _ => bail!(
            "{}: expected {{\"denied\": \"TEXT\"}} or {{\"spec\": {{...}}}}",
            path.display()
        ),
    }
}

/// Where `got` differs from `expected`, as a JSON Pointer and both values:
/// objects are compared key by key over the keys `expected` gives,
/// anything else whole.
fn mismatch(path: &str, expected: &Value, got: &Value) -> Option<String> {
    match (expected, got) {
        (Value::Object(expected), Value::Object(got)) => expected.iter().find_map(|(key, value)| {
            let at = format!("{path}/{}", key.replace('~', "~0").replace('/', "~1"));
            match got.get(key) {
                Some(got) => mismatch(&at, value, got),
                // The typed spec leaves out what is at its default value;
                // `null` expects the field absent.
                None if is_default(value) => None,
                None => Some(format!("{at}: expected {value}, but the spec has none")),
            }
        }),
        (expected, got) if expected == got => None,
        (expected, got) => Some(format!(
            "{}: expected {expected}, got {got}",
            if path.is_empty() { "/" } else { path }
        )),
    }
}

/// Whether `value` is what a spec leaves out: `null` (absent), `false`,
/// `""`, `[]`, or an object of such values. Not `0`: an absent number is
/// not zero (seccomp's `defaultErrnoRet`, a memory limit).
fn is_default(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(_) => false,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.values().all(is_default),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_the_keys_given_are_compared_and_the_first_difference_is_named() {
        let got = json!({"process": {"env": ["A=1"], "args": ["/bin/sh"]}, "hostname": "h", "a/b": 1});
        assert_eq!(mismatch("", &json!({"process": {"env": ["A=1"]}}), &got), None);
        assert_eq!(mismatch("", &json!({}), &got), None);
        assert_eq!(
            mismatch("", &json!({"process": {"env": ["A=1", "B=2"]}}), &got).unwrap(),
            r#"/process/env: expected ["A=1","B=2"], got ["A=1"]"#
        );
        assert_eq!(
            mismatch("", &json!({"process": {"cwd": "/"}}), &got).unwrap(),
            r#"/process/cwd: expected "/", but the spec has none"#
        );
        assert_eq!(
            mismatch("", &json!({"a/b": 2}), &got).unwrap(),
            "/a~1b: expected 2, got 1"
        );
        // A field at its default value is one the spec leaves out; null
        // expects it absent.
        let defaults =
            json!({"process": {"terminal": false, "cwd": ""}, "linux": {"seccomp": null}, "mounts": [], "hooks": {}});
        assert_eq!(mismatch("", &defaults, &got), None);
        assert_eq!(
            mismatch("", &json!({"linux": {"seccomp": {"defaultErrnoRet": 0}}}), &got).unwrap(),
            r#"/linux: expected {"seccomp":{"defaultErrnoRet":0}}, but the spec has none"#
        );
        assert_eq!(
            mismatch("", &json!({"hostname": null}), &got).unwrap(),
            "/hostname: expected null, got \"h\""
        );
    }
}
