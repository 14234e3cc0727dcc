//! `mount-allowlist`: denies a step any of whose mounts uses a host path
//! outside the prefixes in its settings:
//!
//! ```json
//! {"allowed_sources": ["/var/lib/buildkit", "/srv/cache"]}
//! ```
//!
//! Host paths are a bind's source (any mount that binds: type `bind` or
//! `rbind`, or options `bind`/`rbind` whatever the type says), an
//! overlay's `lowerdir`, `lowerdir+`, `upperdir`, `workdir` and
//! `datadir+`, the device (or image file) of a filesystem on a block
//! device (ext2/3/4, xfs, btrfs, vfat, exfat, squashfs, iso9660, erofs,
//! udf), and the step's `resolv_conf` and `hosts_file`. Each is asked of
//! the host (`canonical-path`), which resolves every symlink, and what it
//! really is is compared with the prefixes component by component
//! (`/srv/cache` allows `/srv/cache/x`, not `/srv/cachex`). The pseudo
//! filesystems that take no host path (tmpfs, proc, sysfs, devpts, mqueue,
//! cgroup) pass. Everything else is denied, not let through: a
//! filesystem it does not know (devtmpfs, binfmt_misc, debugfs,
//! securityfs, nfs, ...), an overlay option it does not know, and a comma
//! inside an option (the kernel would read a second option there:
//! `lowerdir=/srv/x,lowerdir=/etc`) or a backslash in an overlay path (an
//! escape the kernel reads and this policy would not). In a spec an
//! engine wrote, the rootfs (`root.path`) is a host path too. The prefixes
//! themselves are taken as written: give real paths.

use serde::Deserialize;
use specwright_sdk::mounts::clean_absolute;
use specwright_sdk::request::Mountable;
use specwright_sdk::{buildkit, Host, HostCalls, HostError, Input, Policy, PolicyError, Request, Spec};

pub struct MountAllowlist;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub allowed_sources: Vec<String>,
}

impl Settings {
    pub fn from_value(settings: &serde_json::Value) -> Result<Settings, PolicyError> {
        if settings.is_null() {
            return Err(PolicyError::InvalidRequest(
                "settings: mount-allowlist needs {\"allowed_sources\": [...]}".to_string(),
            ));
        }
        serde_json::from_value(settings.clone()).map_err(|e| PolicyError::InvalidRequest(format!("settings: {e}")))
    }

    fn allows(&self, path: &str) -> bool {
        if !path.starts_with('/') {
            return false;
        }
        let path = clean_absolute(path);
        self.allowed_sources.iter().any(|prefix| {
            let prefix = clean_absolute(prefix);
            prefix == "/" || path == prefix || path.strip_prefix(&prefix).is_some_and(|rest| rest.starts_with('/'))
        })
    }
}

/// Filesystems that take no host path. `cgroup` is the runtimes' view of
/// the container's own cgroups; an explicit `cgroup2` mount is the host's
/// whole cgroup tree without a cgroup namespace, and is not here.
pub const PSEUDO_FILESYSTEMS: &[&str] = &["tmpfs", "proc", "sysfs", "devpts", "mqueue", "cgroup"];

/// Filesystems on a block device (or an image file), whose source is the
/// host path checked.
pub const DEVICE_FILESYSTEMS: &[&str] = &[
    "ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "exfat", "squashfs", "iso9660", "erofs", "udf",
];

/// Overlay options that name host directories.
const OVERLAY_PATH_OPTIONS: &[&str] = &["lowerdir", "lowerdir+", "upperdir", "workdir", "datadir+"];

/// Overlay options with a value that is not a path.
const OVERLAY_VALUE_OPTIONS: &[&str] = &[
    "index",
    "redirect_dir",
    "metacopy",
    "xino",
    "nfs_export",
    "uuid",
    "verity",
];

/// Whether a mount binds its source, whatever its type says (the host,
/// like containerd, binds for a `bind` or `rbind` option).
fn binds(mount: &Mountable) -> bool {
    mount.is_bind() || mount.options.iter().any(|o| o == "bind" || o == "rbind")
}

