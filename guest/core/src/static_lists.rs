//! The static data of the default spec (capability sets, masked paths,
//! its mounts and namespaces), each with its JSON made at compile time.
//!
//! Writing short strings one by one is most of what writing a spec costs
//! once the seccomp rules are spliced in; a list, mount or namespace that
//! is still one of these (what almost every spec has) is copied as one
//! string.

use std::borrow::Cow;

use crate::spec::{Extra, Mount, Name, Names, Namespace};

/// Defines each list as `NAME: &[Name]` (a static: one address, which a
/// spec's list borrowed whole shares) and registers it with its JSON
/// (`["a","b"]`, for literals that need no escaping: a test checks every
/// one against serde_json).
macro_rules! static_lists {
    ($($(#[$doc:meta])* $vis:vis $name:ident = [$first:literal $(, $rest:literal)* $(,)?];)+) => {
        $(
            $(#[$doc])*
            $vis static $name: &[Name] = &[Cow::Borrowed($first) $(, Cow::Borrowed($rest))*];
        )+
        /// Every list, with its JSON.
        static LISTS: &[(&[Name], &str)] = &[
            $(($name, concat!("[\"", $first, "\"", $(",\"", $rest, "\"",)* "]")),)+
        ];
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
}

/// A mount of the default spec, with its JSON and its options' JSON.
pub struct StaticMount {
    pub mount: Mount,
    json: &'static str,
    options_json: &'static str,
}

/// Defines each mount as a `StaticMount` and registers it in `MOUNTS`.
macro_rules! static_mounts {
    ($($(#[$doc:meta])* $vis:vis $name:ident = ($dest:literal, $kind:literal, $source:literal, [$first:literal $(, $rest:literal)* $(,)?]);)+) => {
        $(
            $(#[$doc])*
            $vis static $name: StaticMount = StaticMount {
                mount: Mount {
                    destination: Cow::Borrowed($dest),
                    kind: Cow::Borrowed($kind),
                    source: Cow::Borrowed($source),
                    options: Cow::Borrowed(&[Cow::Borrowed($first) $(, Cow::Borrowed($rest))*]),
                    extra: Extra::NONE,
                },
                json: concat!(
                    "{\"destination\":\"", $dest, "\",\"type\":\"", $kind, "\",\"source\":\"", $source,
                    "\",\"options\":[\"", $first, "\"", $(",\"", $rest, "\"",)* "]}"
                ),
                options_json: concat!("[\"", $first, "\"", $(",\"", $rest, "\"",)* "]"),
            };
        )+
        /// Every mount.
        static MOUNTS: &[&StaticMount] = &[$(&$name),+];
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

/// containerd's default namespaces, in its order, each with its JSON.
pub(crate) static DEFAULT_NAMESPACES: [(Namespace, &str); 5] = {
    macro_rules! namespace {
        ($kind:literal) => {
            (
                Namespace {
                    kind: Cow::Borrowed($kind),
                    path: Cow::Borrowed(""),
                },
                concat!("{\"type\":\"", $kind, "\"}"),
            )
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

/// The JSON of a mount that is one of the static mounts, unchanged (every
/// field still borrowed from it).
pub fn mount_json(mount: &Mount) -> Option<&'static str> {
    MOUNTS
        .iter()
        .find(|s| {
            same_address(&mount.destination, &s.mount.destination)
                && same_address(&mount.kind, &s.mount.kind)
                && same_address(&mount.source, &s.mount.source)
                && std::ptr::eq(&*mount.options, &*s.mount.options)
        })
        .map(|s| s.json)
}

/// The JSON of a namespace that is one of the default ones, unchanged.
pub fn namespace_json(namespace: &Namespace) -> Option<&'static str> {
    if !namespace.path.is_empty() {
        return None;
    }
    DEFAULT_NAMESPACES
        .iter()
        .find(|(n, _)| same_address(&namespace.kind, &n.kind))
        .map(|(_, json)| *json)
}

/// The same string by address: for strings borrowed from statics, which
/// never change, the same content.
pub(crate) fn same_address(a: &str, b: &str) -> bool {
    a.len() == b.len() && std::ptr::eq(a.as_ptr(), b.as_ptr())
}

/// Every list above and every static mount's options, with its JSON.
fn all_lists() -> impl Iterator<Item = (&'static [Name], &'static str)> + Clone {
    LISTS
        .iter()
        .copied()
        .chain(MOUNTS.iter().map(|m| (&*m.mount.options, m.options_json)))
}

/// Every list above and every static mount's options.
pub fn lists() -> impl Iterator<Item = &'static [Name]> {
    all_lists().map(|(list, _)| list)
}

/// Every static mount.
pub fn mounts() -> impl Iterator<Item = &'static Mount> {
    MOUNTS.iter().map(|m| &m.mount)
}

/// The JSON of `values` when they are exactly one of the lists above: the
/// list itself (the usual case: a spec's list borrowed whole), or a copy
/// with the same items.
pub fn json_of(values: &[Name]) -> Option<&'static str> {
    let mut lists = all_lists();
    let borrowed = lists.clone().find(|(list, _)| std::ptr::eq(*list, values));
    borrowed
        .or_else(|| {
            lists.find(|(list, _)| list.len() == values.len() && list.iter().zip(values).all(|(a, b)| same(a, b)))
        })
        .map(|(_, json)| json)
}

/// `values` as a spec's list: the static list with the same items when
/// there is one (a request's bind options, usually), else a copy.
pub fn borrow_or_copy(values: &[String]) -> Names {
    LISTS
        .iter()
        .find(|(list, _)| list.len() == values.len() && list.iter().zip(values).all(|(a, b)| a == b))
        .map_or_else(
            || Names::Owned(values.iter().map(|v| Name::Owned(v.clone())).collect()),
            |(list, _)| Names::Borrowed(list),
        )
}

/// Equal strings; the usual case, a name borrowed from the list itself,
/// without comparing bytes.
fn same(a: &str, b: &str) -> bool {
    same_address(a, b) || a == b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_list_s_json_is_serde_json_s() {
        for (list, json) in LISTS {
            assert_eq!(*json, serde_json::to_string(list).unwrap());
            assert_eq!(json_of(list), Some(*json));
            let names: Vec<Name> = list.to_vec();
            assert_eq!(json_of(&names), Some(*json), "a copy borrowing the same strings");
            let owned: Vec<Name> = list.iter().map(|s| Name::from(s.to_string())).collect();
            assert_eq!(json_of(&owned), Some(*json), "matched by content, not by address");
        }
        for mount in MOUNTS {
            assert_eq!(json_of(&mount.mount.options), Some(mount.options_json));
            assert_eq!(mount.options_json, serde_json::to_string(&mount.mount.options).unwrap());
        }
        let mut edited: Vec<Name> = DEFAULT_CAPS.to_vec();
        edited.pop();
        assert_eq!(json_of(&edited), None);
        edited.push("CAP_SYS_ADMIN".into());
        assert_eq!(json_of(&edited), None);
        assert_eq!(
            json_of(&DEFAULT_CAPS[..3]),
            None,
            "a prefix of a list at the list's address"
        );
    }

    #[test]
    fn an_unchanged_static_mount_or_namespace_is_written_from_its_json() {
        for mount in MOUNTS {
            let copy = mount.mount.clone();
            assert_eq!(mount_json(&copy), Some(mount.json));
            assert_eq!(mount.json, serde_json::to_string(&copy).unwrap());
            let edits: [fn(&mut Mount); 4] = [
                |m| m.destination = m.destination.to_string().into(),
                |m| m.kind = m.kind.to_string().into(),
                |m| m.source = m.source.to_string().into(),
                |m| m.options.to_mut()[0] = "rw".into(),
            ];
            for edit in edits {
                let mut edited = mount.mount.clone();
                edit(&mut edited);
                assert_eq!(mount_json(&edited), None, "{edited:?}");
            }
        }
        for (namespace, json) in &DEFAULT_NAMESPACES {
            assert_eq!(namespace_json(namespace), Some(*json));
            assert_eq!(*json, serde_json::to_string(namespace).unwrap());
            let mut with_path = namespace.clone();
            with_path.path = "/proc/1/ns/net".into();
            assert_eq!(namespace_json(&with_path), None);
            let mut copied = namespace.clone();
            copied.kind = copied.kind.to_string().into();
            assert_eq!(namespace_json(&copied), None);
        }
    }

    #[test]
    fn a_list_equal_to_a_static_one_is_borrowed_and_any_other_copied() {
        let strings = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ro = borrow_or_copy(&strings(&["rbind", "ro"]));
        assert!(matches!(ro, Names::Borrowed(list) if std::ptr::eq(list, RBIND_RO_OPTIONS)));
        let other = borrow_or_copy(&strings(&["rbind", "ro", "nosuid"]));
        assert!(matches!(&other, Names::Owned(list) if list[..] == ["rbind", "ro", "nosuid"]));
        assert!(matches!(borrow_or_copy(&[]), Names::Owned(list) if list.is_empty()));
    }
}
