//! SELinux labels for a step, as go-selinux's `label.InitLabels` makes
//! them for BuildKit (opencontainers/selinux v1.15.1): the container
//! contexts file gives a process and a file label; a sandboxed step's two
//! labels get one MCS level of their own, `s0:cX,cY`, reserved for the step
//! while it lives; a privileged (insecure) step gets no process label and
//! the file label at the level kept for privileged containers,
//! `s0:c1022,c1023`.
//!
//! The contexts file and the choice of a free level are the host's (they
//! need files and randomness a policy does not have); what is pure (parsing,
//! levels, composing labels) is here, for the host and for tests.

use std::fmt;
use std::str::FromStr;

/// How many MCS categories containers draw from (go-selinux's
/// `DefaultCategoryRange`).
pub const CATEGORY_RANGE: u16 = 1024;

/// The default contexts file go-selinux tries first (container-selinux).
pub const CONTAINERS_CONTEXTS_FILE: &str = "/usr/share/containers/selinux/contexts";

/// The SELinux configuration that names the policy type.
pub const SELINUX_CONFIG_FILE: &str = "/etc/selinux/config";

/// `<policy root>/contexts/lxc_contexts`, where the policy root is
/// `/etc/selinux/<SELINUXTYPE>`: the contexts file go-selinux falls back to.
pub fn policy_contexts_file(selinux_type: &str) -> String {
    format!("/etc/selinux/{selinux_type}/contexts/lxc_contexts")
}

/// The value of `SELINUXTYPE=` in `/etc/selinux/config`, as go-selinux's
/// `readConfig` reads it (blank and `#`/`;` lines skipped, quotes trimmed);
/// empty when it is not set.
pub fn selinux_type(config: &str) -> String {
    config_value(config, "SELINUXTYPE").unwrap_or_default()
}

fn config_value(text: &str, key: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with(['#', ';']))
        .find_map(|line| {
            let (k, v) = line.split_once('=')?;
            (k == key).then(|| v.trim_matches('"').to_string())
        })
}

/// An MCS level of two categories, `s0:c<low>,c<high>`, `low < high <
/// CATEGORY_RANGE`: what go-selinux's `uniqMcs` draws for a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct McsLevel {
    low: u16,
    high: u16,
}

impl McsLevel {
    /// The level of the privileged containers' mount label; never drawn
    /// for a step (go-selinux reserves it when it loads the contexts).
    pub const PRIVILEGED: McsLevel = McsLevel {
        low: CATEGORY_RANGE - 2,
        high: CATEGORY_RANGE - 1,
    };

    /// The level of two categories drawn independently, as `uniqMcs` draws
    /// them: `None` when they are equal (draw again); otherwise the two in
    /// order. Each draw is taken modulo [`CATEGORY_RANGE`].
    pub fn from_draws(a: u32, b: u32) -> Option<McsLevel> {
        let range = u32::from(CATEGORY_RANGE);
        let (a, b) = (category(a % range), category(b % range));
        match a.cmp(&b) {
            std::cmp::Ordering::Equal => None,
            std::cmp::Ordering::Less => Some(McsLevel { low: a, high: b }),
            std::cmp::Ordering::Greater => Some(McsLevel { low: b, high: a }),
        }
    }
}

/// A category below [`CATEGORY_RANGE`] as the `u16` it fits in.
fn category(c: u32) -> u16 {
    u16::try_from(c).unwrap_or(CATEGORY_RANGE - 1)
}

impl fmt::Display for McsLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s0:c{},c{}", self.low, self.high)
    }
}

/// Why a text is not an MCS level this host draws.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an MCS level s0:cX,cY with X < Y < 1024")]
pub struct BadLevel(pub String);

impl FromStr for McsLevel {
    type Err = BadLevel;

    /// Only the form [`fmt::Display`] writes: no leading zeros, no spaces.
    fn from_str(s: &str) -> Result<McsLevel, BadLevel> {
        let bad = || BadLevel(s.to_string());
        let cats = s.strip_prefix("s0:c").ok_or_else(bad)?;
        let (low, high) = cats.split_once(",c").ok_or_else(bad)?;
        let number = |n: &str| -> Result<u16, BadLevel> {
            let plain = !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && (n == "0" || !n.starts_with('0'));
            match n.parse::<u16>() {
                Ok(v) if plain && v < CATEGORY_RANGE => Ok(v),
                _ => Err(bad()),
            }
        };
        let (low, high) = (number(low)?, number(high)?);
        if low < high {
            Ok(McsLevel { low, high })
        } else {
            Err(bad())
        }
    }
}

