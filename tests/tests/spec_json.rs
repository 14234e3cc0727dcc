//! `Spec::to_json` writes JSON by hand for speed; it must give exactly the
//! bytes serde_json gives from the derived `Serialize`, for any spec a
//! policy can build or receive.

use std::borrow::Cow;

use proptest::prelude::*;
use serde_json::{Map, Value};
use specwright_core::seccomp::StaticRule;
use specwright_core::spec::{
    Capabilities, Cpu, Device, DeviceCgroup, Hook, Hooks, IdMapping, Linux, Memory, Mount, Name, Names, Namespace,
    Process, Resources, Rlimit, Root, Seccomp, SeccompArg, Spec, StaticNames, Syscall, User,
};

/// Every rule of both releases' profiles.
fn all_rules() -> Vec<&'static StaticRule> {
    specwright_core::seccomp::V0_8
        .rules
        .iter()
        .chain(specwright_core::seccomp::V0_32.rules)
        .collect()
}
use specwright_tests::{all_oracle_cases_dirs, oracle_case_names, shared_dir};

fn assert_same_as_serde(spec: &Spec) -> Result<(), TestCaseError> {
    let by_serde = serde_json::to_string(spec).unwrap();
    let by_hand = spec.to_json();
    prop_assert_eq!(by_hand, by_serde);
    Ok(())
}

/// Strings that exercise escaping: every special character, at offsets on
/// both sides of an eight-byte word, next to multi-byte characters.
fn text() -> BoxedStrategy<String> {
    prop_oneof![
        Just(String::new()),
        "[a-z/_=.-]{1,24}",
        any::<String>(),
        (
            0usize..17,
            prop_oneof![
                Just('"'),
                Just('\\'),
                Just('\n'),
                Just('\u{1}'),
                Just('\u{1f}'),
                Just('\u{7f}'),
                Just('é'),
                Just('𝄞')
            ]
        )
            .prop_map(|(at, c)| format!("{}{c}{}", "x".repeat(at), "y".repeat(16 - at))),
    ]
    .boxed()
}

fn name() -> BoxedStrategy<Name> {
    prop_oneof![
        text().prop_map(Name::from),
        prop_oneof![Just("CAP_CHOWN"), Just("/proc"), Just("")].prop_map(Name::Borrowed),
    ]
    .boxed()
}

fn few<T: std::fmt::Debug>(s: impl Strategy<Value = T>) -> impl Strategy<Value = Vec<T>> {
    proptest::collection::vec(s, 0..4)
}

/// A list of names: arbitrary, or one of the default spec's lists (whose
/// JSON is made at compile time) held whole, a part of one copied, or a
/// copy with one item changed or not.
fn names() -> BoxedStrategy<Names> {
    let statics: Vec<&'static StaticNames> = specwright_core::static_lists::lists().collect();
    prop_oneof![
        few(name()).prop_map(Names::Owned),
        prop::sample::select(statics.clone()).prop_map(Names::Static),
        (prop::sample::select(statics.clone()), any::<prop::sample::Index>())
            .prop_map(|(list, end)| Names::Owned(list.names[..end.index(list.names.len())].to_vec())),
        (
            prop::sample::select(statics),
            any::<prop::sample::Index>(),
            proptest::option::of(name())
        )
            .prop_map(|(list, at, change)| {
                let mut names: Vec<Name> = list.names.to_vec();
                if let Some(change) = change {
                    let i = at.index(names.len());
                    names[i] = change;
                }
                Names::Owned(names)
            }),
    ]
    .boxed()
}

fn extra() -> impl Strategy<Value = Map<String, Value>> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    let value = leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            few(inner.clone()).prop_map(Value::Array),
            few((text(), inner)).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    });
    few((text(), value)).prop_map(|kv| kv.into_iter().collect())
}

fn process() -> impl Strategy<Value = Process> {
    let caps = (names(), names(), names(), names(), names()).prop_map(
        |(bounding, effective, inheritable, permitted, ambient)| Capabilities {
            bounding,
            effective,
            inheritable,
            permitted,
            ambient,
        },
    );
    let user =
        (any::<u32>(), any::<u32>(), few(any::<u32>()), extra()).prop_map(|(uid, gid, additional_gids, extra)| User {
            uid,
            gid,
            additional_gids,
            extra: extra.into(),
        });
    let rlimit = (name(), any::<u64>(), any::<u64>()).prop_map(|(kind, hard, soft)| Rlimit { kind, hard, soft });
    (
        (any::<bool>(), user, few(text()), few(text()), name()),
        (
            proptest::option::of(caps),
            few(rlimit),
            any::<bool>(),
            text(),
            text(),
            extra(),
        ),
    )
        .prop_map(
            |(
                (terminal, user, args, env, cwd),
                (capabilities, rlimits, no_new_privileges, apparmor_profile, selinux_label, extra),
            )| {
                Process {
                    terminal,
                    user,
                    args,
                    env,
                    cwd,
                    capabilities,
                    rlimits,
                    no_new_privileges,
                    apparmor_profile,
                    selinux_label,
                    extra: extra.into(),
                }
            },
        )
}

