//! `hardened`: tightens whatever spec comes before it in the chain (or the
//! default policy's spec when it runs alone). Denies insecure mode, the
//! host's PID namespace (`no-sandbox`), the host network, and any network
//! namespace joined by path unless what the path really is (asked of the
//! host, symlinks resolved) lies under an allowed prefix (settings
//! `{"allowed_netns": [...]}`, default `["/run/netns"]`, where `ip netns`
//! and CNI put them: `/proc/<pid>/ns/net` of a host process is denied);
//! drops CAP_NET_RAW and CAP_MKNOD from every capability set; sets
//! NoNewPrivileges; makes the rootfs read-only.

use serde::Deserialize;
use specwright_sdk::mounts::clean_absolute;
use specwright_sdk::request::{Network, ProcessMode, SecurityMode};
use specwright_sdk::{buildkit, Host, HostError, Input, Policy, PolicyError, Request, Spec};

pub struct Hardened;

/// Capabilities a build step does not get.
pub const DROPPED_CAPS: &[&str] = &["CAP_NET_RAW", "CAP_MKNOD"];

/// Where network namespaces may be joined from, by default.
pub const DEFAULT_ALLOWED_NETNS: &[&str] = &["/run/netns"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default = "default_allowed_netns")]
    pub allowed_netns: Vec<String>,
}

fn default_allowed_netns() -> Vec<String> {
    DEFAULT_ALLOWED_NETNS.iter().map(|s| s.to_string()).collect()
}

impl Settings {
    pub fn from_value(settings: &serde_json::Value) -> Result<Settings, PolicyError> {
        if settings.is_null() {
            return Ok(Settings {
                allowed_netns: default_allowed_netns(),
            });
        }
        serde_json::from_value(settings.clone()).map_err(|e| PolicyError::InvalidRequest(format!("settings: {e}")))
    }

    fn allows_netns(&self, real: &str) -> bool {
        real.starts_with('/')
            && self.allowed_netns.iter().any(|prefix| {
                let prefix = clean_absolute(prefix);
                clean_absolute(real)
                    .strip_prefix(&prefix)
                    .is_some_and(|rest| rest.starts_with('/'))
            })
    }
}

/// Why `request` is denied, if it is; `canonical` asks the host what a
/// path really is.
pub fn denial(
    request: &Request,
    settings: &Settings,
    canonical: impl FnOnce(&str) -> Result<String, HostError>,
) -> Option<String> {
    if request.security_mode == SecurityMode::Insecure {
        return Some("insecure mode is not allowed".to_string());
    }
    if request.process_mode == ProcessMode::NoSandbox {
        return Some("the host's PID namespace (process mode no-sandbox) is not allowed".to_string());
    }
    match &request.network {
        Network::Host => Some("the host network is not allowed".to_string()),
        Network::Path { path } => match canonical(path) {
            Err(e) => Some(format!("network namespace {path}: the host cannot resolve it: {e}")),
            Ok(real) if !settings.allows_netns(&real) => Some(format!(
                "network namespace {path}{} is not under the allowed {:?}",
                if real == *path {
                    String::new()
                } else {
                    format!(" (really {real})")
                },
                settings.allowed_netns
            )),
            Ok(_) => None,
        },
        Network::None => None,
    }
}

/// The hardening itself, on any spec.
pub fn harden(mut spec: Spec) -> Spec {
    let process = spec.process_mut();
    process.no_new_privileges = true;
    if let Some(caps) = process.capabilities.as_mut() {
        for set in caps.sets_mut() {
            // A list borrowed from the default spec is copied only if it changes.
            if set.iter().any(|c| DROPPED_CAPS.contains(&&**c)) {
                set.to_mut().retain(|c| !DROPPED_CAPS.contains(&&**c));
            }
        }
    }
    spec.root.get_or_insert_with(Default::default).readonly = true;
    spec
}

impl Policy for Hardened {
    const NAME: &'static str = "hardened";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Denies insecure mode, the host PID namespace and network, and network namespaces outside /run/netns; drops CAP_NET_RAW and CAP_MKNOD; sets NoNewPrivileges; read-only rootfs.";

