//! Does the privileged half of a test inside a private mount namespace and
//! reports what happened as JSON on standard output.
//!
//! - `sw-testhelper cli ARGS...`: the specwright command line itself.
//! - `sw-testhelper oracle CASES_DIR NAME WORKDIR POLICY api|cli COMPILED`:
//!   one oracle case with real directories and mounts under WORKDIR,
//!   through the library API or the `specwright` command line, with
//!   embedded policy POLICY (`default`, `buildkit-v0.8`). The case's fresh
//!   state dir starts with the compile cache entries in COMPILED and gives
//!   back the ones it made, so a policy is compiled once per test run.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use specwright::Limits;
use specwright::{Chain, Engine, Request, Workspace};
use specwright_core::{HostCalls, HostFacts};
use specwright_host_core::audit::Audit;
use specwright_host_core::state::StateDir;
use specwright_host_core::step::release_step;
use specwright_host_core::step::{StepHost, StepOptions};
use specwright_host_core::sys::{Kernel, RealSyscalls, RecordingSyscalls, Syscalls};
use specwright_tests::{make_oracle_source_tree, mounts_below};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("cli") => std::process::exit(specwright::cli::main_with_args(
            std::iter::once("specwright".to_string()).chain(args[2..].iter().cloned()),
        )),
        Some("oracle") if args.len() == 8 => match oracle_case(
            Path::new(&args[2]),
            &args[3],
            Path::new(&args[4]),
            &args[5],
            args[6] == "cli",
            Path::new(&args[7]),
        ) {
            Ok(report) => println!("{report}"),
            Err(e) => {
                eprintln!("sw-testhelper: {e:#}");
                std::process::exit(2);
            }
        },
        Some("faults") if args.len() == 3 => report(faults(Path::new(&args[2]))),
        Some("busy") if args.len() == 3 => report(busy(Path::new(&args[2]))),
        Some("api") if args.len() == 3 => report(api(Path::new(&args[2]))),
        Some("overlay") if args.len() == 5 => report(overlay_layers(Path::new(&args[2]), &args[3], &args[4])),
        _ => {
            eprintln!(
                "usage: sw-testhelper cli ARGS... | oracle CASES_DIR NAME WORKDIR POLICY api|cli | faults WORKDIR | busy WORKDIR | api WORKDIR | overlay WORKDIR LAYERS mount|compacted"
            );
            std::process::exit(2);
        }
    }
}

/// An overlay of `layers` lower layers at snapshot-like paths under
/// `work` (`.../snapshots/<n>/fs`, each holding a file of its own),
/// mounted the host's way (`mount`) or by compaction alone (`compacted`),
/// then unmounted: how many entries the mount showed.
fn overlay_layers(work: &Path, layers: &str, how: &str) -> Result<Value> {
    let layers: usize = layers.parse()?;
    let snapshots = work.join("var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots");
    let mut lower = Vec::new();
    for n in (0..layers).rev() {
        let fs = snapshots.join(n.to_string()).join("fs");
        std::fs::create_dir_all(&fs)?;
        std::fs::write(fs.join(format!("layer-{n}")), n.to_string())?;
        lower.push(fs.display().to_string());
    }
    let (upper, workdir, target) = (work.join("upper"), work.join("work"), work.join("target"));
    for dir in [&upper, &workdir, &target] {
        std::fs::create_dir_all(dir)?;
    }
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        workdir.display()
    );
    let flags = nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV;
    match how {
        "mount" => RealSyscalls.mount(Some("overlay"), &target, Some("overlay"), flags, Some(&data))?,
        "compacted" => specwright_host_core::sys::overlay::compacted(&target, flags, &data)?,
        other => anyhow::bail!("unknown way {other}"),
    }
    let entries = std::fs::read_dir(&target)?.count();
    let top = std::fs::read_to_string(target.join(format!("layer-{}", layers - 1)))?;
    RealSyscalls.unmount(&target, nix::mount::MntFlags::empty())?;
    Ok(json!({"data_bytes": data.len(), "entries": entries, "top": top, "after": mounts_below(work)?.len()}))
}

