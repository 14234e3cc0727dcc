//! Request format v1: one build step, as a build system hands it over.
//!
//! The JSON schema in `schema/request-v1.schema.json` describes the same
//! shape. Unknown fields are rejected and every error names the field.

use serde::{Deserialize, Serialize};

use crate::PolicyError;

/// The most bytes a request may have: generous for a thousand mounts, small
/// enough that a runaway input is refused as such before it is parsed.
pub const MAX_REQUEST_BYTES: usize = 4 << 20;

/// Makes `$ty` (derived with `#[serde(remote = "Self")]`) deserialize only
/// from a JSON object: serde's derive also accepts an array of the fields
/// in order, which the request schema does not allow.
macro_rules! object_only {
    ($ty:ty, $what:literal) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct ObjectVisitor;
                impl<'de> serde::de::Visitor<'de> for ObjectVisitor {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<$ty, A::Error> {
                        <$ty>::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    }
                }
                deserializer.deserialize_map(ObjectVisitor)
            }
        }

        impl Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                <$ty>::serialize(self, serializer)
            }
        }
    };
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self")]
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

object_only!(Request, "a request object");

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
#[serde(remote = "Self")]
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

object_only!(Network, "a network object");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
pub struct IdMap {
    #[serde(default)]
    pub uids: Vec<IdRange>,
    #[serde(default)]
    pub gids: Vec<IdRange>,
}

object_only!(IdMap, "an idmap object");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
pub struct IdRange {
    pub container_id: u32,
    pub host_id: u32,
    pub size: u32,
}

object_only!(IdRange, "an id range object");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
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

object_only!(MountRequest, "a mount object");

/// One mount a source stands for (containerd's `mount.Mount`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
pub struct Mountable {
    #[serde(rename = "type")]
    pub kind: String,
    pub source: String,
    #[serde(default)]
    pub options: Vec<String>,
}

object_only!(Mountable, "a mountable object");

impl Mountable {
    pub fn is_bind(&self) -> bool {
        self.kind == "bind" || self.kind == "rbind"
    }

    pub fn is_readonly(&self) -> bool {
        self.options.iter().any(|o| o == "ro")
    }
}

impl MountRequest {
    /// Whether the mount names exactly one of a source and a mountable:
    /// what [`Self::materialize`] needs, checked without building anything.
    pub fn check_source(&self) -> Result<(), PolicyError> {
        match (&self.source, &self.mountable) {
            (Some(_), Some(_)) => Err(PolicyError::InvalidRequest(format!(
                "mount {} has both source and mountable",
                self.dest
            ))),
            (None, None) => Err(PolicyError::InvalidRequest(format!(
                "mount {} has no source",
                self.dest
            ))),
            _ => Ok(()),
        }
    }

