//! Resolving a selector inside a root without ever leaving it.
//!
//! Semantics are continuity's `fs.RootPath`, which BuildKit uses: `..` and
//! symlinks are followed but clamped to the root (an absolute link target
//! restarts from the root), a component that does not exist is joined as
//! is, and more than 255 links fail with "too many links".
//!
//! A path that exists is resolved by `pathrs` (openat2 `RESOLVE_IN_ROOT`,
//! or its own safe fallback on older kernels). `pathrs` cannot name what
//! does not exist, which BuildKit's semantics need (a dangling symlink, a
//! missing tail, `..` after a missing component), nor follow more than the
//! kernel's 40 links; for those the walk is done here, on file descriptors,
//! one `O_PATH|O_NOFOLLOW` component at a time, with `..` popping the
//! walker's own stack: no path string an attacker can change is handed to
//! the kernel. Either way the returned path is checked against
//! `/proc/self/fd` to be the object that was resolved; a concurrent rename
//! makes the resolution start again.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{open, openat, readlinkat, OFlag};
use nix::sys::stat::{fstat, Mode, SFlag};

/// continuity's limit on symlinks followed in one resolution.
pub const MAX_LINKS: u32 = 255;

/// How often a walk raced by a concurrent rename is started again.
const RACE_RETRIES: u32 = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    #[error("too many links")]
    TooManyLinks,
    #[error("{path}: {errno}")]
    Io { path: String, errno: Errno },
    #[error("{0:?} is not valid UTF-8")]
    NotUtf8(PathBuf),
    #[error("{0}: kept changing while being resolved")]
    Raced(String),
    #[error("selector {0:?} contains a NUL byte")]
    Nul(String),
    /// What [`read_in_root`] found is not a file it reads.
    #[error("{path}: {why}")]
    NotReadable { path: String, why: String },
    /// A path that another process would resolve otherwise.
    #[error("{path}: {why}")]
    Ambiguous { path: String, why: &'static str },
}

struct Step {
    name: Vec<u8>,
    /// None once the walk has passed a component that does not exist.
    fd: Option<OwnedFd>,
}

fn io_error(path: &Path, errno: Errno) -> ResolveError {
    ResolveError::Io {
        path: path.display().to_string(),
        errno,
    }
}

fn fd_path(fd: &impl AsRawFd) -> Result<PathBuf, Errno> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|e| e.raw_os_error().map_or(Errno::EIO, Errno::from_raw))
}

fn components(path: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    path.split(|b| *b == b'/').filter(|c| !c.is_empty()).map(<[u8]>::to_vec)
}

fn joined(root: &Path, stack: &[Step], upto: usize) -> PathBuf {
    let mut p = root.to_path_buf();
    for step in &stack[..upto] {
        p.push(OsStr::from_bytes(&step.name));
    }
    p
}

/// The real path of host path `path`, every symlink followed, as the
/// kernel names the object it reaches; a namespace, however reached (a
/// process's `/proc/<pid>/ns/net`, or a file `ip netns` bound), by the
/// kernel's name for it (`net:[4026531840]`), so that what is compared is
/// its identity. A path is refused where another process would resolve it
/// otherwise: one through a link of the kernel's own (`/proc/self/cwd`,
/// `/proc/<pid>/root`, `/dev/fd/N`) but the last component of a
/// process's namespace file (`/proc/<pid>/ns/<name>`, `/proc/self/ns/<name>`,
/// whose namespaces every process of the host's shares) or program
/// (`/proc/<pid>/exe`, Docker's hooks), or one naming this process's own
/// files (`/proc/self/...`).
pub fn canonical_host_path(path: &str) -> Result<String, ResolveError> {
    use nix::fcntl::{openat2, OpenHow, ResolveFlag};
    if path.contains('\0') {
        return Err(ResolveError::Nul(path.to_string()));
    }
    let refused = |why: &'static str| ResolveError::Ambiguous {
        path: path.to_string(),
        why,
    };
    let no_magic = |at: &str, flags: OFlag| {
        openat2(
            nix::fcntl::AT_FDCWD,
            Path::new(at),
            OpenHow::new()
                .flags(flags | OFlag::O_PATH | OFlag::O_CLOEXEC)
                .resolve(ResolveFlag::RESOLVE_NO_MAGICLINKS),
        )
    };
    let magic_link =
        "goes through a link of the kernel's (such as /proc/self/cwd), which each process resolves to its own";
    let fd = match kernel_link_file(path) {
        // Everything before the last component resolved without magic
        // links; the last is the kernel's link to the namespace or program.
        Some((dir, name)) => {
            let dir = no_magic(dir, OFlag::O_DIRECTORY).map_err(|e| match e {
                Errno::ELOOP => refused(magic_link),
                e => io_error(Path::new(path), e),
            })?;
            openat(&dir, name, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(|e| io_error(Path::new(path), e))?
        }
        None => no_magic(path, OFlag::empty()).map_err(|e| match e {
            Errno::ELOOP => refused(magic_link),
            e => io_error(Path::new(path), e),
        })?,
    };
    if let Some(kind) = namespace_kind(&fd) {
        let inode = fstat(&fd).map_err(|e| io_error(Path::new(path), e))?.st_ino;
        return Ok(format!("{kind}:[{inode}]"));
    }
    let real = fd_path(&fd).map_err(|e| io_error(Path::new(path), e))?;
    let own = format!("/proc/{}", std::process::id());
    if real.starts_with(&own) {
        return Err(refused(
            "names this process's own files (/proc/self), which each process resolves to its own",
        ));
    }
    into_string(real)
}

