//! `hardened`: tightens whatever spec comes before it in the chain (or the
//! default policy's spec when it runs alone). Denies insecure mode and the
//! host network; drops CAP_NET_RAW and CAP_MKNOD from every capability set;
//! sets NoNewPrivileges; makes the rootfs read-only.

use specwright_sdk::request::{Network, SecurityMode};
use specwright_sdk::{buildkit, Host, Input, Policy, PolicyError, Request, Spec};

pub struct Hardened;

/// Capabilities a build step does not get.
pub const DROPPED_CAPS: &[&str] = &["CAP_NET_RAW", "CAP_MKNOD"];

/// Why `request` is denied, if it is.
pub fn denial(request: &Request) -> Option<String> {
    if request.security_mode == SecurityMode::Insecure {
        return Some("insecure mode is not allowed".to_string());
    }
    if request.network == Network::Host {
        return Some("the host network is not allowed".to_string());
    }
    None
}

/// The hardening itself, on any spec.
pub fn harden(mut spec: Spec) -> Spec {
    let process = spec.process_mut();
    process.no_new_privileges = true;
    if let Some(caps) = process.capabilities.as_mut() {
        for set in [
            &mut caps.bounding,
            &mut caps.effective,
            &mut caps.inheritable,
            &mut caps.permitted,
            &mut caps.ambient,
        ] {
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
        "Denies insecure mode and the host network; drops CAP_NET_RAW and CAP_MKNOD; sets NoNewPrivileges; read-only rootfs.";

    fn generate(input: Input, host: &mut Host) -> Result<Spec, PolicyError> {
        if let Some(reason) = denial(&input.request) {
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
        }
    }

    #[test]
    fn insecure_and_host_network_are_denied() {
        assert!(denial(&request(r#", "security_mode": "insecure""#))
            .unwrap()
            .contains("insecure"));
        assert!(denial(&request(r#", "network": {"mode": "host"}"#))
            .unwrap()
            .contains("host network"));
        assert_eq!(denial(&request("")), None);
        assert_eq!(
            denial(&request(r#", "network": {"mode": "path", "path": "/run/netns/x"}"#)),
            None
        );
    }

    #[test]
    fn hardening_drops_caps_and_privileges() {
        let spec = harden(generate_without_mounts(&request(""), &facts()).unwrap());
        let process = spec.process.as_ref().unwrap();
        assert!(process.no_new_privileges);
        let caps = process.capabilities.as_ref().unwrap();
        for set in [&caps.bounding, &caps.effective, &caps.inheritable, &caps.permitted] {
            assert_eq!(set.len(), 12, "{set:?}");
            assert!(!set.iter().any(|c| c == "CAP_NET_RAW" || c == "CAP_MKNOD"));
            assert!(set.iter().any(|c| c == "CAP_CHOWN"));
        }
        assert!(spec.root.unwrap().readonly);
    }
}
