//! An overlay whose options are longer than mount(2) takes: the kernel
//! reads one page of mount data and cuts the rest, so an image of many
//! layers (18 lowerdirs of 230 characters, or about 70 of containerd's
//! snapshot paths) fails to mount. Two ways around it, tried in order:
//!
//! - the new mount API: `fsopen("overlay")`, each option set on its own
//!   with `fsconfig`, each lower layer appended as `lowerdir+` (Linux 6.8
//!   and later), then `fsmount` and `move_mount` onto the target. No limit
//!   on the number of layers; each value is at most 255 bytes.
//! - containerd's compaction, for older kernels: the lower layers named
//!   relative to their longest common parent, mounted by a thread of ours
//!   that changed into that parent (a thread with its own working
//!   directory, so the rest of the process keeps its own).

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::libc;
use nix::mount::MsFlags;

/// The most mount data the kernel reads whole: one page, with its NUL.
pub const MOUNT_DATA_MAX: usize = 4095;

/// The most bytes of one value `fsconfig` takes (with its NUL, 256).
const FSCONFIG_VALUE_MAX: usize = 255;

// From <linux/mount.h>; stable kernel ABI.
const FSOPEN_CLOEXEC: libc::c_uint = 0x1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 0x1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOUNT_ATTRS: &[(MsFlags, u64)] = &[
    (MsFlags::MS_RDONLY, 0x01),
    (MsFlags::MS_NOSUID, 0x02),
    (MsFlags::MS_NODEV, 0x04),
    (MsFlags::MS_NOEXEC, 0x08),
    (MsFlags::MS_NOATIME, 0x10),
    (MsFlags::MS_STRICTATIME, 0x20),
    (MsFlags::MS_NODIRATIME, 0x80),
];

/// Whether an overlay mount needs this module: its data is past a page.
pub fn is_long(fstype: Option<&str>, data: Option<&str>) -> bool {
    fstype == Some("overlay") && data.is_some_and(|d| d.len() > MOUNT_DATA_MAX)
}

/// Mounts an overlay of options `data` (comma-separated, as mount(2)
/// takes them) on `target`, whatever their length.
pub fn mount_long(target: &Path, flags: MsFlags, data: &str) -> Result<(), Errno> {
    match by_layers(target, flags, data) {
        // A kernel before 6.8 knows no `lowerdir+` (or no fsopen at all).
        Err(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => compacted(target, flags, data),
        other => other,
    }
}

fn cstring(text: &str) -> Result<CString, Errno> {
    CString::new(text).map_err(|_| Errno::EINVAL)
}

fn owned(fd: libc::c_long) -> Result<OwnedFd, Errno> {
    if fd < 0 {
        return Err(Errno::last());
    }
    let fd = i32::try_from(fd).map_err(|_| Errno::EBADF)?;
    // SAFETY: the kernel just returned this descriptor, which nothing else
    // owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fsconfig(fs: &OwnedFd, command: libc::c_uint, key: Option<&str>, value: Option<&str>) -> Result<(), Errno> {
    if value.is_some_and(|v| v.len() > FSCONFIG_VALUE_MAX) {
        return Err(Errno::ENAMETOOLONG);
    }
    let key = key.map(cstring).transpose()?;
    let value = value.map(cstring).transpose()?;
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: fsconfig(2) reads the NUL-terminated key and value (or
    // nothing where they are null) and writes nothing of ours.
    let rc = unsafe { libc::syscall(libc::SYS_fsconfig, fs.as_raw_fd(), command, ptr(&key), ptr(&value), 0) };
    if rc < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// The new mount API, each lower layer appended on its own.
fn by_layers(target: &Path, flags: MsFlags, data: &str) -> Result<(), Errno> {
    let mut attrs = 0u64;
    for (flag, attr) in MOUNT_ATTRS {
        if flags.contains(*flag) {
            attrs |= attr;
        }
    }
    let known = MOUNT_ATTRS.iter().fold(MsFlags::empty(), |all, (flag, _)| all | *flag) | MsFlags::MS_RELATIME;
    if !known.contains(flags) {
        // A flag only mount(2) sets (say, MS_SYNCHRONOUS).
        return Err(Errno::EOPNOTSUPP);
    }
    let name = cstring("overlay")?;
    // SAFETY: fsopen(2) reads the NUL-terminated filesystem name.
    let fs = owned(unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), FSOPEN_CLOEXEC) })?;
    if flags.contains(MsFlags::MS_RDONLY) {
        fsconfig(&fs, FSCONFIG_SET_FLAG, Some("ro"), None)?;
    }
    for option in data.split(',').filter(|o| !o.is_empty()) {
        match option.split_once('=') {
            Some(("lowerdir", layers)) => {
                for layer in layers.split(':') {
                    fsconfig(&fs, FSCONFIG_SET_STRING, Some("lowerdir+"), Some(layer))?;
                }
            }
            Some((key, value)) => fsconfig(&fs, FSCONFIG_SET_STRING, Some(key), Some(value))?,
            None => fsconfig(&fs, FSCONFIG_SET_FLAG, Some(option), None)?,
        }
    }
    fsconfig(&fs, FSCONFIG_CMD_CREATE, None, None)?;
    // SAFETY: fsmount(2) takes the configured context and returns a new
    // detached mount's descriptor.
    let mount = owned(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) })?;
    let target = CString::new(target.as_os_str().as_encoded_bytes()).map_err(|_| Errno::EINVAL)?;
    let empty = cstring("")?;
    // SAFETY: move_mount(2) reads the two NUL-terminated paths; the
    // detached mount moves onto `target`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mount.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// containerd's compaction: the lower layers relative to their longest
