//! Performing and undoing one mount list, as containerd's `mount.All` does.

use std::path::Path;
use std::thread::sleep;
use std::time::Duration;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use specwright_core::request::Mountable;

use crate::sys::Syscalls;

/// mount(2) flags, propagation and filesystem data parsed from options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedOptions {
    pub flags: MsFlags,
    pub propagation: MsFlags,
    pub data: String,
}

/// Propagation options and the flags each one sets (applied by a separate
/// mount call after the mount itself).
const PROPAGATION: &[(&str, MsFlags)] = &[
    ("private", MsFlags::MS_PRIVATE),
    ("rprivate", MsFlags::MS_PRIVATE.union(MsFlags::MS_REC)),
    ("shared", MsFlags::MS_SHARED),
    ("rshared", MsFlags::MS_SHARED.union(MsFlags::MS_REC)),
    ("slave", MsFlags::MS_SLAVE),
    ("rslave", MsFlags::MS_SLAVE.union(MsFlags::MS_REC)),
    ("unbindable", MsFlags::MS_UNBINDABLE),
    ("runbindable", MsFlags::MS_UNBINDABLE.union(MsFlags::MS_REC)),
];

/// containerd's `parseMountOptions`: known words become flags (set or
/// cleared), propagation words are applied separately, the rest is data.
pub fn parse_options(options: &[String]) -> ParsedOptions {
    let mut flags = MsFlags::empty();
    let mut propagation = MsFlags::empty();
    let mut data = Vec::new();
    for option in options {
        let (clear, flag) = match option.as_str() {
            "async" => (true, MsFlags::MS_SYNCHRONOUS),
            "atime" => (true, MsFlags::MS_NOATIME),
            "bind" => (false, MsFlags::MS_BIND),
            "defaults" => (false, MsFlags::empty()),
            "dev" => (true, MsFlags::MS_NODEV),
            "diratime" => (true, MsFlags::MS_NODIRATIME),
            "dirsync" => (false, MsFlags::MS_DIRSYNC),
            "exec" => (true, MsFlags::MS_NOEXEC),
            "mand" => (false, MsFlags::MS_MANDLOCK),
            "noatime" => (false, MsFlags::MS_NOATIME),
            "nodev" => (false, MsFlags::MS_NODEV),
            "nodiratime" => (false, MsFlags::MS_NODIRATIME),
            "noexec" => (false, MsFlags::MS_NOEXEC),
            "nomand" => (true, MsFlags::MS_MANDLOCK),
            "norelatime" => (true, MsFlags::MS_RELATIME),
            "nostrictatime" => (true, MsFlags::MS_STRICTATIME),
            "nosuid" => (false, MsFlags::MS_NOSUID),
            "rbind" => (false, MsFlags::MS_BIND | MsFlags::MS_REC),
            "relatime" => (false, MsFlags::MS_RELATIME),
            "remount" => (false, MsFlags::MS_REMOUNT),
            "ro" => (false, MsFlags::MS_RDONLY),
            "rw" => (true, MsFlags::MS_RDONLY),
            "strictatime" => (false, MsFlags::MS_STRICTATIME),
            "suid" => (true, MsFlags::MS_NOSUID),
            "sync" => (false, MsFlags::MS_SYNCHRONOUS),
            other => {
                match PROPAGATION.iter().find(|(name, _)| *name == other) {
                    Some((_, flags)) => propagation = *flags,
                    None => data.push(other.to_string()),
                }
                continue;
            }
        };
        if clear {
            flags.remove(flag);
        } else {
            flags.insert(flag);
        }
    }
    ParsedOptions {
        flags,
        propagation,
        data: data.join(","),
    }
}

/// Mounts one entry on `target`: the mount itself, then its propagation,
/// then a read-only remount for a bind (the kernel ignores MS_RDONLY on the
/// first bind mount).
pub fn mount_entry(sys: &dyn Syscalls, entry: &Mountable, target: &Path) -> Result<(), Errno> {
    let parsed = parse_options(&entry.options);
    let is_bind = parsed.flags.contains(MsFlags::MS_BIND) || entry.is_bind();
    let mut flags = parsed.flags;
    if entry.is_bind() {
        flags.insert(MsFlags::MS_BIND);
        if entry.kind == "rbind" {
            flags.insert(MsFlags::MS_REC);
        }
    }
    let fstype = if is_bind { None } else { Some(entry.kind.as_str()) };
    let data = (!parsed.data.is_empty()).then_some(parsed.data.as_str());
    let mounted = !flags.contains(MsFlags::MS_REMOUNT) || data.is_some();
    if mounted {
        sys.mount(Some(entry.source.as_str()), target, fstype, flags, data)?;
    }
    let adjust = || -> Result<(), Errno> {
        if !parsed.propagation.is_empty() {
            sys.mount(None, target, None, parsed.propagation, None)?;
        }
        if is_bind && flags.contains(MsFlags::MS_RDONLY) {
            sys.mount(None, target, None, flags | MsFlags::MS_REMOUNT, None)?;
        }
        Ok(())
    };
    if let Err(e) = adjust() {
        // Half a mount (say, a bind not yet read-only) must not stay.
        if mounted {
            unmount_all(sys, target, 1)?;
        }
        return Err(e);
    }
    Ok(())
}

