//! StepHost on a dry run and on real state dirs.

use specwright_core::HostCalls;
use std::path::Path;

use serde_json::json;

use super::*;
use crate::state::{HeldMount, MountpointKind, MAX_MOUNTPOINTS, MAX_STACKED};
use crate::sys::{Op, RealSyscalls, RecordingSyscalls};

fn request(mounts: serde_json::Value) -> Request {
    Request::from_json(&json!({"id": "s1", "mounts": mounts}).to_string()).unwrap()
}

fn dry_host(dir: &Path, req: &Request) -> (StepHost, Arc<RecordingSyscalls>) {
    let sys = Arc::new(RecordingSyscalls::dry_run());
    let state = StateDir::open(dir).unwrap();
    let options = StepOptions::default();
    let host = StepHost::new(
        state,
        sys.clone(),
        Arc::new(Audit::events_only()),
        options,
        req,
        StepLock::planned(&req.id),
    )
    .unwrap();
    (host, sys)
}

#[test]
fn out_of_range_and_released_handles_are_refused_and_name_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let req = request(json!([{"dest": "/a", "source": "/tmp", "readonly": true}]));
    let (mut host, sys) = dry_host(dir.path(), &req);
    host.set_actor("evil.wasm");
    let err = host.materialize(7).unwrap_err().to_string();
    assert!(
        err.contains("evil.wasm") && err.contains("materialize") && err.contains("out of range"),
        "{err}"
    );
    let src = host.materialize(0).unwrap();
    let err = host.mount_temporary(&src, &[3]).unwrap_err().to_string();
    assert!(err.contains("mount-temporary") && err.contains("entry 3"), "{err}");
    let err = host.resolve_in_source(&src, 0, "x").unwrap_err().to_string();
    assert!(err.contains("read-only"), "{err}");
    let root = host.mount_temporary(&src, &[0]).unwrap();
    host.release(root).unwrap();
    let err = host.resolve_in_root(&root, "x").unwrap_err().to_string();
    assert!(err.contains("already released"), "{err}");
    assert!(sys.ops().iter().all(|op| match op {
        Op::CreateDir { path: p } | Op::RemoveDir { path: p } => p.starts_with(dir.path().join("mounts")),
        Op::Mount { target, .. } | Op::Unmount { target, .. } => target.starts_with(dir.path().join("mounts")),
        Op::ReadRecord { step: id } | Op::WriteRecord { step: id } | Op::RemoveRecord { step: id } => id == "s1",
        Op::HasSubmounts { path: p } => p.starts_with(dir.path().join("mounts")),
        other => panic!("unexpected {other:?}"),
    }));
}

/// A dry run plans on a state dir that does not exist and makes none:
/// every operation, the record's and the resolution's too, is only
/// recorded.
#[test]
fn a_dry_run_plans_without_touching_the_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("state");
    let req = request(json!([{"dest": "/a", "source": "/srv/x", "readonly": true}]));
    let sys = Arc::new(RecordingSyscalls::dry_run());
    let mut host = StepHost::new(
        StateDir::at(&root),
        sys.clone(),
        Arc::new(Audit::events_only()),
        StepOptions::default(),
        &req,
        StepLock::planned(&req.id),
    )
    .unwrap();
    let src = host.materialize(0).unwrap();
    let mounted = host.mount_temporary(&src, &[0]).unwrap();
    let path = host.resolve_in_root(&mounted, "a/../b").unwrap();
    assert!(path.ends_with("/mounts/s1-0/b"), "{path}");
    let point = root.join("mounts/s1-0");
    let ops = sys.ops();
    assert_eq!(ops.first(), Some(&Op::ReadRecord { step: "s1".into() }), "{ops:?}");
    assert!(ops.contains(&Op::WriteRecord { step: "s1".into() }), "{ops:?}");
    assert!(ops.contains(&Op::CreateDir { path: point.clone() }), "{ops:?}");
    let mounts = ops
        .iter()
        .filter(|op| matches!(op, Op::Mount { target, .. } if *target == point));
    assert_eq!(mounts.count(), 2, "bind, ro remount: {ops:?}");
    assert!(
        ops.iter()
            .any(|op| matches!(op, Op::Resolve { root, selector } if *root == point && selector == "a/../b")),
        "{ops:?}"
    );
    drop(host);
    let ops = sys.ops();
    assert!(
        ops.contains(&Op::RemoveDir { path: point }),
        "dropped without keep: released: {ops:?}"
    );
    assert!(ops.contains(&Op::RemoveRecord { step: "s1".into() }), "{ops:?}");
    assert!(!root.exists(), "a dry run made the state dir");
}

