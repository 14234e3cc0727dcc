//! Policies as WebAssembly components: loading and linking them here,
//! the WIT host in [`host`], one sandboxed call in [`call`].
//!
//! The generated bindings are the only wasm-facing layer; every import is
//! a thin call into [`StepHost`], which checks and performs it.

use std::path::{Path, PathBuf};

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::cache::{CacheUse, CompileCache};
use crate::state::StateDir;
use crate::step::StepHost;
use specwright_core::Request;

mod call;
mod host;
pub mod ticks;
mod wasi;

pub(crate) use call::PolicyFacts;
#[cfg(feature = "bench")]
pub use call::ReusedInstance;
use call::KEEP_RESIDENT_BYTES;
pub use call::{Limits, LimitsError};
use host::PolicyState;
pub use specwright_host_core::audit::Mode;
pub use wasi::{LINKED as WASI_LINKED, OUTPUT_BYTES as WASI_OUTPUT_BYTES, TRAPPED as WASI_TRAPPED};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "policy",
        imports: { default: trappable },
        with: {
            "specwright:policy/host.materialized": super::host::MaterializedRep,
            "specwright:policy/host.mounted-root": super::host::MountedRootRep,
        },
    });
}

/// The default policy (BuildKit v0.32.2), built by `build.rs` and embedded.
pub const DEFAULT_POLICY_WASM: &[u8] = &DEFAULT_POLICY_BYTES;
static DEFAULT_POLICY_BYTES: [u8; include_bytes!(env!("SPECWRIGHT_DEFAULT_POLICY_WASM")).len()] =
    *include_bytes!(env!("SPECWRIGHT_DEFAULT_POLICY_WASM"));

/// The `buildkit-v0.8` policy (BuildKit v0.8.1), built by `build.rs` and embedded.
pub const BUILDKIT_V0_8_POLICY_WASM: &[u8] = &BUILDKIT_V0_8_POLICY_BYTES;
static BUILDKIT_V0_8_POLICY_BYTES: [u8; include_bytes!(env!("SPECWRIGHT_BUILDKIT_V0_8_POLICY_WASM")).len()] =
    *include_bytes!(env!("SPECWRIGHT_BUILDKIT_V0_8_POLICY_WASM"));

/// The SHA-256 of `bytes` when they are an embedded policy's (the very
/// bytes embedded, not a copy): computed by `build.rs`, so that loading
/// the default does not hash it again at every start.
fn embedded_digest(bytes: &[u8]) -> Option<[u8; 32]> {
    const DEFAULT: [u8; 32] = hex_digest(env!("SPECWRIGHT_DEFAULT_POLICY_WASM_SHA256"));
    const BUILDKIT_V0_8: [u8; 32] = hex_digest(env!("SPECWRIGHT_BUILDKIT_V0_8_POLICY_WASM_SHA256"));
    if std::ptr::eq(bytes, DEFAULT_POLICY_WASM) {
        Some(DEFAULT)
    } else if std::ptr::eq(bytes, BUILDKIT_V0_8_POLICY_WASM) {
        Some(BUILDKIT_V0_8)
    } else {
        None
    }
}

/// 64 hex digits as 32 bytes (at compile time: a bad digit fails the build).
const fn hex_digest(hex: &str) -> [u8; 32] {
    const fn digit(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => panic!("not a lowercase hex digit"),
        }
    }
    let hex = hex.as_bytes();
    assert!(hex.len() == 64, "not a SHA-256 in hex");
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = digit(hex[2 * i]) << 4 | digit(hex[2 * i + 1]);
        i += 1;
    }
    out
}

/// The name `--policy default` refers to.
pub const DEFAULT_POLICY_NAME: &str = "default";

/// The embedded policies by the names `--policy` takes: `default` (also
/// `buildkit`) and `buildkit-v0.8`.
pub const EMBEDDED_POLICIES: &[(&str, &[u8])] = &[
    (DEFAULT_POLICY_NAME, DEFAULT_POLICY_WASM),
    ("buildkit", DEFAULT_POLICY_WASM),
    ("buildkit-v0.8", BUILDKIT_V0_8_POLICY_WASM),
];

/// The embedded policy `name` names, if any.
pub fn embedded_policy(name: &Path) -> Option<(&'static str, &'static [u8])> {
    EMBEDDED_POLICIES
        .iter()
        .find(|(embedded, _)| name == Path::new(embedded))
        .copied()
}

