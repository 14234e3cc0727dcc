//! Releasing what a step holds, by the process that made it or by a new
//! one from the step's record (`release`, `gc`), and only while holding
//! the step's lock: a step another process works on is never touched.

use std::path::Path;
use std::time::Instant;

use serde_json::json;
use specwright_core::selinux::McsLevel;

use crate::audit::Audit;
use crate::mount::unmount_all;
use crate::state::{HeldMount, MountpointKind, StateDir, StateError, StepLock};
use crate::sys::Syscalls;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReleaseError {
    /// Mountpoints that could not be released (they stay recorded).
    #[error("step {id}: {}", joined(failures))]
    Unmount {
        id: String,
        failures: Vec<MountpointFailure>,
    },
    #[error("step {id}: its container could not be deleted: {source}")]
    Container {
        id: String,
        source: crate::sys::ContainerError,
    },
    /// The step's SELinux MCS level could not be let go (it stays recorded).
    #[error("step {id}: its SELinux level {level} could not be let go: {source}")]
    SelinuxLevel {
        id: String,
        level: String,
        source: StateError,
    },
    #[error(transparent)]
    State(#[from] StateError),
}

/// Why one mountpoint of a step could not be released.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MountpointFailure {
    #[error("umount {path}: {errno}")]
    Unmount { path: String, errno: nix::errno::Errno },
    #[error("removing {path}: {errno}")]
    Remove { path: String, errno: nix::errno::Errno },
    /// A record names a mountpoint that is not a plain name of the state dir.
    #[error("bad mountpoint name {0:?}")]
    BadName(String),
    /// The worker releasing it panicked.
    #[error("{0}: its release thread panicked")]
    Panicked(String),
}

fn joined(failures: &[MountpointFailure]) -> String {
    failures.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// What a release did, beyond succeeding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReleaseReport {
    /// Mountpoints released.
    pub released: usize,
    /// Mountpoints that were busy, with the retries spent, and whether a
    /// lazy detach was needed in the end.
    pub busy: Vec<(String, u32, bool)>,
}

impl ReleaseReport {
    /// One line a busy mountpoint, for the user.
    pub fn warnings(&self) -> Vec<String> {
        self.busy
            .iter()
            .map(|(path, retries, detached)| {
                if *detached {
                    format!("{path} stayed busy after {retries} retries; detached lazily (it goes away when the last user closes it)")
                } else {
                    format!("{path} was busy; unmounted after {retries} retries")
                }
            })
            .collect()
    }
}

/// Unmounts what is stacked on `path` and removes it.
pub(crate) fn release_mountpoint(
    sys: &dyn Syscalls,
    path: &Path,
    kind: MountpointKind,
    stacked: usize,
) -> Result<crate::mount::UnmountReport, MountpointFailure> {
    let shown = || path.display().to_string();
    let target = kind.target(path);
    let report =
        unmount_all(sys, &target, stacked).map_err(|errno| MountpointFailure::Unmount { path: shown(), errno })?;
    let removed = match kind {
        MountpointKind::Dir => sys.remove_dir(path),
        MountpointKind::File => sys.remove_file(path),
        MountpointKind::FileInDir => match sys.remove_file(&target) {
            Ok(()) | Err(nix::errno::Errno::ENOENT) => sys.remove_dir(path),
            Err(errno) => Err(errno),
        },
    };
    match removed {
        Ok(()) | Err(nix::errno::Errno::ENOENT) => Ok(report),
        Err(errno) => Err(MountpointFailure::Remove { path: shown(), errno }),
    }
}

/// Releases `held` concurrently; returns what remains held, what happened,
/// and every failure.
pub(crate) fn release_mounts(
    state: &StateDir,
    sys: &dyn Syscalls,
    held: &[HeldMount],
    workers: usize,
) -> (Vec<HeldMount>, ReleaseReport, Vec<MountpointFailure>) {
    let release_one = |m: &HeldMount| match state.mountpoint(&m.name) {
        Some(path) => release_mountpoint(sys, &path, m.kind, m.stacked).map(|r| (path.display().to_string(), r)),
        None => Err(MountpointFailure::BadName(m.name.clone())),
    };
    let results = for_each_concurrently(held, workers, release_one);
    let mut remaining = Vec::new();
    let mut report = ReleaseReport::default();
    let mut failures = Vec::new();
    for (m, result) in held.iter().zip(results) {
        match result {
            Ok((path, r)) => {
                report.released += 1;
                if r.busy_retries > 0 {
                    report.busy.push((path, r.busy_retries, r.detached));
                }
            }
            Err(e) => {
                failures.push(e);
                remaining.push(m.clone());
            }
        }
    }
    (remaining, report, failures)
}

type Released = Result<(String, crate::mount::UnmountReport), MountpointFailure>;

/// Mountpoints released at once: busy ones back off and retry, so they are
/// not waited for one after another; a record never gets a thread each.
pub(crate) const RELEASE_WORKERS: usize = 8;

