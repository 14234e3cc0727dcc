//! Policies pulled from registries, content-addressed in the state dir:
//!
//! ```text
//! <state>/policies/blobs/sha256-<hex>   a manifest, config or component, by digest
//! <state>/policies/tags.json            HOST/REPO:TAG -> manifest digest
//! <state>/policies/store.lock           held (flock) while a pull is stored
//! ```
//!
//! A blob is written only once its bytes have the digest it is named by;
//! a pull stores its blobs and then its tag, and removes what it stored
//! when a later part fails. A container start reads here and never the
//! network.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::unistd::{unlinkat, UnlinkatFlags};

use super::at::{create_atomically, open_subdir, read_bounded, write_atomically};
use super::dir::StateDir;
use super::lock::open_lock_file;
use super::StateError;
use crate::oci::{Digest, Manifest, Reference, Target, MAX_MANIFEST_BYTES};

/// The most bytes of the tags file.
const MAX_TAGS_BYTES: u64 = 16 << 20;

fn blob_name(digest: &Digest) -> String {
    format!("sha256-{}", digest.hex())
}

fn corrupt(path: PathBuf, message: String) -> StateError {
    StateError::Io {
        path,
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, message),
    }
}

impl StateDir {
    /// Stores a pulled artifact: `blobs` (each checked against its
    /// digest again here; one stored before is kept as it is), then, for a
    /// reference by tag, the tag naming `manifest`. When any part fails,
    /// the blobs this call created are removed again; blobs stored before
    /// are kept.
    pub fn store_pulled(
        &self,
        reference: &Reference,
        manifest: &Digest,
        blobs: &[(&Digest, &[u8])],
    ) -> Result<(), StateError> {
        let open = self.opened()?;
        let policies = open_subdir(&open.root, "policies", true)?;
        let dir = open_subdir(&policies, "blobs", true)?;
        // One store at a time: a blob this call creates and then removes
        // on failure is one no other store has counted on meanwhile.
        let lock_path = policies.path.join("store.lock");
        let (fd, _) = open_lock_file(policies.fd(), "store.lock", &lock_path)?;
        let _held = Flock::lock(File::from(fd), FlockArg::LockExclusive).map_err(|(_, e)| StateError::Io {
            path: lock_path.clone(),
            source: e.into(),
        })?;
        let mut created: Vec<String> = Vec::new();
        let result = (|| {
            for (digest, bytes) in blobs {
                let name = blob_name(digest);
                if Digest::of(bytes) != **digest {
                    return Err(corrupt(
                        dir.path.join(&name),
                        format!("bytes whose digest is not {digest}"),
                    ));
                }
                // Created without replacing, on disk before the tag names
                // it: one there already is kept when whole, and replaced
                // when damaged (a crash before it reached the disk).
                if create_atomically(dir.fd(), &dir.path, &name, bytes, 0o600, true)? {
                    created.push(name);
                    continue;
                }
                let path = dir.path.join(&name);
                let whole = matches!(
                    read_bounded(dir.fd(), &path, &name, bytes.len() as u64),
                    Ok(Some(kept)) if Digest::of(&kept) == **digest
                );
                if !whole {
                    write_atomically(dir.fd(), &dir.path, &name, &[bytes], 0o600, true)?;
                }
            }
            if let Some(key) = reference.tag_key() {
                let mut tags = read_tags(&policies)?;
                tags.insert(key, manifest.clone());
                let json = serde_json::to_vec_pretty(&tags)
                    .map_err(|e| corrupt(policies.path.join("tags.json"), e.to_string()))?;
                write_atomically(policies.fd(), &policies.path, "tags.json", &[&json], 0o600, true)?;
            }
            Ok(())
        })();
        if result.is_err() {
            for name in &created {
                match unlinkat(dir.fd(), name.as_str(), UnlinkatFlags::NoRemoveDir) {
                    Ok(()) | Err(Errno::ENOENT) => {}
                    Err(e) => tracing::warn!(blob = %name, error = %e, "removing a blob of a failed pull"),
                }
            }
        }
        result
    }

