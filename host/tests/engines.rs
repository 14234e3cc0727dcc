//! The real engines from Debian's packages run their containers through
//! `specwright-runc`: buildah, podman, containerd (`ctr`) and Docker's
//! embedded BuildKit. Every image is made here (a busybox rootfs through
//! `podman import`; there is no registry), every daemon is started by its
//! test on its own socket and root in a temporary directory, and stopped.
//! The policy is the example `hardened`: NoNewPrivileges, CAP_NET_RAW
//! dropped, the host network denied.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{capability_mask, status_field};

const WRAPPER: &str = env!("CARGO_BIN_EXE_specwright-runc");
const HARDENED: &str = env!("SPECWRIGHT_HARDENED_WASM");
const MOUNT_ALLOWLIST: &str = env!("SPECWRIGHT_MOUNT_ALLOWLIST_WASM");

/// What a container shows of itself, for comparing two runs: its
/// credentials and seccomp state, its mounts (mount point and options),
/// its devices (mode, owner, numbers, name), its ids and id map, its
/// cgroup limits, and whether its rootfs and volumes take writes.
const PROBE: &str = "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status; echo ---; \
    awk '{print $5, $6}' /proc/self/mountinfo | sort; echo ---; \
    ls -ln /dev | awk 'NR > 1 {print $1, $3, $4, $5, $6, $NF}' | sort; echo ---; \
    id; cat /proc/self/uid_map /proc/self/gid_map; \
    cat /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null; \
    touch /probe 2>&1 | head -1; touch /data/probe 2>&1 | head -1; touch /rw/probe 2>&1 | head -1; echo end";

/// Held while a scene's first podman command runs (see `import_busybox`).
static PODMAN_LOCK_CREATION: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// CAP_NET_RAW's bit in /proc/self/status's `CapEff`.
const CAP_NET_RAW_BIT: u32 = 13;

fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is not installed (scripts/setup installs buildah podman containerd docker.io)")
        })
}

fn run(command: &mut Command) -> Output {
    command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"))
}

