//! Files of the state dir reached through directory descriptors: a
//! directory is opened once, without following a symlink, and checked;
//! everything in it is created exclusively, written through a fresh
//! temporary name and a rename, and read only as a bounded regular file.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, renameat2, OFlag, RenameFlags};
use nix::sys::stat::{fstat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

use super::StateError;

pub(super) fn io_at(path: &Path) -> impl FnOnce(Errno) -> StateError + '_ {
    move |errno| StateError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::from(errno),
    }
}

/// One directory of the state dir, open.
#[derive(Debug, Clone)]
pub(super) struct Dir {
    pub(super) fd: Arc<OwnedFd>,
    pub(super) path: PathBuf,
}

impl Dir {
    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Refuses a directory another user could change under us.
pub(super) fn check_trusted(path: &Path, stat: &FileStat) -> Result<(), StateError> {
    let euid = nix::unistd::geteuid().as_raw();
    let untrusted = |why: String| {
        Err(StateError::Untrusted {
            path: path.to_path_buf(),
            why,
        })
    };
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR {
        return untrusted("not a directory".to_string());
    }
    if stat.st_uid != euid {
        return untrusted(format!("owned by uid {}, not {euid}", stat.st_uid));
    }
    if stat.st_mode & 0o022 != 0 {
        return untrusted(format!("mode {:o} lets others write", stat.st_mode & 0o7777));
    }
    Ok(())
}

/// How the state dir's directories are made: ours to write, anyone's to
/// pass through (a container in a user namespace reaches its rootfs and
/// bundle files under them), no one else's to list.
pub(super) const DIR_MODE: u32 = 0o711;

/// Opens `name` under `parent` as [`open_subdir`] does without creating
/// it; `None` when there is nothing by that name.
pub(super) fn open_existing_subdir(parent: &Dir, name: &str) -> Result<Option<Dir>, StateError> {
    match open_subdir(parent, name, false) {
        Ok(dir) => Ok(Some(dir)),
        Err(StateError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Opens (creating it, mode 0711) directory `name` of `parent`, without
/// following a symlink, and checks it is ours.
pub(super) fn open_subdir(parent: &Dir, name: &str, create: bool) -> Result<Dir, StateError> {
    let path = parent.path.join(name);
    if create {
        match mkdirat(parent.fd(), name, Mode::from_bits_truncate(DIR_MODE)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(io_at(&path)(e)),
        }
    }
    let fd = openat(
        parent.fd(),
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::ELOOP | Errno::ENOTDIR => StateError::Untrusted {
            path: path.clone(),
            why: "not a directory (a symlink?)".to_string(),
        },
        e => io_at(&path)(e),
    })?;
    check_trusted(&path, &fstat(&fd).map_err(io_at(&path))?)?;
    Ok(Dir { fd: Arc::new(fd), path })
}

/// Unique names for temporary files within this process.
pub(super) static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// How many taken temporary names are passed over before giving up.
const TMP_ATTEMPTS: u32 = 64;

/// Writes `name` in `dir` through a fresh temporary file created
/// exclusively (never through a planted symlink) and a rename.
pub(super) fn write_atomically(
    dir: BorrowedFd<'_>,
    dir_path: &Path,
    name: &str,
    parts: &[&[u8]],
    mode: u32,
    sync: bool,
) -> Result<(), StateError> {
    place_atomically(dir, dir_path, name, parts, mode, sync, Placing::Replace, None).map(drop)
}

/// A file's mode and owner, kept when it is written again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ownership {
    /// The permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// [`write_atomically`], the new file given exactly `ownership` (the
/// process's umask does not apply), fsynced.
pub(super) fn write_atomically_as(
    dir: BorrowedFd<'_>,
    dir_path: &Path,
    name: &str,
    bytes: &[u8],
    ownership: Ownership,
) -> Result<(), StateError> {
    place_atomically(
        dir,
        dir_path,
        name,
        &[bytes],
        0o600,
        true,
        Placing::Replace,
        Some(ownership),
    )
    .map(drop)
}

/// Creates `name` in `dir`, with its content, as one step: a fresh
/// temporary file renamed without replacing anything. `false` (and nothing
/// written) when `name` exists already.
pub(super) fn create_atomically(
    dir: BorrowedFd<'_>,
    dir_path: &Path,
    name: &str,
    content: &[u8],
    mode: u32,
    sync: bool,
) -> Result<bool, StateError> {
    place_atomically(dir, dir_path, name, &[content], mode, sync, Placing::Create, None)
}

/// Whether placing a file may replace one of its name.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Placing {
    Replace,
    Create,
}

/// Writes a temporary file and renames it to `name`; `Ok(false)` when
/// `Placing::Create` found `name` taken. With `ownership`, the file gets
/// exactly that mode and owner before it is renamed.
#[allow(clippy::too_many_arguments)]
fn place_atomically(
    dir: BorrowedFd<'_>,
    dir_path: &Path,
    name: &str,
    parts: &[&[u8]],
    mode: u32,
    sync: bool,
    placing: Placing,
    ownership: Option<Ownership>,
) -> Result<bool, StateError> {
    // A name left by a killed process whose pid this one reuses is passed
    // over, not an error.
    let mut attempt = 0;
    let (tmp, tmp_path, fd) = loop {
        let tmp = format!(
            ".{name}.{}.{}.tmp",
            std::process::id(),
            TMP_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let tmp_path = dir_path.join(&tmp);
        match openat(
            dir,
            tmp.as_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode),
        ) {
            Ok(fd) => break (tmp, tmp_path, fd),
            Err(Errno::EEXIST) if attempt < TMP_ATTEMPTS => attempt += 1,
            Err(e) => return Err(io_at(&tmp_path)(e)),
        }
    };
    let mut file = File::from(fd);
    let owned = |file: &File| -> std::io::Result<()> {
        if let Some(o) = ownership {
            nix::unistd::fchown(
                file,
                Some(nix::unistd::Uid::from_raw(o.uid)),
                Some(nix::unistd::Gid::from_raw(o.gid)),
            )?;
            nix::sys::stat::fchmod(file, Mode::from_bits_truncate(o.mode))?;
        }
        Ok(())
    };
    let written = owned(&file)
        .and_then(|()| parts.iter().try_for_each(|part| file.write_all(part)))
        .and_then(|()| if sync { file.sync_all() } else { Ok(()) })
        .map_err(|e| StateError::Io {
            path: tmp_path.clone(),
            source: e,
        })
        .and_then(|()| {
            let renamed = match placing {
                Placing::Replace => renameat(dir, tmp.as_str(), dir, name),
                Placing::Create => renameat2(dir, tmp.as_str(), dir, name, RenameFlags::RENAME_NOREPLACE),
            };
            match renamed {
                Ok(()) => Ok(true),
                Err(Errno::EEXIST) if placing == Placing::Create => Ok(false),
                Err(e) => Err(io_at(&dir_path.join(name))(e)),
            }
        });
    if !matches!(written, Ok(true)) {
        let _ = unlinkat(dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
    }
    written
}

/// Opens regular file `name` of `dir` with `flags` (and `mode` when it is
/// created), never through a symlink and never waiting (a FIFO is
/// refused, not blocked on); checked on the opened descriptor.
pub(super) fn open_regular_at(
    dir: BorrowedFd<'_>,
    path: &Path,
    name: &str,
    flags: OFlag,
    mode: u32,
) -> Result<(OwnedFd, FileStat), StateError> {
    let fd = openat(
        dir,
        name,
        flags | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(mode),
    )
    .map_err(|e| match e {
        Errno::ELOOP => StateError::Untrusted {
            path: path.to_path_buf(),
            why: "a symlink".to_string(),
        },
        e => io_at(path)(e),
    })?;
    let stat = fstat(&fd).map_err(io_at(path))?;
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(StateError::Untrusted {
            path: path.to_path_buf(),
            why: "not a regular file".to_string(),
        });
    }
    Ok((fd, stat))
}

/// Reads regular file `name` of `dir`, refusing a symlink, a FIFO or
/// device, and anything over `max` bytes; `None` when it does not exist.
pub(super) fn read_bounded(
    dir: BorrowedFd<'_>,
    path: &Path,
    name: &str,
    max: u64,
) -> Result<Option<Vec<u8>>, StateError> {
    let fd = match openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(None),
        Err(Errno::ELOOP) => {
            return Err(StateError::Corrupt {
                path: path.to_path_buf(),
                message: "a symlink, not a file the host wrote".to_string(),
            })
        }
        Err(e) => return Err(io_at(path)(e)),
    };
    let stat = fstat(&fd).map_err(io_at(path))?;
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(StateError::Corrupt {
            path: path.to_path_buf(),
            message: "not a regular file".to_string(),
        });
    }
    let mut bytes = Vec::new();
    File::from(fd)
        .take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| StateError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
    if bytes.len() as u64 > max {
        return Err(StateError::Corrupt {
            path: path.to_path_buf(),
            message: format!("more than {max} bytes"),
        });
    }
    Ok(Some(bytes))
}

/// Removes regular file `name` of `dir` if it is there.
pub(super) fn remove_file_at(dir: BorrowedFd<'_>, path: &Path, name: &str) -> Result<(), StateError> {
    match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(io_at(&path.join(name))(e)),
    }
}

/// The pid in the name of a temporary file [`write_atomically`] made
/// (`.<name>.<pid>.<n>.tmp`): a sweep removes those whose process is gone.
pub fn temporary_owner(file_name: &str) -> Option<u32> {
    let inner = file_name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (rest, n) = inner.rsplit_once('.')?;
    n.parse::<u64>().ok()?;
    let (_, pid) = rest.rsplit_once('.')?;
    pid.parse().ok()
}
