//! The floor of a reviewed `create` in this design (a review in a process
//! of its own, no daemon): a process that loads one policy from the
//! compile cache and reviews one config.json with it, and does nothing
//! else (no routing, no checks of the host's paths, nothing written but
//! the audit record): `bench-review-floor STATE_DIR POLICY CONFIG_JSON`.

use std::path::Path;

use anyhow::{bail, Context, Result};
use specwright::{Engine, HostFacts, Limits, Workspace};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [state, policy, config] = &args[..] else {
        bail!("usage: bench-review-floor STATE_DIR POLICY CONFIG_JSON");
    };
    let workspace = Workspace::open(Path::new(state))?;
    let engine = Engine::new(Limits::default())?.with_cache(workspace.compile_cache()?);
    let chain = engine.load_trusted_chain(std::slice::from_ref(policy))?;
    let text = std::fs::read_to_string(config).with_context(|| config.clone())?;
    engine.review(&chain, &workspace, "floor", &text, &HostFacts::default())?;
    Ok(())
}
