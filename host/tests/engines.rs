//! The real engines from Debian's packages run their containers through
//! `specwright-runc`: buildah, podman, containerd (`ctr`) and Docker's
//! embedded BuildKit. Every image is made here (a busybox rootfs through
//! `podman import`; there is no registry), every daemon is started by its
//! test on its own socket and root in a temporary directory, and stopped.
//! The policy is the example `hardened`: NoNewPrivileges, CAP_NET_RAW
//! dropped, the host network denied.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;
use common::scene::{has_net_raw, ok, run, tool, Daemon, Scene, MOUNT_ALLOWLIST, WRAPPER};
use common::status_field;

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

/// A multi-stage build as users write them: COPY, WORKDIR, ENV, RUN steps
/// that write files, a cache mount (whose content a second build sees),
/// a tmpfs mount, and a final stage that switches to a non-root USER.
const DOCKERFILE: &str = r#"FROM localhost/busybox:test AS builder
# A build of another NONCE runs every step again (and keeps cache mounts).
ARG NONCE
WORKDIR /src
ENV GREETING=hello
COPY input.txt ./
RUN mkdir -p /opt/out && echo "$GREETING from $(pwd)" > /opt/out/greeting && cat input.txt >> /opt/out/greeting
RUN --mount=type=cache,target=/cache (cat /cache/stamp 2>/dev/null || echo none) > /opt/out/cache-before && echo cached > /cache/stamp
RUN --mount=type=tmpfs,target=/scratch echo temp > /scratch/t && cat /scratch/t > /opt/out/tmpfs-seen && grep " /scratch " /proc/mounts | cut -d" " -f3 > /opt/out/scratch-fs
RUN grep NoNewPrivs /proc/self/status | cut -f2 > /opt/out/no-new-privs

FROM localhost/busybox:test
COPY --from=builder /opt/out/ /opt/out/
RUN mkdir -p /home/app && chown 1000:1000 /home/app
USER 1000:1000
WORKDIR /home/app
RUN id -u > /home/app/uid && echo written-as-user > /home/app/file
"#;

/// A build context holding [`DOCKERFILE`] (as `Dockerfile` and
/// `Containerfile`) and its input.
fn build_context(scene: &Scene) -> PathBuf {
    let context = scene.path().join("context");
    std::fs::create_dir_all(&context).unwrap();
    for name in ["Dockerfile", "Containerfile"] {
        std::fs::write(context.join(name), DOCKERFILE).unwrap();
    }
    std::fs::write(context.join("input.txt"), "input line\n").unwrap();
    context
}

/// Checks the final stage's files, one by one; `cache_before` is what the
/// cache mount held when the build began, `no_new_privs` what the RUN
/// steps ran with.
fn check_built(root: &Path, cache_before: &str, no_new_privs: &str) {
    let read = |path: &str| {
        std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path} in {}: {e}", root.display()))
    };
    assert_eq!(read("opt/out/greeting"), "hello from /src\ninput line\n");
    assert_eq!(read("opt/out/cache-before"), format!("{cache_before}\n"));
    assert_eq!(read("opt/out/tmpfs-seen"), "temp\n");
    assert_eq!(read("opt/out/scratch-fs"), "tmpfs\n");
    assert_eq!(read("opt/out/no-new-privs"), format!("{no_new_privs}\n"));
    assert_eq!(read("home/app/uid"), "1000\n");
    assert_eq!(read("home/app/file"), "written-as-user\n");
}

