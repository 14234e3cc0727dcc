//! The recording implementation of [`Syscalls`]: every operation is
//! recorded, then performed through an inner implementation, planned (a
//! dry run, which performs nothing), or failed (fault injection).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

use super::{ContainerError, Kernel, Model, Op, Store, Syscalls};
use crate::audit::Audit;
use crate::resolve::{ResolveError, Resolved};
use crate::state::{
    Bundle, CacheDir, CacheEntry, CompileLock, EngineConfig, GivenBundle, Ownership, StateDir, StateError, StepLock,
    StepRecord,
};
use specwright_core::selinux::McsLevel;

/// Records every operation; performs each through `inner` (none for a dry
/// run) unless it is the one chosen to fail or the model decides it.
pub struct RecordingSyscalls {
    inner: Option<Box<dyn Syscalls>>,
    /// In a dry run, what performs the state dir's own operations (locks,
    /// records, bundles) when they are to be real.
    state: Option<Box<dyn Syscalls>>,
    fail_at: Option<usize>,
    /// Decides an operation in place of `inner` (a model of the kernel).
    model: Option<Box<dyn Model>>,
    ops: Mutex<Vec<Op>>,
}

impl RecordingSyscalls {
    /// Performs nothing: every operation succeeds without touching the host.
    pub fn dry_run() -> RecordingSyscalls {
        RecordingSyscalls {
            inner: None,
            state: None,
            fail_at: None,
            model: None,
            ops: Mutex::new(Vec::new()),
        }
    }

    /// Plans every mount, directory and resolution as [`Self::dry_run`]
    /// does, but performs the state dir's operations (locks, records,
    /// bundles) through `state`: for tests of the bookkeeping on a real
    /// state dir.
    pub fn dry_run_over_state(state: Box<dyn Syscalls>) -> RecordingSyscalls {
        RecordingSyscalls {
            state: Some(state),
            ..RecordingSyscalls::dry_run()
        }
    }

    /// Performs operations through `inner`, except that operation number
    /// `fail_at` (0-based) fails with EIO instead.
    pub fn failing_at(inner: Box<dyn Syscalls>, fail_at: Option<usize>) -> RecordingSyscalls {
        RecordingSyscalls {
            inner: Some(inner),
            state: None,
            fail_at,
            model: None,
            ops: Mutex::new(Vec::new()),
        }
    }

    /// [`Self::failing_at`], with `model` deciding what it models (a
    /// mount it takes as done is planned, not performed).
    pub fn modelled(inner: Box<dyn Syscalls>, model: Box<dyn Model>, fail_at: Option<usize>) -> RecordingSyscalls {
        RecordingSyscalls {
            model: Some(model),
            ..RecordingSyscalls::failing_at(inner, fail_at)
        }
    }

    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// Records `op`; fails it when it is the chosen one (with what
    /// `fault` makes of EIO); performs it through the inner implementation,
    /// or, in a dry run, returns what `planned` says it would.
    fn pass<T, E>(
        &self,
        op: Op,
        fault: impl FnOnce(Errno) -> E,
        perform: impl FnOnce(&dyn Syscalls) -> Result<T, E>,
        planned: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        self.pass_through(self.inner.as_deref(), op, fault, perform, planned)
    }

    /// [`Self::pass`] for an operation on the state dir or a bundle: a dry
    /// run over a real state dir performs it.
    fn pass_state<T, E>(
        &self,
        op: Op,
        fault: impl FnOnce(Errno) -> E,
        perform: impl FnOnce(&dyn Syscalls) -> Result<T, E>,
        planned: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let target = self.inner.as_deref().or(self.state.as_deref());
        self.pass_through(target, op, fault, perform, planned)
    }

    fn pass_through<T, E>(
        &self,
        target: Option<&dyn Syscalls>,
        op: Op,
        fault: impl FnOnce(Errno) -> E,
        perform: impl FnOnce(&dyn Syscalls) -> Result<T, E>,
        planned: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let modelled = {
            let Ok(mut ops) = self.ops.lock() else {
                return Err(fault(Errno::EIO));
            };
            if self.fail_at == Some(ops.len()) {
                ops.push(op);
                return Err(fault(Errno::EIO));
            }
            // The model sees only what is not failed before it.
            let modelled = self.model.as_ref().and_then(|model| model.outcome(&op));
            ops.push(op);
            modelled
        };
        match modelled {
            Some(Ok(())) => return planned(),
            Some(Err(errno)) => return Err(fault(errno)),
            None => {}
        }
        match target {
            Some(target) => perform(target),
            None => planned(),
        }
    }

