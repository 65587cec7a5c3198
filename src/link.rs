//! The link limiter every download shares: the bandwidth cap, the download windows and
//! the daily quota (`link` in the config), applied to blobs and manifests alike.
//!
//! Owns: one [`Link`] per process (the daemon keeps the same one across SIGHUP reloads,
//! which only [`Link::reconfigure`] it, so running downloads go on under the new limits),
//! the clocks (Tokio's for the bucket, so paused time drives it; the wall clock for windows
//! and the quota; the device's time zone from `/etc/localtime` for `"local"`), and the
//! durable quota counter `<store>/link-quota.json`, written atomically off the runtime at
//! most every [`SAVE_EVERY`] and when a download pauses. Every decision is the pure
//! [`edgepull_core::link`]'s. Must never hold its lock across an await, and never count a
//! byte that was not received.
//!
//! Without any limit configured a chunk costs one atomic add: no lock, no clock, no
//! await. The bytes are folded into the day's count and the rate samples when something
//! looks (status, the once-a-second [`Link::closed`] tick of a running transfer, a flush).
//!
//! Test builds only (debug assertions): `EDGEPULL_TEST_CLOCK_FILE` names a file holding a
//! number of seconds added to the wall clock (re-read at most once a second), so the
//! end-to-end tests can move a running daemon into and out of windows and across UTC days.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::LinkConfig;
use edgepull_core::link::{ClosedBy, Gate, QuotaDay, TimeZone, TokenBucket, eta, gate};

/// The quota counter's file in the store root.
pub(crate) const QUOTA_FILE: &str = "link-quota.json";
/// Longest time received bytes stay uncounted on disk (a crash forgets at most this much).
const SAVE_EVERY: Duration = Duration::from_secs(5);
/// How often a running transfer re-checks the windows and the quota while it waits for
/// data: a window closing stops it within this (well under 5 s).
const RECHECK: Duration = Duration::from_secs(1);
/// The current rate is measured over this long.
const RATE_SPAN: Duration = Duration::from_secs(5);

/// Why a download has to stop now: the link is closed until `opens_at` (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paused {
    /// A window closed, or the quota ran out.
    pub by: ClosedBy,
    /// When downloads may go on.
    pub opens_at: i64,
}

impl std::fmt::Display for Paused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}; downloads go on at {}",
            self.by.as_str(),
            stamp(self.opens_at)
        )
    }
}

/// `unix` as RFC 3339 UTC (for messages and `status.json`).
pub(crate) fn stamp(unix: i64) -> String {
    edgepull_core::link::rfc3339(unix)
}

/// What [`Link::admit`] stops for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The cancellation token fired while waiting.
    Cancelled,
    /// The link closed.
    Paused(Paused),
}

/// The link's state for `status.json`, `edgepull status` and the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LinkStatus {
    /// `link.max_bytes_per_sec`, if set.
    pub cap_bytes_per_sec: Option<u64>,
    /// `link.max_bytes_per_day`, if set.
    pub quota_bytes_per_day: Option<u64>,
    /// Bytes received today (UTC).
    pub bytes_today: u64,
    /// Bytes per second over the last few seconds.
    pub rate_bytes_per_sec: u64,
    /// Why downloads are paused now, if they are.
    pub paused: Option<String>,
    /// When the next window opens (RFC 3339 UTC), while outside every window or over quota.
    pub next_window_start: Option<String>,
    /// Seconds the running downloads still need at `min(cap, rate)` (filled in by the
    /// daemon, which knows their remaining bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_secs: Option<u64>,
}

impl LinkStatus {
    /// A realistic time for `remaining` bytes under the cap and the measured rate.
    pub fn eta(&self, remaining: u64) -> Option<Duration> {
        eta(
            remaining,
            self.cap_bytes_per_sec,
            Some(self.rate_bytes_per_sec).filter(|r| *r > 0),
        )
    }
}

