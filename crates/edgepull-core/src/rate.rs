//! The minimum-rate rule for a blob body: a server that trickles bytes is abandoned.
//!
//! Owns: [`MinRate`] (`timeouts.min_bytes_per_sec` over `timeouts.min_rate_window_secs`) and
//! [`RateWatch`], fed `(now, bytes)` samples of one response body, which answers
//! [`Verdict::TooSlow`] once a whole window has passed with fewer than
//! `min × window` bytes in the last window. The idle-read timeout cannot see this: one
//! byte every 50 s keeps a connection "active" forever and holds the daemon's only job.
//!
//! Sans-IO: time is passed in as the [`Duration`] since any fixed point the caller picks
//! (the same for every call). Memory is fixed: the window is kept as [`SLOTS`] + 1
//! counters, so the window judged is between `window` and `window + window/SLOTS` long —
//! never shorter, so a server at exactly the minimum is never abandoned.
//!
//! Must never: judge before a whole window has passed, grow with the bytes or samples fed,
//! overflow (sums saturate), or go wrong when time runs backwards (it counts as no time).

use std::time::Duration;

/// Counters the window is split into.
pub const SLOTS: u32 = 16;

/// `min_bytes_per_sec` averaged over `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinRate {
    bytes_per_sec: u64,
    window: Duration,
}

impl MinRate {
    /// The rule, or `None` when it is off (a rate of 0 or an empty window).
    pub fn new(bytes_per_sec: u64, window: Duration) -> Option<Self> {
        (bytes_per_sec > 0 && !window.is_zero()).then_some(Self {
            bytes_per_sec,
            window,
        })
    }

    /// The minimum rate.
    pub fn bytes_per_sec(&self) -> u64 {
        self.bytes_per_sec
    }

    /// The window the rate is averaged over.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Bytes that must arrive within one window (saturating).
    pub fn required(&self) -> u64 {
        let bytes = u128::from(self.bytes_per_sec) * self.window.as_nanos() / 1_000_000_000;
        u64::try_from(bytes).unwrap_or(u64::MAX)
    }
}

/// What the watch says about the body so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Fast enough, or too early to tell.
    Ok,
    /// `received` bytes arrived in the last `window`, fewer than the `required`.
    TooSlow {
        /// Bytes in the last window.
        received: u64,
        /// Bytes the window needed.
        required: u64,
        /// The window.
        window: Duration,
    },
}

/// The bytes of one response body over time, in fixed memory.
#[derive(Debug, Clone)]
pub struct RateWatch {
    rule: MinRate,
    start: Duration,
    slot: Duration,
    /// `counts[n % len]` holds the bytes of slot `n` (slot `n` covers
    /// `start + n·slot .. start + (n+1)·slot`) for the last `len` slots up to `newest`.
    counts: [u64; SLOTS as usize + 1],
    newest: u64,
}

impl RateWatch {
    /// Watch a body that starts at `now`.
    pub fn new(rule: MinRate, now: Duration) -> Self {
        Self {
            rule,
            start: now,
            slot: (rule.window / SLOTS).max(Duration::from_nanos(1)),
            counts: [0; SLOTS as usize + 1],
            newest: 0,
        }
    }

    /// How often the caller should ask for a [`RateWatch::verdict`] when no bytes arrive.
    pub fn check_every(&self) -> Duration {
        self.slot
    }

    /// `bytes` arrived at `now`.
    pub fn record(&mut self, now: Duration, bytes: u64) {
        let n = self.advance(now);
        let i = self.index(n);
        self.counts[i] = self.counts[i].saturating_add(bytes);
    }

    /// The verdict at `now`: too slow when a whole window has passed since the start and the
    /// last window (rounded up to whole slots) holds fewer than the required bytes.
    pub fn verdict(&mut self, now: Duration) -> Verdict {
        self.advance(now);
        let elapsed = now.saturating_sub(self.start);
        if elapsed < self.rule.window {
            return Verdict::Ok;
        }
        let received = self.counts.iter().fold(0u64, |sum, c| sum.saturating_add(*c));
        let required = self.rule.required();
        if received < required {
            Verdict::TooSlow {
                received,
                required,
                window: self.rule.window,
            }
        } else {
            Verdict::Ok
        }
    }

    /// Move the newest slot to the one holding `now` (never backwards), clearing the slots
    /// that fall out of the window; returns that slot's number.
    fn advance(&mut self, now: Duration) -> u64 {
        let elapsed = now.saturating_sub(self.start);
        let n = u64::try_from(elapsed.as_nanos() / self.slot.as_nanos()).unwrap_or(u64::MAX);
        if n <= self.newest {
            return self.newest;
        }
        let len = self.counts.len() as u64;
        if n - self.newest >= len {
            self.counts = [0; SLOTS as usize + 1];
        } else {
            for k in self.newest + 1..=n {
                let i = self.index(k);
                self.counts[i] = 0;
            }
        }
        self.newest = n;
        n
    }

