//! A pod through containerd's CRI plugin (what the kubelet does), with the
//! runtime handler `specwright` (`specwright-runc` with env-guard, as a
//! host-network pod is one hardened refuses) against
//! the handler `runc`: containerd from Debian's package, started here on
//! its own socket and root, with the busybox and pause images imported
//! from podman's storage.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatusRequest, CreateContainerRequest, ImageSpec,
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, ListPodSandboxRequest, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopPodSandboxRequest,
};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::containers::{find, quiet, strings, tar};
use crate::measure::{measure_together, timed, Figure};

/// containerd's configuration for a node with specwright
/// (`examples/containerd/config.toml`, which the Kubernetes test uses too),
/// filled in.
fn config(root: &Path, socket: &Path, wrapper: &Path) -> String {
    include_str!("../../examples/containerd/config.toml")
        .replace("@ROOT@", &root.display().to_string())
        .replace("@SOCKET@", &socket.display().to_string())
        .replace("@SANDBOX_IMAGE@", "localhost/bench:pause")
        .replace("@WRAPPER@", &wrapper.display().to_string())
}

/// containerd, stopped (SIGTERM, then SIGKILL) when dropped.
struct Containerd(Child);

impl Drop for Containerd {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One pod's life as the kubelet drives it: the sandbox run, a container
/// (`true`) created, started and watched until it exits, the sandbox
/// stopped and removed.
async fn pod_life(cri: &mut RuntimeServiceClient<Channel>, handler: &str, name: &str, logs: &Path) -> Result<()> {
    let pod = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.to_string(),
            uid: format!("{name}-uid"),
            namespace: "bench".to_string(),
            attempt: 0,
        }),
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
    };
    let failed = |what: &'static str| move |e: tonic::Status| anyhow::anyhow!("{what} ({handler}): {}", e.message());
    let sandbox = cri
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod.clone()),
            runtime_handler: handler.to_string(),
        })
        .await
        .map_err(failed("RunPodSandbox"))?
        .into_inner()
        .pod_sandbox_id;
    let container = cri
        .create_container(CreateContainerRequest {
            pod_sandbox_id: sandbox.clone(),
            config: Some(ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: "app".to_string(),
                    attempt: 0,
                }),
                image: Some(ImageSpec {
                    image: "localhost/bench:busybox".to_string(),
                    ..Default::default()
                }),
                command: strings(&["true"]),
                log_path: "app.log".to_string(),
                ..Default::default()
            }),
            sandbox_config: Some(pod),
        })
        .await
        .map_err(failed("CreateContainer"))?
        .into_inner()
        .container_id;
    cri.start_container(StartContainerRequest {
        container_id: container.clone(),
    })
    .await
    .map_err(failed("StartContainer"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = cri
            .container_status(ContainerStatusRequest {
                container_id: container.clone(),
                verbose: false,
            })
            .await
            .map_err(failed("ContainerStatus"))?
            .into_inner()
            .status
            .context("ContainerStatus without a status")?;
        if status.state == ContainerState::ContainerExited as i32 {
            anyhow::ensure!(
                status.exit_code == 0,
                "the pod's container failed ({handler}): {status:?}"
            );
            break;
        }
        if Instant::now() > deadline {
            bail!("the pod's container did not exit ({handler}): {status:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    cri.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: sandbox.clone(),
    })
    .await
    .map_err(failed("StopPodSandbox"))?;
    cri.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: sandbox,
    })
    .await
    .map_err(failed("RemovePodSandbox"))?;
    Ok(())
}

