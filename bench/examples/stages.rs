//! The native core's stages timed one by one, for profiling:
//! `cargo run --release -p specwright-bench --example stages [case] [runs] [only]`
//! (run it under `perf record -g` to see where a stage goes).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use specwright::audit::Audit;
use specwright::state::StateDir;
use specwright::step::{StepHost, StepOptions};
use specwright::sys::RecordingSyscalls;
use specwright_core::{HostFacts, Request};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let case = args.next().unwrap_or_else(|| "minimal".to_string());
    let runs: u32 = args.next().map_or(Ok(20_000), |n| n.parse())?;
    // `only` leaves serde_json out, for a profile of our own path.
    let serde_too = args.next().as_deref() != Some("only");
    let cases = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/oracle/cases");
    let json = std::fs::read_to_string(cases.join(format!("{case}.request.json")))
        .with_context(|| format!("oracle case {case}"))?
        .replace("<SRC", "/tmp/<SRC");
    let facts: HostFacts = serde_json::from_str(&std::fs::read_to_string(cases.join("minimal.host.json"))?)?;
    let state_dir = tempfile::tempdir()?;
    let state = StateDir::open(state_dir.path())?;

    let mut times = [0f64; 5];
    let mut bytes = 0;
    for _ in 0..runs {
        let t0 = Instant::now();
        let request = Request::from_json(&json)?;
        let t1 = Instant::now();
        let mut step = StepHost::new(
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
        let t2 = Instant::now();
        let spec = specwright_core::buildkit::generate(&request, &facts, &mut step)?;
        let t3 = Instant::now();
        let out = spec.to_json();
        let t4 = Instant::now();
        let by_serde = if serde_too {
            serde_json::to_string(&spec)?
        } else {
            String::new()
        };
        let t5 = Instant::now();
        bytes = out.len().max(by_serde.len());
        for (slot, (a, b)) in times.iter_mut().zip([(t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5)]) {
            *slot += (b - a).as_secs_f64();
        }
    }
    let per = |s: f64| s / f64::from(runs) * 1e6;
    println!(
        "{case}: parse {:.2} µs, step {:.2} µs, generate {:.2} µs, serialize {:.2} µs ({bytes} bytes; serde_json: {:.2} µs); total {:.2} µs",
        per(times[0]),
        per(times[1]),
        per(times[2]),
        per(times[3]),
        per(times[4]),
        per(times[..4].iter().sum())
    );
    Ok(())
}