fn report(result: Result<Value>) {
    match result {
        Ok(report) => println!("{report}"),
        Err(e) => {
            eprintln!("sw-testhelper: {e:#}");
            std::process::exit(2);
        }
    }
}

/// What is left of a step's privileged work under `state_root`.
fn leftovers(state_root: &Path) -> Result<Value> {
    let names = |dir: PathBuf| -> Result<Vec<String>> {
        std::fs::read_dir(dir)?
            .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
            .collect()
    };
    let selinux = state_root.join("selinux");
    Ok(json!({
        "mounts": mounts_below(&state_root.join("mounts"))?.len(),
        "mountpoints": names(state_root.join("mounts"))?,
        "records": names(state_root.join("steps"))?,
        "selinux_levels": if selinux.exists() { names(selinux)? } else { Vec::new() },
    }))
}

fn is_clean(left: &Value) -> bool {
    left["mounts"] == 0
        && left["mountpoints"] == json!([])
        && left["records"] == json!([])
        && left["selinux_levels"] == json!([])
}

/// A request with several kinds of temporary mounts: read-only binds of
/// two sources, and an overlay, each narrowed by a selector.
fn multi_mount_request(work: &Path) -> Result<String> {
    for n in 0..2 {
        make_oracle_source_tree(&work.join(format!("src{n}")))?;
    }
    for dir in ["upper", "work"] {
        std::fs::create_dir_all(work.join(dir))?;
    }
    let w = work.display();
    Ok(json!({
        "id": "faulty",
        "args": ["/bin/true"],
        "mounts": [
            {"dest": "/a", "source": format!("{w}/src0"), "readonly": true, "selector": "sub/dir"},
            {"dest": "/b", "source": format!("{w}/src1"), "readonly": true, "selector": "link_abs"},
            {"dest": "/c", "mountable": [{"type": "overlay", "source": "overlay", "options": [
                format!("lowerdir={w}/src0"), format!("upperdir={w}/upper"), format!("workdir={w}/work")]}],
             "selector": "sub"},
            {"dest": "/d", "source": format!("{w}/src1"), "readonly": false, "selector": "sub/other"},
        ]
    })
    .to_string())
}

