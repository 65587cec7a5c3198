//! One attempt at a blob: open it at the ingest's offset and stream until complete or
//! interrupted.
//!
//! Owns: applying the pure [`resume_check`] to the server's answer (continue, restart
//! from zero, refuse), streaming into the ingest up to the descriptor's size and no
//! further (excess bytes are logged and left unread), the minimum-rate watch (pure
//! [`RateWatch`], checked on every tick of its interval, so a body that stops arriving is
//! judged too), the signed-link refresh, and telling the retry loop in
//! [`super::Fetcher::fetch`] whether a failure is worth another attempt ([`Next`]). Must
//! never decide how long to wait or whether to give up (that is the loop's
//! [`Retrier`](super::retry::Retrier)), and never write a byte the ingest did not ask for.

use std::time::{Duration, Instant};

use tokio::time::{Interval, MissedTickBehavior};

use super::{FetchError, Fetcher, LINK_REFRESH_AFTER};
use crate::link::{Paused, Stop};
use crate::progress::FetchStats;
use crate::registry::client::RegistryError;
use crate::store::Ingest;
use edgepull_core::hostport::HostPort;
use edgepull_core::oci::Descriptor;
use edgepull_core::rate::{RateWatch, Verdict};
use edgepull_core::resume::{RangeError, ResumeOutcome, announced_excess, resume_check};
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
    /// The body arrived slower than the configured minimum.
    #[error(
        "the body arrived too slowly: {received} bytes in the last {} s, fewer than the {required} bytes a minimum of {bytes_per_sec} bytes/s needs (timeouts.min_bytes_per_sec over timeouts.min_rate_window_secs)",
        window.as_secs_f64()
    )]
    TooSlow {
        received: u64,
        required: u64,
        bytes_per_sec: u64,
        window: Duration,
    },
}

impl Interruption {
    /// The retry planner's view of this interruption.
    pub(crate) fn failure(&self) -> Failure {
        match self {
            Interruption::Registry(e) => e.failure(),
            Interruption::Restart(_) | Interruption::LinkRefresh => Failure::Reset,
            Interruption::ShortBody { .. } => Failure::ShortBody,
            Interruption::TooSlow { .. } => Failure::TooSlow,
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
        // This response carries the blob from the ingest's offset to its end; a longer one
        // is read only that far.
        let announced = announced_excess(desc.size.saturating_sub(ingest.offset()), blob.content_length);
        let started = Instant::now();
        let body_start = tokio::time::Instant::now();
        // Time this attempt spent waiting for the link's cap (excluded from the rate watch).
        let mut capped = Duration::ZERO;
        let mut watch = self.min_rate.map(|rule| RateWatch::new(rule, Duration::ZERO));
        let mut ticks = watch.as_ref().map(|w| {
            let every = w.check_every();
            let mut ticks = tokio::time::interval_at(body_start + every, every);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            ticks
        });
        // One watch on the link for the whole body (not a fresh timer per chunk).
        let closed = self.link.closed();
        tokio::pin!(closed);
        loop {
            if ingest.offset() == desc.size && announced > 0 {
                warn_excess(desc, &host, announced);
                break;
            }
            let next = tokio::select! {
                biased;
                () = self.cancel.cancelled() => {
                    return Err(Next::Fail(FetchError::Cancelled { digest, offset: ingest.offset() }));
                }
                () = tick(&mut ticks) => {
                    if let Some(w) = watch.as_mut()
                        && let Verdict::TooSlow { received, required, window } = w.verdict(body_start.elapsed().saturating_sub(capped))
                    {
                        let bytes_per_sec = self.min_rate.map_or(0, |r| r.bytes_per_sec());
                        return Err(Next::Retry {
                            host,
                            cause: Interruption::TooSlow { received, required, bytes_per_sec, window },
                        });
                    }
                    continue;
                }
                paused = &mut closed => return Err(Next::Pause(paused)),
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
            if let Some(w) = watch.as_mut() {
                w.record(body_start.elapsed().saturating_sub(capped), chunk.len() as u64);
            }
            // Keep the bytes the blob still needs; anything after them is not the blob's.
            let room = desc.size.saturating_sub(ingest.offset());
            let excess = (chunk.len() as u64).saturating_sub(room);
            let chunk = if excess > 0 {
                // `room < chunk.len()`, so it fits a usize.
                chunk.slice(..usize::try_from(room).unwrap_or(0))
            } else {
                chunk
            };
            let len = chunk.len() as u64;
            if let Err(e) = ingest.write_bytes(chunk).await {
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
            let admit_start = tokio::time::Instant::now();
            let admitted = self.link.admit(len, &self.cancel).await;
            // Time spent waiting for the cap is not the server's: the rate watch skips it.
            capped += admit_start.elapsed();
            match admitted {
                Ok(()) => {}
                Err(Stop::Paused(p)) => return Err(Next::Pause(p)),
                Err(Stop::Cancelled) => {
                    return Err(Next::Fail(FetchError::Cancelled {
                        digest,
                        offset: ingest.offset(),
                    }));
                }
            }
            if excess > 0 {
                warn_excess(desc, &host, excess.max(announced));
                break;
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

/// The next tick of the rate watch's interval; never, without a watch.
async fn tick(ticks: &mut Option<Interval>) {
    match ticks {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// A body longer than the blob: the blob's bytes are kept (and verified on commit), the
/// rest is neither read nor stored.
fn warn_excess(desc: &Descriptor, host: &HostPort, excess: u64) {
    tracing::warn!(
        digest = %desc.digest,
        %host,
        size = desc.size,
        excess_bytes = excess,
        "the server sent more bytes than the descriptor's size; keeping the blob's bytes for verification and ignoring the rest"
    );
}
