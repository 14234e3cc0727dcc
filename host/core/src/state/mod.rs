//! The host's state directory: temporary mountpoints, what each step
//! holds, and who is working on it.
//!
//! ```text
//! <state>/mounts/<step>-<n>/     temporary mountpoints, nowhere else
//! <state>/steps/<step>.json      what the step holds, written before each mount
//! <state>/locks/<step>.lock      held (flock) by the one process working on the step
//! <state>/bundles/<step>/        what `specwright run` writes for the step
//! <state>/selinux/<level>        an SELinux MCS level a step holds (its id inside)
//! <state>/reviewed/<key>/        what specwright-runc's chain approved for a container:
//!                                kept.json (its record), config.json (the runtime's bundle)
//! <state>/cache/                 precompiled policies
//! <state>/audit.jsonl            the audit trail
//! <state>/metrics.json           the metrics' totals (under metrics.lock)
//! <state>/metrics-spool/         counts of processes that found the lock held
//! <state>/policies/              policies pulled from registries, by digest
//! ```
//!
//! Nothing in it is trusted by path. The directory and its parts must
//! belong to this user and be writable by no one else, and so must every
//! directory above it (or be sticky, as /tmp is); everything inside is
//! opened relative to a directory descriptor without following symlinks,
//! only regular files are read, and every read is bounded.

mod at;
mod bundle;
mod cache;
mod dir;
mod lock;
mod metrics;
mod pulled;
mod record;
#[cfg(test)]
mod tests;
mod walk;

pub use at::{temporary_owner, Ownership};
pub use bundle::{Bundle, EngineConfig, GivenBundle};
pub use cache::{identity_kept_locally, CacheDir, CacheEntry, CompileLock};
pub use dir::{StateDir, DEFAULT_STATE_DIR};
pub use lock::StepLock;
pub use metrics::METRICS_WAIT;
pub use record::{
    is_mountpoint_of, ContainerRecord, HeldMount, MountpointKind, Owner, StepRecord, MAX_MOUNTPOINTS, MAX_STACKED,
};

use std::path::{Path, PathBuf};

/// Checks that the directory at `path` (which must exist) is one no other
/// user can change: reached through directories and symlinks of root or
/// this user (as the state dir is), itself this user's and writable by no
/// one else. For a directory whose contents decide what runs (a runtime's
/// state root).
pub fn check_trusted_dir(path: &Path) -> Result<(), StateError> {
    let given = std::path::absolute(path).map_err(|e| StateError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let (fd, real) = walk::open_trusted_dir(&given, None, &mut Vec::new())?;
    let stat = nix::sys::stat::fstat(&fd).map_err(at::io_at(&real))?;
    at::check_trusted(&real, &stat)
}

/// Checks that the host path `path` (absolute) names an object no user but
/// root, this one and `owners` can swap for another between a review and
/// the runtime's opening it (see `walk::check_fixed` for the rules).
pub fn check_fixed_path(path: &Path, owners: &[u32]) -> Result<(), StateError> {
    walk::check_fixed(path, owners)
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: corrupt state file: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("{id:?} is not a step id (ids name files in the state directory: letters, digits, '_', '.', '-', not starting with '.')")]
    BadId { id: String },
    #[error("{path}: not trusted ({why})")]
    Untrusted { path: PathBuf, why: String },
    #[error("step {id} is held by pid {pid}")]
    Held { id: String, pid: String },
    /// Another process has been compiling the same policy into the
    /// compile cache for longer than a process waits for it.
    #[error("{path}: another process has been compiling this policy for {} s, longer than one waits; try again once it is done, or precompile it (`specwright policy compile`)", waited.as_secs())]
    CompileBusy { path: PathBuf, waited: std::time::Duration },
    /// A stop was asked for (SIGINT, SIGTERM) while waiting for the lock of
    /// an entry another process is compiling.
    #[error("{path}: stopped by {} while waiting for another process compiling this policy", crate::interrupt::name(*signal))]
    CompileWaitStopped { path: PathBuf, signal: i32 },
}
