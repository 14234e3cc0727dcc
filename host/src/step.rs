//! What the host does for one step: the privileged operations a policy
//! may ask for, each checked against what the request handed out, and the
//! ownership of every mount they make.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use specwright_core::request::{Mountable, Request};
use specwright_core::{HostError, Mounter};

use crate::mount::{mount_entry, unmount_all};
use crate::resolve::resolve_in_root;
use crate::state::{HeldMount, StateDir, StateError, StepRecord};
use crate::sys::Syscalls;

/// A materialized request mount, as the host tracks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceId(usize);

/// A temporary mountpoint, as the host tracks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootId(usize);

#[derive(Debug)]
struct Root {
    name: String,
    path: PathBuf,
    released: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("step {id}: {}", failures.join("; "))]
    Unmount { id: String, failures: Vec<String> },
    #[error(transparent)]
    State(#[from] StateError),
}

/// The privileged side of one step.
pub struct StepHost {
    id: String,
    state: StateDir,
    sys: Arc<dyn Syscalls>,
    /// What each request mount materializes to, by request index.
    request_mounts: Vec<Vec<Mountable>>,
    /// Request index of each materialized handle.
    sources: Vec<usize>,
    roots: Vec<Root>,
    record: StepRecord,
    /// Whether mounts stay when this is dropped (the step succeeded).
    keep: bool,
}

