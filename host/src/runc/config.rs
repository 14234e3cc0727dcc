//! `specwright-runc`'s configuration file, for engines that pass a runtime
//! no flags of ours (containerd's `BinaryName`, Docker's `runtimes`,
//! BuildKit's `--oci-worker-binary`): `/etc/specwright/runtime.toml`, or
//! the file `SPECWRIGHT_RUNTIME_CONFIG` names.
//!
//! ```toml
//! policies = [                                  # in order
//!     "/etc/specwright/hardened.wasm",           # FILE[:SETTINGS.json]: enforced
//!     { path = "env-guard.wasm", settings = "env-guard.json", mode = "monitor" },
//! ]
//! real_runtime = "runc"                          # runc, crun, or a path
//! state_dir = "/var/lib/specwright"
//! policy_timeout_ms = 1000
//! policy_memory_mib = 64
//! metrics_file = "/var/lib/node_exporter/textfile_collector/specwright.prom"
//! allow_flag_overrides = false
//! allow_restore = false
//! ```
//!
//! Relative paths in `policies` are taken from the file's directory (the
//! engine's working directory is the bundle's, or anything). The file is
//! the administrator's and its chain the floor: an engine's `--policy`
//! flags add policies in front of the file's chain, which has the last
//! word over what they produce; no flag may change the file's other
//! settings unless it says `allow_flag_overrides = true`. The file must
//! be owned by root (or the wrapper's user) and writable by no one else.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::args::OwnFlags;
use crate::policy::{split_policy_arg, Mode, PolicyArg, SettingsFile};

/// The file read when `SPECWRIGHT_RUNTIME_CONFIG` is not set; it may be
/// missing (then nothing is configured).
pub const DEFAULT_CONFIG_PATH: &str = "/etc/specwright/runtime.toml";

/// The environment variable naming the configuration file when the
/// administrator's does not exist (it must then exist).
pub const CONFIG_ENV: &str = "SPECWRIGHT_RUNTIME_CONFIG";

/// The most a configuration file may hold.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The file's keys; any other key is an error.
#[derive(Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WrapperConfig {
    #[serde(default, deserialize_with = "policy_entries")]
    pub policies: Vec<PolicyArg>,
    pub real_runtime: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub policy_timeout_ms: Option<u64>,
    pub policy_memory_mib: Option<usize>,
    /// Where the metrics are written, in Prometheus' text format.
    pub metrics_file: Option<PathBuf>,
    /// Whether engine-passed flags may change `real_runtime`, `state_dir`
    /// and the limits, and replace the chain (off: they may only add
    /// policies in front of it).
    #[serde(default)]
    pub allow_flag_overrides: bool,
    /// Whether `restore` may run: a checkpoint's processes keep what CRIU
    /// saved of them (credentials, seccomp filters, memory), which no
    /// policy reviews; only the restored bundle's config.json is.
    #[serde(default)]
    pub allow_restore: bool,
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
    /// A flag tried to change what the administrator's file sets.
    #[error("--{flag} is refused: {path} is in effect and does not say allow_flag_overrides = true (an engine's flags may only add policies)")]
    Override { flag: &'static str, path: PathBuf },
}

/// The configuration in effect: the file, if there is one, and where.
#[derive(Debug, Default)]
pub struct Loaded {
    pub config: WrapperConfig,
    /// The file it came from; `None` when there is none (nothing is
    /// configured, and the engine's flags say everything).
    pub path: Option<PathBuf>,
}

impl WrapperConfig {
    /// The configuration in effect: the administrator's file,
    /// `/etc/specwright/runtime.toml`, when it exists; else the file
    /// `env_value` names (the value of `SPECWRIGHT_RUNTIME_CONFIG`, which
    /// must then exist); else none. The environment cannot put another
    /// file (say, an empty one) in the administrator's place. A file must
    /// be trusted ([`crate::input::open_trusted`]).
    pub fn load(env_value: Option<&std::ffi::OsStr>) -> Result<Loaded, ConfigError> {
        Self::load_from(Path::new(DEFAULT_CONFIG_PATH), env_value)
    }

