//! A model of the kernel's mount table for property tests of the host's
//! bookkeeping.

use std::path::{Path, PathBuf};

use specwright_host_core::state::{StateDir, StateError};

/// The kernel's mount table and directory entries as a model, for property
/// tests of the host's bookkeeping: creating what exists is EEXIST,
/// removing a mountpoint EBUSY, unmounting what is not mounted EINVAL, a
/// remount or propagation change needs a mount. Clones share one model.
#[derive(Clone, Default)]
pub struct KernelModel {
    state: std::sync::Arc<std::sync::Mutex<KernelState>>,
}

/// What the model holds: stacked mounts by target, and entries made.
#[derive(Clone, Debug, Default)]
pub struct KernelState {
    pub mounted: std::collections::BTreeMap<PathBuf, usize>,
    pub entries: std::collections::BTreeSet<PathBuf>,
}

impl KernelModel {
    pub fn snapshot(&self) -> KernelState {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KernelState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn create(&self, path: &Path) -> Result<(), nix::errno::Errno> {
        let mut state = self.lock();
        if !state.entries.insert(path.to_path_buf()) {
            return Err(nix::errno::Errno::EEXIST);
        }
        Ok(())
    }

    fn remove(&self, path: &Path) -> Result<(), nix::errno::Errno> {
        let mut state = self.lock();
        if state.mounted.contains_key(path) {
            return Err(nix::errno::Errno::EBUSY);
        }
        if !state.entries.remove(path) {
            return Err(nix::errno::Errno::ENOENT);
        }
        Ok(())
    }
}

impl specwright_host_core::sys::Syscalls for KernelModel {
    fn create_dir(&self, path: &Path) -> Result<(), nix::errno::Errno> {
        self.create(path)
    }

    fn remove_dir(&self, path: &Path) -> Result<(), nix::errno::Errno> {
        self.remove(path)
    }

    fn create_file(&self, path: &Path) -> Result<(), nix::errno::Errno> {
        self.create(path)
    }

    fn remove_file(&self, path: &Path) -> Result<(), nix::errno::Errno> {
        self.remove(path)
    }

    fn mount(
        &self,
        _source: Option<&str>,
        target: &Path,
        _fstype: Option<&str>,
        flags: nix::mount::MsFlags,
        _data: Option<&str>,
    ) -> Result<(), nix::errno::Errno> {
        use nix::mount::MsFlags;
        let mut state = self.lock();
        let changes_a_mount =
            MsFlags::MS_REMOUNT | MsFlags::MS_SHARED | MsFlags::MS_PRIVATE | MsFlags::MS_SLAVE | MsFlags::MS_UNBINDABLE;
        if flags.intersects(changes_a_mount) {
            return if state.mounted.contains_key(target) {
                Ok(())
            } else {
                Err(nix::errno::Errno::EINVAL)
            };
        }
        if !state.entries.contains(target) {
            return Err(nix::errno::Errno::ENOENT);
        }
        *state.mounted.entry(target.to_path_buf()).or_default() += 1;
        Ok(())
    }

    /// The model stacks mounts on mountpoints, never below them.
    fn has_submounts(&self, _target: &Path) -> Result<bool, nix::errno::Errno> {
        Ok(false)
    }

    /// The model runs no containers: there is none to delete.
    fn delete_container(&self, _runtime: &Path, _id: &str) -> Result<(), specwright_host_core::sys::ContainerError> {
        Ok(())
    }

    /// Records are the state dir's own files, in the test's directory.
    fn write_record(
        &self,
        state: &specwright_host_core::state::StateDir,
        record: &specwright_host_core::state::StepRecord,
    ) -> Result<(), specwright_host_core::state::StateError> {
        state.write_record(record)
    }

    fn remove_record(
        &self,
        state: &specwright_host_core::state::StateDir,
        id: &str,
    ) -> Result<(), specwright_host_core::state::StateError> {
        state.remove_record(id)
    }