/// The WIT package every policy targets.
const WIT_PACKAGE: &str = "specwright:policy";
/// The package version this host implements.
const WIT_VERSION: &str = "0.2.1";
/// The versions a policy may target: 0.2.1 adds `selinux-labels` to 0.2.0,
/// which this host serves unchanged (wasmtime links a 0.2.0 import to the
/// 0.2.1 interface).
const WIT_VERSIONS: &[&str] = &["0.2.0", "0.2.1"];

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyFailure {
    #[error("policy {policy}: {message}")]
    Load { policy: String, message: String },
    #[error("policy {policy}: invalid request: {message}")]
    InvalidRequest { policy: String, message: String },
    #[error("policy {policy} denied the step: {reason}")]
    Denied { policy: String, reason: String },
    #[error("policy {policy}: {message}")]
    Failed { policy: String, message: String },
    /// `output`: what the policy wrote to stderr and stdout, if anything.
    #[error("policy {policy} exceeded its {limit}{output}")]
    Limit {
        policy: String,
        limit: String,
        output: String,
    },
    #[error("policy {policy} was interrupted by {signal}")]
    Interrupted { policy: String, signal: &'static str },
    #[error("policy {policy} trapped: {message}")]
    Trapped { policy: String, message: String },
    #[error("policy {policy} returned an invalid spec: {message}")]
    InvalidSpec { policy: String, message: String },
}

/// A policy ready to run.
pub struct LoadedPolicy {
    pub name: String,
    pub settings: String,
    /// Whether its verdict counts ([`Mode::Enforce`], as loaded) or is
    /// only recorded ([`Mode::Monitor`]).
    pub mode: Mode,
    /// The component's SHA-256, when the host knew it without hashing for
    /// it (through the compile cache, or embedded).
    digest: Option<[u8; 32]>,
    pre: bindings::PolicyPre<PolicyState>,
}

impl LoadedPolicy {
    /// The same policy in `mode`.
    pub fn with_mode(mut self, mode: Mode) -> LoadedPolicy {
        self.mode = mode;
        self
    }

    /// `sha256:<hex>` of the component, when known (the decision log's).
    pub fn digest(&self) -> Option<String> {
        self.digest.map(|d| format!("sha256:{}", crate::cache::hex(&d)))
    }
}

/// Whether runtimes made from now on write `/tmp/perf-<pid>.map`.
static PERF_MAP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes every policy runtime made from now on write `/tmp/perf-<pid>.map`,
/// which names the policies' compiled functions for `perf report`: for a
/// profiling run only (`specwright` with `SPECWRIGHT_PERF_MAP=1`; never
/// specwright-runc, which runs as root with an engine's environment).
pub fn write_perf_map() {
    PERF_MAP.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// The engine and linker every policy runs under.
pub struct Engine {
    engine: wasmtime::Engine,
    limits: Limits,
    /// The instance pool's size, for a pooled runtime.
    pool_slots: Option<u32>,
    cache: Option<CompileCache>,
    /// Where policies pulled from registries (`oci://` references) are
    /// found: a workspace's state dir.
    pulled: Option<crate::Workspace>,
    /// What advances the engine's epoch.
    ticker: ticks::Ticker,
}

/// What `specwright policy inspect` shows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Inspection {
    pub size_bytes: usize,
    /// The WIT package and version the component's host imports target.
    pub targets: Option<String>,
    pub imports: Vec<String>,
    /// What each import gets from this host, in the order of `imports`.
    pub import_uses: Vec<ImportUse>,
    pub exports: Vec<String>,
    pub name: String,
    pub version: String,
    pub description: String,
}

/// What one import of a policy gets from this host.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImportUse {
    pub import: String,
    pub gets: String,
}

/// What `import` gets from this host (see [`wasi::LINKED`]).
pub fn import_use(import: &str) -> ImportUse {
    let gets = if import.starts_with(&format!("{WIT_PACKAGE}/")) {
        "the specwright host's interface".to_string()
    } else if let Some(linked) = wasi::linked(import) {
        linked.gets.to_string()
    } else if wasi::is_trapped(import) {
        "loads, but every function traps: a policy has no network".to_string()
    } else {
        "nothing: a component importing it is refused".to_string()
    };
    ImportUse {
        import: import.to_string(),
        gets,
    }
}

impl Engine {
    /// A runtime that allocates each instance on demand: cheapest to start,
    /// for a process that runs one step (the command line).
    pub fn new(limits: Limits) -> Result<Engine, PolicyFailure> {
        Self::with_config(limits, None)
    }

    /// A runtime for a process that runs many steps: `slots` instances are
    /// preallocated with copy-on-write memory images, so a fresh instance
    /// per step costs a few page-table updates instead of mmap and munmap
    /// (which also serialize threads on the kernel's mm lock).
    pub fn pooled(limits: Limits, slots: u32) -> Result<Engine, PolicyFailure> {
        Self::with_config(limits, Some(slots))
    }

