//! `specwright spec`: one step's config.json, to standard output or into
//! a bundle directory, with the step's mounts kept until `release`.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::{load_chain, open_state};
use crate::policy::{Limits, PolicyRuntime};
use crate::state::GivenBundle;
use crate::step::StepOptions;
use crate::sys::{Op, RealSyscalls, RecordingSyscalls, Syscalls};
use crate::{Request, SpecError, StepContext};

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
    let request = Request::from_json(&read_request(&args.request)?).map_err(SpecError::Request)?;
    let facts = match &args.host_facts {
        Some(path) => crate::facts::read_facts_file(path)?,
        None => crate::facts::detect()?,
    };
    if args.dry_run {
        return plan(&args, &request, &facts);
    }
    let (state, audit) = open_state(&args.state_dir)?;
    let runtime = PolicyRuntime::new(args.limits)?.with_cache(&RealSyscalls.open_cache_dir(&state)?)?;
    let chain = load_chain(&runtime, &args.policies)?;
    let ctx = StepContext {
        state,
        sys: Arc::new(RealSyscalls),
        audit,
        options: args.options.clone(),
    };
    // The bundle directory, and any parent of it, this step creates is
    // removed again if it fails.
    let bundle = match &args.bundle {
        Some(dir) => Some(
            ctx.sys
                .open_given_bundle(dir)
                .with_context(|| format!("bundle dir {}", dir.display()))?,
        ),
        None => None,
    };
    let result = spec_into(&args, &runtime, &chain, &request, &facts, &ctx, bundle.as_ref());
    if result.is_err() {
        // Only what this step made: empty directories (the config is
        // written last, and only on success).
        if let Some(bundle) = bundle {
            ctx.sys.remove_given_bundle(bundle);
        }
    }
    result
}

/// `--dry-run`: the step planned through a recording implementation that
/// performs nothing (no state dir, no compile cache, no mount), printed
/// with the operations it would make.
fn plan(args: &SpecArgs, request: &Request, facts: &specwright_core::HostFacts) -> Result<()> {
    let runtime = PolicyRuntime::new(args.limits)?;
    let chain = load_chain(&runtime, &args.policies)?;
    let recorder = Arc::new(RecordingSyscalls::dry_run());
    let state = recorder.open_state_dir(&args.state_dir)?;
    let ctx = StepContext {
        audit: Arc::new(recorder.open_audit(&state)?),
        state,
        sys: recorder.clone(),
        options: args.options.clone(),
    };
    let (spec, _planned) = crate::prepare_step(&runtime, &chain, request, facts, ctx)?;
    let operations: Vec<_> = recorder.ops().iter().map(op_json).collect();
    let plan = json!({"spec": spec, "operations": operations});
    println!("{}", serde_json::to_string_pretty(&plan).context("encoding the plan")?);
    Ok(())
}

fn spec_into(
    args: &SpecArgs,
    runtime: &PolicyRuntime,
    chain: &[crate::policy::LoadedPolicy],
    request: &Request,
    facts: &specwright_core::HostFacts,
    ctx: &StepContext,
    bundle: Option<&GivenBundle>,
) -> Result<()> {
    let (state, sys, audit) = (&ctx.state, &ctx.sys, &ctx.audit);
    let _holding = crate::interrupt::Holding::start();
    let (spec, lock) = crate::prepare_step(runtime, chain, request, facts, ctx.clone())?;
    let written = (|| -> Result<()> {
        if let Some(signal) = crate::interrupt::requested() {
            bail!("interrupted by {}; released the step", crate::interrupt::name(signal));
        }
        if !args.options.owner.is_alive() {
            bail!(
                "the step's owner, pid {}, exited while the step was made; released it",
                args.options.owner.pid
            );
        }
        let text = crate::validate::pretty(&spec).context("encoding the spec")?;
        match bundle {
            Some(bundle) => sys
                .write_config(bundle, text.as_bytes())
                .map(|_| ())
                .with_context(|| format!("writing {}", bundle.path().join("config.json").display())),
            None => std::io::stdout()
                .write_all(text.as_bytes())
                .context("writing the spec to standard output"),
        }
    })();
    if let Err(e) = written {
        if let Err(release) = crate::step::release_locked(state, sys.as_ref(), audit, lock) {
            return Err(e.context(format!("releasing the step's mounts also failed: {release}")));
        }
        return Err(e);
    }
    Ok(())
}
