//! Precompiled policies, cached under the state dir and keyed by the
//! component's hash and the engine's configuration, so a policy is compiled
//! once, not on every step.

use std::hash::{Hash, Hasher};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not trusted as a cache ({why})")]
    Untrusted { path: PathBuf, why: String },
    #[error("compiling: {0}")]
    Compile(String),
}

#[derive(Clone)]
pub struct CompileCache {
    dir: PathBuf,
}

/// What a load found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    Hit,
    Compiled,
}

impl CompileCache {
    /// Opens (creating, mode 0700) the cache directory. Precompiled code is
    /// trusted code, so the directory must belong to us and be writable by
    /// no one else.
    pub fn open(dir: &Path) -> Result<CompileCache, CacheError> {
        let io = |source| CacheError::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
        let meta = std::fs::symlink_metadata(dir).map_err(io)?;
        if !meta.is_dir() {
            return Err(CacheError::Untrusted {
                path: dir.to_path_buf(),
                why: "not a directory (a symlink?)".to_string(),
            });
        }
        check_trusted(dir, &meta)?;
        Ok(CompileCache { dir: dir.to_path_buf() })
    }

    /// The file name of the precompiled form, for `engine`, of the
    /// component whose SHA-256 is `digest`.
    fn entry_name(engine: &wasmtime::Engine, digest: &[u8; 32]) -> String {
        let mut config = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut config);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("{hex}-{:016x}.cwasm", config.finish())
    }

    /// The component for `bytes`: from the cache, or compiled and stored.
    /// An entry is used only if it names the component it was compiled
    /// from (its SHA-256, in the entry's header) and its code is whole
    /// (the length and CRC-32 in its header match): a renamed entry of
    /// another policy, or one truncated or corrupted on disk, is compiled
    /// over, not run.
    pub fn load(&self, engine: &wasmtime::Engine, bytes: &[u8]) -> Result<(Component, CacheUse), CacheError> {
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        let name = Self::entry_name(engine, &digest);
        let path = self.dir.join(&name);
        if let Some(component) = read_entry(engine, &path, &digest) {
            return Ok((component, CacheUse::Hit));
        }
        // Missing, stale, foreign or broken: compile again and replace it.
        sweep_abandoned(&self.dir);
        let compiled = engine
            .precompile_component(bytes)
            .map_err(|e| CacheError::Compile(format!("{e:#}")))?;
        crate::state::write_file_in(
            &self.dir,
            &name,
            &[&compiled, &EntryTrailer::of(&digest, &compiled).to_bytes()],
            0o600,
        )
        .map_err(|e| CacheError::Io {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        let component = deserialize_bytes(engine, &compiled).map_err(|e| CacheError::Compile(format!("{e:#}")))?;
        Ok((component, CacheUse::Compiled))
    }
}

fn check_trusted(path: &Path, meta: &std::fs::Metadata) -> Result<(), CacheError> {
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(CacheError::Untrusted {
            path: path.to_path_buf(),
            why: format!("owned by uid {}, not {euid}", meta.uid()),
        });
    }
    if meta.mode() & 0o022 != 0 {
        return Err(CacheError::Untrusted {
            path: path.to_path_buf(),
            why: format!("mode {:o} lets others write", meta.mode() & 0o777),
        });
    }
    Ok(())
}

/// What a cache entry ends with: this magic, then the SHA-256 of the
/// component it was compiled from, then the length (little-endian u64)
/// and CRC-32 (little-endian u32) of the precompiled code before it. The
/// code comes first and unchanged, so wasmtime maps the file itself
/// (`Component::deserialize_file`) instead of copying it into memory.
const ENTRY_MAGIC: &[u8; 8] = b"SWCWASM3";

/// The largest cache entry read (compiled policies are a few MiB).
const MAX_ENTRY_BYTES: u64 = 256 << 20;

/// A cache entry's trailer: which component the code is for, and how to
/// tell that the code is whole. The CRC catches an entry damaged on disk
/// or torn by a crash; the directory's ownership, not the checksum, keeps
/// other users out.
#[derive(Debug, PartialEq, Eq)]
struct EntryTrailer {
    component: [u8; 32],
    code_len: u64,
    code_crc: u32,
}

impl EntryTrailer {
    const LEN: usize = ENTRY_MAGIC.len() + 32 + 8 + 4;

