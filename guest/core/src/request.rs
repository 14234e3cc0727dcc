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
    /// The worker's cgroup parent: BuildKit's `/<parent>/buildkit/<id>`,
    /// or `<parent><id>` for a systemd slice ending in `:`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_parent: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<Ulimit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<LinuxResources>,
    /// A host socket for OpenTelemetry traces (BuildKit's tracing socket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing_socket: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub apparmor_profile: String,
    /// Whether the step gets SELinux labels.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub selinux: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cdi_devices: Vec<CdiDevice>,
}

object_only!(Request, "a request object");

/// A resource limit of the step's process (`RLIMIT_<NAME>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
pub struct Ulimit {
    /// The limit's name, any case: `nofile`, `nproc`, ...
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

object_only!(Ulimit, "a ulimit object");

/// The names `RLIMIT_<NAME>` that Linux has, lower-case.
pub const ULIMIT_NAMES: &[&str] = &[
    "as",
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// cgroup limits of the step (BuildKit's `LinuxResources`); absent or 0
/// leaves a limit unset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
pub struct LinuxResources {
    /// Bytes.
    #[serde(default)]
    pub memory: i64,
    /// Bytes of memory and swap together.
    #[serde(default)]
    pub memory_swap: i64,
    #[serde(default)]
    pub cpu_shares: u64,
    /// Microseconds.
    #[serde(default)]
    pub cpu_period: u64,
    /// Microseconds.
    #[serde(default)]
    pub cpu_quota: i64,
    /// CPUs the step may use, `0-3,5`.
    #[serde(default)]
    pub cpuset_cpus: String,
    /// Memory nodes the step may use, `0-1`.
    #[serde(default)]
    pub cpuset_mems: String,
}

object_only!(LinuxResources, "a resources object");

/// A CDI device the step asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
pub struct CdiDevice {
    /// `vendor.com/class=name`, `vendor.com/class=*` (every device of
    /// the kind), `vendor.com/class` (its first device), or a device
    /// class that CDI specs annotate.
    pub name: String,
    /// A device that is not registered is skipped instead of an error.
    #[serde(default)]
    pub optional: bool,
}

object_only!(CdiDevice, "a CDI device object");

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
        if let Some(parent) = &self.cgroup_parent {
            if parent.is_empty() {
                return invalid("request field `cgroup_parent`: must not be empty (leave it out)".to_string());
            }
        }
        for (i, u) in self.ulimits.iter().enumerate() {
            if !ULIMIT_NAMES.contains(&u.name.to_ascii_lowercase().as_str()) {
                return invalid(format!(
                    "request field `ulimits[{i}].name`: {:?} is not a resource limit (one of {})",
                    u.name,
                    ULIMIT_NAMES.join(", ")
                ));
            }
            for (field, value) in [("soft", u.soft), ("hard", u.hard)] {
                if value < 0 {
                    return invalid(format!("request field `ulimits[{i}].{field}`: {value} is negative"));
                }
            }
            if u.soft > u.hard {
                return invalid(format!(
                    "request field `ulimits[{i}].soft`: {} is above the hard limit {}",
                    u.soft, u.hard
                ));
            }
        }
        if let Some(r) = &self.resources {
            for (field, value) in [
                ("memory", r.memory),
                ("memory_swap", r.memory_swap),
                ("cpu_quota", r.cpu_quota),
            ] {
                if value < 0 {
                    return invalid(format!("request field `resources.{field}`: {value} is negative"));
                }
            }
            for (field, value) in [("cpuset_cpus", &r.cpuset_cpus), ("cpuset_mems", &r.cpuset_mems)] {
                if !value.is_empty() && !is_cpu_list(value) {
                    return invalid(format!(
                        "request field `resources.{field}`: {value:?} is not a list of numbers and ranges (`0-3,5`)"
                    ));
                }
            }
        }
        if let Some(socket) = &self.tracing_socket {
            if !socket.starts_with('/') {
                return invalid(format!(
                    "request field `tracing_socket`: {socket:?} is not an absolute path"
                ));
            }
        }
        for (i, d) in self.cdi_devices.iter().enumerate() {
            if let Err(why) = check_cdi_device_name(&d.name) {
                return invalid(format!("request field `cdi_devices[{i}].name`: {:?} {why}", d.name));
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
            && !self.cgroup_parent.as_deref().is_some_and(has_nul)
            && !self.tracing_socket.as_deref().is_some_and(has_nul)
            && !has_nul(&self.apparmor_profile)
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
        if let Some(parent) = &self.cgroup_parent {
            fields.push(("cgroup_parent".into(), parent));
        }
        if let Some(socket) = &self.tracing_socket {
            fields.push(("tracing_socket".into(), socket));
        }
        fields.push(("apparmor_profile".into(), &self.apparmor_profile));
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

/// `0-3,5`: what the kernel's cpuset lists take.
fn is_cpu_list(list: &str) -> bool {
    let number = |n: &str| !n.is_empty() && n.len() <= 9 && n.bytes().all(|b| b.is_ascii_digit());
    list.split(',').all(|item| match item.split_once('-') {
        Some((a, b)) => number(a) && number(b) && a.parse::<u32>().ok() <= b.parse::<u32>().ok(),
        None => number(item),
    })
}

/// CDI's vendor (`vendor.com`, letters, digits, `.`, `-`, `_`) and class
/// (letters, digits, `-`, `_`), as CDI's parser checks a qualified kind.
pub fn check_cdi_kind(kind: &str) -> Result<(), &'static str> {
    let (vendor, class) = kind.split_once('/').ok_or("has no vendor (`vendor.com/class`)")?;
    let edges_alnum = |s: &str| {
        s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
    };
    if !edges_alnum(vendor) || !vendor.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        return Err("has an invalid vendor (letters, digits, `.`, `-`, `_`; a letter or digit first and last)");
    }
    if !edges_alnum(class) || !class.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b)) {
        return Err("has an invalid class (letters, digits, `-`, `_`; a letter or digit first and last)");
    }
    Ok(())
}

/// A CDI device name (letters, digits, `_`, `-`, `.`, `:`; a letter or
/// digit first and last), as CDI's parser checks one.
pub fn check_cdi_name(name: &str) -> Result<(), &'static str> {
    let ok = name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err("has an invalid device name (letters, digits, `_`, `-`, `.`, `:`; a letter or digit first and last)")
    }
}

/// What a step may name: a qualified device, every device of a kind, a
/// kind, or a device class.
fn check_cdi_device_name(name: &str) -> Result<(), &'static str> {
    match name.split_once('=') {
        Some((kind, device)) => {
            check_cdi_kind(kind)?;
            if device == "*" {
                Ok(())
            } else {
                check_cdi_name(device)
            }
        }
        None if name.contains('/') => check_cdi_kind(name),
        None if name.is_empty() => Err("is empty"),
        None => check_cdi_name(name).map_err(|_| "is not a device class (letters, digits, `_`, `-`, `.`, `:`)"),
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
mod tests;
