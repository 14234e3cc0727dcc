use super::*;

fn minimal() -> serde_json::Value {
    serde_json::json!({"id": "s1", "args": ["/bin/true"], "mounts": []})
}

#[test]
fn unknown_field_is_named() {
    let mut v = minimal();
    v["bogus"] = serde_json::json!(1);
    let err = Request::from_json(&v.to_string()).unwrap_err().to_string();
    assert!(err.contains("bogus"), "{err}");
}

#[test]
fn unknown_nested_field_names_its_path() {
    let mut v = minimal();
    v["mounts"] = serde_json::json!([{"dest": "/a", "source": "/x", "colour": "red"}]);
    let err = Request::from_json(&v.to_string()).unwrap_err().to_string();
    assert!(err.contains("mounts[0]") && err.contains("colour"), "{err}");
}

#[test]
fn defaults_apply() {
    let r = Request::from_json(&minimal().to_string()).unwrap();
    assert_eq!(r.namespace, "buildkit");
    assert_eq!(r.security_mode, SecurityMode::Sandbox);
    assert_eq!(r.network, Network::None);
    assert!(!r.readonly_rootfs);
}

#[test]
fn mount_without_source_fails() {
    let mut v = minimal();
    v["mounts"] = serde_json::json!([{"dest": "/nosrc"}]);
    let err = Request::from_json(&v.to_string()).unwrap_err().to_string();
    assert!(err.contains("mount /nosrc has no source"), "{err}");
}

#[test]
fn bad_id_and_user_are_named() {
    let mut v = minimal();
    v["id"] = serde_json::json!("../etc");
    let err = Request::from_json(&v.to_string()).unwrap_err().to_string();
    assert!(err.contains("`id`"), "{err}");
    let mut v = minimal();
    v["user"] = serde_json::json!("root");
    let err = Request::from_json(&v.to_string()).unwrap_err().to_string();
    assert!(err.contains("`user`"), "{err}");
}

#[test]
fn user_forms() {
    assert_eq!(parse_user("1000:1001").unwrap(), (1000, 1001));
    assert_eq!(parse_user("7").unwrap(), (7, 0));
    assert!(parse_user("1000:").is_err());
    assert!(parse_user("-1").is_err());
}

