//! The JSON config file, validated into types.
//!
//! Owns: reading `/etc/edgepull/config.json` (or `--config` / `EDGEPULL_CONFIG`), refusing
//! anything unknown or unsafe, and deciding the region's data endpoint. Every error names
//! the file, the JSON field path (`registry.data_endpoints[1]`) and what is allowed.
//!
//! The data endpoint comes from, in order: `registry.data_endpoints`; the entry for
//! `registry.region` in `registry.endpoints_file` (the output of `az acr show-endpoints`);
//! or, for an ACR login server, the pattern `<registry>.<region>.data.<suffix>`. Wildcards
//! and Azure Storage hosts are refused: they mean dedicated data endpoints are disabled.
//!
//! IO: reads the config file, the endpoints file, and the metadata (never the content) of
//! secret files. Secrets are read later, with [`load_secret`], when a credential is needed.
//!
//! Layout (every key optional unless marked; unknown keys are errors):
//! - `registry` (required): `login_server` (required), `region`, `data_endpoints`,
//!   `endpoints_file`, `auth` (`{username, password_file}` or `{refresh_token_file}`),
//!   `ca_file`, `resolve` (host → IP), `realm_hosts`, `blob_source`, `proxy`
//!   (`http://host:port`).
//! - `store`: `path`, `checkpoint_bytes`, `lock_wait_secs`, `keep_previous`,
//!   `min_free_bytes`, `ingest_max_age_secs`.
//! - `platform`, `images` (`[{ref, interval_secs}]`), `concurrency`,
//!   `timeouts` (`{connect_secs, idle_read_secs}`).
//! - Daemon mode (`edgepull run`, see [`daemon`](self::daemon)): `sync`
//!   (`{interval_secs, jitter, backoff_max_secs}`), `hooks` (`{on_update, timeout_secs}`),
//!   `metrics` (`{textfile}`).
//!
//! Raw serde structs stay private; everything public is already validated.

pub mod daemon;
mod locate;
mod secret;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use self::daemon::{HooksConfig, Jitter, MetricsConfig, SyncConfig};
use self::locate::FieldPath;
pub use self::secret::load_secret;
use edgepull_core::acr::{self, AcrHost, ShowEndpoints};
use edgepull_core::hostport::{HostPort, HostPortError};
use edgepull_core::oci::{Platform, Reference};

/// Where the config is read from when neither `--config` nor `EDGEPULL_CONFIG` says.
pub const DEFAULT_PATH: &str = "/etc/edgepull/config.json";
/// Environment variable naming the config file (`--config` wins over it).
pub const CONFIG_ENV: &str = "EDGEPULL_CONFIG";
/// The username that goes with an ACR refresh token (the null GUID).
pub const REFRESH_TOKEN_USERNAME: &str = "00000000-0000-0000-0000-000000000000";
/// Default `store.path`.
pub const DEFAULT_STORE_PATH: &str = "/var/lib/edgepull";
/// Default `store.checkpoint_bytes`: 4 MiB.
pub const DEFAULT_CHECKPOINT_BYTES: u64 = 4 * 1024 * 1024;
/// Smallest `store.checkpoint_bytes`: 64 KiB.
pub const MIN_CHECKPOINT_BYTES: u64 = 64 * 1024;
/// Largest `store.checkpoint_bytes`: 1 GiB.
pub const MAX_CHECKPOINT_BYTES: u64 = 1024 * 1024 * 1024;
/// Default `store.lock_wait_secs`.
pub const DEFAULT_LOCK_WAIT_SECS: u64 = 30;
/// Default `concurrency`.
pub const DEFAULT_CONCURRENCY: usize = 3;
/// Default `timeouts.connect_secs`.
pub const DEFAULT_CONNECT_SECS: u64 = 15;
/// Default `timeouts.idle_read_secs`.
pub const DEFAULT_IDLE_READ_SECS: u64 = 60;
/// Default `store.keep_previous`: one older version stays for rollback.
pub const DEFAULT_KEEP_PREVIOUS: u32 = 1;
/// Largest `store.keep_previous`.
pub const MAX_KEEP_PREVIOUS: u32 = 16;
/// Default `store.min_free_bytes`: 64 MiB stay free on the store's filesystem.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 64 * 1024 * 1024;
/// Default `store.ingest_max_age_secs`: a partial download untouched for 7 days is removed.
pub const DEFAULT_INGEST_MAX_AGE_SECS: u64 = 7 * 24 * 3600;
const MIN_INGEST_MAX_AGE_SECS: u64 = 60;
const MAX_INGEST_MAX_AGE_SECS: u64 = 365 * 24 * 3600;

/// Largest config or endpoints file read.
const MAX_FILE_BYTES: u64 = 1024 * 1024;
const MAX_CONCURRENCY: u64 = 16;
const MAX_LOCK_WAIT_SECS: u64 = 3600;
const MAX_CONNECT_SECS: u64 = 300;
const MAX_IDLE_READ_SECS: u64 = 3600;
/// Shortest `images[].interval_secs` and `sync.interval_secs` (1 s: tests and lab set-ups;
/// a fleet should poll every few minutes).
const MIN_INTERVAL_SECS: u64 = 1;
const MAX_INTERVAL_SECS: u64 = 30 * 24 * 3600;

