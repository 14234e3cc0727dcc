//! The default policy run with a fresh instance per step, in a loop, for
//! profiling: `cargo run --release -p specwright-bench --example fresh [case] [runs] [threads]`
//! (each thread runs `runs` steps).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use specwright::audit::Audit;
use specwright::policy::{Limits, PolicyRuntime};
use specwright::state::StateDir;
use specwright::step::{StepHost, StepOptions};
use specwright::sys::RecordingSyscalls;
use specwright_core::{HostFacts, Request};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let case = args.next().unwrap_or_else(|| "minimal".to_string());
    let runs: u32 = args.next().map_or(Ok(20_000), |n| n.parse())?;
    let threads: u32 = args.next().map_or(Ok(1), |n| n.parse())?;
    let cases = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/oracle/cases");
    let json = std::fs::read_to_string(cases.join(format!("{case}.request.json")))
        .with_context(|| format!("oracle case {case}"))?
        .replace("<SRC", "/tmp/<SRC");
    let facts: HostFacts = serde_json::from_str(&std::fs::read_to_string(cases.join("minimal.host.json"))?)?;
    let state_dir = tempfile::tempdir()?;
    let state = StateDir::open(state_dir.path())?;
    let runtime = PolicyRuntime::pooled(Limits::default(), 16)?;
    let policy = runtime.load_default()?;

    let step = || -> Result<()> {
        let request = Request::from_json(&json)?;
        let step = StepHost::new(
            state.clone(),
            Arc::new(RecordingSyscalls::dry_run()),
            Arc::new(Audit::events_only()),
            StepOptions {
                dry_run: true,
                ..StepOptions::default()
            },
            &request,
        )
        .map_err(anyhow::Error::msg)?;
        let (_, spec) = runtime.run(&policy, step, &json, &facts, None);
        spec?;
        Ok(())
    };
    let start = Instant::now();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| scope.spawn(|| (0..runs).try_for_each(|_| step())))
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a worker panicked"))))
    })?;
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "{case}: fresh instance {:.2} µs a step, {:.0} steps/s on {threads} thread(s)",
        elapsed / f64::from(runs) * 1e6,
        f64::from(runs * threads) / elapsed
    );
    Ok(())
}
