//! Checking a policy's output: JSON, then the OCI runtime-spec schema
//! (v1.2.1, embedded from `host/core/schema/`).

use std::sync::OnceLock;

use serde_json::Value;

use crate::schema::Schema;

/// The schema files `config-schema.json` refers to, by file name.
pub const SCHEMA_FILES: &[(&str, &str)] = &[
    ("config-schema.json", include_str!("../schema/config-schema.json")),
    ("config-linux.json", include_str!("../schema/config-linux.json")),
    ("config-solaris.json", include_str!("../schema/config-solaris.json")),
    ("config-vm.json", include_str!("../schema/config-vm.json")),
    ("config-windows.json", include_str!("../schema/config-windows.json")),
    ("config-zos.json", include_str!("../schema/config-zos.json")),
    ("defs.json", include_str!("../schema/defs.json")),
    ("defs-linux.json", include_str!("../schema/defs-linux.json")),
    ("defs-vm.json", include_str!("../schema/defs-vm.json")),
    ("defs-windows.json", include_str!("../schema/defs-windows.json")),
    ("defs-zos.json", include_str!("../schema/defs-zos.json")),
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecValidationError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("does not match the OCI runtime-spec v1.2.1 schema: {}", .0.join("; "))]
    Schema(Vec<String>),
    #[error("does not parse as an OCI runtime spec (oci-spec): {0}")]
    OciSpec(String),
    #[error("the embedded runtime-spec schema does not load: {0}")]
    BadSchema(String),
}

fn validator() -> Result<&'static Schema, SpecValidationError> {
    static VALIDATOR: OnceLock<Result<Schema, String>> = OnceLock::new();
    VALIDATOR
        .get_or_init(|| Schema::load(SCHEMA_FILES, "config-schema.json"))
        .as_ref()
        .map_err(|e| SpecValidationError::BadSchema(e.clone()))
}

/// Loads the schema on another thread, so that a short-lived process (the
/// CLI) has it ready when its policy returns. Without a thread, validation
/// loads it when first needed.
pub fn prepare_in_background() {
    let _ = std::thread::Builder::new().name("schema".to_string()).spawn(|| {
        let _ = validator();
    });
}

/// Checks a parsed spec against the runtime-spec schema; every violation
/// is listed with where it is.
pub fn validate_value(spec: &Value) -> Result<(), SpecValidationError> {
    let errors = validator()?.errors(spec);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(SpecValidationError::Schema(errors))
    }
}

/// Validates a parsed spec: the schema ([`validate_value`]), then the
/// `oci-spec` crate's typed model (which catches what the schema leaves
/// open, such as unknown capability names), read from the parsed value
/// rather than by parsing the text again.
pub fn validate_spec(spec: &Value) -> Result<(), SpecValidationError> {
    validate_value(spec)?;
    <oci_spec::runtime::Spec as serde::Deserialize>::deserialize(spec)
        .map_err(|e| SpecValidationError::OciSpec(e.to_string()))?;
    Ok(())
}

/// config.json's text for a spec the host changed after the policies ran:
/// the whole spec checked once more ([`validate_spec`]), then written in
/// runtime-spec field order and indented, as `runc spec` and BuildKit
/// write it.
pub fn config_json(spec: &specwright_core::spec::Spec) -> Result<String, SpecValidationError> {
    let value = serde_json::to_value(spec).map_err(|e| SpecValidationError::NotJson(e.to_string()))?;
    validate_spec(&value)?;
    pretty(&value)
}

/// A spec's text as config.json holds it (indented, ending in a newline).
pub fn pretty(spec: &impl serde::Serialize) -> Result<String, SpecValidationError> {
    let mut text = serde_json::to_string_pretty(spec).map_err(|e| SpecValidationError::NotJson(e.to_string()))?;
    text.push('\n');
    Ok(text)
}

/// Parses (once) and validates a policy's output.
pub fn validate_json(spec: &str) -> Result<Value, SpecValidationError> {
    let value: Value = serde_json::from_str(spec).map_err(|e| SpecValidationError::NotJson(e.to_string()))?;
    validate_spec(&value)?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_schema_matches_shared_copy() {
        let shared = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/runtime-spec-v1.2.1");
        assert!(
            shared.exists(),
            "{} is missing: CI puts ../shared beside the clone",
            shared.display()
        );
        for (name, text) in SCHEMA_FILES {
            let theirs = std::fs::read_to_string(shared.join(name)).unwrap();
            assert_eq!(*text, theirs, "{name} differs from ../shared");
        }
    }

    #[test]
    fn good_and_bad_configs_from_the_spec_repo() {
        let tests =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/runtime-spec-v1.2.1/test/config");
        assert!(
            tests.exists(),
            "{} is missing: CI puts ../shared beside the clone",
            tests.display()
        );
        let mut checked = 0;
        for entry in walk(&tests) {
            let expect_good = entry.parent().unwrap().ends_with("good");
            let text = std::fs::read_to_string(&entry).unwrap();
            assert_eq!(validate_json(&text).is_ok(), expect_good, "{}", entry.display());
            checked += 1;
        }
        assert!(checked >= 7, "only {checked} configs checked");
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else if p.extension().is_some_and(|x| x == "json") {
                out.push(p);
            }
        }
        out
    }

    #[test]
    fn a_wrong_type_is_reported_with_its_place() {
        let err = validate_value(&serde_json::json!({"ociVersion": "1.0.2", "hostname": 7})).unwrap_err();
        assert!(err.to_string().contains("/hostname"), "{err}");
    }

    /// Regression: a spec edited after the policies ran (by `run`) was
    /// checked against the schema only, which takes any CAP_ name.
    #[test]
    fn a_parsed_spec_is_checked_against_the_typed_model_too() {
        let spec = |cap: &str| {
            serde_json::json!({
                "ociVersion": "1.0.2",
                "root": {"path": "rootfs"},
                "process": {"cwd": "/", "user": {"uid": 0, "gid": 0}, "capabilities": {"bounding": [cap]}},
            })
        };
        validate_spec(&spec("CAP_CHOWN")).unwrap();
        validate_value(&spec("CAP_BOGUS")).unwrap();
        let err = validate_spec(&spec("CAP_BOGUS")).unwrap_err();
        assert!(matches!(err, SpecValidationError::OciSpec(_)), "{err}");
    }
}
