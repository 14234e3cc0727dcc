//! CDI (Container Device Interface) devices: the registry the host builds
//! from its CDI spec files, and how BuildKit v0.32 finds a step's devices
//! in it and applies their container edits to the spec.
//!
//! The host parses and validates the files and fills in what CDI leaves to
//! the host (a device node's type, numbers and mode, from the node itself);
//! everything here is pure.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::request::CdiDevice;
use crate::spec::{Device, DeviceCgroup, Extra, Hook, Hooks, Mount, Name, Names, Resources, Spec};
use crate::PolicyError;

/// The annotation that puts a device in a class a step may name.
pub const DEVICE_CLASS_ANNOTATION: &str = "org.mobyproject.buildkit.device.class";

/// What one CDI spec file says, as CDI's `specs-go` types read it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecFile {
    pub cdi_version: String,
    /// `vendor.com/class`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub devices: Vec<DeviceSpec>,
    #[serde(default)]
    pub container_edits: ContainerEdits,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub container_edits: ContainerEdits,
}

/// The edits a device (or its whole spec file) makes to a container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerEdits {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_nodes: Vec<DeviceNode>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<CdiHook>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<CdiMount>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_gids: Vec<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceNode {
    /// Inside the container.
    pub path: String,
    /// On the host; `path` when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host_path: String,
    /// `c`, `b`, `u` or `p`; filled in from the node by the host.
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default)]
    pub major: i64,
    #[serde(default)]
    pub minor: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_mode: Option<u32>,
    /// Of `r`, `w` and `m`; `rwm` when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub permissions: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CdiMount {
    pub host_path: String,
    pub container_path: String,
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CdiHook {
    pub hook_name: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
}

/// The hook names CDI knows.
pub const HOOK_NAMES: &[&str] = &[
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

impl SpecFile {
    /// CDI's own checks of a spec file; the message names what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.cdi_version.is_empty() {
            return Err("no cdiVersion".to_string());
        }
        crate::request::check_cdi_kind(&self.kind).map_err(|why| format!("kind {:?} {why}", self.kind))?;
        if self.devices.is_empty() {
            return Err("no devices".to_string());
        }
        self.container_edits
            .validate()
            .map_err(|e| format!("containerEdits: {e}"))?;
        for (i, d) in self.devices.iter().enumerate() {
            crate::request::check_cdi_name(&d.name).map_err(|why| format!("devices[{i}]: name {:?} {why}", d.name))?;
            if self.devices[..i].iter().any(|e| e.name == d.name) {
                return Err(format!("devices[{i}]: device {:?} is defined twice", d.name));
            }
            d.container_edits
                .validate()
                .map_err(|e| format!("devices[{i}] ({}): containerEdits: {e}", d.name))?;
        }
        Ok(())
    }
}

impl ContainerEdits {
    pub fn validate(&self) -> Result<(), String> {
        check_env(&self.env)?;
        for (i, d) in self.device_nodes.iter().enumerate() {
            if d.path.is_empty() {
                return Err(format!("deviceNodes[{i}]: empty path"));
            }
            if !["", "b", "c", "u", "p"].contains(&d.kind.as_str()) {
                return Err(format!("deviceNodes[{i}] ({}): invalid type {:?}", d.path, d.kind));
            }
            if !d.permissions.bytes().all(|b| b"rwm".contains(&b)) {
                return Err(format!(
                    "deviceNodes[{i}] ({}): invalid permissions {:?}",
                    d.path, d.permissions
                ));
            }
        }
        for (i, h) in self.hooks.iter().enumerate() {
            if !HOOK_NAMES.contains(&h.hook_name.as_str()) {
                return Err(format!("hooks[{i}]: invalid hook name {:?}", h.hook_name));
            }
            if h.path.is_empty() {
                return Err(format!("hooks[{i}] ({}): empty path", h.hook_name));
            }
            check_env(&h.env).map_err(|e| format!("hooks[{i}] ({}): {e}", h.hook_name))?;
        }
        for (i, m) in self.mounts.iter().enumerate() {
            if m.host_path.is_empty() {
                return Err(format!("mounts[{i}]: empty hostPath"));
            }
            if m.container_path.is_empty() {
                return Err(format!("mounts[{i}]: empty containerPath"));
            }
        }
        Ok(())
    }

