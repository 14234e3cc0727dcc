//! The privileged half of the host, without the WebAssembly runtime: what a
//! policy's requests turn into (in-root resolution, mounts through the
//! [`sys::Syscalls`] trait, step records in the state directory, release and
//! gc) and the checks on what a policy returns. It builds without wasmtime,
//! so the fuzz targets and an auditor see only this.

pub mod audit;
pub mod cdi;
pub mod facts;
pub mod input;
pub mod interrupt;
pub mod metrics;
pub mod mount;
pub mod oci;
pub mod patch;
pub mod resolve;
pub mod schema;
pub mod state;
pub mod step;
pub mod strict_json;
pub mod sys;
pub mod validate;
