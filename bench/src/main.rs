//! `just bench`: every figure measured in one run on this machine, side by
//! side, with its spread; targets printed as PASS or FAIL, never asserted.
//!
//! Runs in a private mount namespace of its own (it mounts, for the
//! selector benchmark) and needs root.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use specwright::{Engine, Limits, LoadedPolicy};
use specwright_bench::{cases_dir, dry_step, oracle_facts, oracle_request};
use specwright_core::buildkit::Release;
use specwright_core::{HostCalls, HostFacts, Request};
use specwright_host_core::audit::Audit;
use specwright_host_core::state::StateDir;
use specwright_host_core::step::{StepHost, StepOptions};
use specwright_host_core::sys::RealSyscalls;

mod baseline;
mod containers;
mod cri;
mod languages;
mod machine;
mod measure;

use machine::{command_output, machine, run_process};
use measure::{fmt_time, measure_together, steps_per_second, three, timed, Figure, SAMPLES};

/// The pure core, natively: parse, generate, serialize (what the policy does).
fn native_generate(json: &str, facts: &HostFacts, state: &StateDir) -> Result<String> {
    native_generate_release(Release::DEFAULT, json, facts, state)
}

/// `native_generate` for one BuildKit release.
fn native_generate_release(release: Release, json: &str, facts: &HostFacts, state: &StateDir) -> Result<String> {
    let request = Request::from_json(json)?;
    let mut step = dry_step(state, &request)?;
    let spec = specwright_core::buildkit::generate_release(release, &request, facts, &mut step)?;
    Ok(spec.to_json())
}

fn wasm_fresh(
    runtime: &Engine,
    policy: &LoadedPolicy,
    json: &str,
    facts: &HostFacts,
    state: &StateDir,
) -> Result<String> {
    let request = Request::from_json(json)?;
    let step = dry_step(state, &request)?;
    let (_, result) = runtime.call(policy, step, json, facts, None);
    Ok(result?)
}

struct Target {
    what: String,
    ratio_or_value: String,
    pass: bool,
}

impl Target {
    /// A ratio that must stay at or below `limit`; `detail` follows it.
    fn ratio_at_most(what: String, ratio: f64, limit: f64, detail: String) -> Target {
        Target {
            what: format!("{what} <= {limit}x"),
            ratio_or_value: format!("{ratio:.2}x ({detail})"),
            pass: ratio <= limit,
        }
    }

    /// A cost that passes when its ratio stays at or below `limit` or its
    /// added time at or below `slack_ms`, whichever is looser.
    fn ratio_or_added_time(what: String, ratio: f64, limit: f64, added_ms: f64, slack_ms: f64) -> Target {
        Target {
            what: format!("{what} <= {limit}x or +{slack_ms} ms"),
            ratio_or_value: format!("{ratio:.2}x ({added_ms:+.1} ms)"),
            pass: ratio <= limit || added_ms <= slack_ms,
        }
    }
}

/// `rows` as a Markdown table's rows: what, measured, and the verdict
/// (`verdicts[0]` when it passes, `verdicts[1]` when not).
fn push_rows(out: &mut String, rows: &[Target], verdicts: [&str; 2]) {
    for t in rows {
        let verdict = if t.pass { verdicts[0] } else { verdicts[1] };
        out.push_str(&format!("| {} | {} | {} |\n", t.what, t.ratio_or_value, verdict));
    }
}

/// Each figure on a line of its own: name, median, p10 .. p90.
fn print_figures(figures: &[Figure]) {
    for f in figures {
        println!(
            "{}: {} ({} .. {})",
            f.name,
            fmt_time(f.median()),
            fmt_time(f.p10()),
            fmt_time(f.p90())
        );
    }
}

