//! The retry planner: after a failed attempt, wait how long, or give up.
//!
//! Owns: which failures are transient (the one copy of "5xx/408/429 is transient":
//! [`is_transient_status`]), exponential backoff with equal jitter (the one copy:
//! [`equal_jitter`], also behind the daemon's [`crate::schedule::Backoff`]), `Retry-After` as
//! a floor, the attempt budget and its reset on progress ([`RetryState`]) — except for a
//! body abandoned as too slow, whose trickle is not progress. Sans-IO: no
//! clock, no sleep, no randomness; the caller injects the time (`now`) and a jitter sample
//! in `0..=1`.
//!
//! Must never: retry a permanent failure (4xx other than 408/429, integrity, fatal); wait
//! longer than the cap; retry at once after a 429.
//!
//! Jitter is **equal jitter**: the wait is `d/2 + jitter·d/2` for the capped exponential
//! `d = min(cap, base·2^attempt)`. It keeps a floor of half the exponential delay, so a
//! device on a flapping link never hammers the registry (full jitter may draw ~0 s), and
//! still spreads a fleet of devices over `[d/2, d]`.

use std::time::{Duration, SystemTime};

/// Attempts allowed for a 5xx other than 502/503/504 (a few, not forever).
pub const OTHER_5XX_MAX_ATTEMPTS: u32 = 3;
/// Attempts in a row when a data endpoint refuses its signed link: each attempt asks the
/// login server for a fresh one, so more than a few refusals mean something else is wrong
/// (a clock far off, a revoked token).
pub const LINK_REJECTED_MAX_ATTEMPTS: u32 = 3;

/// Why a retry policy was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetryPolicyError {
    /// A zero base would retry in a hot loop.
    #[error("retry base delay must be above zero (the default is 1 s)")]
    ZeroBase,
    /// The cap is below the base.
    #[error("retry cap {cap:?} is below the base delay {base:?}; raise the cap (default 5 min)")]
    CapBelowBase { base: Duration, cap: Duration },
    /// `Some(0)` attempts.
    #[error("max_attempts must be at least 1 (1 = never retry), or unset to retry until cancelled")]
    ZeroAttempts,
}

/// How one attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// TCP/TLS connect failed or timed out.
    Connect,
    /// The connection was reset or closed mid-response.
    Reset,
    /// No bytes arrived within the stall timeout.
    Stall,
    /// The body arrived slower than the configured minimum rate (see [`crate::rate`]).
    /// Transient, but the bytes it brought do not count as progress: a server that
    /// trickles would otherwise reset the attempt budget forever.
    TooSlow,
    /// A final HTTP status that is neither a body nor a redirect (after auth handling).
    Status {
        /// The status code.
        code: u16,
        /// The parsed `Retry-After`, if any (see [`parse_retry_after`]).
        retry_after: Option<Duration>,
    },
    /// The body ended before the expected length.
    ShortBody,
    /// A data endpoint answered 401/403 to a signed link the login server handed out: the
    /// link expired (ACR's live 20–30 minutes) or was revoked. A fresh redirect fixes it.
    LinkRejected,
    /// Size or digest mismatch on completion.
    Integrity,
    /// Anything else that retrying cannot fix (policy refusal, disk full, bug).
    Fatal,
}

/// How often a kind of failure may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retryable {
    /// Within the policy's budget (`max_attempts`).
    Yes,
    /// At most this many attempts in a row, and within the policy's budget.
    AFewTimes(u32),
    /// Never.
    No,
}

/// Whether an HTTP status may pass if asked again later: 408, 429 and every 5xx.
pub fn is_transient_status(code: u16) -> bool {
    matches!(code, 408 | 429 | 500..=599)
}

impl Failure {
    /// Classify: transport errors, slow or short bodies, 408, 429 and 502/503/504 are transient;
    /// other 5xx are retried a few times; everything else is permanent.
    ///
    /// `Integrity` is permanent here: only the caller knows whether the download was
    /// resumed, and the one restart from offset 0 after a resumed download (then fail)
    /// is its decision, not a backoff.
    pub fn retryable(&self) -> Retryable {
        match self {
            Self::Connect | Self::Reset | Self::Stall | Self::TooSlow | Self::ShortBody => Retryable::Yes,
            Self::Status { code, .. } if !is_transient_status(*code) => Retryable::No,
            Self::Status { code, .. } => match code {
                500 | 501 | 505..=599 => Retryable::AFewTimes(OTHER_5XX_MAX_ATTEMPTS),
                _ => Retryable::Yes,
            },
            Self::LinkRejected => Retryable::AFewTimes(LINK_REJECTED_MAX_ATTEMPTS),
            Self::Integrity | Self::Fatal => Retryable::No,
        }
    }

