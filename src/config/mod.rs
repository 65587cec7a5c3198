//! The JSON config file, validated into types.
//!
//! Owns: reading `/etc/edgepull/config.json` (or `--config` / `EDGEPULL_CONFIG`), refusing
//! anything unknown or unsafe, and deciding the region's data endpoint. Every error names
//! the file, the JSON field path (`registry.data_endpoints[1]`) and what is allowed. Must
//! never read a secret while validating, echo one in an error, or import from
//! `crate::registry` (host shapes, the allowlist and the [`Secret`] type come from
//! `edgepull_core`).
//!
//! The data endpoint comes from, in order: `registry.data_endpoints`; the entry for
//! `registry.region` in `registry.endpoints_file` (the output of `az acr show-endpoints`);
//! or, for an ACR login server, the pattern `<registry>.<region>.data.<suffix>`. Wildcards
//! and Azure Storage hosts are refused: they mean dedicated data endpoints are disabled.
//!
//! IO, all blocking: [`Config::load`] reads the config file, the endpoints file, the
//! metadata (never the content) of secret files, the `signatures.public_keys` files and,
//! when `platform` is absent,
//! `/proc/cpuinfo`; `load_secret` reads a secret file when a credential is needed. Both
//! stay synchronous: the caller decides where to run them (the daemon uses
//! `spawn_blocking`).
//!
//! Layout (every key optional unless marked; unknown keys are errors):
//! - `registry` (required): `login_server` (required), `region`, `data_endpoints`,
//!   `endpoints_file`, `auth` (`{username, password_file}` or `{refresh_token_file}`),
//!   `ca_file`, `resolve` (host → IP), `realm_hosts`, `blob_source`, `proxy`
//!   (`http://host:port`).
//! - `store`: `path`, `checkpoint_bytes`, `lock_wait_secs`, `keep_previous`,
//!   `min_free_bytes`, `ingest_max_age_secs`, `verify_on_start`.
//! - `platform`, `images` (`[{ref, interval_secs, identity}]`), `concurrency`,
//!   `timeouts` (`{connect_secs, idle_read_secs}`), `signatures` (`{public_keys}`).
//! - Daemon mode (`edgepull run`, see `daemon`): `sync`
//!   (`{interval_secs, jitter, backoff_max_secs}`), `hooks` (`{on_update, timeout_secs, health_check,
//!   health_timeout_secs}`),
//!   `metrics` (`{textfile}`).
//! - `link` (`pull` and `run`): `{max_bytes_per_sec, max_bytes_per_day, windows,
//!   timezone}`.
//! - `rollout` (`run`): `{window_secs, device_id_file, prefetch}`; reads the device id file.
//!
//! Modules: `raw` (what serde reads), `path` (field paths), `ctx` (shared checks),
//! `error`, then one per section: `registry`, `endpoints`, `auth`, `network` (resolve,
//! proxy), `store`, `images`, `timeouts`, `daemon`, `link`, `signatures` (reads the key
//! files), `rollout` (reads the device id); `secret` reads secret files. Raw serde
//! structs stay private; everything public is already validated.
//!
//! [`Secret`]: edgepull_core::secret::Secret

mod auth;
mod ctx;
mod daemon;
mod endpoints;
mod error;
mod images;
mod link;
mod network;
mod path;
mod raw;
mod registry;
mod rollout;
mod secret;
mod signatures;
mod store;
mod timeouts;

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};

use edgepull_core::egress;
use edgepull_core::hostport::HostPort;
use edgepull_core::oci::Platform;

pub(crate) use self::auth::AuthConfig;
use self::ctx::{Ctx, Limits, q};
pub(crate) use self::daemon::{HooksConfig, MetricsConfig, SyncConfig};
pub use self::endpoints::DataEndpointSource;
pub use self::error::{ConfigError, ConfigNote};
pub use self::images::ImageConfig;
pub(crate) use self::link::LinkConfig;
use self::path::FieldPath;
use self::raw::RawConfig;
pub use self::registry::RegistryConfig;
pub(crate) use self::rollout::RolloutConfig;
pub(crate) use self::secret::load_secret;
pub(crate) use self::signatures::SignaturesConfig;
pub use self::store::StoreConfig;
pub(crate) use self::timeouts::TimeoutConfig;

