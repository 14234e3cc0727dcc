//! The host side of the WIT world: the store's data, and each import as a
//! thin call into [`StepHost`], which checks and performs it, made from
//! [`specwright_core::host_calls!`]. Values cross the boundary through
//! `From`, one conversion per type.

use specwright_core::request::Mountable;
use specwright_core::{HostCalls, HostFacts};
use wasmtime::component::{Resource, ResourceTable};

use super::bindings::specwright::policy::{host as wit_host, types as wit_types};
use super::call::MemoryLimiter;
use super::PolicyFailure;
use crate::step::{RootId, SourceId, StepHost};

/// Host-side state of a `materialized` handle.
pub struct MaterializedRep(SourceId);

/// Host-side state of a `mounted-root` handle.
pub struct MountedRootRep(RootId);

/// The store's data: the step's host side and the handles the policy holds.
pub struct PolicyState {
    pub(super) step: StepHost,
    pub(super) table: ResourceTable,
    pub(super) limits: MemoryLimiter,
    /// The WASI the policy's language runtime sees ([`super::wasi`]),
    /// made on first use.
    pub(super) wasi: Option<super::wasi::WasiState>,
}

impl From<specwright_core::HostError> for wit_types::HostError {
    fn from(e: specwright_core::HostError) -> Self {
        match e {
            specwright_core::HostError::Refused(m) => wit_types::HostError::Refused(m),
            specwright_core::HostError::Failed(m) => wit_types::HostError::Failed(m),
        }
    }
}

impl From<Mountable> for wit_types::Mount {
    fn from(m: Mountable) -> Self {
        wit_types::Mount {
            kind: m.kind,
            source: m.source,
            options: m.options,
        }
    }
}

impl From<specwright_core::selinux::Labels> for wit_host::StepLabels {
    fn from(labels: specwright_core::selinux::Labels) -> Self {
        wit_host::StepLabels {
            process: labels.process,
            mount: labels.mount,
        }
    }
}

impl From<&HostFacts> for wit_types::HostFacts {
    fn from(facts: &HostFacts) -> Self {
        wit_types::HostFacts {
            kernel_release: facts.kernel_release.clone(),
            seccomp: facts.seccomp,
            first_free_loop: facts.first_free_loop,
            in_user_namespace: facts.in_user_namespace,
            arch: facts.arch.clone(),
            capabilities: facts.capabilities.clone(),
            cgroup_namespace: facts.cgroup_namespace,
            apparmor: facts.apparmor,
            selinux: facts.selinux,
        }
    }
}

pub(super) fn policy_error(policy: &str, e: wit_types::PolicyError) -> PolicyFailure {
    let policy = policy.to_string();
    match e {
        wit_types::PolicyError::InvalidRequest(message) => PolicyFailure::InvalidRequest { policy, message },
        wit_types::PolicyError::Denied(reason) => PolicyFailure::Denied { policy, reason },
        wit_types::PolicyError::Internal(message) => PolicyFailure::Failed { policy, message },
    }
}

impl wit_types::Host for PolicyState {}

/// An argument's WIT type.
macro_rules! wit_arg_type {
    (u32) => { u32 };
    (bool) => { bool };
    (str) => { String };
    (u32s) => { Vec<u32> };
    (source) => { Resource<MaterializedRep> };
    (root) => { Resource<MountedRootRep> };
    (owned_root) => { Resource<MountedRootRep> };
}

/// A result's WIT type.
macro_rules! wit_value_type {
    (unit) => { () };
    (bool) => { bool };
    (u64) => { u64 };
    (string) => { String };
    (source) => { Resource<MaterializedRep> };
    (root) => { Resource<MountedRootRep> };
    (mounts) => { Vec<wit_types::Mount> };
    (cdi_registry) => { String };
    (labels) => { wit_host::StepLabels };
}

/// What the import returns: a `host-error` for the policy, or a trap.
macro_rules! wit_return_type {
    (fallible, $value:ty) => { wasmtime::Result<Result<$value, wit_types::HostError>> };
    (total, $value:ty) => { wasmtime::Result<$value> };
}