    fn record(&self, op: Op, perform: impl FnOnce(&dyn Syscalls) -> Result<(), Errno>) -> Result<(), Errno> {
        self.pass(op, |e| e, perform, || Ok(()))
    }
}

/// SplitMix64, the one generator of fixed sequences the host uses (a dry
/// run's draws here, a policy's WASI randomness): each call advances the
/// state by the golden gamma and returns its mix.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 well-mixed bits.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// SplitMix64's `n`-th output (from 0) from state 0: well-mixed bits from
/// a counter.
fn split_mix(n: u64) -> u64 {
    SplitMix64(n.wrapping_mul(0x9e37_79b9_7f4a_7c15)).next()
}

/// A fault injected into an operation on the state dir or a bundle; its
/// message names the errno (`EIO: ...`), as a mount's does.
fn state_fault(path: &Path) -> impl FnOnce(Errno) -> StateError + '_ {
    move |errno| StateError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(errno),
    }
}

/// A fault injected into a resolution.
fn resolve_fault(path: &Path) -> impl FnOnce(Errno) -> ResolveError + '_ {
    move |errno| ResolveError::Io {
        path: path.display().to_string(),
        errno,
    }
}

/// What a dry run answers for what it cannot plan (it makes no bundle).
fn not_in_a_dry_run<T>(path: &Path) -> Result<T, StateError> {
    Err(StateError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other("a dry run writes no bundle"),
    })
}

impl Kernel for RecordingSyscalls {
    fn create_dir(&self, path: &Path) -> Result<(), Errno> {
        self.record(
            Op::CreateDir {
                path: path.to_path_buf(),
            },
            |s| s.create_dir(path),
        )
    }

    fn remove_dir(&self, path: &Path) -> Result<(), Errno> {
        self.record(
            Op::RemoveDir {
                path: path.to_path_buf(),
            },
            |s| s.remove_dir(path),
        )
    }

    fn create_file(&self, path: &Path) -> Result<(), Errno> {
        self.record(
            Op::CreateFile {
                path: path.to_path_buf(),
            },
            |s| s.create_file(path),
        )
    }

    fn remove_file(&self, path: &Path) -> Result<(), Errno> {
        self.record(
            Op::RemoveFile {
                path: path.to_path_buf(),
            },
            |s| s.remove_file(path),
        )
    }

    fn mount(
        &self,
        source: Option<&str>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), Errno> {
        let op = Op::Mount {
            source: source.map(str::to_string),
            target: target.to_path_buf(),
            fstype: fstype.map(str::to_string),
            flags: flags.bits(),
            data: data.map(str::to_string),
        };
        self.record(op, |s| s.mount(source, target, fstype, flags, data))
    }

    fn unmount(&self, target: &Path, flags: MntFlags) -> Result<(), Errno> {
        let op = Op::Unmount {
            target: target.to_path_buf(),
            flags: flags.bits(),
        };
        self.record(op, |s| s.unmount(target, flags))
    }

    fn has_submounts(&self, target: &Path) -> Result<bool, Errno> {
        let op = Op::HasSubmounts {
            path: target.to_path_buf(),
        };
        self.pass(op, |e| e, |s| s.has_submounts(target), || Ok(false))
    }

    fn delete_container(&self, runtime: &Path, id: &str) -> Result<(), ContainerError> {
        let op = Op::DeleteContainer {
            runtime: runtime.to_path_buf(),
            id: id.to_string(),
        };
        let fault = |errno: Errno| ContainerError::Run {
            runtime: runtime.display().to_string(),
            source: std::io::Error::other(errno),
        };
        self.pass(op, fault, |s| s.delete_container(runtime, id), || Ok(()))
    }

    /// A dry run resolves lexically: nothing is looked at.
    fn resolve(&self, root: &Path, selector: &str) -> Result<Resolved, ResolveError> {
        let op = Op::Resolve {
            root: root.to_path_buf(),
            selector: selector.to_string(),
        };
        self.pass(
            op,
            resolve_fault(root),
            |s| s.resolve(root, selector),
            || Ok(Resolved::planned(crate::resolve::planned_in_root(root, selector))),
        )
    }