    fn with_config(limits: Limits, pooled: Option<u32>) -> Result<Engine, PolicyFailure> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        // Names the policies' compiled functions for `perf report`.
        if PERF_MAP.load(std::sync::atomic::Ordering::Relaxed) {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        config.wasm_component_model(true);
        config.memory_init_cow(true);
        if let Some(slots) = pooled {
            let mut pooling = PoolingAllocationConfig::default();
            pooling
                .total_component_instances(slots)
                .total_core_instances(slots * 4)
                .total_memories(slots * 2)
                .total_tables(slots * 4)
                .max_memory_size(limits.memory_bytes)
                // A slot is reset by zeroing what a policy typically
                // touches rather than by madvise (BENCHMARKS.md, the note on
                // two threads against one).
                .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
                .table_keep_resident(KEEP_RESIDENT_BYTES / 16);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
        }
        let engine = wasmtime::Engine::new(&config).map_err(|e| PolicyFailure::Load {
            policy: "(engine)".to_string(),
            message: e.to_string(),
        })?;
        let ticker = ticks::start(&engine);
        Ok(Engine {
            engine,
            limits,
            pool_slots: pooled,
            cache: None,
            pulled: None,
            ticker,
        })
    }

    /// A runtime configured like this one (limits, pool size, cache), with
    /// an engine and instance pool of its own: one for each worker thread
    /// of a process that runs steps in parallel. Threads that share a pool
    /// take each other's freshly released slots, whose memory then moves
    /// between the cores' caches at every step (two threads: ~1.5x one
    /// thread's steps sharing a runtime, ~1.85x with a runtime each;
    /// BENCHMARKS.md). Load policies into it with [`Engine::adopt`].
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use specwright::{Chain, Engine, HostFacts, Limits, Request, Workspace};
    /// let engine = Engine::pooled(Limits::default(), 4)?;
    /// let policy = engine.load_default()?;
    /// let state = tempfile::tempdir()?;
    /// let workspace = Workspace::open(state.path())?;
    /// let args = std::thread::scope(|scope| {
    ///     scope
    ///         .spawn(|| -> Result<Vec<String>, specwright::Error> {
    ///             let worker = engine.for_worker()?;
    ///             let chain = Chain::new(vec![worker.adopt(&policy)?]);
    ///             let request = Request::from_json(r#"{"id": "on-a-worker", "args": ["/bin/true"]}"#)
    ///                 .map_err(specwright::Error::Request)?;
    ///             let step = worker.prepare(&chain, &workspace, &request, &HostFacts::example())?;
    ///             Ok(step.spec().process.clone().map(|p| p.args).unwrap_or_default())
    ///         })
    ///         .join()
    ///         .expect("the worker ran")
    /// })?;
    /// assert_eq!(args, ["/bin/true"]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn for_worker(&self) -> Result<Engine, PolicyFailure> {
        let mut worker = Self::with_config(self.limits, self.pool_slots)?;
        worker.cache = self.cache.clone();
        worker.pulled = self.pulled.clone();
        Ok(worker)
    }

    /// `policy`, as another runtime of this process loaded it, made ready
    /// to run here: its compiled code is copied, not compiled again.
    pub fn adopt(&self, policy: &LoadedPolicy) -> Result<LoadedPolicy, PolicyFailure> {
        let load_error = |message: String| PolicyFailure::Load {
            policy: policy.name.clone(),
            message,
        };
        let component = crate::cache::copy_component(policy.pre.instance_pre().component(), &self.engine)
            .map_err(|e| load_error(format!("copying its compiled code to another runtime: {e:#}")))?;
        Ok(self
            .link(&policy.name, &component, policy.settings.clone(), policy.digest)?
            .with_mode(policy.mode))
    }

    /// Keeps precompiled policies in `cache` (a workspace's:
    /// [`Workspace::compile_cache`](crate::Workspace::compile_cache)).
    pub fn with_cache(mut self, cache: CompileCache) -> Engine {
        self.cache = Some(cache);
        self
    }

    /// Finds policies named by registry reference (`oci://HOST/REPO:TAG`,
    /// `oci://HOST/REPO@sha256:...`) among those pulled into
    /// `workspace`'s state dir (`specwright policy pull`); loading one
    /// never touches the network.
    pub fn with_pulled_policies(mut self, workspace: &crate::Workspace) -> Engine {
        self.pulled = Some(workspace.clone());
        self
    }

    /// Loads the embedded default policy (BuildKit v0.32.2's `GenerateSpec`).
    pub fn load_default(&self) -> Result<LoadedPolicy, PolicyFailure> {
        self.load_text_settings(DEFAULT_POLICY_NAME, DEFAULT_POLICY_WASM, String::new())
    }

    /// Whether `policy` was loaded by this engine (or adopted into it).
    pub fn owns(&self, policy: &LoadedPolicy) -> bool {
        wasmtime::Engine::same(policy.pre.instance_pre().component().engine(), &self.engine)
    }

    /// Reads `FILE`, or an embedded policy for its name (`default`,
    /// `buildkit`, `buildkit-v0.8`).
    pub fn read_policy_file(file: &Path) -> Result<(String, std::borrow::Cow<'static, [u8]>), PolicyFailure> {
        if let Some((name, bytes)) = embedded_policy(file) {
            return Ok((name.to_string(), bytes.into()));
        }
        let bytes =
            crate::input::read_bounded(file, crate::input::MAX_POLICY_BYTES).map_err(|e| PolicyFailure::Load {
                policy: file.display().to_string(),
                message: format!("reading {}: {e}", file.display()),
            })?;
        Ok((file.display().to_string(), bytes.into()))
    }

    /// Loads `FILE[:SETTINGS.json]` as `--policy` takes it, or
    /// `default[:SETTINGS.json]` for the embedded policy.
    pub fn load_arg(&self, arg: &str) -> Result<LoadedPolicy, PolicyFailure> {
        self.load_arg_with(arg, false)
    }

    /// [`Self::load_arg`] for files that decide what containers may do
    /// (`specwright-runc`'s chain): the policy and its settings must be
    /// trusted files ([`crate::input::open_trusted`]).
    pub fn load_trusted_arg(&self, arg: &str) -> Result<LoadedPolicy, PolicyFailure> {
        self.load_arg_with(arg, true)
    }

    fn load_arg_with(&self, spec: &str, trusted: bool) -> Result<LoadedPolicy, PolicyFailure> {
        let (file, settings_file) = split_policy_arg(spec, Path::new(""))?;
        self.load_split(file, settings_file, trusted)
    }

    /// `arg` as a chain names it: split as `--policy` is, or, when it
    /// names its settings apart (runtime.toml's table form), taken whole.
    pub(crate) fn load_policy_arg(&self, arg: &PolicyArg, trusted: bool) -> Result<LoadedPolicy, PolicyFailure> {
        let loaded = match &arg.settings {
            SettingsFile::InArg => self.load_arg_with(&arg.arg, trusted),
            SettingsFile::Apart(settings) => {
                self.load_split(PathBuf::from(&arg.arg), settings.as_ref().map(PathBuf::from), trusted)
            }
        };
        Ok(loaded?.with_mode(arg.mode))
    }

    /// The policy `file` (a path, an embedded policy's name or a
    /// registry reference) with the settings in `settings_file`.
    fn load_split(
        &self,
        file: PathBuf,
        settings_file: Option<PathBuf>,
        trusted: bool,
    ) -> Result<LoadedPolicy, PolicyFailure> {
        let read = if trusted {
            crate::input::read_trusted
        } else {
            crate::input::read_bounded
        };
        let settings = match settings_file {
            Some(path) => read(&path, crate::input::MAX_SETTINGS_BYTES)
                .and_then(|bytes| {
                    String::from_utf8(bytes)
                        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"))
                })
                .map_err(|e| PolicyFailure::Load {
                    policy: file.display().to_string(),
                    message: format!("reading settings {}: {e}", path.display()),
                })?,
            None => String::new(),
        };
        if let Some((name, bytes)) = embedded_policy(&file) {
            return self.load_text_settings(name, bytes, settings);
        }
        if let Some(reference) = file.to_str().filter(|f| f.starts_with(crate::oci::SCHEME)) {
            return self.load_pulled(reference, trusted, settings);
        }
        let name = file.display().to_string();
        let reading = |e: std::io::Error| PolicyFailure::Load {
            policy: name.clone(),
            message: format!("reading {name}: {e}"),
        };
        let opened = if trusted {
            crate::input::open_trusted(&file)
        } else {
            std::fs::File::open(&file)
        };
        let (component, digest) = self.compile_file(&name, &opened.map_err(reading)?)?;
        self.link(&name, &component, settings, digest)
    }

    /// The policy pulled for registry reference `text`, named by it; its
    /// component's bytes must still have the digest its manifest names.
    fn load_pulled(&self, text: &str, trusted: bool, settings: String) -> Result<LoadedPolicy, PolicyFailure> {
        let failure = |message: String| PolicyFailure::Load {
            policy: text.to_string(),
            message,
        };
        let reference = crate::oci::Reference::parse(text).map_err(|e| failure(e.to_string()))?;
        let Some(workspace) = &self.pulled else {
            return Err(failure(
                "a registry reference is loaded from a state dir's pulled policies, and there is none here".to_string(),
            ));
        };
        let found = workspace
            .sys
            .pulled_component(&workspace.state, &reference)
            .map_err(|e| failure(format!("reading the pulled policies: {e}")))?;
        let Some((path, layer)) = found else {
            return Err(failure(format!(
                "not pulled into {} (a container start never touches the network): run `specwright policy pull --state-dir {} {reference}` first",
                workspace.state.root().display(),
                workspace.state.root().display()
            )));
        };
        let reading = |e: std::io::Error| failure(format!("reading {}: {e}", path.display()));
        let opened = if trusted {
            crate::input::open_trusted(&path)
        } else {
            std::fs::File::open(&path)
        }
        .map_err(reading)?;
        // Through the cache the digest comes with the component; without
        // one, the very bytes compiled are hashed.
        let compiled = match self.cache {
            Some(_) => self.compile_file(text, &opened)?,
            None => {
                let bytes = crate::input::read_to_bound(&opened, crate::input::MAX_POLICY_BYTES).map_err(reading)?;
                let digest = crate::cache::component_digest(&bytes);
                (self.compile_digested(text, &bytes, Some(digest))?.0, Some(digest))
            }
        };
        let (component, Some(digest)) = compiled else {
            return Err(failure(format!("{} was compiled without its digest", path.display())));
        };
        if crate::cache::hex(&digest) != layer.hex() {
            return Err(failure(format!(
                "{} changed since it was pulled: its digest is no longer {layer}",
                path.display()
            )));
        }
        self.link(text, &component, settings, Some(digest))
    }

    /// The component in `file`, an open policy file named `name`: through
    /// the cache, whose digest memo spares reading and hashing a file it
    /// has seen unchanged ([`CompileCache::load_remembered`]). With the
    /// component, its SHA-256 when there is a cache (none is computed
    /// without).
    fn compile_file(&self, name: &str, file: &std::fs::File) -> Result<(Component, Option<[u8; 32]>), PolicyFailure> {
        let reading = |e: std::io::Error| PolicyFailure::Load {
            policy: name.to_string(),
            message: format!("reading {name}: {e}"),
        };
        let Some(cache) = &self.cache else {
            let bytes = crate::input::read_to_bound(file, crate::input::MAX_POLICY_BYTES).map_err(reading)?;
            return self.compile_digested(name, &bytes, None).map(|(c, _)| (c, None));
        };
        if let Some((component, digest)) = cache.load_remembered(&self.engine, file) {
            return Ok((component, Some(digest)));
        }
        let before = crate::cache::FileIdentity::of(file);
        let bytes = crate::input::read_to_bound(file, crate::input::MAX_POLICY_BYTES).map_err(reading)?;
        let digest = crate::cache::component_digest(&bytes);
        cache.remember(file, before, &digest);
        self.compile_digested(name, &bytes, Some(digest))
            .map(|(c, _)| (c, Some(digest)))
    }

    /// A component from bytes, through the cache when there is one.
    pub fn compile(&self, name: &str, bytes: &[u8]) -> Result<(Component, Option<CacheUse>), PolicyFailure> {
        self.compile_digested(name, bytes, embedded_digest(bytes))
    }

    /// [`Self::compile`] of bytes whose SHA-256 may be known already.
    fn compile_digested(
        &self,
        name: &str,
        bytes: &[u8],
        digest: Option<[u8; 32]>,
    ) -> Result<(Component, Option<CacheUse>), PolicyFailure> {
        let load_error = |message: String| PolicyFailure::Load {
            policy: name.to_string(),
            message,
        };
        if wasmparser_is_core_module(bytes) {
            return Err(load_error(
                "is a core WebAssembly module, not a component (build it for wasm32-wasip2, or wrap it with `wasm-tools component new`)".to_string(),
            ));
        }
        match &self.cache {
            Some(cache) => cache
                .load_digested(
                    &self.engine,
                    bytes,
                    digest.unwrap_or_else(|| crate::cache::component_digest(bytes)),
                )
                .map(|(c, used)| (c, Some(used)))
                .map_err(|e| match e {
                    crate::cache::CacheError::Compile(e) => {
                        load_error(format!("is not a valid WebAssembly component: {e}"))
                    }
                    e => load_error(format!("keeping its compiled code in the compile cache: {e}")),
                }),
            None => Component::new(&self.engine, bytes)
                .map(|c| (c, None))
                .map_err(|e| load_error(format!("is not a valid WebAssembly component: {e:#}"))),
        }
    }

    /// A policy component from `bytes`, called `name` in messages and the
    /// audit log, given `settings` (`Value::Null`: none) on every call.
    /// Compiled (through the cache, when there is one) and linked; every
    /// problem is listed in the error.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use specwright::{Engine, Limits, DEFAULT_POLICY_WASM};
    /// let engine = Engine::new(Limits::default())?;
    /// let policy = engine.load_bytes("mine", DEFAULT_POLICY_WASM, &serde_json::json!({"strict": true}))?;
    /// assert_eq!(policy.name, "mine");
    /// assert_eq!(policy.settings, r#"{"strict":true}"#);
    /// assert!(engine.load_bytes("junk", b"not wasm", &serde_json::Value::Null).is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn load_bytes(
        &self,
        name: &str,
        bytes: &[u8],
        settings: &serde_json::Value,
    ) -> Result<LoadedPolicy, PolicyFailure> {
        let settings = match settings {
            serde_json::Value::Null => String::new(),
            value => value.to_string(),
        };
        self.load_text_settings(name, bytes, settings)
    }

    /// [`Self::load_bytes`] with the settings' text as given (a settings
    /// file's, passed on unchanged).
    fn load_text_settings(&self, name: &str, bytes: &[u8], settings: String) -> Result<LoadedPolicy, PolicyFailure> {
        let digest =
            embedded_digest(bytes).or_else(|| self.cache.as_ref().map(|_| crate::cache::component_digest(bytes)));
        let (component, _) = self.compile_digested(name, bytes, digest)?;
        self.link(name, &component, settings, digest)
    }

    /// A compiled component linked against the host, ready to instantiate.
    fn link(
        &self,
        name: &str,
        component: &Component,
        settings: String,
        digest: Option<[u8; 32]>,
    ) -> Result<LoadedPolicy, PolicyFailure> {
        let load_error = |message: String| PolicyFailure::Load {
            policy: name.to_string(),
            message,
        };
        let linker = self.linker_for(component).map_err(load_error)?;
        let instance_pre = linker
            .instantiate_pre(component)
            .map_err(|e| load_error(format!("does not link against the host: {e:#}")))?;
        let pre = bindings::PolicyPre::new(instance_pre).map_err(|e| {
            load_error(format!(
                "does not export the `{WIT_PACKAGE}/policy@{WIT_VERSION}` world (generate, metadata): {e:#}"
            ))
        })?;
        Ok(LoadedPolicy {
            name: name.to_string(),
            settings,
            mode: Mode::Enforce,
            digest,
            pre,
        })
    }

    /// The names a component imports, as the linker sees them.
    pub fn component_imports(&self, bytes: &[u8]) -> Result<Vec<String>, PolicyFailure> {
        let (component, _) = self.compile("(component)", bytes)?;
        let ty = component.component_type();
        Ok(ty.imports(&self.engine).map(|(name, _)| name.to_string()).collect())
    }

    /// What a policy is: its world, imports, exports, size and metadata.
    pub fn inspect(&self, name: &str, bytes: &[u8]) -> Result<Inspection, PolicyFailure> {
        let (component, _) = self.compile(name, bytes)?;
        let ty = component.component_type();
        let imports: Vec<String> = ty.imports(&self.engine).map(|(n, _)| n.to_string()).collect();
        let exports: Vec<String> = ty.exports(&self.engine).map(|(n, _)| n.to_string()).collect();
        let targets = imports
            .iter()
            .find_map(|i| i.strip_prefix(&format!("{WIT_PACKAGE}/host@")))
            .map(|version| format!("{WIT_PACKAGE}@{version} (world policy)"));
        let policy = self.load_text_settings(name, bytes, String::new())?;
        let request = Request::from_json(r#"{"id": "inspect"}"#).map_err(|e| PolicyFailure::Load {
            policy: name.to_string(),
            message: e.to_string(),
        })?;
        let step = StepHost::new(
            StateDir::at(Path::new("/nonexistent")),
            std::sync::Arc::new(crate::sys::RecordingSyscalls::dry_run()),
            std::sync::Arc::new(crate::audit::Audit::events_only()),
            crate::step::StepOptions::default(),
            &request,
            crate::state::StepLock::planned(&request.id),
        )
        .map_err(|e| PolicyFailure::Load {
            policy: name.to_string(),
            message: e.to_string(),
        })?;
        let metadata = self.fresh_metadata(&policy, step)?;
        Ok(Inspection {
            size_bytes: bytes.len(),
            targets,
            import_uses: imports.iter().map(|i| import_use(i)).collect(),
            imports,
            exports,
            name: metadata.name,
            version: metadata.version,
            description: metadata.description,
        })
    }

    /// Our host interface (a policy built against 0.2.0 links to it by
    /// semver), and the WASI its language runtime links in ([`wasi`]);
    /// any other import is refused, named.
    fn linker_for(&self, component: &Component) -> Result<Linker<PolicyState>, String> {
        let mut linker: Linker<PolicyState> = Linker::new(&self.engine);
        bindings::Policy::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).map_err(|e| e.to_string())?;
        let mut unknown = Vec::new();
        let mut linked: Vec<&str> = Vec::new();
        let ty = component.component_type();
        for (import, item) in ty.imports(&self.engine) {
            if import.starts_with(&format!("{WIT_PACKAGE}/")) {
                let known = WIT_VERSIONS.iter().any(|version| {
                    [
                        format!("{WIT_PACKAGE}/host@{version}"),
                        format!("{WIT_PACKAGE}/types@{version}"),
                    ]
                    .iter()
                    .any(|e| e == import)
                });
                if !known {
                    unknown.push(format!(
                        "{import} (this host provides {WIT_PACKAGE}/host@{})",
                        WIT_VERSIONS.join(", @")
                    ));
                }
            } else if let Some(interface) = wasi::linked(import) {
                // One definition serves every 0.2 version of an interface.
                if !linked.contains(&interface.interface) {
                    interface
                        .add_to(&mut linker)
                        .map_err(|e| format!("linking {import}: {e:#}"))?;
                    linked.push(interface.interface);
                }
            } else if wasi::is_trapped(import) {
                let io = wasi::io_resources(&self.engine, &ty);
                wasi::define_as_traps(&mut linker, &self.engine, import, &item.ty, &io)?;
            } else {
                unknown.push(import.to_string());
            }
        }
        if !unknown.is_empty() {
            return Err(format!(
                "imports what this host does not provide: {}",
                unknown.join(", ")
            ));
        }
        Ok(linker)
    }
}

