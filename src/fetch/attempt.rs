//! One attempt at a blob: open it at the ingest's offset and stream until complete or
//! interrupted.
//!
//! Owns: applying the pure [`resume_check`] to the server's answer (continue, restart
//! from zero, refuse), streaming into the ingest, the signed-link refresh, and telling
//! the retry loop in [`super::Fetcher::fetch`] whether a failure is worth another attempt
//! ([`Next`]). Must never decide how long to wait or whether to give up (that is the loop's
//! [`Retrier`](super::retry::Retrier)), and never write a byte the ingest did not ask for.

use std::time::Instant;

use super::{FetchError, Fetcher, LINK_REFRESH_AFTER};
use crate::link::{Paused, Stop};
use crate::progress::FetchStats;
use crate::registry::client::RegistryError;
use crate::store::Ingest;
use edgepull_core::hostport::HostPort;
use edgepull_core::oci::Descriptor;
use edgepull_core::resume::{RangeError, ResumeOutcome, resume_check};
use edgepull_core::retry::Failure;

/// Why an attempt stopped before the blob was complete, when another may succeed.
#[derive(Debug, thiserror::Error)]
pub enum Interruption {
    /// Opening the blob or reading its body failed (connect, reset, stall, 5xx, …).
    #[error(transparent)]
    Registry(RegistryError),
    /// The server's answer to the range means starting over from byte 0.
    #[error(transparent)]
    Restart(RangeError),
    /// The signed download link was about to expire: reopen for a fresh one.
    #[error("refreshing the signed download link")]
    LinkRefresh,
    /// The body ended before the blob did.
    #[error("response ended at byte {offset} of {size}")]
    ShortBody { offset: u64, size: u64 },
}

impl Interruption {
    /// The retry planner's view of this interruption.
    pub(crate) fn failure(&self) -> Failure {
        match self {
            Interruption::Registry(e) => e.failure(),
            Interruption::Restart(_) | Interruption::LinkRefresh => Failure::Reset,
            Interruption::ShortBody { .. } => Failure::ShortBody,
        }
    }
}

/// What to do after a failed attempt.
pub(super) enum Next {
    /// The link closed (window or quota): checkpoint and stop.
    Pause(Paused),
    /// Try again (if the retry policy agrees): `host` sent or refused the bytes.
    Retry { host: HostPort, cause: Interruption },
    /// Stop with this error.
    Fail(FetchError),
}

impl Fetcher {
    /// One request: open at the ingest's offset and stream until complete or failed.
    pub(super) async fn attempt(
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
        let mut blob = match opened {
            Ok(b) => b,
            Err(e) => {
                if matches!(e.failure(), Failure::Fatal | Failure::Integrity) {
                    return Err(Next::Fail(FetchError::Registry {
                        digest,
                        attempts: 1,
                        source: e,
                    }));
                }
                let host = e.host().unwrap_or(self.registry.login()).clone();
                return Err(Next::Retry {
                    host,
                    cause: Interruption::Registry(e),
                });
            }
        };
        let host = blob.from.clone();
        let store_fail = |source| Next::Fail(FetchError::Store { digest, source });
        match resume_check(
            offset,
            desc.size,
            blob.status,
            blob.content_range.as_deref(),
            blob.content_length,
        ) {
            ResumeOutcome::Continue => {}
            ResumeOutcome::AlreadyComplete => return Ok(()),
            ResumeOutcome::ServerIgnoredRange => {
                // The body starts at byte 0: restart the ingest so the hash covers exactly the stored bytes.
                tracing::warn!(%digest, %host, offset, "server ignored the Range request; restarting the blob from zero");
                ingest.reset().await.map_err(store_fail)?;
                stats.bytes_refetched += offset;
                *spliced = false;
                self.progress.restart(desc);
            }
            ResumeOutcome::Restart(reason) => {
                tracing::warn!(%digest, %host, offset, %reason, "restarting the blob from zero");
                ingest.reset().await.map_err(store_fail)?;
                *spliced = false;
                self.progress.restart(desc);
                return Err(Next::Retry {
                    host,
                    cause: Interruption::Restart(reason),
                });
            }
            ResumeOutcome::Invalid(reason) => {
                return Err(Next::Fail(FetchError::Range {
                    digest,
                    host,
                    offset,
                    reason,
                }));
            }
        }
        if ingest.offset() > 0 {
            *spliced = true;
        }
        let started = Instant::now();
        loop {
            let next = tokio::select! {
                biased;
                () = self.cancel.cancelled() => {
                    return Err(Next::Fail(FetchError::Cancelled { digest, offset: ingest.offset() }));
                }
                paused = self.link.closed() => return Err(Next::Pause(paused)),
                next = blob.chunk() => next,
            };
            let chunk = match next {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    return Err(Next::Retry {
                        host,
                        cause: Interruption::Registry(e),
                    });
                }
            };
            stats.bytes_received += chunk.len() as u64;
            if let Err(e) = ingest.write(&chunk).await {
                // Too many bytes (or a disk error): abort this transfer at once.
                if e.is_integrity()
                    && let Err(reset) = ingest.reset().await
                {
                    tracing::warn!(%digest, error = %crate::error_chain(&reset), "could not reset the ingest after refusing its content");
                }
                return Err(store_fail(e));
            }
            self.progress.advance(desc, ingest.offset());
            // The link's cap: wait here, between reads and never inside one, so this wait is
            // never taken for a slow server. A closed link (window, quota) stops the transfer.
            match self.link.admit(chunk.len() as u64, &self.cancel).await {
                Ok(()) => {}
                Err(Stop::Paused(p)) => return Err(Next::Pause(p)),
                Err(Stop::Cancelled) => {
                    return Err(Next::Fail(FetchError::Cancelled {
                        digest,
                        offset: ingest.offset(),
                    }));
                }
            }
            if started.elapsed() > LINK_REFRESH_AFTER && ingest.offset() < desc.size {
                // Reopen for a fresh signed link before the current one expires.
                return Err(Next::Retry {
                    host,
                    cause: Interruption::LinkRefresh,
                });
            }
        }
        if ingest.offset() < desc.size {
            return Err(Next::Retry {
                host,
                cause: Interruption::ShortBody {
                    offset: ingest.offset(),
                    size: desc.size,
                },
            });
        }
        Ok(())
    }
}
