//! The host paths a container's runtime opens after the review, as the
//! chain judged them: named absolutely before the chain runs (the rootfs
//! by its real path, a hook by the program a process runs), and each one,
//! once approved, one no other user can redirect before the runtime opens
//! it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use specwright_core::spec::Spec;

use crate::sys::Syscalls;

/// A host path the runtime opens after the review, with the field (or
/// flag) that names it.
pub(super) struct HostPath {
    field: String,
    path: PathBuf,
    /// Whether it may belong to the user the container's root is: what
    /// the container itself opens (its rootfs, a mount's source) and the
    /// files an engine keeps with it (podman's pid file), not what runs or
    /// is joined on the host (hooks, namespaces).
    container_may_own: bool,
}

/// The host paths the runtime opens after the review: the rootfs, every
/// absolute path a mount names (its source, the directories in its
/// options), every namespace joined by path, the seccomp agent's socket,
/// and every hook resolved in
/// the host's mount namespace (createContainer hooks too: the runtime
/// resolves them before pivot_root, where the host's files are visible).
fn runtime_host_paths(spec: &Spec) -> Vec<HostPath> {
    let mut paths = Vec::new();
    let mut add = |field: String, path: &str, container_may_own: bool| {
        if path.starts_with('/') {
            paths.push(HostPath {
                field,
                path: PathBuf::from(path),
                container_may_own,
            });
        }
    };
    if let Some(root) = &spec.root {
        add("root.path".to_string(), &root.path, true);
    }
    for (i, mount) in spec.mounts.iter().enumerate() {
        add(format!("mounts[{i}].source"), &mount.source, true);
        for option in mount.options.iter() {
            if let Some((_, value)) = option.split_once('=') {
                for part in value.split(':') {
                    add(format!("mounts[{i}].options"), part, true);
                }
            }
        }
    }
    if let Some(linux) = &spec.linux {
        for (i, namespace) in linux.namespaces.iter().enumerate() {
            add(format!("linux.namespaces[{i}].path"), &namespace.path, false);
        }
        // The socket the runtime hands the container's seccomp
        // notifications to: whoever listens there answers its syscalls.
        let listener = linux.seccomp.as_ref().and_then(|s| s.extra.get("listenerPath"));
        if let Some(path) = listener.and_then(|v| v.as_str()) {
            add("linux.seccomp.listenerPath".to_string(), path, false);
        }
    }
    if let Some(hooks) = &spec.hooks {
        for (name, list) in [
            ("prestart", &hooks.prestart),
            ("createRuntime", &hooks.create_runtime),
            ("createContainer", &hooks.create_container),
            ("poststart", &hooks.poststart),
            ("poststop", &hooks.poststop),
        ] {
            for (i, hook) in list.iter().enumerate() {
                add(format!("hooks.{name}[{i}].path"), &hook.path, false);
            }
        }
    }
    paths
}

/// The lowest host id a user namespace may map for its storage to count
/// as the container's own: above root's, the system accounts' and the
/// login users' ids.
const FIRST_SUBORDINATE_ID: u32 = 65536;

/// How much of an id file (`/etc/passwd`, `/etc/subuid`, ...) is read.
const MAX_ID_FILE_BYTES: u64 = 4 << 20;

