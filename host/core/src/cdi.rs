//! The host's side of CDI: the spec files of the CDI spec directories,
//! read (bounded) and parsed once per step that asks, validated, and each
//! device node filled in from the host's node, as CDI's registry does.

use std::path::{Path, PathBuf};

use specwright_core::cdi::{DeviceNode, RegisteredDevice, RegisteredSpec, Registry, SpecFile};

use crate::sys::Syscalls;

/// The most bytes one CDI spec file may have.
pub const MAX_CDI_SPEC_BYTES: u64 = 1 << 20;
/// The most spec files read from all directories together.
pub const MAX_CDI_SPEC_FILES: usize = 256;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CdiError {
    #[error("CDI spec directory {dir}: {source}")]
    Dir { dir: PathBuf, source: std::io::Error },
    #[error("CDI spec file {file}: {message}")]
    File { file: PathBuf, message: String },
    #[error("more than {MAX_CDI_SPEC_FILES} CDI spec files")]
    TooMany,
}

/// Every device of the spec files in `dirs` (`*.yaml`, `*.yml`, `*.json`,
/// by name within a directory). A device defined again in a later
/// directory replaces the earlier one; twice in one directory is an error.
pub fn load_registry(sys: &dyn Syscalls, dirs: &[PathBuf]) -> Result<Registry, CdiError> {
    let mut registry = Registry::default();
    // (qualified name, index into registry.devices, directory index)
    let mut seen: Vec<(String, usize, usize)> = Vec::new();
    let mut files = 0;
    for (dir_index, dir) in dirs.iter().enumerate() {
        let names = sys.list_dir(dir).map_err(|source| CdiError::Dir {
            dir: dir.clone(),
            source,
        })?;
        for name in names.into_iter().flatten() {
            if ![".yaml", ".yml", ".json"].iter().any(|ext| name.ends_with(ext)) {
                continue;
            }
            files += 1;
            if files > MAX_CDI_SPEC_FILES {
                return Err(CdiError::TooMany);
            }
            let file = dir.join(&name);
            let file_error = |message: String| CdiError::File {
                file: file.clone(),
                message,
            };
            let Some(text) = sys
                .read_host_file(&file, MAX_CDI_SPEC_BYTES)
                .map_err(|e| file_error(e.to_string()))?
            else {
                continue;
            };
            let spec = parse_spec_file(&text).map_err(file_error)?;
            let spec_index = registry.specs.len();
            let mut common = spec.container_edits.clone();
            fill_device_nodes(sys, &mut common.device_nodes).map_err(file_error)?;
            registry.specs.push(RegisteredSpec {
                file: file.display().to_string(),
                annotations: spec.annotations.clone(),
                edits: common,
            });
            for device in spec.devices {
                let qualified = format!("{}={}", spec.kind, device.name);
                let mut edits = device.container_edits;
                fill_device_nodes(sys, &mut edits.device_nodes).map_err(file_error)?;
                let entry = RegisteredDevice {
                    name: qualified.clone(),
                    spec: spec_index,
                    annotations: device.annotations,
                    edits,
                };
                match seen.iter().find(|(n, _, _)| *n == qualified) {
                    Some((_, _, d)) if *d == dir_index => {
                        return Err(file_error(format!(
                            "device {qualified:?} is also defined by another file of {}",
                            dir.display()
                        )))
                    }
                    Some(&(_, at, _)) => registry.devices[at] = entry,
                    None => {
                        seen.push((qualified, registry.devices.len(), dir_index));
                        registry.devices.push(entry);
                    }
                }
            }
        }
    }
    registry.devices.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(registry)
}

/// A spec file's text: YAML, of which JSON is a part.
pub fn parse_spec_file(text: &str) -> Result<SpecFile, String> {
    let spec: SpecFile = serde_yaml::from_str(text).map_err(|e| format!("invalid CDI spec: {e}"))?;
    spec.validate()?;
    Ok(spec)
}