    /// Whether bytes stored by the attempt that failed this way count as progress (they
    /// reset the attempt budget). Not for [`Failure::TooSlow`]: its few bytes are the
    /// symptom, not progress.
    pub fn counts_progress(&self) -> bool {
        !matches!(self, Self::TooSlow)
    }

    /// The server's `Retry-After`, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Wait this long, then try again (with a fresh redirect from the login server).
    RetryAfter(Duration),
    /// Stop and report the failure.
    GiveUp,
}

/// Backoff parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    base: Duration,
    cap: Duration,
    max_attempts: Option<u32>,
}

impl Default for RetryPolicy {
    /// 1 s base, 5 min cap, 8 attempts (the pull default).
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(300),
            max_attempts: Some(8),
        }
    }
}

impl RetryPolicy {
    /// A policy. `max_attempts`: attempts in a row without progress before giving up,
    /// counting the first; `None` retries transient failures until cancelled.
    pub fn new(base: Duration, cap: Duration, max_attempts: Option<u32>) -> Result<Self, RetryPolicyError> {
        if base.is_zero() {
            return Err(RetryPolicyError::ZeroBase);
        }
        if cap < base {
            return Err(RetryPolicyError::CapBelowBase { base, cap });
        }
        if max_attempts == Some(0) {
            return Err(RetryPolicyError::ZeroAttempts);
        }
        Ok(Self {
            base,
            cap,
            max_attempts,
        })
    }

    /// The default, retrying until cancelled (for unattended devices on poor links).
    pub fn forever() -> Self {
        Self {
            max_attempts: None,
            ..Self::default()
        }
    }

    /// The base delay.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The longest wait.
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// Decide after a failed attempt.
    ///
    /// - `attempt`: failed attempts in a row *before* this one without progress (0 on the
    ///   first failure).
    /// - `progressed`: whether this attempt durably stored new bytes (the ingest offset
    ///   moved forward) before failing. If so the run restarts: this failure is judged as
    ///   the first, and the caller's next `attempt` is 1 (else `attempt + 1`).
    ///   [`RetryState`] keeps that counter. So a download that keeps moving never gives up,
    ///   and one that is stuck gives up after `max_attempts`. A [`Failure::TooSlow`] is
    ///   judged as without progress ([`Failure::counts_progress`]), so a trickling server
    ///   gives up after `max_attempts` too.
    /// - `jitter`: a uniform sample in `0..=1` (clamped; NaN counts as 0).
    ///
    /// The wait is the equal-jitter backoff; with `Retry-After`, at least
    /// `min(Retry-After, cap) + jitter·max(base, Retry-After/4)`; never above the cap.
    pub fn decide(&self, attempt: u32, failure: &Failure, progressed: bool, jitter: f64) -> Action {
        let progressed = progressed && failure.counts_progress();
        let attempt = if progressed { 0 } else { attempt };
        let failures = attempt.saturating_add(1);
        let class_limit = match failure.retryable() {
            Retryable::No => return Action::GiveUp,
            Retryable::AFewTimes(n) => Some(n),
            Retryable::Yes => None,
        };
        let limit = match (class_limit, self.max_attempts) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if limit.is_some_and(|limit| failures >= limit) {
            return Action::GiveUp;
        }
        let jitter = unit(jitter);
        let mut wait = equal_jitter(self.base, self.cap, attempt, jitter);
        if let Some(retry_after) = failure.retry_after() {
            let floor = retry_after.min(self.cap);
            let spread = self.base.max(floor / 4);
            wait = wait.max(floor.saturating_add(spread.mul_f64(jitter)));
        }
        Action::RetryAfter(wait.min(self.cap))
    }
}

