//! The step's user, resolved as runc resolves it: names through the
//! rootfs's /etc/passwd and /etc/group, read inside the rootfs.

use std::path::Path;

use super::RunError;
use crate::resolve::resolve_in_root;

/// A user resolved against the rootfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// The largest /etc/passwd or /etc/group of a rootfs read.
const MAX_ACCOUNT_FILE_BYTES: u64 = 4 << 20;

/// Reads a file inside the rootfs without following symlinks out of it;
/// `None` when it does not exist. The rootfs is image content, so anything
/// but a regular file of bounded size is an error, never read (a device
/// would not end, a FIFO would block the open).
fn read_in_rootfs(rootfs: &Path, path: &str) -> Result<Option<String>, RunError> {
    let failed = |why: String| RunError::Prepare(format!("the rootfs's {path}: {why}"));
    let Ok(resolved) = resolve_in_root(rootfs, path) else {
        return Ok(None);
    };
    let Some(object) = resolved.object else {
        return Ok(None);
    };
    let stat = nix::sys::stat::fstat(&object).map_err(|e| failed(e.to_string()))?;
    if nix::sys::stat::SFlag::from_bits_truncate(stat.st_mode) & nix::sys::stat::SFlag::S_IFMT
        != nix::sys::stat::SFlag::S_IFREG
    {
        return Err(failed("not a regular file".to_string()));
    }
    if stat.st_size as u64 > MAX_ACCOUNT_FILE_BYTES {
        return Err(failed(format!("more than {MAX_ACCOUNT_FILE_BYTES} bytes")));
    }
    // Reopening the resolved object through its descriptor reads exactly
    // what was resolved, whatever happens to the path meanwhile; it is a
    // regular file, so the open cannot block.
    let by_fd = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&object));
    crate::input::read_bounded_text(Path::new(&by_fd), MAX_ACCOUNT_FILE_BYTES)
        .map(Some)
        .map_err(|e| failed(e.to_string()))
}

/// Resolves `user` ("name|uid[:group|gid]") as runc does: names through the
/// rootfs's /etc/passwd and /etc/group, the primary group from passwd when
/// none is given, supplementary groups from /etc/group membership.
pub fn resolve_user(rootfs: &Path, user: &str) -> Result<ResolvedUser, RunError> {
    if user.is_empty() {
        return Ok(ResolvedUser {
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
        });
    }
    let passwd = read_in_rootfs(rootfs, "/etc/passwd")?.unwrap_or_default();
    let group = read_in_rootfs(rootfs, "/etc/group")?.unwrap_or_default();
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
            f[2].parse::<u32>()
                .map_err(|_| RunError::Prepare(format!("bad uid for {} in /etc/passwd", f[0])))?,
            f[3].parse::<u32>().ok(),
        ),
        (None, Ok(uid)) => (None, uid, None),
        (None, Err(_)) => {
            return Err(RunError::Prepare(format!(
                "user {user_part:?} is not in the rootfs's /etc/passwd ({})",
                rootfs.join("etc/passwd").display()
            )))
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
                .ok_or_else(|| RunError::Prepare(format!("group {g:?} is not in the rootfs's /etc/group")))?,
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
        let u = |s: &str| resolve_user(r.path(), s);
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
        assert!(resolve_user(r.path(), "root").is_err());
    }

    /// Regression: a device at the rootfs's /etc/passwd was read without
    /// end (1 GB/s), and a FIFO blocked the open past SIGTERM.
    #[test]
    fn account_files_that_are_not_plain_bounded_files_are_refused() {
        let r = rootfs();
        let passwd = r.path().join("etc/passwd");
        std::fs::remove_file(&passwd).unwrap();
        nix::unistd::mkfifo(&passwd, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let err = resolve_user(r.path(), "root").unwrap_err().to_string();
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
        let err = resolve_user(r.path(), "root").unwrap_err().to_string();
        assert!(err.contains("/etc/passwd: not a regular file"), "{err}");
        std::fs::remove_file(&passwd).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &passwd).unwrap();
        // Inside the rootfs the link names its own /dev/zero, absent here.
        assert!(resolve_user(r.path(), "root").is_err());
        std::fs::remove_file(&passwd).unwrap();
        let big = std::fs::File::create(&passwd).unwrap();
        big.set_len(MAX_ACCOUNT_FILE_BYTES + 1).unwrap();
        let err = resolve_user(r.path(), "root").unwrap_err().to_string();
        assert!(err.contains("more than"), "{err}");
        std::fs::remove_file(&passwd).unwrap();
        assert_eq!(
            resolve_user(r.path(), "0").unwrap().uid,
            0,
            "a missing passwd is no error"
        );
    }
}
