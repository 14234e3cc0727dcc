//! Every privileged syscall the host makes, behind one trait: the real one
//! performs them; the recording one serves dry runs and fault injection.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

use crate::resolve::{ResolveError, Resolved};
use crate::state::{StateDir, StateError, StepRecord};

/// One privileged operation, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    CreateDir(PathBuf),
    RemoveDir(PathBuf),
    CreateFile(PathBuf),
    RemoveFile(PathBuf),
    Mount {
        source: Option<String>,
        target: PathBuf,
        fstype: Option<String>,
        flags: u64,
        data: Option<String>,
    },
    Unmount {
        target: PathBuf,
        flags: i32,
    },
    DeleteContainer {
        runtime: PathBuf,
        id: String,
    },
    HasSubmounts(PathBuf),
    /// A step's record written (`steps/<id>.json`).
    WriteRecord(String),
    /// A step's record removed.
    RemoveRecord(String),
    /// A selector resolved inside a root, by descriptor.
    Resolve {
        root: PathBuf,
        selector: String,
    },
    /// A host path the request names resolved to what it really is.
    CanonicalPath(String),
}

pub trait Syscalls: Send + Sync {
    fn create_dir(&self, path: &Path) -> Result<(), Errno>;
    fn remove_dir(&self, path: &Path) -> Result<(), Errno>;
    /// Creates an empty file (a mountpoint for a file), failing if it exists.
    fn create_file(&self, path: &Path) -> Result<(), Errno>;
    fn remove_file(&self, path: &Path) -> Result<(), Errno>;
    fn mount(
        &self,
        source: Option<&str>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), Errno>;
    fn unmount(&self, target: &Path, flags: MntFlags) -> Result<(), Errno>;
    /// Kills and deletes container `id` of OCI runtime `runtime`
    /// (`runtime delete --force id`); one that does not exist is deleted.
    fn delete_container(&self, runtime: &Path, id: &str) -> Result<(), String>;
    /// Whether anything is mounted below `target` (a recursive bind of a
    /// tree with mounts of its own).
    fn has_submounts(&self, target: &Path) -> Result<bool, Errno>;
    /// Writes a step's record into the state dir (before each mount, after
    /// each release), so that a dry run writes none and a fault can be
    /// injected here too.
    fn write_record(&self, state: &StateDir, record: &StepRecord) -> Result<(), StateError>;
    /// Removes a step's record (the step holds nothing any more).
    fn remove_record(&self, state: &StateDir, id: &str) -> Result<(), StateError>;
    /// Resolves `selector` inside `root` as if `root` were `/`, by
    /// descriptor ([`crate::resolve::resolve_in_root`]).
    fn resolve(&self, root: &Path, selector: &str) -> Result<Resolved, ResolveError>;
    /// What host path `path` really is, symlinks resolved
    /// ([`crate::resolve::canonical_host_path`]).
    fn canonical_path(&self, path: &str) -> Result<String, ResolveError>;
}

/// The kernel.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealSyscalls;

fn io_errno(e: std::io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
}

impl Syscalls for RealSyscalls {
    fn create_dir(&self, path: &Path) -> Result<(), Errno> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().mode(0o700).create(path).map_err(io_errno)
    }

    fn remove_dir(&self, path: &Path) -> Result<(), Errno> {
        std::fs::remove_dir(path).map_err(io_errno)
    }

    fn create_file(&self, path: &Path) -> Result<(), Errno> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map(drop)
            .map_err(io_errno)
    }

    fn remove_file(&self, path: &Path) -> Result<(), Errno> {
        std::fs::remove_file(path).map_err(io_errno)
    }

    fn mount(
        &self,
        source: Option<&str>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), Errno> {
        nix::mount::mount(source, target, fstype, flags, data)
    }

    fn unmount(&self, target: &Path, flags: MntFlags) -> Result<(), Errno> {
        nix::mount::umount2(target, flags)
    }

    fn has_submounts(&self, target: &Path) -> Result<bool, Errno> {
        use std::io::BufRead;
        let file = std::fs::File::open("/proc/thread-self/mountinfo").map_err(io_errno)?;
        let below = format!("{}/", target.display());
        for line in std::io::BufReader::new(file).lines() {
            let line = line.map_err(io_errno)?;
            // Field 5 is the mountpoint, with space, tab, newline and
            // backslash escaped as octal; our mountpoints have none.
            if line.split(' ').nth(4).is_some_and(|m| m.starts_with(&below)) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn delete_container(&self, runtime: &Path, id: &str) -> Result<(), String> {
        let out = std::process::Command::new(runtime)
            .args(["delete", "--force", id])
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("running {}: {e}", runtime.display()))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Gone already (the runtime cleaned up, or never created it).
        let missing = ["does not exist", "not found", "No such file"];
        if out.status.success() || missing.iter().any(|m| stderr.contains(m)) {
            Ok(())
        } else {
            Err(format!("{} delete --force {id}: {}", runtime.display(), stderr.trim()))
        }
    }

    fn write_record(&self, state: &StateDir, record: &StepRecord) -> Result<(), StateError> {
        state.write_record(record)
    }

    fn remove_record(&self, state: &StateDir, id: &str) -> Result<(), StateError> {
        state.remove_record(id)
    }

    fn resolve(&self, root: &Path, selector: &str) -> Result<Resolved, ResolveError> {
        crate::resolve::resolve_in_root(root, selector)
    }

    fn canonical_path(&self, path: &str) -> Result<String, ResolveError> {
        crate::resolve::canonical_host_path(path)
    }
}

