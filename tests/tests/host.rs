//! The privileged host under stress, in private mount namespaces: injected
//! faults, SIGKILL, busy mounts, pinned selectors, gc, dry runs, audit.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use specwright_tests::{
    make_oracle_source_tree, oracle_facts_file, run_in_private_mount_namespace, workdir, write_json,
};

const HELPER: &str = env!("CARGO_BIN_EXE_sw-testhelper");
const TEST_POLICY: &str = env!("SPECWRIGHT_TEST_POLICY_WASM");

/// Shell lines that wait (up to 30 s) until something is mounted under
/// `<state>/mounts/`, then print `held=N`.
fn wait_for_a_mount(state: &Path) -> String {
    format!(
        r#"i=0
while [ "$(grep -c ' {state}/mounts/' /proc/self/mountinfo)" = 0 ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
echo "held=$(grep -c ' {state}/mounts/' /proc/self/mountinfo)""#,
        state = state.display()
    )
}

fn helper_report(args: &[&str]) -> Value {
    let out = run_in_private_mount_namespace(HELPER.as_ref(), args).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs `script` with `sh` in a new private mount namespace.
fn in_namespace(script: &str) -> (String, String, bool) {
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script])
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.success(),
    )
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
        assert!(run["release_ops"].as_u64().unwrap() >= 6, "{run}");
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

fn selector_request(work: &Path, id: &str) -> PathBuf {
    let src = work.join("src");
    make_oracle_source_tree(&src).unwrap();
    write_json(
        &work.join("request.json"),
        &serde_json::json!({
            "id": id,
            "args": ["/bin/true"],
            "mounts": [
                {"dest": "/ro", "source": src, "readonly": true, "selector": "sub/dir"},
                {"dest": "/rw", "source": src, "readonly": false, "selector": "link_rel"},
            ]
        }),
    )
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
    assert!(stdout.contains("held=2"), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("kept orphan") && stdout.contains("kept alive"),
        "{stdout}"
    );
    assert!(stdout.contains("released orphan: 1 mountpoints"), "{stdout}");
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
    assert_eq!(ops, ["mkdir", "mount", "mount"], "{plan}");
    assert!(plan["spec"]["mounts"].as_array().unwrap().len() == 11, "{plan}");
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
            ("default", "resolve"),
            ("default", "materialize"),
            ("default", "resolve"),
            ("default", "policy"),
            ("host", "release-step"),
        ],
        "{log}"
    );
    assert!(entries
        .iter()
        .all(|e| e["step"] == "audited" && e["duration_us"].is_u64()));
    let changed = &entries[5]["detail"]["changed"];
    assert!(changed.as_array().unwrap().iter().any(|f| f == "mounts"), "{changed}");
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
    assert!(
        err.contains("corrupt step record") && err.contains("evil.json"),
        "{err}"
    );
    assert!(state.join("steps/evil.json").exists());
}

