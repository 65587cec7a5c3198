//! One pull: resolve a reference, choose the platform, fetch every blob, record the image.
//!
//! Owns: the order of a pull and its bookkeeping. The tag is resolved once and pinned to
//! its digest for the rest of the pull; the platform manifest is taken from the index by
//! the pure [`select`]; blobs are fetched concurrently (bounded) by the `Fetcher`; the
//! image becomes visible in `index.json` only after every blob is verified and stored.
//! Every descriptor size is judged by the pure [`check_blob_sizes`] (each at most
//! `store.max_blob_bytes`, the total within `u64`) before a plan exists, so no sum over a
//! plan can overflow and nothing is downloaded for a manifest that lies about sizes.
//! Manifest requests are retried by the same `Retrier` as blobs. Never talks to the
//! network except through the registry client, never reads the config (a puller is
//! built by [`crate::app`]), and never puts an index's platform strings into a message
//! unescaped.

use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt, stream};
use tokio_util::sync::CancellationToken;

use crate::fetch::retry::Retrier;
use crate::fetch::{FetchError, Fetcher};
use crate::link::{Link, Paused, Stop};
use crate::progress::FetchStats;
use crate::registry::client::{FetchedManifest, RegistryClient, RegistryError};
use crate::store::{Store, StoreError};
use crate::verify::{self, Signatures, VerifyError};
use edgepull_core::oci::manifest::{MAX_CONFIG_BYTES, OCI_MANIFEST};
use edgepull_core::oci::platform::{describe_offered, select};
use edgepull_core::oci::sizes::{SizeError, check_blob_sizes};
use edgepull_core::oci::{Descriptor, Digest, Document, Platform, Reference};
use edgepull_core::retry::RetryPolicy;
use edgepull_core::slots;

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
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
        source: edgepull_core::oci::manifest::ManifestError,
    },
    /// The index entry's size disagrees with the manifest fetched for it.
    #[error("{reference}: index says manifest {digest} has {expected} bytes but {actual} arrived")]
    ManifestSize {
        reference: String,
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    /// The link is closed (outside the download windows, or the daily quota is used up).
    #[error("{reference}: {paused}")]
    Paused { reference: String, paused: Paused },
    /// Shutdown was requested; partial downloads are checkpointed and resume later.
    #[error("{reference}: stopped for shutdown (partial downloads are kept and resume)")]
    Cancelled { reference: String },
    /// A descriptor's size is over `store.max_blob_bytes`, or the sizes overflow.
    #[error(
        "{reference}: manifest {digest} refused before downloading anything; the largest blob accepted is set by store.max_blob_bytes"
    )]
    BlobSize {
        reference: String,
        digest: Digest,
        #[source]
        source: Box<SizeError>,
    },
    /// No valid signature by a configured key covers the image; nothing was downloaded.
    #[error("{reference}: refused: signature {kind}", kind = source.refusal())]
    Signature {
        reference: String,
        #[source]
        source: Box<edgepull_core::signature::SignatureError>,
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
            PullError::Registry { source, .. } => source.category(),
            PullError::Fetch { source, .. } => source.category(),
            PullError::Store { source, .. } => source.category(),
            PullError::NoPlatform { .. } | PullError::NotAManifest { .. } => Category::Registry,
            PullError::Manifest { .. }
            | PullError::ManifestSize { .. }
            | PullError::BlobSize { .. }
            | PullError::ConfigTooLarge { .. } => Category::Integrity,
            PullError::Cancelled { .. } | PullError::Paused { .. } => Category::Transient,
            PullError::Signature { .. } => Category::Signature,
        }
    }

    /// The signature refusal, when that is why the pull failed.
    pub(crate) fn signature_refusal(&self) -> Option<&edgepull_core::signature::SignatureError> {
        match self {
            PullError::Signature { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }

    /// Why the link stopped this pull (a window closed, the quota ran out), if it did.
    pub(crate) fn paused(&self) -> Option<Paused> {
        match self {
            PullError::Paused { paused, .. } => Some(*paused),
            PullError::Fetch { source, .. } => source.paused(),
            _ => None,
        }
    }

    /// The pull stopped because its cancellation token fired.
    pub(crate) fn is_cancelled(&self) -> bool {
        matches!(self, PullError::Cancelled { .. })
    }

    /// The `Retry-After` the registry sent with the failure, if any.
    pub(crate) fn retry_after(&self) -> Option<std::time::Duration> {
        let registry = match self {
            PullError::Registry { source, .. } => Some(source.as_ref()),
            PullError::Fetch { source, .. } => source.registry_error(),
            _ => None,
        };
        registry.and_then(|e| e.failure().retry_after())
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

/// A configured puller: registry client, store, platform and fetcher. Built by
/// [`crate::app::puller`].
pub struct Puller {
    platform: Platform,
    concurrency: usize,
    max_blob_bytes: u64,
    fetcher: Fetcher,
    signatures: Option<Arc<Signatures>>,
}

impl Puller {
    /// Pull for `platform` with `fetcher`, `concurrency` blobs at once, refusing manifests
    /// that claim a blob over `max_blob_bytes`.
    pub(crate) fn new(fetcher: Fetcher, platform: Platform, concurrency: usize, max_blob_bytes: u64) -> Self {
        Self {
            platform,
            concurrency,
            max_blob_bytes,
            fetcher,
            signatures: None,
        }
    }

    /// Require a valid signature by one of these keys before a plan is accepted.
    pub(crate) fn set_signatures(&mut self, signatures: Option<Arc<Signatures>>) {
        self.signatures = signatures;
    }

    /// The registry client.
    pub fn registry(&self) -> &RegistryClient {
        &self.fetcher.registry
    }

    /// Replace the retry policy (tests, daemon).
    pub fn set_retry(&mut self, retry: RetryPolicy) {
        self.fetcher.retry = retry;
    }

    /// How many blobs download at once.
    pub fn set_concurrency(&mut self, n: usize) {
        self.concurrency = n.max(1);
    }

    /// Stop downloads and retry waits when `token` fires (daemon shutdown). A cancelled
    /// download checkpoints what it has and fails with a cancellation
    /// ([`PullError::is_cancelled`]); the next pull resumes it.
    pub(crate) fn set_cancel(&mut self, token: CancellationToken) {
        self.fetcher.cancel = token;
    }

    /// Share `link` (cap, windows, quota) with every download of this puller.
    pub(crate) fn set_link(&mut self, link: std::sync::Arc<Link>) {
        self.fetcher.link = link;
    }

    /// The link limiter this puller's downloads share.
    pub(crate) fn link(&self) -> &std::sync::Arc<Link> {
        &self.fetcher.link
    }

    fn store(&self) -> &Store {
        &self.fetcher.store
    }

    /// GET a manifest, retrying transient failures by the same policy as blobs.
    /// `name` is the image being pulled, for the error.
    async fn manifest_with_retry(
        &self,
        name: &str,
        repo: &str,
        reference: &str,
        expected: Option<&Digest>,
    ) -> Result<FetchedManifest, PullError> {
        let cancel = &self.fetcher.cancel;
        let mut retry = Retrier::new(&self.fetcher.retry, cancel);
        let paused = |paused| PullError::Paused {
            reference: name.to_string(),
            paused,
        };
        loop {
            self.fetcher.link.check().map_err(paused)?;
            let got = tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    return Err(PullError::Cancelled { reference: name.to_string() });
                }
                got = self.registry().get_manifest(repo, reference, expected) => got,
            };
            let e = match got {
                Ok(m) => {
                    // Manifests share the link's cap and quota with blobs.
                    return match self.fetcher.link.admit(m.bytes.len() as u64, cancel).await {
                        Ok(()) => Ok(m),
                        Err(Stop::Paused(p)) => Err(paused(p)),
                        Err(Stop::Cancelled) => Err(PullError::Cancelled {
                            reference: name.to_string(),
                        }),
                    };
                }
                Err(e) => e,
            };
            let Some(delay) = retry.on_failure(&e.failure(), false) else {
                return Err(PullError::Registry {
                    reference: name.to_string(),
                    source: Box::new(e),
                });
            };
            tracing::warn!(repository = repo, reference, error = %crate::error_chain(&e), retry_in = ?delay, "manifest request failed; retrying");
            retry.wait(delay).await;
        }
    }

    /// Pull `reference` into the store and record it under its name as given:
    /// `Puller::plan`, `Puller::download`, then [`Store::set_image`].
    pub async fn pull(&self, reference: &Reference) -> Result<PullReport, PullError> {
        let pulled = self.pull_once(reference).await;
        // The day's count is durable when the pull ends, however it ends.
        self.fetcher.link.persist().await;
        pulled
    }

    async fn pull_once(&self, reference: &Reference) -> Result<PullReport, PullError> {
        let plan = self.plan(reference, None).await?;
        let stats = self.download(&plan).await?;
        self.store()
            .set_image(&plan.name(), &plan.manifest, plan.index.as_ref())
            .await
            .map_err(|source| PullError::Store {
                reference: plan.name(),
                source,
            })?;
        Ok(plan.report(&stats))
    }

    /// Resolve `reference` (or, with `pin`, the digest a `HEAD` returned for it, so the
    /// plan cannot race a tag that moves again), choose the platform manifest, check its
    /// signature when signatures are required (`verify`), and list the blobs. Fetches only manifests (the index and the platform manifest), which
    /// are held in memory until [`Puller::download`].
    pub(crate) async fn plan(
        &self,
        reference: &Reference,
        pin: Option<Digest>,
    ) -> Result<PullPlan, PullError> {
        let name = reference.to_string();
        let repo = reference.repository();

        // Resolve once; everything below uses digests only.
        let expected = pin.or_else(|| reference.digest().copied());
        let target = match &pin {
            Some(d) => d.to_string(),
            None => reference.manifest_ref(),
        };
        let top = self
            .manifest_with_retry(&name, repo, &target, expected.as_ref())
            .await?;
        let doc = Document::parse(&top.bytes, &top.media_type).map_err(|source| PullError::Manifest {
            reference: name.clone(),
            digest: top.digest,
            source,
        })?;
        tracing::info!(image_ref = %name, digest = %top.digest, media_type = %top.media_type, "resolved");

        let (manifest_fetched, manifest, index, platform) = match doc {
            edgepull_core::oci::Document::Manifest(m) => (top, m, None, None),
            edgepull_core::oci::Document::Index(idx) => {
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
                    return Err(PullError::NoPlatform {
                        reference: name,
                        want: self.platform.to_string(),
                        accepted: self.platform.acceptable_variants().join(","),
                        available: describe_offered(&candidates),
                    });
                };
                let entry = &idx.manifests[pos];
                let chosen = candidates[pos].clone();
                tracing::info!(image_ref = %name, platform = %chosen, digest = %entry.digest, "platform chosen from index");
                let fetched = self
                    .manifest_with_retry(&name, repo, &entry.digest.to_string(), Some(&entry.digest))
                    .await?;
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
                    edgepull_core::oci::Document::Manifest(m) => m,
                    edgepull_core::oci::Document::Index(_) => {
                        return Err(PullError::NotAManifest {
                            reference: name,
                            digest: entry.digest,
                            platform: chosen.to_string(),
                        });
                    }
                };
                (fetched, m, Some(top), Some(chosen))
            }
        };
        // Distinct blobs, config first (a set: a hostile manifest may list many thousands).
        let mut seen = std::collections::BTreeSet::new();
        let blobs: Vec<Descriptor> = manifest
            .blobs()
            .filter(|d| seen.insert(d.digest))
            .cloned()
            .collect();
        // Every size judged (and summed with checked_add) before anything else; the total is
        // that of the distinct blobs, a part of a sum that fits.
        let total_bytes = check_blob_sizes(manifest.blobs(), self.max_blob_bytes)
            .and_then(|_| check_blob_sizes(&blobs, self.max_blob_bytes))
            .map_err(|source| PullError::BlobSize {
                reference: name.clone(),
                digest: manifest_fetched.digest,
                source: Box::new(source),
            })?;
        if manifest.config.size > MAX_CONFIG_BYTES {
            return Err(PullError::ConfigTooLarge {
                reference: name,
                digest: manifest.config.digest,
                size: manifest.config.size,
            });
        }

        // Signed updates: nothing is downloaded, let alone made current, unless a valid
        // signature covers the index or the platform manifest.
        if let Some(sigs) = &self.signatures {
            let candidates: Vec<Digest> = index
                .as_ref()
                .map(|i| i.digest)
                .into_iter()
                .chain(std::iter::once(manifest_fetched.digest))
                .collect();
            let fetch = verify::Fetch {
                registry: self.registry(),
                retry: &self.fetcher.retry,
                cancel: &self.fetcher.cancel,
                link: &self.fetcher.link,
            };
            verify::verify(&fetch, sigs, reference, &candidates)
                .await
                .map_err(|e| match e {
                    VerifyError::Refused(source) => PullError::Signature {
                        reference: name.clone(),
                        source: Box::new(source),
                    },
                    VerifyError::Registry(e) => PullError::Registry {
                        reference: name.clone(),
                        source: Box::new(e),
                    },
                    VerifyError::Cancelled => PullError::Cancelled {
                        reference: name.clone(),
                    },
                    VerifyError::Paused(paused) => PullError::Paused {
                        reference: name.clone(),
                        paused,
                    },
                })?;
        }

        let mut desc = manifest_fetched.descriptor();
        if desc.media_type.is_empty() {
            desc.media_type = OCI_MANIFEST.to_string();
        }
        if let Some(p) = &platform {
            desc.platform = Some(edgepull_core::oci::manifest::DescriptorPlatform {
                architecture: p.architecture.clone(),
                os: p.os.clone(),
                variant: (!p.variant.is_empty()).then(|| p.variant.clone()),
            });
        }
        Ok(PullPlan {
            reference: reference.clone(),
            manifest: desc,
            index: index.as_ref().map(|i| i.digest),
            platform,
            blobs,
            total_bytes,
            manifest_bytes: manifest_fetched.bytes,
            index_bytes: index.map(|i| i.bytes),
        })
    }

    /// Bytes `plan` still has to download: every blob not in the store, less what a
    /// partial download of it already holds durably, plus the manifests not stored yet.
    pub(crate) async fn missing(&self, plan: &PullPlan) -> Result<Missing, PullError> {
        let ingests = self.store().ingests().await.map_err(|source| PullError::Store {
            reference: plan.name(),
            source,
        })?;
        let mut out = Missing::default();
        for b in &plan.blobs {
            if self.store().has_blob(&b.digest, b.size).await {
                continue;
            }
            let held = ingests
                .iter()
                .find(|i| i.digest == b.digest && i.size == b.size)
                .map_or(0, |i| i.checkpoint.min(b.size));
            // Each term is at most its blob's size, and the sizes sum within u64 (checked in
            // `plan`); the manifests added below could still pass u64::MAX: saturate (a
            // saturated total never fits the disk budget).
            out.blobs += 1;
            out.bytes = out.bytes.saturating_add(b.size - held);
            out.resumable_bytes = out.resumable_bytes.saturating_add(held);
        }
        let manifests = std::iter::once((&plan.manifest.digest, plan.manifest_bytes.len()))
            .chain(plan.index.as_ref().zip(plan.index_bytes.as_ref().map(Vec::len)));
        for (d, len) in manifests {
            if !self.store().has_blob(d, len as u64).await {
                out.bytes = out.bytes.saturating_add(len as u64);
            }
        }
        Ok(out)
    }

    /// Fetch every blob of `plan` (bounded concurrency, resumable) and then store its
    /// manifests. The image is not recorded in `index.json`: the caller does that
    /// ([`Store::set_image`] or [`Store::switch_image`]), so it is complete before it is named.
    pub(crate) async fn download(&self, plan: &PullPlan) -> Result<Vec<FetchStats>, PullError> {
        let name = plan.name();
        let repo = plan.reference.repository();
        // `concurrency` slots; small blobs share one (edgepull_core::slots). The semaphore is
        // fair, so a large blob waiting for a whole slot is not overtaken by later ones.
        let pool = tokio::sync::Semaphore::new(slots::permits(self.concurrency) as usize);
        let fetches: Vec<_> = plan
            .blobs
            .iter()
            .map(|d| {
                let pool = &pool;
                async move {
                    let _slot = pool.acquire_many(slots::weight(d.size, self.concurrency)).await;
                    self.fetch_blob(plan, repo, d).await
                }
            })
            .collect();
        let stats: Result<Vec<FetchStats>, PullError> = stream::iter(fetches)
            .buffer_unordered(slots::max_in_flight(self.concurrency))
            .try_collect()
            .await;
        self.fetcher.progress.end();
        let stats = stats?;
        let store_err = |source| PullError::Store {
            reference: name.clone(),
            source,
        };
        // Manifests last: the image is complete before its manifest is stored.
        if let (Some(d), Some(bytes)) = (&plan.index, &plan.index_bytes) {
            self.store().put_blob(d, bytes).await.map_err(store_err)?;
        }
        self.store()
            .put_blob(&plan.manifest.digest, &plan.manifest_bytes)
            .await
            .map_err(store_err)?;
        Ok(stats)
    }
}

