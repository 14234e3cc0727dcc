//! What a step holds, as its record says; the source of truth for
//! `release` and `gc`, checked before anything it names is touched.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use specwright_core::selinux::McsLevel;

use super::StateError;

/// The most mountpoints one step may hold; a record claiming more is corrupt.
pub const MAX_MOUNTPOINTS: usize = 1024;

/// The most mounts stacked on one mountpoint; a record claiming more is
/// corrupt (release would otherwise unmount that many times).
pub const MAX_STACKED: usize = 64;

/// The host names a step's mountpoints `<id>-<n>`, and the runner's rootfs
/// `<id>-rootfs`; a record naming another step's mountpoint is corrupt.
pub fn is_mountpoint_of(id: &str, name: &str) -> bool {
    match name.strip_prefix(id).and_then(|rest| rest.strip_prefix('-')) {
        Some("rootfs") => true,
        Some(n) => !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()),
        None => false,
    }
}

/// What a mountpoint is: a directory, a file for a file bind, or (as
/// BuildKit v0.32 pins a file) a directory holding the file `file`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MountpointKind {
    #[default]
    Dir,
    File,
    FileInDir,
}

impl MountpointKind {
    /// The name of the file a `FileInDir` mountpoint holds.
    pub const INNER_FILE: &'static str = "file";

    /// Where mounts are stacked for a mountpoint at `path`.
    pub fn target(self, path: &std::path::Path) -> std::path::PathBuf {
        match self {
            MountpointKind::FileInDir => path.join(Self::INNER_FILE),
            MountpointKind::Dir | MountpointKind::File => path.to_path_buf(),
        }
    }
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
    // Read into one buffer that holds the whole line: /proc makes the line
    // anew at every read, and a growing buffer reads it in six.
    let mut file = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    let mut buf = [0u8; 4096];
    let mut len = 0;
    loop {
        let n = match std::io::Read::read(&mut file, &mut buf[len..]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        };
        if n == 0 {
            break;
        }
        len += n;
        if len == buf.len() {
            return None;
        }
    }
    let stat = std::str::from_utf8(&buf[..len]).ok()?;
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
    /// The container `specwright run` started for the step, so that `gc`
    /// can kill and delete it when the runner is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerRecord>,
    /// The SELinux MCS level reserved for the step's labels (recorded
    /// before it is reserved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selinux_level: Option<McsLevel>,
}

/// A container an OCI runtime runs for a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerRecord {
    /// The runtime binary that started it.
    pub runtime: PathBuf,
    /// The container id (the step id).
    pub id: String,
}

impl StepRecord {
    /// A record that holds nothing yet.
    pub fn new(id: &str, owner: Owner) -> StepRecord {
        StepRecord {
            id: id.to_string(),
            owner,
            mounts: Vec::new(),
            container: None,
            selinux_level: None,
        }
    }

    /// Whether the step holds anything a release must undo.
    pub fn holds_anything(&self) -> bool {
        !self.mounts.is_empty() || self.container.is_some() || self.selinux_level.is_some()
    }

    /// Parses and checks a record read from `path` for step `id`: a record
    /// that names another step, a path or more than the host makes is
    /// corrupt, and nothing it names is touched.
    pub fn parse(path: &Path, id: &str, bytes: &[u8]) -> Result<StepRecord, StateError> {
        let corrupt = |message: String| StateError::Corrupt {
            path: path.to_path_buf(),
            message,
        };
        let record: StepRecord = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        if record.id != id {
            return Err(corrupt(format!("names step {:?}", record.id)));
        }
        if let Some(bad) = record.mounts.iter().find(|m| !is_plain_name(&m.name)) {
            return Err(corrupt(format!("mountpoint name {:?} is not a plain name", bad.name)));
        }
        if let Some(bad) = record.mounts.iter().find(|m| !is_mountpoint_of(id, &m.name)) {
            return Err(corrupt(format!("mountpoint {:?} is not one of step {id}'s", bad.name)));
        }
        if record.mounts.len() > MAX_MOUNTPOINTS {
            return Err(corrupt(format!(
                "{} mountpoints, more than a step can hold ({MAX_MOUNTPOINTS})",
                record.mounts.len()
            )));
        }
        if let Some(bad) = record.mounts.iter().find(|m| m.stacked > MAX_STACKED) {
            return Err(corrupt(format!(
                "{} stacked mounts on {}, more than the host makes ({MAX_STACKED})",
                bad.stacked, bad.name
            )));
        }
        if let Some(c) = &record.container {
            if c.id != id || !c.runtime.is_absolute() {
                return Err(corrupt(format!(
                    "container {:?} under {} is not step {id}'s",
                    c.id,
                    c.runtime.display()
                )));
            }
        }
        Ok(record)
    }
}

/// A file name of its own: not empty, `.`, `..`, and without a slash.
pub(crate) fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

#[cfg(test)]
mod tests {
    use super::*;

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
