//! What a policy returns is untrusted: the host's parsing and validation
//! (JSON, the runtime-spec schema, oci-spec's typed model) never panic and
//! never accept what the typed model rejects. And whatever the policies'
//! spec model parses (it is what the next policy in a chain receives), its
//! hand-written `to_json` writes exactly as serde_json does; and the host's
//! own schema checker gives the `jsonschema` crate's verdict on any JSON.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use specwright_host_core::validate::{validate_json, validate_value, SpecValidationError, SCHEMA_FILES};

/// `jsonschema`'s validator over the same embedded schema files.
fn reference() -> &'static jsonschema::Validator {
    static REFERENCE: OnceLock<jsonschema::Validator> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let base = "file:///runtime-spec/";
        let parse = |text: &str| -> Value { serde_json::from_str(text).expect("embedded schema parses") };
        let mut root = parse(SCHEMA_FILES[0].1);
        root["id"] = Value::String(format!("{base}{}", SCHEMA_FILES[0].0));
        let resources = SCHEMA_FILES[1..].iter().map(|(name, text)| {
            (
                format!("{base}{name}"),
                jsonschema::Draft::Draft4.create_resource(parse(text)),
            )
        });
        let registry = jsonschema::Registry::new()
            .draft(jsonschema::Draft::Draft4)
            .extend(resources)
            .and_then(|b| b.prepare())
            .expect("the reference registry builds");
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft4)
            .with_registry(&registry)
            .build(&root)
            .expect("the reference validator builds")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(value) = serde_json::from_str::<Value>(text) {
        let ours = validate_value(&value);
        assert_eq!(ours.is_ok(), reference().is_valid(&value), "{ours:?} for {text}");
    }
    if let Ok(spec) = serde_json::from_str::<specwright_core::Spec>(text) {
        let by_serde = serde_json::to_string(&spec).expect("a parsed spec serializes");
        assert_eq!(spec.to_json(), by_serde, "to_json differs from serde_json for {text}");
    }
    match validate_json(text) {
        Ok((value, _)) => {
            // What was accepted round-trips and passes again: validation
            // does not depend on how the policy formatted its output.
            let again = serde_json::to_string(&value).expect("a parsed value serializes");
            assert!(
                validate_json(&again).is_ok(),
                "accepted once, rejected after a round trip: {text}"
            );
            assert!(value.is_object(), "accepted a spec that is not an object: {text}");
        }
        Err(SpecValidationError::BadSchema(e)) => panic!("the embedded schema does not load: {e}"),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