/// A policy of a chain as configured: `FILE[:SETTINGS.json]` (or an
/// embedded policy's name, as `--policy` takes it) and its mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyArg {
    pub arg: String,
    /// Where its settings file is named.
    pub settings: SettingsFile,
    pub mode: Mode,
}

/// Where a chain's policy names its settings file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SettingsFile {
    /// After the last colon of the argument, if anything, as `--policy`
    /// takes it ([`split_policy_arg`]).
    InArg,
    /// Apart (runtime.toml's table form): the argument is the policy
    /// alone, never split at a colon; `None` when it has no settings.
    Apart(Option<String>),
}

impl PolicyArg {
    pub fn enforced(arg: impl Into<String>) -> PolicyArg {
        PolicyArg {
            arg: arg.into(),
            settings: SettingsFile::InArg,
            mode: Mode::Enforce,
        }
    }

    /// The name the policy goes by in messages, the decision log and the
    /// metrics, loaded or not: its file (without settings) or reference.
    pub fn name(&self) -> String {
        match &self.settings {
            SettingsFile::InArg => split_policy_arg(&self.arg, Path::new(""))
                .map(|(file, _)| match embedded_policy(&file) {
                    Some((name, _)) => name.to_string(),
                    None => file.display().to_string(),
                })
                .unwrap_or_else(|_| self.arg.clone()),
            SettingsFile::Apart(_) => match embedded_policy(Path::new(&self.arg)) {
                Some((name, _)) => name.to_string(),
                None => self.arg.clone(),
            },
        }
    }

