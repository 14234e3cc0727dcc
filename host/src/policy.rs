//! Policies as WebAssembly components: loading, sandboxing and running a chain.
//!
//! The generated bindings are the only wasm-facing layer; every import is
//! a thin call into [`StepHost`], which checks and performs it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use specwright_core::HostFacts;
use wasmtime::component::{Component, HasSelf, Linker, Resource, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store, Trap};

use crate::cache::{CacheUse, CompileCache};
use crate::state::StateDir;
use crate::step::{RootId, SourceId, StepHost};
use specwright_core::Request;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "policy",
        imports: { default: trappable },
        with: {
            "specwright:policy/host.materialized": super::MaterializedRep,
            "specwright:policy/host.mounted-root": super::MountedRootRep,
        },
    });
}

use bindings::specwright::policy::{host as wit_host, types as wit_types};

/// The default policy, built by `build.rs` and embedded.
pub const DEFAULT_POLICY_WASM: &[u8] = include_bytes!(env!("SPECWRIGHT_DEFAULT_POLICY_WASM"));

/// The name `--policy default` refers to.
pub const DEFAULT_POLICY_NAME: &str = "default";

/// The WIT package every policy targets.
const WIT_PACKAGE: &str = "specwright:policy";
const WIT_VERSION: &str = "0.1.0";

/// Host-side state of a `materialized` handle.
pub struct MaterializedRep(SourceId);

/// Host-side state of a `mounted-root` handle.
pub struct MountedRootRep(RootId);

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy {policy}: {message}")]
    Load { policy: String, message: String },
    #[error("policy {policy}: invalid request: {message}")]
    InvalidRequest { policy: String, message: String },
    #[error("policy {policy} denied the step: {reason}")]
    Denied { policy: String, reason: String },
    #[error("policy {policy}: {message}")]
    Failed { policy: String, message: String },
    #[error("policy {policy} exceeded its {limit} limit")]
    Limit { policy: String, limit: String },
    #[error("policy {policy} was interrupted by {signal}")]
    Interrupted { policy: String, signal: &'static str },
    #[error("policy {policy} trapped: {message}")]
    Trapped { policy: String, message: String },
    #[error("policy {policy} returned an invalid spec: {message}")]
    InvalidSpec { policy: String, message: String },
}

/// A policy call stopped because the process was asked to stop.
#[derive(Debug)]
struct Interrupted(i32);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted by {}", specwright_host_core::interrupt::name(self.0))
    }
}

impl std::error::Error for Interrupted {}

/// Sandbox limits applied to every policy call.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Wall-clock time one `generate` call may take.
    pub time: Duration,
    /// Linear memory one instance may grow to.
    pub memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            time: Duration::from_secs(1),
            memory_bytes: 64 << 20,
        }
    }
}

/// Memory a pooled slot keeps mapped between instances.
const KEEP_RESIDENT_BYTES: usize = 4 << 20;

/// How often the engine's epoch advances; the time limit's granularity.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The store's data: the step's host side and the handles the policy holds.
pub struct PolicyState {
    step: StepHost,
    table: ResourceTable,
    limits: MemoryLimiter,
}

/// Caps a policy's linear memory and remembers whether the cap was hit,
/// so the error can say which limit stopped the policy.
struct MemoryLimiter {
    max_bytes: usize,
    hit: bool,
}

/// Tables hold a policy's function references; generous, but not unbounded.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.hit = true;
            return Err(wasmtime::Error::msg(format!(
                "memory limit of {} MiB reached",
                self.max_bytes >> 20
            )));
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

fn to_wit_error(e: specwright_core::HostError) -> wit_types::HostError {
    match e {
        specwright_core::HostError::Refused(m) => wit_types::HostError::Refused(m),
        specwright_core::HostError::Failed(m) => wit_types::HostError::Failed(m),
    }
}

fn to_wit_mount(m: specwright_core::request::Mountable) -> wit_types::Mount {
    wit_types::Mount {
        kind: m.kind,
        source: m.source,
        options: m.options,
    }
}

impl wit_types::Host for PolicyState {}