    /// Resolution looks at the test's real directories.
    fn resolve(
        &self,
        root: &Path,
        selector: &str,
    ) -> Result<specwright_host_core::resolve::Resolved, specwright_host_core::resolve::ResolveError> {
        specwright_host_core::resolve::resolve_in_root(root, selector)
    }

    fn canonical_path(&self, path: &str) -> Result<String, specwright_host_core::resolve::ResolveError> {
        specwright_host_core::resolve::canonical_host_path(path)
    }

    fn read_in_root(
        &self,
        root: &Path,
        path: &str,
        bound: u64,
    ) -> Result<Option<Vec<u8>>, specwright_host_core::resolve::ResolveError> {
        specwright_host_core::sys::RealSyscalls.read_in_root(root, path, bound)
    }

    /// Locks, records and bundles are the state dir's own files, in the
    /// test's directory.
    fn lock_step(&self, state: &StateDir, id: &str) -> Result<specwright_host_core::state::StepLock, StateError> {
        specwright_host_core::sys::RealSyscalls.lock_step(state, id)
    }

    fn remove_lock(&self, lock: specwright_host_core::state::StepLock) -> Result<(), StateError> {
        specwright_host_core::sys::RealSyscalls.remove_lock(lock)
    }

    fn read_record(
        &self,
        state: &StateDir,
        id: &str,
    ) -> Result<Option<specwright_host_core::state::StepRecord>, StateError> {
        specwright_host_core::sys::RealSyscalls.read_record(state, id)
    }

    fn step_ids(&self, state: &StateDir) -> Result<Vec<String>, StateError> {
        specwright_host_core::sys::RealSyscalls.step_ids(state)
    }

    fn has_bundle(&self, state: &StateDir, id: &str) -> Result<bool, StateError> {
        specwright_host_core::sys::RealSyscalls.has_bundle(state, id)
    }

    fn create_bundle(&self, state: &StateDir, id: &str) -> Result<specwright_host_core::state::Bundle, StateError> {
        specwright_host_core::sys::RealSyscalls.create_bundle(state, id)
    }

    fn write_bundle_file(
        &self,
        bundle: &specwright_host_core::state::Bundle,
        name: &str,
        bytes: &[u8],
    ) -> Result<PathBuf, StateError> {
        specwright_host_core::sys::RealSyscalls.write_bundle_file(bundle, name, bytes)
    }

    fn remove_bundle(&self, state: &StateDir, id: &str) -> Result<(), StateError> {
        specwright_host_core::sys::RealSyscalls.remove_bundle(state, id)
    }

    fn open_given_bundle(&self, dir: &Path) -> Result<specwright_host_core::state::GivenBundle, StateError> {
        specwright_host_core::sys::RealSyscalls.open_given_bundle(dir)
    }

    fn write_config(
        &self,
        bundle: &specwright_host_core::state::GivenBundle,
        bytes: &[u8],
    ) -> Result<PathBuf, StateError> {
        specwright_host_core::sys::RealSyscalls.write_config(bundle, bytes)
    }

    fn remove_given_bundle(&self, bundle: specwright_host_core::state::GivenBundle) {
        specwright_host_core::sys::RealSyscalls.remove_given_bundle(bundle)
    }

    fn open_engine_bundle(&self, dir: &Path) -> Result<specwright_host_core::state::GivenBundle, StateError> {
        specwright_host_core::sys::RealSyscalls.open_engine_bundle(dir)
    }

    fn check_trusted_dir(&self, dir: &Path) -> Result<(), StateError> {
        specwright_host_core::sys::RealSyscalls.check_trusted_dir(dir)
    }

    fn check_fixed_path(&self, path: &Path, owners: &[u32]) -> Result<(), StateError> {
        specwright_host_core::sys::RealSyscalls.check_fixed_path(path, owners)
    }

    fn read_engine_config(
        &self,
        bundle: &specwright_host_core::state::GivenBundle,
        max: u64,
    ) -> Result<specwright_host_core::state::EngineConfig, StateError> {
        specwright_host_core::sys::RealSyscalls.read_engine_config(bundle, max)
    }

