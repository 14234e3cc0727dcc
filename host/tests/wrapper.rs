//! `specwright-runc` itself, in front of a recording stand-in for the real
//! runtime: what it passes on, what it writes, what it refuses, and what a
//! denial leaves. The spec it reviews is one runc wrote (`runc spec`). The
//! real runtimes run what it approves in `runtimes.rs`; the real engines
//! drive it in `engines.rs`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

mod common;

const WRAPPER: &str = env!("CARGO_BIN_EXE_specwright-runc");
const HARDENED: &str = env!("SPECWRIGHT_HARDENED_WASM");
const MOUNT_ALLOWLIST: &str = env!("SPECWRIGHT_MOUNT_ALLOWLIST_WASM");
const TEST_POLICY: &str = env!("SPECWRIGHT_TEST_POLICY_WASM");

/// A bundle written by `runc spec`, a stand-in runtime that records its
/// arguments, the config.json it was handed and any document it was
/// handed by descriptor (`--process`, `--resources`), and a state dir.
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
        std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
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
        // The seccomp profile engines write.
        common::edit_spec(&bundle.join("config.json"), |spec| {
            spec["linux"]["seccomp"] = common::engine_seccomp();
        });
        let fake = root.join("fake-runtime");
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\nprintf '%s\\n' \"$@\" > {root}/args\n\
                 prev=\nfor a in \"$@\"; do\n  case \"$prev\" in\n    --process|--resources) cat \"$a\" > {root}/document.json ;;\n    --bundle|-b) cp \"$a/config.json\" {root}/seen.json ;;\n  esac\n  prev=\"$a\"\ndone\nexit 7\n",
                root = root.display()
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
        common::read_spec(&self.config())
    }

    fn edit_spec(&self, edit: impl FnOnce(&mut Value)) {
        common::edit_spec(&self.config(), edit)
    }

    /// Runs the wrapper with `args` and a configuration file that lets the
    /// flags say everything (as no configuration file would, whatever
    /// /etc holds).
    fn run(&self, args: &[&str]) -> Output {
        let config = self.root.join("open.toml");
        std::fs::write(&config, "allow_flag_overrides = true\n").unwrap();
        self.run_with_config(args, &config)
    }

    fn run_with_config(&self, args: &[&str], config: &Path) -> Output {
        Command::new(WRAPPER)
            .env("SPECWRIGHT_RUNTIME_CONFIG", config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running specwright-runc")
    }

    /// `--state-dir S --real-runtime FAKE` and `args`.
    fn with_state(&self, args: &[&str]) -> Vec<String> {
        let mut all = vec![
            "--state-dir".to_string(),
            self.state.display().to_string(),
            "--real-runtime".to_string(),
            self.fake.display().to_string(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        all
    }

    /// Runs `create` of container `id` under `policy`.
    fn create(&self, policy: &str, id: &str) -> Output {
        let bundle = self.bundle.display().to_string();
        let args = self.with_state(&["--policy", policy, "create", "--bundle", &bundle, id]);
        self.run(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// The arguments the stand-in runtime got, if it ran (and forgets them).
    fn passed(&self) -> Option<Vec<String>> {
        let path = self.root.join("args");
        let text = std::fs::read_to_string(&path).ok()?;
        std::fs::remove_file(path).unwrap();
        Some(text.lines().map(str::to_string).collect())
    }

    fn seen(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.root.join("seen.json")).unwrap()).unwrap()
    }

    /// The document the runtime was handed by descriptor.
    fn document(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.root.join("document.json")).unwrap()).unwrap()
    }

    fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.state.join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn policy_runs(&self, step: &str) -> usize {
        self.audit()
            .iter()
            .filter(|r| r["op"] == "policy" && r["step"].as_str().is_some_and(|s| s.starts_with(step)))
            .count()
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn words(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_string).collect()
}

/// `hardened`'s changes to a spec it allows.
fn hardened(mut spec: Value) -> Value {
    spec["process"]["noNewPrivileges"] = Value::Bool(true);
    for set in ["bounding", "effective", "inheritable", "permitted", "ambient"] {
        if let Some(caps) = spec
            .pointer_mut(&format!("/process/capabilities/{set}"))
            .and_then(Value::as_array_mut)
        {
            caps.retain(|c| c != "CAP_NET_RAW" && c != "CAP_MKNOD");
        }
    }
    spec
}

#[test]
fn create_runs_the_chain_over_the_engines_spec_then_hands_the_real_runtime_the_engines_arguments() {
    let f = Fixture::new();
    let before = f.spec();
    std::fs::set_permissions(f.config(), std::fs::Permissions::from_mode(0o600)).unwrap();
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
    // The engine's arguments, but the bundle: one of the wrapper's, which
    // no one else can change before the runtime reads it.
    let passed = f.passed().unwrap();
    let reviewed = passed[passed.len() - 2].clone();
    assert!(
        reviewed.starts_with(&f.state.join("reviewed").display().to_string()),
        "{passed:?}"
    );
    assert_eq!(
        passed,
        words(&format!(
            "--root /run/test-runc --log {log} --log-format json --systemd-cgroup create --pid-file /run/x.pid --bundle {reviewed} box1"
        ))
    );
    // What runc wrote, with exactly hardened's changes (its other fields,
    // the ones specwright's model does not name too, kept as they were),
    // the rootfs named by its real path.
    let mut expected = hardened(before);
    expected["root"]["path"] = Value::String(
        std::fs::canonicalize(f.bundle.join("rootfs"))
            .unwrap()
            .display()
            .to_string(),
    );
    assert!(f.seen() == expected, "the runtime got other than hardened's changes");
    assert!(f.spec() == expected, "config.json is written back");
    assert_eq!(
        std::fs::metadata(f.config()).unwrap().mode() & 0o7777,
        0o600,
        "with the mode the engine gave it"
    );
    let audit = f.audit();
    assert!(
        audit
            .iter()
            .any(|r| r["step"] == "box1" && r["op"] == "policy" && r["result"] == "ok"),
        "{audit:?}"
    );
}

#[test]
fn a_spec_is_written_back_canonical_with_its_owner_even_when_no_policy_changes_it() {
    let f = Fixture::new();
    let allow = f.root.join("allow.json");
    std::fs::write(&allow, r#"{"allowed_sources": ["/"]}"#).unwrap();
    let policy = format!("{MOUNT_ALLOWLIST}:{}", allow.display());
    let spec = f.spec();
    let engines = std::fs::read_to_string(f.config()).unwrap();
    let out = f.create(&policy, "same1");
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let canonical = std::fs::read_to_string(f.config()).unwrap();
    let mut anchored = spec.clone();
    anchored["root"]["path"] = Value::String(f.bundle.join("rootfs").display().to_string());
    assert_eq!(serde_json::from_str::<Value>(&canonical).unwrap(), anchored);
    assert_ne!(canonical, engines, "written anew, not left as the engine wrote it");
    // Keys out of order, spaced as no serializer would: the same bytes.
    let mut shuffled = serde_json::Map::new();
    for key in ["linux", "mounts", "hostname", "root", "process", "ociVersion"] {
        shuffled.insert(key.to_string(), spec[key].clone());
    }
    std::fs::write(
        f.config(),
        serde_json::to_string(&shuffled).unwrap().replace(',', " ,  "),
    )
    .unwrap();
    nix::unistd::chown(&f.config(), None, Some(nix::unistd::Gid::from_raw(4321))).unwrap();
    std::fs::set_permissions(f.config(), std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = f.create(&policy, "same2");
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(f.config()).unwrap(), canonical);
    let meta = std::fs::metadata(f.config()).unwrap();
    assert_eq!((meta.mode() & 0o7777, meta.gid()), (0o640, 4321));
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

/// Each of these passed `hardened` and reached the runtime unchanged,
/// where runc or crun read what the policy never saw.
#[test]
fn specs_runtimes_would_read_otherwise_are_refused_before_any_policy_runs() {
    let f = Fixture::new();
    let base = std::fs::read_to_string(f.config()).unwrap();
    let open = base.trim_end().strip_suffix('}').unwrap().to_string();
    let with_top = |extra: &str| format!("{open},\n{extra}\n}}\n");
    let cases: Vec<(String, &str)> = vec![
        (
            with_top(
                r#""Process": {"user": {"uid": 0, "gid": 0}, "cwd": "/", "args": ["sh"], "capabilities": {"bounding": ["CAP_SYS_ADMIN"]}}"#,
            ),
            "`Process` is not runtime-spec's `process`",
        ),
        (
            with_top(r#""proce\u017fs": {"user": {"uid": 0, "gid": 0}, "cwd": "/", "args": ["sh"]}"#),
            "`proceſs` is not runtime-spec's `process`",
        ),
        (with_top(r#""Linux": {"namespaces": []}"#), "`Linux`"),
        (
            with_top(r#""Mounts": [{"destination": "/host", "type": "bind", "source": "/", "options": ["rbind"]}]"#),
            "`Mounts`",
        ),
        (with_top(r#""Root": {"path": "rootfs", "readonly": false}"#), "`Root`"),
        (
            with_top(r#""process": {"user": {"uid": 0, "gid": 0}, "cwd": "/", "args": ["sh"]}"#),
            "`process`: the key is given twice",
        ),
        (
            with_top(r#""vendorExtension": {"x": 1}"#),
            "`vendorExtension` is not a runtime-spec v1.2.1 field",
        ),
    ];
    let mut nested = Vec::new();
    let mut spec = f.spec();
    spec["process"]["Capabilities"] = json!({"bounding": ["CAP_SYS_ADMIN"]});
    nested.push((spec.to_string(), "`process.Capabilities`"));
    let mut spec = f.spec();
    spec["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "network", "path": "/proc/1/ns/net"}));
    nested.push((spec.to_string(), "second \"network\" namespace"));
    let mut spec = f.spec();
    spec["process"]["capabilities"]["bounding"]
        .as_array_mut()
        .unwrap()
        .push(json!("cap_net_admin"));
    nested.push((spec.to_string(), "\"cap_net_admin\" is not a capability name"));
    let mut spec = f.spec();
    spec["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/proc\u{0}/x", "type": "bind", "source": "/etc"}));
    nested.push((spec.to_string(), "NUL character"));
    // crun runs 4294967295 as root; crun and CRIU act on annotations.
    let mut spec = f.spec();
    spec["process"]["user"]["uid"] = json!(4294967295u64);
    nested.push((spec.to_string(), "`process.user.uid`: 4294967295"));
    for annotation in ["run.oci.seccomp.plugins", "run.oci.seccomp_bpf_data", "org.criu.config"] {
        let mut spec = f.spec();
        spec["annotations"] = json!({annotation: "/tmp/x"});
        nested.push((spec.to_string(), "the runtime acts on it"));
    }
    for (i, (text, needle)) in cases
        .iter()
        .map(|(t, n)| (t.as_str(), *n))
        .chain(nested.iter().map(|(t, n)| (t.as_str(), *n)))
        .enumerate()
    {
        std::fs::write(f.config(), text).unwrap();
        let id = format!("hostile{i}");
        let out = f.create(HARDENED, &id);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{needle}: {err}");
        assert!(err.contains(needle), "{needle}: {err}");
        assert!(err.contains("config.json"), "names the file: {err}");
        assert_eq!(f.passed(), None, "{needle}: the runtime ran");
        assert_eq!(std::fs::read_to_string(f.config()).unwrap(), *text, "{needle}");
        assert_eq!(f.policy_runs(&id), 0, "{needle}: a policy ran");
    }
}

#[test]
fn a_config_json_that_is_a_fifo_or_a_symlink_is_refused_without_waiting() {
    let f = Fixture::new();
    std::fs::rename(f.config(), f.root.join("real.json")).unwrap();
    std::os::unix::fs::symlink(f.root.join("real.json"), f.config()).unwrap();
    let out = f.create(HARDENED, "link");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("a symlink"), "{}", stderr(&out));
    std::fs::remove_file(f.config()).unwrap();
    nix::unistd::mkfifo(&f.config(), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let start = std::time::Instant::now();
    let out = f.create(HARDENED, "fifo");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not a regular file"), "{}", stderr(&out));
    assert!(start.elapsed() < std::time::Duration::from_secs(20));
    assert_eq!(f.passed(), None);
}

#[test]
fn without_policies_everything_passes_through_untouched_and_with_them_only_the_short_list() {
    let f = Fixture::new();
    let before = std::fs::read(f.config()).unwrap();
    let real = format!("--real-runtime={}", f.fake.display());
    let bundle = f.bundle.display().to_string();
    for line in [
        format!("create --bundle {bundle} plain"),
        // Forms runc and crun read differently are theirs to read.
        format!("create plain --bundle {bundle}"),
        "exec --cap CAP_SYS_ADMIN box sh".to_string(),
        "update --memory 1 box".to_string(),
        "mounts add box".to_string(),
    ] {
        let mut args = vec![real.as_str()];
        args.extend(line.split_whitespace());
        let out = f.run(&args);
        assert_eq!(out.status.code(), Some(7), "{line}: {}", stderr(&out));
        assert_eq!(f.passed().unwrap(), words(&line), "{line}");
        assert_eq!(std::fs::read(f.config()).unwrap(), before, "{line}");
    }
    let policy = format!("--policy={HARDENED}");
    let state = format!("--state-dir={}", f.state.display());
    for line in [
        "start box",
        "state box",
        "kill box KILL",
        "delete --force box",
        "ps --format json box",
        "pause box",
        "resume box",
        "events --stats box",
        "list",
        "features",
        "checkpoint --image-path /tmp/i box",
        "--version",
        "create --help",
        "--debug --root /run/r list",
    ] {
        let mut args = vec![real.as_str(), policy.as_str(), state.as_str()];
        args.extend(line.split_whitespace());
        let out = f.run(&args);
        assert_eq!(out.status.code(), Some(7), "{line}: {}", stderr(&out));
        assert_eq!(f.passed().unwrap(), words(line), "{line}");
        assert_eq!(std::fs::read(f.config()).unwrap(), before, "{line}");
    }
    assert_eq!(f.policy_runs(""), 0);
}

/// runc moves flags written after the id in front of it, crun does not;
/// crun takes abbreviations and attached values, runc does not: the
/// wrapper reviewed one bundle (or none) and the runtime used another.
#[test]
fn command_lines_the_runtimes_read_differently_are_refused_with_policies() {
    let f = Fixture::new();
    let evil = f.root.join("evil");
    std::fs::create_dir(&evil).unwrap();
    std::fs::copy(f.config(), evil.join("config.json")).unwrap();
    let bundle = f.bundle.display().to_string();
    let evil = evil.display().to_string();
    for (line, needle) in [
        (
            format!("create --bundle {bundle} c1 --bundle {evil}"),
            "after the container id",
        ),
        (format!("run c1 -b {evil}"), "after the container id"),
        (format!("create --bun={evil} c1"), "--bun="),
        (format!("create -b{evil} c1"), "-b/"),
        (format!("create -b={evil} c1"), "-b="),
        (format!("-bundle {evil} create c1"), "-bundle"),
        (format!("--rootless true create -b {bundle} c1"), "--rootless"),
        (format!("create --HANG=1 -b {bundle} c1"), "--HANG"),
        (format!("create -b {bundle} -b {evil} c1"), "given twice"),
        ("mounts add c1 /x".to_string(), "not one specwright-runc reviews"),
        ("--criu /tmp/evil checkpoint c1".to_string(), "--criu names a program"),
        ("init".to_string(), "not one specwright-runc reviews"),
    ] {
        let mut args = f.with_state(&["--policy", HARDENED]);
        args.extend(line.split_whitespace().map(str::to_string));
        let out = f.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(out.status.code(), Some(1), "{line}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{line}: {}", stderr(&out));
        assert_eq!(f.passed(), None, "{line}");
    }
    // `--` before the subcommand and before the id, as both read it.
    let mut args = f.with_state(&["--policy", HARDENED]);
    args.extend(["--", "create", "-b", &bundle, "--", "c2"].map(str::to_string));
    let out = f.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(
        f.seen()["process"]["noNewPrivileges"],
        true,
        "the bundle given was reviewed"
    );
}

#[test]
fn exec_is_reviewed_as_the_containers_approved_spec_with_its_process() {
    let f = Fixture::new();
    let out = f.create(HARDENED, "ex1");
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let exec_in = |root: &Path, extra: &[&str]| {
        let mut args = f.with_state(&["--policy", HARDENED, "--root", root.to_str().unwrap()]);
        args.extend(["exec"].iter().chain(extra).map(|a| a.to_string()));
        f.run(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let exec = |extra: &[&str]| exec_in(Path::new("/run/test-root-unused"), extra);
    // Created without --root, the exec names the same root: found.
    let plain = |extra: &[&str]| {
        let mut args = f.with_state(&["--policy", HARDENED, "exec"]);
        args.extend(extra.iter().map(|a| a.to_string()));
        f.run(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let out = plain(&[
        "-d",
        "--pid-file",
        "/run/p.pid",
        "-e",
        "X=1",
        "--no-new-privs",
        "ex1",
        "sh",
        "-c",
        "id",
    ]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let passed = f.passed().unwrap();
    assert_eq!(&passed[..4], ["exec", "-d", "--pid-file", "/run/p.pid"]);
    assert_eq!(passed[4], "--process");
    assert!(passed[5].starts_with("/proc/self/fd/"), "{passed:?}");
    assert_eq!(&passed[6..], ["ex1"], "the command is in the document");
    let process = f.document();
    assert_eq!(process["args"], json!(["sh", "-c", "id"]));
    assert_eq!(process["noNewPrivileges"], true);
    assert!(process["env"].as_array().unwrap().contains(&json!("X=1")));
    assert!(!process["capabilities"]["bounding"]
        .as_array()
        .unwrap()
        .contains(&json!("CAP_NET_RAW")));
    // Adding a capability the default set lacks is denied; CAP_SYS_ADMIN
    // makes the process privileged.
    let out = plain(&["--cap", "CAP_SYS_PTRACE", "ex1", "sh"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("CAP_SYS_PTRACE") && stderr(&out).contains("allowed_capabilities"),
        "{}",
        stderr(&out)
    );
    let out = plain(&["--cap", "CAP_SYS_ADMIN", "ex1", "sh"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("insecure mode is not allowed"),
        "{}",
        stderr(&out)
    );
    assert_eq!(f.passed(), None);
    // A process document clearing noNewPrivileges: hardened sets it again.
    let doc = f.root.join("process.json");
    std::fs::write(
        &doc,
        r#"{"user": {"uid": 0, "gid": 0}, "args": ["sh"], "cwd": "/", "noNewPrivileges": false,
            "capabilities": {"bounding": ["CAP_CHOWN", "CAP_NET_RAW"], "effective": ["CAP_NET_RAW"]}}"#,
    )
    .unwrap();
    let out = plain(&["--process", doc.to_str().unwrap(), "--detach", "ex1"]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(f.passed().unwrap()[..2], ["exec", "--detach"]);
    let process = f.document();
    assert_eq!(process["noNewPrivileges"], true);
    assert_eq!(process["capabilities"]["bounding"], json!(["CAP_CHOWN"]));
    // A hostile document is refused before any policy runs.
    std::fs::write(
        &doc,
        r#"{"user": {"uid": 0, "gid": 0}, "args": ["sh"], "cwd": "/", "Capabilities": {"bounding": ["CAP_SYS_ADMIN"]}}"#,
    )
    .unwrap();
    let out = plain(&["--process", doc.to_str().unwrap(), "ex1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("`process.Capabilities`"), "{}", stderr(&out));
    // A container the wrapper never reviewed (or under another root).
    let out = exec(&["ex1", "sh"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no spec approved for it"), "{}", stderr(&out));
    let out = plain(&["nobody", "sh"]);
    assert_eq!(out.status.code(), Some(1));
    // crun would leave the container's cgroups for `..`.
    let out = plain(&["--cgroup", "..", "ex1", "sh"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not below the container's cgroup"),
        "{}",
        stderr(&out)
    );
    // Descriptors said to go to the process but not open here: runc would
    // hand it its own (a handle on the host's /sys/fs/cgroup).
    let out = plain(&["--preserve-fds", "1", "ex1", "sh"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("descriptor 3"), "{}", stderr(&out));
    // A runtime root another user could change.
    let evil_root = f.root.join("evil-root");
    std::fs::create_dir(&evil_root).unwrap();
    nix::unistd::chown(&evil_root, Some(nix::unistd::Uid::from_raw(4242)), None).unwrap();
    let out = exec_in(&evil_root, &["ex1", "sh"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("owned by uid 4242"), "{}", stderr(&out));
    assert_eq!(f.passed(), None);
}

#[test]
fn update_is_laid_over_the_approved_spec_and_reviewed_again() {
    let f = Fixture::new();
    let out = f.create(HARDENED, "up1");
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let update = |extra: &[&str], stdin: Option<&str>| {
        let mut args = f.with_state(&["--policy", HARDENED, "update"]);
        args.extend(extra.iter().map(|a| a.to_string()));
        let config = f.root.join("open.toml");
        std::fs::write(&config, "allow_flag_overrides = true\n").unwrap();
        let mut child = Command::new(WRAPPER)
            .env("SPECWRIGHT_RUNTIME_CONFIG", &config)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        std::io::Write::write_all(&mut input, stdin.unwrap_or("").as_bytes()).unwrap();
        drop(input);
        child.wait_with_output().unwrap()
    };
    let out = update(&["--memory", "64m", "--pids-limit", "100", "up1"], None);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let passed = f.passed().unwrap();
    assert_eq!(passed[..2], ["update", "--resources"]);
    assert_eq!(passed[3], "up1");
    let resources = f.document();
    assert_eq!(resources["memory"]["limit"], 67108864);
    assert_eq!(resources["pids"]["limit"], 100);
    // The update is kept: the next one builds on it; the runtime gets
    // only what is asked.
    let out = update(&["--resources", "-", "up1"], Some(r#"{"cpu": {"shares": 512}}"#));
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(f.passed().is_some());
    assert_eq!(f.document(), json!({"cpu": {"shares": 512}}));
    // One directory a container (beside the file saying when pruning last
    // listed them).
    let kept: Vec<Value> = std::fs::read_dir(f.state.join("reviewed"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|p| serde_json::from_slice(&std::fs::read(p.join("kept.json")).unwrap()).unwrap())
        .collect();
    assert_eq!(kept.len(), 1);
    let resources = &kept[0]["spec"]["linux"]["resources"];
    assert_eq!(
        (resources["cpu"]["shares"].clone(), resources["pids"]["limit"].clone()),
        (json!(512), json!(100))
    );
    // A rule that lets the container at every device is denied.
    let rules = f.root.join("devices.json");
    std::fs::write(&rules, r#"{"devices": [{"allow": true, "access": "rwm"}]}"#).unwrap();
    let out = update(&["-r", rules.to_str().unwrap(), "up1"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("allows every device"), "{}", stderr(&out));
    // A number that is not one (crun pastes it into JSON) is refused.
    let out = update(&["--pids-limit", r#"60}, "devices": [{"allow": true"#, "up1"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--pids-limit"), "{}", stderr(&out));
    assert_eq!(f.passed(), None);
}

#[test]
fn restore_is_refused_unless_allowed_and_then_reviews_its_bundle_like_create() {
    let f = Fixture::new();
    f.edit_spec(|spec| {
        spec["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|n| n["type"] != "network");
    });
    let bundle = f.bundle.display().to_string();
    let mut args = f.with_state(&[
        "--policy",
        HARDENED,
        "restore",
        "--image-path",
        "/tmp/img",
        "-b",
        &bundle,
        "r1",
    ]);
    // A checkpoint's processes keep what CRIU saved of them: by default,
    // no restore.
    let out = f.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("allow_restore"), "{}", stderr(&out));
    let config = f.root.join("restore.toml");
    std::fs::write(&config, "allow_flag_overrides = true\nallow_restore = true\n").unwrap();
    let restore = |args: &[String]| f.run_with_config(&args.iter().map(String::as_str).collect::<Vec<_>>(), &config);
    let out = restore(&args);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("the host network is not allowed"),
        "{}",
        stderr(&out)
    );
    args.truncate(args.len() - 1);
    args.extend(["--lsm-profile", "apparmor:unconfined", "r1"].map(str::to_string));
    let out = restore(&args);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--lsm-profile"), "{}", stderr(&out));
    assert_eq!(f.passed(), None);
}

#[test]
fn the_files_chain_is_the_floor_flags_only_add_policies_in_front_of_it() {
    let f = Fixture::new();
    let settings = f.root.join("allow.json");
    std::fs::write(&settings, r#"{"allowed_sources": ["/srv/nothing"]}"#).unwrap();
    // runc's spec mounts only pseudo filesystems;
    // add a bind from /etc, outside what the allowlist allows.
    f.edit_spec(|spec| {
        spec["mounts"].as_array_mut().unwrap().push(json!({
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
    let out = f.run_with_config(&["create", "--bundle", &bundle, "cfg1"], &config);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("/etc") && err.contains("denied"), "{err}");
    assert_eq!(f.passed(), None);
    assert_eq!(std::fs::read(f.config()).unwrap(), before);

    // An engine's policy runs first; the file's still judges the result.
    let out = f.run_with_config(&["--policy", HARDENED, "create", "--bundle", &bundle, "cfg2"], &config);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("/etc"), "{}", stderr(&out));
    assert_eq!(f.policy_runs("cfg2"), 2, "both ran, the engine's first");
    assert_eq!(f.passed(), None);

    // No flag changes what the file sets.
    let evil = f.root.join("evil-runtime");
    std::fs::copy(&f.fake, &evil).unwrap();
    for flags in [
        vec!["--real-runtime".to_string(), evil.display().to_string()],
        vec!["--state-dir".to_string(), f.root.join("other").display().to_string()],
        vec!["--policy-memory-mib".to_string(), "4000".to_string()],
    ] {
        let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
        args.extend(["state", "cfg2"]);
        let out = f.run_with_config(&args, &config);
        assert_eq!(out.status.code(), Some(1), "{flags:?}");
        assert!(stderr(&out).contains("allow_flag_overrides"), "{}", stderr(&out));
    }

    // A broken file is an error naming it and the key.
    std::fs::write(&config, "polices = []\n").unwrap();
    let out = f.run_with_config(&["state", "x"], &config);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("runtime.toml") && err.contains("polices"), "{err}");
}

/// `patch` (RFC 6902) applied to `doc` by Python's jsonpatch: a reader of
/// the decision log that is not ours.
fn apply_patch(doc: &Value, patch: &Value) -> Value {
    let script = "import json, sys, jsonpatch\n\
                  doc, patch = json.load(sys.stdin)\n\
                  print(json.dumps(jsonpatch.apply_patch(doc, patch)))";
    // Debian's Python, which has python3-jsonpatch (not a pyenv's).
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 is not installed");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(json!([doc, patch]).to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "jsonpatch (apt-get install python3-jsonpatch) failed"
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn sha256_of(path: &str) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    format!(
        "sha256:{}",
        String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap()
    )
}

/// The decision records of container `id`, in the order made.
fn decisions(f: &Fixture, id: &str) -> Vec<Value> {
    f.audit()
        .into_iter()
        .filter(|r| r["op"] == "policy" && r["step"].as_str().is_some_and(|s| s.starts_with(id)))
        .collect()
}

#[test]
fn monitored_policies_record_what_they_would_do_and_change_nothing() {
    let f = Fixture::new();
    std::fs::write(f.root.join("spin.json"), r#"{"mode": "spin"}"#).unwrap();
    let config = f.root.join("runtime.toml");
    let write_config = |last: &str| {
        std::fs::write(
            &config,
            format!(
                "policies = [\n  {{ path = \"{HARDENED}\", mode = \"monitor\" }},\n  \
                 {{ path = \"{TEST_POLICY}\", settings = \"spin.json\", mode = \"monitor\" }},\n  {last}\n]\n\
                 real_runtime = \"{}\"\nstate_dir = \"{}\"\npolicy_timeout_ms = 300\n",
                f.fake.display(),
                f.state.display()
            ),
        )
        .unwrap()
    };
    // The file's last policy is enforced and allows anything under /.
    std::fs::write(f.root.join("allow.json"), r#"{"allowed_sources": ["/"]}"#).unwrap();
    write_config(&format!("\"{MOUNT_ALLOWLIST}:allow.json\""));
    let bundle = f.bundle.display().to_string();
    let rootfs = std::fs::canonicalize(f.bundle.join("rootfs"))
        .unwrap()
        .display()
        .to_string();

    // The host's network: hardened would deny; the spinning policy fails.
    f.edit_spec(|spec| {
        spec["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|n| n["type"] != "network");
    });
    let mut engines = f.spec();
    engines["root"]["path"] = Value::String(rootfs.clone());
    let out = f.run_with_config(&["create", "--bundle", &bundle, "mon1"], &config);
    assert_eq!(out.status.code(), Some(7), "the runtime ran: {}", stderr(&out));
    assert!(f.passed().is_some());
    assert!(f.seen() == engines, "the runtime got the engine's spec unchanged");
    let records = decisions(&f, "mon1");
    assert_eq!(records.len(), 3, "{records:?}");
    let (hardened_record, spinning, allowlist) = (&records[0], &records[1], &records[2]);
    assert_eq!(hardened_record["policy"], HARDENED);
    assert_eq!(hardened_record["digest"], sha256_of(HARDENED));
    assert_eq!(hardened_record["mode"], "monitor");
    assert_eq!(hardened_record["verdict"], "denied");
    assert!(
        hardened_record["denial"]
            .as_str()
            .unwrap()
            .contains("the host network is not allowed"),
        "{hardened_record}"
    );
    assert!(hardened_record["duration_us"].as_u64().unwrap() > 0);
    assert_eq!(spinning["mode"], "monitor");
    assert_eq!(spinning["verdict"], "failed");
    assert!(spinning["error"].as_str().unwrap().contains("time"), "{spinning}");
    assert_eq!(
        (&allowlist["mode"], &allowlist["verdict"]),
        (&json!("enforce"), &json!("allowed"))
    );
    assert_eq!(allowlist["patch"], json!([]));

    // With a network namespace hardened allows and tightens: what it would
    // change is a patch that, applied to the spec it got, gives its spec.
    f.edit_spec(|spec| {
        spec["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "network"}));
        spec["process"].as_object_mut().unwrap().remove("noNewPrivileges");
        for set in ["bounding", "effective", "permitted"] {
            spec["process"]["capabilities"][set]
                .as_array_mut()
                .unwrap()
                .push(json!("CAP_NET_RAW"));
        }
    });
    let mut engines = f.spec();
    engines["root"]["path"] = Value::String(rootfs);
    let out = f.run_with_config(&["create", "--bundle", &bundle, "mon2"], &config);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(f.passed().is_some());
    assert!(
        f.seen() == engines,
        "the runtime got the engine's spec unchanged: {:?}",
        specwright_host_core::patch::diff(&engines, &f.seen())
    );
    let record = &decisions(&f, "mon2")[0];
    assert_eq!(record["verdict"], "changed", "{record}");
    assert_ne!(hardened(engines.clone()), engines);
    assert!(
        apply_patch(&engines, &record["patch"]) == hardened(engines.clone()),
        "{record}"
    );

    // An enforced policy after monitored ones still fails closed.
    f.edit_spec(|spec| {
        spec["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|n| n["type"] != "network");
    });
    write_config(&format!("{{ path = \"{HARDENED}\", mode = \"enforce\" }}"));
    let before = std::fs::read(f.config()).unwrap();
    let out = f.run_with_config(&["create", "--bundle", &bundle, "mon3"], &config);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("the host network is not allowed"),
        "{}",
        stderr(&out)
    );
    assert_eq!(f.passed(), None, "the runtime did not run");
    assert_eq!(std::fs::read(f.config()).unwrap(), before);
    let verdicts: Vec<(Value, Value)> = decisions(&f, "mon3")
        .iter()
        .map(|r| (r["mode"].clone(), r["verdict"].clone()))
        .collect();
    assert_eq!(
        verdicts,
        [
            (json!("monitor"), json!("denied")),
            (json!("monitor"), json!("failed")),
            (json!("enforce"), json!("denied"))
        ]
    );

    // A monitored policy that cannot be loaded (not pulled yet) blocks
    // nothing: each review records it as failed. An enforced one fails
    // every review, counted in the metrics as failed.
    let textfile = f.root.join("metrics.prom");
    let missing = "oci://registry.invalid/policies/guard:v1";
    let with_missing = |mode: &str| {
        std::fs::write(
            &config,
            format!(
                "policies = [{{ path = \"{missing}\", mode = \"{mode}\" }}, \"{MOUNT_ALLOWLIST}:allow.json\"]\n\
                 real_runtime = \"{}\"\nstate_dir = \"{}\"\nmetrics_file = \"{}\"\n",
                f.fake.display(),
                f.state.display(),
                textfile.display()
            ),
        )
        .unwrap()
    };
    with_missing("monitor");
    let out = f.run_with_config(&["create", "--bundle", &bundle, "mon5"], &config);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(f.passed().is_some());
    let records = decisions(&f, "mon5");
    assert_eq!(
        (&records[0]["policy"], &records[0]["mode"], &records[0]["verdict"]),
        (&json!(missing), &json!("monitor"), &json!("failed"))
    );
    assert!(
        records[0]["error"].as_str().unwrap().contains("not pulled"),
        "{}",
        records[0]
    );
    with_missing("enforce");
    let out = f.run_with_config(&["create", "--bundle", &bundle, "mon6"], &config);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not pulled"), "{}", stderr(&out));
    assert_eq!(f.passed(), None);
    let metrics = std::fs::read_to_string(&textfile).unwrap();
    for line in [
        "specwright_reviews_total{outcome=\"approved\"} 1",
        "specwright_reviews_total{outcome=\"failed\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }

    // An engine's --monitor-policy flag is read as the file's table is.
    write_config(&format!("\"{MOUNT_ALLOWLIST}:allow.json\""));
    let out = f.run_with_config(
        &["--monitor-policy", HARDENED, "create", "--bundle", &bundle, "mon4"],
        &config,
    );
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let records = decisions(&f, "mon4");
    assert_eq!(
        (&records[0]["policy"], &records[0]["mode"], &records[0]["verdict"]),
        (&json!(HARDENED), &json!("monitor"), &json!("denied"))
    );
}

/// Regression: a monitored policy that used up the step's host calls
/// left the enforced policy after it none, which then failed and blocked
/// the container.
#[test]
fn a_monitored_policy_leaves_the_step_budget_as_it_found_it() {
    let f = Fixture::new();
    std::fs::write(f.root.join("many.json"), r#"{"mode": "host-calls", "calls": 5000}"#).unwrap();
    std::fs::write(f.root.join("one.json"), r#"{"mode": "host-calls", "calls": 1}"#).unwrap();
    let config = f.root.join("runtime.toml");
    let write = |monitored: &str| {
        std::fs::write(
            &config,
            format!(
                "policies = [{{ path = \"{TEST_POLICY}\", settings = \"many.json\", mode = \"{monitored}\" }}, \"{TEST_POLICY}:one.json\"]\n\
                 real_runtime = \"{}\"\nstate_dir = \"{}\"\n",
                f.fake.display(),
                f.state.display()
            ),
        )
        .unwrap()
    };
    let bundle = f.bundle.display().to_string();
    write("monitor");
    let out = f.run_with_config(&["create", "--bundle", &bundle, "budget1"], &config);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let verdicts: Vec<Value> = decisions(&f, "budget1").iter().map(|r| r["verdict"].clone()).collect();
    // It reached the limit itself (recorded, not fatal); the enforced
    // policy after it still had the whole budget.
    assert_eq!(verdicts, [json!("failed"), json!("allowed")]);
    // Enforced, the same policy uses the budget up for the one after it:
    // the test's policies do notice the limit.
    write("enforce");
    let out = f.run_with_config(&["create", "--bundle", &bundle, "budget2"], &config);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("limit of 4096 host calls"), "{}", stderr(&out));
}

/// Regression: a policy's verdict was taken against the previous
/// policy's output as written, not the typed spec it was handed (which
/// leaves out fields at their default values): a monitored pass-through
/// after one that spells defaults out was logged as changing the spec.
#[test]
fn a_verdict_is_taken_against_the_spec_the_policy_was_handed() {
    let f = Fixture::new();
    std::fs::write(f.root.join("defaults.json"), r#"{"mode": "spell-out-defaults"}"#).unwrap();
    std::fs::write(f.root.join("pass.json"), r#"{"mode": "passthrough"}"#).unwrap();
    let config = f.root.join("runtime.toml");
    std::fs::write(
        &config,
        format!(
            "policies = [\"{TEST_POLICY}:defaults.json\", {{ path = \"{TEST_POLICY}\", settings = \"pass.json\", mode = \"monitor\" }}]\n\
             real_runtime = \"{}\"\nstate_dir = \"{}\"\n",
            f.fake.display(),
            f.state.display()
        ),
    )
    .unwrap();
    let bundle = f.bundle.display().to_string();
    let received = f.spec();
    let out = f.run_with_config(&["create", "--bundle", &bundle, "typed1"], &config);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let records = decisions(&f, "typed1");
    assert_eq!(records.len(), 2, "{records:?}");
    // The first turned `terminal: true` into false, which the typed spec
    // leaves out: its patch applied to what it got gives what runs.
    let mut anchored = received.clone();
    anchored["root"]["path"] = Value::String(
        std::fs::canonicalize(f.bundle.join("rootfs"))
            .unwrap()
            .display()
            .to_string(),
    );
    assert_eq!(records[0]["verdict"], "changed", "{}", records[0]);
    assert!(
        apply_patch(&anchored, &records[0]["patch"]) == f.seen(),
        "{}",
        records[0]
    );
    assert_eq!(
        (&records[1]["verdict"], &records[1]["patch"]),
        (&json!("allowed"), &json!([])),
        "{}",
        records[1]
    );
}

#[test]
fn an_embedded_policy_named_with_settings_in_the_file_is_the_embedded_one() {
    let f = Fixture::new();
    std::fs::write(f.root.join("v8.json"), "{}").unwrap();
    let config = f.root.join("runtime.toml");
    std::fs::write(
        &config,
        format!(
            "policies = [\"buildkit-v0.8:v8.json\"]\nreal_runtime = \"{}\"\nstate_dir = \"{}\"\n",
            f.fake.display(),
            f.state.display()
        ),
    )
    .unwrap();
    let bundle = f.bundle.display().to_string();
    let out = f.run_with_config(&["create", "--bundle", &bundle, "emb"], &config);
    assert!(!stderr(&out).contains("No such file"), "{}", stderr(&out));
    assert_eq!(f.policy_runs("emb"), 1, "{}", stderr(&out));
}

#[test]
fn files_that_decide_what_containers_may_do_must_be_trusted() {
    let f = Fixture::new();
    let bundle = f.bundle.display().to_string();
    let shared_policy = f.root.join("shared.wasm");
    std::fs::copy(HARDENED, &shared_policy).unwrap();
    std::fs::set_permissions(&shared_policy, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = f.create(shared_policy.to_str().unwrap(), "t1");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("lets others write"), "{}", stderr(&out));
    let settings = f.root.join("allow.json");
    std::fs::write(&settings, r#"{"allowed_sources": ["/"]}"#).unwrap();
    nix::unistd::chown(&settings, Some(nix::unistd::Uid::from_raw(4242)), None).unwrap();
    let out = f.create(&format!("{MOUNT_ALLOWLIST}:{}", settings.display()), "t2");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("owned by uid 4242"), "{}", stderr(&out));
    std::fs::set_permissions(&f.fake, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = f.create(HARDENED, "t3");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("real runtime") && stderr(&out).contains("lets others write"),
        "{}",
        stderr(&out)
    );
    std::fs::set_permissions(&f.fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = f.root.join("runtime.toml");
    std::fs::write(&config, format!("policies = [\"{HARDENED}\"]\n")).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = f.run_with_config(&["create", "--bundle", &bundle, "t4"], &config);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("runtime.toml") && stderr(&out).contains("lets others write"),
        "{}",
        stderr(&out)
    );
    assert_eq!(f.passed(), None);
}

#[test]
fn two_wrappers_that_are_each_others_runtime_stop_at_once() {
    let f = Fixture::new();
    // Two copies installed as runc, neither told where the real one is.
    let other = f.root.join("bin/runc");
    std::fs::create_dir_all(other.parent().unwrap()).unwrap();
    std::fs::copy(WRAPPER, &other).unwrap();
    let config = f.root.join("open.toml");
    std::fs::write(&config, "").unwrap();
    let start = std::time::Instant::now();
    let out = Command::new(WRAPPER)
        .env("SPECWRIGHT_RUNTIME_CONFIG", &config)
        .env("PATH", other.parent().unwrap())
        .args(["state", "x"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("specwright-runc again"), "{}", stderr(&out));
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
}

/// The front (`specwright-runc`) hands what needs no policy to the
/// runtime by itself and starts the reviewer (`specwright`, beside it) only
/// for a review: installed without the reviewer, a pass-through still
/// works with policies configured, and a create fails saying what is
/// missing, before the runtime runs.
#[test]
fn the_front_passes_through_alone_and_reviews_through_specwright_beside_it() {
    let f = Fixture::new();
    let alone = f.root.join("alone");
    std::fs::create_dir_all(&alone).unwrap();
    let front = alone.join("specwright-runc");
    std::fs::copy(WRAPPER, &front).unwrap();
    let config = f.root.join("open.toml");
    std::fs::write(&config, "allow_flag_overrides = true\n").unwrap();
    let run = |args: &[&str]| {
        Command::new(&front)
            .env("SPECWRIGHT_RUNTIME_CONFIG", &config)
            .args(f.with_state(args))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = run(&["--policy", HARDENED, "state", "x"]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(f.passed().unwrap(), ["state", "x"]);
    let bundle = f.bundle.display().to_string();
    let out = run(&["--policy", HARDENED, "create", "--bundle", &bundle, "c1"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&alone.join("specwright").display().to_string())
            && stderr(&out).contains("installed in the same directory"),
        "{}",
        stderr(&out)
    );
    assert_eq!(f.passed(), None);
}

/// The reviewer is started by the front, which may be on PATH as `runc`:
/// looking for the real runtime by name, it passes over the front as it
/// passes over itself.
#[test]
fn the_reviewer_never_takes_the_front_on_path_for_the_real_runtime() {
    let f = Fixture::new();
    let first = f.root.join("first");
    let second = f.root.join("second");
    std::fs::create_dir_all(&first).unwrap();
    std::fs::create_dir_all(&second).unwrap();
    std::os::unix::fs::symlink(WRAPPER, first.join("runc")).unwrap();
    std::fs::copy(&f.fake, second.join("runc")).unwrap();
    let config = f.root.join("plain.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\npolicies = [{HARDENED:?}]\n",
            f.state.display().to_string()
        ),
    )
    .unwrap();
    let bundle = f.bundle.display().to_string();
    let out = Command::new(WRAPPER)
        .env("SPECWRIGHT_RUNTIME_CONFIG", &config)
        .env("PATH", format!("{}:{}", first.display(), second.display()))
        .args(["create", "--bundle", &bundle, "c1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let passed = f.passed().unwrap();
    assert_eq!(passed.first().map(String::as_str), Some("create"), "{passed:?}");
}

#[test]
fn an_interrupted_review_leaves_no_lock_and_no_change() {
    let f = Fixture::new();
    let settings = f.root.join("spin.json");
    std::fs::write(&settings, r#"{"mode": "spin"}"#).unwrap();
    let before = std::fs::read(f.config()).unwrap();
    let bundle = f.bundle.display().to_string();
    let policy = format!("{TEST_POLICY}:{}", settings.display());
    let args = f.with_state(&[
        "--policy-timeout-ms",
        "60000",
        "--policy",
        &policy,
        "create",
        "-b",
        &bundle,
        "spin1",
    ]);
    let config = f.root.join("open.toml");
    std::fs::write(&config, "allow_flag_overrides = true\n").unwrap();
    let child = Command::new(WRAPPER)
        .env("SPECWRIGHT_RUNTIME_CONFIG", &config)
        .args(&args)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the policy spins (its step is locked), then stop it.
    let lock = f.state.join("locks/spin1.lock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !lock.exists() {
        assert!(std::time::Instant::now() < deadline, "the review never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{}", stderr(&out));
    assert!(!lock.exists(), "the lock was left behind");
    assert_eq!(std::fs::read(f.config()).unwrap(), before);
    assert_eq!(f.passed(), None);
}

#[test]
fn a_long_list_of_problems_is_a_short_message() {
    let f = Fixture::new();
    // What podman --privileged wrote, as 55 schema errors, once.
    f.edit_spec(|spec| {
        let devices: Vec<Value> = (0..60)
            .map(|i| json!({"path": format!("/dev/x{i}"), "type": "c", "major": 1, "minor": i, "fileMode": "rw"}))
            .collect();
        spec["linux"]["devices"] = Value::Array(devices);
    });
    let log = f.root.join("log.json");
    let mut args = f.with_state(&[
        "--policy",
        HARDENED,
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
    ]);
    args.extend(["create", "-b", f.bundle.to_str().unwrap(), "many"].map(str::to_string));
    let out = f.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.len() < 1500, "{} bytes: {err}", err.len());
    assert!(err.contains("and 55 more"), "{err}");
}

#[test]
fn a_broken_or_missing_spec_is_an_error_naming_the_file() {
    let f = Fixture::new();
    let bundle = f.bundle.display().to_string();
    std::fs::write(f.config(), "{\"ociVersion\": ").unwrap();
    let out = f.create(HARDENED, "broken");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("config.json"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(f.config()).unwrap(), "{\"ociVersion\": ");
    std::fs::write(f.config(), "{\"ociVersion\": \"1.0.2\", \"process\": {\"args\": 3}}").unwrap();
    let out = f.create(HARDENED, "wrong");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("process"), "{}", stderr(&out));
    std::fs::remove_file(f.config()).unwrap();
    let out = f.create(HARDENED, "missing");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("{bundle}/config.json")) && stderr(&out).contains("No such file"),
        "{}",
        stderr(&out)
    );
    assert_eq!(f.passed(), None);
}

#[test]
fn a_container_start_compiles_nothing_once_the_cache_holds_the_policy() {
    let f = Fixture::new();
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
    let out = f.create(HARDENED, "first");
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let compiled = cache();
    assert!(!compiled.is_empty(), "the first start compiles into the cache");
    let out = f.create(HARDENED, "second");
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(cache(), compiled, "the second start wrote nothing to the cache");
}

/// Thirty container starts that miss the compile cache at once compile
/// the policy once: the first takes the entry's lock, the others wait for
/// it and map what it wrote. Every start succeeds, the cache holds the one
/// whole entry (no temporary file left), and a later start compiles
/// nothing.
#[test]
fn concurrent_starts_with_a_cold_cache_compile_the_policy_once() {
    const STARTS: usize = 30;
    const COMPILED: &str = "compiled a policy into the compile cache";
    let f = Fixture::new();
    let config = f.root.join("open.toml");
    std::fs::write(&config, "allow_flag_overrides = true\n").unwrap();
    let start = |i: usize| {
        let bundle = f.root.join(format!("bundle-{i}"));
        std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
        std::fs::copy(f.config(), bundle.join("config.json")).unwrap();
        let bundle = bundle.display().to_string();
        let id = format!("c{i}");
        Command::new(WRAPPER)
            .env("SPECWRIGHT_RUNTIME_CONFIG", &config)
            .env("SPECWRIGHT_LOG", "info")
            .args(f.with_state(&["--policy", HARDENED, "create", "--bundle", &bundle, &id]))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running specwright-runc")
    };
    let children: Vec<_> = (0..STARTS).map(start).collect();
    let outputs: Vec<Output> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    for out in &outputs {
        assert_eq!(out.status.code(), Some(7), "{}", stderr(out));
    }
    let compiles = outputs.iter().filter(|out| stderr(out).contains(COMPILED)).count();
    assert_eq!(
        compiles,
        1,
        "{}",
        outputs.iter().map(stderr).collect::<Vec<_>>().join("\n")
    );
    let names: Vec<String> = std::fs::read_dir(f.state.join("cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let entries = names.iter().filter(|n| n.ends_with(".cwasm")).count();
    assert!(entries == 1 && !names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    let later = start(STARTS).wait_with_output().unwrap();
    assert_eq!(later.status.code(), Some(7), "{}", stderr(&later));
    assert!(!stderr(&later).contains(COMPILED), "{}", stderr(&later));
}

/// `path`'s samples as Prometheus' own Python client parses the text
/// format: (name, labels, value) each.
fn prometheus_samples(path: &Path) -> Vec<(String, serde_json::Map<String, Value>, f64)> {
    let script = "import json, sys\n\
                  from prometheus_client.parser import text_string_to_metric_families\n\
                  print(json.dumps([[s.name, s.labels, s.value] for f in text_string_to_metric_families(open(sys.argv[1]).read()) for s in f.samples]))";
    // Debian's Python, which has python3-prometheus-client (not a pyenv's).
    let out = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .arg(path)
        .output()
        .expect("/usr/bin/python3 is not installed");
    assert!(
        out.status.success(),
        "the Prometheus text parser (apt-get install python3-prometheus-client) refused {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let samples: Vec<(String, serde_json::Map<String, Value>, f64)> = serde_json::from_slice(&out.stdout).unwrap();
    samples
}

#[test]
fn thirty_concurrent_reviews_lose_no_count_in_the_metrics_file() {
    const STARTS: usize = 30;
    let f = Fixture::new();
    std::fs::write(f.root.join("allow.json"), r#"{"allowed_sources": ["/"]}"#).unwrap();
    let textfile = f.root.join("textfile/specwright.prom");
    std::fs::create_dir_all(textfile.parent().unwrap()).unwrap();
    let config = f.root.join("runtime.toml");
    std::fs::write(
        &config,
        format!(
            "policies = [{{ path = \"{HARDENED}\", mode = \"monitor\" }}, \"{MOUNT_ALLOWLIST}:allow.json\"]\n\
             real_runtime = \"{}\"\nstate_dir = \"{}\"\nmetrics_file = \"{}\"\n",
            f.fake.display(),
            f.state.display(),
            textfile.display()
        ),
    )
    .unwrap();
    // Every other container has the host's network, which hardened would deny.
    let start = |i: usize| {
        let bundle = f.root.join(format!("bundle-{i}"));
        std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
        let mut spec = f.spec();
        if i % 2 == 1 {
            spec["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .retain(|n| n["type"] != "network");
        }
        std::fs::write(bundle.join("config.json"), spec.to_string()).unwrap();
        Command::new(WRAPPER)
            .env("SPECWRIGHT_RUNTIME_CONFIG", &config)
            .args(["create", "--bundle", bundle.to_str().unwrap(), &format!("m{i}")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running specwright-runc")
    };
    // A reader meanwhile only ever sees a whole file: each is replaced
    // atomically, never written in place.
    let done = std::sync::atomic::AtomicBool::new(false);
    let last_line = "specwright_compile_cache_total{result=\"compiled\"}";
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut seen = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(text) = std::fs::read_to_string(&textfile) {
                    let last = text.lines().last().unwrap_or_default();
                    assert!(
                        text.ends_with('\n') && last.starts_with(last_line),
                        "a partial file:\n{text}"
                    );
                    seen += 1;
                }
            }
            seen
        });
        let children: Vec<_> = (0..STARTS).map(start).collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
            assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0, "the reader never saw the file");
    });
    assert_eq!(
        std::fs::metadata(&textfile).unwrap().mode() & 0o777,
        0o644,
        "node_exporter reads it as its own user"
    );
    let samples = prometheus_samples(&textfile);
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        samples
            .iter()
            .filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k) == Some(&json!(v))))
            .map(|(_, _, v)| v)
            .sum()
    };
    let n = STARTS as f64;
    assert_eq!(
        value("specwright_reviews_total", &[("outcome", "approved")]),
        n,
        "{samples:?}"
    );
    assert_eq!(value("specwright_reviews_total", &[("outcome", "denied")]), 0.0);
    assert_eq!(value("specwright_review_duration_seconds_count", &[]), n);
    assert_eq!(value("specwright_review_duration_seconds_bucket", &[("le", "+Inf")]), n);
    assert!(value("specwright_review_duration_seconds_sum", &[]) > 0.0);
    let hardened = [("policy", HARDENED), ("mode", "monitor")];
    assert_eq!(value("specwright_policy_decisions_total", &hardened), n);
    assert_eq!(
        value(
            "specwright_policy_decisions_total",
            &[hardened[0], hardened[1], ("verdict", "denied")]
        ),
        n / 2.0
    );
    let allowlist = [("policy", MOUNT_ALLOWLIST), ("mode", "enforce"), ("verdict", "allowed")];
    assert_eq!(value("specwright_policy_decisions_total", &allowlist), n, "{samples:?}");
    assert_eq!(value("specwright_policy_duration_seconds_count", &hardened), n);
    // Two policies loaded by each start; each compiled once.
    let hits = value("specwright_compile_cache_total", &[("result", "hit")]);
    let compiled = value("specwright_compile_cache_total", &[("result", "compiled")]);
    assert_eq!((hits + compiled, compiled), (2.0 * n, 2.0), "{samples:?}");
}

/// A start that finds the metrics locked longer than it waits (a holder
/// stopped, say) does not wait on: its counts are spooled, and the next
/// start that takes the lock adds them. No count is lost.
#[test]
fn counts_of_a_start_that_finds_the_metrics_locked_are_spooled_not_lost() {
    let f = Fixture::new();
    std::fs::write(f.root.join("allow.json"), r#"{"allowed_sources": ["/"]}"#).unwrap();
    let textfile = f.root.join("specwright.prom");
    let config = f.root.join("runtime.toml");
    std::fs::write(
        &config,
        format!(
            "policies = [\"{MOUNT_ALLOWLIST}:allow.json\"]\nreal_runtime = \"{}\"\nstate_dir = \"{}\"\nmetrics_file = \"{}\"\n",
            f.fake.display(),
            f.state.display(),
            textfile.display()
        ),
    )
    .unwrap();
    let bundle = f.bundle.display().to_string();
    let out = f.run_with_config(&["create", "--bundle", &bundle, "spool1"], &config);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    // Another process holds the lock for 3 s (util-linux's flock).
    let mut holder = Command::new("flock")
        .arg(f.state.join("metrics.lock"))
        .args(["sleep", "3"])
        .spawn()
        .expect("flock (util-linux) is not installed");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let start = std::time::Instant::now();
    let out = f.run_with_config(&["create", "--bundle", &bundle, "spool2"], &config);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    assert!(
        start.elapsed() < std::time::Duration::from_millis(2500),
        "it waited for the holder"
    );
    assert_eq!(std::fs::read_dir(f.state.join("metrics-spool")).unwrap().count(), 1);
    holder.wait().unwrap();
    let out = f.run_with_config(&["create", "--bundle", &bundle, "spool3"], &config);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let metrics = std::fs::read_to_string(&textfile).unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "specwright_reviews_total{outcome=\"approved\"} 3"),
        "{metrics}"
    );
    assert_eq!(std::fs::read_dir(f.state.join("metrics-spool")).unwrap().count(), 0);
}

/// Regression: a start waiting for another process compiling its policy
/// did not notice SIGTERM until the wait's bound (60 s); it now stops at
/// once, saying why, and leaves nothing behind.
#[test]
fn a_start_waiting_for_a_compile_stops_on_sigterm() {
    let f = Fixture::new();
    // The entry's name, from a first start; then the entry gone and its
    // compile lock held here, as by a process compiling it.
    let out = f.create(HARDENED, "first");
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(f.passed().is_some());
    let cache = f.state.join("cache");
    let entry = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .unwrap();
    std::fs::remove_file(&entry).unwrap();
    let lock = std::fs::File::open(format!("{}.lock", entry.display())).unwrap();
    let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap();
    let reviewed_before = std::fs::read_dir(f.state.join("reviewed")).unwrap().count();

    let config = f.root.join("open.toml");
    std::fs::write(&config, "allow_flag_overrides = true\n").unwrap();
    let bundle = f.root.join("bundle-waiting");
    std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
    std::fs::copy(f.config(), bundle.join("config.json")).unwrap();
    let child = Command::new(WRAPPER)
        .env("SPECWRIGHT_RUNTIME_CONFIG", &config)
        .args(f.with_state(&[
            "--policy",
            HARDENED,
            "create",
            "--bundle",
            bundle.to_str().unwrap(),
            "waiting",
        ]))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let asked = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(5),
        "stopped {:?} after SIGTERM",
        asked.elapsed()
    );
    assert_ne!(out.status.code(), Some(7), "the runtime ran: {}", stderr(&out));
    assert!(
        stderr(&out).contains("stopped by SIGTERM while waiting for another process compiling this policy"),
        "{}",
        stderr(&out)
    );
    assert_eq!(f.passed(), None, "the runtime was handed the create");
    assert_eq!(
        std::fs::read_dir(f.state.join("reviewed")).unwrap().count(),
        reviewed_before,
        "something was kept for the stopped start"
    );
}

/// Regression: a settings file whose name does not end in `.json` was
/// read as part of the policy's path (`reading policy.wasm:settings`).
#[test]
fn a_settings_file_may_have_any_name_and_an_argument_read_two_ways_is_an_error() {
    let f = Fixture::new();
    let settings = f.root.join("allow-settings");
    std::fs::write(&settings, r#"{"allowed_sources": ["/"]}"#).unwrap();
    let out = f.create(&format!("{MOUNT_ALLOWLIST}:{}", settings.display()), "named");
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    // `P:S` where P and S are files, and `P:S` is one too (a directory
    // `p:` holding the settings' path): the argument reads two ways.
    let policy = f.root.join("p");
    std::fs::copy(MOUNT_ALLOWLIST, &policy).unwrap();
    let arg = format!("{}:{}", policy.display(), settings.display());
    std::fs::create_dir_all(Path::new(&arg).parent().unwrap()).unwrap();
    std::fs::copy(MOUNT_ALLOWLIST, &arg).unwrap();
    let out = f.create(&arg, "two-ways");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("reads two ways"), "{}", stderr(&out));
}

fn chown(path: &Path, uid: u32) {
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        path,
        Some(nix::unistd::Uid::from_raw(uid)),
        None,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// Regression (red team, round 2): runc's `delete` runs the poststop hooks
/// its state file names (crun's, those of the config it saved), `kill`
/// signals the pid it names: a state root another user could write is
/// refused for every subcommand that acts on one, and so is one spelled so
/// that the runtime reaches another directory than the wrapper checked.
#[test]
fn a_runtime_state_root_another_user_could_write_is_refused_for_every_subcommand() {
    let f = Fixture::new();
    let bundle = f.bundle.display().to_string();
    let theirs = f.root.join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    chown(&theirs, 65534);
    let sticky = f.root.join("sticky");
    std::fs::create_dir(&sticky).unwrap();
    std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let create = format!("create --bundle {bundle} c1");
    let lines = [
        "delete --force c1",
        "delete c1",
        "kill c1 KILL",
        "start c1",
        "pause c1",
        "resume c1",
        "state c1",
        "ps c1",
        "events c1",
        "list",
        "checkpoint --image-path /tmp/i c1",
        "exec c1 true",
        "update --memory 1 c1",
        &create,
    ];
    // Another user's; missing below another user's (the runtime would make
    // it there); missing in a directory anyone may write.
    for root in [theirs.clone(), theirs.join("runc"), sticky.join("runc")] {
        for line in lines {
            let mut args = f.with_state(&["--policy", HARDENED, "--root", root.to_str().unwrap()]);
            args.extend(line.split_whitespace().map(str::to_string));
            let out = f.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
            assert_eq!(
                out.status.code(),
                Some(1),
                "{} {line}: {}",
                root.display(),
                stderr(&out)
            );
            assert!(
                stderr(&out).contains("the runtime's state root") && stderr(&out).contains("not trusted"),
                "{} {line}: {}",
                stderr(&out),
                root.display()
            );
            assert_eq!(f.passed(), None, "{line}");
        }
    }
    // runc cleans `--root`; crun makes what is missing, then walks `..`:
    // both reach the directory above, which the wrapper did not check.
    for root in [
        format!("{}/nx/..", theirs.display()),
        format!("{}/./runc", f.root.display()),
        format!("{}/", f.root.display()),
        format!("/{}", f.root.display()),
    ] {
        for line in ["delete --force c1", "exec c1 true", create.as_str()] {
            let mut args = f.with_state(&["--policy", HARDENED, "--root", &root]);
            args.extend(line.split_whitespace().map(str::to_string));
            let out = f.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
            assert_eq!(out.status.code(), Some(1), "{root} {line}: {}", stderr(&out));
            assert!(
                stderr(&out).contains("not spelled plainly"),
                "{root} {line}: {}",
                stderr(&out)
            );
            assert_eq!(f.passed(), None, "{root} {line}");
        }
    }
    // crun as root takes its root from XDG_RUNTIME_DIR when no --root is
    // given: the wrapper checks that one.
    let fake_crun = f.root.join("fake-crun");
    std::fs::copy(&f.fake, &fake_crun).unwrap();
    let config = f.root.join("open.toml");
    std::fs::write(&config, "allow_flag_overrides = true\n").unwrap();
    let state = f.state.display().to_string();
    let out = Command::new(WRAPPER)
        .env("SPECWRIGHT_RUNTIME_CONFIG", &config)
        .env("XDG_RUNTIME_DIR", &theirs)
        .args(["--policy", HARDENED, "--state-dir", &state, "--real-runtime"])
        .arg(&fake_crun)
        .args(["delete", "--force", "c1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("{}/crun", theirs.display())),
        "{}",
        stderr(&out)
    );
    assert_eq!(f.passed(), None);
    // `spec` and `features` act on no state root; a trusted root passes.
    let trusted = f.root.join("runc-root").display().to_string();
    for line in ["spec --bundle /tmp/b", "features", "delete --force c1", "kill c1 KILL"] {
        let mut args = f.with_state(&["--policy", HARDENED, "--root"]);
        let root = if line.starts_with('s') || line.starts_with('f') {
            theirs.display().to_string()
        } else {
            trusted.clone()
        };
        args.push(root.clone());
        args.extend(line.split_whitespace().map(str::to_string));
        let out = f.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(out.status.code(), Some(7), "{line}: {}", stderr(&out));
        assert_eq!(f.passed().unwrap(), words(&format!("--root {root} {line}")), "{line}");
    }
}

/// Regression (red team, round 2): crun follows the rootfs path again when
/// it runs, so a rootfs reached through another user's directory could be
/// swapped for a symlink to anywhere once approved. No user but root (and
/// the one the spec maps to the container's root) may be able to redirect
/// a host path the runtime opens after the review.
#[test]
fn a_host_path_another_user_could_redirect_after_the_review_is_refused() {
    let f = Fixture::new();
    let settings = f.root.join("allow-all.json");
    std::fs::write(&settings, r#"{"allowed_sources": ["/"]}"#).unwrap();
    let policy = format!("{MOUNT_ALLOWLIST}:{}", settings.display());
    let theirs = f.root.join("theirs");
    for dir in ["rootfs", "data", "lower"] {
        std::fs::create_dir_all(theirs.join(dir)).unwrap();
    }
    std::fs::write(theirs.join("netns"), "").unwrap();
    std::fs::write(theirs.join("hook"), "").unwrap();
    chown(&theirs, 65534);
    let sticky = f.root.join("sticky");
    for dir in ["nobodys", "roots", "data"] {
        std::fs::create_dir_all(sticky.join(dir)).unwrap();
    }
    std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).unwrap();
    chown(&sticky.join("nobodys"), 65534);
    let link = f.root.join("link");
    std::os::unix::fs::symlink(sticky.join("data"), &link).unwrap();
    chown(&link, 65534);
    // Storage of the user a spec maps to the container's root (podman's
    // with --uidmap: subordinate ids), in a directory every user may enter.
    let storage = f.root.join("storage");
    std::fs::create_dir_all(storage.join("mapped/rootfs")).unwrap();
    std::fs::write(storage.join("mapped/hook"), "").unwrap();
    std::fs::set_permissions(&storage, std::fs::Permissions::from_mode(0o711)).unwrap();
    chown(&storage.join("mapped"), 100000);
    chown(&storage.join("mapped/rootfs"), 100000);
    let mapped = |spec: &mut Value, host: u32| {
        spec["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "user"}));
        spec["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": host, "size": 65536}]);
        spec["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": host, "size": 65536}]);
    };
    let original = f.spec();
    let at = |path: &Path| path.display().to_string();
    let bind = |source: String| json!({"destination": "/data", "type": "bind", "source": source, "options": ["rbind"]});
    let mounts = original["mounts"].as_array().unwrap().len();
    type Edit<'a> = Box<dyn Fn(&mut Value) + 'a>;
    let cases: Vec<(Edit, String)> = vec![
        (
            Box::new(|spec| spec["root"]["path"] = json!(at(&theirs.join("rootfs")))),
            format!("root.path {}", at(&theirs.join("rootfs"))),
        ),
        (
            Box::new(|spec| spec["root"]["path"] = json!(at(&sticky.join("nobodys")))),
            "(uid 65534) may be moved by its owner".to_string(),
        ),
        (
            Box::new(|spec| {
                spec["mounts"]
                    .as_array_mut()
                    .unwrap()
                    .push(bind(at(&theirs.join("data"))))
            }),
            format!("mounts[{mounts}].source"),
        ),
        (
            Box::new(|spec| spec["mounts"].as_array_mut().unwrap().push(bind(at(&link)))),
            "is a symlink of uid 65534".to_string(),
        ),
        (
            Box::new(|spec| {
                spec["mounts"].as_array_mut().unwrap().push(json!({
                    "destination": "/o", "type": "overlay", "source": "overlay",
                    "options": [format!("lowerdir={}:{}", at(&sticky.join("roots")), at(&theirs.join("lower")))],
                }))
            }),
            format!("mounts[{mounts}].options"),
        ),
        (
            Box::new(|spec| common::namespace_path(spec, "network", &at(&theirs.join("netns")))),
            "linux.namespaces[".to_string(),
        ),
        (
            Box::new(|spec| spec["hooks"] = json!({"poststop": [{"path": at(&theirs.join("hook"))}]})),
            "hooks.poststop[0].path".to_string(),
        ),
        // Resolved by the runtime before pivot_root, in the host's files.
        (
            Box::new(|spec| spec["hooks"] = json!({"createContainer": [{"path": at(&theirs.join("hook"))}]})),
            "hooks.createContainer[0].path".to_string(),
        ),
        // Regression (red team, round 3): mapping the container's root to
        // the attacker made the attacker's directories trusted. The mapped
        // user counts only with a user namespace the spec creates, every
        // id it maps a subordinate one, and only for what the container
        // opens.
        (
            Box::new(|spec| {
                mapped(spec, 65534);
                spec["root"]["path"] = json!(at(&theirs.join("rootfs")));
            }),
            "(uid 65534, mode 755) is another user's to change".to_string(),
        ),
        (
            Box::new(|spec| {
                mapped(spec, 100000);
                spec["linux"]["namespaces"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|n| n["type"] != "user");
                spec["root"]["path"] = json!(at(&storage.join("mapped/rootfs")));
            }),
            "(uid 100000, mode 755) is another user's to change".to_string(),
        ),
        (
            Box::new(|spec| {
                mapped(spec, 100000);
                spec["linux"]["uidMappings"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"containerID": 65536, "hostID": 0, "size": 1}));
                spec["root"]["path"] = json!(at(&storage.join("mapped/rootfs")));
            }),
            "(uid 100000, mode 755) is another user's to change".to_string(),
        ),
        (
            Box::new(|spec| {
                mapped(spec, 100000);
                spec["root"]["path"] = json!(at(&storage.join("mapped/rootfs")));
                spec["hooks"] = json!({"poststop": [{"path": at(&storage.join("mapped/hook"))}]});
            }),
            "hooks.poststop[0].path".to_string(),
        ),
    ];
    for (i, (edit, needle)) in cases.iter().enumerate() {
        let mut spec = original.clone();
        edit(&mut spec);
        std::fs::write(f.config(), spec.to_string()).unwrap();
        let out = f.create(&policy, &format!("r{i}"));
        assert_eq!(out.status.code(), Some(1), "{needle}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{needle}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("another user could put something else there"),
            "{}",
            stderr(&out)
        );
        assert_eq!(f.passed(), None, "{needle}");
    }
    // Root's, in a sticky directory; the storage of the subordinate user
    // the spec maps to the container's root (podman's with --uidmap); a
    // namespace
    // named by the kernel's link: each stays what was approved.
    let accepted: Vec<Edit> = vec![
        Box::new(|spec| {
            spec["root"]["path"] = json!(at(&sticky.join("roots")));
            spec["mounts"]
                .as_array_mut()
                .unwrap()
                .push(bind(at(&sticky.join("data"))));
        }),
        Box::new(|spec| {
            mapped(spec, 100000);
            spec["root"]["path"] = json!(at(&storage.join("mapped/rootfs")));
        }),
        Box::new(|spec| common::namespace_path(spec, "network", "/proc/self/ns/net")),
    ];
    for (i, edit) in accepted.iter().enumerate() {
        let mut spec = original.clone();
        edit(&mut spec);
        std::fs::write(f.config(), spec.to_string()).unwrap();
        let out = f.create(&policy, &format!("a{i}"));
        assert_eq!(out.status.code(), Some(7), "case {i}: {}", stderr(&out));
        assert!(f.passed().is_some());
    }
}

/// runc takes ids such as `a+b` and `.hidden`; none with a `/`.
#[test]
fn container_ids_the_runtimes_take_are_taken_and_paths_are_not() {
    let f = Fixture::new();
    for id in ["a+b", ".hidden", "a,b"] {
        let out = f.create(HARDENED, id);
        assert_eq!(out.status.code(), Some(7), "{id}: {}", stderr(&out));
        assert_eq!(f.passed().unwrap().last().map(String::as_str), Some(id));
    }
    for id in ["../x", "a/b", ".."] {
        let out = f.create(HARDENED, id);
        assert_eq!(out.status.code(), Some(1), "{id}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("not one a runtime keeps"),
            "{id}: {}",
            stderr(&out)
        );
        assert_eq!(f.passed(), None);
    }
}

/// Regression (red team, round 3): runc writes `--pid-file` as root,
/// following symlinks, appends to `--log`, and hands the container's
/// terminal to whatever listens at `--console-socket`: each must be a path
/// no other user can redirect.
#[test]
fn files_the_runtime_writes_as_root_must_be_where_no_other_user_can_redirect_them() {
    let f = Fixture::new();
    let bundle = f.bundle.display().to_string();
    let theirs = f.root.join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    chown(&theirs, 65534);
    let pid_file = theirs.join("init.pid").display().to_string();
    let log = theirs.join("log.json").display().to_string();
    let socket = theirs.join("console.sock").display().to_string();
    // A container made through the wrapper, for the exec below.
    let out = f.create(HARDENED, "c1");
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    f.passed();
    for (args, needle) in [
        (
            vec!["create", "--bundle", &bundle, "--pid-file", &pid_file, "c1"],
            "--pid-file",
        ),
        (
            vec!["run", "--bundle", &bundle, "--console-socket", &socket, "c1"],
            "--console-socket",
        ),
        (vec!["--log", &log, "create", "--bundle", &bundle, "c1"], "--log"),
        (vec!["--log", &log, "delete", "--force", "c1"], "--log"),
        (vec!["exec", "--pid-file", &pid_file, "c1", "true"], "--pid-file"),
    ] {
        let mut all = f.with_state(&["--policy", HARDENED]);
        all.extend(args.iter().map(|a| a.to_string()));
        let out = f.run(&all.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(needle) && stderr(&out).contains("another user could put something else there"),
            "{args:?}: {}",
            stderr(&out)
        );
        assert_eq!(f.passed(), None, "{args:?}");
        assert!(
            !theirs.join("log.json").exists(),
            "the wrapper wrote its error through the log path"
        );
    }
    // Where only root may write, they pass to the runtime.
    let pid_file = f.root.join("init.pid").display().to_string();
    let log = f.root.join("log.json").display().to_string();
    let mut all = f.with_state(&["--policy", HARDENED, "--log", &log]);
    all.extend(["create", "--bundle", &bundle, "--pid-file", &pid_file, "c2"].map(str::to_string));
    let out = f.run(&all.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(f.passed().unwrap().contains(&pid_file));
}

/// Regression (red team, round 4): a poststop hook named
/// `/proc/<pid>/exe` ran, at `delete`, whatever process had that pid by
/// then (anyone's, after the pids wrapped). The chain judges, and the
/// runtime runs, the program the process runs at review; any other hook
/// path under /proc is refused.
#[test]
fn a_hook_named_through_a_process_is_named_by_its_program() {
    let f = Fixture::new();
    let settings = f.root.join("allow-all.json");
    std::fs::write(&settings, r#"{"allowed_sources": ["/"]}"#).unwrap();
    let policy = format!("{MOUNT_ALLOWLIST}:{}", settings.display());
    let mut sleeper = Command::new("sleep").arg("60").stdin(Stdio::null()).spawn().unwrap();
    let exe = format!("/proc/{}/exe", sleeper.id());
    let program = std::fs::read_link(&exe).unwrap().display().to_string();
    let original = f.spec();
    let mut spec = original.clone();
    spec["hooks"] = json!({
        "poststop": [{"path": exe, "args": ["sleep", "0"]}],
        "startContainer": [{"path": "/proc/self/exe"}],
    });
    std::fs::write(f.config(), spec.to_string()).unwrap();
    let out = f.create(&policy, "h1");
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    f.passed();
    let seen = f.seen();
    assert_eq!(seen["hooks"]["poststop"][0]["path"], json!(program), "{seen}");
    assert_eq!(seen["hooks"]["poststop"][0]["args"], json!(["sleep", "0"]));
    // Resolved in the container, after pivot_root: left as it is.
    assert_eq!(seen["hooks"]["startContainer"][0]["path"], json!("/proc/self/exe"));
    for path in ["/proc/self/exe", "/proc/1/root/bin/sh", "/proc/thread-self/exe"] {
        let mut spec = original.clone();
        spec["hooks"] = json!({"createRuntime": [{"path": path}]});
        std::fs::write(f.config(), spec.to_string()).unwrap();
        let out = f.create(&policy, "h2");
        assert_eq!(out.status.code(), Some(1), "{path}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("a hook under /proc other than a process's exe"),
            "{path}: {}",
            stderr(&out)
        );
        assert_eq!(f.passed(), None);
    }
}

/// Regression (red team, round 4): the runtime hands the container's
/// seccomp notifications to whoever listens at `listenerPath`, which can
/// answer its syscalls: the socket must be one no other user can
/// redirect, and hardened denies an agent its settings do not name.
#[test]
fn a_seccomp_agent_is_checked_like_every_host_path_and_hardened_names_the_allowed_ones() {
    let f = Fixture::new();
    let theirs = f.root.join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    chown(&theirs, 65534);
    let settings = f.root.join("allow-all.json");
    std::fs::write(&settings, r#"{"allowed_sources": ["/"]}"#).unwrap();
    let open = format!("{MOUNT_ALLOWLIST}:{}", settings.display());
    let original = f.spec();
    let with_agent = |path: &Path| {
        let mut spec = original.clone();
        spec["linux"]["seccomp"]["listenerPath"] = json!(path.display().to_string());
        std::fs::write(f.config(), spec.to_string()).unwrap();
    };
    with_agent(&theirs.join("agent.sock"));
    let out = f.create(&open, "s1");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("linux.seccomp.listenerPath"), "{}", stderr(&out));
    assert_eq!(f.passed(), None);
    let agent = f.root.join("agent.sock");
    with_agent(&agent);
    let out = f.create(HARDENED, "s2");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("allowed_seccomp_agents"), "{}", stderr(&out));
    assert_eq!(f.passed(), None);
    let allowed = f.root.join("agents.json");
    std::fs::write(&allowed, json!({"allowed_seccomp_agents": [agent]}).to_string()).unwrap();
    let out = f.create(&format!("{HARDENED}:{}", allowed.display()), "s3");
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(f.passed().is_some());
}

/// Regression (red team, round 4): crun reads `LISTEN_FDS=3x` as 3, runc
/// as nothing; the wrapper checked none of them.
#[test]
fn a_listen_fds_the_runtimes_read_differently_is_refused() {
    let f = Fixture::new();
    let bundle = f.bundle.display().to_string();
    let config = f.root.join("open.toml");
    std::fs::write(&config, "allow_flag_overrides = true\n").unwrap();
    let args = f.with_state(&["--policy", HARDENED, "create", "--bundle", &bundle, "l1"]);
    for (value, refused) in [("1x", true), (" 1", true), ("+1", true), ("", false), ("0", false)] {
        let out = Command::new(WRAPPER)
            .env("SPECWRIGHT_RUNTIME_CONFIG", &config)
            .env("LISTEN_FDS", value)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        if refused {
            assert_eq!(out.status.code(), Some(1), "{value:?}: {}", stderr(&out));
            assert!(stderr(&out).contains("LISTEN_FDS"), "{value:?}: {}", stderr(&out));
            assert_eq!(f.passed(), None);
        } else {
            assert_eq!(out.status.code(), Some(7), "{value:?}: {}", stderr(&out));
            f.passed();
        }
    }
}
