//! Shared state of the fake registry: options, runtime knobs, content, tokens, signed
//! links and the request log. Every lock is short and never held across an await.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use edgepull_core::oci::Digest;

/// The registry name used in every host name.
pub(crate) const REGISTRY: &str = "contoso";
/// The login server host name (also the token `service`).
pub const LOGIN_HOST: &str = "contoso.azurecr.test";
/// The separate token-realm host name.
pub const AUTH_HOST: &str = "auth.contoso.test";
/// The regions that have a data endpoint server.
pub const REGIONS: [&str; 2] = ["eastus", "westus"];

/// The data endpoint host name of `region` (`contoso.<region>.data.azurecr.test`).
pub(crate) fn data_host(region: &str) -> String {
    format!("{REGISTRY}.{region}.data.azurecr.test")
}

/// One of the fake's servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServerName {
    /// The login server (`contoso.azurecr.test`).
    Login,
    /// The separate token realm (`auth.contoso.test`).
    Auth,
    /// The eastus data endpoint.
    EastUs,
    /// The westus data endpoint.
    WestUs,
}

impl ServerName {
    /// All servers, in a fixed order.
    pub const ALL: [ServerName; 4] = [Self::Login, Self::Auth, Self::EastUs, Self::WestUs];

    pub(crate) fn index(self) -> usize {
        match self {
            Self::Login => 0,
            Self::Auth => 1,
            Self::EastUs => 2,
            Self::WestUs => 3,
        }
    }

    /// The region of a data endpoint server.
    pub fn region(self) -> Option<&'static str> {
        match self {
            Self::EastUs => Some("eastus"),
            Self::WestUs => Some("westus"),
            _ => None,
        }
    }

    /// The host name this server answers as.
    pub fn host(self) -> String {
        match self {
            Self::Login => LOGIN_HOST.to_string(),
            Self::Auth => AUTH_HOST.to_string(),
            Self::EastUs | Self::WestUs => data_host(self.region().unwrap_or("eastus")),
        }
    }
}

/// How clients authenticate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AuthMode {
    /// Bearer challenge; the token realm hands out tokens without credentials.
    #[default]
    Anonymous,
    /// The login server itself demands `Authorization: Basic`; there is no token server.
    Basic {
        /// User name.
        user: String,
        /// Password.
        pass: String,
    },
    /// Bearer challenge; the token GET needs `Authorization: Basic user:pass`. The OAuth2
    /// POST `grant_type=password` is answered 400, as ACR does.
    Token {
        /// User name.
        user: String,
        /// Password.
        pass: String,
    },
    /// Bearer challenge; tokens come from POST `grant_type=refresh_token` (or a GET whose
    /// Basic password is the refresh token, as `docker login` with the null GUID user does).
    RefreshToken {
        /// The only accepted ACR refresh token.
        refresh_token: String,
    },
}

/// Which JSON field carries the token in a token reply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TokenField {
    /// `{"token": ...}` (Docker token spec).
    Token,
    /// `{"access_token": ...}` (ACR, OAuth2).
    #[default]
    AccessToken,
    /// Both fields, same value.
    Both,
}

/// A manifest served verbatim, whatever it contains.
#[derive(Debug, Clone)]
pub struct RawManifest {
    /// The exact bytes.
    pub body: Bytes,
    /// The `Content-Type` header sent with them.
    pub content_type: String,
}