/// An operation's variant name (`Mount`, `LockStep`, ...).
fn op_kind(op: &specwright_host_core::sys::Op) -> String {
    let debug = format!("{op:?}");
    debug
        .split(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Makes the k-th privileged operation fail, for every k of a multi-mount
/// step (plain and with pinned selectors), and checks nothing is left.
fn faults(work: &Path) -> Result<Value> {
    let work = std::fs::canonicalize(work)?;
    // The step's SELinux level is reserved and let go as its mounts are.
    let mut request: Value = serde_json::from_str(&multi_mount_request(&work)?)?;
    request["selinux"] = json!(true);
    let request = Request::from_json(&request.to_string())?;
    let facts: HostFacts = serde_json::from_str(
        r#"{"kernel_release": "6.1.0", "seccomp": true, "first_free_loop": 0, "in_user_namespace": false, "selinux": true}"#,
    )?;
    let contexts = work.join("lxc_contexts");
    std::fs::write(
        &contexts,
        "process = \"u:r:container_t:s0\"\nfile = \"u:object_r:f_t:s0\"\n",
    )?;
    let engine = Engine::new(Limits::default())?;
    let chain = Chain::new(vec![engine.load_default()?]);
    let mut problems = Vec::new();
    let mut runs = Vec::new();
    for pin in [false, true] {
        let state_root = work.join(if pin { "state-pin" } else { "state" });
        let state = StateDir::open(&state_root)?;
        let run = |fail_at: Option<usize>| -> Result<(Result<(), String>, Vec<specwright_host_core::sys::Op>)> {
            let recorder = Arc::new(RecordingSyscalls::failing_at(Box::new(RealSyscalls), fail_at));
            let options = StepOptions {
                pin_selectors: pin,
                selinux_contexts: Some(contexts.clone()),
                ..StepOptions::default()
            };
            // The step is kept and its lock let go at once: it is then
            // anyone's to release.
            let outcome = Workspace::open_with(&state_root, recorder.clone())
                .and_then(|host| engine.prepare(&chain, &host.with_options(options), &request, &facts))
                .map(specwright::Step::keep)
                .map_err(|e| e.to_string());
            Ok((outcome, recorder.ops()))
        };
        let (clean, ops) = run(None)?;
        if let Err(e) = clean {
            bail!("the step fails without faults: {e}");
        }
        let total = ops.len();
        let mut kinds: std::collections::BTreeSet<String> = ops.iter().map(op_kind).collect();
        let record_ops = ops
            .iter()
            .filter(|op| {
                matches!(
                    op,
                    specwright_host_core::sys::Op::WriteRecord { step: _ }
                        | specwright_host_core::sys::Op::RemoveRecord { step: _ }
                )
            })
            .count();
        // Release with each of its operations failing in turn, then for real.
        let release_ops = {
            let recorder = RecordingSyscalls::failing_at(Box::new(RealSyscalls), None);
            release_step(&state, &recorder, &Audit::events_only(), "faulty")?;
            kinds.extend(recorder.ops().iter().map(op_kind));
            recorder.ops().len()
        };
        for k in 0..total {
            let (outcome, _) = run(Some(k))?;
            match outcome {
                Ok(_) => problems.push(format!("pin={pin} op {k}: the step succeeded despite the fault")),
                Err(e) if !e.contains("EIO") => {
                    problems.push(format!("pin={pin} op {k}: error does not show the fault: {e}"))
                }
                Err(_) => {}
            }
            let left = leftovers(&state_root)?;
            if !is_clean(&left) {
                problems.push(format!("pin={pin} op {k}: left {left}"));
                release_step(&state, &RealSyscalls, &Audit::events_only(), "faulty")?;
            }
        }
        for j in 0..release_ops {
            run(None)?.0.map_err(anyhow::Error::msg)?;
            let recorder = RecordingSyscalls::failing_at(Box::new(RealSyscalls), Some(j));
            let first = release_step(&state, &recorder, &Audit::events_only(), "faulty");
            if first.is_ok() {
                problems.push(format!("pin={pin} release op {j}: the fault was not reported"));
            }
            release_step(&state, &RealSyscalls, &Audit::events_only(), "faulty")?;
            let left = leftovers(&state_root)?;
            if !is_clean(&left) {
                problems.push(format!("pin={pin} release op {j}: second release left {left}"));
            }
        }
        runs.push(json!({"pin": pin, "spec_ops": total, "record_ops": record_ops, "release_ops": release_ops, "kinds": kinds}));
    }
    Ok(json!({"runs": runs, "problems": problems}))
}

/// A temporary mount with a file held open inside: release must retry,
/// detach lazily in the end, and say so.
fn busy(work: &Path) -> Result<Value> {
    let work = std::fs::canonicalize(work)?;
    make_oracle_source_tree(&work.join("src"))?;
    let request = specwright_core::Request::from_json(
        &json!({"id": "busy", "mounts": [{"dest": "/a", "source": work.join("src"), "readonly": true}]}).to_string(),
    )?;
    let state_root = work.join("state");
    let state = StateDir::open(&state_root)?;
    let sys: Arc<dyn Syscalls> = Arc::new(RealSyscalls);
    let lock = state.lock(&request.id)?;
    let mut step = StepHost::new(
        state.clone(),
        sys.clone(),
        Arc::new(Audit::events_only()),
        StepOptions::default(),
        &request,
        lock,
    )?;
    let source = step.materialize(0)?;
    let root = step.mount_temporary(&source, &[0])?;
    let mountpoint = PathBuf::from(step.root_path(&root)?);
    drop(step.keep());
    let held = std::fs::File::open(mountpoint.join("sub/dir/file"))?;
    let report = release_step(&state, sys.as_ref(), &Audit::events_only(), "busy")?;
    let left = leftovers(&state_root)?;
    drop(held);
    Ok(json!({
        "released": report.released,
        "busy": report.busy.iter().map(|(p, r, d)| json!({"path": p, "retries": r, "detached": d})).collect::<Vec<_>>(),
        "warnings": report.warnings(),
        "left": left,
    }))
}

/// The library API on a four-mount step: a step released explicitly, one
/// dropped, one kept (then released by id), one kept by an owner that is
/// gone (then collected), one whose chain fails, one whose chain another
/// engine loaded, one cancelled in the middle of a policy, one whose
/// policy gets settings as a value, and a bundle written; the mounts held
/// and left after each.
fn api(work: &Path) -> Result<Value> {
    let work = std::fs::canonicalize(work)?;
    let request = specwright_core::Request::from_json(&multi_mount_request(&work)?)?;
    let facts = oracle_facts()?;
    let state_root = work.join("state");
    let engine = specwright::Engine::new(Limits::default())?;
    let chain = specwright::Chain::new(vec![engine.load_default()?]);
    let host = specwright::Workspace::open(&state_root)?;
    let held = || mounts_below(&state_root.join("mounts")).map(|m| m.len());

    let step = engine.prepare(&chain, &host, &request, &facts)?;
    let held_released = held()?;
    let config = step.write_bundle(&work.join("bundle/of/step"))?;
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&config)?)?;
    let report = step.release()?;
    let after_release = held()?;

    let step = engine.prepare(&chain, &host, &request, &facts)?;
    let held_dropped = held()?;
    drop(step);
    let after_drop = held()?;

    engine.prepare(&chain, &host, &request, &facts)?.keep();
    let after_keep = held()?;
    let again = engine
        .prepare(&chain, &host, &request, &facts)
        .err()
        .map(|e| e.to_string());
    let released_by_id = host.release(&request.id)?.released;
    let after_release_by_id = held()?;

    // A step whose owner is gone is gc's to release.
    let mut gone = std::process::Command::new("true").spawn()?;
    let gone_pid = gone.id();
    gone.wait()?;
    let orphaned = host.clone().with_options(specwright::StepOptions {
        owner: specwright::Owner::of_pid(gone_pid),
        ..specwright::StepOptions::default()
    });
    engine.prepare(&chain, &orphaned, &request, &facts)?.keep();
    let held_orphaned = held()?;
    let collected: Vec<String> = host
        .gc()?
        .into_iter()
        .map(|outcome| match outcome {
            specwright::GcOutcome::Released { id, .. } => format!("released {id}"),
            _ => "other".to_string(),
        })
        .collect();
    let after_gc = held()?;

    // Policies another engine loaded are refused, not run.
    let other = specwright::Engine::new(Limits::default())?;
    let foreign = engine
        .prepare(
            &specwright::Chain::new(vec![other.load_default()?]),
            &host,
            &request,
            &facts,
        )
        .err()
        .map(|e| e.to_string());

    // Settings as a value, as an embedder holds them.
    let test_policy = std::fs::read(env!("SPECWRIGHT_TEST_POLICY_WASM"))?;
    let counting = specwright::Chain::new(vec![
        engine.load_default()?,
        engine.load_bytes("count", &test_policy, &json!({"mode": "count"}))?,
    ]);
    let counted = engine.prepare(&counting, &host, &request, &facts)?;
    let counted_hostname = counted.spec().hostname.clone();
    counted.release()?;

    // A token cancelled while a policy spins holding a mount: the step
    // stops and releases the mount, long before the time limit.
    let patient = specwright::Engine::new(Limits::from_flags(Some(600_000), None)?)?;
    let spinning = specwright::Chain::new(vec![
        patient.load_default()?,
        patient.load_bytes("spin", &test_policy, &json!({"mode": "spin-after-mount"}))?,
    ]);
    let token = specwright::Cancel::new();
    let cancellable = host.clone().with_options(specwright::StepOptions {
        cancel: token.clone(),
        ..specwright::StepOptions::default()
    });
    let canceller = {
        let token = token.clone();
        let mounts = state_root.join("mounts");
        std::thread::spawn(move || {
            // Once the policy holds its mount.
            for _ in 0..600 {
                if mounts_below(&mounts).is_ok_and(|m| !m.is_empty()) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            let held = mounts_below(&mounts).map(|m| m.len()).unwrap_or(0);
            token.cancel();
            held
        })
    };
    let cancelled = patient
        .prepare(&spinning, &cancellable, &request, &facts)
        .err()
        .map(|e| e.to_string());
    let held_when_cancelled = canceller
        .join()
        .map_err(|_| anyhow::anyhow!("the canceller panicked"))?;
    let after_cancel = held()?;

    let denying = specwright::Chain::new(vec![
        engine.load_default()?,
        engine.load_arg(&format!(
            "{}:{}",
            env!("SPECWRIGHT_TEST_POLICY_WASM"),
            write_settings(&work, "deny")?
        ))?,
    ]);
    let denied = engine
        .prepare(&denying, &host, &request, &facts)
        .err()
        .map(|e| e.to_string());
    Ok(json!({
        "held_released": held_released,
        "released": report.released,
        "after_release": after_release,
        "held_dropped": held_dropped,
        "after_drop": after_drop,
        "after_keep": after_keep,
        "again": again,
        "released_by_id": released_by_id,
        "after_release_by_id": after_release_by_id,
        "held_orphaned": held_orphaned,
        "collected": collected,
        "after_gc": after_gc,
        "foreign": foreign,
        "counted_hostname": counted_hostname,
        "held_when_cancelled": held_when_cancelled,
        "cancelled": cancelled,
        "after_cancel": after_cancel,
        "denied": denied,
        "written_args": written["process"]["args"],
        "left": leftovers(&state_root)?,
    }))
}

fn oracle_facts() -> Result<HostFacts> {
    let path = specwright_tests::oracle_facts_file();
    Ok(serde_json::from_str(&std::fs::read_to_string(&path)?)?)
}

fn write_settings(work: &Path, mode: &str) -> Result<String> {
    let path = work.join(format!("{mode}.json"));
    std::fs::write(&path, json!({"mode": mode}).to_string())?;
    Ok(path.display().to_string())
}

/// Highest n of `<PREFIXn>` in `text`, plus one.
fn placeholder_count(text: &str, prefix: &str) -> usize {
    let mut count = 0;
    for (i, _) in text.match_indices(&format!("<{prefix}")) {
        let digits: String = text[i + prefix.len() + 1..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if let Ok(n) = digits.parse::<usize>() {
            count = count.max(n + 1);
        }
    }
    count
}

/// Hard-links every file of `from` not yet in `to` into it. Cache entries
/// are written whole and renamed into place, never changed, so a link is a
/// copy.
fn link_entries(from: &Path, to: &Path) -> Result<()> {
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        if !entry.file_type()?.is_file() || entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        match std::fs::hard_link(entry.path(), to.join(entry.file_name())) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(e).with_context(|| format!("linking {} into {}", entry.path().display(), to.display()))
            }
            _ => {}
        }
    }
    Ok(())
}

