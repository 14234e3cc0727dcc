//! One sandboxed call into a policy: a fresh store with the time and
//! memory limits in force, and every way it can end turned into a
//! [`PolicyFailure`] that names the policy and the limit.

use std::time::Duration;

use specwright_core::HostFacts;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, Trap};

use super::bindings::specwright::policy::types as wit_types;
use super::host::{policy_error, PolicyState};
use super::ticks::{Ticking, EPOCH_TICK};
use super::{Engine, LoadedPolicy, PolicyFailure};
use crate::step::StepHost;

/// A policy call stopped because the process was asked to stop.
#[derive(Debug)]
struct Interrupted(i32);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted by {}", specwright_host_core::interrupt::name(self.0))
    }
}

impl std::error::Error for Interrupted {}

/// The host facts as the policies receive them, converted once for a
/// chain.
pub(crate) struct PolicyFacts(wit_types::HostFacts);

impl From<&HostFacts> for PolicyFacts {
    fn from(facts: &HostFacts) -> PolicyFacts {
        PolicyFacts(wit_types::HostFacts::from(facts))
    }
}

/// Sandbox limits applied to every policy call.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Wall-clock time one `generate` call may take.
    pub time: Duration,
    /// Linear memory one instance may grow to.
    pub memory_bytes: usize,
}

impl Limits {
    /// The time limit of one call when none is given, in milliseconds.
    pub const DEFAULT_TIMEOUT_MS: u64 = 1000;
    /// The memory limit of one instance when none is given, in MiB.
    pub const DEFAULT_MEMORY_MIB: usize = 64;
    /// The most time a limit may give a call (an hour: a typo cannot lift it).
    pub const MAX_TIMEOUT_MS: u64 = 3_600_000;
    /// The most memory a limit may give an instance (the 4 GiB a 32-bit
    /// WebAssembly memory can address).
    pub const MAX_MEMORY_MIB: usize = 4096;

    /// The limits `--policy-timeout-ms` and `--policy-memory-mib` (or a
    /// configuration file's `policy_timeout_ms`, `policy_memory_mib`)
    /// give, the defaults for what is not given.
    pub fn from_flags(timeout_ms: Option<u64>, memory_mib: Option<usize>) -> Result<Limits, LimitsError> {
        let ms = timeout_ms.unwrap_or(Self::DEFAULT_TIMEOUT_MS);
        if ms == 0 || ms > Self::MAX_TIMEOUT_MS {
            return Err(LimitsError::Timeout(ms));
        }
        let mib = memory_mib.unwrap_or(Self::DEFAULT_MEMORY_MIB);
        if mib == 0 || mib > Self::MAX_MEMORY_MIB {
            return Err(LimitsError::Memory(mib));
        }
        Ok(Limits {
            time: Duration::from_millis(ms),
            memory_bytes: mib << 20,
        })
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            time: Duration::from_millis(Self::DEFAULT_TIMEOUT_MS),
            memory_bytes: Self::DEFAULT_MEMORY_MIB << 20,
        }
    }
}

/// A limit out of the range [`Limits::from_flags`] takes.
#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    #[error("--policy-timeout-ms {0}: must be between 1 and {max} (one hour)", max = Limits::MAX_TIMEOUT_MS)]
    Timeout(u64),
    #[error("--policy-memory-mib {0}: must be between 1 and {max} (a policy's memory is 32-bit)", max = Limits::MAX_MEMORY_MIB)]
    Memory(usize),
}

/// Memory a pooled slot keeps mapped between instances.
pub(super) const KEEP_RESIDENT_BYTES: usize = 4 << 20;

