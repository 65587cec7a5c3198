//! The daemon's decisions, without IO: when to poll next, how long to back off, what to do
//! after a `HEAD`, whether a download fits the disk budget, and whether the systemd
//! watchdog may be told the daemon is alive. Time and randomness are injected (a jitter
//! sample in `0..=1`), so every rule is a table test.

use std::time::Duration;

use crate::oci::Digest;
use crate::retry::equal_jitter;

/// Shortest wait between two checks of one image, whatever the jitter draws.
pub const MIN_DELAY: Duration = Duration::from_millis(100);
/// First backoff step after a failure (the wait is drawn from `[step/2, step]`).
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// A `Retry-After` is honoured up to this long, even beyond the backoff cap.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The wait before the next check: `interval × (1 + jitter × (2·sample − 1))`, so a fleet
/// sharing one interval spreads over `interval × [1 − jitter, 1 + jitter]`. Never below
/// [`MIN_DELAY`]. `sample` is clamped to `0..=1` (NaN counts as 0.5: no jitter).
pub fn poll_delay(interval: Duration, jitter: f64, sample: f64) -> Duration {
    let sample = if sample.is_nan() {
        0.5
    } else {
        sample.clamp(0.0, 1.0)
    };
    let jitter = if jitter.is_nan() {
        0.0
    } else {
        jitter.clamp(0.0, 1.0)
    };
    let factor = 1.0 + jitter * (2.0 * sample - 1.0);
    interval.mul_f64(factor).max(MIN_DELAY)
}

/// Consecutive failures of one image and the wait they earn. Never gives up: the wait
/// grows exponentially (the blob retry policy's [`equal_jitter`]) up to the cap and stays
/// there; a success resets it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// Failures in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Record a failure; the wait before the next attempt: `d/2 + sample·d/2` for
    /// `d = min(cap, base·2^(failures−1))`, and at least the server's `Retry-After`
    /// (up to [`MAX_RETRY_AFTER`]).
    pub fn on_failure(
        &mut self,
        base: Duration,
        cap: Duration,
        retry_after: Option<Duration>,
        sample: f64,
    ) -> Duration {
        let wait = equal_jitter(base, cap, self.failures, sample);
        self.failures = self.failures.saturating_add(1);
        match retry_after {
            Some(ra) => wait.max(ra.min(MAX_RETRY_AFTER)),
            None => wait,
        }
        .max(MIN_DELAY)
    }

    /// A success: start over.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// What the store holds for an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    /// The digest a `HEAD` of the reference returns for it: the index it came from, else
    /// the manifest.
    pub top: Digest,
    /// Whether the manifest and every blob it references are in the store, with the
    /// right sizes.
    pub complete: bool,
}

/// What to do after learning the digest a reference points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterHead {
    /// The store has exactly this, complete: no further request.
    Nothing,
    /// Plan a pull of this digest.
    Pull(PullReason),
}

/// Why a pull is planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullReason {
    /// The image is not in the store yet.
    New,
    /// The reference moved to another digest.
    Changed,
    /// Same digest, but blobs are missing (an interrupted pull, or a start-up repair).
    Incomplete,
}

impl PullReason {
    /// For logs and status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Changed => "changed",
            Self::Incomplete => "incomplete",
        }
    }
}

/// Decide after a `HEAD` (or from a pinned digest) returned `remote`.
pub fn after_head(remote: &Digest, local: Option<Local>) -> AfterHead {
    match local {
        None => AfterHead::Pull(PullReason::New),
        Some(l) if l.top != *remote => AfterHead::Pull(PullReason::Changed),
        Some(l) if !l.complete => AfterHead::Pull(PullReason::Incomplete),
        Some(_) => AfterHead::Nothing,
    }
}

/// Whether a download fits on the store's filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// Go ahead.
    Fits,
    /// Do not start: `missing + min_free` bytes are needed and only `available` are free.
    Defer {
        /// Bytes still to download.
        missing: u64,
        /// The reserve that must stay free.
        min_free: u64,
        /// Free bytes for this user on the store's filesystem.
        available: u64,
    },
}

