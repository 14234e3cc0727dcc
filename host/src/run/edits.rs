//! The runner's changes to the policies' spec, as named steps applied in
//! one visible order by [`apply`], before the one validation that
//! follows: the bundle's rootfs, the user's supplementary groups, and
//! no capability the host cannot grant.

use std::path::Path;

use specwright_core::facts::CAPABILITY_NAMES;
use specwright_core::spec::Spec;

use super::user::ResolvedUser;

/// This process's capability bounding set (`CapBnd` in /proc/self/status).
pub fn host_bounding_set() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapBnd:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Removes from every capability set what the host cannot grant (a
/// runtime refuses a spec asking for more than it has, as BuildKit's
/// insecure mode does on hosts without, say, CAP_SYS_RESOURCE); returns
/// what was dropped.
pub fn limit_to_host_capabilities(spec: &mut Spec, bounding: Option<u64>) -> Vec<String> {
    let Some(bounding) = bounding else {
        return Vec::new();
    };
    let allowed = |name: &str| match CAPABILITY_NAMES.iter().position(|c| *c == name) {
        Some(bit) => bounding & (1u64 << bit) != 0,
        // A capability newer than this table: let the runtime decide.
        None => true,
    };
    let mut dropped: Vec<String> = Vec::new();
    let Some(caps) = spec.process.as_mut().and_then(|p| p.capabilities.as_mut()) else {
        return dropped;
    };
    for set in caps.sets_mut() {
        if set.iter().all(|c| allowed(c)) {
            // Left as it is (a static list stays borrowed).
            continue;
        }
        set.to_mut().retain(|c| {
            let keep = allowed(c);
            if !keep && !dropped.iter().any(|d| d == c) {
                dropped.push(c.to_string());
            }
            keep
        });
    }
    dropped
}

/// Why an edit could not be made: the policies' spec lacks what it edits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EditError {
    #[error("the policies' spec has no `{0}`")]
    Missing(&'static str),
}

/// `root.path`: the bundle's rootfs mountpoint. The policies must have
/// made `root`: an edit changes what is there and never invents a parent.
pub fn with_root_path(spec: &mut Spec, root: &Path) -> Result<(), EditError> {
    let at = spec.root.as_mut().ok_or(EditError::Missing("root"))?;
    at.path = root.display().to_string().into();
    Ok(())
}

/// `process.user.additionalGids`: the groups the rootfs's /etc/group gives
/// the user (none: left as the policies wrote it).
pub fn with_additional_gids(spec: &mut Spec, gids: &[u32]) -> Result<(), EditError> {
    if gids.is_empty() {
        return Ok(());
    }
    let process = spec.process.as_mut().ok_or(EditError::Missing("process"))?;
    process.user.additional_gids = gids.to_vec();
    Ok(())
}

/// `linux.devices` without the nodes the host lacks, when the container
/// gets a user namespace: there the runtime binds each node from the
/// host's same path (it cannot mknod), and runc fails on the first one
/// that is missing (BuildKit's insecure list names /dev/kvm and /dev/cuse
/// whatever the host has). Returns the paths dropped.
pub fn without_devices_the_host_lacks(spec: &mut Spec, host_has: impl Fn(&Path) -> bool) -> Vec<String> {
    let Some(linux) = spec.linux.as_mut() else {
        return Vec::new();
    };
    if !linux.namespaces.iter().any(|n| n.kind == "user") {
        return Vec::new();
    }
    let mut dropped = Vec::new();
    linux.devices.retain(|d| {
        let keep = host_has(Path::new(&*d.path));
        if !keep {
            dropped.push(d.path.to_string());
        }
        keep
    });
    dropped
}

/// What the runner changed, for the user: the capabilities and device
/// nodes dropped.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub dropped_capabilities: Vec<String>,
    pub dropped_devices: Vec<String>,
}

/// What the runner knows of the host for its edits.
pub struct HostHas<F: Fn(&Path) -> bool> {
    /// The capability bounding set (`None`: unknown, nothing dropped).
    pub bounding: Option<u64>,
    /// Whether a host path exists.
    pub has_path: F,
}

