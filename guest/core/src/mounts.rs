//! The step's own mounts: materialized by the host, narrowed by selectors.

use crate::request::{Mountable, Request};
use crate::spec::{Extra, Mount, Name, Names, Spec};
use crate::static_lists::{self, RBIND_OPTIONS, RBIND_RO_OPTIONS};
use crate::{HostCalls, HostError, PolicyError};

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
pub fn with_request_mounts<M: HostCalls>(
    spec: &mut Spec,
    request: &Request,
    mounter: &mut M,
) -> Result<(), PolicyError> {
    // Fail before any privileged work if a mount has no source.
    for m in &request.mounts {
        m.check_source()?;
    }
    let mut roots: Vec<(Mountable, M::Root)> = Vec::new();
    for (index, m) in request.mounts.iter().enumerate() {
        let host_failed = |e: HostError| PolicyError::Internal(format!("mount {}: {e}", m.dest));
        let index = u32::try_from(index).map_err(|_| PolicyError::InvalidRequest("too many mounts".to_string()))?;
        let source = mounter.materialize(index).map_err(host_failed)?;
        let entries = mounter.source_mounts(&source).map_err(host_failed)?;
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

/// Overlay options of this many bytes or more (each plus a separator)
/// no longer fit a page with room to spare: BuildKit v0.32 mounts such an
/// overlay on a temporary mountpoint and binds that in instead.
pub const LONG_OVERLAY_OPTION_BYTES: usize = 4096 - 512;

fn is_long_overlay(m: &Mountable) -> bool {
    m.kind == "overlay" && m.options.iter().map(|o| o.len() + 1).sum::<usize>() >= LONG_OVERLAY_OPTION_BYTES
}

/// A recursive bind of `source`, read-only when asked (BuildKit's `bind`).
fn bind_of(source: String, readonly: bool) -> Mountable {
    let mut options = vec!["rbind".to_string()];
    if readonly {
        options.push("ro".to_string());
    }
    Mountable {
        kind: "bind".to_string(),
        source,
        options,
    }
}

/// Where a selector is resolved: a read-write bind's own source (nothing
/// mounted), or a temporary mountpoint holding the mount.
enum Parent<R> {
    /// Entry `.1` of the `.0`th source materialized.
    Entry(usize, u32),
    Root(R),
}

/// BuildKit v0.32's request mounts: an overlay with long options is first
/// mounted on a temporary mountpoint and bound in; a mount with a selector
/// gets a parent (its read-write bind source, or a temporary mount of it,
/// shared by identical mounts of the step) and every distinct selector of
/// a parent is pinned by file descriptor onto a temporary mountpoint of its
/// own, which the spec binds.
pub fn with_pinned_request_mounts<M: HostCalls>(
    spec: &mut Spec,
    request: &Request,
    mounter: &mut M,
) -> Result<(), PolicyError> {
    for m in &request.mounts {
        m.check_source()?;
    }
    let too_many = || PolicyError::InvalidRequest("too many mounts".to_string());
    let mut sources: Vec<M::Source> = Vec::new();
    let mut parents: Vec<(Mountable, Parent<M::Root>)> = Vec::new();
    let mut pins: Vec<(usize, String, String)> = Vec::new();
    for (index, m) in request.mounts.iter().enumerate() {
        let host_failed = |e: HostError| PolicyError::Internal(format!("mount {}: {e}", m.dest));
        let index = u32::try_from(index).map_err(|_| too_many())?;
        let source = mounter.materialize(index).map_err(host_failed)?;
        let entries = mounter.source_mounts(&source).map_err(host_failed)?;
        sources.push(source);
        let this = sources.len() - 1;
        for (entry, original) in entries.into_iter().enumerate() {
            let source = &sources[this];
            let entry = u32::try_from(entry).map_err(|_| too_many())?;
            let (mountable, compacted) = if is_long_overlay(&original) {
                let root = mounter.mount_temporary(source, &[entry]).map_err(host_failed)?;
                let path = mounter.root_path(&root).map_err(host_failed)?;
                (bind_of(path, m.readonly), Some(root))
            } else {
                (original, None)
            };
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
            let readonly = mountable.is_readonly();
            let parent = match parents.iter().position(|(key, _)| *key == mountable) {
                Some(p) => p,
                None => {
                    let parent = match compacted {
                        // A read-write bind needs no mount of its own.
                        Some(root) if !readonly => Parent::Root(root),
                        Some(root) => Parent::Root(mounter.pin_in_root(&root, "/").map_err(host_failed)?),
                        None if mountable.is_bind() && !readonly => Parent::Entry(this, entry),
                        None => Parent::Root(mounter.mount_temporary(source, &[entry]).map_err(host_failed)?),
                    };
                    parents.push((mountable.clone(), parent));
                    parents.len() - 1
                }
            };
            let pinned = match pins.iter().find(|(p, sel, _)| *p == parent && *sel == m.selector) {
                Some((_, _, path)) => path.clone(),
                None => {
                    let root = match &parents[parent].1 {
                        Parent::Entry(source, entry) => mounter.pin_in_source(&sources[*source], *entry, &m.selector),
                        Parent::Root(root) => mounter.pin_in_root(root, &m.selector),
                    }
                    .map_err(host_failed)?;
                    let path = mounter.root_path(&root).map_err(host_failed)?;
                    pins.push((parent, m.selector.clone(), path.clone()));
                    path
                }
            };
            spec.mounts.push(Mount {
                extra: Extra::NONE,
                destination: m.dest.clone().into(),
                kind: "bind".into(),
                source: pinned.into(),
                options: Names::Static(if readonly { &RBIND_RO_OPTIONS } else { &RBIND_OPTIONS }),
            });
        }
    }
    Ok(())
}

/// BuildKit v0.32's `dedupMounts`: of mounts at one destination the last
/// wins, at the position of the first.
pub fn with_deduplicated_mounts(spec: &mut Spec) {
    let mounts = std::mem::take(&mut spec.mounts);
    let mut kept: Vec<Mount> = Vec::with_capacity(mounts.len());
    for m in mounts {
        match kept.iter().position(|k| k.destination == m.destination) {
            Some(i) => kept[i] = m,
            None => kept.push(m),
        }
    }
    spec.mounts = kept;
}

/// The mount flags a mount made in a user namespace must keep (the kernel
/// locks them, `CL_UNPRIVILEGED`), by the `MS_*` bit BuildKit's
/// `UnprivilegedMountFlags` tests `statfs`'s `f_flags` against, in a fixed
/// order (BuildKit's comes from a Go map, so it varies). `relatime` is
/// tested against `MS_RELATIME` (1 << 21), which `f_flags` never carries
/// (its `ST_RELATIME` is 4096), so BuildKit never adds it; nor does this.
pub const UNPRIVILEGED_MOUNT_FLAGS: &[(u64, &str)] = &[
    (1, "ro"),
    (4, "nodev"),
    (8, "noexec"),
    (2, "nosuid"),
    (1024, "noatime"),
    (1 << 21, "relatime"),
    (2048, "nodiratime"),
];

/// BuildKit v0.32's `FixUpOCI`, for a host that runs in a user namespace:
/// each bind (option `bind` or `rbind`) gains the locked flags of the file
/// system its source is on, and its options lose their duplicates (the
/// first of each stays). `flags_of` is `statfs`'s `f_flags` for a source.
pub fn with_unprivileged_bind_options(
    spec: &mut Spec,
    mut flags_of: impl FnMut(&str) -> Result<u64, HostError>,
) -> Result<(), PolicyError> {
    for m in &mut spec.mounts {
        if !m.options.iter().any(|o| o == "bind" || o == "rbind") {
            continue;
        }
        if m.source.is_empty() {
            return Err(PolicyError::InvalidRequest(format!(
                "the bind at {} has no host source, and on a host in a user namespace the flags of its file system are needed (set `resolv_conf` and `hosts_file` there)",
                m.destination
            )));
        }
        let flags = flags_of(&m.source).map_err(|e| {
            PolicyError::Internal(format!(
                "failed to get unprivileged mount flags for the mount at {}: {e}",
                m.destination
            ))
        })?;
        let options = m.options.to_mut();
        for (mask, name) in UNPRIVILEGED_MOUNT_FLAGS {
            if flags & mask == *mask {
                options.push(Name::Borrowed(name));
            }
        }
        let mut seen: Vec<Name> = Vec::with_capacity(options.len());
        options.retain(|o| {
            let first = !seen.contains(o);
            if first {
                seen.push(o.clone());
            }
            first
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_keep_the_flags_their_source_is_mounted_with() {
        let mut spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.3.0",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
                {"destination": "/etc/hosts", "type": "bind", "source": "/run/hosts", "options": ["nosuid", "noexec", "nodev", "rbind", "ro"]},
                {"destination": "/src", "type": "bind", "source": "/data/src", "options": ["rbind", "rbind"]},
                {"destination": "/all", "type": "bind", "source": "/all", "options": ["bind"]}
            ]
        }))
        .unwrap();
        let mut asked = Vec::new();
        // A fake statfs: /run is ro,nosuid,nodev,noexec,relatime; /data
        // nodev,noatime; /all every flag, ST_RELATIME (4096) included.
        with_unprivileged_bind_options(&mut spec, |path| {
            asked.push(path.to_string());
            Ok(match path {
                "/run/hosts" => 1 | 2 | 4 | 8 | 4096,
                "/data/src" => 4 | 1024,
                _ => 1 | 2 | 4 | 8 | 1024 | 2048 | 4096,
            })
        })
        .unwrap();
        assert_eq!(asked, ["/run/hosts", "/data/src", "/all"], "only binds are asked about");
        let options: Vec<Vec<&str>> = spec
            .mounts
            .iter()
            .map(|m| m.options.iter().map(|o| &**o).collect())
            .collect();
        assert_eq!(options[0], ["nosuid", "noexec", "nodev"]);
        assert_eq!(options[1], ["nosuid", "noexec", "nodev", "rbind", "ro"]);
        assert_eq!(options[2], ["rbind", "nodev", "noatime"]);
        assert_eq!(
            options[3],
            ["bind", "ro", "nodev", "noexec", "nosuid", "noatime", "nodiratime"]
        );
        let err = with_unprivileged_bind_options(&mut spec, |_| Err(HostError::Failed("ENOENT".into())))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("the mount at /etc/hosts") && err.contains("ENOENT"),
            "{err}"
        );
        spec.mounts[1].source = "".into();
        let err = with_unprivileged_bind_options(&mut spec, |_| Ok(0))
            .unwrap_err()
            .to_string();
        assert!(err.contains("the bind at /etc/hosts has no host source"), "{err}");
    }

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
