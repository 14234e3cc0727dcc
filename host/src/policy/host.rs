//! The host side of the WIT world: the store's data, and each import as a
//! thin call into [`StepHost`], which checks and performs it. Values cross
//! the boundary through `From`, one conversion per type.

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

impl wit_host::Host for PolicyState {
    fn materialize(&mut self, index: u32) -> wasmtime::Result<Result<Resource<MaterializedRep>, wit_types::HostError>> {
        match self.step.materialize(index) {
            Ok((id, _)) => Ok(Ok(self.table.push(MaterializedRep(id))?)),
            Err(e) => Ok(Err(e.into())),
        }
    }

    fn mount_temporary(
        &mut self,
        source: Resource<MaterializedRep>,
        entries: Vec<u32>,
    ) -> wasmtime::Result<Result<Resource<MountedRootRep>, wit_types::HostError>> {
        let id = self.table.get(&source)?.0;
        match self.step.mount_temporary(&id, &entries) {
            Ok(root) => Ok(Ok(self.table.push(MountedRootRep(root))?)),
            Err(e) => Ok(Err(e.into())),
        }
    }

    fn canonical_path(&mut self, path: String) -> wasmtime::Result<Result<String, wit_types::HostError>> {
        Ok(self.step.canonical_path(&path).map_err(Into::into))
    }

    fn exists(&mut self, path: String) -> wasmtime::Result<Result<bool, wit_types::HostError>> {
        Ok(self.step.exists(&path).map_err(Into::into))
    }

    fn cdi_registry(&mut self) -> wasmtime::Result<Result<String, wit_types::HostError>> {
        Ok(self
            .step
            .cdi_registry()
            .and_then(|r| serde_json::to_string(&r).map_err(|e| specwright_core::HostError::Failed(e.to_string())))
            .map_err(Into::into))
    }

    fn mount_flags(&mut self, path: String) -> wasmtime::Result<Result<u64, wit_types::HostError>> {
        Ok(self.step.mount_flags(&path).map_err(Into::into))
    }

    fn selinux_labels(
        &mut self,
        privileged: bool,
    ) -> wasmtime::Result<Result<wit_host::StepLabels, wit_types::HostError>> {
        Ok(self.step.selinux_labels(privileged).map(Into::into).map_err(Into::into))
    }

    fn release(&mut self, root: Resource<MountedRootRep>) -> wasmtime::Result<Result<(), wit_types::HostError>> {
        let id = self.table.delete(root)?.0;
        Ok(self.step.release(id).map_err(Into::into))
    }
}

impl wit_host::HostMaterialized for PolicyState {
    fn mounts(&mut self, source: Resource<MaterializedRep>) -> wasmtime::Result<Vec<wit_types::Mount>> {
        let id = self.table.get(&source)?.0;
        let mounts = self.step.source_mounts(id).map_err(wasmtime::Error::msg)?;
        Ok(mounts.into_iter().map(Into::into).collect())
    }

    fn resolve(
        &mut self,
        source: Resource<MaterializedRep>,
        entry: u32,
        selector: String,
    ) -> wasmtime::Result<Result<String, wit_types::HostError>> {
        let id = self.table.get(&source)?.0;
        Ok(self.step.resolve_in_source(&id, entry, &selector).map_err(Into::into))
    }

    fn pin(
        &mut self,
        source: Resource<MaterializedRep>,
        entry: u32,
        selector: String,
    ) -> wasmtime::Result<Result<Resource<MountedRootRep>, wit_types::HostError>> {
        let id = self.table.get(&source)?.0;
        match self.step.pin_in_source(&id, entry, &selector) {
            Ok(root) => Ok(Ok(self.table.push(MountedRootRep(root))?)),
            Err(e) => Ok(Err(e.into())),
        }
    }

    fn drop(&mut self, source: Resource<MaterializedRep>) -> wasmtime::Result<()> {
        self.table.delete(source)?;
        Ok(())
    }
}

impl wit_host::HostMountedRoot for PolicyState {
    fn path(&mut self, root: Resource<MountedRootRep>) -> wasmtime::Result<String> {
        let id = self.table.get(&root)?.0;
        self.step.root_path(&id).map_err(wasmtime::Error::msg)
    }

    fn resolve(
        &mut self,
        root: Resource<MountedRootRep>,
        selector: String,
    ) -> wasmtime::Result<Result<String, wit_types::HostError>> {
        let id = self.table.get(&root)?.0;
        Ok(self.step.resolve_in_root(&id, &selector).map_err(Into::into))
    }

    fn pin(
        &mut self,
        root: Resource<MountedRootRep>,
        selector: String,
    ) -> wasmtime::Result<Result<Resource<MountedRootRep>, wit_types::HostError>> {
        let id = self.table.get(&root)?.0;
        match self.step.pin_in_root(&id, &selector) {
            Ok(pinned) => Ok(Ok(self.table.push(MountedRootRep(pinned))?)),
            Err(e) => Ok(Err(e.into())),
        }
    }

    /// Dropping a handle does not unmount: the step owns the mount.
    fn drop(&mut self, root: Resource<MountedRootRep>) -> wasmtime::Result<()> {
        self.table.delete(root)?;
        Ok(())
    }
}
