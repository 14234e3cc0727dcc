//! Small spec options in containerd's style: each changes one thing and is
//! named for it. `buildkit.rs` applies them in BuildKit's order.

use crate::buildkit::Release;
use crate::facts::{capability_names, HostFacts};
use crate::request::{IdRange, LinuxResources, Network, Ulimit};
use crate::seccomp::{default_seccomp, Profile};
use crate::spec::{
    Capabilities, Cpu, Device, DeviceCgroup, Extra, IdMapping, Linux, Memory, Mount, Name, Names, Namespace, Process,
    Resources, Rlimit, Root, Spec, User,
};
pub use crate::static_lists::DEFAULT_CAPS;
use crate::static_lists::{
    BOUND_PROC_MOUNT, CGROUP_MOUNT, DEFAULT_MASKED_PATHS, DEFAULT_MASKED_PATHS_V0_32, DEFAULT_NAMESPACES,
    DEFAULT_READONLY_PATHS, DEVPTS_MOUNT, DEV_MOUNT, MQUEUE_MOUNT, PROC_MOUNT, RO_BIND_OPTIONS, RUN_MOUNT, SHM_MOUNT,
    SYSFS_MOUNT,
};

/// runtime-spec version that containerd 1.4 (BuildKit v0.8.1) writes.
pub const OCI_VERSION: &str = "1.0.2-dev";

/// runtime-spec version that BuildKit v0.32.2's vendored specs-go writes.
pub const OCI_VERSION_V0_32: &str = "1.3.0";

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

/// containerd's `populateDefaultUnixSpec`, as the containerd a BuildKit
/// release vendors has it: the spec every step starts from. containerd v2
/// writes a newer runtime-spec version, masks /sys/devices/virtual/powercap
/// and grants no inheritable capabilities.
pub fn default_unix_spec(release: Release, namespace: &str, id: &str) -> Spec {
    let caps = Names::Static(&DEFAULT_CAPS);
    let (oci_version, masked_paths, inheritable) = match release {
        Release::V0_8 => (OCI_VERSION, &DEFAULT_MASKED_PATHS, caps.clone()),
        Release::V0_32 => (OCI_VERSION_V0_32, &DEFAULT_MASKED_PATHS_V0_32, Names::EMPTY),
    };
    Spec {
        oci_version: Name::Borrowed(oci_version),
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
                inheritable,
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
            masked_paths: Names::Static(masked_paths),
            readonly_paths: Names::Static(&DEFAULT_READONLY_PATHS),
            cgroups_path: ["/", namespace, "/", id].concat(),
            resources: Some(Resources {
                extra: Extra::NONE,
                devices: vec![DeviceCgroup {
                    extra: Extra::NONE,
                    allow: false,
                    kind: Name::Borrowed(""),
                    major: None,
                    minor: None,
                    access: Name::Borrowed("rwm"),
                }],
                ..Resources::default()
            }),
            namespaces: DEFAULT_NAMESPACES.to_vec(),
            ..Linux::default()
        }),
        hostname: Name::Borrowed(""),
        hooks: None,
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

/// A release's default seccomp profile, filtered by the current bounding
/// set; must follow every change to capabilities.
pub fn with_default_seccomp(spec: &mut Spec, profile: &Profile, facts: &HostFacts) {
    let bounding = spec
        .process
        .as_ref()
        .and_then(|p| p.capabilities.as_ref())
        .map_or(&[][..], |c| &c.bounding[..]);
    let seccomp = default_seccomp(profile, bounding, facts);
    spec.linux_mut().seccomp = Some(seccomp);
}

