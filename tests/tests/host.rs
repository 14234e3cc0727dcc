//! The privileged host under stress, in private mount namespaces: injected
//! faults, SIGKILL, busy mounts, pinned selectors, gc, dry runs, audit.

use std::process::Command;

use serde_json::{json, Value};
use specwright_tests::{
    in_namespace, oracle_facts_file, run_in_private_mount_namespace, script_output, selector_request, wait_for_a_mount,
    workdir, write_json,
};

const HELPER: &str = env!("CARGO_BIN_EXE_sw-testhelper");
const TEST_POLICY: &str = env!("SPECWRIGHT_TEST_POLICY_WASM");

fn helper_report(args: &[&str]) -> Value {
    let out = run_in_private_mount_namespace(HELPER.as_ref(), args).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn every_injected_fault_leaves_nothing_behind() {
    let (_dir, work) = workdir();
    let report = helper_report(&["faults", work.to_str().unwrap()]);
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for run in runs {
        // Three temporary mounts (two of them remounted read-only), more with pinning.
        assert!(run["spec_ops"].as_u64().unwrap() >= 8, "{run}");
        // The step's record writes are among the operations that fail in turn.
        assert!(run["record_ops"].as_u64().unwrap() >= 3, "{run}");
        assert!(run["release_ops"].as_u64().unwrap() >= 6, "{run}");
        // Each kind of operation a step and its release make fails in
        // turn: the state dir's and the resolutions' as well as the mounts'.
        for kind in [
            "OpenStateDir",
            "OpenAuditLog",
            "LockStep",
            "ReadRecord",
            "WriteRecord",
            "CreateDir",
            "Mount",
            "Resolve",
            "Unmount",
            "RemoveDir",
            "RemoveRecord",
            "RemoveBundle",
            "RemoveLock",
            "ReadHostFile",
            "Random",
            "ReserveMcsLevel",
            "ReleaseMcsLevel",
        ] {
            assert!(
                run["kinds"].as_array().unwrap().iter().any(|k| k == kind),
                "{kind} is never faulted: {run}"
            );
        }
    }
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");
}

#[test]
fn a_busy_mount_is_retried_then_detached_and_reported() {
    let (_dir, work) = workdir();
    let report = helper_report(&["busy", work.to_str().unwrap()]);
    assert_eq!(report["released"], 1, "{report}");
    let busy = &report["busy"][0];
    assert!(busy["retries"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(busy["detached"], true, "{report}");
    assert!(
        report["warnings"][0].as_str().unwrap().contains("detached lazily"),
        "{report}"
    );
    assert_eq!(report["left"]["mounts"], 0, "{report}");
    assert_eq!(report["left"]["mountpoints"], serde_json::json!([]), "{report}");
}

#[test]
fn sigkill_midway_then_release_leaves_nothing() {
    let (_dir, work) = workdir();
    let request = selector_request(&work, "killed");
    let settings = write_json(
        &work.join("settings.json"),
        &serde_json::json!({"mode": "spin-after-mount"}),
    );
    let state = work.join("state");
    let script = format!(
        r#"h={HELPER}
$h cli spec --policy {TEST_POLICY}:{settings} --policy-timeout-ms 600000 --request {request} --host-facts {facts} --state-dir {state} &
pid=$!
{wait_for_a_mount}
kill -9 $pid; wait $pid; echo "killed=$?"
$h cli release --state-dir {state} killed; echo "release=$?"
echo "left=$(grep -c ' {state}/mounts/' /proc/self/mountinfo) dirs=$(ls {state}/mounts | wc -l) records=$(ls {state}/steps | wc -l)"
"#,
        settings = settings.display(),
        request = request.display(),
        facts = oracle_facts_file().display(),
        state = state.display(),
        wait_for_a_mount = wait_for_a_mount(&state),
    );
    let (stdout, stderr, _) = in_namespace(&script);
    assert!(stdout.contains("held=1"), "{stdout}\n{stderr}");
    assert!(stdout.contains("killed=137"), "{stdout}\n{stderr}");
    assert!(stdout.contains("release=0"), "{stdout}\n{stderr}");
    assert!(stdout.contains("left=0 dirs=0 records=0"), "{stdout}\n{stderr}");
}

#[test]
fn gc_releases_steps_whose_owner_is_gone_and_keeps_the_others() {
    let (_dir, work) = workdir();
    let request = selector_request(&work, "orphan");
    let live_request = work.join("live.json");
    let mut live: Value = serde_json::from_str(&std::fs::read_to_string(&request).unwrap()).unwrap();
    live["id"] = "alive".into();
    write_json(&live_request, &live);
    let state = work.join("state");
    let script = format!(
        r#"h={HELPER}
sleep 60 & owner=$!
$h cli spec --owner-pid $owner --request {request} --host-facts {facts} --state-dir {state} > /dev/null || echo spec-failed
$h cli spec --owner-pid $$ --request {live} --host-facts {facts} --state-dir {state} > /dev/null || echo spec-failed
echo "held=$(grep -c ' {state}/mounts/' /proc/self/mountinfo)"
$h cli gc --state-dir {state}; echo "gc1=$?"
kill $owner; wait $owner
$h cli gc --state-dir {state}; echo "gc2=$?"
echo "records=$(ls {state}/steps)"
$h cli release --state-dir {state} alive
echo "left=$(grep -c ' {state}/mounts/' /proc/self/mountinfo) dirs=$(ls {state}/mounts | wc -l)"
"#,
        request = request.display(),
        live = live_request.display(),
        facts = oracle_facts_file().display(),
        state = state.display(),
    );
    let (stdout, stderr, _) = in_namespace(&script);
    assert!(!stdout.contains("spec-failed"), "{stdout}\n{stderr}");
    // Each step: its read-only source and one pinned selector per mount.
    assert!(stdout.contains("held=6"), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("kept orphan") && stdout.contains("kept alive"),
        "{stdout}"
    );
    assert!(stdout.contains("released orphan: 3 mountpoints"), "{stdout}");
    assert!(
        stdout.contains("gc2=0") && stdout.contains("records=alive.json"),
        "{stdout}"
    );
    assert!(stdout.contains("left=0 dirs=0"), "{stdout}\n{stderr}");
}

#[test]
fn pinned_selectors_survive_a_swap_of_the_source() {
    let (_dir, work) = workdir();
    let request = selector_request(&work, "pinned");
    let state = work.join("state");
    let src = work.join("src");
    let script = format!(
        r#"set -e
h={HELPER}
$h cli spec --pin-selectors --request {request} --host-facts {facts} --state-dir {state} --bundle {work}/bundle
ro=$(grep -o '"source": "[^"]*' {work}/bundle/config.json | sed 's/"source": "//' | grep '{state}/mounts/' | head -1)
rw=$(grep -o '"source": "[^"]*' {work}/bundle/config.json | sed 's/"source": "//' | grep '{state}/mounts/' | tail -1)
echo "ro=$ro"
echo "rw=$rw"
echo "held=$(grep -c ' {state}/mounts/' /proc/self/mountinfo)"
mv {src}/sub/dir {src}/sub/dir.moved
ln -s /etc {src}/sub/dir
echo "ro-after-swap=$(cat $ro/file)"
echo "rw-after-swap=$(cat $rw/file)"
$h cli release --state-dir {state} pinned
echo "left=$(grep -c ' {state}/mounts/' /proc/self/mountinfo || true) dirs=$(ls {state}/mounts | wc -l)"
"#,
        request = request.display(),
        facts = oracle_facts_file().display(),
        state = state.display(),
        work = work.display(),
        src = src.display(),
    );
    let (stdout, stderr, ok) = in_namespace(&script);
    assert!(ok, "{stdout}\n{stderr}");
    let pinned = format!("{}/mounts/pinned-", state.display());
    assert!(
        stdout.contains(&format!("ro={pinned}")) && stdout.contains(&format!("rw={pinned}")),
        "{stdout}"
    );
    // One temporary root for the read-only bind, one pin for each selector.
    assert!(stdout.contains("held=3"), "{stdout}");
    assert!(
        stdout.contains("ro-after-swap=file") && stdout.contains("rw-after-swap=file"),
        "{stdout}"
    );
    assert!(stdout.contains("left=0 dirs=0"), "{stdout}\n{stderr}");
}

#[test]
fn a_dry_run_prints_the_plan_and_touches_nothing() {
    let (_dir, work) = workdir();
    let request = selector_request(&work, "planned");
    let state = work.join("state");
    let out = Command::new(HELPER)
        .args(["cli", "spec", "--dry-run", "--request"])
        .arg(&request)
        .arg("--host-facts")
        .arg(oracle_facts_file())
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ops: Vec<&str> = plan["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["op"].as_str().unwrap())
        .collect();
    // Every operation, the lock's, the record's and both selectors' pins
    // too, is planned and recorded; none is performed.
    assert_eq!(
        ops,
        [
            "open-state-dir",
            "open-audit-log",
            "lock-step",
            "read-record",
            // The read-only source on a temporary mountpoint.
            "write-record",
            "mkdir",
            "mount",
            "mount",
            // Its selector pinned on a mountpoint of its own.
            "resolve",
            "write-record",
            "mkdir",
            "mount",
            // The read-write source's selector, pinned the same way.
            "resolve",
            "write-record",
            "mkdir",
            "mount",
        ],
        "{plan}"
    );
    assert!(plan["spec"]["mounts"].as_array().unwrap().len() == 11, "{plan}");
    // The read-write bind's selector is planned, not resolved on the real
    // source: the symlink `link_rel` is not followed, and the spec names
    // the pin's planned mountpoint.
    let rw = &plan["spec"]["mounts"][10];
    assert_eq!(rw["destination"], "/rw", "{plan}");
    assert_eq!(
        rw["source"],
        state.join("mounts/planned-2").display().to_string(),
        "{plan}"
    );
    let last = plan["operations"].as_array().unwrap().last().unwrap();
    assert_eq!(
        last["source"],
        work.join("src/link_rel").display().to_string(),
        "{plan}"
    );
    assert!(!state.exists(), "a dry run creates no state");
}

#[test]
fn the_audit_log_names_step_policy_and_operation() {
    let (_dir, work) = workdir();
    let request = selector_request(&work, "audited");
    let state = work.join("state");
    let script = format!(
        "{HELPER} cli spec --request {} --host-facts {} --state-dir {} > /dev/null && {HELPER} cli release --state-dir {} audited",
        request.display(),
        oracle_facts_file().display(),
        state.display(),
        state.display()
    );
    let (stdout, stderr, ok) = in_namespace(&script);
    assert!(ok, "{stdout}\n{stderr}");
    let log = std::fs::read_to_string(state.join("audit.jsonl")).unwrap();
    let entries: Vec<Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let ops: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["policy"].as_str().unwrap(), e["op"].as_str().unwrap()))
        .collect();
    assert_eq!(
        ops,
        [
            ("default", "materialize"),
            ("default", "mount-temporary"),
            ("default", "pin"),
            ("default", "materialize"),
            ("default", "pin"),
            ("default", "policy"),
            ("host", "release-step"),
        ],
        "{log}"
    );
    assert!(entries
        .iter()
        .all(|e| e["step"] == "audited" && e["duration_us"].is_u64()));
    // The first policy made the spec from nothing: its patch is the spec.
    let decision = &entries[5];
    assert_eq!(
        (&decision["mode"], &decision["verdict"]),
        (&json!("enforce"), &json!("changed"))
    );
    assert!(
        decision["digest"].as_str().unwrap().starts_with("sha256:"),
        "{decision}"
    );
    let patch = decision["patch"].as_array().unwrap();
    assert_eq!(
        (&patch[0]["op"], &patch[0]["path"]),
        (&json!("replace"), &json!("")),
        "{decision}"
    );
    assert!(patch[0]["value"]["mounts"].is_array(), "{decision}");
}

#[test]
fn release_of_a_corrupt_record_is_refused_and_touches_nothing() {
    let (_dir, work) = workdir();
    let state = work.join("state");
    std::fs::create_dir_all(state.join("steps")).unwrap();
    std::fs::write(
        state.join("steps/evil.json"),
        r#"{"id":"evil","owner":{"pid":1,"start_time":null},"mounts":[{"name":"../../../../proc","stacked":1}]}"#,
    )
    .unwrap();
    let out = Command::new(HELPER)
        .args(["cli", "release", "--state-dir"])
        .arg(&state)
        .arg("evil")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("corrupt state file") && err.contains("evil.json"), "{err}");
    assert!(state.join("steps/evil.json").exists());
}

/// Regression: releasing a recursive bind whose source has mounts below
/// it took ~1.1 s a mountpoint and reported "stayed busy, detached
/// lazily" though nothing used it. It is unmounted as the tree it is, and
/// the source's own mounts stay.
#[test]
fn a_recursive_bind_with_submounts_is_released_as_a_tree() {
    let (_dir, work) = workdir();
    let request = selector_request(&work, "tree");
    let state = work.join("state");
    let src = work.join("src");
    let script = format!(
        r#"h={HELPER}
mount -t tmpfs tmpfs {src}/sub/other && touch {src}/sub/other/inner
$h cli spec --request {request} --host-facts {facts} --state-dir {state} > /dev/null || echo spec-failed
echo "held=$(grep -c ' {state}/mounts/' /proc/self/mountinfo)"
$h cli release --state-dir {state} tree 2> {work}/release.err; echo "release=$?"
echo "left=$(grep -c ' {state}/mounts/' /proc/self/mountinfo) dirs=$(ls {state}/mounts | wc -l)"
echo "source-mount=$(grep -c ' {src}/sub/other ' /proc/self/mountinfo) inner=$(ls {src}/sub/other)"
"#,
        request = request.display(),
        facts = oracle_facts_file().display(),
        state = state.display(),
        src = src.display(),
        work = work.display(),
    );
    let (stdout, stderr, _) = in_namespace(&script);
    let err = script_output(&work.join("release.err"));
    assert!(!stdout.contains("spec-failed"), "{stdout}\n{stderr}");
    // The read-only source's temporary mount (the bind and its submount)
    // and the two pinned selectors.
    assert!(stdout.contains("held=4"), "{stdout}");
    assert!(stdout.contains("release=0") && !err.contains("busy"), "{stdout}\n{err}");
    assert!(stdout.contains("left=0 dirs=0"), "{stdout}");
    assert!(
        stdout.contains("source-mount=1 inner=inner"),
        "the source's own mount was touched: {stdout}"
    );
}

/// BuildKit v0.32's rootless fix-up: on a host that runs in a user
/// namespace each bind keeps the flags locked on the mount its source is
/// on (statfs), or the runtime's bind would fail there.
#[test]
fn a_user_namespace_host_gets_binds_with_their_source_s_locked_flags() {
    let (_dir, work) = workdir();
    let data = work.join("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(work.join("hosts"), "127.0.0.1 localhost\n").unwrap();
    std::fs::write(work.join("resolv.conf"), "nameserver 192.0.2.1\n").unwrap();
    let request = write_json(
        &work.join("request.json"),
        &serde_json::json!({
            "id": "userns-step",
            "args": ["/bin/true"],
            "resolv_conf": work.join("resolv.conf"),
            "hosts_file": work.join("hosts"),
            "mounts": [
                {"dest": "/data", "source": data},
                {"dest": "/sub", "source": data, "selector": "sub"}
            ]
        }),
    );
    let mut facts: Value = serde_json::from_str(&std::fs::read_to_string(oracle_facts_file()).unwrap()).unwrap();
    facts["in_user_namespace"] = true.into();
    let facts = write_json(&work.join("facts.json"), &facts);
    let state = work.join("state");
    let script = format!(
        r#"set -e
mount --bind {data} {data}
mount -o remount,bind,ro,nosuid,nodev {data}
{HELPER} cli spec --request {request} --host-facts {facts} --state-dir {state} --bundle {work}/bundle
{HELPER} cli release --state-dir {state} userns-step
echo "left=$(grep -c ' {state}/mounts/' /proc/self/mountinfo || true)"
"#,
        data = data.display(),
        request = request.display(),
        facts = facts.display(),
        state = state.display(),
        work = work.display(),
    );
    let (stdout, stderr, ok) = in_namespace(&script);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("left=0"), "{stdout}");
    let spec: Value = serde_json::from_str(&std::fs::read_to_string(work.join("bundle/config.json")).unwrap()).unwrap();
    let options_at = |dest: &str| -> Vec<String> {
        let mount = spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == dest)
            .unwrap();
        serde_json::from_value(mount["options"].clone()).unwrap()
    };
    // The read-only, nosuid, nodev bind of `data` is the source of both.
    assert_eq!(options_at("/data"), ["rbind", "ro", "nodev", "nosuid"]);
    assert_eq!(options_at("/sub"), ["rbind", "ro", "nodev", "nosuid"]);
    // /proc is no bind: untouched.
    assert_eq!(options_at("/proc"), ["nosuid", "noexec", "nodev"]);
    let hosts = options_at("/etc/hosts");
    assert_eq!(&hosts[..5], ["nosuid", "noexec", "nodev", "rbind", "ro"], "{hosts:?}");
}

/// An image of 128 layers at snapshot paths as containerd names them:
/// some 11 KB of overlay options, near three pages. The host mounts it by the
/// new mount API and, where a kernel lacks that, by containerd's
/// compaction; both show every layer, and unmount clean.
#[test]
fn an_overlay_of_128_snapshot_layers_mounts_both_ways() {
    for how in ["mount", "compacted"] {
        let (_dir, work) = workdir();
        let report = helper_report(&["overlay", work.to_str().unwrap(), "128", how]);
        assert!(report["data_bytes"].as_u64().unwrap() > 2 * 4096, "{how}: {report}");
        assert_eq!(report["entries"], 128, "{how}: {report}");
        assert_eq!(report["top"], "127", "{how}: {report}");
        assert_eq!(report["after"], 0, "{how}: {report}");
    }
}
