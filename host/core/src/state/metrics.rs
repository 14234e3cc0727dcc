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

use super::at::{read_bounded, write_atomically, TMP_SEQ};
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
    pub fn add_metrics(&self, tally: &Metrics, textfile: &Path) -> Result<(), StateError> {
        let open = self.opened()?;
        let lock_path = self.root().join("metrics.lock");
        let (fd, _) = open_lock_file(open.root.fd(), "metrics.lock", &lock_path)?;
        let _held = lock_within(File::from(fd), &lock_path, METRICS_WAIT)?;
        let path = self.root().join("metrics.json");
        let mut totals = match read_bounded(open.root.fd(), &path, "metrics.json", MAX_TOTALS_BYTES)? {
            Some(bytes) => serde_json::from_slice::<Metrics>(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "metrics totals unreadable; counting again from zero");
                Metrics::default()
            }),
            None => Metrics::default(),
        };
        totals.add(tally);
        let json = serde_json::to_vec(&totals).map_err(|e| StateError::Io {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        write_atomically(open.root.fd(), self.root(), "metrics.json", &[&json], 0o600, false)?;
        replace_file(textfile, totals.render().as_bytes()).map_err(|source| StateError::Io {
            path: textfile.to_path_buf(),
            source,
        })
    }
}

/// An exclusive `flock` on `file`, waiting at most `wait`.
fn lock_within(mut file: File, path: &Path, wait: Duration) -> Result<Flock<File>, StateError> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(held) => return Ok(held),
            Err((back, Errno::EWOULDBLOCK)) => {
                if start.elapsed() >= wait {
                    return Err(StateError::Io {
                        path: path.to_path_buf(),
                        source: std::io::Error::other(format!("held by another process for {} ms", wait.as_millis())),
                    });
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
