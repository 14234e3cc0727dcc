//! A step's bundle directory: what `specwright run` writes for the step,
//! removed file by file without following anything.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::unistd::{unlinkat, UnlinkatFlags};

use super::at::{io_at, write_atomically, Dir};
use super::StateError;

/// The most entries of a bundle `release` removes.
const MAX_BUNDLE_FILES: usize = 64;

/// A step's bundle directory, open.
#[derive(Debug)]
pub struct Bundle {
    pub(super) dir: Dir,
}

impl Bundle {
    pub fn path(&self) -> &Path {
        &self.dir.path
    }

    /// Writes file `name` of the bundle atomically, readable by the
    /// container (resolv.conf and hosts are bound into it).
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<PathBuf, StateError> {
        write_atomically(self.dir.fd(), &self.dir.path, name, bytes, 0o644, false)?;
        Ok(self.dir.path.join(name))
    }

    pub(super) fn remove_files(&self) -> Result<(), StateError> {
        let listing = format!("/proc/self/fd/{}", self.dir.fd().as_raw_fd());
        let io = |e| StateError::Io {
            path: self.dir.path.clone(),
            source: e,
        };
        let names: Vec<_> = std::fs::read_dir(listing)
            .map_err(io)?
            .take(MAX_BUNDLE_FILES + 1)
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(io)?;
        if names.len() > MAX_BUNDLE_FILES {
            return Err(StateError::Corrupt {
                path: self.dir.path.clone(),
                message: format!("more than {MAX_BUNDLE_FILES} entries; not a bundle the host wrote"),
            });
        }
        for name in names {
            let path = self.dir.path.join(&name);
            // unlinkat never follows a symlink, and fails on a directory.
            match unlinkat(self.dir.fd(), name.as_os_str(), UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(io_at(&path)(e)),
            }
        }
        Ok(())
    }
}
