//! What a policy returns is untrusted: the host's parsing and validation
//! (JSON, the runtime-spec schema, oci-spec's typed model) never panic and
//! never accept what the typed model rejects. And whatever the policies'
//! spec model parses (it is what the next policy in a chain receives), its
//! hand-written `to_json` writes exactly as serde_json does.

#![no_main]

use libfuzzer_sys::fuzz_target;
use specwright_host_core::validate::{validate_json, SpecValidationError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = serde_json::from_str::<specwright_core::Spec>(text) {
        let by_serde = serde_json::to_string(&spec).expect("a parsed spec serializes");
        assert_eq!(spec.to_json(), by_serde, "to_json differs from serde_json for {text}");
    }
    match validate_json(text) {
        Ok(value) => {
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