    /// The component file a pulled `reference` names: by digest, its
    /// manifest must be stored; by tag, the tag must have been pulled.
    /// `Ok(None)` when it was not pulled (or not whole); the manifest must
    /// be a Wasm artifact's. The file is named by the component's digest,
    /// which is returned with it (a loader checks the bytes it reads).
    pub fn pulled_component(&self, reference: &Reference) -> Result<Option<(PathBuf, Digest)>, StateError> {
        let open = self.opened()?;
        let Some(policies) = super::at::open_existing_subdir(&open.root, "policies")? else {
            return Ok(None);
        };
        let manifest = match &reference.target {
            Target::Digest(digest) => digest.clone(),
            Target::Tag(_) => {
                let tags = read_tags(&policies)?;
                match reference.tag_key().and_then(|key| tags.get(&key).cloned()) {
                    Some(digest) => digest,
                    None => return Ok(None),
                }
            }
        };
        let Some(dir) = super::at::open_existing_subdir(&policies, "blobs")? else {
            return Ok(None);
        };
        let name = blob_name(&manifest);
        let path = dir.path.join(&name);
        let Some(bytes) = read_bounded(dir.fd(), &path, &name, MAX_MANIFEST_BYTES)? else {
            return Ok(None);
        };
        if Digest::of(&bytes) != manifest {
            return Err(corrupt(path, format!("its digest is not {manifest}")));
        }
        let (_, layer) = Manifest::read_wasm(reference, &bytes).map_err(|e| corrupt(path.clone(), e.to_string()))?;
        let layer_path = dir.path.join(blob_name(&layer.digest));
        if !layer_path.is_file() {
            return Ok(None);
        }
        Ok(Some((layer_path, layer.digest)))
    }
}

/// The tags file: `HOST/REPO:TAG` to a manifest's digest.
fn read_tags(policies: &super::at::Dir) -> Result<BTreeMap<String, Digest>, StateError> {
    let path = policies.path.join("tags.json");
    match read_bounded(policies.fd(), &path, "tags.json", MAX_TAGS_BYTES)? {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| corrupt(path, e.to_string())),
        None => Ok(BTreeMap::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::{Artifact, ComponentInfo};

    #[test]
    fn a_pulled_artifact_resolves_by_tag_and_digest_and_a_failed_store_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(&dir.path().join("state")).unwrap();
        let info = ComponentInfo {
            exports: vec![],
            imports: vec![],
            target: None,
        };
        let artifact = Artifact::of(b"\0asm\x0d\0\x01\0component".to_vec(), "p.wasm", info);
        let by_tag = Reference::parse("oci://r.local:5000/team/p:v1").unwrap();
        let manifest = Digest::of(&artifact.manifest);
        let layer = Digest::of(&artifact.layer);
        let config = Digest::of(&artifact.config);
        assert_eq!(state.pulled_component(&by_tag).unwrap(), None);
        let store = |reference: &Reference| {
            let blobs = [
                (&layer, artifact.layer.as_slice()),
                (&config, artifact.config.as_slice()),
                (&manifest, artifact.manifest.as_slice()),
            ];
            state.store_pulled(reference, &manifest, &blobs)
        };
        // A blob that is not what its digest says: nothing stays.
        let wrong = state.store_pulled(
            &by_tag,
            &manifest,
            &[
                (&layer, &artifact.layer),
                (&config, b"not the config"),
                (&manifest, &artifact.manifest),
            ],
        );
        assert!(wrong.is_err());
        let blobs = dir.path().join("state/policies/blobs");
        assert_eq!(std::fs::read_dir(&blobs).unwrap().count(), 0);
        assert_eq!(state.pulled_component(&by_tag).unwrap(), None);
        store(&by_tag).unwrap();
        let (path, digest) = state.pulled_component(&by_tag).unwrap().unwrap();
        assert_eq!(
            (std::fs::read(&path).unwrap(), digest),
            (artifact.layer.clone(), layer.clone())
        );
        let by_digest = by_tag.with_digest(manifest.clone());
        assert_eq!(state.pulled_component(&by_digest).unwrap().unwrap().0, path);
        // A later pull that fails keeps what earlier pulls stored.
        let other_tag = Reference::parse("oci://r.local:5000/team/p:v3").unwrap();
        std::fs::remove_file(dir.path().join("state/policies/tags.json")).unwrap();
        std::fs::create_dir(dir.path().join("state/policies/tags.json")).unwrap();
        assert!(store(&other_tag).is_err());
        assert_eq!(std::fs::read_dir(&blobs).unwrap().count(), 3);
        assert_eq!(state.pulled_component(&by_digest).unwrap().unwrap().0, path);
        // A blob damaged on disk is replaced by the next pull of it.
        std::fs::remove_dir(dir.path().join("state/policies/tags.json")).unwrap();
        std::fs::write(&path, b"").unwrap();
        store(&by_tag).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), artifact.layer);
        // Another tag of the repository was not pulled.
        let other = Reference::parse("oci://r.local:5000/team/p:v2").unwrap();
        assert_eq!(state.pulled_component(&other).unwrap(), None);
    }
}
