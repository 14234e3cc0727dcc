//! The state directory itself, opened once and used through descriptors.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, OFlag};
use nix::sys::stat::{fstat, fstatat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

use super::lock::StepLock;
use super::record::{is_plain_name, StepRecord};
use super::StateError;

/// The default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/specwright";

/// The largest step record the host reads: a full record (the most
/// mountpoints a step may hold) is far smaller.
const MAX_RECORD_BYTES: u64 = 1 << 20;

/// The largest file of a bundle `release` looks at.
const MAX_BUNDLE_FILES: usize = 64;

fn io_at(path: &Path) -> impl FnOnce(Errno) -> StateError + '_ {
    move |errno| StateError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::from(errno),
    }
}

/// Every path built from a step id goes through here: an id from a
/// command line or a file name in `steps/` is never trusted to stay inside
/// the state directory.
pub(crate) fn checked_id(id: &str) -> Result<&str, StateError> {
    if specwright_core::request::is_valid_id(id) {
        Ok(id)
    } else {
        Err(StateError::BadId { id: id.to_string() })
    }
}

/// One directory of the state dir, open.
#[derive(Debug, Clone)]
struct Dir {
    fd: Arc<OwnedFd>,
    path: PathBuf,
}

impl Dir {
    fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[derive(Debug, Clone)]
pub struct StateDir {
    /// The directory's real path (symlinks resolved once, when opened).
    root: PathBuf,
    /// None for a state dir that is only planned (a dry run opens nothing).
    open: Option<Open>,
}

#[derive(Debug, Clone)]
struct Open {
    root: Dir,
    mounts: Dir,
    steps: Dir,
    locks: Dir,
}

/// Refuses a directory another user could change under us.
fn check_trusted(path: &Path, stat: &FileStat) -> Result<(), StateError> {
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

/// Every directory above the state dir must belong to root or this user
/// and be writable by no one else unless sticky (as /tmp is): otherwise
/// another user could move the state dir away and put a symlink there.
fn check_ancestors(root: &Path) -> Result<(), StateError> {
    let euid = nix::unistd::geteuid().as_raw();
    for dir in root.ancestors().skip(1) {
        let stat = nix::sys::stat::lstat(dir).map_err(io_at(dir))?;
        let sticky = stat.st_mode & 0o1000 != 0;
        let owner_ok = stat.st_uid == 0 || stat.st_uid == euid;
        if !owner_ok || (stat.st_mode & 0o022 != 0 && !sticky) {
            return Err(StateError::Untrusted {
                path: root.to_path_buf(),
                why: format!(
                    "{} (uid {}, mode {:o}) lets another user replace it",
                    dir.display(),
                    stat.st_uid,
                    stat.st_mode & 0o7777
                ),
            });
        }
    }
    Ok(())
}

/// How the state dir's directories are made: ours to write, anyone's to
/// pass through (a container in a user namespace reaches its rootfs and
/// bundle files under them), no one else's to list.
const DIR_MODE: u32 = 0o711;

/// Opens (creating it, mode 0711) directory `name` of `parent`, without
/// following a symlink, and checks it is ours.
fn open_subdir(parent: &Dir, name: &str, create: bool) -> Result<Dir, StateError> {
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
static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// How many taken temporary names are passed over before giving up.
const TMP_ATTEMPTS: u32 = 64;

/// Writes `name` in `dir` through a fresh temporary file created
/// exclusively (never through a planted symlink) and a rename.
fn write_atomically(
    dir: BorrowedFd<'_>,
    dir_path: &Path,
    name: &str,
    bytes: &[u8],
    mode: u32,
    sync: bool,
) -> Result<(), StateError> {
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
    let written = file
        .write_all(bytes)
        .and_then(|()| if sync { file.sync_all() } else { Ok(()) })
        .map_err(|e| StateError::Io {
            path: tmp_path.clone(),
            source: e,
        })
        .and_then(|()| renameat(dir, tmp.as_str(), dir, name).map_err(io_at(&dir_path.join(name))));
    if written.is_err() {
        let _ = unlinkat(dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
    }
    written
}

/// Reads regular file `name` of `dir`, refusing a symlink, a FIFO or
/// device, and anything over `max` bytes; `None` when it does not exist.
fn read_bounded(dir: BorrowedFd<'_>, path: &Path, name: &str, max: u64) -> Result<Option<Vec<u8>>, StateError> {
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
fn remove_file_at(dir: BorrowedFd<'_>, path: &Path, name: &str) -> Result<(), StateError> {
    match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(io_at(&path.join(name))(e)),
    }
}

impl StateDir {
    /// Opens (creating if needed, mode 0711) the state directory at `root`
    /// and checks that no other user can change it.
    pub fn open(root: &Path) -> Result<StateDir, StateError> {
        let given = std::path::absolute(root).map_err(|e| StateError::Io {
            path: root.to_path_buf(),
            source: e,
        })?;
        let (fd, real) = super::walk::open_trusted_dir(&given, DIR_MODE)?;
        check_trusted(&real, &fstat(&fd).map_err(io_at(&real))?)?;
        check_ancestors(&real)?;
        let root_dir = Dir {
            fd: Arc::new(fd),
            path: real.clone(),
        };
        let mounts = open_subdir(&root_dir, "mounts", true)?;
        let steps = open_subdir(&root_dir, "steps", true)?;
        let locks = open_subdir(&root_dir, "locks", true)?;
        Ok(StateDir {
            root: real,
            open: Some(Open {
                root: root_dir,
                mounts,
                steps,
                locks,
            }),
        })
    }

    /// The state directory at `root`, without opening or creating
    /// anything (dry runs): it holds no records.
    pub fn at(root: &Path) -> StateDir {
        StateDir {
            root: std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf()),
            open: None,
        }
    }

    fn opened(&self) -> Result<&Open, StateError> {
        self.open.as_ref().ok_or_else(|| StateError::Io {
            path: self.root.clone(),
            source: std::io::Error::other("the state directory is only planned (dry run)"),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn mounts_dir(&self) -> PathBuf {
        self.root.join("mounts")
    }

    /// Where `specwright run` puts a step's bundle.
    pub fn bundle_dir(&self, id: &str) -> Result<PathBuf, StateError> {
        Ok(self.root.join("bundles").join(checked_id(id)?))
    }

    /// Precompiled policies.
    pub fn cache_dir(&self) -> PathBuf {
        self.root.join("cache")
    }

    /// Opens (creating) the cache directory, checked like the rest.
    pub fn open_cache_dir(&self) -> Result<PathBuf, StateError> {
        let open = self.opened()?;
        Ok(open_subdir(&open.root, "cache", true)?.path)
    }

    /// Where privileged operations are logged, one JSON object a line.
    pub fn audit_log(&self) -> PathBuf {
        self.root.join("audit.jsonl")
    }

    /// The audit log, opened for appending (created 0600): a regular file
    /// of the state dir, never through a symlink.
    pub fn open_audit_log(&self) -> Result<File, StateError> {
        let open = self.opened()?;
        let path = self.audit_log();
        let fd = openat(
            open.root.fd(),
            "audit.jsonl",
            OFlag::O_WRONLY
                | OFlag::O_APPEND
                | OFlag::O_CREAT
                | OFlag::O_NOFOLLOW
                | OFlag::O_NONBLOCK
                | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| match e {
            Errno::ELOOP => StateError::Untrusted {
                path: path.clone(),
                why: "a symlink".to_string(),
            },
            e => io_at(&path)(e),
        })?;
        let stat = fstat(&fd).map_err(io_at(&path))?;
        if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
            return Err(StateError::Untrusted {
                path,
                why: "not a regular file".to_string(),
            });
        }
        Ok(File::from(fd))
    }

    /// The path of a mountpoint named in a record. Names are plain file
    /// names, so a corrupt record cannot point anywhere else.
    pub fn mountpoint(&self, name: &str) -> Option<PathBuf> {
        is_plain_name(name).then(|| self.mounts_dir().join(name))
    }

    /// Whether `name` exists in `mounts/` (without following it).
    pub fn mountpoint_exists(&self, name: &str) -> bool {
        match &self.open {
            Some(open) => fstatat(open.mounts.fd(), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).is_ok(),
            None => false,
        }
    }

    fn record_name(id: &str) -> Result<String, StateError> {
        Ok(format!("{}.json", checked_id(id)?))
    }

    /// Reads the step's record; `None` when the step holds nothing.
    pub fn read_record(&self, id: &str) -> Result<Option<StepRecord>, StateError> {
        let name = Self::record_name(id)?;
        let Some(open) = &self.open else {
            return Ok(None);
        };
        let path = open.steps.path.join(&name);
        match read_bounded(open.steps.fd(), &path, &name, MAX_RECORD_BYTES)? {
            None => Ok(None),
            Some(bytes) => StepRecord::parse(&path, id, &bytes).map(Some),
        }
    }

    /// Writes the step's record atomically (a crash leaves the old or the
    /// new one). Not fsynced: the record guards against the process dying,
    /// and the page cache outlives the process; after a power loss the
    /// mounts it describes are gone too.
    pub fn write_record(&self, record: &StepRecord) -> Result<(), StateError> {
        let name = Self::record_name(&record.id)?;
        let open = self.opened()?;
        let text = serde_json::to_vec(record).map_err(|e| StateError::Corrupt {
            path: open.steps.path.join(&name),
            message: e.to_string(),
        })?;
        write_atomically(open.steps.fd(), &open.steps.path, &name, &text, 0o600, false)
    }

    pub fn remove_record(&self, id: &str) -> Result<(), StateError> {
        let name = Self::record_name(id)?;
        let open = self.opened()?;
        remove_file_at(open.steps.fd(), &open.steps.path, &name)
    }

    /// Ids of every step with a record.
    pub fn step_ids(&self) -> Result<Vec<String>, StateError> {
        let open = self.opened()?;
        let listing = format!("/proc/self/fd/{}", open.steps.fd().as_raw_fd());
        let io = |e| StateError::Io {
            path: open.steps.path.clone(),
            source: e,
        };
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(listing).map_err(io)? {
            let name = entry.map_err(io)?.file_name();
            if let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) {
                ids.push(id.to_string());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Takes step `id` for this process: it stays this process's until the
    /// lock is dropped. A step another process holds is refused with its pid.
    pub fn lock(&self, id: &str) -> Result<StepLock, StateError> {
        let id = checked_id(id)?;
        let open = self.opened()?;
        StepLock::acquire(open.locks.fd.clone(), &open.locks.path, id)
    }

    /// Creates the bundle directory of step `id` (which must not exist).
    pub fn create_bundle(&self, id: &str) -> Result<Bundle, StateError> {
        let id = checked_id(id)?;
        let open = self.opened()?;
        let bundles = open_subdir(&open.root, "bundles", true)?;
        let path = bundles.path.join(id);
        mkdirat(bundles.fd(), id, Mode::from_bits_truncate(DIR_MODE)).map_err(io_at(&path))?;
        let dir = open_subdir(&bundles, id, false)?;
        Ok(Bundle { dir })
    }

    /// Whether step `id` has a bundle directory.
    pub fn has_bundle(&self, id: &str) -> Result<bool, StateError> {
        let id = checked_id(id)?;
        let Some(open) = &self.open else {
            return Ok(false);
        };
        match fstatat(open.root.fd(), "bundles", nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            Err(Errno::ENOENT) => return Ok(false),
            Err(e) => return Err(io_at(&open.root.path.join("bundles"))(e)),
            Ok(_) => {}
        }
        let bundles = open_subdir(&open.root, "bundles", false)?;
        match fstatat(bundles.fd(), id, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(_) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(io_at(&bundles.path.join(id))(e)),
        }
    }

    /// Removes what `run` wrote for the step: the regular files of its
    /// bundle directory, then the directory. Nothing is followed: a
    /// symlink or a directory inside is refused, not descended into.
    pub fn remove_bundle(&self, id: &str) -> Result<(), StateError> {
        let id = checked_id(id)?;
        let open = self.opened()?;
        match fstatat(open.root.fd(), "bundles", nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(io_at(&open.root.path.join("bundles"))(e)),
            Ok(_) => {}
        }
        let bundles = open_subdir(&open.root, "bundles", false)?;
        let dir = match open_subdir(&bundles, id, false) {
            Ok(dir) => dir,
            Err(StateError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        Bundle { dir }.remove_files()?;
        match unlinkat(bundles.fd(), id, UnlinkatFlags::RemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(io_at(&bundles.path.join(id))(e)),
        }
    }
}

/// A step's bundle directory, open.
#[derive(Debug)]
pub struct Bundle {
    dir: Dir,
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

    fn remove_files(&self) -> Result<(), StateError> {
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

/// Writes `bytes` as `name` in the directory `dir` names (a bundle a user
/// gave): through a fresh, exclusively created temporary file and a
/// rename, fsynced, so a reader sees the old file or the new one.
pub fn write_file_in(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StateError> {
    let fd = nix::fcntl::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io_at(dir))?;
    write_atomically(fd.as_fd(), dir, name, bytes, 0o644, true)
}

#[cfg(test)]
mod tests {
    use super::super::record::{HeldMount, MountpointKind, Owner};
    use super::*;

    #[test]
    fn records_round_trip_and_corruption_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        assert!(state.read_record("s").unwrap().is_none());
        let mut record = StepRecord::new("s", Owner::of_pid(std::process::id()));
        record.mounts.push(HeldMount {
            name: "s-0".into(),
            kind: MountpointKind::File,
            stacked: 1,
        });
        state.write_record(&record).unwrap();
        assert_eq!(state.read_record("s").unwrap(), Some(record));
        assert_eq!(state.step_ids().unwrap(), ["s"]);

        std::fs::write(dir.path().join("steps/t.json"), "{not json").unwrap();
        assert!(matches!(state.read_record("t"), Err(StateError::Corrupt { .. })));
        std::fs::write(
            dir.path().join("steps/u.json"),
            r#"{"id":"u","owner":{"pid":1,"start_time":null},"mounts":[{"name":"../../etc","stacked":1}]}"#,
        )
        .unwrap();
        let err = state.read_record("u").unwrap_err().to_string();
        assert!(err.contains("not a plain name"), "{err}");
        std::fs::write(
            dir.path().join("steps/v.json"),
            r#"{"id":"w","owner":{"pid":1,"start_time":null},"mounts":[]}"#,
        )
        .unwrap();
        assert!(state.read_record("v").is_err());
        std::fs::write(
            dir.path().join("steps/a.json"),
            r#"{"id":"a","owner":{"pid":1,"start_time":null},"mounts":[{"name":"a-1-0","stacked":1}]}"#,
        )
        .unwrap();
        let err = state.read_record("a").unwrap_err().to_string();
        assert!(err.contains("not one of step a's"), "{err}");
    }

    /// Regression: records were read by path with no bound: a FIFO hung
    /// `gc`, a link to /dev/zero exhausted memory, a symlink was followed.
    #[test]
    fn records_that_are_not_plain_bounded_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let steps = dir.path().join("steps");
        nix::unistd::mkfifo(&steps.join("fifo.json"), Mode::from_bits_truncate(0o600)).unwrap();
        std::os::unix::fs::symlink("/dev/zero", steps.join("zero.json")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", steps.join("passwd.json")).unwrap();
        std::fs::write(steps.join("big.json"), vec![b' '; (MAX_RECORD_BYTES + 1) as usize]).unwrap();
        for (id, says) in [
            ("fifo", "not a regular file"),
            ("zero", "a symlink"),
            ("passwd", "a symlink"),
            ("big", "more than"),
        ] {
            let err = state.read_record(id).unwrap_err().to_string();
            assert!(err.contains(says), "{id}: {err}");
        }
    }

    /// Regression: a symlink at the record's temporary name made a write
    /// overwrite the file it pointed to.
    #[test]
    fn a_planted_symlink_is_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        // The next temporary names this process would take, as a killed
        // process of the same pid would have left them.
        let next = TMP_SEQ.load(Ordering::Relaxed);
        let taken = (next..next + 8).map(|n| format!(".s.json.{}.{n}.tmp", std::process::id()));
        for name in ["s.json.tmp", ".s.json.tmp", "s.json"]
            .map(String::from)
            .into_iter()
            .chain(taken)
        {
            let _ = std::fs::remove_file(dir.path().join("steps").join(&name));
            std::os::unix::fs::symlink(&victim, dir.path().join("steps").join(&name)).unwrap();
        }
        state
            .write_record(&StepRecord::new("s", Owner::this_process()))
            .unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        let bundle = dir.path().join("bundle");
        std::fs::create_dir(&bundle).unwrap();
        std::os::unix::fs::symlink(&victim, bundle.join("config.json.tmp")).unwrap();
        write_file_in(&bundle, "config.json", b"{}").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::read_to_string(bundle.join("config.json")).unwrap(), "{}");
    }

    /// Regression: the state dir was used whoever could write it: another
    /// user's `bundles`, `mounts` or `audit.jsonl` symlink was followed.
    #[test]
    fn a_state_dir_others_can_change_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let open_root = dir.path().join("open");
        std::fs::create_dir(&open_root).unwrap();
        std::fs::set_permissions(&open_root, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = StateDir::open(&open_root).unwrap_err().to_string();
        assert!(err.contains("lets others write"), "{err}");
        let foreign = dir.path().join("foreign");
        std::fs::create_dir(&foreign).unwrap();
        nix::unistd::chown(&foreign, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        let err = StateDir::open(&foreign).unwrap_err().to_string();
        assert!(err.contains("owned by uid 65534"), "{err}");
        let below_open = open_root.join("state");
        std::fs::create_dir(&below_open).unwrap();
        let err = StateDir::open(&below_open).unwrap_err().to_string();
        assert!(err.contains("lets another user replace it"), "{err}");
        // Refused before anything is made below a directory others can change.
        let err = StateDir::open(&open_root.join("new/state")).unwrap_err().to_string();
        assert!(err.contains("lets another user replace it"), "{err}");
        assert!(!open_root.join("new").exists());

        // Another user's symlink in a sticky directory is not followed;
        // ours is.
        let sticky = dir.path().join("sticky");
        std::fs::create_dir(&sticky).unwrap();
        std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let victim = dir.path().join("victim");
        std::fs::create_dir(&victim).unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o700)).unwrap();
        let planted = sticky.join("st2");
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        nix::unistd::fchownat(
            nix::fcntl::AT_FDCWD,
            &planted,
            Some(nix::unistd::Uid::from_raw(65534)),
            None,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .unwrap();
        let err = StateDir::open(&planted.join("state")).unwrap_err().to_string();
        assert!(err.contains("symlink owned by uid 65534"), "{err}");
        let err = StateDir::open(&planted).unwrap_err().to_string();
        assert!(err.contains("symlink owned by uid 65534"), "{err}");
        assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0);
        let ours = sticky.join("ours");
        std::os::unix::fs::symlink(&victim, &ours).unwrap();
        let state = StateDir::open(&ours).unwrap();
        assert_eq!(state.root(), std::fs::canonicalize(&victim).unwrap());
        let state = StateDir::open(&ours.join("./../victim/deeper")).unwrap();
        assert_eq!(state.root(), std::fs::canonicalize(&victim).unwrap().join("deeper"));

        let outside = dir.path().join("elsewhere");
        std::fs::create_dir(&outside).unwrap();
        let root = dir.path().join("state");
        std::fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("mounts")).unwrap();
        let err = StateDir::open(&root).unwrap_err().to_string();
        assert!(err.contains("mounts") && err.contains("not a directory"), "{err}");
        std::fs::remove_file(root.join("mounts")).unwrap();
        let state = StateDir::open(&root).unwrap();
        std::os::unix::fs::symlink(outside.join("log"), root.join("audit.jsonl")).unwrap();
        assert!(state.open_audit_log().unwrap_err().to_string().contains("symlink"));
        assert!(!outside.join("log").exists());
        std::fs::create_dir_all(outside.join("s1")).unwrap();
        std::fs::write(outside.join("s1/keep"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("bundles")).unwrap();
        assert!(state
            .remove_bundle("s1")
            .unwrap_err()
            .to_string()
            .contains("not a directory"));
        assert!(outside.join("s1/keep").exists());
    }
}
