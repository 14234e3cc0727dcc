//! The host's state directory: temporary mountpoints and what each step holds.
//!
//! ```text
//! <state>/mounts/<step>-<n>/     temporary mountpoints, nowhere else
//! <state>/steps/<step>.json      what the step holds, written before each mount
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/specwright";

/// The most mountpoints one step may hold; a record claiming more is corrupt.
pub const MAX_MOUNTPOINTS: usize = 1024;

/// The most mounts stacked on one mountpoint; a record claiming more is
/// corrupt (release would otherwise unmount that many times).
pub const MAX_STACKED: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: corrupt step record: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("{id:?} is not a step id (ids name files in the state directory: letters, digits, '_', '.', '-', not starting with '.')")]
    BadId { id: String },
}

/// The host names a step's mountpoints `<id>-<n>`, and the runner's rootfs
/// `<id>-rootfs`; a record naming another step's mountpoint is corrupt.
pub fn is_mountpoint_of(id: &str, name: &str) -> bool {
    match name.strip_prefix(id).and_then(|rest| rest.strip_prefix('-')) {
        Some("rootfs") => true,
        Some(n) => !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()),
        None => false,
    }
}

/// Every path built from a step id goes through here: an id from a
/// command line or a file name in `steps/` is never trusted to stay inside
/// the state directory.
fn checked_id(id: &str) -> Result<&str, StateError> {
    if specwright_core::request::is_valid_id(id) {
        Ok(id)
    } else {
        Err(StateError::BadId { id: id.to_string() })
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a mountpoint is: a directory, or a file for a file bind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MountpointKind {
    #[default]
    Dir,
    File,
}

/// One temporary mountpoint a step holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeldMount {
    /// The mountpoint's name under `<state>/mounts/`.
    pub name: String,
    #[serde(default)]
    pub kind: MountpointKind,
    /// How many mounts are stacked on it.
    pub stacked: usize,
}

/// The process a step belongs to: when it is gone, `gc` may release the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Owner {
    pub pid: u32,
    /// The process's start time (clock ticks after boot), so a reused pid
    /// is not taken for the owner.
    pub start_time: Option<u64>,
}

impl Owner {
    /// The process `pid` as it is now.
    pub fn of_pid(pid: u32) -> Owner {
        Owner {
            pid,
            start_time: process_start_time(pid),
        }
    }

    /// This process, read from /proc once: its start time never changes.
    pub fn this_process() -> Owner {
        static THIS: std::sync::OnceLock<Owner> = std::sync::OnceLock::new();
        *THIS.get_or_init(|| Owner::of_pid(std::process::id()))
    }

    /// Whether the owner still runs (the same process, not a reused pid).
    pub fn is_alive(&self) -> bool {
        match process_start_time(self.pid) {
            None => false,
            Some(now) => self.start_time.is_none_or(|then| then == now),
        }
    }
}

/// Field 22 of `/proc/PID/stat`; `None` when the process does not exist.
fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses; fields
    // after it start behind the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// What a step holds; the source of truth for `release` and `gc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepRecord {
    pub id: String,
    pub owner: Owner,
    pub mounts: Vec<HeldMount>,
}