    fn write_engine_config(
        &self,
        bundle: &specwright_host_core::state::GivenBundle,
        bytes: &[u8],
        ownership: specwright_host_core::state::Ownership,
    ) -> Result<PathBuf, StateError> {
        specwright_host_core::sys::RealSyscalls.write_engine_config(bundle, bytes, ownership)
    }

    fn read_reviewed(&self, state: &StateDir, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        specwright_host_core::sys::RealSyscalls.read_reviewed(state, key)
    }

    fn write_reviewed(
        &self,
        state: &StateDir,
        key: &str,
        kept: &[u8],
        config: Option<&[u8]>,
    ) -> Result<PathBuf, StateError> {
        specwright_host_core::sys::RealSyscalls.write_reviewed(state, key, kept, config)
    }

    fn remove_reviewed(&self, state: &StateDir, key: &str, keep_bundle: bool) -> Result<(), StateError> {
        specwright_host_core::sys::RealSyscalls.remove_reviewed(state, key, keep_bundle)
    }

    fn reviewed_keys(&self, state: &StateDir) -> Result<Vec<(String, std::time::SystemTime)>, StateError> {
        specwright_host_core::sys::RealSyscalls.reviewed_keys(state)
    }

    fn open_state_dir(&self, root: &Path) -> Result<StateDir, StateError> {
        specwright_host_core::sys::RealSyscalls.open_state_dir(root)
    }

    fn open_audit(&self, state: &StateDir) -> Result<specwright_host_core::audit::Audit, StateError> {
        specwright_host_core::sys::RealSyscalls.open_audit(state)
    }

    fn open_cache_dir(&self, state: &StateDir) -> Result<PathBuf, StateError> {
        specwright_host_core::sys::RealSyscalls.open_cache_dir(state)
    }

    fn is_directory(&self, path: &Path) -> Result<bool, nix::errno::Errno> {
        specwright_host_core::sys::RealSyscalls.is_directory(path)
    }

    /// The model reads no host file.
    fn read_host_file(&self, _path: &Path, _bound: u64) -> std::io::Result<Option<String>> {
        Ok(None)
    }

    fn exists(&self, path: &Path) -> Result<bool, nix::errno::Errno> {
        specwright_host_core::sys::RealSyscalls.exists(path)
    }

    /// The model's file systems have no flags.
    fn mount_flags(&self, _path: &Path) -> Result<u64, nix::errno::Errno> {
        Ok(0)
    }

    /// The model lists no host directory.
    fn list_dir(&self, _path: &Path) -> std::io::Result<Option<Vec<String>>> {
        Ok(None)
    }

    fn node_info(&self, path: &Path) -> Result<specwright_host_core::sys::NodeInfo, nix::errno::Errno> {
        specwright_host_core::sys::RealSyscalls.node_info(path)
    }

    fn random(&self) -> Result<u64, nix::errno::Errno> {
        specwright_host_core::sys::RealSyscalls.random()
    }

    /// Reservations are the state dir's own files, in the test's directory.
    fn reserve_mcs_level(
        &self,
        state: &StateDir,
        id: &str,
        level: &specwright_core::selinux::McsLevel,
    ) -> Result<bool, StateError> {
        state.reserve_mcs_level(id, level)
    }

    fn release_mcs_level(
        &self,
        state: &StateDir,
        id: &str,
        level: &specwright_core::selinux::McsLevel,
    ) -> Result<(), StateError> {
        state.release_mcs_level(id, level)
    }

    fn unmount(&self, target: &Path, _flags: nix::mount::MntFlags) -> Result<(), nix::errno::Errno> {
        let mut state = self.lock();
        match state.mounted.get_mut(target) {
            None => Err(nix::errno::Errno::EINVAL),
            Some(1) => {
                state.mounted.remove(target);
                Ok(())
            }
            Some(n) => {
                *n -= 1;
                Ok(())
            }
        }
    }
}