/// The shared limiter. Cheap to call per chunk: one short lock.
#[derive(Debug)]
pub(crate) struct Link {
    /// Whether any limit (cap, windows, quota) is configured: without one, [`Link::admit`]
    /// only adds to `received`.
    limited: AtomicBool,
    /// Bytes received since start; the part beyond `Inner::folded` is not yet in the
    /// day's count or the rate samples.
    received: AtomicU64,
    inner: Mutex<Inner>,
    /// `<store>/link-quota.json`; `None`: the quota is counted in memory only.
    quota_file: Option<PathBuf>,
    /// Serializes quota file writes.
    save: Arc<Mutex<()>>,
}

#[derive(Debug)]
struct Inner {
    cfg: LinkConfig,
    tz: Option<tz::TimeZone>,
    origin: Instant,
    bucket: Option<TokenBucket>,
    quota: QuotaDay,
    saved_at: Instant,
    dirty: bool,
    samples: VecDeque<(Instant, u64)>,
    /// How much of [`Link::received`] is counted in `quota` and `samples`.
    folded: u64,
    clock: TestClock,
}

impl Link {
    /// No limits (tests and callers without a config).
    pub(crate) fn unlimited() -> Arc<Self> {
        Arc::new(Self::build(
            LinkConfig::default(),
            None,
            QuotaDay::default(),
            None,
        ))
    }

    /// The limiter for `cfg`, counting the quota in `store_root`. Reads the quota file and
    /// (for `"local"`) the time zone off the runtime.
    pub(crate) async fn open(cfg: &LinkConfig, store_root: &Path) -> Arc<Self> {
        let file = store_root.join(QUOTA_FILE);
        let zone = cfg.schedule.zone;
        let read = file.clone();
        let (quota, tz) = tokio::task::spawn_blocking(move || (read_quota(&read), local_zone(zone)))
            .await
            .unwrap_or_default();
        Arc::new(Self::build(cfg.clone(), tz, quota, Some(file)))
    }

    /// [`Link::open`] for callers outside async code: reads the files on this thread.
    pub(crate) fn open_blocking(cfg: &LinkConfig, store_root: &Path) -> Arc<Self> {
        let file = store_root.join(QUOTA_FILE);
        let (quota, tz) = (read_quota(&file), local_zone(cfg.schedule.zone));
        Arc::new(Self::build(cfg.clone(), tz, quota, Some(file)))
    }

