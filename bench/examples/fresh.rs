//! The default policy run with a fresh instance per step, in a loop, for
//! profiling: `cargo run --release -p specwright-bench --example fresh [case] [runs]`.

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
    let cases = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/oracle/cases");
    let json = std::fs::read_to_string(cases.join(format!("{case}.request.json")))
        .with_context(|| format!("oracle case {case}"))?
        .replace("<SRC", "/tmp/<SRC");
    let facts: HostFacts = serde_json::from_str(&std::fs::read_to_string(cases.join("minimal.host.json"))?)?;
    let state_dir = tempfile::tempdir()?;
    let state = StateDir::open(state_dir.path())?;
    let runtime = PolicyRuntime::pooled(Limits::default(), 16)?;
    let policy = runtime.load_default()?;

    let start = Instant::now();
    for _ in 0..runs {
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
    }
    let per = start.elapsed().as_secs_f64() / f64::from(runs) * 1e6;
    println!("{case}: fresh instance {per:.2} µs a step");
    Ok(())
}
