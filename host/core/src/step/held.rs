//! What a step holds and how it is written down: every mountpoint is
//! recorded before it is made and forgotten only once it is gone; the
//! runner's rootfs bind and its container go through the same record.

use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

use nix::errno::Errno;
use nix::mount::MsFlags;
use nix::sys::stat::{fstat, SFlag};
use serde_json::{json, Value};
use specwright_core::request::Mountable;
use specwright_core::HostError;

use super::release::{release_mountpoint, release_mounts, ReleaseError, ReleaseReport, RELEASE_WORKERS};
use super::StepHost;
use crate::mount::mount_entry;
use crate::resolve::Resolved;
use crate::state::{ContainerRecord, HeldMount, MountpointKind, StateError, MAX_MOUNTPOINTS};

/// How many names past the step's own count a new mountpoint tries
/// before giving up (each taken one was left by another process).
const FRESH_NAME_TRIES: usize = 1024;

impl StepHost {
    /// Records a new mountpoint for the step (before anything is made) and
    /// creates it.
    pub(super) fn hold_mountpoint(
        &mut self,
        kind: MountpointKind,
        stacked: usize,
    ) -> Result<(String, PathBuf), HostError> {
        if self.options.mounting == super::Mounting::Engine {
            return Err(HostError::Refused(
                "the engine made this container's mounts (specwright-runc): a policy may inspect them, not mount"
                    .to_string(),
            ));
        }
        if self.record.mounts.len() >= MAX_MOUNTPOINTS {
            return Err(HostError::Refused(format!(
                "step {} already holds {MAX_MOUNTPOINTS} mountpoints, the most a step may",
                self.id
            )));
        }
        // A name another process left (a crash, a reused id) is passed over.
        let first = self.record.mounts.len();
        for n in first..first + FRESH_NAME_TRIES {
            let name = format!("{}-{n}", self.id);
            if self.record.mounts.iter().any(|m| m.name == name) {
                continue;
            }
            let path = self.state.mounts_dir().join(&name);
            self.record.mounts.push(HeldMount {
                name: name.clone(),
                kind,
                stacked,
            });
            // Recorded before anything is made, so a crash from here on is recoverable.
            if let Err(e) = self.write_record() {
                self.record.mounts.pop();
                return Err(HostError::Failed(e.to_string()));
            }
            let created = match kind {
                MountpointKind::Dir => self.sys.create_dir(&path),
                MountpointKind::File => self.sys.create_file(&path),
                MountpointKind::FileInDir => self.sys.create_dir(&path).and_then(|()| {
                    self.sys.create_file(&kind.target(&path)).inspect_err(|_| {
                        // Nothing is mounted yet: the empty directory goes.
                        let _ = self.sys.remove_dir(&path);
                    })
                }),
            };
            match created {
                Ok(()) => return Ok((name, path)),
                Err(Errno::EEXIST) => self.forget_mount(&name),
                Err(e) => {
                    self.forget_mount(&name);
                    return Err(HostError::Failed(format!(
                        "creating mountpoint {}: {e}",
                        path.display()
                    )));
                }
            }
        }
        Err(HostError::Failed(format!(
            "no free mountpoint name for step {} under {}",
            self.id,
            self.state.mounts_dir().display()
        )))
    }

    /// Undoes a partly made mountpoint; returns what to add to the error
    /// when undoing failed too (the mountpoint then stays recorded).
    pub(super) fn undo_mountpoint(&mut self, name: &str, path: &Path, kind: MountpointKind, mounted: usize) -> String {
        match release_mountpoint(self.sys.as_ref(), path, kind, mounted) {
            Ok(_) => {
                self.forget_mount(name);
                String::new()
            }
            Err(e) => format!("; undoing it also failed: {e}"),
        }
    }

    pub(super) fn write_record(&self) -> Result<(), StateError> {
        if self.record.holds_anything() {
            self.sys.write_record(&self.state, &self.record)
        } else {
            self.sys.remove_record(&self.state, &self.id)
        }
    }

    pub(super) fn forget_mount(&mut self, name: &str) {
        self.record.mounts.retain(|m| m.name != name);
        if let Err(e) = self.write_record() {
            // The stale entry names a mountpoint that no longer exists:
            // release skips it.
            tracing::warn!(step = %self.id, error = %e, "updating the step record");
        }
    }