/// Every runner edit, in order: rootfs path, supplementary groups, the
/// host's capability bounding set, then the device nodes it lacks.
pub fn apply<F: Fn(&Path) -> bool>(
    spec: &mut Spec,
    root: &Path,
    user: &ResolvedUser,
    host: HostHas<F>,
) -> Result<Applied, EditError> {
    with_root_path(spec, root)?;
    with_additional_gids(spec, &user.additional_gids)?;
    let dropped_capabilities = limit_to_host_capabilities(spec, host.bounding);
    let dropped_devices = without_devices_the_host_lacks(spec, host.has_path);
    Ok(Applied {
        dropped_capabilities,
        dropped_devices,
    })
}

/// The newest runtime-spec version a runtime says it implements (the
/// `spec: X.Y.Z` line of `runc --version` and `crun --version`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredSpecVersion(String);

impl DeclaredSpecVersion {
    /// The `spec:` line of a runtime's `--version` output, if it has one
    /// that starts with `major.minor`.
    pub fn from_version_output(output: &str) -> Option<DeclaredSpecVersion> {
        let version = output.lines().find_map(|l| l.strip_prefix("spec:"))?.trim();
        major_minor(version)?;
        Some(DeclaredSpecVersion(version.to_string()))
    }
}

/// `major.minor` of a version string such as `1.0.2-dev`.
fn major_minor(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Writes the runtime's declared version as `ociVersion` when the spec
/// names a newer minor one (crun 1.8 refuses "unknown version" 1.2 and
/// up; the runtime spec has runtimes ignore the fields they do not know,
/// and every field is kept). Returns the version it replaced.
pub fn with_runtime_oci_version(spec: &mut Spec, declared: Option<&DeclaredSpecVersion>) -> Option<String> {
    let declared = declared?;
    let newer = major_minor(&spec.oci_version)? > major_minor(&declared.0)?;
    newer.then(|| std::mem::replace(&mut spec.oci_version, declared.0.clone().into()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_device_nodes_go_only_under_a_user_namespace() {
        let devices = serde_json::json!([
            {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229},
            {"path": "/dev/kvm", "type": "c", "major": 10, "minor": 232},
        ]);
        let host_has = |p: &Path| p == Path::new("/dev/fuse");
        let mut in_userns = spec(serde_json::json!({"ociVersion": "1.3.0", "linux": {
            "namespaces": [{"type": "mount"}, {"type": "user"}], "devices": devices.clone()}}));
        assert_eq!(without_devices_the_host_lacks(&mut in_userns, host_has), ["/dev/kvm"]);
        assert_eq!(json(&in_userns)["linux"]["devices"], serde_json::json!([devices[0]]));
        // Without a user namespace the runtime makes the nodes itself.
        let mut plain = spec(serde_json::json!({"ociVersion": "1.3.0", "linux": {
            "namespaces": [{"type": "mount"}], "devices": devices.clone()}}));
        assert!(without_devices_the_host_lacks(&mut plain, host_has).is_empty());
        assert_eq!(json(&plain)["linux"]["devices"], devices);
    }

    #[test]
    fn a_spec_newer_than_the_runtime_declares_gets_the_runtime_version() {
        let crun = "crun version 1.8.1\ncommit: f8a0\nrundir: /run/crun\nspec: 1.0.0\n+SYSTEMD +SELINUX\n";
        let runc = "runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1+deb12u1\nspec: 1.0.2-dev\ngo: go1.19.8\n";
        let crun = DeclaredSpecVersion::from_version_output(crun).unwrap();
        let runc = DeclaredSpecVersion::from_version_output(runc).unwrap();
        assert_eq!(DeclaredSpecVersion::from_version_output("youki version 0.3\n"), None);
        assert_eq!(DeclaredSpecVersion::from_version_output("spec: dev\n"), None);
        let parse = spec;
        let mut spec = parse(serde_json::json!({"ociVersion": "1.3.0", "hostname": "h"}));
        assert_eq!(
            with_runtime_oci_version(&mut spec, Some(&crun)).as_deref(),
            Some("1.3.0")
        );
        assert_eq!(spec.oci_version, "1.0.0");
        assert_eq!(spec.hostname, "h");
        let mut spec = parse(serde_json::json!({"ociVersion": "1.3.0"}));
        assert_eq!(
            with_runtime_oci_version(&mut spec, Some(&runc)).as_deref(),
            Some("1.3.0")
        );
        assert_eq!(spec.oci_version, "1.0.2-dev");
        // Same minor, older, unknown: kept.
        for version in ["1.0.2-dev", "1.0.9", "0.9", "weird"] {
            let mut spec = parse(serde_json::json!({ "ociVersion": version }));
            assert_eq!(with_runtime_oci_version(&mut spec, Some(&crun)), None, "{version}");
            assert_eq!(spec.oci_version, version);
        }
        let mut spec = parse(serde_json::json!({"ociVersion": "1.3.0"}));
        assert_eq!(with_runtime_oci_version(&mut spec, None), None);
    }

    fn spec(json: serde_json::Value) -> Spec {
        serde_json::from_value(json).unwrap()
    }

    fn json(spec: &Spec) -> serde_json::Value {
        serde_json::from_str(&spec.to_json()).unwrap()
    }

    #[test]
    fn capabilities_the_host_lacks_are_dropped_everywhere() {
        let mut spec = spec(
            serde_json::json!({"ociVersion": "1.0.2", "process": {"cwd": "/", "user": {"uid": 0, "gid": 0}, "capabilities": {
                "bounding": ["CAP_CHOWN", "CAP_SYS_RESOURCE", "CAP_SYS_RESOURCE"],
                "ambient": ["CAP_SYS_RESOURCE", "CAP_SYS_ADMIN"]
            }}}),
        );
        let all_but_resource = !(1u64 << 24);
        let dropped = limit_to_host_capabilities(&mut spec, Some(all_but_resource));
        assert_eq!(dropped, ["CAP_SYS_RESOURCE"]);
        let written = json(&spec);
        assert_eq!(
            written["process"]["capabilities"]["bounding"],
            serde_json::json!(["CAP_CHOWN"])
        );
        assert_eq!(
            written["process"]["capabilities"]["ambient"],
            serde_json::json!(["CAP_SYS_ADMIN"])
        );
        assert!(limit_to_host_capabilities(&mut spec, None).is_empty());
    }

    fn user(additional_gids: Vec<u32>) -> ResolvedUser {
        ResolvedUser {
            uid: 1000,
            gid: 1000,
            additional_gids,
        }
    }

    #[test]
    fn the_edits_change_what_the_policies_made_in_order() {
        let mut spec = spec(serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"user": {"uid": 1000, "gid": 1000, "umask": 18}, "cwd": "/", "capabilities": {"bounding": ["CAP_CHOWN", "CAP_SYS_RESOURCE"]}},
            "root": {"path": "rootfs", "readonly": true},
        }));
        let applied = apply(
            &mut spec,
            Path::new("/state/mounts/s-0"),
            &user(vec![10, 29]),
            HostHas {
                bounding: Some(!(1u64 << 24)),
                has_path: |_: &Path| true,
            },
        )
        .unwrap();
        assert_eq!(applied.dropped_capabilities, ["CAP_SYS_RESOURCE"]);
        let written = json(&spec);
        assert_eq!(
            written["root"],
            serde_json::json!({"path": "/state/mounts/s-0", "readonly": true})
        );
        assert_eq!(
            written["process"]["user"]["additionalGids"],
            serde_json::json!([10, 29])
        );
        assert_eq!(
            written["process"]["user"]["umask"], 18,
            "a field the model does not name stays"
        );
        let keys: Vec<&String> = written.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["ociVersion", "process", "root"], "no field is added or moved");
    }

    /// Regression: the edits indexed into the spec, which invents the
    /// parents it does not find (a `process` of only `user.additionalGids`).
    #[test]
    fn an_edit_never_invents_a_parent() {
        let mut bare = spec(serde_json::json!({"ociVersion": "1.0.2", "root": {"path": "rootfs"}}));
        let err = apply(&mut bare, Path::new("/r"), &user(vec![10]), unknown_host())
            .unwrap_err()
            .to_string();
        assert!(err.contains("`process`"), "{err}");
        assert!(bare.process.is_none());
        let mut bare = spec(serde_json::json!({"ociVersion": "1.0.2"}));
        let err = with_root_path(&mut bare, Path::new("/r")).unwrap_err().to_string();
        assert!(err.contains("`root`"), "{err}");
        apply(
            &mut spec(serde_json::json!({"ociVersion": "1.0.2", "root": {"path": ""}})),
            Path::new("/r"),
            &user(vec![]),
            unknown_host(),
        )
        .unwrap();
    }

    fn unknown_host() -> HostHas<fn(&Path) -> bool> {
        HostHas {
            bounding: None,
            has_path: |_| true,
        }
    }
}
