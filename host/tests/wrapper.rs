//! `specwright-runc` itself, in front of a recording stand-in for the real
//! runtime: what it passes on, what it writes, and what a denial leaves.
//! The spec it reviews is one runc wrote (`runc spec`). The real engines
//! drive it in `engines.rs`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const WRAPPER: &str = env!("CARGO_BIN_EXE_specwright-runc");
const HARDENED: &str = env!("SPECWRIGHT_HARDENED_WASM");
const MOUNT_ALLOWLIST: &str = env!("SPECWRIGHT_MOUNT_ALLOWLIST_WASM");

/// A bundle written by `runc spec`, a stand-in runtime that records its
/// arguments and the config.json it was handed, and a state dir.
struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    bundle: PathBuf,
    state: PathBuf,
    fake: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let bundle = root.join("bundle");
        std::fs::create_dir(&bundle).unwrap();
        let out = Command::new("runc")
            .args(["spec", "--bundle"])
            .arg(&bundle)
            .output()
            .expect("runc is not installed (apt-get install runc)");
        assert!(
            out.status.success(),
            "runc spec: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let fake = root.join("fake-runtime");
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\nprintf '%s\\n' \"$@\" > {root}/args\ncp {bundle}/config.json {root}/seen.json\nexit 7\n",
                root = root.display(),
                bundle = bundle.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        Fixture {
            state: root.join("state"),
            _dir: dir,
            root,
            bundle,
            fake,
        }
    }

    fn config(&self) -> PathBuf {
        self.bundle.join("config.json")
    }

    fn spec(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.config()).unwrap()).unwrap()
    }

    fn edit_spec(&self, edit: impl FnOnce(&mut Value)) {
        let mut spec = self.spec();
        edit(&mut spec);
        std::fs::write(self.config(), serde_json::to_string_pretty(&spec).unwrap()).unwrap();
    }

    /// Runs the wrapper with `args`, no configuration file of the host's.
    fn run(&self, args: &[&str]) -> Output {
        self.run_with_config(args, &self.root.join("no-config.toml"), false)
    }

    fn run_with_config(&self, args: &[&str], config: &Path, exists: bool) -> Output {
        let mut command = Command::new(WRAPPER);
        if exists {
            command.env("SPECWRIGHT_RUNTIME_CONFIG", config);
        } else {
            // An empty file: nothing configured, whatever /etc holds.
            std::fs::write(config, "").unwrap();
            command.env("SPECWRIGHT_RUNTIME_CONFIG", config);
        }
        command.args(args).output().expect("running specwright-runc")
    }

    /// The arguments the stand-in runtime got, if it ran.
    fn passed(&self) -> Option<Vec<String>> {
        std::fs::read_to_string(self.root.join("args"))
            .ok()
            .map(|t| t.lines().map(str::to_string).collect())
    }

    fn seen(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.root.join("seen.json")).unwrap()).unwrap()
    }

    fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.state.join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn words(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_string).collect()
}

#[test]
fn create_runs_the_chain_over_the_engines_spec_then_hands_the_real_runtime_the_engines_arguments() {
    let f = Fixture::new();
    let before = f.spec();
    let bundle = f.bundle.display().to_string();
    let log = f.root.join("log.json").display().to_string();
    let policy = format!("--policy={HARDENED}");
    let out = f.run(&[
        "--root",
        "/run/test-runc",
        &policy,
        "--state-dir",
        f.state.to_str().unwrap(),
        "--log",
        &log,
        "--log-format",
        "json",
        "--real-runtime",
        f.fake.to_str().unwrap(),
        "--systemd-cgroup",
        "create",
        "--bundle",
        &bundle,
        "--pid-file",
        "/run/x.pid",
        "box1",
    ]);
    // The real runtime replaced the wrapper: its exit code is the engine's.
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(
        f.passed().unwrap(),
        words(&format!(
            "--root /run/test-runc --log {log} --log-format json --systemd-cgroup create --bundle {bundle} --pid-file /run/x.pid box1"
        ))
    );
    // What runc wrote, with exactly hardened's changes (its other fields,
    // the ones specwright's model does not name too, kept as they were).
    let mut expected = before;
    expected["process"]["noNewPrivileges"] = Value::Bool(true);
    expected["root"]["readonly"] = Value::Bool(true);
    assert_eq!(f.seen(), expected);
    assert_eq!(f.spec(), expected, "config.json is written back");
    let audit = f.audit();
    assert!(
        audit
            .iter()
            .any(|r| r["step"] == "box1" && r["op"] == "policy" && r["result"] == "ok"),
        "{audit:?}"
    );
}

