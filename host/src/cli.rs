//! The `specwright` command line; `main.rs` only calls [`main`].

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::policy::{Limits, PolicyRuntime};
use crate::state::{StateDir, DEFAULT_STATE_DIR};
use crate::step::release_step;
use crate::sys::{RealSyscalls, Syscalls};
use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "specwright",
    version,
    about = "Build-step requests in, OCI runtime specs out, through sandboxed WebAssembly policies."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the policy chain for one step and write its config.json.
    Spec {
        /// A policy component, `FILE[:SETTINGS.json]`; repeat for a chain.
        /// `default` names the embedded default policy. Without any, the
        /// default policy runs alone.
        #[arg(long = "policy", value_name = "FILE[:SETTINGS.json]")]
        policies: Vec<String>,
        /// The step request (format v1 JSON); `-` reads standard input.
        #[arg(long, value_name = "FILE|-", default_value = "-")]
        request: String,
        /// Host facts to use instead of detecting them (for reproducible output).
        #[arg(long, value_name = "FILE")]
        host_facts: Option<PathBuf>,
        #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// Write config.json into this directory instead of standard output.
        #[arg(long, value_name = "DIR")]
        bundle: Option<PathBuf>,
        /// Time limit of one policy call, in milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 1000)]
        policy_timeout_ms: u64,
        /// Memory limit of one policy instance, in MiB.
        #[arg(long, value_name = "MIB", default_value_t = 64)]
        policy_memory_mib: usize,
    },
    /// Unmount and remove everything `spec` made for step ID.
    Release {
        #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        id: String,
    },
}

/// Runs the command line with the process's arguments; returns the exit code.
pub fn main() -> i32 {
    main_with_args(std::env::args_os())
}

/// Runs the command line with `args` (the first is the program name).
pub fn main_with_args<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    match run(cli) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("specwright: {e:#}");
            1
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Spec {
            policies,
            request,
            host_facts,
            state_dir,
            bundle,
            policy_timeout_ms,
            policy_memory_mib,
        } => spec(SpecArgs {
            policies,
            request,
            host_facts,
            state_dir,
            bundle,
            limits: Limits {
                time: Duration::from_millis(policy_timeout_ms),
                memory_bytes: policy_memory_mib << 20,
            },
        }),
        Command::Release { state_dir, id } => {
            if !specwright_core::request::is_valid_id(&id) {
                bail!("{id:?} is not a valid step id");
            }
            let state = StateDir::open(&state_dir)
                .with_context(|| format!("state dir {}", state_dir.display()))?;
            release_step(&state, &RealSyscalls, &id)
                .with_context(|| format!("releasing step {id}"))?;
            Ok(())
        }
    }
}

struct SpecArgs {
    policies: Vec<String>,
    request: String,
    host_facts: Option<PathBuf>,
    state_dir: PathBuf,
    bundle: Option<PathBuf>,
    limits: Limits,
}

fn read_request(arg: &str) -> Result<String> {
    if arg == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the request from standard input")?;
        return Ok(text);
    }
    std::fs::read_to_string(arg).with_context(|| format!("reading request file {arg}"))
}

fn spec(args: SpecArgs) -> Result<()> {
    let request = read_request(&args.request)?;
    let facts = match &args.host_facts {
        Some(path) => crate::facts::read_facts_file(path)?,
        None => crate::facts::detect()?,
    };
    let runtime = PolicyRuntime::new(args.limits)?;
    let chain = if args.policies.is_empty() {
        vec![runtime.load_default()?]
    } else {
        args.policies
            .iter()
            .map(|p| runtime.load_spec(p))
            .collect::<Result<Vec<_>, _>>()?
    };
    if let Some(bundle) = &args.bundle {
        std::fs::create_dir_all(bundle)
            .with_context(|| format!("creating bundle dir {}", bundle.display()))?;
    }
    let state = StateDir::open(&args.state_dir)
        .with_context(|| format!("state dir {}", args.state_dir.display()))?;
    let sys: Arc<dyn Syscalls> = Arc::new(RealSyscalls);
    let outcome = crate::generate_spec(
        &runtime,
        &chain,
        &request,
        &facts,
        state.clone(),
        sys.clone(),
    )?;
    let mut text = serde_json::to_string_pretty(&outcome.spec).context("encoding the spec")?;
    text.push('\n');
    let written = match &args.bundle {
        Some(bundle) => write_atomically(&bundle.join("config.json"), text.as_bytes()),
        None => std::io::stdout()
            .write_all(text.as_bytes())
            .context("writing the spec to standard output"),
    };
    if let Err(e) = written {
        if let Err(release) = release_step(&state, sys.as_ref(), &outcome.request.id) {
            return Err(e.context(format!(
                "releasing the step's mounts also failed: {release}"
            )));
        }
        return Err(e);
    }
    Ok(())
}

/// Writes `path` through a temporary file and a rename: never half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    let result = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|_| f.sync_all()))
        .and_then(|_| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}
