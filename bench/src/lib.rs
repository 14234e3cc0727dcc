//! What the benchmark and the profiling examples share: the oracle's cases
//! and facts, and a dry-run step host.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use specwright_core::{HostFacts, Request};
use specwright_host_core::audit::Audit;
use specwright_host_core::state::StateDir;
use specwright_host_core::step::{StepHost, StepOptions};
use specwright_host_core::sys::RecordingSyscalls;

/// `../shared/oracle/cases`, beside the repository.
pub fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/oracle/cases")
}

/// The oracle request `name`, with its `<SRCn>` placeholders pointing at
/// real directories under `work`.
pub fn oracle_request(name: &str, work: &Path) -> Result<String> {
    let mut text = std::fs::read_to_string(cases_dir().join(format!("{name}.request.json")))
        .with_context(|| format!("oracle case {name} (../shared beside the repository)"))?;
    for n in 0..4 {
        let dir = work.join(format!("src{n}"));
        std::fs::create_dir_all(dir.join("sub/dir"))?;
        std::fs::create_dir_all(dir.join("sub/other"))?;
        text = text.replace(&format!("<SRC{n}>"), dir.to_str().unwrap_or_default());
    }
    Ok(text)
}

/// The host facts the oracle was produced with.
pub fn oracle_facts() -> Result<HostFacts> {
    let text = std::fs::read_to_string(cases_dir().join("minimal.host.json"))?;
    Ok(serde_json::from_str(&text)?)
}

/// A step host that records what a policy asks and mounts nothing.
pub fn dry_step(state: &StateDir, request: &Request) -> Result<StepHost> {
    StepHost::new(
        state.clone(),
        Arc::new(RecordingSyscalls::dry_run()),
        Arc::new(Audit::events_only()),
        StepOptions::default(),
        request,
        specwright_host_core::state::StepLock::planned(&request.id),
    )
    .map_err(anyhow::Error::msg)
}
