use super::*;

#[test]
fn the_embedded_schema_loads_and_every_pattern_compiles() {
    let schema = Schema::load(crate::validate::SCHEMA_FILES, "config-schema.json").unwrap();
    assert!(schema.compile_all_patterns().unwrap() >= 6);
}

#[test]
fn numbers_compare_exactly_across_representations() {
    let n = |text: &str| -> serde_json::Number { serde_json::from_str(text).unwrap() };
    assert_eq!(
        compare(&n("18446744073709551615"), &n("1.8446744073709552e19")),
        Ordering::Less
    );
    assert_eq!(compare(&n("1.5"), &n("1")), Ordering::Greater);
    assert_eq!(compare(&n("-1"), &n("-0.5")), Ordering::Less);
    assert_eq!(compare(&n("2"), &n("2.0")), Ordering::Equal);
    assert_eq!(compare(&n("-9223372036854775808"), &n("-1e300")), Ordering::Greater);
    assert!(!is_whole(&n("1.0")));
    assert!(!is_whole(&n("4294967295.0")));
    assert!(is_whole(&n("1e19")));
    assert!(is_whole(&n("-1e300")));
}

#[test]
fn a_schema_this_checker_cannot_honour_is_refused() {
    let load = |text: &'static str| Schema::load(&[("s.json", text)], "s.json").err().unwrap_or_default();
    assert!(load(r#"{"type": "object", "oneOf": []}"#).contains("\"oneOf\" is not implemented"));
    assert!(load(r#"{"properties": {"a": {"$ref": "other.json#/x"}}}"#).contains("does not resolve"));
    assert!(load(r#"{"type": "integral"}"#).contains("unknown type"));
    let bad_pattern = Schema::load(&[("s.json", r#"{"pattern": "("}"#)], "s.json").unwrap();
    assert!(bad_pattern.compile_all_patterns().is_err());
    assert!(
        !bad_pattern.errors(&serde_json::json!("x")).is_empty(),
        "a broken pattern fails, never passes"
    );
}

/// The embedded schema taken lazily reads as the checked one, and parses
/// only the files a spec's references reach: a Linux spec does not make
/// it parse the Windows, Solaris, VM or z/OS files.
#[test]
fn the_embedded_schema_parses_only_what_a_spec_reaches_and_reads_as_the_checked_one() {
    let checked = Schema::load(crate::validate::SCHEMA_FILES, "config-schema.json").unwrap();
    let lazy = Schema::embedded(crate::validate::SCHEMA_FILES, "config-schema.json").unwrap();
    let parsed = |schema: &Schema| {
        let mut names: Vec<&str> = schema
            .files
            .iter()
            .filter(|(_, file)| file.parsed.get().is_some())
            .map(|(name, _)| *name)
            .collect();
        names.sort();
        names
    };
    assert!(parsed(&lazy).is_empty());
    let linux = serde_json::json!({
        "ociVersion": "1.2.1",
        "root": {"path": "rootfs"},
        "process": {"cwd": "/", "args": ["sh"], "user": {"uid": 0, "gid": 0}},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {"namespaces": [{"type": "pid"}], "sysctl": {"net.ipv4.ip_forward": "1"}},
        "annotations": {"a": "b"},
    });
    let broken = serde_json::json!({
        "ociVersion": 1,
        "linux": {"namespaces": [{"type": "nope"}], "resources": {"memory": {"limit": "x"}}},
    });
    for spec in [&linux, &broken] {
        assert_eq!(lazy.errors(spec), checked.errors(spec), "{spec}");
        assert_eq!(
            lazy.undefined_fields(spec).len(),
            checked.undefined_fields(spec).len(),
            "{spec}"
        );
    }
    assert!(lazy.errors(&linux).is_empty());
    assert!(!lazy.errors(&broken).is_empty());
    let reached = parsed(&lazy);
    for other in [
        "config-windows.json",
        "config-solaris.json",
        "config-vm.json",
        "config-zos.json",
    ] {
        assert!(
            !reached.contains(&other),
            "{other} parsed for a Linux spec: {reached:?}"
        );
    }
    assert!(
        reached.contains(&"config-linux.json") && reached.contains(&"defs.json"),
        "{reached:?}"
    );
}
