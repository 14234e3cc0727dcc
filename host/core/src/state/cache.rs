//! The compile cache's directory (`<state>/cache/`), used by descriptor
//! like the rest of the state dir: precompiled policies are native code
//! that is mapped and run, so an entry is opened without following a
//! symlink, checked on its descriptor (a regular file of this user's that
//! no one else may write), and replaced only by a rename.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{openat, Flock, FlockArg, OFlag};
use nix::sys::stat::{fstat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

use super::at::{io_at, write_atomically, Dir};
use super::{temporary_owner, StateError};

/// Whether the file open as `fd` lives on a file system whose inode
/// numbers and change times this kernel keeps (ext2/3/4, XFS, Btrfs, F2FS,
/// tmpfs), so that a change to the file always gives it another change
/// time. Images (squashfs, erofs, ISO 9660) and network or FUSE file
/// systems take them from elsewhere: what is remembered by a file's
/// identity is not trusted there.
pub fn identity_kept_locally(fd: impl std::os::fd::AsFd) -> bool {
    use nix::sys::statfs::{
        fstatfs, BTRFS_SUPER_MAGIC, EXT4_SUPER_MAGIC, F2FS_SUPER_MAGIC, TMPFS_MAGIC, XFS_SUPER_MAGIC,
    };
    fstatfs(fd).is_ok_and(|fs| {
        [
            EXT4_SUPER_MAGIC,
            XFS_SUPER_MAGIC,
            BTRFS_SUPER_MAGIC,
            F2FS_SUPER_MAGIC,
            TMPFS_MAGIC,
        ]
        .contains(&fs.filesystem_type())
    })
}

/// The compile cache's directory, open.
#[derive(Debug, Clone)]
pub struct CacheDir {
    pub(super) dir: Dir,
}

/// A cache entry, mapped read-only (not copied: a precompiled policy is
/// megabytes), and the open file it is (for mapping the very file that was
/// checked, through `/proc/self/fd`).
#[derive(Debug)]
pub struct CacheEntry {
    /// The mapping and its length; `None` for an empty file.
    map: Option<(std::ptr::NonNull<std::ffi::c_void>, std::num::NonZeroUsize)>,
    file: File,
    stat: nix::sys::stat::FileStat,
}

// SAFETY: the mapping is private and read-only, and only ever read through
// `bytes`; nothing in it is shared mutable state.
unsafe impl Send for CacheEntry {}
// SAFETY: as for `Send`: shared references only read the mapping.
unsafe impl Sync for CacheEntry {}

impl CacheEntry {
    /// A path that names the opened entry itself, for as long as it lives.
    pub fn fd_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }

    /// What its descriptor said of it when it was opened (its identity:
    /// device, inode, size, modification and change times).
    pub fn stat(&self) -> &nix::sys::stat::FileStat {
        &self.stat
    }

    /// Whether that identity is this kernel's to keep
    /// ([`identity_kept_locally`]; asked of the file system each time).
    pub fn identity_kept_locally(&self) -> bool {
        identity_kept_locally(&self.file)
    }

    /// The entry's bytes.
    pub fn bytes(&self) -> &[u8] {
        match self.map {
            // SAFETY: `ptr` maps `len` bytes of the entry, readable, for as
            // long as `self` lives (unmapped on drop); the file is a regular
            // file of this user's that no one else may write, and entries
            // are only replaced by a rename, never written in place, so the
            // bytes do not change under the slice (wasmtime maps the same
            // file on the same terms).
            Some((ptr, len)) => unsafe { std::slice::from_raw_parts(ptr.as_ptr().cast::<u8>(), len.get()) },
            None => &[],
        }
    }
}

impl Drop for CacheEntry {
    fn drop(&mut self) {
        if let Some((ptr, len)) = self.map.take() {
            // SAFETY: `ptr` and `len` are the mapping made in `read_entry`,
            // and no slice of it outlives `self`.
            let _ = unsafe { nix::sys::mman::munmap(ptr, len.get()) };
        }
    }
}

/// This process compiling one entry: an exclusive `flock` on
/// `<entry>.lock`, let go when dropped (or when the process dies, however
/// it dies). Other processes that miss the same entry wait for it, then
/// read what it wrote.
#[derive(Debug)]
pub struct CompileLock {
    _held: Option<Flock<File>>,
}

impl CompileLock {
    /// A lock that holds nothing: for a dry run, which compiles into no
    /// cache.
    pub fn planned() -> CompileLock {
        CompileLock { _held: None }
    }
}

/// The longest pause between two tries for a compile lock.
const MAX_LOCK_PAUSE: Duration = Duration::from_millis(50);

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
        let file = File::from(fd);
        let map = match std::num::NonZeroUsize::new(stat.st_size as usize) {
            None => None,
            Some(len) => {
                // SAFETY: a private, read-only mapping of a file this
                // process holds open; nothing else in the process uses the
                // range it returns.
                let ptr = unsafe {
                    nix::sys::mman::mmap(
                        None,
                        len,
                        nix::sys::mman::ProtFlags::PROT_READ,
                        nix::sys::mman::MapFlags::MAP_PRIVATE,
                        &file,
                        0,
                    )
                }
                .map_err(io_at(&path))?;
                Some((ptr, len))
            }
        };
        Ok(Some(CacheEntry { map, file, stat }))
    }

    /// Writes entry `name` as `parts`, one after another, mode 0600: an
    /// exclusively created temporary file, fsynced, then a rename.
    pub fn write_entry(&self, name: &str, parts: &[&[u8]]) -> Result<(), StateError> {
        write_atomically(self.dir.fd(), &self.dir.path, name, parts, 0o600, true)
    }

    /// Takes the lock for compiling entry `name`, waiting at most `wait`
    /// for a process that holds it ([`StateError::CompileBusy`] past
    /// that), and not at all once this process is asked to stop
    /// ([`StateError::CompileWaitStopped`]). The lock file is made if missing and kept (removing it could
    /// let two processes hold locks on two files of one name).
    pub fn lock_entry(&self, name: &str, wait: Duration) -> Result<CompileLock, StateError> {
        let lock_name = format!("{name}.lock");
        let path = self.dir.path.join(&lock_name);
        let (fd, _) = super::lock::open_lock_file(self.dir.fd(), &lock_name, &path)?;
        let start = Instant::now();
        let mut pause = Duration::from_millis(2);
        let mut file = File::from(fd);
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(held) => return Ok(CompileLock { _held: Some(held) }),
                Err((back, Errno::EWOULDBLOCK)) => {
                    let waited = start.elapsed();
                    if waited >= wait {
                        return Err(StateError::CompileBusy { path, waited });
                    }
                    if let Some(signal) = crate::interrupt::requested() {
                        return Err(StateError::CompileWaitStopped { path, signal });
                    }
                    std::thread::sleep(pause.min(wait - waited));
                    pause = (pause * 2).min(MAX_LOCK_PAUSE);
                    file = back;
                }
                Err((_, e)) => return Err(io_at(&path)(e)),
            }
        }
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
