//! The `specwright` command line; `main.rs` only calls [`main`].

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::oci_runtime::OciRuntime;
use crate::policy::{Engine, Limits, Mode, PolicyArg};
use crate::state::{Owner, DEFAULT_STATE_DIR};
use crate::step::{GcOutcome, Mounting, StepOptions};
use crate::sys::{RealSyscalls, Syscalls};
use crate::Workspace;

mod audit;
mod policy;
mod policy_test;
mod spec;

use policy::policy_command;
use spec::{read_request, spec, SpecArgs};

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
        /// `default` (also `buildkit`) names the embedded default policy
        /// (BuildKit v0.32.2), `buildkit-v0.8` the embedded BuildKit v0.8.1
        /// one. Without any, the default policy runs alone.
        #[arg(long = "policy", value_name = "FILE[:SETTINGS.json]")]
        policies: Vec<String>,
        /// A policy in monitor mode: it runs on the spec the policies
        /// before it made, and what it would deny or change is recorded in
        /// the audit log, never done. In the chain in the order given among
        /// `--policy`.
        #[arg(long = "monitor-policy", value_name = "FILE[:SETTINGS.json]")]
        monitor_policies: Vec<String>,
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
        /// Run the policies against a host that performs nothing; print the
        /// planned operations with the spec.
        #[arg(long)]
        dry_run: bool,
        /// Bind each selector `resolve` found, by file descriptor, onto its
        /// own mountpoint and give the runtime that: a later symlink swap
        /// cannot redirect it (the spec's paths then differ from BuildKit
        /// v0.8.1's). The default policy pins every selector itself.
        #[arg(long)]
        pin_selectors: bool,
        /// A directory of CDI spec files (YAML or JSON) for the step's
        /// `cdi_devices`; repeat for several, later ones taking priority.
        /// Default: /etc/cdi, then /var/run/cdi.
        #[arg(long = "cdi-spec-dir", value_name = "DIR")]
        cdi_spec_dirs: Vec<PathBuf>,
        /// The SELinux container contexts file a step's labels come from.
        /// Default: /usr/share/containers/selinux/contexts, else
        /// /etc/selinux/<SELINUXTYPE>/contexts/lxc_contexts.
        #[arg(long, value_name = "FILE")]
        selinux_contexts: Option<PathBuf>,
        /// The process the step belongs to (default: the caller of
        /// specwright); `gc` releases the step once it is gone.
        #[arg(long, value_name = "PID")]
        owner_pid: Option<u32>,
        /// Time limit of one policy call, in milliseconds.
        #[arg(long, value_name = "MS", default_value_t = Limits::DEFAULT_TIMEOUT_MS)]
        policy_timeout_ms: u64,
        /// Memory limit of one policy instance, in MiB.
        #[arg(long, value_name = "MIB", default_value_t = Limits::DEFAULT_MEMORY_MIB)]
        policy_memory_mib: usize,
        /// Add this step's reviews, verdicts and compile cache use to the
        /// state dir's metrics and write them to FILE (Prometheus' text
        /// format, for node_exporter's textfile collector).
        #[arg(long, value_name = "FILE")]
        metrics_file: Option<PathBuf>,
    },
    /// Run one step under an OCI runtime: prepare a bundle, run the policy
    /// chain, run the container, release everything; exits with the
    /// container's exit code.
    Run {
        #[arg(long = "policy", value_name = "FILE[:SETTINGS.json]")]
        policies: Vec<String>,
        /// A policy in monitor mode (as `spec --monitor-policy`).
        #[arg(long = "monitor-policy", value_name = "FILE[:SETTINGS.json]")]
        monitor_policies: Vec<String>,
        /// The step request (format v1 JSON); `-` reads standard input.
        #[arg(long, value_name = "FILE|-")]
        request: String,
        /// The root filesystem to run in (bound at the bundle's rootfs).
        #[arg(long, value_name = "DIR")]
        rootfs: PathBuf,
        /// `crun`, `runc`, or a path to an OCI runtime.
        #[arg(long, value_name = "crun|runc|PATH", default_value = "crun")]
        runtime: String,
        #[arg(long, value_name = "FILE")]
        host_facts: Option<PathBuf>,
        #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        #[arg(long)]
        pin_selectors: bool,
        /// A directory of CDI spec files (YAML or JSON) for the step's
        /// `cdi_devices`; repeat for several, later ones taking priority.
        /// Default: /etc/cdi, then /var/run/cdi.
        #[arg(long = "cdi-spec-dir", value_name = "DIR")]
        cdi_spec_dirs: Vec<PathBuf>,
        /// The SELinux container contexts file a step's labels come from.
        /// Default: /usr/share/containers/selinux/contexts, else
        /// /etc/selinux/<SELINUXTYPE>/contexts/lxc_contexts.
        #[arg(long, value_name = "FILE")]
        selinux_contexts: Option<PathBuf>,
        #[arg(long, value_name = "MS", default_value_t = Limits::DEFAULT_TIMEOUT_MS)]
        policy_timeout_ms: u64,
        #[arg(long, value_name = "MIB", default_value_t = Limits::DEFAULT_MEMORY_MIB)]
        policy_memory_mib: usize,
        /// As `spec --metrics-file`.
        #[arg(long, value_name = "FILE")]
        metrics_file: Option<PathBuf>,
    },
    /// Unmount and remove everything `spec` made for step ID.
    Release {
        #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        id: String,
    },
    /// Release every step whose owner process is gone.
    Gc {
        #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
    /// Sum up the decision log: reviews, and each policy's verdicts by
    /// mode (in monitor mode, what it would have done).
    Audit {
        #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// The audit log to read (default: the state dir's audit.jsonl).
        #[arg(long, value_name = "FILE")]
        log: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Work with policy components.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Precompile policies into the state dir's cache, so steps do not
    /// compile them (`default` names the embedded policy).
    Compile {
        #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Run a policy on test cases in CASES_DIR: NAME.request.json (a build
    /// step, run through the default policy and then this one) or
    /// NAME.engine.json (an engine's config.json, reviewed as
    /// specwright-runc reviews it), each with NAME.expected.json
    /// ({"denied": "TEXT"} or {"spec": {...}}); optional NAME.host.json.
    /// One line a case, then "N passed, M failed"; exit code 1 on any
    /// failure.
    Test {
        /// The policy, `FILE[:SETTINGS.json]`.
        #[arg(value_name = "POLICY[:SETTINGS.json]")]
        policy: String,
        #[arg(value_name = "CASES_DIR")]
        cases: PathBuf,
        /// Keep the compiled policy in this state dir's compile cache (a
        /// Python or JavaScript policy compiles for seconds); without it
        /// nothing is written.
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        #[arg(long, value_name = "MS", default_value_t = Limits::DEFAULT_TIMEOUT_MS)]
        policy_timeout_ms: u64,
        #[arg(long, value_name = "MIB", default_value_t = Limits::DEFAULT_MEMORY_MIB)]
        policy_memory_mib: usize,
    },
    /// Push a policy component to an OCI registry, as a CNCF Wasm OCI
    /// artifact (what wkg and wasm-pkg-tools read).
    Push {
        #[command(flatten)]
        registry: RegistryArgs,
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// oci://HOST[:PORT]/REPO:TAG
        #[arg(value_name = "REFERENCE")]
        reference: String,
    },
    /// Pull a policy from an OCI registry into the state dir, where
    /// `--policy oci://...` and runtime.toml find it (a container start
    /// never touches the network).
    Pull {
        #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        #[command(flatten)]
        registry: RegistryArgs,
        /// oci://HOST[:PORT]/REPO:TAG or oci://HOST[:PORT]/REPO@sha256:DIGEST
        #[arg(value_name = "REFERENCE")]
        reference: String,
    },
    /// Show a policy's world and version, imports, exports, size and metadata.
    Inspect {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// How to reach a registry (`policy push`, `policy pull`).
#[derive(clap::Args)]
struct RegistryArgs {
    /// The user to log in as; the password is read from standard input
    /// (--password-stdin). Without it: the container tools' auth files
    /// ($REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json,
    /// ~/.config/containers/auth.json, ~/.docker/config.json).
    #[arg(long, value_name = "USER", requires = "password_stdin")]
    username: Option<String>,
    /// Read the password for --username from standard input.
    #[arg(long, requires = "username")]
    password_stdin: bool,
    /// PEM certificates to trust besides the system's roots.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Speak plain HTTP to the registry (no TLS).
    #[arg(long)]
    plain_http: bool,
}

impl RegistryArgs {
    fn connection(self) -> Result<crate::registry::Connection> {
        let credentials = match self.username {
            Some(username) => {
                let mut password = String::new();
                std::io::stdin()
                    .take(64 << 10)
                    .read_to_string(&mut password)
                    .context("reading the password from standard input")?;
                let password = password.strip_suffix('\n').unwrap_or(&password);
                let password = password.strip_suffix('\r').unwrap_or(password).to_string();
                if password.is_empty() {
                    bail!("--password-stdin: standard input held no password");
                }
                Some(crate::registry::Credentials { username, password })
            }
            None => None,
        };
        Ok(crate::registry::Connection {
            ca_file: self.ca_file,
            plain_http: self.plain_http,
            credentials,
        })
    }
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
    // Read first: a caller that exits at once leaves us to pid 1 soon.
    let parent = std::os::unix::process::parent_id();
    crate::binary::stop_on_signals();
    crate::tick_policies_by_timer();
    crate::binary::init_tracing();
    if std::env::var_os("SPECWRIGHT_PERF_MAP").is_some() {
        crate::policy::write_perf_map();
    }
    let parsed = Cli::command()
        .try_get_matches_from(args)
        .and_then(|matches| Ok((Cli::from_arg_matches(&matches)?, chain_of(&matches))));
    let (cli, chain) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    match run(cli, chain, parent) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("specwright: {e:#}");
            match crate::interrupt::requested() {
                Some(signal) => 128 + signal,
                None => 1,
            }
        }
    }
}

/// The chain `--policy` and `--monitor-policy` name, in the order given
/// (clap keeps each flag's values apart; their indices say the order).
fn chain_of(matches: &clap::ArgMatches) -> Vec<PolicyArg> {
    let Some((_, sub)) = matches.subcommand() else {
        return Vec::new();
    };
    let mut chain: Vec<(usize, PolicyArg)> = Vec::new();
    for (id, mode) in [("policies", Mode::Enforce), ("monitor_policies", Mode::Monitor)] {
        let Ok(Some(values)) = sub.try_get_many::<String>(id) else {
            continue;
        };
        let Some(indices) = sub.indices_of(id) else {
            continue;
        };
        chain.extend(indices.zip(values).map(|(i, arg)| {
            (
                i,
                PolicyArg {
                    mode,
                    ..PolicyArg::enforced(arg.clone())
                },
            )
        }));
    }
    chain.sort_by_key(|(i, _)| *i);
    chain.into_iter().map(|(_, arg)| arg).collect()
}

/// Counts a review whose chain did not load as failed, and writes the
/// metrics to `textfile`, if one is named.
fn count_unloaded_chain(workspace: &Workspace, textfile: Option<&Path>) {
    if textfile.is_some() {
        workspace.count_chain_not_loaded();
        write_metrics(workspace, textfile);
    }
}

/// Writes `workspace`'s metrics to `textfile`, if one is named; a failure
/// is a warning (the metrics never fail a step).
fn write_metrics(workspace: &Workspace, textfile: Option<&Path>) {
    if let Some(textfile) = textfile {
        if let Err(e) = workspace.write_metrics(textfile) {
            eprintln!("specwright: warning: writing the metrics: {e:#}");
        }
    }
}

/// The workspace at `dir`, its operations performed by `sys`.
fn open_workspace(dir: &Path, sys: Arc<dyn Syscalls>) -> Result<Workspace> {
    Workspace::open_with(dir, sys).with_context(|| format!("state dir {}", dir.display()))
}

/// Who owns a step `spec` makes: `--owner-pid`, or the caller. A caller
/// that has already exited (we were handed to pid 1) would leave a step
/// nobody collects, so it must be named.
fn step_owner(owner_pid: Option<u32>, parent: u32) -> Result<Owner> {
    match owner_pid {
        Some(pid) => Ok(Owner::of_pid(pid)),
        None if parent == 1 => bail!(
            "the calling process has exited (specwright's parent is pid 1): nothing would own the step; pass --owner-pid"
        ),
        None => Ok(Owner::of_pid(parent)),
    }
}

/// The CDI spec directories given, or CDI's defaults.
fn cdi_dirs(given: Vec<PathBuf>) -> Arc<Vec<PathBuf>> {
    if given.is_empty() {
        StepOptions::default().cdi_spec_dirs
    } else {
        Arc::new(given)
    }
}

fn run(cli: Cli, chain: Vec<PolicyArg>, parent: u32) -> Result<i32> {
    match cli.command {
        Command::Run {
            policies: _,
            monitor_policies: _,
            request,
            rootfs,
            runtime,
            host_facts,
            state_dir,
            pin_selectors,
            cdi_spec_dirs,
            selinux_contexts,
            policy_timeout_ms,
            policy_memory_mib,
            metrics_file,
        } => {
            let limits = Limits::from_flags(Some(policy_timeout_ms), Some(policy_memory_mib))?;
            let oci_runtime = OciRuntime::find(&runtime)?;
            let request = read_request(&request)?;
            let workspace = open_workspace(&state_dir, Arc::new(RealSyscalls))?.with_options(
                crate::binary::step_options(StepOptions {
                    pin_selectors,
                    owner: Owner::this_process(),
                    cdi_spec_dirs: cdi_dirs(cdi_spec_dirs),
                    mounting: Mounting::Host,
                    selinux_contexts,
                    ..StepOptions::default()
                }),
            );
            let cache = workspace.compile_cache()?;
            // Asked while the policies load.
            let declared_version =
                crate::run::probe::DeclaredVersion::start(&RealSyscalls, &oci_runtime, Some(cache.dir()));
            let facts = match &host_facts {
                Some(path) => crate::facts::read_facts_file(path)?,
                None => crate::facts::detect()?,
            };
            let engine = Engine::new(limits)?.with_cache(cache).with_pulled_policies(&workspace);
            let chain = engine
                .load_chain(&chain)
                .inspect_err(|_| count_unloaded_chain(&workspace, metrics_file.as_deref()))?;
            let _holding = crate::interrupt::Holding::start();
            let code = engine.run_declared(
                &chain,
                &workspace,
                &request,
                &facts,
                &rootfs,
                &oci_runtime,
                declared_version,
            );
            write_metrics(&workspace, metrics_file.as_deref());
            Ok(code?)
        }
        Command::Spec {
            policies: _,
            monitor_policies: _,
            request,
            host_facts,
            state_dir,
            bundle,
            dry_run,
            pin_selectors,
            cdi_spec_dirs,
            selinux_contexts,
            owner_pid,
            policy_timeout_ms,
            policy_memory_mib,
            metrics_file,
        } => {
            let limits = Limits::from_flags(Some(policy_timeout_ms), Some(policy_memory_mib))?;
            let owner = step_owner(owner_pid, parent)?;
            spec(SpecArgs {
                policies: chain,
                request,
                host_facts,
                state_dir,
                bundle,
                dry_run,
                options: crate::binary::step_options(StepOptions {
                    pin_selectors,
                    owner,
                    cdi_spec_dirs: cdi_dirs(cdi_spec_dirs),
                    mounting: Mounting::Host,
                    selinux_contexts,
                    ..StepOptions::default()
                }),
                limits,
                metrics_file,
            })
            .map(|()| 0)
        }
        Command::Release { state_dir, id } => {
            if !specwright_core::request::is_valid_id(&id) {
                bail!("{id:?} is not a valid step id");
            }
            let workspace = open_workspace(&state_dir, Arc::new(RealSyscalls))?;
            let report = workspace.release(&id).with_context(|| format!("releasing step {id}"))?;
            for warning in report.warnings() {
                eprintln!("specwright: warning: {warning}");
            }
            Ok(0)
        }
        Command::Policy { command } => policy_command(command),
        Command::Audit { state_dir, log, json } => audit::audit(state_dir, log, json).map(|()| 0),
        Command::Gc { state_dir } => {
            let workspace = open_workspace(&state_dir, Arc::new(RealSyscalls))?;
            let mut failed = 0;
            for outcome in workspace.gc()? {
                match outcome {
                    GcOutcome::Kept { id, owner } => {
                        println!("kept {id}: owner {owner} still runs")
                    }
                    GcOutcome::Held { id, pid } => {
                        println!("skipped {id}: held by pid {pid}, which is working on it")
                    }
                    GcOutcome::Released { id, report } => {
                        println!("released {id}: {} mountpoints", report.released);
                        for warning in report.warnings() {
                            eprintln!("specwright: warning: {warning}");
                        }
                    }
                    GcOutcome::Failed { id, error } => {
                        failed += 1;
                        eprintln!("specwright: {id}: {error}");
                    }
                }
            }
            if failed > 0 {
                bail!("{failed} steps could not be released");
            }
            Ok(0)
        }
    }
}