/// Regression: a second `spec` or `run` with a step id already in use
/// raced the holder (mounts nobody could find again, records deleted
/// under a process that then exited 0), `run` released the holder's
/// mounts when refused, and `release`/`gc` took a step mid-generation.
#[test]
fn a_step_id_belongs_to_one_process_for_its_whole_life() {
    let (_dir, work) = workdir();
    let request = selector_request(&work, "owned");
    let settings = write_json(
        &work.join("settings.json"),
        &serde_json::json!({"mode": "spin-after-mount"}),
    );
    let state = work.join("state");
    let rootfs = work.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    let script = format!(
        r#"h={HELPER}
$h cli spec --policy {TEST_POLICY}:{settings} --policy-timeout-ms 600000 --request {request} --host-facts {facts} --state-dir {state} > /dev/null 2>&1 &
holder=$!
{wait_for_a_mount}
$h cli spec --request {request} --host-facts {facts} --state-dir {state} > /dev/null 2> {work}/spec.err; echo "spec=$?"
$h cli run --runtime runc --request {request} --rootfs {rootfs} --state-dir {state} > /dev/null 2> {work}/run.err; echo "run=$?"
echo "still=$(grep -c ' {state}/mounts/' /proc/self/mountinfo) records=$(ls {state}/steps | wc -l)"
$h cli release --state-dir {state} owned 2> {work}/release.err; echo "release=$?"
$h cli gc --state-dir {state} > {work}/gc.out 2>&1; echo "gc=$?"
echo "after=$(grep -c ' {state}/mounts/' /proc/self/mountinfo)"
echo "holder=$holder"
kill -9 $holder; wait $holder
$h cli release --state-dir {state} owned; echo "release2=$?"
echo "left=$(grep -c ' {state}/mounts/' /proc/self/mountinfo) dirs=$(ls {state}/mounts | wc -l) records=$(ls {state}/steps | wc -l) locks=$(ls {state}/locks | wc -l)"
"#,
        settings = settings.display(),
        request = request.display(),
        facts = oracle_facts_file().display(),
        state = state.display(),
        wait_for_a_mount = wait_for_a_mount(&state),
        rootfs = rootfs.display(),
        work = work.display(),
    );
    let (stdout, stderr, _) = in_namespace(&script);
    let read = |name: &str| std::fs::read_to_string(work.join(name)).unwrap_or_default();
    let holder = stdout
        .lines()
        .find_map(|l| l.strip_prefix("holder="))
        .unwrap_or_default()
        .to_string();
    let held_by = format!("step owned is held by pid {holder}");
    assert!(stdout.contains("held=1"), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("spec=1") && read("spec.err").contains(&held_by),
        "{stdout}\n{}",
        read("spec.err")
    );
    assert!(
        stdout.contains("run=1") && read("run.err").contains(&held_by),
        "{stdout}\n{}",
        read("run.err")
    );
    assert!(
        stdout.contains("still=1 records=1"),
        "a refused command touched the holder: {stdout}"
    );
    assert!(
        stdout.contains("release=1") && read("release.err").contains(&held_by),
        "{stdout}\n{}",
        read("release.err")
    );
    assert!(
        stdout.contains("gc=0") && read("gc.out").contains(&format!("skipped owned: held by pid {holder}")),
        "{stdout}\n{}",
        read("gc.out")
    );
    assert!(stdout.contains("after=1"), "{stdout}");
    assert!(stdout.contains("release2=0"), "{stdout}\n{stderr}");
    assert!(stdout.contains("left=0 dirs=0 records=0 locks=0"), "{stdout}\n{stderr}");
}

/// Two `spec`s with one id at once, again and again: exactly one wins,
/// the other is refused, and one release leaves nothing.
#[test]
fn concurrent_specs_of_one_id_have_one_winner() {
    let (_dir, work) = workdir();
    let request = selector_request(&work, "raced");
    let state = work.join("state");
    let script = format!(
        r#"h={HELPER}
for i in $(seq 1 15); do
  $h cli spec --request {request} --host-facts {facts} --state-dir {state} > /dev/null 2>> {work}/errs & a=$!
  $h cli spec --request {request} --host-facts {facts} --state-dir {state} > /dev/null 2>> {work}/errs & b=$!
  wait $a; ra=$?; wait $b; rb=$?
  echo "pair=$ra$rb"
  $h cli release --state-dir {state} raced || echo release-failed
  echo "left=$(grep -c ' {state}/mounts/' /proc/self/mountinfo) dirs=$(ls {state}/mounts | wc -l) records=$(ls {state}/steps | wc -l)"
done
"#,
        request = request.display(),
        facts = oracle_facts_file().display(),
        state = state.display(),
        work = work.display(),
    );
    let (stdout, stderr, _) = in_namespace(&script);
    let pairs: Vec<&str> = stdout.lines().filter_map(|l| l.strip_prefix("pair=")).collect();
    assert_eq!(pairs.len(), 15, "{stdout}\n{stderr}");
    assert!(pairs.iter().all(|p| *p == "01" || *p == "10"), "{pairs:?}\n{stderr}");
    assert!(!stdout.contains("release-failed"), "{stdout}");
    assert_eq!(
        stdout.lines().filter(|l| *l == "left=0 dirs=0 records=0").count(),
        15,
        "{stdout}"
    );
    let errs = std::fs::read_to_string(work.join("errs")).unwrap();
    for line in errs.lines().filter(|l| !l.is_empty()) {
        assert!(
            line.contains("is held by pid") || line.contains("already holds mounts"),
            "a loser failed otherwise: {line}"
        );
    }
}

