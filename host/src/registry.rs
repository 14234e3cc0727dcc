//! `specwright policy push|pull`: policies to and from OCI registries
//! (the distribution API), in the CNCF Wasm OCI artifact layout
//! ([`crate::oci`]). HTTPS with the system's roots plus `--ca-file`; plain
//! HTTP only when asked for; credentials as the container tools keep
//! them ([`credentials_for`]); Basic and Bearer (token server) auth.
//! Every blob is checked against its digest and size before anything is
//! stored.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;

use crate::oci::{check_blob, Artifact, ComponentInfo, Digest, Manifest, Reference, Target, WasmConfig};
use crate::oci::{MANIFEST_MEDIA_TYPE, MAX_MANIFEST_BYTES};
use crate::Workspace;

/// How to reach a registry.
#[derive(Debug, Default, Clone)]
pub struct Connection {
    /// PEM certificates trusted besides the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Plain HTTP instead of HTTPS.
    pub plain_http: bool,
    /// Credentials given on the command line; else [`credentials_for`].
    pub credentials: Option<Credentials>,
}

#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <password>)", self.username)
    }
}

/// The most bytes of a token server's answer or an auth file.
const MAX_SMALL_BYTES: u64 = 1 << 20;
/// How long one request may take.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// A session with one registry for one repository.
struct Client {
    agent: ureq::Agent,
    base: String,
    reference: Reference,
    credentials: Option<Credentials>,
    /// The `Authorization` header once the registry asked for one.
    authorization: Option<String>,
    /// `pull` or `pull,push`.
    actions: &'static str,
}

impl Client {
    fn new(reference: &Reference, connection: &Connection, actions: &'static str) -> Result<Client> {
        let mut builder = ureq::AgentBuilder::new()
            .timeout(TIMEOUT)
            .redirects(5)
            .user_agent(concat!("specwright/", env!("CARGO_PKG_VERSION")));
        if !connection.plain_http {
            // No URL the registry names (a token server, an upload, a
            // redirect) takes the session to plain HTTP.
            builder = builder
                .https_only(true)
                .tls_config(Arc::new(tls_config(connection.ca_file.as_deref())?));
        }
        let credentials = match &connection.credentials {
            Some(given) => Some(given.clone()),
            None => credentials_for(&reference.registry)?,
        };
        Ok(Client {
            agent: builder.build(),
            base: format!(
                "{}://{}",
                if connection.plain_http { "http" } else { "https" },
                reference.registry
            ),
            reference: reference.clone(),
            credentials,
            authorization: None,
            actions,
        })
    }

    /// Whether `url` is on the registry itself (its scheme, host and port).
    fn is_registry(&self, url: &str) -> bool {
        url.strip_prefix(&self.base).is_some_and(|rest| rest.starts_with('/'))
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v2/{}/{path}", self.base, self.reference.repository)
    }

    /// Sends a request (`headers`, then `body`), answering one 401 with
    /// the credentials the registry asks for; any other status than
    /// `expected` is an error naming it and what the registry said.
    fn send(
        &mut self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        expected: &[u16],
    ) -> Result<ureq::Response> {
        let mut retried = false;
        loop {
            let mut request = self.agent.request(method, url);
            for (name, value) in headers {
                request = request.set(name, value);
            }
            // The registry's token or credentials go to the registry only
            // (an upload URL may be a storage service's).
            if let Some(authorization) = self.authorization.as_ref().filter(|_| self.is_registry(url)) {
                request = request.set("Authorization", authorization);
            }
            let result = match body {
                Some(body) => request.send_bytes(body),
                None => request.call(),
            };
            let response = match result {
                Ok(response) => response,
                Err(ureq::Error::Status(_, response)) => response,
                Err(ureq::Error::Transport(e)) => {
                    return Err(anyhow!("{method} {url}: {e}")).context(self.transport_hint());
                }
            };
            let status = response.status();
            if status == 401 && !retried {
                // Only the registry's own challenge is answered: another
                // host (an upload's, a redirect's) gets no credentials.
                if !self.is_registry(response.get_url()) {
                    bail!(
                        "{method} {url}: {} asks for authentication, and specwright authenticates to {} only",
                        response.get_url(),
                        self.reference.registry
                    );
                }
                retried = true;
                let challenge = response.header("www-authenticate").unwrap_or_default().to_string();
                self.authorization = Some(self.authorize(&challenge).with_context(|| format!("{method} {url}"))?);
                continue;
            }
            if expected.contains(&status) {
                return Ok(response);
            }
            // What the registry said, without control characters (a
            // terminal would act on them).
            let said = read_bounded(response, 4096)
                .map(|b| {
                    String::from_utf8_lossy(&b)
                        .chars()
                        .map(|c| if c.is_control() { ' ' } else { c })
                        .collect::<String>()
                        .trim()
                        .to_string()
                })
                .unwrap_or_default();
            if status == 401 {
                bail!(
                    "{method} {url}: 401 Unauthorized: the registry refused the credentials{} ({said})",
                    match &self.credentials {
                        Some(c) => format!(" of user {}", c.username),
                        None => " (none were given or found)".to_string(),
                    }
                );
            }
            bail!("{method} {url}: {status} ({said})");
        }
    }

