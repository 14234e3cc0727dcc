//! The host checks policy output against the runtime-spec schema with its
//! own small interpreter (`specwright_host_core::schema`); its verdict must be
//! the `jsonschema` crate's on every spec: the spec repo's good and bad
//! configs, BuildKit's specs, and those specs broken at random.

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Value};
use specwright_host_core::validate::validate_value;
use specwright_tests::{all_oracle_cases_dirs, oracle_case_names, shared_dir, shared_schema_validator};

fn oracle_specs() -> Vec<Value> {
    let mut specs = Vec::new();
    for cases in all_oracle_cases_dirs() {
        for name in oracle_case_names(&cases).unwrap() {
            let expected: Value =
                serde_json::from_str(&std::fs::read_to_string(cases.join(format!("{name}.expected.json"))).unwrap())
                    .unwrap();
            if !expected["spec"].is_null() {
                specs.push(expected["spec"].clone());
            }
        }
    }
    specs
}

fn config_files() -> Vec<(std::path::PathBuf, Value)> {
    let mut out = Vec::new();
    let mut dirs = vec![shared_dir().join("runtime-spec-v1.2.1/test")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                if let Ok(value) = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()) {
                    out.push((path, value));
                }
            }
        }
    }
    out
}

#[test]
fn real_specs_get_the_reference_verdict() {
    let reference = shared_schema_validator();
    let mut checked = 0;
    for spec in oracle_specs() {
        assert!(reference.is_valid(&spec));
        assert_eq!(validate_value(&spec), Ok(()));
        checked += 1;
    }
    for (path, value) in config_files() {
        let ours = validate_value(&value);
        assert_eq!(ours.is_ok(), reference.is_valid(&value), "{}: {ours:?}", path.display());
        checked += 1;
    }
    assert!(checked > 30, "only {checked} specs");
}

#[test]
fn each_violation_names_its_place() {
    let mut spec = oracle_specs().remove(0);
    spec["process"]["user"]["uid"] = json!(-1);
    spec["linux"]["namespaces"][0]["type"] = json!("nonsense");
    spec["process"]["rlimits"] = json!([{"type": "nofile", "hard": 1, "soft": 1}]);
    let err = validate_value(&spec).unwrap_err().to_string();
    for place in ["/process/user/uid", "/linux/namespaces/0", "/process/rlimits/0/type"] {
        assert!(err.contains(place), "{place} missing from: {err}");
    }
    let mut spec = oracle_specs().remove(0);
    spec.as_object_mut().unwrap().remove("ociVersion");
    let err = validate_value(&spec).unwrap_err().to_string();
    assert!(err.contains("\"ociVersion\" is a required property"), "{err}");
}

/// Every place in `value`, as JSON pointers (the root is "").
fn places(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                places(v, format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                places(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

/// Values chosen to sit on both sides of the schema's rules: its patterns,
/// enums, bounds and types.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop_oneof![
            Just(0i64),
            Just(-1),
            Just(1),
            Just(i64::MAX),
            Just(4294967296),
            any::<i64>()
        ]
        .prop_map(Value::from),
        Just(json!(u64::MAX)),
        prop_oneof![Just(1.0f64), Just(0.5), Just(-0.0), Just(1e300)].prop_map(Value::from),
        prop_oneof![
            Just("c"),
            Just("b"),
            Just("x"),
            Just(""),
            Just("RLIMIT_NOFILE"),
            Just("rlimit_x"),
            Just("1GB"),
            Just("0GB"),
            Just("MB:1"),
            Just("MB:\n"),
            Just("0-3, 5"),
            Just("a-b"),
            Just("pid"),
            Just("user"),
            Just("SCMP_ACT_ALLOW"),
            Just("SCMP_ARCH_X86"),
            Just("SCMP_CMP_EQ"),
            Just("bind"),
            Just("/path"),
            Just("1.0.2"),
            Just("é\u{1}")
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            proptest::collection::vec((key(), inner), 0..3).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Keys the schema names (so that an insertion meets a rule) and others.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("type"),
        Just("path"),
        Just("hard"),
        Just("soft"),
        Just("uid"),
        Just("gid"),
        Just("names"),
        Just("action"),
        Just("args"),
        Just("index"),
        Just("op"),
        Just("value"),
        Just("major"),
        Just("minor"),
        Just("allow"),
        Just("access"),
        Just("destination"),
        Just("options"),
        Just("source"),
        Just("hooks"),
        Just("annotations"),
        Just("sysctl"),
        Just("windows"),
        Just("solaris"),
        Just("vm"),
        Just("zos"),
        Just("hugepageLimits"),
        Just("intelRdt"),
        Just("rdma"),
        Just("memory"),
        Just("unknown")
    ]
    .prop_map(str::to_string)
}

#[derive(Debug, Clone)]
enum Edit {
    Replace(Index, Value),
    Remove(Index),
    Insert(Index, String, Value),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<Index>(), value()).prop_map(|(at, v)| Edit::Replace(at, v)),
        any::<Index>().prop_map(Edit::Remove),
        (any::<Index>(), key(), value()).prop_map(|(at, k, v)| Edit::Insert(at, k, v)),
    ]
}

fn apply(spec: &mut Value, edit: &Edit) {
    let mut all = Vec::new();
    places(spec, String::new(), &mut all);
    match edit {
        Edit::Replace(at, v) => {
            if let Some(slot) = spec.pointer_mut(&all[at.index(all.len())]) {
                *slot = v.clone();
            }
        }
        Edit::Remove(at) => {
            let place = &all[at.index(all.len())];
            if let Some((parent, last)) = place.rsplit_once('/') {
                match spec.pointer_mut(parent) {
                    Some(Value::Object(map)) => {
                        map.remove(&last.replace("~1", "/").replace("~0", "~"));
                    }
                    Some(Value::Array(items)) => {
                        if let Ok(i) = last.parse::<usize>() {
                            if i < items.len() {
                                items.remove(i);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        Edit::Insert(at, key, v) => {
            let objects: Vec<&String> = all
                .iter()
                .filter(|p| spec.pointer(p).is_some_and(Value::is_object))
                .collect();
            // An earlier edit may have replaced every object (the root too).
            if objects.is_empty() {
                return;
            }
            let place = objects[at.index(objects.len())].clone();
            if let Some(Value::Object(map)) = spec.pointer_mut(&place) {
                map.insert(key.clone(), v.clone());
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn broken_specs_get_the_reference_verdict(
        base in any::<Index>(),
        edits in proptest::collection::vec(edit(), 1..4),
    ) {
        thread_local! {
            static REFERENCE: jsonschema::Validator = shared_schema_validator();
            static SPECS: Vec<Value> = oracle_specs();
        }
        let mut spec = SPECS.with(|s| s[base.index(s.len())].clone());
        for e in &edits {
            apply(&mut spec, e);
        }
        let expected = REFERENCE.with(|r| r.is_valid(&spec));
        let ours = validate_value(&spec);
        prop_assert_eq!(ours.is_ok(), expected, "{:?}\n{}", ours, spec);
    }
}