/// Misbehaviour switches, changeable at runtime (see `FakeRegistry::update_knobs`).
#[derive(Debug, Clone)]
pub struct Knobs {
    /// Region whose data endpoint blob GETs are redirected to (default `eastus`).
    pub redirect_region: String,
    /// A raw `Location` value used instead of a signed link.
    pub redirect_location_override: Option<String>,
    /// The login server answers blob GETs with 200 and the body itself.
    pub blob_direct: bool,
    /// The challenge realm points at the separate auth host.
    pub realm_on_auth_host: bool,
    /// A raw realm value for the challenge.
    pub realm_override: Option<String>,
    /// Blob responses ignore `Range` and send 200 with the full body.
    pub ignore_range: bool,
    /// `(n, times)`: abort the connection after `n` body bytes, for the next `times`
    /// blob bodies.
    pub cut_after: Option<(u64, u32)>,
    /// Garbage bytes sent after the real content (Content-Length counts them).
    pub extra_bytes: u64,
    /// This blob is served with one byte flipped (the byte at `size / 2`).
    pub corrupt_blob: Option<Digest>,
    /// Blob bodies are paced to this many bytes per second.
    pub rate_limit: Option<u64>,
    /// 206 answers carry a `Content-Range` whose start differs from the one requested.
    pub wrong_content_range: bool,
    /// Blob responses carry this `Content-Encoding` (the body is unchanged).
    pub content_encoding: Option<String>,
    /// `(status, Retry-After)`: answers for the next authorized manifest/blob requests on
    /// the login server, one entry each.
    pub fail_next: VecDeque<(u16, Option<String>)>,
    /// The `message` of the `fail_next` answers' error body (default
    /// `injected failure (fail_next)`), to test how registry error text is shown.
    pub fail_message: Option<String>,
    /// Manifests served verbatim for `(repo, reference)`.
    pub manifest_override: HashMap<(String, String), RawManifest>,
    /// HEAD on manifests answers 405.
    pub head_manifest_405: bool,
    /// Lifetime of the signed data-endpoint links (default 20 min).
    pub link_ttl: Duration,
    /// Lifetime of issued tokens (default 300 s).
    pub token_ttl: Duration,
    /// Leave `expires_in` out of token replies.
    pub omit_expires_in: bool,
    /// Send this raw JSON text as `expires_in` (e.g. `9223372036854775807`, `-1`, `"300"`)
    /// instead of the token lifetime; the registry still honours `token_ttl`.
    pub expires_in_raw: Option<String>,
    /// Which field names the token in token replies.
    pub token_field: TokenField,
    /// Data endpoints answer 400 `InvalidAuthenticationInfo` to requests that carry an
    /// `Authorization` header, as Azure storage does (default true).
    pub data_rejects_authorization: bool,
    /// `(n, times)`: after `n` body bytes the next `times` blob bodies stall (no more bytes,
    /// the connection stays open).
    pub stall_after: Option<(u64, u32)>,
    /// `(n, times)`: the next `times` blob bodies end cleanly after `n` bytes; those
    /// responses are sent chunked (no `Content-Length`), so the end is well-formed HTTP.
    pub short_body: Option<(u64, u32)>,
    /// `(bytes_per_sec, times)`: the next `times` blob bodies are paced to this rate (a
    /// one-shot [`Knobs::rate_limit`]).
    pub trickle: Option<(u64, u32)>,
    /// Blob and manifest bodies are sent chunked, without `Content-Length`.
    pub chunked: bool,
    /// 206 answers carry no `Content-Range`.
    pub omit_content_range: bool,
    /// `(status, Retry-After)`: answers for the next requests with a valid signed link on
    /// the data endpoints, one entry each (Azure-storage XML errors).
    pub data_fail_next: VecDeque<(u16, Option<String>)>,
    /// Statuses for the next blob requests that carry a `Range` header, one entry each
    /// (416 comes with `Content-Range: bytes */<size>`).
    pub range_fail_next: VecDeque<u16>,
    /// The next this many signed links are issued already expired (the data endpoint
    /// answers 403 "Signed expiry time has passed.").
    pub expired_links_next: u32,
    /// Manifest responses carry this `Docker-Content-Digest` instead of the true one.
    pub docker_content_digest_override: Option<String>,
    /// Token replies are this text, with `{token}` replaced by the issued token.
    pub token_reply_override: Option<String>,
    /// `Some(n)`: after `n` more authorized manifest/blob requests on the login server, the
    /// next one revokes its token and is answered 401 `error="invalid_token"` (once).
    pub invalid_token_after: Option<u32>,
    /// Data endpoints answer valid blob links with a 307 instead of the bytes.
    pub data_redirect: Option<DataRedirect>,
}

