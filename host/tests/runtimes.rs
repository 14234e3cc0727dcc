//! What `specwright-runc` approves is what the real runtimes run: runc and
//! crun from Debian's packages, each in its own state root under a
//! temporary directory, running a busybox container. A spec the runtimes
//! would read otherwise than the policies is refused before either runs
//! it (and, run by the runtime directly, it would do what the test says
//! it would, so the test could fail); what is approved is checked from
//! inside the container: `/proc/self/status`, its mounts, namespaces and
//! cgroup limits.
//!
//! crun refuses this host's hybrid cgroups; its commands run in a private
//! mount namespace without `/sys/fs/cgroup/unified`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

mod common;
use common::{capability_mask, engine_seccomp, namespace_path, status_field};

const WRAPPER: &str = env!("CARGO_BIN_EXE_specwright-runc");
const HARDENED: &str = env!("SPECWRIGHT_HARDENED_WASM");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Runtime {
    Runc,
    Crun,
}

impl Runtime {
    fn name(self) -> &'static str {
        match self {
            Runtime::Runc => "runc",
            Runtime::Crun => "crun",
        }
    }

    fn path(self) -> PathBuf {
        ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(self.name()))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("{} is not installed (apt-get install {})", self.name(), self.name()))
    }

    /// `program args`, in a private mount namespace without the unified
    /// cgroup hierarchy for crun.
    fn command(self, program: &Path, args: &[String]) -> Command {
        match self {
            Runtime::Runc => {
                let mut command = Command::new(program);
                command.args(args);
                command
            }
            Runtime::Crun => {
                let mut command = Command::new("unshare");
                command
                    .args(["-m", "--propagation", "private", "sh", "-c"])
                    .arg("umount /sys/fs/cgroup/unified 2>/dev/null; exec \"$0\" \"$@\"")
                    .arg(program)
                    .args(args);
                command
            }
        }
    }
}

/// A busybox bundle, a runtime state root and a wrapper state dir.
struct Scene {
    _dir: tempfile::TempDir,
    root: PathBuf,
    bundle: PathBuf,
    runtime: Runtime,
}

impl Scene {
    fn new(runtime: Runtime) -> Scene {
        let dir = tempfile::Builder::new().prefix("sw-rt").tempdir_in("/tmp").unwrap();
        let root = dir.path().to_path_buf();
        let bundle = root.join("bundle");
        let rootfs = bundle.join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        std::fs::copy(
            ["/bin/busybox", "/usr/bin/busybox"]
                .iter()
                .find(|p| Path::new(p).exists())
                .expect("busybox is not installed (apt-get install busybox-static)"),
            rootfs.join("bin/busybox"),
        )
        .unwrap();
        for applet in [
            "sh", "cat", "grep", "sleep", "readlink", "touch", "echo", "id", "ls", "mount", "pwd",
        ] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        for sub in ["proc", "sys", "dev", "tmp", "etc"] {
            std::fs::create_dir_all(rootfs.join(sub)).unwrap();
        }
        let out = Command::new(Runtime::Runc.path())
            .args(["spec", "--bundle"])
            .arg(&bundle)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "runc spec: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let scene = Scene {
            _dir: dir,
            root,
            bundle,
            runtime,
        };
        // As engines write it: not on a terminal, BuildKit's seccomp
        // profile, CAP_NET_RAW granted (so that only a policy takes it).
        scene.edit_spec(|spec| {
            spec["process"]["terminal"] = json!(false);
            spec["linux"]["seccomp"] = engine_seccomp();
            for set in ["bounding", "effective", "permitted"] {
                spec["process"]["capabilities"][set]
                    .as_array_mut()
                    .unwrap()
                    .push(json!("CAP_NET_RAW"));
            }
        });
        scene
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

    fn set_args(&self, script: &str) {
        self.edit_spec(|spec| spec["process"]["args"] = json!(["sh", "-c", script]));
    }

    fn state_root(&self) -> String {
        self.root.join("runtime-state").display().to_string()
    }

    /// The wrapper, with hardened and this scene's state, in front of the
    /// runtime: `args` after the global flags.
    fn wrapper(&self, args: &[&str]) -> Output {
        self.wrapper_command(args).output().unwrap()
    }

    /// [`Self::wrapper`] for a `create`: the container keeps its standard
    /// output and error, so they go to a file, not a pipe waited on.
    fn wrapper_create(&self, args: &[&str]) -> (std::process::ExitStatus, String) {
        self.wrapper_create_with(HARDENED, args)
    }

    /// [`Self::wrapper_create`] with `policy` as the chain.
    fn wrapper_create_with(&self, policy: &str, args: &[&str]) -> (std::process::ExitStatus, String) {
        let log = self.root.join("create.log");
        let file = std::fs::File::create(&log).unwrap();
        let status = self
            .wrapper_command_with(policy, args)
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .status()
            .unwrap();
        (status, std::fs::read_to_string(&log).unwrap_or_default())
    }

    fn wrapper_command(&self, args: &[&str]) -> Command {
        self.wrapper_command_with(HARDENED, args)
    }

    /// The wrapper with `policy` as the configuration file's chain.
    fn wrapper_command_with(&self, policy: &str, args: &[&str]) -> Command {
        self.wrapper_command_at(&self.state_root(), policy, args)
    }