#[test]
fn a_denial_stops_before_the_real_runtime_and_leaves_the_spec_as_the_engine_wrote_it() {
    let f = Fixture::new();
    // No network namespace: the host's network, which hardened denies.
    f.edit_spec(|spec| {
        let namespaces = spec["linux"]["namespaces"].as_array_mut().unwrap();
        namespaces.retain(|n| n["type"] != "network");
    });
    let before = std::fs::read(f.config()).unwrap();
    let log = f.root.join("log.json");
    let out = f.run(&[
        "--log",
        log.to_str().unwrap(),
        "--log-format=json",
        "--policy",
        HARDENED,
        "--state-dir",
        f.state.to_str().unwrap(),
        "--real-runtime",
        f.fake.to_str().unwrap(),
        "run",
        "-b",
        f.bundle.to_str().unwrap(),
        "box2",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("container box2") && err.contains("denied the step: the host network is not allowed"),
        "{err}"
    );
    assert_eq!(f.passed(), None, "the real runtime must not run");
    assert_eq!(std::fs::read(f.config()).unwrap(), before);
    // containerd reads the reason from the runtime's log.
    let line: Value = serde_json::from_str(std::fs::read_to_string(&log).unwrap().lines().last().unwrap()).unwrap();
    assert_eq!(line["level"], "error");
    assert!(
        line["msg"]
            .as_str()
            .unwrap()
            .contains("the host network is not allowed"),
        "{line}"
    );
    assert!(
        f.audit()
            .iter()
            .any(|r| r["step"] == "box2" && r["op"] == "policy" && r["result"] != "ok"),
        "{:?}",
        f.audit()
    );
}

#[test]
fn without_policies_and_for_every_other_subcommand_the_arguments_pass_through_untouched() {
    let f = Fixture::new();
    let before = std::fs::read(f.config()).unwrap();
    let real = format!("--real-runtime={}", f.fake.display());
    let bundle = f.bundle.display().to_string();
    let out = f.run(&[&real, "create", "--bundle", &bundle, "plain"]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(f.passed().unwrap(), words(&format!("create --bundle {bundle} plain")));
    assert_eq!(std::fs::read(f.config()).unwrap(), before);
    let policy = format!("--policy={HARDENED}");
    for line in [
        "start box",
        "state box",
        "kill box KILL",
        "delete --force box",
        "exec -d --process /tmp/p.json box",
        "exec --detach --pid-file /tmp/x box sh",
        "ps --format json box",
        "pause box",
        "resume box",
        "update --memory 1048576 box",
        "features",
        "--version",
        "--debug --root /run/r list",
    ] {
        let mut args = vec![real.as_str(), policy.as_str()];
        args.extend(line.split_whitespace());
        let out = f.run(&args);
        assert_eq!(out.status.code(), Some(7), "{line}: {}", stderr(&out));
        assert_eq!(f.passed().unwrap(), words(line), "{line}");
        assert_eq!(std::fs::read(f.config()).unwrap(), before, "{line}");
    }
}

#[test]
fn the_configuration_file_sets_what_flags_do_not_and_flags_override_it() {
    let f = Fixture::new();
    let settings = f.root.join("allow.json");
    std::fs::write(&settings, r#"{"allowed_sources": ["/srv/nothing"]}"#).unwrap();
    // runc's spec mounts only pseudo filesystems;
    // add a bind from /etc, outside what the allowlist allows.
    f.edit_spec(|spec| {
        spec["mounts"].as_array_mut().unwrap().push(serde_json::json!({
            "destination": "/host-etc", "type": "bind", "source": "/etc", "options": ["rbind", "ro"]
        }));
    });
    let config = f.root.join("runtime.toml");
    std::fs::write(
        &config,
        format!(
            "policies = [\"{MOUNT_ALLOWLIST}:allow.json\"]\nreal_runtime = \"{}\"\nstate_dir = \"{}\"\n",
            f.fake.display(),
            f.state.display()
        ),
    )
    .unwrap();
    let bundle = f.bundle.display().to_string();
    let before = std::fs::read(f.config()).unwrap();
    let out = f.run_with_config(&["create", "--bundle", &bundle, "cfg1"], &config, true);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("/etc") && err.contains("denied"), "{err}");
    assert_eq!(f.passed(), None);
    assert_eq!(std::fs::read(f.config()).unwrap(), before);

    // The flag's chain replaces the file's; the rest still comes from it.
    let out = f.run_with_config(
        &["--policy", HARDENED, "create", "--bundle", &bundle, "cfg2"],
        &config,
        true,
    );
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(f.seen()["process"]["noNewPrivileges"], Value::Bool(true));
    assert!(f.state.join("audit.jsonl").exists(), "the file's state_dir is used");

    // A broken file is an error naming it and the key.
    std::fs::write(&config, "polices = []\n").unwrap();
    let out = f.run_with_config(&["state", "x"], &config, true);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("runtime.toml") && err.contains("polices"), "{err}");
}

#[test]
fn a_broken_or_missing_spec_is_an_error_naming_the_file() {
    let f = Fixture::new();
    let bundle = f.bundle.display().to_string();
    let args = |id: &'static str| {
        vec![
            "--policy".to_string(),
            HARDENED.to_string(),
            "--state-dir".to_string(),
            f.state.display().to_string(),
            "--real-runtime".to_string(),
            f.fake.display().to_string(),
            "create".to_string(),
            "--bundle".to_string(),
            bundle.clone(),
            id.to_string(),
        ]
    };
    let run = |id| {
        let a = args(id);
        f.run(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    std::fs::write(f.config(), "{\"ociVersion\": ").unwrap();
    let out = run("broken");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("the engine's spec"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(f.config()).unwrap(), "{\"ociVersion\": ");
    std::fs::write(f.config(), "{\"ociVersion\": \"1.0.2\", \"process\": {\"args\": 3}}").unwrap();
    let out = run("wrong");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("process"), "{}", stderr(&out));
    std::fs::remove_file(f.config()).unwrap();
    let out = run("missing");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("{bundle}/config.json: no such file")),
        "{}",
        stderr(&out)
    );
    assert_eq!(f.passed(), None);
}

#[test]
fn a_container_start_compiles_nothing_once_the_cache_holds_the_policy() {
    let f = Fixture::new();
    let bundle = f.bundle.display().to_string();
    let start = |id: &str| {
        let out = f.run(&[
            "--policy",
            HARDENED,
            "--state-dir",
            f.state.to_str().unwrap(),
            "--real-runtime",
            f.fake.to_str().unwrap(),
            "create",
            "--bundle",
            &bundle,
            id,
        ]);
        assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    };
    let cache = || {
        let mut entries: Vec<(PathBuf, std::time::SystemTime)> = std::fs::read_dir(f.state.join("cache"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path(), e.metadata().unwrap().modified().unwrap())
            })
            .collect();
        entries.sort();
        entries
    };
    start("first");
    let compiled = cache();
    assert!(!compiled.is_empty(), "the first start compiles into the cache");
    start("second");
    assert_eq!(cache(), compiled, "the second start wrote nothing to the cache");
}