/// How a data endpoint redirects a valid blob link (`Knobs::data_redirect`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataRedirect {
    /// To this raw `Location`, every time.
    To(String),
    /// To a fresh signed link on the other region's endpoint (eastus ↔ westus), `n` times
    /// for every blob request: login → eastus → westus → … → the bytes after `n` data
    /// hops. A chain among data endpoints.
    Chain(u32),
    /// To the very URL requested, every time (a loop).
    Loop,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            redirect_region: "eastus".to_string(),
            redirect_location_override: None,
            blob_direct: false,
            realm_on_auth_host: false,
            realm_override: None,
            ignore_range: false,
            cut_after: None,
            extra_bytes: 0,
            corrupt_blob: None,
            rate_limit: None,
            wrong_content_range: false,
            content_encoding: None,
            fail_next: VecDeque::new(),
            fail_message: None,
            manifest_override: HashMap::new(),
            head_manifest_405: false,
            link_ttl: Duration::from_secs(20 * 60),
            token_ttl: Duration::from_secs(300),
            omit_expires_in: false,
            expires_in_raw: None,
            token_field: TokenField::default(),
            data_rejects_authorization: true,
            stall_after: None,
            short_body: None,
            trickle: None,
            chunked: false,
            omit_content_range: false,
            data_fail_next: VecDeque::new(),
            range_fail_next: VecDeque::new(),
            expired_links_next: 0,
            docker_content_digest_override: None,
            token_reply_override: None,
            invalid_token_after: None,
            data_redirect: None,
        }
    }
}

/// The server certificate every fake server presents (see
/// `FakeRegistry::start_with_cert`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CertMode {
    /// Valid now, for every host name of the fake.
    #[default]
    Valid,
    /// Valid now, but only for `wrong-name.invalid` (signed by the same CA).
    WrongName,
    /// For the right names, but expired in 2001 (signed by the same CA).
    Expired,
}

/// Options for `FakeRegistry::start`.
#[derive(Debug, Clone, Default)]
pub struct FakeOptions {
    /// How clients authenticate.
    pub auth: AuthMode,
    /// The initial knobs.
    pub knobs: Knobs,
}

/// One request as a server saw it. Never contains a secret.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// Which server answered.
    pub server: ServerName,
    /// `GET`, `HEAD`, `POST`, ...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query with every value except `service` and `scope` replaced by `REDACTED`.
    pub query: Option<String>,
    /// The `Range` header, if any.
    pub range: Option<String>,
    /// The scheme of the `Authorization` header (`Basic`, `Bearer`), if one arrived.
    pub auth_scheme: Option<String>,
    /// The status sent.
    pub status: u16,
    /// Body bytes handed to the connection before the body completed or was cut.
    pub body_bytes_sent: u64,
    /// When the request was answered.
    pub at: Instant,
}

pub(crate) struct LogEntry {
    pub record: RequestRecord,
    pub sent: Arc<AtomicU64>,
}

/// A token issued by the realm.
pub(crate) struct Grant {
    pub expires: Instant,
    pub repos: HashSet<String>,
}

/// A signed link to a blob on one data endpoint.
pub(crate) struct Link {
    pub region: String,
    pub digest: Digest,
    pub sig: String,
    pub expires: Instant,
    /// Data-endpoint redirects before this link (0 for the login server's).
    pub depth: u32,
}

/// Blobs, manifests and tags.
#[derive(Default)]
pub(crate) struct Content {
    pub blobs: HashMap<Digest, Bytes>,
    pub repo_blobs: HashMap<String, HashSet<Digest>>,
    pub manifests: HashMap<String, HashMap<Digest, RawManifest>>,
    pub tags: HashMap<String, HashMap<String, Digest>>,
}

