//! Small spec options in containerd's style: each changes one thing and is
//! named for it. `buildkit.rs` applies them in BuildKit's order.

use crate::facts::HostFacts;
use crate::request::{IdRange, Network};
use crate::seccomp::default_seccomp;
use crate::spec::{
    Capabilities, Device, DeviceCgroup, Extra, IdMapping, Linux, Mount, Name, Names, Namespace, Process, Resources,
    Rlimit, Root, Spec, User,
};
pub use crate::static_lists::DEFAULT_CAPS;
use crate::static_lists::{
    BOUND_PROC_MOUNT, CGROUP_MOUNT, DEFAULT_MASKED_PATHS, DEFAULT_NAMESPACES, DEFAULT_READONLY_PATHS, DEVPTS_MOUNT,
    DEV_MOUNT, MQUEUE_MOUNT, PROC_MOUNT, RO_BIND_OPTIONS, RUN_MOUNT, SHM_MOUNT, SYSFS_MOUNT,
};

/// runtime-spec version that containerd 1.4 writes.
pub const OCI_VERSION: &str = "1.0.2-dev";

/// What BuildKit's insecure entitlement adds, in its order; some repeat the
/// defaults and BuildKit keeps the duplicates.
pub const INSECURE_CAPS: &[&str] = &[
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_SETFCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_AUDIT_WRITE",
    "CAP_MAC_ADMIN",
    "CAP_MAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_SYS_PTRACE",
    "CAP_SYS_MODULE",
    "CAP_SYSLOG",
    "CAP_SYS_RAWIO",
    "CAP_SYS_ADMIN",
    "CAP_LINUX_IMMUTABLE",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_PACCT",
    "CAP_SYS_TTY_CONFIG",
    "CAP_SYS_TIME",
    "CAP_WAKE_ALARM",
    "CAP_AUDIT_READ",
    "CAP_AUDIT_CONTROL",
    "CAP_SYS_RESOURCE",
    "CAP_BLOCK_SUSPEND",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_LEASE",
    "CAP_NET_ADMIN",
    "CAP_NET_BROADCAST",
];

/// Devices BuildKit's insecure mode exposes, before the loop devices.
const INSECURE_DEVICES: &[(&str, i64, i64)] = &[
    ("/dev/kmsg", 1, 11),
    ("/dev/cuse", 10, 203),
    ("/dev/fuse", 10, 229),
    ("/dev/kvm", 10, 232),
    ("/dev/net/tun", 10, 200),
    ("/dev/loop-control", 10, 237),
];

/// How many loop devices insecure mode exposes, from the first free one.
const INSECURE_LOOP_DEVICES: u32 = 8;

fn mount(destination: impl Into<Name>, kind: &'static str, source: impl Into<Name>, options: Names) -> Mount {
    Mount {
        extra: Extra::NONE,
        destination: destination.into(),
        kind: Name::Borrowed(kind),
        source: source.into(),
        options,
    }
}

/// containerd's default mounts, /run included (BuildKit removes it).
fn default_mounts() -> Vec<Mount> {
    // Room for what BuildKit appends (resolv.conf, hosts, cgroup) and a few
    // request mounts, so that the list is allocated once.
    let mut mounts = Vec::with_capacity(16);
    mounts.extend(
        [
            &PROC_MOUNT,
            &DEV_MOUNT,
            &DEVPTS_MOUNT,
            &SHM_MOUNT,
            &MQUEUE_MOUNT,
            &SYSFS_MOUNT,
            &RUN_MOUNT,
        ]
        .map(Mount::clone),
    );
    mounts
}

/// containerd's `populateDefaultUnixSpec`: the spec every step starts from.
pub fn default_unix_spec(namespace: &str, id: &str) -> Spec {
    let caps = Names::Static(&DEFAULT_CAPS);
    Spec {
        oci_version: Name::Borrowed(OCI_VERSION),
        root: Some(Root {
            path: Name::Borrowed("rootfs"),
            readonly: false,
        }),
        process: Some(Process {
            cwd: Name::Borrowed("/"),
            no_new_privileges: true,
            user: User::default(),
            capabilities: Some(Capabilities {
                bounding: caps.clone(),
                permitted: caps.clone(),
                inheritable: caps.clone(),
                effective: caps,
                ambient: Names::EMPTY,
            }),
            rlimits: vec![Rlimit {
                kind: Name::Borrowed("RLIMIT_NOFILE"),
                hard: 1024,
                soft: 1024,
            }],
            ..Process::default()
        }),
        mounts: default_mounts(),
        linux: Some(Linux {
            masked_paths: Names::Static(&DEFAULT_MASKED_PATHS),
            readonly_paths: Names::Static(&DEFAULT_READONLY_PATHS),
            cgroups_path: ["/", namespace, "/", id].concat(),
            resources: Some(Resources {
                extra: Extra::NONE,
                devices: vec![DeviceCgroup {
                    extra: Extra::NONE,
                    allow: false,
                    kind: Name::Borrowed(""),
                    access: Name::Borrowed("rwm"),
                }],
            }),
            namespaces: DEFAULT_NAMESPACES.to_vec(),
            ..Linux::default()
        }),
        hostname: Name::Borrowed(""),
        extra: Default::default(),
    }
}

