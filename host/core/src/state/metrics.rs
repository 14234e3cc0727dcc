//! The metrics totals in the state dir (`metrics.json`, under
//! `metrics.lock`) and the text file they are written to.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::unistd::{unlinkat, UnlinkatFlags};
use std::os::fd::AsRawFd;

use super::at::{open_subdir, read_bounded, write_atomically, Dir, TMP_SEQ};
use super::dir::StateDir;
use super::lock::open_lock_file;
use super::StateError;
use crate::metrics::Metrics;

/// The most bytes the totals may take (a few per policy and mode).
const MAX_TOTALS_BYTES: u64 = 16 << 20;
/// How long a process waits for another adding its counts.
pub const METRICS_WAIT: Duration = Duration::from_secs(1);

impl StateDir {
    /// Adds `tally` to the totals kept in the state dir, under its lock,
    /// and writes the totals to `textfile` in Prometheus' text format,
    /// replacing it atomically (a fresh file in its directory, renamed
    /// over it, readable by all: node_exporter runs as its own user). Totals
    /// that cannot be read (damaged) start again from this tally, as a
    /// counter reset, which Prometheus' rates take in their stride.
    ///
    /// When another process holds the lock longer than [`METRICS_WAIT`],
    /// the tally is left in `metrics-spool/` instead (the text file is not
    /// written this time), and the next process to take the lock adds it:
    /// no count is lost, and no container waits longer than that.
    pub fn add_metrics(&self, tally: &Metrics, textfile: &Path) -> Result<(), StateError> {
        let open = self.opened()?;
        let spool = open_subdir(&open.root, "metrics-spool", true)?;
        let lock_path = self.root().join("metrics.lock");
        let (fd, _) = open_lock_file(open.root.fd(), "metrics.lock", &lock_path)?;
        let _held = match lock_within(File::from(fd), &lock_path, METRICS_WAIT)? {
            Some(held) => held,
            None => return spool_tally(&spool, tally),
        };
        let path = self.root().join("metrics.json");
        let mut totals = match read_bounded(open.root.fd(), &path, "metrics.json", MAX_TOTALS_BYTES)? {
            Some(bytes) => serde_json::from_slice::<Metrics>(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "metrics totals unreadable; counting again from zero");
                Metrics::default()
            }),
            None => Metrics::default(),
        };
        let spooled = spooled_tallies(&spool)?;
        for (_, spooled) in &spooled {
            totals.add(spooled);
        }
        totals.add(tally);
        let json = serde_json::to_vec(&totals).map_err(|e| StateError::Io {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        write_atomically(open.root.fd(), self.root(), "metrics.json", &[&json], 0o600, true)?;
        // Counted: the spooled tallies go (a crash before this counts
        // them twice, never not at all).
        for (name, _) in &spooled {
            match unlinkat(spool.fd(), name.as_str(), UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => tracing::warn!(file = %name, error = %e, "removing a spooled metrics tally"),
            }
        }
        replace_file(textfile, totals.render().as_bytes()).map_err(|source| StateError::Io {
            path: textfile.to_path_buf(),
            source,
        })
    }
}

/// Leaves `tally` in the spool for the next holder of the lock.
fn spool_tally(spool: &Dir, tally: &Metrics) -> Result<(), StateError> {
    let json = serde_json::to_vec(tally).map_err(|e| StateError::Io {
        path: spool.path.clone(),
        source: std::io::Error::other(e),
    })?;
    let name = format!(
        "{}-{}.json",
        std::process::id(),
        TMP_SEQ.fetch_add(1, Ordering::Relaxed)
    );
    write_atomically(spool.fd(), &spool.path, &name, &[&json], 0o600, true)?;
    tracing::warn!(spool = %spool.path.display(), "the metrics were locked longer than a process waits; its counts are spooled for the next");
    Ok(())
}

/// The tallies in the spool, by file name (one that cannot be read is
/// left there, and said so).
fn spooled_tallies(spool: &Dir) -> Result<Vec<(String, Metrics)>, StateError> {
    let listing = format!("/proc/self/fd/{}", spool.fd().as_raw_fd());
    let io = |source| StateError::Io {
        path: spool.path.clone(),
        source,
    };
    let mut tallies = Vec::new();
    for entry in std::fs::read_dir(listing).map_err(io)? {
        let name = entry.map_err(io)?.file_name();
        let Some(name) = name.to_str().filter(|n| n.ends_with(".json")) else {
            continue;
        };
        let path = spool.path.join(name);
        let Some(bytes) = read_bounded(spool.fd(), &path, name, MAX_TOTALS_BYTES)? else {
            continue;
        };
        match serde_json::from_slice::<Metrics>(&bytes) {
            Ok(tally) => tallies.push((name.to_string(), tally)),
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "a spooled metrics tally unreadable"),
        }
    }
    Ok(tallies)
}

/// An exclusive `flock` on `file`, waiting at most `wait` (`None` past it).
fn lock_within(mut file: File, path: &Path, wait: Duration) -> Result<Option<Flock<File>>, StateError> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(held) => return Ok(Some(held)),
            Err((back, Errno::EWOULDBLOCK)) => {
                if start.elapsed() >= wait {
                    return Ok(None);
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
                file = back;
            }
            Err((_, e)) => {
                return Err(StateError::Io {
                    path: path.to_path_buf(),
                    source: e.into(),
                })
            }
        }
    }
}

/// Replaces `path` with `bytes`: a fresh file beside it (created
/// exclusively, so never through a planted symlink), mode 0644, renamed
/// over it; removed again on failure.
fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "names no file"))?;
    let temporary: PathBuf = dir.join(format!(
        ".{}.{}-{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        TMP_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc_nofollow())
        .open(&temporary)
        .and_then(|mut file| {
            file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
            file.write_all(bytes)
        })
        .and_then(|()| std::fs::rename(&temporary, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

fn libc_nofollow() -> i32 {
    nix::fcntl::OFlag::O_NOFOLLOW.bits()
}
