//! Policies through a real OCI registry: Debian's `docker-registry`
//! (distribution) started on loopback by each test, over TLS with a
//! certificate of the test's own CA and htpasswd basic auth (or plain
//! HTTP), and `wkg` (wasm-pkg-tools) on the other side. README's "Running
//! a fleet" walk-through is what these do: push, pull, run from the state
//! dir, never the network at a start.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;

use common::scene::Scene;

const SPECWRIGHT: &str = env!("CARGO_BIN_EXE_specwright");
const WRAPPER: &str = env!("CARGO_BIN_EXE_specwright-runc");
const HARDENED: &str = env!("SPECWRIGHT_HARDENED_WASM");
const ENV_GUARD: &str = env!("SPECWRIGHT_ENV_GUARD_WASM");
const USER: &str = "ci";
const PASSWORD: &str = "s3cret-pass";

/// A registry of the test's own, stopped when dropped.
struct Registry {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
    tls: bool,
}

fn run(command: &mut Command) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e} (scripts/setup installs what the tests run)"));
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Registry {
    fn start(tls: bool) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        if tls {
            // A CA and a server certificate it signed (rustls, in wkg,
            // refuses a CA certificate as a server's).
            run(Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=test-ca",
                ])
                .args(["-keyout", "ca.key", "-out", "ca.pem"])
                .current_dir(d));
            run(Command::new("openssl")
                .args(["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1"])
                .args(["-keyout", "server.key", "-out", "server.csr"])
                .current_dir(d));
            std::fs::write(
                d.join("ext.cnf"),
                "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
            )
            .unwrap();
            run(Command::new("openssl")
                .args([
                    "x509",
                    "-req",
                    "-in",
                    "server.csr",
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                ])
                .args(["-days", "2", "-extfile", "ext.cnf", "-out", "server.pem"])
                .current_dir(d));
        }
        let htpasswd = run(Command::new("htpasswd").args(["-Bbn", USER, PASSWORD]));
        std::fs::write(d.join("htpasswd"), &htpasswd.stdout).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let tls_section = if tls {
            format!(
                "  tls:\n    certificate: {0}/server.pem\n    key: {0}/server.key\n",
                d.display()
            )
        } else {
            String::new()
        };
        std::fs::write(
            d.join("config.yml"),
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {0}/data\n\
                 http:\n  addr: 127.0.0.1:{port}\n  secret: test-only\n{tls_section}\
                 auth:\n  htpasswd:\n    realm: specwright-test\n    path: {0}/htpasswd\n",
                d.display()
            ),
        )
        .unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(d.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("registry.log")).unwrap())
            .spawn()
            .expect("/usr/bin/docker-registry is not installed (apt-get install docker-registry)");
        let registry = Registry { dir, port, child, tls };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the registry did not listen: {}",
                std::fs::read_to_string(registry.dir.path().join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn reference(&self, name: &str) -> String {
        format!("oci://{}/{name}", self.host())
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The registry's own copy of blob `digest` (`sha256:HEX`).
    fn stored_blob(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .path()
            .join(format!("data/docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]))
    }

    /// `specwright ARGS` with the registry's CA and, when `password` is
    /// given, `--username` and the password on standard input.
    fn specwright(&self, home: &Path, args: &[&str], password: Option<&str>) -> Output {
        let mut command = Command::new(SPECWRIGHT);
        clean_env(&mut command, home);
        command.args(args);
        if self.tls {
            command.arg("--ca-file").arg(self.ca());
        } else {
            command.arg("--plain-http");
        }
        if password.is_some() {
            command.args(["--username", USER, "--password-stdin"]);
        }
        with_stdin(command, password.unwrap_or_default())
    }

    /// `wkg oci ARGS` trusting the registry's CA, logged in.
    fn wkg(&self, home: &Path, args: &[&str]) -> Output {
        let mut command = Command::new(wkg());
        clean_env(&mut command, home);
        command
            .env("SSL_CERT_FILE", self.ca())
            .arg("oci")
            .args(args)
            .args(["-u", USER, "-p", PASSWORD]);
        let out = command.output().unwrap();
        assert!(out.status.success(), "{command:?}: {}", stderr(&out));
        out
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// wkg, from crates.io (`cargo install wkg`: scripts/setup).
fn wkg() -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap();
    let path = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .chain([home.join("bin")])
        .map(|d| d.join("wkg"))
        .find(|p| p.is_file());
    path.expect("wkg is not installed (scripts/setup runs `cargo install wkg --locked`)")
}

/// No credentials or CA of the machine's: HOME is the test's.
fn clean_env(command: &mut Command, home: &Path) {
    command
        .env("HOME", home)
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("DOCKER_CONFIG")
        .env_remove("SSL_CERT_FILE");
}

fn with_stdin(mut command: Command, input: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The digest a push or pull printed.
fn printed_digest(out: &Output) -> String {
    stdout(out)
        .lines()
        .find_map(|l| l.strip_prefix("digest: "))
        .unwrap_or_else(|| panic!("no digest in: {}{}", stdout(out), stderr(out)))
        .to_string()
}

fn sha256_of(path: &str) -> String {
    let out = run(Command::new("sha256sum").arg(path));
    format!("sha256:{}", stdout(&out).split_whitespace().next().unwrap())
}

/// Every file below `dir` (none when it does not exist).
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_below(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// `specwright spec` of a step through the default policy and `policy`,
/// with `state`'s pulled policies.
fn spec_with(home: &Path, state: &Path, policy: &str, env: &[&str]) -> Output {
    let request = home.join("step.json");
    let step = json!({"id": "fleet-step", "args": ["/bin/sh", "-c", "make"], "env": env, "cwd": "/"});
    std::fs::write(&request, step.to_string()).unwrap();
    let facts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/host-facts.json");
    let mut command = Command::new(SPECWRIGHT);
    clean_env(&mut command, home);
    let out = command
        .args(["spec", "--policy", "default", "--policy", policy, "--request"])
        .arg(&request)
        .arg("--host-facts")
        .arg(facts)
        .arg("--state-dir")
        .arg(state)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    if out.status.success() {
        let release = Command::new(SPECWRIGHT)
            .args(["release", "--state-dir"])
            .arg(state)
            .arg("fleet-step")
            .output()
            .unwrap();
        assert!(release.status.success(), "{}", stderr(&release));
    }
    out
}

/// The last policy decision in `state`'s audit log.
fn last_decision(state: &Path) -> Value {
    let log = std::fs::read_to_string(state.join("audit.jsonl")).unwrap();
    log.lines()
        .rev()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["op"] == "policy")
        .unwrap()
}

#[test]
fn a_policy_pushed_and_pulled_by_tag_and_digest_runs_from_the_state_dir() {
    let registry = Registry::start(true);
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let by_tag = registry.reference("policies/hardened:v1");

    // Push: the registry asks for credentials; the wrong ones are refused.
    let out = registry.specwright(home, &["policy", "push", HARDENED, &by_tag], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("asks for credentials"), "{}", stderr(&out));
    let out = registry.specwright(home, &["policy", "push", HARDENED, &by_tag], Some("wrong"));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("401 Unauthorized") && stderr(&out).contains(USER),
        "{}",
        stderr(&out)
    );
    let out = registry.specwright(home, &["policy", "push", HARDENED, &by_tag], Some(PASSWORD));
    assert!(out.status.success(), "{}", stderr(&out));
    let manifest = printed_digest(&out);
    // The same component pushed again is the same artifact.
    let again = registry.specwright(home, &["policy", "push", HARDENED, &by_tag], Some(PASSWORD));
    assert_eq!(printed_digest(&again), manifest);

    // Pull by tag; a start takes the reference from the state dir.
    let state = home.join("state");
    let pull = |state: &Path, reference: &str, password: Option<&str>| {
        registry.specwright(
            home,
            &["policy", "pull", "--state-dir", state.to_str().unwrap(), reference],
            password,
        )
    };
    let out = pull(&state, &by_tag, Some(PASSWORD));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(printed_digest(&out), manifest);
    let out = spec_with(home, &state, &by_tag, &["PATH=/bin"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let decision = last_decision(&state);
    assert_eq!(decision["policy"], by_tag.as_str());
    assert_eq!(decision["digest"], sha256_of(HARDENED), "the component pushed");
    // A dry run plans with it, reading the state dir and writing nothing.
    let listing = |dir: &Path| {
        let mut files: Vec<(PathBuf, u64)> = files_below(dir)
            .into_iter()
            .map(|f| {
                let len = std::fs::metadata(&f).unwrap().len();
                (f, len)
            })
            .collect();
        files.sort();
        files
    };
    let before = listing(&state);
    let request = home.join("dry.json");
    std::fs::write(&request, json!({"id": "dry", "args": ["/bin/true"]}).to_string()).unwrap();
    let mut command = Command::new(SPECWRIGHT);
    clean_env(&mut command, home);
    let out = command
        .args([
            "spec",
            "--dry-run",
            "--policy",
            "default",
            "--policy",
            &by_tag,
            "--request",
        ])
        .arg(&request)
        .arg("--host-facts")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/host-facts.json"))
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["spec"]["process"]["noNewPrivileges"], true, "hardened ran: {plan}");
    assert_eq!(listing(&state), before, "the dry run wrote to the state dir");
    // A tag that was not pulled is not fetched: the start fails naming pull.
    let not_pulled = registry.reference("policies/hardened:v2");
    let out = spec_with(home, &state, &not_pulled, &["PATH=/bin"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not pulled") && stderr(&out).contains("specwright policy pull --state-dir"),
        "{}",
        stderr(&out)
    );

    // Pull by digest into another state dir, with credentials from an
    // auth file as podman writes it.
    let by_digest = format!("{}@{manifest}", registry.reference("policies/hardened"));
    let auth = home.join("auth.json");
    let token = base64_of(&format!("{USER}:{PASSWORD}"));
    std::fs::write(&auth, json!({"auths": {registry.host(): {"auth": token}}}).to_string()).unwrap();
    let other = home.join("other");
    let mut command = Command::new(SPECWRIGHT);
    clean_env(&mut command, home);
    let out = command
        .env("REGISTRY_AUTH_FILE", &auth)
        .args(["policy", "pull", "--state-dir", other.to_str().unwrap(), "--ca-file"])
        .arg(registry.ca())
        .arg(&by_digest)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = spec_with(home, &other, &by_digest, &["PATH=/bin"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(last_decision(&other)["digest"], sha256_of(HARDENED));

    // Failures leave nothing stored: a wrong password, a tag the registry
    // does not have, a registry whose CA is not trusted, a tampered blob.
    let fresh = home.join("fresh");
    let out = pull(&fresh, &by_tag, Some("wrong"));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("401 Unauthorized"), "{}", stderr(&out));
    let out = pull(&fresh, &registry.reference("policies/nothing:v1"), Some(PASSWORD));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("404"), "{}", stderr(&out));
    let mut command = Command::new(SPECWRIGHT);
    clean_env(&mut command, home);
    let out = with_stdin(
        {
            command.args([
                "policy",
                "pull",
                "--state-dir",
                fresh.to_str().unwrap(),
                "--username",
                USER,
                "--password-stdin",
                &by_tag,
            ]);
            command
        },
        PASSWORD,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--ca-file"), "{}", stderr(&out));
    let layer = sha256_of(HARDENED);
    let blob = registry.stored_blob(&layer);
    let mut bytes = std::fs::read(&blob).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&blob, &bytes).unwrap();
    let out = pull(&fresh, &by_tag, Some(PASSWORD));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("the component of {by_tag}: expected {layer}, got sha256:")),
        "{}",
        stderr(&out)
    );
    assert!(!fresh.exists(), "a pull that failed made the state dir");

    // What was pulled before stays as it was: the start still runs it.
    let out = spec_with(home, &state, &by_tag, &["PATH=/bin"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// `component` with a custom section of `size` bytes appended (the
/// component format allows one anywhere at its top level).
fn with_custom_section(component: &[u8], size: usize) -> Vec<u8> {
    let name = b"padding";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend((0..size).map(|i| (i % 251) as u8));
    let mut out = component.to_vec();
    out.push(0);
    let mut len = payload.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend(payload);
    out
}

fn base64_of(text: &str) -> String {
    let out = with_stdin(
        {
            let mut command = Command::new("base64");
            command.arg("-w0");
            command
        },
        text,
    );
    stdout(&out)
}

#[test]
fn wkg_and_specwright_read_each_others_artifacts() {
    let registry = Registry::start(true);
    let home = tempfile::tempdir().unwrap();
    let home = home.path();

    // specwright pushes, wkg pulls the very component: one of the size a
    // Python or JavaScript policy has (env-guard with 40 MB of a custom
    // section), which no single read or write of either side holds.
    let large = home.join("env-guard-large.wasm");
    std::fs::write(
        &large,
        with_custom_section(&std::fs::read(ENV_GUARD).unwrap(), 40 << 20),
    )
    .unwrap();
    let large = large.to_str().unwrap();
    let ours = registry.reference("policies/env-guard:v1");
    let out = registry.specwright(home, &["policy", "push", large, &ours], Some(PASSWORD));
    assert!(out.status.success(), "{}", stderr(&out));
    let fetched = home.join("fetched.wasm");
    let plain = ours.strip_prefix("oci://").unwrap();
    registry.wkg(home, &["pull", plain, "-o", fetched.to_str().unwrap()]);
    assert!(
        std::fs::read(&fetched).unwrap() == std::fs::read(large).unwrap(),
        "wkg got another component"
    );
    // And specwright pulls it back and runs it.
    let large_state = home.join("large-state");
    let out = registry.specwright(
        home,
        &["policy", "pull", "--state-dir", large_state.to_str().unwrap(), &ours],
        Some(PASSWORD),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = spec_with(home, &large_state, &ours, &["PATH=/bin", "DB_PASSWORD=x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("DB_PASSWORD"), "{}", stderr(&out));

    // wkg pushes, specwright pulls and runs it.
    let theirs = registry.reference("policies/from-wkg:v1");
    registry.wkg(home, &["push", theirs.strip_prefix("oci://").unwrap(), HARDENED]);
    let state = home.join("state");
    let out = registry.specwright(
        home,
        &["policy", "pull", "--state-dir", state.to_str().unwrap(), &theirs],
        Some(PASSWORD),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = spec_with(home, &state, &theirs, &["PATH=/bin"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let decision = last_decision(&state);
    assert_eq!(
        (&decision["policy"], &decision["digest"], &decision["verdict"]),
        (&json!(theirs), &json!(sha256_of(HARDENED)), &json!("changed"))
    );
}

#[test]
fn plain_http_only_when_asked_and_the_wrapper_takes_a_pulled_reference() {
    let registry = Registry::start(false);
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let reference = registry.reference("guards/env:v1");
    let out = registry.specwright(home, &["policy", "push", ENV_GUARD, &reference], Some(PASSWORD));
    assert!(out.status.success(), "{}", stderr(&out));
    let manifest = printed_digest(&out);
    // Without --plain-http specwright speaks TLS, which this registry does not.
    let state = home.join("state");
    let mut command = Command::new(SPECWRIGHT);
    clean_env(&mut command, home);
    command.args([
        "policy",
        "pull",
        "--state-dir",
        state.to_str().unwrap(),
        "--username",
        USER,
        "--password-stdin",
        &reference,
    ]);
    let out = with_stdin(command, PASSWORD);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--plain-http"), "{}", stderr(&out));
    assert_eq!(files_below(&state.join("policies")), Vec::<PathBuf>::new());
    let out = registry.specwright(
        home,
        &["policy", "pull", "--state-dir", state.to_str().unwrap(), &reference],
        Some(PASSWORD),
    );
    assert!(out.status.success(), "{}", stderr(&out));

    // runtime.toml names it by digest; the wrapper denies what it denies.
    let bundle = home.join("bundle");
    std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
    run(Command::new("runc").args(["spec", "--bundle"]).arg(&bundle));
    common::edit_spec(&bundle.join("config.json"), |spec| {
        spec["process"]["env"]
            .as_array_mut()
            .unwrap()
            .push(json!("AWS_SECRET_ACCESS_KEY=x"));
    });
    let fake = home.join("fake-runtime");
    std::fs::write(&fake, "#!/bin/sh\nexit 7\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let by_digest = format!("{}@{manifest}", registry.reference("guards/env"));
    let config = home.join("runtime.toml");
    std::fs::write(
        &config,
        format!(
            "policies = [{{ path = \"{by_digest}\", mode = \"enforce\" }}]\nreal_runtime = \"{}\"\nstate_dir = \"{}\"\n",
            fake.display(),
            state.display()
        ),
    )
    .unwrap();
    let out = Command::new(WRAPPER)
        .env("SPECWRIGHT_RUNTIME_CONFIG", &config)
        .args(["create", "--bundle", bundle.to_str().unwrap(), "pulled1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("policy {by_digest} denied")) && stderr(&out).contains("AWS_SECRET_ACCESS_KEY"),
        "{}",
        stderr(&out)
    );
}

/// README's "Running a fleet" block, run as written: with this test's
/// registry, state dir, configuration file, metrics directory, wrapper
/// and podman storage in place of the paths it names.
#[test]
fn readmes_fleet_walk_through_runs_as_written() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let block = readme
        .split("\n## Running a fleet\n")
        .nth(1)
        .and_then(|section| section.split("```sh\n").nth(1))
        .and_then(|rest| rest.split("\n```").next())
        .expect("README has a Running a fleet section with a sh block")
        .to_string();
    let registry = Registry::start(true);
    let scene = Scene::new();
    let home = scene.path().join("home");
    let work = scene.path().join("work");
    let textfiles = scene.path().join("textfile_collector");
    for dir in [&home, &work, &textfiles] {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::copy(ENV_GUARD, work.join("env-guard.wasm")).unwrap();
    let cases = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest/env-guard/cases");
    run(Command::new("cp").arg("-r").arg(&cases).arg(work.join("cases")));
    // podman as a node runs it: its storage here, no network namespace
    // and limits this host can grant (no CAP_SYS_RESOURCE), busybox as
    // the image README names.
    let conf = scene.path().join("fleet-containers.conf");
    let mut conf_text = std::fs::read_to_string(scene.path().join("containers.conf")).unwrap();
    conf_text
        .push_str("[containers]\nnetns = \"none\"\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n");
    std::fs::write(&conf, conf_text).unwrap();
    let bin = scene.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(SPECWRIGHT, bin.join("specwright")).unwrap();
    std::fs::write(
        bin.join("podman"),
        format!(
            "#!/bin/sh\nCONTAINERS_CONF={} CONTAINERS_STORAGE_CONF={} exec {} \"$@\"\n",
            conf.display(),
            scene.path().join("storage.conf").display(),
            common::scene::tool("podman").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(bin.join("podman"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // The wrapper as installed on a node, where /etc/specwright/runtime.toml
    // is read; here the test's file (conmon hands the runtime no
    // environment of podman's).
    let config = scene.path().join("runtime.toml");
    std::fs::write(
        bin.join("specwright-runc"),
        format!(
            "#!/bin/sh\nSPECWRIGHT_RUNTIME_CONFIG={} exec {WRAPPER} \"$@\"\n",
            config.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        bin.join("specwright-runc"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let tarball = scene.busybox_tarball();
    run(Command::new(bin.join("podman"))
        .arg("import")
        .arg(&tarball)
        .arg("docker.io/library/busybox:latest"));
    // The auth file `podman login` writes.
    let auth = home.join("auth.json");
    let token = base64_of(&format!("{USER}:{PASSWORD}"));
    std::fs::write(&auth, json!({"auths": {registry.host(): {"auth": token}}}).to_string()).unwrap();

    let state = scene.state();
    let mut script = block.clone();
    for (written, here) in [
        ("registry.example.com", registry.host()),
        ("/var/lib/specwright", state.display().to_string()),
        ("/etc/specwright/runtime.toml", config.display().to_string()),
        (
            "/var/lib/node_exporter/textfile_collector",
            textfiles.display().to_string(),
        ),
        (
            "/usr/local/bin/specwright-runc",
            bin.join("specwright-runc").display().to_string(),
        ),
    ] {
        assert!(
            script.contains(written),
            "README's walk-through no longer names {written}"
        );
        script = script.replace(written, &here);
    }
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let mut command = Command::new("sh");
    clean_env(&mut command, &home);
    let out = command
        .args(["-e", "-c", &script])
        .current_dir(&work)
        .env("PATH", path)
        .env("REGISTRY_PASSWORD", PASSWORD)
        .env("REGISTRY_AUTH_FILE", &auth)
        .env("SSL_CERT_FILE", registry.ca())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (text, errors) = (stdout(&out), stderr(&out));
    assert!(out.status.success(), "{script}\nfailed:\n{text}\n{errors}");
    let reference = format!("oci://{}/policies/env-guard:v1", registry.host());
    assert!(text.contains("6 passed, 0 failed"), "{text}");
    assert!(text.contains(&format!("pushed {reference}")), "{text}");
    assert!(text.contains(&format!("pulled {reference}")), "{text}");
    // The audit summary: the monitored policy would have denied one
    // container (the first), and denied the second once enforced.
    let row = |mode: &str| {
        text.lines()
            .find(|l| l.starts_with(&reference) && l.split_whitespace().nth(1) == Some(mode))
            .map(|l| l.split_whitespace().skip(2).take(5).collect::<Vec<_>>())
    };
    assert_eq!(row("monitor"), Some(vec!["1", "0", "0", "1", "0"]), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("specwright_policy_decisions_total{")
            && l.contains(&format!("policy=\"{reference}\""))
            && l.ends_with("mode=\"monitor\",verdict=\"denied\"} 1")),
        "{text}"
    );
    assert!(text.trim_end().ends_with("refused"), "{text}\n{errors}");
    assert!(
        errors.contains("GITHUB_TOKEN"),
        "the refusal names the variable: {errors}"
    );
    let log = std::fs::read_to_string(state.join("audit.jsonl")).unwrap();
    let enforced = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["op"] == "policy" && r["mode"] == "enforce")
        .count();
    assert_eq!(enforced, 1, "{log}");
    scene.assert_nothing_mounted();
}

/// A registry (TLS) whose token server is another host over plain HTTP:
/// the credentials must not travel there, and an upload on another host
/// gets no credentials of the registry's.
#[test]
fn credentials_go_to_the_registry_only_and_never_in_clear_text() {
    let registry = Registry::start(true);
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    // A listener standing for the other host: whatever reaches it is
    // written down.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    // A TLS server with the registry's certificate, challenging for a
    // token at the other host over plain HTTP.
    let script = format!(
        "import http.server, ssl\n\
         class H(http.server.BaseHTTPRequestHandler):\n\
         \x20 def do_GET(self):\n\
         \x20   self.send_response(401)\n\
         \x20   self.send_header('WWW-Authenticate', 'Bearer realm=\"http://127.0.0.1:{other}/token\",service=\"x\"')\n\
         \x20   self.send_header('Content-Length', '0')\n\
         \x20   self.end_headers()\n\
         \x20 def log_message(self, *a): pass\n\
         s = http.server.HTTPServer(('127.0.0.1', 0), H)\n\
         c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.load_cert_chain('{d}/server.pem', '{d}/server.key')\n\
         s.socket = c.wrap_socket(s.socket, server_side=True)\n\
         print(s.server_address[1], flush=True)\n\
         s.serve_forever()\n",
        d = registry.dir.path().display()
    );
    let mut fake = Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut port = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(fake.stdout.take().unwrap()), &mut port).unwrap();
    let reference = format!("oci://127.0.0.1:{}/p:v1", port.trim());
    let state = home.join("state");
    let out = registry.specwright(
        home,
        &["policy", "pull", "--state-dir", state.to_str().unwrap(), &reference],
        Some(PASSWORD),
    );
    let _ = fake.kill();
    let _ = fake.wait();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("http://127.0.0.1:{other}/token")),
        "{}",
        stderr(&out)
    );
    assert!(
        listener.accept().is_err(),
        "the credentials were sent to the other host in clear text"
    );
    assert_eq!(files_below(&state.join("policies")), Vec::<PathBuf>::new());
}
