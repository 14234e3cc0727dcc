//! Every privileged operation the host makes, behind two traits: the
//! [`Kernel`]'s (mounts, resolution, opens) and the [`Store`]'s (the state
//! dir's files). The real implementation performs them; the recording one
//! serves dry runs and fault injection, recording each as an [`Op`].

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

use crate::audit::Audit;
use crate::resolve::{ResolveError, Resolved};
use crate::state::{
    Bundle, CacheDir, CacheEntry, CompileLock, EngineConfig, GivenBundle, Ownership, StateDir, StateError, StepLock,
    StepRecord,
};
use specwright_core::selinux::McsLevel;

pub mod overlay;
mod recording;
pub use recording::{RecordingSyscalls, SplitMix64};

/// One privileged operation, as recorded; a dry run prints the list as
/// JSON, each `{"op": NAME, ...its fields}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Op {
    #[serde(rename = "mkdir")]
    CreateDir {
        path: PathBuf,
    },
    #[serde(rename = "rmdir")]
    RemoveDir {
        path: PathBuf,
    },
    CreateFile {
        path: PathBuf,
    },
    RemoveFile {
        path: PathBuf,
    },
    Mount {
        source: Option<String>,
        target: PathBuf,
        fstype: Option<String>,
        #[serde(serialize_with = "ms_flags")]
        flags: u64,
        data: Option<String>,
    },
    #[serde(rename = "umount")]
    Unmount {
        target: PathBuf,
        flags: i32,
    },
    DeleteContainer {
        runtime: PathBuf,
        id: String,
    },
    #[serde(rename = "list-submounts")]
    HasSubmounts {
        path: PathBuf,
    },
    /// A step's record written (`steps/<id>.json`).
    WriteRecord {
        step: String,
    },
    /// A step's record removed.
    RemoveRecord {
        step: String,
    },
    /// A selector resolved inside a root, by descriptor.
    Resolve {
        root: PathBuf,
        selector: String,
    },
    /// A host path the request names resolved to what it really is.
    CanonicalPath {
        path: String,
    },
    /// A step taken for this process (`locks/<id>.lock`).
    LockStep {
        step: String,
    },
    /// A step's lock file removed (the step holds nothing any more).
    RemoveLock {
        step: String,
    },
    /// A step's record read.
    ReadRecord {
        step: String,
    },
    /// The steps with a record listed (`gc`).
    ListSteps,
    /// Whether a step has a bundle directory in the state dir.
    HasBundle {
        step: String,
    },
    /// A step's bundle directory made in the state dir (`run`).
    CreateBundle {
        step: String,
    },
    /// A file of a bundle written.
    WriteBundleFile {
        path: PathBuf,
    },
    /// A step's bundle directory and its files removed.
    RemoveBundle {
        step: String,
    },
    /// A bundle directory an operator names opened (made if missing).
    #[serde(rename = "open-bundle")]
    OpenGivenBundle {
        path: PathBuf,
    },
    /// The directories opening a given bundle made removed again.
    #[serde(rename = "remove-bundle-dirs")]
    RemoveGivenBundle {
        path: PathBuf,
    },
    /// A bundle directory an engine made opened (nothing made).
    OpenEngineBundle {
        path: PathBuf,
    },
    /// A directory whose contents decide what runs checked to be one no
    /// other user can change ([`crate::state::check_trusted_dir`]).
    CheckTrustedDir {
        path: PathBuf,
    },
    /// A host path checked to be one no other user can redirect
    /// ([`crate::state::check_fixed_path`]).
    CheckFixedPath {
        path: PathBuf,
    },
    /// An engine bundle's config.json read.
    ReadEngineConfig {
        path: PathBuf,
    },
    /// The spec kept for a container `specwright-runc` reviewed, read.
    ReadReviewed {
        key: String,
    },
    /// The spec kept for a reviewed container written.
    WriteReviewed {
        key: String,
    },
    /// The spec kept for a reviewed container removed.
    RemoveReviewed {
        key: String,
    },
    /// The kept specs listed.
    ListReviewed,
    /// A file read inside a root, by descriptor (the rootfs's /etc/passwd).
    ReadInRoot {
        root: PathBuf,
        path: String,
    },
    /// The state directory opened (made if missing, its ownership checked).
    OpenStateDir {
        path: PathBuf,
    },
    /// The state dir's audit log opened for appending.
    OpenAuditLog,
    /// A pulled policy artifact stored, its tag last.
    StorePulled {
        reference: String,
    },
    /// A pulled policy's component looked up.
    PulledComponent {
        reference: String,
    },
    /// A process's counts added to the state dir's metrics totals, and the
    /// totals written to the metrics text file.
    AddMetrics {
        textfile: PathBuf,
    },
    /// The state dir's compile cache opened (made if missing).
    OpenCacheDir,
    /// A compile cache entry read (a precompiled policy, a policy file's
    /// digest memo, a runtime's remembered `--version`).
    ReadCacheEntry {
        name: String,
    },
    /// A compile cache entry written.
    WriteCacheEntry {
        name: String,
    },
    /// Temporary files of compiles whose process is gone removed.
    SweepCache,
    /// The lock for compiling a compile cache entry taken (waiting for
    /// another process compiling it).
    LockCacheEntry {
        name: String,
    },
    /// A file of the host read, bounded (`run`'s /etc/resolv.conf).
    ReadHostFile {
        path: PathBuf,
    },
    /// Whether a host path is a directory (`run`'s rootfs).
    IsDirectory {
        path: PathBuf,
    },
    /// Whether a host path exists (a tracing socket).
    Exists {
        path: PathBuf,
    },
    /// The names in a directory (a CDI spec directory).
    ListDir {
        path: PathBuf,
    },
    /// What a device node is (a CDI device).
    #[serde(rename = "stat-node")]
    NodeInfo {
        path: PathBuf,
    },
    /// The flags of the file system holding a bind's source.
    MountFlags {
        path: PathBuf,
    },
    /// Random bits drawn (an SELinux MCS level).
    Random,
    /// An SELinux MCS level reserved for a step (`selinux/<level>`).
    ReserveMcsLevel {
        level: String,
    },
    /// A step's SELinux MCS level let go.
    ReleaseMcsLevel {
        level: String,
    },
}

