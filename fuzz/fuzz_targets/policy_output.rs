//! What a policy returns is untrusted: the host's parsing and validation
//! (JSON, the runtime-spec schema, oci-spec's typed model) never panic and
//! never accept what the typed model rejects.

#![no_main]

use libfuzzer_sys::fuzz_target;
use specwright_host_core::validate::{validate_json, SpecValidationError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
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
