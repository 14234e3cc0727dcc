//! Policies as OCI artifacts, in the CNCF Wasm OCI artifact layout (what
//! wkg and wasm-pkg-tools read and write): an OCI image manifest whose
//! config has the media type `application/vnd.wasm.config.v0+json` and
//! whose one layer, `application/wasm`, is the component.
//!
//! A reference is written `oci://HOST[:PORT]/REPO:TAG` or
//! `oci://HOST[:PORT]/REPO@sha256:HEX`; in a policy argument its settings
//! file may follow after one more colon. Pulled artifacts live
//! content-addressed in the state dir ([`crate::state::StateDir::store_pulled`]).

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The scheme that marks a policy argument as a registry reference.
pub const SCHEME: &str = "oci://";
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
pub const LAYER_MEDIA_TYPE: &str = "application/wasm";
/// The annotation naming the layer's file (as wkg writes it).
pub const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";
/// The most bytes of a manifest or a config.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// Why a reference, a manifest or a blob is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OciError {
    #[error("{reference:?} is not a registry reference (oci://HOST[:PORT]/REPO:TAG or oci://HOST[:PORT]/REPO@sha256:DIGEST): {why}")]
    Reference { reference: String, why: String },
    #[error("the manifest of {reference}: {why}")]
    Manifest { reference: String, why: String },
    #[error("{what} of {reference}: expected {expected}, got {got}")]
    Mismatch {
        reference: String,
        what: String,
        expected: String,
        got: String,
    },
}

/// `sha256:<hex>`, checked.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        let hash = Sha256::digest(bytes);
        Digest(format!(
            "sha256:{}",
            hash.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ))
    }

    /// `text`, if it is `sha256:` and 64 lower-case hex digits.
    pub fn parse(text: &str) -> Option<Digest> {
        let hex = text.strip_prefix("sha256:")?;
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            .then(|| Digest(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 64 hex digits (a blob's file name).
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }
}

impl TryFrom<String> for Digest {
    type Error = String;
    fn try_from(text: String) -> Result<Digest, String> {
        Digest::parse(&text).ok_or_else(|| format!("{text:?} is not a sha256 digest"))
    }
}

impl From<Digest> for String {
    fn from(digest: Digest) -> String {
        digest.0
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a reference names: a tag, or a manifest by digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Tag(String),
    Digest(Digest),
}

/// `oci://HOST[:PORT]/REPO(:TAG|@sha256:HEX)`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `HOST[:PORT]`, as credentials are keyed.
    pub registry: String,
    pub repository: String,
    pub target: Target,
}

impl Reference {
    /// Parses `text` (with its `oci://`); returns the reference and what
    /// follows it after a colon (a policy's settings file), if anything.
    pub fn parse_with_rest<'t>(text: &'t str) -> Result<(Reference, Option<&'t str>), OciError> {
        let bad = |why: &str| OciError::Reference {
            reference: text.to_string(),
            why: why.to_string(),
        };
        let rest = text
            .strip_prefix(SCHEME)
            .ok_or_else(|| bad("it does not start with oci://"))?;
        let (registry, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("no repository after the registry"))?;
        check_registry(registry).map_err(|why| bad(&why))?;
        // A repository has neither ':' nor '@': the first of them ends it.
        let split = path
            .find([':', '@'])
            .ok_or_else(|| bad("it names no tag (:TAG) and no digest (@sha256:...)"))?;
        let (repository, after) = (&path[..split], &path[split + 1..]);
        // `@sha256:...`, alone or after a tag (`REPO:TAG@sha256:...`, as
        // Kubernetes pins images: the digest decides), then the settings.
        let digest_then_settings = |after: &'t str| -> Result<(Digest, Option<&'t str>), OciError> {
            let (digest, settings) = match after.get(..71) {
                Some(d) if after.len() == 71 => (d, None),
                Some(d) if after.as_bytes().get(71) == Some(&b':') => (d, Some(&after[72..])),
                _ => return Err(bad("a digest is sha256: and 64 hex digits")),
            };
            let digest = Digest::parse(digest).ok_or_else(|| bad("a digest is sha256: and 64 hex digits"))?;
            Ok((digest, settings))
        };
        let (target, settings) = if path.as_bytes()[split] == b'@' {
            let (digest, settings) = digest_then_settings(after)?;
            (Target::Digest(digest), settings)
        } else {
            let tag_end = after.find([':', '@']).unwrap_or(after.len());
            let tag = &after[..tag_end];
            check_tag(tag).map_err(|why| bad(&why))?;
            match after.as_bytes().get(tag_end) {
                Some(b'@') => {
                    let (digest, settings) = digest_then_settings(&after[tag_end + 1..])?;
                    (Target::Digest(digest), settings)
                }
                Some(_) => (Target::Tag(tag.to_string()), Some(&after[tag_end + 1..])),
                None => (Target::Tag(tag.to_string()), None),
            }
        };
        check_repository(repository).map_err(|why| bad(&why))?;
        if settings.is_some_and(str::is_empty) {
            return Err(bad("an empty settings file after the reference"));
        }
        Ok((
            Reference {
                registry: registry.to_string(),
                repository: repository.to_string(),
                target,
            },
            settings,
        ))
    }

    /// Parses `text`, which must be a reference and nothing more.
    pub fn parse(text: &str) -> Result<Reference, OciError> {
        match Reference::parse_with_rest(text)? {
            (reference, None) => Ok(reference),
            (_, Some(_)) => Err(OciError::Reference {
                reference: text.to_string(),
                why: "text after the tag or digest".to_string(),
            }),
        }
    }

    /// The same repository, naming `digest`.
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            target: Target::Digest(digest),
            ..self.clone()
        }
    }

    /// The tag or digest as the registry's API takes it.
    pub fn target_str(&self) -> &str {
        match &self.target {
            Target::Tag(tag) => tag,
            Target::Digest(digest) => digest.as_str(),
        }
    }

    /// `HOST/REPO:TAG`: the key of a tag in the store.
    pub fn tag_key(&self) -> Option<String> {
        match &self.target {
            Target::Tag(tag) => Some(format!("{}/{}:{tag}", self.registry, self.repository)),
            Target::Digest(_) => None,
        }
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.target {
            Target::Tag(tag) => write!(f, "{SCHEME}{}/{}:{tag}", self.registry, self.repository),
            Target::Digest(digest) => write!(f, "{SCHEME}{}/{}@{digest}", self.registry, self.repository),
        }
    }
}

