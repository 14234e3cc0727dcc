//! The step's user, resolved as runc resolves it: names through the
//! rootfs's /etc/passwd and /etc/group, read inside the rootfs.

use std::path::Path;

use super::RunError;
use crate::sys::Syscalls;

/// A user resolved against the rootfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// Why the step's user does not resolve in the rootfs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UserError {
    #[error("bad uid for {0} in /etc/passwd")]
    BadUid(String),
    #[error("user {user:?} is not in the rootfs's /etc/passwd ({passwd})")]
    UnknownUser { user: String, passwd: String },
    #[error("group {0:?} is not in the rootfs's /etc/group")]
    UnknownGroup(String),
}

/// The largest /etc/passwd or /etc/group of a rootfs read.
const MAX_ACCOUNT_FILE_BYTES: u64 = 4 << 20;

/// Reads an account file inside the rootfs without following symlinks out
/// of it; empty when it does not exist. The rootfs is image content, so
/// anything but a regular file of bounded size is an error, never read.
fn read_account_file(sys: &dyn Syscalls, rootfs: &Path, path: &'static str) -> Result<String, RunError> {
    let failed = |source| RunError::AccountFile { path, source };
    let bytes = sys.read_in_root(rootfs, path, MAX_ACCOUNT_FILE_BYTES).map_err(failed)?;
    Ok(String::from_utf8_lossy(&bytes.unwrap_or_default()).into_owned())
}

/// Resolves `user` ("name|uid[:group|gid]") as runc does: names through the
/// rootfs's /etc/passwd and /etc/group, the primary group from passwd when
/// none is given, supplementary groups from /etc/group membership.
pub fn resolve_user(sys: &dyn Syscalls, rootfs: &Path, user: &str) -> Result<ResolvedUser, RunError> {
    if user.is_empty() {
        return Ok(ResolvedUser {
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
        });
    }
    let passwd = read_account_file(sys, rootfs, "/etc/passwd")?;
    let group = read_account_file(sys, rootfs, "/etc/group")?;
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    // name:x:uid:gid:...
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && (f[0] == user_part || (user_part.parse::<u32>().is_ok() && f[2] == user_part)));
    let (name, uid, passwd_gid) = match (&entry, user_part.parse::<u32>()) {
        (Some(f), _) => (
            Some(f[0].to_string()),
            f[2].parse::<u32>().map_err(|_| UserError::BadUid(f[0].to_string()))?,
            f[3].parse::<u32>().ok(),
        ),
        (None, Ok(uid)) => (None, uid, None),
        (None, Err(_)) => {
            return Err(UserError::UnknownUser {
                user: user_part.to_string(),
                passwd: rootfs.join("etc/passwd").display().to_string(),
            }
            .into())
        }
    };
    let groups: Vec<Vec<&str>> = group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 3)
        .collect();
    let gid = match group_part {
        None => passwd_gid.unwrap_or(0),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => groups
                .iter()
                .find(|f| f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| UserError::UnknownGroup(g.to_string()))?,
        },
    };
    let mut additional_gids = Vec::new();
    if let Some(name) = &name {
        for f in &groups {
            let members = f.get(3).copied().unwrap_or("");
            if members.split(',').any(|m| m == name) {
                if let Ok(g) = f[2].parse::<u32>() {
                    if g != gid && !additional_gids.contains(&g) {
                        additional_gids.push(g);
                    }
                }
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::RealSyscalls;

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nbuilder:x:1000:1000::/home/builder:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\nbuilder:x:1000:\nwheel:x:10:builder,other\naudio:x:29:builder\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn users_resolve_like_runc() {
        let r = rootfs();
        let u = |s: &str| resolve_user(&RealSyscalls, r.path(), s);
        assert_eq!(
            u("builder").unwrap(),
            ResolvedUser {
                uid: 1000,
                gid: 1000,
                additional_gids: vec![10, 29]
            }
        );
        assert_eq!(
            u("builder:wheel").unwrap(),
            ResolvedUser {
                uid: 1000,
                gid: 10,
                additional_gids: vec![29]
            }
        );
        assert_eq!(u("1000").unwrap().gid, 1000, "a numeric uid in passwd takes its group");
        assert_eq!(
            u("4242:7").unwrap(),
            ResolvedUser {
                uid: 4242,
                gid: 7,
                additional_gids: vec![]
            }
        );
        assert_eq!(u("").unwrap().uid, 0);
        let err = u("nobody").unwrap_err().to_string();
        assert!(err.contains("\"nobody\"") && err.contains("etc/passwd"), "{err}");
        assert!(u("builder:nogroup").unwrap_err().to_string().contains("nogroup"));
    }

    #[test]
    fn passwd_is_read_inside_the_rootfs() {
        let r = rootfs();
        std::fs::remove_file(r.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", r.path().join("etc/passwd")).unwrap();
        // The link points at the host's file; inside the rootfs it names
        // itself, a loop, so nothing is read.
        assert!(resolve_user(&RealSyscalls, r.path(), "root").is_err());
    }

    /// Regression: a device at the rootfs's /etc/passwd was read without
    /// end (1 GB/s), and a FIFO blocked the open past SIGTERM.
    #[test]
    fn account_files_that_are_not_plain_bounded_files_are_refused() {
        let r = rootfs();
        let passwd = r.path().join("etc/passwd");
        std::fs::remove_file(&passwd).unwrap();
        nix::unistd::mkfifo(&passwd, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let err = resolve_user(&RealSyscalls, r.path(), "root").unwrap_err().to_string();
        assert!(err.contains("/etc/passwd: not a regular file"), "{err}");
        std::fs::remove_file(&passwd).unwrap();
        let zero = nix::sys::stat::makedev(1, 5);
        nix::sys::stat::mknod(
            &passwd,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o644),
            zero,
        )
        .unwrap();
        let err = resolve_user(&RealSyscalls, r.path(), "root").unwrap_err().to_string();
        assert!(err.contains("/etc/passwd: not a regular file"), "{err}");
        std::fs::remove_file(&passwd).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &passwd).unwrap();
        // Inside the rootfs the link names its own /dev/zero, absent here.
        assert!(resolve_user(&RealSyscalls, r.path(), "root").is_err());
        std::fs::remove_file(&passwd).unwrap();
        let big = std::fs::File::create(&passwd).unwrap();
        big.set_len(MAX_ACCOUNT_FILE_BYTES + 1).unwrap();
        let err = resolve_user(&RealSyscalls, r.path(), "root").unwrap_err().to_string();
        assert!(err.contains("more than"), "{err}");
        std::fs::remove_file(&passwd).unwrap();
        assert_eq!(
            resolve_user(&RealSyscalls, r.path(), "0").unwrap().uid,
            0,
            "a missing passwd is no error"
        );
    }
}