    fn transport_hint(&self) -> String {
        if self.base.starts_with("https") {
            format!(
                "reaching {} over HTTPS (a registry with a certificate of its own CA needs --ca-file; one that speaks plain HTTP, --plain-http)",
                self.reference.registry
            )
        } else {
            format!("reaching {} over plain HTTP", self.reference.registry)
        }
    }

    /// The `Authorization` header answering `challenge`: Basic with the
    /// credentials, or a Bearer token from the token server it names.
    fn authorize(&self, challenge: &str) -> Result<String> {
        let basic = self.credentials.as_ref().map(|c| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.password))
            )
        });
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return basic.ok_or_else(|| {
                anyhow!(
                    "{} asks for credentials: give --username and --password-stdin, or log in with podman or docker (an auth file)",
                    self.reference.registry
                )
            });
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            bail!(
                "{} asks for authentication by {scheme:?}, which specwright does not speak",
                self.reference.registry
            );
        }
        let params = challenge_params(params);
        let realm = params
            .iter()
            .find(|(k, _)| k == "realm")
            .map(|(_, v)| v.clone())
            .ok_or_else(|| anyhow!("{}: a Bearer challenge without a realm", self.reference.registry))?;
        // --plain-http is for the registry: credentials go to a token
        // server elsewhere only over TLS.
        let over_tls = realm.trim_start().to_ascii_lowercase().starts_with("https://");
        if !over_tls && !self.is_registry(&realm) && basic.is_some() {
            bail!("the token server {realm} is another host over plain HTTP: the credentials would travel there in clear text");
        }
        let mut request = self.agent.get(&realm);
        if let Some((_, service)) = params.iter().find(|(k, _)| k == "service") {
            request = request.query("service", service);
        }
        let scope = format!("repository:{}:{}", self.reference.repository, self.actions);
        request = request.query("scope", &scope);
        if let Some(basic) = &basic {
            request = request.set("Authorization", basic);
        }
        let response = match request.call() {
            Ok(response) => response,
            Err(ureq::Error::Status(status, _)) => bail!("the token server {realm} answered {status}"),
            Err(e) => return Err(anyhow!("the token server {realm}: {e}")),
        };
        let body: serde_json::Value = serde_json::from_slice(&read_bounded(response, MAX_SMALL_BYTES)?)
            .with_context(|| format!("the token server {realm}'s answer"))?;
        let token = body["token"]
            .as_str()
            .or_else(|| body["access_token"].as_str())
            .ok_or_else(|| anyhow!("the token server {realm} gave no token"))?;
        Ok(format!("Bearer {token}"))
    }

    /// Fetches blob `digest` (at most `max` bytes).
    fn blob(&mut self, digest: &Digest, max: u64) -> Result<Vec<u8>> {
        let url = self.url(&format!("blobs/{digest}"));
        let response = self.send("GET", &url, &[], None, &[200])?;
        read_bounded(response, max).with_context(|| format!("GET {url}"))
    }

    /// Uploads `bytes` as blob `digest` unless the registry has it.
    fn upload(&mut self, digest: &Digest, bytes: &[u8]) -> Result<()> {
        let url = self.url(&format!("blobs/{digest}"));
        if self.send("HEAD", &url, &[], None, &[200, 404])?.status() == 200 {
            return Ok(());
        }
        let start = self.url("blobs/uploads/");
        let response = self.send("POST", &start, &[], Some(&[]), &[202])?;
        let location = response
            .header("location")
            .ok_or_else(|| anyhow!("POST {start}: no Location for the upload"))?
            .to_string();
        let location = if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            location
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        let put = format!("{location}{separator}digest={}", digest.as_str().replace(':', "%3A"));
        self.send(
            "PUT",
            &put,
            &[("Content-Type", "application/octet-stream")],
            Some(bytes),
            &[201, 204],
        )?;
        Ok(())
    }
}

/// `key="value", ...` of a challenge.
fn challenge_params(params: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = params.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let (value, next) = match after.strip_prefix('"') {
            Some(quoted) => match quoted.split_once('"') {
                Some((value, next)) => (value, next),
                None => (quoted, ""),
            },
            None => after.split_once(',').unwrap_or((after, "")),
        };
        out.push((key, value.to_string()));
        rest = next.trim_start_matches(',').trim();
    }
    out
}