/// Where the config is read from when neither `--config` nor `EDGEPULL_CONFIG` says.
const DEFAULT_PATH: &str = "/etc/edgepull/config.json";
/// Environment variable naming the config file (`--config` wins over it).
const CONFIG_ENV: &str = "EDGEPULL_CONFIG";
/// Default `concurrency`.
const DEFAULT_CONCURRENCY: usize = 3;
/// `concurrency`: 1 to 16 blob downloads at once.
const CONCURRENCY: Limits = Limits {
    min: 1,
    max: 16,
    unit: "",
};
/// Largest config or endpoints file read.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

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
    pub(crate) concurrency: usize,
    /// Network timeouts.
    pub(crate) timeouts: TimeoutConfig,
    /// Daemon scheduling (`sync`).
    pub(crate) sync: SyncConfig,
    /// Commands run after an update (`hooks`).
    pub(crate) hooks: HooksConfig,
    /// Prometheus textfile output (`metrics`).
    pub(crate) metrics: MetricsConfig,
    /// Bandwidth cap, download windows and daily quota (`link`).
    pub(crate) link: LinkConfig,
    /// The keys images must be signed with (`signatures`); `None`: unsigned images are accepted.
    pub(crate) signatures: Option<SignaturesConfig>,
    /// Staged rollouts (`rollout`): window 0 (the default) adopts at once.
    pub(crate) rollout: RolloutConfig,
    /// Warnings found while validating.
    pub notes: Vec<ConfigNote>,
}

/// This device's platform when the config names none: the build's platform, refined by
/// `/proc/cpuinfo` (only ever lowered, e.g. an armv7 build on an ARMv6 Pi Zero → arm/v6).
/// Blocking: reads `/proc/cpuinfo`.
fn device_platform() -> Platform {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok();
    edgepull_core::oci::cpuinfo::default_platform(&Platform::host(), cpuinfo.as_deref())
}

/// The config path: `cli` (`--config`) if given, else `EDGEPULL_CONFIG` if set and
/// non-empty, else `/etc/edgepull/config.json`.
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
    /// Read and validate the config at `path` (blocking file IO; see the module doc).
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
    pub(crate) fn from_json(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let ctx = Ctx {
            file: path.to_path_buf(),
        };
        // Parse untyped first: refuse inline secrets with their own message (serde would
        // only say "unknown field"), and never echo them.
        let value: serde_json::Value = path::parse(text).map_err(|e| ctx.json(e))?;
        auth::refuse_inline_secrets(&ctx, &value)?;
        let raw: RawConfig = path::parse(text).map_err(|e| ctx.json(e))?;
        ctx.validate(raw)
    }

    /// Every host edgepull may connect to: login server, realm hosts, data endpoints,
    /// proxy; without duplicates, in that order ([`egress::allowlist`], as the egress
    /// policy computes it).
    pub(crate) fn allowlist(&self) -> Vec<HostPort> {
        let r = &self.registry;
        egress::allowlist(
            &r.login_server,
            &r.realm_hosts,
            &r.data_endpoints,
            r.proxy.as_ref(),
        )
    }

    /// Override `link.max_bytes_per_sec` (`edgepull pull --max-rate`).
    pub fn set_max_rate(&mut self, bytes_per_sec: u64) {
        self.link.max_bytes_per_sec = Some(bytes_per_sec);
    }

    /// The bandwidth cap in force (`link.max_bytes_per_sec` or `--max-rate`), for progress.
    pub fn max_rate(&self) -> Option<u64> {
        self.link.max_bytes_per_sec
    }

    /// The allowlist ([`egress::allowlist`]) as `host:port` lines for a firewall rule set
    /// (port always written, IPv6 in brackets).
    pub fn firewall_lines(&self) -> Vec<String> {
        self.allowlist().iter().map(HostPort::with_port).collect()
    }
}

/// The text of `path`, refused above [`MAX_FILE_BYTES`] (blocking file IO).
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

impl Ctx {
    /// The whole config: each section in turn, then the top-level fields.
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
        let concurrency = self
            .number(&root.key("concurrency"), raw.concurrency, CONCURRENCY)?
            .map_or(DEFAULT_CONCURRENCY, |n| {
                usize::try_from(n).unwrap_or(DEFAULT_CONCURRENCY)
            });
        let timeouts = self.timeouts(raw.timeouts)?;
        let sync = self.sync(raw.sync)?;
        let hooks = self.hooks(raw.hooks, &store)?;
        let metrics = self.metrics(raw.metrics, &store)?;
        let link = self.link(raw.link)?;
        let signatures = raw.signatures.map(|s| self.signatures(s)).transpose()?;
        let rollout = self.rollout(raw.rollout)?;
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
            link,
            signatures,
            rollout,
            notes,
        })
    }
}

#[cfg(test)]
mod tests;