impl wit_host::Host for PolicyState {
    fn materialize(&mut self, index: u32) -> wasmtime::Result<Result<Resource<MaterializedRep>, wit_types::HostError>> {
        match self.step.materialize(index) {
            Ok((id, _)) => Ok(Ok(self.table.push(MaterializedRep(id))?)),
            Err(e) => Ok(Err(to_wit_error(e))),
        }
    }

    fn mount_temporary(
        &mut self,
        source: Resource<MaterializedRep>,
        entries: Vec<u32>,
    ) -> wasmtime::Result<Result<Resource<MountedRootRep>, wit_types::HostError>> {
        let id = self.table.get(&source)?.0;
        match self.step.mount_temporary(id, &entries) {
            Ok(root) => Ok(Ok(self.table.push(MountedRootRep(root))?)),
            Err(e) => Ok(Err(to_wit_error(e))),
        }
    }

    fn canonical_path(&mut self, path: String) -> wasmtime::Result<Result<String, wit_types::HostError>> {
        Ok(self.step.canonical_path(&path).map_err(to_wit_error))
    }

    fn release(&mut self, root: Resource<MountedRootRep>) -> wasmtime::Result<Result<(), wit_types::HostError>> {
        let id = self.table.delete(root)?.0;
        Ok(self.step.release_root(id).map_err(to_wit_error))
    }
}

impl wit_host::HostMaterialized for PolicyState {
    fn mounts(&mut self, source: Resource<MaterializedRep>) -> wasmtime::Result<Vec<wit_types::Mount>> {
        let id = self.table.get(&source)?.0;
        let mounts = self.step.source_mounts(id).map_err(wasmtime::Error::msg)?;
        Ok(mounts.into_iter().map(to_wit_mount).collect())
    }

    fn resolve(
        &mut self,
        source: Resource<MaterializedRep>,
        entry: u32,
        selector: String,
    ) -> wasmtime::Result<Result<String, wit_types::HostError>> {
        let id = self.table.get(&source)?.0;
        Ok(self.step.resolve_in_source(id, entry, &selector).map_err(to_wit_error))
    }

    fn drop(&mut self, source: Resource<MaterializedRep>) -> wasmtime::Result<()> {
        self.table.delete(source)?;
        Ok(())
    }
}

impl wit_host::HostMountedRoot for PolicyState {
    fn path(&mut self, root: Resource<MountedRootRep>) -> wasmtime::Result<String> {
        let id = self.table.get(&root)?.0;
        self.step.root_path(id).map_err(wasmtime::Error::msg)
    }

    fn resolve(
        &mut self,
        root: Resource<MountedRootRep>,
        selector: String,
    ) -> wasmtime::Result<Result<String, wit_types::HostError>> {
        let id = self.table.get(&root)?.0;
        Ok(self.step.resolve_in_root(id, &selector).map_err(to_wit_error))
    }

    /// Dropping a handle does not unmount: the step owns the mount.
    fn drop(&mut self, root: Resource<MountedRootRep>) -> wasmtime::Result<()> {
        self.table.delete(root)?;
        Ok(())
    }
}

/// A policy ready to run.
pub struct LoadedPolicy {
    pub name: String,
    pub settings: String,
    pre: bindings::PolicyPre<PolicyState>,
}

/// The engine and linker every policy runs under.
pub struct PolicyRuntime {
    engine: Engine,
    limits: Limits,
    /// The instance pool's size, for a pooled runtime.
    pool_slots: Option<u32>,
    cache: Option<CompileCache>,
}

/// What `specwright policy inspect` shows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Inspection {
    pub size_bytes: usize,
    /// The WIT package and version the component's host imports target.
    pub targets: Option<String>,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    pub name: String,
    pub version: String,
    pub description: String,
}

impl PolicyRuntime {
    /// A runtime that allocates each instance on demand: cheapest to start,
    /// for a process that runs one step (the command line).
    pub fn new(limits: Limits) -> Result<PolicyRuntime, PolicyError> {
        Self::with_config(limits, None)
    }

    /// A runtime for a process that runs many steps: `slots` instances are
    /// preallocated with copy-on-write memory images, so a fresh instance
    /// per step costs a few page-table updates instead of mmap and munmap
    /// (which also serialize threads on the kernel's mm lock).
    pub fn pooled(limits: Limits, slots: u32) -> Result<PolicyRuntime, PolicyError> {
        Self::with_config(limits, Some(slots))
    }

