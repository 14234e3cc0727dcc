//! Property tests of the pure core, in-root resolution and the host's
//! bookkeeping, on random input (proptest): specs always match the
//! runtime-spec schema, a selector never resolves outside its root, and a
//! step released after any prefix of its operations (with a fault anywhere)
//! leaves nothing.

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::json;
use specwright_core::{HostCalls, HostFacts, Request};
use specwright_host_core::audit::Audit;
use specwright_host_core::resolve::{resolve_in_root, ResolveError};
use specwright_host_core::state::StateDir;
use specwright_host_core::state::{Owner, StepLock};
use specwright_host_core::step::{gc, release_step, StepHost, StepOptions};
use specwright_host_core::sys::{RealSyscalls, RecordingSyscalls};
use specwright_tests::{make_oracle_source_tree, workdir, KernelModel};

/// What a policy can ask of the host, by index into what it got so far.
#[derive(Debug, Clone)]
enum StepOp {
    Materialize(u32),
    MountTemporary(usize, Vec<u32>),
    ReleaseRoot(usize),
}

/// How the step ends.
#[derive(Debug, Clone, Copy)]
enum Ending {
    /// The chain failed: the host releases everything at once.
    ReleaseAll,
    /// The step host is dropped without being kept (a trap, a panic).
    Dropped,
    /// The step succeeded; `specwright release` later, from the record.
    KeptThenReleased,
    /// The step succeeded and its owner died; `specwright gc`.
    KeptThenCollected,
}

fn step_ops() -> impl Strategy<Value = Vec<StepOp>> {
    proptest::collection::vec(
        prop_oneof![
            (0u32..3).prop_map(StepOp::Materialize),
            // Mostly entries that exist: the third request mount has two.
            (0usize..3, proptest::collection::vec(0u32..2, 1..3)).prop_map(|(s, e)| StepOp::MountTemporary(s, e)),
            (0usize..4).prop_map(StepOp::ReleaseRoot),
        ],
        0..16,
    )
}

fn ending() -> impl Strategy<Value = Ending> {
    prop_oneof![
        Just(Ending::ReleaseAll),
        Just(Ending::Dropped),
        Just(Ending::KeptThenReleased),
        Just(Ending::KeptThenCollected),
    ]
}

fn text() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[ -~]{0,12}").unwrap()
}

fn path() -> impl Strategy<Value = String> {
    proptest::collection::vec("[a-z0-9._-]{1,6}", 0..4).prop_map(|parts| format!("/{}", parts.join("/")))
}

/// A mount destination: a path that is not the root and has no `..`.
fn dest() -> impl Strategy<Value = String> {
    proptest::collection::vec("[a-z0-9_-][a-z0-9._-]{0,5}", 1..4).prop_map(|parts| format!("/{}", parts.join("/")))
}

fn id_range() -> impl Strategy<Value = serde_json::Value> {
    (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(c, h, s)| json!({"container_id": c, "host_id": h, "size": s}))
}

fn mount() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        (dest(), path(), any::<bool>())
            .prop_map(|(dest, source, ro)| json!({"dest": dest, "source": source, "readonly": ro})),
        (dest(), proptest::collection::vec("[a-z=0-9]{1,8}", 0..4)).prop_map(|(dest, options)| {
            json!({"dest": dest, "mountable": [{"type": "tmpfs", "source": "tmpfs", "options": options}]})
        }),
    ]
}

