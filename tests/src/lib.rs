//! Helpers shared by the integration tests and the `sw-testhelper` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{bail, Context, Result};

mod kernel_model;
pub use kernel_model::{KernelModel, KernelState};

/// The shared reference material beside the repository.
pub fn shared_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared")
}

/// The case directory of the oracle the default policy reproduces
/// (BuildKit v0.32.2).
pub fn oracle_cases_dir() -> PathBuf {
    shared_dir().join("oracle-v0.32/cases")
}

/// The case directory of BuildKit v0.8.1's oracle, which the
/// `buildkit-v0.8` policy reproduces.
pub fn v0_8_oracle_cases_dir() -> PathBuf {
    shared_dir().join("oracle/cases")
}

/// Both oracles' case directories.
pub fn all_oracle_cases_dirs() -> [PathBuf; 2] {
    [oracle_cases_dir(), v0_8_oracle_cases_dir()]
}

/// Names of every oracle case (`<name>.request.json`), sorted.
pub fn oracle_case_names(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let name = entry?.file_name();
        if let Some(case) = name.to_str().and_then(|n| n.strip_suffix(".request.json")) {
            names.push(case.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// Mountpoints below `prefix` in the calling thread's mount namespace.
pub fn mounts_below(prefix: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string("/proc/thread-self/mountinfo").context("reading mountinfo")?;
    let mut found = Vec::new();
    for line in text.lines() {
        let Some(mountpoint) = line.split(' ').nth(4) else {
            bail!("malformed mountinfo line: {line}");
        };
        let mountpoint = PathBuf::from(unescape_mountinfo(mountpoint));
        if mountpoint.starts_with(prefix) {
            found.push(mountpoint);
        }
    }
    Ok(found)
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mountinfo(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let code: String = chars.by_ref().take(3).collect();
            match u8::from_str_radix(&code, 8) {
                Ok(b) => out.push(b as char),
                Err(_) => {
                    out.push('\\');
                    out.push_str(&code);
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs `program args` in a new private mount namespace.
pub fn run_in_private_mount_namespace(program: &Path, args: &[&str]) -> Result<Output> {
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--"])
        .arg(program)
        .args(args)
        .output()
        .context("running unshare (util-linux)")
}

/// What a shell script run in a private mount namespace reported: the exit
/// code it printed as `rc=N` (-1 if none), its `left=...` line (what was
/// still mounted or recorded), and everything it printed.
pub struct ScriptReport {
    pub rc: i32,
    pub left: String,
    pub stdout: String,
}

/// Runs `script` with `sh -c` in a new private mount namespace (tests
/// only: panics when unshare cannot run).
pub fn run_script_in_private_mount_namespace(script: &str) -> ScriptReport {
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script])
        .output()
        .expect("running unshare (util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let rc = stdout
        .lines()
        .find_map(|l| l.strip_prefix("rc="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1);
    let left = stdout
        .lines()
        .find(|l| l.starts_with("left="))
        .unwrap_or_default()
        .to_string();
    ScriptReport { rc, left, stdout }
}

/// Builds the oracle's `<SRCn>` tree at `dir`.
pub fn make_oracle_source_tree(dir: &Path) -> Result<()> {
    use std::os::unix::fs::symlink;
    std::fs::create_dir_all(dir.join("sub/dir"))?;
    std::fs::create_dir_all(dir.join("sub/other"))?;
    std::fs::write(dir.join("sub/dir/file"), "file\n")?;
    for (link, target) in [
        ("link_abs", "/sub/dir"),
        ("link_out_abs", "/etc"),
        ("link_rel", "sub/dir"),
        ("link_rel_escape", "../../../../etc"),
        ("dirlink", "sub"),
        ("loop1", "loop2"),
        ("loop2", "loop1"),
        ("sub/uplink", "../sub/dir"),
    ] {
        symlink(target, dir.join(link))?;
    }
    Ok(())
}

/// Host facts of the oracle's machine, for reproducible specs.
pub fn oracle_facts_file() -> PathBuf {
    oracle_cases_dir().join("minimal.host.json")
}

/// A temporary work directory and its canonical path (tests only: panics
/// when the temporary directory cannot be made).
pub fn workdir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = std::fs::canonicalize(dir.path()).expect("its canonical path");
    (dir, path)
}

/// Writes `value` as JSON to `path` and returns the path (tests only:
/// panics when it cannot).
pub fn write_json(path: &Path, value: &serde_json::Value) -> PathBuf {
    std::fs::write(path, value.to_string()).expect("writing a test file");
    path.to_path_buf()
}

/// A minimal root filesystem: busybox (from Debian's busybox-static) with
/// the applets the tests use, and users `root` and `builder` (uid 1000,
/// also in group `wheel`, gid 10).
pub fn make_busybox_rootfs(dir: &Path) -> Result<()> {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(Path::new)
        .find(|p| p.exists())
        .context("busybox is not installed (apt-get install busybox-static)")?;
    for sub in ["bin", "etc", "proc", "sys", "dev", "tmp", "work"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    std::fs::copy(busybox, dir.join("bin/busybox"))?;
    for applet in [
        "sh", "cat", "id", "hostname", "ls", "echo", "grep", "pwd", "touch", "wc", "sleep",
    ] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet))?;
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nbuilder:x:1000:1000::/work:/bin/sh\n",
    )?;
    std::fs::write(
        dir.join("etc/group"),
        "root:x:0:\nwheel:x:10:builder\nbuilder:x:1000:\n",
    )?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
    Ok(())
}

/// The `jsonschema` crate's validator built from `../shared`'s schema files:
/// the reference the host's own checker (and its embedded copy) is held to.
pub fn shared_schema_validator() -> jsonschema::Validator {
    let dir = shared_dir().join("runtime-spec-v1.2.1");
    let base = "file:///shared-runtime-spec/";
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap()
    };
    let mut root = read("config-schema.json");
    root["id"] = serde_json::Value::String(format!("{base}config-schema.json"));
    let mut resources = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".json") && name != "config-schema.json" {
            resources.push((
                format!("{base}{name}"),
                jsonschema::Draft::Draft4.create_resource(read(&name)),
            ));
        }
    }
    let registry = jsonschema::Registry::new()
        .draft(jsonschema::Draft::Draft4)
        .extend(resources)
        .unwrap()
        .prepare()
        .unwrap();
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .with_registry(&registry)
        .build(&root)
        .unwrap()
}

/// JSON as written, objects keeping their keys in the order of the text
/// whatever features serde_json was built with: for tests of key order.
#[derive(Debug, Clone, PartialEq)]
pub enum OrderedJson {
    Object(Vec<(String, OrderedJson)>),
    Array(Vec<OrderedJson>),
    Other,
}

impl OrderedJson {
    pub fn parse(text: &str) -> serde_json::Result<OrderedJson> {
        serde_json::from_str(text)
    }

    /// The value at `key` of an object.
    pub fn get(&self, key: &str) -> Option<&OrderedJson> {
        match self {
            OrderedJson::Object(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Every object of `got` whose keys come in another order than in the
    /// same object of `self` (paths as `/process/user`).
    pub fn key_order_differences(&self, got: &OrderedJson) -> Vec<String> {
        let mut out = Vec::new();
        self.key_order_into(got, String::new(), &mut out);
        out
    }

    fn key_order_into(&self, got: &OrderedJson, at: String, out: &mut Vec<String>) {
        match (self, got) {
            (OrderedJson::Object(w), OrderedJson::Object(g)) => {
                let wk: Vec<&str> = w.iter().map(|(k, _)| k.as_str()).collect();
                let gk: Vec<&str> = g.iter().map(|(k, _)| k.as_str()).collect();
                if wk != gk {
                    out.push(format!("  {at}: want {wk:?}, got {gk:?}"));
                }
                for (key, value) in w {
                    if let Some(other) = got.get(key) {
                        value.key_order_into(other, format!("{at}/{key}"), out);
                    }
                }
            }
            (OrderedJson::Array(w), OrderedJson::Array(g)) => {
                for (i, (a, b)) in w.iter().zip(g).enumerate() {
                    a.key_order_into(b, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }
}

impl<'de> serde::Deserialize<'de> for OrderedJson {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = OrderedJson;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_bool<E>(self, _: bool) -> std::result::Result<OrderedJson, E> {
                Ok(OrderedJson::Other)
            }
            fn visit_i64<E>(self, _: i64) -> std::result::Result<OrderedJson, E> {
                Ok(OrderedJson::Other)
            }
            fn visit_u64<E>(self, _: u64) -> std::result::Result<OrderedJson, E> {
                Ok(OrderedJson::Other)
            }
            fn visit_f64<E>(self, _: f64) -> std::result::Result<OrderedJson, E> {
                Ok(OrderedJson::Other)
            }
            fn visit_str<E>(self, _: &str) -> std::result::Result<OrderedJson, E> {
                Ok(OrderedJson::Other)
            }
            fn visit_unit<E>(self) -> std::result::Result<OrderedJson, E> {
                Ok(OrderedJson::Other)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<OrderedJson, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(OrderedJson::Array(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<OrderedJson, A::Error> {
                let mut fields = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, OrderedJson>()? {
                    fields.push((key, value));
                }
                Ok(OrderedJson::Object(fields))
            }
        }
        deserializer.deserialize_any(Visit)
    }
}

/// Shell lines that wait (up to 30 s) until something is mounted under
/// `<state>/mounts/`, then print `held=N`.
pub fn wait_for_a_mount(state: &Path) -> String {
    wait_for_mounts(state, 1)
}

/// Shell lines that wait (up to 30 s) until at least `count` mounts exist
/// under `<state>/mounts/`, then print `held=N`.
pub fn wait_for_mounts(state: &Path, count: usize) -> String {
    format!(
        r#"i=0
while [ "$(grep -c ' {state}/mounts/' /proc/self/mountinfo)" -lt {count} ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
echo "held=$(grep -c ' {state}/mounts/' /proc/self/mountinfo)""#,
        state = state.display()
    )
}

/// Runs `script` with `sh` in a new private mount namespace.
pub fn in_namespace(script: &str) -> (String, String, bool) {
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script])
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.success(),
    )
}

/// A request with a read-only and a read-write mount of a fresh oracle
/// source tree under `work/src`, each with a selector.
pub fn selector_request(work: &Path, id: &str) -> PathBuf {
    let src = work.join("src");
    make_oracle_source_tree(&src).unwrap();
    write_json(
        &work.join("request.json"),
        &serde_json::json!({
            "id": id,
            "args": ["/bin/true"],
            "mounts": [
                {"dest": "/ro", "source": src, "readonly": true, "selector": "sub/dir"},
                {"dest": "/rw", "source": src, "readonly": false, "selector": "link_rel"},
            ]
        }),
    )
}

/// A file a test's script wrote (by redirecting a command's output); a
/// missing one fails the test, naming it, rather than reading as empty.
pub fn script_output(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("the script wrote no {}: {e}", path.display()))
}