/// `/proc/<pid>/ns/<name>`, `/proc/self/ns/<name>` or `/proc/<pid>/exe`,
/// split into the directory and the last name.
fn kernel_link_file(path: &str) -> Option<(&str, &str)> {
    let (dir, name) = path.rsplit_once('/')?;
    let numeric = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    let rest = dir.strip_prefix("/proc/")?;
    let linked = match rest.strip_suffix("/ns") {
        Some(process) => (numeric(process) || process == "self") && !name.is_empty() && !name.contains('.'),
        None => numeric(rest) && name == "exe",
    };
    linked.then_some((dir, name))
}

/// The kind of namespace `fd` is (`net`, `pid`, ...), when it is one.
fn namespace_kind(fd: &OwnedFd) -> Option<&'static str> {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    let statfs = nix::sys::statfs::fstatfs(fd).ok()?;
    if statfs.filesystem_type().0 as i64 != NSFS_MAGIC {
        return None;
    }
    // NS_GET_NSTYPE needs a descriptor that is not O_PATH.
    let readable = open(
        Path::new(&format!("/proc/self/fd/{}", fd.as_raw_fd())),
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    nix::ioctl_none!(ns_get_nstype, 0xb7, 0x3);
    // SAFETY: NS_GET_NSTYPE takes no argument and only returns the
    // namespace's CLONE_NEW* type; `readable` is an open nsfs descriptor.
    let kind = unsafe { ns_get_nstype(readable.as_raw_fd()) }.ok()?;
    Some(match kind {
        0x4000_0000 => "net",
        0x2000_0000 => "pid",
        0x0002_0000 => "mnt",
        0x0800_0000 => "ipc",
        0x0400_0000 => "uts",
        0x1000_0000 => "user",
        0x0200_0000 => "cgroup",
        0x0000_0080 => "time",
        _ => "ns",
    })
}

/// What a selector names.
#[derive(Debug)]
pub struct Resolved {
    /// The host path, inside the root.
    pub path: String,
    /// The object itself (`O_PATH`), when it exists.
    pub object: Option<OwnedFd>,
    /// A dry run's lexical plan: nothing was looked at, so whether the
    /// object exists is unknown.
    pub planned: bool,
}

impl Resolved {
    fn found(path: String, object: Option<OwnedFd>) -> Resolved {
        Resolved {
            path,
            object,
            planned: false,
        }
    }

    /// A dry run's plan for `path`.
    pub fn planned(path: String) -> Resolved {
        Resolved {
            path,
            object: None,
            planned: true,
        }
    }
}

/// Reads what `path` names inside `root` (resolved as a selector is),
/// at most `bound` bytes; `None` when nothing is there, or when it cannot
/// be resolved (a link loop). Anything but a regular file of at most
/// `bound` bytes is an error, never read: a device would not end, a FIFO
/// would block the open.
pub fn read_in_root(root: &Path, path: &str, bound: u64) -> Result<Option<Vec<u8>>, ResolveError> {
    let Ok(resolved) = resolve_in_root(root, path) else {
        return Ok(None);
    };
    let Some(object) = resolved.object else {
        return Ok(None);
    };
    let refused = |why: String| ResolveError::NotReadable {
        path: resolved.path.clone(),
        why,
    };
    let stat = fstat(&object).map_err(|e| io_error(Path::new(&resolved.path), e))?;
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(refused("not a regular file".to_string()));
    }
    if stat.st_size as u64 > bound {
        return Err(refused(format!("more than {bound} bytes")));
    }
    // Reopening the resolved object through its descriptor reads exactly
    // what was resolved, whatever happens to the path meanwhile; it is a
    // regular file, so the open cannot block.
    let by_fd = format!("/proc/self/fd/{}", object.as_raw_fd());
    crate::input::read_bounded(Path::new(&by_fd), bound)
        .map(Some)
        .map_err(|e| refused(e.to_string()))
}

