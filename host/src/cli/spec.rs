//! `specwright spec`: one step's config.json, to standard output or into
//! a bundle directory, with the step's mounts kept until `release`.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::open_workspace;
use crate::policy::{Engine, Limits};
use crate::step::StepOptions;
use crate::sys::{RealSyscalls, RecordingSyscalls};
use crate::{Error, Request, Step};

pub(super) struct SpecArgs {
    pub(super) policies: Vec<crate::policy::PolicyArg>,
    pub(super) request: String,
    pub(super) host_facts: Option<PathBuf>,
    pub(super) state_dir: PathBuf,
    pub(super) bundle: Option<PathBuf>,
    /// Plan the step through a recording implementation that performs nothing.
    pub(super) dry_run: bool,
    pub(super) options: StepOptions,
    pub(super) limits: Limits,
    pub(super) metrics_file: Option<PathBuf>,
}

pub(super) fn read_request(arg: &str) -> Result<String> {
    let max = specwright_core::request::MAX_REQUEST_BYTES;
    let bounded = |reader: &mut dyn Read, what: &str| -> Result<String> {
        let bytes = match crate::input::read_to_bound(reader, max as u64) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                bail!("{what}: more than the {max} bytes a request may have")
            }
            Err(e) => return Err(e).with_context(|| format!("reading {what}")),
        };
        String::from_utf8(bytes).with_context(|| format!("{what}: not UTF-8"))
    };
    if arg == "-" {
        return bounded(&mut std::io::stdin(), "the request from standard input");
    }
    let mut file = std::fs::File::open(arg).with_context(|| format!("reading request file {arg}"))?;
    bounded(&mut file, &format!("request file {arg}"))
}

pub(super) fn spec(args: SpecArgs) -> Result<()> {
    let request = Request::from_json(&read_request(&args.request)?).map_err(Error::Request)?;
    let facts = match &args.host_facts {
        Some(path) => crate::facts::read_facts_file(path)?,
        None => crate::facts::detect()?,
    };
    if args.dry_run {
        return plan(&args, &request, &facts);
    }
    let workspace = open_workspace(&args.state_dir, Arc::new(RealSyscalls))?.with_options(args.options.clone());
    let engine = Engine::new(args.limits)?
        .with_cache(workspace.compile_cache()?)
        .with_pulled_policies(&workspace);
    let chain = engine
        .load_chain(&args.policies)
        .inspect_err(|_| super::count_unloaded_chain(&workspace, args.metrics_file.as_deref()))?;
    let _holding = crate::interrupt::Holding::start();
    let prepared = engine.prepare(&chain, &workspace, &request, &facts);
    super::write_metrics(&workspace, args.metrics_file.as_deref());
    let step = prepared?;
    match write_out(&args, &step) {
        Ok(()) => {
            step.keep();
            Ok(())
        }
        Err(e) => match step.release() {
            Ok(_) => Err(e),
            Err(release) => Err(e.context(format!("releasing the step's mounts also failed: {release}"))),
        },
    }
}

/// config.json into the bundle directory, or to standard output, unless
/// the step was interrupted or its owner exited while it was made.
fn write_out(args: &SpecArgs, step: &Step) -> Result<()> {
    if let Some(signal) = args.options.cancel.requested() {
        bail!("interrupted by {}; released the step", crate::interrupt::name(signal));
    }
    if !args.options.owner.is_alive() {
        bail!(
            "the step's owner, pid {}, exited while the step was made; released it",
            args.options.owner.pid
        );
    }
    match &args.bundle {
        Some(dir) => step
            .write_bundle(dir)
            .map(|_| ())
            .with_context(|| format!("bundle dir {}", dir.display())),
        None => {
            let text = step.config_json()?;
            std::io::stdout()
                .write_all(text.as_bytes())
                .context("writing the spec to standard output")
        }
    }
}

/// `--dry-run`: the step planned through a recording implementation that
/// performs nothing (no state dir, no compile cache, no mount), printed
/// with the operations it would make.
fn plan(args: &SpecArgs, request: &Request, facts: &specwright_core::HostFacts) -> Result<()> {
    let mut engine = Engine::new(args.limits)?;
    // Policies named by registry reference are read from those pulled
    // into the state dir, when there are any (a pull made everything a
    // workspace opens: nothing is created or written).
    let names_pulled = args.policies.iter().any(|p| p.arg.starts_with(crate::oci::SCHEME));
    let opened_before = ["policies", "mounts", "steps", "locks"]
        .iter()
        .all(|d| args.state_dir.join(d).is_dir())
        && args.state_dir.join("audit.jsonl").is_file();
    if names_pulled && opened_before {
        engine = engine.with_pulled_policies(&open_workspace(&args.state_dir, Arc::new(RealSyscalls))?);
    }
    let chain = engine.load_chain(&args.policies)?;
    let recorder = Arc::new(RecordingSyscalls::dry_run());
    let workspace = open_workspace(&args.state_dir, recorder.clone())?.with_options(args.options.clone());
    let step = engine.prepare(&chain, &workspace, request, facts)?;
    let operations = recorder.ops();
    let plan = json!({"spec": step.spec(), "operations": operations});
    step.keep();
    println!("{}", serde_json::to_string_pretty(&plan).context("encoding the plan")?);
    Ok(())
}
