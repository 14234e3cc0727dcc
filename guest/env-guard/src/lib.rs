//! `env-guard`: denies a step whose env sets a variable whose name looks
//! like a secret's, and adds the variables its settings name where the
//! step does not set them. The same logic is written in Python
//! (`guest/python/env-guard`) and JavaScript (`guest/js/env-guard`); the
//! tests hold the three to the same specs and denials.
//!
//! Settings (all optional): `{"deny": ["SECRET", ...], "env": ["NAME=value", ...]}`.
//! `deny` lists name fragments, matched without regard to case against
//! every variable the step sets to a non-empty value (default
//! [`DEFAULT_DENY`]); `env` lists variables to add. After another policy
//! the previous spec is changed; alone, the policy writes a minimal spec of
//! its own (the step's args, env and cwd, uid 0, root `rootfs`).

use serde::Deserialize;
use specwright_sdk::{export_policy, Host, Input, Policy, PolicyError, Request, Spec};

pub struct EnvGuard;

/// Name fragments denied by default.
pub const DEFAULT_DENY: &[&str] = &[
    "SECRET",
    "TOKEN",
    "PASSWORD",
    "PASSWD",
    "API_KEY",
    "PRIVATE_KEY",
    "CREDENTIAL",
];

#[derive(Debug, Deserialize)]
pub struct Settings {
    #[serde(default = "default_deny")]
    pub deny: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
}

fn default_deny() -> Vec<String> {
    DEFAULT_DENY.iter().map(|s| s.to_string()).collect()
}

impl Settings {
    pub fn from_value(settings: &serde_json::Value) -> Result<Settings, PolicyError> {
        if settings.is_null() {
            return Ok(Settings {
                deny: default_deny(),
                env: Vec::new(),
            });
        }
        serde_json::from_value(settings.clone()).map_err(|e| PolicyError::InvalidRequest(format!("settings: {e}")))
    }
}

/// A variable's name: what comes before the first `=`.
fn name_of(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(name, _)| name)
}

/// Why the step is denied, if it is.
pub fn denial(request: &Request, settings: &Settings) -> Option<String> {
    for entry in request.env.iter().flatten() {
        let Some((name, value)) = entry.split_once('=') else {
            continue;
        };
        if value.is_empty() {
            continue;
        }
        let upper = name.to_uppercase();
        if let Some(fragment) = settings.deny.iter().find(|f| upper.contains(&f.to_uppercase())) {
            return Some(format!(
                "env {name} looks like a secret (it contains {fragment}); pass secrets as secret mounts, not env"
            ));
        }
    }
    None
}

/// The spec of a step when no policy came before.
pub fn minimal_spec(request: &Request) -> Result<Spec, PolicyError> {
    let cwd = if request.cwd.is_empty() { "/" } else { &request.cwd };
    serde_json::from_value(serde_json::json!({
        "ociVersion": "1.2.1",
        "process": {
            "user": {"uid": 0, "gid": 0},
            "args": request.args.clone().unwrap_or_default(),
            "env": request.env.clone().unwrap_or_default(),
            "cwd": cwd,
        },
        "root": {"path": "rootfs"},
    }))
    .map_err(|e| PolicyError::Internal(format!("the minimal spec: {e}")))
}

/// Adds each of `env` whose name the spec's process does not set.
pub fn with_env(mut spec: Spec, env: &[String]) -> Spec {
    let process = spec.process_mut();
    for entry in env {
        let name = name_of(entry);
        if !process.env.iter().any(|e| name_of(e) == name) {
            process.env.push(entry.clone());
        }
    }
    spec
}

impl Policy for EnvGuard {
    const NAME: &'static str = "env-guard";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Denies steps whose env carries a secret-looking variable; adds env from its settings.";

    fn generate(input: Input, _host: &mut Host) -> Result<Spec, PolicyError> {
        let settings = Settings::from_value(&input.settings)?;
        if let Some(reason) = denial(&input.request, &settings) {
            return Err(PolicyError::Denied(reason));
        }
        let spec = match input.previous {
            Some(spec) => spec,
            None => minimal_spec(&input.request)?,
        };
        Ok(with_env(spec, &settings.env))
    }
}

export_policy!(EnvGuard);

#[cfg(test)]
mod tests {
    use super::*;

    fn request(env: &[&str]) -> Request {
        Request::from_json(&serde_json::json!({"id": "s", "args": ["/bin/true"], "env": env}).to_string()).unwrap()
    }

    #[test]
    fn secret_looking_names_with_values_are_denied() {
        let settings = Settings::from_value(&serde_json::Value::Null).unwrap();
        assert_eq!(denial(&request(&["PATH=/bin", "HOME=/root"]), &settings), None);
        assert_eq!(
            denial(&request(&["GITHUB_TOKEN="]), &settings),
            None,
            "empty values pass"
        );
        assert_eq!(
            denial(&request(&["PATH=/bin", "npm_Token=abc"]), &settings).unwrap(),
            "env npm_Token looks like a secret (it contains TOKEN); pass secrets as secret mounts, not env"
        );
    }

    #[test]
    fn settings_env_is_added_where_the_step_does_not_set_it() {
        let req = request(&["PATH=/bin", "LANG=C"]);
        let spec = with_env(minimal_spec(&req).unwrap(), &["LANG=C.UTF-8".into(), "TZ=UTC".into()]);
        let process = spec.process.unwrap();
        assert_eq!(process.env, ["PATH=/bin", "LANG=C", "TZ=UTC"]);
        assert_eq!(process.cwd.as_ref(), "/");
    }
}
