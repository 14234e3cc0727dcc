//! Resolving a selector inside a root without ever leaving it.
//!
//! Semantics are continuity's `fs.RootPath`, which BuildKit uses: `..` and
//! symlinks are followed but clamped to the root (an absolute link target
//! restarts from the root), a component that does not exist is joined as
//! is, and more than 255 links fail with "too many links". The walk is
//! done on file descriptors, one `O_PATH|O_NOFOLLOW` component at a time,
//! and `..` pops the walker's own stack: no path string an attacker can
//! change is ever handed to the kernel. The returned path is checked
//! against `/proc/self/fd` to be the object that was resolved; a
//! concurrent rename makes the walk start again.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{open, openat, readlinkat, OFlag};
use nix::sys::stat::{fstat, Mode, SFlag};

/// continuity's limit on symlinks followed in one resolution.
pub const MAX_LINKS: u32 = 255;

/// How often a walk raced by a concurrent rename is started again.
const RACE_RETRIES: u32 = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("too many links")]
    TooManyLinks,
    #[error("{path}: {errno}")]
    Io { path: String, errno: Errno },
    #[error("{0:?} is not valid UTF-8")]
    NotUtf8(PathBuf),
    #[error("{0}: kept changing while being resolved")]
    Raced(String),
}

struct Step {
    name: Vec<u8>,
    /// None once the walk has passed a component that does not exist.
    fd: Option<OwnedFd>,
}

fn io_error(path: &Path, errno: Errno) -> ResolveError {
    ResolveError::Io {
        path: path.display().to_string(),
        errno,
    }
}

fn fd_path(fd: &impl AsRawFd) -> Result<PathBuf, Errno> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|e| e.raw_os_error().map_or(Errno::EIO, Errno::from_raw))
}

fn components(path: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    path.split(|b| *b == b'/')
        .filter(|c| !c.is_empty())
        .map(<[u8]>::to_vec)
}

fn joined(root: &Path, stack: &[Step], upto: usize) -> PathBuf {
    let mut p = root.to_path_buf();
    for step in &stack[..upto] {
        p.push(OsStr::from_bytes(&step.name));
    }
    p
}

/// Resolves `selector` inside `root`, returning the host path of what it
/// names (which need not exist).
pub fn resolve_in_root(root: &Path, selector: &str) -> Result<String, ResolveError> {
    let root_fd = open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_error(root, e))?;
    let root_path = fd_path(&root_fd).map_err(|e| io_error(root, e))?;
    for _ in 0..RACE_RETRIES {
        let stack = walk(&root_fd, &root_path, selector)?;
        let resolved = joined(&root_path, &stack, stack.len());
        let existing = stack.iter().take_while(|s| s.fd.is_some()).count();
        let verified = match existing.checked_sub(1).and_then(|i| stack[i].fd.as_ref()) {
            Some(fd) => {
                fd_path(fd).ok().as_deref() == Some(joined(&root_path, &stack, existing).as_path())
            }
            None => true,
        };
        if verified {
            return resolved
                .into_os_string()
                .into_string()
                .map_err(|p| ResolveError::NotUtf8(p.into()));
        }
    }
    Err(ResolveError::Raced(
        joined(&root_path, &[], 0)
            .join(selector)
            .display()
            .to_string(),
    ))
}