    fn with_config(limits: Limits, pooled: Option<u32>) -> Result<PolicyRuntime, PolicyError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        // Names the policies' compiled functions for `perf report`.
        if std::env::var_os("SPECWRIGHT_PERF_MAP").is_some() {
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
                // Reset a slot by zeroing what a policy typically touches
                // rather than madvise: madvise in a threaded process costs
                // a TLB shootdown on every other core, which made two
                // threads slower than one.
                .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
                .table_keep_resident(KEEP_RESIDENT_BYTES / 16);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
        }
        let engine = Engine::new(&config).map_err(|e| PolicyError::Load {
            policy: "(engine)".to_string(),
            message: e.to_string(),
        })?;
        start_epoch_ticker(&engine);
        Ok(PolicyRuntime {
            engine,
            limits,
            pool_slots: pooled,
            cache: None,
        })
    }

    /// A runtime configured like this one (limits, pool size, cache), with
    /// an engine and instance pool of its own: one for each worker thread
    /// of a process that runs steps in parallel. Threads that share a pool
    /// take each other's freshly released slots, whose memory then moves
    /// between the cores' caches at every step (two threads: ~1.5x one
    /// thread's steps sharing a runtime, ~1.85x with a runtime each;
    /// BENCHMARKS.md). Load policies into it with [`PolicyRuntime::adopt`].
    pub fn for_worker(&self) -> Result<PolicyRuntime, PolicyError> {
        let mut worker = Self::with_config(self.limits, self.pool_slots)?;
        worker.cache = self.cache.clone();
        Ok(worker)
    }

    /// `policy`, as another runtime of this process loaded it, made ready
    /// to run here: its compiled code is copied, not compiled again.
    pub fn adopt(&self, policy: &LoadedPolicy) -> Result<LoadedPolicy, PolicyError> {
        let load_error = |message: String| PolicyError::Load {
            policy: policy.name.clone(),
            message,
        };
        let component = crate::cache::copy_component(policy.pre.instance_pre().component(), &self.engine)
            .map_err(|e| load_error(format!("copying its compiled code to another runtime: {e:#}")))?;
        self.link(&policy.name, &component, policy.settings.clone())
    }

    /// Keeps precompiled policies in `dir` (e.g. `<state>/cache`).
    pub fn with_cache(mut self, dir: &Path) -> Result<PolicyRuntime, PolicyError> {
        let cache = CompileCache::open(dir).map_err(|e| PolicyError::Load {
            policy: "(cache)".to_string(),
            message: e.to_string(),
        })?;
        self.cache = Some(cache);
        Ok(self)
    }

    /// Loads the embedded default policy.
    pub fn load_default(&self) -> Result<LoadedPolicy, PolicyError> {
        self.load_bytes(DEFAULT_POLICY_NAME, DEFAULT_POLICY_WASM, String::new())
    }

    /// Reads `FILE`, or the embedded policy for `default`.
    pub fn read_policy_file(file: &Path) -> Result<(String, std::borrow::Cow<'static, [u8]>), PolicyError> {
        if file == Path::new(DEFAULT_POLICY_NAME) {
            return Ok((DEFAULT_POLICY_NAME.to_string(), DEFAULT_POLICY_WASM.into()));
        }
        let bytes = std::fs::read(file).map_err(|e| PolicyError::Load {
            policy: file.display().to_string(),
            message: format!("reading {}: {e}", file.display()),
        })?;
        Ok((file.display().to_string(), bytes.into()))
    }

    /// Loads `FILE[:SETTINGS.json]`, or `default[:SETTINGS.json]` for the embedded policy.
    pub fn load_spec(&self, spec: &str) -> Result<LoadedPolicy, PolicyError> {
        let (file, settings_file) = split_policy_arg(spec);
        let settings = match settings_file {
            Some(path) => std::fs::read_to_string(&path).map_err(|e| PolicyError::Load {
                policy: file.display().to_string(),
                message: format!("reading settings {}: {e}", path.display()),
            })?,
            None => String::new(),
        };
        let (name, bytes) = Self::read_policy_file(&file)?;
        self.load_bytes(&name, &bytes, settings)
    }

    /// A component from bytes, through the cache when there is one.
    pub fn compile(&self, name: &str, bytes: &[u8]) -> Result<(Component, Option<CacheUse>), PolicyError> {
        let load_error = |message: String| PolicyError::Load {
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
                .load(&self.engine, bytes)
                .map(|(c, used)| (c, Some(used)))
                .map_err(|e| load_error(format!("is not a valid WebAssembly component: {e}"))),
            None => Component::new(&self.engine, bytes)
                .map(|c| (c, None))
                .map_err(|e| load_error(format!("is not a valid WebAssembly component: {e:#}"))),
        }
    }

    /// Compiles and links a component; every problem is listed in the error.
    pub fn load_bytes(&self, name: &str, bytes: &[u8], settings: String) -> Result<LoadedPolicy, PolicyError> {
        let (component, _) = self.compile(name, bytes)?;
        self.link(name, &component, settings)
    }

    /// A compiled component linked against the host, ready to instantiate.
    fn link(&self, name: &str, component: &Component, settings: String) -> Result<LoadedPolicy, PolicyError> {
        let load_error = |message: String| PolicyError::Load {
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
            pre,
        })
    }

    /// The names a component imports, as the linker sees them.
    pub fn component_imports(&self, bytes: &[u8]) -> Result<Vec<String>, PolicyError> {
        let (component, _) = self.compile("(component)", bytes)?;
        let ty = component.component_type();
        Ok(ty.imports(&self.engine).map(|(name, _)| name.to_string()).collect())
    }

    /// What a policy is: its world, imports, exports, size and metadata.
    pub fn inspect(&self, name: &str, bytes: &[u8]) -> Result<Inspection, PolicyError> {
        let (component, _) = self.compile(name, bytes)?;
        let ty = component.component_type();
        let imports: Vec<String> = ty.imports(&self.engine).map(|(n, _)| n.to_string()).collect();
        let exports: Vec<String> = ty.exports(&self.engine).map(|(n, _)| n.to_string()).collect();
        let targets = imports
            .iter()
            .find_map(|i| i.strip_prefix(&format!("{WIT_PACKAGE}/host@")))
            .map(|version| format!("{WIT_PACKAGE}@{version} (world policy)"));
        let policy = self.load_bytes(name, bytes, String::new())?;
        let request = Request::from_json(r#"{"id": "inspect"}"#).map_err(|e| PolicyError::Load {
            policy: name.to_string(),
            message: e.to_string(),
        })?;
        let step = StepHost::new(
            StateDir::at(Path::new("/nonexistent")),
            std::sync::Arc::new(crate::sys::RecordingSyscalls::dry_run()),
            std::sync::Arc::new(crate::audit::Audit::events_only()),
            crate::step::StepOptions {
                dry_run: true,
                ..Default::default()
            },
            &request,
            crate::state::StepLock::planned(&request.id),
        )
        .map_err(|e| PolicyError::Load {
            policy: name.to_string(),
            message: e.to_string(),
        })?;
        let metadata = self.fresh_metadata(&policy, step)?;
        Ok(Inspection {
            size_bytes: bytes.len(),
            targets,
            imports,
            exports,
            name: metadata.name,
            version: metadata.version,
            description: metadata.description,
        })
    }

    /// Our host interface, a fixed seed for std's hash maps, and traps for
    /// the rest of WASI that std links in but a policy never gets to use.
    fn linker_for(&self, component: &Component) -> Result<Linker<PolicyState>, String> {
        let mut linker: Linker<PolicyState> = Linker::new(&self.engine);
        bindings::Policy::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).map_err(|e| e.to_string())?;
        let mut unknown = Vec::new();
        let ty = component.component_type();
        for (import, _) in ty.imports(&self.engine) {
            if import.starts_with(&format!("{WIT_PACKAGE}/")) {
                let expected = [
                    format!("{WIT_PACKAGE}/host@{WIT_VERSION}"),
                    format!("{WIT_PACKAGE}/types@{WIT_VERSION}"),
                ];
                if !expected.iter().any(|e| e == import) {
                    unknown.push(format!(
                        "{import} (this host provides {WIT_PACKAGE}/host@{WIT_VERSION})"
                    ));
                }
            } else if import.starts_with("wasi:random/insecure-seed@0.2.") {
                // Deterministic on purpose: a policy gets no randomness.
                linker
                    .instance(import)
                    .and_then(|mut i| i.func_wrap("insecure-seed", |_, (): ()| Ok(((0x5eed_u64, 0x5eed_u64),))))
                    .map_err(|e| e.to_string())?;
            } else if !import.starts_with("wasi:") {
                unknown.push(import.to_string());
            }
        }
        if !unknown.is_empty() {
            return Err(format!(
                "imports what this host does not provide: {}",
                unknown.join(", ")
            ));
        }
        linker
            .define_unknown_imports_as_traps(component)
            .map_err(|e| e.to_string())?;
        Ok(linker)
    }

    /// One instance kept across calls: only for measuring what a fresh
    /// instance per step costs (production never reuses instances).
    pub fn reused_instance(&self, policy: &LoadedPolicy, step: StepHost) -> Result<ReusedInstance, PolicyError> {
        let mut store = self.store(step);
        let instance = policy
            .pre
            .instantiate(&mut store)
            .map_err(|e| self.trap_error(&policy.name, e, false))?;
        Ok(ReusedInstance {
            store,
            instance,
            name: policy.name.clone(),
            ticks: self.deadline_ticks(),
        })
    }

    fn deadline_ticks(&self) -> u64 {
        (self.limits.time.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
    }

    /// A fresh store for one call, with the sandbox limits in force.
    fn store(&self, step: StepHost) -> Store<PolicyState> {
        let state = PolicyState {
            step,
            table: ResourceTable::new(),
            limits: MemoryLimiter {
                max_bytes: self.limits.memory_bytes,
                hit: false,
            },
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        // Every tick asks whether the process was asked to stop; the time
        // limit is counted in ticks.
        let limit = self.deadline_ticks();
        let mut ticks = 0;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if let Some(signal) = specwright_host_core::interrupt::requested() {
                return Err(wasmtime::Error::new(Interrupted(signal)));
            }
            ticks += 1;
            if ticks >= limit {
                return Err(Trap::Interrupt.into());
            }
            Ok(wasmtime::UpdateDeadline::Continue(1))
        });
        store
    }

    /// Runs one policy for a step; returns the step back whatever happens,
    /// so the caller decides what to keep or release.
    pub fn run(
        &self,
        policy: &LoadedPolicy,
        step: StepHost,
        request_json: &str,
        facts: &HostFacts,
        previous: Option<&str>,
    ) -> (StepHost, Result<String, PolicyError>) {
        let mut store = self.store(step);
        let facts = to_wit_facts(facts);
        let result = policy
            .pre
            .instantiate(&mut store)
            .and_then(|instance| instance.call_generate(&mut store, request_json, &facts, &policy.settings, previous));
        let result = match result {
            Ok(Ok(spec)) => Ok(spec),
            Ok(Err(e)) => Err(policy_error(&policy.name, e)),
            Err(e) => Err(self.trap_error(&policy.name, e, store.data().limits.hit)),
        };
        (store.into_data().step, result)
    }

    /// A fresh instance of `policy` asked only for its name: what every step
    /// costs before the policy does any work (the benchmarks' floor for a
    /// fresh instance).
    pub fn fresh_instance_name(&self, policy: &LoadedPolicy, step: StepHost) -> Result<String, PolicyError> {
        self.fresh_metadata(policy, step).map(|metadata| metadata.name)
    }

    fn fresh_metadata(&self, policy: &LoadedPolicy, step: StepHost) -> Result<wit_types::PolicyMetadata, PolicyError> {
        let mut store = self.store(step);
        policy
            .pre
            .instantiate(&mut store)
            .and_then(|instance| instance.call_metadata(&mut store))
            .map_err(|e| self.trap_error(&policy.name, e, false))
    }

    fn trap_error(&self, policy: &str, e: wasmtime::Error, memory_limit_hit: bool) -> PolicyError {
        let policy = policy.to_string();
        if let Some(Interrupted(signal)) = e.downcast_ref::<Interrupted>() {
            return PolicyError::Interrupted {
                policy,
                signal: specwright_host_core::interrupt::name(*signal),
            };
        }
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => PolicyError::Limit {
                policy,
                limit: format!("time ({:?})", self.limits.time),
            },
            _ if memory_limit_hit => PolicyError::Limit {
                policy,
                limit: format!("memory ({} MiB)", self.limits.memory_bytes >> 20),
            },
            _ => PolicyError::Trapped {
                policy,
                message: format!("{e:#}"),
            },
        }
    }
}

