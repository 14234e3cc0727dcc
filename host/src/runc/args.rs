//! The command line `specwright-runc` is given: runc's (and crun's), with
//! specwright's own global flags mixed in. Parsing takes ours out and
//! leaves every other argument, in order and unchanged, for the real
//! runtime; it reads only what the wrapper needs (the subcommand, and for
//! `create` and `run` the container id and bundle, the log file).
//!
//! Like runc (urfave/cli), a flag may be written with one dash or two and
//! a value after `=` or as the next argument; global flags come before
//! the subcommand, a subcommand's flags before its positional arguments.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// specwright's own global flags (none reaches the real runtime).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct OwnFlags {
    /// `--policy FILE[:SETTINGS.json]`, in the order given.
    pub policies: Vec<String>,
    /// `--real-runtime PATH|runc|crun`.
    pub real_runtime: Option<String>,
    /// `--state-dir DIR`.
    pub state_dir: Option<PathBuf>,
    /// `--policy-timeout-ms MS`.
    pub policy_timeout_ms: Option<u64>,
    /// `--policy-memory-mib MIB`.
    pub policy_memory_mib: Option<usize>,
}

/// How the runtime is asked to log (`--log`, `--log-format`): where an
/// engine such as containerd looks for the reason a `create` failed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LogTarget {
    pub file: Option<PathBuf>,
    pub json: bool,
}

/// A container the engine asks to be made (`create` or `run`).
#[derive(Debug, PartialEq, Eq)]
pub struct Creation {
    /// The container id (the subcommand's first positional argument).
    pub id: String,
    /// `--bundle`/`-b`; `None` means the working directory.
    pub bundle: Option<PathBuf>,
    /// crun's `--config`/`-f` (a spec file other than config.json).
    pub config: Option<PathBuf>,
}

/// A parsed command line.
#[derive(Debug, PartialEq, Eq)]
pub struct Invocation {
    pub own: OwnFlags,
    /// Every argument that is not ours, in order: the real runtime's
    /// command line (without the program name).
    pub passthrough: Vec<OsString>,
    pub log: LogTarget,
    /// The subcommand, if there is one (`--version` alone has none).
    pub subcommand: Option<String>,
    /// For `create` and `run`: what to review. `None` for the others, and
    /// for a `create` without an id (the real runtime reports that).
    pub creation: Option<Creation>,
}

/// A command line that cannot be parsed: it names the flag.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    #[error("flag --{0} needs a value")]
    MissingValue(String),
    #[error("flag --{flag}: {value:?} is not {expected}")]
    BadValue {
        flag: String,
        value: String,
        expected: &'static str,
    },
}

/// Global flags of runc and crun that take a value.
const RUNTIME_GLOBAL_VALUE_FLAGS: &[&str] = &[
    "root",
    "log",
    "log-format",
    "log-level",
    "criu",
    "rootless",
    "cgroup-manager",
];

/// Flags of `create` and `run` (runc's and crun's) that take a value; the
/// others (`--no-pivot`, `--keep`, `-d`, ...) take none.
const CREATE_VALUE_FLAGS: &[&str] = &[
    "bundle",
    "b",
    "console-socket",
    "pid-file",
    "preserve-fds",
    "pidfd-socket",
    "config",
    "f",
];

/// A flag argument split into its name (without dashes) and the value
/// given after `=`, if any; `None` for an argument that is no flag.
fn flag(arg: &OsStr) -> Option<(&str, Option<&OsStr>)> {
    let bytes = arg.as_bytes();
    let rest = bytes.strip_prefix(b"--").or_else(|| bytes.strip_prefix(b"-"))?;
    if rest.is_empty() || rest.starts_with(b"-") {
        return None;
    }
    let (name, value) = match rest.iter().position(|&b| b == b'=') {
        Some(at) => (&rest[..at], Some(OsStr::from_bytes(&rest[at + 1..]))),
        None => (rest, None),
    };
    Some((std::str::from_utf8(name).ok()?, value))
}

