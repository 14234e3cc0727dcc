//! The host's state directory: temporary mountpoints and what each step holds.
//!
//! ```text
//! <state>/mounts/<step>-<n>/     temporary mountpoints, nowhere else
//! <state>/steps/<step>.json      what the step holds, written before each mount
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/specwright";

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
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One temporary mountpoint a step holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeldMount {
    /// The directory's name under `<state>/mounts/`.
    pub name: String,
    /// How many mounts are stacked on it.
    pub stacked: usize,
}

/// What a step holds; the source of truth for `release` and `gc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepRecord {
    pub id: String,
    /// The process that made the step's mounts.
    pub pid: u32,
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

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn mounts_dir(&self) -> PathBuf {
        self.root.join("mounts")
    }

    /// The path of a mountpoint named in a record. Names are plain file
    /// names, so a corrupt record cannot point anywhere else.
    pub fn mountpoint(&self, name: &str) -> Option<PathBuf> {
        let plain = !name.is_empty() && name != "." && name != ".." && !name.contains('/');
        plain.then(|| self.mounts_dir().join(name))
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.root.join("steps").join(format!("{id}.json"))
    }

    /// Reads the step's record; `None` when the step holds nothing.
    pub fn read_record(&self, id: &str) -> Result<Option<StepRecord>, StateError> {
        let path = self.record_path(id);
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
        if let Some(bad) = record
            .mounts
            .iter()
            .find(|m| self.mountpoint(&m.name).is_none())
        {
            return Err(StateError::Corrupt {
                path,
                message: format!("mountpoint name {:?} is not a plain name", bad.name),
            });
        }
        Ok(Some(record))
    }

    /// Writes the step's record atomically (a crash leaves the old or the new one).
    pub fn write_record(&self, record: &StepRecord) -> Result<(), StateError> {
        let path = self.record_path(&record.id);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(record).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let mut file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        file.write_all(&text).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }

    pub fn remove_record(&self, id: &str) -> Result<(), StateError> {
        let path = self.record_path(id);
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