fn ok(command: &mut Command) -> String {
    let shown = format!("{command:?}");
    let out = run(command);
    assert!(
        out.status.success(),
        "{shown} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The value of `field` in the output of `grep field /proc/self/status`.
fn has_net_raw(output: &str) -> bool {
    capability_mask(output, "CapEff") & (1 << CAP_NET_RAW_BIT) != 0
}

/// A temporary directory for one test: podman's and buildah's storage and
/// configuration, a busybox image, the wrapper's state dir.
struct Scene {
    dir: tempfile::TempDir,
}

impl Scene {
    fn new() -> Scene {
        let dir = tempfile::Builder::new().prefix("sw-eng").tempdir_in("/tmp").unwrap();
        let scene = Scene { dir };
        let root = scene.path().to_path_buf();
        std::fs::write(
            root.join("containers.conf"),
            format!(
                "[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"none\"\ntmp_dir = \"{r}/libpod\"\nvolume_path = \"{r}/volumes\"\n[network]\nnetwork_config_dir = \"{r}/networks\"\n",
                r = root.display()
            ),
        )
        .unwrap();
        std::fs::write(
            root.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{r}/storage\"\nrunroot = \"{r}/run\"\n",
                r = root.display()
            ),
        )
        .unwrap();
        scene
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn state(&self) -> PathBuf {
        self.path().join("sw-state")
    }

    /// podman or buildah with this scene's storage and configuration.
    fn libpod(&self, name: &str) -> Command {
        let mut command = Command::new(tool(name));
        command
            .env("CONTAINERS_CONF", self.path().join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.path().join("storage.conf"))
            .stdin(Stdio::null());
        command
    }

    /// A directory holding busybox, as a build context or a rootfs.
    fn busybox_dir(&self, name: &str) -> PathBuf {
        let dir = self.path().join(name);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .iter()
            .find(|p| Path::new(p).exists())
            .expect("busybox is not installed (apt-get install busybox-static)");
        std::fs::copy(busybox, dir.join("bin/busybox")).unwrap();
        for applet in [
            "sh", "grep", "touch", "true", "echo", "awk", "sort", "ls", "id", "cat", "head", "mkdir", "sleep",
        ] {
            std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
        }
        for sub in ["etc", "proc", "sys", "dev", "tmp"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        dir
    }

    /// `localhost/busybox:test`, imported into podman's storage (which
    /// buildah shares) from a rootfs tarball.
    fn import_busybox(&self) {
        let rootfs = self.busybox_dir("rootfs");
        let tarball = self.path().join("busybox.tar");
        ok(Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tarball)
            .arg("."));
        // podman's lock manager is one shared-memory segment for every
        // storage (/dev/shm/libpod_lock): two podman processes that both
        // find it missing both create it, and one fails ("file exists").
        // Scenes import one at a time, so only one ever creates it.
        let _first_use = PODMAN_LOCK_CREATION
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        ok(self
            .libpod("podman")
            .arg("import")
            .arg(&tarball)
            .arg("localhost/busybox:test"));
    }

    /// The flags that make podman or buildah use the wrapper with hardened.
    fn runtime_flags(&self) -> Vec<String> {
        vec![
            "--runtime".into(),
            WRAPPER.into(),
            "--runtime-flag".into(),
            format!("policy={HARDENED}"),
            "--runtime-flag".into(),
            format!("state-dir={}", self.state().display()),
        ]
    }

    /// The flags that make podman use the wrapper with a permissive chain:
    /// `mount-allowlist` allowing every host path, which reviews every
    /// spec (read strictly, each source resolved) and approves it as is.
    fn permissive_flags(&self) -> Vec<String> {
        let settings = self.path().join("allow-all.json");
        std::fs::write(&settings, r#"{"allowed_sources": ["/"]}"#).unwrap();
        vec![
            "--runtime".into(),
            WRAPPER.into(),
            "--runtime-flag".into(),
            format!("policy={MOUNT_ALLOWLIST}:{}", settings.display()),
            "--runtime-flag".into(),
            format!("state-dir={}", self.state().display()),
        ]
    }

    /// The wrapper's configuration file: hardened with `settings` (JSON),
    /// this scene's state dir.
    fn runtime_config(&self, settings: &str) -> PathBuf {
        let settings_path = self.path().join("hardened.json");
        std::fs::write(&settings_path, settings).unwrap();
        let path = self.path().join("runtime.toml");
        std::fs::write(
            &path,
            format!(
                "policies = [\"{HARDENED}:{}\"]\nstate_dir = \"{}\"\nreal_runtime = \"runc\"\n",
                settings_path.display(),
                self.state().display()
            ),
        )
        .unwrap();
        path
    }

    /// Ids of the containers the wrapper reviewed (its audit log).
    fn reviewed(&self) -> Vec<String> {
        std::fs::read_to_string(self.state().join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|r| r["op"] == "policy" && r["result"] == "ok")
            .filter_map(|r| r["step"].as_str().map(str::to_string))
            .collect()
    }

    /// Fails if anything is still mounted below the scene.
    fn assert_nothing_mounted(&self) {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let prefix = self.path().display().to_string();
        let left: Vec<&str> = mountinfo.lines().filter(|l| l.contains(&prefix)).collect();
        assert!(left.is_empty(), "mounts left below {prefix}: {left:#?}");
    }
}

/// A daemon a test started; stopped (SIGTERM, then SIGKILL) when dropped.
struct Daemon {
    child: Child,
    name: &'static str,
}

impl Daemon {
    fn start(name: &'static str, command: &mut Command, log: &Path, ready: impl Fn() -> bool) -> Daemon {
        let log_file = std::fs::File::create(log).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let mut daemon = Daemon { child, name };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready() {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!(
                    "{name} exited ({status}):\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not come up:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        daemon
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("{} did not stop on SIGTERM; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn buildah_builds_with_its_run_steps_under_the_hardened_policy_and_a_denial_fails_the_build() {
    let scene = Scene::new();
    scene.import_busybox();
    let context = scene.path().join("context");
    std::fs::create_dir(&context).unwrap();
    std::fs::write(
        context.join("Containerfile"),
        "FROM localhost/busybox:test\nRUN grep -E 'NoNewPrivs|CapEff' /proc/self/status\n",
    )
    .unwrap();
    // CAP_NET_RAW added, so that only the policy can take it away.
    let bud = |runtime: &[String], network: &str, tag: &str| {
        let mut command = scene.libpod("buildah");
        command
            .arg("bud")
            .args(runtime)
            .args([
                "--cap-add",
                "CAP_NET_RAW",
                "--network",
                network,
                "--layers=false",
                "-t",
                tag,
            ])
            .arg(&context);
        command
    };
    let plain = ok(&mut bud(
        &["--runtime".into(), tool("runc").display().to_string()],
        "none",
        "plain",
    ));
    assert_eq!(status_field(&plain, "NoNewPrivs"), "0");
    assert!(has_net_raw(&plain), "{plain}");

    let hardened = ok(&mut bud(&scene.runtime_flags(), "none", "hardened"));
    assert_eq!(status_field(&hardened, "NoNewPrivs"), "1", "{hardened}");
    assert!(!has_net_raw(&hardened), "{hardened}");
    assert!(!scene.reviewed().is_empty(), "the wrapper reviewed the RUN step");

    let denied = run(&mut bud(&scene.runtime_flags(), "host", "denied"));
    assert!(!denied.status.success());
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(
        stderr.contains("denied the step: the host network is not allowed"),
        "buildah shows the policy's message:\n{stderr}"
    );
    scene.assert_nothing_mounted();
}

#[test]
fn podman_runs_a_container_through_the_wrapper() {
    let scene = Scene::new();
    scene.import_busybox();
    let podman_run = |script: &str| {
        let mut command = scene.libpod("podman");
        command
            .args(scene.runtime_flags())
            .args(["run", "--rm", "--network", "none"])
            // The host cannot raise these limits (no CAP_SYS_RESOURCE).
            .args(["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"])
            .args(["localhost/busybox:test", "sh", "-c", script]);
        command
    };
    let out = ok(&mut podman_run(
        "grep NoNewPrivs /proc/self/status; touch /written && echo wrote",
    ));
    assert_eq!(status_field(&out, "NoNewPrivs"), "1", "{out}");
    assert!(
        out.contains("wrote"),
        "a service container's rootfs stays writable: {out}"
    );
    // The container's exit code is podman's: the real runtime ran it.
    let out = run(&mut podman_run("exit 3"));
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(scene.reviewed().len(), 2);
    // podman exec: reviewed as the container's approved spec with the
    // process; a privileged one (every capability) is denied.
    let podman = |args: &[&str]| {
        let mut command = scene.libpod("podman");
        command.args(scene.runtime_flags()).args(args);
        command
    };
    let id = ok(&mut podman(&[
        "run",
        "-d",
        "--network",
        "none",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        "localhost/busybox:test",
        "sh",
        "-c",
        "sleep 60",
    ]));
    let id = id.trim();
    let out = ok(&mut podman(&[
        "exec",
        id,
        "grep",
        "-E",
        "NoNewPrivs|CapEff",
        "/proc/self/status",
    ]));
    assert_eq!(status_field(&out, "NoNewPrivs"), "1", "{out}");
    let denied = run(&mut podman(&[
        "exec",
        "--privileged",
        id,
        "mount",
        "-o",
        "remount,rw",
        "/",
    ]));
    assert!(!denied.status.success());
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(
        stderr.contains("insecure mode is not allowed"),
        "podman shows the policy's message:\n{stderr}"
    );
    ok(&mut podman(&["rm", "-f", "-t", "0", id]));
    scene.assert_nothing_mounted();
}

#[test]
fn containerd_runs_a_container_through_the_wrapper_as_its_runc_binary() {
    let scene = Scene::new();
    scene.import_busybox();
    let archive = scene.path().join("busybox-oci.tar");
    ok(scene
        .libpod("podman")
        .args(["save", "--format", "oci-archive", "-o"])
        .arg(&archive)
        .arg("localhost/busybox:test"));
    let root = scene.path().join("containerd");
    let socket = root.join("containerd.sock");
    std::fs::create_dir(&root).unwrap();
    let config = root.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "version = 2\nroot = \"{r}/root\"\nstate = \"{r}/state\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{s}\"\n[ttrpc]\n  address = \"{s}.ttrpc\"\n",
            r = root.display(),
            s = socket.display()
        ),
    )
    .unwrap();
    let ctr = || {
        let mut command = Command::new(tool("ctr"));
        command
            .arg("--address")
            .arg(&socket)
            .args(["--namespace", "specwright-test"]);
        command
    };
    let daemon = Daemon::start(
        "containerd",
        Command::new(tool("containerd"))
            .arg("--config")
            .arg(&config)
            // The shim passes the wrapper no flags of ours: the file does.
            .env("SPECWRIGHT_RUNTIME_CONFIG", scene.runtime_config("{}")),
        &root.join("containerd.log"),
        || ctr().arg("version").output().is_ok_and(|o| o.status.success()),
    );
    ok(ctr()
        .args(["images", "import", "--snapshotter", "native"])
        .arg(&archive));
    let ctr_run = |id: &str, extra: &[&str], script: &str| {
        let mut command = ctr();
        command
            // ctr adds no seccomp filter unless asked; hardened wants one.
            .args([
                "run",
                "--rm",
                "--seccomp",
                "--snapshotter",
                "native",
                "--runc-binary",
                WRAPPER,
            ])
            .args(extra)
            .args(["localhost/busybox:test", id, "sh", "-c", script]);
        command
    };
    let out = ok(&mut ctr_run("hardened", &[], "grep NoNewPrivs /proc/self/status"));
    assert_eq!(status_field(&out, "NoNewPrivs"), "1", "{out}");
    assert_eq!(scene.reviewed(), ["hardened"]);
    let denied = run(&mut ctr_run("denied", &["--net-host"], "true"));
    assert!(!denied.status.success());
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(
        stderr.contains("denied the step: the host network is not allowed"),
        "containerd shows the policy's message from the runtime's log:\n{stderr}"
    );
    let left = ok(ctr().args(["containers", "ls", "-q"]));
    assert!(left.trim().is_empty(), "containers left: {left}");
    drop(daemon);
    scene.assert_nothing_mounted();
}

#[test]
fn dockers_buildkit_runs_its_run_steps_through_the_wrapper_installed_as_runc() {
    let scene = Scene::new();
    // dockerd's builder looks `runc` up on PATH.
    let bin = scene.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(WRAPPER, bin.join("runc")).unwrap();
    let context = scene.busybox_dir("context");
    std::fs::write(
        context.join("Dockerfile"),
        "FROM scratch\nCOPY bin/busybox /bin/busybox\nRUN [\"/bin/busybox\", \"grep\", \"-E\", \"NoNewPrivs|CapEff\", \"/proc/self/status\"]\n",
    )
    .unwrap();
    let docker_root = scene.path().join("docker");
    let socket = docker_root.join("docker.sock");
    std::fs::create_dir(&docker_root).unwrap();
    let host = format!("unix://{}", socket.display());
    let docker = || {
        let mut command = Command::new("/usr/bin/docker");
        command
            .args(["-H", &host])
            .env("DOCKER_BUILDKIT", "1")
            .stdin(Stdio::null());
        command
    };
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    // daemon.json as README gives it, for `docker run --runtime specwright`.
    let daemon_json = docker_root.join("daemon.json");
    std::fs::write(
        &daemon_json,
        format!(r#"{{"runtimes": {{"specwright": {{"path": "{WRAPPER}"}}}}}}"#),
    )
    .unwrap();
    let daemon = Daemon::start(
        "dockerd",
        Command::new(tool("dockerd"))
            .arg("--config-file")
            .arg(&daemon_json)
            .arg("--data-root")
            .arg(docker_root.join("data"))
            .arg("--exec-root")
            .arg(docker_root.join("exec"))
            .args(["-H", &host])
            .arg("--pidfile")
            .arg(docker_root.join("docker.pid"))
            .args(["--storage-driver", "vfs", "--bridge=none", "--iptables=false"])
            .env("PATH", &path)
            // dockerd's own hook (libnetwork-setkey) runs dockerd itself.
            .env(
                "SPECWRIGHT_RUNTIME_CONFIG",
                scene.runtime_config(&format!(
                    r#"{{"allowed_hooks": [{:?}]}}"#,
                    std::fs::canonicalize(tool("dockerd")).unwrap()
                )),
            ),
        &docker_root.join("dockerd.log"),
        || docker().arg("version").output().is_ok_and(|o| o.status.success()),
    );
    let out = ok(docker()
        .args(["build", "--network", "none", "--progress", "plain", "-t", "sw-test"])
        .arg(&context));
    assert_eq!(status_field(&out, "NoNewPrivs"), "1", "{out}");
    assert!(!has_net_raw(&out), "{out}");
    let reviewed_by_build = scene.reviewed().len();
    assert!(reviewed_by_build > 0, "the wrapper reviewed the RUN step");
    // The image just built, run through the registered runtime.
    let out = ok(docker()
        .args(["run", "--rm", "--runtime", "specwright", "--network", "none", "sw-test"])
        .args(["/bin/busybox", "grep", "-E", "NoNewPrivs|CapEff", "/proc/self/status"]));
    assert_eq!(status_field(&out, "NoNewPrivs"), "1", "{out}");
    assert!(!has_net_raw(&out), "{out}");
    assert!(
        scene.reviewed().len() > reviewed_by_build,
        "the wrapper reviewed the container"
    );
    drop(daemon);
    scene.assert_nothing_mounted();
}

/// Through specwright-runc, with a chain that approves the spec as it is,
/// every engine feature gives the container plain runc gives it: the same
/// exit code, credentials, mounts, devices, ids, limits.
#[test]
fn podman_features_give_the_same_container_through_the_wrapper_as_through_runc() {
    let scene = Scene::new();
    scene.import_busybox();
    let data = scene.path().join("data");
    let rw = scene.path().join("rw");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&rw).unwrap();
    let ro_volume = format!("{}:/data:ro", data.display());
    let rw_volume = format!("{}:/rw", rw.display());
    let runc = ["--runtime".to_string(), tool("runc").display().to_string()];
    let permissive = scene.permissive_flags();
    let features: &[(&str, &[&str])] = &[
        ("--device", &["--device", "/dev/loop0"]),
        ("--privileged", &["--privileged"]),
        ("--cap-add/--cap-drop", &["--cap-add", "SYS_PTRACE", "--cap-drop", "CHOWN"]),
        ("seccomp=unconfined", &["--security-opt", "seccomp=unconfined"]),
        ("--read-only", &["--read-only"]),
        ("--tmpfs", &["--tmpfs", "/scratch:size=1m"]),
        ("-v ro and rw", &["-v", &ro_volume, "-v", &rw_volume]),
        ("--uidmap/--gidmap", &["--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536"]),
        ("--pids-limit", &["--pids-limit", "100"]),
        ("--memory", &["--memory", "64m"]),
    ];
    let mut differences = Vec::new();
    for (name, flags) in features {
        let podman = |runtime: &[String]| {
            let mut command = scene.libpod("podman");
            command
                .args(runtime)
                .args(["run", "--rm", "--network", "none"])
                .args(["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"])
                .args(*flags)
                .args(["localhost/busybox:test", "sh", "-c", PROBE]);
            run(&mut command)
        };
        let plain = podman(&runc);
        let wrapped = podman(&permissive);
        let shown = |out: &Output| {
            format!(
                "exit {:?}\n{}{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        };
        assert!(plain.status.success(), "{name} through runc:\n{}", shown(&plain));
        let out = shown(&plain);
        assert!(out.contains("CapEff") && out.contains("\n/proc ") && out.contains("\nend\n"), "{name}: {out}");
        if shown(&plain) != shown(&wrapped) {
            differences.push(format!(
                "--- {name}\nrunc:\n{}\nspecwright-runc:\n{}",
                shown(&plain),
                shown(&wrapped)
            ));
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
    assert!(scene.reviewed().len() >= features.len(), "the wrapper reviewed every container");
    scene.assert_nothing_mounted();
}