    fn generate(input: Input, host: &mut Host) -> Result<Spec, PolicyError> {
        let settings = Settings::from_value(&input.settings)?;
        if let Some(reason) = denial(&input.request, &settings, |p| host.canonical_path(p)) {
            return Err(PolicyError::Denied(reason));
        }
        let spec = match input.previous {
            Some(spec) => spec,
            None => buildkit::generate(&input.request, &input.facts, host)?,
        };
        Ok(harden(spec))
    }
}

specwright_sdk::export_policy!(Hardened);

#[cfg(test)]
mod tests {
    use super::*;
    use specwright_sdk::buildkit::generate_without_mounts;
    use specwright_sdk::HostFacts;

    fn request(extra: &str) -> Request {
        Request::from_json(&format!(r#"{{"id": "s", "args": ["/bin/true"]{extra}}}"#)).unwrap()
    }

    fn facts() -> HostFacts {
        HostFacts {
            kernel_release: "6.1".into(),
            seccomp: true,
            first_free_loop: 0,
            in_user_namespace: false,
            arch: "amd64".into(),
            ..HostFacts::default()
        }
    }

    /// A host where `/run/netns/evil` is a symlink to the host's namespace.
    fn canonical(path: &str) -> Result<String, HostError> {
        Ok(match path {
            "/proc/1/ns/net" | "/run/netns/evil" => "net:[4026531840]".to_string(),
            other => other.to_string(),
        })
    }

    fn denied(extra: &str) -> Option<String> {
        denial(
            &request(extra),
            &Settings::from_value(&serde_json::Value::Null).unwrap(),
            canonical,
        )
    }

    #[test]
    fn insecure_and_host_network_are_denied() {
        assert!(denied(r#", "security_mode": "insecure""#).unwrap().contains("insecure"));
        assert!(denied(r#", "network": {"mode": "host"}"#)
            .unwrap()
            .contains("host network"));
        assert_eq!(denied(""), None);
        assert_eq!(denied(r#", "network": {"mode": "path", "path": "/run/netns/x"}"#), None);
    }

    /// Regression: the host's network namespace by path, and the host's
    /// PID namespace, got through.
    #[test]
    fn host_namespaces_by_path_or_process_mode_are_denied() {
        assert!(denied(r#", "network": {"mode": "path", "path": "/proc/1/ns/net"}"#)
            .unwrap()
            .contains("not under the allowed"));
        assert!(denied(r#", "network": {"mode": "path", "path": "/run/netns/evil"}"#)
            .unwrap()
            .contains("really net:[4026531840]"));
        assert!(denied(r#", "network": {"mode": "path", "path": "/run/netnsx/a"}"#).is_some());
        assert!(denied(r#", "process_mode": "no-sandbox""#)
            .unwrap()
            .contains("no-sandbox"));
        let custom = Settings::from_value(&serde_json::json!({"allowed_netns": ["/var/run/cni"]})).unwrap();
        assert_eq!(
            denial(
                &request(r#", "network": {"mode": "path", "path": "/var/run/cni/n1"}"#),
                &custom,
                canonical
            ),
            None
        );
        assert!(Settings::from_value(&serde_json::json!({"other": 1})).is_err());
    }

    #[test]
    fn hardening_drops_caps_and_privileges() {
        let spec = harden(generate_without_mounts(&request(""), &facts()).unwrap());
        let process = spec.process.as_ref().unwrap();
        assert!(process.no_new_privileges);
        let caps = process.capabilities.as_ref().unwrap();
        // BuildKit v0.32 grants no inheritable capabilities at all.
        assert!(caps.inheritable.is_empty(), "{:?}", caps.inheritable);
        for set in [&caps.bounding, &caps.effective, &caps.permitted] {
            assert_eq!(set.len(), 12, "{set:?}");
            assert!(!set.iter().any(|c| c == "CAP_NET_RAW" || c == "CAP_MKNOD"));
            assert!(set.iter().any(|c| c == "CAP_CHOWN"));
        }
        assert!(spec.root.unwrap().readonly);
    }
}
