//! The runtime-spec version an OCI runtime declares (`spec:` in
//! `<runtime> --version`), asked once per runtime binary and remembered
//! in the state dir's cache: a step then starts no extra process.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::edits::DeclaredSpecVersion;
use crate::oci_runtime::OciRuntime;
use crate::state::CacheDir;
use crate::sys::Syscalls;

/// Bytes of `--version` output read, and remembered, at most.
const MAX_OUTPUT_BYTES: u64 = 64 << 10;

/// One runtime binary as the file system knows it: its device, inode,
/// size and change time. An upgraded, rebuilt or replaced binary has
/// another identity, so what it declares is asked again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeIdentity(String);

impl RuntimeIdentity {
    /// The identity of the file `path` names (symlinks followed).
    pub fn of(path: &Path) -> Option<RuntimeIdentity> {
        let meta = std::fs::metadata(path).ok()?;
        Some(RuntimeIdentity(format!(
            "{:x}-{:x}-{:x}-{}.{:09}",
            meta.dev(),
            meta.ino(),
            meta.size(),
            meta.ctime(),
            meta.ctime_nsec()
        )))
    }

    /// The name of its remembered `--version` output in the cache dir.
    fn file_name(&self) -> String {
        format!("runtime-{}.version", self.0)
    }
}

/// What the runtime declares: remembered from an earlier step, or being
/// asked now while the runner loads the policies and prepares the step.
#[derive(Default)]
pub enum DeclaredVersion {
    /// Known without asking (`None`: the runtime declares no version).
    Remembered(Option<DeclaredSpecVersion>),
    /// `<runtime> --version` is running.
    Asking(Asking),
    /// The runtime could not be asked (the run itself then says why).
    #[default]
    Unknown,
}

impl DeclaredVersion {
    /// What `runtime` declares, from the compile cache's `cache` (read through `sys`) when
    /// it was asked before; otherwise `<runtime> --version` is started.
    pub fn start(sys: &dyn Syscalls, runtime: &OciRuntime, cache: Option<&CacheDir>) -> DeclaredVersion {
        let identity = RuntimeIdentity::of(&runtime.path);
        let remember = cache.zip(identity).map(|(dir, id)| (dir.clone(), id.file_name()));
        if let Some((dir, name)) = &remember {
            if let Ok(Some(entry)) = sys.read_cache_entry(dir, name, MAX_OUTPUT_BYTES) {
                let output = String::from_utf8_lossy(entry.bytes());
                return DeclaredVersion::Remembered(DeclaredSpecVersion::from_version_output(&output));
            }
        }
        match Command::new(&runtime.path)
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => DeclaredVersion::Asking(Asking { child, remember }),
            Err(_) => DeclaredVersion::Unknown,
        }
    }

    /// The version the runtime declares, if its output names one. Output
    /// of a `--version` that succeeded is remembered (a cache that cannot
    /// be written is only a missed saving).
    pub fn declared(self, sys: &dyn Syscalls) -> Option<DeclaredSpecVersion> {
        use std::io::Read;
        match self {
            DeclaredVersion::Remembered(declared) => declared,
            DeclaredVersion::Unknown => None,
            DeclaredVersion::Asking(mut asking) => {
                let mut output = String::new();
                let read = asking
                    .child
                    .stdout
                    .take()
                    .map(|out| out.take(MAX_OUTPUT_BYTES).read_to_string(&mut output));
                let succeeded = asking.child.wait().is_ok_and(|status| status.success());
                if let (Some(Ok(_)), true, Some((dir, name))) = (read, succeeded, asking.remember.take()) {
                    if let Err(e) = sys.write_cache_entry(&dir, &name, &[output.as_bytes()]) {
                        tracing::debug!(error = %e, "remembering the runtime's --version");
                    }
                }
                DeclaredSpecVersion::from_version_output(&output)
            }
        }
    }
}

/// A running `<runtime> --version`, whose output is remembered under
/// `remember` (the cache dir and the file's name) once it is read; killed
/// and waited for when dropped unread.
pub struct Asking {
    child: Child,
    remember: Option<(CacheDir, String)>,
}

impl Drop for Asking {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::RealSyscalls;

    /// A runtime that says `spec: 1.0.2` once: a second step takes the
    /// remembered answer, and a changed binary is asked again.
    #[test]
    fn a_runtime_is_asked_once_until_its_binary_changes() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("fake-runtime");
        let cache = crate::state::StateDir::open(&dir.path().join("state"))
            .unwrap()
            .open_cache_dir()
            .unwrap();
        let asked = dir.path().join("asked");
        let script = |version: &str| {
            format!(
                "#!/bin/sh\necho x >> '{}'\necho 'fake version 1'\necho 'spec: {version}'\n",
                asked.display()
            )
        };
        std::fs::write(&bin, script("1.0.2")).unwrap();
        std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let runtime = OciRuntime { path: bin.clone() };
        let times_asked = || std::fs::read_to_string(&asked).unwrap_or_default().lines().count();
        let declared = |d: Option<DeclaredSpecVersion>| d.map(|v| format!("{v:?}"));
        let first = DeclaredVersion::start(&RealSyscalls, &runtime, Some(&cache));
        assert!(matches!(first, DeclaredVersion::Asking(_)));
        let first = declared(first.declared(&RealSyscalls));
        assert!(first.as_deref().is_some_and(|v| v.contains("1.0.2")), "{first:?}");
        let second = DeclaredVersion::start(&RealSyscalls, &runtime, Some(&cache));
        assert!(matches!(second, DeclaredVersion::Remembered(_)));
        assert_eq!(declared(second.declared(&RealSyscalls)), first);
        assert_eq!(times_asked(), 1);

        // Another size, so that the identity differs whatever the clock's
        // granularity.
        std::fs::write(&bin, script("1.2.0-rc1")).unwrap();
        let third = declared(DeclaredVersion::start(&RealSyscalls, &runtime, Some(&cache)).declared(&RealSyscalls));
        assert!(third.as_deref().is_some_and(|v| v.contains("1.2.0-rc1")), "{third:?}");
        assert_eq!(times_asked(), 2);
    }

    #[test]
    fn without_a_cache_dir_every_step_asks() {
        let runtime = OciRuntime {
            path: std::path::PathBuf::from("/nonexistent/runtime"),
        };
        assert!(matches!(
            DeclaredVersion::start(&RealSyscalls, &runtime, None),
            DeclaredVersion::Unknown
        ));
    }
}
