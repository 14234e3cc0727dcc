//! Does the privileged half of a test inside a private mount namespace and
//! reports what happened as JSON on standard output.
//!
//! - `sw-testhelper cli ARGS...`: the specwright command line itself.
//! - `sw-testhelper oracle CASES_DIR NAME WORKDIR`: one oracle case with
//!   real directories and mounts under WORKDIR.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use specwright::policy::{Limits, PolicyRuntime};
use specwright::state::StateDir;
use specwright::step::release_step;
use specwright::sys::{RealSyscalls, Syscalls};
use specwright_core::HostFacts;
use specwright_tests::{make_oracle_source_tree, mounts_below};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("cli") => std::process::exit(specwright::cli::main_with_args(
            std::iter::once("specwright".to_string()).chain(args[2..].iter().cloned()),
        )),
        Some("oracle") if args.len() == 5 => {
            match oracle_case(Path::new(&args[2]), &args[3], Path::new(&args[4])) {
                Ok(report) => println!("{report}"),
                Err(e) => {
                    eprintln!("sw-testhelper: {e:#}");
                    std::process::exit(2);
                }
            }
        }
        _ => {
            eprintln!("usage: sw-testhelper cli ARGS... | oracle CASES_DIR NAME WORKDIR");
            std::process::exit(2);
        }
    }
}

/// Highest n of `<PREFIXn>` in `text`, plus one.
fn placeholder_count(text: &str, prefix: &str) -> usize {
    let mut count = 0;
    for (i, _) in text.match_indices(&format!("<{prefix}")) {
        let digits: String = text[i + prefix.len() + 1..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if let Ok(n) = digits.parse::<usize>() {
            count = count.max(n + 1);
        }
    }
    count
}

fn oracle_case(cases: &Path, name: &str, work: &Path) -> Result<Value> {
    let read = |suffix: &str| -> Result<String> {
        let path = cases.join(format!("{name}.{suffix}.json"));
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    };
    let mut request = read("request")?;
    let facts: HostFacts = serde_json::from_str(&read("host")?).context("host facts")?;
    let work = std::fs::canonicalize(work)?;

    // Real paths and their placeholders; fixed-width names so no path is a
    // prefix of another.
    let mut placeholders: Vec<(String, String)> = Vec::new();
    for n in 0..placeholder_count(&request, "SRC") {
        let dir = work.join(format!("src{n:03}"));
        make_oracle_source_tree(&dir)?;
        placeholders.push((dir.display().to_string(), format!("<SRC{n}>")));
    }
    for n in 0..placeholder_count(&request, "EMPTY") {
        let dir = work.join(format!("empty{n:03}"));
        std::fs::create_dir_all(&dir)?;
        placeholders.push((dir.display().to_string(), format!("<EMPTY{n}>")));
    }
    for (real, placeholder) in &placeholders {
        request = request.replace(placeholder, real);
    }

    let state_root = work.join("state");
    let state = StateDir::open(&state_root)?;
    let mounts_root = state.mounts_dir();
    let sys: Arc<dyn Syscalls> = Arc::new(RealSyscalls);
    let runtime = PolicyRuntime::new(Limits::default())?;
    let chain = vec![runtime.load_default()?];
    let outcome = specwright::generate_spec(
        &runtime,
        &chain,
        &request,
        &facts,
        state.clone(),
        sys.clone(),
    );
    let mounts_during = mounts_below(&mounts_root)?.len();

    let (spec, error, id) = match outcome {
        Ok(outcome) => (Some(outcome.spec), None, outcome.request.id),
        Err(e) => (None, Some(format!("{e}")), String::new()),
    };
    let mapped = match &spec {
        Some(spec) => Some(map_back(spec, &mounts_root, &placeholders)?),
        None => None,
    };
    if !id.is_empty() {
        release_step(&state, sys.as_ref(), &id)?;
        // Released twice: must be a no-op.
        release_step(&state, sys.as_ref(), &id)?;
    }
    let mounts_after = mounts_below(&mounts_root)?.len();
    let leftover: Vec<String> = std::fs::read_dir(&mounts_root)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    let records: Vec<String> = std::fs::read_dir(state_root.join("steps"))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    Ok(json!({
        "spec": mapped,
        "error": error,
        "mounts_during": mounts_during,
        "mounts_after": mounts_after,
        "leftover_mountpoints": leftover,
        "leftover_records": records,
    }))
}

/// Replaces real paths in the spec by the oracle's placeholders; temporary
/// mountpoints become `<LOCALMOUNTn>` in order of first appearance.
fn map_back(spec: &Value, mounts_root: &Path, placeholders: &[(String, String)]) -> Result<Value> {
    let mut local: Vec<(String, String)> = Vec::new();
    let prefix = format!("{}/", mounts_root.display());
    for m in spec["mounts"].as_array().into_iter().flatten() {
        let Some(source) = m["source"].as_str() else {
            continue;
        };
        if let Some(rest) = source.strip_prefix(&prefix) {
            let dir = rest.split('/').next().unwrap_or_default();
            let real = format!("{prefix}{dir}");
            if !local.iter().any(|(r, _)| *r == real) {
                let n = local.len();
                local.push((real, format!("<LOCALMOUNT{n}>")));
            }
        }
    }
    let mut text = serde_json::to_string(spec)?;
    // Longest real paths first, so nested ones are not half-replaced.
    let mut all: Vec<&(String, String)> = local.iter().chain(placeholders.iter()).collect();
    all.sort_by_key(|(real, _)| std::cmp::Reverse(real.len()));
    for (real, placeholder) in all {
        text = text.replace(real.as_str(), placeholder);
    }
    if text.contains(mounts_root.to_string_lossy().as_ref()) {
        bail!("a state-dir path was left unmapped: {text}");
    }
    Ok(serde_json::from_str(&text)?)
}