/// Equal jitter: `d/2 + jitter·d/2` for `d = min(cap, base·2^attempt)` (a cap below the base
/// counts as the base). `jitter` is clamped to `0..=1`; NaN counts as 0.
pub fn equal_jitter(base: Duration, cap: Duration, attempt: u32, jitter: f64) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(31)).min(cap.max(base));
    let half = exp / 2;
    half + half.mul_f64(unit(jitter))
}

/// A jitter sample clamped to `0..=1`; NaN counts as 0.
fn unit(jitter: f64) -> f64 {
    if jitter.is_nan() {
        0.0
    } else {
        jitter.clamp(0.0, 1.0)
    }
}

/// The attempt counter for one object, reset by progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryState {
    attempt: u32,
    failures: u64,
}

impl RetryState {
    /// A fresh counter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Record a failure and decide (see [`RetryPolicy::decide`]).
    pub fn on_failure(
        &mut self,
        policy: &RetryPolicy,
        failure: &Failure,
        progressed: bool,
        jitter: f64,
    ) -> Action {
        let action = policy.decide(self.attempt, failure, progressed, jitter);
        self.attempt = if progressed && failure.counts_progress() {
            1
        } else {
            self.attempt.saturating_add(1)
        };
        self.failures = self.failures.saturating_add(1);
        action
    }

    /// Failures in a row without progress.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// All failures recorded, progress or not.
    pub fn failures(&self) -> u64 {
        self.failures
    }
}