#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Opens (creating if needed) the state directory at `root`.
    pub fn open(root: &Path) -> Result<StateDir, StateError> {
        let root = if root.is_absolute() {
            root.to_path_buf()
        } else {
            std::env::current_dir().map_err(io(root))?.join(root)
        };
        for dir in [root.join("mounts"), root.join("steps")] {
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        }
        Ok(StateDir { root })
    }

    /// The state directory at `root`, without creating anything (dry runs).
    pub fn at(root: &Path) -> StateDir {
        StateDir {
            root: std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf()),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn mounts_dir(&self) -> PathBuf {
        self.root.join("mounts")
    }

    /// Where `specwright run` puts a step's bundle.
    pub fn bundle_dir(&self, id: &str) -> Result<PathBuf, StateError> {
        Ok(self.root.join("bundles").join(checked_id(id)?))
    }

    /// Precompiled policies.
    pub fn cache_dir(&self) -> PathBuf {
        self.root.join("cache")
    }

    /// Where privileged operations are logged, one JSON object a line.
    pub fn audit_log(&self) -> PathBuf {
        self.root.join("audit.jsonl")
    }

    /// The path of a mountpoint named in a record. Names are plain file
    /// names, so a corrupt record cannot point anywhere else.
    pub fn mountpoint(&self, name: &str) -> Option<PathBuf> {
        let plain = !name.is_empty() && name != "." && name != ".." && !name.contains('/');
        plain.then(|| self.mounts_dir().join(name))
    }

    fn record_path(&self, id: &str) -> Result<PathBuf, StateError> {
        Ok(self.root.join("steps").join(format!("{}.json", checked_id(id)?)))
    }

    /// Reads the step's record; `None` when the step holds nothing.
    pub fn read_record(&self, id: &str) -> Result<Option<StepRecord>, StateError> {
        let path = self.record_path(id)?;
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        let record: StepRecord = serde_json::from_str(&text).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if record.id != id {
            return Err(StateError::Corrupt {
                path,
                message: format!("names step {:?}", record.id),
            });
        }
        if let Some(bad) = record.mounts.iter().find(|m| self.mountpoint(&m.name).is_none()) {
            return Err(StateError::Corrupt {
                path,
                message: format!("mountpoint name {:?} is not a plain name", bad.name),
            });
        }
        if let Some(bad) = record.mounts.iter().find(|m| !is_mountpoint_of(id, &m.name)) {
            return Err(StateError::Corrupt {
                path,
                message: format!("mountpoint {:?} is not one of step {id}'s", bad.name),
            });
        }
        if record.mounts.len() > MAX_MOUNTPOINTS {
            return Err(StateError::Corrupt {
                path,
                message: format!(
                    "{} mountpoints, more than a step can hold ({MAX_MOUNTPOINTS})",
                    record.mounts.len()
                ),
            });
        }
        if let Some(bad) = record.mounts.iter().find(|m| m.stacked > MAX_STACKED) {
            return Err(StateError::Corrupt {
                path,
                message: format!(
                    "{} stacked mounts on {}, more than the host makes ({MAX_STACKED})",
                    bad.stacked, bad.name
                ),
            });
        }
        Ok(Some(record))
    }

    /// Writes the step's record atomically (a crash leaves the old or the
    /// new one). Not fsynced: the record guards against the process dying,
    /// and the page cache outlives the process; after a power loss the
    /// mounts it describes are gone too.
    pub fn write_record(&self, record: &StepRecord) -> Result<(), StateError> {
        let path = self.record_path(&record.id)?;
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec(record).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        std::fs::write(&tmp, &text).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }

    pub fn remove_record(&self, id: &str) -> Result<(), StateError> {
        let path = self.record_path(id)?;
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&path)(e)),
            _ => Ok(()),
        }
    }

    /// Ids of every step with a record.
    pub fn step_ids(&self) -> Result<Vec<String>, StateError> {
        let dir = self.root.join("steps");
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            let name = entry.file_name();
            if let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) {
                ids.push(id.to_string());
            }
        }
        ids.sort();
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_corruption_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        assert!(state.read_record("s").unwrap().is_none());
        let record = StepRecord {
            id: "s".into(),
            owner: Owner::of_pid(std::process::id()),
            mounts: vec![HeldMount {
                name: "s-0".into(),
                kind: MountpointKind::File,
                stacked: 1,
            }],
        };
        state.write_record(&record).unwrap();
        assert_eq!(state.read_record("s").unwrap(), Some(record));
        assert_eq!(state.step_ids().unwrap(), ["s"]);

        std::fs::write(dir.path().join("steps/t.json"), "{not json").unwrap();
        assert!(matches!(state.read_record("t"), Err(StateError::Corrupt { .. })));
        std::fs::write(
            dir.path().join("steps/u.json"),
            r#"{"id":"u","owner":{"pid":1,"start_time":null},"mounts":[{"name":"../../etc","stacked":1}]}"#,
        )
        .unwrap();
        let err = state.read_record("u").unwrap_err().to_string();
        assert!(err.contains("not a plain name"), "{err}");
        std::fs::write(
            dir.path().join("steps/v.json"),
            r#"{"id":"w","owner":{"pid":1,"start_time":null},"mounts":[]}"#,
        )
        .unwrap();
        assert!(state.read_record("v").is_err());
        std::fs::write(
            dir.path().join("steps/a.json"),
            r#"{"id":"a","owner":{"pid":1,"start_time":null},"mounts":[{"name":"a-1-0","stacked":1}]}"#,
        )
        .unwrap();
        let err = state.read_record("a").unwrap_err().to_string();
        assert!(err.contains("not one of step a's"), "{err}");
    }

    #[test]
    fn mountpoint_names_belong_to_their_step() {
        for (id, name, ours) in [
            ("a", "a-0", true),
            ("a", "a-17", true),
            ("a", "a-rootfs", true),
            ("a", "a-1-0", false),
            ("a-1", "a-1-0", true),
            ("a", "a-", false),
            ("a", "b-0", false),
            ("a", "a0", false),
            ("a", "ab-0", false),
            ("a", "a-rootfs2", false),
        ] {
            assert_eq!(is_mountpoint_of(id, name), ours, "{id} {name}");
        }
    }

    #[test]
    fn this_process_is_alive_and_a_reused_pid_is_not() {
        let me = Owner::of_pid(std::process::id());
        assert!(me.start_time.is_some());
        assert!(me.is_alive());
        let reused = Owner {
            start_time: me.start_time.map(|t| t + 1),
            ..me
        };
        assert!(!reused.is_alive());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!Owner { pid, start_time: None }.is_alive());
    }
}
