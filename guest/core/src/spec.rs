//! The OCI runtime spec, modelled as runtime-spec's Go types serialize it.
//!
//! Fields follow `specs-go` (v1.0.2-dev): what Go tags `omitempty` is skipped
//! when empty here too, so a spec round-trips to the same JSON BuildKit
//! writes. Capability lists are vectors, not sets: BuildKit's insecure mode
//! emits duplicates, in order.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// A string that is usually static data (the default spec, the seccomp
/// tables): borrowed, so building a spec does not allocate it, and owned
/// once a request or a policy supplies it (`"x".into()`, `s.into()`).
pub type Name = Cow<'static, str>;

/// A list of static names with its JSON (`["a","b"]`), made at build
/// time: the default spec's capability, path and option lists, the seccomp
/// profile's architecture lists and each of its rules' names.
#[derive(Debug)]
pub struct StaticNames {
    pub names: &'static [Name],
    pub json: &'static str,
    /// The static object these names belong to, whose JSON is written
    /// whole while the rest of the object is still its own.
    pub part_of: Option<PartOf>,
}

/// The static object a [`StaticNames`] list belongs to.
#[derive(Debug, Clone, Copy)]
pub enum PartOf {
    /// A seccomp rule of the profile (the list is its names).
    Rule(&'static crate::seccomp::RuleRest),
    /// A mount of the default spec (the list is its options).
    Mount(&'static StaticMount),
}

/// A mount of the default spec besides its options, with the whole
/// mount's JSON made at build time.
#[derive(Debug)]
pub struct StaticMount {
    pub destination: &'static str,
    pub kind: &'static str,
    pub source: &'static str,
    pub json: &'static str,
}

impl StaticMount {
    /// The whole JSON of `mount`, when it is still this mount (its options
    /// being this mount's is the caller's to know).
    pub fn json_for(&self, mount: &Mount) -> Option<&'static str> {
        (mount.extra.is_empty()
            && same_text(&mount.destination, self.destination)
            && same_text(&mount.kind, self.kind)
            && same_text(&mount.source, self.source))
        .then_some(self.json)
    }
}

/// Whether `text` equals the static `expected`. Equality is by content;
/// a `text` still borrowing `expected` itself (what a spec built from the
/// static data holds) is equal without reading its bytes.
pub fn same_text(text: &str, expected: &'static str) -> bool {
    std::ptr::eq(text, expected) || text == expected
}

/// A list of names: one of the static lists, unchanged (written as its
/// build-time JSON), or any other. Edit with [`Names::to_mut`], which
/// makes it an owned copy.
#[derive(Clone)]
pub enum Names {
    Static(&'static StaticNames),
    Owned(Vec<Name>),
}

impl Names {
    /// The empty list (no allocation).
    pub const EMPTY: Names = Names::Owned(Vec::new());

    /// The list, owned from here on: a static one is copied first.
    pub fn to_mut(&mut self) -> &mut Vec<Name> {
        if let Names::Static(list) = self {
            *self = Names::Owned(list.names.to_vec());
        }
        match self {
            Names::Owned(names) => names,
            Names::Static(_) => unreachable!("made owned above"),
        }
    }

    /// The names, owned.
    pub fn into_owned(self) -> Vec<Name> {
        match self {
            Names::Static(list) => list.names.to_vec(),
            Names::Owned(names) => names,
        }
    }

    /// The static list this still is, unchanged.
    pub fn as_static(&self) -> Option<&'static StaticNames> {
        match self {
            Names::Static(list) => Some(list),
            Names::Owned(_) => None,
        }
    }
}

impl Default for Names {
    fn default() -> Names {
        Names::EMPTY
    }
}

impl std::ops::Deref for Names {
    type Target = [Name];

    fn deref(&self) -> &[Name] {
        match self {
            Names::Static(list) => list.names,
            Names::Owned(names) => names,
        }
    }
}

impl std::fmt::Debug for Names {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Lists are equal by their names, whichever way they are held.
impl PartialEq for Names {
    fn eq(&self, other: &Names) -> bool {
        **self == **other
    }
}

impl Eq for Names {}

impl std::hash::Hash for Names {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (**self).hash(state);
    }
}

impl From<Vec<Name>> for Names {
    fn from(names: Vec<Name>) -> Names {
        Names::Owned(names)
    }
}

impl FromIterator<Name> for Names {
    fn from_iter<I: IntoIterator<Item = Name>>(iter: I) -> Names {
        Names::Owned(iter.into_iter().collect())
    }
}

impl Serialize for Names {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Names {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Names, D::Error> {
        Vec::<Name>::deserialize(deserializer).map(Names::Owned)
    }
}

/// The fields of a spec object that this model does not name, kept as
/// they came and written after the named ones, so that whatever a policy
/// or an engine set passes through every step (a device's `fileMode`, a
/// syscall rule's `errnoRet`, `linux.sysctl`, ...). Empty without an
/// allocation, so that static data (the default spec's mounts) can hold one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extra(Option<Box<serde_json::Map<String, serde_json::Value>>>);

impl Extra {
    /// No fields.
    pub const NONE: Extra = Extra(None);

    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|map| map.is_empty())
    }

