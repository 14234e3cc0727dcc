//! The static data of the default spec: its capability sets, masked paths
//! and mount options as [`StaticNames`] (each list with its JSON made at
//! compile time, which a spec holding it unchanged is written with), its
//! mounts and its namespaces.

use std::borrow::Cow;

use crate::spec::{Extra, Mount, Name, Names, Namespace, PartOf, StaticMount, StaticNames};

/// Defines each list as a `StaticNames` with its JSON (`["a","b"]`, for
/// literals that need no escaping: a test checks every one against
/// serde_json), and registers it in `LISTS`.
macro_rules! static_lists {
    ($($(#[$doc:meta])* $vis:vis $name:ident = [$first:literal $(, $rest:literal)* $(,)?];)+) => {
        $(
            $(#[$doc])*
            $vis static $name: StaticNames = StaticNames {
                names: &[Cow::Borrowed($first) $(, Cow::Borrowed($rest))*],
                json: concat!("[\"", $first, "\"", $(",\"", $rest, "\"",)* "]"),
                part_of: None,
            };
        )+
        /// Every list.
        static LISTS: &[&StaticNames] = &[$(&$name),+];
    };
}

static_lists! {
    /// containerd's default capability set.
    pub DEFAULT_CAPS = [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_NET_RAW",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE",
    ];
    pub(crate) DEFAULT_MASKED_PATHS = [
        "/proc/acpi",
        "/proc/asound",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/proc/sched_debug",
        "/sys/firmware",
        "/proc/scsi",
    ];
    /// containerd v2's masked paths.
    pub(crate) DEFAULT_MASKED_PATHS_V0_32 = [
        "/proc/acpi",
        "/proc/asound",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/proc/sched_debug",
        "/sys/firmware",
        "/sys/devices/virtual/powercap",
        "/proc/scsi",
    ];
    pub(crate) DEFAULT_READONLY_PATHS = [
        "/proc/bus",
        "/proc/fs",
        "/proc/irq",
        "/proc/sys",
        "/proc/sysrq-trigger",
    ];
    /// /etc/resolv.conf and /etc/hosts.
    pub(crate) RO_BIND_OPTIONS = ["nosuid", "noexec", "nodev", "rbind", "ro"];
    /// A bind from a request.
    pub(crate) RBIND_OPTIONS = ["rbind"];
    /// A read-only bind from a request.
    pub(crate) RBIND_RO_OPTIONS = ["rbind", "ro"];
    /// BuildKit v0.32's tracing socket bind.
    pub(crate) RO_RBIND_OPTIONS = ["ro", "rbind"];
}

/// Defines each mount as a `Mount` whose options are a static list that
/// names the mount ([`PartOf::Mount`]), with the whole mount's JSON.
macro_rules! static_mounts {
    ($($(#[$doc:meta])* $vis:vis $name:ident = ($dest:literal, $kind:literal, $source:literal, [$first:literal $(, $rest:literal)* $(,)?]);)+) => {
        $(
            $(#[$doc])*
            $vis static $name: Mount = Mount {
                destination: Cow::Borrowed($dest),
                kind: Cow::Borrowed($kind),
                source: Cow::Borrowed($source),
                options: Names::Static(&StaticNames {
                    names: &[Cow::Borrowed($first) $(, Cow::Borrowed($rest))*],
                    json: concat!("[\"", $first, "\"", $(",\"", $rest, "\"",)* "]"),
                    part_of: Some(PartOf::Mount(&StaticMount {
                        destination: $dest,
                        kind: $kind,
                        source: $source,
                        json: concat!(
                            "{\"destination\":\"", $dest, "\",\"type\":\"", $kind, "\",\"source\":\"", $source,
                            "\",\"options\":[\"", $first, "\"", $(",\"", $rest, "\"",)* "]}"
                        ),
                    })),
                }),
                extra: Extra::NONE,
            };
        )+
        /// Every mount.
        static MOUNTS: &[&Mount] = &[$(&$name),+];
    };
}

static_mounts! {
    /// containerd's default mounts, in its order (/run included: BuildKit removes it).
    pub(crate) PROC_MOUNT = ("/proc", "proc", "proc", ["nosuid", "noexec", "nodev"]);
    pub(crate) DEV_MOUNT = ("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]);
    pub(crate) DEVPTS_MOUNT = (
        "/dev/pts",
        "devpts",
        "devpts",
        ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]
    );
    pub(crate) SHM_MOUNT = ("/dev/shm", "tmpfs", "shm", ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]);
    pub(crate) MQUEUE_MOUNT = ("/dev/mqueue", "mqueue", "mqueue", ["nosuid", "noexec", "nodev"]);
    pub(crate) SYSFS_MOUNT = ("/sys", "sysfs", "sysfs", ["nosuid", "noexec", "nodev", "ro"]);
    pub(crate) RUN_MOUNT = ("/run", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]);
    /// BuildKit's cgroup mount.
    pub(crate) CGROUP_MOUNT = ("/sys/fs/cgroup", "cgroup", "cgroup", ["ro", "nosuid", "noexec", "nodev"]);
    /// The host's /proc in no-sandbox process mode.
    pub(crate) BOUND_PROC_MOUNT = ("/proc", "bind", "/proc", ["rbind"]);
}

/// containerd's default namespaces, in its order.
pub(crate) static DEFAULT_NAMESPACES: [Namespace; 5] = {
    macro_rules! namespace {
        ($kind:literal) => {
            Namespace {
                kind: Cow::Borrowed($kind),
                path: Cow::Borrowed(""),
            }
        };
    }
    [
        namespace!("pid"),
        namespace!("ipc"),
        namespace!("uts"),
        namespace!("mount"),
        namespace!("network"),
    ]
};

/// The JSON of a namespace of the default spec's kinds without a path,
/// made at build time.
pub fn default_namespace_json(namespace: &Namespace) -> Option<&'static str> {
    if !namespace.path.is_empty() {
        return None;
    }
    Some(match &*namespace.kind {
        "pid" => r#"{"type":"pid"}"#,
        "ipc" => r#"{"type":"ipc"}"#,
        "uts" => r#"{"type":"uts"}"#,
        "mount" => r#"{"type":"mount"}"#,
        "network" => r#"{"type":"network"}"#,
        _ => return None,
    })
}

/// Every list above and every static mount's options.
pub fn lists() -> impl Iterator<Item = &'static StaticNames> {
    LISTS
        .iter()
        .copied()
        .chain(MOUNTS.iter().filter_map(|m| m.options.as_static()))
}

/// Every static mount.
pub fn mounts() -> impl Iterator<Item = &'static Mount> {
    MOUNTS.iter().copied()
}

/// `values` as a spec's list: the static list with the same items when
/// there is one (a request's bind options, usually), else a copy.
pub fn borrow_or_copy(values: &[String]) -> Names {
    LISTS
        .iter()
        .find(|list| list.names.len() == values.len() && list.names.iter().zip(values).all(|(a, b)| a == b))
        .map_or_else(
            || Names::Owned(values.iter().map(|v| Name::Owned(v.clone())).collect()),
            |list| Names::Static(list),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_list_s_json_is_serde_json_s() {
        for list in lists() {
            assert_eq!(list.json, serde_json::to_string(list.names).unwrap());
        }
    }

    #[test]
    fn an_unchanged_static_mount_is_written_whole_and_an_edited_one_by_field() {
        for mount in mounts() {
            let Some(PartOf::Mount(whole)) = mount.options.as_static().and_then(|l| l.part_of) else {
                panic!("{mount:?}: its options name it");
            };
            assert_eq!(whole.json_for(mount), Some(whole.json));
            assert_eq!(whole.json, serde_json::to_string(mount).unwrap());
            let edits: [fn(&mut Mount); 4] = [
                |m| m.destination = "/elsewhere".into(),
                |m| m.kind = "none".into(),
                |m| m.source = "/elsewhere".into(),
                |m| {
                    m.extra.insert("uidMappings".to_string(), serde_json::json!([]));
                },
            ];
            for edit in edits {
                let mut edited = mount.clone();
                edit(&mut edited);
                assert_eq!(whole.json_for(&edited), None, "{edited:?}");
            }
        }
    }

    #[test]
    fn a_list_equal_to_a_static_one_is_borrowed_and_any_other_copied() {
        let strings = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ro = borrow_or_copy(&strings(&["rbind", "ro"]));
        assert!(matches!(ro, Names::Static(list) if std::ptr::eq(list, &RBIND_RO_OPTIONS)));
        let other = borrow_or_copy(&strings(&["rbind", "ro", "nosuid"]));
        assert!(matches!(&other, Names::Owned(list) if list[..] == ["rbind", "ro", "nosuid"]));
        assert!(matches!(borrow_or_copy(&[]), Names::Owned(list) if list.is_empty()));
    }

    #[test]
    fn a_default_namespace_s_json_is_serde_json_s() {
        for namespace in &DEFAULT_NAMESPACES {
            let json = default_namespace_json(namespace).unwrap();
            assert_eq!(json, serde_json::to_string(namespace).unwrap());
            let mut with_path = namespace.clone();
            with_path.path = "/proc/1/ns/net".into();
            assert_eq!(default_namespace_json(&with_path), None);
        }
        let cgroup = Namespace {
            kind: "cgroup".into(),
            path: "".into(),
        };
        assert_eq!(default_namespace_json(&cgroup), None);
    }

    #[test]
    fn an_edited_static_list_is_owned_and_written_from_its_names() {
        let mut caps = Names::Static(&DEFAULT_CAPS);
        assert_eq!(caps.as_static().map(|l| l.json), Some(DEFAULT_CAPS.json));
        caps.to_mut().pop();
        assert!(caps.as_static().is_none());
        assert_eq!(caps.len(), DEFAULT_CAPS.names.len() - 1);
        assert_eq!(
            caps,
            Names::Owned(DEFAULT_CAPS.names[..DEFAULT_CAPS.names.len() - 1].to_vec())
        );
    }
}
