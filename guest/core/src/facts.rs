//! Facts about the host that a spec depends on.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostFacts {
    /// `uname -r`.
    pub kernel_release: String,
    /// Whether the kernel supports seccomp filters.
    pub seccomp: bool,
    /// What LOOP_CTL_GET_FREE returned.
    pub first_free_loop: u32,
    /// Whether the host runs inside a user namespace.
    pub in_user_namespace: bool,
    /// Go's name for the architecture; BuildKit's oracle ran on amd64.
    #[serde(default = "default_arch")]
    pub arch: String,
    /// The runner's effective capabilities, in capability-number order:
    /// what BuildKit v0.32 grants in insecure mode.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// cgroup v2 is mounted at /sys/fs/cgroup and the kernel has cgroup
    /// namespaces: BuildKit v0.32 gives each step one.
    #[serde(default)]
    pub cgroup_namespace: bool,
    /// The host supports AppArmor.
    #[serde(default)]
    pub apparmor: bool,
    /// SELinux is enabled on the host.
    #[serde(default)]
    pub selinux: bool,
}

fn default_arch() -> String {
    "amd64".to_string()
}

impl HostFacts {
    /// A plain Linux host, for tests and examples: kernel 6.1.0 on amd64
    /// with seccomp, not in a user namespace, the first free loop device
    /// 0, no capabilities listed, no cgroup namespace, AppArmor or SELinux.
    pub fn example() -> HostFacts {
        HostFacts {
            kernel_release: "6.1.0".into(),
            seccomp: true,
            first_free_loop: 0,
            in_user_namespace: false,
            arch: default_arch(),
            capabilities: Vec::new(),
            cgroup_namespace: false,
            apparmor: false,
            selinux: false,
        }
    }
}

/// A kernel release reduced to what seccomp rules compare: major and minor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelVersion {
    pub major: u32,
    pub minor: u32,
}

impl KernelVersion {
    /// Parses "6.1.0-28-amd64", "4.8", "5.10.104-linuxkit" and the like.
    pub fn parse(release: &str) -> Option<KernelVersion> {
        let mut parts = release.splitn(3, '.');
        let major = parts.next()?.parse().ok()?;
        let minor_part = parts.next()?;
        let digits = minor_part.bytes().take_while(u8::is_ascii_digit).count();
        let minor = minor_part[..digits].parse().ok()?;
        Some(KernelVersion { major, minor })
    }
}

/// Linux's capability names by number.
pub const CAPABILITY_NAMES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// A capability name as the spec holds it: one of [`CAPABILITY_NAMES`]
/// borrowed (no allocation), any other name copied.
pub fn capability_name(name: &str) -> crate::spec::Name {
    match CAPABILITY_NAMES.iter().find(|known| **known == name) {
        Some(known) => crate::spec::Name::Borrowed(known),
        None => crate::spec::Name::Owned(name.to_owned()),
    }
}

/// [`capability_name`] for each of `names`, a list in capability-number
/// order as host facts give it: each name is looked for from where the one
/// before it was found, so the list costs one pass over
/// [`CAPABILITY_NAMES`]; a name out of that order is still found, and an
/// unknown one copied.
pub fn capability_names(names: &[String]) -> Vec<crate::spec::Name> {
    let mut from = 0;
    names
        .iter()
        .map(
            |name| match CAPABILITY_NAMES[from..].iter().position(|known| *known == name) {
                Some(at) => {
                    from += at + 1;
                    crate::spec::Name::Borrowed(CAPABILITY_NAMES[from - 1])
                }
                None => capability_name(name),
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_names_borrow_known_names_in_any_order() {
        let names: Vec<String> = ["CAP_CHOWN", "CAP_KILL", "CAP_BPF", "CAP_DAC_OVERRIDE", "CAP_NEW_ONE"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let interned = capability_names(&names);
        let texts: Vec<&str> = interned.iter().map(|n| &**n).collect();
        assert_eq!(texts, names);
        let borrowed: Vec<bool> = interned
            .iter()
            .map(|n| matches!(n, crate::spec::Name::Borrowed(_)))
            .collect();
        assert_eq!(borrowed, [true, true, true, true, false]);
    }

    #[test]
    fn kernel_versions_parse_and_order() {
        let v = |s| KernelVersion::parse(s).unwrap();
        assert_eq!(v("6.18.44"), KernelVersion { major: 6, minor: 18 });
        assert_eq!(v("5.10.0-28-amd64"), KernelVersion { major: 5, minor: 10 });
        assert_eq!(v("4.8"), KernelVersion { major: 4, minor: 8 });
        assert_eq!(v("4.19-rc1"), KernelVersion { major: 4, minor: 19 });
        assert!(v("4.7.10") < v("4.8"));
        assert!(v("4.10") > v("4.8"));
        assert!(KernelVersion::parse("linux").is_none());
        assert!(KernelVersion::parse("6").is_none());
    }
}
