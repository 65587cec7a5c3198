//! The simulation's virtual wall clock, which moves with Tokio's paused clock.
//!
//! Owns: the virtual time and [`advance`], the only way simulated time moves. The daemon
//! schedules its polls on Tokio's clock (paused here, moved by `tokio::time::advance`), but
//! a staged rollout reads the wall clock: `first_seen` and the slot are unix seconds. Each
//! daemon is given [`wall_clock`] (`edgepull::daemon::run_with_clock`), which reads
//! `start's second + the time advanced`, and [`advance`] moves both clocks together (wall
//! clock first, so no task ever sees Tokio's clock ahead of the wall clock).
//!
//! What stays on real time: `std::time::Instant` (the monotonic clock), so the token cache
//! and the fake registry's token and link lifetimes age in real seconds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edgepull::daemon::WallClock;

/// Unix seconds of the virtual wall clock when nothing was advanced yet (0: not started).
static BASE_SECS: AtomicU64 = AtomicU64::new(0);
/// Nanoseconds advanced since [`start`].
static ADVANCED_NANOS: AtomicU64 = AtomicU64::new(0);

/// Start the virtual wall clock at the current whole second, frozen until [`advance`]
/// moves it. Returns that second (unix). Calling it again keeps the virtual time running
/// on (it never goes back).
pub(crate) fn start() -> u64 {
    let real = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let _ = BASE_SECS.compare_exchange(0, real, Ordering::SeqCst, Ordering::SeqCst);
    now_unix()
}

/// Unix seconds of the virtual wall clock (whole seconds: the simulation steps by seconds).
pub(crate) fn now_unix() -> u64 {
    BASE_SECS.load(Ordering::SeqCst) + ADVANCED_NANOS.load(Ordering::SeqCst) / 1_000_000_000
}

/// The clock every simulated daemon reads.
pub(crate) fn wall_clock() -> WallClock {
    WallClock::new(|| {
        UNIX_EPOCH
            + Duration::from_secs(BASE_SECS.load(Ordering::SeqCst))
            + Duration::from_nanos(ADVANCED_NANOS.load(Ordering::SeqCst))
    })
}

/// Move simulated time by `by`: the wall clock, then Tokio's paused clock (which fires the
/// timers that came due and lets their tasks run once).
pub(crate) async fn advance(by: Duration) {
    let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
    ADVANCED_NANOS.fetch_add(nanos, Ordering::SeqCst);
    tokio::time::advance(by).await;
}
