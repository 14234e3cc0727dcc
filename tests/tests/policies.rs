//! Policies as plugins: hostile ones are contained, example ones enforce,
//! the compile cache and inspection work.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use serde_json::{json, Value};
use specwright::{Engine, Limits, LoadedPolicy};
use specwright_host_core::state::StateDir;
use specwright_host_core::sys::RecordingSyscalls;
use specwright_tests::{
    make_oracle_source_tree, oracle_cases_dir, oracle_facts_file, run_script_in_private_mount_namespace, workdir,
    write_json, ScriptReport,
};

const HELPER: &str = env!("CARGO_BIN_EXE_sw-testhelper");
const TEST_POLICY: &str = env!("SPECWRIGHT_TEST_POLICY_WASM");
const HARDENED: &str = env!("SPECWRIGHT_HARDENED_WASM");
const MOUNT_ALLOWLIST: &str = env!("SPECWRIGHT_MOUNT_ALLOWLIST_WASM");
const TEMPLATE: &str = env!("SPECWRIGHT_TEMPLATE_WASM");
const COMPAT_0_2_0: &str = env!("SPECWRIGHT_COMPAT_0_2_0_WASM");

/// A request whose mounts need a temporary mount, so leaks would show.
fn mounting_request(work: &Path, extra: Value) -> PathBuf {
    let src = work.join("src");
    if !src.exists() {
        make_oracle_source_tree(&src).unwrap();
    }
    let mut request = json!({
        "id": "plugin-step",
        "args": ["/bin/true"],
        "mounts": [{"dest": "/ro", "source": src, "readonly": true, "selector": "sub/dir"}],
    });
    for (k, v) in extra.as_object().unwrap() {
        request[k] = v.clone();
    }
    write_json(&work.join("request.json"), &request)
}

/// Runs `specwright spec ARGS` in a private mount namespace and reports
/// its exit code, stderr, and what is left mounted or recorded afterwards.
fn spec_in_namespace(work: &Path, args: &[String]) -> (i32, String, String, String) {
    let state = work.join("state");
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let script = format!(
        r#"{HELPER} cli spec --state-dir {state} --host-facts {facts} {args} > {work}/out.json 2> {work}/err.txt
echo "rc=$?"
echo "left=$(grep -c ' {state}/mounts/' /proc/self/mountinfo) dirs=$(ls {state}/mounts | wc -l) records=$(ls {state}/steps | wc -l)""#,
        state = state.display(),
        facts = oracle_facts_file().display(),
        args = quoted.join(" "),
        work = work.display(),
    );
    let ScriptReport { rc, left, .. } = run_script_in_private_mount_namespace(&script);
    let err = std::fs::read_to_string(work.join("err.txt")).unwrap_or_default();
    let out_json = std::fs::read_to_string(work.join("out.json")).unwrap_or_default();
    (rc, err, left, out_json)
}

fn hostile(work: &Path, mode: &str) -> String {
    let settings = write_json(&work.join(format!("{mode}.json")), &json!({"mode": mode}));
    format!("{TEST_POLICY}:{}", settings.display())
}

