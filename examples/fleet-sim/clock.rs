//! The simulation's virtual wall clock: `SystemTime::now()` that moves with Tokio's paused
//! clock.
//!
//! Owns: the process-wide `clock_gettime` override and [`advance`], the only way simulated
//! time moves. The daemon schedules its polls on Tokio's clock (paused here, moved by
//! `tokio::time::advance`), but a staged rollout reads the wall clock: `first_seen` and the
//! slot are unix seconds from `SystemTime::now()`. A paused Tokio clock alone would leave
//! the rollout on real time, so this module makes the wall clock virtual too: once
//! [`start`] ran, `CLOCK_REALTIME` reads `start's second + the time advanced`, and
//! [`advance`] moves both clocks together (wall clock first, so no task ever sees Tokio's
//! clock ahead of the wall clock).
//!
//! How: this binary defines the C symbol `clock_gettime`. The static linker binds the
//! standard library's calls (`SystemTime::now`, `Instant::now`) to this definition instead
//! of glibc's; every other clock, and the wall clock before [`start`], is read from the
//! kernel through rustix's vDSO call (never through libc, so no recursion). Only for
//! 64-bit Linux with glibc; elsewhere the override is absent and [`works`] says so.
//!
//! What stays on real time: `std::time::Instant` (the monotonic clock), so the token cache
//! and the fake registry's token and link lifetimes age in real seconds. Never used by the
//! product: this file is compiled only into the example and its test.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The wall clock is virtual.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// Unix seconds of the virtual wall clock when nothing was advanced yet.
static BASE_SECS: AtomicU64 = AtomicU64::new(0);
/// Nanoseconds advanced since [`start`].
static ADVANCED_NANOS: AtomicU64 = AtomicU64::new(0);

/// Make the wall clock virtual from now on, frozen at the current whole second until
/// [`advance`] moves it. Returns that second (unix). Calling it again keeps the virtual
/// time running on (it never goes back).
pub(crate) fn start() -> u64 {
    if !ACTIVE.load(Ordering::SeqCst) {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        BASE_SECS.store(real, Ordering::SeqCst);
        ADVANCED_NANOS.store(0, Ordering::SeqCst);
        ACTIVE.store(true, Ordering::SeqCst);
    }
    now_unix()
}

/// Unix seconds of the virtual wall clock (whole seconds: the simulation steps by seconds).
pub(crate) fn now_unix() -> u64 {
    BASE_SECS.load(Ordering::SeqCst) + ADVANCED_NANOS.load(Ordering::SeqCst) / 1_000_000_000
}

/// Move simulated time by `by`: the wall clock, then Tokio's paused clock (which fires the
/// timers that came due and lets their tasks run once).
pub(crate) async fn advance(by: Duration) {
    let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
    ADVANCED_NANOS.fetch_add(nanos, Ordering::SeqCst);
    tokio::time::advance(by).await;
}

/// Whether `SystemTime::now()` follows the virtual clock (the override is linked in and
/// active): checked once before a run, since every rollout figure depends on it.
pub(crate) fn works() -> bool {
    let seen = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    ACTIVE.load(Ordering::SeqCst) && seen == now_unix()
}

#[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
mod hook {
    use super::{ACTIVE, ADVANCED_NANOS, BASE_SECS, Ordering};
    use rustix::time::{ClockId, clock_gettime as kernel_clock};

    /// `struct timespec` on 64-bit Linux.
    #[repr(C)]
    pub(super) struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }

    const CLOCK_REALTIME: i32 = 0;
    const CLOCK_REALTIME_COARSE: i32 = 5;

    /// `int clock_gettime(clockid_t, struct timespec *)`, as glibc declares it.
    ///
    /// # Safety
    /// `tp` must be null or point to a writable `struct timespec`: the C contract, which
    /// every caller (the standard library) keeps.
    #[unsafe(no_mangle)]
    pub(super) unsafe extern "C" fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32 {
        let (sec, nsec) =
            if matches!(clock, CLOCK_REALTIME | CLOCK_REALTIME_COARSE) && ACTIVE.load(Ordering::SeqCst) {
                let advanced = ADVANCED_NANOS.load(Ordering::SeqCst);
                let sec = BASE_SECS.load(Ordering::SeqCst) + advanced / 1_000_000_000;
                (
                    i64::try_from(sec).unwrap_or(i64::MAX),
                    (advanced % 1_000_000_000) as i64,
                )
            } else {
                let id = match clock {
                    0 => ClockId::Realtime,
                    1 => ClockId::Monotonic,
                    2 => ClockId::ProcessCPUTime,
                    3 => ClockId::ThreadCPUTime,
                    4 => ClockId::MonotonicRaw,
                    5 => ClockId::RealtimeCoarse,
                    6 => ClockId::MonotonicCoarse,
                    7 => ClockId::Boottime,
                    _ => return -1,
                };
                let t = kernel_clock(id);
                (t.tv_sec, t.tv_nsec)
            };
        if tp.is_null() {
            return -1;
        }
        // SAFETY: `tp` is non-null and, by the C contract, points to a `timespec`.
        unsafe {
            (*tp).tv_sec = sec;
            (*tp).tv_nsec = nsec;
        }
        0
    }
}