pub fn with_uid_gid(spec: &mut Spec, uid: u32, gid: u32) {
    let user = &mut spec.process_mut().user;
    user.uid = uid;
    user.gid = gid;
}

/// Removes every mount at exactly `destination`.
pub fn with_removed_mount(spec: &mut Spec, destination: &str) {
    spec.mounts.retain(|m| m.destination != destination);
}

/// Appends a read-only bind of `source` (which may be empty) at `destination`.
pub fn with_ro_bind(spec: &mut Spec, source: &str, destination: &'static str) {
    spec.mounts.push(mount(
        destination,
        "bind",
        source.to_string(),
        Names::Static(&RO_BIND_OPTIONS),
    ));
}

pub fn with_cgroup_mount(spec: &mut Spec) {
    spec.mounts.push(CGROUP_MOUNT.clone());
}

/// Docker's default seccomp profile, filtered by the current bounding set;
/// must follow every change to capabilities.
pub fn with_default_seccomp(spec: &mut Spec, facts: &HostFacts) {
    let bounding = spec
        .process
        .as_ref()
        .and_then(|p| p.capabilities.as_ref())
        .map_or(&[][..], |c| &c.bounding[..]);
    let seccomp = default_seccomp(bounding, facts);
    spec.linux_mut().seccomp = Some(seccomp);
}

/// BuildKit's `entitlements.WithInsecureSpec`: every capability, no masked
/// or read-only paths, all devices allowed, and the devices a privileged
/// build expects (unless in a user namespace, where they cannot be made).
pub fn with_insecure_spec(spec: &mut Spec, first_free_loop: u32, in_user_namespace: bool) {
    let process = spec.process_mut();
    let caps = process.capabilities.get_or_insert_with(Capabilities::default);
    for set in caps.sets_mut() {
        set.to_mut().extend(INSECURE_CAPS.iter().map(|c| Name::Borrowed(*c)));
    }
    process.apparmor_profile.clear();
    let linux = spec.linux_mut();
    linux.readonly_paths = Names::EMPTY;
    linux.masked_paths = Names::EMPTY;
    linux.resources.get_or_insert_with(Resources::default).devices = ["c", "b"]
        .iter()
        .map(|kind| DeviceCgroup {
            extra: Extra::NONE,
            allow: true,
            kind: Name::Borrowed(kind),
            access: Name::Borrowed("rwm"),
        })
        .collect();
    if !in_user_namespace {
        for (path, major, minor) in INSECURE_DEVICES {
            linux.devices.push(Device {
                extra: Extra::NONE,
                path: Name::Borrowed(path),
                kind: Name::Borrowed("c"),
                major: *major,
                minor: *minor,
            });
        }
        for n in 0..INSECURE_LOOP_DEVICES {
            let minor = i64::from(first_free_loop) + i64::from(n);
            linux.devices.push(Device {
                extra: Extra::NONE,
                path: format!("/dev/loop{minor}").into(),
                kind: Name::Borrowed("b"),
                major: 7,
                minor,
            });
        }
    }
}

/// Rewrites `ro` to `rw` in the options of every mount of type `kind`, in place.
pub fn with_writeable_mounts_of_type(spec: &mut Spec, kind: &str) {
    for m in spec.mounts.iter_mut().filter(|m| m.kind == kind) {
        if m.options.iter().any(|o| o == "ro") {
            for o in m.options.to_mut().iter_mut().filter(|o| *o == "ro") {
                *o = Name::Borrowed("rw");
            }
        }
    }
}

/// Removes the namespace of `kind`, so the process shares the host's.
pub fn with_host_namespace(spec: &mut Spec, kind: &str) {
    spec.linux_mut().namespaces.retain(|ns| ns.kind != kind);
}

/// Sets namespace `kind` in place, or appends it when absent.
pub fn with_linux_namespace(spec: &mut Spec, kind: &'static str, path: &str) {
    let namespaces = &mut spec.linux_mut().namespaces;
    let ns = Namespace {
        kind: Name::Borrowed(kind),
        path: path.to_string().into(),
    };
    match namespaces.iter_mut().find(|n| n.kind == kind) {
        Some(existing) => *existing = ns,
        None => namespaces.push(ns),
    }
}