fn seccomp() -> impl Strategy<Value = Seccomp> {
    let arg = (
        any::<u32>(),
        any::<u64>(),
        prop_oneof![Just(0u64), Just(1), any::<u64>()],
        name(),
    )
        .prop_map(|(index, value, value_two, op)| SeccompArg {
            index,
            value,
            value_two,
            op,
        });
    // Name lists built by a policy, or borrowed (whole or in part) from the
    // static tables, whose JSON is spliced in from build time.
    let rules = all_rules();
    let count = rules.len();
    let names = prop_oneof![
        few(name()).prop_map(Names::Owned),
        (0..count).prop_map({
            let rules = rules.clone();
            move |rule| Names::Static(rules[rule].names)
        }),
        (0..count, any::<prop::sample::Index>(), any::<prop::sample::Index>()).prop_map({
            let rules = rules.clone();
            move |(rule, a, b)| {
                let names = rules[rule].names.names;
                let (a, b) = (a.index(names.len() + 1), b.index(names.len() + 1));
                Names::Owned(names[a.min(b)..a.max(b)].to_vec())
            }
        }),
    ];
    let built = (names, name(), proptest::option::of(any::<u32>()), few(arg), extra()).prop_map(
        |(names, action, errno_ret, args, extra)| Syscall {
            names,
            action,
            errno_ret,
            args: Cow::Owned(args),
            extra: extra.into(),
        },
    );
    // A rule of the profile as the default policy makes it (JSON made at
    // build time), unchanged or with one field replaced.
    let from_table = (0..count, 0..6usize, name()).prop_map(move |(rule, edit, action)| {
        let mut syscall = rules[rule].to_syscall();
        match edit {
            0 => syscall.action = action,
            1 => syscall.args = Cow::Owned(Vec::new()),
            2 => syscall.names = Names::Owned(syscall.names.to_vec()),
            3 => {
                syscall.extra.insert("flags".to_string(), 1.into());
            }
            4 => syscall.errno_ret = Some(5),
            _ => {}
        }
        syscall
    });
    let syscall = prop_oneof![built, from_table];
    let architectures = prop_oneof![
        few(name()).prop_map(Names::Owned),
        prop::sample::select(
            specwright_core::seccomp::V0_8
                .arches
                .iter()
                .chain(specwright_core::seccomp::V0_32.arches)
                .map(|a| a.architectures)
                .collect::<Vec<_>>()
        )
        .prop_map(Names::Static),
    ];
    (
        name(),
        proptest::option::of(any::<u32>()),
        architectures,
        few(syscall),
        extra(),
    )
        .prop_map(
            |(default_action, default_errno_ret, architectures, syscalls, extra)| Seccomp {
                default_action,
                default_errno_ret,
                architectures,
                syscalls,
                extra: extra.into(),
            },
        )
}

fn linux() -> impl Strategy<Value = Linux> {
    let mapping = (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(container_id, host_id, size)| IdMapping {
        container_id,
        host_id,
        size,
    });
    let device_cgroup = (
        any::<bool>(),
        name(),
        proptest::option::of(any::<i64>()),
        proptest::option::of(any::<i64>()),
        name(),
        extra(),
    )
        .prop_map(|(allow, kind, major, minor, access, extra)| DeviceCgroup {
            allow,
            kind,
            major,
            minor,
            access,
            extra: extra.into(),
        });
    let namespace = prop_oneof![
        (name(), name()).prop_map(|(kind, path)| Namespace { kind, path }),
        // The default spec's, borrowed: JSON made at compile time.
        (0..5usize, proptest::option::of(name())).prop_map(|(at, path)| {
            let mut namespace =
                specwright_core::opts::default_unix_spec(specwright_core::buildkit::Release::V0_32, "n", "i")
                    .linux
                    .unwrap()
                    .namespaces[at]
                    .clone();
            if let Some(path) = path {
                namespace.path = path;
            }
            namespace
        }),
    ];
    let device = (
        name(),
        name(),
        any::<i64>(),
        any::<i64>(),
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u32>()),
        extra(),
    )
        .prop_map(|(path, kind, major, minor, file_mode, uid, extra)| Device {
            path,
            kind,
            major,
            minor,
            file_mode,
            uid,
            gid: uid,
            extra: extra.into(),
        });
    (
        (
            few(mapping.clone()),
            few(mapping),
            proptest::option::of((
                few(device_cgroup),
                proptest::option::of(any::<i64>()),
                proptest::option::of((any::<u64>(), any::<i64>(), text())),
                extra(),
            )),
            text(),
        ),
        (few(namespace), few(device), proptest::option::of(seccomp())),
        (names(), names(), text(), extra()),
    )
        .prop_map(
            |(
                (uid_mappings, gid_mappings, devices_cgroup, cgroups_path),
                (namespaces, devices, seccomp),
                (masked_paths, readonly_paths, mount_label, extra),
            )| Linux {
                uid_mappings,
                gid_mappings,
                resources: devices_cgroup.map(|(devices, memory, cpu, extra)| Resources {
                    devices,
                    memory: memory.map(|limit| Memory {
                        limit: Some(limit),
                        swap: (limit % 2 == 0).then_some(limit),
                        ..Memory::default()
                    }),
                    cpu: cpu.map(|(shares, quota, cpus)| Cpu {
                        shares: Some(shares),
                        quota: Some(quota),
                        period: None,
                        cpus,
                        ..Cpu::default()
                    }),
                    extra: extra.into(),
                }),
                cgroups_path,
                namespaces,
                devices,
                seccomp,
                masked_paths,
                readonly_paths,
                mount_label,
                extra: extra.into(),
            },
        )
}

