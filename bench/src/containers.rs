//! What a container start pays for specwright, as whole processes, side by
//! side with the same start without it: `podman run` and `buildah bud`
//! through `specwright-runc` (hardened) against runc itself, the wrapper's
//! `create` against `runc create`, and `specwright run` against `runc run`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::measure::{measure_paced, measure_together, timed, Figure};

/// How long after the previous container's life each one starts, in
/// the figures that compare lives (see [`measure_paced`]).
const PACE: Duration = Duration::from_millis(20);

/// The example policy the starts are reviewed by (built with the host).
pub const HARDENED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../target/guest/wasm32-wasip2/guest/specwright_policy_hardened.wasm"
);

/// A compared pair: what, the ratio and its limit, the time specwright adds,
/// and the added time that passes whatever the ratio (for whole engine runs).
pub struct Comparison {
    pub what: String,
    pub ratio: f64,
    pub limit: f64,
    pub added_ms: f64,
    pub slack_ms: Option<f64>,
    /// A floor of this design held to a goal: when it misses, the goal
    /// is below what the design can reach, not merely missed.
    pub floor: bool,
}

/// Runs `program` with its output discarded and its stderr kept in a file
/// for the error: a pipe would stay open in a created container's
/// `runc init`, which inherits the runtime's standard streams.
pub fn quiet(program: &Path, args: &[String], envs: &[(&str, &Path)]) -> Result<()> {
    use std::io::{Read, Seek};
    let mut stderr = tempfile::tempfile().context("a file for stderr")?;
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr.try_clone()?);
    for (k, v) in envs {
        command.env(k, v);
    }
    let status = command
        .status()
        .with_context(|| format!("running {}", program.display()))?;
    if !status.success() {
        let mut message = String::new();
        stderr.rewind()?;
        stderr.read_to_string(&mut message)?;
        bail!("{} {args:?} failed: {status}: {message}", program.display());
    }
    Ok(())
}

pub fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// `flags`, then `args`: one command line.
pub fn with_flags(flags: &[String], args: &[&str]) -> Vec<String> {
    let mut all = flags.to_vec();
    all.extend(strings(args));
    all
}

/// A container's life as an engine drives it: `bundle`'s config.json set
/// to `pristine`, then `create`, `start` and `delete --force` of `id`, each
/// a run of `program` with `flags` first.
pub fn container_life(program: &Path, flags: &[String], bundle: &Path, pristine: &str, id: &str) -> Result<()> {
    std::fs::write(bundle.join("config.json"), pristine)?;
    let create = with_flags(flags, &["create", "--bundle", bundle.to_str().unwrap_or_default(), id]);
    quiet(program, &create, &[])?;
    quiet(program, &with_flags(flags, &["start", id]), &[])?;
    quiet(program, &with_flags(flags, &["delete", "--force", id]), &[])
}

pub fn busybox_rootfs(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir.join("bin"))?;
    for sub in ["etc", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).context("/bin/busybox (busybox-static)")?;
    for applet in ["sh", "true", "sleep"] {
        let link = dir.join("bin").join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", link)?;
        }
    }
    Ok(())
}

/// `dir`'s contents as the tar archive `tarball` (for `podman import`).
pub fn tar(dir: &Path, tarball: &Path) -> Result<()> {
    let args = [Path::new("-C"), dir, Path::new("-cf"), tarball, Path::new(".")].map(|p| p.display().to_string());
    quiet(Path::new("tar"), &args, &[])
}

/// Makes `bundle` with `runc spec`'s config.json changed to run /bin/true
/// in `rootfs` without a terminal, under BuildKit's seccomp profile (as
/// engines confine a container; hardened denies one without); that
/// config.json's text.
pub fn true_bundle(runc: &Path, bundle: &Path, rootfs: &Path) -> Result<String> {
    std::fs::create_dir_all(bundle)?;
    quiet(
        runc,
        &strings(&["spec", "--bundle", bundle.to_str().unwrap_or_default()]),
        &[],
    )?;
    let mut spec: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(bundle.join("config.json"))?)?;
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(["/bin/true"]);
    spec["root"]["path"] = rootfs.to_str().context("the rootfs path")?.into();
    let request = specwright_core::Request::from_json(r#"{"id": "bench", "args": ["/bin/true"]}"#)?;
    let profile = specwright_core::buildkit::generate_without_mounts(&request, &specwright_core::HostFacts::example())?
        .linux
        .and_then(|linux| linux.seccomp)
        .context("the default policy's seccomp profile")?;
    spec["linux"]["seccomp"] = serde_json::to_value(profile)?;
    Ok(serde_json::to_string_pretty(&spec)?)
}