/// The user the spec maps to the container's root, whose storage (podman's
/// with `--uidmap`: the rootfs, the pid file) is the container's own. Only
/// when the spec creates a user namespace (runc and crun ignore mappings
/// without one) and every id it maps, user or group, is one no one on the
/// host can act as: 65536 or above, no account's (`/etc/passwd`,
/// `/etc/group`), in no one's subordinate range (`/etc/subuid`,
/// `/etc/subgid`, which `newuidmap` lets their owner take) but root's and
/// `containers`' (podman's `--userns=auto`, which no one logs in as).
/// Otherwise whoever acts as those ids could swap such a path after the
/// review, and put the container (or a file the runtime writes as root)
/// anywhere.
fn container_root_owner(spec: &Spec) -> Option<u32> {
    let linux = spec.linux.as_ref()?;
    let creates_userns = linux.namespaces.iter().any(|n| n.kind == "user" && n.path.is_empty());
    if !creates_userns {
        return None;
    }
    if !unclaimed(&linux.uid_mappings, &claimed_ids("/etc/passwd", "/etc/subuid"))
        || !unclaimed(&linux.gid_mappings, &claimed_ids("/etc/group", "/etc/subgid"))
    {
        return None;
    }
    linux
        .uid_mappings
        .iter()
        .find(|m| m.container_id == 0 && m.size > 0)
        .map(|m| m.host_id)
}

/// Whether every id `mappings` map on the host is one no one can act as:
/// 65536 or above, and outside every range of `claimed`.
fn unclaimed(mappings: &[specwright_core::spec::IdMapping], claimed: &[(u64, u64)]) -> bool {
    mappings.iter().all(|m| {
        let start = u64::from(m.host_id);
        let end = start + u64::from(m.size);
        m.host_id >= FIRST_SUBORDINATE_ID && !claimed.iter().any(|&(from, to)| from < end && start < to)
    })
}

/// The host ids someone can act as, by the files at `accounts` and
/// `subordinate` ([`claimed_ranges`]). A missing file claims nothing; one
/// that cannot be read (or another user could change) claims every id.
fn claimed_ids(accounts: &str, subordinate: &str) -> Vec<(u64, u64)> {
    let read = |path: &str| -> Option<String> {
        match crate::input::read_trusted_text(Path::new(path), MAX_ID_FILE_BYTES) {
            Ok(text) => Some(text),
            Err(_) if !Path::new(path).exists() => Some(String::new()),
            Err(_) => None,
        }
    };
    match (read(accounts), read(subordinate)) {
        (Some(accounts), Some(subordinate)) => claimed_ranges(&accounts, &subordinate),
        _ => vec![(0, u64::MAX)],
    }
}

/// The host ids someone can act as, as half-open ranges: each account's
/// in `accounts` (`name:x:id:...`), each subordinate range in
/// `subordinate` (`name:start:count`) but root's and `containers`'.
fn claimed_ranges(accounts: &str, subordinate: &str) -> Vec<(u64, u64)> {
    let number = |field: Option<&str>| field.and_then(|f| f.trim().parse::<u64>().ok());
    let mut claimed: Vec<(u64, u64)> = accounts
        .lines()
        .filter_map(|line| number(line.split(':').nth(2)))
        .map(|id| (id, id + 1))
        .collect();
    for line in subordinate.lines() {
        let mut fields = line.split(':');
        let owner = fields.next().unwrap_or_default().trim();
        if ["root", "0", "containers"].contains(&owner) {
            continue;
        }
        if let (Some(start), Some(count)) = (number(fields.next()), number(fields.next())) {
            claimed.push((start, start.saturating_add(count)));
        }
    }
    claimed
}

/// What the chain approved is what the runtime opens: no user but root
/// and this one may be able to swap a host path the runtime opens after
/// the review (a rootfs for a symlink, which crun follows; a hook's
/// program). The user the container's root is counts too where
/// [`HostPath::container_may_own`] says so.
pub(super) fn check_fixed_paths(sys: &dyn Syscalls, spec: &Spec) -> Result<()> {
    check_fixed_files(sys, spec, &runtime_host_paths(spec))
}

/// [`check_fixed_paths`] for `files`, of a container whose spec is `spec`.
pub(super) fn check_fixed_files(sys: &dyn Syscalls, spec: &Spec, files: &[HostPath]) -> Result<()> {
    let owner: Vec<u32> = container_root_owner(spec).into_iter().collect();
    for host in files {
        let owners = if host.container_may_own { &owner[..] } else { &[] };
        sys.check_fixed_path(&host.path, owners)
            .with_context(|| format!("{} {}", host.field, host.path.display()))?;
    }
    Ok(())
}