/// How often and how long to retry an unmount that is busy before
/// detaching lazily.
const BUSY_RETRIES: u32 = 10;
const BUSY_BACKOFF: Duration = Duration::from_millis(20);

/// The outcome of unmounting everything stacked on one mountpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnmountReport {
    /// Mounts removed from the mountpoint.
    pub unmounted: usize,
    /// Busy retries spent.
    pub busy_retries: u32,
    /// Whether a lazy detach was needed.
    pub detached: bool,
}

/// Unmounts the `stacked` mounts on `target` (fewer if it stops being a
/// mountpoint first): retries while busy, then detaches lazily as a last
/// resort.
pub fn unmount_all(sys: &dyn Syscalls, target: &Path, stacked: usize) -> Result<UnmountReport, Errno> {
    let mut report = UnmountReport {
        unmounted: 0,
        busy_retries: 0,
        detached: false,
    };
    while report.unmounted < stacked {
        match sys.unmount(target, MntFlags::UMOUNT_NOFOLLOW) {
            Ok(()) => report.unmounted += 1,
            // Not a mountpoint (any more), or gone: done.
            Err(Errno::EINVAL) | Err(Errno::ENOENT) => return Ok(report),
            // A recursive bind of a tree with mounts of its own is busy
            // only with its submounts: unmount it as the tree it is, made
            // private first so no unmount below propagates back to the
            // tree it was bound from.
            Err(Errno::EBUSY) if report.busy_retries == 0 && sys.has_submounts(target)? => {
                sys.mount(None, target, None, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None)?;
                sys.unmount(target, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW)?;
                report.unmounted += 1;
            }
            Err(Errno::EBUSY) if report.busy_retries < BUSY_RETRIES => {
                report.busy_retries += 1;
                sleep(BUSY_BACKOFF * report.busy_retries);
            }
            Err(Errno::EBUSY) => {
                sys.unmount(target, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW)?;
                report.unmounted += 1;
                report.detached = true;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::{Op, RecordingSyscalls};

    fn opts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let p = parse_options(&opts(&["nosuid", "rbind", "ro", "rprivate", "size=1024k", "mode=755"]));
        assert!(p
            .flags
            .contains(MsFlags::MS_NOSUID | MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY));
        assert_eq!(p.propagation, MsFlags::MS_PRIVATE | MsFlags::MS_REC);
        assert_eq!(p.data, "size=1024k,mode=755");
        let p = parse_options(&opts(&["ro", "rw"]));
        assert!(!p.flags.contains(MsFlags::MS_RDONLY));
    }

    #[test]
    fn readonly_bind_is_remounted() {
        let sys = RecordingSyscalls::dry_run();
        let entry = Mountable {
            kind: "bind".into(),
            source: "/src".into(),
            options: opts(&["rbind", "ro"]),
        };
        mount_entry(&sys, &entry, Path::new("/t")).unwrap();
        let ops = sys.ops();
        assert_eq!(ops.len(), 2);
        match &ops[1] {
            Op::Mount { flags, source, .. } => {
                assert!(source.is_none());
                assert!(MsFlags::from_bits_truncate(*flags).contains(MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn overlay_passes_data_and_type() {
        let sys = RecordingSyscalls::dry_run();
        let entry = Mountable {
            kind: "overlay".into(),
            source: "overlay".into(),
            options: opts(&["lowerdir=/l", "upperdir=/u", "workdir=/w"]),
        };
        mount_entry(&sys, &entry, Path::new("/t")).unwrap();
        assert_eq!(
            sys.ops(),
            vec![Op::Mount {
                source: Some("overlay".into()),
                target: "/t".into(),
                fstype: Some("overlay".into()),
                flags: 0,
                data: Some("lowerdir=/l,upperdir=/u,workdir=/w".into()),
            }]
        );
    }

    #[test]
    fn a_failed_readonly_remount_undoes_the_bind() {
        let sys = RecordingSyscalls::failing_at(Box::new(RecordingSyscalls::dry_run()), Some(1));
        let entry = Mountable {
            kind: "bind".into(),
            source: "/src".into(),
            options: opts(&["rbind", "ro"]),
        };
        assert_eq!(mount_entry(&sys, &entry, Path::new("/t")), Err(Errno::EIO));
        let ops = sys.ops();
        assert_eq!(ops.len(), 3, "{ops:?}");
        assert!(matches!(&ops[2], Op::Unmount { target, .. } if target == Path::new("/t")));
    }
}
