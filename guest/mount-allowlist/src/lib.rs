//! `mount-allowlist`: denies a step any of whose mounts uses a host path
//! outside the prefixes in its settings:
//!
//! ```json
//! {"allowed_sources": ["/var/lib/buildkit", "/srv/cache"]}
//! ```
//!
//! Host paths are a bind's source and an overlay's `lowerdir`, `upperdir`
//! and `workdir`; they are cleaned (`..` resolved lexically) before they are
//! compared, component by component (`/srv/cache` allows `/srv/cache/x`,
//! not `/srv/cachex`). Mounts with no host path (tmpfs, proc) pass.

use serde::Deserialize;
use specwright_sdk::mounts::clean_absolute;
use specwright_sdk::request::Mountable;
use specwright_sdk::{buildkit, Host, Input, Policy, PolicyError, Request, Spec};

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

/// The host paths a mount uses.
pub fn host_paths(mount: &Mountable) -> Vec<String> {
    if mount.is_bind() {
        return vec![mount.source.clone()];
    }
    if mount.kind == "overlay" {
        return mount
            .options
            .iter()
            .filter_map(|o| o.split_once('='))
            .filter(|(k, _)| matches!(*k, "lowerdir" | "upperdir" | "workdir"))
            .flat_map(|(_, v)| v.split(':').map(str::to_string).collect::<Vec<_>>())
            .collect();
    }
    Vec::new()
}

/// Why `request` is denied under `settings`, if it is.
pub fn denial(request: &Request, settings: &Settings) -> Result<Option<String>, PolicyError> {
    for m in &request.mounts {
        for mount in m.materialize()? {
            if let Some(bad) = host_paths(&mount).into_iter().find(|p| !settings.allows(p)) {
                return Ok(Some(format!(
                    "mount {} uses {bad}, outside the allowed sources {:?}",
                    m.dest, settings.allowed_sources
                )));
            }
        }
    }
    Ok(None)
}

impl Policy for MountAllowlist {
    const NAME: &'static str = "mount-allowlist";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Denies any request mount whose host paths lie outside the allowed source prefixes.";

    fn generate(input: Input, host: &mut Host) -> Result<Spec, PolicyError> {
        let settings = Settings::from_value(&input.settings)?;
        if let Some(reason) = denial(&input.request, &settings)? {
            return Err(PolicyError::Denied(reason));
        }
        match input.previous {
            Some(spec) => Ok(spec),
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
                "options": ["lowerdir=/srv/l1:/srv/l2", "upperdir=/srv/u", "workdir=/srv/w"]}]},
        ]));
        assert_eq!(denial(&ok, &s).unwrap(), None);
        let bad_bind = request(serde_json::json!([{"dest": "/a", "source": "/etc"}]));
        let reason = denial(&bad_bind, &s).unwrap().unwrap();
        assert!(reason.contains("mount /a uses /etc"), "{reason}");
        let bad_overlay = request(
            serde_json::json!([{"dest": "/o", "mountable": [{"type": "overlay", "source": "overlay",
            "options": ["lowerdir=/srv/l1:/home/x", "upperdir=/srv/u", "workdir=/srv/w"]}]}]),
        );
        assert!(denial(&bad_overlay, &s).unwrap().unwrap().contains("/home/x"));
    }

    #[test]
    fn settings_are_required_and_checked() {
        assert!(Settings::from_value(&serde_json::Value::Null).is_err());
        assert!(Settings::from_value(&serde_json::json!({"allowed": []})).is_err());
        assert!(Settings::from_value(&serde_json::json!({"allowed_sources": ["/x"]})).is_ok());
    }
}