    fn build(cfg: LinkConfig, tz: Option<tz::TimeZone>, quota: QuotaDay, file: Option<PathBuf>) -> Self {
        let now = Instant::now();
        Self {
            limited: AtomicBool::new(limited(&cfg)),
            received: AtomicU64::new(0),
            inner: Mutex::new(Inner {
                bucket: cfg.max_bytes_per_sec.map(|r| TokenBucket::new(r, Duration::ZERO)),
                cfg,
                tz,
                origin: now,
                quota,
                saved_at: now,
                dirty: false,
                samples: VecDeque::new(),
                folded: 0,
                clock: TestClock::default(),
            }),
            quota_file: file,
            save: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Apply a reloaded `link` section; transfers in flight go on under it.
    pub(crate) async fn reconfigure(&self, cfg: &LinkConfig) {
        let zone = cfg.schedule.zone;
        let tz = tokio::task::spawn_blocking(move || local_zone(zone))
            .await
            .unwrap_or_default();
        let mut i = self.lock();
        let now = i.origin.elapsed();
        i.bucket = match (cfg.max_bytes_per_sec, i.bucket.take()) {
            (None, _) => None,
            (Some(r), Some(mut b)) => {
                b.set_rate(r, now);
                Some(b)
            }
            (Some(r), None) => Some(TokenBucket::new(r, now)),
        };
        i.cfg = cfg.clone();
        i.tz = tz;
        self.limited.store(limited(cfg), Ordering::Relaxed);
    }

    /// Count the bytes received since the last fold into the day and the rate samples.
    fn fold(&self, i: &mut Inner) {
        let total = self.received.load(Ordering::Relaxed);
        let new = total.saturating_sub(i.folded);
        if new == 0 {
            return;
        }
        i.folded = total;
        let unix = i.unix();
        i.quota.add(new, unix);
        i.dirty = true;
        let now = Instant::now();
        i.samples.push_back((now, new));
        while i
            .samples
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > RATE_SPAN)
        {
            i.samples.pop_front();
        }
    }

    /// The quota counter to write now, if it is due (every [`SAVE_EVERY`], or `now` when
    /// `force` and it changed).
    fn due(i: &mut Inner, force: bool) -> Option<QuotaDay> {
        let now = Instant::now();
        (i.dirty && (force || now.duration_since(i.saved_at) >= SAVE_EVERY)).then(|| {
            i.saved_at = now;
            i.dirty = false;
            i.quota
        })
    }

    /// Whether downloads may run now.
    pub(crate) fn check(&self) -> Result<(), Paused> {
        if !self.limited.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut i = self.lock();
        self.fold(&mut i);
        i.gate()
    }

    /// A running transfer's once-a-second look: fold and save the count, and whether the
    /// link is still open.
    fn tick(&self) -> Result<(), Paused> {
        let (gate, save) = {
            let mut i = self.lock();
            self.fold(&mut i);
            let gate = if self.limited.load(Ordering::Relaxed) {
                i.gate()
            } else {
                Ok(())
            };
            let save = Self::due(&mut i, gate.is_err());
            (gate, save)
        };
        if let Some(q) = save {
            self.save(q);
        }
        gate
    }

    /// Count `bytes` just received, then wait until the cap allows them (before the
    /// caller reads more). Errors when the link is closed now (window over, quota used
    /// up: the bytes are still counted) or `cancel` fires.
    pub(crate) async fn admit(&self, bytes: u64, cancel: &CancellationToken) -> Result<(), Stop> {
        self.received.fetch_add(bytes, Ordering::Relaxed);
        if !self.limited.load(Ordering::Relaxed) {
            return Ok(());
        }
        let (wait, gate, save) = {
            let mut i = self.lock();
            self.fold(&mut i);
            let at = i.origin.elapsed();
            let wait = i.bucket.as_mut().map_or(Duration::ZERO, |b| b.reserve(bytes, at));
            let gate = i.gate();
            let save = Self::due(&mut i, gate.is_err());
            (wait, gate, save)
        };
        if let Some(q) = save {
            self.save(q);
        }
        gate.map_err(Stop::Paused)?;
        if !wait.is_zero() {
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Err(Stop::Cancelled),
                () = tokio::time::sleep(wait) => {}
            }
        }
        Ok(())
    }

    /// How long until `paused` lifts, by this link's wall clock.
    pub(crate) fn until(&self, paused: &Paused) -> Duration {
        let now = self.lock().unix();
        Duration::from_secs(u64::try_from(paused.opens_at.saturating_sub(now)).unwrap_or(0))
    }

    /// Completes when the link closes (checked every [`RECHECK`]): race it against a
    /// transfer's reads for its whole length (one future, not one per chunk) so a stalled
    /// transfer also stops when its window ends. Each check also folds and saves the count.
    pub(crate) async fn closed(&self) -> Paused {
        loop {
            if let Err(p) = self.tick() {
                return p;
            }
            tokio::time::sleep(RECHECK).await;
        }
    }

    /// Write the quota counter now if it changed (a pause or the end of a job).
    pub(crate) fn flush(&self) {
        let q = {
            let mut i = self.lock();
            self.fold(&mut i);
            Self::due(&mut i, true)
        };
        if let Some(q) = q {
            self.save(q);
        }
    }