/// Parse `Retry-After`: delta-seconds or an HTTP-date (a past date gives zero).
/// `None` when it is neither.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    if v.bytes().all(|b| b.is_ascii_digit()) {
        // Only overflow can fail here: saturate (the policy caps the wait).
        return Some(Duration::from_secs(v.parse::<u64>().unwrap_or(u64::MAX)));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn status(code: u16) -> Failure {
        Failure::Status {
            code,
            retry_after: None,
        }
    }

    #[test]
    fn classification_table() {
        let p = RetryPolicy::default();
        let cases = [
            (Failure::Connect, true),
            (Failure::Reset, true),
            (Failure::Stall, true),
            (Failure::ShortBody, true),
            (Failure::LinkRejected, true),
            (Failure::TooSlow, true),
            (status(408), true),
            (status(429), true),
            (status(500), true),
            (status(502), true),
            (status(503), true),
            (status(504), true),
            (status(599), true),
            (status(600), false),
            (status(400), false),
            (status(401), false),
            (status(403), false),
            (status(404), false),
            (status(416), false),
            (status(451), false),
            (status(200), false),
            (status(307), false),
            (Failure::Integrity, false),
            (Failure::Fatal, false),
        ];
        for (failure, retries) in cases {
            let action = p.decide(0, &failure, false, 0.5);
            assert_eq!(
                matches!(action, Action::RetryAfter(_)),
                retries,
                "{failure:?}: {action:?}"
            );
        }
    }

    #[test]
    fn transient_status_table() {
        let cases = [
            (200, false),
            (307, false),
            (400, false),
            (401, false),
            (404, false),
            (407, false),
            (408, true),
            (416, false),
            (429, true),
            (499, false),
            (500, true),
            (501, true),
            (503, true),
            (599, true),
            (600, false),
        ];
        for (code, want) in cases {
            assert_eq!(is_transient_status(code), want, "{code}");
        }
    }

    #[test]
    fn equal_jitter_table() {
        let ms = Duration::from_millis;
        // (base, cap, attempt, jitter, want)
        let cases = [
            (S(1), S(300), 0, 0.0, ms(500)),
            (S(1), S(300), 0, 1.0, S(1)),
            (S(1), S(300), 3, 0.5, S(6)),
            (S(1), S(300), 9, 0.0, S(150)),
            (S(1), S(300), u32::MAX, 1.0, S(300)),
            (S(2), S(1), 0, 1.0, S(2)), // a cap below the base waits one base step
            (S(2), S(1), 5, 0.0, S(1)),
            (S(1), S(300), 0, -1.0, ms(500)),
            (S(1), S(300), 0, 9.0, S(1)),
            (S(1), S(300), 0, f64::NAN, ms(500)),
        ];
        for (base, cap, attempt, jitter, want) in cases {
            assert_eq!(
                equal_jitter(base, cap, attempt, jitter),
                want,
                "{base:?} {cap:?} {attempt} {jitter}"
            );
        }
    }

    #[test]
    fn budget_table() {
        let eight = RetryPolicy::default();
        let forever = RetryPolicy::forever();
        let once = RetryPolicy::new(S(1), S(300), Some(1)).unwrap();
        // (policy, attempt, failure, progressed, retries?)
        let cases = [
            (eight, 0, Failure::Reset, false, true),
            (eight, 6, Failure::Reset, false, true),
            (eight, 7, Failure::Reset, false, false), // the 8th failure in a row
            (eight, 7, Failure::Reset, true, true),   // ...unless it made progress
            (eight, 6, Failure::TooSlow, true, true),
            (eight, 7, Failure::TooSlow, true, false), // a trickle is no progress
            (forever, u32::MAX, Failure::TooSlow, true, true),
            (eight, 1000, status(503), true, true),
            (forever, 1000, Failure::Stall, false, true),
            (forever, u32::MAX, Failure::Connect, false, true),
            (once, 0, Failure::Connect, false, false),
            // Other 5xx: 3 attempts in a row at most, whatever the budget.
            (forever, 1, status(500), false, true),
            (forever, 2, status(500), false, false),
            (eight, 2, status(501), false, false),
            (eight, 2, status(502), false, true),
            (forever, 2, status(500), true, true),
        ];
        for (p, attempt, failure, progressed, retries) in cases {
            let action = p.decide(attempt, &failure, progressed, 0.0);
            assert_eq!(
                matches!(action, Action::RetryAfter(_)),
                retries,
                "{p:?} attempt {attempt} {failure:?} progressed {progressed}: {action:?}"
            );
        }
    }

    fn wait(p: &RetryPolicy, attempt: u32, failure: &Failure, progressed: bool, jitter: f64) -> Duration {
        match p.decide(attempt, failure, progressed, jitter) {
            Action::RetryAfter(d) => d,
            Action::GiveUp => panic!("gave up at {attempt} on {failure:?}"),
        }
    }

    #[test]
    fn backoff_values() {
        let p = RetryPolicy::forever();
        let ms = Duration::from_millis;
        let cases = [
            (0, 0.0, ms(500)),
            (0, 1.0, S(1)),
            (1, 0.0, S(1)),
            (1, 0.5, ms(1500)),
            (3, 1.0, S(8)),
            (8, 1.0, S(256)),
            (9, 0.0, S(150)), // 512 s capped at 300, halved
            (9, 1.0, S(300)),
            (200, 1.0, S(300)),
            // Jitter outside 0..=1 is clamped; NaN counts as 0.
            (0, -3.0, ms(500)),
            (0, 7.0, S(1)),
            (0, f64::NAN, ms(500)),
        ];
        for (attempt, jitter, want) in cases {
            assert_eq!(
                wait(&p, attempt, &Failure::Reset, false, jitter),
                want,
                "{attempt} {jitter}"
            );
        }
    }

    #[test]
    fn backoff_is_monotone_and_capped() {
        for p in [
            RetryPolicy::forever(),
            RetryPolicy::new(Duration::from_millis(250), S(60), None).unwrap(),
            RetryPolicy::new(S(7), S(7), None).unwrap(),
        ] {
            for jitter in [0.0, 0.25, 0.5, 0.99, 1.0] {
                let mut last = Duration::ZERO;
                for attempt in 0..100 {
                    let d = wait(&p, attempt, &Failure::Connect, false, jitter);
                    assert!(d >= last, "{p:?} attempt {attempt}: {d:?} < {last:?}");
                    assert!(d <= p.cap(), "{p:?} attempt {attempt}: {d:?}");
                    assert!(d >= p.base() / 2, "{p:?} attempt {attempt}: {d:?}");
                    last = d;
                }
                assert!(last >= p.cap() / 2);
            }
        }
    }

    #[test]
    fn retry_after_is_a_floor_plus_jitter() {
        let p = RetryPolicy::forever();
        let ra = |code, secs| Failure::Status {
            code,
            retry_after: Some(S(secs)),
        };
        let cases = [
            (ra(429, 60), 0, 0.0, S(60)),
            (ra(429, 60), 0, 1.0, S(75)), // + up to a quarter
            (ra(429, 2), 0, 1.0, S(3)),   // + up to one base
            (ra(503, 50), 0, 0.0, S(50)),
            (ra(429, 0), 0, 0.0, Duration::from_millis(500)), // backoff still applies
            (ra(429, 10), 8, 0.0, S(128)),                    // backoff above the floor wins
            (ra(429, 3600), 0, 0.5, S(300)),                  // never above the cap
            (ra(429, u64::MAX), 0, 1.0, S(300)),
        ];
        for (failure, attempt, jitter, want) in cases {
            assert_eq!(wait(&p, attempt, &failure, false, jitter), want, "{failure:?}");
        }
        // Retry-After does not make a permanent failure retryable.
        assert_eq!(p.decide(0, &ra(404, 1), false, 0.0), Action::GiveUp);
    }

    #[test]
    fn progress_resets_the_counter() {
        let p = RetryPolicy::default();
        let mut st = RetryState::new();
        for i in 0..7 {
            assert!(
                matches!(
                    st.on_failure(&p, &Failure::Reset, false, 0.0),
                    Action::RetryAfter(_)
                ),
                "{i}"
            );
        }
        assert_eq!(st.attempt(), 7);
        // Progress on the 8th: judged as a first failure, so the short wait.
        assert_eq!(
            st.on_failure(&p, &Failure::Reset, true, 0.0),
            Action::RetryAfter(Duration::from_millis(500))
        );
        assert_eq!(st.attempt(), 1);
        for _ in 0..6 {
            assert!(matches!(
                st.on_failure(&p, &Failure::Stall, false, 0.0),
                Action::RetryAfter(_)
            ));
        }
        assert_eq!(st.on_failure(&p, &Failure::Stall, false, 0.0), Action::GiveUp);
        assert_eq!(st.failures(), 15);
    }

    #[test]
    fn a_slow_body_never_resets_the_counter() {
        let p = RetryPolicy::new(S(1), S(300), Some(3)).unwrap();
        let mut st = RetryState::new();
        for want in [1, 2] {
            assert!(matches!(
                st.on_failure(&p, &Failure::TooSlow, true, 0.0),
                Action::RetryAfter(_)
            ));
            assert_eq!(st.attempt(), want);
        }
        // The third slow attempt in a row gives up, bytes or not.
        assert_eq!(st.on_failure(&p, &Failure::TooSlow, true, 0.0), Action::GiveUp);
        // Real progress after slow attempts still resets the counter.
        let mut st = RetryState::new();
        st.on_failure(&p, &Failure::TooSlow, true, 0.0);
        st.on_failure(&p, &Failure::Reset, true, 0.0);
        assert_eq!(st.attempt(), 1);
    }

    #[test]
    fn new_table() {
        assert!(RetryPolicy::new(S(1), S(300), Some(8)).is_ok());
        assert_eq!(
            RetryPolicy::new(S(0), S(300), None),
            Err(RetryPolicyError::ZeroBase)
        );
        assert!(matches!(
            RetryPolicy::new(S(10), S(5), None),
            Err(RetryPolicyError::CapBelowBase { .. })
        ));
        assert_eq!(
            RetryPolicy::new(S(1), S(5), Some(0)),
            Err(RetryPolicyError::ZeroAttempts)
        );
        assert_eq!(
            RetryPolicy::default(),
            RetryPolicy::new(S(1), S(300), Some(8)).unwrap()
        );
    }

    #[test]
    fn parse_retry_after_table() {
        // Sun, 06 Nov 1994 08:49:37 GMT
        let date = SystemTime::UNIX_EPOCH + S(784_111_777);
        let now = date - S(30);
        let cases = [
            ("120", Some(S(120))),
            (" 5 ", Some(S(5))),
            ("0", Some(S(0))),
            ("99999999999999999999999", Some(S(u64::MAX))),
            ("Sun, 06 Nov 1994 08:49:37 GMT", Some(S(30))),
            ("Sunday, 06-Nov-94 08:49:37 GMT", Some(S(30))),
            ("Sun Nov  6 08:49:37 1994", Some(S(30))),
            ("Sun, 06 Nov 1994 08:48:37 GMT", Some(S(0))), // in the past
            ("-1", None),
            ("+5", None),
            ("1.5", None),
            ("", None),
            ("soon", None),
            ("Sun, 06 Nov 1994 08:49:37", None),
        ];
        for (value, want) in cases {
            assert_eq!(parse_retry_after(value, now), want, "{value:?}");
        }
    }
}
