//! The host's side of what a policy asks for in a step: handles to the
//! request's mounts and to temporary mountpoints, selectors resolved
//! inside them, and the host paths the request names. Each call is
//! checked against what the request handed out and audited.

use std::path::PathBuf;

use serde_json::{json, Value};
use specwright_core::request::{Mountable, Request};
use specwright_core::{HostCalls, HostError};

use super::release::release_mountpoint;
use super::{limits, StepHost};
use crate::mount::mount_entry;
use crate::state::{MountpointKind, MAX_STACKED};

/// A materialized request mount, as the host tracks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceId(pub(super) usize);

/// A temporary mountpoint, as the host tracks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootId(pub(super) usize);

/// A temporary mountpoint handed to a policy.
#[derive(Debug)]
pub(super) struct Root {
    pub(super) name: String,
    pub(super) path: PathBuf,
    pub(super) kind: MountpointKind,
    pub(super) released: bool,
}

/// Every absolute path a request names on the host: mount sources, the
/// path-like values of mount options (`lowerdir=/a:/b`), resolv.conf,
/// hosts and the network namespace.
pub(super) fn request_host_paths(request: &Request) -> Vec<String> {
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
    if let Some(socket) = &request.tracing_socket {
        add(socket);
    }
    add(&request.resolv_conf);
    add(&request.hosts_file);
    if let specwright_core::request::Network::Path { path } = &request.network {
        add(path);
    }
    // The host's own namespaces, to compare one a step joins with.
    for (_, path) in specwright_core::derive::HOST_NAMESPACE_PATHS {
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

fn mountable_json(m: &Mountable) -> Value {
    json!({"type": m.kind, "source": m.source, "options": m.options})
}

impl StepHost {
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

    fn root(&self, root: RootId) -> Result<&Root, HostError> {
        match self.roots.get(root.0) {
            Some(r) if !r.released => Ok(r),
            Some(_) => Err(HostError::Refused("the mountpoint was already released".to_string())),
            None => Err(HostError::Refused("unknown mountpoint handle".to_string())),
        }
    }

    fn pinned_root(&mut self, resolved: crate::resolve::Resolved) -> Result<RootId, HostError> {
        let (name, path, kind) = self.pin(resolved)?;
        self.roots.push(Root {
            name,
            path,
            kind,
            released: false,
        });
        Ok(RootId(self.roots.len() - 1))
    }

    fn may_ask_mount_flags(&self, path: &str) -> bool {
        let in_a_root = !path.split('/').any(|c| c == "..")
            && self
                .roots
                .iter()
                .any(|r| !r.released && std::path::Path::new(path).starts_with(&r.path));
        // A no-sandbox step binds the host's /proc.
        let host_proc = path == "/proc" && self.host_proc_bound;
        in_a_root
            || host_proc
            || self.request_paths.iter().any(|p| p == path)
            || self.cdi_mount_sources.iter().any(|p| p == path)
    }
}

/// What a policy asks of the host, for this step: the one implementation
/// (the WIT host and the native pipelines call it).
impl HostCalls for StepHost {
    type Source = SourceId;
    type Root = RootId;

    /// Expands request mount `index`.
    fn materialize(&mut self, index: u32) -> Result<SourceId, HostError> {
        self.audited(
            "materialize",
            || json!({"index": index}),
            |me| {
                let i = index as usize;
                if i >= me.request_mounts.len() {
                    return Err(HostError::Refused(format!(
                        "mount index {index} is out of range (the request has {} mounts)",
                        me.request_mounts.len()
                    )));
                }
                if me.sources.len() >= limits::MAX_SOURCES {
                    return Err(HostError::Refused(format!(
                        "the step already holds {} materialized handles, its limit",
                        limits::MAX_SOURCES
                    )));
                }
                me.sources.push(i);
                Ok(SourceId(me.sources.len() - 1))
            },
            |me, source| {
                Value::Array(
                    me.request_mounts[me.sources[source.0]]
                        .iter()
                        .map(mountable_json)
                        .collect(),
                )
            },
        )
    }

    /// The mounts a source handle stands for.
    fn source_mounts(&mut self, source: &SourceId) -> Result<Vec<Mountable>, HostError> {
        let index = *self
            .sources
            .get(source.0)
            .ok_or_else(|| HostError::Refused("mounts: unknown source handle".to_string()))?;
        Ok(self.request_mounts[index].clone())
    }

    /// What host path `path` (one the request names) really is.
    fn canonical_path(&mut self, path: &str) -> Result<String, HostError> {
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
                me.sys
                    .canonical_path(path)
                    .map_err(|e| HostError::Failed(e.to_string()))
            },
            |_, real| Value::String(real.clone()),
        )
    }

    /// Resolves a selector directly on the source of a read-write bind entry.
    fn resolve_in_source(&mut self, source: &SourceId, entry: u32, selector: &str) -> Result<String, HostError> {
        let source = *source;
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
                let resolved = me
                    .sys
                    .resolve(&root, selector)
                    .map_err(|e| HostError::Failed(e.to_string()))?;
                me.maybe_pin(resolved)
            },
            |_, path| Value::String(path.clone()),
        )
    }

    /// Mounts the given entries of a source on a fresh temporary mountpoint.
    fn mount_temporary(&mut self, source: &SourceId, entries: &[u32]) -> Result<RootId, HostError> {
        let source = *source;
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
                    kind: MountpointKind::Dir,
                    released: false,
                });
                Ok(RootId(me.roots.len() - 1))
            },
            |me, id| json!({"root": id.0, "path": me.roots[id.0].path}),
        )
    }

    /// Where a root's mount is: the mountpoint, or a pinned file in it.
    fn root_path(&mut self, root: &RootId) -> Result<String, HostError> {
        let root = *root;
        let root = self.root(root)?;
        Ok(root.kind.target(&root.path).display().to_string())
    }

    /// Pins what `selector` names in the source of read-write bind `entry`.
    fn pin_in_source(&mut self, source: &SourceId, entry: u32, selector: &str) -> Result<RootId, HostError> {
        let source = *source;
        self.audited(
            "pin",
            || json!({"entry": entry, "selector": shown(selector)}),
            |me| {
                check_selector(selector)?;
                let mount = me.source_entry(source, entry)?;
                if !mount.is_bind() || mount.is_readonly() {
                    return Err(HostError::Refused(format!(
                        "entry {entry} is a {}{} mount; only a read-write bind can be pinned without mounting it",
                        if mount.is_readonly() { "read-only " } else { "" },
                        mount.kind,
                    )));
                }
                let root = PathBuf::from(&mount.source);
                let resolved = me
                    .sys
                    .resolve(&root, selector)
                    .map_err(|e| HostError::Failed(e.to_string()))?;
                me.pinned_root(resolved)
            },
            |me, id| json!({"root": id.0, "path": me.roots[id.0].path}),
        )
    }

    /// Pins what `selector` names inside a temporary mountpoint.
    fn pin_in_root(&mut self, root: &RootId, selector: &str) -> Result<RootId, HostError> {
        let root = *root;
        self.audited(
            "pin",
            || json!({"root": root.0, "selector": shown(selector)}),
            |me| {
                check_selector(selector)?;
                let path = me.root(root)?.path.clone();
                let resolved = me
                    .sys
                    .resolve(&path, selector)
                    .map_err(|e| HostError::Failed(e.to_string()))?;
                me.pinned_root(resolved)
            },
            |me, id| json!({"root": id.0, "path": me.roots[id.0].path}),
        )
    }

    /// Whether `path` (one the request names) exists on the host.
    fn exists(&mut self, path: &str) -> Result<bool, HostError> {
        self.audited(
            "exists",
            || json!({"path": shown(path)}),
            |me| {
                if !me.request_paths.iter().any(|p| p == path) {
                    return Err(HostError::Refused(format!(
                        "{:?} is not a host path the request names",
                        shown(path)
                    )));
                }
                me.sys
                    .exists(std::path::Path::new(path))
                    .map_err(|e| HostError::Failed(format!("{path}: {e}")))
            },
            |_, exists| Value::Bool(*exists),
        )
    }

    /// The CDI devices registered in the step's CDI spec directories.
    fn cdi_registry(&mut self) -> Result<specwright_core::cdi::Registry, HostError> {
        let dirs = self.options.cdi_spec_dirs.clone();
        self.audited(
            "cdi-registry",
            || json!({"dirs": *dirs}),
            |me| {
                let registry =
                    crate::cdi::load_registry(me.sys.as_ref(), &dirs).map_err(|e| HostError::Failed(e.to_string()))?;
                let edits = registry
                    .specs
                    .iter()
                    .map(|s| &s.edits)
                    .chain(registry.devices.iter().map(|d| &d.edits));
                me.cdi_mount_sources = edits
                    .flat_map(|e| e.mounts.iter().map(|m| m.host_path.clone()))
                    .collect();
                Ok(registry)
            },
            |_, registry| json!({"devices": registry.devices.len()}),
        )
    }

    /// `statfs`'s `f_flags` for `path`, the source of a bind in the spec:
    /// a host path the request names, a path in one of this step's
    /// temporary mountpoints, or a CDI mount's host path.
    fn mount_flags(&mut self, path: &str) -> Result<u64, HostError> {
        self.audited(
            "mount-flags",
            || json!({"path": shown(path)}),
            |me| {
                if !me.may_ask_mount_flags(path) {
                    return Err(HostError::Refused(format!(
                        "{:?} is not the source of one of this step's binds",
                        shown(path)
                    )));
                }
                me.sys
                    .mount_flags(std::path::Path::new(path))
                    .map_err(|e| HostError::Failed(format!("statfs {path}: {e}")))
            },
            |_, flags| json!(flags),
        )
    }

    fn resolve_in_root(&mut self, root: &RootId, selector: &str) -> Result<String, HostError> {
        let root = *root;
        self.audited(
            "resolve",
            || json!({"root": root.0, "selector": shown(selector)}),
            |me| {
                check_selector(selector)?;
                let path = me.root(root)?.path.clone();
                let resolved = me
                    .sys
                    .resolve(&path, selector)
                    .map_err(|e| HostError::Failed(e.to_string()))?;
                me.maybe_pin(resolved)
            },
            |_, path| Value::String(path.clone()),
        )
    }

    /// Unmounts one temporary mountpoint now.
    fn release(&mut self, root: RootId) -> Result<(), HostError> {
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
                let kind = me.roots[root.0].kind;
                release_mountpoint(me.sys.as_ref(), &path, kind, stacked)
                    .map_err(|e| HostError::Failed(e.to_string()))?;
                me.roots[root.0].released = true;
                me.forget_mount(&name);
                Ok(())
            },
            |_, _| Value::Null,
        )
    }

    fn selinux_labels(&mut self, privileged: bool) -> Result<specwright_core::selinux::Labels, HostError> {
        self.labels(privileged)
    }
}
