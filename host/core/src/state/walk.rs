//! Reaching the state directory from the path the operator gave, one
//! component at a time, so that no other user's directory or symlink on
//! the way can send the host elsewhere.
//!
//! The contract: every directory passed through belongs to root or this
//! user and is writable by no one else unless sticky (as /tmp is); every
//! symlink followed belongs to root or this user (another user's symlink
//! in a sticky directory is refused, as the kernel's `protected_symlinks`
//! refuses it for open); missing components are made (mode 0711) only
//! below directories that passed. The directory reached is returned open,
//! with its real path, and is itself checked by the caller.

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{open, openat, readlinkat, OFlag};
use nix::sys::stat::{fstat, fstatat, mkdirat, FileStat, Mode, SFlag};

use super::at::io_at;
use super::StateError;

/// How many symlinks one walk follows before giving up (as the kernel's
/// ELOOP limit).
const MAX_SYMLINKS: usize = 40;

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

fn file_type(stat: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT
}

/// A directory on the way to the state dir: root's or ours, and writable
/// by no one else unless sticky.
fn check_passable(given: &Path, at: &Path, stat: &FileStat) -> Result<(), StateError> {
    let sticky = stat.st_mode & 0o1000 != 0;
    let owner_ok = stat.st_uid == 0 || stat.st_uid == euid();
    if !owner_ok || (stat.st_mode & 0o022 != 0 && !sticky) {
        return Err(StateError::Untrusted {
            path: given.to_path_buf(),
            why: format!(
                "{} (uid {}, mode {:o}) lets another user replace it",
                at.display(),
                stat.st_uid,
                stat.st_mode & 0o7777
            ),
        });
    }
    Ok(())
}

fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

/// Opens the directory at `given` (absolute), creating missing components
/// (mode `mode`; none made without one), under the contract above.
/// Returns the open directory and its real path; adds to `created` each
/// directory this walk made, outermost first.
pub(super) fn open_trusted_dir(
    given: &Path,
    mode: Option<u32>,
    created: &mut Vec<PathBuf>,
) -> Result<(OwnedFd, PathBuf), StateError> {
    let io = |at: &Path, errno: Errno| StateError::Io {
        path: at.to_path_buf(),
        source: std::io::Error::from(errno),
    };
    let root = open("/", dir_flags(), Mode::empty()).map_err(|e| io(Path::new("/"), e))?;
    // The directories entered so far, outermost first: `..` pops one.
    let mut stack: Vec<(OwnedFd, PathBuf)> = vec![(root, PathBuf::from("/"))];
    // The components still to walk, next one last.
    let mut pending: Vec<OsString> = components_reversed(given);
    let mut symlinks = 0;
    while let Some(name) = pending.pop() {
        let (dir, dir_path) = stack.last().expect("the root is never popped");
        if name == ".." {
            if stack.len() > 1 {
                stack.pop();
            }
            continue;
        }
        let at = dir_path.join(&name);
        let stat = match fstatat(dir.as_fd(), name.as_os_str(), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => Some(stat),
            Err(Errno::ENOENT) => None,
            Err(e) => return Err(io(&at, e)),
        };
        match (stat, mode) {
            (None, None) => return Err(io(&at, Errno::ENOENT)),
            (None, Some(mode)) => match mkdirat(dir.as_fd(), name.as_os_str(), Mode::from_bits_truncate(mode)) {
                Ok(()) => created.push(at.clone()),
                Err(Errno::EEXIST) => {}
                Err(e) => return Err(io(&at, e)),
            },
            (Some(link), _) if file_type(&link) == SFlag::S_IFLNK => {
                if link.st_uid != 0 && link.st_uid != euid() {
                    return Err(StateError::Untrusted {
                        path: given.to_path_buf(),
                        why: format!("{} is a symlink owned by uid {}", at.display(), link.st_uid),
                    });
                }
                symlinks += 1;
                if symlinks > MAX_SYMLINKS {
                    return Err(io(&at, Errno::ELOOP));
                }
                let target = readlinkat(dir.as_fd(), name.as_os_str()).map_err(|e| io(&at, e))?;
                let target = PathBuf::from(target);
                if target.is_absolute() {
                    stack.truncate(1);
                }
                pending.extend(components_reversed(&target));
                continue;
            }
            (Some(_), _) => {}
        }
        // Opened without following: a symlink put here since is refused,
        // and what is checked is what was opened.
        let fd = openat(dir.as_fd(), name.as_os_str(), dir_flags(), Mode::empty()).map_err(|e| match e {
            Errno::ELOOP | Errno::ENOTDIR => StateError::Untrusted {
                path: given.to_path_buf(),
                why: format!("{} is not a directory", at.display()),
            },
            e => io(&at, e),
        })?;
        let stat = fstat(&fd).map_err(|e| io(&at, e))?;
        if !pending.is_empty() {
            check_passable(given, &at, &stat)?;
        }
        stack.push((fd, at));
    }
    let (fd, path) = stack.pop().expect("the root is never popped");
    if path == Path::new("/") {
        return Err(StateError::Untrusted {
            path: given.to_path_buf(),
            why: "the root directory itself".to_string(),
        });
    }
    Ok((fd, path))
}

