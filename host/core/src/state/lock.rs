//! One process at a time works on a step: it holds an exclusive `flock`
//! on `locks/<id>.lock` for as long as it does (the kernel drops the lock
//! when the process dies, however it dies). The holder writes its pid into
//! the file, so that a refusal can name it.

use std::io::{Read, Seek, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, Flock, FlockArg, OFlag};
use nix::sys::stat::{fstat, fstatat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

use super::StateError;

/// How often acquiring starts again when the lock file was replaced
/// between opening and locking it (a holder removed it as it finished).
const REPLACED_RETRIES: u32 = 16;

/// A step this process holds. Dropping it lets the step go; [`remove`]
/// also deletes the lock file, for a step that holds nothing any more.
///
/// [`remove`]: StepLock::remove
#[derive(Debug)]
pub struct StepLock {
    id: String,
    held: Option<Held>,
}

#[derive(Debug)]
struct Held {
    lock: Flock<std::fs::File>,
    steps: Arc<OwnedFd>,
    name: String,
}

/// The width a holder's pid is written in (trailing spaces, a newline).
const PID_WIDTH: usize = 10;

impl StepLock {
    /// A lock that holds nothing: for a dry run, which touches no state.
    pub fn planned(id: &str) -> StepLock {
        StepLock {
            id: id.to_string(),
            held: None,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether this process really holds the step (not a dry run's).
    pub fn is_held(&self) -> bool {
        self.held.is_some()
    }

    pub(super) fn acquire(steps: Arc<OwnedFd>, steps_path: &Path, id: &str) -> Result<StepLock, StateError> {
        let name = format!("{id}.lock");
        let path = steps_path.join(&name);
        let io = |path: &PathBuf| {
            let path = path.clone();
            move |errno: Errno| StateError::Io {
                path,
                source: std::io::Error::from(errno),
            }
        };
        for _ in 0..REPLACED_RETRIES {
            let (fd, stat) = open_lock_file(steps.as_fd(), &name, &path)?;
            // The holder writes its pid in place: a hard link planted here
            // would have that written into the file it links to.
            if stat.st_nlink != 1 {
                return Err(StateError::Corrupt {
                    path,
                    message: format!("a lock file with {} links, not one the host made", stat.st_nlink),
                });
            }
            let lock = match Flock::lock(std::fs::File::from(fd), FlockArg::LockExclusiveNonblock) {
                Ok(lock) => lock,
                Err((mut file, Errno::EWOULDBLOCK)) => {
                    return Err(StateError::Held {
                        id: id.to_string(),
                        pid: holder(&mut file),
                    })
                }
                Err((_, e)) => return Err(io(&path)(e)),
            };
            // A holder that finished removed the file after we opened it:
            // our lock is on a file nobody else will open again.
            match fstatat(steps.as_fd(), name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(now) if now.st_ino == stat.st_ino && now.st_dev == stat.st_dev => {}
                Ok(_) | Err(Errno::ENOENT) => continue,
                Err(e) => return Err(io(&path)(e)),
            }
            let mut lock = lock;
            // The pid written over what is there, padded to a width no
            // earlier holder's wrote past (a pid has at most 7 digits), so
            // the file need not be truncated first: a truncate is a
            // journalled operation on ext4, at every step.
            let pid = format!("{:<PID_WIDTH$}\n", std::process::id());
            let emptied = if stat.st_size > pid.len() as i64 {
                lock.set_len(0)
            } else {
                Ok(())
            };
            emptied
                .and_then(|()| lock.rewind())
                .and_then(|()| lock.write_all(pid.as_bytes()))
                .map_err(|e| StateError::Io {
                    path: path.clone(),
                    source: e,
                })?;
            return Ok(StepLock {
                id: id.to_string(),
                held: Some(Held { lock, steps, name }),
            });
        }
        Err(StateError::Io {
            path,
            source: std::io::Error::other("the lock file kept being replaced"),
        })
    }

    /// Lets the step go and deletes its lock file (while still holding
    /// it, so no other process can be waiting on the deleted file). The
    /// step is let go whether or not the file could be deleted.
    pub fn remove(mut self) -> Result<(), StateError> {
        let Some(held) = self.held.take() else {
            return Ok(());
        };
        let removed = unlinkat(held.steps.as_fd(), held.name.as_str(), UnlinkatFlags::NoRemoveDir);
        drop(held.lock);
        match removed {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(StateError::Io {
                path: std::path::Path::new("locks").join(&held.name),
                source: std::io::Error::from(e),
            }),
        }
    }
}

/// The pid a lock file names, as well as it can be read.
fn holder(file: &mut std::fs::File) -> String {
    let mut text = String::new();
    let read = file.rewind().and_then(|()| file.take(32).read_to_string(&mut text));
    match read {
        Ok(_) if !text.trim().is_empty() && text.trim().bytes().all(|b| b.is_ascii_digit()) => text.trim().to_string(),
        _ => "(unknown: it has not written its pid yet)".to_string(),
    }
}

/// Opens (making it if missing) lock file `name` in `dir`, whose path is
/// `path`, without following a symlink or blocking; a lock that is not a
/// regular file (a FIFO, a directory) is refused.
pub(super) fn open_lock_file(
    dir: std::os::fd::BorrowedFd<'_>,
    name: &str,
    path: &Path,
) -> Result<(OwnedFd, nix::sys::stat::FileStat), StateError> {
    let io = |errno: Errno| StateError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::from(errno),
    };
    let fd = openat(
        dir,
        name,
        OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(io)?;
    let stat = fstat(&fd).map_err(io)?;
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(StateError::Corrupt {
            path: path.to_path_buf(),
            message: "a lock that is not a regular file".to_string(),
        });
    }
    Ok((fd, stat))
}

#[cfg(test)]
mod tests {
    use super::super::StateDir;

    #[test]
    fn a_step_is_held_by_one_lock_at_a_time_and_names_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let first = state.lock("s").unwrap();
        assert!(first.is_held());
        let err = state.lock("s").unwrap_err().to_string();
        assert_eq!(err, format!("step s is held by pid {}", std::process::id()));
        let other = state.lock("t").unwrap();
        drop(first);
        let again = state.lock("s").unwrap();
        again.remove().unwrap();
        assert!(!dir.path().join("locks/s.lock").exists());
        assert!(state.lock("s").is_ok());
        drop(other);
    }

    #[test]
    fn a_lock_that_is_not_a_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("locks/s.lock")).unwrap();
        assert!(state.lock("s").is_err());
    }

    /// Regression: a hard link planted at the lock's name had the
    /// holder's pid written into the file it links to.
    #[test]
    fn a_hard_linked_lock_is_refused_and_its_target_kept() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::fs::hard_link(&victim, dir.path().join("locks/s.lock")).unwrap();
        let err = state.lock("s").unwrap_err().to_string();
        assert!(err.contains("2 links"), "{err}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    }
}
