//! The request a spec stands for: what `specwright-runc` hands the policy
//! chain when an engine (buildah, podman, containerd, Docker) already wrote
//! the container's spec. README's "specwright-runc" section has the same
//! table, field by field, and what cannot be derived.

use crate::request::{
    IdMap, IdRange, LinuxResources, MountRequest, Mountable, Network, ProcessMode, Request, SecurityMode, Ulimit,
};
use crate::spec::{IdMapping, Mount, Spec};
use crate::PolicyError;

/// The capability whose grant makes a container privileged: what the
/// derived request calls `insecure` (BuildKit's insecure mode grants it,
/// and so do `podman run --privileged` and `docker run --privileged`).
pub const PRIVILEGED_CAPABILITY: &str = "CAP_SYS_ADMIN";

/// The request for container `id` whose spec is `spec`, validated (a
/// message names the request field and the spec field it came from).
pub fn request_from_spec(id: &str, spec: &Spec) -> Result<Request, PolicyError> {
    let process = spec.process.as_ref();
    let linux = spec.linux.as_ref();
    let namespaces = linux.map_or(&[][..], |l| &l.namespaces[..]);
    let namespace = |kind: &str| namespaces.iter().find(|n| n.kind == kind);
    // The last bind at a destination is what the container sees there;
    // an earlier one is mounted too (and reachable through a later mount),
    // so it stays among `mounts`.
    let last_bind = |dest: &str| spec.mounts.iter().rposition(|m| m.destination == dest && binds(m));
    let (resolv_at, hosts_at) = (last_bind("/etc/resolv.conf"), last_bind("/etc/hosts"));
    let bind_source = |at: Option<usize>| at.map(|i| spec.mounts[i].source.to_string());
    let resolv_conf = bind_source(resolv_at).unwrap_or_default();
    let hosts_file = bind_source(hosts_at).unwrap_or_default();
    let privileged = process
        .and_then(|p| p.capabilities.as_ref())
        .is_some_and(|c| c.bounding.iter().any(|cap| cap == PRIVILEGED_CAPABILITY));
    let network = match namespace("network") {
        None => Network::Host,
        Some(ns) if !ns.path.is_empty() => Network::Path {
            path: ns.path.to_string(),
        },
        Some(_) => Network::None,
    };
    let idmap = linux
        .filter(|l| !l.uid_mappings.is_empty() || !l.gid_mappings.is_empty())
        .map(|l| IdMap {
            uids: l.uid_mappings.iter().map(id_range).collect(),
            gids: l.gid_mappings.iter().map(id_range).collect(),
        });
    let mounts = spec
        .mounts
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != resolv_at && Some(*i) != hosts_at)
        .map(|(_, m)| mount_request(m))
        .collect();
    let ulimits = process
        .map(|p| &p.rlimits[..])
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let name = r.kind.strip_prefix("RLIMIT_").unwrap_or(&r.kind).to_ascii_lowercase();
            let limit = |field: &str, value: u64| {
                // RLIM_INFINITY (u64::MAX) is what Linux calls unlimited;
                // the request's fields are signed.
                i64::try_from(value).or(if value == u64::MAX {
                    Ok(i64::MAX)
                } else {
                    Err(PolicyError::InvalidRequest(format!(
                        "spec field `process.rlimits[{i}].{field}`: {value} does not fit the request's ulimits"
                    )))
                })
            };
            Ok(Ulimit {
                name,
                soft: limit("soft", r.soft)?,
                hard: limit("hard", r.hard)?,
            })
        })
        .collect::<Result<Vec<_>, PolicyError>>()?;
    let request = Request {
        id: id.to_string(),
        namespace: "buildkit".to_string(),
        args: process.map(|p| p.args.clone()),
        env: process.map(|p| p.env.clone()),
        cwd: process.map(|p| p.cwd.to_string()).unwrap_or_default(),
        user: process
            .map(|p| format!("{}:{}", p.user.uid, p.user.gid))
            .unwrap_or_default(),
        hostname: spec.hostname.to_string(),
        security_mode: if privileged {
            SecurityMode::Insecure
        } else {
            SecurityMode::Sandbox
        },
        process_mode: if namespace("pid").is_some() {
            ProcessMode::Sandbox
        } else {
            ProcessMode::NoSandbox
        },
        network,
        idmap,
        resolv_conf,
        hosts_file,
        readonly_rootfs: spec.root.as_ref().is_some_and(|r| r.readonly),
        cgroup_path: linux.map(|l| l.cgroups_path.clone()).filter(|p| !p.is_empty()),
        mounts,
        cgroup_parent: None,
        ulimits,
        resources: linux.and_then(|l| l.resources.as_ref()).and_then(resources),
        tracing_socket: None,
        apparmor_profile: process.map(|p| p.apparmor_profile.clone()).unwrap_or_default(),
        selinux: process.is_some_and(|p| !p.selinux_label.is_empty()),
        cdi_devices: Vec::new(),
    };
    request.validate().map_err(|e| match e {
        PolicyError::InvalidRequest(m) => {
            PolicyError::InvalidRequest(format!("the request derived from the spec of container {id}: {m}"))
        }
        other => other,
    })?;
    Ok(request)
}