/// CDI's `fillMissingInfo`: a node without a type (or, for a device, a
/// major number) takes them, and a missing mode, from the host's node.
fn fill_device_nodes(sys: &dyn Syscalls, nodes: &mut [DeviceNode]) -> Result<(), String> {
    for node in nodes {
        if !node.kind.is_empty() && (node.major != 0 || node.kind == "p") {
            continue;
        }
        let host_path = if node.host_path.is_empty() {
            node.path.clone()
        } else {
            node.host_path.clone()
        };
        let info = sys
            .node_info(Path::new(&host_path))
            .map_err(|e| format!("failed to stat CDI host device {host_path:?}: {e}"))?;
        if info.kind == '?' {
            return Err(format!("CDI host device {host_path:?} is not a device node"));
        }
        let kind = info.kind.to_string();
        if node.kind.is_empty() {
            node.kind = kind;
        } else if node.kind != kind {
            return Err(format!(
                "CDI device ({:?}, {host_path:?}), host type mismatch ({}, {kind})",
                node.path, node.kind
            ));
        }
        node.file_mode.get_or_insert(info.mode);
        if node.kind != "p" && node.major == 0 {
            node.major = info.major;
            node.minor = info.minor;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::RealSyscalls;

    const SPEC: &str = r#"
cdiVersion: "0.6.0"
kind: vendor.example/device
devices:
  - name: foo
    containerEdits:
      env: ["FOO=1"]
      deviceNodes:
        - path: /dev/null
containerEdits:
  env: ["COMMON=1"]
"#;

    #[test]
    fn spec_files_are_read_filled_in_and_ordered() {
        let low = tempfile::tempdir().unwrap();
        let high = tempfile::tempdir().unwrap();
        std::fs::write(low.path().join("a.yaml"), SPEC).unwrap();
        std::fs::write(low.path().join("ignored.txt"), "not a spec").unwrap();
        let json = r#"{"cdiVersion": "0.6.0", "kind": "vendor.example/device", "devices": [{"name": "foo", "containerEdits": {"env": ["FOO=2"]}}, {"name": "bar", "containerEdits": {}}]}"#;
        std::fs::write(high.path().join("b.json"), json).unwrap();
        let missing = low.path().join("missing");
        let dirs = vec![missing, low.path().to_path_buf(), high.path().to_path_buf()];
        let registry = load_registry(&RealSyscalls, &dirs).unwrap();
        let names: Vec<_> = registry.devices.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["vendor.example/device=bar", "vendor.example/device=foo"]);
        assert_eq!(registry.devices[1].edits.env, ["FOO=2"], "the later directory wins");
        let low_only = load_registry(&RealSyscalls, &dirs[..2]).unwrap();
        let node = &low_only.devices[0].edits.device_nodes[0];
        assert_eq!(
            (node.kind.as_str(), node.major, node.minor, node.file_mode),
            ("c", 1, 3, Some(0o666))
        );
    }

    #[test]
    fn a_broken_or_conflicting_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), "kind: [").unwrap();
        let err = load_registry(&RealSyscalls, &[dir.path().to_path_buf()]).unwrap_err();
        assert!(
            err.to_string().contains("a.yaml") && err.to_string().contains("invalid CDI spec"),
            "{err}"
        );
        std::fs::write(dir.path().join("a.yaml"), SPEC).unwrap();
        std::fs::write(dir.path().join("b.yaml"), SPEC).unwrap();
        let err = load_registry(&RealSyscalls, &[dir.path().to_path_buf()]).unwrap_err();
        assert!(
            err.to_string().contains("b.yaml") && err.to_string().contains("also defined"),
            "{err}"
        );
        std::fs::write(dir.path().join("b.yaml"), SPEC.replace("/dev/null", "/etc/hostname")).unwrap();
        std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
        let err = load_registry(&RealSyscalls, &[dir.path().to_path_buf()]).unwrap_err();
        assert!(err.to_string().contains("not a device node"), "{err}");
    }
}