#[test]
fn hostile_policies_get_a_clear_error_and_leave_nothing() {
    let cases: &[(&str, bool, &[&str])] = &[
        // (mode, after the default policy, what the error must say)
        ("spin", false, &["exceeded its time", "limit"]),
        ("spin-after-mount", false, &["exceeded its time"]),
        ("memory-bomb", false, &["exceeded its memory", "limit"]),
        (
            "bad-index",
            false,
            &["may not materialize", "out of range", "specwright_testpolicy.wasm"],
        ),
        ("invalid-json", true, &["returned an invalid spec", "not JSON"]),
        ("bad-schema", true, &["returned an invalid spec", "schema"]),
        ("deny", true, &["denied the step", "denied on purpose"]),
        ("mount-then-fail", false, &["failing after a mount"]),
        ("mount-then-trap", false, &["trapped"]),
        (
            "print-then-fail",
            true,
            &[
                "failing after printing",
                "stderr of the policy:\nto stderr from rust",
                "stdout of the policy:\nto stdout from rust",
            ],
        ),
    ];
    let mut failures = Vec::new();
    for (mode, after_default, needles) in cases {
        let (_dir, work) = workdir();
        let request = mounting_request(&work, json!({}));
        let mut args = vec![
            "--policy-timeout-ms".to_string(),
            "300".to_string(),
            "--request".to_string(),
        ];
        args.push(request.display().to_string());
        if *after_default {
            args.extend(["--policy".to_string(), "default".to_string()]);
        }
        args.extend(["--policy".to_string(), hostile(&work, mode)]);
        let (rc, err, left, _) = spec_in_namespace(&work, &args);
        if rc != 1 {
            failures.push(format!("{mode}: exit code {rc}: {err}"));
        }
        for needle in *needles {
            if !err.contains(needle) {
                failures.push(format!("{mode}: error lacks {needle:?}: {err}"));
            }
        }
        if left != "left=0 dirs=0 records=0" {
            failures.push(format!("{mode}: {left}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `specwright spec` of a mounting request through the default and then
/// the hostile policy in `mode`, in a private mount namespace.
fn after_default_in_namespace(mode: &str) -> (i32, String, String, String) {
    let (_dir, work) = workdir();
    let request = mounting_request(&work, json!({}));
    let args: Vec<String> = vec![
        "--request".into(),
        request.display().to_string(),
        "--policy".into(),
        "default".into(),
        "--policy".into(),
        hostile(&work, mode),
    ];
    spec_in_namespace(&work, &args)
}

/// What a policy prints is kept from specwright's own output: the spec
/// on stdout stays a spec, stderr stays empty.
#[test]
fn a_policy_that_prints_still_gives_a_clean_spec() {
    let (rc, err, left, out) = after_default_in_namespace("print");
    assert_eq!(rc, 0, "{err}");
    assert_eq!(err, "");
    assert!(serde_json::from_str::<Value>(&out).is_ok(), "{out}");
    assert_eq!(left, "left=2 dirs=2 records=1");
}

#[test]
fn a_policy_may_release_its_own_mount_early() {
    let (rc, err, left, out) = after_default_in_namespace("release-early");
    assert_eq!(rc, 0, "{err}");
    // The default policy's temporary mount and its pinned selector stay;
    // the hostile one's own is gone.
    assert_eq!(left, "left=2 dirs=2 records=1", "{err}");
    assert!(serde_json::from_str::<Value>(&out).is_ok());
}

#[test]
fn components_that_do_not_fit_are_refused_at_load_with_the_reason() {
    let (_dir, work) = workdir();
    let cases = [
        (
            "unknown-import.wat",
            r#"(component (import "evil:net/sockets@1.0.0" (instance)))"#,
            "evil:net/sockets@1.0.0",
        ),
        (
            "other-version.wat",
            r#"(component (import "specwright:policy/host@9.0.0" (instance)))"#,
            "specwright:policy/host@9.0.0",
        ),
        (
            "wasi-beyond-the-list.wat",
            r#"(component (import "wasi:keyvalue/store@0.2.0-draft" (instance)))"#,
            "imports what this host does not provide: wasi:keyvalue/store@0.2.0-draft",
        ),
        (
            "wasi-0-3.wat",
            r#"(component (import "wasi:cli/environment@0.3.0" (instance)))"#,
            "wasi:cli/environment@0.3.0",
        ),
        ("no-exports.wat", "(component)", "does not export"),
    ];
    for (file, text, needle) in cases {
        let path = work.join(file);
        std::fs::write(&path, text).unwrap();
        let out = Command::new(HELPER)
            .args(["cli", "spec", "--state-dir"])
            .arg(work.join("state"))
            .arg("--request")
            .arg(oracle_cases_dir().join("minimal.request.json"))
            .arg("--policy")
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{file}: {err}");
        assert!(err.contains(file) && err.contains(needle), "{file}: {err}");
    }
}

fn cli(args: &[&str]) -> Output {
    Command::new(HELPER).arg("cli").args(args).output().unwrap()
}

#[test]
fn inspect_shows_world_exports_and_metadata() {
    let out = cli(&["policy", "inspect", "--json", HARDENED]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["name"], "hardened");
    assert_eq!(info["targets"], "specwright:policy@0.2.1 (world policy)");
    assert_eq!(info["exports"], json!(["generate", "metadata"]));
    assert!(info["size_bytes"].as_u64().unwrap() > 1000);
    assert!(info["description"].as_str().unwrap().contains("CAP_NET_RAW"));
}

/// The default policy followed by the test policy counting its calls
/// (it names the host `call-N`), and the oracle's minimal request and facts.
fn counting_chain(runtime: &Engine) -> (Vec<LoadedPolicy>, String, specwright_core::HostFacts) {
    let chain = vec![
        runtime.load_default().unwrap(),
        runtime
            .load_bytes(
                "count",
                &std::fs::read(TEST_POLICY).unwrap(),
                &serde_json::json!({"mode": "count"}),
            )
            .unwrap(),
    ];
    let request = std::fs::read_to_string(oracle_cases_dir().join("minimal.request.json")).unwrap();
    let facts = serde_json::from_str(&std::fs::read_to_string(oracle_facts_file()).unwrap()).unwrap();
    (chain, request, facts)
}

/// A step host that plans every operation and performs none.
fn dry_step_host(work: &Path, request: &specwright::Request) -> specwright_host_core::step::StepHost {
    specwright_host_core::step::StepHost::new(
        StateDir::at(work),
        Arc::new(RecordingSyscalls::dry_run()),
        Arc::new(specwright_host_core::audit::Audit::events_only()),
        specwright_host_core::step::StepOptions::default(),
        request,
        specwright_host_core::state::StepLock::planned(&request.id),
    )
    .unwrap()
}

/// The spec `chain` makes for `request` in a dry run, each policy run on
/// the runtime given (the previous one's spec passed on).
fn dry_spec(
    runtime: &Engine,
    chain: &[LoadedPolicy],
    request: &str,
    facts: &specwright_core::HostFacts,
    work: &Path,
) -> Value {
    let request = specwright::Request::from_json(request).unwrap();
    let mut step = dry_step_host(work, &request);
    let canonical = serde_json::to_string(&request).unwrap();
    let mut previous: Option<String> = None;
    for policy in chain {
        let (returned, spec) = runtime.call(policy, step, &canonical, facts, previous.as_deref());
        step = returned;
        previous = Some(spec.unwrap());
    }
    serde_json::from_str(&previous.unwrap()).unwrap()
}

#[test]
fn each_step_gets_a_fresh_instance() {
    let (_dir, work) = workdir();
    let runtime = Engine::new(Limits::default()).unwrap();
    let (chain, request, facts) = counting_chain(&runtime);
    for _ in 0..3 {
        let spec = dry_spec(&runtime, &chain, &request, &facts, &work);
        assert_eq!(spec["hostname"], "call-1");
    }
}

/// A worker thread's runtime (its own engine and instance pool) runs
/// policies adopted from the runtime that compiled them, settings and all,
/// and gives the same spec.
#[test]
fn a_worker_runtime_runs_adopted_policies_as_their_first_runtime_does() {
    let (_dir, work) = workdir();
    let runtime = Engine::pooled(Limits::default(), 4).unwrap();
    let (chain, request, facts) = counting_chain(&runtime);
    let first = dry_spec(&runtime, &chain, &request, &facts, &work);
    assert_eq!(first["hostname"], "call-1", "the counting policy ran with its settings");
    let by_worker = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let worker = runtime.for_worker().unwrap();
                let adopted: Vec<_> = chain.iter().map(|p| worker.adopt(p).unwrap()).collect();
                assert_eq!(adopted[1].name, "count");
                [
                    dry_spec(&worker, &adopted, &request, &facts, &work),
                    dry_spec(&worker, &adopted, &request, &facts, &work),
                ]
            })
            .join()
            .unwrap()
    });
    assert_eq!(by_worker, [first.clone(), first]);
}

#[test]
fn hardened_denies_insecure_and_tightens_the_default_spec() {
    let (_dir, work) = workdir();
    let insecure = mounting_request(&work, json!({"security_mode": "insecure"}));
    let args = |request: &Path| -> Vec<String> {
        vec![
            "--request".into(),
            request.display().to_string(),
            "--policy".into(),
            "default".into(),
            "--policy".into(),
            HARDENED.into(),
        ]
    };
    let (rc, err, left, _) = spec_in_namespace(&work, &args(&insecure));
    assert_eq!(rc, 1);
    assert!(err.contains("denied the step: insecure mode is not allowed"), "{err}");
    assert_eq!(left, "left=0 dirs=0 records=0");

    let (_dir2, work2) = workdir();
    let sandbox = mounting_request(&work2, json!({}));
    let (rc, err, _, out) = spec_in_namespace(&work2, &args(&sandbox));
    assert_eq!(rc, 0, "{err}");
    let spec: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(spec["process"]["noNewPrivileges"], true);
    assert_ne!(spec["root"]["readonly"], true, "a build step's rootfs stays writable");
    let bounding = spec["process"]["capabilities"]["bounding"].as_array().unwrap();
    assert!(!bounding.iter().any(|c| c == "CAP_NET_RAW" || c == "CAP_MKNOD"));
    assert_eq!(bounding.len(), 12);
}

#[test]
fn mount_allowlist_denies_mounts_outside_its_prefixes() {
    let (_dir, work) = workdir();
    let request = mounting_request(&work, json!({}));
    let run = |allowed: &str| {
        let settings = write_json(&work.join("allow.json"), &json!({"allowed_sources": [allowed]}));
        spec_in_namespace(
            &work,
            &[
                "--request".into(),
                request.display().to_string(),
                "--policy".into(),
                format!("{MOUNT_ALLOWLIST}:{}", settings.display()),
            ],
        )
    };
    let (rc, err, left, _) = run("/var/lib/buildkit");
    assert_eq!(rc, 1);
    assert!(
        err.contains("denied the step: mount /ro uses") && err.contains("/var/lib/buildkit"),
        "{err}"
    );
    assert_eq!(left, "left=0 dirs=0 records=0");
    let (rc, err, _, out) = run(work.to_str().unwrap());
    assert_eq!(rc, 0, "{err}");
    let spec: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(spec["mounts"].as_array().unwrap().last().unwrap()["destination"], "/ro");
}

#[test]
fn the_template_policy_builds_and_runs_after_the_default() {
    let (_dir, work) = workdir();
    let settings = write_json(&work.join("s.json"), &json!({"extra_env": ["FROM_TEMPLATE=1"]}));
    let out = cli(&[
        "spec",
        "--state-dir",
        work.join("state").to_str().unwrap(),
        "--request",
        oracle_cases_dir().join("minimal.request.json").to_str().unwrap(),
        "--host-facts",
        oracle_facts_file().to_str().unwrap(),
        "--policy",
        "default",
        "--policy",
        &format!("{TEMPLATE}:{}", settings.display()),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let spec: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(spec["process"]["env"], json!(["PATH=/usr/bin:/bin", "FROM_TEMPLATE=1"]));
}

/// Our policies run on a small shadow stack (build-support's
/// `GUEST_STACK_BYTES`, so that a fresh instance has less memory to reset);
/// the deepest document a policy parses, a previous spec nested to
/// serde_json's recursion limit, must still fit.
#[test]
fn the_guest_stack_holds_a_previous_spec_nested_to_the_parser_limit() {
    let (_dir, work) = workdir();
    let runtime = Engine::new(Limits::default()).unwrap();
    let hardened = runtime
        .load_bytes("hardened", &std::fs::read(HARDENED).unwrap(), &Value::Null)
        .unwrap();
    let request_text = std::fs::read_to_string(oracle_cases_dir().join("minimal.request.json")).unwrap();
    let request = specwright_core::Request::from_json(&request_text).unwrap();
    let facts: specwright_core::HostFacts =
        serde_json::from_str(&std::fs::read_to_string(oracle_facts_file()).unwrap()).unwrap();
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(oracle_cases_dir().join("minimal.expected.json")).unwrap())
            .unwrap();
    let expected = expected["spec"].to_string();
    // The previous spec with an unknown field nested `depth` arrays deep.
    let previous = |depth: usize| -> String {
        let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let body = expected.trim_start().strip_prefix('{').unwrap();
        format!("{{\"x-deep\":{deep},{body}")
    };
    // Across serde_json's recursion limit (128 levels, counted its own
    // way through `flatten`), every depth is either passed on or refused by
    // the parser; none exhausts the stack.
    let (mut passed, mut refused) = (0, 0);
    for depth in 110..=130 {
        let step = dry_step_host(&work, &request);
        let text = previous(depth);
        match runtime.call(&hardened, step, &request_text, &facts, Some(&text)).1 {
            Ok(spec) => {
                let spec: Value = serde_json::from_str(&spec).unwrap();
                let sent: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(spec["x-deep"], sent["x-deep"], "depth {depth}: passed on unchanged");
                passed += 1;
            }
            Err(e) => {
                let message = e.to_string();
                assert!(
                    message.contains("recursion limit"),
                    "depth {depth}: the parser's limit, not a trap: {message}"
                );
                refused += 1;
            }
        }
    }
    assert!(
        passed > 0 && refused > 0,
        "the depths cross the parser's limit ({passed} passed, {refused} refused)"
    );
}

/// Regression: each of these got past the example policies as users copy
/// them; now each is denied, with real paths resolved by the host.
#[test]
fn the_example_policies_close_the_known_bypasses() {
    let (_dir, work) = workdir();
    let allowed = work.join("allowed");
    std::fs::create_dir_all(allowed.join("l")).unwrap();
    std::os::unix::fs::symlink("/etc", allowed.join("escape")).unwrap();
    let settings = write_json(&work.join("allow.json"), &json!({"allowed_sources": [allowed]}));
    let a = allowed.display();
    let allowlist_cases = [
        (
            json!({"mounts": [{"dest": "/a", "mountable": [{"type": "none", "source": "/etc", "options": ["rbind"]}]}]}),
            "mount /a uses /etc",
        ),
        (
            json!({"mounts": [{"dest": "/o", "mountable": [{"type": "overlay", "source": "overlay",
                "options": [format!("lowerdir={a}/l"), "lowerdir+=/etc"]}]}]}),
            "mount /o uses /etc",
        ),
        (
            json!({"mounts": [{"dest": "/s", "source": format!("{a}/escape"), "readonly": true}]}),
            "(really /etc)",
        ),
        (json!({"resolv_conf": "/etc/shadow"}), "resolv_conf uses /etc/shadow"),
        (
            json!({"hosts_file": format!("{a}/escape/hosts")}),
            "(really /etc/hosts)",
        ),
    ];
    let hardened_cases = [
        (
            json!({"network": {"mode": "path", "path": "/proc/self/ns/net"}}),
            "is the host's own (net:[",
        ),
        (json!({"process_mode": "no-sandbox"}), "no-sandbox"),
    ];
    let allowlist = vec![
        "--policy".to_string(),
        format!("{MOUNT_ALLOWLIST}:{}", settings.display()),
    ];
    let hardened: Vec<String> = ["--policy", "default", "--policy", HARDENED].map(String::from).into();
    let mut failures = Vec::new();
    let cases = allowlist_cases
        .into_iter()
        .map(|(extra, needle)| ("mount-allowlist", &allowlist, extra, needle))
        .chain(
            hardened_cases
                .into_iter()
                .map(|(extra, needle)| ("hardened", &hardened, extra, needle)),
        );
    for (policy, chain, extra, needle) in cases {
        let mut request = json!({"id": "bypass", "args": ["/bin/true"]});
        for (k, v) in extra.as_object().unwrap() {
            request[k] = v.clone();
        }
        let request = write_json(&work.join("bypass.json"), &request);
        let mut args = vec!["--request".to_string(), request.display().to_string()];
        args.extend(chain.iter().cloned());
        let (rc, err, left, _) = spec_in_namespace(&work, &args);
        if rc != 1 || !err.contains("denied the step") || !err.contains(needle) {
            failures.push(format!("{policy} {extra}: rc {rc}: {err}"));
        }
        if left != "left=0 dirs=0 records=0" {
            failures.push(format!("{policy} {extra}: {left}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A policy built against the previous package version, 0.2.0, still
/// loads and runs on this host (0.2.1 only adds `selinux-labels`): it is
/// inspected as 0.2.0's and, after the default, its host call is answered.
#[test]
fn a_policy_built_against_wit_0_2_0_still_loads_and_runs() {
    let out = cli(&["policy", "inspect", "--json", COMPAT_0_2_0]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["targets"], "specwright:policy@0.2.0 (world policy)");
    assert!(
        info["imports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i == "specwright:policy/host@0.2.0"),
        "{info}"
    );
    let (_dir, work) = workdir();
    let resolv = work.join("resolv.conf");
    std::fs::write(&resolv, "nameserver 192.0.2.1\n").unwrap();
    let mut request: Value =
        serde_json::from_str(&std::fs::read_to_string(oracle_cases_dir().join("minimal.request.json")).unwrap())
            .unwrap();
    request["resolv_conf"] = json!(resolv);
    let request = write_json(&work.join("request.json"), &request);
    let spec = |policies: &[&str]| -> Value {
        let facts = oracle_facts_file();
        let state = work.join("state");
        let mut args = vec!["spec", "--request", request.to_str().unwrap()];
        args.extend(["--host-facts", facts.to_str().unwrap()]);
        args.extend(["--state-dir", state.to_str().unwrap()]);
        for p in policies {
            args.extend(["--policy", p]);
        }
        let out = cli(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert_eq!(spec(&["default", COMPAT_0_2_0]), spec(&["default"]));
    let audit = std::fs::read_to_string(work.join("state/audit.jsonl")).unwrap();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"exists\"") && l.contains(COMPAT_0_2_0)),
        "the 0.2.0 policy's host call was not made: {audit}"
    );
}