fn main() -> Result<()> {
    let write_to = std::env::args()
        .skip_while(|a| a != "--write")
        .nth(1)
        .map(PathBuf::from);

    // A private mount namespace for the selector benchmark; nothing leaks.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).context("unshare(CLONE_NEWNS): run as root")?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("making / private in the new namespace")?;

    let work = tempfile::tempdir()?;
    let work_path = std::fs::canonicalize(work.path())?;
    let state = StateDir::open(&work_path.join("state"))?;
    let facts = oracle_facts()?;
    let runtime = Engine::pooled(Limits::default(), 16)?;
    let policy = runtime.load_default()?;
    let mut figures: Vec<Figure> = Vec::new();
    let mut targets: Vec<Target> = Vec::new();
    let mut floors: Vec<Target> = Vec::new();
    let per_sample = Duration::from_millis(200);

    eprintln!("specwright benchmarks on {}", machine());
    // `--baseline DIR`: this build's binaries beside an earlier build's.
    // The directory of the binaries measured: the bench's own.
    let bin = std::env::current_exe()?
        .parent()
        .map(std::path::Path::to_path_buf)
        .context("the bench's directory")?;
    if let Some(old) = std::env::args().skip_while(|a| a != "--baseline").nth(1) {
        let new = &bin;
        let request = work_path.join("minimal.request.json");
        std::fs::write(&request, oracle_request("minimal", &work_path)?)?;
        let facts_file = cases_dir().join("minimal.host.json");
        let compared = baseline::compare(&work_path, new, std::path::Path::new(&old), &request, &facts_file)?;
        let (table, pass) = baseline::report(&compared);
        println!(
            "Before (`{old}`) and after (`{}`), side by side on {}:\n\n{table}",
            new.display(),
            machine()
        );
        anyhow::ensure!(pass, "a figure is more than 10% worse than before");
        return Ok(());
    }
    // `--containers`: only the container starts beside runc, printed.
    if std::env::args().any(|a| a == "--containers") {
        let (comparisons, figures) = containers::container_starts(&work_path, &bin)?;
        for c in &comparisons {
            let floor = if c.floor { " (a floor)" } else { "" };
            println!("{}{floor}: {:.2}x ({:+.2} ms)", c.what, c.ratio, c.added_ms);
        }
        print_figures(&figures);
        return Ok(());
    }
    // `--languages`: only the policies by language, printed.
    if std::env::args().any(|a| a == "--languages") {
        let facts: HostFacts = serde_json::from_str(&std::fs::read_to_string(
            cases_dir().join("../../oracle-v0.32/cases/minimal.host.json"),
        )?)?;
        let json = oracle_request("minimal", &work_path)?;
        let (figures, rows) = languages::languages(&work_path, &state, &json, &facts, per_sample)?;
        print_figures(&figures);
        print!("{}", languages::report(&rows));
        return Ok(());
    }
    // 1-3. Native core, wasm with a fresh instance, wasm with one reused instance.
    for case in ["minimal", "four_mounts", "insecure"] {
        let json = oracle_request(case, &work_path)?;
        let request = Request::from_json(&json)?;
        let mut reused = runtime.reused_instance(&policy, dry_step(&state, &request)?)?;
        let mut ops = vec![
            timed(format!("{case}: native core"), || {
                native_generate(&json, &facts, &state).map(drop)
            }),
            timed(format!("{case}: wasm, fresh instance per step"), || {
                wasm_fresh(&runtime, &policy, &json, &facts, &state).map(drop)
            }),
            timed(format!("{case}: wasm, one reused instance"), || {
                reused
                    .generate(dry_step(&state, &request)?, &json, &facts, "")
                    .map(drop)
                    .map_err(anyhow::Error::from)
            }),
        ];
        if case == "minimal" {
            // What a fresh instance costs before the policy does anything.
            ops.push(timed("fresh instance, metadata() only (floor of a step)", || {
                let request = Request::from_json(&json)?;
                let step = dry_step(&state, &request)?;
                runtime
                    .fresh_instance_name(&policy, step)
                    .map(drop)
                    .map_err(anyhow::Error::from)
            }));
        }
        let mut measured = measure_together(ops, per_sample)?;
        let floor = (case == "minimal").then(|| measured.pop()).flatten();
        let (native, fresh, reused_fig) = three(measured)?;
        let ratio = fresh.median() / native.median();
        let floor_ratio = floor
            .as_ref()
            .map(|f| format!("; the instance alone: {:.2}x", f.median() / native.median()))
            .unwrap_or_default();
        targets.push(Target::ratio_at_most(
            format!("{case}: fresh-instance wasm / native"),
            ratio,
            1.5,
            format!(
                "reused instance: {:.2}x{floor_ratio}",
                reused_fig.median() / native.median()
            ),
        ));
        if case == "minimal" {
            targets.push(Target {
                what: "minimal: native core <= 5 µs".to_string(),
                ratio_or_value: fmt_time(native.median()),
                pass: native.median() <= 5e-6,
            });
        }
        figures.extend([native, fresh, reused_fig]);
        figures.extend(floor);
    }

    // The default (BuildKit v0.32.2) beside `buildkit-v0.8` (v0.8.1, the
    // default before it) on the same requests, natively and as policies.
    let v0_8 = runtime.load_arg("buildkit-v0.8")?;
    let v0_32_facts: HostFacts = serde_json::from_str(&std::fs::read_to_string(
        cases_dir().join("../../oracle-v0.32/cases/minimal.host.json"),
    )?)?;
    for case in ["minimal", "four_mounts", "insecure"] {
        let json = oracle_request(case, &work_path)?;
        let measured = measure_together(
            vec![
                timed(format!("{case}: native core, v0.32 default"), || {
                    native_generate_release(Release::V0_32, &json, &v0_32_facts, &state).map(drop)
                }),
                timed(format!("{case}: native core, buildkit-v0.8"), || {
                    native_generate_release(Release::V0_8, &json, &v0_32_facts, &state).map(drop)
                }),
                timed(format!("{case}: wasm fresh instance, v0.32 default"), || {
                    wasm_fresh(&runtime, &policy, &json, &v0_32_facts, &state).map(drop)
                }),
                timed(format!("{case}: wasm fresh instance, buildkit-v0.8"), || {
                    wasm_fresh(&runtime, &v0_8, &json, &v0_32_facts, &state).map(drop)
                }),
            ],
            per_sample,
        )?;
        let [native_32, native_8, wasm_32, wasm_8]: [Figure; 4] = measured
            .try_into()
            .map_err(|_| anyhow::anyhow!("four figures expected"))?;
        targets.push(Target::ratio_at_most(
            format!("{case}: v0.32 default / buildkit-v0.8, fresh instance"),
            wasm_32.median() / wasm_8.median(),
            1.2,
            format!("native core: {:.2}x", native_32.median() / native_8.median()),
        ));
        figures.extend([native_32, native_8, wasm_32, wasm_8]);
    }

    // The same policy in Rust, Python and JavaScript.
    let (language_figures, language_rows) = languages::languages(
        &work_path,
        &state,
        &oracle_request("minimal", &work_path)?,
        &v0_32_facts,
        per_sample,
    )?;
    figures.extend(language_figures);

    // 4. The CLI end to end, beside crun spec and runc spec.
    let cli = Some(bin.join("specwright"))
        .filter(|p| p.exists())
        .context("target/release/specwright: build it first (just bench does)")?;
    let request = work_path.join("minimal.request.json");
    std::fs::write(&request, oracle_request("minimal", &work_path)?)?;
    let facts_file = cases_dir().join("minimal.host.json");
    let cli_state = work_path.join("cli-state");
    let cli_args = [
        "spec",
        "--request",
        request.to_str().unwrap_or_default(),
        "--host-facts",
        facts_file.to_str().unwrap_or_default(),
        "--state-dir",
        cli_state.to_str().unwrap_or_default(),
    ];
    run_process(
        &cli,
        &[
            "policy",
            "compile",
            "--state-dir",
            cli_state.to_str().unwrap_or_default(),
            "default",
        ],
        &work_path,
    )?;
    let per_process = Duration::from_millis(600);
    let spec_dir = work_path.join("runtime-spec");
    std::fs::create_dir_all(&spec_dir)?;
    // This design's floor for it: a process that loads the default policy
    // from the cache and has it generate the spec, nothing else.
    let review_floor = bin.join("bench-review-floor");
    anyhow::ensure!(
        review_floor.exists(),
        "{}: build it first (just bench does)",
        review_floor.display()
    );
    let floor_state = work_path.join("floor-state");
    let floor_args = [
        floor_state.to_str().unwrap_or_default(),
        "default",
        "--generate",
        request.to_str().unwrap_or_default(),
        facts_file.to_str().unwrap_or_default(),
    ];
    let mut processes = vec![
        timed("specwright spec (process, warm cache)", || {
            run_process(&cli, &cli_args, &work_path)
        }),
        timed("specwright spec (process, cold cache)", || {
            let _ = std::fs::remove_dir_all(cli_state.join("cache"));
            run_process(&cli, &cli_args, &work_path)
        }),
        timed(
            "specwright spec at this design's floor (a process that loads the cached default policy and runs it once)",
            || run_process(&review_floor, &floor_args, &work_path),
        ),
    ];
    for runtime_bin in ["crun", "runc"] {
        let Ok(specwright::OciRuntime { path }) = specwright::OciRuntime::find(runtime_bin) else {
            eprintln!("{runtime_bin}: not installed, skipped");
            continue;
        };
        let spec_dir = &spec_dir;
        processes.push(timed(format!("{runtime_bin} spec (process)"), move || {
            let _ = std::fs::remove_file(spec_dir.join("config.json"));
            run_process(&path, &["spec"], spec_dir)
        }));
    }
    let mut runtime_figures = measure_together(processes, per_process)?;
    let cold = runtime_figures.remove(1);
    let warm = runtime_figures.remove(0);
    if let Some(crun) = runtime_figures.iter().find(|f| f.name.starts_with("crun")) {
        let ratio = warm.median() / crun.median();
        targets.push(Target {
            what: "specwright spec (warm cache) / crun spec <= 1.5x".to_string(),
            ratio_or_value: format!("{ratio:.2}x (cold cache: {:.2}x)", cold.median() / crun.median()),
            pass: ratio <= 1.5,
        });
        if let Some(floor) = runtime_figures.iter().find(|f| f.name.contains("floor")) {
            floors.push(Target::ratio_at_most(
                "specwright spec at this design's floor / crun spec".to_string(),
                floor.median() / crun.median(),
                1.5,
                format!("{:+.1} ms", (floor.median() - crun.median()) * 1e3),
            ));
        }
    }
    figures.extend([warm, cold]);
    figures.extend(runtime_figures);

    // 5. A read-only selector: through the host vs raw mount(2)/umount(2).
    let src = work_path.join("src0");
    let sel_request = Request::from_json(
        &serde_json::json!({"id": "bench-sel", "mounts": [{"dest": "/sel", "source": src, "readonly": true, "selector": "sub/dir"}]})
            .to_string(),
    )?;
    let sel_state = StateDir::open(&work_path.join("sel-state"))?;
    let audit = Arc::new(Audit::events_only());
    let raw_target = work_path.join("raw-mountpoint");
    let mut selector_figures = measure_together(
        vec![
            timed("ro selector: mount + resolve + release, host", || {
                let lock = sel_state.lock(&sel_request.id)?;
                let mut step = StepHost::new(
                    sel_state.clone(),
                    Arc::new(RealSyscalls),
                    audit.clone(),
                    StepOptions::default(),
                    &sel_request,
                    lock,
                )
                .map_err(anyhow::Error::msg)?;
                let source = HostCalls::materialize(&mut step, 0)?;
                let root = HostCalls::mount_temporary(&mut step, &source, &[0])?;
                HostCalls::resolve_in_root(&mut step, &root, "sub/dir")?;
                step.release_all()?;
                Ok(())
            }),
            timed("ro selector: raw mkdir + mount(2) x2 + umount(2) + rmdir", || {
                std::fs::create_dir(&raw_target)?;
                mount(
                    Some(&src),
                    &raw_target,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )?;
                mount(
                    None::<&str>,
                    &raw_target,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                    None::<&str>,
                )?;
                umount2(&raw_target, MntFlags::empty())?;
                std::fs::remove_dir(&raw_target)?;
                Ok(())
            }),
        ],
        per_sample,
    )?;
    let raw_sel = selector_figures.remove(1);
    let host_sel = selector_figures.remove(0);
    let ratio = host_sel.median() / raw_sel.median();
    targets.push(Target {
        what: "ro selector through the host / raw syscalls <= 1.1x".to_string(),
        ratio_or_value: format!("{ratio:.2}x"),
        pass: ratio <= 1.1,
    });
    figures.extend([host_sel, raw_sel]);

    // 6. Steps per second, 1 and 2 threads (four_mounts, fresh instance per
    // step), each thread with a runtime of its own, as `Engine::for_worker`
    // advises (a shared one is shown beside it).
    let json = oracle_request("four_mounts", &work_path)?;
    let throughput = steps_per_second(|| {
        let worker = runtime
            .for_worker()
            .and_then(|r| r.adopt(&policy).map(|p| (r, p)))
            .map_err(|e| eprintln!("a worker runtime: {e}"))
            .ok();
        let (json, facts, state) = (&json, &facts, &state);
        move || {
            worker
                .as_ref()
                .is_some_and(|(runtime, policy)| wasm_fresh(runtime, policy, json, facts, state).is_ok())
        }
    });
    let shared_throughput = steps_per_second(|| || wasm_fresh(&runtime, &policy, &json, &facts, &state).is_ok());
    // What this machine gives a second thread at all: pure arithmetic, no
    // memory, no locks, no syscalls (two vCPUs can share a physical core).
    let ceiling = steps_per_second(|| {
        || {
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            for _ in 0..10_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
            }
            std::hint::black_box(x) != 0
        }
    });
    // And what it gives work that touches memory as a fresh instance's
    // reset does (zero a slot's 256 KiB, copy its ~64 KiB data image back).
    let memory_ceiling = steps_per_second(|| {
        || {
            thread_local! {
                static SLOT: std::cell::RefCell<(Vec<u8>, Vec<u8>)> =
                    std::cell::RefCell::new((vec![1; 256 << 10], vec![7; 64 << 10]));
            }
            SLOT.with(|slot| {
                let (memory, image) = &mut *slot.borrow_mut();
                memory.fill(0);
                memory[..image.len()].copy_from_slice(image);
                std::hint::black_box(&memory[..]).len() == 256 << 10
            })
        }
    });
    for (threads, per_second) in throughput.iter().enumerate() {
        eprintln!(
            "{:<58} {per_second:>10.0} steps/s",
            format!("four_mounts, {} thread(s)", threads + 1)
        );
    }
    let machine_scaling = ceiling[1] / ceiling[0];
    eprintln!(
        "{:<58} {machine_scaling:>10.2}x",
        "pure arithmetic, 2 threads / 1 thread"
    );
    let memory_scaling = memory_ceiling[1] / memory_ceiling[0];
    eprintln!(
        "{:<58} {memory_scaling:>10.2}x",
        "zeroing 256 KiB + copying 64 KiB, 2 threads / 1 thread"
    );
    let scaling = throughput[1] / throughput[0];
    let shared_scaling = shared_throughput[1] / shared_throughput[0];
    eprintln!(
        "{:<58} {shared_scaling:>10.2}x",
        "one runtime shared by the threads, 2 / 1"
    );
    targets.push(Target {
        what: "2 threads / 1 thread >= 1.8x".to_string(),
        ratio_or_value: format!(
            "{scaling:.2}x ({:.0} vs {:.0} steps/s, a runtime a thread; one runtime shared: {shared_scaling:.2}x; on this machine, same run: pure arithmetic {machine_scaling:.2}x, resetting a slot's worth of memory {memory_scaling:.2}x)",
            throughput[1], throughput[0]
        ),
        pass: scaling >= 1.8,
    });

    // 7. A container start through specwright-runc, and `specwright run`,
    // each beside the same start without specwright.
    let (comparisons, start_figures) = containers::container_starts(&work_path, &bin)?;
    for c in comparisons {
        let target = match c.slack_ms {
            Some(slack_ms) => Target::ratio_or_added_time(c.what, c.ratio, c.limit, c.added_ms, slack_ms),
            None => Target::ratio_at_most(c.what, c.ratio, c.limit, format!("{:+.1} ms", c.added_ms)),
        };
        if c.floor {
            floors.push(target);
        } else {
            targets.push(target);
        }
    }
    figures.extend(start_figures);

    // The report.
    let mut out = String::new();
    out.push_str("# Benchmarks\n\n");
    out.push_str(&format!(
        "Measured by `just bench` on {}, {} UTC, commit `{}`. Each figure is the median of {SAMPLES} samples (each a batch of runs; a container's life or run: {paced} samples of one, each started 20 ms after the one before), with the 10th..90th percentile; one run, side by side: the figures compared in a target are sampled in alternation. The machine is shared: compare ratios within a run, not figures across runs.\n\n",
        machine(),
        command_output("date", &["-u", "+%Y-%m-%d %H:%M"]),
        command_output("git", &["rev-parse", "--short", "HEAD"]),
        paced = 3 * SAMPLES,
    ));
    out.push_str("## Targets\n\n| target | measured | result |\n| --- | --- | --- |\n");
    push_rows(&mut out, &targets, ["PASS", "FAIL"]);
    out.push_str("\n## Floors of this design\n\nWhat the wrapper's design (no daemon: a front that execs the runtime, a review in a process of its own) cannot go below, measured beside the targets it bounds: each runtime call through a Rust process that only execs the runtime (`bench-exec-floor`), each review a process that only loads the cached policy and reviews the config.json (`bench-review-floor`). Where a floor misses a goal, the goal is below what the design can reach on this machine.\n\n| floor held to the goal | measured | the goal is |\n| --- | --- | --- |\n");
    push_rows(&mut out, &floors, ["reachable", "below the floor"]);
    out.push_str("\n## Figures\n\n| what | median | p10 .. p90 |\n| --- | --- | --- |\n");
    for f in &figures {
        out.push_str(&format!(
            "| {} | {} | {} .. {} |\n",
            f.name,
            fmt_time(f.median()),
            fmt_time(f.p10()),
            fmt_time(f.p90())
        ));
    }
    out.push_str(&format!(
        "| four_mounts, 1 thread | {:.0} steps/s | |\n| four_mounts, 2 threads, a runtime each | {:.0} steps/s | |\n| four_mounts, 1 thread, shared runtime | {:.0} steps/s | |\n| four_mounts, 2 threads, one shared runtime | {:.0} steps/s | |\n",
        throughput[0], throughput[1], shared_throughput[0], shared_throughput[1]
    ));
    out.push_str(&languages::report(&language_rows));
    eprintln!();
    for t in &targets {
        eprintln!(
            "{} {} ({})",
            if t.pass { "PASS" } else { "FAIL" },
            t.what,
            t.ratio_or_value
        );
    }
    match write_to {
        Some(path) => {
            let notes = std::fs::read_to_string(&path)
                .ok()
                .and_then(|old| old.find("\n## Notes").map(|i| old[i..].to_string()))
                .unwrap_or_default();
            std::fs::write(&path, format!("{out}{notes}")).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        None => print!("{out}"),
    }
    Ok(())
}