    /// [`Self::wrapper_command_with`] with the runtime's state root `root`.
    fn wrapper_command_at(&self, root: &str, policy: &str, args: &[&str]) -> Command {
        let config = self.root.join("runtime.toml");
        std::fs::write(
            &config,
            format!(
                "policies = [\"{policy}\"]\nreal_runtime = \"{}\"\nstate_dir = \"{}\"\n",
                self.runtime.path().display(),
                self.root.join("sw-state").display()
            ),
        )
        .unwrap();
        let mut all = vec!["--root".to_string(), root.to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        let mut command = self.runtime.command(Path::new(WRAPPER), &all);
        command.env("SPECWRIGHT_RUNTIME_CONFIG", &config).stdin(Stdio::null());
        command
    }

    /// Creates container `id` of the bundle with the runtime itself, under
    /// state root `root`; its output goes to a file (`runc init`, left
    /// waiting, would hold a pipe open).
    fn create_directly(&self, root: &str, id: &str) {
        let log = self.root.join(format!("{id}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let args = ["--root", root, "create", "--bundle", &self.bundle_arg(), id].map(String::from);
        let status = self
            .runtime
            .command(&self.runtime.path(), &args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// The runtime itself, without the wrapper.
    fn direct(&self, args: &[&str]) -> Output {
        self.direct_at(&self.state_root(), args)
    }

    /// [`Self::direct`] with the runtime's state root `root`.
    fn direct_at(&self, root: &str, args: &[&str]) -> Output {
        let mut all = vec!["--root".to_string(), root.to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        self.runtime
            .command(&self.runtime.path(), &all)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn bundle_arg(&self) -> String {
        self.bundle.display().to_string()
    }

    fn exists(&self, id: &str) -> bool {
        self.direct(&["state", id]).status.success()
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        let listed = self.direct(&["list", "-q"]);
        for id in String::from_utf8_lossy(&listed.stdout).lines() {
            let _ = self.direct(&["delete", "--force", id]);
        }
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The mask of capability names, by their numbers.
fn mask_of(names: &[Value]) -> u64 {
    names
        .iter()
        .map(|n| {
            let n = n.as_str().unwrap();
            let bit = specwright_core::facts::CAPABILITY_NAMES
                .iter()
                .position(|c| *c == n)
                .unwrap();
            1u64 << bit
        })
        .fold(0, |a, b| a | b)
}

const CAP_SYS_ADMIN_BIT: u64 = 1 << 21;
const CAP_NET_RAW_BIT: u64 = 1 << 13;

/// The hostile spec, the runtime it fools (`None`: both), and what the
/// container would show if it ran (a test of the control run).
struct Hostile {
    name: &'static str,
    edit: fn(&str) -> String,
    fools: Option<Runtime>,
    shows: fn(&str) -> bool,
}

fn with_top(base: &str, extra: &str) -> String {
    let open = base.trim_end().strip_suffix('}').unwrap();
    format!("{open},\n{extra}\n}}\n")
}

fn hostile_specs() -> Vec<Hostile> {
    vec![
        Hostile {
            name: "a seccomp filter of crun's annotation (run.oci.seccomp_bpf_data)",
            edit: |base| {
                let mut spec: Value = serde_json::from_str(base).unwrap();
                // BPF: return SECCOMP_RET_ALLOW.
                spec["annotations"] = json!({"run.oci.seccomp_bpf_data": "BgAAAAAA/38="});
                spec.to_string()
            },
            fools: Some(Runtime::Crun),
            shows: |status| status.contains("UNSHARE-ALLOWED"),
        },
        Hostile {
            name: "a uid past 2^31 (crun keeps root)",
            edit: |base| {
                let mut spec: Value = serde_json::from_str(base).unwrap();
                spec["process"]["user"] = json!({"uid": 4294967295u64, "gid": 4294967295u64});
                spec.to_string()
            },
            fools: Some(Runtime::Crun),
            shows: |status| status_field(status, "Uid").starts_with("0\t"),
        },
        Hostile {
            name: "a second Process object",
            edit: |base| {
                let mut spec: Value = serde_json::from_str(base).unwrap();
                let mut process = spec["process"].clone();
                process["capabilities"]["bounding"] = json!(["CAP_SYS_ADMIN"]);
                process["capabilities"]["effective"] = json!(["CAP_SYS_ADMIN"]);
                process["capabilities"]["permitted"] = json!(["CAP_SYS_ADMIN"]);
                process["noNewPrivileges"] = json!(false);
                spec.as_object_mut().unwrap().remove("process");
                let first = serde_json::to_string(&base_process(base)).unwrap();
                with_top(
                    &with_top(&spec.to_string(), &format!("\"process\": {first}")),
                    &format!("\"Process\": {process}"),
                )
            },
            fools: Some(Runtime::Runc),
            shows: |status| capability_mask(status, "CapEff") & CAP_SYS_ADMIN_BIT != 0,
        },
        Hostile {
            name: "proceſs (Unicode folding)",
            edit: |base| {
                let mut spec: Value = serde_json::from_str(base).unwrap();
                let mut process = spec["process"].clone();
                process["capabilities"]["effective"] = json!(["CAP_SYS_ADMIN"]);
                process["capabilities"]["bounding"] = json!(["CAP_SYS_ADMIN"]);
                process["capabilities"]["permitted"] = json!(["CAP_SYS_ADMIN"]);
                spec.as_object_mut().unwrap().remove("process");
                with_top(
                    &with_top(&spec.to_string(), &format!("\"process\": {}", base_process(base))),
                    &format!("\"proce\\u017fs\": {process}"),
                )
            },
            fools: Some(Runtime::Runc),
            shows: |status| capability_mask(status, "CapEff") & CAP_SYS_ADMIN_BIT != 0,
        },
        Hostile {
            name: "a Capabilities object one level down",
            edit: |base| {
                let mut spec: Value = serde_json::from_str(base).unwrap();
                spec["process"]["Capabilities"] = json!({"bounding": ["CAP_SYS_ADMIN"], "effective": ["CAP_SYS_ADMIN"], "permitted": ["CAP_SYS_ADMIN"]});
                spec.to_string()
            },
            fools: Some(Runtime::Runc),
            shows: |status| capability_mask(status, "CapEff") & CAP_SYS_ADMIN_BIT != 0,
        },
        Hostile {
            name: "two network namespaces, the second the host's",
            edit: |base| {
                let mut spec: Value = serde_json::from_str(base).unwrap();
                spec["linux"]["namespaces"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"type": "network", "path": "/proc/self/ns/net"}));
                spec.to_string()
            },
            fools: Some(Runtime::Crun),
            shows: |status| status.contains(&host_netns()),
        },
        Hostile {
            name: "a lower-case capability name",
            edit: |base| {
                let mut spec: Value = serde_json::from_str(base).unwrap();
                for set in ["bounding", "effective", "permitted"] {
                    spec["process"]["capabilities"][set]
                        .as_array_mut()
                        .unwrap()
                        .push(json!("cap_sys_admin"));
                }
                spec.to_string()
            },
            fools: Some(Runtime::Crun),
            shows: |status| capability_mask(status, "CapEff") & CAP_SYS_ADMIN_BIT != 0,
        },
    ]
}

fn base_process(base: &str) -> Value {
    serde_json::from_str::<Value>(base).unwrap()["process"].clone()
}

/// The kernel's name of the host's network namespace (`net:[...]`).
fn host_netns() -> String {
    std::fs::read_link("/proc/self/ns/net").unwrap().display().to_string()
}

/// What the container prints: its status, its network namespace, and
/// whether its rootfs takes a write.
const PROBE: &str = "grep -E 'NoNewPrivs|CapEff|CapBnd|Uid' /proc/self/status; readlink /proc/self/ns/net; \
    touch /written 2>&1 || true; unshare -U true 2>/dev/null && echo UNSHARE-ALLOWED; true";

fn hostile_specs_never_reach(runtime: Runtime) {
    let scene = Scene::new(runtime);
    scene.set_args(PROBE);
    let base = std::fs::read_to_string(scene.config()).unwrap();
    for (i, hostile) in hostile_specs().into_iter().enumerate() {
        let text = (hostile.edit)(&base);
        std::fs::write(scene.config(), &text).unwrap();
        let id = format!("hostile{i}");
        let out = scene.wrapper(&["run", "--bundle", &scene.bundle_arg(), &id]);
        assert_eq!(out.status.code(), Some(1), "{}: {}", hostile.name, text_of(&out));
        assert!(
            text_of(&out).contains("is not read the same way"),
            "{}: {}",
            hostile.name,
            text_of(&out)
        );
        assert!(!scene.exists(&id), "{}: a container was made", hostile.name);
        assert_eq!(
            std::fs::read_to_string(scene.config()).unwrap(),
            text,
            "{}",
            hostile.name
        );
        // The control: the runtime it fools, given the spec directly,
        // runs what the policy never saw.
        if hostile.fools.is_none_or(|fooled| fooled == runtime) {
            let control = format!("control{i}");
            let out = scene.direct(&["run", "--bundle", &scene.bundle_arg(), &control]);
            let shown = text_of(&out);
            assert!(
                (hostile.shows)(&shown),
                "{}: {} read the spec as the policy did, so the test proves nothing:\n{shown}",
                hostile.name,
                runtime.name()
            );
        }
    }
}

fn text_of(out: &Output) -> String {
    text(out)
}

#[test]
fn runc_never_runs_a_spec_it_would_read_otherwise_than_the_policies() {
    hostile_specs_never_reach(Runtime::Runc);
}

#[test]
fn crun_never_runs_a_spec_it_would_read_otherwise_than_the_policies() {
    hostile_specs_never_reach(Runtime::Crun);
}

fn runs_as_approved(runtime: Runtime) {
    let scene = Scene::new(runtime);
    scene.set_args(PROBE);
    let out = scene.wrapper(&["run", "--bundle", &scene.bundle_arg(), "approved"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let shown = text(&out);
    let approved = scene.spec();
    assert_eq!(approved["process"]["noNewPrivileges"], true);
    assert_eq!(status_field(&shown, "NoNewPrivs"), "1", "{shown}");
    let caps = &approved["process"]["capabilities"];
    assert_eq!(
        capability_mask(&shown, "CapBnd"),
        mask_of(caps["bounding"].as_array().unwrap()),
        "{shown}"
    );
    assert_eq!(capability_mask(&shown, "CapEff") & CAP_NET_RAW_BIT, 0, "{shown}");
    assert_eq!(
        shown.contains("Read-only file system"),
        approved["root"]["readonly"] == true,
        "{shown}"
    );
    assert!(!shown.contains(&host_netns()), "{shown}");
}

#[test]
fn runc_runs_what_the_chain_approved() {
    runs_as_approved(Runtime::Runc);
}

#[test]
fn crun_runs_what_the_chain_approved() {
    runs_as_approved(Runtime::Crun);
}

fn exec_and_update_run_as_approved(runtime: Runtime) {
    let scene = Scene::new(runtime);
    scene.set_args("sleep 60");
    let bundle = scene.bundle_arg();
    let (status, shown) = scene.wrapper_create(&["create", "--bundle", &bundle, "box"]);
    assert_eq!(status.code(), Some(0), "{shown}");
    let out = scene.wrapper(&["start", "box"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // A process document that clears NoNewPrivileges and adds CAP_NET_RAW.
    let doc = scene.root.join("process.json");
    std::fs::write(
        &doc,
        serde_json::to_string(&json!({
            "user": {"uid": 0, "gid": 0}, "cwd": "/", "args": ["sh", "-c", "grep -E 'NoNewPrivs|CapEff' /proc/self/status"],
            "env": ["PATH=/bin"], "noNewPrivileges": false,
            "capabilities": {"bounding": ["CAP_NET_RAW", "CAP_KILL"], "effective": ["CAP_NET_RAW", "CAP_KILL"], "permitted": ["CAP_NET_RAW", "CAP_KILL"]}
        }))
        .unwrap(),
    )
    .unwrap();
    std::fs::set_permissions(&doc, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = scene.wrapper(&["exec", "--process", doc.to_str().unwrap(), "box"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let shown = text(&out);
    assert_eq!(status_field(&shown, "NoNewPrivs"), "1", "{shown}");
    assert_eq!(capability_mask(&shown, "CapEff") & CAP_NET_RAW_BIT, 0, "{shown}");
    // Flags: runc's reading of them, whichever runtime runs the process.
    let out = scene.wrapper(&[
        "exec",
        "box",
        "sh",
        "-c",
        "grep NoNewPrivs /proc/self/status; id -u; pwd",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let shown = text(&out);
    assert_eq!(status_field(&shown, "NoNewPrivs"), "1", "{shown}");
    // A privileged exec is refused; the container keeps running.
    let out = scene.wrapper(&["exec", "--cap", "CAP_SYS_ADMIN", "box", "true"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("insecure mode"), "{}", text(&out));
    // Regression (red team, round 2): crun leaves a process whose
    // sub-cgroup does not exist in the engine's cgroups (outside the
    // container's device rules and limits), and says nothing.
    if runtime == Runtime::Crun {
        let out = scene.wrapper(&["exec", "--cgroup", "sub", "box", "cat", "/proc/self/cgroup"]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(text(&out).contains("refused with crun"), "{}", text(&out));
        let devices = |args: &[&str]| {
            let out = scene.direct(args);
            assert!(out.status.success(), "{args:?}: {}", text(&out));
            text(&out).lines().find(|l| l.contains(":devices:")).map(str::to_string)
        };
        let inside = devices(&["exec", "box", "cat", "/proc/self/cgroup"]);
        let escaped = devices(&["exec", "--cgroup", "sub", "box", "cat", "/proc/self/cgroup"]);
        assert!(inside.is_some());
        assert_ne!(
            inside, escaped,
            "crun put the process in the container's devices cgroup after all"
        );
    }
    // An update, reviewed and applied.
    let out = scene.wrapper(&["update", "--memory", "64m", "box"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = scene.direct(&["exec", "box", "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]);
    assert_eq!(text(&out).trim(), "67108864", "{}", text(&out));
    let rules = scene.root.join("devices.json");
    std::fs::write(&rules, r#"{"devices": [{"allow": true, "access": "rwm"}]}"#).unwrap();
    let out = scene.wrapper(&["update", "--resources", rules.to_str().unwrap(), "box"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let out = scene.wrapper(&["delete", "--force", "box"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!scene.exists("box"));
    // Its approved spec went with it: a new exec finds nothing to review.
    let out = scene.wrapper(&["exec", "box", "true"]);
    assert!(text(&out).contains("no spec approved for it"), "{}", text(&out));
}

#[test]
fn runc_execs_and_updates_as_the_chain_approved() {
    exec_and_update_run_as_approved(Runtime::Runc);
}

#[test]
fn crun_execs_and_updates_as_the_chain_approved() {
    exec_and_update_run_as_approved(Runtime::Crun);
}

const MOUNT_ALLOWLIST: &str = env!("SPECWRIGHT_MOUNT_ALLOWLIST_WASM");

/// A claim of an example policy: a spec edit it denies (with `message`),
/// and, where runc shows it, what the container would see if runc ran
/// the spec directly, so that the denial is not of a harmless spec.
struct Claim {
    name: &'static str,
    edit: Box<dyn Fn(&mut Value)>,
    message: &'static str,
    /// The probe the container runs, and what its output shows when runc
    /// runs the spec directly.
    control: Option<(&'static str, Shows)>,
}

/// Whether a container's output shows what a claim is about.
type Shows = Box<dyn Fn(&str) -> bool>;

impl Scene {
    /// The wrapper with `policy` as the file's chain.
    fn wrapper_with(&self, policy: &str, args: &[&str]) -> Output {
        self.wrapper_command_with(policy, args).output().unwrap()
    }

    /// Each claim: denied through the wrapper (no container made), and
    /// shown by runc run directly.
    fn check_claims(&self, policy: &str, claims: Vec<Claim>) {
        let base = self.spec();
        for (i, claim) in claims.into_iter().enumerate() {
            let mut spec = base.clone();
            (claim.edit)(&mut spec);
            if let Some((probe, _)) = &claim.control {
                spec["process"]["args"] = json!(["sh", "-c", probe]);
            }
            std::fs::write(self.config(), serde_json::to_string_pretty(&spec).unwrap()).unwrap();
            let id = format!("claim{i}");
            let out = self.wrapper_with(policy, &["run", "--bundle", &self.bundle_arg(), &id]);
            assert_eq!(out.status.code(), Some(1), "{}: {}", claim.name, text(&out));
            assert!(text(&out).contains(claim.message), "{}: {}", claim.name, text(&out));
            assert!(!self.exists(&id), "{}: a container was made", claim.name);
            if let Some((_, shows)) = &claim.control {
                let control = format!("control{i}");
                let out = self.direct(&["run", "--bundle", &self.bundle_arg(), &control]);
                assert!(
                    shows(&text(&out)),
                    "{}: runc's own run does not show it, so the denial proves nothing:\n{}",
                    claim.name,
                    text(&out)
                );
            }
        }
        std::fs::write(self.config(), serde_json::to_string_pretty(&base).unwrap()).unwrap();
    }
}

#[test]
fn hardened_keeps_its_claims_through_runc() {
    let scene = Scene::new(Runtime::Runc);
    let hooked = scene.root.join("hooked");
    let hook_script = format!("touch {}", hooked.display());
    let host_pid_ns = std::fs::read_link("/proc/self/ns/pid").unwrap().display().to_string();
    let hooked_check = hooked.clone();
    // A device node in the image itself (a rootfs is the image's).
    let node = scene.bundle.join("rootfs/loop-control");
    nix::sys::stat::mknod(
        &node,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(10, 237),
    )
    .unwrap();
    let claims = vec![
        Claim {
            name: "the host's PID namespace joined by path",
            edit: Box::new(|spec| namespace_path(spec, "pid", "/proc/self/ns/pid")),
            message: "is the host's own",
            control: Some((
                "readlink /proc/self/ns/pid",
                Box::new(move |shown: &str| shown.contains(&host_pid_ns)),
            )),
        },
        Claim {
            name: "every capability but CAP_SYS_ADMIN (--cap-add ALL --cap-drop SYS_ADMIN)",
            edit: Box::new(|spec| {
                // Every one this host has (some sandboxes lack CAP_SYS_RESOURCE).
                let status = std::fs::read_to_string("/proc/self/status").unwrap();
                let host = capability_mask(&status, "CapEff");
                let all: Vec<Value> = specwright_core::facts::CAPABILITY_NAMES
                    .iter()
                    .enumerate()
                    .filter(|(bit, c)| **c != "CAP_SYS_ADMIN" && host & (1 << bit) != 0)
                    .map(|(_, c)| json!(c))
                    .collect();
                for set in ["bounding", "effective", "permitted"] {
                    spec["process"]["capabilities"][set] = Value::Array(all.clone());
                }
            }),
            message: "outside the default set",
            control: Some((
                "grep CapEff /proc/self/status",
                Box::new(|shown: &str| capability_mask(shown, "CapEff") & (1 << 19) != 0),
            )),
        },
        Claim {
            name: "seccomp removed",
            edit: Box::new(|spec| {
                spec["linux"].as_object_mut().unwrap().remove("seccomp");
            }),
            message: "no seccomp filter",
            control: Some((
                "grep Seccomp: /proc/self/status",
                Box::new(|shown: &str| status_field(shown, "Seccomp") == "0"),
            )),
        },
        Claim {
            name: "a namespace path through /proc/self/cwd (each process resolves it in its own directory)",
            edit: Box::new(|spec| namespace_path(spec, "network", "/proc/self/cwd/netns")),
            message: "goes through a link of the kernel's",
            control: None,
        },
        Claim {
            name: "/proc's kernel knobs writable",
            edit: Box::new(|spec| {
                spec["linux"]["readonlyPaths"] = json!([]);
                spec["linux"]["maskedPaths"] = json!([]);
            }),
            message: "is neither read-only nor masked",
            control: Some((
                "test -w /proc/sys/kernel/core_pattern && echo KNOBS-WRITABLE",
                Box::new(|shown: &str| shown.contains("KNOBS-WRITABLE")),
            )),
        },
        Claim {
            name: "the host's root cgroup",
            edit: Box::new(|spec| spec["linux"]["cgroupsPath"] = json!("/")),
            message: "the host's root cgroup",
            // runc's own run of it removes the host's empty cgroups.
            control: None,
        },
        Claim {
            name: "a device rule that allows every device",
            edit: Box::new(|spec| {
                spec["linux"]["resources"]["devices"] = json!([{"allow": true, "access": "rwm"}]);
            }),
            message: "allows every device",
            control: None,
        },
        Claim {
            name: "a character device rule for a node the image brings (not a device node given)",
            edit: Box::new(|spec| {
                spec["linux"]["resources"]["devices"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"allow": true, "type": "c", "major": 10, "minor": 237, "access": "rwm"}));
            }),
            message: "character device 10:237",
            control: Some((
                "exec 3</loop-control && echo OPENED",
                Box::new(|shown: &str| shown.contains("OPENED")),
            )),
        },
        Claim {
            name: "a host device node",
            edit: Box::new(|spec| {
                spec["linux"]["devices"] =
                    json!([{"path": "/dev/loop-control", "type": "c", "major": 10, "minor": 237, "fileMode": 432}]);
                spec["linux"]["resources"]["devices"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"allow": true, "type": "c", "major": 10, "minor": 237, "access": "rwm"}));
            }),
            message: "host device /dev/loop-control",
            control: Some((
                "ls -l /dev/loop-control",
                Box::new(|shown: &str| shown.contains("10,") && shown.contains("237")),
            )),
        },
        Claim {
            name: "a createRuntime hook, which runs as root on the host",
            edit: Box::new(move |spec| {
                spec["hooks"] =
                    json!({"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", hook_script.clone()]}]});
            }),
            message: "createRuntime hook runs /bin/sh",
            control: Some(("true", Box::new(move |_| hooked_check.exists()))),
        },
    ];
    scene.check_claims(HARDENED, claims);
    assert!(hooked.exists(), "the control ran the hook");
}

#[test]
fn mount_allowlist_keeps_its_claims_through_runc() {
    let scene = Scene::new(Runtime::Runc);
    let allowed = scene.root.join("allowed");
    for dir in ["x", "upper", "work"] {
        std::fs::create_dir_all(allowed.join(dir)).unwrap();
    }
    std::fs::write(allowed.join("x/only-here"), "").unwrap();
    let settings = scene.root.join("allow.json");
    // The bundle (its rootfs) and the allowed directory.
    std::fs::write(
        &settings,
        json!({"allowed_sources": [allowed, scene.bundle]}).to_string(),
    )
    .unwrap();
    let policy = format!("{MOUNT_ALLOWLIST}:{}", settings.display());
    let mount = |kind: &'static str, source: &'static str| -> Box<dyn Fn(&mut Value)> {
        Box::new(move |spec: &mut Value| {
            spec["mounts"]
                .as_array_mut()
                .unwrap()
                .push(json!({"destination": "/mnt", "type": kind, "source": source}));
        })
    };
    let allowed_str = allowed.display().to_string();
    let hosts_file = allowed.join("hosts").display().to_string();
    std::fs::write(&hosts_file, "127.0.0.1 localhost\n").unwrap();
    // What runc's own run resolves /proc/self/cwd/data to: its rootfs's.
    std::os::unix::fs::symlink("/etc", scene.bundle.join("rootfs/data")).unwrap();
    let claims = vec![
        Claim {
            name: "devtmpfs: the host's devices",
            edit: mount("devtmpfs", "devtmpfs"),
            message: "not a filesystem mount-allowlist knows",
            control: Some(("ls /mnt", Box::new(|shown: &str| shown.contains("kmsg")))),
        },
        Claim {
            name: "binfmt_misc: the host's binary formats",
            edit: mount("binfmt_misc", "binfmt_misc"),
            message: "not a filesystem mount-allowlist knows",
            control: None,
        },
        Claim {
            name: "debugfs",
            edit: mount("debugfs", "debugfs"),
            message: "not a filesystem mount-allowlist knows",
            control: None,
        },
        Claim {
            name: "securityfs",
            edit: mount("securityfs", "securityfs"),
            message: "not a filesystem mount-allowlist knows",
            control: None,
        },
        Claim {
            name: "cgroup2: the host's whole cgroup tree",
            edit: mount("cgroup2", "cgroup2"),
            message: "not a filesystem mount-allowlist knows",
            control: None,
        },
        Claim {
            name: "a source through /proc/self/cwd (runc resolves it in the rootfs)",
            edit: Box::new(|spec: &mut Value| {
                spec["mounts"].as_array_mut().unwrap().push(json!({
                    "destination": "/mnt", "type": "bind", "source": "/proc/self/cwd/data", "options": ["rbind", "ro"]
                }));
            }),
            message: "goes through a link of the kernel's",
            control: Some((
                "head -1 /mnt/passwd",
                Box::new(|shown: &str| shown.starts_with("root:")),
            )),
        },
        Claim {
            name: "an earlier bind at /etc/hosts, shadowed by a later one",
            edit: Box::new(move |spec: &mut Value| {
                let mounts = spec["mounts"].as_array_mut().unwrap();
                mounts.push(
                    json!({"destination": "/etc/hosts", "type": "bind", "source": "/", "options": ["rbind", "ro"]}),
                );
                mounts.push(json!({"destination": "/etc/hosts", "type": "bind", "source": hosts_file.clone(), "options": ["rbind", "ro"]}));
            }),
            message: "mount /etc/hosts uses /,",
            control: None,
        },
        Claim {
            name: "a rootfs of the host's",
            edit: Box::new(|spec: &mut Value| spec["root"]["path"] = json!("/usr")),
            message: "the rootfs /usr",
            // runc's own run of it makes directories in the host's /usr.
            control: None,
        },
        Claim {
            name: "a second lowerdir inside an allowed one's value",
            edit: Box::new(move |spec: &mut Value| {
                spec["mounts"].as_array_mut().unwrap().push(json!({
                    "destination": "/mnt", "type": "overlay", "source": "overlay",
                    "options": [
                        format!("lowerdir={allowed_str}/x,lowerdir=/etc"),
                        format!("upperdir={allowed_str}/upper"),
                        format!("workdir={allowed_str}/work"),
                    ]
                }));
            }),
            message: "holds a comma",
            control: Some((
                "ls /mnt",
                Box::new(|shown: &str| shown.contains("passwd") && !shown.contains("only-here")),
            )),
        },
    ];
    scene.check_claims(&policy, claims);
}

/// Regression (red team): the runtime read the engine's config.json by
/// path after the review; whoever could write the bundle swapped it in
/// between. Here the "runtime" swaps it before running runc: what runs is
/// still what the chain approved.
#[test]
fn a_config_json_swapped_after_the_review_is_not_what_runs() {
    let scene = Scene::new(Runtime::Runc);
    scene.set_args("grep -E 'CapEff|Seccomp:' /proc/self/status");
    let mut evil = scene.spec();
    for set in ["bounding", "effective", "permitted"] {
        evil["process"]["capabilities"][set]
            .as_array_mut()
            .unwrap()
            .push(json!("CAP_SYS_ADMIN"));
    }
    evil["linux"].as_object_mut().unwrap().remove("seccomp");
    let evil_file = scene.root.join("evil.json");
    std::fs::write(&evil_file, evil.to_string()).unwrap();
    let swapper = scene.root.join("swapping-runc");
    std::fs::write(
        &swapper,
        format!(
            "#!/bin/sh\ncp {} {}\nexec {} \"$@\"\n",
            evil_file.display(),
            scene.config().display(),
            Runtime::Runc.path().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&swapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = scene.root.join("swap.toml");
    std::fs::write(
        &config,
        format!(
            "policies = [\"{HARDENED}\"]\nreal_runtime = \"{}\"\nstate_dir = \"{}\"\n",
            swapper.display(),
            scene.root.join("sw-state").display()
        ),
    )
    .unwrap();
    let out = Command::new(WRAPPER)
        .env("SPECWRIGHT_RUNTIME_CONFIG", &config)
        .args([
            "--root",
            &scene.state_root(),
            "run",
            "--bundle",
            &scene.bundle_arg(),
            "swapped",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert_eq!(scene.spec(), evil, "the engine's file was swapped");
    assert_eq!(capability_mask(&shown, "CapEff") & CAP_SYS_ADMIN_BIT, 0, "{shown}");
    assert_eq!(status_field(&shown, "Seccomp"), "2", "{shown}");
}

/// Regression (red team): a `create` of an id the runtime already has
/// failed in the runtime but left an approved spec, and an `exec` into
/// the container the chain never saw got through.
#[test]
fn a_container_the_wrapper_did_not_make_gets_no_exec() {
    let scene = Scene::new(Runtime::Runc);
    scene.set_args("sleep 60");
    let bundle = scene.bundle_arg();
    scene.create_directly(&scene.state_root(), "victim");
    let out = scene.wrapper(&["exec", "victim", "true"]);
    assert!(text(&out).contains("no spec approved for it"), "{}", text(&out));
    let (status, shown) = scene.wrapper_create(&["create", "--bundle", &bundle, "victim"]);
    assert_eq!(status.code(), Some(1), "{shown}");
    assert!(shown.contains("a container of this id already"), "{shown}");
    let out = scene.wrapper(&["exec", "victim", "true"]);
    assert!(text(&out).contains("no spec approved for it"), "{}", text(&out));
    // Round 2: the same root spelled through a missing directory and `..`,
    // which runc cleans to the root itself.
    let odd = format!("{}/nx/..", scene.state_root());
    for args in [
        &["create", "--bundle", &bundle, "victim"][..],
        &["exec", "victim", "true"],
    ] {
        let out = scene.wrapper_command_at(&odd, HARDENED, args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(text(&out).contains("not spelled plainly"), "{}", text(&out));
    }
}

/// Regression (red team): the host's network namespace bound under
/// `/run/netns` (`ip netns attach host 1`) was named by its path, under
/// hardened's allowed prefix.
#[test]
fn the_hosts_namespace_bound_under_an_allowed_prefix_is_still_the_hosts() {
    let scene = Scene::new(Runtime::Runc);
    let netns = scene.root.join("netns");
    std::fs::create_dir_all(&netns).unwrap();
    let bound = netns.join("hostnet");
    std::fs::write(&bound, "").unwrap();
    let settings = scene.root.join("hardened.json");
    std::fs::write(
        &settings,
        json!({"allowed_namespaces": {"network": [netns]}}).to_string(),
    )
    .unwrap();
    scene.edit_spec(|spec| namespace_path(spec, "network", bound.to_str().unwrap()));
    let config = scene.root.join("bound.toml");
    std::fs::write(
        &config,
        format!(
            "policies = [\"{HARDENED}:{}\"]\nreal_runtime = \"runc\"\nstate_dir = \"{}\"\n",
            settings.display(),
            scene.root.join("sw-state").display()
        ),
    )
    .unwrap();
    let script = format!(
        "mount --bind /proc/self/ns/net {bound} && SPECWRIGHT_RUNTIME_CONFIG={config} {WRAPPER} --root {root} run --bundle {bundle} bound",
        bound = bound.display(),
        config = config.display(),
        root = scene.state_root(),
        bundle = scene.bundle_arg(),
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("is the host's own"), "{}", text(&out));
    assert!(!scene.exists("bound"));
}

/// Regression (red team, round 2): runc's `delete` runs the poststop hooks
/// its state.json names, crun's those of the config.json it saved; with a
/// state root another user can write, that user's hook ran as root on the
/// host. The wrapper refuses every subcommand on such a root.
fn a_hook_planted_in_another_users_state_root_never_runs(runtime: Runtime) {
    let scene = Scene::new(runtime);
    scene.set_args("sleep 60");
    let root = scene.root.join("their-root");
    let root_arg = root.display().to_string();
    scene.create_directly(&root_arg, "planted");
    let marker = scene.root.join("HOOK-RAN");
    let hook = json!({"path": "/bin/sh", "args": ["sh", "-c", format!("touch {}", marker.display())]});
    match runtime {
        Runtime::Runc => common::edit_spec(&root.join("planted/state.json"), |state| {
            if !state["config"]["Hooks"].is_object() {
                state["config"]["Hooks"] = json!({});
            }
            state["config"]["Hooks"]["poststop"] = json!([hook]);
        }),
        Runtime::Crun => common::edit_spec(&root.join("planted/config.json"), |config| {
            config["hooks"] = json!({"poststop": [hook]});
        }),
    }
    let own = |uid: u32| {
        let out = Command::new("chown")
            .arg("-R")
            .arg(uid.to_string())
            .arg(&root)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
    };
    own(65534);
    for args in [
        &["delete", "--force", "planted"][..],
        &["kill", "planted", "KILL"],
        &["start", "planted"],
        &["state", "planted"],
    ] {
        let out = scene.wrapper_command_at(&root_arg, HARDENED, args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert!(text(&out).contains("not trusted"), "{args:?}: {}", text(&out));
        assert!(!marker.exists(), "{args:?} ran the planted hook");
    }
    // The hook was live: the runtime, on a root it trusts, runs it.
    own(0);
    let out = scene.direct_at(&root_arg, &["delete", "--force", "planted"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(marker.exists(), "the runtime did not run the planted hook");
}

#[test]
fn runc_runs_no_hook_planted_in_another_users_state_root() {
    a_hook_planted_in_another_users_state_root_never_runs(Runtime::Runc);
}

#[test]
fn crun_runs_no_hook_planted_in_another_users_state_root() {
    a_hook_planted_in_another_users_state_root_never_runs(Runtime::Crun);
}

/// Regression (red team, round 2): crun opens the rootfs by its path again
/// when it runs, following symlinks; a rootfs reached through another
/// user's directory was swapped, once approved, for one the chain denies.
#[test]
fn crun_gets_no_rootfs_another_user_could_swap_after_the_review() {
    let scene = Scene::new(Runtime::Crun);
    scene.set_args("cat /MARKER 2>/dev/null || echo the-approved-rootfs");
    let theirs = scene.root.join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    let outside = scene.root.join("outside");
    std::fs::create_dir(&outside).unwrap();
    for copy in [&theirs, &outside] {
        let out = Command::new("cp")
            .arg("-a")
            .arg(scene.bundle.join("rootfs"))
            .arg(copy)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    std::fs::write(outside.join("rootfs/MARKER"), "the-swapped-rootfs\n").unwrap();
    let out = Command::new("chown").arg("65534").arg(&theirs).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let rootfs = theirs.join("rootfs");
    scene.edit_spec(|spec| spec["root"]["path"] = json!(rootfs.display().to_string()));
    let bundle = scene.bundle_arg();
    let (status, shown) = scene.wrapper_create(&["run", "--bundle", &bundle, "swappable"]);
    assert_eq!(status.code(), Some(1), "{shown}");
    assert!(shown.contains("another user could put something else there"), "{shown}");
    assert!(shown.contains(&format!("root.path {}", rootfs.display())), "{shown}");
    assert!(!scene.exists("swappable"));
    // What the owner of that directory could do once it was approved, and
    // crun's reading of it: the swapped rootfs runs.
    std::fs::rename(&rootfs, theirs.join("was-rootfs")).unwrap();
    std::os::unix::fs::symlink(outside.join("rootfs"), &rootfs).unwrap();
    let out = scene.direct(&["run", "--bundle", &bundle, "swapped"]);
    assert!(text(&out).contains("the-swapped-rootfs"), "{}", text(&out));
}

/// Regression (red team, round 3): crun runs an approved poststop hook on
/// `delete` from the config.json of the bundle it was handed, which the
/// wrapper's `delete` removed first. Through the wrapper each runtime runs
/// it as it does directly.
fn an_approved_poststop_hook_runs_on_delete(runtime: Runtime) {
    let scene = Scene::new(runtime);
    scene.set_args("sleep 60");
    let marker = scene.root.join("POSTSTOP-RAN");
    scene.edit_spec(|spec| {
        spec["hooks"] =
            json!({"poststop": [{"path": "/bin/sh", "args": ["sh", "-c", format!("touch {}", marker.display())]}]});
    });
    let settings = scene.root.join("allow-all.json");
    std::fs::write(&settings, r#"{"allowed_sources": ["/"]}"#).unwrap();
    let policy = format!("{MOUNT_ALLOWLIST}:{}", settings.display());
    let bundle = scene.bundle_arg();
    let (status, shown) = scene.wrapper_create_with(&policy, &["create", "--bundle", &bundle, "hooked"]);
    assert_eq!(status.code(), Some(0), "{shown}");
    assert!(!marker.exists());
    let out = scene
        .wrapper_command_with(&policy, &["delete", "--force", "hooked"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(!scene.exists("hooked"));
    assert!(marker.exists(), "the approved poststop hook did not run");
    // Its approved spec is forgotten all the same.
    let out = scene.wrapper_with(&policy, &["exec", "hooked", "true"]);
    assert!(text(&out).contains("no spec approved for it"), "{}", text(&out));
}

#[test]
fn runc_runs_an_approved_poststop_hook_on_delete() {
    an_approved_poststop_hook_runs_on_delete(Runtime::Runc);
}

#[test]
fn crun_runs_an_approved_poststop_hook_on_delete() {
    an_approved_poststop_hook_runs_on_delete(Runtime::Crun);
}
