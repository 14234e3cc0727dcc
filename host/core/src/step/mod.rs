//! What the host does for one step: the privileged operations a policy
//! may ask for, each checked against what the request handed out and
//! audited, and the ownership of every mount they make.

use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use nix::mount::MsFlags;
use nix::sys::stat::{fstat, SFlag};
use serde_json::{json, Value};
use specwright_core::mounts::clean_absolute;
use specwright_core::request::{Mountable, Request};
use specwright_core::{HostError, Mounter};

use crate::audit::Audit;
use crate::mount::mount_entry;
use crate::resolve::{resolve_in_root, Resolved};
use crate::state::{
    ContainerRecord, HeldMount, MountpointKind, Owner, StateDir, StateError, StepLock, StepRecord, MAX_MOUNTPOINTS,
    MAX_STACKED,
};
use crate::sys::Syscalls;

mod release;

pub use release::{gc, release_locked, release_step, GcOutcome, ReleaseError, ReleaseReport};
use release::{release_mountpoint, release_mounts, RELEASE_WORKERS};

/// What a policy may ask of the host in one step, beyond which every
/// further request is refused (and the step then fails and is released).
pub mod limits {
    /// materialize, mount-temporary, resolve and release calls.
    pub const MAX_HOST_CALLS: usize = 4096;
    /// Materialized handles a step may hold.
    pub const MAX_SOURCES: usize = 1024;
    /// The longest selector resolved (the kernel's PATH_MAX).
    pub const MAX_SELECTOR_BYTES: usize = 4096;
    /// Audit log bytes one step may write for a policy's requests.
    pub const MAX_AUDIT_BYTES: usize = 4 << 20;
}

/// Every absolute path a request names on the host: mount sources, the
/// path-like values of mount options (`lowerdir=/a:/b`), resolv.conf,
/// hosts and the network namespace.
fn request_host_paths(request: &Request) -> Vec<String> {
    let mut paths = Vec::new();
    let mut add = |p: &str| {
        if p.starts_with('/') && !paths.iter().any(|q| q == p) {
            paths.push(p.to_string());
        }
    };
    for m in &request.mounts {
        if let Some(source) = &m.source {
            add(source);
        }
        for mm in m.mountable.iter().flatten() {
            add(&mm.source);
            for option in &mm.options {
                if let Some((_, value)) = option.split_once('=') {
                    value.split(':').for_each(&mut add);
                }
            }
        }
    }
    add(&request.resolv_conf);
    add(&request.hosts_file);
    if let specwright_core::request::Network::Path { path } = &request.network {
        add(path);
    }
    paths
}

fn check_selector(selector: &str) -> Result<(), HostError> {
    if selector.len() > limits::MAX_SELECTOR_BYTES {
        return Err(HostError::Refused(format!(
            "a selector of {} bytes; at most {}",
            selector.len(),
            limits::MAX_SELECTOR_BYTES
        )));
    }
    Ok(())
}

/// A selector as the audit log shows it: cut at the longest one resolved.
fn shown(selector: &str) -> &str {
    let mut end = selector.len().min(limits::MAX_SELECTOR_BYTES);
    while !selector.is_char_boundary(end) {
        end -= 1;
    }
    &selector[..end]
}

/// A materialized request mount, as the host tracks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceId(usize);

/// A temporary mountpoint, as the host tracks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootId(usize);

/// How the host treats one step.
#[derive(Debug, Clone, Copy)]
pub struct StepOptions {
    /// Plan only: record operations, perform none, write no state.
    pub dry_run: bool,
    /// Bind-mount every resolved selector onto its own mountpoint, by file
    /// descriptor, and hand the runtime that mountpoint.
    pub pin_selectors: bool,
    /// The process the step belongs to, for `gc`.
    pub owner: Owner,
}

impl Default for StepOptions {
    fn default() -> Self {
        StepOptions {
            dry_run: false,
            pin_selectors: false,
            owner: Owner::this_process(),
        }
    }
}

#[derive(Debug)]
struct Root {
    name: String,
    path: PathBuf,
    released: bool,
}

