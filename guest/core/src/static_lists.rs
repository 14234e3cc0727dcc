//! The string lists of the default spec (capabilities, masked paths,
//! mount options), each with its JSON made at compile time.
//!
//! Writing a list of short strings is most of what writing a spec costs
//! once the seccomp names are spliced in; a list that still holds exactly
//! one of these (what almost every spec has) is copied as one string.

use std::borrow::Cow;

use crate::spec::{Name, Names};

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
    /// Also /dev/mqueue's.
    pub(crate) PROC_OPTIONS = ["nosuid", "noexec", "nodev"];
    /// /dev and /run.
    pub(crate) TMPFS_OPTIONS = ["nosuid", "strictatime", "mode=755", "size=65536k"];
    pub(crate) DEVPTS_OPTIONS = ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"];
    pub(crate) SHM_OPTIONS = ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"];
    pub(crate) SYSFS_OPTIONS = ["nosuid", "noexec", "nodev", "ro"];
    /// /etc/resolv.conf and /etc/hosts.
    pub(crate) RO_BIND_OPTIONS = ["nosuid", "noexec", "nodev", "rbind", "ro"];
    pub(crate) CGROUP_OPTIONS = ["ro", "nosuid", "noexec", "nodev"];
    /// The host's /proc in no-sandbox process mode; a bind from a request.
    pub(crate) RBIND_OPTIONS = ["rbind"];
    /// A read-only bind from a request.
    pub(crate) RBIND_RO_OPTIONS = ["rbind", "ro"];
}

/// Every list above.
pub fn lists() -> impl Iterator<Item = &'static [Name]> {
    LISTS.iter().map(|(list, _)| *list)
}

/// The JSON of `values` when they are exactly one of the lists above: the
/// list itself (the usual case: a spec's list borrowed whole), or a copy
/// with the same items.
pub fn json_of(values: &[Name]) -> Option<&'static str> {
    let borrowed = LISTS.iter().find(|(list, _)| std::ptr::eq(*list, values));
    borrowed
        .or_else(|| {
            LISTS
                .iter()
                .find(|(list, _)| list.len() == values.len() && list.iter().zip(values).all(|(a, b)| same(a, b)))
        })
        .map(|(_, json)| *json)
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
    a.len() == b.len() && (std::ptr::eq(a.as_ptr(), b.as_ptr()) || a == b)
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
    fn a_list_equal_to_a_static_one_is_borrowed_and_any_other_copied() {
        let strings = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ro = borrow_or_copy(&strings(&["rbind", "ro"]));
        assert!(matches!(ro, Names::Borrowed(list) if std::ptr::eq(list, RBIND_RO_OPTIONS)));
        let other = borrow_or_copy(&strings(&["rbind", "ro", "nosuid"]));
        assert!(matches!(&other, Names::Owned(list) if list[..] == ["rbind", "ro", "nosuid"]));
        assert!(matches!(borrow_or_copy(&[]), Names::Owned(list) if list.is_empty()));
    }
}