/// Written as its text (a step's record keeps the level it reserved).
impl serde::Serialize for McsLevel {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Read from its text, strictly: a record naming anything else is corrupt.
impl<'de> serde::Deserialize<'de> for McsLevel {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<McsLevel, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// An SELinux context `user:role:type[:level]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    user: String,
    role: String,
    kind: String,
    level: Option<String>,
}

/// Why a label of the contexts file is not a context.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextsError {
    #[error("`{key}` = {label:?} is not an SELinux context (user:role:type[:level])")]
    BadLabel { key: &'static str, label: String },
}

impl Context {
    /// go-selinux's `NewContext` of a non-empty label: at least three
    /// colon-separated parts, the fourth part and everything after it the
    /// level.
    fn parse(key: &'static str, label: &str) -> Result<Context, ContextsError> {
        let mut parts = label.splitn(4, ':');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(user), Some(role), Some(kind), level) => Ok(Context {
                user: user.to_string(),
                role: role.to_string(),
                kind: kind.to_string(),
                level: level.map(str::to_string),
            }),
            _ => Err(ContextsError::BadLabel {
                key,
                label: label.to_string(),
            }),
        }
    }

    /// Whether the context has a level (only then does a step get an MCS
    /// level of its own).
    pub fn has_level(&self) -> bool {
        self.level.as_deref().is_some_and(|l| !l.is_empty())
    }

    fn at_level(&self, level: &McsLevel) -> Context {
        Context {
            level: Some(level.to_string()),
            ..self.clone()
        }
    }
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.user, self.role, self.kind)?;
        match self.level.as_deref() {
            Some(level) if !level.is_empty() => write!(f, ":{level}"),
            _ => Ok(()),
        }
    }
}

/// What a container contexts file (`lxc_contexts`) says a container's
/// process and files are labelled with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerContexts {
    /// `process = "..."`.
    pub process: Option<Context>,
    /// `file = "..."`.
    pub file: Option<Context>,
}

impl ContainerContexts {
    /// Reads a contexts file as go-selinux's `loadLabels` does: `key =
    /// value` lines, blank lines and lines starting with `#` or `;`
    /// skipped, whitespace and double quotes trimmed, a later key replacing
    /// an earlier one. A `process` or `file` label that is not a context is
    /// an error (go-selinux would silently give a step no process label, or
    /// a mount label with empty fields).
    pub fn parse(text: &str) -> Result<ContainerContexts, ContextsError> {
        let (mut process, mut file) = (String::new(), String::new());
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with(['#', ';']) {
                continue;
            }
            if let Some((key, value)) = line.split_once('=') {
                let value = value.trim().trim_matches('"');
                match key.trim() {
                    "process" => process = value.to_string(),
                    "file" => file = value.to_string(),
                    _ => {}
                }
            }
        }
        let context =
            |key: &'static str, label: String| (!label.is_empty()).then(|| Context::parse(key, &label)).transpose();
        Ok(ContainerContexts {
            process: context("process", process)?,
            file: context("file", file)?,
        })
    }

    /// Whether a sandboxed step's labels take an MCS level of their own
    /// (the process label has a level, and there is a file label).
    pub fn needs_level(&self) -> bool {
        self.file.is_some() && self.process.as_ref().is_some_and(Context::has_level)
    }

    /// `label.InitLabels(nil)`: the process label and the file label, both
    /// at `level` when [`Self::needs_level`] (the host draws one then),
    /// as they are otherwise. Without a process or a file label, the
    /// process gets none and the mount the file label, if any.
    pub fn container_labels(&self, level: Option<&McsLevel>) -> Labels {
        match (&self.process, &self.file) {
            (Some(process), Some(file)) => match level.filter(|_| self.needs_level()) {
                Some(level) => Labels {
                    process: process.at_level(level).to_string(),
                    mount: file.at_level(level).to_string(),
                },
                None => Labels {
                    process: process.to_string(),
                    mount: file.to_string(),
                },
            },
            (_, file) => Labels {
                process: String::new(),
                mount: file.as_ref().map(ToString::to_string).unwrap_or_default(),
            },
        }
    }

    /// `label.InitLabels(["disable"])`, a privileged step's: no process
    /// label, the file label at [`McsLevel::PRIVILEGED`]. Without a file
    /// label, none (go-selinux would write `:::s0:c1022,c1023`).
    pub fn privileged_labels(&self) -> Labels {
        Labels {
            process: String::new(),
            mount: self
                .file
                .as_ref()
                .map(|f| f.at_level(&McsLevel::PRIVILEGED).to_string())
                .unwrap_or_default(),
        }
    }
}

/// A step's labels: `process.selinuxLabel` and `linux.mountLabel` (either
/// may be empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Labels {
    pub process: String,
    pub mount: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fedora's container-selinux `lxc_contexts`.
    const LXC_CONTEXTS: &str = r#"process = "system_u:system_r:container_t:s0"
