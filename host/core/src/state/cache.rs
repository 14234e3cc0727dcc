//! The compile cache's directory (`<state>/cache/`), used by descriptor
//! like the rest of the state dir: precompiled policies are native code
//! that is mapped and run, so an entry is opened without following a
//! symlink, checked on its descriptor (a regular file of this user's that
//! no one else may write), and replaced only by a rename.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

use super::at::{io_at, write_atomically, Dir};
use super::{temporary_owner, StateError};

/// The compile cache's directory, open.
#[derive(Debug, Clone)]
pub struct CacheDir {
    pub(super) dir: Dir,
}

/// A cache entry, read: its bytes, and the open file they came from (for
/// mapping the very file that was checked, through `/proc/self/fd`).
#[derive(Debug)]
pub struct CacheEntry {
    pub bytes: Vec<u8>,
    file: File,
}

impl CacheEntry {
    /// A path that names the opened entry itself, for as long as it lives.
    pub fn fd_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }
}

impl CacheDir {
    pub fn path(&self) -> &Path {
        &self.dir.path
    }

    /// Entry `name`, at most `max` bytes: `None` when it is missing, or is
    /// not a regular file of this user's that no one else may write (it
    /// is compiled over, never used).
    pub fn read_entry(&self, name: &str, max: u64) -> Result<Option<CacheEntry>, StateError> {
        let path = self.dir.path.join(name);
        let fd: OwnedFd = match openat(
            self.dir.fd(),
            name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT | Errno::ELOOP) => return Ok(None),
            Err(e) => return Err(io_at(&path)(e)),
        };
        let stat = fstat(&fd).map_err(io_at(&path))?;
        let regular = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG;
        let ours = stat.st_uid == nix::unistd::geteuid().as_raw() && stat.st_mode & 0o022 == 0;
        if !regular || !ours || stat.st_size < 0 || stat.st_size as u64 > max {
            return Ok(None);
        }
        let mut file = File::from(fd);
        let mut bytes = Vec::with_capacity(stat.st_size as usize);
        (&mut file)
            .take(max)
            .read_to_end(&mut bytes)
            .map_err(|source| StateError::Io { path, source })?;
        Ok(Some(CacheEntry { bytes, file }))
    }

    /// Writes entry `name` as `parts`, one after another, mode 0600: an
    /// exclusively created temporary file, fsynced, then a rename.
    pub fn write_entry(&self, name: &str, parts: &[&[u8]]) -> Result<(), StateError> {
        write_atomically(self.dir.fd(), &self.dir.path, name, parts, 0o600, true)
    }

    /// Removes temporary files of compiles whose process is gone (killed
    /// while writing its entry).
    pub fn sweep_abandoned(&self) -> Result<(), StateError> {
        let listing = format!("/proc/self/fd/{}", self.dir.fd().as_raw_fd());
        let io = |source| StateError::Io {
            path: self.dir.path.clone(),
            source,
        };
        for entry in std::fs::read_dir(listing).map_err(io)? {
            let name = entry.map_err(io)?.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(pid) = temporary_owner(name) else { continue };
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                match unlinkat(self.dir.fd(), name, UnlinkatFlags::NoRemoveDir) {
                    Ok(()) | Err(Errno::ENOENT) => {}
                    Err(e) => return Err(io_at(&self.dir.path.join(name))(e)),
                }
            }
        }
        Ok(())
    }
}
