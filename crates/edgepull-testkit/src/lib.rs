//! Test-only: an in-process fake Azure Container Registry with dedicated data endpoints.
//!
//! Compiled only with the `testkit` feature (integration tests and the demo); never part of
//! the shipped binary. [`FakeRegistry`] runs, on its own Tokio runtime, four TLS servers on
//! 127.0.0.1 with separate ports and one generated certificate chain:
//! - the login server `contoso.azurecr.test` (`/v2/`, manifests, blob GETs answered with a
//!   307 to a signed, expiring link on a data endpoint, and the token realm `/oauth2/token`);
//! - a separate token realm `auth.contoso.test`;
//! - the data endpoints `contoso.eastus.data.azurecr.test` and `contoso.westus.data.azurecr.test`;
//!
//! and a fifth, the foreign listener ([`FakeRegistry::foreign_addr`]): a host no config
//! allows, which counts the connections it should never get.
//!
//! Clients reach the names by pinning them to [`FakeRegistry::ip`] (the edgepull config's
//! `resolve` map, or reqwest's `resolve`). [`Knobs`] switch on misbehaviours at runtime,
//! [`FakeRegistry::start_with_cert`] makes every server present a certificate for the wrong
//! name or an expired one ([`CertMode`]), and [`FakeRegistry::requests`] records what every
//! server saw (auth schemes, never secrets).
//! Dropping the `FakeRegistry` shuts every server down.

mod body;
mod data;
mod login;
mod proxy;
mod server;
mod state;
pub mod tls;
mod token;
mod wire;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;
use tokio::runtime::Runtime;

use edgepull_core::hostport::HostPort;
use edgepull_core::oci::manifest::{DescriptorPlatform, OCI_INDEX, OCI_MANIFEST};
use edgepull_core::oci::{Descriptor, Digest, ImageIndex, ImageManifest, Platform};

pub use proxy::{ConnectProxy, ConnectRecord};
pub use state::{
    AUTH_HOST, AuthMode, CertMode, DataRedirect, FakeOptions, Knobs, LOGIN_HOST, REGIONS, RawManifest,
    RequestRecord, ServerName, TokenField,
};
use state::{Ports, Shared, data_host, lock};

/// Media type of the layers `push_image` creates (uncompressed, so `diff_ids` are exact).
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
/// Media type of the config `push_image` creates.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// `n` random (incompressible) bytes.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    rand::fill(&mut buf[..]);
    buf
}

/// A running fake registry. See the module docs.
pub struct FakeRegistry {
    shared: Arc<Shared>,
    ca_pem: String,
    runtime: Option<Runtime>,
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            // Usable from async contexts, unlike dropping the runtime.
            rt.shutdown_background();
        }
    }
}

impl FakeRegistry {
    /// Start all servers. Panics if they cannot start (a test helper).
    pub async fn start(opts: FakeOptions) -> Self {
        Self::start_blocking(opts)
    }

    /// [`FakeRegistry::start`] for code without an async context.
    pub fn start_blocking(opts: FakeOptions) -> Self {
        match Self::try_start(opts) {
            Ok(fake) => fake,
            Err(e) => panic!("testkit: cannot start the fake registry: {e}"),
        }
    }

    /// Start all servers on a dedicated runtime.
    pub fn try_start(opts: FakeOptions) -> io::Result<Self> {
        Self::try_start_with_cert(opts, CertMode::Valid)
    }

    /// [`FakeRegistry::start_blocking`] with servers presenting a `cert` certificate (a
    /// wrong name, an expired one) signed by the fake's CA.
    pub fn start_with_cert(opts: FakeOptions, cert: CertMode) -> Self {
        Self::try_start_with_cert(opts, cert)
            .unwrap_or_else(|e| panic!("testkit: cannot start the fake registry: {e}"))
    }

