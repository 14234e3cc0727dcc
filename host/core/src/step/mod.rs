//! What the host does for one step: the privileged operations a policy
//! may ask for ([`requests`]), each checked against what the request
//! handed out and audited, and the ownership of every mount they make
//! ([`held`], released by [`release`]).

use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;
use specwright_core::request::{Mountable, Request};
use specwright_core::HostError;

use crate::audit::Audit;
use crate::state::{Owner, StateDir, StepLock, StepRecord};
use crate::sys::Syscalls;

mod container;
mod held;
mod release;
mod requests;
mod selinux;
#[cfg(test)]
mod tests;

pub use container::RuntimeStateRoot;
pub use release::{gc, release_locked, release_step, GcOutcome, ReleaseError, ReleaseReport};
use requests::{request_host_paths, Root};
pub use requests::{RootId, SourceId};
pub use selinux::MAX_CONTEXTS_BYTES;

/// What a policy may ask of the host in one step, beyond which every
/// further request is refused (and the step then fails and is released).
pub mod limits {
    /// materialize, mount-temporary, resolve and release calls.
    pub const MAX_HOST_CALLS: usize = 4096;
    /// Materialized handles a step may hold.
    pub const MAX_SOURCES: usize = 1024;
    /// The longest selector resolved (the kernel's PATH_MAX).
    pub const MAX_SELECTOR_BYTES: usize = 4096;
    /// Audit log bytes one step may write for a policy's requests.
    pub const MAX_AUDIT_BYTES: usize = 4 << 20;
}

/// How the host treats one step.
#[derive(Debug, Clone)]
pub struct StepOptions {
    /// Bind-mount every resolved selector onto its own mountpoint, by file
    /// descriptor, and hand the runtime that mountpoint.
    pub pin_selectors: bool,
    /// The process the step belongs to, for `gc`.
    pub owner: Owner,
    /// Where CDI spec files are read from, lowest priority first.
    pub cdi_spec_dirs: Arc<Vec<std::path::PathBuf>>,
    /// Whether a policy may have the host mount anything.
    pub mounting: Mounting,
    /// The SELinux container contexts file labels are made from; `None`
    /// for go-selinux's choice (container-selinux's
    /// /usr/share/containers/selinux/contexts, else the policy's
    /// /etc/selinux/<SELINUXTYPE>/contexts/lxc_contexts).
    pub selinux_contexts: Option<std::path::PathBuf>,
    /// Stops the step between operations when cancelled (its holdings
    /// released); the binaries pass the token their signals cancel.
    pub cancel: crate::interrupt::Cancel,
}

/// Who makes a step's mounts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mounting {
    /// The host, as the policies ask (specwright's own requests).
    #[default]
    Host,
    /// The engine that wrote the spec already made them (`specwright-runc`):
    /// a policy may inspect the mounts (`materialize`, `canonical-path`,
    /// `exists`, `mount-flags`, `resolve`) but every request that would
    /// mount is refused, so nothing outlives the wrapper's process.
    Engine,
}

/// CDI's default spec directories, lowest priority first.
pub const DEFAULT_CDI_SPEC_DIRS: &[&str] = &["/etc/cdi", "/var/run/cdi"];

impl Default for StepOptions {
    fn default() -> Self {
        StepOptions {
            pin_selectors: false,
            owner: Owner::this_process(),
            cdi_spec_dirs: Arc::new(DEFAULT_CDI_SPEC_DIRS.iter().map(std::path::PathBuf::from).collect()),
            mounting: Mounting::Host,
            selinux_contexts: None,
            cancel: crate::interrupt::Cancel::new(),
        }
    }
}

/// Host calls made and audit bytes written for a step, at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetUsed {
    calls: usize,
    audit_bytes: usize,
}