/// Random valid requests (no selectors: those need the host's mounts).
fn request() -> impl Strategy<Value = serde_json::Value> {
    (
        (
            proptest::option::of(proptest::collection::vec(text(), 0..4)),
            proptest::option::of(proptest::collection::vec(text(), 0..4)),
            text(),
            prop_oneof![
                Just(String::new()),
                (any::<u32>(), proptest::option::of(any::<u32>())).prop_map(|(u, g)| match g {
                    Some(g) => format!("{u}:{g}"),
                    None => u.to_string(),
                })
            ],
            text(),
        ),
        (
            prop_oneof![Just("sandbox"), Just("insecure")],
            prop_oneof![Just("sandbox"), Just("no-sandbox")],
            prop_oneof![
                Just(json!({"mode": "none"})),
                Just(json!({"mode": "host"})),
                path().prop_map(|p| json!({"mode": "path", "path": p}))
            ],
            proptest::option::of((
                proptest::collection::vec(id_range(), 0..3),
                proptest::collection::vec(id_range(), 0..3),
            )),
            any::<bool>(),
            proptest::option::of(path()),
            proptest::collection::vec(mount(), 0..4),
        ),
    )
        .prop_map(
            |((args, env, cwd, user, hostname), (security, process, network, idmap, ro, cgroup, mounts))| {
                json!({
                    "id": "prop-step",
                    "args": args, "env": env, "cwd": cwd, "user": user, "hostname": hostname,
                    "security_mode": security, "process_mode": process, "network": network,
                    "idmap": idmap.map(|(u, g)| json!({"uids": u, "gids": g})),
                    "readonly_rootfs": ro, "cgroup_path": cgroup, "mounts": mounts,
                })
            },
        )
}