/// The host paths a mount uses, or why they cannot be known.
pub fn host_paths(mount: &Mountable) -> Result<Vec<String>, String> {
    if let Some(option) = mount.options.iter().find(|o| o.contains(',')) {
        return Err(format!(
            "option {option:?} holds a comma, where the kernel would read another option"
        ));
    }
    if binds(mount) {
        return Ok(vec![mount.source.clone()]);
    }
    if mount.kind == "overlay" {
        let mut paths = Vec::new();
        for option in &mount.options {
            let Some((key, value)) = option.split_once('=') else {
                continue;
            };
            if OVERLAY_PATH_OPTIONS.contains(&key) {
                if value.contains('\\') {
                    return Err(format!("overlay option {option:?} holds a backslash (an escape)"));
                }
                paths.extend(value.split(':').map(str::to_string));
            } else if !OVERLAY_VALUE_OPTIONS.contains(&key) {
                return Err(format!("overlay option {key:?} is not one mount-allowlist knows"));
            }
        }
        return Ok(paths);
    }
    if PSEUDO_FILESYSTEMS.contains(&mount.kind.as_str()) {
        return Ok(Vec::new());
    }
    if DEVICE_FILESYSTEMS.contains(&mount.kind.as_str()) {
        if mount.source.starts_with('/') {
            return Ok(vec![mount.source.clone()]);
        }
        return Err(format!(
            "a {} mount of {:?}, which names no device mount-allowlist can check",
            mount.kind, mount.source
        ));
    }
    Err(format!(
        "a {} mount of {:?}: not a filesystem mount-allowlist knows",
        mount.kind, mount.source
    ))
}

/// Why `request` is denied under `settings`, if it is; `canonical` asks the
/// host what a path really is.
pub fn denial(
    request: &Request,
    settings: &Settings,
    mut canonical: impl FnMut(&str) -> Result<String, HostError>,
) -> Result<Option<String>, PolicyError> {
    let mut check = |what: &str, path: &str| -> Option<String> {
        if !path.starts_with('/') {
            return Some(format!("{what} uses {path:?}, not an absolute host path"));
        }
        match place(settings, path, &mut canonical) {
            Place::Unresolved(e) => Some(format!("{what} uses {path}, which the host cannot resolve: {e}")),
            Place::Outside(shown) => Some(format!(
                "{what} uses {shown}, outside the allowed sources {:?}",
                settings.allowed_sources
            )),
            Place::Allowed => None,
        }
    };
    for m in &request.mounts {
        for mount in m.materialize()? {
            let what = format!("mount {}", m.dest);
            let paths = match host_paths(&mount) {
                Ok(paths) => paths,
                Err(why) => return Ok(Some(format!("{what}: {why}"))),
            };
            if let Some(reason) = paths.iter().find_map(|p| check(&what, p)) {
                return Ok(Some(reason));
            }
        }
    }
    for (what, path) in [
        ("resolv_conf", &request.resolv_conf),
        ("hosts_file", &request.hosts_file),
    ] {
        if !path.is_empty() {
            if let Some(reason) = check(what, path) {
                return Ok(Some(reason));
            }
        }
    }
    Ok(None)
}

/// Why the rootfs of `spec` is denied, if it is: a host path (one an
/// engine named absolutely) outside the allowed prefixes.
pub fn rootfs_denial(
    spec: &Spec,
    settings: &Settings,
    mut canonical: impl FnMut(&str) -> Result<String, HostError>,
) -> Option<String> {
    let path = spec.root.as_ref().map(|r| &*r.path).filter(|p| p.starts_with('/'))?;
    match place(settings, path, &mut canonical) {
        Place::Unresolved(e) => Some(format!("the rootfs {path}: the host cannot resolve it: {e}")),
        Place::Outside(shown) => Some(format!(
            "the rootfs {shown} is outside the allowed sources {:?}",
            settings.allowed_sources
        )),
        Place::Allowed => None,
    }
}

/// Where a host path really is, judged against the allowed sources.
enum Place {
    /// The host could not resolve it.
    Unresolved(HostError),
    /// Outside them: the path as given, with where it really is when that
    /// differs (`/a/link (really /etc)`).
    Outside(String),
    Allowed,
}

fn place(settings: &Settings, path: &str, canonical: &mut impl FnMut(&str) -> Result<String, HostError>) -> Place {
    match canonical(path) {
        Err(e) => Place::Unresolved(e),
        Ok(real) if !settings.allows(&real) => Place::Outside(if real == path {
            path.to_string()
        } else {
            format!("{path} (really {real})")
        }),
        Ok(_) => Place::Allowed,
    }
}