/// The download fits when the missing bytes plus the reserve are available.
pub fn budget(missing: u64, min_free: u64, available: u64) -> Budget {
    if missing
        .checked_add(min_free)
        .is_some_and(|need| need <= available)
    {
        Budget::Fits
    } else {
        Budget::Defer {
            missing,
            min_free,
            available,
        }
    }
}

/// What a running sync job is doing, for the watchdog ([`watchdog_ping`]). Each phase has
/// its own longest healthy silence ([`Silences`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobPhase {
    /// Reading or writing the local store (lookups, the switch of `index.json`, garbage
    /// collection): nothing here waits on the network, so no silence beyond the watchdog
    /// interval is healthy.
    Local,
    /// The `HEAD` of the manifest: one request sequence.
    Check,
    /// Fetching the manifests by digest (an index, then the platform's manifest).
    Plan,
    /// Downloading blobs: every stored byte is progress.
    Download,
    /// Running `hooks.on_update` or `hooks.health_check`.
    Hook,
}

impl JobPhase {
    /// For logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "store",
            Self::Check => "check",
            Self::Plan => "plan",
            Self::Download => "download",
            Self::Hook => "hook",
        }
    }
}

/// Requests one attempt may chain: a token, the login server (a blob's 307), the data
/// endpoint.
pub const REQUESTS_PER_ATTEMPT: u32 = 3;
/// Manifests a plan fetches one after the other: an index, then the platform's manifest.
pub const MANIFESTS_PER_PLAN: u32 = 2;
/// Time a killed hook gets to be reaped, on top of `hooks.timeout_secs`.
pub const HOOK_KILL_GRACE: Duration = Duration::from_secs(5);

/// The longest a healthy job may go without progress (a stored byte or a change of
/// phase), per phase. A wait the daemon bounds itself (a read timeout, a retry wait, the
/// hook timeout) is healthy: a server that stalls is answered by the client's timeouts and
/// the retry policy, never by the watchdog, or every stall would restart the daemon and
/// lose its backoff (a restart loop driven by a server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Silences {
    /// One request sequence with its retries.
    pub network: Duration,
    /// The hook, until it is killed and reaped.
    pub hook: Duration,
}

impl Silences {
    /// From the HTTP client's `connect` and `idle_read` timeouts, the retry budget of one
    /// request (`attempts`, each wait at most `retry_cap`) and `hooks.timeout_secs`.
    ///
    /// One attempt chains up to [`REQUESTS_PER_ATTEMPT`] requests, each bounded by
    /// `connect + idle_read` until its first bytes; `attempts` attempts wait at most
    /// `retry_cap` between them (counted once more, for the wait before a retry that the
    /// job sees as the end of the previous sequence). Saturating: never overflows.
    pub fn new(
        connect: Duration,
        idle_read: Duration,
        attempts: u32,
        retry_cap: Duration,
        hook_timeout: Duration,
    ) -> Self {
        let attempts = attempts.max(1);
        let request = connect.saturating_add(idle_read);
        let network = request
            .saturating_mul(REQUESTS_PER_ATTEMPT)
            .saturating_mul(attempts)
            .saturating_add(retry_cap.saturating_mul(attempts));
        Self {
            network,
            hook: hook_timeout.saturating_add(HOOK_KILL_GRACE),
        }
    }

    /// The longest healthy silence in `phase`.
    pub fn of(&self, phase: JobPhase) -> Duration {
        match phase {
            JobPhase::Local => Duration::ZERO,
            JobPhase::Check | JobPhase::Download => self.network,
            JobPhase::Plan => self.network.saturating_mul(MANIFESTS_PER_PLAN),
            JobPhase::Hook => self.hook,
        }
    }
}

