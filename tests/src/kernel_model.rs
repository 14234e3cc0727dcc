//! A model of the kernel's mount table for property tests of the host's
//! bookkeeping.

use std::path::{Path, PathBuf};

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

impl specwright_host_core::sys::Kernel for KernelModel {
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

/// Locks, records and bundles are the state dir's own files, in the test's
/// directory: the store's real operations.
impl specwright_host_core::sys::Store for KernelModel {}