    fn canonical_path(&self, path: &str) -> Result<String, ResolveError> {
        let op = Op::CanonicalPath { path: path.to_string() };
        self.pass(
            op,
            resolve_fault(Path::new(path)),
            |s| s.canonical_path(path),
            || Ok(specwright_core::mounts::clean_absolute(path)),
        )
    }

    /// A dry run reads nothing: the file is planned as missing.
    fn read_in_root(&self, root: &Path, path: &str, bound: u64) -> Result<Option<Vec<u8>>, ResolveError> {
        let op = Op::ReadInRoot {
            root: root.to_path_buf(),
            path: path.to_string(),
        };
        self.pass(
            op,
            resolve_fault(root),
            |s| s.read_in_root(root, path, bound),
            || Ok(None),
        )
    }

    /// A dry run reads the file (reading changes nothing), so that what
    /// it plans from it (SELinux labels) is what a step would get.
    fn read_host_file(&self, path: &Path, bound: u64) -> std::io::Result<Option<String>> {
        self.pass(
            Op::ReadHostFile {
                path: path.to_path_buf(),
            },
            std::io::Error::other,
            |s| s.read_host_file(path, bound),
            || super::RealSyscalls.read_host_file(path, bound),
        )
    }

    /// A dry run plans the path as the directory it should be.
    fn is_directory(&self, path: &Path) -> Result<bool, Errno> {
        let op = Op::IsDirectory {
            path: path.to_path_buf(),
        };
        self.pass(op, |e| e, |s| s.is_directory(path), || Ok(true))
    }

    /// A dry run plans the file system as mounted with no flags.
    fn mount_flags(&self, path: &Path) -> Result<u64, Errno> {
        self.pass(
            Op::MountFlags {
                path: path.to_path_buf(),
            },
            |e| e,
            |s| s.mount_flags(path),
            || Ok(0),
        )
    }

    /// A dry run plans the path as present.
    fn exists(&self, path: &Path) -> Result<bool, Errno> {
        self.pass(
            Op::Exists {
                path: path.to_path_buf(),
            },
            |e| e,
            |s| s.exists(path),
            || Ok(true),
        )
    }

    /// A dry run reads no directory: it is planned as missing.
    fn list_dir(&self, path: &Path) -> std::io::Result<Option<Vec<String>>> {
        self.pass(
            Op::ListDir {
                path: path.to_path_buf(),
            },
            std::io::Error::other,
            |s| s.list_dir(path),
            || Ok(None),
        )
    }

    /// A dry run plans a character device 0:0.
    fn node_info(&self, path: &Path) -> Result<super::NodeInfo, Errno> {
        let planned = super::NodeInfo {
            kind: 'c',
            major: 0,
            minor: 0,
            mode: 0o666,
        };
        self.pass(
            Op::NodeInfo {
                path: path.to_path_buf(),
            },
            |e| e,
            |s| s.node_info(path),
            || Ok(planned),
        )
    }

    /// A dry run draws from a fixed sequence (SplitMix64 of the draw's
    /// number), so its plan is the same every time.
    fn random(&self) -> Result<u64, Errno> {
        let n = self.ops().iter().filter(|op| matches!(op, Op::Random)).count() as u64;
        self.pass(Op::Random, |e| e, |s| s.random(), || Ok(split_mix(n)))
    }

    /// One thread, so that the operations come in one order and the n-th
    /// is the same one every time.
    fn releases_concurrently(&self) -> bool {
        false
    }
}

impl Store for RecordingSyscalls {
    fn write_record(&self, state: &StateDir, record: &StepRecord) -> Result<(), StateError> {
        let op = Op::WriteRecord {
            step: record.id.clone(),
        };
        self.pass_state(
            op,
            state_fault(state.root()),
            |s| s.write_record(state, record),
            || Ok(()),
        )
    }

    fn remove_record(&self, state: &StateDir, id: &str) -> Result<(), StateError> {
        let op = Op::RemoveRecord { step: id.to_string() };
        self.pass_state(op, state_fault(state.root()), |s| s.remove_record(state, id), || Ok(()))
    }

    /// A dry run takes no lock: a planned one.
    fn lock_step(&self, state: &StateDir, id: &str) -> Result<StepLock, StateError> {
        let op = Op::LockStep { step: id.to_string() };
        self.pass_state(
            op,
            state_fault(state.root()),
            |s| s.lock_step(state, id),
            || Ok(StepLock::planned(id)),
        )
    }

