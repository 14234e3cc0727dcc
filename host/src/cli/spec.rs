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
use crate::sys::{Op, RealSyscalls, RecordingSyscalls};
use crate::{Error, Request, Step};

pub(super) struct SpecArgs {
    pub(super) policies: Vec<String>,
    pub(super) request: String,
    pub(super) host_facts: Option<PathBuf>,
    pub(super) state_dir: PathBuf,
    pub(super) bundle: Option<PathBuf>,
    /// Plan the step through a recording implementation that performs nothing.
    pub(super) dry_run: bool,
    pub(super) options: StepOptions,
    pub(super) limits: Limits,
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

fn op_json(op: &Op) -> serde_json::Value {
    match op {
        Op::CreateDir(p) => json!({"op": "mkdir", "path": p}),
        Op::RemoveDir(p) => json!({"op": "rmdir", "path": p}),
        Op::CreateFile(p) => json!({"op": "create-file", "path": p}),
        Op::RemoveFile(p) => json!({"op": "remove-file", "path": p}),
        Op::Mount {
            source,
            target,
            fstype,
            flags,
            data,
        } => {
            json!({"op": "mount", "source": source, "target": target, "fstype": fstype, "flags": format!("{:?}", nix::mount::MsFlags::from_bits_truncate(*flags)), "data": data})
        }
        Op::Unmount { target, flags } => json!({"op": "umount", "target": target, "flags": flags}),
        Op::DeleteContainer { runtime, id } => json!({"op": "delete-container", "runtime": runtime, "id": id}),
        Op::HasSubmounts(p) => json!({"op": "list-submounts", "path": p}),
        Op::WriteRecord(id) => json!({"op": "write-record", "step": id}),
        Op::RemoveRecord(id) => json!({"op": "remove-record", "step": id}),
        Op::Resolve { root, selector } => json!({"op": "resolve", "root": root, "selector": selector}),
        Op::CanonicalPath(path) => json!({"op": "canonical-path", "path": path}),
        Op::Exists(path) => json!({"op": "exists", "path": path}),
        Op::MountFlags(path) => json!({"op": "mount-flags", "path": path}),
        Op::ListDir(path) => json!({"op": "list-dir", "path": path}),
        Op::NodeInfo(path) => json!({"op": "stat-node", "path": path}),
        Op::LockStep(id) => json!({"op": "lock-step", "step": id}),
        Op::RemoveLock(id) => json!({"op": "remove-lock", "step": id}),
        Op::ReadRecord(id) => json!({"op": "read-record", "step": id}),
        Op::ListSteps => json!({"op": "list-steps"}),
        Op::HasBundle(id) => json!({"op": "has-bundle", "step": id}),
        Op::CreateBundle(id) => json!({"op": "create-bundle", "step": id}),
        Op::WriteBundleFile(p) => json!({"op": "write-bundle-file", "path": p}),
        Op::RemoveBundle(id) => json!({"op": "remove-bundle", "step": id}),
        Op::OpenGivenBundle(p) => json!({"op": "open-bundle", "path": p}),
        Op::RemoveGivenBundle(p) => json!({"op": "remove-bundle-dirs", "path": p}),
        Op::OpenEngineBundle(p) => json!({"op": "open-engine-bundle", "path": p}),
        Op::CheckTrustedDir(p) => json!({"op": "check-trusted-dir", "path": p}),
        Op::CheckFixedPath(p) => json!({"op": "check-fixed-path", "path": p}),
        Op::ReadEngineConfig(p) => json!({"op": "read-engine-config", "path": p}),
        Op::ReadReviewed(key) => json!({"op": "read-reviewed", "key": key}),
        Op::WriteReviewed(key) => json!({"op": "write-reviewed", "key": key}),
        Op::RemoveReviewed(key) => json!({"op": "remove-reviewed", "key": key}),
        Op::ListReviewed => json!({"op": "list-reviewed"}),
        Op::ReadInRoot { root, path } => json!({"op": "read-in-root", "root": root, "path": path}),
        Op::OpenStateDir(p) => json!({"op": "open-state-dir", "path": p}),
        Op::OpenAuditLog => json!({"op": "open-audit-log"}),
        Op::OpenCacheDir => json!({"op": "open-cache-dir"}),
        Op::ReadHostFile(p) => json!({"op": "read-host-file", "path": p}),
        Op::IsDirectory(p) => json!({"op": "is-directory", "path": p}),
        Op::Random => json!({"op": "random"}),
        Op::ReserveMcsLevel(level) => json!({"op": "reserve-mcs-level", "level": level}),
        Op::ReleaseMcsLevel(level) => json!({"op": "release-mcs-level", "level": level}),
    }
}

pub(super) fn spec(args: SpecArgs) -> Result<()> {
    crate::validate::prepare_in_background();
    let request = Request::from_json(&read_request(&args.request)?).map_err(Error::Request)?;
    let facts = match &args.host_facts {
        Some(path) => crate::facts::read_facts_file(path)?,
        None => crate::facts::detect()?,
    };
    if args.dry_run {
        return plan(&args, &request, &facts);
    }
    let workspace = open_workspace(&args.state_dir, Arc::new(RealSyscalls))?.with_options(args.options.clone());
    let engine = Engine::new(args.limits)?.with_cache(&workspace.cache_dir()?)?;
    let chain = engine.load_chain(&args.policies)?;
    let _holding = crate::interrupt::Holding::start();
    let step = engine.prepare(&chain, &workspace, &request, &facts)?;
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
    let engine = Engine::new(args.limits)?;
    let chain = engine.load_chain(&args.policies)?;
    let recorder = Arc::new(RecordingSyscalls::dry_run());
    let workspace = open_workspace(&args.state_dir, recorder.clone())?.with_options(args.options.clone());
    let step = engine.prepare(&chain, &workspace, request, facts)?;
    let operations: Vec<_> = recorder.ops().iter().map(op_json).collect();
    let plan = json!({"spec": step.spec(), "operations": operations});
    step.keep();
    println!("{}", serde_json::to_string_pretty(&plan).context("encoding the plan")?);
    Ok(())
}
