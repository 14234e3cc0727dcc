//! Precompiled policies, cached under the state dir and keyed by the
//! component's hash and the engine's configuration, so a policy is compiled
//! once, not on every step.

use std::fs::File;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use specwright_host_core::metrics::CacheUses;
use specwright_host_core::state::{identity_kept_locally, CacheDir, CacheEntry, StateError};
use specwright_host_core::sys::Syscalls;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// Reading or writing the cache's directory.
    #[error(transparent)]
    State(#[from] StateError),
    #[error("compiling: {0}")]
    Compile(String),
}

/// Precompiled policies in the state dir's `cache/`, read and written
/// through the [`Store`](specwright_host_core::sys::Store) like every other state file (a dry run finds
/// nothing there, a fault can be injected into any of it).
#[derive(Clone)]
pub struct CompileCache {
    dir: CacheDir,
    store: Arc<dyn Syscalls>,
    /// Its hits and compilations in this process (the metrics').
    uses: Arc<CacheUses>,
}

/// What a load found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    Hit,
    Compiled,
}

impl CompileCache {
    /// How long a policy file must have been left unchanged before its
    /// digest is remembered.
    pub const SETTLED: std::time::Duration = std::time::Duration::from_secs(2);

    /// The cache in `dir`, read and written through `store`.
    pub fn new(dir: CacheDir, store: Arc<dyn Syscalls>) -> CompileCache {
        CompileCache::counting(dir, store, Arc::default())
    }

    /// [`Self::new`], counting its hits and compilations in `uses`.
    pub fn counting(dir: CacheDir, store: Arc<dyn Syscalls>, uses: Arc<CacheUses>) -> CompileCache {
        CompileCache { dir, store, uses }
    }

    /// Its directory, open.
    pub fn dir(&self) -> &CacheDir {
        &self.dir
    }

