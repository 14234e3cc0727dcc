//! A model of the kernel's mount table for property tests of the host's
//! bookkeeping, deciding the operations a recording implementation records.

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::MsFlags;
use specwright_host_core::sys::Op;

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

    fn create(&self, path: &Path) -> Result<(), Errno> {
        let mut state = self.lock();
        if !state.entries.insert(path.to_path_buf()) {
            return Err(Errno::EEXIST);
        }
        Ok(())
    }

    fn remove(&self, path: &Path) -> Result<(), Errno> {
        let mut state = self.lock();
        if state.mounted.contains_key(path) {
            return Err(Errno::EBUSY);
        }
        if !state.entries.remove(path) {
            return Err(Errno::ENOENT);
        }
        Ok(())
    }
}

impl KernelModel {
    /// A remount or a propagation change needs a mount; a new mount a
    /// mountpoint that exists. Mounts stack.
    fn mount(&self, target: &Path, flags: MsFlags) -> Result<(), Errno> {
        let mut state = self.lock();
        let changes_a_mount =
            MsFlags::MS_REMOUNT | MsFlags::MS_SHARED | MsFlags::MS_PRIVATE | MsFlags::MS_SLAVE | MsFlags::MS_UNBINDABLE;
        if flags.intersects(changes_a_mount) {
            return if state.mounted.contains_key(target) {
                Ok(())
            } else {
                Err(Errno::EINVAL)
            };
        }
        if !state.entries.contains(target) {
            return Err(Errno::ENOENT);
        }
        *state.mounted.entry(target.to_path_buf()).or_default() += 1;
        Ok(())
    }

    fn unmount(&self, target: &Path) -> Result<(), Errno> {
        let mut state = self.lock();
        match state.mounted.get_mut(target) {
            None => Err(Errno::EINVAL),
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

/// The model decides the mount table's operations and what it stands in
/// for (the mounts below a mountpoint, a container's delete, host files,
/// directories and file-system flags, all planned as a dry run plans
/// them); resolution, reads in a root and node facts look at the test's
/// real directories.
impl specwright_host_core::sys::Model for KernelModel {
    fn outcome(&self, op: &Op) -> Option<Result<(), Errno>> {
        Some(match op {
            Op::CreateDir { path } | Op::CreateFile { path } => self.create(path),
            Op::RemoveDir { path } | Op::RemoveFile { path } => self.remove(path),
            Op::Mount { target, flags, .. } => self.mount(target, MsFlags::from_bits_truncate(*flags)),
            Op::Unmount { target, .. } => self.unmount(target),
            Op::HasSubmounts { .. }
            | Op::DeleteContainer { .. }
            | Op::ReadHostFile { .. }
            | Op::ListDir { .. }
            | Op::MountFlags { .. } => Ok(()),
            _ => return None,
        })
    }
}