/// Caps a policy's linear memory and remembers whether the cap was hit,
/// so the error can say which limit stopped the policy.
pub(super) struct MemoryLimiter {
    max_bytes: usize,
    pub(super) hit: bool,
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

impl Engine {
    /// One instance kept across calls: only for measuring what a fresh
    /// instance per step costs (production never reuses instances).
    #[cfg(feature = "bench")]
    pub fn reused_instance(&self, policy: &LoadedPolicy, step: StepHost) -> Result<ReusedInstance, PolicyFailure> {
        let _ticking = self.ticking(&policy.name)?;
        let mut store = self.store(step);
        let instance = policy
            .pre
            .instantiate(&mut store)
            .map_err(|e| trap_error(&self.limits, &policy.name, e, false))?;
        Ok(ReusedInstance {
            store,
            instance,
            name: policy.name.clone(),
            ticks: self.deadline_ticks(),
            limits: self.limits,
            ticker: self.ticker,
        })
    }

    fn ticking(&self, policy: &str) -> Result<Option<Ticking>, PolicyFailure> {
        ticking(self.ticker, policy)
    }

    fn deadline_ticks(&self) -> u64 {
        (self.limits.time.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
    }

    /// A fresh store for one call, with the sandbox limits in force.
    fn store(&self, step: StepHost) -> Store<PolicyState> {
        let cancel = step.cancel().clone();
        let state = PolicyState {
            step,
            table: ResourceTable::new(),
            limits: MemoryLimiter {
                max_bytes: self.limits.memory_bytes,
                hit: false,
            },
            wasi: None,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        // Every tick asks whether the step was asked to stop; the time
        // limit is counted in ticks.
        let limit = self.deadline_ticks();
        let mut ticks = 0;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if let Some(signal) = cancel.requested() {
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
    pub fn call(
        &self,
        policy: &LoadedPolicy,
        step: StepHost,
        request_json: &str,
        facts: &HostFacts,
        previous: Option<&str>,
    ) -> (StepHost, Result<String, PolicyFailure>) {
        self.call_with(policy, step, request_json, &PolicyFacts::from(facts), previous)
    }

    /// [`Engine::call`] with the facts converted for the policies once (a
    /// chain's calls share them).
    pub(crate) fn call_with(
        &self,
        policy: &LoadedPolicy,
        step: StepHost,
        request_json: &str,
        facts: &PolicyFacts,
        previous: Option<&str>,
    ) -> (StepHost, Result<String, PolicyFailure>) {
        let _ticking = match self.ticking(&policy.name) {
            Ok(ticking) => ticking,
            Err(e) => return (step, Err(e)),
        };
        let mut store = self.store(step);
        let facts = &facts.0;
        let result = policy
            .pre
            .instantiate(&mut store)
            .and_then(|instance| instance.call_generate(&mut store, request_json, facts, &policy.settings, previous));
        let result = match result {
            Ok(Ok(spec)) => Ok(spec),
            Ok(Err(e)) => Err(policy_error(&policy.name, e)),
            Err(e) => Err(trap_error(&self.limits, &policy.name, e, store.data().limits.hit)),
        };
        let state = store.into_data();
        (state.step, result.map_err(|e| with_output(e, state.wasi.as_ref())))
    }

    /// A fresh instance of `policy` asked only for its name: what every step
    /// costs before the policy does any work (the benchmarks' floor for a
    /// fresh instance).
    #[cfg(feature = "bench")]
    pub fn fresh_instance_name(&self, policy: &LoadedPolicy, step: StepHost) -> Result<String, PolicyFailure> {
        self.fresh_metadata(policy, step).map(|metadata| metadata.name)
    }

    pub(super) fn fresh_metadata(
        &self,
        policy: &LoadedPolicy,
        step: StepHost,
    ) -> Result<wit_types::PolicyMetadata, PolicyFailure> {
        let _ticking = self.ticking(&policy.name)?;
        let mut store = self.store(step);
        policy
            .pre
            .instantiate(&mut store)
            .and_then(|instance| instance.call_metadata(&mut store))
            .map_err(|e| trap_error(&self.limits, &policy.name, e, false))
    }
}

/// What stopped a policy call that did not return: a cancellation, one of
/// `limits`, an exit, or a trap.
fn trap_error(limits: &Limits, policy: &str, e: wasmtime::Error, memory_limit_hit: bool) -> PolicyFailure {
    let policy = policy.to_string();
    if let Some(Interrupted(signal)) = e.downcast_ref::<Interrupted>() {
        return PolicyFailure::Interrupted {
            policy,
            signal: specwright_host_core::interrupt::name(*signal),
        };
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => PolicyFailure::Limit {
            policy,
            limit: format!("time limit ({:?}; raise it with --policy-timeout-ms)", limits.time),
            output: String::new(),
        },
        _ if memory_limit_hit => PolicyFailure::Limit {
            policy,
            limit: format!(
                "memory limit ({} MiB; raise it with --policy-memory-mib)",
                limits.memory_bytes >> 20
            ),
            output: String::new(),
        },
        _ if e.downcast_ref::<wasmtime_wasi::I32Exit>().is_some() => PolicyFailure::Trapped {
            policy,
            message: format!(
                "it called exit({}): a policy returns a spec or an error",
                e.downcast_ref::<wasmtime_wasi::I32Exit>().map_or(0, |exit| exit.0)
            ),
        },
        _ => PolicyFailure::Trapped {
            policy,
            message: trap_message(&e),
        },
    }
}

/// Why a call trapped: the root cause, with the wasm backtrace after it
/// (where the policy was), not before.
fn trap_message(e: &wasmtime::Error) -> String {
    let cause = e.root_cause().to_string();
    match e.downcast_ref::<wasmtime::WasmBacktrace>() {
        Some(backtrace) => format!("{cause}\n{backtrace}"),
        None => cause,
    }
}

/// `error` with what the policy wrote to stderr and stdout, when it fails
/// on its own (a trap, a limit, an internal error); a denial or an invalid
/// request says all it means.
fn with_output(error: PolicyFailure, wasi: Option<&super::wasi::WasiState>) -> PolicyFailure {
    let output = wasi.map(super::wasi::WasiState::output).unwrap_or_default();
    if output.is_empty() {
        return error;
    }
    match error {
        PolicyFailure::Trapped { policy, message } => PolicyFailure::Trapped {
            policy,
            message: message + &output,
        },
        PolicyFailure::Failed { policy, message } => PolicyFailure::Failed {
            policy,
            message: message + &output,
        },
        PolicyFailure::Limit { policy, limit, .. } => PolicyFailure::Limit { policy, limit, output },
        other => other,
    }
}

/// The epoch ticking, by `ticker`, while a call of `policy` runs (a call
/// that could not be held to its time limit fails).
fn ticking(ticker: super::ticks::Ticker, policy: &str) -> Result<Option<Ticking>, PolicyFailure> {
    Ticking::start(ticker).map_err(|message| PolicyFailure::Failed {
        policy: policy.to_string(),
        message,
    })
}

/// See [`Engine::reused_instance`].
#[cfg(feature = "bench")]
pub struct ReusedInstance {
    store: Store<PolicyState>,
    instance: super::bindings::Policy,
    name: String,
    ticks: u64,
    limits: Limits,
    ticker: super::ticks::Ticker,
}

#[cfg(feature = "bench")]
impl ReusedInstance {
    /// One `generate` call of the kept instance for a step of its own: a
    /// step's limits on host work count per step, not per instance.
    pub fn generate(
        &mut self,
        step: StepHost,
        request_json: &str,
        facts: &HostFacts,
        settings: &str,
    ) -> Result<String, PolicyFailure> {
        let _ticking = ticking(self.ticker, &self.name)?;
        self.store.data_mut().step = step;
        self.store.set_epoch_deadline(self.ticks);
        let facts = wit_types::HostFacts::from(facts);
        match self
            .instance
            .call_generate(&mut self.store, request_json, &facts, settings, None)
        {
            Ok(Ok(spec)) => Ok(spec),
            Ok(Err(e)) => Err(policy_error(&self.name, e)),
            Err(e) => Err(trap_error(&self.limits, &self.name, e, self.store.data().limits.hit)),
        }
    }
}