impl Op {
    /// The host path the operation acts on; `None` for one that names a
    /// step, a key or a level instead, and for resolutions and reads inside
    /// a root (which act within a path the request names).
    pub fn path(&self) -> Option<&Path> {
        match self {
            Op::CreateDir { path }
            | Op::RemoveDir { path }
            | Op::CreateFile { path }
            | Op::RemoveFile { path }
            | Op::HasSubmounts { path }
            | Op::WriteBundleFile { path }
            | Op::OpenGivenBundle { path }
            | Op::RemoveGivenBundle { path }
            | Op::OpenEngineBundle { path }
            | Op::CheckTrustedDir { path }
            | Op::CheckFixedPath { path }
            | Op::ReadEngineConfig { path }
            | Op::OpenStateDir { path }
            | Op::ReadHostFile { path }
            | Op::IsDirectory { path }
            | Op::Exists { path }
            | Op::ListDir { path }
            | Op::NodeInfo { path }
            | Op::MountFlags { path } => Some(path),
            Op::Mount { target, .. } | Op::Unmount { target, .. } => Some(target),
            Op::DeleteContainer { .. }
            | Op::WriteRecord { .. }
            | Op::RemoveRecord { .. }
            | Op::LockStep { .. }
            | Op::RemoveLock { .. }
            | Op::ReadRecord { .. }
            | Op::HasBundle { .. }
            | Op::CreateBundle { .. }
            | Op::RemoveBundle { .. }
            | Op::ListSteps
            | Op::OpenAuditLog
            | Op::AddMetrics { .. }
            | Op::StorePulled { .. }
            | Op::PulledComponent { .. }
            | Op::OpenCacheDir
            | Op::ReadCacheEntry { .. }
            | Op::WriteCacheEntry { .. }
            | Op::SweepCache
            | Op::LockCacheEntry { .. }
            | Op::Resolve { .. }
            | Op::ReadInRoot { .. }
            | Op::CanonicalPath { .. }
            | Op::Random
            | Op::ReserveMcsLevel { .. }
            | Op::ReleaseMcsLevel { .. }
            | Op::ReadReviewed { .. }
            | Op::WriteReviewed { .. }
            | Op::RemoveReviewed { .. }
            | Op::ListReviewed => None,
        }
    }
}

