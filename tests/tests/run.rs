//! `specwright run`: real containers under crun and runc, checked from
//! inside. Each case runs in a private mount namespace (where crun's
//! refusal of hybrid cgroups is lifted by unmounting
//! /sys/fs/cgroup/unified), and nothing may stay mounted afterwards.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde_json::{json, Value};
use specwright_tests::{
    make_busybox_rootfs, make_oracle_source_tree, run_script_in_private_mount_namespace, workdir, write_json,
};

const HELPER: &str = env!("CARGO_BIN_EXE_sw-testhelper");

struct Outcome {
    code: i32,
    output: String,
    left: String,
}

/// Runs `script` (sh) as a step under `runtime`; `edit` adjusts the request.
fn run_step(runtime: &str, work: &Path, rootfs: &Path, script: &str, edit: impl FnOnce(&mut Value)) -> Outcome {
    run_step_with(runtime, work, rootfs, script, edit, "", "", "")
}

/// `run_step` with more arguments for `specwright run`.
fn run_step_args(
    runtime: &str,
    work: &Path,
    rootfs: &Path,
    script: &str,
    edit: impl FnOnce(&mut Value),
    args: &str,
) -> Outcome {
    run_step_with(runtime, work, rootfs, script, edit, args, "", "")
}

/// `run_step`, with more arguments for `specwright run`, and shell text
/// before the command (a pipe into it) and after it (to background it
/// and signal it).
#[allow(clippy::too_many_arguments)]
fn run_step_with(
    runtime: &str,
    work: &Path,
    rootfs: &Path,
    script: &str,
    edit: impl FnOnce(&mut Value),
    args: &str,
    before: &str,
    after: &str,
) -> Outcome {
    let mut request = json!({
        "id": format!("run-{runtime}"),
        "args": ["/bin/sh", "-c", script],
        "env": ["PATH=/bin"],
        "cwd": "/",
    });
    edit(&mut request);
    let request_file = write_json(&work.join(format!("request-{runtime}.json")), &request);
    let state = work.join(format!("state-{runtime}"));
    let shell = format!(
        r#"if [ {runtime} = crun ]; then umount /sys/fs/cgroup/unified 2>/dev/null; fi
{before} {HELPER} cli run --runtime {runtime} --request {request} --rootfs {rootfs} --state-dir {state} {args} 2>&1 {after}
echo "rc=$?"
echo "left=$(grep -c ' {state}/' /proc/self/mountinfo) dirs=$(ls {state}/mounts | wc -l) records=$(ls {state}/steps | wc -l) bundles=$(ls {state}/bundles 2>/dev/null | wc -l) locks=$(ls {state}/locks | wc -l)""#,
        request = request_file.display(),
        rootfs = rootfs.display(),
        state = state.display(),
    );
    let report = run_script_in_private_mount_namespace(&shell);
    Outcome {
        code: report.rc,
        output: report.stdout,
        left: report.left,
    }
}

/// Effective capabilities from /proc/self/status output.
fn cap_eff(output: &str) -> u64 {
    output
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0)
}

const CAP_SYS_ADMIN: u64 = 1 << 21;