    fn try_start_with_cert(opts: FakeOptions, cert: CertMode) -> io::Result<Self> {
        let mut names: Vec<String> = ServerName::ALL.iter().map(|s| s.host()).collect();
        names.extend(["localhost".to_string(), "127.0.0.1".to_string()]);
        let pki = tls::generate(&names, cert).map_err(io::Error::other)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("edgepull-testkit")
            .enable_all()
            .build()?;
        let mut listeners = Vec::new();
        for _ in ServerName::ALL {
            let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
            l.set_nonblocking(true)?;
            listeners.push(l);
        }
        let foreign = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        foreign.set_nonblocking(true)?;
        let port = |i: usize| listeners[i].local_addr().map(|a| a.port());
        let ports = Ports {
            login: port(0)?,
            auth: port(1)?,
            eastus: port(2)?,
            westus: port(3)?,
            foreign: foreign.local_addr()?.port(),
        };
        let shared = Arc::new(Shared::new(opts, ports));
        let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config);
        {
            let _guard = runtime.enter();
            for (server, std_listener) in ServerName::ALL.into_iter().zip(listeners) {
                let listener = tokio::net::TcpListener::from_std(std_listener)?;
                runtime.spawn(server::serve(listener, acceptor.clone(), shared.clone(), server));
            }
            let foreign = tokio::net::TcpListener::from_std(foreign)?;
            runtime.spawn(server::serve_foreign(foreign, acceptor.clone(), shared.clone()));
        }
        Ok(Self {
            shared,
            ca_pem: pki.ca_pem,
            runtime: Some(runtime),
        })
    }

    // ----- addresses -----

    /// The address every host name must be pinned to (127.0.0.1).
    pub fn ip(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    }

    /// `contoso.azurecr.test:<port>`.
    pub fn login_host(&self) -> HostPort {
        self.host(ServerName::Login)
    }

    /// `auth.contoso.test:<port>`.
    pub fn auth_host(&self) -> HostPort {
        self.host(ServerName::Auth)
    }

    /// `contoso.<region>.data.azurecr.test:<port>`. A region without a server (anything but
    /// eastus and westus) gets eastus's port; nothing answers under that name.
    pub fn data_endpoint(&self, region: &str) -> HostPort {
        HostPort::new(&data_host(region), self.shared.ports.region(region))
            .unwrap_or_else(|e| panic!("testkit: region {region:?} makes no host name: {e}"))
    }

    /// The host and port of one server.
    pub fn host(&self, server: ServerName) -> HostPort {
        HostPort::new(&server.host(), self.shared.ports.of(server))
            .unwrap_or_else(|e| panic!("testkit: bad built-in host name: {e}"))
    }

    /// The socket address of one server.
    pub fn socket_addr(&self, server: ServerName) -> SocketAddr {
        SocketAddr::new(self.ip(), self.shared.ports.of(server))
    }

    /// `(host name, socket address)` for every server, e.g. for `reqwest`'s `resolve`.
    pub fn resolve_map(&self) -> Vec<(String, SocketAddr)> {
        ServerName::ALL
            .iter()
            .map(|s| (s.host(), self.socket_addr(*s)))
            .collect()
    }

    /// The foreign listener: a TLS server on 127.0.0.1 that no edgepull config allows. It
    /// answers every request 404 and counts connections ([`FakeRegistry::foreign_connections`]).
    /// Its certificate is the fake's (valid for `localhost` and `127.0.0.1`), so a client
    /// that wrongly dialled it would get as far as sending a request.
    pub fn foreign_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip(), self.shared.ports.foreign)
    }

    /// The CA certificate (PEM) that signed the servers' certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The token `service` (the login host name without port).
    pub fn service(&self) -> &'static str {
        LOGIN_HOST
    }

    /// The auth mode the registry was started with.
    pub fn auth_mode(&self) -> &AuthMode {
        &self.shared.auth
    }

    // ----- content -----

    /// Store a blob in `repo`; returns its descriptor (media type [`LAYER_MEDIA_TYPE`]).
    /// The bytes are held once and shared by every response.
    pub fn add_blob(&self, repo: &str, data: impl Into<Bytes>) -> Descriptor {
        self.add_blob_typed(repo, data, LAYER_MEDIA_TYPE)
    }

    /// [`FakeRegistry::add_blob`] with a given media type.
    pub fn add_blob_typed(&self, repo: &str, data: impl Into<Bytes>, media_type: &str) -> Descriptor {
        let data = data.into();
        let digest = Digest::of(&data);
        let desc = Descriptor::new(media_type, digest, data.len() as u64);
        let mut content = lock(&self.shared.content);
        content.blobs.insert(digest, data);
        content
            .repo_blobs
            .entry(repo.to_string())
            .or_default()
            .insert(digest);
        desc
    }

    /// The stored bytes of a blob.
    pub fn blob(&self, digest: &Digest) -> Option<Bytes> {
        lock(&self.shared.content).blobs.get(digest).cloned()
    }

    /// The stored bytes of the manifest `digest` in `repo`.
    pub fn manifest(&self, repo: &str, digest: &Digest) -> Option<Bytes> {
        lock(&self.shared.content)
            .manifests
            .get(repo)
            .and_then(|m| m.get(digest))
            .map(|m| m.body.clone())
    }

    /// Store manifest bytes in `repo` under `tag_or_digest`; returns the digest of the
    /// bytes. A tag is pointed at that digest. A digest reference stores the bytes under the
    /// given digest even when it does not match (to test digest verification).
    pub fn put_manifest(
        &self,
        repo: &str,
        tag_or_digest: &str,
        bytes: impl Into<Bytes>,
        media_type: &str,
    ) -> Digest {
        let body = bytes.into();
        let digest = Digest::of(&body);
        let raw = RawManifest {
            body,
            content_type: media_type.to_string(),
        };
        let mut content = lock(&self.shared.content);
        let manifests = content.manifests.entry(repo.to_string()).or_default();
        match Digest::parse(tag_or_digest) {
            Ok(key) => {
                manifests.insert(key, raw);
            }
            Err(_) => {
                manifests.insert(digest, raw);
                content
                    .tags
                    .entry(repo.to_string())
                    .or_default()
                    .insert(tag_or_digest.to_string(), digest);
            }
        }
        digest
    }

    /// Push a linux/amd64 OCI image: blobs, config and manifest, tagged `tag`. Returns the
    /// manifest digest and the descriptors of every blob in manifest order (config first,
    /// then the layers).
    pub fn push_image(&self, repo: &str, tag: &str, layers: Vec<Vec<u8>>) -> (Digest, Vec<Descriptor>) {
        self.push_image_for(repo, tag, &Platform::normalized("linux", "amd64", ""), layers)
    }

    /// [`FakeRegistry::push_image`] for a given platform.
    pub fn push_image_for(
        &self,
        repo: &str,
        tag: &str,
        platform: &Platform,
        layers: Vec<Vec<u8>>,
    ) -> (Digest, Vec<Descriptor>) {
        let (bytes, blobs) = self.image_manifest(repo, platform, layers);
        (self.put_manifest(repo, tag, bytes, OCI_MANIFEST), blobs)
    }

    /// Push one image per platform (by digest) and an OCI index over them tagged `tag`.
    /// Returns the index digest.
    pub fn push_index(&self, repo: &str, tag: &str, images: Vec<(Platform, Vec<Vec<u8>>)>) -> Digest {
        let mut manifests = Vec::new();
        for (platform, layers) in images {
            let (bytes, _) = self.image_manifest(repo, &platform, layers);
            let size = bytes.len() as u64;
            let digest = Digest::of(&bytes);
            self.put_manifest(repo, &digest.to_string(), bytes, OCI_MANIFEST);
            let mut desc = Descriptor::new(OCI_MANIFEST, digest, size);
            desc.platform = Some(DescriptorPlatform {
                architecture: platform.architecture.clone(),
                os: platform.os.clone(),
                variant: (!platform.variant.is_empty()).then(|| platform.variant.clone()),
            });
            manifests.push(desc);
        }
        let index = ImageIndex {
            schema_version: 2,
            media_type: Some(OCI_INDEX.to_string()),
            manifests,
        };
        let bytes = serde_json::to_vec(&index).unwrap_or_default();
        self.put_manifest(repo, tag, bytes, OCI_INDEX)
    }

    /// Store the blobs and config of an image; returns the manifest bytes and blob descriptors.
    fn image_manifest(
        &self,
        repo: &str,
        platform: &Platform,
        layers: Vec<Vec<u8>>,
    ) -> (Vec<u8>, Vec<Descriptor>) {
        let layers: Vec<Descriptor> = layers.into_iter().map(|l| self.add_blob(repo, l)).collect();
        let diff_ids: Vec<String> = layers.iter().map(|d| d.digest.to_string()).collect();
        let mut config = json!({
            "architecture": platform.architecture,
            "os": platform.os,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "config": {},
        });
        if !platform.variant.is_empty() {
            config["variant"] = json!(platform.variant);
        }
        let config = self.add_blob_typed(repo, config.to_string().into_bytes(), CONFIG_MEDIA_TYPE);
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.to_string()),
            config: config.clone(),
            layers: layers.clone(),
        };
        let bytes = serde_json::to_vec(&manifest).unwrap_or_default();
        (bytes, std::iter::once(config).chain(layers).collect())
    }

    /// Point `tag` in `repo` at `digest`.
    pub fn move_tag(&self, repo: &str, tag: &str, digest: Digest) {
        lock(&self.shared.content)
            .tags
            .entry(repo.to_string())
            .or_default()
            .insert(tag.to_string(), digest);
    }

    // ----- knobs -----

    /// Change any knobs at once.
    pub fn update_knobs(&self, f: impl FnOnce(&mut Knobs)) {
        f(&mut lock(&self.shared.knobs));
    }

    /// A copy of the current knobs.
    pub fn knobs(&self) -> Knobs {
        lock(&self.shared.knobs).clone()
    }

    /// Which region's data endpoint blob GETs redirect to.
    pub fn set_redirect_region(&self, region: &str) {
        self.update_knobs(|k| k.redirect_region = region.to_string());
    }

    /// A raw `Location` for blob redirects instead of a signed link (`None` restores links).
    pub fn set_redirect_location_override(&self, location: Option<&str>) {
        self.update_knobs(|k| k.redirect_location_override = location.map(str::to_string));
    }

    /// The login server answers blob GETs with 200 and the bytes itself.
    pub fn set_blob_direct(&self, on: bool) {
        self.update_knobs(|k| k.blob_direct = on);
    }

    /// The challenge realm points at the separate auth host.
    pub fn set_realm_on_auth_host(&self, on: bool) {
        self.update_knobs(|k| k.realm_on_auth_host = on);
    }

    /// A raw challenge realm (`None` restores the default).
    pub fn set_realm_override(&self, realm: Option<&str>) {
        self.update_knobs(|k| k.realm_override = realm.map(str::to_string));
    }

    /// Data endpoints redirect valid blob links (`None` restores the bytes).
    pub fn set_data_redirect(&self, redirect: Option<DataRedirect>) {
        self.update_knobs(|k| k.data_redirect = redirect);
    }

    /// Blob responses ignore `Range`.
    pub fn set_ignore_range(&self, on: bool) {
        self.update_knobs(|k| k.ignore_range = on);
    }

    /// Cut the connection after `bytes` body bytes for the next `times` blob bodies.
    pub fn set_cut_after(&self, cut: Option<(u64, u32)>) {
        self.update_knobs(|k| k.cut_after = cut);
    }

    /// Send this many garbage bytes after the blob content.
    pub fn set_extra_bytes(&self, n: u64) {
        self.update_knobs(|k| k.extra_bytes = n);
    }

    /// Serve this blob with one byte flipped.
    pub fn set_corrupt_blob(&self, digest: Option<Digest>) {
        self.update_knobs(|k| k.corrupt_blob = digest);
    }

    /// Pace blob bodies to this many bytes per second.
    pub fn set_rate_limit(&self, bytes_per_sec: Option<u64>) {
        self.update_knobs(|k| k.rate_limit = bytes_per_sec);
    }

    /// 206 answers carry a wrong `Content-Range` start.
    pub fn set_wrong_content_range(&self, on: bool) {
        self.update_knobs(|k| k.wrong_content_range = on);
    }

    /// Blob responses carry this `Content-Encoding`.
    pub fn set_content_encoding(&self, encoding: Option<&str>) {
        self.update_knobs(|k| k.content_encoding = encoding.map(str::to_string));
    }

    /// Queue a failure for the next authorized manifest/blob request on the login server.
    pub fn fail_next(&self, status: u16, retry_after: Option<&str>) {
        self.update_knobs(|k| k.fail_next.push_back((status, retry_after.map(str::to_string))));
    }

    /// Serve `body` with `content_type` for `repo`/`reference`, whatever it is.
    pub fn override_manifest(&self, repo: &str, reference: &str, body: impl Into<Bytes>, content_type: &str) {
        let raw = RawManifest {
            body: body.into(),
            content_type: content_type.to_string(),
        };
        self.update_knobs(|k| {
            k.manifest_override
                .insert((repo.to_string(), reference.to_string()), raw);
        });
    }

    /// HEAD on manifests answers 405.
    pub fn set_head_manifest_405(&self, on: bool) {
        self.update_knobs(|k| k.head_manifest_405 = on);
    }

    /// Lifetime of new signed links.
    pub fn set_link_ttl(&self, ttl: Duration) {
        self.update_knobs(|k| k.link_ttl = ttl);
    }

    /// Lifetime of new tokens.
    pub fn set_token_ttl(&self, ttl: Duration) {
        self.update_knobs(|k| k.token_ttl = ttl);
    }

    /// Leave `expires_in` out of token replies.
    pub fn set_omit_expires_in(&self, on: bool) {
        self.update_knobs(|k| k.omit_expires_in = on);
    }

    /// Send `raw` (JSON text, unchecked) as `expires_in` in token replies; `None` restores
    /// the token lifetime.
    pub fn set_expires_in_raw(&self, raw: Option<&str>) {
        self.update_knobs(|k| k.expires_in_raw = raw.map(str::to_string));
    }

    /// Which field names the token in token replies.
    pub fn set_token_field(&self, field: TokenField) {
        self.update_knobs(|k| k.token_field = field);
    }

    /// Expire every token issued so far (the next use gets `error="invalid_token"`).
    pub fn expire_tokens(&self) {
        let now = Instant::now();
        for grant in lock(&self.shared.tokens).values_mut() {
            grant.expires = now;
        }
    }

    /// Expire every signed link issued so far (the next use gets 403).
    pub fn expire_links(&self) {
        let now = Instant::now();
        for link in lock(&self.shared.links).values_mut() {
            link.expires = now;
        }
    }

    // ----- observability -----

    /// Every request answered since the start or the last [`FakeRegistry::clear_log`].
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared.log)
            .iter()
            .map(|e| RequestRecord {
                body_bytes_sent: e.sent.load(Ordering::Relaxed),
                ..e.record.clone()
            })
            .collect()
    }

    /// The requests one server answered.
    pub fn requests_to(&self, server: ServerName) -> Vec<RequestRecord> {
        self.requests()
            .into_iter()
            .filter(|r| r.server == server)
            .collect()
    }

    /// Every token the realm issued that has not expired yet: the exact values a test
    /// checks never reach a log.
    pub fn issued_tokens(&self) -> Vec<String> {
        lock(&self.shared.tokens).keys().cloned().collect()
    }

    /// The `sig=` value of every signed link handed out that has not expired yet.
    pub fn link_signatures(&self) -> Vec<String> {
        lock(&self.shared.links).values().map(|l| l.sig.clone()).collect()
    }

    /// TCP connections `server` accepted since the start or the last `clear_log`.
    pub fn connections(&self, server: ServerName) -> u64 {
        self.shared.connections(server)
    }

    /// TCP connections the foreign listener accepted since the start or the last
    /// `clear_log`.
    pub fn foreign_connections(&self) -> u64 {
        self.shared.foreign_connections.load(Ordering::Relaxed)
    }

    /// Forget the request log and reset the connection counters.
    pub fn clear_log(&self) {
        lock(&self.shared.log).clear();
        for c in &self.shared.connections {
            c.store(0, Ordering::Relaxed);
        }
        self.shared.foreign_connections.store(0, Ordering::Relaxed);
    }

    // ----- client configuration -----

    /// edgepull's config JSON for this registry, pinned to `region`'s data endpoint. Secret
    /// files (`password`, `refresh_token`) are named next to `ca_file`; see
    /// [`FakeRegistry::write_client_files`] to write them.
    pub fn client_config_json(&self, store_path: &Path, ca_file: &Path, region: &str) -> serde_json::Value {
        let secret = |name: &str| ca_file.with_file_name(name).to_string_lossy().into_owned();
        let auth = match &self.shared.auth {
            AuthMode::Anonymous => None,
            AuthMode::Basic { user, .. } | AuthMode::Token { user, .. } => {
                Some(json!({"username": user, "password_file": secret("password")}))
            }
            AuthMode::RefreshToken { .. } => Some(json!({"refresh_token_file": secret("refresh_token")})),
        };
        // Only the hosts this config allows: edgepull refuses pins for any other name.
        let resolve: HashMap<String, String> = [self.login_host(), self.data_endpoint(region)]
            .iter()
            .map(|h| (h.host().to_string(), self.ip().to_string()))
            .collect();
        let mut registry = json!({
            "login_server": self.login_host().to_string(),
            "region": region,
            "data_endpoints": [self.data_endpoint(region).to_string()],
            "ca_file": ca_file.to_string_lossy(),
            "resolve": resolve,
        });
        if let Some(auth) = auth {
            registry["auth"] = auth;
        }
        json!({
            "registry": registry,
            "store": {"path": store_path.to_string_lossy()},
            "platform": "linux/arm64",
            "images": [],
        })
    }

    /// Write `ca.pem`, the secret file of the auth mode (mode 0600) and `config.json`
    /// (region eastus, store `<dir>/store`) into `dir`; returns the config path. Panics on
    /// IO errors (a test helper).
    pub fn write_client_files(&self, dir: &Path) -> PathBuf {
        self.try_write_client_files(dir, "eastus")
            .unwrap_or_else(|e| panic!("testkit: cannot write client files to {}: {e}", dir.display()))
    }

    /// [`FakeRegistry::write_client_files`] for any region, returning IO errors.
    pub fn try_write_client_files(&self, dir: &Path, region: &str) -> io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, &self.ca_pem)?;
        match &self.shared.auth {
            AuthMode::Anonymous => {}
            AuthMode::Basic { pass, .. } | AuthMode::Token { pass, .. } => {
                write_secret(&dir.join("password"), pass)?;
            }
            AuthMode::RefreshToken { refresh_token } => {
                write_secret(&dir.join("refresh_token"), refresh_token)?;
            }
        }
        let config = self.client_config_json(&dir.join("store"), &ca_file, region);
        let path = dir.join("config.json");
        std::fs::write(
            &path,
            serde_json::to_vec_pretty(&config).map_err(io::Error::other)?,
        )?;
        Ok(path)
    }
}

fn write_secret(path: &Path, secret: &str) -> io::Result<()> {
    std::fs::write(path, secret)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}