/// BuildKit's `entitlements.WithInsecureSpec`: every capability (v0.8.1 a
/// fixed list, v0.32 the runner's own), no masked or read-only paths, all
/// devices allowed, and the devices a privileged build expects, unless the
/// host runs in a user namespace, where they cannot be made. v0.8.1 exposes
/// eight loop devices from the first free one; v0.32 every one from loop0
/// to seven past it.
pub fn with_insecure_spec(spec: &mut Spec, release: Release, facts: &HostFacts) {
    let process = spec.process_mut();
    let caps = process.capabilities.get_or_insert_with(Capabilities::default);
    let from_host = match release {
        Release::V0_8 => Vec::new(),
        Release::V0_32 => capability_names(&facts.capabilities),
    };
    for set in caps.sets_mut() {
        match release {
            Release::V0_8 => set.to_mut().extend(INSECURE_CAPS.iter().map(|c| Name::Borrowed(*c))),
            Release::V0_32 => set.to_mut().extend(from_host.iter().cloned()),
        }
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
            major: None,
            minor: None,
            access: Name::Borrowed("rwm"),
        })
        .collect();
    if !facts.in_user_namespace {
        for (path, major, minor) in INSECURE_DEVICES {
            linux.devices.push(Device {
                extra: Extra::NONE,
                path: Name::Borrowed(path),
                kind: Name::Borrowed("c"),
                major: *major,
                minor: *minor,
                file_mode: None,
                uid: None,
                gid: None,
            });
        }
        let first_free = i64::from(facts.first_free_loop);
        let last = first_free + i64::from(INSECURE_LOOP_DEVICES) - 1;
        let first = match release {
            Release::V0_8 => first_free,
            Release::V0_32 => 0,
        };
        for minor in first..=last {
            linux.devices.push(Device {
                extra: Extra::NONE,
                path: format!("/dev/loop{minor}").into(),
                kind: Name::Borrowed("b"),
                major: 7,
                minor,
                file_mode: None,
                uid: None,
                gid: None,
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

/// containerd v2's `WithUIDGID` also lists the primary group among the
/// additional ones.
pub fn with_primary_group_listed(spec: &mut Spec) {
    let user = &mut spec.process_mut().user;
    if !user.additional_gids.contains(&user.gid) {
        user.additional_gids.push(user.gid);
    }
}

/// BuildKit v0.32's cgroup parent: `<parent><id>` for a systemd slice
/// given as `name.slice:`, else `/<parent>/buildkit/<id>` (cleaned).
pub fn with_cgroup_parent(spec: &mut Spec, parent: &str, id: &str) {
    let path = if parent.contains(".slice") && parent.ends_with(':') {
        [parent, id].concat()
    } else {
        crate::mounts::clean_absolute(&[parent, "/buildkit/", id].concat())
    };
    with_cgroups_path(spec, &path);
}

/// The step's ulimits as rlimits (`RLIMIT_<NAME>`), replacing any.
pub fn with_rlimits(spec: &mut Spec, ulimits: &[Ulimit]) {
    spec.process_mut().rlimits = ulimits
        .iter()
        .map(|u| Rlimit {
            kind: format!("RLIMIT_{}", u.name.to_ascii_uppercase()).into(),
            hard: u64::try_from(u.hard).unwrap_or(0),
            soft: u64::try_from(u.soft).unwrap_or(0),
        })
        .collect();
}

/// containerd's `WithMemoryLimit`, `WithCPUShares`, `WithCPUCFS` (quota
/// and period together), `WithCPUs`, `WithCPUsMems` and BuildKit's swap
/// limit, each only for a value the step sets.
pub fn with_resources(spec: &mut Spec, r: &LinuxResources) {
    let resources = spec.linux_mut().resources.get_or_insert_with(Resources::default);
    if r.memory != 0 {
        resources.memory.get_or_insert_with(Memory::default).limit = Some(r.memory);
    }
    if r.memory_swap != 0 {
        resources.memory.get_or_insert_with(Memory::default).swap = Some(r.memory_swap);
    }
    if r.cpu_shares != 0 {
        resources.cpu.get_or_insert_with(Cpu::default).shares = Some(r.cpu_shares);
    }
    if r.cpu_quota != 0 || r.cpu_period != 0 {
        let cpu = resources.cpu.get_or_insert_with(Cpu::default);
        cpu.quota = Some(r.cpu_quota);
        cpu.period = Some(r.cpu_period);
    }
    if !r.cpuset_cpus.is_empty() {
        resources
            .cpu
            .get_or_insert_with(Cpu::default)
            .cpus
            .clone_from(&r.cpuset_cpus);
    }
    if !r.cpuset_mems.is_empty() {
        resources
            .cpu
            .get_or_insert_with(Cpu::default)
            .mems
            .clone_from(&r.cpuset_mems);
    }
}

pub fn with_apparmor_profile(spec: &mut Spec, profile: &str) {
    spec.process_mut().apparmor_profile = profile.to_string();
}

/// The process's SELinux label and the label of the container's mounts.
pub fn with_selinux_labels(spec: &mut Spec, labels: &crate::selinux::Labels) {
    spec.process_mut().selinux_label = labels.process.clone();
    spec.linux_mut().mount_label = labels.mount.clone();
}

/// A new cgroup namespace for the step (BuildKit v0.32 on cgroup v2 hosts).
pub fn with_cgroup_namespace(spec: &mut Spec) {
    spec.linux_mut().namespaces.push(Namespace {
        kind: Name::Borrowed("cgroup"),
        path: Name::Borrowed(""),
    });
}

/// Where BuildKit binds its tracing socket inside the container.
pub const TRACING_SOCKET_PATH: &str = "/dev/otel-grpc.sock";

/// The OpenTelemetry exporter variables BuildKit sets for a tracing socket.
pub const TRACING_ENV: &[&str] = &[
    "OTEL_TRACES_EXPORTER=otlp",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=unix:///dev/otel-grpc.sock",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=grpc",
];

/// BuildKit's `appendMissingTracingEnv`: the step's env with each exporter
/// variable it does not set itself appended.
pub fn env_with_tracing(env: &[String]) -> Vec<String> {
    let name = |e: &str| e.split_once('=').map_or(e, |(k, _)| k).to_string();
    let mut out = env.to_vec();
    for t in TRACING_ENV {
        if !env.iter().any(|e| name(e) == name(t)) {
            out.push(t.to_string());
        }
    }
    out
}

/// The tracing socket bound read-only into the container.
pub fn with_tracing_socket_mount(spec: &mut Spec, socket: &str) {
    spec.mounts.push(mount(
        TRACING_SOCKET_PATH,
        "bind",
        socket.to_string(),
        Names::Static(&crate::static_lists::RO_RBIND_OPTIONS),
    ));
}

#[cfg(test)]
mod tests;