    /// [`Self::load`], the administrator's file at `default`.
    pub fn load_from(default: &Path, env_value: Option<&std::ffi::OsStr>) -> Result<Loaded, ConfigError> {
        let named = env_value.filter(|v| !v.is_empty()).map(PathBuf::from);
        match Self::read(default)? {
            Some(loaded) => {
                if let Some(named) = named.filter(|n| n.as_path() != default) {
                    eprintln!(
                        "specwright-runc: warning: {CONFIG_ENV} names {}, but {} is in effect",
                        named.display(),
                        default.display()
                    );
                }
                Ok(loaded)
            }
            None => match named {
                Some(path) => Self::read(&path)?.ok_or(ConfigError::Missing { path }),
                None => Ok(Loaded::default()),
            },
        }
    }

    /// The file at `path`, if there is one.
    fn read(path: &Path) -> Result<Option<Loaded>, ConfigError> {
        match crate::input::read_trusted_text(path, MAX_CONFIG_BYTES) {
            Ok(text) => Ok(Some(Loaded {
                config: WrapperConfig::parse(path, &text)?,
                path: Some(path.to_path_buf()),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// The file at `path` whose text is `text`.
    pub fn parse(path: &Path, text: &str) -> Result<WrapperConfig, ConfigError> {
        let mut config: WrapperConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        if let Some(file) = config.metrics_file.as_ref().filter(|f| !f.is_absolute()) {
            return Err(ConfigError::Parse {
                path: path.to_path_buf(),
                message: format!("metrics_file: {} is not an absolute path", file.display()),
            });
        }
        let base = path.parent().unwrap_or(Path::new("/"));
        config.policies = config
            .policies
            .iter()
            .map(|p| {
                let arg = match &p.settings {
                    SettingsFile::InArg => relative_to(base, &p.arg),
                    SettingsFile::Apart(_) => table_path(base, &p.arg),
                };
                let arg = match arg {
                    Ok(arg) => arg,
                    // A monitored policy never blocks: one named wrongly
                    // fails to load, and is recorded so at every review.
                    Err(_) if p.mode == Mode::Monitor => p.arg.clone(),
                    Err(e) => return Err(e),
                };
                let settings = match &p.settings {
                    SettingsFile::InArg => SettingsFile::InArg,
                    SettingsFile::Apart(settings) => {
                        SettingsFile::Apart(settings.as_ref().map(|s| base.join(s).display().to_string()))
                    }
                };
                Ok(PolicyArg {
                    arg,
                    settings,
                    mode: p.mode,
                })
            })
            .collect::<Result<_, crate::policy::PolicyFailure>>()
            .map_err(|e| ConfigError::Parse {
                path: path.to_path_buf(),
                message: format!("policies: {e}"),
            })?;
        Ok(config)
    }
}

impl Loaded {
    /// The settings in effect with an engine's `flags`. Without a file the
    /// flags say everything. With one, its chain is the floor: the flags'
    /// policies run in front of it (so that the file's policies judge what
    /// they produce) and any other flag is refused, unless the file says
    /// `allow_flag_overrides = true`: then the flags override it key by
    /// key and their policies replace its chain.
    pub fn with_flags(self, flags: OwnFlags) -> Result<OwnFlags, ConfigError> {
        let Loaded { config, path } = self;
        let Some(path) = path else {
            return Ok(flags);
        };
        if config.allow_flag_overrides {
            return Ok(OwnFlags {
                policies: if flags.policies.is_empty() {
                    config.policies
                } else {
                    flags.policies
                },
                real_runtime: flags.real_runtime.or(config.real_runtime),
                state_dir: flags.state_dir.or(config.state_dir),
                policy_timeout_ms: flags.policy_timeout_ms.or(config.policy_timeout_ms),
                policy_memory_mib: flags.policy_memory_mib.or(config.policy_memory_mib),
                metrics_file: flags.metrics_file.or(config.metrics_file),
                allow_restore: config.allow_restore,
            });
        }
        let refused = |flag| {
            Err(ConfigError::Override {
                flag,
                path: path.clone(),
            })
        };
        if flags.real_runtime.is_some() {
            return refused("real-runtime");
        }
        if flags.state_dir.is_some() {
            return refused("state-dir");
        }
        if flags.policy_timeout_ms.is_some() {
            return refused("policy-timeout-ms");
        }
        if flags.policy_memory_mib.is_some() {
            return refused("policy-memory-mib");
        }
        if flags.metrics_file.is_some() {
            return refused("metrics-file");
        }
        Ok(OwnFlags {
            policies: flags.policies.into_iter().chain(config.policies).collect(),
            real_runtime: config.real_runtime,
            state_dir: config.state_dir,
            policy_timeout_ms: config.policy_timeout_ms,
            policy_memory_mib: config.policy_memory_mib,
            metrics_file: config.metrics_file,
            allow_restore: config.allow_restore,
        })
    }
}

/// A policy entry of the file: `"FILE[:SETTINGS.json]"` (enforced), or a
/// table `{ path = "FILE", settings = "SETTINGS.json", mode = "monitor" }`
/// (`settings` and `mode` optional; `mode` is `enforce` or `monitor`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyTable {
    path: String,
    settings: Option<String>,
    #[serde(default)]
    mode: Mode,
}

fn policy_entries<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<PolicyArg>, D::Error> {
    #[derive(Deserialize)]
    #[serde(
        untagged,
        expecting = "a policy: \"FILE[:SETTINGS.json]\" or { path = ..., settings = ..., mode = \"enforce\" | \"monitor\" } (no other key)"
    )]
    enum Entry {
        Arg(String),
        Table(PolicyTable),
    }
    let entries = Vec::<Entry>::deserialize(deserializer)?;
    Ok(entries
        .into_iter()
        .map(|entry| match entry {
            Entry::Arg(arg) => PolicyArg::enforced(arg),
            // The path taken whole, never split at a colon: `settings`
            // says whether there is a settings file.
            Entry::Table(PolicyTable { path, settings, mode }) => PolicyArg {
                arg: path,
                settings: SettingsFile::Apart(settings),
                mode,
            },
        })
        .collect())
}

/// A table entry's `path`, whole: an embedded policy's name, a registry
/// reference (which must name a tag or digest and nothing more), or a
/// file, relative paths taken from `base`.
fn table_path(base: &Path, path: &str) -> Result<String, crate::policy::PolicyFailure> {
    if crate::policy::embedded_policy(Path::new(path)).is_some() {
        return Ok(path.to_string());
    }
    if path.starts_with(crate::oci::SCHEME) {
        return crate::oci::Reference::parse(path).map(|r| r.to_string()).map_err(|e| {
            crate::policy::PolicyFailure::Load {
                policy: path.to_string(),
                message: e.to_string(),
            }
        });
    }
    Ok(base.join(path).display().to_string())
}

/// `FILE[:SETTINGS]` with relative paths taken from `base`; an embedded
/// policy's name (`default:settings.json`) stays a name.
fn relative_to(base: &Path, policy: &str) -> Result<String, crate::policy::PolicyFailure> {
    let (file, settings) = split_policy_arg(policy, base)?;
    Ok(match settings {
        Some(settings) => format!("{}:{}", file.display(), settings.display()),
        None => file.display().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_may_be_a_table_naming_its_mode() {
        let config = WrapperConfig::parse(
            Path::new("/etc/specwright/runtime.toml"),
            r#"
                policies = [
                    "hardened.wasm",
                    { path = "guard.wasm", settings = "guard.json", mode = "monitor" },
                    { path = "/opt/allow.wasm", mode = "enforce" },
                    { path = "default" },
                    { path = "t:1.wasm", settings = "a:b.json" },
                ]
            "#,
        )
        .unwrap();
        assert_eq!(
            config.policies,
            [
                PolicyArg::enforced("/etc/specwright/hardened.wasm"),
                PolicyArg {
                    arg: "/etc/specwright/guard.wasm".into(),
                    settings: SettingsFile::Apart(Some("/etc/specwright/guard.json".into())),
                    mode: Mode::Monitor,
                },
                PolicyArg {
                    arg: "/opt/allow.wasm".into(),
                    settings: SettingsFile::Apart(None),
                    mode: Mode::Enforce,
                },
                PolicyArg {
                    arg: "default".into(),
                    settings: SettingsFile::Apart(None),
                    mode: Mode::Enforce,
                },
                // Colons in a table's names are theirs, never a split.
                PolicyArg {
                    arg: "/etc/specwright/t:1.wasm".into(),
                    settings: SettingsFile::Apart(Some("/etc/specwright/a:b.json".into())),
                    mode: Mode::Enforce,
                },
            ]
        );
        for (entry, named) in [
            (r#"{ path = "a.wasm", mode = "warn" }"#, "a policy"),
            (r#"{ path = "a.wasm", modes = "monitor" }"#, "a policy"),
            (r#"{ settings = "a.json" }"#, "a policy"),
            ("3", "a policy"),
            // A table's path is the policy whole: a reference without a
            // tag is no reference, whatever the settings (a monitored one
            // is kept, to fail at load and be recorded so).
            (r#"{ path = "oci://r.example/guard", settings = "v1" }"#, "names no tag"),
        ] {
            let text = format!("policies = [{entry}]");
            let err = WrapperConfig::parse(Path::new("/etc/specwright/runtime.toml"), &text)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("/etc/specwright/runtime.toml") && err.contains("policies") && err.contains(named),
                "{entry}: {err}"
            );
        }
        let monitored = WrapperConfig::parse(
            Path::new("/etc/specwright/runtime.toml"),
            r#"policies = [{ path = "oci://r.example/guard", mode = "monitor" }]"#,
        )
        .unwrap();
        assert_eq!(monitored.policies[0].arg, "oci://r.example/guard");
    }

    #[test]
    fn every_key_is_read_and_relative_policies_are_the_files() {
        let config = WrapperConfig::parse(
            Path::new("/etc/specwright/runtime.toml"),
            r#"
                policies = ["hardened.wasm", "/opt/allow.wasm:allow.json", "default", "buildkit-v0.8:v8.json"]
                real_runtime = "crun"
                state_dir = "/var/lib/sw"
                policy_timeout_ms = 200
                policy_memory_mib = 96
                metrics_file = "/var/lib/node_exporter/specwright.prom"
                allow_flag_overrides = true
            "#,
        )
        .unwrap();
        assert_eq!(
            config,
            WrapperConfig {
                policies: vec![
                    "/etc/specwright/hardened.wasm".into(),
                    "/opt/allow.wasm:/etc/specwright/allow.json".into(),
                    "default".into(),
                    // An embedded policy's name stays a name with settings too.
                    "buildkit-v0.8:/etc/specwright/v8.json".into(),
                ],
                real_runtime: Some("crun".into()),
                state_dir: Some("/var/lib/sw".into()),
                policy_timeout_ms: Some(200),
                policy_memory_mib: Some(96),
                metrics_file: Some("/var/lib/node_exporter/specwright.prom".into()),
                allow_flag_overrides: true,
                allow_restore: false,
            }
        );
    }

    fn file(config: WrapperConfig) -> Loaded {
        Loaded {
            config,
            path: Some("/etc/specwright/runtime.toml".into()),
        }
    }

    fn admin() -> WrapperConfig {
        WrapperConfig {
            policies: vec!["/a.wasm".into()],
            real_runtime: Some("crun".into()),
            state_dir: Some("/s".into()),
            policy_timeout_ms: Some(5),
            policy_memory_mib: None,
            metrics_file: None,
            allow_flag_overrides: false,
            allow_restore: false,
        }
    }

    #[test]
    fn the_files_chain_is_the_floor_flags_only_add_in_front_of_it() {
        let merged = file(admin())
            .with_flags(OwnFlags {
                policies: vec!["/b.wasm".into()],
                ..OwnFlags::default()
            })
            .unwrap();
        assert_eq!(merged.policies, ["/b.wasm", "/a.wasm"]);
        assert_eq!(merged.real_runtime.as_deref(), Some("crun"));
        assert_eq!(merged.state_dir, Some("/s".into()));
        for (flags, named) in [
            (
                OwnFlags {
                    real_runtime: Some("/tmp/evil".into()),
                    ..OwnFlags::default()
                },
                "--real-runtime",
            ),
            (
                OwnFlags {
                    state_dir: Some("/tmp/s".into()),
                    ..OwnFlags::default()
                },
                "--state-dir",
            ),
            (
                OwnFlags {
                    policy_memory_mib: Some(4096),
                    ..OwnFlags::default()
                },
                "--policy-memory-mib",
            ),
            (
                OwnFlags {
                    metrics_file: Some("/tmp/m.prom".into()),
                    ..OwnFlags::default()
                },
                "--metrics-file",
            ),
        ] {
            let err = file(admin()).with_flags(flags).unwrap_err().to_string();
            assert!(err.contains(named) && err.contains("allow_flag_overrides"), "{err}");
        }
    }

    #[test]
    fn with_overrides_allowed_flags_override_the_file_key_by_key() {
        let merged = file(WrapperConfig {
            allow_flag_overrides: true,
            ..admin()
        })
        .with_flags(OwnFlags {
            policies: vec!["/b.wasm".into()],
            real_runtime: None,
            state_dir: None,
            policy_timeout_ms: Some(9),
            policy_memory_mib: Some(32),
            metrics_file: Some("/m.prom".into()),
            allow_restore: false,
        })
        .unwrap();
        assert_eq!(merged.policies, ["/b.wasm"]);
        assert_eq!(merged.real_runtime.as_deref(), Some("crun"));
        assert_eq!(merged.state_dir, Some("/s".into()));
        assert_eq!(
            (merged.policy_timeout_ms, merged.policy_memory_mib),
            (Some(9), Some(32))
        );
        assert_eq!(merged.metrics_file, Some("/m.prom".into()));
    }

    #[test]
    fn without_a_file_the_flags_say_everything() {
        let flags = OwnFlags {
            policies: vec!["/b.wasm".into()],
            real_runtime: Some("/x/runc".into()),
            state_dir: Some("/s".into()),
            policy_timeout_ms: Some(1),
            policy_memory_mib: Some(2),
            metrics_file: None,
            allow_restore: false,
        };
        assert_eq!(Loaded::default().with_flags(flags.clone()).unwrap(), flags);
    }

    #[test]
    fn an_unknown_key_or_a_bad_value_names_the_file_and_the_key() {
        let err = WrapperConfig::parse(Path::new("/x/runtime.toml"), "policy = []")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/x/runtime.toml") && err.contains("policy"), "{err}");
        let err = WrapperConfig::parse(Path::new("/x/runtime.toml"), "policy_timeout_ms = \"fast\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("policy_timeout_ms"), "{err}");
        let err = WrapperConfig::parse(Path::new("/x/runtime.toml"), "metrics_file = \"specwright.prom\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/x/runtime.toml") && err.contains("metrics_file") && err.contains("absolute"),
            "{err}"
        );
    }

    /// Regression: the environment named an empty root-owned file
    /// (`/etc/subuid`) in place of the administrator's, and every policy
    /// was gone.
    #[test]
    fn the_administrators_file_is_in_effect_whatever_the_environment_names() {
        let dir = tempfile::tempdir().unwrap();
        let admin = dir.path().join("runtime.toml");
        std::fs::write(&admin, "policies = [\"default\"]\n").unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "").unwrap();
        let loaded = WrapperConfig::load_from(&admin, Some(empty.as_os_str())).unwrap();
        assert_eq!(loaded.config.policies, ["default"]);
        assert_eq!(loaded.path.as_deref(), Some(admin.as_path()));
        std::fs::remove_file(&admin).unwrap();
        let loaded = WrapperConfig::load_from(&admin, Some(empty.as_os_str())).unwrap();
        assert_eq!(loaded.path.as_deref(), Some(empty.as_path()));
    }

    #[test]
    fn a_named_file_must_exist_and_be_trusted_the_default_need_not_exist() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.toml");
        let absent = dir.path().join("absent-default.toml");
        let err = WrapperConfig::load_from(&absent, Some(missing.as_os_str()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("none.toml") && err.contains(CONFIG_ENV), "{err}");
        let file = dir.path().join("r.toml");
        std::fs::write(&file, "real_runtime = \"runc\"\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let loaded = WrapperConfig::load_from(&absent, Some(file.as_os_str())).unwrap();
        assert_eq!(loaded.config.real_runtime.as_deref(), Some("runc"));
        assert_eq!(loaded.path.as_deref(), Some(file.as_path()));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        let err = WrapperConfig::load_from(&absent, Some(file.as_os_str()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("r.toml") && err.contains("lets others write"), "{err}");
    }
}
