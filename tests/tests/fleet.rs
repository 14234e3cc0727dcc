//! Rolling policies out to a fleet, through the `specwright` command line:
//! monitor mode in a build step's chain, the decision log and its summary
//! (`specwright audit`), policy tests (`specwright policy test`) and the
//! metrics file. The wrapper's side of monitor mode is in the host's
//! `wrapper.rs`; registries in `registry.rs`.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{json, Value};
use specwright_tests::{workdir, write_json};

const HELPER: &str = env!("CARGO_BIN_EXE_sw-testhelper");
const ENV_GUARD: &str = env!("SPECWRIGHT_ENV_GUARD_WASM");

fn cli(args: &[&str]) -> Output {
    Command::new(HELPER).arg("cli").args(args).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn audit_records(state: &Path) -> Vec<Value> {
    std::fs::read_to_string(state.join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A step env-guard denies (a variable that looks like a secret).
fn secret_request(dir: &Path, id: &str) -> String {
    write_json(
        &dir.join(format!("{id}.request.json")),
        &json!({"id": id, "args": ["/bin/sh", "-c", "make"], "env": ["PATH=/bin", "DB_PASSWORD=hunter2"], "cwd": "/"}),
    )
    .display()
    .to_string()
}

#[test]
fn a_monitored_policy_in_a_build_steps_chain_changes_nothing_and_its_verdicts_are_summed_up() {
    let (_dir, work) = workdir();
    let state = work.join("state");
    let state_arg = state.display().to_string();
    let facts = work.join("facts.json");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/host-facts.json"),
        &facts,
    )
    .unwrap();
    let facts = facts.display().to_string();
    let spec = |id: &str, policies: &[&str]| {
        let request = secret_request(&work, id);
        let mut args = vec![
            "spec",
            "--request",
            &request,
            "--host-facts",
            &facts,
            "--state-dir",
            &state_arg,
        ];
        args.extend(policies);
        let out = cli(&args);
        if out.status.success() {
            let release = cli(&["release", "--state-dir", &state_arg, id]);
            assert!(release.status.success(), "{}", stderr(&release));
        }
        out
    };
    let alone = spec("alone", &["--policy", "default"]);
    assert!(alone.status.success(), "{}", stderr(&alone));
    let monitored = spec("watched", &["--policy", "default", "--monitor-policy", ENV_GUARD]);
    assert!(monitored.status.success(), "{}", stderr(&monitored));
    let without_id = |out: &Output| {
        String::from_utf8_lossy(&out.stdout)
            .replace("watched", "ID")
            .replace("alone", "ID")
    };
    assert_eq!(
        without_id(&monitored),
        without_id(&alone),
        "the monitored policy changed nothing"
    );
    let records = audit_records(&state);
    let watched: Vec<&Value> = records
        .iter()
        .filter(|r| r["step"] == "watched" && r["op"] == "policy")
        .collect();
    assert_eq!(watched.len(), 2, "{watched:?}");
    assert_eq!(
        (&watched[1]["policy"], &watched[1]["mode"]),
        (&json!(ENV_GUARD), &json!("monitor"))
    );
    assert_eq!(watched[1]["verdict"], "denied");
    assert!(
        watched[1]["denial"].as_str().unwrap().contains("DB_PASSWORD"),
        "{}",
        watched[1]
    );

    // Enforced, it denies; monitored alone it has no spec to go on with.
    // The metrics count the denial.
    let metrics = work.join("specwright.prom");
    let enforced = spec(
        "enforced",
        &[
            "--policy",
            "default",
            "--policy",
            ENV_GUARD,
            "--metrics-file",
            metrics.to_str().unwrap(),
        ],
    );
    assert_eq!(enforced.status.code(), Some(1));
    assert!(stderr(&enforced).contains("DB_PASSWORD"), "{}", stderr(&enforced));
    let text = std::fs::read_to_string(&metrics).unwrap();
    for line in [
        "specwright_reviews_total{outcome=\"denied\"} 1".to_string(),
        format!("specwright_policy_decisions_total{{policy=\"{ENV_GUARD}\",mode=\"enforce\",verdict=\"denied\"}} 1"),
        "specwright_policy_decisions_total{policy=\"default\",mode=\"enforce\",verdict=\"changed\"} 1".to_string(),
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
    let first = spec("first", &["--monitor-policy", ENV_GUARD, "--policy", "default"]);
    assert_eq!(first.status.code(), Some(1));
    assert!(
        stderr(&first).contains("monitored but comes first"),
        "{}",
        stderr(&first)
    );
    // So whether it loads or not (else the chain would break the day it does).
    let unloadable = spec(
        "first",
        &["--monitor-policy", "/nonexistent.wasm", "--policy", "default"],
    );
    assert_eq!(unloadable.status.code(), Some(1));
    assert!(
        stderr(&unloadable).contains("monitored but comes first"),
        "{}",
        stderr(&unloadable)
    );
    // A chain that does not load is a failed review in the metrics.
    let unloaded_metrics = work.join("unloaded.prom");
    let out = spec(
        "unloaded",
        &[
            "--policy",
            "default",
            "--policy",
            "/nonexistent.wasm",
            "--metrics-file",
            unloaded_metrics.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let text = std::fs::read_to_string(&unloaded_metrics).unwrap();
    assert!(
        text.lines()
            .any(|l| l == "specwright_reviews_total{outcome=\"failed\"} 1"),
        "{text}"
    );

    // The summary: reviews, and verdicts by policy and mode.
    let out = cli(&["audit", "--state-dir", &state_arg, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["reviews"], 3, "{summary}");
    let row = |policy: &str, mode: &str| {
        summary["policies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["policy"] == policy && p["mode"] == mode)
            .cloned()
            .unwrap_or_else(|| panic!("no {policy} {mode} in {summary}"))
    };
    let guard_monitored = row(ENV_GUARD, "monitor");
    assert_eq!(
        (&guard_monitored["decisions"], &guard_monitored["denied"]),
        (&json!(1), &json!(1))
    );
    let guard_enforced = row(ENV_GUARD, "enforce");
    assert_eq!(
        (&guard_enforced["decisions"], &guard_enforced["denied"]),
        (&json!(1), &json!(1))
    );
    let default = row("default", "enforce");
    assert_eq!((&default["decisions"], &default["changed"]), (&json!(3), &json!(3)));
    let table = cli(&["audit", "--state-dir", &state_arg]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("3 reviews"), "{table}");
    // POLICY MODE DECISIONS ALLOWED CHANGED DENIED FAILED MEAN-MS
    let columns = |line: &str| {
        line.split_whitespace()
            .skip(1)
            .take(6)
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(ENV_GUARD) && columns(l) == ["monitor", "1", "0", "0", "1", "0"]),
        "{table}"
    );
    // A line that is not a record (torn by a full disk) is skipped, and
    // said so; a log that is not there is an error naming it.
    let mut log = std::fs::read_to_string(state.join("audit.jsonl")).unwrap();
    log.push_str("{\"op\": \"policy\", \"st\n");
    std::fs::write(work.join("torn.jsonl"), log).unwrap();
    let out = cli(&[
        "audit",
        "--log",
        &work.join("torn.jsonl").display().to_string(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("torn.jsonl: 1 lines are not records"),
        "{}",
        stderr(&out)
    );
    let torn: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((&torn["reviews"], &torn["unreadable"]), (&json!(3), &json!(1)));
    let out = cli(&["audit", "--log", &work.join("missing.jsonl").display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("missing.jsonl"), "{}", stderr(&out));
}

/// `specwright policy test`: a line a case naming what differs, the
/// count, and exit code 1 on any failure; a cases dir it cannot read is
/// an error naming it.
#[test]
fn policy_test_names_each_failing_case_and_what_differs() {
    let (_dir, work) = workdir();
    let cases = work.join("cases");
    std::fs::create_dir(&cases).unwrap();
    let step = |env: &[&str]| json!({"id": "s", "args": ["/bin/true"], "env": env, "cwd": "/"});
    let case = |name: &str, input: Value, expected: Option<Value>| {
        write_json(&cases.join(format!("{name}.request.json")), &input);
        if let Some(expected) = expected {
            write_json(&cases.join(format!("{name}.expected.json")), &expected);
        }
    };
    case(
        "a-passes",
        step(&["PATH=/bin"]),
        Some(json!({"spec": {"process": {"env": ["PATH=/bin"]}}})),
    );
    case(
        "b-other-env",
        step(&["PATH=/bin"]),
        Some(json!({"spec": {"process": {"env": ["PATH=/usr/bin"]}}})),
    );
    case(
        "c-other-denial",
        step(&["MY_TOKEN=x"]),
        Some(json!({"denied": "PASSWORD"})),
    );
    case("d-denied-not-spec", step(&["MY_TOKEN=x"]), Some(json!({"spec": {}})));
    case("e-no-expectation", step(&["PATH=/bin"]), None);
    case(
        "f-two-expectations",
        step(&["PATH=/bin"]),
        Some(json!({"spec": {}, "denied": "x"})),
    );
    case("g-denied", step(&["MY_TOKEN=x"]), Some(json!({"denied": "MY_TOKEN"})));
    std::fs::write(cases.join("README.md"), "not a case\n").unwrap();
    // An expectation whose input is misspelt is a failure, not a case fewer.
    write_json(&cases.join("h-orphan.expected.json"), &json!({"denied": "x"}));
    write_json(&cases.join("h-orphan.requests.json"), &step(&["PATH=/bin"]));
    let out = cli(&["policy", "test", ENV_GUARD, cases.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 9, "{text}");
    assert_eq!(lines[0], "ok      a-passes");
    assert!(
        lines[1].starts_with("FAILED  b-other-env: /process/env: expected [\"PATH=/usr/bin\"], got [\"PATH=/bin\"]"),
        "{text}"
    );
    assert!(
        lines[2].starts_with("FAILED  c-other-denial: denied, but saying") && lines[2].contains("MY_TOKEN"),
        "{text}"
    );
    assert!(
        lines[3].starts_with("FAILED  d-denied-not-spec: expected a spec, but the step was denied"),
        "{text}"
    );
    assert!(
        lines[4].starts_with("FAILED  e-no-expectation: ") && lines[4].contains("e-no-expectation.expected.json"),
        "{text}"
    );
    assert!(
        lines[5].starts_with("FAILED  f-two-expectations: ") && lines[5].contains("{\"denied\": \"TEXT\"}"),
        "{text}"
    );
    assert_eq!(lines[6], "ok      g-denied");
    assert!(
        lines[7].starts_with("FAILED  h-orphan: h-orphan.expected.json has no"),
        "{text}"
    );
    assert_eq!(lines[8], "2 passed, 6 failed");

    // One name, two inputs; no case at all; no such directory.
    write_json(&cases.join("a-passes.engine.json"), &json!({}));
    let out = cli(&["policy", "test", ENV_GUARD, cases.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("case a-passes is both"), "{}", stderr(&out));
    let empty = work.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = cli(&["policy", "test", ENV_GUARD, empty.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no cases"), "{}", stderr(&out));
    let out = cli(&["policy", "test", ENV_GUARD, "/nonexistent-cases"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("/nonexistent-cases"), "{}", stderr(&out));
}
