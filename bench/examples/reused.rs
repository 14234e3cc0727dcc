//! One kept instance of the default policy running steps in a loop, for
//! instruction counts: `valgrind --tool=callgrind reused [case] [runs]
//! [cache dir]` (wasmtime's pooling allocator does not run under valgrind;
//! this runtime allocates on demand, and loads the compiled policy from
//! the cache dir, which the first run under valgrind fills).
use anyhow::Result;
use specwright::{Engine, Limits};
use specwright_bench::{dry_step, oracle_facts, oracle_request};
use specwright_core::Request;
use specwright_host_core::state::StateDir;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let case = args.next().unwrap_or_else(|| "minimal".to_string());
    let runs: u32 = args.next().map_or(Ok(10), |n| n.parse())?;
    let cache = std::path::PathBuf::from(args.next().unwrap_or_else(|| "/tmp/wasmcache".into()));
    let work = tempfile::tempdir()?;
    let json = oracle_request(&case, work.path())?;
    let facts = oracle_facts()?;
    let state = StateDir::open(&work.path().join("state"))?;
    let runtime = Engine::new(Limits::default())?.with_cache(specwright::Workspace::open(&cache)?.compile_cache()?);
    let policy = runtime.load_default()?;
    let request = Request::from_json(&json)?;
    let mut reused = runtime.reused_instance(&policy, dry_step(&state, &request)?)?;
    for _ in 0..runs {
        reused.generate(dry_step(&state, &request)?, &json, &facts, "")?;
    }
    Ok(())
}
