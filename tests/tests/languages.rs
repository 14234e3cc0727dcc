//! Policies in Python and JavaScript, built from source with their own
//! toolchains as an author builds them (componentize-py from PyPI,
//! componentize-js from npm; `scripts/setup` installs both), loaded with
//! `--policy FILE` like any policy: the example `env-guard` gives the same
//! specs and denials as its Rust twin, the templates work as their guides
//! say, hostile policies are stopped, and nothing of the host reaches them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::{json, Value};
use specwright_tests::{oracle_cases_dir, write_json};

const HELPER: &str = env!("CARGO_BIN_EXE_sw-testhelper");
const ENV_GUARD_RUST: &str = env!("SPECWRIGHT_ENV_GUARD_WASM");
const TEMPLATE_RUST: &str = env!("SPECWRIGHT_TEMPLATE_WASM");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The components built once for this test binary, and one state dir whose
/// compile cache holds them all.
struct Built {
    dir: PathBuf,
    state: PathBuf,
}

impl Built {
    fn wasm(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

/// How each policy is built: (output, language, source directory, module).
const SOURCES: &[(&str, &str, &str, &str)] = &[
    ("env_guard_py.wasm", "python", "guest/python/env-guard", "env_guard"),
    ("template_py.wasm", "python", "guest/python/template", "app"),
    ("hostile_py.wasm", "python", "tests/policies/python", "hostile"),
    ("env_guard_js.wasm", "js", "guest/js/env-guard", "env_guard.js"),
    ("template_js.wasm", "js", "guest/js/template", "policy.js"),
    ("hostile_js.wasm", "js", "tests/policies/js", "hostile.js"),
];

/// componentize-py on PATH, or where python3 puts the scripts of the
/// packages it installs.
fn componentize_py() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let scripts = Command::new("python3")
        .args(["-c", "import sysconfig; print(sysconfig.get_path('scripts'))"])
        .output()
        .ok()
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    std::env::split_paths(&path)
        .chain(scripts)
        .map(|d| d.join("componentize-py"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("componentize-py is not installed (scripts/setup installs it from PyPI)"))
}

fn componentize_js() -> PathBuf {
    let tool = root().join("toolchains/js/node_modules/.bin/componentize-js");
    assert!(
        tool.exists(),
        "componentize-js is not installed in toolchains/js (scripts/setup runs npm ci there)"
    );
    tool
}

/// The build command an author runs (the guides give the same).
fn build_command(language: &str, source: &Path, module: &str, out: &Path) -> Command {
    let wit = root().join("wit");
    match language {
        "python" => {
            let mut command = Command::new(componentize_py());
            command
                .arg("-d")
                .arg(&wit)
                .args(["-w", "policy", "componentize", "-p"])
                .arg(source)
                .arg(module)
                .arg("-o")
                .arg(out)
                .current_dir(out.parent().unwrap());
            command
        }
        _ => {
            let mut command = Command::new(componentize_js());
            command
                .arg("--wit")
                .arg(&wit)
                .args(["--world-name", "policy", "-o"])
                .arg(out)
                .arg(source.join(module));
            command
        }
    }
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("language-policies");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Every build at once: each is mostly one process's wait.
        let children: Vec<_> = SOURCES
            .iter()
            .map(|(out, language, source, module)| {
                let mut command = build_command(language, &root().join(source), module, &dir.join(out));
                let child = command
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap_or_else(|e| panic!("{command:?}: {e}"));
                (out, child)
            })
            .collect();
        for (out, child) in children {
            let result = child.wait_with_output().unwrap();
            assert!(
                result.status.success(),
                "building {out} failed:\n{}{}",
                String::from_utf8_lossy(&result.stdout),
                String::from_utf8_lossy(&result.stderr)
            );
        }
        // Compiled once for every test here, as `specwright policy compile` does.
        let state = dir.join("state");
        let mut args = vec!["policy", "compile", "--state-dir", state.to_str().unwrap()];
        let files: Vec<String> = SOURCES
            .iter()
            .map(|(out, ..)| dir.join(out).display().to_string())
            .collect();
        args.extend(files.iter().map(String::as_str));
        let out = cli(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        Built { dir, state }
    })
}

/// specwright with a variable in its environment that no policy may see.
fn cli(args: &[&str]) -> Output {
    Command::new(HELPER)
        .env("SPECWRIGHT_TEST_SECRET", "must-not-leak")
        .arg("cli")
        .args(args)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `specwright spec` of an oracle case's request (changed by `edit`) and
/// host facts through `policies`: the spec, or the error.
fn spec(case: &str, edit: impl Fn(&mut Value), policies: &[String], extra: &[&str]) -> Result<Value, String> {
    let b = built();
    let mut request: Value = serde_json::from_str(
        &std::fs::read_to_string(oracle_cases_dir().join(format!("{case}.request.json"))).unwrap(),
    )
    .unwrap();
    edit(&mut request);
    // Steps of the tests here run at once on one state dir: one id each.
    static STEPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let case_id = request["id"].clone();
    let id = format!("lang-{}", STEPS.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
    request["id"] = json!(id);
    let dir = tempfile::tempdir().unwrap();
    let request = write_json(&dir.path().join("request.json"), &request);
    let facts = oracle_cases_dir().join(format!("{case}.host.json"));
    let mut args = vec![
        "spec".to_string(),
        "--request".into(),
        request.display().to_string(),
        "--host-facts".into(),
        facts.display().to_string(),
        "--state-dir".into(),
        b.state.display().to_string(),
    ];
    for policy in policies {
        args.extend(["--policy".to_string(), policy.clone()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = cli(&args.iter().map(String::as_str).collect::<Vec<_>>());
    if out.status.success() {
        let mut spec: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&out)));
        // The cgroups path names the step: the case's id again, for comparisons.
        if let (Some(path), Some(case_id)) = (spec["linux"]["cgroupsPath"].as_str(), case_id.as_str()) {
            spec["linux"]["cgroupsPath"] = json!(path.replace(&id, case_id));
        }
        Ok(spec)
    } else {
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        Err(stderr(&out))
    }
}

fn with_settings(policy: &str, settings: &Value) -> String {
    if settings.is_null() {
        return policy.to_string();
    }
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = built().dir.join("settings");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!(
        "{}.json",
        SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    ));
    write_json(&file, settings);
    format!("{policy}:{}", file.display())
}

fn expected_spec(case: &str) -> Value {
    let v: Value = serde_json::from_str(
        &std::fs::read_to_string(oracle_cases_dir().join(format!("{case}.expected.json"))).unwrap(),
    )
    .unwrap();
    v["spec"].clone()
}

/// The three env-guards on oracle requests, alone and after the default,
/// with and without settings: Python and JavaScript give byte for byte the
/// spec the Rust one gives, and that is what the policy's rules say
/// (worked out here from the oracle's spec, not by any of them).
#[test]
fn env_guard_gives_the_same_specs_in_rust_python_and_javascript() {
    let b = built();
    let languages = [
        ENV_GUARD_RUST.to_string(),
        b.wasm("env_guard_py.wasm"),
        b.wasm("env_guard_js.wasm"),
    ];
    let settings = [
        json!(null),
        json!({"env": ["TZ=UTC", "PATH=/elsewhere", "LANG=C.UTF-8"]}),
    ];
    let mut failures = Vec::new();
    for case in ["minimal", "env_semantics", "empty_meta"] {
        for setting in &settings {
            for after_default in [true, false] {
                let chain = |policy: &str| -> Vec<String> {
                    let guard = with_settings(policy, setting);
                    if after_default {
                        vec!["default".to_string(), guard]
                    } else {
                        vec![guard]
                    }
                };
                let specs: Vec<Value> = languages
                    .iter()
                    .map(|p| spec(case, |_| {}, &chain(p), &[]).unwrap_or_else(|e| panic!("{case} {p}: {e}")))
                    .collect();
                let request: Value = serde_json::from_str(
                    &std::fs::read_to_string(oracle_cases_dir().join(format!("{case}.request.json"))).unwrap(),
                )
                .unwrap();
                let mut expected = if after_default {
                    expected_spec(case)
                } else {
                    let env = request["env"].clone();
                    let mut process = json!({"user": {"uid": 0, "gid": 0}, "cwd": request["cwd"].as_str().filter(|c| !c.is_empty()).unwrap_or("/")});
                    if request["args"].as_array().is_some_and(|a| !a.is_empty()) {
                        process["args"] = request["args"].clone();
                    }
                    if env.as_array().is_some_and(|e| !e.is_empty()) {
                        process["env"] = env;
                    }
                    json!({"ociVersion": "1.2.1", "process": process, "root": {"path": "rootfs"}})
                };
                for entry in setting["env"].as_array().into_iter().flatten() {
                    let entry = entry.as_str().unwrap();
                    let name = entry.split('=').next().unwrap();
                    let env = expected["process"]["env"].as_array().cloned().unwrap_or_default();
                    if !env.iter().any(|e| e.as_str().unwrap().split('=').next() == Some(name)) {
                        let mut env = env;
                        env.push(json!(entry));
                        expected["process"]["env"] = json!(env);
                    }
                }
                let shown = format!("{case} settings={setting} after_default={after_default}");
                if specs[0] != expected {
                    failures.push(format!("{shown}: rust gave\n{}\nexpected\n{}", specs[0], expected));
                }
                for (spec, language) in specs[1..].iter().zip(["python", "javascript"]) {
                    if *spec != specs[0] {
                        failures.push(format!("{shown}: {language} gave\n{spec}\nrust gave\n{}", specs[0]));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn env_guard_denies_alike_in_rust_python_and_javascript() {
    let b = built();
    for (env, settings, reason) in [
        (
            json!(["PATH=/bin", "npm_Token=abc"]),
            json!(null),
            "env npm_Token looks like a secret (it contains TOKEN); pass secrets as secret mounts, not env",
        ),
        (
            json!(["DB_PASS=x"]),
            json!({"deny": ["_pass"]}),
            "env DB_PASS looks like a secret (it contains _pass); pass secrets as secret mounts, not env",
        ),
    ] {
        for policy in [
            ENV_GUARD_RUST.to_string(),
            b.wasm("env_guard_py.wasm"),
            b.wasm("env_guard_js.wasm"),
        ] {
            let chain = ["default".to_string(), with_settings(&policy, &settings)];
            let err = spec("minimal", |r| r["env"] = env.clone(), &chain, &[]).unwrap_err();
            assert_eq!(
                err.trim_end(),
                format!("specwright: policy {policy} denied the step: {reason}"),
            );
        }
    }
}

/// The templates as their guides give them: a pass-through after the
/// default, a denial of the host network, and a clear error alone.
#[test]
fn the_templates_work_as_their_guides_say() {
    let b = built();
    for template in [b.wasm("template_py.wasm"), b.wasm("template_js.wasm")] {
        let chain = ["default".to_string(), template.clone()];
        assert_eq!(spec("minimal", |_| {}, &chain, &[]).unwrap(), expected_spec("minimal"));
        let err = spec("netns_host", |_| {}, &chain, &[]).unwrap_err();
        assert!(
            err.contains("denied the step: the host network is not allowed"),
            "{err}"
        );
        let err = spec("minimal", |_| {}, std::slice::from_ref(&template), &[]).unwrap_err();
        assert!(err.contains("invalid request: run me after another policy"), "{err}");
        let out = cli(&["policy", "inspect", &template]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(text.contains("policy:      my-policy 0.1.0"), "{text}");
        assert!(
            text.contains("wasi:filesystem/types@") && text.contains("no file: a policy holds no descriptor"),
            "{text}"
        );
    }
}

/// The cases each template and env-guard ships pass in every language:
/// `specwright policy test` as an author runs it.
#[test]
fn the_templates_and_env_guard_pass_the_cases_they_ship() {
    let b = built();
    let guest = root().join("guest");
    let env_guard_cases = guest.join("env-guard/cases");
    let env_guard = |wasm: &str| format!("{wasm}:{}", env_guard_cases.join("settings.json").display());
    let template = guest.join("template/cases");
    let runs = [
        (env_guard(ENV_GUARD_RUST), env_guard_cases.clone(), 6),
        (env_guard(&b.wasm("env_guard_py.wasm")), env_guard_cases.clone(), 6),
        (env_guard(&b.wasm("env_guard_js.wasm")), env_guard_cases.clone(), 6),
        (
            format!("{TEMPLATE_RUST}:{}", template.join("settings.json").display()),
            template,
            2,
        ),
        (b.wasm("template_py.wasm"), guest.join("python/template/cases"), 4),
        (b.wasm("template_js.wasm"), guest.join("js/template/cases"), 4),
    ];
    for (policy, cases, count) in runs {
        let out = cli(&[
            "policy",
            "test",
            "--state-dir",
            b.state.to_str().unwrap(),
            &policy,
            cases.to_str().unwrap(),
        ]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{policy}:\n{text}{}", stderr(&out));
        assert_eq!(
            text.lines().filter(|l| l.starts_with("ok ")).count(),
            count,
            "{policy}:\n{text}"
        );
        assert!(
            text.ends_with(&format!("{count} passed, 0 failed\n")),
            "{policy}:\n{text}"
        );
    }
}

/// A looping, hoarding, file-reading, networking, exiting or failing
/// policy in either language stops with a clear error naming the policy.
#[test]
fn hostile_python_and_javascript_policies_are_stopped() {
    let b = built();
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "py",
            "loop",
            &["exceeded its time limit (300ms; raise it with --policy-timeout-ms)"],
        ),
        (
            "js",
            "loop",
            &["exceeded its time limit (300ms; raise it with --policy-timeout-ms)"],
        ),
        (
            "py",
            "hoard",
            &["exceeded its memory limit (64 MiB; raise it with --policy-memory-mib)"],
        ),
        (
            "js",
            "hoard",
            &["exceeded its memory limit (64 MiB; raise it with --policy-memory-mib)"],
        ),
        (
            "py",
            "read-file",
            &[
                "trapped",
                "FileNotFoundError",
                "No such file or directory: '/etc/hostname'",
            ],
        ),
        (
            "js",
            "read-file",
            &["trapped", "wasi:http/types@0.2.10#", "is not available to a policy"],
        ),
        (
            "py",
            "network",
            &["trapped", "ModuleNotFoundError: No module named 'socket'"],
        ),
        ("js", "network", &["trapped", "is not available to a policy"]),
        ("py", "exit", &["trapped: it called exit(1)"]),
        (
            "py",
            "print",
            &[
                "RuntimeError: failing after printing, on purpose",
                "stderr of the policy:\nto stderr from python",
                "stdout of the policy:\nto stdout from python",
            ],
        ),
        (
            "js",
            "print",
            &[
                "stderr of the policy:\nto stderr from js",
                "stdout of the policy:\nto stdout from js",
            ],
        ),
    ];
    let mut failures = Vec::new();
    for (language, mode, needles) in cases {
        let policy = with_settings(&b.wasm(&format!("hostile_{language}.wasm")), &json!({"mode": mode}));
        let timeout: &[&str] = if *mode == "loop" {
            &["--policy-timeout-ms", "300"]
        } else {
            &[]
        };
        match spec("minimal", |_| {}, &["default".to_string(), policy], timeout) {
            Ok(spec) => failures.push(format!("{language} {mode}: succeeded with {spec}")),
            Err(err) => {
                for needle in *needles {
                    if !err.contains(needle) {
                        failures.push(format!("{language} {mode}: the error lacks {needle:?}:\n{err}"));
                    }
                }
                if err.contains(
                    &std::fs::read_to_string("/etc/hostname")
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                ) && !std::fs::read_to_string("/etc/hostname")
                    .unwrap_or_default()
                    .trim()
                    .is_empty()
                {
                    failures.push(format!("{language} {mode}: the host's /etc/hostname shows: {err}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Clocks, randomness, environment and arguments are fixed: the same step
/// gives the same spec every time, whatever the host's environment, and
/// the clocks read the documented values.
#[test]
fn nothing_of_the_host_reaches_a_python_or_javascript_policy() {
    let b = built();
    for (language, expected_time) in [("py", "0.0"), ("js", "0")] {
        let policy = with_settings(
            &b.wasm(&format!("hostile_{language}.wasm")),
            &json!({"mode": "entropy"}),
        );
        let chain = ["default".to_string(), policy];
        let run = || spec("minimal", |_| {}, &chain, &[]).unwrap()["annotations"].clone();
        let first = run();
        assert_eq!(first, run(), "{language}: two runs differ");
        assert_eq!(first["time"], expected_time, "{language}: {first}");
        assert_eq!(first["monotonic"], expected_time, "{language}: {first}");
        let bytes = first["urandom"].as_str().unwrap();
        assert!(bytes.len() == 16 && bytes != "0000000000000000", "{language}: {first}");
        if language == "py" {
            assert_eq!(first["environ"], "{}", "{first}");
            assert_eq!(first["argv"], "[]", "{first}");
        }
        assert!(!first.to_string().contains("must-not-leak"));
    }
}

/// A Python or JavaScript policy reaches the host's interface like a Rust
/// one, and is refused like one: a path the request does not name.
#[test]
fn python_and_javascript_policies_call_the_host() {
    let b = built();
    for language in ["py", "js"] {
        let wasm = b.wasm(&format!("hostile_{language}.wasm"));
        let policy = with_settings(&wasm, &json!({"mode": "host-call"}));
        let spec = spec("minimal", |_| {}, &["default".to_string(), policy], &[]).unwrap();
        let answer = spec["annotations"]["host"].as_str().unwrap();
        assert!(
            answer.contains(&format!(
                "policy {wasm} may not canonical-path: \\\"/etc\\\" is not a host path the request names"
            )) || answer.contains(&format!(
                "policy {wasm} may not canonical-path: \"/etc\" is not a host path the request names"
            )),
            "{language}: {answer}"
        );
        assert!(answer.contains("efused"), "{language}: {answer}");
        // The facts arrive as the guides say (`kernel_release`, `kernelRelease`).
        assert_eq!(spec["annotations"]["kernel"], "6.18.44", "{language}");
    }
}
