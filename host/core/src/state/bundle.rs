//! A step's bundle directory: what `specwright run` writes for the step,
//! removed file by file without following anything.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::unistd::{unlinkat, UnlinkatFlags};

use super::at::{check_trusted, io_at, open_regular_at, write_atomically, write_atomically_as, Dir, Ownership};
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
        write_atomically(self.dir.fd(), &self.dir.path, name, &[bytes], 0o644, false)?;
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

/// A bundle directory an operator names (`spec --bundle DIR`), reached
/// and checked as the state dir is: no other user's directory or symlink
/// on the way, and the directory itself ours and writable by no one else,
/// so that no one can send config.json elsewhere or change it before the
/// runtime reads it.
#[derive(Debug)]
pub struct GivenBundle {
    dir: Dir,
    /// The directories opening it made, outermost first.
    created: Vec<PathBuf>,
    /// Who owns the directory.
    owner: u32,
}

/// An engine's config.json: its bytes, mode and owner.
#[derive(Debug)]
pub struct EngineConfig {
    pub bytes: Vec<u8>,
    pub ownership: Ownership,
}

/// How the directories of a given bundle are made (as `mkdir -p` would).
const GIVEN_BUNDLE_MODE: u32 = 0o755;

impl GivenBundle {
    /// Opens (creating what is missing) the bundle directory at `given`.
    pub fn open(given: &Path) -> Result<GivenBundle, StateError> {
        let given = std::path::absolute(given).map_err(|e| StateError::Io {
            path: given.to_path_buf(),
            source: e,
        })?;
        let mut created = Vec::new();
        let opened =
            super::walk::open_trusted_dir(&given, Some(GIVEN_BUNDLE_MODE), &mut created).and_then(|(fd, real)| {
                let stat = nix::sys::stat::fstat(&fd).map_err(io_at(&real))?;
                check_trusted(&real, &stat)?;
                Ok(Dir {
                    fd: std::sync::Arc::new(fd),
                    path: real,
                })
            });
        match opened {
            Ok(dir) => Ok(GivenBundle {
                dir,
                created,
                owner: nix::unistd::geteuid().as_raw(),
            }),
            Err(e) => {
                remove_created(&created);
                Err(e)
            }
        }
    }

    /// Opens the bundle directory an engine made at `given`, reached as
    /// [`GivenBundle::open`] reaches one (nothing is made): a directory no
    /// one but its owner may write. Its owner is this user, or another
    /// one the caller must vouch for ([`GivenBundle::owner`]): podman
    /// hands a user-namespaced container's bundle to the user it maps to
    /// the container's root.
    pub fn open_existing(given: &Path) -> Result<GivenBundle, StateError> {
        let given = std::path::absolute(given).map_err(|e| StateError::Io {
            path: given.to_path_buf(),
            source: e,
        })?;
        let mut created = Vec::new();
        let (fd, real) = super::walk::open_trusted_dir(&given, None, &mut created)?;
        let stat = nix::sys::stat::fstat(&fd).map_err(io_at(&real))?;
        let euid = nix::unistd::geteuid().as_raw();
        if stat.st_uid == euid {
            check_trusted(&real, &stat)?;
        } else if stat.st_mode & 0o022 != 0
            || nix::sys::stat::SFlag::from_bits_truncate(stat.st_mode) & nix::sys::stat::SFlag::S_IFMT
                != nix::sys::stat::SFlag::S_IFDIR
        {
            return Err(StateError::Untrusted {
                path: real,
                why: format!(
                    "owned by uid {} and mode {:o}: others may write it",
                    stat.st_uid,
                    stat.st_mode & 0o7777
                ),
            });
        }
        Ok(GivenBundle {
            dir: Dir {
                fd: std::sync::Arc::new(fd),
                path: real,
            },
            created,
            owner: stat.st_uid,
        })
    }

    /// Who owns the directory (see [`GivenBundle::open_existing`]).
    pub fn owner(&self) -> u32 {
        self.owner
    }

    pub fn path(&self) -> &Path {
        &self.dir.path
    }

    /// Reads the bundle's config.json as an engine wrote it: opened
    /// without following a symlink and without blocking (a FIFO is
    /// refused, not waited on), a regular file of at most `max` bytes;
    /// with its mode and owner, to be kept when it is written back.
    pub fn read_config(&self, max: u64) -> Result<EngineConfig, StateError> {
        use std::io::Read;
        let path = self.dir.path.join("config.json");
        let (fd, stat) = open_regular_at(self.dir.fd(), &path, "config.json", nix::fcntl::OFlag::O_RDONLY, 0)?;
        let file = std::fs::File::from(fd);
        let mut bytes = Vec::new();
        file.take(max + 1).read_to_end(&mut bytes).map_err(|e| StateError::Io {
            path: path.clone(),
            source: e,
        })?;
        if bytes.len() as u64 > max {
            return Err(StateError::Corrupt {
                path,
                message: format!("more than {max} bytes"),
            });
        }
        Ok(EngineConfig {
            bytes,
            ownership: Ownership {
                mode: stat.st_mode & 0o7777,
                uid: stat.st_uid,
                gid: stat.st_gid,
            },
        })
    }

    /// Writes config.json back (atomically, fsynced) with the mode and
    /// owner the engine gave it.
    pub fn write_config_as(&self, bytes: &[u8], ownership: Ownership) -> Result<PathBuf, StateError> {
        write_atomically_as(self.dir.fd(), &self.dir.path, "config.json", bytes, ownership)?;
        Ok(self.dir.path.join("config.json"))
    }

    /// Writes config.json through a fresh, exclusively created temporary
    /// file and a rename, fsynced: a reader sees the old file or the new.
    pub fn write_config(&self, bytes: &[u8]) -> Result<PathBuf, StateError> {
        write_atomically(self.dir.fd(), &self.dir.path, "config.json", &[bytes], 0o644, true)?;
        Ok(self.dir.path.join("config.json"))
    }

    /// Removes the directories opening it made (a step that failed): only
    /// empty ones, deepest first.
    pub fn remove_created(self) {
        remove_created(&self.created);
    }
}

fn remove_created(created: &[PathBuf]) {
    for dir in created.iter().rev() {
        let _ = std::fs::remove_dir(dir);
    }
}
