//! What the engine tests share: a scene of their own (podman's and
//! buildah's storage and configuration, a busybox image, the wrapper's
//! state dir, all in a temporary directory), the daemons they start and
//! stop, and running the engines' commands.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::capability_mask;

pub const WRAPPER: &str = env!("CARGO_BIN_EXE_specwright-runc");
pub const HARDENED: &str = env!("SPECWRIGHT_HARDENED_WASM");
pub const MOUNT_ALLOWLIST: &str = env!("SPECWRIGHT_MOUNT_ALLOWLIST_WASM");

/// Held while a scene's first podman command runs (see `import_busybox`).
static PODMAN_LOCK_CREATION: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// CAP_NET_RAW's bit in /proc/self/status's `CapEff`.
pub const CAP_NET_RAW_BIT: u32 = 13;

pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is not installed (scripts/setup installs buildah podman containerd docker.io)")
        })
}

pub fn run(command: &mut Command) -> Output {
    command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"))
}

pub fn ok(command: &mut Command) -> String {
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
pub fn has_net_raw(output: &str) -> bool {
    capability_mask(output, "CapEff") & (1 << CAP_NET_RAW_BIT) != 0
}

/// A temporary directory for one test: podman's and buildah's storage and
/// configuration, a busybox image, the wrapper's state dir.
pub struct Scene {
    dir: tempfile::TempDir,
}

impl Scene {
    pub fn new() -> Scene {
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

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn state(&self) -> PathBuf {
        self.path().join("sw-state")
    }

    /// podman or buildah with this scene's storage and configuration.
    pub fn libpod(&self, name: &str) -> Command {
        let mut command = Command::new(tool(name));
        command
            .env("CONTAINERS_CONF", self.path().join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.path().join("storage.conf"))
            .stdin(Stdio::null());
        command
    }

    /// A directory holding busybox, as a build context or a rootfs.
    pub fn busybox_dir(&self, name: &str) -> PathBuf {
        let dir = self.path().join(name);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .iter()
            .find(|p| Path::new(p).exists())
            .expect("busybox is not installed (apt-get install busybox-static)");
        std::fs::copy(busybox, dir.join("bin/busybox")).unwrap();
        for applet in [
            "sh", "grep", "touch", "true", "echo", "awk", "sort", "ls", "id", "cat", "head", "mkdir", "sleep", "cut",
            "chown",
        ] {
            std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
        }
        for sub in ["etc", "proc", "sys", "dev", "tmp"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        dir
    }

    /// A tarball of a busybox rootfs, for an engine's `import`.
    pub fn busybox_tarball(&self) -> PathBuf {
        let rootfs = self.busybox_dir("rootfs");
        let tarball = self.path().join("busybox.tar");
        ok(Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tarball)
            .arg("."));
        tarball
    }

    /// `localhost/busybox:test`, imported into podman's storage (which
    /// buildah shares) from a rootfs tarball.
    pub fn import_busybox(&self) {
        let tarball = self.busybox_tarball();
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
    pub fn runtime_flags(&self) -> Vec<String> {
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
    pub fn permissive_flags(&self) -> Vec<String> {
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
    pub fn runtime_config(&self, settings: &str) -> PathBuf {
        self.write_runtime_config("runtime.toml", HARDENED, settings)
    }

    /// Writes the wrapper's configuration file `name` in the scene: the
    /// one policy `policy` with `settings` (JSON), this scene's state dir,
    /// runc as the real runtime.
    pub fn write_runtime_config(&self, name: &str, policy: &str, settings: &str) -> PathBuf {
        let settings_path = self.path().join(format!("{name}.settings.json"));
        std::fs::write(&settings_path, settings).unwrap();
        let path = self.path().join(name);
        std::fs::write(
            &path,
            format!(
                "policies = [\"{policy}:{}\"]\nstate_dir = \"{}\"\nreal_runtime = \"runc\"\n",
                settings_path.display(),
                self.state().display()
            ),
        )
        .unwrap();
        path
    }

    /// Ids of the containers the wrapper reviewed (its audit log).
    pub fn reviewed(&self) -> Vec<String> {
        std::fs::read_to_string(self.state().join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|r| r["op"] == "policy" && r["result"] == "ok")
            .filter_map(|r| r["step"].as_str().map(str::to_string))
            .collect()
    }

    /// Fails if anything is still mounted below the scene.
    pub fn assert_nothing_mounted(&self) {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let prefix = self.path().display().to_string();
        let left: Vec<&str> = mountinfo.lines().filter(|l| l.contains(&prefix)).collect();
        assert!(left.is_empty(), "mounts left below {prefix}: {left:#?}");
    }
}

/// A daemon a test started; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Daemon {
    child: Child,
    name: &'static str,
}

impl Daemon {
    pub fn start(name: &'static str, command: &mut Command, log: &Path, ready: impl Fn() -> bool) -> Daemon {
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