/// `/proc/self/ns/<name>` for each namespace type runtime-spec names, as
/// the host resolves it: the namespaces the host itself runs in (an
/// engine's, which are the host's), which a policy compares a namespace a
/// spec joins with (`canonical-path` names one `net:[4026531840]`).
pub const HOST_NAMESPACE_PATHS: &[(&str, &str)] = &[
    ("pid", "/proc/self/ns/pid"),
    ("network", "/proc/self/ns/net"),
    ("mount", "/proc/self/ns/mnt"),
    ("ipc", "/proc/self/ns/ipc"),
    ("uts", "/proc/self/ns/uts"),
    ("user", "/proc/self/ns/user"),
    ("cgroup", "/proc/self/ns/cgroup"),
    ("time", "/proc/self/ns/time"),
];

/// The host paths a spec names beyond its derived request, which a policy
/// may ask the host about (`canonical-path`, `exists`): every namespace
/// it joins by path, every hook's program, and its rootfs.
pub fn spec_host_paths(spec: &Spec) -> Vec<String> {
    let namespaces = spec.linux.as_ref().map_or(&[][..], |l| &l.namespaces[..]);
    let hooks = spec.hooks.iter().flat_map(|h| {
        [
            &h.prestart,
            &h.create_runtime,
            &h.create_container,
            &h.start_container,
            &h.poststart,
            &h.poststop,
        ]
        .into_iter()
        .flatten()
    });
    namespaces
        .iter()
        .map(|n| n.path.to_string())
        .chain(hooks.map(|h| h.path.clone()))
        .chain(spec.root.iter().map(|r| r.path.to_string()))
        .filter(|p| p.starts_with('/'))
        .collect()
}

/// Whether a mount binds its source (containerd and runc bind for a `bind`
/// or `rbind` option whatever the type says).
fn binds(mount: &Mount) -> bool {
    mount.kind == "bind" || mount.kind == "rbind" || mount.options.iter().any(|o| o == "bind" || o == "rbind")
}

fn id_range(m: &IdMapping) -> IdRange {
    IdRange {
        container_id: m.container_id,
        host_id: m.host_id,
        size: m.size,
    }
}

/// A spec mount as a request mount given verbatim; a mount without a type
/// is a `bind` when its options bind (runc's reading), `none` otherwise.
fn mount_request(mount: &Mount) -> MountRequest {
    let kind = if !mount.kind.is_empty() {
        mount.kind.to_string()
    } else if binds(mount) {
        "bind".to_string()
    } else {
        "none".to_string()
    };
    MountRequest {
        dest: mount.destination.to_string(),
        source: None,
        mountable: Some(vec![Mountable {
            kind,
            source: mount.source.to_string(),
            options: mount.options.iter().map(|o| o.to_string()).collect(),
        }]),
        readonly: mount.options.iter().any(|o| o == "ro"),
        selector: String::new(),
    }
}