fn text(flag: &str, value: &OsStr) -> Result<String, ArgsError> {
    value.to_str().map(str::to_string).ok_or_else(|| ArgsError::BadValue {
        flag: flag.to_string(),
        value: value.to_string_lossy().into_owned(),
        expected: "UTF-8",
    })
}

fn number<T: std::str::FromStr>(flag: &str, value: &OsStr) -> Result<T, ArgsError> {
    let given = text(flag, value)?;
    given.parse().map_err(|_| ArgsError::BadValue {
        flag: flag.to_string(),
        value: given,
        expected: "a number",
    })
}

/// Parses `args` (without the program name).
pub fn parse(args: &[OsString]) -> Result<Invocation, ArgsError> {
    let mut own = OwnFlags::default();
    let mut passthrough = Vec::with_capacity(args.len());
    let mut log = LogTarget::default();
    let mut i = 0;
    // Global flags, up to the subcommand.
    let subcommand_at = loop {
        let Some(arg) = args.get(i) else {
            break None;
        };
        let Some((name, inline)) = flag(arg) else {
            break Some(i);
        };
        let own_flag = matches!(
            name,
            "policy" | "real-runtime" | "state-dir" | "policy-timeout-ms" | "policy-memory-mib"
        );
        let takes_value = own_flag || RUNTIME_GLOBAL_VALUE_FLAGS.contains(&name);
        let value = match (takes_value, inline) {
            (false, _) => None,
            (true, Some(v)) => Some(v.to_os_string()),
            (true, None) => {
                i += 1;
                Some(
                    args.get(i)
                        .ok_or_else(|| ArgsError::MissingValue(name.to_string()))?
                        .clone(),
                )
            }
        };
        match (name, value) {
            ("policy", Some(v)) => own.policies.push(text(name, &v)?),
            ("real-runtime", Some(v)) => own.real_runtime = Some(text(name, &v)?),
            ("state-dir", Some(v)) => own.state_dir = Some(PathBuf::from(v)),
            ("policy-timeout-ms", Some(v)) => own.policy_timeout_ms = Some(number(name, &v)?),
            ("policy-memory-mib", Some(v)) => own.policy_memory_mib = Some(number(name, &v)?),
            (_, value) => {
                if name == "log" {
                    log.file = value.as_ref().map(PathBuf::from);
                }
                if name == "log-format" {
                    log.json = value.as_deref() == Some(OsStr::new("json"));
                }
                // Kept as the engine wrote it: one argument or two.
                passthrough.push(arg.clone());
                if inline.is_none() {
                    passthrough.extend(value);
                }
            }
        }
        i += 1;
    };
    let Some(at) = subcommand_at else {
        return Ok(Invocation {
            own,
            passthrough,
            log,
            subcommand: None,
            creation: None,
        });
    };
    passthrough.extend_from_slice(&args[at..]);
    let subcommand = args[at].to_string_lossy().into_owned();
    let creation = if subcommand == "create" || subcommand == "run" {
        creation(&args[at + 1..])?
    } else {
        None
    };
    Ok(Invocation {
        own,
        passthrough,
        log,
        subcommand: Some(subcommand),
        creation,
    })
}