fn into_string(path: PathBuf) -> Result<String, ResolveError> {
    path.into_os_string()
        .into_string()
        .map_err(|p| ResolveError::NotUtf8(p.into()))
}

/// Where `selector` would be inside `root`, lexically: what a dry run
/// plans instead of resolving (nothing is looked at).
pub fn planned_in_root(root: &Path, selector: &str) -> String {
    format!(
        "{}{}",
        root.display(),
        specwright_core::mounts::clean_absolute(selector)
    )
}

/// Resolves `selector` inside `root`, returning the host path of what it
/// names (which need not exist) and, when it exists, the object.
pub fn resolve_in_root(root: &Path, selector: &str) -> Result<Resolved, ResolveError> {
    // pathrs would cut the path at the NUL and resolve what precedes it.
    if selector.contains('\0') {
        return Err(ResolveError::Nul(selector.to_string()));
    }
    let root_fd = open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_error(root, e))?;
    let root_path = fd_path(&root_fd).map_err(|e| io_error(root, e))?;
    for _ in 0..RACE_RETRIES {
        if let Some(found) = resolve_existing(&root_fd, &root_path, selector)? {
            return Ok(found);
        }
        let mut stack = walk(&root_fd, &root_path, selector)?;
        if stack.is_empty() {
            // The root itself ("", "missing/..").
            return Ok(Resolved::found(into_string(root_path)?, Some(root_fd)));
        }
        let resolved = joined(&root_path, &stack, stack.len());
        let existing = stack.iter().take_while(|s| s.fd.is_some()).count();
        let verified = match existing.checked_sub(1).and_then(|i| stack[i].fd.as_ref()) {
            Some(fd) => fd_path(fd).ok().as_deref() == Some(joined(&root_path, &stack, existing).as_path()),
            None => true,
        };
        if verified {
            let object = if existing == stack.len() {
                stack.pop().and_then(|s| s.fd)
            } else {
                None
            };
            return Ok(Resolved::found(into_string(resolved)?, object));
        }
    }
    Err(ResolveError::Raced(root_path.join(selector).display().to_string()))
}

/// The fast path through `pathrs`; `None` when the walk must decide (the
/// path does not fully exist, or has more links than the kernel follows).
fn resolve_existing(root_fd: &OwnedFd, root_path: &Path, selector: &str) -> Result<Option<Resolved>, ResolveError> {
    // The root we opened, not its path again: the same object the walk uses.
    let root = pathrs::RootRef::from_fd(root_fd.as_fd());
    let handle = match root.resolve(selector) {
        Ok(handle) => handle,
        Err(e) if e.kind() == pathrs::error::ErrorKind::SafetyViolation => {
            return Err(ResolveError::Raced(format!(
                "{}: {e}",
                root_path.join(selector).display()
            )))
        }
        Err(_) => return Ok(None),
    };
    let object = OwnedFd::from(handle);
    let Ok(path) = fd_path(&object) else {
        return Ok(None);
    };
    // The kernel's name for the object must still be inside the root; if a
    // rename moved it out, the walk (and its own check) decides.
    if !path.starts_with(root_path) {
        return Ok(None);
    }
    Ok(Some(Resolved::found(into_string(path)?, Some(object))))
}

