//! Checking a policy's output: JSON, then the OCI runtime-spec schema
//! (v1.2.1, embedded from `host/core/schema/`).

use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::Value;
use specwright_core::spec::Spec;

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
    #[error("does not match the OCI runtime-spec v1.2.1 schema: {0}")]
    Schema(Problems),
    /// What runtimes would read otherwise than the policies did: a field
    /// runtime-spec does not define (or defines in another case), a
    /// namespace type given twice, a capability name that is not one.
    #[error("is not read the same way by every runtime: {0}")]
    Ambiguous(Problems),
    /// The schema holds but the typed model does not take it.
    #[error("does not fit the spec model: {0}")]
    Model(String),
    #[error("the embedded runtime-spec schema does not load: {0}")]
    BadSchema(String),
}

/// Problems found in a spec, every one kept, the first few shown: a
/// message stays short enough for an engine to show whole (conmon and
/// containerd cut long ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<String>);

impl Problems {
    /// How many a message shows.
    pub const SHOWN: usize = 5;
}

impl std::fmt::Display for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, problem) in self.0.iter().take(Self::SHOWN).enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            // One problem stays short too (a value in it may be long).
            match problem.char_indices().nth(MAX_PROBLEM_CHARS) {
                Some((cut, _)) => write!(f, "{}...", &problem[..cut])?,
                None => f.write_str(problem)?,
            }
        }
        if self.0.len() > Self::SHOWN {
            write!(f, "; and {} more", self.0.len() - Self::SHOWN)?;
        }
        Ok(())
    }
}

/// The most of one problem a message shows.
const MAX_PROBLEM_CHARS: usize = 160;

fn validator() -> Result<&'static Schema, SpecValidationError> {
    static VALIDATOR: OnceLock<Result<Schema, String>> = OnceLock::new();
    VALIDATOR
        .get_or_init(|| Schema::embedded(SCHEMA_FILES, "config-schema.json"))
        .as_ref()
        .map_err(|e| SpecValidationError::BadSchema(e.clone()))
}

/// Checks a parsed spec against the runtime-spec schema; every violation
/// is listed with where it is.
pub fn validate_value(spec: &Value) -> Result<(), SpecValidationError> {
    let errors = validator()?.errors(spec);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(SpecValidationError::Schema(Problems(errors)))
    }
}

