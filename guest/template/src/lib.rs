//! A policy template. It runs after the default policy (`--policy default
//! --policy my_policy.wasm`), takes the spec it produced, and changes it.
//! Everything it knows is in `input`; everything privileged goes through
//! `host` (only needed to mount or resolve the step's own mounts).

use serde::Deserialize;
use specwright_sdk::{export_policy, Host, Input, Policy, PolicyError, Spec};

/// The settings file given as `--policy FILE:SETTINGS.json`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Environment entries every step gets.
    #[serde(default)]
    extra_env: Vec<String>,
}

pub struct MyPolicy;

impl Policy for MyPolicy {
    const NAME: &'static str = "my-policy";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Adds environment entries from its settings.";

    fn generate(input: Input, _host: &mut Host) -> Result<Spec, PolicyError> {
        let settings: Settings = if input.settings.is_null() {
            Settings::default()
        } else {
            serde_json::from_value(input.settings).map_err(|e| PolicyError::InvalidRequest(format!("settings: {e}")))?
        };
        let mut spec = input
            .previous
            .ok_or_else(|| PolicyError::Internal("run me after another policy, e.g. --policy default".into()))?;
        spec.process_mut().env.extend(settings.extra_env);
        Ok(spec)
    }
}

export_policy!(MyPolicy);