#[test]
fn network_modes_parse() {
    for (json, want) in [
        (r#"{"mode":"none"}"#, Network::None),
        (r#"{"mode":"host"}"#, Network::Host),
        (
            r#"{"mode":"path","path":"/run/netns/x"}"#,
            Network::Path {
                path: "/run/netns/x".into(),
            },
        ),
    ] {
        assert_eq!(serde_json::from_str::<Network>(json).unwrap(), want);
    }
    assert!(serde_json::from_str::<Network>(r#"{"mode":"bridge"}"#).is_err());
}

#[test]
fn source_materializes_as_rbind() {
    let m = MountRequest {
        dest: "/a".into(),
        source: Some("/src".into()),
        mountable: None,
        readonly: true,
        selector: String::new(),
    };
    let got = m.materialize().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].kind, "bind");
    assert_eq!(got[0].options, vec!["rbind", "ro"]);
}
/// Regression: the parser accepted what the schema rejects: trailing
/// data after the object (the path-tracking second parse never checked
/// for it) and arrays read as structs, at any depth.
#[test]
fn only_one_object_and_objects_only() {
    for (text, needle) in [
        (r#"{"id":"b1"} garbage"#, "trailing"),
        (r#"{"id":"b1"}{"id":"b2"}"#, "trailing"),
        (r#"["b1"]"#, "request object"),
        (r#"{"id":"b1","network":["path","/x"]}"#, "network"),
        (r#"{"id":"b1","idmap":[[],[]]}"#, "idmap"),
        (r#"{"id":"b1","mounts":[["/a","/src"]]}"#, "mounts[0]"),
        (
            r#"{"id":"b1","mounts":[{"dest":"/a","mountable":[["bind","/x",[]]]}]}"#,
            "mountable[0]",
        ),
        (r#"{"id":"b1","idmap":{"uids":[[0,0,1]]}}"#, "uids[0]"),
    ] {
        let err = Request::from_json(text).unwrap_err().to_string();
        assert!(err.contains(needle), "{text}: {err}");
    }
    assert!(
        Request::from_json("  {\"id\":\"b1\"}\n  ").is_ok(),
        "whitespace around the object is fine"
    );
}

#[test]
fn what_the_kernel_cannot_take_is_refused_by_field() {
    let bad = |edit: serde_json::Value, needle: &str| {
        let mut v = minimal();
        for (k, val) in edit.as_object().unwrap() {
            v[k] = val.clone();
        }
        let err = Request::from_json(&v.to_string()).unwrap_err().to_string();
        assert!(err.contains(needle), "{edit}: {err}");
    };
    bad(
        serde_json::json!({"mounts": [{"dest": "/a\0b", "source": "/x"}]}),
        "`mounts[0].dest`: contains a NUL",
    );
    bad(serde_json::json!({"env": ["A=1", "B=\0"]}), "`env[1]`: contains a NUL");
    bad(serde_json::json!({"args": ["/bin/sh", "a\0"]}), "`args[1]`");
    bad(serde_json::json!({"cwd": "/\0"}), "`cwd`");
    bad(serde_json::json!({"resolv_conf": "/etc/r\0"}), "`resolv_conf`");
    bad(
        serde_json::json!({"network": {"mode": "path", "path": "/run/\0"}}),
        "`network.path`",
    );
    bad(
        serde_json::json!({"mounts": [{"dest": "/a", "mountable": [{"type": "tmpfs", "source": "t", "options": ["size=1\0"]}]}]}),
        "`mounts[0].mountable[0].options[0]`",
    );
    bad(
        serde_json::json!({"mounts": [{"dest": "/a", "source": "/x", "selector": "s\0"}]}),
        "`mounts[0].selector`",
    );
    bad(
        serde_json::json!({"mounts": [{"dest": "/a\nb", "source": "/x"}]}),
        "newline",
    );
    for root in ["/", "//", "/.", "/./"] {
        bad(
            serde_json::json!({"mounts": [{"dest": root, "source": "/x"}]}),
            "the container's root",
        );
    }
    for up in ["/..", "/a/../b", "/a/.."] {
        bad(
            serde_json::json!({"mounts": [{"dest": up, "source": "/x"}]}),
            "`..` component",
        );
    }
    bad(
        serde_json::json!({"mounts": [{"dest": "/a", "mountable": []}]}),
        "`mounts[0].mountable`: must not be empty",
    );
    // A newline inside an env value stays legal, as in Docker.
    let mut v = minimal();
    v["env"] = serde_json::json!(["MULTI=line one\nline two"]);
    v["mounts"] = serde_json::json!([{"dest": "/a/..b/.c", "source": "/x"}]);
    assert!(Request::from_json(&v.to_string()).is_ok());
}

#[test]
fn an_oversized_request_is_refused_as_such() {
    let big = format!(r#"{{"id":"b1","cwd":"{}"}}"#, "x".repeat(MAX_REQUEST_BYTES));
    let err = Request::from_json(&big).unwrap_err().to_string();
    assert!(err.contains("more than the") && err.contains("bytes"), "{err}");
}

#[test]
fn bad_v0_32_fields_are_refused_naming_the_field() {
    let bad = |edit: serde_json::Value, needle: &str| {
        let mut v = minimal();
        for (k, val) in edit.as_object().unwrap() {
            v[k] = val.clone();
        }
        let err = Request::from_json(&v.to_string()).unwrap_err().to_string();
        assert!(err.contains(needle), "{edit}: {err}");
    };
    bad(
        serde_json::json!({"cgroup_parent": ""}),
        "`cgroup_parent`: must not be empty",
    );
    bad(
        serde_json::json!({"cgroup_parent": "a\0b"}),
        "`cgroup_parent`: contains a NUL",
    );
    bad(
        serde_json::json!({"ulimits": [{"name": "nofile", "soft": 1, "hard": 1}, {"name": "files", "soft": 1, "hard": 1}]}),
        "`ulimits[1].name`: \"files\" is not a resource limit",
    );
    bad(
        serde_json::json!({"ulimits": [{"name": "nofile", "soft": -1, "hard": 1}]}),
        "`ulimits[0].soft`: -1 is negative",
    );
    bad(
        serde_json::json!({"ulimits": [{"name": "nofile", "soft": 1, "hard": -2}]}),
        "`ulimits[0].hard`: -2 is negative",
    );
    bad(
        serde_json::json!({"ulimits": [{"name": "nofile", "soft": 9, "hard": 8}]}),
        "`ulimits[0].soft`: 9 is above the hard limit 8",
    );
    bad(
        serde_json::json!({"resources": {"memory": -1}}),
        "`resources.memory`: -1 is negative",
    );
    bad(
        serde_json::json!({"resources": {"memory_swap": -3}}),
        "`resources.memory_swap`: -3 is negative",
    );
    bad(
        serde_json::json!({"resources": {"cpu_quota": -1}}),
        "`resources.cpu_quota`: -1 is negative",
    );
    for list in ["0-", "a", "3-1", ",", "0,,1"] {
        bad(
            serde_json::json!({"resources": {"cpuset_cpus": list}}),
            "`resources.cpuset_cpus`",
        );
    }
    bad(
        serde_json::json!({"resources": {"cpuset_mems": "x"}}),
        "`resources.cpuset_mems`",
    );
    bad(
        serde_json::json!({"tracing_socket": "run/otel.sock"}),
        "`tracing_socket`: \"run/otel.sock\" is not an absolute path",
    );
    bad(
        serde_json::json!({"tracing_socket": "/run/\0"}),
        "`tracing_socket`: contains a NUL",
    );
    bad(
        serde_json::json!({"apparmor_profile": "a\0"}),
        "`apparmor_profile`: contains a NUL",
    );
    for (name, why) in [
        ("", "is empty"),
        ("vendor.com/class=-x", "has an invalid device name"),
        ("-vendor/class=x", "has an invalid vendor"),
        ("vendor.com/cl.ass=x", "has an invalid class"),
        ("vendor.com/=x", "has an invalid class"),
        ("a=b", "has no vendor"),
        ("gpu!", "is not a device class"),
    ] {
        bad(
            serde_json::json!({"cdi_devices": [{"name": "vendor.com/gpu=0"}, {"name": name}]}),
            &format!("`cdi_devices[1].name`: {name:?} {why}"),
        );
    }
    // What BuildKit accepts.
    let mut v = minimal();
    v["cgroup_parent"] = serde_json::json!("system.slice:");
    v["ulimits"] = serde_json::json!([{"name": "NOFILE", "soft": 0, "hard": 0}]);
    v["resources"] = serde_json::json!({"cpuset_cpus": "0-3,5", "cpuset_mems": "0"});
    v["tracing_socket"] = serde_json::json!("/run/otel.sock");
    v["cdi_devices"] = serde_json::json!([
        {"name": "vendor.com/gpu=all"}, {"name": "vendor.com/gpu=*"}, {"name": "vendor.com/gpu"},
        {"name": "gpu", "optional": true}, {"name": "v.com/c=a:b.c_d-e"}
    ]);
    let request = Request::from_json(&v.to_string()).unwrap();
    assert_eq!(request.ulimits[0].name, "NOFILE");
    assert_eq!(request.cdi_devices.len(), 5);
    assert!(request.cdi_devices[3].optional);
}
