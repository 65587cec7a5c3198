//! Resumable, verified blob download.
//!
//! Owns: the loop that moves one blob from the registry into a store ingest — open at the
//! store's offset, check the server's answer to the `Range` (pure [`range::resume_check`]),
//! stream into the ingest (which bounds the size and hashes), retry by the pure
//! [`policy::RetryPolicy`], and commit. The store owns the offset; this module never keeps
//! bytes it has not written, never buffers a blob in memory, and never retries an integrity
//! failure more than once from zero.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::progress::Progress;
use crate::registry::client::{RegistryClient, RegistryError, classify_transport};
use crate::store::{Ingest, Store, StoreError};
use edgepull_core::oci::Descriptor;
use edgepull_core::resume::{ResumeOutcome, resume_check};
use edgepull_core::retry::{Action, Failure, RetryPolicy};

/// A signed data-endpoint link lives 20–30 min on ACR: reopen (at the current offset, with a
/// fresh redirect) before a single response has streamed this long.
pub const LINK_REFRESH_AFTER: Duration = Duration::from_secs(15 * 60);

/// Why a blob could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The registry side failed (after retries, when retryable).
    #[error("blob {digest}: giving up after {attempts} attempt(s)")]
    Registry {
        digest: edgepull_core::oci::Digest,
        attempts: u32,
        #[source]
        source: RegistryError,
    },
    /// The store failed, or the content failed verification.
    #[error("blob {digest}: could not store it")]
    Store {
        digest: edgepull_core::oci::Digest,
        #[source]
        source: StoreError,
    },
    /// The server's answer to a ranged request was unusable.
    #[error("blob {digest}: {host} answered the range request for offset {offset} unusably: {reason}")]
    Range {
        digest: edgepull_core::oci::Digest,
        host: String,
        offset: u64,
        reason: String,
    },
    /// The connection kept failing.
    #[error("blob {digest}: giving up after {attempts} attempt(s); last failure: {last} from {host}")]
    Exhausted {
        digest: edgepull_core::oci::Digest,
        attempts: u32,
        host: String,
        last: String,
    },
    /// Shutdown was requested; the bytes so far are checkpointed for a later resume.
    #[error("blob {digest}: download stopped for shutdown at byte {offset} (checkpointed; it resumes there)")]
    Cancelled {
        digest: edgepull_core::oci::Digest,
        offset: u64,
    },
}

impl FetchError {
    /// The exit-code category.
    pub fn category(&self) -> crate::exit::Category {
        use crate::exit::Category;
        match self {
            FetchError::Registry { source, .. } => source.category(),
            FetchError::Store { source, .. } => source.category(),
            // The reply does not match the descriptor (length, range): content integrity.
            FetchError::Range { .. } => Category::Integrity,
            FetchError::Exhausted { .. } | FetchError::Cancelled { .. } => Category::Transient,
        }
    }

    /// The fetch stopped because its cancellation token fired.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, FetchError::Cancelled { .. })
    }
}

/// What one blob fetch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchStats {
    /// The blob was already in the store: nothing was requested.
    pub already_present: bool,
    /// Offset the ingest had when this run opened it (a durable checkpoint from an earlier run).
    pub resumed_from: u64,
    /// Body bytes received from the network in this run.
    pub bytes_received: u64,
    /// Of those, bytes received for offsets already held (server ignored Range, restart).
    pub bytes_refetched: u64,
    /// Ranged reopens after a dropped or stalled connection.
    pub reconnects: u32,
    /// Restarts from zero (server ignored Range, integrity retry).
    pub restarts: u32,
}

/// Everything a fetch needs.
pub struct Fetcher {
    /// The registry.
    pub registry: Arc<RegistryClient>,
    /// The store.
    pub store: Store,
    /// The retry planner.
    pub retry: RetryPolicy,
    /// Progress reporting.
    pub progress: Arc<dyn Progress>,
    /// Durable checkpoint every this many bytes (the store also checkpoints every 5 s).
    pub checkpoint_bytes: u64,
    /// Fired at shutdown: the transfer stops at the next chunk or wait, checkpoints what it
    /// has written, and returns [`FetchError::Cancelled`]. Never fired for a plain pull.
    pub cancel: CancellationToken,
}

/// What to do after a failed attempt.
enum Next {
    Retry(Failure, String, String),
    Fail(FetchError),
}

impl Fetcher {
    /// Fetch `desc` of `repository` into the store (no-op when present).
    pub async fn fetch(&self, repository: &str, desc: &Descriptor) -> Result<FetchStats, FetchError> {
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
        let mut integrity_retry_left = true;
        let mut attempt: u32 = 0;
        let mut total_attempts: u32 = 0;
        // Whether any byte of this ingest came from an earlier response (resume or reconnect).
        let mut spliced = ingest.offset() > 0;
        loop {
            if self.cancel.is_cancelled() {
                return Err(self.cancelled(desc, &mut ingest).await);
            }
            total_attempts += 1;
            let before = ingest.offset();
            let outcome = self
                .attempt(repository, desc, &mut ingest, &mut stats, &mut spliced)
                .await;
            let next = match outcome {
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
                            stats.restarts += 1;
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
                Err(next) => next,
            };
            match next {
                Next::Fail(e) if e.is_cancelled() => {
                    return Err(self.cancelled(desc, &mut ingest).await);
                }
                Next::Fail(e) => {
                    // Keep what is durable for the next run.
                    let _ = ingest.checkpoint().await;
                    self.progress.fail(desc);
                    return Err(e);
                }
                Next::Retry(failure, host, reason) => {
                    let progressed = ingest.offset() > before;
                    if progressed {
                        attempt = 0;
                    }
                    let jitter: f64 = rand::random();
                    match self.retry.decide(attempt, &failure, progressed, jitter) {
                        Action::RetryAfter(delay) => {
                            let _ = ingest.checkpoint().await;
                            attempt += 1;
                            stats.reconnects += 1;
                            tracing::warn!(%digest, %host, offset = ingest.offset(), error = %reason, retry_in = ?delay, "blob transfer interrupted; will resume");
                            tokio::select! {
                                () = self.cancel.cancelled() => {}
                                () = tokio::time::sleep(delay) => {}
                            }
                        }
                        Action::GiveUp => {
                            let _ = ingest.checkpoint().await;
                            self.progress.fail(desc);
                            return Err(FetchError::Exhausted {
                                digest,
                                attempts: total_attempts,
                                host,
                                last: reason,
                            });
                        }
                    }
                }
            }
        }
    }