/// common parent, mounted from a thread whose working directory is it.
pub fn compacted(target: &Path, flags: MsFlags, data: &str) -> Result<(), Errno> {
    let (parent, data) = compact(data).ok_or(Errno::E2BIG)?;
    if data.len() > MOUNT_DATA_MAX {
        return Err(Errno::E2BIG);
    }
    let target = std::path::absolute(target).map_err(|_| Errno::EINVAL)?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // This thread's own working directory, not the process's.
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)?;
                nix::unistd::chdir(Path::new(&parent))?;
                nix::mount::mount(Some("overlay"), &target, Some("overlay"), flags, Some(data.as_str()))
            })
            .join()
            .unwrap_or(Err(Errno::EIO))
    })
}

/// The overlay options with `lowerdir`'s layers relative to their longest
/// common parent directory, and that parent; `None` when there is none to
/// take out (a single layer, or layers with only `/` in common).
pub fn compact(data: &str) -> Option<(String, String)> {
    let lowerdir = data.split(',').find_map(|o| o.strip_prefix("lowerdir="))?;
    let layers: Vec<&str> = lowerdir.split(':').collect();
    if layers.len() < 2 || layers.iter().any(|l| !l.starts_with('/')) {
        return None;
    }
    let mut common: Vec<&str> = layers[0].split('/').collect();
    common.pop();
    for layer in &layers[1..] {
        let parts: Vec<&str> = layer.split('/').collect();
        let shared = common.iter().zip(&parts).take_while(|(a, b)| a == b).count();
        common.truncate(shared.min(parts.len().saturating_sub(1)));
    }
    let parent = common.join("/");
    if parent.is_empty() {
        return None;
    }
    let relative: Vec<&str> = layers
        .iter()
        .map(|l| l[parent.len()..].trim_start_matches('/'))
        .collect();
    let options: Vec<String> = data
        .split(',')
        .map(|o| match o.strip_prefix("lowerdir=") {
            Some(_) => format!("lowerdir={}", relative.join(":")),
            None => o.to_string(),
        })
        .collect();
    Some((parent, options.join(",")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_overlay_past_a_page_is_long() {
        let long = format!("lowerdir={}", "/x".repeat(2100));
        assert!(is_long(Some("overlay"), Some(&long)));
        assert!(!is_long(Some("overlay"), Some("lowerdir=/a:/b")));
        assert!(!is_long(Some("tmpfs"), Some(&long)));
        assert!(!is_long(None, None));
    }

    #[test]
    fn compaction_takes_the_common_parent_out_of_the_lower_layers() {
        let data = "lowerdir=/var/lib/c/snapshots/3/fs:/var/lib/c/snapshots/2/fs:/var/lib/c/snapshots/1/fs,upperdir=/u,workdir=/w";
        let (parent, compacted) = compact(data).unwrap();
        assert_eq!(parent, "/var/lib/c/snapshots");
        assert_eq!(compacted, "lowerdir=3/fs:2/fs:1/fs,upperdir=/u,workdir=/w");
        // A parent is a whole component, never part of a name.
        let (parent, compacted) = compact("lowerdir=/a/bc:/a/bd").unwrap();
        assert_eq!((parent.as_str(), compacted.as_str()), ("/a", "lowerdir=bc:bd"));
        assert_eq!(compact("lowerdir=/a:/b"), None);
        assert_eq!(compact("lowerdir=/a/b"), None);
        assert_eq!(compact("lowerdir=rel/a:rel/b"), None);
        // One layer the parent of another.
        let (parent, compacted) = compact("lowerdir=/s/a:/s/a/b").unwrap();
        assert_eq!((parent.as_str(), compacted.as_str()), ("/s", "lowerdir=a:a/b"));
    }
}