    /// With `pin_selectors`, binds the resolved object itself (through its
    /// descriptor, not its path) onto a mountpoint of its own.
    pub(super) fn maybe_pin(&mut self, resolved: Resolved) -> Result<String, HostError> {
        if !self.options.pin_selectors {
            return Ok(resolved.path);
        }
        let (kind, source) = match &resolved.object {
            Some(object) => {
                let stat = fstat(object.as_fd()).map_err(|e| HostError::Failed(format!("{}: {e}", resolved.path)))?;
                let kind = if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
                    MountpointKind::Dir
                } else {
                    MountpointKind::File
                };
                (kind, format!("/proc/self/fd/{}", object.as_raw_fd()))
            }
            // A dry run's plan: the pin of a directory at the planned path.
            None if resolved.planned => (MountpointKind::Dir, resolved.path.clone()),
            None => {
                return Err(HostError::Failed(format!(
                    "{} does not exist, so it cannot be pinned (--pin-selectors)",
                    resolved.path
                )))
            }
        };
        let (name, path) = self.hold_mountpoint(kind, 1)?;
        if let Err(e) = self
            .sys
            .mount(Some(&source), &path, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)
        {
            let undo = self.undo_mountpoint(&name, &path, kind, 0);
            return Err(HostError::Failed(format!(
                "pinning {} on {}: {e}{undo}",
                resolved.path,
                path.display()
            )));
        }
        Ok(path.display().to_string())
    }

    /// Binds the object `resolved` names, through its descriptor, onto a
    /// mountpoint of its own (BuildKit v0.32's pinned selector); naming
    /// nothing is an error. Returns the mountpoint and where the object is
    /// bound (for a file, the file inside it).
    pub(super) fn pin(&mut self, resolved: Resolved) -> Result<(String, PathBuf, MountpointKind), HostError> {
        let (kind, source) = match &resolved.object {
            Some(object) => {
                let stat = fstat(object.as_fd()).map_err(|e| HostError::Failed(format!("{}: {e}", resolved.path)))?;
                let kind = if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
                    MountpointKind::Dir
                } else {
                    MountpointKind::FileInDir
                };
                (kind, format!("/proc/self/fd/{}", object.as_raw_fd()))
            }
            None if resolved.planned => (MountpointKind::Dir, resolved.path.clone()),
            None => {
                return Err(HostError::Failed(format!(
                    "open {}: no such file or directory",
                    resolved.path
                )))
            }
        };
        let (name, path) = self.hold_mountpoint(kind, 1)?;
        let target = kind.target(&path);
        if let Err(e) = self
            .sys
            .mount(Some(&source), &target, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)
        {
            let undo = self.undo_mountpoint(&name, &path, kind, 0);
            return Err(HostError::Failed(format!(
                "pinning {} on {}: {e}{undo}",
                resolved.path,
                target.display()
            )));
        }
        Ok((name, path, kind))
    }

    /// Binds `source` (read-only when asked) on a mountpoint of the step,
    /// recorded like every other mount: the runner's rootfs.
    pub fn bind_rootfs(&mut self, source: &Path, readonly: bool) -> Result<PathBuf, HostError> {
        self.actor = "host".to_string();
        let mut options = vec!["rbind".to_string()];
        if readonly {
            options.push("ro".to_string());
        }
        let entry = Mountable {
            kind: "bind".to_string(),
            source: source.display().to_string(),
            options,
        };
        let (name, path) = self.hold_mountpoint(MountpointKind::Dir, 1)?;
        if let Err(e) = mount_entry(self.sys.as_ref(), &entry, &path) {
            let undo = self.undo_mountpoint(&name, &path, MountpointKind::Dir, 0);
            return Err(HostError::Failed(format!(
                "binding {} on {}: {e}{undo}",
                source.display(),
                path.display()
            )));
        }
        Ok(path)
    }

    /// Records the container the runner is about to start (before it
    /// starts), so that `gc` kills and deletes it should the runner die.
    pub fn record_container(&mut self, runtime: &Path) -> Result<(), HostError> {
        self.record.container = Some(ContainerRecord {
            runtime: runtime.to_path_buf(),
            id: self.id.clone(),
        });
        self.write_record().map_err(|e| HostError::Failed(e.to_string()))
    }

    /// The container's run is over, however it ended: the runtime is told
    /// to delete it (a runtime killed while starting it leaves its state
    /// behind; one that finished has deleted it already, which is fine),
    /// then the record forgets it.
    pub fn end_container(&mut self) -> Result<(), ReleaseError> {
        let Some(container) = self.record.container.clone() else {
            return Ok(());
        };
        let start = Instant::now();
        let deleted = self.sys.delete_container(&container.runtime, &container.id);
        let shown = deleted.as_ref().err().map(ToString::to_string);
        self.audit.record(
            &self.id,
            &self.actor,
            "delete-container",
            json!({"runtime": container.runtime, "id": container.id}),
            shown.as_deref().map_or(Ok(Value::Null), Err),
            start.elapsed(),
        );
        deleted.map_err(|source| ReleaseError::Container {
            id: self.id.clone(),
            source,
        })?;
        self.record.container = None;
        self.write_record()?;
        Ok(())
    }

    pub(super) fn release_held(&mut self) -> Result<ReleaseReport, ReleaseError> {
        self.actor = "host".to_string();
        // Nothing runs on after its mounts are gone.
        self.end_container()?;
        let start = Instant::now();
        let record = std::mem::take(&mut self.record.mounts);
        let workers = if self.sys.releases_concurrently() {
            RELEASE_WORKERS
        } else {
            1
        };
        let (remaining, report, failures) = release_mounts(&self.state, self.sys.as_ref(), &record, workers);
        self.audit.record(
            &self.id,
            "host",
            "release-step",
            json!({"mountpoints": record.len()}),
            if failures.is_empty() {
                Ok(Value::Null)
            } else {
                Err("some mountpoints could not be released")
            },
            start.elapsed(),
        );
        self.record.mounts = remaining;
        let level = self.release_level();
        self.write_record()?;
        if failures.is_empty() {
            level.map(|()| report)
        } else {
            Err(ReleaseError::Unmount {
                id: self.id.clone(),
                failures,
            })
        }
    }
}
