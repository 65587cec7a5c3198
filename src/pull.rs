//! One pull: resolve a reference, choose the platform, fetch every blob, record the image.
//!
//! Owns: the order of a pull and its bookkeeping. The tag is resolved once and pinned to
//! its digest for the rest of the pull; the platform manifest is taken from the index by
//! the pure [`select`]; blobs are fetched concurrently (bounded) by the [`Fetcher`]; the
//! image becomes visible in `index.json` only after every blob is verified and stored.
//! Never talks to the network except through the registry client.

use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt, stream};

use crate::config::{AuthConfig, BlobSourceConfig, Config, ConfigError, load_secret};
use crate::fetch::policy::RetryPolicy;
use crate::fetch::{FetchError, FetchStats, Fetcher};
use crate::oci::manifest::{MAX_CONFIG_BYTES, OCI_MANIFEST};
use crate::oci::platform::select;
use crate::oci::{Descriptor, Digest, Document, Platform, Reference};
use crate::progress::Progress;
use crate::registry::auth::Credentials;
use crate::registry::client::{RegistryClient, RegistryError};
use crate::registry::http::{HttpError, HttpSettings, build_client};
use crate::registry::policy::{BlobSource, EgressPolicy, PolicyError};
use crate::store::{Store, StoreError};

/// Annotation holding the digest of the index an image was chosen from.
pub const SOURCE_INDEX_ANNOTATION: &str = "io.edgepull.source-index";

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// Configuration or credential files.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The HTTP client could not be built.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The configured endpoints make no valid egress policy.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// Registry request failed.
    #[error("{reference}: registry request failed")]
    Registry {
        reference: String,
        #[source]
        source: Box<RegistryError>,
    },
    /// A blob could not be fetched.
    #[error("{reference}: download failed")]
    Fetch {
        reference: String,
        #[source]
        source: Box<FetchError>,
    },
    /// The store failed.
    #[error("{reference}: store operation failed")]
    Store {
        reference: String,
        #[source]
        source: StoreError,
    },
    /// The index has no manifest for this device.
    #[error(
        "{reference}: the image index has no manifest for platform {want} (accepting variants {accepted}); it offers: {available}. Set \"platform\" in the config if the device can run another one"
    )]
    NoPlatform {
        reference: String,
        want: String,
        accepted: String,
        available: String,
    },
    /// An index entry pointed at something that is not an image manifest.
    #[error(
        "{reference}: index entry {digest} for {platform} is not an image manifest (nested indexes are not supported)"
    )]
    NotAManifest {
        reference: String,
        digest: Digest,
        platform: String,
    },
    /// A manifest document was refused.
    #[error("{reference}: manifest {digest} refused")]
    Manifest {
        reference: String,
        digest: Digest,
        #[source]
        source: crate::oci::manifest::ManifestError,
    },
    /// The index entry's size disagrees with the manifest fetched for it.
    #[error("{reference}: index says manifest {digest} has {expected} bytes but {actual} arrived")]
    ManifestSize {
        reference: String,
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    /// The config blob is too large to be a config.
    #[error("{reference}: config blob {digest} is {size} bytes, over the {MAX_CONFIG_BYTES}-byte limit")]
    ConfigTooLarge {
        reference: String,
        digest: Digest,
        size: u64,
    },
}

impl PullError {
    /// The exit-code category.
    pub fn category(&self) -> crate::exit::Category {
        use crate::exit::Category;
        match self {
            PullError::Config(_) | PullError::Http(_) | PullError::Policy(_) => Category::Config,
            PullError::Registry { source, .. } => source.category(),
            PullError::Fetch { source, .. } => source.category(),
            PullError::Store { source, .. } if source.is_integrity() => Category::Integrity,
            PullError::Store { .. } => Category::Store,
            PullError::NoPlatform { .. } | PullError::NotAManifest { .. } => Category::Registry,
            PullError::Manifest { .. }
            | PullError::ManifestSize { .. }
            | PullError::ConfigTooLarge { .. } => Category::Integrity,
        }
    }
}

/// The result of one pull.
#[derive(Debug, Clone)]
pub struct PullReport {
    /// The reference as given.
    pub reference: Reference,
    /// The platform manifest recorded in the layout.
    pub manifest: Descriptor,
    /// The index it was chosen from, if any.
    pub index: Option<Digest>,
    /// The platform chosen from the index, if any.
    pub platform: Option<Platform>,
    /// Distinct blobs in the image (config + layers).
    pub blobs: usize,
    /// Blobs that were already in the store.
    pub blobs_present: usize,
    /// Body bytes received from the network.
    pub bytes_received: u64,
    /// Bytes received again for offsets already held.
    pub bytes_refetched: u64,
    /// Bytes skipped thanks to checkpoints from an earlier run.
    pub bytes_resumed: u64,
}