pub fn find(name: &str) -> Result<PathBuf> {
    specwright::OciRuntime::find(name)
        .map(|r| r.path)
        .with_context(|| format!("{name} is not installed (scripts/setup)"))
}

fn pair(figures: &[Figure], what: &str, limit: f64, slack_ms: Option<f64>) -> Comparison {
    compare(&figures[0], &figures[1], what, limit, slack_ms)
}

fn compare(with: &Figure, without: &Figure, what: &str, limit: f64, slack_ms: Option<f64>) -> Comparison {
    Comparison {
        what: what.to_string(),
        ratio: with.median() / without.median(),
        limit,
        added_ms: (with.median() - without.median()) * 1e3,
        slack_ms,
        floor: false,
    }
}

/// [`compare`] of a floor of this design (see [`Comparison::floor`]).
fn floor(with: &Figure, without: &Figure, what: &str, limit: f64, slack_ms: Option<f64>) -> Comparison {
    Comparison {
        floor: true,
        ..compare(with, without, what, limit, slack_ms)
    }
}

/// Measures the four pairs in `work`; `bin` holds `specwright` and
/// `specwright-runc`.
pub fn container_starts(work: &Path, bin: &Path) -> Result<(Vec<Comparison>, Vec<Figure>)> {
    let wrapper = bin.join("specwright-runc");
    let cli = bin.join("specwright");
    anyhow::ensure!(wrapper.exists(), "{}: build it first", wrapper.display());
    anyhow::ensure!(Path::new(HARDENED).exists(), "{HARDENED}: build the host first");
    let runc = find("runc")?;
    let work = work.join("containers");
    let rootfs = work.join("rootfs");
    busybox_rootfs(&rootfs)?;
    let state = work.join("sw-state");
    let wrapper_flags = [
        format!("--policy={HARDENED}"),
        format!("--state-dir={}", state.display()),
    ];
    let per_sample = Duration::from_millis(1);
    let mut comparisons = Vec::new();
    let mut figures = Vec::new();

    // The wrapper's create (and the delete after it) against runc's.
    let bundle = work.join("bundle");
    let pristine = true_bundle(&runc, &bundle, &rootfs)?;
    let create_delete = |program: &Path, flags: &[String], id: &str| -> Result<()> {
        std::fs::write(bundle.join("config.json"), &pristine)?;
        let mut args = flags.to_vec();
        args.extend(strings(&[
            "create",
            "--bundle",
            bundle.to_str().unwrap_or_default(),
            id,
        ]));
        quiet(program, &args, &[])?;
        quiet(&runc, &strings(&["delete", "--force", id]), &[])
    };
    let real = format!("--real-runtime={}", runc.display());
    let mut flags = wrapper_flags.to_vec();
    flags.push(real);
    // The fleet's additions: a policy in monitor mode beside the enforced
    // one, and the metrics file (a lock, the totals read and written, the
    // text file replaced) at every create.
    let mut fleet_flags = flags.clone();
    fleet_flags.push(format!("--monitor-policy={HARDENED}"));
    fleet_flags.push(format!("--metrics-file={}", work.join("specwright.prom").display()));
    let create = measure_together(
        vec![
            timed("create + delete: specwright-runc (hardened)", || {
                create_delete(&wrapper, &flags, "bench-wrapped")
            }),
            timed("create + delete: runc", || create_delete(&runc, &[], "bench-plain")),
            timed(
                "create + delete: specwright-runc (hardened, hardened monitored, metrics file)",
                || create_delete(&wrapper, &fleet_flags, "bench-fleet"),
            ),
        ],
        per_sample,
    )?;
    comparisons.push(pair(
        &create,
        "specwright-runc create / runc create (with delete)",
        1.05,
        Some(5.0),
    ));
    comparisons.push(compare(
        &create[2],
        &create[0],
        "create with a monitored policy and metrics / without",
        1.10,
        Some(1.0),
    ));
    figures.extend(create);

    // A container's whole life, as an engine drives it (create, start,
    // delete --force), through the wrapper against runc; and at the floor
    // of this design: each runtime call through a process that only execs
    // runc, the create after a process that only loads the cached policy
    // and reviews the config.json.
    let exec_floor = bin.join("bench-exec-floor");
    let review_floor = bin.join("bench-review-floor");
    for floor in [&exec_floor, &review_floor] {
        anyhow::ensure!(floor.exists(), "{}: build it first (just bench does)", floor.display());
    }
    let floor_state = work.join("floor-state");
    let config = bundle.join("config.json");
    let floor_life = |runtime: &Path, id: &str| -> Result<()> {
        std::fs::write(&config, &pristine)?;
        let review = [&floor_state, Path::new(HARDENED), &config].map(|p| p.display().to_string());
        quiet(&review_floor, &review, &[])?;
        let through_floor = |args: &[&str]| {
            let mut all = vec![runtime.display().to_string()];
            all.extend(strings(args));
            quiet(&exec_floor, &all, &[])
        };
        through_floor(&["create", "--bundle", bundle.to_str().unwrap_or_default(), id])?;
        through_floor(&["start", id])?;
        through_floor(&["delete", "--force", id])
    };
    let lives = measure_paced(
        vec![
            timed("create + start + delete --force: specwright-runc (hardened)", || {
                container_life(&wrapper, &flags, &bundle, &pristine, "bench-life-wrapped")
            }),
            timed("create + start + delete --force: runc", || {
                container_life(&runc, &[], &bundle, &pristine, "bench-life-plain")
            }),
            timed(
                "create + start + delete --force: this design's floor (a review process, three exec-only processes)",
                || floor_life(&runc, "bench-life-floor"),
            ),
        ],
        PACE,
    )?;
    comparisons.push(pair(
        &lives,
        "a container's life through specwright-runc / runc",
        1.08,
        Some(3.5),
    ));
    comparisons.push(floor(
        &lives[2],
        &lives[1],
        "a container's life at this design's floor / runc",
        1.08,
        Some(3.5),
    ));
    figures.extend(lives);

    // A command the wrapper lets pass (policies configured): `state` of a
    // container, and `--version`.
    std::fs::write(bundle.join("config.json"), &pristine)?;
    quiet(
        &runc,
        &strings(&["create", "--bundle", bundle.to_str().unwrap_or_default(), "bench-state"]),
        &[],
    )?;
    for (what, args) in [
        ("state", vec!["state", "bench-state"]),
        ("--version", vec!["--version"]),
    ] {
        let wrapped = with_flags(&flags, &args);
        let plain = strings(&args);
        let mut floored = vec![runc.display().to_string()];
        floored.extend(plain.iter().cloned());
        let passed = measure_together(
            vec![
                timed(
                    format!("pass-through {what}: specwright-runc (hardened configured)"),
                    || quiet(&wrapper, &wrapped, &[]),
                ),
                timed(format!("pass-through {what}: runc"), || quiet(&runc, &plain, &[])),
                timed(
                    format!("pass-through {what}: a Rust process that only execs runc"),
                    || quiet(&exec_floor, &floored, &[]),
                ),
            ],
            // Each sample the mean of a batch: one call is a few ms.
            Duration::from_millis(60),
        );
        let passed = match passed {
            Ok(passed) => passed,
            Err(e) => {
                drop(quiet(&runc, &strings(&["delete", "--force", "bench-state"]), &[]));
                return Err(e);
            }
        };
        comparisons.push(pair(
            &passed,
            &format!("pass-through {what}: specwright-runc / runc"),
            1.0,
            Some(0.5),
        ));
        comparisons.push(floor(
            &passed[2],
            &passed[1],
            &format!("pass-through {what}: exec floor / runc"),
            1.0,
            Some(0.5),
        ));
        figures.extend(passed);
    }
    quiet(&runc, &strings(&["delete", "--force", "bench-state"]), &[])?;

    // specwright run against runc run of the same step: the runc side
    // runs the very config.json (and resolv.conf and hosts) specwright
    // wrote, taken once by a runtime that copies the bundle and then runs
    // runc, with the rootfs directory as its root.
    let request = work.join("true.request.json");
    std::fs::write(
        &request,
        r#"{"id": "bench-run", "args": ["/bin/true"], "env": ["PATH=/bin"], "cwd": "/"}"#,
    )?;
    let same_step = work.join("same-step");
    std::fs::create_dir_all(&same_step)?;
    let capture = work.join("capture-bundle");
    std::fs::write(
        &capture,
        format!(
            "#!/bin/sh\nif [ \"$1\" = run ]; then cp \"$3\"/config.json \"$3\"/resolv.conf \"$3\"/hosts '{}'/; fi\nexec '{}' \"$@\"\n",
            same_step.display(),
            runc.display()
        ),
    )?;
    std::fs::set_permissions(&capture, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let run_args = |runtime: &Path| {
        strings(&[
            "run",
            "--runtime",
            runtime.to_str().unwrap_or_default(),
            "--request",
            request.to_str().unwrap_or_default(),
            "--rootfs",
            rootfs.to_str().unwrap_or_default(),
            "--state-dir",
            state.to_str().unwrap_or_default(),
        ])
    };
    quiet(&cli, &run_args(&capture), &[])?;
    let mut step: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(same_step.join("config.json"))?)
        .context("the step's config.json")?;
    step["root"]["path"] = rootfs.to_str().context("the rootfs path")?.into();
    for mount in step["mounts"].as_array_mut().context("the step's mounts")? {
        let file = mount["source"]
            .as_str()
            .and_then(|s| s.rsplit_once('/'))
            .map(|(_, f)| f.to_string());
        if let Some(file @ ("resolv.conf" | "hosts")) = file.as_deref() {
            mount["source"] = same_step.join(file).to_str().unwrap_or_default().into();
        }
    }
    std::fs::write(same_step.join("config.json"), serde_json::to_string_pretty(&step)?)?;
    let (run_args, runc_run) = (
        run_args(Path::new("runc")),
        strings(&[
            "run",
            "--bundle",
            same_step.to_str().unwrap_or_default(),
            "bench-runc-run",
        ]),
    );
    // This design's floor for it: a process that loads the default policy
    // from the cache and has it review the step's config.json, then one
    // that only execs runc run.
    let step_config = same_step.join("config.json");
    let review_default = [floor_state.as_path(), Path::new("default"), &step_config].map(|p| p.display().to_string());
    let mut floored_run = vec![runc.display().to_string()];
    floored_run.extend(strings(&[
        "run",
        "--bundle",
        same_step.to_str().unwrap_or_default(),
        "bench-floor-run",
    ]));
    let run = measure_paced(
        vec![
            timed("specwright run (default policy, runc)", || quiet(&cli, &run_args, &[])),
            timed("runc run (the same config.json)", || quiet(&runc, &runc_run, &[])),
            timed(
                "runc run at this design's floor (a default-policy review process, an exec-only process)",
                || {
                    quiet(&review_floor, &review_default, &[])?;
                    quiet(&exec_floor, &floored_run, &[])
                },
            ),
        ],
        PACE,
    )?;
    comparisons.push(pair(&run, "specwright run / runc run", 1.08, None));
    comparisons.push(floor(
        &run[2],
        &run[1],
        "runc run at this design's floor / runc run",
        1.08,
        None,
    ));
    figures.extend(run);

    // podman run and buildah bud, through the wrapper and not.
    let containers_conf = work.join("containers.conf");
    std::fs::write(
        &containers_conf,
        format!(
            "[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"none\"\ntmp_dir = \"{r}/libpod\"\n[network]\nnetwork_config_dir = \"{r}/networks\"\n",
            r = work.display()
        ),
    )?;
    let storage_conf = work.join("storage.conf");
    std::fs::write(
        &storage_conf,
        format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{r}/storage\"\nrunroot = \"{r}/run\"\n",
            r = work.display()
        ),
    )?;
    let envs = [
        ("CONTAINERS_CONF", containers_conf.as_path()),
        ("CONTAINERS_STORAGE_CONF", storage_conf.as_path()),
    ];
    let tarball = work.join("busybox.tar");
    tar(&rootfs, &tarball)?;
    let podman = find("podman")?;
    let buildah = find("buildah")?;
    quiet(
        &podman,
        &strings(&[
            "import",
            tarball.to_str().unwrap_or_default(),
            "localhost/bench:busybox",
        ]),
        &envs,
    )?;
    let mut through_wrapper = strings(&["--runtime", wrapper.to_str().unwrap_or_default()]);
    for flag in &wrapper_flags {
        through_wrapper.push("--runtime-flag".to_string());
        through_wrapper.push(flag.trim_start_matches("--").to_string());
    }
    let plain = strings(&["--runtime", runc.to_str().unwrap_or_default()]);
    let podman_run = |runtime: &[String]| {
        let mut args = runtime.to_vec();
        args.extend(strings(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            "localhost/bench:busybox",
            "true",
        ]));
        args
    };
    let (podman_wrapped, podman_plain) = (podman_run(&through_wrapper), podman_run(&plain));
    let podman_figures = measure_together(
        vec![
            timed("podman run: through specwright-runc (hardened)", || {
                quiet(&podman, &podman_wrapped, &envs)
            }),
            timed("podman run: runc", || quiet(&podman, &podman_plain, &envs)),
        ],
        per_sample,
    )?;
    comparisons.push(pair(
        &podman_figures,
        "podman run through specwright-runc / runc",
        1.05,
        Some(5.0),
    ));
    figures.extend(podman_figures);

    // A pod through containerd's CRI plugin, handler specwright against
    // handler runc.
    let pods = crate::cri::pod_starts(
        &work,
        &wrapper,
        crate::languages::ENV_GUARD_RUST,
        &podman,
        &envs,
        &rootfs,
    )?;
    comparisons.push(pair(
        &pods,
        "a pod through containerd's CRI: handler specwright / runc",
        1.05,
        Some(5.0),
    ));
    figures.extend(pods);

    let context = work.join("context");
    std::fs::create_dir_all(&context)?;
    std::fs::write(
        context.join("Containerfile"),
        "FROM localhost/bench:busybox\nRUN true\n",
    )?;
    let bud = |runtime: &[String]| {
        let mut args = strings(&["bud"]);
        args.extend(runtime.iter().cloned());
        args.extend(strings(&[
            "--network",
            "none",
            "--layers=false",
            "-t",
            "bench-bud",
            context.to_str().unwrap_or_default(),
        ]));
        args
    };
    let (bud_wrapped, bud_plain) = (bud(&through_wrapper), bud(&plain));
    let bud_figures = measure_together(
        vec![
            timed("buildah bud (one RUN): through specwright-runc (hardened)", || {
                quiet(&buildah, &bud_wrapped, &envs)
            }),
            timed("buildah bud (one RUN): runc", || quiet(&buildah, &bud_plain, &envs)),
        ],
        per_sample,
    )?;
    comparisons.push(pair(
        &bud_figures,
        "buildah bud through specwright-runc / runc",
        1.05,
        Some(5.0),
    ));
    figures.extend(bud_figures);

    // A container's life with crun, after everything else: crun refuses
    // this host's hybrid cgroups while the unified hierarchy is mounted,
    // so it is unmounted in this process's private mount namespace.
    match nix::mount::umount2("/sys/fs/cgroup/unified", nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
        Err(e) => bail!("unmounting /sys/fs/cgroup/unified in the bench's mount namespace: {e}"),
    }
    let crun = find("crun")?;
    let mut crun_flags = wrapper_flags.to_vec();
    crun_flags.push(format!("--real-runtime={}", crun.display()));
    let lives = measure_paced(
        vec![
            timed("create + start + delete --force: specwright-runc (hardened), crun", || {
                container_life(&wrapper, &crun_flags, &bundle, &pristine, "bench-crun-wrapped")
            }),
            timed("create + start + delete --force: crun", || {
                container_life(&crun, &[], &bundle, &pristine, "bench-crun-plain")
            }),
            timed(
                "create + start + delete --force: this design's floor with crun (a review process, three exec-only processes)",
                || floor_life(&crun, "bench-crun-floor"),
            ),
        ],
        PACE,
    )?;
    comparisons.push(pair(
        &lives,
        "a container's life through specwright-runc / crun",
        1.08,
        Some(3.5),
    ));
    comparisons.push(floor(
        &lives[2],
        &lives[1],
        "a container's life at this design's floor / crun",
        1.08,
        Some(3.5),
    ));
    figures.extend(lives);
    Ok((comparisons, figures))
}