    fn index(&self, n: u64) -> usize {
        // The remainder is below the array length, so it fits a usize.
        (n % self.counts.len() as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;
    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn rule() {
        assert_eq!(MinRate::new(0, S(60)), None);
        assert_eq!(MinRate::new(1024, Duration::ZERO), None);
        let r = MinRate::new(1024, S(60)).unwrap();
        assert_eq!(r.required(), 60 * 1024);
        assert_eq!(MinRate::new(4096, MS(2500)).unwrap().required(), 10_240);
        assert_eq!(MinRate::new(u64::MAX, S(3600)).unwrap().required(), u64::MAX);
    }

    enum Step {
        /// Bytes arriving at a time (ms).
        Bytes(u64, u64),
        /// The verdict at a time (ms): `None` is Ok, `Some(received)` is too slow.
        Check(u64, Option<u64>),
    }
    use Step::*;

    /// Each case: the rule (bytes/s, window ms) and the steps, from a start at 1000 ms.
    fn run(rate: u64, window_ms: u64, steps: &[Step]) {
        let rule = MinRate::new(rate, MS(window_ms)).unwrap();
        let base = 1000;
        let mut w = RateWatch::new(rule, MS(base));
        for (i, step) in steps.iter().enumerate() {
            match step {
                Bytes(t, n) => w.record(MS(base + t), *n),
                Check(t, want) => {
                    let got = w.verdict(MS(base + t));
                    let ok = match (want, got) {
                        (None, Verdict::Ok) => true,
                        (
                            Some(r),
                            Verdict::TooSlow {
                                received,
                                required,
                                window,
                            },
                        ) => *r == received && required == rule.required() && window == rule.window(),
                        _ => false,
                    };
                    assert!(
                        ok,
                        "rate {rate} window {window_ms} ms, step {i} at {t} ms: {got:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn verdict_table() {
        // Nothing at all: fine until a whole window has passed, then too slow.
        run(
            1000,
            10_000,
            &[Check(0, None), Check(9_999, None), Check(10_000, Some(0))],
        );
        // Steady at the minimum: never too slow.
        let steady: Vec<Step> = (0..30)
            .flat_map(|s| [Bytes(s * 1000, 1000), Check(s * 1000 + 999, None)])
            .collect();
        run(1000, 10_000, &steady);
        // Steady just below the minimum: too slow once the window is full.
        let slow: Vec<Step> = (0..10).map(|s| Bytes(s * 1000, 900)).collect();
        let mut slow = slow;
        slow.push(Check(10_000, Some(9_000)));
        run(1000, 10_000, &slow);
        // A burst, then silence: fine while the burst is inside the window, too slow after.
        run(
            1000,
            10_000,
            &[
                Bytes(0, 50_000),
                Check(10_000, None),
                Check(10_624, None),
                Check(10_625, Some(0)),
            ],
        );
        // The trickle of the weakness: one byte every 50 s against 1 KiB/s over 60 s.
        run(
            1024,
            60_000,
            &[
                Bytes(0, 1),
                Bytes(50_000, 1),
                Check(59_999, None),
                Check(60_000, Some(2)),
            ],
        );
        // The end-to-end test's numbers: 4 KiB/s over 2 s, served 1 KiB every 2 s.
        run(
            4096,
            2_000,
            &[
                Bytes(0, 1024),
                Check(1_999, None),
                Bytes(2_000, 1024),
                Check(2_000, Some(2048)),
            ],
        );
        // Old bytes fall out of the window; new ones count.
        run(
            100,
            1_600,
            &[
                Bytes(0, 160),
                Check(1_600, None),
                Check(1_800, Some(0)),
                Bytes(1_800, 160),
                Check(1_800, None),
                Check(3_400, None),
                Check(3_500, Some(0)),
            ],
        );
        // Time running backwards counts as no time; a long silence clears every slot.
        run(
            100,
            1_600,
            &[
                Bytes(500, 100),
                Bytes(100, 100),
                Check(1_600, None),
                Check(1_000_000, Some(0)),
                Bytes(1_000_001, 160),
                Check(1_000_001, None),
            ],
        );
        // Byte counts saturate instead of overflowing.
        run(
            1,
            1_000,
            &[Bytes(0, u64::MAX), Bytes(10, u64::MAX), Check(1_000, None)],
        );
    }

    #[test]
    fn time_before_the_start_is_the_start() {
        let rule = MinRate::new(10, S(1)).unwrap();
        let mut w = RateWatch::new(rule, S(100));
        w.record(S(50), 5);
        assert_eq!(w.verdict(S(50)), Verdict::Ok);
        assert_eq!(
            w.verdict(S(101)),
            Verdict::TooSlow {
                received: 5,
                required: 10,
                window: S(1)
            }
        );
        assert_eq!(w.check_every(), MS(62) + Duration::from_micros(500));
    }
}