#[test]
fn a_step_that_holds_mounts_cannot_start_again() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::open(dir.path()).unwrap();
    state
        .write_record(&StepRecord {
            id: "s1".into(),
            owner: Owner::of_pid(1),
            mounts: vec![HeldMount {
                name: "s1-0".into(),
                kind: MountpointKind::Dir,
                stacked: 1,
            }],
            container: None,
            selinux_level: None,
        })
        .unwrap();
    let req = request(json!([]));
    let sys = Arc::new(RecordingSyscalls::dry_run_over_state(Box::new(RealSyscalls)));
    let lock = state.lock("s1").unwrap();
    let err = StepHost::new(
        state,
        sys,
        Arc::new(Audit::events_only()),
        StepOptions::default(),
        &req,
        lock,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("already holds mounts"), "{err}");
}

/// Regression: ids named paths before they were checked, so a record
/// file named `...json` (id `..`) made `gc` remove the whole state
/// directory as the step's "bundle", mounts and all, and `release` of
/// an id with `../` removed a directory outside it.
#[test]
fn ids_that_are_not_plain_names_are_reported_and_nothing_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let state_root = dir.path().join("state");
    let state = StateDir::open(&state_root).unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(outside.join("bundles")).unwrap();
    std::fs::write(
        state_root.join("steps/...json"),
        r#"{"id":"..","owner":{"pid":0,"start_time":null},"mounts":[]}"#,
    )
    .unwrap();
    let sys = RecordingSyscalls::dry_run_over_state(Box::new(RealSyscalls));
    let audit = Audit::events_only();
    let outcomes = gc(&state, &sys, &audit).unwrap();
    assert!(
        matches!(&outcomes[..], [GcOutcome::Failed { id, error }] if id == ".." && error.contains("not a step id")),
        "{outcomes:?}"
    );
    for id in ["..", "../outside", "../../outside", "a/b", ""] {
        let err = release_step(&state, &sys, &audit, id).unwrap_err().to_string();
        assert!(err.contains("not a step id"), "{id}: {err}");
    }
    assert!(state_root.join("mounts").is_dir() && state_root.join("steps/...json").is_file());
    assert!(outside.join("bundles").is_dir());
    let only_looked = |op: &Op| matches!(op, Op::ListSteps | Op::LockStep { step: _ });
    assert!(sys.ops().iter().all(only_looked), "{:?}", sys.ops());
}

#[test]
fn a_record_claiming_more_than_the_host_makes_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::open(dir.path()).unwrap();
    let held = |n: usize, stacked: usize| -> Vec<HeldMount> {
        (0..n)
            .map(|i| HeldMount {
                name: format!("s1-{i}"),
                kind: MountpointKind::Dir,
                stacked,
            })
            .collect()
    };
    for (mounts, says) in [
        (held(1, MAX_STACKED + 1), "stacked mounts"),
        (held(MAX_MOUNTPOINTS + 1, 1), "mountpoints, more than"),
    ] {
        let record = StepRecord {
            id: "s1".into(),
            owner: Owner {
                pid: 0,
                start_time: None,
            },
            mounts,
            container: None,
            selinux_level: None,
        };
        state.write_record(&record).unwrap();
        let sys = RecordingSyscalls::dry_run_over_state(Box::new(RealSyscalls));
        let err = release_step(&state, &sys, &Audit::events_only(), "s1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("corrupt") && err.contains(says), "{err}");
        assert_eq!(
            sys.ops(),
            [Op::LockStep { step: "s1".into() }, Op::ReadRecord { step: "s1".into() }],
            "a corrupt record was trusted"
        );
    }
}