/// The privileged side of one step.
pub struct StepHost {
    id: String,
    state: StateDir,
    sys: Arc<dyn Syscalls>,
    audit: Arc<Audit>,
    options: StepOptions,
    /// Who is asking, for errors and the audit trail.
    actor: String,
    /// What each request mount materializes to, by request index.
    request_mounts: Vec<Vec<Mountable>>,
    /// Request index of each materialized handle.
    sources: Vec<usize>,
    roots: Vec<Root>,
    record: StepRecord,
    /// The step is this process's while this is held.
    lock: Option<StepLock>,
    /// Whether mounts stay when this is dropped (the step succeeded).
    keep: bool,
    /// Host paths the request names: what `canonical_path` may look at.
    request_paths: Vec<String>,
    /// Host calls made and audit bytes written for this step (see [`limits`]).
    calls: usize,
    audit_bytes: usize,
}

fn mountable_json(m: &Mountable) -> Value {
    json!({"type": m.kind, "source": m.source, "options": m.options})
}

impl StepHost {
    /// Starts step `request.id`, which `lock` holds for this process
    /// (a planned lock for a dry run); fails if the step already holds
    /// mounts from an earlier run.
    pub fn new(
        state: StateDir,
        sys: Arc<dyn Syscalls>,
        audit: Arc<Audit>,
        options: StepOptions,
        request: &Request,
        lock: StepLock,
    ) -> Result<StepHost, HostError> {
        if lock.id() != request.id {
            return Err(HostError::Failed(format!(
                "the lock held is step {}'s, not step {}'s",
                lock.id(),
                request.id
            )));
        }
        if !options.dry_run
            && state
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
            .map(|m| m.materialize().map_err(|e| HostError::Refused(e.to_string())))
            .collect::<Result<_, _>>()?;
        Ok(StepHost {
            id: request.id.clone(),
            record: StepRecord::new(&request.id, options.owner),
            state,
            sys,
            audit,
            options,
            actor: "host".to_string(),
            request_mounts,
            sources: Vec::new(),
            roots: Vec::new(),
            lock: Some(lock),
            keep: false,
            request_paths: request_host_paths(request),
            calls: 0,
            audit_bytes: 0,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Names who asks for the operations that follow (a policy's name).
    pub fn set_actor(&mut self, actor: &str) {
        self.actor = actor.to_string();
    }

    /// Runs `op`, then audits it; a refusal names the policy and the
    /// operation. `args` and `show` build the record's arguments and result
    /// only when the audit wants it.
    fn audited<T>(
        &mut self,
        op: &str,
        args: impl FnOnce() -> Value,
        f: impl FnOnce(&mut Self) -> Result<T, HostError>,
        show: impl FnOnce(&Self, &T) -> Value,
    ) -> Result<T, HostError> {
        let start = Instant::now();
        self.calls += 1;
        let result = if let Some(signal) = crate::interrupt::requested() {
            Err(HostError::Failed(format!(
                "interrupted by {}",
                crate::interrupt::name(signal)
            )))
        } else if self.calls > limits::MAX_HOST_CALLS {
            Err(HostError::Refused(format!(
                "the step reached its limit of {} host calls",
                limits::MAX_HOST_CALLS
            )))
        } else if self.audit_bytes > limits::MAX_AUDIT_BYTES {
            Err(HostError::Refused(format!(
                "the step reached its limit of {} audit bytes",
                limits::MAX_AUDIT_BYTES
            )))
        } else {
            f(self)
        };
        let result = result.map_err(|e| match e {
            HostError::Refused(m) => HostError::Refused(format!("policy {} may not {op}: {m}", self.actor)),
            failed => failed,
        });
        if self.audit.wants(result.is_ok()) {
            let err = result.as_ref().err().map(ToString::to_string);
            let outcome = match &result {
                Ok(v) => Ok(show(self, v)),
                Err(_) => Err(err.as_deref().unwrap_or_default()),
            };
            self.audit_bytes += self
                .audit
                .record(&self.id, &self.actor, op, args(), outcome, start.elapsed());
        }
        result
    }

    /// Expands request mount `index`.
    pub fn materialize(&mut self, index: u32) -> Result<(SourceId, Vec<Mountable>), HostError> {
        self.audited(
            "materialize",
            || json!({"index": index}),
            |me| {
                let i = index as usize;
                let mounts = me.request_mounts.get(i).cloned().ok_or_else(|| {
                    HostError::Refused(format!(
                        "mount index {index} is out of range (the request has {} mounts)",
                        me.request_mounts.len()
                    ))
                })?;
                if me.sources.len() >= limits::MAX_SOURCES {
                    return Err(HostError::Refused(format!(
                        "the step already holds {} materialized handles, its limit",
                        limits::MAX_SOURCES
                    )));
                }
                me.sources.push(i);
                Ok((SourceId(me.sources.len() - 1), mounts))
            },
            |_, (_, mounts)| Value::Array(mounts.iter().map(mountable_json).collect()),
        )
    }

    fn source_entry(&self, source: SourceId, entry: u32) -> Result<&Mountable, HostError> {
        let index = *self
            .sources
            .get(source.0)
            .ok_or_else(|| HostError::Refused("unknown source handle".to_string()))?;
        self.request_mounts[index].get(entry as usize).ok_or_else(|| {
            HostError::Refused(format!(
                "entry {entry} is out of range (request mount {index} has {} entries)",
                self.request_mounts[index].len()
            ))
        })
    }

    /// What host path `path` (one the request names) really is.
    pub fn canonical_path(&mut self, path: &str) -> Result<String, HostError> {
        self.audited(
            "canonical-path",
            || json!({"path": shown(path)}),
            |me| {
                if !me.request_paths.iter().any(|p| p == path) {
                    return Err(HostError::Refused(format!(
                        "{:?} is not a host path the request names",
                        shown(path)
                    )));
                }
                if me.options.dry_run {
                    // A dry run looks at nothing: the lexical path.
                    return Ok(clean_absolute(path));
                }
                crate::resolve::canonical_host_path(path).map_err(|e| HostError::Failed(e.to_string()))
            },
            |_, real| Value::String(real.clone()),
        )
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
    pub fn resolve_in_source(&mut self, source: SourceId, entry: u32, selector: &str) -> Result<String, HostError> {
        self.audited(
            "resolve",
            || json!({"entry": entry, "selector": shown(selector)}),
            |me| {
                check_selector(selector)?;
                let mount = me.source_entry(source, entry)?;
                if !mount.is_bind() || mount.is_readonly() {
                    return Err(HostError::Refused(format!(
                        "entry {entry} is a {}{} mount; only a read-write bind can be resolved without mounting it",
                        if mount.is_readonly() { "read-only " } else { "" },
                        mount.kind,
                    )));
                }
                let root = PathBuf::from(&mount.source);
                let resolved = resolve_in_root(&root, selector).map_err(|e| HostError::Failed(e.to_string()))?;
                me.maybe_pin(resolved)
            },
            |_, path| Value::String(path.clone()),
        )
    }

    /// Mounts the given entries of a source on a fresh temporary mountpoint.
    pub fn mount_temporary(&mut self, source: SourceId, entries: &[u32]) -> Result<RootId, HostError> {
        self.audited(
            "mount-temporary",
            || json!({"entries": entries}),
            |me| {
                if entries.is_empty() {
                    return Err(HostError::Refused("no entries given".to_string()));
                }
                if entries.len() > MAX_STACKED {
                    return Err(HostError::Refused(format!(
                        "{} entries on one mountpoint; at most {MAX_STACKED}",
                        entries.len()
                    )));
                }
                let mounts = entries
                    .iter()
                    .map(|&e| me.source_entry(source, e).cloned())
                    .collect::<Result<Vec<_>, _>>()?;
                let (name, path) = me.hold_mountpoint(MountpointKind::Dir, mounts.len())?;
                for (done, mount) in mounts.iter().enumerate() {
                    if let Err(e) = mount_entry(me.sys.as_ref(), mount, &path) {
                        let undo = me.undo_mountpoint(&name, &path, MountpointKind::Dir, done);
                        return Err(HostError::Failed(format!(
                            "mount {} ({}) on {}: {e}{undo}",
                            mount.source,
                            mount.kind,
                            path.display()
                        )));
                    }
                }
                me.roots.push(Root {
                    name,
                    path,
                    released: false,
                });
                Ok(RootId(me.roots.len() - 1))
            },
            |me, id| json!({"root": id.0, "path": me.roots[id.0].path}),
        )
    }

    /// Records a new mountpoint for the step (before anything is made) and
    /// creates it.
    fn hold_mountpoint(&mut self, kind: MountpointKind, stacked: usize) -> Result<(String, PathBuf), HostError> {
        if self.record.mounts.len() >= MAX_MOUNTPOINTS {
            return Err(HostError::Refused(format!(
                "step {} already holds {MAX_MOUNTPOINTS} mountpoints, the most a step may",
                self.id
            )));
        }
        let (name, path) = self.fresh_mountpoint()?;
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
        };
        if let Err(e) = created {
            self.forget_mount(&name);
            return Err(HostError::Failed(format!(
                "creating mountpoint {}: {e}",
                path.display()
            )));
        }
        Ok((name, path))
    }

    /// Undoes a partly made mountpoint; returns what to add to the error
    /// when undoing failed too (the mountpoint then stays recorded).
    fn undo_mountpoint(&mut self, name: &str, path: &Path, kind: MountpointKind, mounted: usize) -> String {
        match release_mountpoint(self.sys.as_ref(), path, kind, mounted) {
            Ok(_) => {
                self.forget_mount(name);
                String::new()
            }
            Err(e) => format!("; undoing it also failed: {e}"),
        }
    }

    fn write_record(&self) -> Result<(), StateError> {
        if self.options.dry_run {
            return Ok(());
        }
        if self.record.holds_anything() {
            self.state.write_record(&self.record)
        } else {
            self.state.remove_record(&self.id)
        }
    }

    fn forget_mount(&mut self, name: &str) {
        self.record.mounts.retain(|m| m.name != name);
        if let Err(e) = self.write_record() {
            // The stale entry names a mountpoint that no longer exists:
            // release skips it.
            tracing::warn!(step = %self.id, error = %e, "updating the step record");
        }
    }

    fn fresh_mountpoint(&self) -> Result<(String, PathBuf), HostError> {
        let first = self.record.mounts.len();
        for n in first..first + 1024 {
            let name = format!("{}-{n}", self.id);
            let path = self.state.mounts_dir().join(&name);
            let taken = self.record.mounts.iter().any(|m| m.name == name);
            if !taken && !self.state.mountpoint_exists(&name) {
                return Ok((name, path));
            }
        }
        Err(HostError::Failed(format!(
            "no free mountpoint name for step {} under {}",
            self.id,
            self.state.mounts_dir().display()
        )))
    }

    fn root(&self, root: RootId) -> Result<&Root, HostError> {
        match self.roots.get(root.0) {
            Some(r) if !r.released => Ok(r),
            Some(_) => Err(HostError::Refused("the mountpoint was already released".to_string())),
            None => Err(HostError::Refused("unknown mountpoint handle".to_string())),
        }
    }

    pub fn root_path(&self, root: RootId) -> Result<String, HostError> {
        Ok(self.root(root)?.path.display().to_string())
    }

    pub fn resolve_in_root(&mut self, root: RootId, selector: &str) -> Result<String, HostError> {
        self.audited(
            "resolve",
            || json!({"root": root.0, "selector": shown(selector)}),
            |me| {
                check_selector(selector)?;
                let path = me.root(root)?.path.clone();
                if me.options.dry_run {
                    // Nothing is mounted in a dry run: plan the lexical path.
                    return Ok(format!("{}{}", path.display(), clean_absolute(selector)));
                }
                let resolved = resolve_in_root(&path, selector).map_err(|e| HostError::Failed(e.to_string()))?;
                me.maybe_pin(resolved)
            },
            |_, path| Value::String(path.clone()),
        )
    }

    /// With `pin_selectors`, binds the resolved object itself (through its
    /// descriptor, not its path) onto a mountpoint of its own.
    fn maybe_pin(&mut self, resolved: Resolved) -> Result<String, HostError> {
        if !self.options.pin_selectors {
            return Ok(resolved.path);
        }
        let Some(object) = resolved.object else {
            return Err(HostError::Failed(format!(
                "{} does not exist, so it cannot be pinned (--pin-selectors)",
                resolved.path
            )));
        };
        let stat = fstat(object.as_fd()).map_err(|e| HostError::Failed(format!("{}: {e}", resolved.path)))?;
        let kind = if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
            MountpointKind::Dir
        } else {
            MountpointKind::File
        };
        let (name, path) = self.hold_mountpoint(kind, 1)?;
        let by_fd = format!("/proc/self/fd/{}", object.as_raw_fd());
        if let Err(e) = self
            .sys
            .mount(Some(&by_fd), &path, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)
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

    /// Unmounts one temporary mountpoint now.
    pub fn release_root(&mut self, root: RootId) -> Result<(), HostError> {
        self.audited(
            "release",
            || json!({"root": root.0}),
            |me| {
                let (name, path) = {
                    let r = me.root(root)?;
                    (r.name.clone(), r.path.clone())
                };
                let stacked = me
                    .record
                    .mounts
                    .iter()
                    .find(|m| m.name == name)
                    .map_or(0, |m| m.stacked);
                release_mountpoint(me.sys.as_ref(), &path, MountpointKind::Dir, stacked).map_err(HostError::Failed)?;
                me.roots[root.0].released = true;
                me.forget_mount(&name);
                Ok(())
            },
            |_, _| Value::Null,
        )
    }

    /// Whether the step holds any mount.
    pub fn holds_mounts(&self) -> bool {
        self.record.holds_anything()
    }

    /// Keeps every mount for the step's lifetime; `specwright release`
    /// undoes them. Returns the step's lock: the step stays this process's
    /// until the caller drops it (after writing the bundle, say).
    pub fn keep(mut self) -> StepLock {
        self.keep = true;
        self.lock.take().unwrap_or_else(|| StepLock::planned(&self.id))
    }

    /// Unmounts and removes everything the step holds, reporting every
    /// failure; a step left holding nothing lets its lock go.
    pub fn release_all(mut self) -> Result<ReleaseReport, ReleaseError> {
        self.keep = true;
        let result = self.release_held();
        self.let_go();
        result
    }

    /// Drops the lock, removing its file when the step holds nothing.
    fn let_go(&mut self) {
        if let Some(lock) = self.lock.take() {
            if !self.record.holds_anything() {
                lock.remove();
            }
        }
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
        self.audit.record(
            &self.id,
            &self.actor,
            "delete-container",
            json!({"runtime": container.runtime, "id": container.id}),
            deleted.as_ref().map(|()| Value::Null).map_err(String::as_str),
            start.elapsed(),
        );
        deleted.map_err(|message| ReleaseError::Container {
            id: self.id.clone(),
            message,
        })?;
        self.record.container = None;
        self.write_record()?;
        Ok(())
    }

    fn release_held(&mut self) -> Result<ReleaseReport, ReleaseError> {
        self.actor = "host".to_string();
        // Nothing runs on after its mounts are gone.
        self.end_container()?;
        let start = Instant::now();
        let record = std::mem::take(&mut self.record.mounts);
        // A dry run has nothing to wait for: no threads.
        let workers = if self.options.dry_run { 1 } else { RELEASE_WORKERS };
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
        self.write_record()?;
        if failures.is_empty() {
            Ok(report)
        } else {
            Err(ReleaseError::Unmount {
                id: self.id.clone(),
                failures,
            })
        }
    }
}

impl Drop for StepHost {
    /// A step that was neither kept nor released (an error, a trap, a
    /// panic on the way) leaves nothing mounted.
    fn drop(&mut self) {
        if !self.keep && self.holds_mounts() {
            if let Err(e) = self.release_held() {
                tracing::error!(step = %self.id, error = %e, "releasing the step after a failure");
            }
        }
        self.let_go();
    }
}

/// The native path: the pure pipelines in `specwright_core` drive the host directly.
impl Mounter for StepHost {
    type Source = SourceId;
    type Root = RootId;

    fn materialize(&mut self, index: u32) -> Result<(SourceId, Vec<Mountable>), HostError> {
        StepHost::materialize(self, index)
    }

    fn resolve_in_source(&mut self, source: &SourceId, entry: u32, selector: &str) -> Result<String, HostError> {
        StepHost::resolve_in_source(self, *source, entry, selector)
    }

    fn mount_temporary(&mut self, source: &SourceId, entries: &[u32]) -> Result<RootId, HostError> {
        StepHost::mount_temporary(self, *source, entries)
    }

    fn resolve_in_root(&mut self, root: &RootId, selector: &str) -> Result<String, HostError> {
        StepHost::resolve_in_root(self, *root, selector)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::{Op, RecordingSyscalls};

    fn request(mounts: serde_json::Value) -> Request {
        Request::from_json(&json!({"id": "s1", "mounts": mounts}).to_string()).unwrap()
    }

    fn dry_host(dir: &Path, req: &Request) -> (StepHost, Arc<RecordingSyscalls>) {
        let sys = Arc::new(RecordingSyscalls::dry_run());
        let state = StateDir::open(dir).unwrap();
        let options = StepOptions {
            dry_run: true,
            ..StepOptions::default()
        };
        let host = StepHost::new(
            state,
            sys.clone(),
            Arc::new(Audit::events_only()),
            options,
            req,
            StepLock::planned(&req.id),
        )
        .unwrap();
        (host, sys)
    }

    #[test]
    fn out_of_range_and_released_handles_are_refused_and_name_the_policy() {
        let dir = tempfile::tempdir().unwrap();
        let req = request(json!([{"dest": "/a", "source": "/tmp", "readonly": true}]));
        let (mut host, sys) = dry_host(dir.path(), &req);
        host.set_actor("evil.wasm");
        let err = host.materialize(7).unwrap_err().to_string();
        assert!(
            err.contains("evil.wasm") && err.contains("materialize") && err.contains("out of range"),
            "{err}"
        );
        let (src, _) = host.materialize(0).unwrap();
        let err = host.mount_temporary(src, &[3]).unwrap_err().to_string();
        assert!(err.contains("mount-temporary") && err.contains("entry 3"), "{err}");
        let err = host.resolve_in_source(src, 0, "x").unwrap_err().to_string();
        assert!(err.contains("read-only"), "{err}");
        let root = host.mount_temporary(src, &[0]).unwrap();
        host.release_root(root).unwrap();
        let err = host.resolve_in_root(root, "x").unwrap_err().to_string();
        assert!(err.contains("already released"), "{err}");
        assert!(sys.ops().iter().all(|op| match op {
            Op::CreateDir(p) | Op::RemoveDir(p) => p.starts_with(dir.path().join("mounts")),
            Op::Mount { target, .. } | Op::Unmount { target, .. } => target.starts_with(dir.path().join("mounts")),
            other => panic!("unexpected {other:?}"),
        }));
    }

    #[test]
    fn a_dry_run_plans_without_touching_the_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let req = request(json!([{"dest": "/a", "source": "/srv/x", "readonly": true}]));
        let (mut host, sys) = dry_host(dir.path(), &req);
        let (src, _) = host.materialize(0).unwrap();
        let root = host.mount_temporary(src, &[0]).unwrap();
        let path = host.resolve_in_root(root, "a/../b").unwrap();
        assert!(path.ends_with("/mounts/s1-0/b"), "{path}");
        assert!(std::fs::read_dir(dir.path().join("steps")).unwrap().next().is_none());
        assert!(std::fs::read_dir(dir.path().join("mounts")).unwrap().next().is_none());
        let kinds: Vec<_> = sys.ops().iter().map(std::mem::discriminant).collect();
        assert_eq!(kinds.len(), 3, "mkdir, bind, ro remount: {:?}", sys.ops());
        drop(host);
        assert!(
            matches!(sys.ops().last(), Some(Op::RemoveDir(_))),
            "dropped without keep: released"
        );
    }

    #[test]
    fn a_step_that_holds_mounts_cannot_start_again() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        state
            .write_record(&StepRecord {
                id: "s1".into(),
                owner: Owner::of_pid(1),
                mounts: vec![HeldMount {
                    name: "s1-0".into(),
                    kind: MountpointKind::Dir,
                    stacked: 1,
                }],
                container: None,
            })
            .unwrap();
        let req = request(json!([]));
        let sys = Arc::new(RecordingSyscalls::dry_run());
        let lock = state.lock("s1").unwrap();
        let err = StepHost::new(
            state,
            sys,
            Arc::new(Audit::events_only()),
            StepOptions::default(),
            &req,
            lock,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("already holds mounts"), "{err}");
    }

    /// Regression: ids named paths before they were checked, so a record
    /// file named `...json` (id `..`) made `gc` remove the whole state
    /// directory as the step's "bundle", mounts and all, and `release` of
    /// an id with `../` removed a directory outside it.
    #[test]
    fn ids_that_are_not_plain_names_are_reported_and_nothing_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let state_root = dir.path().join("state");
        let state = StateDir::open(&state_root).unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(outside.join("bundles")).unwrap();
        std::fs::write(
            state_root.join("steps/...json"),
            r#"{"id":"..","owner":{"pid":0,"start_time":null},"mounts":[]}"#,
        )
        .unwrap();
        let sys = RecordingSyscalls::dry_run();
        let audit = Audit::events_only();
        let outcomes = gc(&state, &sys, &audit).unwrap();
        assert!(
            matches!(&outcomes[..], [GcOutcome::Failed { id, error }] if id == ".." && error.contains("not a step id")),
            "{outcomes:?}"
        );
        for id in ["..", "../outside", "../../outside", "a/b", ""] {
            let err = release_step(&state, &sys, &audit, id).unwrap_err().to_string();
            assert!(err.contains("not a step id"), "{id}: {err}");
        }
        assert!(state_root.join("mounts").is_dir() && state_root.join("steps/...json").is_file());
        assert!(outside.join("bundles").is_dir());
        assert!(sys.ops().is_empty(), "{:?}", sys.ops());
    }

    #[test]
    fn a_record_claiming_more_than_the_host_makes_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let held = |n: usize, stacked: usize| -> Vec<HeldMount> {
            (0..n)
                .map(|i| HeldMount {
                    name: format!("s1-{i}"),
                    kind: MountpointKind::Dir,
                    stacked,
                })
                .collect()
        };
        for (mounts, says) in [
            (held(1, MAX_STACKED + 1), "stacked mounts"),
            (held(MAX_MOUNTPOINTS + 1, 1), "mountpoints, more than"),
        ] {
            let record = StepRecord {
                id: "s1".into(),
                owner: Owner {
                    pid: 0,
                    start_time: None,
                },
                mounts,
                container: None,
            };
            state.write_record(&record).unwrap();
            let sys = RecordingSyscalls::dry_run();
            let err = release_step(&state, &sys, &Audit::events_only(), "s1")
                .unwrap_err()
                .to_string();
            assert!(err.contains("corrupt") && err.contains(says), "{err}");
            assert!(
                sys.ops().is_empty(),
                "a corrupt record was trusted: {} ops",
                sys.ops().len()
            );
        }
    }

    #[test]
    fn a_step_with_many_mountpoints_is_released_by_a_few_threads() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let mounts: Vec<HeldMount> = (0..MAX_MOUNTPOINTS)
            .map(|i| HeldMount {
                name: format!("s1-{i}"),
                kind: MountpointKind::Dir,
                stacked: 2,
            })
            .collect();
        state
            .write_record(&StepRecord {
                id: "s1".into(),
                owner: Owner {
                    pid: 0,
                    start_time: None,
                },
                mounts,
                container: None,
            })
            .unwrap();
        let sys = RecordingSyscalls::dry_run();
        let report = release_step(&state, &sys, &Audit::events_only(), "s1").unwrap();
        assert_eq!(report.released, MAX_MOUNTPOINTS);
        let unmounts = sys.ops().iter().filter(|op| matches!(op, Op::Unmount { .. })).count();
        assert_eq!(unmounts, 2 * MAX_MOUNTPOINTS);
        assert!(state.read_record("s1").unwrap().is_none());
    }