/// A real build through the wrapper, under `hardened` and under
/// `mount-allowlist` allowing the engine's own paths (its storage and its
/// temporary directory, where it keeps cache mounts and the files it
/// binds), checked file by file; the cache mount's content is seen by the
/// next build.
#[test]
fn buildah_builds_a_multi_stage_image_under_hardened_and_mount_allowlist() {
    let scene = Scene::new();
    scene.import_busybox();
    let context = build_context(&scene);
    let tmp = scene.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let allow = scene.path().join("allow-buildah.json");
    std::fs::write(
        &allow,
        serde_json::json!({"allowed_sources": [scene.path()]}).to_string(),
    )
    .unwrap();
    let allowlist = vec![
        "--runtime".to_string(),
        WRAPPER.to_string(),
        "--runtime-flag".to_string(),
        format!("policy={MOUNT_ALLOWLIST}:{}", allow.display()),
        "--runtime-flag".to_string(),
        format!("state-dir={}", scene.state().display()),
    ];
    for (n, (name, runtime)) in [("hardened", scene.runtime_flags()), ("mount-allowlist", allowlist)]
        .into_iter()
        .enumerate()
    {
        let tag = format!("built-{n}");
        ok(scene
            .libpod("buildah")
            .env("TMPDIR", &tmp)
            .arg("bud")
            .args(&runtime)
            .args(["--network", "none", "--layers=false", "-t", &tag])
            .arg(&context));
        let container = ok(scene.libpod("buildah").args(["from", &tag]));
        let container = container.lines().last().unwrap().trim().to_string();
        let root = ok(scene.libpod("buildah").args(["mount", &container]));
        let root = PathBuf::from(root.trim());
        let (cache_before, no_new_privs) = if n == 0 { ("none", "1") } else { ("cached", "0") };
        check_built(&root, cache_before, no_new_privs);
        let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(root.join("home/app/file")).unwrap());
        assert_eq!(owner, 1000, "{name}: written as the USER");
        ok(scene.libpod("buildah").args(["rm", &container]));
    }
    assert!(
        scene.reviewed().len() >= 10,
        "every RUN step of both builds was reviewed"
    );
    scene.assert_nothing_mounted();
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