content = "system_u:object_r:virt_var_lib_t:s0"
file = "system_u:object_r:container_file_t:s0"
ro_file="system_u:object_r:container_ro_file_t:s0"
sandbox_kvm_process = "system_u:system_r:svirt_qemu_net_t:s0"
sandbox_kvm_process = "system_u:system_r:svirt_qemu_net_t:s0"
sandbox_lxc_process = "system_u:system_r:container_t:s0"
"#;

    #[test]
    fn a_sandboxed_step_gets_both_labels_at_its_level() {
        let contexts = ContainerContexts::parse(LXC_CONTEXTS).unwrap();
        assert!(contexts.needs_level());
        let level = McsLevel::from_draws(345, 12).unwrap();
        assert_eq!(level.to_string(), "s0:c12,c345");
        assert_eq!(
            contexts.container_labels(Some(&level)),
            Labels {
                process: "system_u:system_r:container_t:s0:c12,c345".into(),
                mount: "system_u:object_r:container_file_t:s0:c12,c345".into(),
            }
        );
    }

    #[test]
    fn a_privileged_step_gets_the_privileged_mount_label_only() {
        let contexts = ContainerContexts::parse(LXC_CONTEXTS).unwrap();
        assert_eq!(
            contexts.privileged_labels(),
            Labels {
                process: String::new(),
                mount: "system_u:object_r:container_file_t:s0:c1022,c1023".into(),
            }
        );
        assert_eq!(ContainerContexts::default().privileged_labels(), Labels::default());
    }

    #[test]
    fn contexts_without_levels_or_labels_give_what_go_selinux_gives() {
        // A policy without MLS: the labels as they are, no level drawn.
        let plain = ContainerContexts::parse("process = \"u:r:container_t\"\nfile = \"u:object_r:f_t\"\n").unwrap();
        assert!(!plain.needs_level());
        let level = McsLevel::from_draws(1, 2).unwrap();
        assert_eq!(
            plain.container_labels(Some(&level)),
            Labels {
                process: "u:r:container_t".into(),
                mount: "u:object_r:f_t".into()
            }
        );
        // No process label: no process label, the file label for mounts.
        let file_only = ContainerContexts::parse("# comment\n; another\n\nfile=u:object_r:f_t:s0\n").unwrap();
        assert!(!file_only.needs_level());
        assert_eq!(
            file_only.container_labels(None),
            Labels {
                process: String::new(),
                mount: "u:object_r:f_t:s0".into()
            }
        );
        assert_eq!(
            ContainerContexts::parse("").unwrap().container_labels(None),
            Labels::default()
        );
    }

    #[test]
    fn a_label_that_is_not_a_context_is_an_error_naming_its_key() {
        let err = ContainerContexts::parse("process = \"container_t\"\nfile = \"u:r:f_t:s0\"").unwrap_err();
        assert_eq!(
            err.to_string(),
            "`process` = \"container_t\" is not an SELinux context (user:role:type[:level])"
        );
        assert!(ContainerContexts::parse("file = \"a:b\"").is_err());
    }

    #[test]
    fn levels_are_drawn_and_parsed_strictly() {
        assert_eq!(McsLevel::from_draws(7, 7), None);
        assert_eq!(
            McsLevel::from_draws(7, 7 + 1024),
            None,
            "draws are taken modulo the range"
        );
        assert_eq!(McsLevel::from_draws(1023, 0).unwrap().to_string(), "s0:c0,c1023");
        assert_eq!(McsLevel::from_draws(u32::MAX, 1).unwrap().to_string(), "s0:c1,c1023");
        for good in ["s0:c0,c1", "s0:c12,c345", "s0:c1022,c1023"] {
            assert_eq!(good.parse::<McsLevel>().unwrap().to_string(), good);
        }
        assert_eq!("s0:c1022,c1023".parse::<McsLevel>().unwrap(), McsLevel::PRIVILEGED);
        for bad in [
            "",
            "s0",
            "s0:c1",
            "s0:c2,c1",
            "s0:c1,c1",
            "s0:c01,c2",
            "s0:c1,c1024",
            "s0:c1, c2",
            "s1:c1,c2",
            "s0:c1,c2/..",
            "../x",
            "s0:c+1,c2",
        ] {
            assert!(bad.parse::<McsLevel>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_policy_type_comes_from_the_config() {
        let config = "# SELINUX= can take one of these values\nSELINUX=enforcing\n\nSELINUXTYPE=\"targeted\"\n";
        assert_eq!(selinux_type(config), "targeted");
        assert_eq!(
            policy_contexts_file("targeted"),
            "/etc/selinux/targeted/contexts/lxc_contexts"
        );
        assert_eq!(selinux_type("SELINUX=disabled\n"), "");
    }
}