fn oracle_case(cases: &Path, name: &str, work: &Path, policy: &str, via_cli: bool, compiled: &Path) -> Result<Value> {
    let read = |suffix: &str| -> Result<String> {
        let path = cases.join(format!("{name}.{suffix}.json"));
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    };
    let mut request = read("request")?;
    let facts_text = read("host")?;
    let facts: HostFacts = serde_json::from_str(&facts_text).context("host facts")?;
    let work = std::fs::canonicalize(work)?;

    // Real paths and their placeholders; fixed-width names so no path is a
    // prefix of another.
    let mut placeholders: Vec<(String, String)> = Vec::new();
    for n in 0..placeholder_count(&request, "SRC") {
        let dir = work.join(format!("src{n:03}"));
        make_oracle_source_tree(&dir)?;
        placeholders.push((dir.display().to_string(), format!("<SRC{n}>")));
    }
    for n in 0..placeholder_count(&request, "EMPTY") {
        let dir = work.join(format!("empty{n:03}"));
        std::fs::create_dir_all(&dir)?;
        placeholders.push((dir.display().to_string(), format!("<EMPTY{n}>")));
    }
    for n in 0..placeholder_count(&request, "LONG") {
        let dir = work.join(format!("long{n:03}{}", "x".repeat(200)));
        std::fs::create_dir_all(&dir)?;
        placeholders.push((dir.display().to_string(), format!("<LONG{n}>")));
    }
    if request.contains("<TRACESOCK>") {
        let socket = work.join("otel-trace.sock");
        std::fs::write(&socket, b"")?;
        placeholders.push((socket.display().to_string(), "<TRACESOCK>".to_string()));
    }
    for (real, placeholder) in &placeholders {
        request = request.replace(placeholder, real);
    }
    // The case's CDI spec, alone in a directory; none when it has none (so
    // nothing of the machine's own CDI specs is seen).
    let cdi_dir = work.join("cdi");
    std::fs::create_dir_all(&cdi_dir)?;
    let cdi_spec = cases.join(format!("{name}.cdi.yaml"));
    if cdi_spec.exists() {
        std::fs::copy(&cdi_spec, cdi_dir.join(format!("{name}.yaml")))?;
    }

    let state_root = work.join("state");
    let state = StateDir::open(&state_root)?;
    let cache_dir = state.open_cache_dir()?;
    link_entries(compiled, cache_dir.path())?;
    let mounts_root = state.mounts_dir();
    let sys: Arc<dyn Syscalls> = Arc::new(RealSyscalls);
    let audit = Audit::events_only();
    let (spec, error, id, mounts_during) = if via_cli {
        cli_step(
            &work,
            &request,
            &facts_text,
            policy,
            &cdi_dir,
            &state_root,
            &mounts_root,
        )?
    } else {
        // Through the library's API, as an embedder makes a step.
        let engine = Engine::new(Limits::default())?.with_cache(Workspace::open(&state_root)?.compile_cache()?);
        let chain = Chain::new(vec![engine.load_arg(policy)?]);
        let options = specwright::StepOptions {
            cdi_spec_dirs: Arc::new(vec![cdi_dir.clone()]),
            ..specwright::StepOptions::default()
        };
        let host = Workspace::open(&state_root)?.with_options(options);
        let prepared = Request::from_json(&request)
            .map_err(|e| e.to_string())
            .and_then(|request| {
                let step = engine
                    .prepare(&chain, &host, &request, &facts)
                    .map_err(|e| e.to_string())?;
                Ok((request.id, step))
            });
        let mounts_during = mounts_below(&mounts_root)?.len();
        match prepared {
            Ok((id, step)) => {
                let spec = serde_json::to_value(step.spec())?;
                // Released below by id, as `specwright release` does.
                step.keep();
                (Some(spec), None, id, mounts_during)
            }
            Err(e) => (None, Some(e), String::new(), mounts_during),
        }
    };
    link_entries(cache_dir.path(), compiled)?;
    let mapped = match &spec {
        Some(spec) => Some(map_back(spec, &mounts_root, &placeholders)?),
        None => None,
    };
    let error = error.map(|e| map_text_back(&e, &placeholders));
    if !id.is_empty() {
        release_step(&state, sys.as_ref(), &audit, &id)?;
        // Released twice: must be a no-op.
        release_step(&state, sys.as_ref(), &audit, &id)?;
    }
    let mounts_after = mounts_below(&mounts_root)?.len();
    let leftover: Vec<String> = std::fs::read_dir(&mounts_root)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    let records: Vec<String> = std::fs::read_dir(state_root.join("steps"))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    Ok(json!({
        "spec": mapped,
        "error": error,
        "mounts_during": mounts_during,
        "mounts_after": mounts_after,
        "leftover_mountpoints": leftover,
        "leftover_records": records,
    }))
}

