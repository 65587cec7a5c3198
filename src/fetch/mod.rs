//! Resumable, verified blob download.
//!
//! Owns: the loop that moves one blob from the registry into a store ingest — open at the
//! store's offset, check the server's answer to the `Range` (pure
//! [`resume_check`](edgepull_core::resume::resume_check), in `attempt`), stream into the
//! ingest (which bounds the size and hashes), retry by core's
//! [`RetryPolicy`] through the shared `retry::Retrier`, and commit. A body is read only
//! up to the descriptor's size: a server that sends more has the excess ignored (logged),
//! not the blob thrown away. A body slower than the configured minimum rate (pure
//! [`RateWatch`](edgepull_core::rate::RateWatch), in `attempt`) is abandoned as a
//! transient failure: checkpoint, back off, resume with `Range`. The store owns the
//! offset; this module never keeps bytes it has not written, never buffers a blob in
//! memory, never reads past the descriptor's size (beyond one chunk), never retries an
//! integrity failure more than once from zero, and never drops a store error unseen (a
//! failed checkpoint is returned when it stops the transfer, logged with its causes
//! otherwise).

mod attempt;
pub(crate) mod retry;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use self::attempt::Interruption;
use self::attempt::Next;
use self::retry::Retrier;
use crate::link::{Link, Paused};
use crate::progress::{FetchStats, Progress};
use crate::registry::client::{RegistryClient, RegistryError};
use crate::store::{Ingest, Store, StoreError};
use edgepull_core::hostport::HostPort;
use edgepull_core::oci::{Descriptor, Digest};
use edgepull_core::rate::MinRate;
use edgepull_core::resume::RangeError;
use edgepull_core::retry::RetryPolicy;

/// A signed data-endpoint link lives 20–30 min on ACR: reopen (at the current offset, with a
/// fresh redirect) before a single response has streamed this long.
const LINK_REFRESH_AFTER: Duration = Duration::from_secs(15 * 60);

/// Why a blob could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The registry side failed (after retries, when retryable).
    #[error("blob {digest}: giving up after {attempts} attempt(s)")]
    Registry {
        digest: Digest,
        attempts: u32,
        #[source]
        source: RegistryError,
    },
    /// The store failed, or the content failed verification.
    #[error("blob {digest}: could not store it")]
    Store {
        digest: Digest,
        #[source]
        source: StoreError,
    },
    /// The server's answer to a ranged request was unusable.
    #[error("blob {digest}: {host} answered the range request for offset {offset} unusably: {reason}")]
    Range {
        digest: Digest,
        host: HostPort,
        offset: u64,
        reason: RangeError,
    },
    /// The transfer kept being interrupted.
    #[error("blob {digest}: giving up after {attempts} attempt(s); last failure from {host}")]
    Exhausted {
        digest: Digest,
        attempts: u32,
        host: HostPort,
        #[source]
        last: Interruption,
    },
    /// The link closed (a download window ended or the daily quota ran out); the bytes so
    /// far are checkpointed and the download resumes there with a `Range` request.
    #[error("blob {digest}: download paused at byte {offset} (checkpointed): {paused}")]
    Paused {
        digest: Digest,
        offset: u64,
        paused: Paused,
    },
    /// Shutdown was requested; the bytes so far are checkpointed for a later resume.
    #[error("blob {digest}: download stopped for shutdown at byte {offset} (checkpointed; it resumes there)")]
    Cancelled { digest: Digest, offset: u64 },
}

impl FetchError {
    /// The exit-code category.
    pub(crate) fn category(&self) -> crate::exit::Category {
        use crate::exit::Category;
        match self {
            FetchError::Registry { source, .. } => source.category(),
            FetchError::Store { source, .. } => source.category(),
            // The reply does not match the descriptor (length, range): content integrity.
            FetchError::Range { .. } => Category::Integrity,
            FetchError::Exhausted { .. } | FetchError::Cancelled { .. } | FetchError::Paused { .. } => {
                Category::Transient
            }
        }
    }

    /// The registry error behind this failure, if one is.
    pub(crate) fn registry_error(&self) -> Option<&RegistryError> {
        match self {
            FetchError::Registry { source, .. } => Some(source),
            _ => None,
        }
    }

    /// Why the link stopped this fetch, if it did.
    pub(crate) fn paused(&self) -> Option<Paused> {
        match self {
            FetchError::Paused { paused, .. } => Some(*paused),
            _ => None,
        }
    }

    /// The fetch stopped because its cancellation token fired.
    pub(crate) fn is_cancelled(&self) -> bool {
        matches!(self, FetchError::Cancelled { .. })
    }
}

/// Everything a fetch needs.
pub(crate) struct Fetcher {
    /// The registry.
    pub(crate) registry: Arc<RegistryClient>,
    /// The store.
    pub(crate) store: Store,
    /// The retry planner.
    pub(crate) retry: RetryPolicy,
    /// Progress reporting.
    pub(crate) progress: Arc<dyn Progress>,
    /// Durable checkpoint every this many bytes (the store also checkpoints every 5 s).
    pub(crate) checkpoint_bytes: u64,
    /// The slowest a body may arrive before the attempt is abandoned; `None`: no minimum.
    pub(crate) min_rate: Option<MinRate>,
    /// Fired at shutdown: the transfer stops at the next chunk or wait, checkpoints what it
    /// has written, and returns [`FetchError::Cancelled`]. Never fired for a plain pull.
    pub(crate) cancel: CancellationToken,
    /// The bandwidth cap, windows and quota every download shares ([`Link`]).
    pub(crate) link: Arc<Link>,
}