fn walk(root_fd: &OwnedFd, root_path: &Path, selector: &str) -> Result<Vec<Step>, ResolveError> {
    let mut queue: VecDeque<Vec<u8>> = components(selector.as_bytes()).collect();
    let mut stack: Vec<Step> = Vec::new();
    let mut links = 0u32;
    while let Some(name) = queue.pop_front() {
        match name.as_slice() {
            b"." => continue,
            b".." => {
                stack.pop();
                continue;
            }
            _ => {}
        }
        let parent = match stack.last() {
            None => Some(root_fd.as_fd()),
            Some(step) => step.fd.as_ref().map(|fd| fd.as_fd()),
        };
        let Some(parent) = parent else {
            stack.push(Step { name, fd: None });
            continue;
        };
        let fd = match openat(
            parent,
            OsStr::from_bytes(&name),
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => {
                stack.push(Step { name, fd: None });
                continue;
            }
            Err(e) => {
                let mut p = joined(root_path, &stack, stack.len());
                p.push(OsStr::from_bytes(&name));
                return Err(io_error(&p, e));
            }
        };
        let stat = fstat(&fd).map_err(|e| io_error(root_path, e))?;
        if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFLNK {
            stack.push(Step { name, fd: Some(fd) });
            continue;
        }
        links += 1;
        if links > MAX_LINKS {
            return Err(ResolveError::TooManyLinks);
        }
        let target = readlinkat(&fd, "").map_err(|e| io_error(root_path, e))?;
        let target = target.as_bytes();
        if target.first() == Some(&b'/') {
            stack.clear();
        }
        for (i, c) in components(target).enumerate() {
            queue.insert(i, c);
        }
    }
    Ok(stack)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// The oracle's source tree.
    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("sub/dir")).unwrap();
        std::fs::create_dir_all(r.join("sub/other")).unwrap();
        std::fs::write(r.join("sub/dir/file"), "x").unwrap();
        symlink("/sub/dir", r.join("link_abs")).unwrap();
        symlink("/etc", r.join("link_out_abs")).unwrap();
        symlink("sub/dir", r.join("link_rel")).unwrap();
        symlink("../../../../etc", r.join("link_rel_escape")).unwrap();
        symlink("sub", r.join("dirlink")).unwrap();
        symlink("loop2", r.join("loop1")).unwrap();
        symlink("loop1", r.join("loop2")).unwrap();
        symlink("../sub/dir", r.join("sub/uplink")).unwrap();
        dir
    }

    fn resolve(dir: &tempfile::TempDir, sel: &str) -> Result<String, ResolveError> {
        let root = std::fs::canonicalize(dir.path()).unwrap();
        resolve_in_root(&root, sel).map(|r| r.path.strip_prefix(root.to_str().unwrap()).unwrap().to_string())
    }

    #[test]
    fn symlinks_are_clamped_to_the_root() {
        let t = tree();
        for (sel, want) in [
            ("sub/dir", "/sub/dir"),
            ("link_abs", "/sub/dir"),
            ("link_out_abs", "/etc"),
            ("link_rel", "/sub/dir"),
            ("link_rel_escape", "/etc"),
            ("dirlink/dir", "/sub/dir"),
            ("sub/uplink", "/sub/dir"),
            ("link_abs/file", "/sub/dir/file"),
            ("link_out_abs/passwd", "/etc/passwd"),
            ("../../../etc", "/etc"),
            ("/abs/path", "/abs/path"),
            ("sub/../../..x", "/..x"),
            ("a/./b/", "/a/b"),
            ("missing/../sub", "/sub"),
            ("dirlink/../link_rel/file", "/sub/dir/file"),
        ] {
            assert_eq!(resolve(&t, sel).unwrap(), want, "selector {sel}");
        }
    }

    #[test]
    fn a_symlink_chain_is_followed() {
        let t = tree();
        symlink("c2", t.path().join("c1")).unwrap();
        symlink("/c3", t.path().join("c2")).unwrap();
        symlink("link_rel/../other", t.path().join("c3")).unwrap();
        // c3 -> link_rel/../other: link_rel is sub/dir, so .. is sub.
        assert_eq!(resolve(&t, "c1").unwrap(), "/sub/other");
    }

    /// Found by the selector fuzz target: the walk returned no object for
    /// the root itself, so `--pin-selectors` refused to pin it.
    #[test]
    fn the_root_itself_is_returned_with_its_object() {
        let t = tree();
        let root = std::fs::canonicalize(t.path()).unwrap();
        for sel in ["", "/", ".", "missing/..", "sub/..", "../.."] {
            let resolved = resolve_in_root(&root, sel).unwrap();
            assert_eq!(resolved.path, root.to_str().unwrap(), "{sel:?}");
            let object = resolved.object.unwrap_or_else(|| panic!("{sel:?}: no object"));
            assert_eq!(fd_path(&object).unwrap(), root, "{sel:?}");
        }
    }

    /// Found by the selector fuzz target: "deep/\0/b" resolved to /deep.
    #[test]
    fn a_nul_byte_is_an_error() {
        let t = tree();
        for sel in ["sub/\0/dir", "\0", "missing/\0"] {
            assert!(matches!(resolve(&t, sel), Err(ResolveError::Nul(_))), "{sel:?}");
        }
    }

    #[test]
    fn a_cycle_fails_with_too_many_links() {
        let t = tree();
        assert_eq!(resolve(&t, "loop1"), Err(ResolveError::TooManyLinks));
        assert_eq!(resolve(&t, "loop1").unwrap_err().to_string(), "too many links");
    }

    #[test]
    fn a_file_in_the_middle_is_an_error() {
        let t = tree();
        let err = resolve(&t, "sub/dir/file/x").unwrap_err();
        assert!(
            matches!(
                err,
                ResolveError::Io {
                    errno: Errno::ENOTDIR,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    /// Another thread keeps swapping `sw` between a directory and symlinks
    /// that try to leave the root, and renames a directory out of the root,
    /// while selectors through it are resolved: no result may ever name
    /// anything outside the root.
    #[test]
    fn swapping_symlinks_never_yield_a_path_outside_the_root() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;

        let outer = tempfile::tempdir().unwrap();
        let outer_path = std::fs::canonicalize(outer.path()).unwrap();
        let root = outer_path.join("root");
        std::fs::create_dir_all(root.join("real/deeper")).unwrap();
        std::fs::write(root.join("real/deeper/file"), "inside").unwrap();
        std::fs::create_dir_all(outer_path.join("secret")).unwrap();
        std::fs::write(outer_path.join("secret/file"), "outside").unwrap();

        let stop = Arc::new(AtomicBool::new(false));
        let swapper = {
            let stop = stop.clone();
            let root = root.clone();
            let outer_path = outer_path.clone();
            std::thread::spawn(move || {
                let sw = root.join("sw");
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let _ = std::fs::remove_file(&sw);
                    let _ = std::fs::remove_dir(&sw);
                    match n % 4 {
                        0 => drop(symlink("real", &sw)),
                        1 => drop(symlink("../../secret", &sw)),
                        2 => drop(symlink(outer_path.join("secret"), &sw)),
                        _ => {
                            // Move a directory the walk may be inside out of the root and back.
                            let _ = std::fs::rename(root.join("real/deeper"), outer_path.join("moved"));
                            let _ = std::fs::rename(outer_path.join("moved"), root.join("real/deeper"));
                        }
                    }
                    n += 1;
                }
            })
        };
        let root_str = format!("{}/", root.display());
        let mut seen = 0;
        for i in 0..3000 {
            let selector = [
                "sw/deeper/file",
                "sw/../sw/deeper/file",
                "real/deeper/../../sw/file",
                "sw",
            ][i % 4];
            match resolve_in_root(&root, selector) {
                Ok(r) => {
                    assert!(r.path.starts_with(&root_str), "{selector} resolved to {}", r.path);
                    assert!(!r.path.split('/').any(|c| c == ".."), "{}", r.path);
                    if let Some(fd) = &r.object {
                        let real = fd_path(fd).unwrap();
                        assert!(
                            real.starts_with(&root) || real.starts_with(outer_path.join("moved")),
                            "{selector}: the object resolved is {}",
                            real.display()
                        );
                        assert!(!real.starts_with(outer_path.join("secret")), "{}", real.display());
                    }
                    seen += 1;
                }
                Err(ResolveError::Raced(_)) | Err(ResolveError::Io { .. }) => {}
                Err(e) => panic!("{selector}: {e}"),
            }
        }
        stop.store(true, Ordering::Relaxed);
        swapper.join().unwrap();
        assert!(seen > 100, "only {seen} resolutions succeeded");
    }

    /// Regression: a path through `/proc/self/cwd` resolved in the
    /// wrapper's working directory, while the runtime resolved it in the
    /// bundle or the rootfs; a namespace bound under `/run/netns` was
    /// named by its path, hiding that it was the host's.
    #[test]
    fn a_canonical_host_path_is_what_every_process_resolves_alike() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "").unwrap();
        let real = std::fs::canonicalize(&plain).unwrap().display().to_string();
        assert_eq!(canonical_host_path(plain.to_str().unwrap()).unwrap(), real);
        let own_net = std::fs::read_link("/proc/self/ns/net").unwrap().display().to_string();
        let program = std::fs::canonicalize("/proc/self/exe").unwrap().display().to_string();
        let pid = std::process::id();
        assert_eq!(canonical_host_path(&format!("/proc/{pid}/exe")).unwrap(), program);
        assert_eq!(canonical_host_path("/proc/self/ns/net").unwrap(), own_net);
        assert_eq!(canonical_host_path(&format!("/proc/{pid}/ns/net")).unwrap(), own_net);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/proc/self/cwd", &link).unwrap();
        for refused in [
            "/proc/self/cwd".to_string(),
            "/proc/self/cwd/etc".to_string(),
            format!("/proc/{pid}/root/etc"),
            "/dev/fd/0".to_string(),
            "/proc/self/environ".to_string(),
            "/proc/self/exe".to_string(),
            format!("/proc/{pid}/cwd"),
            format!("{}/x", link.display()),
        ] {
            let err = canonical_host_path(&refused).unwrap_err();
            assert!(matches!(err, ResolveError::Ambiguous { .. }), "{refused}: {err}");
        }
    }
}
