//! The default policy run with a fresh instance per step, in a loop, for
//! profiling: `cargo run --release -p specwright-bench --example fresh [case] [runs] [threads] [shared]`
//! (each thread runs `runs` steps on a runtime of its own, or on one
//! runtime they share with `shared`; `SPECWRIGHT_PERF_MAP=1` names the
//! policy's functions for `perf report`).

use std::sync::Barrier;
use std::time::Instant;

use anyhow::Result;
use specwright::{Engine, Limits, LoadedPolicy};
use specwright_bench::{dry_step, oracle_facts, oracle_request};
use specwright_core::Request;
use specwright_host_core::state::StateDir;

fn main() -> Result<()> {
    if std::env::var_os("SPECWRIGHT_PERF_MAP").is_some() {
        specwright::write_perf_map();
    }
    let mut args = std::env::args().skip(1);
    let case = args.next().unwrap_or_else(|| "minimal".to_string());
    let runs: u32 = args.next().map_or(Ok(20_000), |n| n.parse())?;
    let threads: u32 = args.next().map_or(Ok(1), |n| n.parse())?;
    let shared = args.next().as_deref() == Some("shared");
    let work = tempfile::tempdir()?;
    let json = oracle_request(&case, work.path())?;
    let facts = oracle_facts()?;
    let state = StateDir::open(&work.path().join("state"))?;
    let runtime = Engine::pooled(Limits::default(), 16)?;
    let policy = runtime.load_default()?;
    // Each worker's runtime is made before any thread starts, so that a
    // failure stops the example instead of leaving the others waiting.
    let own = (0..threads)
        .map(|_| {
            if shared {
                return Ok(None);
            }
            let mine = runtime.for_worker()?;
            let adopted = mine.adopt(&policy)?;
            Ok(Some((mine, adopted)))
        })
        .collect::<Result<Vec<_>>>()?;
    // Workers start timing together.
    let ready = Barrier::new(threads as usize + 1);

    let worker = |own: &Option<(Engine, LoadedPolicy)>| -> Result<()> {
        let (runtime, policy) = own.as_ref().map_or((&runtime, &policy), |(r, p)| (r, p));
        ready.wait();
        for _ in 0..runs {
            let request = Request::from_json(&json)?;
            let (_, spec) = runtime.call(policy, dry_step(&state, &request)?, &json, &facts, None);
            spec?;
        }
        Ok(())
    };
    let mut start = Instant::now();
    std::thread::scope(|scope| {
        let workers: Vec<_> = own.iter().map(|own| scope.spawn(move || worker(own))).collect();
        ready.wait();
        start = Instant::now();
        workers
            .into_iter()
            .try_for_each(|w| w.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a worker panicked"))))
    })?;
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "{case}: fresh instance {:.2} µs a step, {:.0} steps/s on {threads} thread(s){}",
        elapsed / f64::from(runs) * 1e6,
        f64::from(runs * threads) / elapsed,
        if shared {
            ", one shared runtime"
        } else {
            ", a runtime each"
        }
    );
    Ok(())
}