    pub fn get(&self, key: &str) -> Option<&serde_json::Value> {
        self.0.as_ref()?.get(key)
    }

    pub fn insert(&mut self, key: String, value: serde_json::Value) -> Option<serde_json::Value> {
        self.0.get_or_insert_with(Default::default).insert(key, value)
    }

    pub fn remove(&mut self, key: &str) -> Option<serde_json::Value> {
        self.0.as_mut()?.remove(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &serde_json::Value)> {
        self.0.iter().flat_map(|map| map.iter())
    }
}

impl std::hash::Hash for Extra {
    /// The count only: equal values have equal counts.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.as_ref().map_or(0, |map| map.len()).hash(state);
    }
}

impl Serialize for Extra {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Extra {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Extra, D::Error> {
        let map = serde_json::Map::deserialize(deserializer)?;
        Ok(Extra(if map.is_empty() { None } else { Some(Box::new(map)) }))
    }
}

impl From<serde_json::Map<String, serde_json::Value>> for Extra {
    fn from(map: serde_json::Map<String, serde_json::Value>) -> Extra {
        Extra(if map.is_empty() { None } else { Some(Box::new(map)) })
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    pub oci_version: Name,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<Process>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<Root>,
    #[serde(default, skip_serializing_if = "str::is_empty")]
    pub hostname: Name,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<Hooks>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linux: Option<Linux>,
    /// Fields this model does not name (annotations, hooks, ...), kept so
    /// that a policy in a chain passes on what an earlier one set.
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Process {
    #[serde(default, skip_serializing_if = "is_false")]
    pub terminal: bool,
    #[serde(default)]
    pub user: User,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Not `omitempty` in Go: an empty cwd is written as "".
    #[serde(default)]
    pub cwd: Name,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rlimits: Vec<Rlimit>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_new_privileges: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub apparmor_profile: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selinux_label: String,
    /// Fields this model does not name, kept for the next policy.
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_gids: Vec<u32>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Capabilities {
    #[serde(default, skip_serializing_if = "<[Name]>::is_empty")]
    pub bounding: Names,
    #[serde(default, skip_serializing_if = "<[Name]>::is_empty")]
    pub effective: Names,
    #[serde(default, skip_serializing_if = "<[Name]>::is_empty")]
    pub inheritable: Names,
    #[serde(default, skip_serializing_if = "<[Name]>::is_empty")]
    pub permitted: Names,
    #[serde(default, skip_serializing_if = "<[Name]>::is_empty")]
    pub ambient: Names,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rlimit {
    #[serde(rename = "type")]
    pub kind: Name,
    pub hard: u64,
    pub soft: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Root {
    pub path: Name,
    #[serde(default, skip_serializing_if = "is_false")]
    pub readonly: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Mount {
    pub destination: Name,
    #[serde(rename = "type", default, skip_serializing_if = "str::is_empty")]
    pub kind: Name,
    #[serde(default, skip_serializing_if = "str::is_empty")]
    pub source: Name,
    #[serde(default, skip_serializing_if = "<[Name]>::is_empty")]
    pub options: Names,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Linux {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uid_mappings: Vec<IdMapping>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gid_mappings: Vec<IdMapping>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cgroups_path: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<Namespace>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<Device>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<Seccomp>,
    #[serde(default, skip_serializing_if = "<[Name]>::is_empty")]
    pub masked_paths: Names,
    #[serde(default, skip_serializing_if = "<[Name]>::is_empty")]
    pub readonly_paths: Names,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mount_label: String,
    /// Fields this model does not name (sysctl, ...), kept for the next
    /// policy.
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdMapping {
    #[serde(rename = "containerID")]
    pub container_id: u32,
    #[serde(rename = "hostID")]
    pub host_id: u32,
    pub size: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceCgroup>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceCgroup {
    pub allow: bool,
    #[serde(rename = "type", default, skip_serializing_if = "str::is_empty")]
    pub kind: Name,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minor: Option<i64>,
    #[serde(default, skip_serializing_if = "str::is_empty")]
    pub access: Name,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    #[serde(rename = "type")]
    pub kind: Name,
    #[serde(default, skip_serializing_if = "str::is_empty")]
    pub path: Name,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub path: Name,
    #[serde(rename = "type")]
    pub kind: Name,
    pub major: i64,
    pub minor: i64,
    #[serde(rename = "fileMode", default, skip_serializing_if = "Option::is_none")]
    pub file_mode: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `linux.resources.memory`, the fields BuildKit sets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap: Option<i64>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `linux.resources.cpu`, the fields BuildKit sets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cpu {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shares: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<u64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cpus: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mems: String,
    #[serde(flatten)]
    pub extra: Extra,
}

/// The spec's hooks, by when they run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hooks {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prestart: Vec<Hook>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub create_runtime: Vec<Hook>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub create_container: Vec<Hook>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub start_container: Vec<Hook>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub poststart: Vec<Hook>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub poststop: Vec<Hook>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Hook {
    pub path: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Seccomp {
    pub default_action: Name,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_errno_ret: Option<u32>,
    #[serde(default, skip_serializing_if = "<[Name]>::is_empty")]
    pub architectures: Names,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub syscalls: Vec<Syscall>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Syscall {
    /// Borrowed from the static profile tables until a policy edits it.
    pub names: Names,
    pub action: Name,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno_ret: Option<u32>,
    #[serde(default, skip_serializing_if = "<[SeccompArg]>::is_empty")]
    pub args: Cow<'static, [SeccompArg]>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeccompArg {
    pub index: u32,
    pub value: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub value_two: u64,
    pub op: Name,
}

impl Capabilities {
    /// Every set, in the order runtime-spec lists them.
    pub fn sets_mut(&mut self) -> [&mut Names; 5] {
        [
            &mut self.bounding,
            &mut self.effective,
            &mut self.inheritable,
            &mut self.permitted,
            &mut self.ambient,
        ]
    }
}

impl Spec {
    /// The process section, created empty when absent (containerd's `setProcess`).
    pub fn process_mut(&mut self) -> &mut Process {
        self.process.get_or_insert_with(Process::default)
    }

    /// The linux section, created empty when absent (containerd's `setLinux`).
    pub fn linux_mut(&mut self) -> &mut Linux {
        self.linux.get_or_insert_with(Linux::default)
    }

    /// The spec as compact JSON: the same bytes as `serde_json::to_string`,
    /// written without serde (see `json.rs`).
    pub fn to_json(&self) -> String {
        crate::json::spec_to_json(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_the_model_does_not_name_survive_a_round_trip() {
        let json = r#"{"ociVersion":"1.0.2","annotations":{"a":"b"},"process":{"cwd":"/","user":{"uid":0,"gid":0},"oomScoreAdj":5},"linux":{"sysctl":{"net.x":"1"}}}"#;
        let spec: Spec = serde_json::from_str(json).unwrap();
        let back: serde_json::Value = serde_json::from_str(&spec.to_json()).unwrap();
        assert_eq!(back["annotations"]["a"], "b");
        assert_eq!(back["process"]["oomScoreAdj"], 5);
        assert_eq!(back["linux"]["sysctl"]["net.x"], "1");
    }

    /// Regression: a chained policy parsed the previous spec into this
    /// model and dropped what it does not name below the top levels.
    #[test]
    fn nested_fields_the_model_does_not_name_survive_a_round_trip() {
        let json = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"user": {"uid": 0, "gid": 0, "umask": 18}, "cwd": "/"},
            "mounts": [{"destination": "/m", "type": "bind", "source": "/s", "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]}],
            "linux": {
                "resources": {
                    "devices": [{"allow": true, "type": "c", "major": 10, "minor": 229, "access": "rwm"}],
                    "memory": {"limit": 1048576}
                },
                "devices": [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 438, "uid": 0, "gid": 0}],
                "seccomp": {
                    "defaultAction": "SCMP_ACT_ERRNO",
                    "flags": ["SECCOMP_FILTER_FLAG_LOG"],
                    "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
                }
            }
        });
        let spec: Spec = serde_json::from_value(json.clone()).unwrap();
        let back: serde_json::Value = serde_json::from_str(&spec.to_json()).unwrap();
        assert_eq!(back, json);
    }
}