#[test]
fn a_step_with_many_mountpoints_is_released_by_a_few_threads() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::open(dir.path()).unwrap();
    let mounts: Vec<HeldMount> = (0..MAX_MOUNTPOINTS)
        .map(|i| HeldMount {
            name: format!("s1-{i}"),
            kind: MountpointKind::Dir,
            stacked: 2,
        })
        .collect();
    state
        .write_record(&StepRecord {
            id: "s1".into(),
            owner: Owner {
                pid: 0,
                start_time: None,
            },
            mounts,
            container: None,
            selinux_level: None,
        })
        .unwrap();
    let sys = RecordingSyscalls::dry_run_over_state(Box::new(RealSyscalls));
    let report = release_step(&state, &sys, &Audit::events_only(), "s1").unwrap();
    assert_eq!(report.released, MAX_MOUNTPOINTS);
    let unmounts = sys.ops().iter().filter(|op| matches!(op, Op::Unmount { .. })).count();
    assert_eq!(unmounts, 2 * MAX_MOUNTPOINTS);
    assert!(sys
        .ops()
        .iter()
        .any(|op| matches!(op, Op::RemoveRecord { step: id } if id == "s1")));
    assert!(state.read_record("s1").unwrap().is_none(), "the record was not removed");
}

#[test]
fn a_policy_cannot_stack_more_than_the_limit_on_one_mountpoint() {
    let dir = tempfile::tempdir().unwrap();
    let req = request(json!([{"dest": "/a", "source": "/srv/x", "readonly": true}]));
    let (mut host, sys) = dry_host(dir.path(), &req);
    let src = host.materialize(0).unwrap();
    let err = host
        .mount_temporary(&src, &[0; MAX_STACKED + 1])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("at most") && err.contains("may not mount-temporary"),
        "{err}"
    );
    assert_eq!(sys.ops(), [Op::ReadRecord { step: "s1".into() }], "nothing was mounted");
}

#[test]
fn a_policy_s_host_work_is_bounded_per_step() {
    let dir = tempfile::tempdir().unwrap();
    let req = request(json!([{"dest": "/a", "source": "/srv/x", "readonly": false}]));
    let (mut host, _) = dry_host(dir.path(), &req);
    let src = host.materialize(0).unwrap();
    let err = host
        .resolve_in_source(&src, 0, &"a/".repeat(limits::MAX_SELECTOR_BYTES))
        .unwrap_err()
        .to_string();
    assert!(err.contains("at most 4096"), "{err}");
    let mut refused = None;
    for _ in 0..limits::MAX_HOST_CALLS + 10 {
        if let Err(e) = host.materialize(0) {
            refused = Some(e.to_string());
            break;
        }
    }
    let err = refused.expect("the host kept answering");
    assert!(
        err.contains("materialized handles") || err.contains("host calls"),
        "{err}"
    );
    let (mut host, _) = dry_host(dir.path(), &req);
    for _ in 0..limits::MAX_HOST_CALLS {
        let _ = host.resolve_in_source(&SourceId(0), 0, "x");
    }
    let err = host.resolve_in_source(&SourceId(0), 0, "x").unwrap_err().to_string();
    assert!(err.contains("limit of 4096 host calls"), "{err}");
}

