//! The live host's facts, for when `--host-facts` is not given.

use std::path::Path;

use specwright_core::HostFacts;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FactsError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("uname: {0}")]
    Uname(nix::errno::Errno),
}

/// Reads host facts from a JSON file; errors name the file and the field.
pub fn read_facts_file(path: &Path) -> Result<HostFacts, FactsError> {
    let file_error = |message: String| FactsError::File {
        path: path.display().to_string(),
        message,
    };
    let text =
        crate::input::read_bounded_text(path, crate::input::MAX_FACTS_BYTES).map_err(|e| file_error(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| file_error(format!("invalid host facts: {e}")))
}

/// Detects the facts of the machine this runs on.
pub fn detect() -> Result<HostFacts, FactsError> {
    let uname = nix::sys::utsname::uname().map_err(FactsError::Uname)?;
    Ok(HostFacts {
        kernel_release: uname.release().to_string_lossy().into_owned(),
        seccomp: seccomp_supported(),
        first_free_loop: first_free_loop().unwrap_or(0),
        in_user_namespace: in_user_namespace(),
        arch: go_arch().to_string(),
        capabilities: std::fs::read_to_string("/proc/self/status")
            .map(|status| effective_capabilities(&status))
            .unwrap_or_default(),
        cgroup_namespace: Path::new("/proc/self/ns/cgroup").exists()
            && Path::new("/sys/fs/cgroup/cgroup.subtree_control").exists(),
        apparmor: apparmor_supported(),
        selinux: selinux_enabled(),
    })
}

/// go-selinux's `GetEnabled`: selinuxfs mounted read-write at
/// /sys/fs/selinux, and this process labelled by a loaded policy (not
/// `kernel`).
fn selinux_enabled() -> bool {
    const SELINUX_MAGIC: u64 = 0xf97c_ff8c;
    let selinuxfs = nix::sys::statfs::statfs("/sys/fs/selinux").is_ok_and(|st| {
        st.filesystem_type().0 as u64 == SELINUX_MAGIC
            && nix::sys::statvfs::statvfs("/sys/fs/selinux")
                .is_ok_and(|v| !v.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
    });
    selinuxfs
        && std::fs::read("/proc/self/attr/current")
            .is_ok_and(|label| label.strip_suffix(b"\0").unwrap_or(&label) != b"kernel")
}

pub use specwright_core::facts::CAPABILITY_NAMES;

/// The names of the `CapEff:` set of a /proc/<pid>/status text, in number
/// order (containerd's `cap.Current`); bits without a name are left out.
pub fn effective_capabilities(status: &str) -> Vec<String> {
    let Some(mask) = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
    else {
        return Vec::new();
    };
    CAPABILITY_NAMES
        .iter()
        .enumerate()
        .filter(|(bit, _)| mask & (1u64 << bit) != 0)
        .map(|(_, name)| name.to_string())
        .collect()
}

/// containerd's `apparmor.HostSupports`.
fn apparmor_supported() -> bool {
    Path::new("/sys/kernel/security/apparmor").exists()
        && std::fs::read("/sys/module/apparmor/parameters/enabled").is_ok_and(|b| b.len() > 1 && b[0] == b'Y')
}

/// The kernel reports a `Seccomp:` line only when built with seccomp.
fn seccomp_supported() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Seccomp:")))
        .unwrap_or(false)
}

/// runc's test: the identity map of the initial user namespace.
fn in_user_namespace() -> bool {
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => {
            let fields: Vec<&str> = map.split_whitespace().collect();
            fields != ["0", "0", "4294967295"]
        }
        Err(_) => false,
    }
}

nix::ioctl_none_bad!(loop_ctl_get_free, 0x4C82);

/// What LOOP_CTL_GET_FREE returns, as BuildKit asks it.
fn first_free_loop() -> Option<u32> {
    use std::os::fd::AsRawFd;
    let control = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .ok()?;
    // SAFETY: LOOP_CTL_GET_FREE takes no argument and `control` is an open
    // /dev/loop-control descriptor for the duration of the call.
    let n = unsafe { loop_ctl_get_free(control.as_raw_fd()) }.ok()?;
    u32::try_from(n).ok()
}

/// Go's name for this architecture, as seccomp profiles use them.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "mips64" if cfg!(target_endian = "little") => "mips64le",
        "riscv64" => "riscv64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_capabilities_are_named_in_number_order() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001fffeffffff\nCapBnd:\t0\n";
        let caps = effective_capabilities(status);
        assert_eq!(caps.len(), 40);
        assert_eq!(caps[0], "CAP_CHOWN");
        assert!(!caps.iter().any(|c| c == "CAP_SYS_RESOURCE"), "bit 24 is clear");
        assert_eq!(caps.last().map(String::as_str), Some("CAP_CHECKPOINT_RESTORE"));
        assert!(effective_capabilities("CapEff:\tzz\n").is_empty());
    }
}