fn runtime_suite(runtime: &str) {
    let null_owner = std::fs::metadata("/dev/null").map(|m| (m.uid(), m.gid())).unwrap();
    let (_dir, work) = workdir();
    let rootfs = work.join("rootfs");
    make_busybox_rootfs(&rootfs).unwrap();
    let src = work.join("src");
    make_oracle_source_tree(&src).unwrap();
    let mut failures: Vec<String> = Vec::new();
    let mut check = |what: &str, ok: bool, o: &Outcome| {
        if !ok {
            failures.push(format!("{runtime}: {what}\n{}", o.output));
        }
        if o.left != "left=0 dirs=0 records=0 bundles=0 locks=0" {
            failures.push(format!("{runtime}: {what}: left behind: {}", o.left));
        }
    };

    let o = run_step(runtime, &work, &rootfs, "exit 7", |_| {});
    check("the exit code propagates", o.code == 7, &o);
    // The runtime deleted the container as its run returned: no `delete`
    // was needed, and none is left.
    let audit = std::fs::read_to_string(work.join(format!("state-{runtime}/audit.jsonl"))).unwrap_or_default();
    let state = std::process::Command::new(runtime)
        .args(["state", &format!("run-{runtime}")])
        .output()
        .unwrap();
    check(
        "a container whose run returned is gone without a delete",
        audit.contains("deleted by the runtime as its run returned") && !state.status.success(),
        &o,
    );

    let o = run_step(
        runtime,
        &work,
        &rootfs,
        "hostname; echo \"env=$FOO\"; pwd; id; grep Seccomp: /proc/self/status; grep CapEff /proc/self/status",
        |r| {
            r["hostname"] = "step-host".into();
            r["env"] = json!(["PATH=/bin", "FOO=bar"]);
            r["cwd"] = "/work".into();
            r["user"] = "builder".into();
        },
    );
    check(
        "hostname, env, cwd and user are as asked",
        o.code == 0
            && o.output.contains("step-host")
            && o.output.contains("env=bar")
            && o.output.contains("\n/work\n")
            && o.output.contains("uid=1000")
            && o.output.contains("gid=1000")
            && o.output.contains("10(wheel)"),
        &o,
    );
    check(
        "seccomp is in force in sandbox mode",
        o.output.contains("Seccomp:\t2"),
        &o,
    );
    check(
        "sandbox has no CAP_SYS_ADMIN",
        cap_eff(&o.output) & CAP_SYS_ADMIN == 0,
        &o,
    );

    let o = run_step(runtime, &work, &rootfs, "grep CapEff /proc/self/status", |r| {
        r["security_mode"] = "insecure".into();
    });
    check(
        "insecure has CAP_SYS_ADMIN",
        o.code == 0 && cap_eff(&o.output) & CAP_SYS_ADMIN != 0,
        &o,
    );

    let o = run_step(
        runtime,
        &work,
        &rootfs,
        "ls /sel; if touch /sel/new 2>/dev/null; then echo WROTE; else echo REFUSED; fi",
        |r| r["mounts"] = json!([{"dest": "/sel", "source": src, "readonly": true, "selector": "sub/dir"}]),
    );
    check(
        "a read-only selector shows only the subdirectory and refuses writes",
        o.code == 0 && o.output.contains("file\n") && !o.output.contains("other") && o.output.contains("REFUSED"),
        &o,
    );

    let o = run_step(
        runtime,
        &work,
        &rootfs,
        "if touch /rootfs-write 2>/dev/null; then echo WROTE; else echo REFUSED; fi",
        |r| r["readonly_rootfs"] = true.into(),
    );
    check(
        "a read-only rootfs refuses writes",
        o.code == 0 && o.output.contains("REFUSED") && !rootfs.join("rootfs-write").exists(),
        &o,
    );

    let o = run_step(runtime, &work, &rootfs, "echo through > /rw/written", |r| {
        r["mounts"] = json!([{"dest": "/rw", "source": src, "readonly": false, "selector": "sub/other"}]);
    });
    let written = std::fs::read_to_string(src.join("sub/other/written")).unwrap_or_default();
    check(
        "a read-write selector writes through to the source",
        o.code == 0 && written == "through\n",
        &o,
    );

    let count = "echo pids=$(ls /proc | grep -c '^[0-9][0-9]*$')";
    let pids = |o: &Outcome| -> usize {
        o.output
            .lines()
            .find_map(|l| l.strip_prefix("pids="))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    };
    let sandbox = run_step(runtime, &work, &rootfs, count, |_| {});
    let host = run_step(runtime, &work, &rootfs, count, |r| {
        r["process_mode"] = "no-sandbox".into()
    });
    check(
        "sandbox sees only its own processes",
        sandbox.code == 0 && pids(&sandbox) <= 5,
        &sandbox,
    );
    check(
        "no-sandbox sees the host's processes",
        host.code == 0 && pids(&host) > pids(&sandbox) + 5,
        &host,
    );

    let o = run_step(
        runtime,
        &work,
        &rootfs,
        "cat /proc/self/uid_map /proc/self/gid_map",
        |r| {
            r["idmap"] = json!({
                "uids": [{"container_id": 0, "host_id": 100000, "size": 65536}],
                "gids": [{"container_id": 0, "host_id": 100000, "size": 65536}],
            });
        },
    );
    let maps: Vec<Vec<&str>> = o
        .output
        .lines()
        .map(|l| l.split_whitespace().collect())
        .filter(|f: &Vec<&str>| f.len() == 3)
        .collect();
    check(
        "an idmap shows in /proc/self/uid_map",
        o.code == 0 && maps.len() == 2 && maps.iter().all(|f| f == &["0", "100000", "65536"]),
        &o,
    );

    let o = run_step(runtime, &work, &rootfs, "true", |r| r["user"] = "nobody".into());
    check(
        "an unknown user is a clear error",
        o.code == 1 && o.output.contains("\"nobody\" is not in the rootfs's /etc/passwd"),
        &o,
    );

    let o = run_step(
        runtime,
        &work,
        &rootfs,
        "echo soft=$(ulimit -Sn) hard=$(ulimit -Hn)",
        |r| {
            r["ulimits"] = json!([{"name": "nofile", "soft": 321, "hard": 654}]);
        },
    );
    check(
        "ulimits reach the process",
        o.code == 0 && o.output.contains("soft=321 hard=654"),
        &o,
    );

    // The tracing socket: a real unix socket, bound read-only.
    let socket = work.join("otel.sock");
    if !socket.exists() {
        std::os::unix::net::UnixListener::bind(&socket).unwrap();
    }
    let o = run_step(
        runtime,
        &work,
        &rootfs,
        "test -S /dev/otel-grpc.sock && echo socket; echo \"endpoint=$OTEL_EXPORTER_OTLP_TRACES_ENDPOINT\"; grep ' /dev/otel-grpc.sock ' /proc/self/mountinfo",
        |r| r["tracing_socket"] = socket.display().to_string().into(),
    );
    let socket_mount = o
        .output
        .lines()
        .find(|l| l.contains(" /dev/otel-grpc.sock "))
        .unwrap_or("");
    check(
        "the tracing socket is bound read-only with its env",
        o.code == 0
            && o.output.contains("socket\n")
            && o.output.contains("endpoint=unix:///dev/otel-grpc.sock")
            && socket_mount
                .split(' ')
                .nth(5)
                .is_some_and(|opts| opts.split(',').any(|o| o == "ro")),
        &o,
    );

    // A CDI device from a spec file: its node (the host's /dev/null, 1:3),
    // its env and its mount.
    let cdi = work.join("cdi");
    std::fs::create_dir_all(&cdi).unwrap();
    std::fs::write(
        cdi.join("vendor.yaml"),
        format!(
            r#"cdiVersion: "0.6.0"
kind: example.com/device
devices:
  - name: dev0
    containerEdits:
      env: ["VENDOR_DEVICE=dev0"]
      deviceNodes:
        - path: /dev/vendor0
          hostPath: /dev/null
containerEdits:
  mounts:
    - hostPath: {src}/sub/dir
      containerPath: /opt/vendor
      options: [ro, rbind]
"#,
            src = src.display()
        ),
    )
    .unwrap();
    let o = run_step_args(
        runtime,
        &work,
        &rootfs,
        "ls -l /dev/vendor0; echo \"env=$VENDOR_DEVICE\"; ls /opt/vendor; echo x > /dev/vendor0 && echo writable",
        |r| r["cdi_devices"] = json!([{"name": "example.com/device=dev0"}]),
        &format!("--cdi-spec-dir {}", cdi.display()),
    );
    check(
        "a CDI device node, env and mount reach the container",
        o.code == 0
            && o.output
                .lines()
                .any(|l| l.starts_with('c') && l.contains("1,   3") && l.ends_with("/dev/vendor0"))
            && o.output.contains("env=dev0")
            && o.output.contains("file\n")
            && o.output.contains("writable"),
        &o,
    );
    let o = run_step_args(
        runtime,
        &work,
        &rootfs,
        "true",
        |r| r["cdi_devices"] = json!([{"name": "example.com/device=missing"}]),
        &format!("--cdi-spec-dir {}", cdi.display()),
    );
    check(
        "a missing CDI device is an error naming it",
        o.code == 1 && o.output.contains("example.com/device=missing"),
        &o,
    );

    // BuildKit leaves insecure mode's device nodes out only when the host
    // runs in a user namespace; a step's idmap keeps them.
    let o = run_step(
        runtime,
        &work,
        &rootfs,
        "ls -l /dev/fuse; cat /proc/self/uid_map",
        |r| {
            r["security_mode"] = "insecure".into();
            r["idmap"] = json!({
                "uids": [{"container_id": 0, "host_id": 100000, "size": 65536}],
                "gids": [{"container_id": 0, "host_id": 100000, "size": 65536}],
            });
        },
    );
    check(
        "an insecure step with an idmap sees /dev/fuse",
        o.code == 0
            && o.output
                .lines()
                .any(|l| l.starts_with('c') && l.contains("10, 229") && l.ends_with("/dev/fuse"))
            && o.output.contains("100000"),
        &o,
    );

    // Standard input reaches the container.
    let o = run_step_with(runtime, &work, &rootfs, "cat", |_| {}, "", "echo from-stdin |", "");
    check(
        "stdin is passed through",
        o.code == 0 && o.output.contains("from-stdin"),
        &o,
    );

    // SIGTERM to specwright reaches the container, whose exit code comes back.
    let o = run_step_with(
        runtime,
        &work,
        &rootfs,
        "trap 'exit 42' TERM; while true; do sleep 1; done",
        |_| {},
        "",
        "",
        "& pid=$!; sleep 1.5; kill -TERM $pid; wait $pid",
    );
    check("SIGTERM is forwarded to the container", o.code == 42, &o);

    // Every step above ran with /dev/null as its stdin; crun before 1.23
    // chowns that to the container's root (the idmap's 100000).
    let null = std::fs::metadata("/dev/null").unwrap();
    if (null.uid(), null.gid()) != null_owner {
        failures.push(format!(
            "{runtime}: the host's /dev/null, owned by {null_owner:?} before, is now owned by {}:{}",
            null.uid(),
            null.gid()
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn steps_run_under_crun() {
    runtime_suite("crun");
}

#[test]
fn steps_run_under_runc() {
    runtime_suite("runc");
}

/// Shell lines that start `specwright run` of a 60 s step `id` under runc
/// in the background (its stderr in `<state>.err`, its pid in `$pid`) and
/// wait until the container runs, printing `running=1` then; and the state
/// dir the run uses.
fn a_running_step(work: &std::path::Path, id: &str) -> (String, std::path::PathBuf) {
    let rootfs = work.join("rootfs");
    make_busybox_rootfs(&rootfs).unwrap();
    let request = write_json(
        &work.join("request.json"),
        &json!({"id": id, "args": ["/bin/sh", "-c", "sleep 60"], "env": ["PATH=/bin"], "cwd": "/"}),
    );
    let state = work.join("state");
    let shell = format!(
        r#"{HELPER} cli run --runtime runc --request {request} --rootfs {rootfs} --state-dir {state} > /dev/null 2> {state}.err &
pid=$!
i=0
while ! runc state {id} 2>/dev/null | grep -q '"running"' && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done
echo "running=$(runc state {id} 2>/dev/null | grep -c '"running"')"
"#,
        request = request.display(),
        rootfs = rootfs.display(),
        state = state.display(),
    );
    (shell, state)
}

/// Regression: a `specwright run` killed with SIGKILL left its container
/// running with nothing to find it by; its record now names the
/// container, and `gc` kills and deletes it before releasing the mounts.
#[test]
fn gc_deletes_the_container_of_a_killed_run() {
    let (_dir, work) = workdir();
    let (start, state) = a_running_step(&work, "killed-run");
    let shell = format!(
        r#"{start}kill -9 $pid; wait $pid
echo "orphan=$(runc state killed-run 2>/dev/null | grep -c '"running"') records=$(ls {state}/steps | wc -l)"
{HELPER} cli gc --state-dir {state}; echo "gc=$?"
runc state killed-run > /dev/null 2>&1; echo "state=$?"
echo "left=$(grep -c ' {state}/' /proc/self/mountinfo) dirs=$(ls {state}/mounts | wc -l) records=$(ls {state}/steps | wc -l) bundles=$(ls {state}/bundles | wc -l) locks=$(ls {state}/locks | wc -l)"
"#,
        state = state.display(),
    );
    let report = run_script_in_private_mount_namespace(&shell);
    let out = &report.stdout;
    assert!(out.contains("running=1"), "{out}");
    assert!(
        out.contains("orphan=1 records=1"),
        "the container outlives its runner: {out}"
    );
    assert!(out.contains("released killed-run") && out.contains("gc=0"), "{out}");
    assert!(out.contains("state=1"), "the container is gone: {out}");
    assert_eq!(report.left, "left=0 dirs=0 records=0 bundles=0 locks=0", "{out}");
}

/// Regression: when the OCI runtime itself died (SIGKILLed while it ran
/// the container), `run` forgot the container and released its mounts
/// while the container ran on; `run` now deletes the container after
/// every run, however the runtime ended.
#[test]
fn a_killed_runtime_leaves_no_container_running() {
    let (_dir, work) = workdir();
    let (start, state) = a_running_step(&work, "killed-runtime");
    let shell = format!(
        r#"{start}pkill -9 -P $pid -x runc; wait $pid; echo "run=$?"
echo "said=$(grep -c 'runc was killed by signal 9; the container is deleted' {state}.err)"
runc state killed-runtime > /dev/null 2>&1; echo "state=$?"
echo "left=$(grep -c ' {state}/' /proc/self/mountinfo) dirs=$(ls {state}/mounts | wc -l) records=$(ls {state}/steps | wc -l) bundles=$(ls {state}/bundles | wc -l) locks=$(ls {state}/locks | wc -l)"
"#,
        state = state.display(),
    );
    let report = run_script_in_private_mount_namespace(&shell);
    let out = &report.stdout;
    assert!(out.contains("running=1"), "{out}");
    assert!(out.contains("run=137"), "run reports the runtime's death: {out}");
    assert!(out.contains("said=1"), "and says so: {out}");
    assert!(out.contains("state=1"), "the container is gone: {out}");
    assert_eq!(report.left, "left=0 dirs=0 records=0 bundles=0 locks=0", "{out}");
}

/// A step whose mount is an image of 128 layers at snapshot paths as
/// containerd names them (some 11 KB of overlay options, past the
/// kernel's page of mount data): `specwright run` mounts it and the
/// container sees every layer; `specwright spec` holds it until
/// `release`; nothing stays.
#[test]
fn an_image_of_128_layers_mounts_in_run_and_spec() {
    let (_dir, work) = workdir();
    let rootfs = work.join("rootfs");
    make_busybox_rootfs(&rootfs).unwrap();
    let snapshots = work.join("var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots");
    let lower: Vec<String> = (0..128)
        .rev()
        .map(|n| {
            let fs = snapshots.join(n.to_string()).join("fs");
            std::fs::create_dir_all(&fs).unwrap();
            std::fs::write(fs.join(format!("layer-{n}")), n.to_string()).unwrap();
            fs.display().to_string()
        })
        .collect();
    let (upper, scratch) = (work.join("upper"), work.join("scratch"));
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::create_dir_all(&scratch).unwrap();
    let mount = json!([{"dest": "/image", "mountable": [{"type": "overlay", "source": "overlay", "options": [
        format!("lowerdir={}", lower.join(":")),
        format!("upperdir={}", upper.display()),
        format!("workdir={}", scratch.display()),
    ]}]}]);
    let o = run_step(
        "runc",
        &work,
        &rootfs,
        "ls /image | wc -l; cat /image/layer-127 /image/layer-0; echo",
        |r| {
            r["mounts"] = mount.clone();
        },
    );
    assert_eq!(o.code, 0, "{}", o.output);
    let lines: Vec<&str> = o.output.lines().map(str::trim).collect();
    assert!(lines.starts_with(&["128", "1270"]), "{}", o.output);
    assert_eq!(o.left, "left=0 dirs=0 records=0 bundles=0 locks=0");

    let request = write_json(
        &work.join("image-request.json"),
        &json!({"id": "image-step", "args": ["/bin/true"], "mounts": mount}),
    );
    let state = work.join("state-spec");
    let shell = format!(
        r#"{HELPER} cli spec --request {request} --state-dir {state} > /dev/null || echo spec-failed
echo "held=$(grep -c ' {state}/' /proc/self/mountinfo) layers=$(ls {state}/mounts/*/ 2>/dev/null | grep -c '^layer-')"
{HELPER} cli release --state-dir {state} image-step || echo release-failed
echo "rc=0"
echo "left=$(grep -c ' {state}/' /proc/self/mountinfo) dirs=$(ls {state}/mounts | wc -l) records=$(ls {state}/steps | wc -l)""#,
        request = request.display(),
        state = state.display(),
    );
    let report = run_script_in_private_mount_namespace(&shell);
    assert!(report.stdout.contains("held=1 layers=128"), "{}", report.stdout);
    assert!(!report.stdout.contains("failed"), "{}", report.stdout);
    assert_eq!(report.left, "left=0 dirs=0 records=0");
}