#[test]
fn audit_bytes_are_bounded_per_step() {
    let dir = tempfile::tempdir().unwrap();
    let req = request(json!([{"dest": "/a", "source": "/srv/x", "readonly": false}]));
    let sys = Arc::new(RecordingSyscalls::dry_run());
    let audit = Arc::new(Audit::open(&dir.path().join("audit.jsonl")).unwrap());
    let options = StepOptions::default();
    let state = StateDir::at(dir.path());
    let mut host = StepHost::new(state, sys, audit, options, &req, StepLock::planned("s1")).unwrap();
    let src = host.materialize(0).unwrap();
    let long = "x".repeat(limits::MAX_SELECTOR_BYTES);
    let mut last = String::new();
    for _ in 0..limits::MAX_HOST_CALLS {
        // Each fails (nothing is there) and is audited, arguments and all.
        if let Err(e) = host.resolve_in_source(&src, 0, &long) {
            last = e.to_string();
            if last.contains("limit") {
                break;
            }
        }
    }
    assert!(last.contains("audit bytes"), "{last}");
    let written = std::fs::metadata(dir.path().join("audit.jsonl")).unwrap().len() as usize;
    assert!(written < limits::MAX_AUDIT_BYTES + 64 * 1024, "{written}");
}

#[test]
fn canonical_path_answers_only_for_paths_the_request_names() {
    let dir = tempfile::tempdir().unwrap();
    let req = Request::from_json(
        &json!({"id": "s1", "resolv_conf": "/etc/resolv.conf", "mounts": [
            {"dest": "/a", "source": "/srv/x"},
            {"dest": "/o", "mountable": [{"type": "overlay", "source": "overlay", "options": ["lowerdir=/l1:/l2"]}]}
        ]})
        .to_string(),
    )
    .unwrap();
    let (mut host, _) = dry_host(dir.path(), &req);
    for named in ["/srv/x", "/l1", "/l2", "/etc/resolv.conf"] {
        assert_eq!(host.canonical_path(named).unwrap(), named);
    }
    // The host's own namespaces, to compare with, are always answered.
    host.canonical_path("/proc/self/ns/pid").unwrap();
    let err = host.canonical_path("/etc/shadow").unwrap_err().to_string();
    assert!(err.contains("not a host path the request names"), "{err}");
    let err = host.canonical_path("/proc/2/ns/pid").unwrap_err().to_string();
    assert!(err.contains("not a host path the request names"), "{err}");
}

#[test]
fn mount_flags_answer_only_for_the_sources_of_the_step_s_binds() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("src");
    std::fs::create_dir_all(source.join("sub")).unwrap();
    let source = source.display().to_string();
    let req = Request::from_json(
        &json!({"id": "s1", "hosts_file": "/etc/hosts", "mounts": [{"dest": "/a", "source": source}]}).to_string(),
    )
    .unwrap();
    let state = StateDir::open(&dir.path().join("state")).unwrap();
    let mut host = StepHost::new(
        state,
        Arc::new(RealSyscalls),
        Arc::new(Audit::events_only()),
        StepOptions::default(),
        &req,
        StepLock::planned(&req.id),
    )
    .unwrap();
    // A request path: statfs's real answer (this tmpfs or disk is not read-only).
    let flags = host.mount_flags(&source).unwrap();
    assert_eq!(flags & 1, 0, "{flags:#x}");
    assert!(host.mount_flags("/etc/hosts").is_ok());
    for other in ["/etc/shadow", "/", &format!("{source}/sub")] {
        let err = host.mount_flags(other).unwrap_err().to_string();
        assert!(
            err.contains("is not the source of one of this step's binds"),
            "{other}: {err}"
        );
    }
}

#[test]
fn mount_flags_are_planned_in_a_dry_run() {
    let dir = tempfile::tempdir().unwrap();
    let req = request(json!([{"dest": "/a", "source": "/srv/x"}]));
    let (mut host, sys) = dry_host(dir.path(), &req);
    assert_eq!(host.mount_flags("/srv/x").unwrap(), 0);
    assert!(
        sys.ops().contains(&Op::MountFlags { path: "/srv/x".into() }),
        "{:?}",
        sys.ops()
    );
}