    fn append(&mut self, other: &ContainerEdits) {
        self.env.extend(other.env.iter().cloned());
        self.device_nodes.extend(other.device_nodes.iter().cloned());
        self.hooks.extend(other.hooks.iter().cloned());
        self.mounts.extend(other.mounts.iter().cloned());
        self.additional_gids.extend(other.additional_gids.iter().copied());
    }
}

fn check_env(env: &[String]) -> Result<(), String> {
    match env.iter().find(|e| e.find('=').is_none_or(|i| i == 0)) {
        Some(bad) => Err(format!("invalid environment variable {bad:?}")),
        None => Ok(()),
    }
}

/// Every registered device, by its qualified name (`vendor.com/class=name`),
/// in name order, with the edits of the spec file it comes from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Registry {
    /// The spec files' own (common) edits and annotations.
    pub specs: Vec<RegisteredSpec>,
    pub devices: Vec<RegisteredDevice>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RegisteredSpec {
    /// The file, for messages.
    pub file: String,
    pub annotations: BTreeMap<String, String>,
    pub edits: ContainerEdits,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RegisteredDevice {
    pub name: String,
    /// Index into [`Registry::specs`].
    pub spec: usize,
    pub annotations: BTreeMap<String, String>,
    pub edits: ContainerEdits,
}

impl Registry {
    /// A device's annotations: its spec file's, then its own over them.
    fn annotations<'a>(&'a self, device: &'a RegisteredDevice) -> BTreeMap<&'a str, &'a str> {
        let mut all: BTreeMap<&str, &str> = BTreeMap::new();
        if let Some(spec) = self.specs.get(device.spec) {
            all.extend(spec.annotations.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        }
        all.extend(device.annotations.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        all
    }

    /// BuildKit's `parseDevice`: the registered devices a step's device
    /// stands for. A name with a valid kind selects by name (`kind=*`
    /// every device of the kind, a bare kind its first); otherwise, or
    /// when that selects nothing, devices whose class annotation is the
    /// name. A required device that selects nothing is an error.
    fn find(&self, wanted: &CdiDevice) -> Result<Vec<usize>, PolicyError> {
        let (kind, name) = wanted.name.split_once('=').unwrap_or((&wanted.name, ""));
        let mut found = Vec::new();
        let has_vendor = crate::request::check_cdi_kind(kind).is_ok();
        if has_vendor {
            let prefix = format!("{kind}=");
            let mut of_kind = self
                .devices
                .iter()
                .enumerate()
                .filter(|(_, d)| d.name.starts_with(&prefix));
            match name {
                "" => found.extend(of_kind.next().map(|(i, _)| i)),
                "*" => found.extend(of_kind.map(|(i, _)| i)),
                _ => found.extend(self.devices.iter().position(|d| d.name == wanted.name)),
            }
        }
        if !has_vendor || found.is_empty() {
            found.extend(self.devices.iter().enumerate().filter_map(|(i, d)| {
                (self.annotations(d).get(DEVICE_CLASS_ANNOTATION) == Some(&wanted.name.as_str())).then_some(i)
            }));
        }
        if found.is_empty() && !wanted.optional {
            return Err(PolicyError::Internal(format!(
                "CDI device injection failed: required device {:?} is not registered",
                wanted.name
            )));
        }
        Ok(found)
    }

    /// The edits of `wanted`, in CDI's order: for each device (once), its
    /// spec file's edits the first time that file is met, then its own.
    pub fn edits_for(&self, wanted: &[CdiDevice]) -> Result<Option<ContainerEdits>, PolicyError> {
        let mut devices: Vec<usize> = Vec::new();
        for w in wanted {
            for d in self.find(w)? {
                if !devices.contains(&d) {
                    devices.push(d);
                }
            }
        }
        if devices.is_empty() {
            return Ok(None);
        }
        let mut edits = ContainerEdits::default();
        let mut specs_seen: Vec<usize> = Vec::new();
        for d in devices {
            let device = &self.devices[d];
            if !specs_seen.contains(&device.spec) {
                specs_seen.push(device.spec);
                if let Some(spec) = self.specs.get(device.spec) {
                    edits.append(&spec.edits);
                }
            }
            edits.append(&device.edits);
        }
        Ok(Some(edits))
    }
}

/// Number of components of a clean absolute path, as CDI orders mounts.
fn path_parts(p: &str) -> usize {
    crate::mounts::clean_absolute(p).split('/').count()
}

/// CDI's `ContainerEdits.Apply`, as runtime-tools' generator makes each
/// edit: env by key (replacing an existing one), device nodes replacing
/// one at the same path, with an allow rule for block and character
/// devices; mounts replacing those at the same destination, then every
/// mount ordered by depth (stable); hooks appended by kind; additional
/// gids once each.
pub fn apply_edits(spec: &mut Spec, edits: &ContainerEdits) -> Result<(), PolicyError> {
    let process = spec.process_mut();
    for e in &edits.env {
        let key = e.split_once('=').map_or(e.as_str(), |(k, _)| k);
        match process
            .env
            .iter()
            .rposition(|x| x.split_once('=').map_or(x.as_str(), |(k, _)| k) == key)
        {
            Some(i) => process.env[i].clone_from(e),
            None => process.env.push(e.clone()),
        }
    }
    let (uid, gid) = (process.user.uid, process.user.gid);
    for d in &edits.device_nodes {
        let device = Device {
            path: d.path.clone().into(),
            kind: d.kind.clone().into(),
            major: d.major,
            minor: d.minor,
            file_mode: d.file_mode,
            uid: d.uid.or((uid > 0).then_some(uid)),
            gid: d.gid.or((gid > 0).then_some(gid)),
            extra: Extra::NONE,
        };
        let linux = spec.linux_mut();
        linux.devices.retain(|x| x.path != device.path);
        linux.devices.push(device);
        if d.kind == "b" || d.kind == "c" {
            let access = if d.permissions.is_empty() {
                "rwm"
            } else {
                &d.permissions
            };
            linux
                .resources
                .get_or_insert_with(Resources::default)
                .devices
                .push(DeviceCgroup {
                    allow: true,
                    kind: d.kind.clone().into(),
                    major: Some(d.major),
                    minor: Some(d.minor),
                    access: access.to_string().into(),
                    extra: Extra::NONE,
                });
        }
    }
    if !edits.mounts.is_empty() {
        for m in &edits.mounts {
            spec.mounts.retain(|x| x.destination != m.container_path);
            spec.mounts.push(Mount {
                destination: m.container_path.clone().into(),
                kind: m.kind.clone().into(),
                source: m.host_path.clone().into(),
                options: Names::Owned(m.options.iter().cloned().map(Name::from).collect()),
                extra: Extra::NONE,
            });
        }
        spec.mounts.sort_by_key(|m| path_parts(&m.destination));
    }
    for h in &edits.hooks {
        let hook = Hook {
            path: h.path.clone(),
            args: h.args.clone(),
            env: h.env.clone(),
            timeout: h.timeout,
            extra: Extra::NONE,
        };
        let hooks = spec.hooks.get_or_insert_with(Hooks::default);
        let list = match h.hook_name.as_str() {
            "prestart" => &mut hooks.prestart,
            "createRuntime" => &mut hooks.create_runtime,
            "createContainer" => &mut hooks.create_container,
            "startContainer" => &mut hooks.start_container,
            "poststart" => &mut hooks.poststart,
            "poststop" => &mut hooks.poststop,
            other => return Err(PolicyError::Internal(format!("CDI: unknown hook name {other:?}"))),
        };
        list.push(hook);
    }
    let user = &mut spec.process_mut().user;
    for &g in &edits.additional_gids {
        if g != 0 && !user.additional_gids.contains(&g) {
            user.additional_gids.push(g);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Registry {
        let node = |path: &str, minor| DeviceNode {
            path: path.into(),
            kind: "c".into(),
            major: 1,
            minor,
            file_mode: Some(0o666),
            ..DeviceNode::default()
        };
        let device = |name: &str, env: &str, path: &str, minor, class: Option<&str>| RegisteredDevice {
            name: format!("vendor.example/device={name}"),
            spec: 0,
            annotations: class
                .map(|c| BTreeMap::from([(DEVICE_CLASS_ANNOTATION.to_string(), c.to_string())]))
                .unwrap_or_default(),
            edits: ContainerEdits {
                env: vec![env.into()],
                device_nodes: vec![node(path, minor)],
                ..ContainerEdits::default()
            },
        };
        Registry {
            specs: vec![RegisteredSpec {
                file: "vendor.yaml".into(),
                annotations: BTreeMap::new(),
                edits: ContainerEdits {
                    env: vec!["COMMON=1".into()],
                    ..ContainerEdits::default()
                },
            }],
            devices: vec![
                device("bar", "BAR=1", "/dev/zero", 5, Some("gpu")),
                device("foo", "FOO=1", "/dev/null", 3, None),
            ],
        }
    }

    fn wanted(name: &str, optional: bool) -> Vec<CdiDevice> {
        vec![CdiDevice {
            name: name.into(),
            optional,
        }]
    }

    #[test]
    fn names_kinds_wildcards_and_classes_select_devices() {
        let r = registry();
        let env = |name: &str| r.edits_for(&wanted(name, false)).unwrap().map(|e| e.env);
        assert_eq!(env("vendor.example/device=foo").unwrap(), ["COMMON=1", "FOO=1"]);
        assert_eq!(env("vendor.example/device=*").unwrap(), ["COMMON=1", "BAR=1", "FOO=1"]);
        assert_eq!(
            env("vendor.example/device").unwrap(),
            ["COMMON=1", "BAR=1"],
            "a kind alone: its first device"
        );
        assert_eq!(env("gpu").unwrap(), ["COMMON=1", "BAR=1"], "a class");
        assert_eq!(r.edits_for(&wanted("vendor.example/device=nope", true)).unwrap(), None);
        let err = r.edits_for(&wanted("vendor.example/device=nope", false)).unwrap_err();
        assert!(err
            .to_string()
            .contains("required device \"vendor.example/device=nope\" is not registered"));
    }

    #[test]
    fn edits_apply_as_cdi_does() {
        let mut spec = crate::opts::default_unix_spec(crate::buildkit::Release::V0_32, "buildkit", "x");
        spec.process_mut().env = vec!["FOO=0".into(), "PATH=/bin".into()];
        let mut edits = registry()
            .edits_for(&wanted("vendor.example/device=*", false))
            .unwrap()
            .unwrap();
        edits.mounts.push(CdiMount {
            host_path: "/etc/hostname".into(),
            container_path: "/dev/shm".into(),
            kind: String::new(),
            options: vec!["ro".into(), "bind".into()],
        });
        edits.hooks.push(CdiHook {
            hook_name: "createContainer".into(),
            path: "/bin/hook".into(),
            ..CdiHook::default()
        });
        apply_edits(&mut spec, &edits).unwrap();
        let process = spec.process.as_ref().unwrap();
        assert_eq!(process.env, ["FOO=1", "PATH=/bin", "COMMON=1", "BAR=1"]);
        let linux = spec.linux.as_ref().unwrap();
        let paths: Vec<_> = linux.devices.iter().map(|d| &*d.path).collect();
        assert_eq!(paths, ["/dev/zero", "/dev/null"]);
        let rules = &linux.resources.as_ref().unwrap().devices;
        assert_eq!(
            (rules[1].major, rules[1].minor, &*rules[1].access),
            (Some(1), Some(5), "rwm")
        );
        let dests: Vec<_> = spec.mounts.iter().map(|m| &*m.destination).collect();
        assert_eq!(
            dests,
            ["/proc", "/dev", "/sys", "/run", "/dev/pts", "/dev/mqueue", "/dev/shm"]
        );
        assert_eq!(spec.hooks.unwrap().create_container[0].path, "/bin/hook");
    }

    #[test]
    fn spec_files_are_checked() {
        let mut file = SpecFile {
            cdi_version: "0.6.0".into(),
            kind: "vendor.example/device".into(),
            devices: vec![DeviceSpec {
                name: "foo".into(),
                ..DeviceSpec::default()
            }],
            ..SpecFile::default()
        };
        file.validate().unwrap();
        file.kind = "nokind".into();
        assert!(file.validate().unwrap_err().contains("kind"));
        file.kind = "vendor.example/device".into();
        file.devices[0].container_edits.env = vec!["=x".into()];
        assert!(file.validate().unwrap_err().contains("invalid environment variable"));
    }
}
