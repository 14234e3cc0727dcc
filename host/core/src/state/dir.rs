//! The state directory itself, opened once and used through descriptors.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{fstat, fstatat, mkdirat, Mode};
use nix::unistd::{unlinkat, UnlinkatFlags};

use super::at::{
    check_trusted, create_atomically, io_at, open_existing_subdir, open_regular_at, open_subdir, read_bounded,
    remove_file_at, write_atomically, Dir, DIR_MODE,
};
use super::bundle::Bundle;
use super::cache::CacheDir;
use super::lock::StepLock;
use super::record::{is_plain_name, StepRecord};
use super::StateError;
use specwright_core::selinux::McsLevel;

/// The default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/specwright";

/// The largest step record the host reads: a full record (the most
/// mountpoints a step may hold) is far smaller.
pub(super) const MAX_RECORD_BYTES: u64 = 1 << 20;

/// The largest record of a reviewed container read: an engine's spec may
/// be 16 MiB, and a record carries a little more.
const MAX_REVIEWED_BYTES: u64 = 17 << 20;

/// The largest MCS reservation read: a step id.
const MAX_RESERVATION_BYTES: u64 = 4096;

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

#[derive(Debug, Clone)]
pub struct StateDir {
    /// The directory's real path (symlinks resolved once, when opened).
    root: PathBuf,
    /// None for a state dir that is only planned (a dry run opens nothing).
    open: Option<Open>,
}

#[derive(Debug, Clone)]
pub(super) struct Open {
    pub(super) root: Dir,
    mounts: Dir,
    steps: Dir,
    locks: Dir,
}

