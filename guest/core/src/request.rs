//! Request format v1: one build step, as a build system hands it over.
//!
//! The JSON schema in `schema/request-v1.schema.json` describes the same
//! shape. Unknown fields are rejected and every error names the field.

use serde::{Deserialize, Serialize};

use crate::PolicyError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The step id: names the container, its cgroup and what the host holds for it.
    pub id: String,
    /// containerd namespace, used in the default cgroups path.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default)]
    pub args: Option<Vec<String>>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub cwd: String,
    /// "" leaves the process as root; otherwise "uid[:gid]".
    #[serde(default)]
    pub user: String,
    /// "" means BuildKit's "buildkitsandbox".
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub security_mode: SecurityMode,
    #[serde(default)]
    pub process_mode: ProcessMode,
    #[serde(default)]
    pub network: Network,
    #[serde(default)]
    pub idmap: Option<IdMap>,
    #[serde(default)]
    pub resolv_conf: String,
    #[serde(default)]
    pub hosts_file: String,
    #[serde(default)]
    pub readonly_rootfs: bool,
    #[serde(default)]
    pub cgroup_path: Option<String>,
    #[serde(default)]
    pub mounts: Vec<MountRequest>,
}

fn default_namespace() -> String {
    "buildkit".to_string()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecurityMode {
    #[default]
    Sandbox,
    Insecure,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProcessMode {
    #[default]
    Sandbox,
    NoSandbox,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Network {
    /// A fresh, empty network namespace.
    #[default]
    None,
    /// The host's network namespace.
    Host,
    /// An existing network namespace at `path` (what a CNI provider sets up).
    Path { path: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdMap {
    #[serde(default)]
    pub uids: Vec<IdRange>,
    #[serde(default)]
    pub gids: Vec<IdRange>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdRange {
    pub container_id: u32,
    pub host_id: u32,
    pub size: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountRequest {
    pub dest: String,
    /// A host path, mounted as a bind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Mounts given verbatim, as a snapshotter would return them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mountable: Option<Vec<Mountable>>,
    #[serde(default)]
    pub readonly: bool,
    /// A path inside the source to mount instead of its root.
    #[serde(default)]
    pub selector: String,
}

/// One mount a source stands for (containerd's `mount.Mount`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mountable {
    #[serde(rename = "type")]
    pub kind: String,
    pub source: String,
    #[serde(default)]
    pub options: Vec<String>,
}

impl Mountable {
    pub fn is_bind(&self) -> bool {
        self.kind == "bind" || self.kind == "rbind"
    }

    pub fn is_readonly(&self) -> bool {
        self.options.iter().any(|o| o == "ro")
    }
}

impl MountRequest {
    /// What the source stands for: a bind source becomes one `rbind` mount
    /// (read-only when asked); a mountable is used verbatim.
    pub fn materialize(&self) -> Result<Vec<Mountable>, PolicyError> {
        match (&self.source, &self.mountable) {
            (Some(_), Some(_)) => Err(PolicyError::InvalidRequest(format!(
                "mount {} has both source and mountable",
                self.dest
            ))),
            (Some(source), None) => {
                let mut options = vec!["rbind".to_string()];
                if self.readonly {
                    options.push("ro".to_string());
                }
                Ok(vec![Mountable {
                    kind: "bind".to_string(),
                    source: source.clone(),
                    options,
                }])
            }
            (None, Some(list)) => Ok(list.clone()),
            (None, None) => Err(PolicyError::InvalidRequest(format!(
                "mount {} has no source",
                self.dest
            ))),
        }
    }
}

impl Request {
    /// Parses and validates a request; errors name the offending field.
    pub fn from_json(json: &str) -> Result<Request, PolicyError> {
        let request = Request::parse_json(json)?;
        request.validate()?;
        Ok(request)
    }

    /// Parses a request without validating its values (the runner resolves
    /// user names before validating).
    pub fn parse_json(json: &str) -> Result<Request, PolicyError> {
        // Tracking the path costs an allocation per field name; only a
        // request that fails is parsed again to name the field.
        if let Ok(request) = serde_json::from_str(json) {
            return Ok(request);
        }
        let de = &mut serde_json::Deserializer::from_str(json);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path.is_empty() || path == "." {
                PolicyError::InvalidRequest(format!("request: {inner}"))
            } else {
                PolicyError::InvalidRequest(format!("request field `{path}`: {inner}"))
            }
        })
    }

    pub fn validate(&self) -> Result<(), PolicyError> {
        let invalid = |m: String| Err(PolicyError::InvalidRequest(m));
        if !is_valid_id(&self.id) {
            return invalid(format!(
                "request field `id`: {:?} is not a valid step id (1 to 128 of A-Z a-z 0-9 _ . -, not starting with a dot)",
                self.id
            ));
        }
        if self.namespace.is_empty() {
            return invalid("request field `namespace`: must not be empty".to_string());
        }
        if !self.user.is_empty() {
            parse_user(&self.user)?;
        }
        if let Network::Path { path } = &self.network {
            if !path.starts_with('/') {
                return invalid(format!(
                    "request field `network.path`: {path:?} is not an absolute path"
                ));
            }
        }
        for (i, m) in self.mounts.iter().enumerate() {
            if !m.dest.starts_with('/') {
                return invalid(format!(
                    "request field `mounts[{i}].dest`: {:?} is not an absolute path",
                    m.dest
                ));
            }
            m.materialize()?;
            for (j, mm) in m.mountable.iter().flatten().enumerate() {
                if mm.kind.is_empty() {
                    return invalid(format!(
                        "request field `mounts[{i}].mountable[{j}].type`: must not be empty"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A step id doubles as a file name in the host's state directory.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

/// Parses `user` as "uid[:gid]"; a missing gid is 0, as runc does for a
/// user with no group entry.
pub fn parse_user(user: &str) -> Result<(u32, u32), PolicyError> {
    let bad = || {
        PolicyError::InvalidRequest(format!(
            "request field `user`: {user:?} is not \"uid[:gid]\" (names are resolved by `specwright run`)"
        ))
    };
    let (uid, gid) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let uid = uid.parse::<u32>().map_err(|_| bad())?;
    let gid = match gid {
        Some(g) => g.parse::<u32>().map_err(|_| bad())?,
        None => 0,
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> serde_json::Value {
        serde_json::json!({"id": "s1", "args": ["/bin/true"], "mounts": []})
    }

    #[test]
    fn unknown_field_is_named() {
        let mut v = minimal();
        v["bogus"] = serde_json::json!(1);
        let err = Request::from_json(&v.to_string()).unwrap_err().to_string();
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn unknown_nested_field_names_its_path() {
        let mut v = minimal();
        v["mounts"] = serde_json::json!([{"dest": "/a", "source": "/x", "colour": "red"}]);
        let err = Request::from_json(&v.to_string()).unwrap_err().to_string();
        assert!(err.contains("mounts[0]") && err.contains("colour"), "{err}");
    }

    #[test]
    fn defaults_apply() {
        let r = Request::from_json(&minimal().to_string()).unwrap();
        assert_eq!(r.namespace, "buildkit");
        assert_eq!(r.security_mode, SecurityMode::Sandbox);
        assert_eq!(r.network, Network::None);
        assert!(!r.readonly_rootfs);
    }

    #[test]
    fn mount_without_source_fails() {
        let mut v = minimal();
        v["mounts"] = serde_json::json!([{"dest": "/nosrc"}]);
        let err = Request::from_json(&v.to_string()).unwrap_err().to_string();
        assert!(err.contains("mount /nosrc has no source"), "{err}");
    }

    #[test]
    fn bad_id_and_user_are_named() {
        let mut v = minimal();
        v["id"] = serde_json::json!("../etc");
        let err = Request::from_json(&v.to_string()).unwrap_err().to_string();
        assert!(err.contains("`id`"), "{err}");
        let mut v = minimal();
        v["user"] = serde_json::json!("root");
        let err = Request::from_json(&v.to_string()).unwrap_err().to_string();
        assert!(err.contains("`user`"), "{err}");
    }

    #[test]
    fn user_forms() {
        assert_eq!(parse_user("1000:1001").unwrap(), (1000, 1001));
        assert_eq!(parse_user("7").unwrap(), (7, 0));
        assert!(parse_user("1000:").is_err());
        assert!(parse_user("-1").is_err());
    }

    #[test]
    fn network_modes_parse() {
        for (json, want) in [
            (r#"{"mode":"none"}"#, Network::None),
            (r#"{"mode":"host"}"#, Network::Host),
            (
                r#"{"mode":"path","path":"/run/netns/x"}"#,
                Network::Path {
                    path: "/run/netns/x".into(),
                },
            ),
        ] {
            assert_eq!(serde_json::from_str::<Network>(json).unwrap(), want);
        }
        assert!(serde_json::from_str::<Network>(r#"{"mode":"bridge"}"#).is_err());
    }

    #[test]
    fn source_materializes_as_rbind() {
        let m = MountRequest {
            dest: "/a".into(),
            source: Some("/src".into()),
            mountable: None,
            readonly: true,
            selector: String::new(),
        };
        let got = m.materialize().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].kind, "bind");
        assert_eq!(got[0].options, vec!["rbind", "ro"]);
    }
}