/// Why the config was refused. Each variant names the file; those about a field carry
/// its JSON path, the value found (never a secret) and what is allowed instead.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error(
        "cannot read config file {}: {error}; create it, or point --config or {CONFIG_ENV} at the right file",
        file.display()
    )]
    Read {
        /// The config file.
        file: PathBuf,
        /// What went wrong.
        error: std::io::Error,
    },
    /// Not JSON, or a field of the wrong type or unknown.
    #[error("{}: line {line}, column {column}, at {}: {message}", file.display(), show_field(field))]
    Json {
        /// The config file.
        file: PathBuf,
        /// JSON path of the field serde stopped at; empty for the top level.
        field: String,
        /// 1-based line.
        line: usize,
        /// 1-based column (bytes).
        column: usize,
        /// serde_json's message, which says what was expected.
        message: String,
    },
    /// A required field is absent.
    #[error("{}: {field} is missing: {allowed}", file.display())]
    Missing {
        /// The config file.
        file: PathBuf,
        /// JSON path of the missing field.
        field: String,
        /// What to write there.
        allowed: String,
    },
    /// A field has a value that is not allowed.
    #[error("{}: {field} = {value}: {allowed}", file.display())]
    Invalid {
        /// The config file.
        file: PathBuf,
        /// JSON path of the field.
        field: String,
        /// The value found, as JSON (never a secret).
        value: String,
        /// Why it is refused and what is allowed instead.
        allowed: String,
    },
    /// A secret file could not be used ([`load_secret`]).
    #[error("secret file {}: {problem}", file.display())]
    Secret {
        /// The secret file.
        file: PathBuf,
        /// What is wrong and how to fix it.
        problem: String,
    },
}

fn show_field(field: &str) -> &str {
    if field.is_empty() { "the top level" } else { field }
}

/// Something in the config that works but deserves a warning (log it at warn level).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigNote {
    /// JSON path of the field concerned.
    pub field: String,
    /// What to do about it.
    pub message: String,
}

impl fmt::Display for ConfigNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// A validated config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// Where and how to reach the registry.
    pub registry: RegistryConfig,
    /// The local content store.
    pub store: StoreConfig,
    /// The platform to pull for.
    pub platform: Platform,
    /// True when `platform` was absent and [`Platform::host`] was used.
    pub platform_defaulted: bool,
    /// Images to keep in sync, all on the login server.
    pub images: Vec<ImageConfig>,
    /// Blob downloads at once (1..=16).
    pub concurrency: usize,
    /// Network timeouts.
    pub timeouts: TimeoutConfig,
    /// Daemon scheduling (`sync`).
    pub sync: SyncConfig,
    /// Commands run after an update (`hooks`).
    pub hooks: HooksConfig,
    /// Prometheus textfile output (`metrics`).
    pub metrics: MetricsConfig,
    /// Warnings found while validating.
    pub notes: Vec<ConfigNote>,
}

/// The `registry` section, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    /// Login server: authentication and manifests.
    pub login_server: HostPort,
    /// The device's region (`[a-z0-9]+`), e.g. `eastus`.
    pub region: Option<String>,
    /// The region's dedicated data endpoint(s): the only hosts blobs come from. Empty only
    /// with [`BlobSourceConfig::Registry`] when no source gave one.
    pub data_endpoints: Vec<HostPort>,
    /// Where `data_endpoints` came from; `None` when it is empty.
    pub data_endpoint_source: Option<DataEndpointSource>,
    /// Credentials for the login server and token realm.
    pub auth: AuthConfig,
    /// PEM file of CA certificates to trust instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// Fixed addresses for allowed hosts (lower-case host → IP); the URL's port is kept.
    pub resolve: BTreeMap<String, IpAddr>,
    /// Extra hosts allowed as token realm (the login server always is).
    pub realm_hosts: Vec<HostPort>,
    /// Where blobs are downloaded from.
    pub blob_source: BlobSourceConfig,
    /// HTTP CONNECT proxy.
    pub proxy: Option<HostPort>,
}

/// Which source gave the data endpoint(s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataEndpointSource {
    /// `registry.data_endpoints`.
    Config,
    /// The region's entry in `registry.endpoints_file` (this file).
    EndpointsFile(PathBuf),
    /// `<registry>.<region>.data.<suffix>` from the login server and region.
    Derived,
}

impl fmt::Display for DataEndpointSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config => f.write_str("registry.data_endpoints"),
            Self::EndpointsFile(p) => write!(f, "registry.endpoints_file ({})", p.display()),
            Self::Derived => f.write_str("derived from registry.login_server and registry.region"),
        }
    }
}

/// How to authenticate. Only file paths: the secrets are read with [`load_secret`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AuthConfig {
    /// No credentials (ACR anonymous pull).
    #[default]
    Anonymous,
    /// Username and a password file (repository-scoped token, service principal, admin).
    Basic {
        /// Username.
        username: String,
        /// File holding the password.
        password_file: PathBuf,
    },
    /// An ACR refresh token file; the username is [`REFRESH_TOKEN_USERNAME`].
    RefreshToken {
        /// File holding the refresh token.
        refresh_token_file: PathBuf,
    },
}

impl AuthConfig {
    /// The username to present, if any.
    pub fn username(&self) -> Option<&str> {
        match self {
            Self::Anonymous => None,
            Self::Basic { username, .. } => Some(username),
            Self::RefreshToken { .. } => Some(REFRESH_TOKEN_USERNAME),
        }
    }

    /// The file holding the password or refresh token, if any.
    pub fn secret_file(&self) -> Option<&Path> {
        match self {
            Self::Anonymous => None,
            Self::Basic { password_file, .. } => Some(password_file),
            Self::RefreshToken { refresh_token_file } => Some(refresh_token_file),
        }
    }
}

/// Where blobs are downloaded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BlobSourceConfig {
    /// Only from the region's dedicated data endpoint (`"data-endpoint"`, the default).
    #[default]
    DataEndpoint,
    /// From the login server, for registries without data endpoints (`"registry"`).
    Registry,
}

impl BlobSourceConfig {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DataEndpoint => "data-endpoint",
            Self::Registry => "registry",
        }
    }
}