/// The names to walk for `path`, last first (`.` and the root dropped).
fn components_reversed(path: &Path) -> Vec<OsString> {
    let mut names: Vec<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect();
    names.reverse();
    debug_assert!(names.iter().all(|n| !n.as_bytes().contains(&b'/')));
    names
}

/// Every directory above the state dir must belong to root or this user
/// and be writable by no one else unless sticky (as /tmp is): otherwise
/// another user could move the state dir away and put a symlink there.
pub(super) fn check_ancestors(root: &Path) -> Result<(), StateError> {
    for dir in root.ancestors().skip(1) {
        let stat = nix::sys::stat::lstat(dir).map_err(io_at(dir))?;
        check_passable(root, dir, &stat)?;
    }
    Ok(())
}

fn on_procfs(dir: &OwnedFd) -> bool {
    nix::sys::statfs::fstatfs(dir).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC)
}

/// Checks that `given` (absolute) names an object no user but root and
/// this one can swap for another: every directory on the way belongs to
/// one of them and is writable by no one else unless sticky, every symlink
/// followed belongs to one of them, and the object itself, when its
/// directory is sticky and writable by others, belongs to one of them (a
/// missing one may not be in a directory others can write).
///
/// `owners` (the user a container's root is, for its own storage) count
/// as trusted too.
///
/// On procfs the kernel's own links are not followed: the last component
/// may be one (a namespace, a process's executable), whose process's
/// directory was checked like any other; one on the way is refused
/// (`/proc/self` and `/proc/thread-self` excepted).
pub(super) fn check_fixed(given: &Path, owners: &[u32]) -> Result<(), StateError> {
    let io = |at: &Path, errno: Errno| StateError::Io {
        path: at.to_path_buf(),
        source: std::io::Error::from(errno),
    };
    let replaceable = |at: &Path, why: String| StateError::Untrusted {
        path: given.to_path_buf(),
        why: format!(
            "another user could put something else there after the review: {} {why}",
            at.display()
        ),
    };
    let trusted = |uid: u32| uid == 0 || uid == euid() || owners.contains(&uid);
    let passable = |at: &Path, stat: &FileStat| -> Result<(), StateError> {
        let sticky = stat.st_mode & 0o1000 != 0;
        if !trusted(stat.st_uid) || (stat.st_mode & 0o022 != 0 && !sticky) {
            return Err(replaceable(
                at,
                format!(
                    "(uid {}, mode {:o}) is another user's to change",
                    stat.st_uid,
                    stat.st_mode & 0o7777
                ),
            ));
        }
        Ok(())
    };
    if !given.is_absolute() {
        return Err(io(given, Errno::EINVAL));
    }
    struct Entered {
        fd: OwnedFd,
        path: PathBuf,
        stat: FileStat,
    }
    let root = open("/", dir_flags(), Mode::empty()).map_err(|e| io(Path::new("/"), e))?;
    let root_stat = fstat(&root).map_err(|e| io(Path::new("/"), e))?;
    passable(Path::new("/"), &root_stat)?;
    let mut stack = vec![Entered {
        fd: root,
        path: PathBuf::from("/"),
        stat: root_stat,
    }];
    let mut pending: Vec<OsString> = components_reversed(given);
    let mut symlinks = 0;
    while let Some(name) = pending.pop() {
        let dir = stack.last().expect("the root is never popped");
        if name == ".." {
            if stack.len() > 1 {
                stack.pop();
            }
            continue;
        }
        let at = dir.path.join(&name);
        let last = pending.is_empty();
        let others_write = dir.stat.st_mode & 0o022 != 0;
        let stat = match fstatat(
            dir.fd.as_fd(),
            name.as_os_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(stat) => stat,
            Err(Errno::ENOENT) if last && !others_write => return Ok(()),
            Err(Errno::ENOENT) if last => {
                return Err(replaceable(&dir.path, "lets others make it".to_string()));
            }
            Err(e) => return Err(io(&at, e)),
        };
        if others_write && !trusted(stat.st_uid) {
            return Err(replaceable(
                &at,
                format!("(uid {}) may be moved by its owner", stat.st_uid),
            ));
        }
        if file_type(&stat) == SFlag::S_IFLNK {
            if !trusted(stat.st_uid) {
                return Err(replaceable(&at, format!("is a symlink of uid {}", stat.st_uid)));
            }
            if on_procfs(&dir.fd) {
                let plain = stack.len() == 2 && (name == "self" || name == "thread-self");
                if last {
                    return Ok(());
                }
                if !plain {
                    return Err(replaceable(
                        &at,
                        "is a link of the kernel's to another process's objects".to_string(),
                    ));
                }
            }
            symlinks += 1;
            if symlinks > MAX_SYMLINKS {
                return Err(io(&at, Errno::ELOOP));
            }
            let target = PathBuf::from(readlinkat(dir.fd.as_fd(), name.as_os_str()).map_err(|e| io(&at, e))?);
            if target.is_absolute() {
                stack.truncate(1);
            }
            pending.extend(components_reversed(&target));
            continue;
        }
        if last {
            return Ok(());
        }
        let fd = openat(dir.fd.as_fd(), name.as_os_str(), dir_flags(), Mode::empty()).map_err(|e| io(&at, e))?;
        let stat = fstat(&fd).map_err(|e| io(&at, e))?;
        passable(&at, &stat)?;
        stack.push(Entered { fd, path: at, stat });
    }
    Ok(())
}