    fn remove_lock(&self, lock: StepLock) -> Result<(), StateError> {
        let op = Op::RemoveLock {
            step: lock.id().to_string(),
        };
        let file = Path::new("locks").join(lock.id());
        self.pass_state(op, state_fault(&file), |s| s.remove_lock(lock), || Ok(()))
    }

    fn read_record(&self, state: &StateDir, id: &str) -> Result<Option<StepRecord>, StateError> {
        let op = Op::ReadRecord { step: id.to_string() };
        self.pass_state(op, state_fault(state.root()), |s| s.read_record(state, id), || Ok(None))
    }

    fn step_ids(&self, state: &StateDir) -> Result<Vec<String>, StateError> {
        self.pass_state(
            Op::ListSteps,
            state_fault(state.root()),
            |s| s.step_ids(state),
            || Ok(Vec::new()),
        )
    }

    fn has_bundle(&self, state: &StateDir, id: &str) -> Result<bool, StateError> {
        let op = Op::HasBundle { step: id.to_string() };
        self.pass_state(op, state_fault(state.root()), |s| s.has_bundle(state, id), || Ok(false))
    }

    fn create_bundle(&self, state: &StateDir, id: &str) -> Result<Bundle, StateError> {
        let op = Op::CreateBundle { step: id.to_string() };
        self.pass_state(
            op,
            state_fault(state.root()),
            |s| s.create_bundle(state, id),
            || not_in_a_dry_run(state.root()),
        )
    }

    fn write_bundle_file(&self, bundle: &Bundle, name: &str, bytes: &[u8]) -> Result<PathBuf, StateError> {
        let path = bundle.path().join(name);
        self.pass_state(
            Op::WriteBundleFile { path: path.clone() },
            state_fault(&path),
            |s| s.write_bundle_file(bundle, name, bytes),
            || not_in_a_dry_run(&path),
        )
    }

    fn remove_bundle(&self, state: &StateDir, id: &str) -> Result<(), StateError> {
        let op = Op::RemoveBundle { step: id.to_string() };
        self.pass_state(op, state_fault(state.root()), |s| s.remove_bundle(state, id), || Ok(()))
    }

    fn open_given_bundle(&self, dir: &Path) -> Result<GivenBundle, StateError> {
        self.pass_state(
            Op::OpenGivenBundle {
                path: dir.to_path_buf(),
            },
            state_fault(dir),
            |s| s.open_given_bundle(dir),
            || not_in_a_dry_run(dir),
        )
    }

    fn write_config(&self, bundle: &GivenBundle, bytes: &[u8]) -> Result<PathBuf, StateError> {
        let path = bundle.path().join("config.json");
        self.pass_state(
            Op::WriteBundleFile { path: path.clone() },
            state_fault(&path),
            |s| s.write_config(bundle, bytes),
            || not_in_a_dry_run(&path),
        )
    }

    fn open_engine_bundle(&self, dir: &Path) -> Result<GivenBundle, StateError> {
        self.pass_state(
            Op::OpenEngineBundle {
                path: dir.to_path_buf(),
            },
            state_fault(dir),
            |s| s.open_engine_bundle(dir),
            || not_in_a_dry_run(dir),
        )
    }

    /// A dry run performs the check (it only looks).
    fn check_trusted_dir(&self, dir: &Path) -> Result<(), StateError> {
        self.pass(
            Op::CheckTrustedDir {
                path: dir.to_path_buf(),
            },
            state_fault(dir),
            |s| s.check_trusted_dir(dir),
            || super::RealSyscalls.check_trusted_dir(dir),
        )
    }

    /// A dry run performs the check (it only looks).
    fn check_fixed_path(&self, path: &Path, owners: &[u32]) -> Result<(), StateError> {
        self.pass(
            Op::CheckFixedPath {
                path: path.to_path_buf(),
            },
            state_fault(path),
            |s| s.check_fixed_path(path, owners),
            || super::RealSyscalls.check_fixed_path(path, owners),
        )
    }

    fn read_engine_config(&self, bundle: &GivenBundle, max: u64) -> Result<EngineConfig, StateError> {
        let path = bundle.path().join("config.json");
        self.pass_state(
            Op::ReadEngineConfig { path: path.clone() },
            state_fault(&path),
            |s| s.read_engine_config(bundle, max),
            || not_in_a_dry_run(&path),
        )
    }

