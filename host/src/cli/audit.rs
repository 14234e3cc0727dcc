//! `specwright audit`: a decision log summed up by policy and mode.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::audit::{Mode, Summary};

pub(super) fn audit(state_dir: PathBuf, log: Option<PathBuf>, json: bool) -> Result<()> {
    let path = log.unwrap_or_else(|| state_dir.join("audit.jsonl"));
    let file = std::fs::File::open(&path).with_context(|| format!("audit log {}", path.display()))?;
    let summary =
        Summary::read(std::io::BufReader::new(file)).with_context(|| format!("audit log {}", path.display()))?;
    if summary.unreadable > 0 {
        eprintln!(
            "specwright: warning: audit log {}: {} lines are not records, skipped",
            path.display(),
            summary.unreadable
        );
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    println!(
        "{}: {} reviews, {} policy decisions",
        path.display(),
        summary.reviews,
        summary.decisions
    );
    let width = summary
        .policies
        .iter()
        .map(|p| p.policy.len())
        .max()
        .unwrap_or(0)
        .max("POLICY".len());
    println!(
        "{:width$}  {:7}  {:>9}  {:>7}  {:>7}  {:>6}  {:>6}  {:>7}",
        "POLICY", "MODE", "DECISIONS", "ALLOWED", "CHANGED", "DENIED", "FAILED", "MEAN MS"
    );
    for p in &summary.policies {
        let mean_ms = p.total_us as f64 / p.decisions.max(1) as f64 / 1000.0;
        println!(
            "{:width$}  {:7}  {:>9}  {:>7}  {:>7}  {:>6}  {:>6}  {:>7.2}",
            p.policy,
            p.mode.as_str(),
            p.decisions,
            p.allowed,
            p.changed,
            p.denied,
            p.failed,
            mean_ms
        );
    }
    if summary.policies.iter().any(|p| p.mode == Mode::Monitor) {
        println!("(monitor rows count what the policy would have done: its denials and changes were not applied)");
    }
    Ok(())
}