fn check_registry(registry: &str) -> Result<(), String> {
    let (host, port) = match registry.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (registry, None),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .split('.')
            .all(|label| !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if !host_ok {
        return Err(format!("{host:?} is not a host name or IPv4 address"));
    }
    if let Some(port) = port {
        if port.parse::<u16>().map_or(true, |p| p == 0) || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{port:?} is not a port"));
        }
    }
    Ok(())
}

/// The distribution spec's repository names: lower-case components of
/// letters and digits joined by `.`, `_`, `__` or dashes, separated by `/`.
fn check_repository(repository: &str) -> Result<(), String> {
    let component_ok = |c: &str| {
        let bytes = c.as_bytes();
        !c.is_empty()
            && bytes[0].is_ascii_lowercase() | bytes[0].is_ascii_digit()
            && bytes[bytes.len() - 1].is_ascii_lowercase() | bytes[bytes.len() - 1].is_ascii_digit()
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
            && !c.contains("..")
    };
    if repository.is_empty() || repository.len() > 255 || !repository.split('/').all(component_ok) {
        return Err(format!(
            "{repository:?} is not a repository name (lower-case letters and digits, joined by '.', '_' or '-', in '/'-separated parts)"
        ));
    }
    Ok(())
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn check_tag(tag: &str) -> Result<(), String> {
    let bytes = tag.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{tag:?} is not a tag (letters, digits, '_', '.', '-', at most 128)"
        ))
    }
}

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
}

/// An OCI image manifest (the fields this layout uses; others are kept
/// out of what is read, the bytes stay as the registry served them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
}

