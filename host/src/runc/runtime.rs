//! The real runtime the wrapper hands every command to: found (a path, or
//! `runc`/`crun` looked up), checked on its opened descriptor as any file
//! that decides what containers may do is, and executed through that very
//! descriptor, so that what was checked is what runs. The environment
//! marks the handing over, so that a runtime which is the wrapper again
//! (two copies installed as `runc`, each other's real runtime) is stopped
//! at once instead of looping.

use std::ffi::{CString, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::fcntl::{FcntlArg, FdFlag, OFlag};
use nix::sys::stat::{fstat, Mode, SFlag};

use crate::oci_runtime::{on_path, SYSTEM_PATH};

/// Set in the real runtime's environment: the path it was handed as.
pub const HANDED_TO_ENV: &str = "SPECWRIGHT_RUNC_HANDED_TO";

/// Which command line a runtime reads, for its default state root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Runc,
    Crun,
}

/// The real runtime, open and checked.
#[derive(Debug)]
pub struct RealRuntime {
    pub path: PathBuf,
    fd: OwnedFd,
    pub flavor: Flavor,
}

/// Refuses to start when this process is a real runtime the wrapper
/// handed a command to: the runtime configured is the wrapper again.
pub fn check_not_handed_to() -> Result<()> {
    if let Some(path) = std::env::var_os(HANDED_TO_ENV) {
        bail!(
            "started as the real runtime of specwright-runc ({}): that is specwright-runc again, which would hand the command on forever; set real_runtime (or --real-runtime) to runc's or crun's own path",
            Path::new(&path).display()
        );
    }
    Ok(())
}

impl RealRuntime {
    /// `choice` (`runc`, `crun`, or a path), or `runc` then `crun` on
    /// PATH (then in the system directories); never this binary itself,
    /// which may be installed as `runc`. The file must be trusted: a
    /// regular file owned by root or this user that no one else may write.
    pub fn find(choice: Option<&str>) -> Result<RealRuntime> {
        let this = std::fs::metadata("/proc/self/exe").context("/proc/self/exe")?;
        let is_this = |stat: &nix::sys::stat::FileStat| {
            use std::os::unix::fs::MetadataExt;
            stat.st_dev == this.dev() && stat.st_ino == this.ino()
        };
        if let Some(path) = choice.filter(|c| c.contains('/')) {
            let path = PathBuf::from(path);
            let (fd, stat) = open_checked(&path)?;
            if is_this(&stat) {
                bail!("real runtime {}: is specwright-runc itself", path.display());
            }
            return Ok(RealRuntime::new(path, fd));
        }
        let names: &[&str] = match choice {
            Some(name) => &[name][..],
            None => &["runc", "crun"],
        };
        for name in names {
            for candidate in on_path(name) {
                let (fd, stat) = open_checked(&candidate)?;
                if !is_this(&stat) {
                    return Ok(RealRuntime::new(candidate, fd));
                }
            }
        }
        bail!(
            "no real runtime: {} not on PATH or in {} (other than specwright-runc itself); set --real-runtime or real_runtime in the configuration",
            names.join(" or "),
            SYSTEM_PATH.join(":")
        )
    }

    fn new(path: PathBuf, fd: OwnedFd) -> RealRuntime {
        let crun = path
            .file_name()
            .is_some_and(|name| name.as_bytes().windows(4).any(|w| w == b"crun"));
        RealRuntime {
            path,
            fd,
            flavor: if crun { Flavor::Crun } else { Flavor::Runc },
        }
    }

    /// Replaces this process with the runtime, given `args` (without the
    /// program name); returns only on failure.
    pub fn exec(&self, args: &[OsString]) -> anyhow::Error {
        let argv: Result<Vec<CString>, _> = std::iter::once(self.path.as_os_str().as_bytes().to_vec())
            .chain(args.iter().map(|a| a.as_bytes().to_vec()))
            .map(CString::new)
            .collect();
        let Ok(argv) = argv else {
            return anyhow::anyhow!("an argument holds a NUL byte");
        };
        let mut env: Vec<CString> = std::env::vars_os()
            .filter(|(k, _)| k != HANDED_TO_ENV)
            .filter_map(|(k, v)| {
                let mut pair = k.as_bytes().to_vec();
                pair.push(b'=');
                pair.extend_from_slice(v.as_bytes());
                CString::new(pair).ok()
            })
            .collect();
        if let Ok(marker) = CString::new([HANDED_TO_ENV.as_bytes(), b"=", self.path.as_os_str().as_bytes()].concat()) {
            env.push(marker);
        }
        let empty = c"";
        let error = nix::unistd::execveat(&self.fd, empty, &argv, &env, nix::fcntl::AtFlags::AT_EMPTY_PATH);
        // A script (a test's stand-in runtime) cannot be run from a
        // descriptor closed on exec: its interpreter opens /dev/fd/N.
        if error == Err(nix::errno::Errno::ENOENT) && self.is_script() {
            let cleared = nix::fcntl::fcntl(&self.fd, FcntlArg::F_SETFD(FdFlag::empty()));
            if cleared.is_ok() {
                let error = nix::unistd::execveat(&self.fd, empty, &argv, &env, nix::fcntl::AtFlags::AT_EMPTY_PATH);
                return anyhow::Error::new(error.err().unwrap_or(nix::errno::Errno::EINVAL))
                    .context(format!("running {}", self.path.display()));
            }
        }
        anyhow::Error::new(error.err().unwrap_or(nix::errno::Errno::EINVAL))
            .context(format!("running {}", self.path.display()))
    }