    fn write_engine_config(
        &self,
        bundle: &GivenBundle,
        bytes: &[u8],
        ownership: Ownership,
    ) -> Result<PathBuf, StateError> {
        let path = bundle.path().join("config.json");
        self.pass_state(
            Op::WriteBundleFile { path: path.clone() },
            state_fault(&path),
            |s| s.write_engine_config(bundle, bytes, ownership),
            || not_in_a_dry_run(&path),
        )
    }

    fn read_reviewed(&self, state: &StateDir, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        self.pass_state(
            Op::ReadReviewed { key: key.to_string() },
            state_fault(state.root()),
            |s| s.read_reviewed(state, key),
            || Ok(None),
        )
    }

    fn write_reviewed(
        &self,
        state: &StateDir,
        key: &str,
        kept: &[u8],
        config: Option<&[u8]>,
    ) -> Result<PathBuf, StateError> {
        self.pass_state(
            Op::WriteReviewed { key: key.to_string() },
            state_fault(state.root()),
            |s| s.write_reviewed(state, key, kept, config),
            || Ok(state.root().join("reviewed").join(key)),
        )
    }

    fn remove_reviewed(&self, state: &StateDir, key: &str, keep_bundle: bool) -> Result<(), StateError> {
        self.pass_state(
            Op::RemoveReviewed { key: key.to_string() },
            state_fault(state.root()),
            |s| s.remove_reviewed(state, key, keep_bundle),
            || Ok(()),
        )
    }

    fn due_reviewed_keys(
        &self,
        state: &StateDir,
        now: std::time::SystemTime,
        every: std::time::Duration,
    ) -> Result<Option<Vec<(String, std::time::SystemTime)>>, StateError> {
        self.pass_state(
            Op::ListReviewed,
            state_fault(state.root()),
            |s| s.due_reviewed_keys(state, now, every),
            || Ok(Some(Vec::new())),
        )
    }

    fn remove_given_bundle(&self, bundle: GivenBundle) {
        let op = Op::RemoveGivenBundle {
            path: bundle.path().to_path_buf(),
        };
        let mut bundle = Some(bundle);
        let _ = self.pass_state(
            op,
            |_| (),
            |s| {
                if let Some(bundle) = bundle.take() {
                    s.remove_given_bundle(bundle);
                }
                Ok(())
            },
            || Ok(()),
        );
    }

    /// A dry run opens nothing: the state dir is only planned.
    fn open_state_dir(&self, root: &Path) -> Result<StateDir, StateError> {
        self.pass_state(
            Op::OpenStateDir {
                path: root.to_path_buf(),
            },
            state_fault(root),
            |s| s.open_state_dir(root),
            || Ok(StateDir::at(root)),
        )
    }

    /// A dry run logs its events, to no file.
    fn open_audit(&self, state: &StateDir) -> Result<Audit, StateError> {
        self.pass_state(
            Op::OpenAuditLog,
            state_fault(state.root()),
            |s| s.open_audit(state),
            || Ok(Audit::events_only()),
        )
    }

    /// A dry run stores nothing.
    fn store_pulled(
        &self,
        state: &StateDir,
        reference: &crate::oci::Reference,
        manifest: &crate::oci::Digest,
        blobs: &[(&crate::oci::Digest, &[u8])],
    ) -> Result<(), StateError> {
        self.pass_state(
            Op::StorePulled {
                reference: reference.to_string(),
            },
            state_fault(state.root()),
            |s| s.store_pulled(state, reference, manifest, blobs),
            || Ok(()),
        )
    }

    /// A dry run has pulled nothing.
    fn pulled_component(
        &self,
        state: &StateDir,
        reference: &crate::oci::Reference,
    ) -> Result<Option<(PathBuf, crate::oci::Digest)>, StateError> {
        self.pass_state(
            Op::PulledComponent {
                reference: reference.to_string(),
            },
            state_fault(state.root()),
            |s| s.pulled_component(state, reference),
            || Ok(None),
        )
    }

    /// A dry run counts nowhere.
    fn add_metrics(
        &self,
        state: &StateDir,
        tally: &crate::metrics::Metrics,
        textfile: &Path,
    ) -> Result<(), StateError> {
        self.pass_state(
            Op::AddMetrics {
                textfile: textfile.to_path_buf(),
            },
            state_fault(textfile),
            |s| s.add_metrics(state, tally, textfile),
            || Ok(()),
        )
    }

