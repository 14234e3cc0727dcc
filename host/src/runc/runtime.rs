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

/// The wrapper's front, and the name the reviewer is started as.
pub const WRAPPER_NAME: &str = "specwright-runc";

/// The binary that reviews, installed beside the front.
const REVIEWER_NAME: &str = "specwright";

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
        use std::os::unix::fs::MetadataExt;
        // This binary, and the front installed beside it (the reviewer is
        // started by the front, which may be on PATH as `runc`).
        let this = std::fs::metadata("/proc/self/exe").context("/proc/self/exe")?;
        let front = beside_this(WRAPPER_NAME).and_then(|path| std::fs::metadata(path).ok());
        let is_this = |stat: &nix::sys::stat::FileStat| {
            std::iter::once(&this)
                .chain(front.as_ref())
                .any(|m| stat.st_dev == m.dev() && stat.st_ino == m.ino())
        };
        if let Some(path) = choice.filter(|c| c.contains('/')) {
            let path = PathBuf::from(path);
            let (fd, stat) = open_checked("real runtime", &path)?;
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
                let (fd, stat) = open_checked("real runtime", &candidate)?;
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
        let Some(argv) = c_strings(std::iter::once(self.path.as_os_str()).chain(args.iter().map(OsString::as_os_str)))
        else {
            return anyhow::anyhow!("an argument holds a NUL byte");
        };
        let mut env = environment(|k| k != HANDED_TO_ENV);
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

/// `name` in the directory this binary is in.
fn beside_this(name: &str) -> Option<PathBuf> {
    let this = std::fs::read_link("/proc/self/exe").ok()?;
    Some(this.parent()?.join(name))
}

/// Replaces this process (the front) with the reviewer installed beside
/// it, started as `specwright-runc` with this process's arguments and
/// environment; returns only on failure. The reviewer is checked as the
/// real runtime is, and executed through the descriptor checked.
pub fn exec_reviewer() -> anyhow::Error {
    let Some(path) = beside_this(REVIEWER_NAME) else {
        return anyhow::anyhow!("/proc/self/exe: no directory to find {REVIEWER_NAME} in");
    };
    let (fd, _) = match open_checked("the reviewer", &path) {
        Ok(opened) => opened,
        Err(e) => {
            return e.context(format!(
                "{WRAPPER_NAME} reviews through {REVIEWER_NAME}, installed in the same directory"
            ))
        }
    };
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let argv = std::iter::once(std::ffi::OsStr::new(WRAPPER_NAME)).chain(args.iter().map(OsString::as_os_str));
    let Some(argv) = c_strings(argv) else {
        return anyhow::anyhow!("an argument holds a NUL byte");
    };
    let env = environment(|_| true);
    let error = nix::unistd::execveat(&fd, c"", &argv, &env, nix::fcntl::AtFlags::AT_EMPTY_PATH);
    anyhow::Error::new(error.err().unwrap_or(nix::errno::Errno::EINVAL)).context(format!("running {}", path.display()))
}

/// `items` as C strings; `None` when one holds a NUL byte.
fn c_strings<'a>(items: impl Iterator<Item = &'a std::ffi::OsStr>) -> Option<Vec<CString>> {
    items.map(|item| CString::new(item.as_bytes()).ok()).collect()
}

/// This process's environment, the variables `keep` keeps, as `K=V`.
fn environment(keep: impl Fn(&std::ffi::OsStr) -> bool) -> Vec<CString> {
    std::env::vars_os()
        .filter(|(k, _)| keep(k))
        .filter_map(|(k, v)| CString::new([k.as_bytes(), b"=", v.as_bytes()].concat()).ok())
        .collect()
}

/// Opens `path` for executing and checks the open file: a regular,
/// executable file owned by root or this user that no one else may write.
fn open_checked(what: &str, path: &Path) -> Result<(OwnedFd, nix::sys::stat::FileStat)> {
    let fd = nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        Mode::empty(),
    )
    .with_context(|| format!("{what} {}", path.display()))?;
    let stat = fstat(&fd).with_context(|| format!("{what} {}", path.display()))?;
    let euid = nix::unistd::geteuid().as_raw();
    let untrusted = |why: String| -> Result<(OwnedFd, nix::sys::stat::FileStat)> {
        bail!("{what} {}: not trusted: {why}", path.display())
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