fn read_bounded(response: ureq::Response, max: u64) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    response.into_reader().take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        bail!("more than {max} bytes");
    }
    Ok(bytes)
}

/// TLS trusting the system's roots and the certificates in `ca_file`.
fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A system root this TLS library cannot use is left out, as
        // curl and Go leave it.
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let pem = crate::input::read_bounded(path, MAX_SMALL_BYTES)
            .with_context(|| format!("--ca-file {}", path.display()))?;
        let mut added = 0;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.with_context(|| format!("--ca-file {}: not PEM certificates", path.display()))?;
            roots
                .add(cert)
                .with_context(|| format!("--ca-file {}: a certificate that cannot be a root", path.display()))?;
            added += 1;
        }
        if added == 0 {
            bail!("--ca-file {}: no certificate in it", path.display());
        }
    }
    // ring, the provider ureq links: rustls marks it deprecated for want
    // of post-quantum key exchange, which registries do not require.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS")?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The credentials for `registry` (`HOST[:PORT]`) the container tools
/// keep, from the first of these files that has an entry for it:
/// `$REGISTRY_AUTH_FILE`; `$XDG_RUNTIME_DIR/containers/auth.json`;
/// `$XDG_CONFIG_HOME/containers/auth.json` (else
/// `~/.config/containers/auth.json`); `$DOCKER_CONFIG/config.json` (else
/// `~/.docker/config.json`). An entry's `auth` (base64 `user:password`)
/// or `username` and `password` are read; credential helpers are not run.
pub fn credentials_for(registry: &str) -> Result<Option<Credentials>> {
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let home = env("HOME");
    let files = [
        env("REGISTRY_AUTH_FILE"),
        env("XDG_RUNTIME_DIR").map(|d| d.join("containers/auth.json")),
        env("XDG_CONFIG_HOME")
            .or_else(|| home.as_ref().map(|h| h.join(".config")))
            .map(|d| d.join("containers/auth.json")),
        env("DOCKER_CONFIG")
            .or_else(|| home.as_ref().map(|h| h.join(".docker")))
            .map(|d| d.join("config.json")),
    ];
    for file in files.into_iter().flatten() {
        let text = match crate::input::read_bounded_text(&file, MAX_SMALL_BYTES) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("auth file {}", file.display())),
        };
        if let Some(found) = entry_in(&text, registry).with_context(|| format!("auth file {}", file.display()))? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// `registry`'s entry in an auth file's text, if any.
fn entry_in(text: &str, registry: &str) -> Result<Option<Credentials>> {
    let file: serde_json::Value = serde_json::from_str(text).context("not JSON")?;
    let Some(auths) = file["auths"].as_object() else {
        return Ok(None);
    };
    let entry = auths.iter().find_map(|(key, entry)| {
        let host = key
            .strip_prefix("https://")
            .or_else(|| key.strip_prefix("http://"))
            .unwrap_or(key);
        (host.trim_end_matches('/') == registry).then_some(entry)
    });
    let Some(entry) = entry else {
        return Ok(None);
    };
    if let Some(auth) = entry["auth"].as_str().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(auth.trim()))
            .with_context(|| format!("auths.{registry}.auth: not base64"))?;
        let decoded = String::from_utf8(decoded).with_context(|| format!("auths.{registry}.auth: not UTF-8"))?;
        let (username, password) = decoded
            .split_once(':')
            .ok_or_else(|| anyhow!("auths.{registry}.auth: not user:password"))?;
        return Ok(Some(Credentials {
            username: username.to_string(),
            password: password.to_string(),
        }));
    }
    match (entry["username"].as_str(), entry["password"].as_str()) {
        (Some(username), Some(password)) => Ok(Some(Credentials {
            username: username.to_string(),
            password: password.to_string(),
        })),
        _ => Ok(None),
    }
}

/// Pushes the policy component in `file` to `reference` (by tag); returns
/// the manifest's digest.
pub fn push(
    file: &Path,
    reference: &Reference,
    info: ComponentInfo,
    bytes: Vec<u8>,
    connection: &Connection,
) -> Result<Digest> {
    let Target::Tag(tag) = &reference.target else {
        bail!("push to a tag ({reference} names a digest, which the registry computes)");
    };
    let title = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "policy.wasm".to_string());
    let artifact = Artifact::of(bytes, &title, info);
    let manifest_digest = Digest::of(&artifact.manifest);
    let mut client = Client::new(reference, connection, "pull,push")?;
    client.upload(&Digest::of(&artifact.layer), &artifact.layer)?;
    client.upload(&Digest::of(&artifact.config), &artifact.config)?;
    let url = client.url(&format!("manifests/{tag}"));
    let response = client.send(
        "PUT",
        &url,
        &[("Content-Type", MANIFEST_MEDIA_TYPE)],
        Some(&artifact.manifest),
        &[201, 204],
    )?;
    if let Some(said) = response.header("docker-content-digest") {
        if said != manifest_digest.as_str() {
            bail!("PUT {url}: the registry stored the manifest as {said}, not {manifest_digest}");
        }
    }
    Ok(manifest_digest)
}

