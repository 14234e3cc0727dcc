//! What the tests of `specwright-runc` share: a bundle's config.json read
//! and edited as JSON, the seccomp profile engines write, and the fields
//! of `/proc/self/status` a container prints.

#![allow(dead_code)] // each test binary uses its own part

pub mod scene;

use std::path::Path;

use serde_json::Value;

/// The config.json at `path`, parsed.
pub fn read_spec(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Changes the config.json at `path` with `edit`, written back indented.
pub fn edit_spec(path: &Path, edit: impl FnOnce(&mut Value)) {
    let mut spec = read_spec(path);
    edit(&mut spec);
    std::fs::write(path, serde_json::to_string_pretty(&spec).unwrap()).unwrap();
}

/// BuildKit's default seccomp profile, as engines write one (what the
/// default policy makes).
pub fn engine_seccomp() -> Value {
    let request = specwright_core::Request::from_json(r#"{"id": "x", "args": ["sh"]}"#).unwrap();
    let facts = specwright_core::HostFacts::example();
    let spec = specwright_core::buildkit::generate_without_mounts(&request, &facts).unwrap();
    serde_json::to_value(spec.linux.unwrap().seccomp.unwrap()).unwrap()
}

/// The value of `field` in `/proc/self/status` output.
pub fn status_field<'a>(output: &'a str, field: &str) -> &'a str {
    output
        .lines()
        .find_map(|l| l.split_once(&format!("{field}:")).map(|(_, v)| v.trim()))
        .unwrap_or_else(|| panic!("no {field} in:\n{output}"))
}

/// A capability mask field of `/proc/self/status` output (`CapEff`).
pub fn capability_mask(output: &str, field: &str) -> u64 {
    u64::from_str_radix(status_field(output, field), 16).unwrap()
}

/// Makes the spec join the namespace of type `kind` at `path`.
pub fn namespace_path(spec: &mut Value, kind: &str, path: &str) {
    let namespaces = spec["linux"]["namespaces"].as_array_mut().unwrap();
    namespaces.retain(|n| n["type"] != kind);
    namespaces.push(serde_json::json!({"type": kind, "path": path}));
}