fn walk(root_fd: &OwnedFd, root_path: &Path, selector: &str) -> Result<Vec<Step>, ResolveError> {
    let mut queue: VecDeque<Vec<u8>> = components(selector.as_bytes()).collect();
    let mut stack: Vec<Step> = Vec::new();
    let mut links = 0u32;
    while let Some(name) = queue.pop_front() {
        match name.as_slice() {
            b"." => continue,
            b".." => {
                stack.pop();
                continue;
            }
            _ => {}
        }
        let parent = match stack.last() {
            None => Some(root_fd.as_fd()),
            Some(step) => step.fd.as_ref().map(|fd| fd.as_fd()),
        };
        let Some(parent) = parent else {
            stack.push(Step { name, fd: None });
            continue;
        };
        let fd = match openat(
            parent,
            OsStr::from_bytes(&name),
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => {
                stack.push(Step { name, fd: None });
                continue;
            }
            Err(e) => {
                let mut p = joined(root_path, &stack, stack.len());
                p.push(OsStr::from_bytes(&name));
                return Err(io_error(&p, e));
            }
        };
        let stat = fstat(&fd).map_err(|e| io_error(root_path, e))?;
        if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFLNK {
            stack.push(Step { name, fd: Some(fd) });
            continue;
        }
        links += 1;
        if links > MAX_LINKS {
            return Err(ResolveError::TooManyLinks);
        }
        let target = readlinkat(&fd, "").map_err(|e| io_error(root_path, e))?;
        let target = target.as_bytes();
        if target.first() == Some(&b'/') {
            stack.clear();
        }
        for (i, c) in components(target).enumerate() {
            queue.insert(i, c);
        }
    }
    Ok(stack)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// The oracle's source tree.
    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("sub/dir")).unwrap();
        std::fs::create_dir_all(r.join("sub/other")).unwrap();
        std::fs::write(r.join("sub/dir/file"), "x").unwrap();
        symlink("/sub/dir", r.join("link_abs")).unwrap();
        symlink("/etc", r.join("link_out_abs")).unwrap();
        symlink("sub/dir", r.join("link_rel")).unwrap();
        symlink("../../../../etc", r.join("link_rel_escape")).unwrap();
        symlink("sub", r.join("dirlink")).unwrap();
        symlink("loop2", r.join("loop1")).unwrap();
        symlink("loop1", r.join("loop2")).unwrap();
        symlink("../sub/dir", r.join("sub/uplink")).unwrap();
        dir
    }

    fn resolve(dir: &tempfile::TempDir, sel: &str) -> Result<String, ResolveError> {
        let root = std::fs::canonicalize(dir.path()).unwrap();
        resolve_in_root(&root, sel)
            .map(|p| p.strip_prefix(root.to_str().unwrap()).unwrap().to_string())
    }

    #[test]
    fn symlinks_are_clamped_to_the_root() {
        let t = tree();
        for (sel, want) in [
            ("sub/dir", "/sub/dir"),
            ("link_abs", "/sub/dir"),
            ("link_out_abs", "/etc"),
            ("link_rel", "/sub/dir"),
            ("link_rel_escape", "/etc"),
            ("dirlink/dir", "/sub/dir"),
            ("sub/uplink", "/sub/dir"),
            ("link_abs/file", "/sub/dir/file"),
            ("link_out_abs/passwd", "/etc/passwd"),
            ("../../../etc", "/etc"),
            ("/abs/path", "/abs/path"),
            ("sub/../../..x", "/..x"),
            ("a/./b/", "/a/b"),
            ("missing/../sub", "/sub"),
            ("dirlink/../link_rel/file", "/sub/dir/file"),
        ] {
            assert_eq!(resolve(&t, sel).unwrap(), want, "selector {sel}");
        }
    }

    #[test]
    fn a_symlink_chain_is_followed() {
        let t = tree();
        symlink("c2", t.path().join("c1")).unwrap();
        symlink("/c3", t.path().join("c2")).unwrap();
        symlink("link_rel/../other", t.path().join("c3")).unwrap();
        // c3 -> link_rel/../other: link_rel is sub/dir, so .. is sub.
        assert_eq!(resolve(&t, "c1").unwrap(), "/sub/other");
    }

    #[test]
    fn a_cycle_fails_with_too_many_links() {
        let t = tree();
        assert_eq!(resolve(&t, "loop1"), Err(ResolveError::TooManyLinks));
        assert_eq!(
            resolve(&t, "loop1").unwrap_err().to_string(),
            "too many links"
        );
    }

    #[test]
    fn a_file_in_the_middle_is_an_error() {
        let t = tree();
        let err = resolve(&t, "sub/dir/file/x").unwrap_err();
        assert!(
            matches!(
                err,
                ResolveError::Io {
                    errno: Errno::ENOTDIR,
                    ..
                }
            ),
            "{err:?}"
        );
    }
}