    /// What the source stands for: a bind source becomes one `rbind` mount
    /// (read-only when asked); a mountable is used verbatim. The host
    /// expands each request mount once, for the step; a policy gets the
    /// result through `materialize` of the host interface.
    pub fn materialize(&self) -> Result<Vec<Mountable>, PolicyError> {
        self.check_source()?;
        match (&self.source, &self.mountable) {
            (Some(source), _) => {
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
            (None, list) => Ok(list.clone().unwrap_or_default()),
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
    /// user names before validating). One JSON object and nothing after it.
    pub fn parse_json(json: &str) -> Result<Request, PolicyError> {
        if json.len() > MAX_REQUEST_BYTES {
            return Err(PolicyError::InvalidRequest(format!(
                "request: {} bytes, more than the {MAX_REQUEST_BYTES} a request may have",
                json.len()
            )));
        }
        // Tracking the path costs an allocation per field name; only a
        // request that fails is parsed again to name the field.
        if let Ok(request) = serde_json::from_str(json) {
            return Ok(request);
        }
        let de = &mut serde_json::Deserializer::from_str(json);
        let named = |e: serde_path_to_error::Error<serde_json::Error>| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path.is_empty() || path == "." {
                PolicyError::InvalidRequest(format!("request: {inner}"))
            } else {
                PolicyError::InvalidRequest(format!("request field `{path}`: {inner}"))
            }
        };
        let request: Request = serde_path_to_error::deserialize(&mut *de).map_err(named)?;
        de.end()
            .map_err(|e| PolicyError::InvalidRequest(format!("request: {e} (one JSON object, nothing after it)")))?;
        Ok(request)
    }

    pub fn validate(&self) -> Result<(), PolicyError> {
        let invalid = |m: String| Err(PolicyError::InvalidRequest(m));
        if !is_valid_id(&self.id) {
            return invalid(format!(
                "request field `id`: {:?} is not a valid step id (1 to 128 of A-Z a-z 0-9 _ . -, not starting with a dot)",
                self.id
            ));
        }
        self.check_no_nul()?;
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
            check_destination(&format!("mounts[{i}].dest"), &m.dest)?;
            if m.mountable.as_ref().is_some_and(Vec::is_empty) {
                return invalid(format!(
                    "request field `mounts[{i}].mountable`: must not be empty (a mount with no entries would be dropped)"
                ));
            }
            m.check_source()?;
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

    /// The kernel takes no string with a NUL byte: every string of the
    /// request is refused with one, naming its field.
    fn check_no_nul(&self) -> Result<(), PolicyError> {
        let mut fields: Vec<(String, &str)> = vec![
            ("namespace".into(), &self.namespace),
            ("cwd".into(), &self.cwd),
            ("user".into(), &self.user),
            ("hostname".into(), &self.hostname),
            ("resolv_conf".into(), &self.resolv_conf),
            ("hosts_file".into(), &self.hosts_file),
        ];
        let has_nul = |s: &str| s.as_bytes().contains(&0);
        // The common case allocates nothing: names are built only on a hit.
        if !fields.iter().any(|(_, v)| has_nul(v))
            && !self
                .args
                .iter()
                .flatten()
                .chain(self.env.iter().flatten())
                .any(|v| has_nul(v))
            && !self.cgroup_path.as_deref().is_some_and(has_nul)
            && !matches!(&self.network, Network::Path { path } if has_nul(path))
            && !self.mounts.iter().any(|m| {
                has_nul(&m.dest)
                    || has_nul(&m.selector)
                    || m.source.as_deref().is_some_and(has_nul)
                    || m.mountable
                        .iter()
                        .flatten()
                        .any(|mm| has_nul(&mm.kind) || has_nul(&mm.source) || mm.options.iter().any(|o| has_nul(o)))
            })
        {
            return Ok(());
        }
        for (name, list) in [("args", &self.args), ("env", &self.env)] {
            for (i, v) in list.iter().flatten().enumerate() {
                fields.push((format!("{name}[{i}]"), v));
            }
        }
        if let Some(path) = &self.cgroup_path {
            fields.push(("cgroup_path".into(), path));
        }
        if let Network::Path { path } = &self.network {
            fields.push(("network.path".into(), path));
        }
        for (i, m) in self.mounts.iter().enumerate() {
            fields.push((format!("mounts[{i}].dest"), &m.dest));
            fields.push((format!("mounts[{i}].selector"), &m.selector));
            if let Some(source) = &m.source {
                fields.push((format!("mounts[{i}].source"), source));
            }
            for (j, mm) in m.mountable.iter().flatten().enumerate() {
                fields.push((format!("mounts[{i}].mountable[{j}].type"), &mm.kind));
                fields.push((format!("mounts[{i}].mountable[{j}].source"), &mm.source));
                for (k, o) in mm.options.iter().enumerate() {
                    fields.push((format!("mounts[{i}].mountable[{j}].options[{k}]"), o));
                }
            }
        }
        match fields.into_iter().find(|(_, v)| has_nul(v)) {
            Some((name, _)) => Err(PolicyError::InvalidRequest(format!(
                "request field `{name}`: contains a NUL byte"
            ))),
            None => Ok(()),
        }
    }
}

/// A mount destination: an absolute path inside the container other than
/// its root, without `..` components or a newline (runtimes and
/// /proc/self/mountinfo cannot carry one).
fn check_destination(field: &str, dest: &str) -> Result<(), PolicyError> {
    let invalid = |why: &str| {
        Err(PolicyError::InvalidRequest(format!(
            "request field `{field}`: {dest:?} {why}"
        )))
    };
    if !dest.starts_with('/') {
        return invalid("is not an absolute path");
    }
    if dest.contains('\n') {
        return invalid("contains a newline");
    }
    if dest.split('/').any(|c| c == "..") {
        return invalid("has a `..` component");
    }
    if dest.split('/').all(|c| c.is_empty() || c == ".") {
        return invalid("is the container's root");
    }
    Ok(())
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
mod tests;
