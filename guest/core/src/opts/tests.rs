use super::*;

fn facts(first_free_loop: u32, in_user_namespace: bool) -> HostFacts {
    HostFacts {
        first_free_loop,
        in_user_namespace,
        ..HostFacts::example()
    }
}

fn env(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn env_merge_keeps_duplicates_and_drops_bare_keys() {
    let got = replace_or_append_env(&[], &env(&["A=1", "A=2", "B", "PATH=/x", "C="]));
    assert_eq!(got, env(&["A=1", "A=2", "PATH=/x", "C="]));
}

#[test]
fn env_merge_replaces_and_unsets_defaults() {
    let got = replace_or_append_env(
        &env(&["PATH=/bin", "HOME=/root", "T=1"]),
        &env(&["PATH=/x", "HOME", "N=1"]),
    );
    assert_eq!(got, env(&["PATH=/x", "T=1", "N=1"]));
}

/// containerd indexes defaults by key, the last default with a key
/// winning; an unset empties the entry, a later override fills it again,
/// and empty entries are dropped at the end.
#[test]
fn env_merge_follows_containerd_on_repeated_keys_and_empty_entries() {
    let defaults = env(&["A=1", "A=2"]);
    assert_eq!(replace_or_append_env(&defaults, &env(&["A=3"])), env(&["A=1", "A=3"]));
    assert_eq!(replace_or_append_env(&defaults, &env(&["A"])), env(&["A=1"]));
    assert_eq!(
        replace_or_append_env(&env(&["A=1", "B=2"]), &env(&["A", "A=9"])),
        env(&["A=9", "B=2"])
    );
    assert_eq!(
        replace_or_append_env(&env(&["", "X=1"]), &env(&["", "Y=2"])),
        env(&["X=1", "Y=2"])
    );
    assert_eq!(
        replace_or_append_env(&env(&["=v", "K=1"]), &env(&[""])),
        env(&["K=1"]),
        "the empty key"
    );
}

#[test]
fn empty_env_leaves_spec_alone() {
    let mut spec = default_unix_spec(Release::V0_8, "buildkit", "x");
    with_env(&mut spec, Some(&[]));
    with_env(&mut spec, None);
    assert!(spec.process.unwrap().env.is_empty());
}

#[test]
fn removed_mount_is_exact() {
    let mut spec = default_unix_spec(Release::V0_8, "buildkit", "x");
    spec.mounts.push(mount("/run/secrets", "bind", "/s", Names::EMPTY));
    with_removed_mount(&mut spec, "/run");
    let dests: Vec<_> = spec.mounts.iter().map(|m| &*m.destination).collect();
    assert!(!dests.contains(&"/run"));
    assert!(dests.contains(&"/run/secrets"));
}

#[test]
fn bound_proc_is_first_and_unmasks_proc_only() {
    let mut spec = default_unix_spec(Release::V0_8, "buildkit", "x");
    spec.mounts.push(mount("/proceeds", "bind", "/p", Names::EMPTY));
    spec.mounts.push(mount("/proc/sys/x", "bind", "/p", Names::EMPTY));
    with_bound_proc(&mut spec);
    assert_eq!(
        spec.mounts[0],
        mount("/proc", "bind", "/proc", vec![Name::Borrowed("rbind")].into())
    );
    assert_eq!(
        spec.mounts
            .iter()
            .filter(|m| m.destination.starts_with("/proc"))
            .count(),
        2
    );
    assert!(spec.mounts.iter().any(|m| m.destination == "/proceeds"));
    let linux = spec.linux.unwrap();
    assert_eq!(linux.masked_paths[..], ["/sys/firmware"]);
    assert!(linux.readonly_paths.is_empty());
}

#[test]
fn insecure_devices_start_at_first_free_loop() {
    let mut spec = default_unix_spec(Release::V0_8, "buildkit", "x");
    with_insecure_spec(&mut spec, Release::V0_8, &facts(5, false));
    let devices = &spec.linux.as_ref().unwrap().devices;
    assert_eq!(devices.len(), 6 + 8);
    assert_eq!(devices[6].path, "/dev/loop5");
    assert_eq!(devices[13].minor, 12);
    let caps = spec.process.unwrap().capabilities.unwrap();
    assert_eq!(caps.bounding.len(), DEFAULT_CAPS.names.len() + INSECURE_CAPS.len());
    assert_eq!(caps.ambient.len(), INSECURE_CAPS.len());
}

#[test]
fn insecure_in_user_namespace_adds_no_devices() {
    let mut spec = default_unix_spec(Release::V0_8, "buildkit", "x");
    with_insecure_spec(&mut spec, Release::V0_8, &facts(0, true));
    assert!(spec.linux.unwrap().devices.is_empty());
}

#[test]
fn writeable_rewrites_ro_in_place_by_type() {
    let mut spec = default_unix_spec(Release::V0_8, "buildkit", "x");
    with_cgroup_mount(&mut spec);
    with_writeable_mounts_of_type(&mut spec, "cgroup");
    let cg = spec.mounts.iter().find(|m| m.kind == "cgroup").unwrap();
    assert_eq!(cg.options[..], ["rw", "nosuid", "noexec", "nodev"]);
    let sys = spec.mounts.iter().find(|m| m.kind == "sysfs").unwrap();
    assert_eq!(sys.options.last().unwrap(), "ro");
}

#[test]
fn user_namespace_is_added_once() {
    let mut spec = default_unix_spec(Release::V0_8, "buildkit", "x");
    let r = [IdRange {
        container_id: 0,
        host_id: 1000,
        size: 1,
    }];
    with_user_namespace(&mut spec, &r, &r);
    with_user_namespace(&mut spec, &r, &[]);
    let linux = spec.linux.unwrap();
    assert_eq!(linux.namespaces.iter().filter(|n| n.kind == "user").count(), 1);
    assert_eq!(linux.namespaces.last().unwrap().kind, "user");
    assert_eq!(linux.uid_mappings.len(), 2);
    assert_eq!(linux.gid_mappings.len(), 1);
}

#[test]
fn network_modes() {
    let mut spec = default_unix_spec(Release::V0_8, "buildkit", "x");
    with_network(
        &mut spec,
        &Network::Path {
            path: "/run/netns/n".into(),
        },
    );
    let ns = &spec.linux.as_ref().unwrap().namespaces;
    assert_eq!(
        ns[4],
        Namespace {
            kind: "network".into(),
            path: "/run/netns/n".into()
        }
    );
    with_network(&mut spec, &Network::Host);
    assert!(!spec
        .linux
        .as_ref()
        .unwrap()
        .namespaces
        .iter()
        .any(|n| n.kind == "network"));
    with_network(&mut spec, &Network::Path { path: "/p".into() });
    assert_eq!(spec.linux.unwrap().namespaces.last().unwrap().path, "/p");
}
