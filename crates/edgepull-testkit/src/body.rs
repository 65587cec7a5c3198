//! `FakeBody`: a response body streamed in chunks from shared `Bytes`, with optional pacing
//! (`rate_limit`, `trickle`), a connection cut after N bytes (`cut_after`), a stall after N
//! bytes (`stall_after`), a clean early end (`short_body`) and chunked framing (no exact
//! size). It counts the bytes it hands to hyper so the request log can report them.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// Largest chunk handed to hyper at once.
const CHUNK: usize = 64 * 1024;
/// Pause before a cut so hyper flushes the bytes already handed over.
const CUT_FLUSH_DELAY: Duration = Duration::from_millis(50);

/// How a streamed body misbehaves.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Shaping {
    /// Bytes per second.
    pub rate: Option<u64>,
    /// Abort the connection after this many body bytes.
    pub cut_at: Option<u64>,
    /// Stop sending (keep the connection open, send nothing more) after this many bytes.
    pub stall_at: Option<u64>,
    /// End the body cleanly after this many bytes.
    pub end_at: Option<u64>,
}

pub(crate) struct FakeBody {
    parts: VecDeque<Bytes>,
    remaining: u64,
    chunk: usize,
    shaping: Shaping,
    sent: u64,
    started: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
    cutting: bool,
    chunked: bool,
    counter: Arc<AtomicU64>,
}

impl FakeBody {
    /// No body.
    pub(crate) fn empty() -> Self {
        Self::streamed(Vec::new(), Shaping::default())
    }

    /// A small body sent as is.
    pub(crate) fn full(data: impl Into<Bytes>) -> Self {
        Self::streamed(vec![data.into()], Shaping::default())
    }

    /// `parts` sent in order, in chunks of at most 64 KiB, shaped.
    pub(crate) fn streamed(parts: Vec<Bytes>, shaping: Shaping) -> Self {
        let remaining = parts.iter().map(|p| p.len() as u64).sum();
        let chunk = match shaping.rate {
            // About ten chunks a second keeps the pacing smooth.
            Some(rate) => (rate / 10).clamp(1024, CHUNK as u64) as usize,
            None => CHUNK,
        };
        Self {
            parts: parts.into_iter().filter(|p| !p.is_empty()).collect(),
            remaining,
            chunk,
            shaping,
            sent: 0,
            started: None,
            sleep: None,
            cutting: false,
            chunked: false,
            counter: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Announce no size, so hyper frames the body chunked (the response must carry no
    /// `Content-Length`).
    pub(crate) fn chunked(mut self) -> Self {
        self.chunked = true;
        self
    }

    /// The number of bytes handed to hyper so far (shared, keeps counting).
    pub(crate) fn counter(&self) -> Arc<AtomicU64> {
        self.counter.clone()
    }
}

impl Body for FakeBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            if let Some(sleep) = this.sleep.as_mut() {
                ready!(sleep.as_mut().poll(cx));
                this.sleep = None;
                if this.cutting {
                    this.parts.clear();
                    this.remaining = 0;
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "testkit: connection cut on purpose (cut_after)",
                    ))));
                }
            }
            if this.shaping.end_at == Some(this.sent) {
                this.parts.clear();
                this.remaining = 0;
            }
            if this.shaping.stall_at == Some(this.sent) {
                // Never woken: the body sends nothing more until the client gives up.
                return Poll::Pending;
            }
            let Some(front) = this.parts.front_mut() else {
                return Poll::Ready(None);
            };
            if !this.cutting && this.shaping.cut_at == Some(this.sent) {
                this.cutting = true;
                this.sleep = Some(Box::pin(tokio::time::sleep(CUT_FLUSH_DELAY)));
                continue;
            }
            let mut n = this.chunk.min(front.len());
            for stop in [this.shaping.cut_at, this.shaping.stall_at, this.shaping.end_at]
                .into_iter()
                .flatten()
            {
                // stop > sent when it matters: equality was handled above, and sent never
                // passes a stop.
                if stop > this.sent {
                    n = n.min(usize::try_from(stop - this.sent).unwrap_or(usize::MAX));
                }
            }
            if let Some(rate) = this.shaping.rate {
                let started = *this.started.get_or_insert_with(Instant::now);
                let due = started + Duration::from_secs_f64(this.sent as f64 / rate.max(1) as f64);
                if Instant::now() < due {
                    this.sleep = Some(Box::pin(tokio::time::sleep_until(due)));
                    continue;
                }
            }
            let chunk = front.split_to(n);
            if front.is_empty() {
                this.parts.pop_front();
            }
            this.sent += n as u64;
            this.remaining -= n as u64;
            this.counter.fetch_add(n as u64, Ordering::Relaxed);
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0 && !self.cutting
    }

    fn size_hint(&self) -> SizeHint {
        if self.chunked {
            SizeHint::default()
        } else {
            SizeHint::with_exact(self.remaining)
        }
    }
}
