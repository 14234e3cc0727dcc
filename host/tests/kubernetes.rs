//! The Kubernetes node path: containerd (from Debian's package) started by
//! the test with its CRI plugin, a runtime handler `specwright` whose
//! binary is `specwright-runc` (the policies from its configuration file,
//! as a node has them), and a CRI client doing what the kubelet does:
//! a host-network pod sandbox (the pause image made here and imported as
//! `sandbox_image`), a container created, started, watched until it
//! exits, its CRI log read, the pod stopped and removed; and a container
//! the policy denies, whose start fails with the policy's message (what
//! the kubelet puts in the pod's events). The host lacks CAP_SYS_RESOURCE,
//! as kind's nodes do: `restrict_oom_score_adj = true`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatusRequest, CreateContainerRequest, ImageSpec,
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, Mount, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StopPodSandboxRequest,
};
use tonic::transport::{Channel, Endpoint, Uri};

mod common;
use common::scene::{ok, tool, Daemon, Scene, MOUNT_ALLOWLIST, WRAPPER};

/// containerd's configuration for the node, as README gives it
/// (`examples/containerd/config.toml`): the CRI plugin with the
/// `specwright` runtime handler, the pause image made here, and this
/// host's limits.
fn containerd_config(root: &Path, socket: &Path) -> String {
    include_str!("../../examples/containerd/config.toml")
        .replace("@ROOT@", &root.display().to_string())
        .replace("@SOCKET@", &socket.display().to_string())
        .replace("@SANDBOX_IMAGE@", "localhost/pause:test")
        .replace("@WRAPPER@", WRAPPER)
}

/// A CRI client on containerd's socket.
async fn client(socket: PathBuf) -> RuntimeServiceClient<Channel> {
    let channel = Endpoint::try_from("http://[::]:0")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .expect("connecting to containerd's CRI");
    RuntimeServiceClient::new(channel)
}

fn pod_config(name: &str, logs: &Path) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.to_string(),
            uid: format!("{name}-uid"),
            namespace: "default".to_string(),
            attempt: 0,
        }),
        // A host-network pod has the node's UTS namespace: the kubelet
        // gives it no hostname of its own.
        hostname: String::new(),
        log_directory: logs.display().to_string(),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_config(name: &str, script: &str, mounts: Vec<Mount>) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.to_string(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: "localhost/busybox:test".to_string(),
            ..Default::default()
        }),
        command: vec!["sh".to_string(), "-c".to_string(), script.to_string()],
        log_path: format!("{name}.log"),
        mounts,
        ..Default::default()
    }
}