/// The privileged side of one step.
pub struct StepHost {
    id: String,
    state: StateDir,
    sys: Arc<dyn Syscalls>,
    audit: Arc<Audit>,
    options: StepOptions,
    /// Who is asking, for errors and the audit trail.
    actor: String,
    /// What each request mount materializes to, by request index.
    request_mounts: Vec<Vec<Mountable>>,
    /// Request index of each materialized handle.
    sources: Vec<usize>,
    /// Temporary mountpoints handed out, by handle.
    roots: Vec<Root>,
    record: StepRecord,
    /// The step is this process's while this is held.
    lock: Option<StepLock>,
    /// Whether mounts stay when this is dropped (the step succeeded).
    keep: bool,
    /// Host paths the request names: what `canonical_path` may look at.
    request_paths: Vec<String>,
    /// Host paths of the CDI mounts `cdi_registry` handed out.
    cdi_mount_sources: Vec<String>,
    /// Whether the step binds the host's /proc (`no-sandbox`).
    host_proc_bound: bool,
    /// The sandboxed step's SELinux labels, once made.
    selinux_labels: Option<specwright_core::selinux::Labels>,
    /// Host calls made and audit bytes written for this step (see [`limits`]).
    calls: usize,
    audit_bytes: usize,
}

impl StepHost {
    /// Starts step `request.id`, which `lock` holds for this process
    /// (a planned lock for a dry run); fails if the step already holds
    /// mounts from an earlier run.
    pub fn new(
        state: StateDir,
        sys: Arc<dyn Syscalls>,
        audit: Arc<Audit>,
        options: StepOptions,
        request: &Request,
        lock: StepLock,
    ) -> Result<StepHost, HostError> {
        if lock.id() != request.id {
            return Err(HostError::Failed(format!(
                "the lock held is step {}'s, not step {}'s",
                lock.id(),
                request.id
            )));
        }
        if sys
            .read_record(&state, &request.id)
            .map_err(|e| HostError::Failed(e.to_string()))?
            .is_some()
        {
            return Err(HostError::Refused(format!(
                "step {} already holds mounts; release it first (specwright release {})",
                request.id, request.id
            )));
        }
        let request_mounts = request
            .mounts
            .iter()
            .map(|m| m.materialize().map_err(|e| HostError::Refused(e.to_string())))
            .collect::<Result<_, _>>()?;
        Ok(StepHost {
            id: request.id.clone(),
            record: StepRecord::new(&request.id, options.owner),
            state,
            sys,
            audit,
            options,
            actor: "host".to_string(),
            request_mounts,
            sources: Vec::new(),
            roots: Vec::new(),
            lock: Some(lock),
            keep: false,
            request_paths: request_host_paths(request),
            cdi_mount_sources: Vec::new(),
            host_proc_bound: request.process_mode == specwright_core::request::ProcessMode::NoSandbox,
            selinux_labels: None,
            calls: 0,
            audit_bytes: 0,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The token that stops this step.
    pub fn cancel(&self) -> &crate::interrupt::Cancel {
        &self.options.cancel
    }

    /// For a step whose spec an engine wrote ([`Mounting::Engine`]): the
    /// request the next policy is given (derived from the spec it
    /// receives), and the host paths that spec names beyond it
    /// (`extra_paths`), which `canonical-path` and `exists` may look at.
    /// The earlier policy's handles are gone with its instance.
    pub fn set_engine_request(&mut self, request: &Request, extra_paths: &[String]) -> Result<(), HostError> {
        if self.options.mounting != Mounting::Engine || !self.record.mounts.is_empty() {
            return Err(HostError::Failed(
                "a step's request changes only while the engine's spec is reviewed".to_string(),
            ));
        }
        self.request_mounts = request
            .mounts
            .iter()
            .map(|m| m.materialize().map_err(|e| HostError::Refused(e.to_string())))
            .collect::<Result<_, _>>()?;
        self.sources.clear();
        self.roots.clear();
        self.request_paths = request_host_paths(request);
        for path in extra_paths {
            if !self.request_paths.contains(path) {
                self.request_paths.push(path.clone());
            }
        }
        self.host_proc_bound = request.process_mode == specwright_core::request::ProcessMode::NoSandbox;
        Ok(())
    }

    /// Names who asks for the operations that follow (a policy's name).
    pub fn set_actor(&mut self, actor: &str) {
        self.actor = actor.to_string();
    }

    /// What the step has used so far of its budget of host calls and
    /// audit bytes ([`limits`]).
    pub fn budget_used(&self) -> BudgetUsed {
        BudgetUsed {
            calls: self.calls,
            audit_bytes: self.audit_bytes,
        }
    }

    /// Gives back what was used of the budget since `used` (what a
    /// monitored policy used: it may not leave the policies after it
    /// less to work with).
    pub fn restore_budget(&mut self, used: BudgetUsed) {
        self.calls = used.calls;
        self.audit_bytes = used.audit_bytes;
    }

    /// Runs `op`, then audits it; a refusal names the policy and the
    /// operation. `args` and `show` build the record's arguments and result
    /// only when the audit wants it.
    fn audited<T>(
        &mut self,
        op: &str,
        args: impl FnOnce() -> Value,
        f: impl FnOnce(&mut Self) -> Result<T, HostError>,
        show: impl FnOnce(&Self, &T) -> Value,
    ) -> Result<T, HostError> {
        let start = Instant::now();
        self.calls += 1;
        let result = if let Some(signal) = self.options.cancel.requested() {
            Err(HostError::Failed(format!(
                "interrupted by {}",
                crate::interrupt::name(signal)
            )))
        } else if self.calls > limits::MAX_HOST_CALLS {
            Err(HostError::Refused(format!(
                "the step reached its limit of {} host calls",
                limits::MAX_HOST_CALLS
            )))
        } else if self.audit_bytes > limits::MAX_AUDIT_BYTES {
            Err(HostError::Refused(format!(
                "the step reached its limit of {} audit bytes",
                limits::MAX_AUDIT_BYTES
            )))
        } else {
            f(self)
        };
        let result = result.map_err(|e| match e {
            HostError::Refused(m) => HostError::Refused(format!("policy {} may not {op}: {m}", self.actor)),
            failed => failed,
        });
        if self.audit.wants(result.is_ok()) {
            let err = result.as_ref().err().map(ToString::to_string);
            let outcome = match &result {
                Ok(v) => Ok(show(self, v)),
                Err(_) => Err(err.as_deref().unwrap_or_default()),
            };
            self.audit_bytes += self
                .audit
                .record(&self.id, &self.actor, op, args(), outcome, start.elapsed());
        }
        result
    }

    /// Whether the step holds any mount.
    pub fn holds_mounts(&self) -> bool {
        self.record.holds_anything()
    }

    /// Keeps every mount for the step's lifetime; `specwright release`
    /// undoes them. Returns the step's lock: the step stays this process's
    /// until the caller drops it (after writing the bundle, say).
    pub fn keep(mut self) -> StepLock {
        self.keep = true;
        self.lock.take().unwrap_or_else(|| StepLock::planned(&self.id))
    }

    /// Unmounts and removes everything the step holds, reporting every
    /// failure; a step left holding nothing lets its lock go.
    pub fn release_all(mut self) -> Result<ReleaseReport, ReleaseError> {
        self.keep = true;
        let result = self.release_held();
        self.let_go();
        result
    }

    /// Drops the lock, removing its file when the step holds nothing.
    fn let_go(&mut self) {
        if let Some(lock) = self.lock.take() {
            if !self.record.holds_anything() {
                if let Err(e) = self.sys.remove_lock(lock) {
                    tracing::warn!(step = %self.id, error = %e, "removing the step's lock file");
                }
            }
        }
    }
}

impl Drop for StepHost {
    /// A step that was neither kept nor released (an error, a trap, a
    /// panic on the way) leaves nothing mounted.
    fn drop(&mut self) {
        if !self.keep && self.holds_mounts() {
            if let Err(e) = self.release_held() {
                tracing::error!(step = %self.id, error = %e, "releasing the step after a failure");
            }
        }
        self.let_go();
    }
}
