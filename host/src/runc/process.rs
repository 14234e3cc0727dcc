//! `exec` and `update` as changes to a container's reviewed spec: the
//! process an `exec` would start, built as runc builds it from its flags
//! (or read whole from `--process FILE`), and the resources an `update`
//! would set, laid over the spec the chain approved for the container.
//! The chain then reviews the result like any spec, and the runtime is
//! handed what it approved, as one document, whatever its own reading of
//! the flags would have been (crun's differs from runc's: it ignores the
//! container's user, cwd and noNewPrivileges, and pastes `update`'s
//! numbers into JSON unchecked).

use anyhow::{bail, Context, Result};
use serde_json::{Map, Value};
#[cfg(test)]
use specwright_core::spec::Names;
use specwright_core::spec::{Capabilities, Name, Spec};

use super::args::{Exec, Update};

/// The container's reviewed spec with the process `exec` asks for: read
/// whole from `process_file`'s text, or built from the flags as runc
/// builds it (the container's process, with the command, `--cwd`,
/// `--user`, `--apparmor`, `--process-label` replacing its own, `--env`
/// and `--additional-gids` added, `--cap` added to every set but the
/// inheritable one, `--tty` and `--no-new-privs` set).
pub fn exec_spec(container: &Spec, exec: &Exec, process_file: Option<&str>) -> Result<Spec> {
    let mut spec = container.clone();
    let base = container.process.clone().unwrap_or_default();
    let process = match process_file {
        Some(text) => {
            let value = crate::strict_json::parse(text).context("not JSON as every runtime reads it")?;
            let mut whole = serde_json::to_value(container).context("encoding the container's spec")?;
            whole["process"] = value;
            let mut process = crate::validate::validate_spec(&whole)?.process.context("no process")?;
            // What runc's libcontainer takes from the container when the
            // document leaves it out; written here so that every runtime
            // runs the same.
            if process.capabilities.is_none() {
                process.capabilities = base.capabilities.clone();
            }
            if process.apparmor_profile.is_empty() {
                process.apparmor_profile = base.apparmor_profile.clone();
            }
            if process.selinux_label.is_empty() {
                process.selinux_label = base.selinux_label.clone();
            }
            process
        }
        None => {
            let mut process = base;
            if exec.args.is_empty() {
                bail!("exec: no command after the container id");
            }
            process.args = exec.args.clone();
            if let Some(cwd) = &exec.cwd {
                if !cwd.starts_with('/') {
                    bail!("exec --cwd {cwd:?}: not an absolute path");
                }
                process.cwd = cwd.clone().into();
            }
            for env in &exec.env {
                if !env.contains('=') {
                    bail!("exec --env {env:?}: not NAME=VALUE");
                }
                process.env.push(env.clone());
            }
            process.terminal = exec.tty;
            if let Some(user) = &exec.user {
                let (uid, gid) = user
                    .split_once(':')
                    .map_or((user.as_str(), None), |(u, g)| (u, Some(g)));
                process.user.uid = id_number("--user", uid)?;
                if let Some(gid) = gid {
                    process.user.gid = id_number("--user", gid)?;
                }
            }
            for gid in &exec.additional_gids {
                process.user.additional_gids.push(id_number("--additional-gids", gid)?);
            }
            if !exec.caps.is_empty() {
                let caps = process.capabilities.get_or_insert_with(Capabilities::default);
                let added: Vec<Name> = exec.caps.iter().map(|c| Name::from(c.clone())).collect();
                for set in [
                    &mut caps.bounding,
                    &mut caps.effective,
                    &mut caps.permitted,
                    &mut caps.ambient,
                ] {
                    set.to_mut().extend(added.iter().cloned());
                }
            }
            if exec.no_new_privs {
                process.no_new_privileges = true;
            }
            if let Some(profile) = exec.apparmor.as_ref().filter(|p| !p.is_empty()) {
                process.apparmor_profile = profile.clone();
            }
            if let Some(label) = exec.process_label.as_ref().filter(|l| !l.is_empty()) {
                process.selinux_label = label.clone();
            }
            process
        }
    };
    spec.process = Some(process);
    Ok(spec)
}

/// A uid or gid as runc reads one on its command line, refused where it
/// would wrap around (runc casts a negative or larger number to 32 bits).
fn id_number(flag: &str, text: &str) -> Result<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        bail!("exec {flag} {text:?}: not a decimal id");
    }
    text.parse()
        .with_context(|| format!("exec {flag} {text:?}: out of range"))
}