/// Docker: its builder (BuildKit v0.8, embedded in dockerd) runs every
/// RUN step of a real multi-stage build through the wrapper installed as
/// `runc` on dockerd's PATH, under `hardened` and then under
/// `mount-allowlist` allowing dockerd's data root, checked file by file;
/// `docker run --runtime specwright` (daemon.json as README gives it) runs
/// under `hardened`; and `--privileged` and `--device` through a runtime
/// with a chain that approves the spec as it is give what runc gives.
#[test]
fn docker_builds_and_runs_through_the_wrapper() {
    let scene = Scene::new();
    // dockerd's builder looks `runc` up on PATH.
    let bin = scene.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(WRAPPER, bin.join("runc")).unwrap();
    let context = build_context(&scene);
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
    // A runtime whose chain approves any spec as it is: the wrapper with a
    // configuration file of its own.
    let open_config = scene.write_runtime_config("open.toml", MOUNT_ALLOWLIST, r#"{"allowed_sources": ["/"]}"#);
    let open_runtime = scene.path().join("specwright-open");
    std::fs::write(
        &open_runtime,
        format!(
            "#!/bin/sh\nSPECWRIGHT_RUNTIME_CONFIG={} exec {WRAPPER} \"$@\"\n",
            open_config.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&open_runtime, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // daemon.json as README gives it (and the permissive runtime beside).
    let daemon_json = docker_root.join("daemon.json");
    std::fs::write(
        &daemon_json,
        format!(
            r#"{{"runtimes": {{"specwright": {{"path": "{WRAPPER}"}}, "specwright-open": {{"path": "{}"}}}}}}"#,
            open_runtime.display()
        ),
    )
    .unwrap();
    // hardened as README configures it for Docker: dockerd's own hook
    // (libnetwork-setkey) runs dockerd itself.
    let dockerd = std::fs::canonicalize(tool("dockerd")).unwrap();
    let runtime_toml = scene.runtime_config(&format!(r#"{{"allowed_hooks": [{dockerd:?}]}}"#));
    let daemon = Daemon::start(
        "dockerd",
        Command::new(&dockerd)
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
            .env("SPECWRIGHT_RUNTIME_CONFIG", &runtime_toml),
        &docker_root.join("dockerd.log"),
        || docker().arg("version").output().is_ok_and(|o| o.status.success()),
    );
    let tarball = scene.busybox_tarball();
    ok(docker().arg("import").arg(&tarball).arg("localhost/busybox:test"));

    let build = |out: &Path, nonce: &str| {
        ok(docker()
            .args([
                "build",
                "--build-arg",
                &format!("NONCE={nonce}"),
                "--network",
                "none",
                "--progress",
                "plain",
            ])
            .arg("-o")
            .arg(format!("type=local,dest={}", out.display()))
            .arg(&context))
    };
    let out = scene.path().join("out-hardened");
    build(&out, "1");
    check_built(&out, "none", "1");
    let reviewed_by_build = scene.reviewed().len();
    assert!(reviewed_by_build >= 6, "the wrapper reviewed every RUN step");

    // The image run through the registered runtime, under hardened.
    let out = ok(docker()
        .args([
            "run",
            "--rm",
            "--runtime",
            "specwright",
            "--network",
            "none",
            "localhost/busybox:test",
        ])
        .args(["grep", "-E", "NoNewPrivs|CapEff", "/proc/self/status"]));
    assert_eq!(status_field(&out, "NoNewPrivs"), "1", "{out}");
    assert!(!has_net_raw(&out), "{out}");
    assert!(
        scene.reviewed().len() > reviewed_by_build,
        "the wrapper reviewed the container"
    );

    // The same build under mount-allowlist, dockerd's data root allowed;
    // the cache mount keeps what the first build left.
    scene.write_runtime_config(
        "runtime.toml",
        MOUNT_ALLOWLIST,
        &serde_json::json!({"allowed_sources": [docker_root.join("data")]}).to_string(),
    );
    let out = scene.path().join("out-allowlist");
    build(&out, "2");
    check_built(&out, "cached", "0");

    // --privileged and --device: what plain runc gives (on this host,
    // which lacks CAP_SYS_RESOURCE, runc refuses --privileged: so must the
    // wrapper's runc, the same way).
    for flags in [&["--privileged"][..], &["--device", "/dev/loop0"][..]] {
        let docker_run = |runtime: &str| {
            run(docker()
                .args(["run", "--rm", "--network", "none", "--runtime", runtime])
                .args(flags)
                .args(["localhost/busybox:test", "sh", "-c", PROBE]))
        };
        let plain = docker_run("runc");
        let wrapped = docker_run("specwright-open");
        assert_eq!(plain.status.code(), wrapped.status.code(), "{flags:?}");
        assert_eq!(
            String::from_utf8_lossy(&plain.stdout),
            String::from_utf8_lossy(&wrapped.stdout),
            "{flags:?}"
        );
        let error = |out: &Output| {
            let text = String::from_utf8_lossy(&out.stderr).into_owned();
            // The runtime's error, on its line (docker may add a line of
            // its own after it, "error waiting for container", or not).
            let after = text.split("OCI runtime create failed: ").nth(1)?;
            after.lines().next().map(str::to_string)
        };
        assert_eq!(error(&plain), error(&wrapped), "{flags:?}");
    }
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
        (
            "--cap-add/--cap-drop",
            &["--cap-add", "SYS_PTRACE", "--cap-drop", "CHOWN"],
        ),
        ("seccomp=unconfined", &["--security-opt", "seccomp=unconfined"]),
        ("--read-only", &["--read-only"]),
        ("--tmpfs", &["--tmpfs", "/scratch:size=1m"]),
        ("-v ro and rw", &["-v", &ro_volume, "-v", &rw_volume]),
        (
            "--uidmap/--gidmap",
            &["--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536"],
        ),
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
        assert!(
            out.contains("CapEff") && out.contains("\n/proc ") && out.contains("\nend\n"),
            "{name}: {out}"
        );
        if shown(&plain) != shown(&wrapped) {
            differences.push(format!(
                "--- {name}\nrunc:\n{}\nspecwright-runc:\n{}",
                shown(&plain),
                shown(&wrapped)
            ));
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
    assert!(
        scene.reviewed().len() >= features.len(),
        "the wrapper reviewed every container"
    );
    scene.assert_nothing_mounted();
}