    pub fn monitored(arg: impl Into<String>) -> PolicyArg {
        PolicyArg {
            arg: arg.into(),
            settings: SettingsFile::InArg,
            mode: Mode::Monitor,
        }
    }
}

/// An enforced policy, `FILE[:SETTINGS.json]`.
impl From<&str> for PolicyArg {
    fn from(arg: &str) -> PolicyArg {
        PolicyArg::enforced(arg)
    }
}

/// An enforced policy, `FILE[:SETTINGS.json]`.
impl From<String> for PolicyArg {
    fn from(arg: String) -> PolicyArg {
        PolicyArg::enforced(arg)
    }
}

/// An enforced policy named `FILE[:SETTINGS.json]` equals its text.
impl PartialEq<&str> for PolicyArg {
    fn eq(&self, other: &&str) -> bool {
        self.mode == Mode::Enforce && self.settings == SettingsFile::InArg && self.arg == *other
    }
}

/// A policy argument, `FILE[:SETTINGS]`: a policy file (or an embedded
/// policy's name) and, after the last colon, its settings file, whatever
/// the settings file is called; relative paths are taken from `base`
/// (`""`: the working directory). An argument that names existing files
/// both ways (a file whose name holds the colon, and a policy and settings
/// either side of it) is an error that says so; one that names nothing
/// either way is read as a policy and settings when it has a colon, so
/// that the error names what is missing.
pub fn split_policy_arg(arg: &str, base: &Path) -> Result<(PathBuf, Option<PathBuf>), PolicyFailure> {
    if arg.starts_with(crate::oci::SCHEME) {
        let (reference, settings) = crate::oci::Reference::parse_with_rest(arg).map_err(|e| PolicyFailure::Load {
            policy: arg.to_string(),
            message: e.to_string(),
        })?;
        return Ok((PathBuf::from(reference.to_string()), settings.map(|s| base.join(s))));
    }
    let policy = |p: &Path| embedded_policy(p).is_some() || base.join(p).is_file();
    let located = |p: &Path| match embedded_policy(p) {
        Some(_) => p.to_path_buf(),
        None => base.join(p),
    };
    let whole = Path::new(arg);
    let split = arg
        .rsplit_once(':')
        .filter(|(file, settings)| !file.is_empty() && !settings.is_empty())
        .map(|(file, settings)| (Path::new(file), Path::new(settings)));
    let as_whole = policy(whole);
    let as_split = split.is_some_and(|(file, settings)| policy(file) && base.join(settings).is_file());
    match split {
        Some((file, settings)) if as_whole && as_split => Err(PolicyFailure::Load {
            policy: arg.to_string(),
            message: format!(
                "reads two ways: the policy {} without settings, or the policy {} with settings {}; rename one",
                located(whole).display(),
                located(file).display(),
                base.join(settings).display()
            ),
        }),
        Some((file, settings)) if !as_whole => Ok((located(file), Some(base.join(settings)))),
        _ => Ok((located(whole), None)),
    }
}

