//! The published request schema and the parser agree.

use serde_json::Value;
use specwright_core::Request;
use specwright_tests::{all_oracle_cases_dirs, oracle_case_names};

fn schema() -> jsonschema::Validator {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema/request-v1.schema.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

#[test]
fn every_oracle_request_parses_and_agrees_with_the_schema() {
    let validator = schema();
    let mut checked = 0;
    for cases in all_oracle_cases_dirs() {
        for name in oracle_case_names(&cases).unwrap() {
            // `<TRACESOCK>` stands for an absolute path the test run makes.
            let text = std::fs::read_to_string(cases.join(format!("{name}.request.json")))
                .unwrap()
                .replace("<TRACESOCK>", "/run/otel-grpc.sock");
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
            checked += 1;
        }
    }
    assert!(checked >= 31 + 48, "only {checked} requests");
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
        serde_json::json!({"id": "s", "cgroup_parent": ""}),
        serde_json::json!({"id": "s", "ulimits": [{"name": "nofiles", "soft": 1, "hard": 1}]}),
        serde_json::json!({"id": "s", "ulimits": [{"name": "nofile", "soft": -1, "hard": 1}]}),
        serde_json::json!({"id": "s", "ulimits": [{"name": "nofile", "soft": 1}]}),
        serde_json::json!({"id": "s", "resources": {"memory": -1}}),
        serde_json::json!({"id": "s", "resources": {"cpu_quota": -5}}),
        serde_json::json!({"id": "s", "resources": {"cpuset_cpus": "0-"}}),
        serde_json::json!({"id": "s", "resources": {"swap": 1}}),
        serde_json::json!({"id": "s", "tracing_socket": "run/otel.sock"}),
        serde_json::json!({"id": "s", "selinux": "yes"}),
        serde_json::json!({"id": "s", "cdi_devices": [{"name": "vendor.com/class=-bad"}]}),
        serde_json::json!({"id": "s", "cdi_devices": [{"name": "/class=x"}]}),
        serde_json::json!({"id": "s", "cdi_devices": [{"name": ""}]}),
        serde_json::json!({"id": "s", "cdi_devices": [{"name": "a.com/b", "required": true}]}),
    ] {
        assert!(!validator.is_valid(&bad), "schema accepts {bad}");
        assert!(Request::from_json(&bad.to_string()).is_err(), "parser accepts {bad}");
    }
    // What both accept: a newline in an env value, a dotted name that is not `..`.
    let good = serde_json::json!({"id": "s", "env": ["A=x\ny"], "mounts": [{"dest": "/a/..b", "source": "/x"}]});
    assert!(validator.is_valid(&good));
    assert!(Request::from_json(&good.to_string()).is_ok());
    // Every new v0.32 field at once, in the forms BuildKit takes.
    let good = serde_json::json!({
        "id": "s",
        "cgroup_parent": "machine.slice:",
        "ulimits": [{"name": "NOFILE", "soft": 1024, "hard": 2048}, {"name": "nproc", "soft": 0, "hard": 0}],
        "resources": {"memory": 1 << 30, "memory_swap": 2_i64 << 30, "cpu_shares": 512, "cpu_period": 100000,
                      "cpu_quota": 50000, "cpuset_cpus": "0-1,3", "cpuset_mems": "0"},
        "tracing_socket": "/run/buildkit/otel-grpc.sock",
        "apparmor_profile": "docker-default",
        "selinux": true,
        "cdi_devices": [{"name": "vendor.com/gpu=0"}, {"name": "vendor.com/gpu=*"}, {"name": "vendor.com/gpu"},
                        {"name": "gpu", "optional": true}]
    });
    assert!(validator.is_valid(&good), "{:?}", validator.validate(&good).err());
    assert!(
        Request::from_json(&good.to_string()).is_ok(),
        "{:?}",
        Request::from_json(&good.to_string()).err()
    );
}
