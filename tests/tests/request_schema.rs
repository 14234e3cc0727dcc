//! The published request schema and the parser agree.

use serde_json::Value;
use specwright_core::Request;
use specwright_tests::{oracle_case_names, oracle_cases_dir};

fn schema() -> jsonschema::Validator {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema/request-v1.schema.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

#[test]
fn every_oracle_request_parses_and_agrees_with_the_schema() {
    let validator = schema();
    let cases = oracle_cases_dir();
    let names = oracle_case_names(&cases).unwrap();
    assert!(names.len() >= 31);
    for name in names {
        let text = std::fs::read_to_string(cases.join(format!("{name}.request.json"))).unwrap();
        let value: Value = serde_json::from_str(&text).unwrap();
        let parsed = Request::from_json(&text);
        let schema_ok = validator.is_valid(&value);
        match &parsed {
            Ok(_) => assert!(schema_ok, "{name}: parses but the schema rejects it"),
            // The one request that is invalid on purpose: a mount with no source.
            Err(e) => {
                assert!(e.to_string().contains("has no source"), "{name}: {e}");
                assert!(!schema_ok, "{name}: the schema accepts a request the parser rejects");
            }
        }
    }
}

#[test]
fn schema_and_parser_both_reject_what_is_wrong() {
    let validator = schema();
    for bad in [
        serde_json::json!({"id": "s", "bogus": 1}),
        serde_json::json!({"id": "s", "user": "root"}),
        serde_json::json!({"id": "s", "network": {"mode": "bridge"}}),
        serde_json::json!({"id": "s", "mounts": [{"dest": "/a", "source": "/x", "mountable": []}]}),
        serde_json::json!({"id": "../x"}),
        serde_json::json!({"args": []}),
        serde_json::json!({"id": "s", "mounts": [{"dest": "/", "source": "/x"}]}),
        serde_json::json!({"id": "s", "mounts": [{"dest": "/./", "source": "/x"}]}),
        serde_json::json!({"id": "s", "mounts": [{"dest": "/a/../b", "source": "/x"}]}),
        serde_json::json!({"id": "s", "mounts": [{"dest": "/a\nb", "source": "/x"}]}),
        serde_json::json!({"id": "s", "mounts": [{"dest": "/a\u{0}b", "source": "/x"}]}),
        serde_json::json!({"id": "s", "mounts": [{"dest": "/a", "mountable": []}]}),
        serde_json::json!({"id": "s", "env": ["A=\u{0}"]}),
        serde_json::json!({"id": "s", "cwd": "/\u{0}"}),
        serde_json::json!({"id": "s", "mounts": [{"dest": "/a", "source": "/x", "selector": "a\u{0}"}]}),
        serde_json::json!(["s"]),
    ] {
        assert!(!validator.is_valid(&bad), "schema accepts {bad}");
        assert!(Request::from_json(&bad.to_string()).is_err(), "parser accepts {bad}");
    }
    // What both accept: a newline in an env value, a dotted name that is not `..`.
    let good = serde_json::json!({"id": "s", "env": ["A=x\ny"], "mounts": [{"dest": "/a/..b", "source": "/x"}]});
    assert!(validator.is_valid(&good));
    assert!(Request::from_json(&good.to_string()).is_ok());
}