    /// Checkpoint after a cancellation and say where the transfer stopped.
    async fn cancelled(&self, desc: &Descriptor, ingest: &mut Ingest) -> FetchError {
        if let Err(e) = ingest.checkpoint().await {
            tracing::warn!(digest = %desc.digest, error = %crate::error_chain(&e), "could not checkpoint at shutdown; the download resumes from the previous checkpoint");
        }
        self.progress.fail(desc);
        FetchError::Cancelled {
            digest: desc.digest,
            offset: ingest.checkpointed(),
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

    /// One request: open at the ingest's offset and stream until complete or failed.
    async fn attempt(
        &self,
        repository: &str,
        desc: &Descriptor,
        ingest: &mut Ingest,
        stats: &mut FetchStats,
        spliced: &mut bool,
    ) -> Result<(), Next> {
        let digest = desc.digest;
        let offset = ingest.offset();
        if offset == desc.size {
            return Ok(());
        }
        let opened = tokio::select! {
            biased;
            () = self.cancel.cancelled() => {
                return Err(Next::Fail(FetchError::Cancelled { digest, offset }));
            }
            r = self.registry.open_blob(repository, desc, offset) => r,
        };
        let blob = match opened {
            Ok(b) => b,
            Err(e) => {
                let failure = e.failure();
                if matches!(failure, Failure::Fatal | Failure::Integrity) {
                    return Err(Next::Fail(FetchError::Registry {
                        digest,
                        attempts: 1,
                        source: e,
                    }));
                }
                let host = match &e {
                    RegistryError::Transport { host, .. } | RegistryError::Status { host, .. } => {
                        host.to_string()
                    }
                    _ => self.registry.login().to_string(),
                };
                let reason = crate::error_chain(&e);
                return Err(Next::Retry(failure, host, reason));
            }
        };
        let host = blob.from.to_string();
        let requested = offset;
        let outcome = resume_check(
            requested,
            desc.size,
            blob.status,
            blob.content_range.as_deref(),
            blob.content_length,
        );
        match outcome {
            ResumeOutcome::Continue => {}
            ResumeOutcome::AlreadyComplete => return Ok(()),
            ResumeOutcome::ServerIgnoredRange => {
                // The body starts at byte 0: restart the ingest so the hash covers exactly the stored bytes.
                tracing::warn!(%digest, %host, offset, "server ignored the Range request; restarting the blob from zero");
                ingest
                    .reset()
                    .await
                    .map_err(|source| Next::Fail(FetchError::Store { digest, source }))?;
                stats.restarts += 1;
                stats.bytes_refetched += offset;
                *spliced = false;
                self.progress.restart(desc);
            }
            ResumeOutcome::Restart(reason) => {
                tracing::warn!(%digest, %host, offset, %reason, "restarting the blob from zero");
                ingest
                    .reset()
                    .await
                    .map_err(|source| Next::Fail(FetchError::Store { digest, source }))?;
                stats.restarts += 1;
                *spliced = false;
                self.progress.restart(desc);
                return Err(Next::Retry(Failure::Reset, host, reason.to_string()));
            }
            ResumeOutcome::Invalid(reason) => {
                return Err(Next::Fail(FetchError::Range {
                    digest,
                    host,
                    offset,
                    reason: reason.to_string(),
                }));
            }
        }
        if ingest.offset() > 0 {
            *spliced = true;
        }
        let started = Instant::now();
        let mut body = blob.response.bytes_stream();
        loop {
            let next = tokio::select! {
                biased;
                () = self.cancel.cancelled() => {
                    return Err(Next::Fail(FetchError::Cancelled { digest, offset: ingest.offset() }));
                }
                next = body.next() => next,
            };
            let Some(chunk) = next else { break };
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    let e = e.without_url();
                    let failure = classify_transport(&e);
                    let reason = format!("{} ({e})", failure_name(&failure));
                    return Err(Next::Retry(failure, host, reason));
                }
            };
            stats.bytes_received += chunk.len() as u64;
            if let Err(e) = ingest.write(&chunk).await {
                // Too many bytes (or a disk error): abort this transfer at once.
                if e.is_integrity() {
                    let _ = ingest.reset().await;
                }
                return Err(Next::Fail(FetchError::Store { digest, source: e }));
            }
            self.progress.advance(desc, ingest.offset());
            if started.elapsed() > LINK_REFRESH_AFTER && ingest.offset() < desc.size {
                // Reopen for a fresh signed link before the current one expires.
                return Err(Next::Retry(
                    Failure::Reset,
                    host,
                    "refreshing the signed download link".into(),
                ));
            }
        }
        if ingest.offset() < desc.size {
            return Err(Next::Retry(
                Failure::ShortBody,
                host,
                format!("response ended at byte {} of {}", ingest.offset(), desc.size),
            ));
        }
        Ok(())
    }
}

fn failure_name(f: &Failure) -> &'static str {
    match f {
        Failure::Connect => "connect failed",
        Failure::Stall => "no data within the idle timeout",
        _ => "connection lost",
    }
}