    fn open_cache_dir(&self, state: &StateDir) -> Result<CacheDir, StateError> {
        self.pass_state(
            Op::OpenCacheDir,
            state_fault(state.root()),
            |s| s.open_cache_dir(state),
            || not_in_a_dry_run(state.root()),
        )
    }

    /// A dry run finds nothing cached.
    fn read_cache_entry(&self, cache: &CacheDir, name: &str, max: u64) -> Result<Option<CacheEntry>, StateError> {
        self.pass_state(
            Op::ReadCacheEntry { name: name.to_string() },
            state_fault(&cache.path().join(name)),
            |s| s.read_cache_entry(cache, name, max),
            || Ok(None),
        )
    }

    fn write_cache_entry(&self, cache: &CacheDir, name: &str, parts: &[&[u8]]) -> Result<(), StateError> {
        self.pass_state(
            Op::WriteCacheEntry { name: name.to_string() },
            state_fault(&cache.path().join(name)),
            |s| s.write_cache_entry(cache, name, parts),
            || Ok(()),
        )
    }

    /// A dry run compiles into no cache: it waits for no one.
    fn lock_cache_entry(
        &self,
        cache: &CacheDir,
        name: &str,
        wait: std::time::Duration,
    ) -> Result<CompileLock, StateError> {
        self.pass_state(
            Op::LockCacheEntry { name: name.to_string() },
            state_fault(&cache.path().join(name)),
            |s| s.lock_cache_entry(cache, name, wait),
            || Ok(CompileLock::planned()),
        )
    }

    fn sweep_cache(&self, cache: &CacheDir) -> Result<(), StateError> {
        self.pass_state(
            Op::SweepCache,
            state_fault(cache.path()),
            |s| s.sweep_cache(cache),
            || Ok(()),
        )
    }

    /// A dry run plans every level as free.
    fn reserve_mcs_level(&self, state: &StateDir, id: &str, level: &McsLevel) -> Result<bool, StateError> {
        self.pass_state(
            Op::ReserveMcsLevel {
                level: level.to_string(),
            },
            state_fault(&state.selinux_dir()),
            |s| s.reserve_mcs_level(state, id, level),
            || Ok(true),
        )
    }

    fn release_mcs_level(&self, state: &StateDir, id: &str, level: &McsLevel) -> Result<(), StateError> {
        self.pass_state(
            Op::ReleaseMcsLevel {
                level: level.to_string(),
            },
            state_fault(&state.selinux_dir()),
            |s| s.release_mcs_level(state, id, level),
            || Ok(()),
        )
    }
}

#[cfg(test)]
mod tests {
    /// The names of the functions of the block that starts at `header`.
    fn functions(source: &str, header: &str) -> Vec<String> {
        let start = source.find(header).expect("the block is there");
        let end = start + source[start..].find("\n}\n").expect("the block ends");
        let mut names: Vec<String> = source[start..end]
            .lines()
            .filter_map(|line| line.trim_start().strip_prefix("fn "))
            .filter_map(|rest| rest.split('(').next())
            .map(str::to_string)
            .collect();
        names.sort();
        names
    }

    /// The operations trait `name` declares in mod.rs (at least `least`)
    /// are exactly those the recording implementation overrides.
    fn overridden_alike(name: &str, least: usize) {
        let declared = functions(include_str!("mod.rs"), &format!("pub trait {name}"));
        let recorded = functions(
            include_str!("recording.rs"),
            &format!("impl {name} for RecordingSyscalls"),
        );
        assert!(declared.len() >= least, "{declared:?}");
        assert_eq!(declared, recorded, "{name}");
    }

    /// Every store operation's default is the real one, on the state dir:
    /// one the recording implementation did not override would touch the
    /// real state dir in a dry run, and escape fault injection.
    #[test]
    fn the_recording_implementation_overrides_every_store_operation() {
        overridden_alike("Store", 30);
    }

    /// Every kernel operation's default is the real one: one the
    /// recording implementation did not override would mount for real in
    /// a dry run, escape fault injection and the kernel's model.
    #[test]
    fn the_recording_implementation_overrides_every_kernel_operation() {
        overridden_alike("Kernel", 19);
    }
}
