//! specwright: build-step requests in, OCI runtime specs out, through
//! sandboxed WebAssembly policies and a small privileged host.
//!
//! Every way in goes through one front door, the [`pipeline`] module:
//! a [`Workspace`] (the state dir, the syscalls, the audit log), an
//! [`Engine`] (the policy sandbox) and the [`Chain`] it loaded.
//!
//! One step, as [`Engine::prepare`] (and `specwright spec`) makes it:
//!
//! 1. the request, parsed once into a [`Request`] (the message of a bad
//!    one names the field);
//! 2. the step taken for this process: its lock and record in the state
//!    dir, through the [`Syscalls`] trait like every other operation;
//! 3. each policy of the [`Chain`] run in a fresh sandboxed instance, the
//!    host performing the mounts it asks for (`StepHost`, in
//!    `specwright-host-core`), its output parsed once and checked against
//!    the runtime-spec schema;
//! 4. the last output kept typed as a [`Spec`], which `run` edits by named
//!    steps (rootfs path, groups, capabilities) and checks once more;
//! 5. config.json written from it once, in runtime-spec's field order;
//! 6. the mounts held until the [`Step`] is released (or dropped), or kept
//!    for `specwright release ID`.
//!
//! Embedded in a build system:
//!
//! ```
//! use specwright::{Chain, Engine, Limits, Request, Workspace};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Engine::new(Limits::default())?;
//! let chain = Chain::new(vec![engine.load_default()?]);
//! let state = tempfile::tempdir()?;
//! let workspace = Workspace::open(state.path())?;
//! let request = Request::from_json(r#"{"id": "doc-step", "args": ["/bin/true"], "env": ["PATH=/bin"]}"#)?;
//! let facts = specwright::detect_host_facts()?;
//!
//! let step = engine.prepare(&chain, &workspace, &request, &facts)?;
//! assert_eq!(step.spec().process.as_ref().map(|p| &p.args[..]), Some(&["/bin/true".to_string()][..]));
//! let bundle = tempfile::tempdir()?;
//! let config = step.write_bundle(bundle.path())?;
//! assert!(config.ends_with("config.json"));
//! let report = step.release()?;
//! assert!(report.busy.is_empty());
//! # Ok(())
//! # }
//! ```

#[cfg(feature = "cli")]
mod binary;
mod cache;
#[cfg(feature = "cli")]
pub mod cli;
mod oci_runtime;
pub mod pipeline;
mod policy;
#[cfg(feature = "cli")]
mod registry;
mod run;
#[cfg(feature = "cli")]
pub mod runc;

// The privileged operations live in their own crate, which builds without
// wasmtime (for the fuzz targets, and for whoever audits them); embedders
// and tests reach its modules there, this crate re-exports what its API
// names.
use specwright_host_core::{audit, input, interrupt, oci, resolve, state, step, sys, validate};
#[cfg(feature = "cli")]
use specwright_host_core::{facts, strict_json};

pub use cache::{CacheError, CompileCache};
pub use oci_runtime::{FindError, OciRuntime};
pub use pipeline::{Chain, Error, Step, Workspace};
pub use policy::ticks::tick_policies_by_timer;
#[cfg(feature = "bench")]
pub use policy::ReusedInstance;
pub use policy::{
    import_use, write_perf_map, Engine, ImportUse, Inspection, Limits, LimitsError, LoadedPolicy, Mode, PolicyArg,
    PolicyFailure, SettingsFile, DEFAULT_POLICY_NAME, DEFAULT_POLICY_WASM, WASI_LINKED, WASI_OUTPUT_BYTES,
    WASI_TRAPPED,
};
pub use run::RunError;
pub use specwright_core::spec::Spec;
pub use specwright_core::{HostFacts, Request};
pub use specwright_host_core::facts::{detect as detect_host_facts, read_facts_file};
pub use specwright_host_core::interrupt::Cancel;
pub use specwright_host_core::state::{Owner, StateError};
pub use specwright_host_core::step::{GcOutcome, Mounting, ReleaseError, ReleaseReport, StepOptions};
pub use specwright_host_core::sys::{Op, RealSyscalls, RecordingSyscalls, Syscalls};