impl Puller {
    async fn fetch_blob(&self, plan: &PullPlan, repo: &str, d: &Descriptor) -> Result<FetchStats, PullError> {
        self.fetcher.fetch(repo, d).await.map_err(|source| {
            if source.is_cancelled() {
                PullError::Cancelled {
                    reference: plan.name(),
                }
            } else {
                PullError::Fetch {
                    reference: plan.name(),
                    source: Box::new(source),
                }
            }
        })
    }
}

/// What [`Puller::plan`] found: the manifests (in memory) and the blobs to fetch.
#[derive(Debug, Clone)]
pub(crate) struct PullPlan {
    /// The reference as given.
    pub(crate) reference: Reference,
    /// The platform manifest's descriptor, as it will be recorded.
    pub(crate) manifest: Descriptor,
    /// The index it was chosen from, if any.
    pub(crate) index: Option<Digest>,
    /// The platform chosen from the index, if any.
    pub(crate) platform: Option<Platform>,
    /// Distinct blobs (config first, then layers); their sizes passed [`check_blob_sizes`].
    pub(crate) blobs: Vec<Descriptor>,
    /// The blobs' total size (the sum that check computed; it fits in u64).
    total_bytes: u64,
    manifest_bytes: Vec<u8>,
    index_bytes: Option<Vec<u8>>,
}

impl PullPlan {
    /// The name recorded in `index.json` (the reference as given).
    pub(crate) fn name(&self) -> String {
        self.reference.to_string()
    }

    /// Total size of the blobs (checked when the plan was made: never wraps).
    pub(crate) fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// The report of a finished pull of this plan.
    pub(crate) fn report(&self, stats: &[FetchStats]) -> PullReport {
        PullReport {
            reference: self.reference.clone(),
            manifest: self.manifest.clone(),
            index: self.index,
            platform: self.platform.clone(),
            blobs: self.blobs.len(),
            blobs_present: stats.iter().filter(|s| s.already_present).count(),
            bytes_received: stats.iter().map(|s| s.bytes_received).sum(),
            bytes_refetched: stats.iter().map(|s| s.bytes_refetched).sum(),
            bytes_resumed: stats.iter().map(|s| s.resumed_from).sum(),
        }
    }
}

/// What a plan still has to download ([`Puller::missing`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Missing {
    /// Bytes to download.
    pub(crate) bytes: u64,
    /// Blobs not in the store.
    pub(crate) blobs: usize,
    /// Bytes of those blobs already held by partial downloads (resumed, not fetched).
    pub(crate) resumable_bytes: u64,
}