/// Build the egress policy a config describes.
pub fn policy_from_config(cfg: &Config) -> Result<EgressPolicy, PolicyError> {
    let r = &cfg.registry;
    let source = match r.blob_source {
        BlobSourceConfig::DataEndpoint => BlobSource::DataEndpoint,
        BlobSourceConfig::Registry => BlobSource::Registry,
    };
    let policy = EgressPolicy::new(
        r.login_server.clone(),
        r.data_endpoints.clone(),
        r.realm_hosts.clone(),
        source,
    )?;
    Ok(match &r.proxy {
        Some(p) => policy.with_proxy(p.clone()),
        None => policy,
    })
}

/// Load the credentials a config names (secret files are read here, never logged).
pub fn credentials_from_config(cfg: &Config) -> Result<Credentials, ConfigError> {
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
pub fn one_shot_retry() -> RetryPolicy {
    RetryPolicy::new(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(60),
        Some(5),
    )
    .unwrap_or_default()
}

/// A configured puller: registry client, store, platform and fetcher.
pub struct Puller {
    registry: Arc<RegistryClient>,
    store: Store,
    platform: Platform,
    concurrency: usize,
    fetcher: Fetcher,
}

impl Puller {
    /// Build from a validated config and an open store.
    pub fn from_config(cfg: &Config, store: Store, progress: Arc<dyn Progress>) -> Result<Self, PullError> {
        let policy = Arc::new(policy_from_config(cfg)?);
        let settings = HttpSettings {
            ca_file: cfg.registry.ca_file.clone(),
            resolve: cfg.registry.resolve.clone(),
            proxy: cfg.registry.proxy.clone(),
            connect_timeout: cfg.timeouts.connect,
            idle_read_timeout: cfg.timeouts.idle_read,
        };
        let http = build_client(&settings, policy.clone())?;
        let registry = Arc::new(RegistryClient::new(http, policy, credentials_from_config(cfg)?));
        let fetcher = Fetcher {
            registry: registry.clone(),
            store: store.clone(),
            retry: one_shot_retry(),
            progress,
            checkpoint_bytes: cfg.store.checkpoint_bytes,
        };
        Ok(Self {
            registry,
            store,
            platform: cfg.platform.clone(),
            concurrency: cfg.concurrency,
            fetcher,
        })
    }

    /// The registry client.
    pub fn registry(&self) -> &RegistryClient {
        &self.registry
    }

    /// Replace the retry policy (tests, daemon).
    pub fn set_retry(&mut self, retry: RetryPolicy) {
        self.fetcher.retry = retry;
    }

    /// How many blobs download at once.
    pub fn set_concurrency(&mut self, n: usize) {
        self.concurrency = n.max(1);
    }

    /// GET a manifest, retrying transient failures by the same policy as blobs.
    async fn manifest_with_retry(
        &self,
        repo: &str,
        reference: &str,
        expected: Option<&Digest>,
    ) -> Result<crate::registry::client::FetchedManifest, RegistryError> {
        let mut attempt = 0;
        loop {
            match self.registry.get_manifest(repo, reference, expected).await {
                Ok(m) => return Ok(m),
                Err(e) => match self
                    .fetcher
                    .retry
                    .decide(attempt, &e.failure(), false, rand::random())
                {
                    crate::fetch::policy::Action::RetryAfter(delay) => {
                        tracing::warn!(repository = repo, reference, error = %crate::error_chain(&e), retry_in = ?delay, "manifest request failed; retrying");
                        attempt += 1;
                        tokio::time::sleep(delay).await;
                    }
                    crate::fetch::policy::Action::GiveUp => return Err(e),
                },
            }
        }
    }

    /// Pull `reference` into the store and record it under its name as given.
    pub async fn pull(&self, reference: &Reference) -> Result<PullReport, PullError> {
        let name = reference.to_string();
        let reg_err = |source: RegistryError| PullError::Registry {
            reference: name.clone(),
            source: Box::new(source),
        };
        let store_err = |source| PullError::Store {
            reference: name.clone(),
            source,
        };
        let repo = reference.repository();

        // Resolve once; everything below uses digests only.
        let top = self
            .manifest_with_retry(repo, &reference.manifest_ref(), reference.digest())
            .await
            .map_err(reg_err)?;
        let doc = Document::parse(&top.bytes, &top.media_type).map_err(|source| PullError::Manifest {
            reference: name.clone(),
            digest: top.digest,
            source,
        })?;
        tracing::info!(reference = %name, digest = %top.digest, media_type = %top.media_type, "resolved");

        let (manifest_fetched, manifest, index, platform) = match doc {
            crate::oci::Document::Manifest(m) => (top.clone(), m, None, None),
            crate::oci::Document::Index(idx) => {
                let candidates: Vec<Platform> = idx
                    .manifests
                    .iter()
                    .map(|d| {
                        d.platform
                            .as_ref()
                            .map(|p| p.to_platform())
                            .unwrap_or_else(|| Platform::normalized("", "", ""))
                    })
                    .collect();
                let Some(pos) = select(&self.platform, &candidates) else {
                    let available = candidates
                        .iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join(", ");
                    return Err(PullError::NoPlatform {
                        reference: name,
                        want: self.platform.to_string(),
                        accepted: self.platform.acceptable_variants().join(","),
                        available,
                    });
                };
                let entry = &idx.manifests[pos];
                let chosen = candidates[pos].clone();
                tracing::info!(reference = %name, platform = %chosen, digest = %entry.digest, "platform chosen from index");
                let fetched = self
                    .manifest_with_retry(repo, &entry.digest.to_string(), Some(&entry.digest))
                    .await
                    .map_err(reg_err)?;
                if fetched.bytes.len() as u64 != entry.size {
                    return Err(PullError::ManifestSize {
                        reference: name,
                        digest: entry.digest,
                        expected: entry.size,
                        actual: fetched.bytes.len() as u64,
                    });
                }
                let m = match Document::parse(&fetched.bytes, &fetched.media_type).map_err(|source| {
                    PullError::Manifest {
                        reference: name.clone(),
                        digest: entry.digest,
                        source,
                    }
                })? {
                    crate::oci::Document::Manifest(m) => m,
                    crate::oci::Document::Index(_) => {
                        return Err(PullError::NotAManifest {
                            reference: name,
                            digest: entry.digest,
                            platform: chosen.to_string(),
                        });
                    }
                };
                (fetched, m, Some(top.clone()), Some(chosen))
            }
        };
        if manifest.config.size > MAX_CONFIG_BYTES {
            return Err(PullError::ConfigTooLarge {
                reference: name,
                digest: manifest.config.digest,
                size: manifest.config.size,
            });
        }

        // Distinct blobs, config first.
        let mut blobs: Vec<Descriptor> = Vec::new();
        for d in manifest.blobs() {
            if !blobs.iter().any(|b| b.digest == d.digest) {
                blobs.push(d.clone());
            }
        }
        let stats: Vec<FetchStats> = stream::iter(blobs.iter())
            .map(|d| async move {
                self.fetcher
                    .fetch(repo, d)
                    .await
                    .map_err(|source| PullError::Fetch {
                        reference: reference.to_string(),
                        source: Box::new(source),
                    })
            })
            .buffer_unordered(self.concurrency.max(1))
            .try_collect()
            .await?;

        // Manifests last: the image is complete before it is named.
        if let Some(idx) = &index {
            self.store.put_blob(&idx.digest, &idx.bytes).map_err(store_err)?;
        }
        self.store
            .put_blob(&manifest_fetched.digest, &manifest_fetched.bytes)
            .map_err(store_err)?;
        let mut desc = manifest_fetched.descriptor();
        if desc.media_type.is_empty() {
            desc.media_type = OCI_MANIFEST.to_string();
        }
        if let Some(p) = &platform {
            desc.platform = Some(crate::oci::manifest::DescriptorPlatform {
                architecture: p.architecture.clone(),
                os: p.os.clone(),
                variant: (!p.variant.is_empty()).then(|| p.variant.clone()),
            });
        }
        self.store
            .set_image(&name, &desc, index.as_ref().map(|i| &i.digest))
            .map_err(store_err)?;

        Ok(PullReport {
            reference: reference.clone(),
            manifest: desc,
            index: index.map(|i| i.digest),
            platform,
            blobs: blobs.len(),
            blobs_present: stats.iter().filter(|s| s.already_present).count(),
            bytes_received: stats.iter().map(|s| s.bytes_received).sum(),
            bytes_refetched: stats.iter().map(|s| s.bytes_refetched).sum(),
            bytes_resumed: stats.iter().map(|s| s.resumed_from).sum(),
        })
    }
}