/// One step through `specwright spec` (this binary's `cli`, as a process
/// of its own), its config.json read back: (spec, error, step id, mounts
/// held after it).
#[allow(clippy::type_complexity)]
fn cli_step(
    work: &Path,
    request: &str,
    facts: &str,
    policy: &str,
    cdi_dir: &Path,
    state_root: &Path,
    mounts_root: &Path,
) -> Result<(Option<Value>, Option<String>, String, usize)> {
    let request_file = work.join("request.json");
    std::fs::write(&request_file, request)?;
    let facts_file = work.join("host.json");
    std::fs::write(&facts_file, facts)?;
    let bundle = work.join("bundle");
    let out = std::process::Command::new(std::env::current_exe()?)
        .arg("cli")
        .arg("spec")
        .args(["--policy", policy])
        .arg("--request")
        .arg(&request_file)
        .arg("--host-facts")
        .arg(&facts_file)
        .arg("--state-dir")
        .arg(state_root)
        .arg("--cdi-spec-dir")
        .arg(cdi_dir)
        .arg("--bundle")
        .arg(&bundle)
        .output()?;
    let mounts_during = mounts_below(mounts_root)?.len();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if bundle.join("config.json").exists() {
            bail!("specwright spec failed but left {}/config.json", bundle.display());
        }
        return Ok((None, Some(stderr), String::new(), mounts_during));
    }
    let config = std::fs::read_to_string(bundle.join("config.json"))?;
    let spec: Value = serde_json::from_str(&config)?;
    let id = serde_json::from_str::<Value>(request)?["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Ok((Some(spec), None, id, mounts_during))
}

