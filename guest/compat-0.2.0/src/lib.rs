//! A policy built against `specwright:policy@0.2.0` (its WIT is the 0.2.0
//! file, frozen in `wit/`), without the SDK, which follows the newest
//! package. It passes the previous spec on after asking the host whether
//! the request's resolv.conf exists (an import, so linking is exercised),
//! and refuses to be first in a chain.

wit_bindgen::generate!({
    path: "wit",
    world: "policy",
});

use specwright::policy::host;

struct Compat;

impl Guest for Compat {
    fn generate(
        request: String,
        _facts: HostFacts,
        _settings: String,
        previous: Option<String>,
    ) -> Result<String, PolicyError> {
        let previous =
            previous.ok_or_else(|| PolicyError::InvalidRequest("run me after another policy".to_string()))?;
        // The one field this policy reads, found without a JSON parser.
        let resolv_conf = request
            .split("\"resolv_conf\":")
            .nth(1)
            .and_then(|rest| rest.trim_start().strip_prefix('"'))
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_default();
        if !resolv_conf.is_empty() {
            host::exists(resolv_conf).map_err(|e| PolicyError::Internal(format!("{e:?}")))?;
        }
        Ok(previous)
    }

    fn metadata() -> PolicyMetadata {
        PolicyMetadata {
            name: "compat-0.2.0".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            description: "Built against specwright:policy@0.2.0.".to_string(),
        }
    }
}

export!(Compat);