/// Records every operation; performs each through `inner` (none for a dry
/// run) unless it is the one chosen to fail.
pub struct RecordingSyscalls {
    inner: Option<Box<dyn Syscalls>>,
    fail_at: Option<usize>,
    ops: Mutex<Vec<Op>>,
}

impl RecordingSyscalls {
    /// Performs nothing: every operation succeeds without touching the host.
    pub fn dry_run() -> RecordingSyscalls {
        RecordingSyscalls {
            inner: None,
            fail_at: None,
            ops: Mutex::new(Vec::new()),
        }
    }

    /// Performs operations through `inner`, except that operation number
    /// `fail_at` (0-based) fails with EIO instead.
    pub fn failing_at(inner: Box<dyn Syscalls>, fail_at: Option<usize>) -> RecordingSyscalls {
        RecordingSyscalls {
            inner: Some(inner),
            fail_at,
            ops: Mutex::new(Vec::new()),
        }
    }

    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().map(|o| o.clone()).unwrap_or_default()
    }

    fn record(&self, op: Op, perform: impl FnOnce(&dyn Syscalls) -> Result<(), Errno>) -> Result<(), Errno> {
        let n = {
            let mut ops = self.ops.lock().map_err(|_| Errno::EIO)?;
            ops.push(op);
            ops.len() - 1
        };
        if self.fail_at == Some(n) {
            return Err(Errno::EIO);
        }
        match &self.inner {
            Some(inner) => perform(inner.as_ref()),
            None => Ok(()),
        }
    }

    /// [`Self::record`] for an operation on the state dir.
    fn record_state(
        &self,
        op: Op,
        state: &StateDir,
        perform: impl FnOnce(&dyn Syscalls) -> Result<(), StateError>,
    ) -> Result<(), StateError> {
        let mut performed = Ok(());
        let recorded = self.record(op, |inner| {
            performed = perform(inner);
            Ok(())
        });
        recorded.map_err(|errno| StateError::Io {
            path: state.root().join("steps"),
            source: std::io::Error::other(errno),
        })?;
        performed
    }
}

impl Syscalls for RecordingSyscalls {
    fn create_dir(&self, path: &Path) -> Result<(), Errno> {
        self.record(Op::CreateDir(path.to_path_buf()), |s| s.create_dir(path))
    }

    fn remove_dir(&self, path: &Path) -> Result<(), Errno> {
        self.record(Op::RemoveDir(path.to_path_buf()), |s| s.remove_dir(path))
    }

    fn create_file(&self, path: &Path) -> Result<(), Errno> {
        self.record(Op::CreateFile(path.to_path_buf()), |s| s.create_file(path))
    }

    fn remove_file(&self, path: &Path) -> Result<(), Errno> {
        self.record(Op::RemoveFile(path.to_path_buf()), |s| s.remove_file(path))
    }

    fn mount(
        &self,
        source: Option<&str>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), Errno> {
        let op = Op::Mount {
            source: source.map(str::to_string),
            target: target.to_path_buf(),
            fstype: fstype.map(str::to_string),
            flags: flags.bits(),
            data: data.map(str::to_string),
        };
        self.record(op, |s| s.mount(source, target, fstype, flags, data))
    }

    fn unmount(&self, target: &Path, flags: MntFlags) -> Result<(), Errno> {
        let op = Op::Unmount {
            target: target.to_path_buf(),
            flags: flags.bits(),
        };
        self.record(op, |s| s.unmount(target, flags))
    }

    fn has_submounts(&self, target: &Path) -> Result<bool, Errno> {
        let mut found = false;
        self.record(Op::HasSubmounts(target.to_path_buf()), |s| {
            found = s.has_submounts(target)?;
            Ok(())
        })?;
        Ok(found)
    }

    fn delete_container(&self, runtime: &Path, id: &str) -> Result<(), String> {
        let op = Op::DeleteContainer {
            runtime: runtime.to_path_buf(),
            id: id.to_string(),
        };
        self.record(op, |_| Ok(())).map_err(|e| e.to_string())?;
        match &self.inner {
            Some(inner) => inner.delete_container(runtime, id),
            None => Ok(()),
        }
    }

    fn write_record(&self, state: &StateDir, record: &StepRecord) -> Result<(), StateError> {
        self.record_state(Op::WriteRecord(record.id.clone()), state, |s| {
            s.write_record(state, record)
        })
    }

    fn remove_record(&self, state: &StateDir, id: &str) -> Result<(), StateError> {
        self.record_state(Op::RemoveRecord(id.to_string()), state, |s| s.remove_record(state, id))
    }

    /// A dry run resolves lexically: nothing is looked at.
    fn resolve(&self, root: &Path, selector: &str) -> Result<Resolved, ResolveError> {
        let op = Op::Resolve {
            root: root.to_path_buf(),
            selector: selector.to_string(),
        };
        let fault = |errno| ResolveError::Io {
            path: root.display().to_string(),
            errno,
        };
        let mut resolved = None;
        self.record(op, |inner| {
            resolved = Some(inner.resolve(root, selector));
            Ok(())
        })
        .map_err(fault)?;
        resolved.unwrap_or_else(|| {
            Ok(Resolved {
                path: crate::resolve::planned_in_root(root, selector),
                object: None,
            })
        })
    }

    fn canonical_path(&self, path: &str) -> Result<String, ResolveError> {
        let fault = |errno| ResolveError::Io {
            path: path.to_string(),
            errno,
        };
        let mut real = None;
        self.record(Op::CanonicalPath(path.to_string()), |inner| {
            real = Some(inner.canonical_path(path));
            Ok(())
        })
        .map_err(fault)?;
        real.unwrap_or_else(|| Ok(specwright_core::mounts::clean_absolute(path)))
    }
}