/// `text` with the case's real paths replaced by their placeholders.
fn map_text_back(text: &str, placeholders: &[(String, String)]) -> String {
    let mut all: Vec<&(String, String)> = placeholders.iter().collect();
    all.sort_by_key(|(real, _)| std::cmp::Reverse(real.len()));
    let mut text = text.to_string();
    for (real, placeholder) in all {
        text = text.replace(real.as_str(), placeholder);
    }
    text
}

/// Replaces real paths in the spec by the oracle's placeholders; temporary
/// mountpoints become `<LOCALMOUNTn>` in order of first appearance.
fn map_back(spec: &Value, mounts_root: &Path, placeholders: &[(String, String)]) -> Result<Value> {
    let mut local: Vec<(String, String)> = Vec::new();
    let prefix = format!("{}/", mounts_root.display());
    for m in spec["mounts"].as_array().into_iter().flatten() {
        let Some(source) = m["source"].as_str() else {
            continue;
        };
        if let Some(rest) = source.strip_prefix(&prefix) {
            let dir = rest.split('/').next().unwrap_or_default();
            let real = format!("{prefix}{dir}");
            if !local.iter().any(|(r, _)| *r == real) {
                let n = local.len();
                local.push((real, format!("<LOCALMOUNT{n}>")));
            }
        }
    }
    let mut text = serde_json::to_string(spec)?;
    // Longest real paths first, so nested ones are not half-replaced.
    let mut all: Vec<&(String, String)> = local.iter().chain(placeholders.iter()).collect();
    all.sort_by_key(|(real, _)| std::cmp::Reverse(real.len()));
    for (real, placeholder) in all {
        text = text.replace(real.as_str(), placeholder);
    }
    if text.contains(mounts_root.to_string_lossy().as_ref()) {
        bail!("a state-dir path was left unmapped: {text}");
    }
    Ok(serde_json::from_str(&text)?)
}