    fn is_script(&self) -> bool {
        let mut start = [0u8; 2];
        nix::sys::uio::pread(&self.fd, &mut start, 0).is_ok_and(|n| n == 2 && &start == b"#!")
    }

    /// The runtime's default state root, where it keeps container `id`
    /// when no `--root` is given (runc as root: /run/runc; crun:
    /// $XDG_RUNTIME_DIR/crun, else /run/crun).
    pub fn default_root(&self) -> PathBuf {
        match self.flavor {
            Flavor::Runc => PathBuf::from("/run/runc"),
            Flavor::Crun => match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
                Some(dir) => PathBuf::from(dir).join("crun"),
                None => PathBuf::from("/run/crun"),
            },
        }
    }
}

/// Opens `path` for executing and checks the open file: a regular,
/// executable file owned by root or this user that no one else may write.
fn open_checked(path: &Path) -> Result<(OwnedFd, nix::sys::stat::FileStat)> {
    let fd = nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        Mode::empty(),
    )
    .with_context(|| format!("real runtime {}", path.display()))?;
    let stat = fstat(&fd).with_context(|| format!("real runtime {}", path.display()))?;
    let euid = nix::unistd::geteuid().as_raw();
    let untrusted = |why: String| -> Result<(OwnedFd, nix::sys::stat::FileStat)> {
        bail!("real runtime {}: not trusted: {why}", path.display())
    };
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return untrusted("not a regular file".to_string());
    }
    if stat.st_uid != 0 && stat.st_uid != euid {
        return untrusted(format!("owned by uid {}, not root or {euid}", stat.st_uid));
    }
    if stat.st_mode & 0o022 != 0 {
        return untrusted(format!("mode {:o} lets others write it", stat.st_mode & 0o7777));
    }
    if stat.st_mode & 0o111 == 0 {
        return untrusted("not executable".to_string());
    }
    Ok((fd, stat))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_real_runtime_is_never_this_binary() {
        let this = std::fs::canonicalize("/proc/self/exe").unwrap();
        let err = RealRuntime::find(Some(this.to_str().unwrap())).unwrap_err().to_string();
        assert!(err.contains("itself"), "{err}");
        let err = format!("{:#}", RealRuntime::find(Some("/nonexistent/runc")).unwrap_err());
        assert!(err.contains("/nonexistent/runc"), "{err}");
    }

    #[test]
    fn a_runtime_others_may_write_or_that_is_no_file_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = dir.path().join("runc");
        std::fs::write(&runtime, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = RealRuntime::find(Some(runtime.to_str().unwrap()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not trusted") && err.contains("lets others write"),
            "{err}"
        );
        std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = RealRuntime::find(Some(runtime.to_str().unwrap()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not executable"), "{err}");
        std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o755)).unwrap();
        nix::unistd::chown(&runtime, Some(nix::unistd::Uid::from_raw(4242)), None).unwrap();
        let err = RealRuntime::find(Some(runtime.to_str().unwrap()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("owned by uid 4242"), "{err}");
        let err = RealRuntime::find(Some(dir.path().to_str().unwrap()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }

    #[test]
    fn crun_by_name_is_read_as_crun() {
        let dir = tempfile::tempdir().unwrap();
        for (name, flavor) in [
            ("crun", Flavor::Crun),
            ("runc", Flavor::Runc),
            ("crun-1.8", Flavor::Crun),
        ] {
            let runtime = dir.path().join(name);
            std::fs::write(&runtime, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o755)).unwrap();
            assert_eq!(
                RealRuntime::find(Some(runtime.to_str().unwrap())).unwrap().flavor,
                flavor
            );
        }
    }
}