/// Mount flags as their names (`MS_BIND | MS_REC`), for a dry run's plan.
fn ms_flags<S: serde::Serializer>(flags: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&format_args!("{:?}", MsFlags::from_bits_truncate(*flags)))
}

/// Why a container could not be deleted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContainerError {
    /// The runtime could not be run.
    #[error("running {runtime}: {source}")]
    Run { runtime: String, source: std::io::Error },
    /// The runtime refused, saying why on its stderr.
    #[error("{runtime} delete --force {id}: {stderr}")]
    Refused {
        runtime: String,
        id: String,
        stderr: String,
    },
}

/// What the host kernel does for a step: mounts, directories and files
/// for mountpoints, resolution and reads by descriptor, node and
/// file-system facts, randomness, and the runtime's `delete`. Each
/// operation's default is the real one ([`RealSyscalls`]); the recording
/// implementation overrides every one (a test holds it to that), so a dry
/// run performs none and a fault can be injected anywhere. A test's model
/// of the kernel is a [`Model`] of the recorded operations, not another
/// implementation.
pub trait Kernel: Send + Sync {
    fn create_dir(&self, path: &Path) -> Result<(), Errno> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().mode(0o700).create(path).map_err(io_errno)
    }

    fn remove_dir(&self, path: &Path) -> Result<(), Errno> {
        std::fs::remove_dir(path).map_err(io_errno)
    }

    /// Creates an empty file (a mountpoint for a file), failing if it exists.
    fn create_file(&self, path: &Path) -> Result<(), Errno> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map(drop)
            .map_err(io_errno)
    }

    fn remove_file(&self, path: &Path) -> Result<(), Errno> {
        std::fs::remove_file(path).map_err(io_errno)
    }

    fn mount(
        &self,
        source: Option<&str>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), Errno> {
        match data {
            // An overlay of more layers than one page of options names.
            Some(data) if overlay::is_long(fstype, Some(data)) => overlay::mount_long(target, flags, data),
            _ => nix::mount::mount(source, target, fstype, flags, data),
        }
    }

    fn unmount(&self, target: &Path, flags: MntFlags) -> Result<(), Errno> {
        nix::mount::umount2(target, flags)
    }

    /// Kills and deletes container `id` of OCI runtime `runtime`
    /// (`runtime delete --force id`); one that does not exist is deleted.
    fn delete_container(&self, runtime: &Path, id: &str) -> Result<(), ContainerError> {
        let out = std::process::Command::new(runtime)
            .args(["delete", "--force", id])
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|source| ContainerError::Run {
                runtime: runtime.display().to_string(),
                source,
            })?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Gone already (the runtime cleaned up, or never created it).
        let missing = ["does not exist", "not found", "No such file"];
        if out.status.success() || missing.iter().any(|m| stderr.contains(m)) {
            Ok(())
        } else {
            Err(ContainerError::Refused {
                runtime: runtime.display().to_string(),
                id: id.to_string(),
                stderr: stderr.trim().to_string(),
            })
        }
    }

    /// Whether anything is mounted below `target` (a recursive bind of a
    /// tree with mounts of its own).
    fn has_submounts(&self, target: &Path) -> Result<bool, Errno> {
        use std::io::BufRead;
        let file = std::fs::File::open("/proc/thread-self/mountinfo").map_err(io_errno)?;
        let below = format!("{}/", target.display());
        for line in std::io::BufReader::new(file).lines() {
            let line = line.map_err(io_errno)?;
            // Field 5 is the mountpoint, with space, tab, newline and
            // backslash escaped as octal; our mountpoints have none.
            if line.split(' ').nth(4).is_some_and(|m| m.starts_with(&below)) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Resolves `selector` inside `root` as if `root` were `/`, by
    /// descriptor ([`crate::resolve::resolve_in_root`]).
    fn resolve(&self, root: &Path, selector: &str) -> Result<Resolved, ResolveError> {
        crate::resolve::resolve_in_root(root, selector)
    }

    /// What host path `path` really is, symlinks resolved
    /// ([`crate::resolve::canonical_host_path`]).
    fn canonical_path(&self, path: &str) -> Result<String, ResolveError> {
        crate::resolve::canonical_host_path(path)
    }

    /// Reads the regular file `path` names inside `root` (resolved as
    /// [`Self::resolve`] does), at most `bound` bytes; `None` when nothing
    /// is there ([`crate::resolve::read_in_root`]).
    fn read_in_root(&self, root: &Path, path: &str, bound: u64) -> Result<Option<Vec<u8>>, ResolveError> {
        crate::resolve::read_in_root(root, path, bound)
    }

    /// The text of host file `path`, at most `bound` bytes; `None` when it
    /// does not exist.
    fn read_host_file(&self, path: &Path, bound: u64) -> std::io::Result<Option<String>> {
        match crate::input::read_bounded_text(path, bound) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether `path` is a directory (following symlinks); `false` when
    /// nothing is there.
    fn is_directory(&self, path: &Path) -> Result<bool, Errno> {
        match std::fs::metadata(path) {
            Ok(meta) => Ok(meta.is_dir()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_errno(e)),
        }
    }

    /// Whether anything is at `path` (following symlinks).
    fn exists(&self, path: &Path) -> Result<bool, Errno> {
        match nix::sys::stat::stat(path) {
            Ok(_) => Ok(true),
            Err(Errno::ENOENT | Errno::ENOTDIR) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The names in directory `path`, sorted; `None` when it does not exist.
    fn list_dir(&self, path: &Path) -> std::io::Result<Option<Vec<String>>> {
        let entries = match std::fs::read_dir(path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut names = entries
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<Vec<_>>>()?;
        names.sort();
        Ok(Some(names))
    }

    /// What the node at `path` is (following symlinks).
    fn node_info(&self, path: &Path) -> Result<NodeInfo, Errno> {
        let st = nix::sys::stat::stat(path)?;
        let kind = match nix::sys::stat::SFlag::from_bits_truncate(st.st_mode) & nix::sys::stat::SFlag::S_IFMT {
            nix::sys::stat::SFlag::S_IFCHR => 'c',
            nix::sys::stat::SFlag::S_IFBLK => 'b',
            nix::sys::stat::SFlag::S_IFIFO => 'p',
            _ => '?',
        };
        Ok(NodeInfo {
            kind,
            major: i64::try_from(nix::sys::stat::major(st.st_rdev)).map_err(|_| Errno::ERANGE)?,
            minor: i64::try_from(nix::sys::stat::minor(st.st_rdev)).map_err(|_| Errno::ERANGE)?,
            mode: st.st_mode & 0o777,
        })
    }

    /// `statfs(2)`'s `f_flags` for `path` (following symlinks).
    fn mount_flags(&self, path: &Path) -> Result<u64, Errno> {
        nix::sys::statvfs::statvfs(path).map(|st| st.flags().bits())
    }

    /// 64 random bits from the kernel.
    fn random(&self) -> Result<u64, Errno> {
        use std::io::Read;
        let mut bytes = [0u8; 8];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .map_err(io_errno)?;
        Ok(u64::from_ne_bytes(bytes))
    }

    /// Whether releasing may unmount on several threads at once (a
    /// recording implementation keeps one order).
    fn releases_concurrently(&self) -> bool {
        true
    }
}

/// The state dir and the bundles: records, locks, bundles, kept specs,
/// the audit log, the compile cache and reservations. Each operation's
/// default is the real one, on the state dir's descriptors; a recording
/// implementation overrides every one (a dry run makes nothing, a fault
/// can be injected anywhere).
pub trait Store: Send + Sync {
    /// Writes a step's record into the state dir (before each mount, after
    /// each release), so that a dry run writes none and a fault can be
    /// injected here too.
    fn write_record(&self, state: &StateDir, record: &StepRecord) -> Result<(), StateError> {
        state.write_record(record)
    }

    /// Removes a step's record (the step holds nothing any more).
    fn remove_record(&self, state: &StateDir, id: &str) -> Result<(), StateError> {
        state.remove_record(id)
    }

    /// Takes step `id` for this process ([`StateDir::lock`]).
    fn lock_step(&self, state: &StateDir, id: &str) -> Result<StepLock, StateError> {
        state.lock(id)
    }

    /// Lets a step that holds nothing go and deletes its lock file (the
    /// step is let go even when deleting the file fails).
    fn remove_lock(&self, lock: StepLock) -> Result<(), StateError> {
        lock.remove()
    }

    /// A step's record; `None` when the step holds nothing.
    fn read_record(&self, state: &StateDir, id: &str) -> Result<Option<StepRecord>, StateError> {
        state.read_record(id)
    }

    /// The ids of every step with a record.
    fn step_ids(&self, state: &StateDir) -> Result<Vec<String>, StateError> {
        state.step_ids()
    }

    /// Whether step `id` has a bundle directory in the state dir.
    fn has_bundle(&self, state: &StateDir, id: &str) -> Result<bool, StateError> {
        state.has_bundle(id)
    }

    /// Makes step `id`'s bundle directory in the state dir.
    fn create_bundle(&self, state: &StateDir, id: &str) -> Result<Bundle, StateError> {
        state.create_bundle(id)
    }

    /// Writes file `name` of a bundle atomically; returns its path.
    fn write_bundle_file(&self, bundle: &Bundle, name: &str, bytes: &[u8]) -> Result<PathBuf, StateError> {
        bundle.write(name, bytes)
    }

    /// Removes step `id`'s bundle directory and its files.
    fn remove_bundle(&self, state: &StateDir, id: &str) -> Result<(), StateError> {
        state.remove_bundle(id)
    }

    /// Opens (making what is missing) a bundle directory an operator names.
    fn open_given_bundle(&self, dir: &Path) -> Result<GivenBundle, StateError> {
        GivenBundle::open(dir)
    }

    /// Writes a given bundle's config.json atomically; returns its path.
    fn write_config(&self, bundle: &GivenBundle, bytes: &[u8]) -> Result<PathBuf, StateError> {
        bundle.write_config(bytes)
    }

    /// Removes the directories opening `bundle` made (a step that failed).
    fn remove_given_bundle(&self, bundle: GivenBundle) {
        bundle.remove_created();
    }

    /// Opens the bundle directory an engine made ([`GivenBundle::open_existing`]).
    fn open_engine_bundle(&self, dir: &Path) -> Result<GivenBundle, StateError> {
        GivenBundle::open_existing(dir)
    }

    /// Checks a directory whose contents decide what runs ([`crate::state::check_trusted_dir`]).
    fn check_trusted_dir(&self, dir: &Path) -> Result<(), StateError> {
        crate::state::check_trusted_dir(dir)
    }

    /// Checks that no user but root, this one and `owners` can redirect a
    /// host path ([`crate::state::check_fixed_path`]).
    fn check_fixed_path(&self, path: &Path, owners: &[u32]) -> Result<(), StateError> {
        crate::state::check_fixed_path(path, owners)
    }

    /// Reads its config.json ([`GivenBundle::read_config`]).
    fn read_engine_config(&self, bundle: &GivenBundle, max: u64) -> Result<EngineConfig, StateError> {
        bundle.read_config(max)
    }

    /// Writes its config.json back as the engine had it ([`GivenBundle::write_config_as`]).
    fn write_engine_config(
        &self,
        bundle: &GivenBundle,
        bytes: &[u8],
        ownership: Ownership,
    ) -> Result<PathBuf, StateError> {
        bundle.write_config_as(bytes, ownership)
    }

    /// The spec kept for a reviewed container ([`StateDir::read_reviewed`]).
    fn read_reviewed(&self, state: &StateDir, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        state.read_reviewed(key)
    }

    /// Keeps what was approved for a container, and the runtime's bundle
    /// ([`StateDir::write_reviewed`]); returns the bundle directory.
    fn write_reviewed(
        &self,
        state: &StateDir,
        key: &str,
        kept: &[u8],
        config: Option<&[u8]>,
    ) -> Result<PathBuf, StateError> {
        state.write_reviewed(key, kept, config)
    }

    /// Forgets it, keeping the runtime's bundle when `keep_bundle`
    /// ([`StateDir::remove_reviewed`]).
    fn remove_reviewed(&self, state: &StateDir, key: &str, keep_bundle: bool) -> Result<(), StateError> {
        state.remove_reviewed(key, keep_bundle)
    }

    /// Every kept spec, with when it was written, when a listing is due
    /// ([`StateDir::due_reviewed_keys`]).
    fn due_reviewed_keys(
        &self,
        state: &StateDir,
        now: std::time::SystemTime,
        every: std::time::Duration,
    ) -> Result<Option<Vec<(String, std::time::SystemTime)>>, StateError> {
        state.due_reviewed_keys(now, every)
    }

    /// Opens (making what is missing) the state directory at `root`
    /// ([`StateDir::open`]).
    fn open_state_dir(&self, root: &Path) -> Result<StateDir, StateError> {
        StateDir::open(root)
    }

    /// The audit log of `state`, opened for appending.
    fn open_audit(&self, state: &StateDir) -> Result<Audit, StateError> {
        Ok(Audit::to_file(state.open_audit_log()?))
    }

    /// Adds `tally` to the metrics totals in `state` and writes them to
    /// `textfile` ([`StateDir::add_metrics`]).
    fn add_metrics(
        &self,
        state: &StateDir,
        tally: &crate::metrics::Metrics,
        textfile: &Path,
    ) -> Result<(), StateError> {
        state.add_metrics(tally, textfile)
    }

    /// Stores a pulled policy artifact ([`StateDir::store_pulled`]).
    fn store_pulled(
        &self,
        state: &StateDir,
        reference: &crate::oci::Reference,
        manifest: &crate::oci::Digest,
        blobs: &[(&crate::oci::Digest, &[u8])],
    ) -> Result<(), StateError> {
        state.store_pulled(reference, manifest, blobs)
    }

    /// The component file of a pulled policy ([`StateDir::pulled_component`]).
    fn pulled_component(
        &self,
        state: &StateDir,
        reference: &crate::oci::Reference,
    ) -> Result<Option<(PathBuf, crate::oci::Digest)>, StateError> {
        state.pulled_component(reference)
    }

    /// The compile cache's directory in `state` (made if missing).
    fn open_cache_dir(&self, state: &StateDir) -> Result<CacheDir, StateError> {
        state.open_cache_dir()
    }

    /// Entry `name` of the compile cache, at most `max` bytes; `None` when
    /// missing or not one to trust ([`CacheDir::read_entry`]).
    fn read_cache_entry(&self, cache: &CacheDir, name: &str, max: u64) -> Result<Option<CacheEntry>, StateError> {
        cache.read_entry(name, max)
    }

    /// Writes entry `name` of the compile cache atomically
    /// ([`CacheDir::write_entry`]).
    fn write_cache_entry(&self, cache: &CacheDir, name: &str, parts: &[&[u8]]) -> Result<(), StateError> {
        cache.write_entry(name, parts)
    }

    /// Takes the lock for compiling entry `name`, waiting at most `wait`
    /// for another process compiling it ([`CacheDir::lock_entry`]).
    fn lock_cache_entry(
        &self,
        cache: &CacheDir,
        name: &str,
        wait: std::time::Duration,
    ) -> Result<CompileLock, StateError> {
        cache.lock_entry(name, wait)
    }

    /// Removes what compiles killed midway left ([`CacheDir::sweep_abandoned`]).
    fn sweep_cache(&self, cache: &CacheDir) -> Result<(), StateError> {
        cache.sweep_abandoned()
    }

    /// Reserves SELinux MCS `level` for step `id` ([`StateDir::reserve_mcs_level`]):
    /// `false` when another step holds it.
    fn reserve_mcs_level(&self, state: &StateDir, id: &str, level: &McsLevel) -> Result<bool, StateError> {
        state.reserve_mcs_level(id, level)
    }

    /// Lets step `id`'s reservation of `level` go ([`StateDir::release_mcs_level`]).
    fn release_mcs_level(&self, state: &StateDir, id: &str, level: &McsLevel) -> Result<(), StateError> {
        state.release_mcs_level(id, level)
    }
}

/// Every operation of a step: the kernel's and the store's.
pub trait Syscalls: Kernel + Store {}

impl<T: Kernel + Store + ?Sized> Syscalls for T {}

/// The kernel and the state dir, as they are: every operation's default.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealSyscalls;

/// What a recording implementation does with an operation instead of
/// performing it (a test's model of the kernel): `None` performs it,
/// `Some(Ok(()))` takes it as done and answers what a dry run plans,
/// `Some(Err(errno))` fails it as the kernel would.
pub trait Model: Send + Sync {
    fn outcome(&self, op: &Op) -> Option<Result<(), Errno>>;
}

fn io_errno(e: std::io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
}

impl Kernel for RealSyscalls {}

impl Store for RealSyscalls {}

/// A device node as CDI fills one in: `c`, `b`, `p`, or `?` for anything
/// else, its numbers and its permission bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeInfo {
    pub kind: char,
    pub major: i64,
    pub minor: i64,
    pub mode: u32,
}