    /// The file name of the precompiled form, for `engine`, of the
    /// component whose SHA-256 is `digest`.
    fn entry_name(engine: &wasmtime::Engine, digest: &[u8; 32]) -> String {
        let mut config = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut config);
        format!("{}-{:016x}.cwasm", hex(digest), config.finish())
    }

    /// The component for `bytes`: from the cache, or compiled and stored.
    /// An entry is used only if it names the component it was compiled
    /// from (its SHA-256, in the entry's header) and its code is whole
    /// (the length and CRC-32 in its header match): a renamed entry of
    /// another policy, or one truncated or corrupted on disk, is compiled
    /// over, not run. The CRC is computed once per entry file: once it
    /// matched on an entry left unchanged for [`Self::SETTLED`], a memo
    /// (`<entry>.verified`) names the entry's identity then (device,
    /// inode, size, modification and change times), and a later load of
    /// that very file checks its length and component only. Any change made
    /// through the file system gives the entry another change time and the
    /// CRC is computed again; damage below the file system after the first
    /// check is not looked for again.
    pub fn load(&self, engine: &wasmtime::Engine, bytes: &[u8]) -> Result<(Component, CacheUse), CacheError> {
        self.load_digested(engine, bytes, component_digest(bytes))
    }

    /// [`Self::load`] of bytes whose SHA-256 is known already (an embedded
    /// policy's, computed when specwright was built, or one just hashed):
    /// `digest` must be theirs, or the entry compiled from them would be
    /// kept under another component's name.
    pub(crate) fn load_digested(
        &self,
        engine: &wasmtime::Engine,
        bytes: &[u8],
        digest: [u8; 32],
    ) -> Result<(Component, CacheUse), CacheError> {
        let name = Self::entry_name(engine, &digest);
        if let Some(component) = self.read(engine, &name, &digest) {
            self.uses.hit();
            return Ok((component, CacheUse::Hit));
        }
        // Missing, stale, foreign or broken. Processes that miss the same
        // entry at once compile it once: the first takes the entry's lock,
        // the others wait for it and read what it wrote.
        let _compiling = self.store.lock_cache_entry(&self.dir, &name, COMPILE_WAIT)?;
        if let Some(component) = self.read(engine, &name, &digest) {
            self.uses.hit();
            return Ok((component, CacheUse::Hit));
        }
        if let Err(e) = self.store.sweep_cache(&self.dir) {
            tracing::debug!(error = %e, "sweeping the compile cache");
        }
        let compiled = engine
            .precompile_component(bytes)
            .map_err(|e| CacheError::Compile(format!("{e:#}")))?;
        self.store.write_cache_entry(
            &self.dir,
            &name,
            &[&compiled, &EntryTrailer::of(&digest, &compiled).to_bytes()],
        )?;
        tracing::info!(entry = %name, "compiled a policy into the compile cache");
        self.uses.compiled();
        let component = deserialize_bytes(engine, &compiled).map_err(|e| CacheError::Compile(format!("{e:#}")))?;
        Ok((component, CacheUse::Compiled))
    }

    /// The component in `file` from the cache, without reading the file:
    /// when the digest memo names its SHA-256 for the file as it is now
    /// (the same device, inode, size, modification and change times) and
    /// the entry for that digest is whole. Only on a file system whose
    /// identities the kernel keeps ([`identity_kept_locally`]). `None`
    /// sends the caller to read and hash the file.
    ///
    /// What this relies on: a change to the file's contents changes its
    /// change time. Writes through `write(2)` and renames do; a write whose
    /// data arrives more than [`Self::SETTLED`] after it began (its source a
    /// stalled FUSE mapping) or a write through a shared mapping of pages
    /// already dirty may not. Either needs write access to a file that only
    /// root (or this user) may write.
    pub fn load_remembered(&self, engine: &wasmtime::Engine, file: &File) -> Option<(Component, [u8; 32])> {
        if !identity_kept_locally(file) {
            return None;
        }
        let identity = FileIdentity::of(file)?;
        let memo = match self
            .store
            .read_cache_entry(&self.dir, &identity.memo_name(), MEMO_LEN as u64)
        {
            Ok(memo) => memo?,
            Err(e) => {
                tracing::debug!(error = %e, "reading a digest memo");
                return None;
            }
        };
        let digest = identity.recalled(memo.bytes())?;
        let component = self.read(engine, &Self::entry_name(engine, &digest), &digest)?;
        self.uses.hit();
        Some((component, digest))
    }

    /// Remembers that `file`, as `before` described it when its bytes were
    /// read, has the SHA-256 `digest`: only when it is unchanged since
    /// (its description now is the same) and settled (last changed
    /// [`Self::SETTLED`] ago or more, so that a later change, however quick,
    /// gives it another change time: the kernel sets it from its clock at
    /// every write, rename or chmod, and no user can set it back).
    pub(crate) fn remember(&self, file: &File, before: Option<FileIdentity>, digest: &[u8; 32]) {
        let Some(identity) = before else {
            return;
        };
        if FileIdentity::of(file) != Some(identity) || !settled(&identity) || !identity_kept_locally(file) {
            return;
        }
        if let Err(e) = self
            .store
            .write_cache_entry(&self.dir, &identity.memo_name(), &[&identity.memo(digest)])
        {
            tracing::debug!(error = %e, "writing a digest memo");
        }
    }

    /// Entry `name`, if it is whole and for the component whose SHA-256 is
    /// `digest`; an entry that cannot be read is one more miss.
    fn read(&self, engine: &wasmtime::Engine, name: &str, digest: &[u8; 32]) -> Option<Component> {
        let entry = match self.store.read_cache_entry(&self.dir, name, MAX_ENTRY_BYTES) {
            Ok(entry) => entry?,
            Err(e) => {
                tracing::debug!(error = %e, "reading a compile cache entry");
                return None;
            }
        };
        let identity = FileIdentity::of_stat(entry.stat());
        let verified_name = format!("{name}.verified");
        let local = entry.identity_kept_locally();
        let verified = local
            && match self.store.read_cache_entry(&self.dir, &verified_name, MEMO_LEN as u64) {
                Ok(memo) => memo.is_some_and(|memo| identity.recalled(memo.bytes()) == Some(*digest)),
                Err(e) => {
                    tracing::debug!(error = %e, "reading a compile cache entry's verification");
                    false
                }
            };
        let (code, trailer) = EntryTrailer::split(entry.bytes())?;
        if verified {
            if trailer.component != *digest || trailer.code_len != code.len() as u64 {
                return None;
            }
        } else {
            if trailer != EntryTrailer::of(digest, code) {
                return None;
            }
            if local && settled(&identity) {
                if let Err(e) = self
                    .store
                    .write_cache_entry(&self.dir, &verified_name, &[&identity.memo(digest)])
                {
                    tracing::debug!(error = %e, "writing a compile cache entry's verification");
                }
            }
        }
        map_entry(engine, &entry).ok()
    }
}

/// Whether the file `identity` describes was last changed
/// [`CompileCache::SETTLED`] ago or more.
fn settled(identity: &FileIdentity) -> bool {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .is_ok_and(|now| now.as_secs() as i64 - identity.ctime.0 > CompileCache::SETTLED.as_secs() as i64)
}