#[test]
fn a_pod_runs_through_containerds_cri_plugin_and_a_denied_container_fails_with_the_policys_message() {
    let scene = Scene::new();
    scene.import_busybox();
    // The pause image: busybox that sleeps, as the sandbox's process.
    let rootfs = scene.path().join("rootfs");
    let pause_tar = scene.path().join("pause.tar");
    ok(Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&pause_tar)
        .arg("."));
    ok(scene
        .libpod("podman")
        .args(["import", "--change", r#"CMD ["/bin/sleep", "3600"]"#])
        .arg(&pause_tar)
        .arg("localhost/pause:test"));
    let root = scene.path().join("containerd");
    std::fs::create_dir_all(&root).unwrap();
    let socket = root.join("containerd.sock");
    let config = root.join("config.toml");
    std::fs::write(&config, containerd_config(&root, &socket)).unwrap();
    // The node's policies: mount-allowlist allowing containerd's own
    // directories (where the CRI keeps each pod's hosts, hostname,
    // resolv.conf and /dev/shm), so a hostPath volume elsewhere is denied.
    let runtime_toml = scene.write_runtime_config(
        "runtime.toml",
        MOUNT_ALLOWLIST,
        &serde_json::json!({"allowed_sources": [&root]}).to_string(),
    );
    let ctr = || {
        let mut command = Command::new(tool("ctr"));
        command.arg("--address").arg(&socket).args(["--namespace", "k8s.io"]);
        command
    };
    let daemon = Daemon::start(
        "containerd",
        Command::new(tool("containerd"))
            .arg("--config")
            .arg(&config)
            .env("SPECWRIGHT_RUNTIME_CONFIG", &runtime_toml),
        &root.join("containerd.log"),
        || ctr().arg("version").output().is_ok_and(|o| o.status.success()),
    );
    for image in ["localhost/busybox:test", "localhost/pause:test"] {
        let archive = scene.path().join(format!("{}.tar", image.replace(['/', ':'], "-")));
        ok(scene
            .libpod("podman")
            .args(["save", "--format", "oci-archive", "-o"])
            .arg(&archive)
            .arg(image));
        ok(ctr()
            .args(["images", "import", "--snapshotter", "native"])
            .arg(&archive));
    }
    let logs = scene.path().join("pod-logs");
    std::fs::create_dir_all(&logs).unwrap();

    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio.block_on(async {
        let mut cri = client(socket.clone()).await;
        let pod = pod_config("web", &logs);
        let sandbox = cri
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pod.clone()),
                runtime_handler: "specwright".to_string(),
            })
            .await
            .unwrap_or_else(|e| panic!("RunPodSandbox: {}", e.message()))
            .into_inner()
            .pod_sandbox_id;
        let created = cri
            .create_container(CreateContainerRequest {
                pod_sandbox_id: sandbox.clone(),
                config: Some(container_config(
                    "app",
                    "echo hello from the pod; grep NoNewPrivs /proc/self/status",
                    Vec::new(),
                )),
                sandbox_config: Some(pod.clone()),
            })
            .await
            .unwrap_or_else(|e| panic!("CreateContainer: {}", e.message()))
            .into_inner()
            .container_id;
        cri.start_container(StartContainerRequest {
            container_id: created.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("StartContainer: {}", e.message()));
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            let status = cri
                .container_status(ContainerStatusRequest {
                    container_id: created.clone(),
                    verbose: false,
                })
                .await
                .unwrap()
                .into_inner()
                .status
                .unwrap();
            if status.state == ContainerState::ContainerExited as i32 {
                break status;
            }
            assert!(Instant::now() < deadline, "the container did not exit: {status:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(status.exit_code, 0, "{status:?}");
        // The CRI log: `<time> stdout F <line>` a line.
        let log = std::fs::read_to_string(logs.join("app.log")).unwrap();
        let lines: Vec<&str> = log.lines().filter_map(|l| l.splitn(4, ' ').nth(3)).collect();
        assert_eq!(lines[0], "hello from the pod", "{log}");
        assert!(lines.iter().any(|l| l.starts_with("NoNewPrivs:")), "{log}");

        // A hostPath volume outside what the node allows: the start fails
        // with the policy's message, as the kubelet reports it.
        let denied = cri
            .create_container(CreateContainerRequest {
                pod_sandbox_id: sandbox.clone(),
                config: Some(container_config(
                    "snoop",
                    "cat /host/shadow",
                    vec![Mount {
                        container_path: "/host".to_string(),
                        host_path: "/etc".to_string(),
                        readonly: true,
                        ..Default::default()
                    }],
                )),
                sandbox_config: Some(pod.clone()),
            })
            .await
            .unwrap_or_else(|e| panic!("CreateContainer: {}", e.message()))
            .into_inner()
            .container_id;
        let error = cri
            .start_container(StartContainerRequest { container_id: denied })
            .await
            .expect_err("a container the policy denies must not start");
        assert!(
            error
                .message()
                .contains("denied the step: mount /host uses /etc, outside the allowed sources"),
            "{}",
            error.message()
        );

        cri.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: sandbox.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("StopPodSandbox: {}", e.message()));
        cri.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: sandbox,
        })
        .await
        .unwrap_or_else(|e| panic!("RemovePodSandbox: {}", e.message()));
    });
    // The pause container and the app were reviewed, the pod's and the
    // app's approved specs let go with them.
    assert!(scene.reviewed().len() >= 2, "{:?}", scene.reviewed());
    let left = ok(ctr().args(["containers", "ls", "-q"]));
    assert!(left.trim().is_empty(), "containers left: {left}");
    drop(daemon);
    scene.assert_nothing_mounted();
}
