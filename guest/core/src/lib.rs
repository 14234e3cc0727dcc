//! specwright's pure spec logic.
//!
//! Everything here is deterministic code over plain data: it compiles to
//! wasm for policies and natively for tests and benchmarks. Privileged work
//! (mounting, resolving paths on the host) is reached only through the
//! [`HostCalls`] trait, which the policy SDK implements over WIT imports and
//! the host implements directly.

pub mod buildkit;
pub mod cdi;
pub mod derive;
pub mod facts;
pub mod host_calls;
mod json;
pub mod mounts;
pub mod opts;
pub mod request;
pub mod seccomp;
pub mod seccomp_profile;
pub mod selinux;
pub mod spec;
pub mod static_lists;

pub use facts::HostFacts;
pub use host_calls::{not_offered, HostCalls, HostError};
pub use request::Request;
pub use spec::Spec;

/// Why a policy produced no spec; mirrors the WIT `policy-error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("denied: {0}")]
    Denied(String),
    #[error("{0}")]
    Internal(String),
}