impl Fetcher {
    /// Fetch `desc` of `repository` into the store (no-op when present).
    pub(crate) async fn fetch(&self, repository: &str, desc: &Descriptor) -> Result<FetchStats, FetchError> {
        let digest = desc.digest;
        let store_err = |source| FetchError::Store { digest, source };
        let mut stats = FetchStats::default();
        if self.store.has_blob(&digest, desc.size).await {
            stats.already_present = true;
            return Ok(stats);
        }
        let mut ingest = self.open_ingest(desc).await.map_err(store_err)?;
        stats.resumed_from = ingest.resumed_from();
        if stats.resumed_from > 0 {
            tracing::info!(%digest, offset = stats.resumed_from, size = desc.size, "resuming from checkpoint");
        }
        self.progress.start(desc, ingest.offset());
        let mut retry = Retrier::new(&self.retry, &self.cancel);
        let mut integrity_retry_left = true;
        let mut total_attempts: u32 = 0;
        // Whether any byte of this ingest came from an earlier response (resume or reconnect).
        let mut spliced = ingest.offset() > 0;
        loop {
            if self.cancel.is_cancelled() {
                return Err(self.cancelled(desc, &mut ingest).await);
            }
            if let Err(paused) = self.link.check() {
                return Err(self.paused(desc, &mut ingest, paused).await);
            }
            total_attempts += 1;
            let before = ingest.offset();
            let outcome = self
                .attempt(repository, desc, &mut ingest, &mut stats, &mut spliced)
                .await;
            let (host, cause) = match outcome {
                Ok(()) => {
                    // Complete: verify and make visible.
                    match ingest.commit().await {
                        Ok(_) => {
                            self.progress.finish(desc, &stats);
                            return Ok(stats);
                        }
                        Err(e) if e.is_integrity() && spliced && integrity_retry_left => {
                            tracing::warn!(%digest, error = %e, "digest mismatch after a resumed download; retrying once from zero");
                            integrity_retry_left = false;
                            stats.bytes_refetched += desc.size;
                            ingest = self.open_ingest(desc).await.map_err(store_err)?;
                            ingest.reset().await.map_err(store_err)?;
                            spliced = false;
                            self.progress.restart(desc);
                            continue;
                        }
                        Err(e) => {
                            self.progress.fail(desc);
                            return Err(store_err(e));
                        }
                    }
                }
                Err(Next::Pause(paused)) => {
                    return Err(self.paused(desc, &mut ingest, paused).await);
                }
                Err(Next::Fail(e)) if e.is_cancelled() => {
                    return Err(self.cancelled(desc, &mut ingest).await);
                }
                Err(Next::Fail(e)) => {
                    // Keep what is durable for the next run.
                    self.checkpoint_or_log(desc, &mut ingest).await;
                    self.progress.fail(desc);
                    return Err(e);
                }
                Err(Next::Retry { host, cause }) => (host, cause),
            };
            let progressed = ingest.offset() > before;
            let Some(delay) = retry.on_failure(&cause.failure(), progressed) else {
                self.checkpoint_or_log(desc, &mut ingest).await;
                self.progress.fail(desc);
                return Err(FetchError::Exhausted {
                    digest,
                    attempts: total_attempts,
                    host,
                    last: cause,
                });
            };
            // A store that cannot checkpoint will not take the next bytes either: stop here.
            if let Err(e) = ingest.checkpoint().await {
                self.progress.fail(desc);
                return Err(store_err(e));
            }
            stats.reconnects += 1;
            tracing::warn!(%digest, %host, offset = ingest.offset(), error = %crate::error_chain(&cause), retry_in = ?delay, "blob transfer interrupted; will resume");
            retry.wait(delay).await;
        }
    }

    /// Checkpoint after a cancellation and say where the transfer stopped.
    async fn cancelled(&self, desc: &Descriptor, ingest: &mut Ingest) -> FetchError {
        self.checkpoint_or_log(desc, ingest).await;
        self.progress.fail(desc);
        FetchError::Cancelled {
            digest: desc.digest,
            offset: ingest.checkpointed(),
        }
    }

    /// Checkpoint after the link closed and say where the transfer stopped.
    async fn paused(&self, desc: &Descriptor, ingest: &mut Ingest, paused: Paused) -> FetchError {
        self.checkpoint_or_log(desc, ingest).await;
        self.link.flush();
        self.progress.fail(desc);
        tracing::info!(digest = %desc.digest, offset = ingest.checkpointed(), %paused, "download paused");
        FetchError::Paused {
            digest: desc.digest,
            offset: ingest.checkpointed(),
            paused,
        }
    }

    /// Checkpoint a transfer that is ending anyway: a failure does not change how it ends
    /// (the next run resumes from the previous checkpoint), so it is logged, not returned.
    async fn checkpoint_or_log(&self, desc: &Descriptor, ingest: &mut Ingest) {
        if let Err(e) = ingest.checkpoint().await {
            tracing::warn!(digest = %desc.digest, error = %crate::error_chain(&e), "could not checkpoint; the download resumes from the previous checkpoint");
        }
    }

    async fn open_ingest(&self, desc: &Descriptor) -> Result<Ingest, StoreError> {
        let mut ingest = self
            .store
            .ingest(&desc.digest, desc.size, &desc.media_type)
            .await?;
        ingest.set_checkpoint_bytes(self.checkpoint_bytes);
        Ok(ingest)
    }
}