impl Content {
    /// The blob `digest` if `repo` holds it.
    pub(crate) fn blob(&self, repo: &str, digest: &Digest) -> Option<Bytes> {
        if !self.repo_blobs.get(repo)?.contains(digest) {
            return None;
        }
        self.blobs.get(digest).cloned()
    }

    /// The manifest for a tag or digest string.
    pub(crate) fn manifest(&self, repo: &str, reference: &str) -> Option<(Digest, RawManifest)> {
        let digest = match Digest::parse(reference) {
            Ok(d) => d,
            Err(_) => *self.tags.get(repo)?.get(reference)?,
        };
        let m = self.manifests.get(repo)?.get(&digest)?;
        Some((digest, m.clone()))
    }
}

/// Ports of the four servers, and of the foreign listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ports {
    pub login: u16,
    pub auth: u16,
    pub eastus: u16,
    pub westus: u16,
    pub foreign: u16,
}

impl Ports {
    pub(crate) fn of(&self, server: ServerName) -> u16 {
        match server {
            ServerName::Login => self.login,
            ServerName::Auth => self.auth,
            ServerName::EastUs => self.eastus,
            ServerName::WestUs => self.westus,
        }
    }

    /// The port of `region`'s data endpoint; eastus's for a region without a server.
    pub(crate) fn region(&self, region: &str) -> u16 {
        if region == "westus" {
            self.westus
        } else {
            self.eastus
        }
    }
}

pub(crate) struct Shared {
    pub auth: AuthMode,
    pub ports: Ports,
    pub knobs: Mutex<Knobs>,
    pub content: Mutex<Content>,
    pub tokens: Mutex<HashMap<String, Grant>>,
    pub links: Mutex<HashMap<String, Link>>,
    pub log: Mutex<Vec<LogEntry>>,
    pub connections: [AtomicU64; 4],
    /// TCP connections the foreign listener accepted.
    pub foreign_connections: AtomicU64,
}

impl Shared {
    pub(crate) fn new(opts: FakeOptions, ports: Ports) -> Self {
        Self {
            auth: opts.auth,
            ports,
            knobs: Mutex::new(opts.knobs),
            content: Mutex::new(Content::default()),
            tokens: Mutex::new(HashMap::new()),
            links: Mutex::new(HashMap::new()),
            log: Mutex::new(Vec::new()),
            connections: Default::default(),
            foreign_connections: AtomicU64::new(0),
        }
    }

    /// Register a link to `digest` on `region`'s data endpoint, valid for `ttl`, `depth`
    /// data-endpoint redirects into a chain (0 from the login server); returns its URL.
    pub(crate) fn signed_link(&self, region: &str, digest: Digest, ttl: Duration, depth: u32) -> String {
        let id = random_hex(16);
        let sig = random_hex(32);
        let se = SystemTime::now()
            .checked_add(ttl)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let now = Instant::now();
        let expired = {
            let mut k = lock(&self.knobs);
            let expired = k.expired_links_next > 0;
            k.expired_links_next = k.expired_links_next.saturating_sub(1);
            expired
        };
        let link = Link {
            region: region.to_string(),
            digest,
            sig: sig.clone(),
            expires: if expired {
                now
            } else {
                now.checked_add(ttl).unwrap_or(now)
            },
            depth,
        };
        {
            let mut links = lock(&self.links);
            links.retain(|_, l| l.expires > now);
            links.insert(id.clone(), link);
        }
        format!(
            "https://{}:{}/blob/{id}?sig={sig}&se={se}",
            data_host(region),
            self.ports.region(region)
        )
    }

    pub(crate) fn count_connection(&self, server: ServerName) {
        self.connections[server.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connections(&self, server: ServerName) -> u64 {
        self.connections[server.index()].load(Ordering::Relaxed)
    }
}

/// Lock, ignoring poisoning: a panicking test thread must not take the servers down.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A random lowercase hex string of `bytes` random bytes.
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    hex::encode(buf)
}
