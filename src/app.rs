//! The composition root: from a validated [`Config`], the egress policy, the credentials,
//! the HTTP client, the registry client and the [`Puller`] over them.
//!
//! Owns: the wiring (which policy the client and its resolver enforce, which credentials
//! the authenticator holds, the one-shot pull's retry policy, concurrency, checkpoint
//! size, minimum transfer rate, blob size limit and signature keys) and the one place
//! set-up errors come from ([`SetupError`]).
//!
//! Blocking reads: building reads the secret files (`config::load_secret`) and the CA file
//! (`registry::http::build_client`). Async callers use [`puller`], which does those reads in
//! `tokio::task::spawn_blocking`, never on an async worker; [`puller_blocking`] does them
//! on the calling thread, for callers outside async code (tests, tools).
//!
//! Must never: be used by the modules it wires (registry, fetch, pull know nothing of the
//! config), log a secret, or read a file on an async worker thread.

use std::sync::Arc;

use crate::config::{AuthConfig, Config, ConfigError, load_secret};
use crate::exit::Category;
use crate::fetch::Fetcher;
use crate::progress::Progress;
use crate::pull::Puller;
use crate::registry::auth::Credentials;
use crate::registry::client::RegistryClient;
use crate::registry::http::{HttpError, HttpSettings, build_client};
use crate::store::Store;
use crate::verify::Signatures;
use edgepull_core::egress::{EgressPolicy, PolicyError};
use edgepull_core::retry::RetryPolicy;

/// Why a puller could not be built from a config.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// Configuration or credential files.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The HTTP client could not be built.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The configured endpoints make no valid egress policy.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The runtime shut down before the blocking set-up task ran.
    #[error("set-up was cancelled by the runtime shutting down")]
    Cancelled {
        #[source]
        source: tokio::task::JoinError,
    },
}

impl SetupError {
    /// The exit-code category.
    pub fn category(&self) -> Category {
        match self {
            SetupError::Config(_) | SetupError::Http(_) | SetupError::Policy(_) => Category::Config,
            SetupError::Cancelled { .. } => Category::Transient,
        }
    }
}

/// A puller for `cfg` over `store`, reporting to `progress`. The secret and CA files are
/// read on tokio's blocking pool.
pub async fn puller(cfg: &Config, store: Store, progress: Arc<dyn Progress>) -> Result<Puller, SetupError> {
    let owned = cfg.clone();
    let registry = match tokio::task::spawn_blocking(move || registry_client(&owned)).await {
        Ok(built) => built?,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(source) => return Err(SetupError::Cancelled { source }),
    };
    let link = crate::link::Link::open(&cfg.link, store.root()).await;
    let mut puller = assemble(cfg, registry, store, progress);
    puller.set_link(link);
    Ok(puller)
}

/// [`puller`] for callers outside async code: the files are read on this thread.
pub fn puller_blocking(
    cfg: &Config,
    store: Store,
    progress: Arc<dyn Progress>,
) -> Result<Puller, SetupError> {
    let registry = registry_client(cfg)?;
    let link = crate::link::Link::open_blocking(&cfg.link, store.root());
    let mut puller = assemble(cfg, registry, store, progress);
    puller.set_link(link);
    Ok(puller)
}

/// The registry client `cfg` describes. Blocking: reads the secret and CA files.
fn registry_client(cfg: &Config) -> Result<RegistryClient, SetupError> {
    let policy = Arc::new(policy_from_config(cfg)?);
    let settings = HttpSettings {
        ca_file: cfg.registry.ca_file.clone(),
        resolve: cfg.registry.resolve.clone(),
        connect_timeout: cfg.timeouts.connect,
        idle_read_timeout: cfg.timeouts.idle_read,
    };
    let http = build_client(&settings, policy.clone())?;
    Ok(RegistryClient::new(http, policy, credentials_from_config(cfg)?))
}

/// The puller over `registry`, with the one-shot retry policy (the daemon sets its own).
fn assemble(cfg: &Config, registry: RegistryClient, store: Store, progress: Arc<dyn Progress>) -> Puller {
    let fetcher = Fetcher {
        registry: Arc::new(registry),
        store,
        retry: one_shot_retry(),
        progress,
        checkpoint_bytes: cfg.store.checkpoint_bytes,
        min_rate: cfg.timeouts.min_rate,
        cancel: Default::default(),
        link: crate::link::Link::unlimited(),
    };
    let mut puller = Puller::new(
        fetcher,
        cfg.platform.clone(),
        cfg.concurrency,
        cfg.store.max_blob_bytes,
    );
    let signatures = cfg
        .signatures
        .as_ref()
        .map(|s| Arc::new(Signatures::new(s, &cfg.images)));
    puller.set_signatures(signatures);
    puller
}

/// The egress policy a config describes.
fn policy_from_config(cfg: &Config) -> Result<EgressPolicy, PolicyError> {
    let r = &cfg.registry;
    let policy = EgressPolicy::new(
        r.login_server.clone(),
        r.data_endpoints.clone(),
        r.realm_hosts.clone(),
        r.blob_source,
    )?;
    Ok(match &r.proxy {
        Some(p) => policy.with_proxy(p.clone()),
        None => policy,
    })
}

/// The credentials a config names. Blocking: secret files are read here (never logged).
fn credentials_from_config(cfg: &Config) -> Result<Credentials, ConfigError> {
    Ok(match &cfg.registry.auth {
        AuthConfig::Anonymous => Credentials::Anonymous,
        AuthConfig::Basic {
            username,
            password_file,
        } => Credentials::Basic {
            username: username.clone(),
            password: load_secret(password_file)?,
        },
        AuthConfig::RefreshToken { refresh_token_file } => {
            Credentials::RefreshToken(load_secret(refresh_token_file)?)
        }
    })
}

/// Retries for a one-shot pull: 5 attempts, 1 s doubling to at most 60 s (about 15 s of
/// waiting in all unless the registry asks for more with `Retry-After`). The daemon retries
/// forever with its own policy.
fn one_shot_retry() -> RetryPolicy {
    RetryPolicy::new(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(60),
        Some(5),
    )
    .unwrap_or_default()
}