/// Runs `release_one` over `held` on up to `workers` threads, this one
/// included (so a thread that cannot be started only slows it down).
fn for_each_concurrently(
    held: &[HeldMount],
    workers: usize,
    release_one: impl Fn(&HeldMount) -> Released + Sync,
) -> Vec<Released> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    if held.len() <= 1 || workers <= 1 {
        return held.iter().map(release_one).collect();
    }
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Released>>> = Mutex::new(vec![None; held.len()]);
    let work = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(m) = held.get(i) else { break };
        let result = release_one(m);
        if let Ok(mut results) = results.lock() {
            results[i] = Some(result);
        }
    };
    std::thread::scope(|scope| {
        // Fewer workers if one cannot start; this thread works anyway.
        let workers: Vec<_> = (1..held.len().min(workers))
            .filter_map(|_| std::thread::Builder::new().spawn_scoped(scope, work).ok())
            .collect();
        work();
        for worker in workers {
            // A worker's panic is reported below as the mountpoint it left.
            let _ = worker.join();
        }
    });
    let results = results.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner());
    results
        .into_iter()
        .zip(held)
        .map(|(r, m)| r.unwrap_or_else(|| Err(MountpointFailure::Panicked(m.name.clone()))))
        .collect()
}

/// Releases everything step `id` holds, from its record: the mountpoints
/// are unmounted concurrently and every failure is reported. Idempotent;
/// what could not be released stays recorded for the next attempt. A step
/// another process holds is refused, untouched.
pub fn release_step(
    state: &StateDir,
    sys: &dyn Syscalls,
    audit: &Audit,
    id: &str,
) -> Result<ReleaseReport, ReleaseError> {
    let lock = sys.lock_step(state, id)?;
    release_locked(state, sys, audit, lock)
}

/// [`release_step`] for a step this process already holds.
pub fn release_locked(
    state: &StateDir,
    sys: &dyn Syscalls,
    audit: &Audit,
    lock: StepLock,
) -> Result<ReleaseReport, ReleaseError> {
    let id = lock.id().to_string();
    let start = Instant::now();
    let Some(mut record) = sys.read_record(state, &id)? else {
        sys.remove_bundle(state, &id)?;
        sys.remove_lock(lock)?;
        return Ok(ReleaseReport::default());
    };
    if let Some(container) = &record.container {
        // A runner that died leaves its container running: it goes first,
        // so nothing runs on after its mounts are gone.
        sys.delete_container(&container.runtime, &container.id)
            .map_err(|source| ReleaseError::Container { id: id.clone(), source })?;
        record.container = None;
        sys.write_record(state, &record)?;
    }
    let workers = if sys.releases_concurrently() {
        RELEASE_WORKERS
    } else {
        1
    };
    let (remaining, report, failures) = release_mounts(state, sys, &record.mounts, workers);
    let held = record.mounts.len();
    record.mounts = remaining;
    let level = release_level(state, sys, &id, &mut record.selinux_level);
    let summary = json!({"released": report.released, "busy": report.busy.len()});
    let joined = joined(&failures);
    audit.record(
        &id,
        "host",
        "release-step",
        json!({"mountpoints": held}),
        if failures.is_empty() {
            Ok(summary)
        } else {
            Err(joined.as_str())
        },
        start.elapsed(),
    );
    if record.holds_anything() {
        sys.write_record(state, &record)?;
    } else {
        sys.remove_bundle(state, &id)?;
        sys.remove_record(state, &id)?;
        sys.remove_lock(lock)?;
    }
    if failures.is_empty() {
        level.map(|()| report)
    } else {
        Err(ReleaseError::Unmount { id, failures })
    }
}

/// Lets step `id`'s SELinux MCS level go, if it holds one; it stays
/// recorded when that fails.
pub(crate) fn release_level(
    state: &StateDir,
    sys: &dyn Syscalls,
    id: &str,
    held: &mut Option<McsLevel>,
) -> Result<(), ReleaseError> {
    let Some(level) = *held else {
        return Ok(());
    };
    sys.release_mcs_level(state, id, &level)
        .map_err(|source| ReleaseError::SelinuxLevel {
            id: id.to_string(),
            level: level.to_string(),
            source,
        })?;
    *held = None;
    Ok(())
}

/// What `gc` did for one step.
#[derive(Debug)]
pub enum GcOutcome {
    /// The owner still runs.
    Kept {
        id: String,
        owner: u32,
    },
    /// Another process works on the step right now.
    Held {
        id: String,
        pid: String,
    },
    Released {
        id: String,
        report: ReleaseReport,
    },
    Failed {
        id: String,
        error: String,
    },
}

/// Releases every step whose owner process is gone and that no process
/// holds. A corrupt record is reported, not trusted: nothing it names is
/// touched.
pub fn gc(state: &StateDir, sys: &dyn Syscalls, audit: &Audit) -> Result<Vec<GcOutcome>, StateError> {
    let mut outcomes = Vec::new();
    for id in sys.step_ids(state)? {
        let failed = |id: String, e: &dyn std::fmt::Display| GcOutcome::Failed {
            id,
            error: e.to_string(),
        };
        let lock = match sys.lock_step(state, &id) {
            Ok(lock) => lock,
            Err(StateError::Held { pid, .. }) => {
                outcomes.push(GcOutcome::Held { id, pid });
                continue;
            }
            Err(e) => {
                outcomes.push(failed(id, &e));
                continue;
            }
        };
        let record = match sys.read_record(state, &id) {
            Ok(Some(record)) => record,
            Ok(None) => {
                if let Err(e) = sys.remove_lock(lock) {
                    outcomes.push(failed(id, &e));
                }
                continue;
            }
            Err(e) => {
                outcomes.push(failed(id, &e));
                continue;
            }
        };
        if record.owner.is_alive() {
            outcomes.push(GcOutcome::Kept {
                id,
                owner: record.owner.pid,
            });
            continue;
        }
        outcomes.push(match release_locked(state, sys, audit, lock) {
            Ok(report) => GcOutcome::Released { id, report },
            Err(e) => failed(id, &e),
        });
    }
    Ok(outcomes)
}