/// The `store` section, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Store root (absolute).
    pub path: PathBuf,
    /// Bytes between durable checkpoints of a download (≥ 64 KiB).
    pub checkpoint_bytes: u64,
    /// How long to wait for the store lock held by another process.
    pub lock_wait: Duration,
    /// Older versions of each image kept (and referenced in `index.json`) for rollback.
    pub keep_previous: u32,
    /// Bytes that must stay free on the store's filesystem after a download.
    pub min_free_bytes: u64,
    /// Partial downloads not written to for this long are removed.
    pub ingest_max_age: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from(DEFAULT_STORE_PATH),
            checkpoint_bytes: DEFAULT_CHECKPOINT_BYTES,
            lock_wait: Duration::from_secs(DEFAULT_LOCK_WAIT_SECS),
            keep_previous: DEFAULT_KEEP_PREVIOUS,
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
            ingest_max_age: Duration::from_secs(DEFAULT_INGEST_MAX_AGE_SECS),
        }
    }
}

/// One entry of `images`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageConfig {
    /// The image, on the login server.
    pub reference: Reference,
    /// How often to check it, when set.
    pub interval: Option<Duration>,
}

/// The `timeouts` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeoutConfig {
    /// TCP + TLS connect.
    pub connect: Duration,
    /// Longest wait for the next bytes of a response.
    pub idle_read: Duration,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(DEFAULT_CONNECT_SECS),
            idle_read: Duration::from_secs(DEFAULT_IDLE_READ_SECS),
        }
    }
}

/// This device's platform when the config names none: the build's platform, refined by
/// `/proc/cpuinfo` (only ever lowered, e.g. an armv7 build on an ARMv6 Pi Zero → arm/v6).
pub fn device_platform() -> Platform {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok();
    edgepull_core::oci::cpuinfo::default_platform(&Platform::host(), cpuinfo.as_deref())
}

/// The config path: `cli` (`--config`) if given, else `EDGEPULL_CONFIG` if set and
/// non-empty, else [`DEFAULT_PATH`].
pub fn default_path(cli: Option<&Path>) -> PathBuf {
    choose_path(cli, std::env::var_os(CONFIG_ENV))
}

fn choose_path(cli: Option<&Path>, env: Option<OsString>) -> PathBuf {
    match (cli, env) {
        (Some(p), _) => p.to_path_buf(),
        (None, Some(e)) if !e.is_empty() => PathBuf::from(e),
        _ => PathBuf::from(DEFAULT_PATH),
    }
}

impl Config {
    /// Read and validate the config at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = read_limited(path).map_err(|error| ConfigError::Read {
            file: path.to_path_buf(),
            error,
        })?;
        Self::from_json(&text, path)
    }

    /// Validate `text` as if read from `path` (used in messages and as
    /// [`Config::path`]). Reads the endpoints file and secret-file metadata like
    /// [`Config::load`].
    pub fn from_json(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let ctx = Ctx {
            file: path.to_path_buf(),
        };
        // Parse untyped first: refuse inline secrets with their own message (serde would
        // only say "unknown field"), and never echo them.
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| ctx.json(text, &e))?;
        refuse_inline_secrets(&ctx, &value)?;
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| ctx.json(text, &e))?;
        ctx.validate(raw)
    }

    /// Every host edgepull may connect to: login server, realm hosts, data endpoints,
    /// proxy; without duplicates, in that order.
    pub fn allowlist(&self) -> Vec<HostPort> {
        self.registry.allowlist()
    }

    /// [`Config::allowlist`] as `host:port` lines for a firewall rule set (port always
    /// written, IPv6 in brackets).
    pub fn firewall_lines(&self) -> Vec<String> {
        self.allowlist()
            .iter()
            .map(|hp| {
                if hp.host().contains(':') {
                    format!("[{}]:{}", hp.host(), hp.port())
                } else {
                    format!("{}:{}", hp.host(), hp.port())
                }
            })
            .collect()
    }
}

impl RegistryConfig {
    /// Login server, realm hosts, data endpoints, proxy; without duplicates.
    pub fn allowlist(&self) -> Vec<HostPort> {
        let mut out: Vec<HostPort> = Vec::new();
        let all = std::iter::once(&self.login_server)
            .chain(&self.realm_hosts)
            .chain(&self.data_endpoints)
            .chain(&self.proxy);
        for hp in all {
            if !out.contains(hp) {
                out.push(hp.clone());
            }
        }
        out
    }
}

fn read_limited(path: &Path) -> std::io::Result<String> {
    let file = std::fs::File::open(path)?;
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {} KiB", MAX_FILE_BYTES / 1024),
        ));
    }
    Ok(text)
}

// ---------------------------------------------------------------------------------------
// Raw serde structs: exactly the accepted keys; everything optional so that a missing
// field gets our own message with its path.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    registry: Option<RawRegistry>,
    store: Option<RawStore>,
    platform: Option<String>,
    images: Option<Vec<RawImage>>,
    concurrency: Option<u64>,
    timeouts: Option<RawTimeouts>,
    sync: Option<daemon::RawSync>,
    hooks: Option<daemon::RawHooks>,
    metrics: Option<daemon::RawMetrics>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
    login_server: Option<String>,
    region: Option<String>,
    data_endpoints: Option<Vec<String>>,
    endpoints_file: Option<String>,
    auth: Option<RawAuth>,
    ca_file: Option<String>,
    resolve: Option<BTreeMap<String, String>>,
    realm_hosts: Option<Vec<String>>,
    blob_source: Option<String>,
    proxy: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    username: Option<String>,
    password_file: Option<String>,
    refresh_token_file: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    path: Option<String>,
    checkpoint_bytes: Option<u64>,
    lock_wait_secs: Option<u64>,
    keep_previous: Option<u64>,
    min_free_bytes: Option<u64>,
    ingest_max_age_secs: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImage {
    #[serde(rename = "ref")]
    reference: Option<String>,
    interval_secs: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    connect_secs: Option<u64>,
    idle_read_secs: Option<u64>,
}

// ---------------------------------------------------------------------------------------
// Validation.

/// Keys that would hold a secret inline, and the file key to use instead.
const INLINE_SECRETS: [(&str, &str); 4] = [
    ("password", "password_file"),
    ("token", "refresh_token_file"),
    ("refresh_token", "refresh_token_file"),
    ("access_token", "refresh_token_file"),
];