/// An argument taken from WIT: a handle looked up in (or, given back,
/// taken out of) the store's table; a handle the policy does not hold traps.
macro_rules! from_wit {
    ($state:ident, source, $arg:ident) => {
        $state.table.get(&$arg)?.0
    };
    ($state:ident, root, $arg:ident) => {
        $state.table.get(&$arg)?.0
    };
    ($state:ident, owned_root, $arg:ident) => {
        $state.table.delete($arg)?.0
    };
    ($state:ident, $kind:ident, $arg:ident) => {
        $arg
    };
}

/// An argument as [`HostCalls`] takes it.
macro_rules! step_arg {
    (u32, $arg:ident) => {
        $arg
    };
    (bool, $arg:ident) => {
        $arg
    };
    (owned_root, $arg:ident) => {
        $arg
    };
    ($kind:ident, $arg:ident) => {
        &$arg
    };
}

/// A result handed to WIT: a handle made in the store's table.
macro_rules! to_wit {
    ($state:ident, source, $value:ident) => {
        $state.table.push(MaterializedRep($value))?
    };
    ($state:ident, root, $value:ident) => {
        $state.table.push(MountedRootRep($value))?
    };
    ($state:ident, mounts, $value:ident) => {
        $value.into_iter().map(wit_types::Mount::from).collect()
    };
    ($state:ident, cdi_registry, $value:ident) => {
        serde_json::to_string(&$value)?
    };
    ($state:ident, labels, $value:ident) => {
        wit_host::StepLabels::from($value)
    };
    ($state:ident, $kind:ident, $value:ident) => {
        $value
    };
}

/// The step's answer as the import returns it.
macro_rules! wit_return {
    (fallible, $state:ident, $kind:ident, $answer:ident) => {
        match $answer {
            Ok(value) => Ok(Ok(to_wit!($state, $kind, value))),
            Err(e) => Ok(Err(e.into())),
        }
    };
    (total, $state:ident, $kind:ident, $answer:ident) => {{
        let value = $answer.map_err(wasmtime::Error::msg)?;
        Ok(to_wit!($state, $kind, value))
    }};
}

/// The imports of one group of [`specwright_core::host_calls!`], each a
/// call of [`StepHost`]'s [`HostCalls`].
macro_rules! wit_imports {
    ($( $(#[$attr:meta])* fn $name:ident($($arg:ident: $kind:ident),*) -> $value:ident = $wit:ident, $fallibility:ident; )*) => {
        $(
            fn $wit(&mut self, $($arg: wit_arg_type!($kind)),*) -> wit_return_type!($fallibility, wit_value_type!($value)) {
                $( let $arg = from_wit!(self, $kind, $arg); )*
                let answer = HostCalls::$name(&mut self.step, $(step_arg!($kind, $arg)),*);
                wit_return!($fallibility, self, $value, answer)
            }
        )*
    };
}

/// WIT's `host` interface and its resources over [`StepHost`]. Dropping a
/// handle does not unmount: the step owns the mount.
macro_rules! wit_host_over_step {
    (host { $($host:tt)* } materialized { $($materialized:tt)* } mounted_root { $($mounted_root:tt)* }) => {
        impl wit_host::Host for PolicyState {
            wit_imports!($($host)*);
        }

        impl wit_host::HostMaterialized for PolicyState {
            wit_imports!($($materialized)*);

            fn drop(&mut self, source: Resource<MaterializedRep>) -> wasmtime::Result<()> {
                self.table.delete(source)?;
                Ok(())
            }
        }

        impl wit_host::HostMountedRoot for PolicyState {
            wit_imports!($($mounted_root)*);

            fn drop(&mut self, root: Resource<MountedRootRep>) -> wasmtime::Result<()> {
                self.table.delete(root)?;
                Ok(())
            }
        }
    };
}

specwright_core::host_calls!(wit_host_over_step);