impl StepHost {
    /// Starts a step; fails if the step already holds mounts.
    pub fn new(
        state: StateDir,
        sys: Arc<dyn Syscalls>,
        request: &Request,
    ) -> Result<StepHost, HostError> {
        if state
            .read_record(&request.id)
            .map_err(|e| HostError::Failed(e.to_string()))?
            .is_some()
        {
            return Err(HostError::Refused(format!(
                "step {} already holds mounts; release it first (specwright release {})",
                request.id, request.id
            )));
        }
        let request_mounts = request
            .mounts
            .iter()
            .map(|m| {
                m.materialize()
                    .map_err(|e| HostError::Refused(e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        Ok(StepHost {
            id: request.id.clone(),
            record: StepRecord {
                id: request.id.clone(),
                pid: std::process::id(),
                mounts: Vec::new(),
            },
            state,
            sys,
            request_mounts,
            sources: Vec::new(),
            roots: Vec::new(),
            keep: false,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Expands request mount `index`.
    pub fn materialize(&mut self, index: u32) -> Result<(SourceId, Vec<Mountable>), HostError> {
        let i = index as usize;
        let mounts = self.request_mounts.get(i).ok_or_else(|| {
            HostError::Refused(format!(
                "materialize: mount index {index} is out of range (the request has {} mounts)",
                self.request_mounts.len()
            ))
        })?;
        let mounts = mounts.clone();
        self.sources.push(i);
        Ok((SourceId(self.sources.len() - 1), mounts))
    }

    fn source_entry(
        &self,
        source: SourceId,
        entry: u32,
        op: &str,
    ) -> Result<&Mountable, HostError> {
        let index = *self
            .sources
            .get(source.0)
            .ok_or_else(|| HostError::Refused(format!("{op}: unknown source handle")))?;
        self.request_mounts[index]
            .get(entry as usize)
            .ok_or_else(|| {
                HostError::Refused(format!(
                    "{op}: entry {entry} is out of range (request mount {index} has {} entries)",
                    self.request_mounts[index].len()
                ))
            })
    }

    /// Mounts that a source handle stands for.
    pub fn source_mounts(&self, source: SourceId) -> Result<Vec<Mountable>, HostError> {
        let index = *self
            .sources
            .get(source.0)
            .ok_or_else(|| HostError::Refused("mounts: unknown source handle".to_string()))?;
        Ok(self.request_mounts[index].clone())
    }

    /// Resolves a selector directly on the source of a read-write bind entry.
    pub fn resolve_in_source(
        &mut self,
        source: SourceId,
        entry: u32,
        selector: &str,
    ) -> Result<String, HostError> {
        let mount = self.source_entry(source, entry, "resolve")?;
        if !mount.is_bind() || mount.is_readonly() {
            return Err(HostError::Refused(format!(
                "resolve: entry {entry} is a {} mount{}; only a read-write bind can be resolved without mounting it",
                mount.kind,
                if mount.is_readonly() { " (read-only)" } else { "" }
            )));
        }
        resolve_in_root(Path::new(&mount.source), selector)
            .map_err(|e| HostError::Failed(e.to_string()))
    }

    /// Mounts the given entries of a source on a fresh temporary mountpoint.
    pub fn mount_temporary(
        &mut self,
        source: SourceId,
        entries: &[u32],
    ) -> Result<RootId, HostError> {
        if entries.is_empty() {
            return Err(HostError::Refused(
                "mount-temporary: no entries given".to_string(),
            ));
        }
        let mounts = entries
            .iter()
            .map(|&e| self.source_entry(source, e, "mount-temporary").cloned())
            .collect::<Result<Vec<_>, _>>()?;
        let (name, path) = self.fresh_mountpoint()?;
        self.record.mounts.push(HeldMount {
            name: name.clone(),
            stacked: mounts.len(),
        });
        // Recorded before anything is made, so a crash from here on is recoverable.
        if let Err(e) = self.state.write_record(&self.record) {
            self.record.mounts.pop();
            return Err(HostError::Failed(e.to_string()));
        }
        if let Err(e) = self.sys.create_dir(&path) {
            self.forget_mount(&name);
            return Err(HostError::Failed(format!("mkdir {}: {e}", path.display())));
        }
        for (done, mount) in mounts.iter().enumerate() {
            if let Err(e) = mount_entry(self.sys.as_ref(), mount, &path) {
                let undo = unmount_all(self.sys.as_ref(), &path, done)
                    .map_err(|u| {
                        format!("; undoing it also failed: umount {}: {u}", path.display())
                    })
                    .and_then(|_| {
                        self.sys.remove_dir(&path).map_err(|r| {
                            format!("; undoing it also failed: rmdir {}: {r}", path.display())
                        })
                    });
                let suffix = match undo {
                    Ok(()) => {
                        self.forget_mount(&name);
                        String::new()
                    }
                    Err(s) => s,
                };
                return Err(HostError::Failed(format!(
                    "mount {} ({}) on {}: {e}{suffix}",
                    mount.source,
                    mount.kind,
                    path.display()
                )));
            }
        }
        self.roots.push(Root {
            name,
            path,
            released: false,
        });
        Ok(RootId(self.roots.len() - 1))
    }

    fn forget_mount(&mut self, name: &str) {
        self.record.mounts.retain(|m| m.name != name);
        // Best effort: a stale entry for a mountpoint that no longer exists
        // is skipped by release.
        let _ = self.write_or_remove_record();
    }

    fn write_or_remove_record(&self) -> Result<(), StateError> {
        if self.record.mounts.is_empty() {
            self.state.remove_record(&self.id)
        } else {
            self.state.write_record(&self.record)
        }
    }

    fn fresh_mountpoint(&self) -> Result<(String, PathBuf), HostError> {
        for n in self.record.mounts.len().. {
            let name = format!("{}-{n}", self.id);
            let path = self.state.mounts_dir().join(&name);
            if std::fs::symlink_metadata(&path).is_err() {
                return Ok((name, path));
            }
            if n > self.record.mounts.len() + 1024 {
                break;
            }
        }
        Err(HostError::Failed(format!(
            "no free mountpoint name for step {} under {}",
            self.id,
            self.state.mounts_dir().display()
        )))
    }

    fn root(&self, root: RootId, op: &str) -> Result<&Root, HostError> {
        match self.roots.get(root.0) {
            Some(r) if !r.released => Ok(r),
            Some(_) => Err(HostError::Refused(format!(
                "{op}: the mountpoint was already released"
            ))),
            None => Err(HostError::Refused(format!(
                "{op}: unknown mountpoint handle"
            ))),
        }
    }

    pub fn root_path(&self, root: RootId) -> Result<String, HostError> {
        Ok(self.root(root, "path")?.path.display().to_string())
    }

    pub fn resolve_in_root(&mut self, root: RootId, selector: &str) -> Result<String, HostError> {
        let path = &self.root(root, "resolve")?.path;
        resolve_in_root(path, selector).map_err(|e| HostError::Failed(e.to_string()))
    }

    /// Unmounts one temporary mountpoint now.
    pub fn release_root(&mut self, root: RootId) -> Result<(), HostError> {
        let (name, path) = {
            let r = self.root(root, "release")?;
            (r.name.clone(), r.path.clone())
        };
        let stacked = self
            .record
            .mounts
            .iter()
            .find(|m| m.name == name)
            .map_or(0, |m| m.stacked);
        release_mountpoint(self.sys.as_ref(), &path, stacked).map_err(HostError::Failed)?;
        self.roots[root.0].released = true;
        self.forget_mount(&name);
        Ok(())
    }

    /// Whether the step holds any mount.
    pub fn holds_mounts(&self) -> bool {
        !self.record.mounts.is_empty()
    }

    /// Keeps every mount for the step's lifetime; `specwright release` undoes them.
    pub fn keep(mut self) {
        self.keep = true;
    }

    /// Unmounts and removes everything the step holds, reporting every failure.
    pub fn release_all(mut self) -> Result<(), ReleaseError> {
        self.keep = true;
        release_step(&self.state, self.sys.as_ref(), &self.id)
    }
}

impl Drop for StepHost {
    /// A step that was neither kept nor released (an error, a trap, a
    /// panic on the way) leaves nothing mounted.
    fn drop(&mut self) {
        if !self.keep && self.holds_mounts() {
            if let Err(e) = release_step(&self.state, self.sys.as_ref(), &self.id) {
                eprintln!(
                    "specwright: releasing step {} after a failure: {e}",
                    self.id
                );
            }
        }
    }
}

fn release_mountpoint(sys: &dyn Syscalls, path: &Path, stacked: usize) -> Result<(), String> {
    unmount_all(sys, path, stacked).map_err(|e| format!("umount {}: {e}", path.display()))?;
    match sys.remove_dir(path) {
        Ok(()) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(format!("rmdir {}: {e}", path.display())),
    }
}

/// Releases everything step `id` holds, from its record: the mountpoints
/// are unmounted concurrently and every failure is reported. Idempotent;
/// what could not be released stays recorded for the next attempt.
pub fn release_step(state: &StateDir, sys: &dyn Syscalls, id: &str) -> Result<(), ReleaseError> {
    let Some(mut record) = state.read_record(id)? else {
        return Ok(());
    };
    let results: Vec<(HeldMount, Result<(), String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = record
            .mounts
            .iter()
            .map(|held| {
                scope.spawn(move || {
                    // read_record has checked every name is plain.
                    let result = match state.mountpoint(&held.name) {
                        Some(path) => release_mountpoint(sys, &path, held.stacked),
                        None => Err(format!("bad mountpoint name {:?}", held.name)),
                    };
                    (held.clone(), result)
                })
            })
            .collect();
        handles
            .into_iter()
            .zip(record.mounts.iter())
            .map(|(h, held)| {
                h.join()
                    .unwrap_or_else(|_| (held.clone(), Err("release thread panicked".to_string())))
            })
            .collect()
    });
    let mut failures = Vec::new();
    record.mounts.clear();
    for (held, result) in results {
        if let Err(e) = result {
            failures.push(e);
            record.mounts.push(held);
        }
    }
    if record.mounts.is_empty() {
        state.remove_record(id)?;
    } else {
        state.write_record(&record)?;
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(ReleaseError::Unmount {
            id: id.to_string(),
            failures,
        })
    }
}

/// The native path: the pure pipelines in `specwright_core` drive the host directly.
impl Mounter for StepHost {
    type Source = SourceId;
    type Root = RootId;

    fn materialize(&mut self, index: u32) -> Result<(SourceId, Vec<Mountable>), HostError> {
        StepHost::materialize(self, index)
    }

    fn resolve_in_source(
        &mut self,
        source: &SourceId,
        entry: u32,
        selector: &str,
    ) -> Result<String, HostError> {
        StepHost::resolve_in_source(self, *source, entry, selector)
    }

    fn mount_temporary(&mut self, source: &SourceId, entries: &[u32]) -> Result<RootId, HostError> {
        StepHost::mount_temporary(self, *source, entries)
    }

    fn resolve_in_root(&mut self, root: &RootId, selector: &str) -> Result<String, HostError> {
        StepHost::resolve_in_root(self, *root, selector)
    }
}
