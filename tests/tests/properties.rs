//! Property tests of the pure core and of in-root resolution, on random
//! input (proptest): specs always match the runtime-spec schema, and a
//! selector never resolves outside its root.

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::json;
use specwright::audit::Audit;
use specwright::resolve::{resolve_in_root, ResolveError};
use specwright::state::StateDir;
use specwright::step::{StepHost, StepOptions};
use specwright::sys::RecordingSyscalls;
use specwright_core::{HostFacts, Request};
use specwright_tests::{make_oracle_source_tree, workdir};

fn text() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[ -~]{0,12}").unwrap()
}

fn path() -> impl Strategy<Value = String> {
    proptest::collection::vec("[a-z0-9._-]{1,6}", 0..4).prop_map(|parts| format!("/{}", parts.join("/")))
}

fn id_range() -> impl Strategy<Value = serde_json::Value> {
    (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(c, h, s)| json!({"container_id": c, "host_id": h, "size": s}))
}

fn mount() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        (path(), path(), any::<bool>())
            .prop_map(|(dest, source, ro)| json!({"dest": dest, "source": source, "readonly": ro})),
        (path(), proptest::collection::vec("[a-z=0-9]{1,8}", 0..4)).prop_map(|(dest, options)| {
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
            StepOptions { dry_run: true, ..StepOptions::default() },
            &request,
        ).unwrap();
        let spec = specwright_core::buildkit::generate(&request, &facts, &mut step).unwrap();
        let checked = specwright::validate::validate_json(&spec.to_json());
        prop_assert!(checked.is_ok(), "{:?}\n{}", checked.err(), spec.to_json());
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
}