/// A core module starts with the wasm magic and version 1; a component
/// with the same magic and its own layer/version word.
fn wasmparser_is_core_module(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && &bytes[0..4] == b"\0asm" && bytes[4..8] == [1, 0, 0, 0]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded policies' digests, computed by build.rs, are their
    /// SHA-256; a copy of their bytes is hashed like any other bytes.
    #[test]
    fn an_embedded_policy_is_known_by_its_digest_and_a_copy_is_not() {
        for bytes in [DEFAULT_POLICY_WASM, BUILDKIT_V0_8_POLICY_WASM] {
            assert_eq!(embedded_digest(bytes), Some(crate::cache::component_digest(bytes)));
            let copy = bytes.to_vec();
            assert_eq!(embedded_digest(&copy), None);
        }
        let (_, named) = embedded_policy(Path::new("buildkit")).unwrap();
        assert!(embedded_digest(named).is_some());
    }

    /// What std on wasm32-wasip2 links into the default policy, beyond our
    /// own interface. A change here must be looked at: every import is
    /// either ours, the fixed seed, or a trap.
    #[test]
    fn default_policy_imports_only_our_host_and_std_plumbing() {
        let runtime = Engine::new(Limits::default()).unwrap();
        for (name, wasm) in EMBEDDED_POLICIES {
            embedded_policy_imports(&runtime, name, wasm);
        }
    }

    fn embedded_policy_imports(runtime: &Engine, name: &str, wasm: &[u8]) {
        let imports = runtime.component_imports(wasm).unwrap();
        eprintln!("{name} imports: {imports:?}");
        eprintln!("default policy imports: {imports:?}");
        assert!(
            imports.iter().any(|i| i == "specwright:policy/host@0.2.1"),
            "{imports:?}"
        );
        let allowed = [
            "specwright:policy/",
            "wasi:cli/",
            "wasi:io/",
            "wasi:random/insecure-seed@",
        ];
        for import in &imports {
            assert!(
                allowed.iter().any(|a| import.starts_with(a)),
                "unexpected import {import} in {imports:?}"
            );
        }
        for forbidden in ["wasi:filesystem", "wasi:sockets", "wasi:clocks", "wasi:random/random"] {
            assert!(
                !imports.iter().any(|i| i.starts_with(forbidden)),
                "{forbidden} in {imports:?}"
            );
        }
    }

    /// Regression: a settings file not ending in `.json` became part of
    /// the policy's path (`reading p.wasm:settings: No such file`).
    #[test]
    fn a_policy_argument_means_the_same_whatever_the_settings_are_called() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        for name in ["p.wasm", "s.json", "settings", "a:b.wasm", "a"] {
            std::fs::write(base.join(name), "").unwrap();
        }
        let split = |arg: &str| split_policy_arg(arg, base);
        assert_eq!(split("p.wasm").unwrap(), (base.join("p.wasm"), None));
        assert_eq!(
            split("p.wasm:s.json").unwrap(),
            (base.join("p.wasm"), Some(base.join("s.json")))
        );
        assert_eq!(
            split("p.wasm:settings").unwrap(),
            (base.join("p.wasm"), Some(base.join("settings")))
        );
        assert_eq!(
            split("default:settings").unwrap(),
            (PathBuf::from("default"), Some(base.join("settings")))
        );
        assert_eq!(split("default").unwrap(), (PathBuf::from("default"), None));
        // A file whose name holds the colon, when nothing else is meant.
        std::fs::write(base.join("x:y.wasm"), "").unwrap();
        assert_eq!(split("x:y.wasm").unwrap(), (base.join("x:y.wasm"), None));
        // Both ways: `a:b.wasm` is a file, and so are `a` and `b.wasm`.
        std::fs::write(base.join("b.wasm"), "").unwrap();
        let err = split("a:b.wasm").unwrap_err().to_string();
        assert!(err.contains("reads two ways"), "{err}");
        // Nothing there: read as policy and settings, to name them.
        assert_eq!(
            split("none.wasm:none.json").unwrap(),
            (base.join("none.wasm"), Some(base.join("none.json")))
        );
    }
}