/// A policy artifact fetched and checked, not stored yet.
pub struct Pulled {
    reference: Reference,
    pub manifest_digest: Digest,
    manifest: Vec<u8>,
    config: (Digest, Vec<u8>),
    component: (Digest, Vec<u8>),
}

impl Pulled {
    /// Stores it in `workspace`'s state dir (blobs, then the tag; nothing
    /// stays on failure).
    pub fn store(&self, workspace: &Workspace) -> Result<()> {
        let (config_digest, config) = &self.config;
        let (component_digest, component) = &self.component;
        workspace
            .sys
            .store_pulled(
                &workspace.state,
                &self.reference,
                &self.manifest_digest,
                &[
                    (component_digest, component),
                    (config_digest, config),
                    (&self.manifest_digest, &self.manifest),
                ],
            )
            .with_context(|| format!("storing {}", self.reference))
    }
}

/// Fetches `reference`: the manifest (checked against the digest asked
/// for, or the registry's for a tag), the config and the component, each
/// checked against its digest and size; nothing is stored yet
/// ([`Pulled::store`]).
pub fn pull(reference: &Reference, connection: &Connection) -> Result<Pulled> {
    let mut client = Client::new(reference, connection, "pull")?;
    let url = client.url(&format!("manifests/{}", reference.target_str()));
    let response = client.send("GET", &url, &[("Accept", MANIFEST_MEDIA_TYPE)], None, &[200])?;
    let said = response.header("docker-content-digest").map(str::to_string);
    let manifest_bytes = read_bounded(response, MAX_MANIFEST_BYTES).with_context(|| format!("GET {url}"))?;
    let manifest_digest = Digest::of(&manifest_bytes);
    match (&reference.target, said) {
        (Target::Digest(asked), _) if *asked != manifest_digest => {
            bail!("{reference}: the registry served a manifest whose digest is {manifest_digest}")
        }
        (Target::Tag(_), Some(said)) if said != manifest_digest.as_str() => {
            bail!("{reference}: the registry says the manifest is {said}, but its bytes are {manifest_digest}")
        }
        _ => {}
    }
    let (manifest, layer) = Manifest::read_wasm(reference, &manifest_bytes)?;
    if layer.size > crate::input::MAX_POLICY_BYTES {
        bail!(
            "{reference}: its component has {} bytes, more than a policy may have ({})",
            layer.size,
            crate::input::MAX_POLICY_BYTES
        );
    }
    let config = client.blob(&manifest.config.digest, MAX_MANIFEST_BYTES)?;
    check_blob(reference, "the config", &manifest.config, &config)?;
    let described: WasmConfig =
        serde_json::from_slice(&config).with_context(|| format!("{reference}: the config is not a Wasm config"))?;
    if described.layer_digests.iter().any(|d| *d != layer.digest) {
        bail!("{reference}: the config names other layers than the manifest's");
    }
    let component = client.blob(&layer.digest, layer.size)?;
    check_blob(reference, "the component", &layer, &component)?;
    if component.get(..4) != Some(b"\0asm") || component.get(4..8) == Some(&[1, 0, 0, 0]) {
        bail!("{reference}: its layer is not a WebAssembly component");
    }
    Ok(Pulled {
        reference: reference.clone(),
        manifest_digest,
        manifest: manifest_bytes,
        config: (manifest.config.digest, config),
        component: (layer.digest, component),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_and_auth_file_entries_are_read_as_the_tools_write_them() {
        let params = challenge_params(
            r#"realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
        );
        assert_eq!(
            params,
            [
                ("realm".to_string(), "https://auth.example/token".to_string()),
                ("service".to_string(), "registry.example".to_string()),
                ("scope".to_string(), "repository:a/b:pull".to_string()),
            ]
        );
        let file = r#"{"auths": {"https://127.0.0.1:5443": {"auth": "dXNlcjpwYTpzcw=="}, "other:1": {"username": "u", "password": "p"}}}"#;
        let found = entry_in(file, "127.0.0.1:5443").unwrap().unwrap();
        assert_eq!((found.username.as_str(), found.password.as_str()), ("user", "pa:ss"));
        let found = entry_in(file, "other:1").unwrap().unwrap();
        assert_eq!((found.username.as_str(), found.password.as_str()), ("u", "p"));
        assert!(entry_in(file, "127.0.0.1:5444").unwrap().is_none());
        let err = entry_in(r#"{"auths": {"h:1": {"auth": "!!"}}}"#, "h:1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("auths.h:1.auth"), "{err}");
    }
}