    /// Write the quota counter now if it changed, and wait for the write (the end of a
    /// pull: a short `edgepull pull` would otherwise never save its count).
    pub(crate) async fn persist(&self) {
        let q = {
            let mut i = self.lock();
            self.fold(&mut i);
            Self::due(&mut i, true)
        };
        let (Some(q), Some(file)) = (q, self.quota_file.clone()) else {
            return;
        };
        let lock = self.save.clone();
        let written = tokio::task::spawn_blocking(move || {
            let _g = lock.lock().unwrap_or_else(PoisonError::into_inner);
            write_quota(&file, &q).map_err(|e| (file, e))
        })
        .await;
        if let Ok(Err((file, e))) = written {
            tracing::warn!(file = %file.display(), error = %e, "could not save the daily quota counter");
        }
    }

    fn save(&self, quota: QuotaDay) {
        let Some(file) = self.quota_file.clone() else {
            return;
        };
        let lock = self.save.clone();
        // Off the runtime, never waited for; writes are serialized and each is atomic.
        tokio::task::spawn_blocking(move || {
            let _g = lock.lock().unwrap_or_else(PoisonError::into_inner);
            if let Err(e) = write_quota(&file, &quota) {
                tracing::warn!(file = %file.display(), error = %e, "could not save the daily quota counter; it is saved again in a few seconds");
            }
        });
    }

    /// The link's state now.
    pub(crate) fn status(&self) -> LinkStatus {
        let mut i = self.lock();
        self.fold(&mut i);
        let unix = i.unix();
        let now = Instant::now();
        let received: u64 = i
            .samples
            .iter()
            .filter(|(t, _)| now.duration_since(*t) <= RATE_SPAN)
            .map(|(_, b)| *b)
            .sum();
        let mut today = i.quota;
        today.roll(unix);
        let paused = i.gate().err();
        LinkStatus {
            cap_bytes_per_sec: i.cfg.max_bytes_per_sec,
            quota_bytes_per_day: i.cfg.max_bytes_per_day,
            bytes_today: today.bytes,
            rate_bytes_per_sec: received / RATE_SPAN.as_secs(),
            paused: paused.map(|p| p.to_string()),
            next_window_start: paused.map(|p| stamp(p.opens_at)),
            eta_secs: None,
        }
    }
}

impl Inner {
    fn unix(&mut self) -> i64 {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        now.saturating_add(self.clock.offset())
    }

    fn gate(&mut self) -> Result<(), Paused> {
        let unix = self.unix();
        let tz = self.tz.clone();
        let offset = move |t: i64| -> i32 {
            tz.as_ref()
                .and_then(|z| z.find_local_time_type(t).ok().map(|l| l.ut_offset()))
                .unwrap_or(0)
        };
        let quota = self.cfg.max_bytes_per_day.map(|m| (m, &self.quota));
        match gate(&self.cfg.schedule, quota, unix, &offset) {
            Gate::Open { .. } => Ok(()),
            Gate::Closed { by, opens_at } => Err(Paused { by, opens_at }),
        }
    }
}

/// Whether `cfg` limits anything (else [`Link::admit`] only counts).
fn limited(cfg: &LinkConfig) -> bool {
    cfg.max_bytes_per_sec.is_some() || cfg.max_bytes_per_day.is_some() || !cfg.schedule.windows.is_empty()
}

/// The device's time zone for `"local"` windows. Blocking: reads `/etc/localtime` (not
/// `TZ`, which a systemd service does not set). Unreadable: UTC, with a warning.
fn local_zone(zone: TimeZone) -> Option<tz::TimeZone> {
    if zone != TimeZone::Local {
        return None;
    }
    match tz::TimeZone::local() {
        Ok(z) => Some(z),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the local time zone; link.windows are read in UTC");
            None
        }
    }
}

/// The saved quota counter; a missing or unreadable file starts at zero.
fn read_quota(file: &Path) -> QuotaDay {
    match std::fs::read(file) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(file = %file.display(), error = %e, "ignoring an unreadable daily quota counter");
            QuotaDay::default()
        }),
        Err(_) => QuotaDay::default(),
    }
}