fn facts() -> impl Strategy<Value = HostFacts> {
    (
        prop_oneof![
            Just("6.1.0".to_string()),
            Just("4.4.0".to_string()),
            Just("bogus".to_string())
        ],
        any::<bool>(),
        any::<u16>(),
        any::<bool>(),
        prop_oneof![Just("amd64"), Just("arm64"), Just("s390x"), Just("riscv64")],
    )
        .prop_map(|(kernel_release, seccomp, loop_, userns, arch)| HostFacts {
            kernel_release,
            seccomp,
            first_free_loop: u32::from(loop_),
            in_user_namespace: userns,
            arch: arch.to_string(),
            ..HostFacts::default()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn every_generated_spec_matches_the_schema(request in request(), facts in facts()) {
        let (_dir, work) = workdir();
        let request = Request::from_json(&request.to_string()).unwrap();
        let mut step = StepHost::new(
            StateDir::at(&work),
            Arc::new(RecordingSyscalls::dry_run()),
            Arc::new(Audit::events_only()),
            StepOptions::default(),
            &request,
            StepLock::planned(&request.id),
        ).unwrap();
        let spec = match specwright_core::buildkit::generate(&request, &facts, &mut step) {
            Ok(spec) => spec,
            // The one refusal a valid request may meet: on a host in a user
            // namespace a bind needs a source whose flags it keeps.
            Err(e) => {
                let unsourced = request.resolv_conf.is_empty() || request.hosts_file.is_empty();
                prop_assert!(facts.in_user_namespace && unsourced, "{e}");
                prop_assert!(e.to_string().contains("has no host source"), "{e}");
                return Ok(());
            }
        };
        let checked = specwright_host_core::validate::validate_json(&spec.to_json());
        // The one spec a valid request may give that is refused: ids past
        // 2^31-1, which runc refuses and crun runs as root.
        let past_runc = request
            .user
            .split(':')
            .any(|id| id.parse::<u64>().is_ok_and(|id| id > i32::MAX as u64));
        if past_runc {
            let refusal = checked.err().map(|e| e.to_string()).unwrap_or_default();
            prop_assert!(refusal.contains("is past 2147483647"), "{refusal}\n{}", spec.to_json());
        } else {
            prop_assert!(checked.is_ok(), "{:?}\n{}", checked.err(), spec.to_json());
        }
    }

    #[test]
    fn a_selector_never_resolves_outside_its_root(
        parts in proptest::collection::vec(
            prop_oneof![
                Just(".."), Just("."), Just("sub"), Just("dir"), Just("other"), Just("file"), Just("link_abs"),
                Just("link_out_abs"), Just("link_rel"), Just("link_rel_escape"), Just("dirlink"), Just("uplink"),
                Just("loop1"), Just("missing"), Just(""), Just("etc"),
            ],
            0..8,
        ),
        absolute in any::<bool>(),
    ) {
        let (_dir, work) = workdir();
        let root = work.join("root");
        make_oracle_source_tree(&root).unwrap();
        let selector = format!("{}{}", if absolute { "/" } else { "" }, parts.join("/"));
        match resolve_in_root(&root, &selector) {
            Ok(resolved) => {
                let root_str = root.to_str().unwrap();
                prop_assert!(
                    resolved.path == root_str || resolved.path.starts_with(&format!("{root_str}/")),
                    "{selector} -> {}", resolved.path
                );
                prop_assert!(!resolved.path[root_str.len()..].split('/').any(|c| c == ".."), "{}", resolved.path);
            }
            Err(ResolveError::TooManyLinks) | Err(ResolveError::Io { .. }) => {}
            Err(e) => prop_assert!(false, "{selector}: {e}"),
        }
    }

    #[test]
    fn release_after_any_prefix_of_operations_leaves_nothing(
        ops in step_ops(),
        ending in ending(),
        fail_at in proptest::option::of(0usize..32),
    ) {
        let (_dir, work) = workdir();
        let state = StateDir::open(&work.join("state")).unwrap();
        let request = Request::from_json(&json!({
            "id": "prop-step",
            "mounts": [
                {"dest": "/a", "source": "/srv/a", "readonly": false},
                {"dest": "/b", "source": "/srv/b", "readonly": true},
                {"dest": "/c", "mountable": [
                    {"type": "bind", "source": "/srv/c", "options": ["rbind", "ro"]},
                    {"type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]},
                ]},
            ],
        }).to_string()).unwrap();
        let kernel = KernelModel::default();
        let sys = Arc::new(RecordingSyscalls::modelled(Box::new(RealSyscalls), Box::new(kernel.clone()), fail_at));
        let audit = Arc::new(Audit::events_only());
        // No process has this pid, so gc takes the owner for dead.
        let options = StepOptions { owner: Owner { pid: u32::MAX, start_time: None }, ..StepOptions::default() };
        let lock = state.lock(&request.id).unwrap();
        let mut host = match StepHost::new(state.clone(), sys.clone(), audit.clone(), options, &request, lock) {
            Ok(host) => host,
            Err(e) => {
                // The fault hit the record's first read: nothing was made.
                prop_assert!(e.to_string().contains("EIO"), "{e}");
                prop_assert!(kernel.snapshot().entries.is_empty());
                return Ok(());
            }
        };
        let (mut sources, mut roots) = (Vec::new(), Vec::new());
        for op in &ops {
            match op {
                StepOp::Materialize(i) => {
                    if let Ok(source) = host.materialize(*i) {
                        sources.push(source);
                    }
                }
                StepOp::MountTemporary(pick, entries) => {
                    if let Some(source) = sources.get(*pick) {
                        if let Ok(root) = host.mount_temporary(source, entries) {
                            roots.push(root);
                        }
                    }
                }
                StepOp::ReleaseRoot(pick) => {
                    if let Some(root) = roots.get(*pick) {
                        let _ = host.release(*root);
                    }
                }
            }
        }
        match ending {
            Ending::ReleaseAll => drop(host.release_all()),
            Ending::Dropped => drop(host),
            Ending::KeptThenReleased => {
                drop(host.keep());
                drop(release_step(&state, sys.as_ref(), &audit, "prop-step"));
            }
            Ending::KeptThenCollected => {
                drop(host.keep());
                // A fault in listing the steps is reported like any other.
                drop(gc(&state, sys.as_ref(), &audit));
            }
        }
        // A release the fault hit keeps what it could not undo recorded;
        // the next one (the fault has passed) finishes.
        let after = RecordingSyscalls::modelled(Box::new(RealSyscalls), Box::new(kernel.clone()), None);
        let again = release_step(&state, &after, &audit, "prop-step");
        prop_assert!(again.is_ok(), "{:?}", again.err().map(|e| e.to_string()));
        let left = kernel.snapshot();
        prop_assert!(
            left.mounted.is_empty() && left.entries.is_empty(),
            "left behind: {left:?}\nops: {:?}", sys.ops()
        );
        prop_assert!(state.read_record("prop-step").unwrap().is_none(), "a record is left");
    }
}