impl Manifest {
    /// The manifest in `bytes`, if it is a Wasm OCI artifact's: schema 2,
    /// an OCI image manifest (when it says), the Wasm config media type,
    /// and exactly one layer, `application/wasm`. Returns it and its
    /// layer.
    pub fn read_wasm(reference: &Reference, bytes: &[u8]) -> Result<(Manifest, Descriptor), OciError> {
        let bad = |why: String| OciError::Manifest {
            reference: reference.to_string(),
            why,
        };
        let manifest: Manifest = serde_json::from_slice(bytes).map_err(|e| bad(format!("not an OCI manifest: {e}")))?;
        if manifest.schema_version != 2 {
            return Err(bad(format!("schemaVersion {}, not 2", manifest.schema_version)));
        }
        if let Some(media_type) = manifest.media_type.as_deref().filter(|m| *m != MANIFEST_MEDIA_TYPE) {
            return Err(bad(format!("media type {media_type:?}, not {MANIFEST_MEDIA_TYPE}")));
        }
        if manifest.config.media_type != CONFIG_MEDIA_TYPE {
            return Err(bad(format!(
                "its config is {:?}, not {CONFIG_MEDIA_TYPE}: not a Wasm component artifact",
                manifest.config.media_type
            )));
        }
        let layer = match manifest.layers.as_slice() {
            [layer] if layer.media_type == LAYER_MEDIA_TYPE => layer.clone(),
            [layer] => {
                return Err(bad(format!(
                    "its layer is {:?}, not {LAYER_MEDIA_TYPE}",
                    layer.media_type
                )))
            }
            layers => return Err(bad(format!("{} layers; a Wasm artifact has exactly one", layers.len()))),
        };
        Ok((manifest, layer))
    }
}

/// The config of a Wasm component artifact (`application/vnd.wasm.config.v0+json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WasmConfig {
    /// RFC 3339.
    pub created: String,
    pub author: Option<String>,
    pub architecture: String,
    pub os: String,
    pub layer_digests: Vec<Digest>,
    pub component: Option<ComponentInfo>,
}

/// What a component exports and imports (world names), and its target world.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentInfo {
    pub exports: Vec<String>,
    pub imports: Vec<String>,
    pub target: Option<String>,
}

/// A policy artifact ready to push: its three blobs.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub manifest: Vec<u8>,
    pub config: Vec<u8>,
    pub layer: Vec<u8>,
}

impl Artifact {
    /// The artifact of `component` (a file named `title`): one layer, its
    /// config describing it. `created` is the Unix epoch, so the same
    /// component pushed twice has the same digest.
    pub fn of(component: Vec<u8>, title: &str, info: ComponentInfo) -> Artifact {
        let layer_digest = Digest::of(&component);
        let config = WasmConfig {
            created: "1970-01-01T00:00:00Z".to_string(),
            author: None,
            architecture: "wasm".to_string(),
            os: "wasip2".to_string(),
            layer_digests: vec![layer_digest.clone()],
            component: Some(info),
        };
        let config = serde_json::to_vec(&config).unwrap_or_default();
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MANIFEST_MEDIA_TYPE.to_string()),
            config: Descriptor {
                media_type: CONFIG_MEDIA_TYPE.to_string(),
                digest: Digest::of(&config),
                size: config.len() as u64,
                annotations: None,
            },
            layers: vec![Descriptor {
                media_type: LAYER_MEDIA_TYPE.to_string(),
                digest: layer_digest,
                size: component.len() as u64,
                annotations: Some([(TITLE_ANNOTATION.to_string(), title.to_string())].into()),
            }],
            annotations: None,
        };
        Artifact {
            manifest: serde_json::to_vec(&manifest).unwrap_or_default(),
            config,
            layer: component,
        }
    }
}