    #[test]
    fn a_policy_cannot_stack_more_than_the_limit_on_one_mountpoint() {
        let dir = tempfile::tempdir().unwrap();
        let req = request(json!([{"dest": "/a", "source": "/srv/x", "readonly": true}]));
        let (mut host, sys) = dry_host(dir.path(), &req);
        let (src, _) = host.materialize(0).unwrap();
        let err = host
            .mount_temporary(src, &[0; MAX_STACKED + 1])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("at most") && err.contains("may not mount-temporary"),
            "{err}"
        );
        assert!(sys.ops().is_empty());
    }

    #[test]
    fn a_policy_s_host_work_is_bounded_per_step() {
        let dir = tempfile::tempdir().unwrap();
        let req = request(json!([{"dest": "/a", "source": "/srv/x", "readonly": false}]));
        let (mut host, _) = dry_host(dir.path(), &req);
        let (src, _) = host.materialize(0).unwrap();
        let err = host
            .resolve_in_source(src, 0, &"a/".repeat(limits::MAX_SELECTOR_BYTES))
            .unwrap_err()
            .to_string();
        assert!(err.contains("at most 4096"), "{err}");
        let mut refused = None;
        for _ in 0..limits::MAX_HOST_CALLS + 10 {
            if let Err(e) = host.materialize(0) {
                refused = Some(e.to_string());
                break;
            }
        }
        let err = refused.expect("the host kept answering");
        assert!(
            err.contains("materialized handles") || err.contains("host calls"),
            "{err}"
        );
        let (mut host, _) = dry_host(dir.path(), &req);
        for _ in 0..limits::MAX_HOST_CALLS {
            let _ = host.resolve_in_source(SourceId(0), 0, "x");
        }
        let err = host.resolve_in_source(SourceId(0), 0, "x").unwrap_err().to_string();
        assert!(err.contains("limit of 4096 host calls"), "{err}");
    }

    #[test]
    fn audit_bytes_are_bounded_per_step() {
        let dir = tempfile::tempdir().unwrap();
        let req = request(json!([{"dest": "/a", "source": "/srv/x", "readonly": false}]));
        let sys = Arc::new(RecordingSyscalls::dry_run());
        let audit = Arc::new(Audit::open(&dir.path().join("audit.jsonl")).unwrap());
        let options = StepOptions {
            dry_run: true,
            ..StepOptions::default()
        };
        let state = StateDir::at(dir.path());
        let mut host = StepHost::new(state, sys, audit, options, &req, StepLock::planned("s1")).unwrap();
        let (src, _) = host.materialize(0).unwrap();
        let long = "x".repeat(limits::MAX_SELECTOR_BYTES);
        let mut last = String::new();
        for _ in 0..limits::MAX_HOST_CALLS {
            // Each fails (nothing is there) and is audited, arguments and all.
            if let Err(e) = host.resolve_in_source(src, 0, &long) {
                last = e.to_string();
                if last.contains("limit") {
                    break;
                }
            }
        }
        assert!(last.contains("audit bytes"), "{last}");
        let written = std::fs::metadata(dir.path().join("audit.jsonl")).unwrap().len() as usize;
        assert!(written < limits::MAX_AUDIT_BYTES + 64 * 1024, "{written}");
    }

    #[test]
    fn canonical_path_answers_only_for_paths_the_request_names() {
        let dir = tempfile::tempdir().unwrap();
        let req = Request::from_json(
            &json!({"id": "s1", "resolv_conf": "/etc/resolv.conf", "mounts": [
                {"dest": "/a", "source": "/srv/x"},
                {"dest": "/o", "mountable": [{"type": "overlay", "source": "overlay", "options": ["lowerdir=/l1:/l2"]}]}
            ]})
            .to_string(),
        )
        .unwrap();
        let (mut host, _) = dry_host(dir.path(), &req);
        for named in ["/srv/x", "/l1", "/l2", "/etc/resolv.conf"] {
            assert_eq!(host.canonical_path(named).unwrap(), named);
        }
        let err = host.canonical_path("/etc/shadow").unwrap_err().to_string();
        assert!(err.contains("not a host path the request names"), "{err}");
    }
}