/// Write the counter atomically: temp file, fsync, rename, directory fsync.
fn write_quota(file: &Path, quota: &QuotaDay) -> std::io::Result<()> {
    use std::io::Write;
    let dir = file.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{QUOTA_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(quota).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, file)?;
    std::fs::File::open(dir)?.sync_all()
}

/// The test-only wall-clock offset (see the module doc); always zero in release builds.
#[derive(Debug, Default)]
struct TestClock {
    #[cfg(debug_assertions)]
    cached: Option<(Instant, i64)>,
}

impl TestClock {
    #[cfg(debug_assertions)]
    fn offset(&mut self) -> i64 {
        let Some(file) = std::env::var_os("EDGEPULL_TEST_CLOCK_FILE") else {
            return 0;
        };
        let now = Instant::now();
        if let Some((at, v)) = self.cached
            && now.duration_since(at) < Duration::from_secs(1)
        {
            return v;
        }
        let v = std::fs::read_to_string(file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        self.cached = Some((now, v));
        v
    }

    #[cfg(not(debug_assertions))]
    fn offset(&mut self) -> i64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::task::{Context, Poll, Waker};

    use super::*;

    /// Without limits a chunk costs an atomic add: `admit` is ready at once and does not
    /// take the lock (it completes while another thread holds it), yet the bytes are
    /// counted for `bytes_today` and the rate.
    #[test]
    fn unlimited_admit_takes_no_lock_and_never_waits() {
        let link = Link::unlimited();
        let held = link.lock();
        let (tx, rx) = mpsc::channel();
        let l = link.clone();
        std::thread::spawn(move || {
            let cancel = CancellationToken::new();
            let mut fut = std::pin::pin!(l.admit(1000, &cancel));
            let ready = matches!(
                fut.as_mut().poll(&mut Context::from_waker(Waker::noop())),
                Poll::Ready(Ok(()))
            );
            let _ = tx.send(ready);
        });
        let ready = rx.recv_timeout(Duration::from_secs(5));
        drop(held);
        assert_eq!(ready, Ok(true), "admit waited for the lock or yielded");
        assert_eq!(link.check(), Ok(()));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let st = rt.block_on(async { link.status() });
        assert_eq!(st.bytes_today, 1000);
        assert_eq!(st.rate_bytes_per_sec, 1000 / RATE_SPAN.as_secs());
    }

    /// With a cap the same call waits for the bucket (which starts empty).
    #[tokio::test(start_paused = true)]
    async fn a_capped_admit_waits_for_the_bucket() {
        let cfg = LinkConfig {
            max_bytes_per_sec: Some(1000),
            ..LinkConfig::default()
        };
        let link = Arc::new(Link::build(cfg, None, QuotaDay::default(), None));
        let cancel = CancellationToken::new();
        let start = Instant::now();
        link.admit(3000, &cancel).await.unwrap();
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(3) && took < Duration::from_millis(3100),
            "{took:?}"
        );
        let st = link.status();
        assert_eq!(st.bytes_today, 3000);
        assert_eq!(st.cap_bytes_per_sec, Some(1000));
    }

    /// A quota running out is seen by the admit that crosses it, and the count is the
    /// bytes received (not the quota).
    #[tokio::test(start_paused = true)]
    async fn a_quota_stops_the_admit_that_uses_it_up() {
        let cfg = LinkConfig {
            max_bytes_per_day: Some(5000),
            ..LinkConfig::default()
        };
        let link = Arc::new(Link::build(cfg, None, QuotaDay::default(), None));
        let cancel = CancellationToken::new();
        link.admit(4000, &cancel).await.unwrap();
        let err = link.admit(1500, &cancel).await.unwrap_err();
        assert!(
            matches!(
                err,
                Stop::Paused(Paused {
                    by: ClosedBy::Quota,
                    ..
                })
            ),
            "{err:?}"
        );
        let st = link.status();
        assert_eq!(st.bytes_today, 5500);
        assert!(st.paused.is_some() && st.next_window_start.is_some(), "{st:?}");
        assert!(link.check().is_err());
    }
}