/// Checks that `bytes` are what `descriptor` says (digest and size).
pub fn check_blob(reference: &Reference, what: &str, descriptor: &Descriptor, bytes: &[u8]) -> Result<(), OciError> {
    let mismatch = |expected: String, got: String| OciError::Mismatch {
        reference: reference.to_string(),
        what: what.to_string(),
        expected,
        got,
    };
    if bytes.len() as u64 != descriptor.size {
        return Err(mismatch(
            format!("{} bytes", descriptor.size),
            format!("{} bytes", bytes.len()),
        ));
    }
    let digest = Digest::of(bytes);
    if digest != descriptor.digest {
        return Err(mismatch(descriptor.digest.to_string(), digest.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn references_parse_with_tags_digests_ports_and_settings() {
        let (r, rest) = Reference::parse_with_rest("oci://127.0.0.1:5443/policies/hardened:v1").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), &r.target, rest),
            ("127.0.0.1:5443", "policies/hardened", &Target::Tag("v1".into()), None)
        );
        assert_eq!(r.to_string(), "oci://127.0.0.1:5443/policies/hardened:v1");
        assert_eq!(r.tag_key().unwrap(), "127.0.0.1:5443/policies/hardened:v1");
        let (r, rest) = Reference::parse_with_rest("oci://ghcr.io/acme/guard:1.2:/etc/guard.json").unwrap();
        assert_eq!((r.repository.as_str(), rest), ("acme/guard", Some("/etc/guard.json")));
        let text = format!("oci://registry.local/guard@sha256:{HEX}");
        let (r, rest) = Reference::parse_with_rest(&text).unwrap();
        assert_eq!((r.target_str(), rest), (format!("sha256:{HEX}").as_str(), None));
        assert_eq!(r.to_string(), text);
        let with_settings = format!("{text}:s.json");
        let (_, rest) = Reference::parse_with_rest(&with_settings).unwrap();
        assert_eq!(rest, Some("s.json"));
        // A tag and a digest: the digest decides.
        let pinned = format!("oci://registry.local/guard:v1@sha256:{HEX}:s.json");
        let (r, rest) = Reference::parse_with_rest(&pinned).unwrap();
        assert_eq!(
            (r.target_str(), rest),
            (format!("sha256:{HEX}").as_str(), Some("s.json"))
        );
    }

    #[test]
    fn bad_references_say_why() {
        for (text, why) in [
            ("/p/hardened.wasm", "oci://"),
            ("oci://host", "no repository"),
            ("oci://host/repo", "no tag"),
            ("oci://host/Repo:v1", "repository"),
            ("oci://host/../etc:v1", "repository"),
            ("oci://host/repo:v/1", "tag"),
            ("oci://host/repo:-v", "tag"),
            ("oci://ho st/repo:v1", "host"),
            ("oci://host:0/repo:v1", "port"),
            ("oci://host:99999/repo:v1", "port"),
            ("oci://host/repo@sha256:abc", "digest"),
            ("oci://host/repo@md5:abc", "digest"),
            ("oci://host/repo:v1:", "settings"),
        ] {
            let err = Reference::parse_with_rest(text).unwrap_err().to_string();
            assert!(err.contains(why), "{text}: {err}");
        }
        assert!(Reference::parse("oci://host/repo:v1:settings.json").is_err());
    }

    #[test]
    fn an_artifact_reads_back_and_a_blob_is_checked_by_size_and_digest() {
        let info = ComponentInfo {
            exports: vec!["specwright:policy/policy@0.2.1".into()],
            imports: vec![],
            target: None,
        };
        let artifact = Artifact::of(b"\0asm\x0d\0\x01\0".to_vec(), "p.wasm", info);
        let reference = Reference::parse("oci://h/p:v1").unwrap();
        let (manifest, layer) = Manifest::read_wasm(&reference, &artifact.manifest).unwrap();
        assert_eq!(layer.digest, Digest::of(&artifact.layer));
        check_blob(&reference, "config", &manifest.config, &artifact.config).unwrap();
        check_blob(&reference, "layer", &layer, &artifact.layer).unwrap();
        let mut tampered = artifact.layer.clone();
        tampered[7] ^= 1;
        let err = check_blob(&reference, "layer", &layer, &tampered)
            .unwrap_err()
            .to_string();
        assert!(err.contains("layer of oci://h/p:v1: expected sha256:"), "{err}");
        // Two layers, another config: not a Wasm artifact.
        let mut two: serde_json::Value = serde_json::from_slice(&artifact.manifest).unwrap();
        let layer_value = two["layers"][0].clone();
        two["layers"].as_array_mut().unwrap().push(layer_value);
        let err = Manifest::read_wasm(&reference, two.to_string().as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("2 layers"), "{err}");
        let mut image: serde_json::Value = serde_json::from_slice(&artifact.manifest).unwrap();
        image["config"]["mediaType"] = "application/vnd.oci.image.config.v1+json".into();
        let err = Manifest::read_wasm(&reference, image.to_string().as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a Wasm component artifact"), "{err}");
    }
}