/// Regression: a caller that exited before specwright looked was
/// recorded as pid 1, an owner that never dies, so gc never collected it.
#[test]
fn a_step_whose_caller_is_gone_is_refused_before_it_mounts() {
    let (_dir, work) = workdir();
    let request = selector_request(&work, "orphaned");
    let state = work.join("state");
    let script = format!(
        r#"h={HELPER}
sh -c '(sleep 0.3; exec '$h' cli spec --request {request} --host-facts {facts} --state-dir {state} > {work}/out 2> {work}/err; ) & exit 0'
i=0
while [ ! -s {work}/err ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
sleep 0.2
echo "left=$(grep -c ' {state}/mounts/' /proc/self/mountinfo) dirs=$(ls {state}/mounts 2>/dev/null | wc -l) records=$(ls {state}/steps 2>/dev/null | wc -l)"
"#,
        request = request.display(),
        facts = oracle_facts_file().display(),
        state = state.display(),
        work = work.display(),
    );
    let (stdout, stderr, _) = in_namespace(&script);
    let err = std::fs::read_to_string(work.join("err")).unwrap_or_default();
    assert!(
        err.contains("parent is pid 1") && err.contains("--owner-pid"),
        "{err}\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("left=0 dirs=0 records=0"), "{stdout}");
}

/// Regression: SIGTERM or SIGINT during `spec`, or during `run`'s set-up,
/// killed the process with its mounts left until `gc`.
#[test]
fn sigterm_and_sigint_release_everything_before_exiting() {
    let (_dir, work) = workdir();
    let request = selector_request(&work, "signalled");
    let settings = write_json(
        &work.join("settings.json"),
        &serde_json::json!({"mode": "spin-after-mount"}),
    );
    let rootfs = work.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    let mut failures = Vec::new();
    for (signal, code) in [("TERM", 143), ("INT", 130)] {
        for command in ["spec", "run"] {
            let state = work.join(format!("state-{command}-{signal}"));
            let extra = if command == "run" {
                format!("--runtime runc --rootfs {}", rootfs.display())
            } else {
                String::new()
            };
            let script = format!(
                r#"h={HELPER}
$h cli {command} {extra} --policy {TEST_POLICY}:{settings} --policy-timeout-ms 600000 --request {request} --host-facts {facts} --state-dir {state} > /dev/null 2> {state}.err &
pid=$!
{wait_for_a_mount}
kill -{signal} $pid; wait $pid; echo "rc=$?"
echo "left=$(grep -c ' {state}/' /proc/self/mountinfo) dirs=$(ls {state}/mounts | wc -l) records=$(ls {state}/steps | wc -l) locks=$(ls {state}/locks | wc -l) bundles=$(ls {state}/bundles 2>/dev/null | wc -l)"
"#,
                settings = settings.display(),
                request = request.display(),
                facts = oracle_facts_file().display(),
                state = state.display(),
                wait_for_a_mount = wait_for_a_mount(&state),
            );
            let (stdout, _, _) = in_namespace(&script);
            let err = std::fs::read_to_string(format!("{}.err", state.display())).unwrap_or_default();
            let what = format!("{command} SIG{signal}");
            if !stdout.contains("held=1") || !stdout.contains(&format!("rc={code}")) {
                failures.push(format!("{what}: {stdout}\n{err}"));
            }
            if !stdout.contains("left=0 dirs=0 records=0 locks=0 bundles=0") {
                failures.push(format!("{what}: left behind: {stdout}"));
            }
            if !err.contains(&format!("interrupted by SIG{signal}")) {
                failures.push(format!("{what}: the error does not say why: {err}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A `spec` stopped during its first compile (SIGTERM, or SIGKILL, which
/// nothing can catch) leaves the compile cache usable for the next.
#[test]
fn a_spec_stopped_while_compiling_leaves_the_cache_usable() {
    let (_dir, work) = workdir();
    let request = oracle_facts_file().with_file_name("minimal.request.json");
    for signal in ["TERM", "KILL"] {
        let state = work.join(format!("state-{signal}"));
        let script = format!(
            r#"h={HELPER}
$h cli spec --request {request} --host-facts {facts} --state-dir {state} > /dev/null 2>&1 &
pid=$!
sleep 0.3
kill -{signal} $pid; wait $pid; echo "stopped=$?"
$h cli spec --request {request} --host-facts {facts} --state-dir {state} > {state}.json; echo "next=$?"
$h cli spec --request {request} --host-facts {facts} --state-dir {state} > /dev/null; echo "again=$?"
echo "cache=$(ls {state}/cache | wc -l)"
"#,
            request = request.display(),
            facts = oracle_facts_file().display(),
            state = state.display(),
        );
        let (stdout, stderr, _) = in_namespace(&script);
        assert!(
            stdout.contains("next=0") && stdout.contains("again=0"),
            "{signal}: {stdout}\n{stderr}"
        );
        assert!(
            stdout.contains("cache=1"),
            "{signal}: one entry, no stale temporary file: {stdout}"
        );
        let spec: Value =
            serde_json::from_str(&std::fs::read_to_string(format!("{}.json", state.display())).unwrap()).unwrap();
        assert_eq!(spec["hostname"], "buildkitsandbox");
    }
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
    let err = std::fs::read_to_string(work.join("release.err")).unwrap_or_default();
    assert!(!stdout.contains("spec-failed"), "{stdout}\n{stderr}");
    // The read-only selector's temporary mount: the bind and its submount.
    assert!(stdout.contains("held=2"), "{stdout}");
    assert!(stdout.contains("release=0") && !err.contains("busy"), "{stdout}\n{err}");
    assert!(stdout.contains("left=0 dirs=0"), "{stdout}");
    assert!(
        stdout.contains("source-mount=1 inner=inner"),
        "the source's own mount was touched: {stdout}"
    );
}

/// An owner that exits while its step is being made gets no step: the
/// mounts are released and `spec` fails, saying so.
#[test]
fn a_step_whose_owner_exits_meanwhile_is_released() {
    let (_dir, work) = workdir();
    let request = selector_request(&work, "abandoned");
    let settings = write_json(
        &work.join("slow.json"),
        &serde_json::json!({"mode": "slow-passthrough", "iterations": 3_000_000_000u64}),
    );
    let state = work.join("state");
    let script = format!(
        r#"h={HELPER}
sleep 60 & owner=$!
$h cli spec --owner-pid $owner --policy-timeout-ms 600000 --policy default --policy {TEST_POLICY}:{settings} --request {request} --host-facts {facts} --state-dir {state} > /dev/null 2> {work}/err &
pid=$!
{wait_for_a_mount}
kill $owner
wait $pid; echo "rc=$?"
echo "left=$(grep -c ' {state}/mounts/' /proc/self/mountinfo) dirs=$(ls {state}/mounts | wc -l) records=$(ls {state}/steps | wc -l) locks=$(ls {state}/locks | wc -l)"
"#,
        settings = settings.display(),
        request = request.display(),
        facts = oracle_facts_file().display(),
        state = state.display(),
        wait_for_a_mount = wait_for_a_mount(&state),
        work = work.display(),
    );
    let (stdout, stderr, _) = in_namespace(&script);
    let err = std::fs::read_to_string(work.join("err")).unwrap_or_default();
    assert!(
        stdout.contains("held=1") && stdout.contains("rc=1"),
        "{stdout}\n{stderr}\n{err}"
    );
    assert!(err.contains("exited while the step was made"), "{err}");
    assert!(stdout.contains("left=0 dirs=0 records=0 locks=0"), "{stdout}");
}
