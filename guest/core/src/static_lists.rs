//! The string lists of the default spec (capabilities, masked paths,
//! mount options), each with its JSON made at compile time.
//!
//! Writing a list of short strings is most of what writing a spec costs
//! once the seccomp names are spliced in; a list that still holds exactly
//! one of these (what almost every spec has) is copied as one string.

use crate::spec::Name;

/// Defines each list as `NAME: &[&str]` and registers it with its JSON
/// (`["a","b"]`, for literals that need no escaping: a test checks every
/// one against serde_json).
macro_rules! static_lists {
    ($($(#[$doc:meta])* $vis:vis $name:ident = [$first:literal $(, $rest:literal)* $(,)?];)+) => {
        $(
            $(#[$doc])*
            $vis const $name: &[&str] = &[$first $(, $rest)*];
        )+
        /// Every list, with its JSON.
        const LISTS: &[(&[&str], &str)] = &[
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
    /// The host's /proc in no-sandbox process mode.
    pub(crate) RBIND_OPTIONS = ["rbind"];
}

/// Every list above.
pub fn lists() -> impl Iterator<Item = &'static [&'static str]> {
    LISTS.iter().map(|(list, _)| *list)
}

/// The JSON of `values` when they are exactly one of the lists above.
pub fn json_of(values: &[Name]) -> Option<&'static str> {
    LISTS
        .iter()
        .find(|(list, _)| list.len() == values.len() && list.iter().zip(values).all(|(a, b)| same(a, b)))
        .map(|(_, json)| *json)
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
            let names: Vec<Name> = list.iter().map(|s| Name::Borrowed(s)).collect();
            assert_eq!(json_of(&names), Some(*json));
            let owned: Vec<Name> = list.iter().map(|s| Name::from(s.to_string())).collect();
            assert_eq!(json_of(&owned), Some(*json), "matched by content, not by address");
        }
        let mut edited: Vec<Name> = DEFAULT_CAPS.iter().map(|s| Name::Borrowed(s)).collect();
        edited.pop();
        assert_eq!(json_of(&edited), None);
        edited.push("CAP_SYS_ADMIN".into());
        assert_eq!(json_of(&edited), None);
    }
}