/// Whether to send `WATCHDOG=1` now. The supervisor loop asks on each watchdog tick (so
/// a loop that stopped turning sends nothing); `job` is the running job's phase and how
/// long it has gone without progress, `None` when no job runs. Idle: ping. A job pings
/// while its silence is within `interval` (one watchdog period) or within the phase's
/// healthy silence ([`Silences::of`]), whichever is longer; beyond that it is stuck where
/// no timeout of its own reaches (a hung disk, a bug), and systemd should restart the
/// daemon, which resumes from its checkpoints.
pub fn watchdog_ping(job: Option<(JobPhase, Duration)>, silences: &Silences, interval: Duration) -> bool {
    match job {
        None => true,
        Some((phase, silent_for)) => silent_for <= interval.max(silences.of(phase)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;
    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn poll_delay_table() {
        let cases = [
            (S(300), 0.2, 0.5, S(300)),
            (S(300), 0.2, 0.0, S(240)),
            (S(300), 0.2, 1.0, S(360)),
            (S(300), 0.0, 1.0, S(300)),
            (S(10), 1.0, 0.0, MIN_DELAY),
            (S(10), 1.0, 1.0, S(20)),
            (S(1), 0.2, 0.25, MS(900)),
            (S(300), 0.2, 7.0, S(360)),
            (S(300), 0.2, -1.0, S(240)),
            (S(300), 0.2, f64::NAN, S(300)),
            (S(300), f64::NAN, 0.0, S(300)),
        ];
        for (interval, jitter, sample, want) in cases {
            assert_eq!(
                poll_delay(interval, jitter, sample),
                want,
                "{interval:?} {jitter} {sample}"
            );
        }
    }

    #[test]
    fn poll_delay_spreads_within_bounds() {
        for i in 0..=100 {
            let d = poll_delay(S(300), 0.2, f64::from(i) / 100.0);
            assert!(d >= S(240) && d <= S(360), "{d:?}");
        }
    }

    #[test]
    fn backoff_table() {
        let cap = S(900);
        // (failures before, retry_after, sample, want)
        let cases = [
            (0, None, 0.0, MS(500)),
            (0, None, 1.0, S(1)),
            (1, None, 1.0, S(2)),
            (4, None, 0.0, S(8)),
            (9, None, 1.0, S(512)),
            (10, None, 0.0, S(450)),
            (10, None, 1.0, S(900)),
            (1000, None, 1.0, S(900)),
            (0, Some(S(120)), 0.0, S(120)),   // Retry-After is a floor
            (10, Some(S(120)), 1.0, S(900)),  // backoff above it wins
            (0, Some(S(3600)), 0.0, S(3600)), // honoured beyond the cap
            (0, Some(S(u64::MAX)), 0.0, MAX_RETRY_AFTER),
            (0, None, f64::NAN, MS(500)),
        ];
        for (before, ra, sample, want) in cases {
            let mut b = Backoff { failures: before };
            assert_eq!(
                b.on_failure(BACKOFF_BASE, cap, ra, sample),
                want,
                "{before} {ra:?} {sample}"
            );
            assert_eq!(b.failures(), before.saturating_add(1));
        }
    }

    #[test]
    fn backoff_grows_to_the_cap_never_gives_up_and_resets() {
        let mut b = Backoff::default();
        let mut last = Duration::ZERO;
        for _ in 0..200 {
            let d = b.on_failure(BACKOFF_BASE, S(900), None, 1.0);
            assert!(d >= last && d <= S(900));
            last = d;
        }
        assert_eq!(last, S(900));
        b.reset();
        assert_eq!(b.on_failure(BACKOFF_BASE, S(900), None, 1.0), S(1));
        // A cap below the base still waits one base step.
        let mut b = Backoff::default();
        assert_eq!(b.on_failure(S(2), S(1), None, 1.0), S(2));
    }

    #[test]
    fn after_head_table() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let local = |top, complete| Some(Local { top, complete });
        let cases = [
            (a, None, AfterHead::Pull(PullReason::New)),
            (a, local(a, true), AfterHead::Nothing),
            (a, local(a, false), AfterHead::Pull(PullReason::Incomplete)),
            (a, local(b, true), AfterHead::Pull(PullReason::Changed)),
            (a, local(b, false), AfterHead::Pull(PullReason::Changed)),
        ];
        for (remote, local, want) in cases {
            assert_eq!(after_head(&remote, local), want, "{local:?}");
        }
    }

    #[test]
    fn budget_table() {
        let cases = [
            (0, 0, 0, true),
            (100, 0, 100, true),
            (100, 1, 100, false),
            (60, 40, 100, true),
            (u64::MAX, 1, u64::MAX, false),
            (1, u64::MAX, u64::MAX, false),
        ];
        for (missing, min_free, available, fits) in cases {
            let got = budget(missing, min_free, available);
            assert_eq!(
                got == Budget::Fits,
                fits,
                "{missing} {min_free} {available}: {got:?}"
            );
            if !fits {
                assert_eq!(
                    got,
                    Budget::Defer {
                        missing,
                        min_free,
                        available
                    }
                );
            }
        }
    }

    #[test]
    fn silences_follow_timeouts_retries_and_the_hook_timeout() {
        // connect 15 s + idle read 60 s per request, 3 requests an attempt, 4 attempts,
        // retry waits up to 30 s each.
        let s = Silences::new(S(15), S(60), 4, S(30), S(60));
        assert_eq!(s.network, S(4 * 3 * 75 + 4 * 30));
        assert_eq!(s.hook, S(65));
        assert_eq!(s.of(JobPhase::Local), Duration::ZERO);
        assert_eq!(s.of(JobPhase::Check), s.network);
        assert_eq!(s.of(JobPhase::Download), s.network);
        assert_eq!(s.of(JobPhase::Plan), s.network * 2);
        assert_eq!(s.of(JobPhase::Hook), S(65));
        // Zero attempts counts as one; huge values saturate instead of overflowing.
        assert_eq!(Silences::new(S(1), S(1), 0, S(0), S(0)).network, S(6));
        let max = Silences::new(Duration::MAX, S(1), u32::MAX, Duration::MAX, Duration::MAX);
        assert_eq!((max.network, max.hook), (Duration::MAX, Duration::MAX));
        assert_eq!(max.of(JobPhase::Plan), Duration::MAX);
    }

    #[test]
    fn watchdog_ping_table() {
        use JobPhase::*;
        let interval = S(30);
        // network 4·3·(1+2) + 4·5 = 56 s; plan 112 s; hook 10 + 5 = 15 s.
        let s = Silences::new(S(1), S(2), 4, S(5), S(10));
        let cases = [
            // Idle: the loop turned, nothing runs.
            (None, true),
            // Progress within one watchdog period, in any phase.
            (Some((Local, S(0))), true),
            (Some((Download, MS(500))), true),
            (Some((Local, S(30))), true),
            (Some((Hook, S(30))), true),
            // A store operation silent for longer than one period: stuck on the disk.
            (Some((Local, S(31))), false),
            (Some((Local, S(3600))), false),
            // A stalled server is the client's business until its timeouts and retries
            // have had their time.
            (Some((Download, S(56))), true),
            (Some((Download, MS(56_001))), false),
            (Some((Check, S(56))), true),
            (Some((Check, S(57))), false),
            (Some((Plan, S(112))), true),
            (Some((Plan, S(113))), false),
            // The hook may run to its timeout, then it is killed: beyond that it is stuck.
            // (The period is longer than the hook's silence here: the period wins.)
            (Some((Hook, S(31))), false),
        ];
        for (job, want) in cases {
            assert_eq!(watchdog_ping(job, &s, interval), want, "{job:?}");
        }
        // A long hook timeout covers its run; a short period does not shorten it.
        let long_hook = Silences::new(S(1), S(2), 4, S(5), S(600));
        assert!(watchdog_ping(Some((Hook, S(605))), &long_hook, MS(200)));
        assert!(!watchdog_ping(Some((Hook, S(606))), &long_hook, MS(200)));
        assert!(!watchdog_ping(Some((Local, MS(201))), &long_hook, MS(200)));
    }
}