/// Checks that every runtime reads `spec` as the policies do
/// ([`SpecValidationError::Ambiguous`]): each key a field runtime-spec
/// defines there, spelled as it does (runc's Go decoder would also take
/// `Process` or `proceſs` for `process`, and a later one over an earlier);
/// no namespace type twice (runc and crun would join different ones); and
/// every capability one of Linux's names as runc spells them (crun would
/// also grant `cap_net_raw`, which runc ignores).
pub fn check_unambiguous(spec: &Value) -> Result<(), SpecValidationError> {
    let mut problems: Vec<String> = validator()?
        .undefined_fields(spec)
        .into_iter()
        .map(|field| match field.folds_onto {
            Some(known) => format!(
                "`{}` is not runtime-spec's `{known}` but runc would read it as that field",
                field.place
            ),
            None => format!("`{}` is not a runtime-spec v1.2.1 field", field.place),
        })
        .collect();
    let namespaces = spec.pointer("/linux/namespaces").and_then(Value::as_array);
    let mut seen: Vec<&str> = Vec::new();
    for (i, namespace) in namespaces.into_iter().flatten().enumerate() {
        if let Some(kind) = namespace.get("type").and_then(Value::as_str) {
            if seen.contains(&kind) {
                problems.push(format!(
                    "`linux.namespaces[{i}]` is a second {kind:?} namespace (runc and crun would not join the same one)"
                ));
            }
            seen.push(kind);
        }
    }
    let sets = spec.pointer("/process/capabilities").and_then(Value::as_object);
    for (set, names) in sets.into_iter().flatten() {
        for (i, name) in names.as_array().into_iter().flatten().enumerate() {
            let known = name
                .as_str()
                .is_some_and(|name| specwright_core::facts::CAPABILITY_NAMES.contains(&name));
            if !known {
                problems.push(format!(
                    "`process.capabilities.{set}[{i}]`: {name} is not a capability name (upper case, as Linux names them)"
                ));
            }
        }
    }
    // runc refuses ids past 2^31 - 1; crun hands 4294967295 to
    // setresuid, which reads it as "unchanged": root stays root.
    let user = spec.pointer("/process/user");
    let ids = ["uid", "gid"]
        .into_iter()
        .filter_map(|field| {
            user.and_then(|u| u.get(field))
                .map(|v| (format!("process.user.{field}"), v))
        })
        .chain(
            user.and_then(|u| u.get("additionalGids"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
                .map(|(i, v)| (format!("process.user.additionalGids[{i}]"), v)),
        );
    for (place, id) in ids {
        if id.as_u64().is_some_and(|id| id > MAX_ID) {
            problems.push(format!(
                "`{place}`: {id} is past {MAX_ID} (runc refuses it; crun runs the process as root)"
            ));
        }
    }
    // The schema takes any integer; the kernel takes -1000..=1000, and crun
    // casts to a 32-bit int first (4294966296 would be -1000: unkillable).
    if let Some(adj) = spec.pointer("/process/oomScoreAdj") {
        if !adj.as_i64().is_some_and(|adj| (-1000..=1000).contains(&adj)) {
            problems.push(format!(
                "`process.oomScoreAdj`: {adj} is outside the kernel's -1000..=1000 (crun would cast it to another value)"
            ));
        }
    }
    // Both runtimes refuse a resource limit Linux does not have.
    let rlimits = spec.pointer("/process/rlimits").and_then(Value::as_array);
    for (i, rlimit) in rlimits.into_iter().flatten().enumerate() {
        let kind = rlimit.get("type").and_then(Value::as_str).unwrap_or_default();
        // The schema holds the spelling to `RLIMIT_[A-Z]+`.
        let known = kind
            .strip_prefix("RLIMIT_")
            .is_some_and(|name| specwright_core::request::ULIMIT_NAMES.contains(&name.to_ascii_lowercase().as_str()));
        if !known {
            problems.push(format!(
                "`process.rlimits[{i}].type`: {kind:?} is not a Linux resource limit"
            ));
        }
    }
    // Annotations the runtimes act on: crun loads `run.oci.seccomp.plugins`
    // into its own process on the host, takes `run.oci.seccomp_bpf_data`
    // for the seccomp filter, ...; CRIU reads `org.criu.config`.
    let annotations = spec.get("annotations").and_then(Value::as_object);
    for key in annotations.into_iter().flatten().map(|(k, _)| k) {
        if RUNTIME_ANNOTATION_PREFIXES.iter().any(|p| key.starts_with(p)) {
            problems.push(format!(
                "`annotations.{key}`: the runtime acts on it outside the spec the policies review"
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(SpecValidationError::Ambiguous(Problems(problems)))
    }
}

/// The largest user or group id both runtimes take as one.
const MAX_ID: u64 = (1 << 31) - 1;

/// Prefixes of the annotations runtimes act on themselves: crun's
/// (`run.oci.*`) and CRIU's (`org.criu.*`, read by runc and crun).
pub const RUNTIME_ANNOTATION_PREFIXES: &[&str] = &["run.oci.", "org.criu."];

/// Validates a parsed spec: the schema ([`validate_value`]), that every
/// runtime reads it alike ([`check_unambiguous`]), then read into the typed
/// model the host keeps (from the parsed value, not the text again).
pub fn validate_spec(spec: &Value) -> Result<Spec, SpecValidationError> {
    validate_value(spec)?;
    check_unambiguous(spec)?;
    Spec::deserialize(spec).map_err(|e| SpecValidationError::Model(e.to_string()))
}

/// config.json's text for a spec the host changed after the policies ran:
/// the whole spec checked once more ([`validate_spec`]), then written in
/// runtime-spec field order and indented, as `runc spec` and BuildKit
/// write it.
pub fn config_json(spec: &Spec) -> Result<String, SpecValidationError> {
    let value = serde_json::to_value(spec).map_err(|e| SpecValidationError::NotJson(e.to_string()))?;
    validate_value(&value)?;
    check_unambiguous(&value)?;
    pretty(&value)
}

/// A spec's text as config.json holds it (indented, ending in a newline).
pub fn pretty(spec: &impl serde::Serialize) -> Result<String, SpecValidationError> {
    let mut text = serde_json::to_string_pretty(spec).map_err(|e| SpecValidationError::NotJson(e.to_string()))?;
    text.push('\n');
    Ok(text)
}

/// What engines write that runc and crun accept but runtime-spec's schema
/// does not, made what the schema takes and the runtimes read the same
/// way: a device's `fileMode` with its file-type bits (podman writes
/// `0o20666`, over the schema's maximum of 512), which both runtimes OR
/// with the device's type anyway, keeps its permission bits.
pub fn normalize_engine_spec(spec: &mut Value) {
    const FILE_TYPE_BITS: u64 = 0o170000;
    let devices = spec.pointer_mut("/linux/devices").and_then(Value::as_array_mut);
    for device in devices.into_iter().flatten() {
        if let Some(mode) = device.get("fileMode").and_then(Value::as_u64) {
            if mode & !0o7777 != 0 && mode & !(0o7777 | FILE_TYPE_BITS) == 0 {
                device["fileMode"] = Value::from(mode & 0o7777);
            }
        }
    }
}

/// [`validate_json`] for the spec an engine wrote, first made what the
/// schema takes where runtimes read it alike ([`normalize_engine_spec`]).
pub fn validate_engine_json(spec: &str) -> Result<Spec, SpecValidationError> {
    let mut value = crate::strict_json::parse(spec).map_err(|e| SpecValidationError::NotJson(e.to_string()))?;
    normalize_engine_spec(&mut value);
    validate_spec(&value)
}

/// Parses (once, refusing what JSON parsers read differently: a key given
/// twice, a NUL in a string; see [`crate::strict_json`]) and validates a
/// spec's text: a policy's output or an engine's config.json.
/// The parsed value and the typed spec.
pub fn validate_json(spec: &str) -> Result<(Value, Spec), SpecValidationError> {
    let value = crate::strict_json::parse(spec).map_err(|e| SpecValidationError::NotJson(e.to_string()))?;
    let typed = validate_spec(&value)?;
    Ok((value, typed))
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
            let verdict = validate_json(&text);
            // The example carries `linux.resources.oomScoreAdj`, a field
            // runtime-spec dropped before 1.0 (no runtime reads it): a
            // field v1.2.1 does not define is refused, this one too.
            if entry.ends_with("good/spec-example.json") {
                let err = verdict.unwrap_err().to_string();
                assert!(
                    err.contains("`linux.resources.oomScoreAdj` is not a runtime-spec v1.2.1 field"),
                    "{err}"
                );
                checked += 1;
                continue;
            }
            assert_eq!(verdict.is_ok(), expect_good, "{}: {verdict:?}", entry.display());
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
        assert!(matches!(err, SpecValidationError::Ambiguous(_)), "{err}");
    }

    fn minimal() -> Value {
        serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "process": {"cwd": "/", "user": {"uid": 0, "gid": 0}, "args": ["sh"],
                        "capabilities": {"bounding": ["CAP_CHOWN"]}},
            "linux": {"namespaces": [{"type": "pid"}, {"type": "network"}]},
        })
    }

    fn ambiguity(text: &str) -> String {
        match validate_json(text) {
            Err(e @ (SpecValidationError::Ambiguous(_) | SpecValidationError::NotJson(_))) => e.to_string(),
            other => panic!("{other:?} for {text}"),
        }
    }

    #[test]
    fn a_key_runc_would_fold_onto_a_field_is_refused_at_any_level() {
        let base = minimal().to_string();
        for (hostile, place, field) in [
            (
                r#""Process": {"cwd": "/", "user": {"uid": 0, "gid": 0}}"#,
                "`Process`",
                "`process`",
            ),
            (
                r#""proce\u017fs": {"cwd": "/", "user": {"uid": 0, "gid": 0}}"#,
                "`proceſs`",
                "`process`",
            ),
            (r#""LINUX": {}"#, "`LINUX`", "`linux`"),
            (r#""Mounts": []"#, "`Mounts`", "`mounts`"),
            (r#""Root": {"path": "/"}"#, "`Root`", "`root`"),
        ] {
            let text = format!("{},{hostile}}}", &base[..base.len() - 1]);
            let err = ambiguity(&text);
            assert!(err.contains(place) && err.contains(field), "{err}");
        }
        let mut nested = minimal();
        nested["process"]["Capabilities"] = serde_json::json!({"bounding": ["CAP_SYS_ADMIN"]});
        nested["linux"]["namespaces"][0]["Path"] = serde_json::json!("/proc/1/ns/pid");
        let err = ambiguity(&nested.to_string());
        assert!(
            err.contains("`process.Capabilities`") && err.contains("`capabilities`"),
            "{err}"
        );
        assert!(err.contains("`linux.namespaces[0].Path`"), "{err}");
    }

    #[test]
    fn a_key_given_twice_or_a_nul_is_refused() {
        let base = minimal().to_string();
        let twice = format!(
            r#"{},"process": {{"cwd": "/", "user": {{"uid": 0, "gid": 0}}}}}}"#,
            &base[..base.len() - 1]
        );
        assert!(ambiguity(&twice).contains("given twice"));
        let mut nul = minimal();
        nul["process"]["args"] = serde_json::json!(["/bin/sh\u{0}x"]);
        assert!(ambiguity(&nul.to_string()).contains("NUL"));
    }

    #[test]
    fn fields_runtime_spec_does_not_define_are_refused_free_form_maps_are_not() {
        let mut spec = minimal();
        spec["linux"]["memoryPolicy2"] = serde_json::json!({"mode": "MPOL_BIND"});
        let err = ambiguity(&spec.to_string());
        assert!(
            err.contains("`linux.memoryPolicy2` is not a runtime-spec v1.2.1 field"),
            "{err}"
        );
        let mut spec = minimal();
        spec["annotations"] = serde_json::json!({"Process": "x", "anything.at/all": "y"});
        spec["linux"]["sysctl"] = serde_json::json!({"Net.Core.x": "1"});
        spec["linux"]["resources"] = serde_json::json!({"unified": {"memory.max": "1M"}});
        spec["process"]["oomScoreAdj"] = serde_json::json!(5);
        spec["domainname"] = serde_json::json!("d");
        validate_spec(&spec).unwrap();
    }

    #[test]
    fn a_namespace_type_twice_and_capability_names_that_are_none_are_refused() {
        let mut spec = minimal();
        spec["linux"]["namespaces"] =
            serde_json::json!([{"type": "network"}, {"type": "network", "path": "/proc/1/ns/net"}]);
        let err = ambiguity(&spec.to_string());
        assert!(err.contains("`linux.namespaces[1]` is a second \"network\""), "{err}");
        for name in ["cap_net_raw", "CAP_Net_Raw", "NET_RAW", "CAP_BOGUS"] {
            let mut spec = minimal();
            spec["process"]["capabilities"]["effective"] = serde_json::json!(["CAP_CHOWN", name]);
            let err = ambiguity(&spec.to_string());
            assert!(
                err.contains("`process.capabilities.effective[1]`") && err.contains(name),
                "{err}"
            );
        }
    }

    #[test]
    fn a_message_shows_the_first_problems_and_counts_the_rest() {
        let mut spec = minimal();
        for i in 0..40 {
            spec[format!("extension{i}")] = serde_json::json!(i);
        }
        let err = validate_json(&spec.to_string()).unwrap_err().to_string();
        assert_eq!(err.matches("`extension").count(), Problems::SHOWN, "{err}");
        assert!(err.ends_with("and 35 more"), "{err}");
        assert!(err.len() < 600, "{} bytes: {err}", err.len());
    }

    /// podman writes a device's `fileMode` with its type bits, which the
    /// schema refuses and runc and crun accept.
    #[test]
    fn an_engines_file_mode_with_type_bits_keeps_its_permissions() {
        let mut spec = minimal();
        spec["linux"]["devices"] = serde_json::json!([
            {"path": "/dev/loop0", "type": "b", "major": 7, "minor": 0, "fileMode": 0o60660},
            {"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o20666}
        ]);
        assert!(validate_json(&spec.to_string()).is_err());
        let read = validate_engine_json(&spec.to_string()).unwrap();
        let modes: Vec<_> = read.linux.unwrap().devices.iter().map(|d| d.file_mode).collect();
        assert_eq!(modes, [Some(0o660), Some(0o666)]);
        // Bits that are no file type are not the engine's quirk: refused.
        spec["linux"]["devices"][0]["fileMode"] = serde_json::json!(0o1000000);
        assert!(validate_engine_json(&spec.to_string()).is_err());
    }

    /// Regression: crun ran uid 4294967295 as root, and acted on
    /// annotations no policy sees (a library loaded into crun on the host,
    /// a seccomp filter of the annotation's).
    #[test]
    fn ids_past_2_31_and_annotations_runtimes_act_on_are_refused() {
        let mut spec = minimal();
        spec["process"]["user"] =
            serde_json::json!({"uid": 4294967295u64, "gid": 0, "additionalGids": [5, 2147483648u64]});
        let err = ambiguity(&spec.to_string());
        assert!(err.contains("`process.user.uid`: 4294967295"), "{err}");
        assert!(err.contains("`process.user.additionalGids[1]`"), "{err}");
        for key in [
            "run.oci.seccomp.plugins",
            "run.oci.seccomp_bpf_data",
            "run.oci.keep_original_groups",
            "org.criu.config",
        ] {
            let mut spec = minimal();
            spec["annotations"] = serde_json::json!({key: "x", "io.kubernetes.cri.container-type": "container"});
            let err = ambiguity(&spec.to_string());
            assert!(err.contains(&format!("`annotations.{key}`")), "{err}");
            assert!(!err.contains("io.kubernetes"), "{err}");
        }
    }

    /// Regression (review of the refactor): with the oci-spec model gone, an
    /// `oomScoreAdj` of 4294966296 passed (crun casts it to -1000, an
    /// unkillable process), and so did a resource limit Linux has not.
    #[test]
    fn an_out_of_range_oom_score_or_an_unknown_rlimit_is_refused() {
        for adj in [4294966296i64, -1001, 1001] {
            let mut spec = minimal();
            spec["process"]["oomScoreAdj"] = serde_json::json!(adj);
            let err = ambiguity(&spec.to_string());
            assert!(err.contains("`process.oomScoreAdj`"), "{adj}: {err}");
        }
        for adj in [-1000, 0, 1000] {
            let mut spec = minimal();
            spec["process"]["oomScoreAdj"] = serde_json::json!(adj);
            assert!(validate_json(&spec.to_string()).is_ok(), "{adj}");
        }
        let mut spec = minimal();
        spec["process"]["rlimits"] = serde_json::json!([
            {"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024},
            {"type": "RLIMIT_BOGUS", "hard": 1, "soft": 1}
        ]);
        let err = ambiguity(&spec.to_string());
        assert!(
            err.contains("`process.rlimits[1].type`") && !err.contains("rlimits[0]"),
            "{err}"
        );
    }
}
