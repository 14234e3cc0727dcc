//! One process per step for the step's whole life: concurrent commands of
//! one id, owners that exit, signals during `spec` and `run`'s set-up.

use serde_json::Value;
use specwright_tests::{
    in_namespace, oracle_facts_file, script_output, selector_request, wait_for_a_mount, wait_for_mounts, workdir,
    write_json,
};

const HELPER: &str = env!("CARGO_BIN_EXE_sw-testhelper");
const TEST_POLICY: &str = env!("SPECWRIGHT_TEST_POLICY_WASM");

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
    let read = |name: &str| script_output(&work.join(name));
    let holder = stdout
        .lines()
        .find_map(|l| l.strip_prefix("holder="))
        .filter(|pid| !pid.is_empty())
        .unwrap_or_else(|| panic!("the script printed no holder pid: {stdout}\n{stderr}"))
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
    let err = script_output(&work.join("err"));
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
            let err = script_output(&state.with_extension("err"));
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
/// nothing can catch) leaves the compile cache usable for the next: one
/// entry (beside its compile lock, which the kernel let go with the
/// process), no temporary file.
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
echo "cache=$(ls -A {state}/cache | grep -cv '[.]cwasm[.]lock$')"
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
        wait_for_a_mount = wait_for_mounts(&state, 3),
        work = work.display(),
    );
    let (stdout, stderr, _) = in_namespace(&script);
    let err = script_output(&work.join("err"));
    assert!(
        // The default policy's three: the read-only source and two pins.
        stdout.contains("held=3") && stdout.contains("rc=1"),
        "{stdout}\n{stderr}\n{err}"
    );
    assert!(err.contains("exited while the step was made"), "{err}");
    assert!(stdout.contains("left=0 dirs=0 records=0 locks=0"), "{stdout}");
}