/// The request's resources, when the spec limits memory or CPU at all.
fn resources(r: &crate::spec::Resources) -> Option<LinuxResources> {
    let memory = r.memory.as_ref();
    let cpu = r.cpu.as_ref();
    let derived = LinuxResources {
        memory: memory.and_then(|m| m.limit).unwrap_or(0).max(0),
        memory_swap: memory.and_then(|m| m.swap).unwrap_or(0).max(0),
        cpu_shares: cpu.and_then(|c| c.shares).unwrap_or(0),
        cpu_period: cpu.and_then(|c| c.period).unwrap_or(0),
        cpu_quota: cpu.and_then(|c| c.quota).unwrap_or(0).max(0),
        cpuset_cpus: cpu.map(|c| c.cpus.clone()).unwrap_or_default(),
        cpuset_mems: cpu.map(|c| c.mems.clone()).unwrap_or_default(),
    };
    (derived != LinuxResources::default()).then_some(derived)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Spec {
        serde_json::from_str(json).unwrap()
    }

    const PODMAN_LIKE: &str = r#"{
        "ociVersion": "1.0.2-dev",
        "process": {
            "user": {"uid": 1000, "gid": 100},
            "args": ["/bin/sh", "-c", "true"],
            "env": ["PATH=/bin"],
            "cwd": "/work",
            "capabilities": {"bounding": ["CAP_CHOWN", "CAP_NET_RAW"]},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 512},
                        {"type": "RLIMIT_CORE", "hard": 18446744073709551615, "soft": 0}]
        },
        "root": {"path": "/var/lib/c/rootfs", "readonly": true},
        "hostname": "box",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/etc/resolv.conf", "type": "bind", "source": "/run/c/resolv.conf", "options": ["bind", "ro"]},
            {"destination": "/etc/hosts", "source": "/run/c/hosts", "options": ["rbind"]},
            {"destination": "/data", "source": "/srv/data", "options": ["rbind", "ro"]}
        ],
        "linux": {
            "namespaces": [{"type": "mount"}, {"type": "network", "path": "/run/netns/cni-1"}],
            "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
            "cgroupsPath": "machine.slice:libpod:abc",
            "resources": {"memory": {"limit": 1048576}, "cpu": {"shares": 512, "cpus": "0-1"}}
        }
    }"#;

    #[test]
    fn every_derivable_field_comes_from_its_spec_field() {
        let request = request_from_spec("abc", &spec(PODMAN_LIKE)).unwrap();
        assert_eq!(request.id, "abc");
        assert_eq!(
            request.args.as_deref(),
            Some(&["/bin/sh".to_string(), "-c".into(), "true".into()][..])
        );
        assert_eq!(request.env.as_deref(), Some(&["PATH=/bin".to_string()][..]));
        assert_eq!(request.cwd, "/work");
        assert_eq!(request.user, "1000:100");
        assert_eq!(request.hostname, "box");
        assert_eq!(request.security_mode, SecurityMode::Sandbox);
        // No pid namespace in the list: the host's.
        assert_eq!(request.process_mode, ProcessMode::NoSandbox);
        assert_eq!(
            request.network,
            Network::Path {
                path: "/run/netns/cni-1".into()
            }
        );
        assert_eq!(request.resolv_conf, "/run/c/resolv.conf");
        assert_eq!(request.hosts_file, "/run/c/hosts");
        assert!(request.readonly_rootfs);
        assert_eq!(request.cgroup_path.as_deref(), Some("machine.slice:libpod:abc"));
        let idmap = request.idmap.unwrap();
        assert_eq!(idmap.uids.len(), 1);
        assert!(idmap.gids.is_empty());
        assert_eq!(idmap.uids[0].host_id, 100000);
        assert_eq!(request.ulimits.len(), 2);
        assert_eq!(request.ulimits[0].name, "nofile");
        assert_eq!((request.ulimits[0].soft, request.ulimits[0].hard), (512, 1024));
        assert_eq!(request.ulimits[1].hard, i64::MAX);
        let resources = request.resources.unwrap();
        assert_eq!(resources.memory, 1048576);
        assert_eq!(resources.cpu_shares, 512);
        assert_eq!(resources.cpuset_cpus, "0-1");
        // resolv.conf and hosts are their own fields, not mounts.
        let dests: Vec<&str> = request.mounts.iter().map(|m| m.dest.as_str()).collect();
        assert_eq!(dests, ["/proc", "/data"]);
        let data = &request.mounts[1];
        assert!(data.readonly);
        let mountable = &data.mountable.as_ref().unwrap()[0];
        assert_eq!(mountable.kind, "bind", "a typeless mount that binds is a bind");
        assert_eq!(mountable.source, "/srv/data");
        assert_eq!(mountable.options, ["rbind", "ro"]);
    }

    #[test]
    fn a_privileged_container_in_the_hosts_namespaces_is_insecure_host_network_no_sandbox() {
        let request = request_from_spec(
            "priv",
            &spec(
                r#"{"ociVersion": "1.0.2", "root": {"path": "r"},
                    "process": {"user": {"uid": 0, "gid": 0}, "args": ["sh"], "cwd": "/",
                                "capabilities": {"bounding": ["CAP_SYS_ADMIN"]}},
                    "linux": {"namespaces": [{"type": "mount"}]}}"#,
            ),
        )
        .unwrap();
        assert_eq!(request.security_mode, SecurityMode::Insecure);
        assert_eq!(request.network, Network::Host);
        assert_eq!(request.process_mode, ProcessMode::NoSandbox);
        assert!(request.mounts.is_empty());
        assert!(request.resources.is_none());
    }

    /// Regression (red team): an earlier bind at /etc/hosts was dropped
    /// with the last one, so no policy checked its source.
    #[test]
    fn only_the_last_bind_at_resolv_conf_and_hosts_leaves_the_mounts() {
        let text = PODMAN_LIKE.replace(
            r#"{"destination": "/etc/hosts", "source": "/run/c/hosts", "options": ["rbind"]},"#,
            r#"{"destination": "/etc/hosts", "type": "bind", "source": "/", "options": ["rbind"]},
               {"destination": "/etc/hosts", "source": "/run/c/hosts", "options": ["rbind"]},"#,
        );
        let request = request_from_spec("abc", &spec(&text)).unwrap();
        assert_eq!(request.hosts_file, "/run/c/hosts");
        let sources: Vec<&str> = request
            .mounts
            .iter()
            .map(|m| m.mountable.as_ref().unwrap()[0].source.as_str())
            .collect();
        assert!(sources.contains(&"/"), "{sources:?}");
    }

    #[test]
    fn a_container_id_that_is_no_step_id_is_refused_naming_it() {
        let err = request_from_spec("a+b", &spec(PODMAN_LIKE)).unwrap_err().to_string();
        assert!(err.contains("container a+b") && err.contains("`id`"), "{err}");
    }

    #[test]
    fn an_unknown_rlimit_is_refused_naming_the_field() {
        let text = PODMAN_LIKE.replace("RLIMIT_CORE", "RLIMIT_BOGUS");
        let err = request_from_spec("abc", &spec(&text)).unwrap_err().to_string();
        assert!(err.contains("ulimits[1].name") && err.contains("bogus"), "{err}");
    }
}
