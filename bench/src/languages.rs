//! `env-guard` in Rust, Python and JavaScript: one step through each with a
//! fresh instance, side by side; their sizes; and what the compile cache
//! saves (a load that compiles beside one from the cache).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use specwright::{Engine, Limits};
use specwright_bench::dry_step;
use specwright_core::{HostFacts, Request};
use specwright_host_core::state::StateDir;

use crate::measure::{fmt_time, measure_together, timed, Figure};

/// The Rust twin, built by `build.rs`.
pub const ENV_GUARD_RUST: &str = env!("SPECWRIGHT_ENV_GUARD_WASM");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(command: &mut Command) -> Result<()> {
    let out = command.output().with_context(|| format!("{command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The Python and JavaScript env-guards, built from source into `work`
/// with the toolchains `scripts/setup` installs.
fn build(work: &Path) -> Result<[PathBuf; 2]> {
    let wit = root().join("wit");
    let python = work.join("env_guard_py.wasm");
    run(Command::new("componentize-py")
        .arg("-d")
        .arg(&wit)
        .args(["-w", "policy", "componentize", "-p"])
        .arg(root().join("guest/python/env-guard"))
        .arg("env_guard")
        .arg("-o")
        .arg(&python)
        .current_dir(work))
    .context("componentize-py (scripts/setup installs it)")?;
    let js = work.join("env_guard_js.wasm");
    run(
        Command::new(root().join("toolchains/js/node_modules/.bin/componentize-js"))
            .arg("--wit")
            .arg(&wit)
            .args(["--world-name", "policy", "-o"])
            .arg(&js)
            .arg(root().join("guest/js/env-guard/env_guard.js")),
    )
    .context("componentize-js (scripts/setup installs it in toolchains/js)")?;
    Ok([python, js])
}

/// One line of the report: a language's component and what its loads cost.
pub struct Language {
    pub name: &'static str,
    pub size_bytes: usize,
    pub compile_seconds: f64,
    pub cached_load_seconds: f64,
}

/// Each language's env-guard alone on `json`, a fresh instance per step,
/// sampled together; then its loads with and without the compile cache.
pub fn languages(
    work: &Path,
    state: &StateDir,
    json: &str,
    facts: &HostFacts,
    per_sample: std::time::Duration,
) -> Result<(Vec<Figure>, Vec<Language>)> {
    let [python, js] = build(work)?;
    let files = [
        ("Rust", PathBuf::from(ENV_GUARD_RUST)),
        ("Python", python),
        ("JavaScript", js),
    ];
    // Instances allocated on demand, as the command line's runtime does.
    let runtime = Engine::new(Limits::default())?;
    let mut policies = Vec::new();
    let mut languages = Vec::new();
    for (name, file) in &files {
        let bytes = std::fs::read(file).with_context(|| file.display().to_string())?;
        // The compile cache's effect: a load into an empty cache, then one
        // from it (a few of each, the median).
        let mut compiles = Vec::new();
        let mut cached = Vec::new();
        for n in 0..3 {
            let cache = specwright::Workspace::open(&work.join(format!("state-{name}-{n}")))?.compile_cache()?;
            let cold = Engine::new(Limits::default())?.with_cache(cache.clone());
            let start = Instant::now();
            cold.load_bytes(name, &bytes, &serde_json::Value::Null)?;
            compiles.push(start.elapsed().as_secs_f64());
            for _ in 0..3 {
                let warm = Engine::new(Limits::default())?.with_cache(cache.clone());
                let start = Instant::now();
                warm.load_bytes(name, &bytes, &serde_json::Value::Null)?;
                cached.push(start.elapsed().as_secs_f64());
            }
        }
        compiles.sort_by(f64::total_cmp);
        cached.sort_by(f64::total_cmp);
        languages.push(Language {
            name,
            size_bytes: bytes.len(),
            compile_seconds: compiles[compiles.len() / 2],
            cached_load_seconds: cached[cached.len() / 2],
        });
        policies.push((name, runtime.load_bytes(name, &bytes, &serde_json::Value::Null)?));
    }
    let request = Request::from_json(json)?;
    let ops = policies
        .iter()
        .map(|(name, policy)| {
            let (runtime, request) = (&runtime, &request);
            timed(
                format!("minimal: env-guard alone in {name}, fresh instance"),
                move || {
                    let step = dry_step(state, request)?;
                    let (_, result) = runtime.call(policy, step, json, facts, None);
                    result.map(drop).map_err(anyhow::Error::from)
                },
            )
        })
        .collect();
    Ok((measure_together(ops, per_sample)?, languages))
}

/// The table of sizes and loads, for BENCHMARKS.md.
pub fn report(languages: &[Language]) -> String {
    let mut out = String::from(
        "\n## Policies by language\n\n`env-guard` built from source in each language (Rust with the SDK, Python with componentize-py, JavaScript with componentize-js). A load that compiles (into an empty compile cache) beside one from the cache, each the median of a few in this run.\n\n| language | component | load, compiling | load, from the cache | saved |\n| --- | --- | --- | --- | --- |\n",
    );
    for l in languages {
        out.push_str(&format!(
            "| {} | {:.2} MB | {} | {} | {:.0}x |\n",
            l.name,
            l.size_bytes as f64 / 1e6,
            fmt_time(l.compile_seconds),
            fmt_time(l.cached_load_seconds),
            l.compile_seconds / l.cached_load_seconds
        ));
    }
    out
}
