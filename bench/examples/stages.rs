//! The native core's stages timed one by one, for profiling:
//! `cargo run --release -p specwright-bench --example stages [case] [runs] [only]`
//! (run it under `perf record -g` to see where a stage goes; `only` leaves
//! the serde_json comparison out of the profile).

use std::time::Instant;

use anyhow::Result;
use specwright_bench::{dry_step, oracle_facts, oracle_request};
use specwright_core::Request;
use specwright_host_core::state::StateDir;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let case = args.next().unwrap_or_else(|| "minimal".to_string());
    let runs: u32 = args.next().map_or(Ok(20_000), |n| n.parse())?;
    let serde_too = args.next().as_deref() != Some("only");
    let work = tempfile::tempdir()?;
    let json = oracle_request(&case, work.path())?;
    let facts = oracle_facts()?;
    let state = StateDir::open(&work.path().join("state"))?;

    let mut times = [0f64; 6];
    let mut bytes = 0;
    for _ in 0..runs {
        let t0 = Instant::now();
        let request = Request::from_json(&json)?;
        let t1 = Instant::now();
        let mut step = dry_step(&state, &request)?;
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
        drop((spec, step, request, out, by_serde));
        let t6 = Instant::now();
        for (slot, (a, b)) in times
            .iter_mut()
            .zip([(t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5), (t5, t6)])
        {
            *slot += (b - a).as_secs_f64();
        }
    }
    let per = |s: f64| s / f64::from(runs) * 1e6;
    println!(
        "{case}: parse {:.2} µs, step {:.2} µs, generate {:.2} µs, serialize {:.2} µs ({bytes} bytes; serde_json: {:.2} µs), free {:.2} µs; total {:.2} µs",
        per(times[0]),
        per(times[1]),
        per(times[2]),
        per(times[3]),
        per(times[4]),
        per(times[5]),
        per(times[..4].iter().sum::<f64>() + times[5])
    );
    Ok(())
}