    fn of(component: &[u8; 32], code: &[u8]) -> EntryTrailer {
        EntryTrailer {
            component: *component,
            code_len: code.len() as u64,
            code_crc: crc32fast::hash(code),
        }
    }

    fn to_bytes(&self) -> [u8; EntryTrailer::LEN] {
        let mut out = [0u8; EntryTrailer::LEN];
        out[..8].copy_from_slice(ENTRY_MAGIC);
        out[8..40].copy_from_slice(&self.component);
        out[40..48].copy_from_slice(&self.code_len.to_le_bytes());
        out[48..].copy_from_slice(&self.code_crc.to_le_bytes());
        out
    }

    /// The code at the start of `entry` and the trailer after it.
    fn split(entry: &[u8]) -> Option<(&[u8], EntryTrailer)> {
        let at = entry.len().checked_sub(EntryTrailer::LEN)?;
        let (code, tail) = entry.split_at(at);
        if &tail[..8] != ENTRY_MAGIC {
            return None;
        }
        let trailer = EntryTrailer {
            component: tail[8..40].try_into().ok()?,
            code_len: u64::from_le_bytes(tail[40..48].try_into().ok()?),
            code_crc: u32::from_le_bytes(tail[48..].try_into().ok()?),
        };
        Some((code, trailer))
    }
}

/// The entry at `path`, if it is a regular file of ours, for the
/// component whose SHA-256 is `digest`, with its code whole.
fn read_entry(engine: &wasmtime::Engine, path: &Path, digest: &[u8; 32]) -> Option<Component> {
    use std::io::Read;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.file_type().is_file() || check_trusted(path, &meta).is_err() || meta.len() > MAX_ENTRY_BYTES {
        return None;
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_ENTRY_BYTES).read_to_end(&mut bytes).ok()?;
    let (code, trailer) = EntryTrailer::split(&bytes)?;
    if trailer != EntryTrailer::of(digest, code) {
        return None;
    }
    map_entry(engine, path).ok()
}

fn map_entry(engine: &wasmtime::Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: `path` is a regular file in a cache directory owned by this
    // user and writable by no one else (checked for the directory and the
    // file), written by `precompile_component` of an engine with the same
    // configuration (its hash is in the file name) for this very component
    // (its SHA-256 is in the trailer), and whole (its length and CRC-32
    // match the trailer's; wasmtime ignores what follows its ELF image).
    // Entries are only ever replaced by renaming a new file over them,
    // never changed in place, so the mapping keeps the bytes checked here.
    // wasmtime also checks its own header and rejects an incompatible
    // engine.
    unsafe { Component::deserialize_file(engine, path) }
}

/// Removes temporary files of compiles whose process is gone (killed
/// while writing its entry).
fn sweep_abandoned(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let owner = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(crate::state::temporary_owner);
        if let Some(pid) = owner {
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// `component`, compiled by another engine of this process with the same
/// configuration, made usable in `engine` without compiling it again.
pub fn copy_component(component: &Component, engine: &wasmtime::Engine) -> wasmtime::Result<Component> {
    let bytes = component.serialize()?;
    // SAFETY: `bytes` was produced a moment ago by `serialize` of a
    // component this process already holds (compiled here, or taken from
    // the trusted cache), and wasmtime checks the header and rejects an
    // engine whose configuration differs.
    unsafe { Component::deserialize(engine, &bytes) }
}

fn deserialize_bytes(engine: &wasmtime::Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `bytes` was produced a moment ago by `precompile_component`
    // of this very engine.
    unsafe { Component::deserialize(engine, bytes) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trailer_reads_back_and_notices_damage() {
        let code = b"precompiled code".to_vec();
        let digest = [7u8; 32];
        let mut entry = code.clone();
        entry.extend_from_slice(&EntryTrailer::of(&digest, &code).to_bytes());
        let (read, trailer) = EntryTrailer::split(&entry).unwrap();
        assert_eq!(trailer, EntryTrailer::of(&digest, read));
        assert_eq!(read, code);
        entry[3] ^= 0x10;
        let (read, trailer) = EntryTrailer::split(&entry).unwrap();
        assert_ne!(trailer, EntryTrailer::of(&digest, read));
        assert!(EntryTrailer::split(&entry[..EntryTrailer::LEN - 1]).is_none());
        let last = entry.len() - 1;
        assert!(EntryTrailer::split(&entry[..last]).is_none(), "a torn trailer");
        entry[code.len()] = b'X';
        assert!(EntryTrailer::split(&entry).is_none());
    }
}
