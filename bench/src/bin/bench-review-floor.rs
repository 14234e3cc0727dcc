//! The floor of a review in this design (a review in a process of its
//! own, no daemon): a process that loads one policy from the compile cache
//! and runs it once, and does nothing else (no routing, no checks of the
//! host's paths, nothing written but the review's audit record).
//!
//! `bench-review-floor STATE_DIR POLICY CONFIG_JSON` reviews an engine's
//! config.json (what `specwright-runc create` does at least);
//! `bench-review-floor STATE_DIR POLICY --generate REQUEST_JSON FACTS_JSON`
//! has the policy generate a step's spec from a request, against a host
//! that performs nothing (what `specwright spec` does at least).

use std::path::Path;

use anyhow::{bail, Context, Result};
use specwright::{Engine, HostFacts, Limits, Request, Workspace};
use specwright_host_core::state::StateDir;

fn main() -> Result<()> {
    // As the binaries run policies: no ticker thread.
    specwright::tick_policies_by_timer();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let read = |file: &String| std::fs::read_to_string(file).with_context(|| file.clone());
    match &args[..] {
        [state, policy, config] => {
            let workspace = Workspace::open(Path::new(state))?;
            let engine = Engine::new(Limits::default())?.with_cache(workspace.compile_cache()?);
            let chain = engine.load_trusted_chain(&[policy.as_str().into()])?;
            engine.review(&chain, &workspace, "floor", &read(config)?, &HostFacts::default())?;
        }
        [state, policy, flag, request, facts] if flag == "--generate" => {
            let workspace = Workspace::open(Path::new(state))?;
            let engine = Engine::new(Limits::default())?.with_cache(workspace.compile_cache()?);
            let policy = engine.load_arg(policy)?;
            let json = read(request)?;
            let facts: HostFacts = serde_json::from_str(&read(facts)?)?;
            let step = specwright_bench::dry_step(&StateDir::at(Path::new(state)), &Request::from_json(&json)?)?;
            let (_, spec) = engine.call(&policy, step, &json, &facts, None);
            spec?;
        }
        _ => bail!(
            "usage: bench-review-floor STATE_DIR POLICY CONFIG_JSON, or STATE_DIR POLICY --generate REQUEST_JSON FACTS_JSON"
        ),
    }
    Ok(())
}
