//! `specwright-runc`'s configuration file, for engines that pass a runtime
//! no flags of ours (containerd's `BinaryName`, Docker's `runtimes`,
//! BuildKit's `--oci-worker-binary`): `/etc/specwright/runtime.toml`, or
//! the file `SPECWRIGHT_RUNTIME_CONFIG` names.
//!
//! ```toml
//! policies = ["/etc/specwright/hardened.wasm"]   # FILE[:SETTINGS.json], in order
//! real_runtime = "runc"                          # runc, crun, or a path
//! state_dir = "/var/lib/specwright"
//! policy_timeout_ms = 1000
//! policy_memory_mib = 64
//! ```
//!
//! Relative paths in `policies` are taken from the file's directory (the
//! engine's working directory is the bundle's, or anything). Flags given
//! on the command line override the file, key by key.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::args::OwnFlags;
use crate::policy::split_policy_arg;
use crate::sys::Syscalls;

/// The file read when `SPECWRIGHT_RUNTIME_CONFIG` is not set; it may be
/// missing (then nothing is configured).
pub const DEFAULT_CONFIG_PATH: &str = "/etc/specwright/runtime.toml";

/// The environment variable naming another configuration file (which must
/// exist).
pub const CONFIG_ENV: &str = "SPECWRIGHT_RUNTIME_CONFIG";

/// The most a configuration file may hold.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The policies the embedded names stand for; they are no files.
const EMBEDDED_NAMES: &[&str] = &["default", "buildkit", "buildkit-v0.8"];

/// The file's keys; any other key is an error.
#[derive(Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    #[serde(default)]
    pub policies: Vec<String>,
    pub real_runtime: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub policy_timeout_ms: Option<u64>,
    pub policy_memory_mib: Option<usize>,
}

/// Why the configuration could not be read; it names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} (named by {CONFIG_ENV}): no such file")]
    Missing { path: PathBuf },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
}

impl RuntimeConfig {
    /// The configuration in effect: the file `env_value` names (the value
    /// of `SPECWRIGHT_RUNTIME_CONFIG`), or the default file if there is
    /// one.
    pub fn load(sys: &dyn Syscalls, env_value: Option<&std::ffi::OsStr>) -> Result<RuntimeConfig, ConfigError> {
        let (path, required) = match env_value {
            Some(v) if !v.is_empty() => (PathBuf::from(v), true),
            _ => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        let text = sys
            .read_host_file(&path, MAX_CONFIG_BYTES)
            .map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
        match text {
            Some(text) => RuntimeConfig::parse(&path, &text),
            None if required => Err(ConfigError::Missing { path }),
            None => Ok(RuntimeConfig::default()),
        }
    }

    /// The file at `path` whose text is `text`.
    pub fn parse(path: &Path, text: &str) -> Result<RuntimeConfig, ConfigError> {
        let mut config: RuntimeConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("/"));
        config.policies = config.policies.iter().map(|p| relative_to(base, p)).collect();
        Ok(config)
    }

    /// The file's settings with `flags` over them, key by key (the flags'
    /// policies replace the file's list).
    pub fn overridden_by(self, flags: OwnFlags) -> OwnFlags {
        OwnFlags {
            policies: if flags.policies.is_empty() {
                self.policies
            } else {
                flags.policies
            },
            real_runtime: flags.real_runtime.or(self.real_runtime),
            state_dir: flags.state_dir.or(self.state_dir),
            policy_timeout_ms: flags.policy_timeout_ms.or(self.policy_timeout_ms),
            policy_memory_mib: flags.policy_memory_mib.or(self.policy_memory_mib),
        }
    }
}

/// `FILE[:SETTINGS.json]` with relative paths taken from `base`.
fn relative_to(base: &Path, policy: &str) -> String {
    if EMBEDDED_NAMES.contains(&policy) {
        return policy.to_string();
    }
    let (file, settings) = split_policy_arg(policy);
    let file = base.join(file);
    match settings {
        Some(settings) => format!("{}:{}", file.display(), base.join(settings).display()),
        None => file.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::RealSyscalls;

    #[test]
    fn every_key_is_read_and_relative_policies_are_the_files() {
        let config = RuntimeConfig::parse(
            Path::new("/etc/specwright/runtime.toml"),
            r#"
                policies = ["hardened.wasm", "/opt/allow.wasm:allow.json", "default"]
                real_runtime = "crun"
                state_dir = "/var/lib/sw"
                policy_timeout_ms = 200
                policy_memory_mib = 96
            "#,
        )
        .unwrap();
        assert_eq!(
            config,
            RuntimeConfig {
                policies: vec![
                    "/etc/specwright/hardened.wasm".into(),
                    "/opt/allow.wasm:/etc/specwright/allow.json".into(),
                    "default".into()
                ],
                real_runtime: Some("crun".into()),
                state_dir: Some("/var/lib/sw".into()),
                policy_timeout_ms: Some(200),
                policy_memory_mib: Some(96),
            }
        );
    }

    #[test]
    fn flags_override_the_file_key_by_key() {
        let file = RuntimeConfig {
            policies: vec!["/a.wasm".into()],
            real_runtime: Some("crun".into()),
            state_dir: Some("/s".into()),
            policy_timeout_ms: Some(5),
            policy_memory_mib: None,
        };
        let merged = file.overridden_by(OwnFlags {
            policies: vec!["/b.wasm".into()],
            real_runtime: None,
            state_dir: None,
            policy_timeout_ms: Some(9),
            policy_memory_mib: Some(32),
        });
        assert_eq!(merged.policies, ["/b.wasm"]);
        assert_eq!(merged.real_runtime.as_deref(), Some("crun"));
        assert_eq!(merged.state_dir, Some("/s".into()));
        assert_eq!(
            (merged.policy_timeout_ms, merged.policy_memory_mib),
            (Some(9), Some(32))
        );
    }

    #[test]
    fn an_unknown_key_or_a_bad_value_names_the_file_and_the_key() {
        let err = RuntimeConfig::parse(Path::new("/x/runtime.toml"), "policy = []")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/x/runtime.toml") && err.contains("policy"), "{err}");
        let err = RuntimeConfig::parse(Path::new("/x/runtime.toml"), "policy_timeout_ms = \"fast\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("policy_timeout_ms"), "{err}");
    }

    #[test]
    fn a_named_file_must_exist_the_default_need_not() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.toml");
        let err = RuntimeConfig::load(&RealSyscalls, Some(missing.as_os_str()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("none.toml") && err.contains(CONFIG_ENV), "{err}");
        let file = dir.path().join("r.toml");
        std::fs::write(&file, "real_runtime = \"runc\"\n").unwrap();
        let config = RuntimeConfig::load(&RealSyscalls, Some(file.as_os_str())).unwrap();
        assert_eq!(config.real_runtime.as_deref(), Some("runc"));
    }
}
