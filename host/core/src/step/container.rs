//! The end of a container a step ran to completion: runc and crun remove
//! the container themselves as `run` returns, so the runner asks them to
//! delete it only when its state is still there.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::release::ReleaseError;
use super::StepHost;

/// Where a runtime keeps its containers' state when it runs as root with
/// its built-in `--root`: `/run/runc` for runc, `/run/crun` for crun. A
/// container's state is the directory named after its id there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeStateRoot(&'static str);

impl RuntimeStateRoot {
    /// The state root of `runtime` (by its file name), when it is one whose
    /// layout is known and this process is root; `None` otherwise (such a
    /// runtime is always told to delete).
    pub fn of(runtime: &Path, euid: u32) -> Option<RuntimeStateRoot> {
        if euid != 0 {
            return None;
        }
        match runtime.file_name()?.to_str()? {
            "runc" => Some(RuntimeStateRoot("/run/runc")),
            "crun" => Some(RuntimeStateRoot("/run/crun")),
            _ => None,
        }
    }

    pub fn path(&self) -> &Path {
        Path::new(self.0)
    }

    /// The state directory of container `id`.
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.path().join(id)
    }
}

impl StepHost {
    /// The container's run returned by itself (the runtime exited; it was
    /// not killed). When the runtime's state root is there and the
    /// container's directory in it is gone, the runtime deleted the
    /// container as `run` returned and the record just forgets it;
    /// otherwise the runtime is told to delete it ([`Self::end_container`]).
    pub fn end_finished_container(&mut self) -> Result<(), ReleaseError> {
        let Some(container) = self.record.container.clone() else {
            return Ok(());
        };
        let euid = nix::unistd::geteuid().as_raw();
        let gone = RuntimeStateRoot::of(&container.runtime, euid).is_some_and(|root| {
            self.sys.exists(root.path()) == Ok(true) && self.sys.exists(&root.container_dir(&container.id)) == Ok(false)
        });
        if !gone {
            return self.end_container();
        }
        self.audit.record(
            &self.id,
            &self.actor,
            "delete-container",
            json!({"runtime": container.runtime, "id": container.id}),
            Ok(json!("deleted by the runtime as its run returned")),
            std::time::Duration::ZERO,
        );
        self.record.container = None;
        self.write_record()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_runc_and_crun_run_as_root_have_a_known_state_root() {
        let root = RuntimeStateRoot::of(Path::new("/usr/sbin/runc"), 0).unwrap();
        assert_eq!(root.container_dir("step-1"), Path::new("/run/runc/step-1"));
        assert_eq!(
            RuntimeStateRoot::of(Path::new("/usr/bin/crun"), 0).map(|r| r.path().to_path_buf()),
            Some(PathBuf::from("/run/crun"))
        );
        assert_eq!(RuntimeStateRoot::of(Path::new("/usr/sbin/runc"), 1000), None);
        assert_eq!(RuntimeStateRoot::of(Path::new("/opt/bin/youki"), 0), None);
    }
}