/// The resources `update` asks for, as a `linux.resources` object: the
/// `--resources` document (`file`), or the flags, read as runc reads them
/// (memory sizes with units, `-1` for unlimited; a value of 0 changes
/// nothing). Both at once are refused: the runtimes ignore the flags then.
pub fn update_resources(update: &Update, file: Option<&str>) -> Result<Value> {
    if let Some(text) = file {
        if !update.values.is_empty() {
            bail!("update: both --resources and resource flags given (the runtimes would ignore the flags)");
        }
        let value = crate::strict_json::parse(text).context("the resources document")?;
        if !value.is_object() {
            bail!("the resources document: not a JSON object");
        }
        return Ok(value);
    }
    let mut resources = Map::new();
    for (flag, text) in &update.values {
        let (section, field, value) = match flag.as_str() {
            "blkio-weight" => ("blockIO", "weight", unsigned(flag, text, u16::MAX.into())?),
            "cpu-period" => ("cpu", "period", unsigned(flag, text, u64::MAX)?),
            "cpu-rt-period" => ("cpu", "realtimePeriod", unsigned(flag, text, u64::MAX)?),
            "cpu-share" => ("cpu", "shares", unsigned(flag, text, u64::MAX)?),
            "cpu-quota" => ("cpu", "quota", signed(flag, text)?),
            "cpu-rt-runtime" => ("cpu", "realtimeRuntime", signed(flag, text)?),
            "cpuset-cpus" => ("cpu", "cpus", Value::String(text.clone())),
            "cpuset-mems" => ("cpu", "mems", Value::String(text.clone())),
            "memory" => ("memory", "limit", bytes(flag, text)?),
            "memory-reservation" => ("memory", "reservation", bytes(flag, text)?),
            "memory-swap" => ("memory", "swap", bytes(flag, text)?),
            "kernel-memory" => ("memory", "kernel", bytes(flag, text)?),
            "kernel-memory-tcp" => ("memory", "kernelTCP", bytes(flag, text)?),
            "pids-limit" => ("pids", "limit", signed(flag, text)?),
            other => bail!("update --{other}: not a resource flag"),
        };
        let unchanged = value.as_i64() == Some(0) || value.as_u64() == Some(0) || value.as_str() == Some("");
        if unchanged {
            continue;
        }
        let section = resources.entry(section).or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(section) = section {
            section.insert(field.to_string(), value);
        }
    }
    Ok(Value::Object(resources))
}

fn unsigned(flag: &str, text: &str, max: u64) -> Result<Value> {
    match text.parse::<u64>() {
        Ok(n) if n <= max && text.bytes().all(|b| b.is_ascii_digit()) => Ok(Value::from(n)),
        _ => bail!("update --{flag} {text:?}: not a number from 0 to {max}"),
    }
}

fn signed(flag: &str, text: &str) -> Result<Value> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    match text.parse::<i64>() {
        Ok(n) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => Ok(Value::from(n)),
        _ => bail!("update --{flag} {text:?}: not a decimal number"),
    }
}

/// A size as runc reads `--memory` (go-units' RAMInBytes: `512`, `64m`,
/// `1.5GiB`, binary units, case ignored), or `-1` for unlimited.
fn bytes(flag: &str, text: &str) -> Result<Value> {
    if text == "-1" {
        return Ok(Value::from(-1));
    }
    let bad = || anyhow::anyhow!("update --{flag} {text:?}: not a size (512, 64m, 1g, or -1)");
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(number_end);
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return Err(bad());
    }
    let unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let multiplier: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024.0f64.powi(4),
        "p" => 1024.0f64.powi(5),
        _ => return Err(bad()),
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    let total = value * multiplier;
    if !(0.0..9.2e18).contains(&total) {
        return Err(bad());
    }
    Ok(Value::from(total as i64))
}

/// The container's reviewed spec with `resources` laid over its
/// `linux.resources`: objects merged field by field, any other value
/// replaced, a list added to (a device rule or a limit of the update
/// comes after the container's, as the runtime applies it).
pub fn updated_spec(container: &Spec, resources: &Value) -> Result<Spec> {
    let mut whole = serde_json::to_value(container).context("encoding the container's spec")?;
    if !whole["linux"].is_object() {
        whole["linux"] = Value::Object(Map::new());
    }
    let linux = &mut whole["linux"];
    if !linux["resources"].is_object() {
        linux["resources"] = Value::Object(Map::new());
    }
    lay_over(&mut linux["resources"], resources);
    Ok(crate::validate::validate_spec(&whole)?)
}