fn spec() -> impl Strategy<Value = Spec> {
    let built =
        (name(), name(), name(), names(), extra()).prop_map(|(destination, kind, source, options, extra)| Mount {
            destination,
            kind,
            source,
            options,
            extra: extra.into(),
        });
    // A mount of the default spec (JSON made at compile time), unchanged or
    // with one field replaced.
    let statics: Vec<&'static Mount> = specwright_core::static_lists::mounts().collect();
    let from_table =
        (prop::sample::select(statics), 0..6usize, name(), names()).prop_map(|(mount, edit, name, names)| {
            let mut mount = mount.clone();
            match edit {
                0 => mount.destination = name,
                1 => mount.kind = name,
                2 => mount.source = name,
                3 => mount.options = names,
                4 => {
                    mount.extra.insert("uidMappings".to_string(), serde_json::json!([]));
                }
                _ => {}
            }
            mount
        });
    let mount = prop_oneof![built, from_table];
    let root = (name(), any::<bool>()).prop_map(|(path, readonly)| Root { path, readonly });
    (
        name(),
        proptest::option::of(process()),
        proptest::option::of(root),
        name(),
        few(mount),
        proptest::option::of(few((text(), few(text()), proptest::option::of(any::<i64>()), extra()))),
        proptest::option::of(linux()),
        extra(),
    )
        .prop_map(
            |(oci_version, process, root, hostname, mounts, hooks, linux, extra)| Spec {
                oci_version,
                process,
                root,
                hostname,
                mounts,
                hooks: hooks.map(|list| {
                    let hooks: Vec<Hook> = list
                        .into_iter()
                        .map(|(path, args, timeout, extra)| Hook {
                            path,
                            args: args.clone(),
                            env: args,
                            timeout,
                            extra: extra.into(),
                        })
                        .collect();
                    Hooks {
                        prestart: hooks.clone(),
                        create_container: hooks,
                        ..Hooks::default()
                    }
                }),
                linux,
                extra: extra.into(),
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_spec_is_written_as_serde_json_writes_it(spec in spec()) {
        assert_same_as_serde(&spec)?;
    }
}

/// Every spec BuildKit wrote for the oracle, and every runtime-spec test
/// config the model parses, written back.
#[test]
fn real_specs_are_written_as_serde_json_writes_them() {
    let mut checked = 0;
    for cases in all_oracle_cases_dirs() {
        for name in oracle_case_names(&cases).unwrap() {
            let expected: Value =
                serde_json::from_str(&std::fs::read_to_string(cases.join(format!("{name}.expected.json"))).unwrap())
                    .unwrap();
            if expected["spec"].is_null() {
                continue; // a case BuildKit refused
            }
            let spec: Spec = serde_json::from_value(expected["spec"].clone()).unwrap();
            assert_same_as_serde(&spec).unwrap();
            checked += 1;
        }
    }
    let configs = shared_dir().join("runtime-spec-v1.2.1");
    for entry in walk(&configs) {
        if entry.extension().is_some_and(|e| e == "json") {
            let Ok(spec) = serde_json::from_str::<Spec>(&std::fs::read_to_string(&entry).unwrap()) else {
                continue;
            };
            assert_same_as_serde(&spec).unwrap();
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} specs found under ../shared");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