/// The id, bundle and spec file of a `create` or `run`.
fn creation(args: &[OsString]) -> Result<Option<Creation>, ArgsError> {
    let mut bundle = None;
    let mut config = None;
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        if arg == "--" {
            i += 1;
            break;
        }
        let Some((name, inline)) = flag(arg) else {
            break;
        };
        if CREATE_VALUE_FLAGS.contains(&name) {
            let value = match inline {
                Some(v) => v.to_os_string(),
                None => {
                    i += 1;
                    args.get(i)
                        .ok_or_else(|| ArgsError::MissingValue(name.to_string()))?
                        .clone()
                }
            };
            match name {
                "bundle" | "b" => bundle = Some(PathBuf::from(value)),
                "config" | "f" => config = Some(PathBuf::from(value)),
                _ => {}
            }
        }
        i += 1;
    }
    let Some(id) = args.get(i) else {
        return Ok(None);
    };
    Ok(Some(Creation {
        id: text("<container-id>", id)?,
        bundle,
        config,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<OsString> {
        line.split_whitespace().map(OsString::from).collect()
    }

    fn passthrough(inv: &Invocation) -> String {
        inv.passthrough
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn containerds_create_keeps_every_runtime_argument_in_order() {
        let line = "--root /run/containerd/runc/default --log /run/c/log.json --log-format json --systemd-cgroup \
                    create --bundle /run/c/b --pid-file /run/c/init.pid --console-socket /tmp/s ctr1";
        let inv = parse(&args(line)).unwrap();
        assert_eq!(passthrough(&inv), line.split_whitespace().collect::<Vec<_>>().join(" "));
        assert_eq!(inv.own, OwnFlags::default());
        assert_eq!(inv.subcommand.as_deref(), Some("create"));
        assert_eq!(
            inv.log,
            LogTarget {
                file: Some("/run/c/log.json".into()),
                json: true
            }
        );
        assert_eq!(
            inv.creation,
            Some(Creation {
                id: "ctr1".into(),
                bundle: Some("/run/c/b".into()),
                config: None
            })
        );
    }

    #[test]
    fn our_flags_are_taken_out_in_both_forms() {
        let inv = parse(&args(
            "--policy=/p/hardened.wasm --root /r --policy /p/allow.wasm:/p/allow.json --real-runtime=crun \
             --state-dir /s --policy-timeout-ms 50 --policy-memory-mib=128 run -b=/b --keep -d id9",
        ))
        .unwrap();
        assert_eq!(inv.own.policies, ["/p/hardened.wasm", "/p/allow.wasm:/p/allow.json"]);
        assert_eq!(inv.own.real_runtime.as_deref(), Some("crun"));
        assert_eq!(inv.own.state_dir, Some(PathBuf::from("/s")));
        assert_eq!(inv.own.policy_timeout_ms, Some(50));
        assert_eq!(inv.own.policy_memory_mib, Some(128));
        assert_eq!(passthrough(&inv), "--root /r run -b=/b --keep -d id9");
        let creation = inv.creation.unwrap();
        assert_eq!((creation.id.as_str(), creation.bundle), ("id9", Some("/b".into())));
    }

    #[test]
    fn other_subcommands_are_only_passed_through() {
        for line in [
            "--root /r exec -d --process /tmp/p.json c1",
            "state c1",
            "kill c1 KILL",
            "delete --force c1",
            "features",
            "--debug ps c1",
            "update --memory 10 c1",
        ] {
            let inv = parse(&args(line)).unwrap();
            assert_eq!(passthrough(&inv), line, "{line}");
            assert_eq!(inv.creation, None, "{line}");
        }
        let inv = parse(&args("--version")).unwrap();
        assert_eq!(
            (inv.subcommand, passthrough(&parse(&args("--version")).unwrap())),
            (None, "--version".into())
        );
    }

    #[test]
    fn a_create_without_bundle_or_id_is_left_to_the_real_runtime() {
        let inv = parse(&args("create c2")).unwrap();
        assert_eq!(inv.creation.unwrap().bundle, None);
        assert_eq!(parse(&args("create --bundle /b")).unwrap().creation, None);
    }

    #[test]
    fn a_missing_or_bad_value_names_the_flag() {
        assert_eq!(
            parse(&args("--policy")).unwrap_err(),
            ArgsError::MissingValue("policy".into())
        );
        assert_eq!(
            parse(&args("create --bundle")).unwrap_err(),
            ArgsError::MissingValue("bundle".into())
        );
        let err = parse(&args("--policy-timeout-ms soon create c"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--policy-timeout-ms") && err.contains("soon"), "{err}");
    }
}