impl Policy for MountAllowlist {
    const NAME: &'static str = "mount-allowlist";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Denies any request mount, resolv.conf or hosts file whose real host paths lie outside the allowed prefixes.";

    fn generate(input: Input, host: &mut Host) -> Result<Spec, PolicyError> {
        let settings = Settings::from_value(&input.settings)?;
        if let Some(reason) = denial(&input.request, &settings, |p| host.canonical_path(p))? {
            return Err(PolicyError::Denied(reason));
        }
        match input.previous {
            Some(spec) => {
                if let Some(reason) = rootfs_denial(&spec, &settings, |p| host.canonical_path(p)) {
                    return Err(PolicyError::Denied(reason));
                }
                Ok(spec)
            }
            None => buildkit::generate(&input.request, &input.facts, host),
        }
    }
}

specwright_sdk::export_policy!(MountAllowlist);

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(prefixes: &[&str]) -> Settings {
        Settings {
            allowed_sources: prefixes.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn request(mounts: serde_json::Value) -> Request {
        Request::from_json(&serde_json::json!({"id": "s", "mounts": mounts}).to_string()).unwrap()
    }

    /// A host where `/srv/link` is a symlink to `/etc`.
    fn canonical(path: &str) -> Result<String, HostError> {
        Ok(match path.strip_prefix("/srv/link") {
            Some(rest) => format!("/etc{rest}"),
            None => path.to_string(),
        })
    }

    fn denied(request: &Request, s: &Settings) -> Option<String> {
        denial(request, s, canonical).unwrap()
    }

    #[test]
    fn prefixes_match_whole_components_after_cleaning() {
        let s = settings(&["/srv/cache", "/var/lib/buildkit/"]);
        assert!(s.allows("/srv/cache"));
        assert!(s.allows("/srv/cache/a/b"));
        assert!(s.allows("/var/lib/buildkit/x"));
        assert!(!s.allows("/srv/cachex"));
        assert!(!s.allows("/srv/cache/../../etc"));
        assert!(!s.allows("relative/path"));
        assert!(settings(&["/"]).allows("/anything"));
    }

    #[test]
    fn binds_and_overlays_are_checked_tmpfs_passes() {
        let s = settings(&["/srv"]);
        let ok = request(serde_json::json!([
            {"dest": "/a", "source": "/srv/a"},
            {"dest": "/t", "mountable": [{"type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]}]},
            {"dest": "/o", "mountable": [{"type": "overlay", "source": "overlay",
                "options": ["lowerdir=/srv/l1:/srv/l2", "upperdir=/srv/u", "workdir=/srv/w", "index=off"]}]},
        ]));
        assert_eq!(denied(&ok, &s), None);
        let bad_bind = request(serde_json::json!([{"dest": "/a", "source": "/etc"}]));
        let reason = denied(&bad_bind, &s).unwrap();
        assert!(reason.contains("mount /a uses /etc"), "{reason}");
        let bad_overlay = request(
            serde_json::json!([{"dest": "/o", "mountable": [{"type": "overlay", "source": "overlay",
            "options": ["lowerdir=/srv/l1:/home/x", "upperdir=/srv/u", "workdir=/srv/w"]}]}]),
        );
        assert!(denied(&bad_overlay, &s).unwrap().contains("/home/x"));
    }

    /// Regression: each of these got through.
    #[test]
    fn the_known_bypasses_are_denied() {
        let s = settings(&["/srv"]);
        for (mounts, needle) in [
            // A bind whose type says otherwise: the host binds on `rbind`.
            (
                serde_json::json!([{"dest": "/a", "mountable": [{"type": "none", "source": "/etc", "options": ["rbind"]}]}]),
                "uses /etc",
            ),
            // Overlay keys it did not read.
            (
                serde_json::json!([{"dest": "/o", "mountable": [{"type": "overlay", "source": "overlay",
                    "options": ["lowerdir=/srv/l", "lowerdir+=/etc", "upperdir=/srv/u", "workdir=/srv/w"]}]}]),
                "uses /etc",
            ),
            (
                serde_json::json!([{"dest": "/o", "mountable": [{"type": "overlay", "source": "overlay",
                    "options": ["lowerdir=/srv/l", "redirect_path=/etc"]}]}]),
                "not one mount-allowlist knows",
            ),
            // A symlink inside an allowed prefix, pointing out of it.
            (
                serde_json::json!([{"dest": "/a", "source": "/srv/link/shadow"}]),
                "really /etc/shadow",
            ),
            // A block device.
            (
                serde_json::json!([{"dest": "/d", "mountable": [{"type": "ext4", "source": "/dev/sda1"}]}]),
                "uses /dev/sda1",
            ),
            (
                serde_json::json!([{"dest": "/n", "mountable": [{"type": "nfs", "source": "server:/export"}]}]),
                "not a filesystem mount-allowlist knows",
            ),
            // Filesystems that take no path but hand the host's state in.
            (
                serde_json::json!([{"dest": "/dev", "mountable": [{"type": "devtmpfs", "source": "devtmpfs"}]}]),
                "not a filesystem mount-allowlist knows",
            ),
            (
                serde_json::json!([{"dest": "/b", "mountable": [{"type": "binfmt_misc", "source": "binfmt_misc"}]}]),
                "not a filesystem mount-allowlist knows",
            ),
            (
                serde_json::json!([{"dest": "/k", "mountable": [{"type": "debugfs", "source": "/srv/x"}]}]),
                "not a filesystem mount-allowlist knows",
            ),
            (
                serde_json::json!([{"dest": "/s", "mountable": [{"type": "securityfs", "source": "securityfs"}]}]),
                "not a filesystem mount-allowlist knows",
            ),
            // The host's whole cgroup tree.
            (
                serde_json::json!([{"dest": "/c", "mountable": [{"type": "cgroup2", "source": "cgroup2"}]}]),
                "not a filesystem mount-allowlist knows",
            ),
            // A second lowerdir in one option's value.
            (
                serde_json::json!([{"dest": "/o", "mountable": [{"type": "overlay", "source": "overlay",
                    "options": ["lowerdir=/srv/x,lowerdir=/etc", "upperdir=/srv/u", "workdir=/srv/w"]}]}]),
                "holds a comma",
            ),
            (
                serde_json::json!([{"dest": "/o", "mountable": [{"type": "overlay", "source": "overlay",
                    "options": ["lowerdir=/srv/x\\:/etc", "upperdir=/srv/u", "workdir=/srv/w"]}]}]),
                "backslash",
            ),
        ] {
            let reason = denied(&request(mounts.clone()), &s);
            assert!(
                reason.as_deref().is_some_and(|r| r.contains(needle)),
                "{mounts}: {reason:?}"
            );
        }
        let mut with_files = request(serde_json::json!([]));
        with_files.resolv_conf = "/etc/shadow".into();
        assert!(denied(&with_files, &s)
            .unwrap()
            .contains("resolv_conf uses /etc/shadow"));
        with_files.resolv_conf = "/srv/resolv.conf".into();
        with_files.hosts_file = "/srv/link/hosts".into();
        assert!(denied(&with_files, &s)
            .unwrap()
            .contains("hosts_file uses /srv/link/hosts (really /etc/hosts)"));
    }

    #[test]
    fn settings_are_required_and_checked() {
        assert!(Settings::from_value(&serde_json::Value::Null).is_err());
        assert!(Settings::from_value(&serde_json::json!({"allowed": []})).is_err());
        assert!(Settings::from_value(&serde_json::json!({"allowed_sources": ["/x"]})).is_ok());
    }

    /// Regression (red team): no policy looked at the rootfs; `/usr` as a
    /// container's root made runc write into the host's `/usr`.
    #[test]
    fn an_engines_rootfs_outside_the_allowed_sources_is_denied() {
        let s = settings(&["/srv"]);
        let spec = |path: &str| -> Spec {
            serde_json::from_value(serde_json::json!({"ociVersion": "1.0.2", "root": {"path": path}})).unwrap()
        };
        assert_eq!(rootfs_denial(&spec("/srv/c/rootfs"), &s, canonical), None);
        assert_eq!(rootfs_denial(&spec("rootfs"), &s, canonical), None, "a bundle's own");
        assert!(rootfs_denial(&spec("/usr"), &s, canonical)
            .unwrap()
            .contains("the rootfs /usr"));
        assert!(rootfs_denial(&spec("/srv/link"), &s, canonical)
            .unwrap()
            .contains("really /etc"));
    }
}