/// See [`PolicyRuntime::reused_instance`].
pub struct ReusedInstance {
    store: Store<PolicyState>,
    instance: bindings::Policy,
    name: String,
    ticks: u64,
}

impl ReusedInstance {
    pub fn generate(&mut self, request_json: &str, facts: &HostFacts, settings: &str) -> Result<String, PolicyError> {
        self.store.set_epoch_deadline(self.ticks);
        let facts = to_wit_facts(facts);
        match self
            .instance
            .call_generate(&mut self.store, request_json, &facts, settings, None)
        {
            Ok(Ok(spec)) => Ok(spec),
            Ok(Err(e)) => Err(policy_error(&self.name, e)),
            Err(e) => Err(PolicyError::Trapped {
                policy: self.name.clone(),
                message: format!("{e:#}"),
            }),
        }
    }
}

fn to_wit_facts(facts: &HostFacts) -> wit_types::HostFacts {
    wit_types::HostFacts {
        kernel_release: facts.kernel_release.clone(),
        seccomp: facts.seccomp,
        first_free_loop: facts.first_free_loop,
        in_user_namespace: facts.in_user_namespace,
        arch: facts.arch.clone(),
    }
}

fn policy_error(policy: &str, e: wit_types::PolicyError) -> PolicyError {
    let policy = policy.to_string();
    match e {
        wit_types::PolicyError::InvalidRequest(message) => PolicyError::InvalidRequest { policy, message },
        wit_types::PolicyError::Denied(reason) => PolicyError::Denied { policy, reason },
        wit_types::PolicyError::Internal(message) => PolicyError::Failed { policy, message },
    }
}