fn refuse_inline_secrets(ctx: &Ctx, value: &serde_json::Value) -> Result<(), ConfigError> {
    let registry = FieldPath::root().key("registry");
    let Some(reg) = value.get("registry") else {
        return Ok(());
    };
    let places = [
        (registry.clone(), Some(reg)),
        (registry.key("auth"), reg.get("auth")),
    ];
    for (at, obj) in places {
        let Some(obj) = obj.and_then(|o| o.as_object()) else {
            continue;
        };
        for (key, file_key) in INLINE_SECRETS {
            if obj.contains_key(key) {
                return Err(ctx.invalid(
                    &at.key(key),
                    "(not shown)".to_string(),
                    format!(
                        "secrets are never written in the config; put it in a file only edgepull can read \
                         and name that file in registry.auth.{file_key} (with systemd, \
                         LoadCredential=registry-secret:/path/to/file and \
                         /run/credentials/edgepull.service/registry-secret as the file)"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A JSON string, for showing a value in a message.
fn q(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

struct Ctx {
    file: PathBuf,
}

/// Data endpoints and where they came from.
type Endpoints = (Vec<HostPort>, Option<DataEndpointSource>);

impl Ctx {
    fn json(&self, text: &str, e: &serde_json::Error) -> ConfigError {
        let full = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        let message = full.strip_suffix(&suffix).unwrap_or(&full).to_string();
        ConfigError::Json {
            file: self.file.clone(),
            field: locate::path_at(text, e.line(), e.column()).to_string(),
            line: e.line(),
            column: e.column(),
            message,
        }
    }

    fn invalid(&self, field: &FieldPath, value: String, allowed: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.clone(),
            field: field.to_string(),
            value,
            allowed: allowed.into(),
        }
    }

    fn missing(&self, field: &FieldPath, allowed: impl Into<String>) -> ConfigError {
        ConfigError::Missing {
            file: self.file.clone(),
            field: field.to_string(),
            allowed: allowed.into(),
        }
    }

    fn validate(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let root = FieldPath::root();
        let mut notes = Vec::new();
        let raw_registry = raw.registry.ok_or_else(|| {
            self.missing(
                &root.key("registry"),
                "add a registry section with at least login_server, e.g. \
                 \"registry\": {\"login_server\": \"contoso.azurecr.io\", \"region\": \"eastus\"}",
            )
        })?;
        let registry = self.registry(raw_registry, &mut notes)?;
        let store = self.store(raw.store)?;
        let (platform, platform_defaulted) = match raw.platform {
            // The build's platform, lowered on an armv7 build running on an ARMv6 CPU.
            None => (device_platform(), true),
            Some(p) => (
                Platform::parse(&p).map_err(|e| {
                    self.invalid(
                        &root.key("platform"),
                        q(&p),
                        format!(
                            "{e}; leave it out to use this build's platform ({})",
                            Platform::host()
                        ),
                    )
                })?,
                false,
            ),
        };
        let images = self.images(raw.images.unwrap_or_default(), &registry.login_server)?;
        let concurrency = match raw.concurrency {
            None => DEFAULT_CONCURRENCY,
            Some(n) => usize::try_from(self.range(&root.key("concurrency"), n, 1, MAX_CONCURRENCY, "")?)
                .unwrap_or(DEFAULT_CONCURRENCY),
        };
        let timeouts = self.timeouts(raw.timeouts)?;
        let sync = self.sync(raw.sync)?;
        let hooks = self.hooks(raw.hooks)?;
        let metrics = self.metrics(raw.metrics, &store)?;
        Ok(Config {
            path: self.file.clone(),
            registry,
            store,
            platform,
            platform_defaulted,
            images,
            concurrency,
            timeouts,
            sync,
            hooks,
            metrics,
            notes,
        })
    }

    fn range(&self, field: &FieldPath, n: u64, min: u64, max: u64, unit: &str) -> Result<u64, ConfigError> {
        if (min..=max).contains(&n) {
            Ok(n)
        } else {
            Err(self.invalid(field, n.to_string(), format!("allowed: {min} to {max}{unit}")))
        }
    }

    fn abs_path(&self, field: &FieldPath, value: &str) -> Result<PathBuf, ConfigError> {
        let p = Path::new(value);
        if value.trim().is_empty() || !p.is_absolute() || value.contains('\0') {
            return Err(self.invalid(
                field,
                q(value),
                "expected an absolute path, e.g. /etc/edgepull/...: relative paths would depend \
                 on the directory the service starts in",
            ));
        }
        Ok(p.to_path_buf())
    }

    fn host_port(&self, field: &FieldPath, value: &str, example: &str) -> Result<HostPort, ConfigError> {
        HostPort::parse(value).map_err(|e| {
            let why = match e {
                HostPortError::Empty => "empty",
                HostPortError::NotPlain { .. } => {
                    "not a plain host[:port] (no scheme, path, userinfo, '*' or spaces)"
                }
                HostPortError::BadPort { .. } => "the port must be a number from 1 to 65535",
            };
            self.invalid(
                field,
                q(value),
                format!("{why}; expected host[:port], e.g. {example}"),
            )
        })
    }

    fn registry(&self, raw: RawRegistry, notes: &mut Vec<ConfigNote>) -> Result<RegistryConfig, ConfigError> {
        let at = FieldPath::root().key("registry");

        let login_field = at.key("login_server");
        let login_raw = raw.login_server.ok_or_else(|| {
            self.missing(
                &login_field,
                "write the registry's login server as host[:port], e.g. contoso.azurecr.io",
            )
        })?;
        let login_server = self.host_port(&login_field, &login_raw, "contoso.azurecr.io")?;
        let login_acr = AcrHost::parse(login_server.host());
        if let Some(AcrHost::Data { registry, suffix, .. }) = login_acr {
            return Err(self.invalid(
                &login_field,
                q(&login_raw),
                format!(
                    "this is a data endpoint, which serves only blobs; the login server is \
                     {registry}.{suffix} (put data endpoints in registry.data_endpoints)"
                ),
            ));
        }
        if acr::storage_or_wildcard(&login_raw).is_some() {
            return Err(self.invalid(
                &login_field,
                q(&login_raw),
                "this is Azure Storage, not a registry; use the registry's login server, e.g. contoso.azurecr.io",
            ));
        }

        let region = match raw.region {
            None => None,
            Some(r) => {
                if r.is_empty() || !r.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
                    return Err(self.invalid(
                        &at.key("region"),
                        q(&r),
                        "expected an Azure region name of lower-case letters and digits, as \
                         `az acr show-endpoints` prints it, e.g. eastus or westeurope",
                    ));
                }
                Some(r)
            }
        };
        if let (Some(AcrHost::Regional { region: pinned, .. }), Some(region)) = (login_acr, &region)
            && pinned != region
        {
            return Err(self.invalid(
                &at.key("region"),
                q(region),
                format!(
                    "registry.login_server {login_server} is the regional endpoint of {pinned}, \
                     which redirects downloads to {pinned}'s data endpoint; set region to {pinned} \
                     or use the regional endpoint of {region}"
                ),
            ));
        }

        let blob_source = match raw.blob_source.as_deref() {
            None | Some("data-endpoint") => BlobSourceConfig::DataEndpoint,
            Some("registry") => BlobSourceConfig::Registry,
            Some(other) => {
                return Err(self.invalid(
                    &at.key("blob_source"),
                    q(other),
                    "allowed: \"data-endpoint\" (default: blobs only from the region's dedicated data \
                     endpoint) or \"registry\" (blobs from the login server)",
                ));
            }
        };

        let proxy = match raw.proxy {
            None => None,
            Some(p) => Some(self.proxy(&at.key("proxy"), &p)?),
        };

        let mut realm_entries: Vec<(FieldPath, String, HostPort)> = Vec::new();
        for (i, v) in raw.realm_hosts.unwrap_or_default().into_iter().enumerate() {
            let field = at.key("realm_hosts").index(i);
            let hp = self.host_port(&field, &v, "login.contoso.example")?;
            realm_entries.push((field, v, hp));
        }

        let ctx = EndpointCtx {
            at: &at,
            login: &login_server,
            login_acr,
            region: region.as_deref(),
        };
        let (data_endpoints, data_endpoint_source) = self.data_endpoints(
            &ctx,
            raw.data_endpoints.unwrap_or_default(),
            raw.endpoints_file,
            blob_source,
            notes,
        )?;

        // Realm hosts receive credentials; data endpoints and storage never may.
        let mut realm_hosts: Vec<HostPort> = Vec::new();
        for (field, v, hp) in realm_entries {
            let is_data = data_endpoints.contains(&hp)
                || matches!(AcrHost::parse(hp.host()), Some(AcrHost::Data { .. }))
                || acr::storage_or_wildcard(&v).is_some();
            if is_data {
                return Err(self.invalid(
                    &field,
                    q(&v),
                    "this is a data endpoint or storage host, and those never receive credentials; \
                     realm_hosts lists only token servers other than the login server",
                ));
            }
            if !realm_hosts.contains(&hp) && hp != login_server {
                realm_hosts.push(hp);
            }
        }

        let auth = match raw.auth {
            None => AuthConfig::Anonymous,
            Some(a) => self.auth(&at.key("auth"), a, notes)?,
        };

        let ca_file = match raw.ca_file {
            None => None,
            Some(p) => Some(self.abs_path(&at.key("ca_file"), &p)?),
        };

        let mut config = RegistryConfig {
            login_server,
            region,
            data_endpoints,
            data_endpoint_source,
            auth,
            ca_file,
            resolve: BTreeMap::new(),
            realm_hosts,
            blob_source,
            proxy,
        };
        config.resolve = self.resolve(&at.key("resolve"), raw.resolve.unwrap_or_default(), &config)?;
        Ok(config)
    }

    fn proxy(&self, field: &FieldPath, value: &str) -> Result<HostPort, ConfigError> {
        let bad = |why: &str| {
            self.invalid(
                field,
                q(value),
                format!(
                    "{why}; expected an HTTP CONNECT proxy as http://host:port, e.g. http://proxy.local:3128"
                ),
            )
        };
        let url = url::Url::parse(value).map_err(|e| bad(&format!("not a URL ({e})")))?;
        if url.scheme() != "http" {
            return Err(bad(
                "only http:// proxies are supported (TLS to the registry runs inside the CONNECT tunnel)",
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad(
                "proxy credentials in the URL are not supported: they would be a secret in the config",
            ));
        }
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err(bad("no path, query or fragment is allowed"));
        }
        let host = url.host_str().ok_or_else(|| bad("no host"))?;
        let port = url.port_or_known_default().unwrap_or(80);
        HostPort::new(host, port).map_err(|e| bad(&e.to_string()))
    }

    fn data_endpoints(
        &self,
        ctx: &EndpointCtx<'_>,
        configured: Vec<String>,
        endpoints_file: Option<String>,
        blob_source: BlobSourceConfig,
        notes: &mut Vec<ConfigNote>,
    ) -> Result<Endpoints, ConfigError> {
        let list_field = ctx.at.key("data_endpoints");
        let file_field = ctx.at.key("endpoints_file");
        let region_field = ctx.at.key("region");

        // 1. Listed in the config.
        if !configured.is_empty() {
            let mut out = Vec::new();
            for (i, v) in configured.iter().enumerate() {
                let field = list_field.index(i);
                let hp = self.data_endpoint(ctx, &field, v, "")?;
                if out.contains(&hp) {
                    return Err(self.invalid(&field, q(v), "listed twice; remove the duplicate"));
                }
                out.push(hp);
            }
            if endpoints_file.is_some() {
                notes.push(ConfigNote {
                    field: file_field.to_string(),
                    message:
                        "ignored: registry.data_endpoints is set and takes precedence; remove one of them"
                            .to_string(),
                });
            }
            return Ok((out, Some(DataEndpointSource::Config)));
        }

        // 2. The region's entry in `az acr show-endpoints` output.
        if let Some(file) = endpoints_file {
            let path = self.abs_path(&file_field, &file)?;
            let Some(region) = ctx.region else {
                return Err(self.missing(
                    &region_field,
                    format!(
                        "registry.endpoints_file lists one data endpoint per region; set region to the \
                         device's region as it appears there, e.g. \"eastus\" ({})",
                        path.display()
                    ),
                ));
            };
            let out = self.endpoints_from_file(ctx, &file_field, &path, region)?;
            return Ok((out, Some(DataEndpointSource::EndpointsFile(path))));
        }

        // 3. Derived from an ACR login server and the region.
        if let Some(acr) = ctx.login_acr {
            if let Some(region) = ctx.region {
                let derived = acr.data_endpoint(region).unwrap_or_default();
                let hp = HostPort::new(&derived, 443)
                    .map_err(|e| self.invalid(&region_field, q(region), e.to_string()))?;
                return Ok((vec![hp], Some(DataEndpointSource::Derived)));
            }
            if blob_source == BlobSourceConfig::DataEndpoint {
                return Err(self.missing(
                    &region_field,
                    format!(
                        "blobs are downloaded only from the device region's dedicated data endpoint \
                         ({}.<region>.data.{}); set region (e.g. \"eastus\"), or list the endpoint in \
                         registry.data_endpoints, or name `az acr show-endpoints` output in \
                         registry.endpoints_file",
                        acr.registry(),
                        acr.suffix()
                    ),
                ));
            }
            return Ok((Vec::new(), None));
        }

        if blob_source == BlobSourceConfig::Registry {
            return Ok((Vec::new(), None));
        }
        Err(self.missing(
            &list_field,
            format!(
                "blobs are downloaded only from a dedicated data endpoint, and none can be found for \
                 {}: list it in registry.data_endpoints (e.g. [\"contoso.eastus.data.azurecr.io\"]), \
                 or set registry.endpoints_file to the output of `az acr show-endpoints` and \
                 registry.region, or use an ACR login server (*.azurecr.io, *.azurecr.cn, \
                 *.azurecr.us) with registry.region so the name can be derived; for a registry \
                 without data endpoints set registry.blob_source to \"registry\"",
                ctx.login
            ),
        ))
    }

    /// One data endpoint as written (`from` says where, for messages): not a wildcard or
    /// storage host, a plain `host[:port]`, not the login server, and consistent with the
    /// login server's registry and the region when both are ACR names.
    fn data_endpoint(
        &self,
        ctx: &EndpointCtx<'_>,
        field: &FieldPath,
        value: &str,
        from: &str,
    ) -> Result<HostPort, ConfigError> {
        if let Some(what) = acr::storage_or_wildcard(value) {
            return Err(self.invalid(field, q(value), format!("{what}{from}; {}", ctx.enable_hint())));
        }
        let hp = self.host_port(field, value, "contoso.eastus.data.azurecr.io")?;
        if hp == *ctx.login {
            return Err(self.invalid(
                field,
                q(value),
                format!(
                    "this is the login server{from}; a data endpoint is a separate host such as \
                     {}; to download blobs from the login server set registry.blob_source to \"registry\"",
                    ctx.example()
                ),
            ));
        }
        let Some(login) = ctx.login_acr else {
            return Ok(hp);
        };
        match AcrHost::parse(hp.host()) {
            Some(AcrHost::Data {
                registry,
                region,
                suffix,
            }) => {
                if registry != login.registry() || suffix != login.suffix() {
                    return Err(self.invalid(
                        field,
                        q(value),
                        format!(
                            "this data endpoint belongs to registry {registry}.{suffix}{from}, but \
                             registry.login_server is {}; the login server only redirects to its own \
                             data endpoints, e.g. {}",
                            ctx.login,
                            ctx.example()
                        ),
                    ));
                }
                if let Some(want) = ctx.region
                    && region != want
                {
                    return Err(self.invalid(
                        field,
                        q(value),
                        format!(
                            "this is the data endpoint of region {region}{from}, but registry.region is \
                             {want}; use {} (or correct registry.region)",
                            ctx.example()
                        ),
                    ));
                }
            }
            Some(AcrHost::Global { .. } | AcrHost::Regional { .. }) => {
                return Err(self.invalid(
                    field,
                    q(value),
                    format!(
                        "this is a login server name{from}, not a data endpoint; a data endpoint \
                         looks like {}",
                        ctx.example()
                    ),
                ));
            }
            None => {}
        }
        Ok(hp)
    }

    fn endpoints_from_file(
        &self,
        ctx: &EndpointCtx<'_>,
        field: &FieldPath,
        path: &Path,
        region: &str,
    ) -> Result<Vec<HostPort>, ConfigError> {
        let shown = q(&path.display().to_string());
        let text = read_limited(path).map_err(|e| {
            self.invalid(
                field,
                shown.clone(),
                format!(
                    "cannot read it ({e}); write the output of `az acr show-endpoints --name <registry>` \
                     there, or list the endpoint in registry.data_endpoints"
                ),
            )
        })?;
        let doc: ShowEndpoints = serde_json::from_str(&text).map_err(|e| {
            let inner = locate::path_at(&text, e.line(), e.column());
            self.invalid(
                field,
                shown.clone(),
                format!(
                    "not `az acr show-endpoints` output: line {}, column {}, at {}: {e}; expected \
                     {{\"loginServer\": ..., \"dataEndpoints\": [{{\"region\": ..., \"endpoint\": ...}}]}}",
                    e.line(),
                    e.column(),
                    show_field(inner.as_str())
                ),
            )
        })?;

        if let Some(ls) = &doc.login_server {
            let matches = |s: &str| HostPort::parse(s).is_ok_and(|hp| hp == *ctx.login);
            if !matches(ls) && !doc.regional_endpoints.iter().any(|r| matches(&r.endpoint)) {
                return Err(self.invalid(
                    field,
                    shown,
                    format!(
                        "this file is for registry {ls}, but registry.login_server is {}; run \
                         `az acr show-endpoints` for the right registry",
                        ctx.login
                    ),
                ));
            }
        }

        let mut out = Vec::new();
        for (i, entry) in doc.data_endpoints.iter().enumerate() {
            if !entry.region.eq_ignore_ascii_case(region) {
                continue;
            }
            let from = format!(
                " (dataEndpoints[{i}].endpoint for region {} in {})",
                entry.region,
                path.display()
            );
            let hp = self.data_endpoint(ctx, field, &entry.endpoint, &from)?;
            if !out.contains(&hp) {
                out.push(hp);
            }
        }
        if out.is_empty() {
            let regions: Vec<&str> = doc.data_endpoints.iter().map(|e| e.region.as_str()).collect();
            return Err(self.invalid(
                field,
                shown,
                format!(
                    "it has no data endpoint for registry.region {region} (regions listed: {}); the \
                     registry has no replica there, or the region is misspelled; set registry.region to \
                     one of the listed regions, or add a replica in {region} and run \
                     `az acr show-endpoints` again",
                    if regions.is_empty() {
                        "none".to_string()
                    } else {
                        regions.join(", ")
                    }
                ),
            ));
        }
        Ok(out)
    }

    fn auth(
        &self,
        at: &FieldPath,
        raw: RawAuth,
        notes: &mut Vec<ConfigNote>,
    ) -> Result<AuthConfig, ConfigError> {
        let forms = "use {\"username\": ..., \"password_file\": ...} or {\"refresh_token_file\": ...}, \
                     or remove registry.auth for anonymous pull";
        let auth = match (raw.username, raw.password_file, raw.refresh_token_file) {
            (None, None, None) => {
                return Err(self.invalid(at, "{}".to_string(), forms));
            }
            (Some(username), Some(password_file), None) => {
                let field = at.key("username");
                if username.is_empty() || username.contains(':') || username.chars().any(char::is_control) {
                    return Err(self.invalid(
                        &field,
                        q(&username),
                        "expected a non-empty username without ':' or control characters \
                         (the token name or service principal id)",
                    ));
                }
                AuthConfig::Basic {
                    username,
                    password_file: self.abs_path(&at.key("password_file"), &password_file)?,
                }
            }
            (Some(_), None, None) => {
                return Err(self.missing(
                    &at.key("password_file"),
                    "name the file holding the password, e.g. \
                     /run/credentials/edgepull.service/registry-password (systemd LoadCredential=)",
                ));
            }
            (None, Some(_), None) => {
                return Err(self.missing(
                    &at.key("username"),
                    "give the username that goes with password_file (e.g. the repository-scoped token's name)",
                ));
            }
            (None, None, Some(file)) => AuthConfig::RefreshToken {
                refresh_token_file: self.abs_path(&at.key("refresh_token_file"), &file)?,
            },
            (username, _, Some(_)) => {
                let other = if username.is_some() {
                    "username"
                } else {
                    "password_file"
                };
                return Err(self.invalid(
                    &at.key(other),
                    "(set)".to_string(),
                    format!(
                        "not allowed together with refresh_token_file: a refresh token always uses the \
                         username {REFRESH_TOKEN_USERNAME}; {forms}"
                    ),
                ));
            }
        };
        if let Some(file) = auth.secret_file() {
            let key = if matches!(auth, AuthConfig::Basic { .. }) {
                "password_file"
            } else {
                "refresh_token_file"
            };
            notes.extend(secret::permission_note(at.key(key).as_str(), file));
        }
        Ok(auth)
    }

    fn resolve(
        &self,
        at: &FieldPath,
        raw: BTreeMap<String, String>,
        reg: &RegistryConfig,
    ) -> Result<BTreeMap<String, IpAddr>, ConfigError> {
        let mut allowed: Vec<&str> = Vec::new();
        for hp in std::iter::once(&reg.login_server)
            .chain(&reg.realm_hosts)
            .chain(&reg.data_endpoints)
        {
            if !allowed.contains(&hp.host()) {
                allowed.push(hp.host());
            }
        }
        let mut out = BTreeMap::new();
        for (key, value) in raw {
            let field = at.key(&key);
            let host = key.trim_end_matches('.').to_ascii_lowercase();
            if host.contains(':') || host.parse::<IpAddr>().is_ok() {
                return Err(self.invalid(
                    &field,
                    q(&value),
                    "the key must be a host name without port (the port of each URL is kept)",
                ));
            }
            if let Some(proxy) = &reg.proxy {
                if host != proxy.host() {
                    return Err(self.invalid(
                        &field,
                        q(&value),
                        format!(
                            "has no effect: with registry.proxy set, the proxy resolves {host}; remove \
                             this entry (only the proxy host {} may be resolved here)",
                            proxy.host()
                        ),
                    ));
                }
            } else if !allowed.contains(&host.as_str()) {
                return Err(self.invalid(
                    &field,
                    q(&value),
                    format!(
                        "{host} is not an allowed host; resolve never adds a host to the allowlist. \
                         Allowed keys: {}",
                        allowed.join(", ")
                    ),
                ));
            }
            let ip: IpAddr = value.trim().parse().map_err(|_| {
                self.invalid(
                    &field,
                    q(&value),
                    "expected an IPv4 or IPv6 address without port, e.g. 10.1.2.3 (the port of each URL is kept)",
                )
            })?;
            if ip.is_unspecified() || ip.is_multicast() {
                return Err(self.invalid(
                    &field,
                    q(&value),
                    "an unspecified or multicast address cannot be connected to; give the host's unicast address",
                ));
            }
            if out.insert(host.clone(), ip).is_some() {
                return Err(self.invalid(
                    &field,
                    q(&value),
                    format!("{host} is listed twice (host names are case-insensitive); keep one"),
                ));
            }
        }
        Ok(out)
    }

    fn store(&self, raw: Option<RawStore>) -> Result<StoreConfig, ConfigError> {
        let at = FieldPath::root().key("store");
        let Some(raw) = raw else {
            return Ok(StoreConfig::default());
        };
        let default = StoreConfig::default();
        Ok(StoreConfig {
            path: match raw.path {
                None => default.path,
                Some(p) => self.abs_path(&at.key("path"), &p)?,
            },
            checkpoint_bytes: match raw.checkpoint_bytes {
                None => default.checkpoint_bytes,
                Some(n) => self.range(
                    &at.key("checkpoint_bytes"),
                    n,
                    MIN_CHECKPOINT_BYTES,
                    MAX_CHECKPOINT_BYTES,
                    " bytes (64 KiB to 1 GiB)",
                )?,
            },
            lock_wait: match raw.lock_wait_secs {
                None => default.lock_wait,
                Some(n) => Duration::from_secs(self.range(
                    &at.key("lock_wait_secs"),
                    n,
                    0,
                    MAX_LOCK_WAIT_SECS,
                    " seconds",
                )?),
            },
            keep_previous: match raw.keep_previous {
                None => default.keep_previous,
                Some(n) => u32::try_from(self.range(
                    &at.key("keep_previous"),
                    n,
                    0,
                    u64::from(MAX_KEEP_PREVIOUS),
                    " older versions per image (0 keeps none: no rollback)",
                )?)
                .unwrap_or(DEFAULT_KEEP_PREVIOUS),
            },
            min_free_bytes: raw.min_free_bytes.unwrap_or(default.min_free_bytes),
            ingest_max_age: match raw.ingest_max_age_secs {
                None => default.ingest_max_age,
                Some(n) => Duration::from_secs(self.range(
                    &at.key("ingest_max_age_secs"),
                    n,
                    MIN_INGEST_MAX_AGE_SECS,
                    MAX_INGEST_MAX_AGE_SECS,
                    " seconds (1 minute to 1 year; partial downloads are resumed until then)",
                )?),
            },
        })
    }

    fn images(&self, raw: Vec<RawImage>, login: &HostPort) -> Result<Vec<ImageConfig>, ConfigError> {
        let at = FieldPath::root().key("images");
        let mut out: Vec<ImageConfig> = Vec::new();
        for (i, img) in raw.into_iter().enumerate() {
            let field = at.index(i);
            let ref_field = field.key("ref");
            let value = img.reference.ok_or_else(|| {
                self.missing(
                    &ref_field,
                    format!("give the image as <repository>[:tag][@digest], e.g. \"{login}/app:stable\" or \"app:stable\""),
                )
            })?;
            let reference = Reference::parse_with_default(&value, login)
                .map_err(|e| self.invalid(&ref_field, q(&value), e.to_string()))?;
            if reference.registry() != login {
                let shown = reference.to_string();
                let rest = shown.split_once('/').map_or(shown.as_str(), |(_, r)| r);
                return Err(self.invalid(
                    &ref_field,
                    q(&value),
                    format!(
                        "names registry {}, but registry.login_server is {login}; edgepull pulls only from \
                         the login server: write {login}/{rest} or just {rest}",
                        reference.registry(),
                    ),
                ));
            }
            if out.iter().any(|o| o.reference == reference) {
                return Err(self.invalid(&ref_field, q(&value), "listed twice; remove the duplicate"));
            }
            let interval = match img.interval_secs {
                None => None,
                Some(n) => Some(Duration::from_secs(self.range(
                    &field.key("interval_secs"),
                    n,
                    MIN_INTERVAL_SECS,
                    MAX_INTERVAL_SECS,
                    " seconds",
                )?)),
            };
            out.push(ImageConfig { reference, interval });
        }
        Ok(out)
    }

    fn timeouts(&self, raw: Option<RawTimeouts>) -> Result<TimeoutConfig, ConfigError> {
        let at = FieldPath::root().key("timeouts");
        let default = TimeoutConfig::default();
        let Some(raw) = raw else {
            return Ok(default);
        };
        Ok(TimeoutConfig {
            connect: match raw.connect_secs {
                None => default.connect,
                Some(n) => Duration::from_secs(self.range(
                    &at.key("connect_secs"),
                    n,
                    1,
                    MAX_CONNECT_SECS,
                    " seconds",
                )?),
            },
            idle_read: match raw.idle_read_secs {
                None => default.idle_read,
                Some(n) => Duration::from_secs(self.range(
                    &at.key("idle_read_secs"),
                    n,
                    1,
                    MAX_IDLE_READ_SECS,
                    " seconds",
                )?),
            },
        })
    }
}

/// What data-endpoint checks need to know about the registry section.
struct EndpointCtx<'a> {
    at: &'a FieldPath,
    login: &'a HostPort,
    login_acr: Option<AcrHost<'a>>,
    region: Option<&'a str>,
}

impl EndpointCtx<'_> {
    /// The data endpoint to suggest: derived when possible, else a placeholder.
    fn example(&self) -> String {
        match (self.login_acr, self.region) {
            (Some(acr), Some(region)) => acr.data_endpoint(region).unwrap_or_default(),
            (Some(acr), None) => format!("{}.<region>.data.{}", acr.registry(), acr.suffix()),
            _ => "<registry>.<region>.data.azurecr.io".to_string(),
        }
    }

    /// How to get a dedicated data endpoint instead of Azure Storage.
    fn enable_hint(&self) -> String {
        let name = self.login_acr.map_or("<registry>", |a| a.registry());
        format!(
            "this means the registry has dedicated data endpoints disabled (az acr show-endpoints \
             then prints *.blob.core.windows.net) and downloads would go to Azure Storage, but \
             edgepull downloads only from the region's dedicated data endpoint. Enable them \
             (Premium tier) with `az acr update --name {name} --data-endpoint-enabled true` and \
             use {}",
            self.example()
        )
    }
}

#[cfg(test)]
mod tests;