/// Pods through the `specwright` and `runc` handlers, side by side; the
/// handler `specwright` reviews with `policy`.
/// `podman` with `envs` holds `localhost/bench:busybox`; `rootfs` is its
/// root filesystem (the pause image is made from it).
pub fn pod_starts(
    work: &Path,
    wrapper: &Path,
    policy: &str,
    podman: &Path,
    envs: &[(&str, &Path)],
    rootfs: &Path,
) -> Result<Vec<Figure>> {
    let root = work.join("containerd");
    std::fs::create_dir_all(&root)?;
    let containerd = find("containerd")?;
    let ctr = find("ctr")?;
    let socket = root.join("containerd.sock");
    let config_file = root.join("config.toml");
    std::fs::write(&config_file, config(&root, &socket, wrapper))?;
    let runtime_toml = root.join("runtime.toml");
    std::fs::write(
        &runtime_toml,
        format!(
            "real_runtime = \"runc\"\nstate_dir = \"{}\"\npolicies = [\"{policy}\"]\n",
            root.join("sw-state").display()
        ),
    )?;

    // The pause image: busybox that sleeps.
    let tarball = work.join("pause.tar");
    tar(rootfs, &tarball)?;
    quiet(
        podman,
        &strings(&[
            "import",
            "--change",
            r#"CMD ["/bin/sleep", "3600"]"#,
            tarball.to_str().unwrap_or_default(),
            "localhost/bench:pause",
        ]),
        envs,
    )?;

    let log = std::fs::File::create(root.join("containerd.log"))?;
    let daemon = Containerd(
        Command::new(&containerd)
            .arg("--config")
            .arg(&config_file)
            .env("SPECWRIGHT_RUNTIME_CONFIG", &runtime_toml)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting containerd")?,
    );
    let ctr_args = |args: &[&str]| {
        let mut all = strings(&[
            "--address",
            socket.to_str().unwrap_or_default(),
            "--namespace",
            "k8s.io",
        ]);
        all.extend(strings(args));
        all
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while quiet(&ctr, &ctr_args(&["version"]), &[]).is_err() {
        if Instant::now() > deadline {
            bail!(
                "containerd did not come up: {}",
                std::fs::read_to_string(root.join("containerd.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for image in ["localhost/bench:busybox", "localhost/bench:pause"] {
        let archive = work.join(format!("{}.oci.tar", image.replace(['/', ':'], "-")));
        let _ = std::fs::remove_file(&archive);
        quiet(
            podman,
            &strings(&[
                "save",
                "--format",
                "oci-archive",
                "-o",
                archive.to_str().unwrap_or_default(),
                image,
            ]),
            envs,
        )?;
        quiet(
            &ctr,
            &ctr_args(&[
                "images",
                "import",
                "--snapshotter",
                "native",
                archive.to_str().unwrap_or_default(),
            ]),
            &[],
        )?;
    }
    let logs = root.join("pod-logs");
    std::fs::create_dir_all(&logs)?;

    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let cri = tokio.block_on(client(socket.clone()))?;
    let pods = std::cell::Cell::new(0u64);
    let life = |handler: &'static str| {
        let mut cri = cri.clone();
        let (logs, tokio, pods) = (&logs, &tokio, &pods);
        move || -> Result<()> {
            pods.set(pods.get() + 1);
            let name = format!("bench-{handler}-{}", pods.get());
            tokio.block_on(pod_life(&mut cri, handler, &name, logs))
        }
    };
    let figures = measure_together(
        vec![
            timed(
                "a pod through containerd's CRI: handler specwright (specwright-runc, env-guard)",
                life("specwright"),
            ),
            timed("a pod through containerd's CRI: handler runc", life("runc")),
        ],
        Duration::from_millis(1),
    );
    let removed = tokio.block_on(remove_every_pod(&mut cri.clone()));
    drop(daemon);
    let figures = figures?;
    removed?;
    Ok(figures)
}

/// Stops and removes every pod sandbox left (after a failed life).
async fn remove_every_pod(cri: &mut RuntimeServiceClient<Channel>) -> Result<()> {
    let pods = cri
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .map_err(|e| anyhow::anyhow!("ListPodSandbox: {}", e.message()))?
        .into_inner()
        .items;
    for pod in pods {
        let id = pod.id;
        cri.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .map_err(|e| anyhow::anyhow!("StopPodSandbox: {}", e.message()))?;
        cri.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
            .await
            .map_err(|e| anyhow::anyhow!("RemovePodSandbox: {}", e.message()))?;
    }
    Ok(())
}

/// A CRI client on containerd's socket.
async fn client(socket: PathBuf) -> Result<RuntimeServiceClient<Channel>> {
    let channel = Endpoint::try_from("http://[::]:0")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .context("connecting to containerd's CRI")?;
    Ok(RuntimeServiceClient::new(channel))
}