fn lay_over(target: &mut Value, update: &Value) {
    match (target, update) {
        (Value::Object(target), Value::Object(update)) => {
            for (key, value) in update {
                match target.get_mut(key) {
                    Some(existing) if !value.is_null() => lay_over(existing, value),
                    Some(_) => {}
                    None if value.is_null() => {}
                    None => {
                        target.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (Value::Array(target), Value::Array(update)) => target.extend(update.iter().cloned()),
        (target, update) => *target = update.clone(),
    }
}

/// The spec as the model holds it, from a checked value.
/// Capabilities' sets as names, for tests.
#[cfg(test)]
fn names(set: &Names) -> Vec<&str> {
    set.iter().map(|n| &**n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn container() -> Spec {
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs", "readonly": true},
            "process": {
                "user": {"uid": 1000, "gid": 1000, "additionalGids": [44]},
                "args": ["sleep", "inf"], "env": ["PATH=/bin"], "cwd": "/work",
                "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]},
                "noNewPrivileges": true,
                "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
            },
            "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}],
                      "resources": {"memory": {"limit": 1048576}, "devices": [{"allow": false, "access": "rwm"}]}}
        }))
        .unwrap()
    }

    #[test]
    fn exec_flags_make_the_process_runc_would_run() {
        let exec = Exec {
            id: "c".into(),
            args: vec!["sh".into(), "-c".into(), "id".into()],
            env: vec!["A=1".into()],
            user: Some("7".into()),
            additional_gids: vec!["5".into()],
            caps: vec!["CAP_SYS_ADMIN".into()],
            tty: true,
            ..Exec::default()
        };
        let spec = exec_spec(&container(), &exec, None).unwrap();
        let p = spec.process.unwrap();
        assert_eq!(p.args, ["sh", "-c", "id"]);
        assert_eq!(p.env, ["PATH=/bin", "A=1"]);
        assert_eq!((p.user.uid, p.user.gid), (7, 1000), "no :gid keeps the container's");
        assert_eq!(p.user.additional_gids, [44, 5]);
        assert_eq!(p.cwd, "/work");
        assert!(p.terminal && p.no_new_privileges);
        let caps = p.capabilities.unwrap();
        assert_eq!(names(&caps.bounding), ["CAP_KILL", "CAP_SYS_ADMIN"]);
        assert_eq!(names(&caps.ambient), ["CAP_SYS_ADMIN"]);
        assert!(caps.inheritable.is_empty());
        assert_eq!(p.rlimits.len(), 1, "the container's rlimits stay");
    }

    #[test]
    fn a_process_file_is_read_strictly_and_gaps_are_filled_from_the_container() {
        let exec = Exec {
            id: "c".into(),
            process_file: Some(PathBuf::from("/p.json")),
            ..Exec::default()
        };
        let text = r#"{"user": {"uid": 0, "gid": 0}, "args": ["sh"], "cwd": "/"}"#;
        let p = exec_spec(&container(), &exec, Some(text)).unwrap().process.unwrap();
        assert_eq!(p.args, ["sh"]);
        assert!(!p.no_new_privileges, "as the document says");
        assert_eq!(names(&p.capabilities.unwrap().bounding), ["CAP_KILL"]);
        for hostile in [
            r#"{"user": {"uid": 0, "gid": 0}, "args": ["sh"], "cwd": "/", "Capabilities": {"bounding": ["CAP_SYS_ADMIN"]}}"#,
            r#"{"user": {"uid": 0, "gid": 0}, "args": ["sh"], "cwd": "/", "cwd": "/etc"}"#,
            r#"{"user": {"uid": 0, "gid": 0}, "args": ["sh"], "cwd": "/", "capabilities": {"bounding": ["cap_sys_admin"]}}"#,
        ] {
            let err = format!("{:#}", exec_spec(&container(), &exec, Some(hostile)).unwrap_err());
            assert!(err.contains("runtime"), "{hostile}: {err}");
        }
    }

    #[test]
    fn update_flags_are_read_as_runc_reads_them() {
        let update = Update {
            id: "c".into(),
            values: vec![
                ("memory".into(), "64m".into()),
                ("memory-swap".into(), "-1".into()),
                ("pids-limit".into(), "100".into()),
                ("cpu-share".into(), "0".into()),
                ("cpuset-cpus".into(), "0-1".into()),
            ],
            ..Update::default()
        };
        let resources = update_resources(&update, None).unwrap();
        assert_eq!(
            resources,
            serde_json::json!({"memory": {"limit": 67108864, "swap": -1}, "pids": {"limit": 100}, "cpu": {"cpus": "0-1"}})
        );
        for (flag, value) in [
            ("pids-limit", "60}, \"devices\": [{\"allow\": true}]"),
            ("memory", "1x"),
            ("cpu-share", "-5"),
            ("blkio-weight", "70000"),
        ] {
            let bad = Update {
                values: vec![(flag.into(), value.into())],
                ..Update::default()
            };
            let err = update_resources(&bad, None).unwrap_err().to_string();
            assert!(err.contains(flag), "{err}");
        }
        assert_eq!(bytes("m", "1.5g").unwrap(), Value::from(1_610_612_736i64));
        assert_eq!(bytes("m", "512 KiB").unwrap(), Value::from(524_288i64));
    }

    #[test]
    fn an_update_is_laid_over_the_containers_resources() {
        let resources = serde_json::json!({"memory": {"swap": 2097152}, "devices": [{"allow": true, "type": "b", "major": 8, "minor": 0, "access": "rw"}]});
        let spec = updated_spec(&container(), &resources).unwrap();
        let value = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            value["linux"]["resources"]["memory"],
            serde_json::json!({"limit": 1048576, "swap": 2097152})
        );
        assert_eq!(value["linux"]["resources"]["devices"].as_array().unwrap().len(), 2);
        let hostile = serde_json::json!({"Memory": {"limit": 1}});
        assert!(updated_spec(&container(), &hostile).is_err());
    }
}