/// The files a subcommand's flags have the runtime write or connect to
/// as root (`--pid-file`, `--console-socket`), named absolutely against
/// the working directory, as both runtimes name them. podman keeps them
/// in a directory of the container's root (with `--uidmap`).
pub(super) fn flag_files(flags: &[(&'static str, PathBuf)]) -> Result<Vec<HostPath>> {
    flags
        .iter()
        .map(|(flag, file)| {
            let path = std::path::absolute(file).with_context(|| format!("--{flag} {}", file.display()))?;
            Ok(HostPath {
                field: format!("--{flag}"),
                path,
                container_may_own: true,
            })
        })
        .collect()
}

/// What the spec names relative to its bundle, named absolutely: the
/// rootfs (its real path, every symlink resolved now) and the source of
/// every bind given relative to the bundle; and a hook named through a
/// process, by its program ([`anchor_hooks`]). The runtime is handed
/// another bundle; the policies see, and the runtime gets, the same paths.
pub(super) fn anchor_to_bundle(spec: &mut Spec, bundle: &Path) -> Result<()> {
    if let Some(root) = spec.root.as_mut() {
        let path = bundle.join(&*root.path);
        let real = std::fs::canonicalize(&path).with_context(|| format!("root.path {}", path.display()))?;
        let real = real
            .to_str()
            .with_context(|| format!("root.path {}: not UTF-8", real.display()))?;
        root.path = real.to_string().into();
    }
    join_bind_sources(spec, bundle)?;
    anchor_hooks(spec)
}

/// What the chain approved relative to the bundle (the rootfs, a bind's
/// source), joined to the engine's bundle `bundle` without resolving
/// anything: the fixed-path check then walks exactly the path the runtime
/// is handed. Absolute paths stay as approved.
pub(super) fn join_to_bundle(spec: &mut Spec, bundle: &Path) -> Result<()> {
    if let Some(root) = spec.root.as_mut() {
        if !root.path.starts_with('/') {
            let path = bundle.join(&*root.path);
            let path = path
                .to_str()
                .with_context(|| format!("root.path {}: not UTF-8", path.display()))?;
            root.path = path.to_string().into();
        }
    }
    join_bind_sources(spec, bundle)
}

/// Every bind's source given relative to the bundle, joined to it.
fn join_bind_sources(spec: &mut Spec, bundle: &Path) -> Result<()> {
    for mount in spec.mounts.iter_mut() {
        let binds =
            mount.kind == "bind" || mount.kind == "rbind" || mount.options.iter().any(|o| o == "bind" || o == "rbind");
        if binds && !mount.source.is_empty() && !mount.source.starts_with('/') {
            let source = bundle.join(&*mount.source);
            let source = source
                .to_str()
                .with_context(|| format!("mount {}: source not UTF-8", mount.destination))?;
            mount.source = source.to_string().into();
        }
    }
    Ok(())
}

/// A hook the runtime runs later (a poststop hook: at `delete`, any time
/// after) named through a process, `/proc/<pid>/exe` (Docker's
/// `libnetwork-setkey`), is named by the program that process runs now:
/// by then another process, anyone's, may have its pid. The chain judges,
/// and the runtime runs, that program. Any other path under /proc (the
/// runtime's own `/proc/self`, a process's root) is refused.
fn anchor_hooks(spec: &mut Spec) -> Result<()> {
    let Some(hooks) = spec.hooks.as_mut() else {
        return Ok(());
    };
    for (name, list) in [
        ("prestart", &mut hooks.prestart),
        ("createRuntime", &mut hooks.create_runtime),
        ("createContainer", &mut hooks.create_container),
        ("startContainer", &mut hooks.start_container),
        ("poststart", &mut hooks.poststart),
        ("poststop", &mut hooks.poststop),
    ] {
        for (i, hook) in list.iter_mut().enumerate() {
            let Some(rest) = hook.path.strip_prefix("/proc/") else {
                continue;
            };
            let field = format!("hooks.{name}[{i}].path {}", hook.path);
            if name == "startContainer" {
                // Resolved in the container, after pivot_root: its own /proc.
                continue;
            }
            let process_exe = rest
                .strip_suffix("/exe")
                .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
            if !process_exe {
                bail!("{field}: a hook under /proc other than a process's exe (/proc/<pid>/exe)");
            }
            let program = std::fs::read_link(&hook.path).with_context(|| field.clone())?;
            let program = program
                .to_str()
                .filter(|p| p.starts_with('/') && !p.ends_with(" (deleted)"))
                .with_context(|| format!("{field}: the program behind it ({}) is gone", program.display()))?;
            hook.path = program.to_string();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use specwright_core::spec::IdMapping;

    /// Regression (review of the refactor): the approved rootfs was
    /// resolved again after the chain, so a component swapped for a link
    /// to `/` while the chain ran handed the runtime `/`, and only `/` was
    /// checked. What the chain approved is joined, never resolved.
    #[test]
    fn what_the_chain_approved_is_joined_to_the_bundle_never_resolved() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("real")).unwrap();
        std::os::unix::fs::symlink("/", dir.path().join("real/rootfs")).unwrap();
        std::os::unix::fs::symlink("real", dir.path().join("bundle")).unwrap();
        let bundle = dir.path().join("bundle");
        let mut spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.2.1",
            "root": {"path": "rootfs"},
            "mounts": [
                {"destination": "/a", "type": "bind", "source": "data", "options": ["rbind"]},
                {"destination": "/b", "type": "bind", "source": "/srv/link", "options": ["rbind"]}
            ]
        }))
        .unwrap();
        join_to_bundle(&mut spec, &bundle).unwrap();
        let root = spec.root.as_ref().map(|r| r.path.to_string());
        assert_eq!(
            root,
            Some(bundle.join("rootfs").display().to_string()),
            "not resolved to /"
        );
        assert_eq!(&*spec.mounts[0].source, bundle.join("data").to_str().unwrap());
        assert_eq!(
            &*spec.mounts[1].source, "/srv/link",
            "an absolute path stays as approved"
        );
        let mut absolute = spec.clone();
        join_to_bundle(&mut absolute, Path::new("/elsewhere")).unwrap();
        assert_eq!(absolute, spec, "joining what is absolute changes nothing");
    }

    fn mapping(host_id: u32, size: u32) -> IdMapping {
        IdMapping {
            container_id: 0,
            host_id,
            size,
        }
    }

    #[test]
    fn ids_someone_can_act_as_are_never_the_containers_own() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\nldapish:x:200000:100::/home/l:/bin/sh\n";
        let subuid = "alice:100000:65536\ncontainers:1000000:1000000\nroot:500000:65536\n";
        let claimed = claimed_ranges(passwd, subuid);
        // alice can take 100000..165535 with newuidmap; 200000 is an account.
        for (host, size) in [
            (100000, 65536),
            (165535, 10),
            (150000, 1),
            (199999, 2),
            (65534, 1),
            (0, 1),
        ] {
            assert!(!unclaimed(&[mapping(host, size)], &claimed), "{host}+{size}");
        }
        // podman's --userns=auto range, root's own, and ids no one has.
        for (host, size) in [(1000000, 65536), (500000, 65536), (300000, 65536), (165536, 34464)] {
            assert!(unclaimed(&[mapping(host, size)], &claimed), "{host}+{size}");
        }
        // Every mapping must be unclaimed.
        assert!(!unclaimed(&[mapping(300000, 65536), mapping(100000, 1)], &claimed));
        assert!(unclaimed(&[], &claimed));
        assert_eq!(claimed_ranges("", ""), Vec::<(u64, u64)>::new());
    }
}