/// Whether `path` is `prefix` or below it, component-wise.
fn has_path_prefix(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return true;
    }
    path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
}

/// BuildKit's `withBoundProc`: the host's /proc bound in first instead of a
/// new procfs, and nothing under /proc masked or read-only.
pub fn with_bound_proc(spec: &mut Spec) {
    spec.mounts.retain(|m| !has_path_prefix(&m.destination, "/proc"));
    spec.mounts.insert(0, BOUND_PROC_MOUNT.clone());
    let linux = spec.linux_mut();
    linux.masked_paths.to_mut().retain(|p| !has_path_prefix(p, "/proc"));
    linux.readonly_paths.to_mut().retain(|p| !has_path_prefix(p, "/proc"));
}

fn id_mappings(ranges: &[IdRange]) -> impl Iterator<Item = IdMapping> + '_ {
    ranges.iter().map(|r| IdMapping {
        container_id: r.container_id,
        host_id: r.host_id,
        size: r.size,
    })
}

/// containerd's `WithUserNamespace`: a user namespace (once) and the mappings.
pub fn with_user_namespace(spec: &mut Spec, uids: &[IdRange], gids: &[IdRange]) {
    let linux = spec.linux_mut();
    if !linux.namespaces.iter().any(|n| n.kind == "user") {
        linux.namespaces.push(Namespace {
            kind: Name::Borrowed("user"),
            path: Name::Borrowed(""),
        });
    }
    linux.uid_mappings.extend(id_mappings(uids));
    linux.gid_mappings.extend(id_mappings(gids));
}

/// Replaces the process arguments; `None` leaves none.
pub fn with_process_args(spec: &mut Spec, args: Option<&[String]>) {
    spec.process_mut().args = args.map(<[String]>::to_vec).unwrap_or_default();
}

/// containerd's `WithEnv`: overrides replace defaults of the same key, a
/// bare `KEY` unsets a default, and overrides never dedupe among themselves.
pub fn with_env(spec: &mut Spec, env: Option<&[String]>) {
    let Some(overrides) = env.filter(|e| !e.is_empty()) else {
        return;
    };
    let process = spec.process_mut();
    process.env = replace_or_append_env(&process.env, overrides);
}

/// containerd's `replaceOrAppendEnvValues`, including its quirk that only
/// keys from `defaults` are looked up, never keys appended from `overrides`.
pub fn replace_or_append_env(defaults: &[String], overrides: &[String]) -> Vec<String> {
    fn key(e: &str) -> &str {
        e.split_once('=').map_or(e, |(k, _)| k)
    }
    // containerd indexes defaults by key in a map, the last one winning;
    // the lists are short, so a search from the end does the same.
    let default_at = |k: &str| defaults.iter().rposition(|d| key(d) == k);
    let mut results: Vec<String> = Vec::with_capacity(defaults.len() + overrides.len());
    results.extend(defaults.iter().cloned());
    for value in overrides {
        match value.split_once('=') {
            // An unset default is emptied here and dropped below, with
            // every other empty entry (as containerd drops them).
            None => {
                if let Some(i) = default_at(value) {
                    results[i].clear();
                }
            }
            Some((k, _)) => match default_at(k) {
                Some(i) => results[i].clone_from(value),
                None => results.push(value.clone()),
            },
        }
    }
    results.retain(|e| !e.is_empty());
    results
}

pub fn with_process_cwd(spec: &mut Spec, cwd: &str) {
    spec.process_mut().cwd = cwd.to_string().into();
}

pub fn with_new_privileges(spec: &mut Spec) {
    spec.process_mut().no_new_privileges = false;
}

pub fn with_hostname(spec: &mut Spec, hostname: impl Into<Name>) {
    spec.hostname = hostname.into();
}

/// What BuildKit's network providers do to the namespace list.
pub fn with_network(spec: &mut Spec, network: &Network) {
    match network {
        Network::None => {}
        Network::Host => with_host_namespace(spec, "network"),
        Network::Path { path } => with_linux_namespace(spec, "network", path),
    }
}

pub fn with_cgroups_path(spec: &mut Spec, path: &str) {
    spec.linux_mut().cgroups_path = path.to_string();
}

pub fn with_readonly_rootfs(spec: &mut Spec) {
    spec.root.get_or_insert_with(Root::default).readonly = true;
}

pub fn without_rlimits(spec: &mut Spec) {
    spec.process_mut().rlimits.clear();
}

#[cfg(test)]
mod tests;