/// `bytes` in lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of a component's bytes: its cache entry's key.
pub fn component_digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// A policy file as the digest memo knows it: what changes whenever its
/// contents do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileIdentity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// What a digest memo holds: this magic, the file's identity (seven
/// little-endian 64-bit numbers), its SHA-256.
const MEMO_MAGIC: &[u8; 8] = b"SWMEMO1\n";
const MEMO_LEN: usize = MEMO_MAGIC.len() + 7 * 8 + 32;

impl FileIdentity {
    /// The identity of the regular file open as `file`; `None` for
    /// anything else.
    pub(crate) fn of(file: &File) -> Option<FileIdentity> {
        let stat = nix::sys::stat::fstat(file).ok()?;
        let regular = nix::sys::stat::SFlag::from_bits_truncate(stat.st_mode) & nix::sys::stat::SFlag::S_IFMT
            == nix::sys::stat::SFlag::S_IFREG;
        regular.then(|| FileIdentity::of_stat(&stat))
    }

    /// What a descriptor's `fstat` said of a file.
    fn of_stat(stat: &nix::sys::stat::FileStat) -> FileIdentity {
        FileIdentity {
            dev: stat.st_dev,
            ino: stat.st_ino,
            size: stat.st_size as u64,
            mtime: (stat.st_mtime, stat.st_mtime_nsec),
            ctime: (stat.st_ctime, stat.st_ctime_nsec),
        }
    }

    /// The memo's name in the cache directory: one per file.
    fn memo_name(&self) -> String {
        format!("file-{:x}-{:x}.sha256", self.dev, self.ino)
    }

    fn numbers(&self) -> [u64; 7] {
        [
            self.dev,
            self.ino,
            self.size,
            self.mtime.0 as u64,
            self.mtime.1 as u64,
            self.ctime.0 as u64,
            self.ctime.1 as u64,
        ]
    }

    fn memo(&self, digest: &[u8; 32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(MEMO_LEN);
        out.extend_from_slice(MEMO_MAGIC);
        for n in self.numbers() {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.extend_from_slice(digest);
        out
    }

    /// The digest `memo` remembers for this very identity, if it does.
    fn recalled(&self, memo: &[u8]) -> Option<[u8; 32]> {
        if memo.len() != MEMO_LEN || &memo[..8] != MEMO_MAGIC {
            return None;
        }
        let mut at = 8;
        for n in self.numbers() {
            if memo[at..at + 8] != n.to_le_bytes() {
                return None;
            }
            at += 8;
        }
        memo[at..].try_into().ok()
    }
}

/// The longest a process waits for another one compiling the same policy
/// (a large Python or JavaScript policy compiles in seconds).
pub const COMPILE_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

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
/// (before its first use) or torn by a crash; the directory's ownership,
/// not the checksum, keeps other users out.
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

fn map_entry(engine: &wasmtime::Engine, entry: &CacheEntry) -> wasmtime::Result<Component> {
    // SAFETY: the path names the very file `entry` holds open, through
    // this process's descriptor: a regular file in the cache directory
    // (owned by this user and writable by no one else, checked on its
    // descriptor like the file), written by `precompile_component` of an
    // engine with the same configuration (its hash is in the file name) for
    // this very component (its SHA-256 is in the trailer), and whole (its
    // length and CRC-32 matched the trailer's, now or when this very file,
    // unchanged since, was first checked; wasmtime ignores what follows
    // its ELF image). Entries are only ever replaced by renaming a new
    // file over them, never changed in place, so the mapping keeps the
    // bytes checked here. wasmtime also checks its own header and rejects
    // an incompatible engine.
    unsafe { Component::deserialize_file(engine, entry.fd_path()) }
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
    fn a_memo_recalls_a_digest_only_for_the_identity_it_was_written_for() {
        let identity = FileIdentity {
            dev: 1,
            ino: 2,
            size: 3,
            mtime: (4, 5),
            ctime: (6, 7),
        };
        let digest = [9u8; 32];
        let memo = identity.memo(&digest);
        assert_eq!(memo.len(), MEMO_LEN);
        assert_eq!(identity.recalled(&memo), Some(digest));
        for changed in [
            FileIdentity { size: 4, ..identity },
            FileIdentity {
                mtime: (4, 6),
                ..identity
            },
            FileIdentity {
                ctime: (6, 8),
                ..identity
            },
            FileIdentity { ino: 3, ..identity },
        ] {
            assert_eq!(changed.recalled(&memo), None, "{changed:?}");
        }
        assert_eq!(identity.recalled(&memo[..MEMO_LEN - 1]), None, "a torn memo");
        let mut other = memo.clone();
        other[0] = b'X';
        assert_eq!(identity.recalled(&other), None);
    }

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
