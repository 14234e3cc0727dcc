//! The step's own mounts: materialized by the host, narrowed by selectors.

use crate::request::{Mountable, Request};
use crate::spec::{Extra, Mount, Name, Names, Spec};
use crate::static_lists::{self, RBIND_OPTIONS, RBIND_RO_OPTIONS};
use crate::PolicyError;

/// Why a privileged operation did not happen; mirrors the WIT `host-error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
}

/// The privileged operations a policy may ask of the host. The policy SDK
/// implements this over the WIT imports; the host implements it natively.
pub trait Mounter {
    /// A materialized request mount.
    type Source;
    /// A temporary mountpoint the host made.
    type Root;

    /// Expands request mount `index` into its mounts.
    fn materialize(&mut self, index: u32) -> Result<(Self::Source, Vec<Mountable>), HostError>;

    /// Resolves `selector` inside the source of a read-write bind entry.
    fn resolve_in_source(&mut self, source: &Self::Source, entry: u32, selector: &str) -> Result<String, HostError>;

    /// Mounts `entries` of `source` on a fresh temporary mountpoint.
    fn mount_temporary(&mut self, source: &Self::Source, entries: &[u32]) -> Result<Self::Root, HostError>;

    /// Resolves `selector` inside a temporary mountpoint.
    fn resolve_in_root(&mut self, root: &Self::Root, selector: &str) -> Result<String, HostError>;
}

/// Go's `path.Clean` for the absolute path `"/" + p`.
pub fn clean_absolute(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

/// BuildKit skips a selector when `path.Join("/", selector) == "/"`.
pub fn selects_root(selector: &str) -> bool {
    clean_absolute(selector) == "/"
}

/// Options of a mount narrowed by a selector: a recursive bind, read-only
/// once for every `ro` the original carried (as BuildKit builds them).
fn selector_bind_options(original: &Mountable) -> Names {
    match original.options.iter().filter(|o| *o == "ro").count() {
        0 => Names::Static(&RBIND_OPTIONS),
        1 => Names::Static(&RBIND_RO_OPTIONS),
        ro => {
            let mut options = vec![Name::Borrowed("rbind")];
            options.resize(ro + 1, Name::Borrowed("ro"));
            Names::Owned(options)
        }
    }
}

/// Appends every request mount to the spec, in request order, after the
/// defaults. A mount with a selector becomes a bind of what the selector
/// names: a read-write bind is resolved on its source directly; anything
/// else is mounted once on a temporary mountpoint (shared by later
/// selectors into an identical mount) and resolved there.
pub fn with_request_mounts<M: Mounter>(spec: &mut Spec, request: &Request, mounter: &mut M) -> Result<(), PolicyError> {
    // Fail before any privileged work if a mount has no source.
    for m in &request.mounts {
        m.check_source()?;
    }
    let mut roots: Vec<(Mountable, M::Root)> = Vec::new();
    for (index, m) in request.mounts.iter().enumerate() {
        let host_failed = |e: HostError| PolicyError::Internal(format!("mount {}: {e}", m.dest));
        let index = u32::try_from(index).map_err(|_| PolicyError::InvalidRequest("too many mounts".to_string()))?;
        let (source, entries) = mounter.materialize(index).map_err(host_failed)?;
        for (entry, mountable) in entries.iter().enumerate() {
            if selects_root(&m.selector) {
                spec.mounts.push(Mount {
                    extra: Extra::NONE,
                    destination: m.dest.clone().into(),
                    kind: mountable.kind.clone().into(),
                    source: mountable.source.clone().into(),
                    options: static_lists::borrow_or_copy(&mountable.options),
                });
                continue;
            }
            let resolved = if let Some((_, root)) = roots.iter().find(|(key, _)| key == mountable) {
                mounter.resolve_in_root(root, &m.selector)
            } else if mountable.is_bind() && !mountable.is_readonly() {
                let entry =
                    u32::try_from(entry).map_err(|_| PolicyError::InvalidRequest("too many mounts".to_string()))?;
                mounter.resolve_in_source(&source, entry, &m.selector)
            } else {
                let entry =
                    u32::try_from(entry).map_err(|_| PolicyError::InvalidRequest("too many mounts".to_string()))?;
                let root = mounter.mount_temporary(&source, &[entry]).map_err(host_failed)?;
                let resolved = mounter.resolve_in_root(&root, &m.selector);
                roots.push((mountable.clone(), root));
                resolved
            }
            .map_err(host_failed)?;
            spec.mounts.push(Mount {
                extra: Extra::NONE,
                destination: m.dest.clone().into(),
                kind: "bind".into(),
                source: resolved.into(),
                options: selector_bind_options(mountable),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_matches_go_path_join() {
        assert_eq!(clean_absolute(""), "/");
        assert_eq!(clean_absolute("/"), "/");
        assert_eq!(clean_absolute("./."), "/");
        assert_eq!(clean_absolute("../.."), "/");
        assert_eq!(clean_absolute("sub/../../..x"), "/..x");
        assert_eq!(clean_absolute("a/./b/"), "/a/b");
        assert!(selects_root(""));
        assert!(selects_root("/.."));
        assert!(!selects_root("sub"));
    }

    #[test]
    fn ro_options_are_counted() {
        let m = Mountable {
            kind: "bind".into(),
            source: "/s".into(),
            options: vec!["ro".into(), "rbind".into(), "ro".into()],
        };
        assert_eq!(selector_bind_options(&m)[..], ["rbind", "ro", "ro"]);
    }
}