impl StateDir {
    /// Opens (creating if needed, mode 0711) the state directory at `root`
    /// and checks that no other user can change it.
    pub fn open(root: &Path) -> Result<StateDir, StateError> {
        let given = std::path::absolute(root).map_err(|e| StateError::Io {
            path: root.to_path_buf(),
            source: e,
        })?;
        let (fd, real) = super::walk::open_trusted_dir(&given, Some(DIR_MODE), &mut Vec::new())?;
        check_trusted(&real, &fstat(&fd).map_err(io_at(&real))?)?;
        super::walk::check_ancestors(&real)?;
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

    pub(super) fn opened(&self) -> Result<&Open, StateError> {
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
    pub fn open_cache_dir(&self) -> Result<CacheDir, StateError> {
        let open = self.opened()?;
        Ok(CacheDir {
            dir: open_subdir(&open.root, "cache", true)?,
        })
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
        let (fd, stat) = open_regular_at(
            open.root.fd(),
            &path,
            "audit.jsonl",
            OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_CREAT,
            0o600,
        )?;
        // Appending through a planted hard link would write elsewhere.
        if stat.st_nlink != 1 {
            return Err(StateError::Untrusted {
                path,
                why: format!("a file with {} links", stat.st_nlink),
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
        write_atomically(open.steps.fd(), &open.steps.path, &name, &[&text], 0o600, false)
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

    /// Where SELinux MCS levels are reserved: one file a level, naming the
    /// step that holds it.
    pub fn selinux_dir(&self) -> PathBuf {
        self.root.join("selinux")
    }

    /// Reserves MCS `level` for step `id`: `false` when another step holds
    /// it. The reservation is a file of `selinux/` named for the level and
    /// holding the step's id, created in one step (never replacing one).
    pub fn reserve_mcs_level(&self, id: &str, level: &McsLevel) -> Result<bool, StateError> {
        let id = checked_id(id)?;
        let open = self.opened()?;
        let dir = open_subdir(&open.root, "selinux", true)?;
        create_atomically(dir.fd(), &dir.path, &level.to_string(), id.as_bytes(), 0o600, false)
    }

    /// Lets step `id`'s reservation of `level` go: the file goes only when
    /// it names this step (a level the step recorded but lost the race
    /// for stays its holder's).
    pub fn release_mcs_level(&self, id: &str, level: &McsLevel) -> Result<(), StateError> {
        let id = checked_id(id)?;
        let open = self.opened()?;
        let Some(dir) = open_existing_subdir(&open.root, "selinux")? else {
            return Ok(());
        };
        let name = level.to_string();
        let path = dir.path.join(&name);
        match read_bounded(dir.fd(), &path, &name, MAX_RESERVATION_BYTES)? {
            Some(holder) if holder == id.as_bytes() => remove_file_at(dir.fd(), &dir.path, &name),
            Some(_) | None => Ok(()),
        }
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
        let Some(bundles) = open_existing_subdir(&open.root, "bundles")? else {
            return Ok(false);
        };
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
        let Some(bundles) = open_existing_subdir(&open.root, "bundles")? else {
            return Ok(());
        };
        let Some(dir) = open_existing_subdir(&bundles, id)? else {
            return Ok(());
        };
        Bundle { dir }.remove_files()?;
        match unlinkat(bundles.fd(), id, UnlinkatFlags::RemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(io_at(&bundles.path.join(id))(e)),
        }
    }

    /// The name of a reviewed container's directory: a key of hex digits
    /// (never [`LISTED`]).
    fn reviewed_name(key: &str) -> Result<&str, StateError> {
        if key.is_empty() || key.len() > 128 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StateError::BadId { id: key.to_string() });
        }
        Ok(key)
    }

    /// Keeps what `specwright-runc`'s chain approved for a container in
    /// `reviewed/<key>/`: `kept.json` (what its `exec` and `update` are
    /// reviewed against) and, when given, `config.json` (the bundle the
    /// runtime is handed, which no one but this user can change). Each
    /// file is written atomically. Returns the directory.
    pub fn write_reviewed(&self, key: &str, kept: &[u8], config: Option<&[u8]>) -> Result<PathBuf, StateError> {
        let name = Self::reviewed_name(key)?;
        let open = self.opened()?;
        let reviewed = open_subdir(&open.root, "reviewed", true)?;
        let dir = open_subdir(&reviewed, name, true)?;
        // Not fsynced: after a power loss the container they were written
        // for is gone too.
        if let Some(config) = config {
            write_atomically(dir.fd(), &dir.path, "config.json", &[config], 0o600, false)?;
        }
        write_atomically(dir.fd(), &dir.path, "kept.json", &[kept], 0o600, false)?;
        Ok(dir.path)
    }

    /// The record kept for `key`; `None` when there is none.
    pub fn read_reviewed(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let name = Self::reviewed_name(key)?;
        let Some(open) = &self.open else {
            return Ok(None);
        };
        let Some(reviewed) = open_existing_subdir(&open.root, "reviewed")? else {
            return Ok(None);
        };
        let Some(dir) = open_existing_subdir(&reviewed, name)? else {
            return Ok(None);
        };
        read_bounded(dir.fd(), &dir.path.join("kept.json"), "kept.json", MAX_REVIEWED_BYTES)
    }

    /// Forgets what was kept for `key`: its record (kept.json), and unless
    /// `keep_bundle` the other files of its directory, then the directory
    /// (a runtime's delete may still read the bundle's config.json: crun
    /// runs the poststop hooks it names). Nothing is followed.
    pub fn remove_reviewed(&self, key: &str, keep_bundle: bool) -> Result<(), StateError> {
        let name = Self::reviewed_name(key)?;
        let open = self.opened()?;
        let Some(reviewed) = open_existing_subdir(&open.root, "reviewed")? else {
            return Ok(());
        };
        let Some(dir) = open_existing_subdir(&reviewed, name)? else {
            return Ok(());
        };
        if keep_bundle {
            return match unlinkat(dir.fd(), "kept.json", UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => Ok(()),
                Err(e) => Err(io_at(&dir.path.join("kept.json"))(e)),
            };
        }
        Bundle { dir }.remove_files()?;
        match unlinkat(reviewed.fd(), name, UnlinkatFlags::RemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(io_at(&reviewed.path.join(name))(e)),
        }
    }

    /// The keys of every reviewed container, with when each was written,
    /// when a listing is due at `now`: none began in the `every` before it
    /// (`reviewed/.listed`'s modification time, set to `now` here). `None`
    /// when one did: pruning costs one stat, not a listing, at most
    /// creates.
    pub fn due_reviewed_keys(
        &self,
        now: std::time::SystemTime,
        every: std::time::Duration,
    ) -> Result<Option<Vec<(String, std::time::SystemTime)>>, StateError> {
        let open = self.opened()?;
        let Some(dir) = open_existing_subdir(&open.root, "reviewed")? else {
            return Ok(Some(Vec::new()));
        };
        let marker = dir.path.join(LISTED);
        let now_secs = unix_secs(now);
        match fstatat(dir.fd(), LISTED, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            // Listed in the `every` before `now` (a time after `now` is
            // a clock set back: due).
            Ok(st)
                if now_secs
                    .checked_sub(st.st_mtime.max(0) as u64)
                    .is_some_and(|ago| ago < every.as_secs()) =>
            {
                return Ok(None)
            }
            Ok(_) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(io_at(&marker)(e)),
        }
        let fd = nix::fcntl::openat(
            dir.fd(),
            LISTED,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(io_at(&marker))?;
        let at = nix::sys::time::TimeSpec::new(now_secs as i64, 0);
        nix::sys::stat::futimens(&fd, &at, &at).map_err(io_at(&marker))?;
        let listing = format!("/proc/self/fd/{}", dir.fd().as_raw_fd());
        let io = |e| StateError::Io {
            path: dir.path.clone(),
            source: e,
        };
        let mut keys = Vec::new();
        for entry in std::fs::read_dir(listing).map_err(io)? {
            let entry = entry.map_err(io)?;
            let Some(key) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if Self::reviewed_name(&key).is_err() {
                continue;
            }
            let written = fstatat(dir.fd(), key.as_str(), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
                .map(|st| std::time::UNIX_EPOCH + std::time::Duration::from_secs(st.st_mtime.max(0) as u64))
                .map_err(io_at(&dir.path.join(&key)))?;
            keys.push((key, written));
        }
        keys.sort();
        Ok(Some(keys))
    }
}

/// The file in `reviewed/` whose modification time says when kept specs
/// were last listed for pruning.
const LISTED: &str = ".listed";

fn unix_secs(time: std::time::SystemTime) -> u64 {
    time.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
