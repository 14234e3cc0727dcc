//! The `specwright` command line, run as users run it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use specwright_tests::{make_oracle_source_tree, oracle_cases_dir, shared_schema_validator, OrderedJson};

const HELPER: &str = env!("CARGO_BIN_EXE_sw-testhelper");

fn case(name: &str, kind: &str) -> PathBuf {
    oracle_cases_dir().join(format!("{name}.{kind}.json"))
}

fn specwright(args: &[&str]) -> Output {
    Command::new(HELPER)
        .arg("cli")
        .args(args)
        .output()
        .expect("running specwright")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn expected_spec(name: &str) -> Value {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(case(name, "expected")).unwrap()).unwrap();
    v["spec"].clone()
}

fn spec_minimal(extra: &[&str]) -> Output {
    let state = tempfile::tempdir().unwrap();
    let request = case("minimal", "request");
    let facts = case("minimal", "host");
    let mut args = vec![
        "spec",
        "--request",
        request.to_str().unwrap(),
        "--host-facts",
        facts.to_str().unwrap(),
        "--state-dir",
        state.path().to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    specwright(&args)
}

#[test]
fn minimal_spec_is_printed_and_matches_the_schema() {
    let out = spec_minimal(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let spec: Value = serde_json::from_slice(&out.stdout).unwrap();
    let validator = shared_schema_validator();
    let errors: Vec<String> = validator.iter_errors(&spec).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(spec, expected_spec("minimal"));
}

#[test]
fn the_schema_validator_rejects_a_broken_spec() {
    // The check above could not fail if the validator accepted anything.
    let mut spec = expected_spec("minimal");
    spec["process"]["user"]["uid"] = Value::String("root".into());
    assert!(!shared_schema_validator().is_valid(&spec));
}

#[test]
fn default_policy_loads_from_a_wasm_file_like_any_policy() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("buildkit.wasm");
    std::fs::write(&wasm, specwright::DEFAULT_POLICY_WASM).unwrap();
    let out = spec_minimal(&["--policy", wasm.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let spec: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(spec, expected_spec("minimal"));
}

#[test]
fn a_chain_passes_the_previous_spec_on() {
    let out = spec_minimal(&["--policy", "default", "--policy", "default"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let spec: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(spec, expected_spec("minimal"));
}

#[test]
fn bundle_gets_config_json() {
    let bundle = tempfile::tempdir().unwrap();
    let target = bundle.path().join("b");
    let out = spec_minimal(&["--bundle", target.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    let written = std::fs::read_to_string(target.join("config.json")).unwrap();
    let spec: Value = serde_json::from_str(&written).unwrap();
    assert_eq!(spec, expected_spec("minimal"));
    // In runtime-spec's field order, as BuildKit (and `runc spec`) write it.
    let buildkit = OrderedJson::parse(&std::fs::read_to_string(case("minimal", "expected")).unwrap()).unwrap();
    let order = buildkit
        .get("spec")
        .unwrap()
        .key_order_differences(&OrderedJson::parse(&written).unwrap());
    assert!(order.is_empty(), "config.json's keys:\n{}", order.join("\n"));
    let names: Vec<_> = std::fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["config.json"], "no temporary file is left in the bundle");
}

fn write_request(dir: &Path, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let mut request: Value =
        serde_json::from_str(&std::fs::read_to_string(case("minimal", "request")).unwrap()).unwrap();
    edit(&mut request);
    let path = dir.join("request.json");
    std::fs::write(&path, request.to_string()).unwrap();
    path
}

fn spec_with_request(request: &Path) -> Output {
    let state = tempfile::tempdir().unwrap();
    specwright(&[
        "spec",
        "--request",
        request.to_str().unwrap(),
        "--host-facts",
        case("minimal", "host").to_str().unwrap(),
        "--state-dir",
        state.path().to_str().unwrap(),
    ])
}

#[test]
fn unknown_request_field_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let request = write_request(dir.path(), |r| r["hostnmae"] = Value::String("x".into()));
    let out = spec_with_request(&request);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("hostnmae"), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
}

#[test]
fn wrongly_typed_nested_field_is_named_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let request = write_request(dir.path(), |r| {
        r["mounts"] = serde_json::json!([{"dest": "/a", "source": "/x", "readonly": "yes"}])
    });
    let out = spec_with_request(&request);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("mounts[0].readonly"), "{}", stderr(&out));
}

#[test]
fn missing_request_file_is_named() {
    let out = specwright(&[
        "spec",
        "--request",
        "/nonexistent/request.json",
        "--state-dir",
        "/nonexistent/state",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("/nonexistent/request.json"), "{}", stderr(&out));
}

#[test]
fn bad_host_facts_field_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let facts = dir.path().join("facts.json");
    std::fs::write(
        &facts,
        r#"{"kernel_release": "6.1", "seccomp": "yes", "first_free_loop": 0, "in_user_namespace": false}"#,
    )
    .unwrap();
    let out = specwright(&[
        "spec",
        "--request",
        case("minimal", "request").to_str().unwrap(),
        "--host-facts",
        facts.to_str().unwrap(),
        "--state-dir",
        dir.path().join("state").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("facts.json") && err.contains("invalid type"), "{err}");
}

#[test]
fn a_policy_file_that_is_not_a_component_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("core.wasm");
    // The smallest core module: magic and version 1, no sections.
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let out = spec_minimal(&["--policy", core.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("core.wasm") && stderr(&out).contains("not a component"),
        "{}",
        stderr(&out)
    );

    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"#!/bin/sh\necho hi\n").unwrap();
    let out = spec_minimal(&["--policy", junk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("junk.wasm") && stderr(&out).contains("not a valid WebAssembly component"),
        "{}",
        stderr(&out)
    );

    let out = spec_minimal(&["--policy", "/nonexistent/policy.wasm"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("/nonexistent/policy.wasm"), "{}", stderr(&out));
}

/// A read-only selector mount made by one process, released by another,
/// inside one private mount namespace.
#[test]
fn mounts_stay_until_release_from_a_new_process() {
    let work = tempfile::tempdir().unwrap();
    let work_path = std::fs::canonicalize(work.path()).unwrap();
    let src = work_path.join("src");
    make_oracle_source_tree(&src).unwrap();
    let request = write_request(&work_path, |r| {
        r["id"] = Value::String("step-7".into());
        r["mounts"] = serde_json::json!([{"dest": "/sel", "source": src, "readonly": true, "selector": "sub/dir"}]);
    });
    let state = work_path.join("state");
    let facts = case("minimal", "host");
    let script = format!(
        r#"set -e
h={helper}
$h cli spec --request {request} --host-facts {facts} --state-dir {state} --bundle {work}/bundle
echo "held=$(grep -c ' {state}/mounts/' /proc/self/mountinfo || true)"
ls {state}/steps
$h cli release --state-dir {state} step-7
echo "after=$(grep -c ' {state}/mounts/' /proc/self/mountinfo || true)"
$h cli release --state-dir {state} step-7
echo "again=$?"
echo "dirs=$(ls {state}/mounts | wc -l) records=$(ls {state}/steps | wc -l)"
"#,
        helper = HELPER,
        request = request.display(),
        facts = facts.display(),
        state = state.display(),
        work = work_path.display(),
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", stderr(&out));
    // The read-only source, and its selector pinned on a mountpoint of its own.
    assert!(stdout.contains("held=2"), "{stdout}");
    assert!(stdout.contains("step-7.json"), "{stdout}");
    assert!(stdout.contains("after=0"), "{stdout}");
    assert!(stdout.contains("again=0"), "{stdout}");
    assert!(stdout.contains("dirs=0 records=0"), "{stdout}");
    let spec: Value =
        serde_json::from_str(&std::fs::read_to_string(work_path.join("bundle/config.json")).unwrap()).unwrap();
    let sel = spec["mounts"].as_array().unwrap().last().unwrap();
    assert_eq!(sel["destination"], "/sel");
    assert_eq!(sel["source"], format!("{}/mounts/step-7-1", state.display()));
}

/// A step that fails after mounting leaves nothing behind, and says why.
#[test]
fn a_failed_step_leaves_no_mount() {
    let work = tempfile::tempdir().unwrap();
    let work_path = std::fs::canonicalize(work.path()).unwrap();
    let src = work_path.join("src");
    make_oracle_source_tree(&src).unwrap();
    let request = write_request(&work_path, |r| {
        r["mounts"] = serde_json::json!([
            {"dest": "/ok", "source": src, "readonly": true, "selector": "sub/dir"},
            {"dest": "/loop", "source": src, "readonly": true, "selector": "loop1"},
        ]);
    });
    let state = work_path.join("state");
    let script = format!(
        r#"{helper} cli spec --request {request} --host-facts {facts} --state-dir {state}
echo "rc=$?"
echo "left=$(grep -c ' {state}/mounts/' /proc/self/mountinfo || true) dirs=$(ls {state}/mounts | wc -l) records=$(ls {state}/steps | wc -l)"
"#,
        helper = HELPER,
        request = request.display(),
        facts = case("minimal", "host").display(),
        state = state.display(),
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("rc=1"), "{stdout}");
    assert!(stdout.contains("left=0 dirs=0 records=0"), "{stdout}");
    let err = stderr(&out);
    assert!(err.contains("too many links") && err.contains("/loop"), "{err}");
}

/// Regression: `--request /dev/zero` read without a bound until memory ran
/// out, and a 100 MB request was reported as the policy's memory limit.
#[test]
fn an_unbounded_or_oversized_request_is_refused_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.json");
    let text = format!(r#"{{"id": "big", "cwd": "{}"}}"#, "x".repeat(5 << 20));
    std::fs::write(&big, text).unwrap();
    for request in [big.to_str().unwrap(), "/dev/zero"] {
        let out = specwright(&[
            "spec",
            "--request",
            request,
            "--host-facts",
            case("minimal", "host").to_str().unwrap(),
            "--state-dir",
            dir.path().join("state").to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(1), "{request}");
        let err = stderr(&out);
        assert!(
            err.contains(request) && err.contains("bytes a request may have"),
            "{err}"
        );
    }
}

/// Regression: 2^44 MiB overflowed into a "0 MiB" limit.
#[test]
fn a_memory_limit_that_does_not_fit_is_an_error() {
    for mib in ["17592186044416", "0", "5000"] {
        let out = spec_minimal(&["--policy-memory-mib", mib]);
        assert_eq!(out.status.code(), Some(1), "{mib}");
        let err = stderr(&out);
        assert!(
            err.contains("--policy-memory-mib") && err.contains("between 1 and 4096"),
            "{err}"
        );
    }
    assert!(spec_minimal(&["--policy-memory-mib", "4096"]).status.success());
}

/// Regression: any time limit was taken: 0 became one 10 ms tick, and
/// u64::MAX ms lifted the limit for good.
#[test]
fn a_time_limit_out_of_range_is_an_error() {
    for ms in ["0", "3600001", "18446744073709551615"] {
        let out = spec_minimal(&["--policy-timeout-ms", ms]);
        assert_eq!(out.status.code(), Some(1), "{ms}");
        let err = stderr(&out);
        assert!(
            err.contains("--policy-timeout-ms") && err.contains("between 1 and 3600000"),
            "{err}"
        );
    }
    assert!(spec_minimal(&["--policy-timeout-ms", "3600000"]).status.success());
}

/// Regression: a failed `spec --bundle DIR` left the directory it made;
/// and a failed step must not touch the config another step wrote there.
#[test]
fn a_failed_spec_leaves_no_bundle_of_its_own_and_keeps_anothers_config() {
    let work = tempfile::tempdir().unwrap();
    let work_path = std::fs::canonicalize(work.path()).unwrap();
    let src = work_path.join("src");
    make_oracle_source_tree(&src).unwrap();
    let failing = write_request(&work_path, |r| {
        r["mounts"] = serde_json::json!([{"dest": "/loop", "source": src, "readonly": true, "selector": "loop1"}]);
    });
    let state = work_path.join("state");
    let facts = case("minimal", "host");
    let run = |request: &Path, bundle: &Path| {
        Command::new("unshare")
            .args(["--mount", "--propagation", "private"])
            .arg(HELPER)
            .args(["cli", "spec", "--request"])
            .arg(request)
            .arg("--host-facts")
            .arg(&facts)
            .arg("--state-dir")
            .arg(&state)
            .arg("--bundle")
            .arg(bundle)
            .output()
            .unwrap()
    };
    let fresh = work_path.join("fresh-bundle");
    let out = run(&failing, &fresh);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!fresh.exists(), "the failed step left the bundle directory it made");
    let nested = work_path.join("made/for/this");
    let out = run(&failing, &nested);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        !work_path.join("made").exists(),
        "the failed step left the parents of the bundle directory it made"
    );

    let shared = work_path.join("shared-bundle");
    let good = case("minimal", "request");
    let out = run(&good, &shared);
    assert!(out.status.success(), "{}", stderr(&out));
    let before = std::fs::read_to_string(shared.join("config.json")).unwrap();
    let out = run(&failing, &shared);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(std::fs::read_to_string(shared.join("config.json")).unwrap(), before);
    let names: Vec<_> = std::fs::read_dir(&shared)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["config.json"], "{names:?}");
}

/// Regression: host facts, policy files and settings were read without a
/// bound: `--host-facts /dev/zero` took 5 GB before it failed.
#[test]
fn files_an_operator_names_are_read_within_a_bound() {
    let work = tempfile::tempdir().unwrap();
    let zero_settings = work.path().join("zero.json");
    std::os::unix::fs::symlink("/dev/zero", &zero_settings).unwrap();
    let request = case("minimal", "request");
    let facts = case("minimal", "host");
    let state = work.path().join("state");
    let with = |args: &[&str]| {
        let mut all = vec![
            "spec",
            "--request",
            request.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        specwright(&all)
    };
    let settings = format!("default:{}", zero_settings.display());
    let cases: [(Output, &str); 4] = [
        (
            with(&["--host-facts", "/dev/zero"]),
            "/dev/zero: more than 1048576 bytes",
        ),
        (
            with(&["--host-facts", facts.to_str().unwrap(), "--policy", "/dev/zero"]),
            "more than 268435456 bytes",
        ),
        (
            with(&["--host-facts", facts.to_str().unwrap(), "--policy", &settings]),
            "more than 4194304 bytes",
        ),
        (
            specwright(&["policy", "inspect", "/dev/zero"]),
            "more than 268435456 bytes",
        ),
    ];
    for (out, says) in cases {
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
    }
}

/// Regression: `--bundle` took a directory anyone could write (and went
/// through other users' symlinks), so config.json could be swapped before
/// the runtime read it.
#[test]
fn a_bundle_dir_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let work = tempfile::tempdir().unwrap();
    let open = work.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let out = spec_minimal(&["--bundle", open.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("bundle dir") && err.contains("lets others write"), "{err}");
    assert!(!open.join("config.json").exists());
}

/// A host with SELinux (by its facts), a contexts file, a state dir, and
/// requests for SELinux labels.
struct SelinuxScene {
    dir: tempfile::TempDir,
    state: PathBuf,
    contexts: PathBuf,
    facts: PathBuf,
}

impl SelinuxScene {
    fn new() -> SelinuxScene {
        let dir = tempfile::tempdir().unwrap();
        let contexts = dir.path().join("lxc_contexts");
        std::fs::write(
            &contexts,
            "process = \"system_u:system_r:container_t:s0\"\nfile = \"system_u:object_r:container_file_t:s0\"\nro_file=\"system_u:object_r:container_ro_file_t:s0\"\n",
        )
        .unwrap();
        let mut facts: Value =
            serde_json::from_str(&std::fs::read_to_string(case("minimal", "host")).unwrap()).unwrap();
        facts["selinux"] = Value::Bool(true);
        let facts = specwright_tests::write_json(&dir.path().join("facts.json"), &facts);
        SelinuxScene {
            state: dir.path().join("state"),
            dir,
            contexts,
            facts,
        }
    }

    /// `specwright spec` of the minimal request as step `id` in `mode`,
    /// asking for labels, with `extra` arguments.
    fn spec(&self, id: &str, mode: &str, extra: &[&str]) -> Output {
        let mut r: Value = serde_json::from_str(&std::fs::read_to_string(case("minimal", "request")).unwrap()).unwrap();
        r["id"] = Value::String(id.into());
        r["security_mode"] = Value::String(mode.into());
        r["selinux"] = Value::Bool(true);
        let request = specwright_tests::write_json(&self.dir.path().join(format!("{id}.request.json")), &r);
        let mut args = vec![
            "spec",
            "--request",
            request.to_str().unwrap(),
            "--host-facts",
            self.facts.to_str().unwrap(),
            "--state-dir",
            self.state.to_str().unwrap(),
        ];
        if !extra.contains(&"--selinux-contexts") {
            args.extend(["--selinux-contexts", self.contexts.to_str().unwrap()]);
        }
        args.extend_from_slice(extra);
        specwright(&args)
    }

    fn spec_json(&self, id: &str, mode: &str, extra: &[&str]) -> Value {
        let out = self.spec(id, mode, extra);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Each reserved level and the step its file names.
    fn reservations(&self) -> Vec<(String, String)> {
        let Ok(entries) = std::fs::read_dir(self.state.join("selinux")) else {
            return Vec::new();
        };
        let mut found: Vec<_> = entries
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read_to_string(e.path()).unwrap(),
                )
            })
            .collect();
        found.sort();
        found
    }
}

/// SELinux labels on a host that has SELinux (by its facts): the contexts
/// file's labels at a level of the step's own, reserved in the state dir
/// until `release`; a second live step gets another level; an insecure
/// step gets the privileged mount label and reserves nothing. Nothing else
/// in the spec changes.
#[test]
fn selinux_labels_are_reserved_per_step_until_release() {
    let scene = SelinuxScene::new();
    let mut a = scene.spec_json("step-a", "sandbox", &[]);
    let process = a["process"]["selinuxLabel"].as_str().unwrap().to_string();
    let level = process
        .strip_prefix("system_u:system_r:container_t:")
        .unwrap()
        .to_string();
    let (low, high) = level
        .strip_prefix("s0:c")
        .and_then(|cats| cats.split_once(",c"))
        .unwrap_or_else(|| panic!("{level}"));
    let (low, high): (u32, u32) = (low.parse().unwrap(), high.parse().unwrap());
    assert!(low < high && high < 1024 && (low, high) != (1022, 1023), "{level}");
    assert_eq!(
        a["linux"]["mountLabel"],
        format!("system_u:object_r:container_file_t:{level}")
    );
    assert_eq!(scene.reservations(), [(level.clone(), "step-a".to_string())]);
    // Everything else is the minimal case's spec.
    a["process"].as_object_mut().unwrap().remove("selinuxLabel");
    a["linux"].as_object_mut().unwrap().remove("mountLabel");
    let mut expected = expected_spec("minimal");
    expected["linux"]["cgroupsPath"] = a["linux"]["cgroupsPath"].clone();
    assert_eq!(a, expected);

    let b = scene.spec_json("step-b", "sandbox", &[]);
    let other = b["process"]["selinuxLabel"].as_str().unwrap().to_string();
    assert_ne!(other, process, "two live steps share a level");
    assert_eq!(scene.reservations().len(), 2);

    let insecure = scene.spec_json("step-c", "insecure", &[]);
    assert!(insecure["process"].get("selinuxLabel").is_none(), "{insecure}");
    assert_eq!(
        insecure["linux"]["mountLabel"],
        "system_u:object_r:container_file_t:s0:c1022,c1023"
    );
    assert_eq!(scene.reservations().len(), 2, "an insecure step reserves nothing");

    for id in ["step-a", "step-b", "step-c"] {
        let out = specwright(&["release", "--state-dir", scene.state.to_str().unwrap(), id]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert!(scene.reservations().is_empty(), "{:?}", scene.reservations());
    assert_eq!(std::fs::read_dir(scene.state.join("steps")).unwrap().count(), 0);

    // A contexts file that is not there fails the step, naming it, and
    // leaves nothing.
    let missing = scene.dir.path().join("missing_contexts");
    let out = scene.spec("step-d", "sandbox", &["--selinux-contexts", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!(
            "the SELinux contexts file {} does not exist",
            missing.display()
        )),
        "{}",
        stderr(&out)
    );
    assert!(scene.reservations().is_empty());
    assert_eq!(std::fs::read_dir(scene.state.join("steps")).unwrap().count(), 0);
}

#[test]
fn a_dry_run_plans_the_selinux_level_it_would_reserve() {
    let scene = SelinuxScene::new();
    let first = scene.spec_json("test-id", "sandbox", &["--dry-run"]);
    assert_eq!(
        first,
        scene.spec_json("test-id", "sandbox", &["--dry-run"]),
        "a dry run's draws are the same every time"
    );
    let label = first["spec"]["process"]["selinuxLabel"].as_str().unwrap();
    let level = label.strip_prefix("system_u:system_r:container_t:").unwrap();
    let ops = first["operations"].as_array().unwrap();
    assert!(
        ops.iter()
            .any(|op| op["op"] == "reserve-mcs-level" && op["level"] == level),
        "{ops:?}"
    );
    assert!(!scene.state.exists(), "a dry run made the state dir");
}

/// Regression: the binaries advance the policies' epoch with SIGALRM; a
/// process started with SIGALRM blocked (an inherited signal mask) ran a
/// spinning policy without a time limit. It is stopped at its limit.
#[test]
fn a_spinning_policy_is_stopped_even_when_sigalrm_comes_blocked() {
    use std::os::unix::process::CommandExt;
    const TEST_POLICY: &str = env!("SPECWRIGHT_TEST_POLICY_WASM");
    let (_dir, work) = specwright_tests::workdir();
    let settings = specwright_tests::write_json(&work.join("spin.json"), &serde_json::json!({"mode": "spin"}));
    let request = specwright_tests::write_json(&work.join("request.json"), &serde_json::json!({"id": "spin"}));
    let policy = format!("{TEST_POLICY}:{}", settings.display());
    let mut command = Command::new(HELPER);
    command.arg("cli").args([
        "spec",
        "--dry-run",
        "--policy-timeout-ms",
        "300",
        "--policy",
        &policy,
        "--request",
        request.to_str().unwrap(),
    ]);
    // SAFETY: between fork and exec only `sigprocmask`, which is
    // async-signal-safe, on a set built before the fork.
    let mut alarm = nix::sys::signal::SigSet::empty();
    alarm.add(nix::sys::signal::Signal::SIGALRM);
    unsafe {
        command.pre_exec(move || {
            nix::sys::signal::sigprocmask(nix::sys::signal::SigmaskHow::SIG_BLOCK, Some(&alarm), None)
                .map_err(std::io::Error::from)
        });
    }
    let started = std::time::Instant::now();
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Past a hundred times the limit, the policy is deemed unstoppable.
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > std::time::Duration::from_secs(30) {
            child.kill().unwrap();
            panic!("the spinning policy was not stopped at its time limit");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("exceeded its time limit"), "{}", stderr(&out));
}