/// Splits `FILE[:SETTINGS.json]` at the last colon that is followed by a
/// path ending in `.json`, so file names with colons still work.
pub fn split_policy_arg(arg: &str) -> (PathBuf, Option<PathBuf>) {
    match arg.rsplit_once(':') {
        Some((file, settings)) if settings.ends_with(".json") && !file.is_empty() => {
            (PathBuf::from(file), Some(PathBuf::from(settings)))
        }
        _ => (PathBuf::from(arg), None),
    }
}

/// A core module starts with the wasm magic and version 1; a component
/// with the same magic and its own layer/version word.
fn wasmparser_is_core_module(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && &bytes[0..4] == b"\0asm" && bytes[4..8] == [1, 0, 0, 0]
}

/// Advances the engine's epoch until the engine is gone.
fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::spawn(move || loop {
        std::thread::sleep(EPOCH_TICK);
        match weak.upgrade() {
            Some(engine) => engine.increment_epoch(),
            None => return,
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What std on wasm32-wasip2 links into the default policy, beyond our
    /// own interface. A change here must be looked at: every import is
    /// either ours, the fixed seed, or a trap.
    #[test]
    fn default_policy_imports_only_our_host_and_std_plumbing() {
        let runtime = PolicyRuntime::new(Limits::default()).unwrap();
        let imports = runtime.component_imports(DEFAULT_POLICY_WASM).unwrap();
        eprintln!("default policy imports: {imports:?}");
        assert!(
            imports.iter().any(|i| i == "specwright:policy/host@0.1.0"),
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

    #[test]
    fn policy_argument_splits_settings_off() {
        assert_eq!(split_policy_arg("p.wasm"), (PathBuf::from("p.wasm"), None));
        assert_eq!(
            split_policy_arg("p.wasm:s.json"),
            (PathBuf::from("p.wasm"), Some(PathBuf::from("s.json")))
        );
        assert_eq!(split_policy_arg("dir:x/p.wasm"), (PathBuf::from("dir:x/p.wasm"), None));
    }
}
