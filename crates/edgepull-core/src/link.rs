//! The link as a resource: a byte-rate cap (token bucket), download windows and a daily
//! quota.
//!
//! Owns: parsing sizes (`2MiB`, `500K`, `1048576`), the [`TokenBucket`] every download
//! shares, [`Window`] parsing and the open/closed arithmetic of a [`Schedule`] (UTC, or
//! local time through an offset function the caller gives, so DST is testable), the
//! [`QuotaDay`] counter and its UTC-day rollover, the [`gate`] that combines them, and the
//! ETA under the cap. Pure: time is always passed in (a `Duration` since any origin for
//! the bucket, Unix seconds for windows and the quota); never sleeps, never reads a clock.

use std::time::Duration;

/// Seconds in a day.
const DAY: i64 = 86_400;

/// Why a size or rate string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// Nothing to parse.
    #[error("empty size")]
    Empty,
    /// Not a number followed by an optional unit.
    #[error(
        "{value:?} is not a size: expected a whole number of bytes with an optional unit \
         K, M, G (×1000) or KiB, MiB, GiB (×1024), e.g. 2MiB or 500K"
    )]
    Syntax { value: String },
    /// Larger than `u64` bytes.
    #[error("{value:?} is too large")]
    Overflow { value: String },
    /// A rate of zero would never download anything.
    #[error("{value:?} is zero; leave the cap out for no cap")]
    Zero { value: String },
}

/// Bytes in `text`: a whole number with an optional unit, case-insensitive: `K`/`KB`,
/// `M`/`MB`, `G`/`GB` (powers of 1000), `KiB`, `MiB`, `GiB` (powers of 1024), `B`, and an
/// optional `/s` (so `2MiB/s` reads as a rate). Zero is refused.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(SizeError::Empty);
    }
    let syntax = || SizeError::Syntax {
        value: text.to_string(),
    };
    let t = t.strip_suffix("/s").unwrap_or(t).trim_end();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(syntax());
    }
    let (num, unit) = t.split_at(digits);
    let n: u64 = num.parse().map_err(|_| SizeError::Overflow {
        value: text.to_string(),
    })?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "m" | "mb" => 1000 * 1000,
        "g" | "gb" => 1000 * 1000 * 1000,
        "ki" | "kib" => 1 << 10,
        "mi" | "mib" => 1 << 20,
        "gi" | "gib" => 1 << 30,
        _ => return Err(syntax()),
    };
    let bytes = n.checked_mul(mult).ok_or_else(|| SizeError::Overflow {
        value: text.to_string(),
    })?;
    if bytes == 0 {
        return Err(SizeError::Zero {
            value: text.to_string(),
        });
    }
    Ok(bytes)
}

/// A token bucket in bytes, shared by every download: it starts empty and holds at most
/// one second's worth, so `N` bytes never take less than about `N / rate` and no second
/// carries much more than `rate`.
///
/// Reservation style: [`TokenBucket::reserve`] takes the bytes at once (the balance may go
/// negative) and says how long the caller must wait before using them. Callers are served
/// in the order they reserve, so several consumers together never exceed the rate.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBucket {
    rate: u64,
    /// Bytes available (negative: owed).
    balance: f64,
    /// When `balance` was last brought up to date.
    last: Duration,
}

impl TokenBucket {
    /// An empty bucket filling at `rate` bytes per second (at least 1) from `now`.
    pub fn new(rate: u64, now: Duration) -> Self {
        Self {
            rate: rate.max(1),
            balance: 0.0,
            last: now,
        }
    }

    /// The rate in bytes per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Change the rate (a reload): what is owed stays owed, a surplus is capped at one
    /// second of the new rate.
    pub fn set_rate(&mut self, rate: u64, now: Duration) {
        self.refill(now);
        self.rate = rate.max(1);
        self.balance = self.balance.min(self.capacity());
    }

    fn capacity(&self) -> f64 {
        self.rate as f64
    }

    fn refill(&mut self, now: Duration) {
        if now > self.last {
            let gained = (now - self.last).as_secs_f64() * self.rate as f64;
            self.balance = (self.balance + gained).min(self.capacity());
            self.last = now;
        }
    }

    /// Take `bytes` at `now`; the caller waits the returned time before using them
    /// (zero when the bucket had them).
    pub fn reserve(&mut self, bytes: u64, now: Duration) -> Duration {
        self.refill(now);
        self.balance -= bytes as f64;
        if self.balance >= 0.0 {
            Duration::ZERO
        } else {
            // At most bytes/rate + what others owe: finite and far below Duration::MAX.
            Duration::from_secs_f64((-self.balance / self.rate as f64).min(1e9))
        }
    }
}

/// A daily download period, `HH:MM-HH:MM` in minutes of the day; `start > end` runs
/// overnight. `end` may be `24:00`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    start: u16,
    end: u16,
}

/// Why a window was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// Not `HH:MM-HH:MM`.
    #[error("{value:?} is not a window: expected \"HH:MM-HH:MM\" (24-hour, e.g. \"22:00-06:00\")")]
    Syntax { value: String },
    /// An hour over 23 (24 only as `24:00` at the end) or minutes over 59.
    #[error("{value:?}: {time} is not a time of day (00:00 to 23:59; 24:00 only as an end)")]
    Time { value: String, time: String },
    /// Start equals end: empty or all day, ambiguous.
    #[error("{value:?} starts where it ends; for downloads at any time leave \"windows\" out")]
    Empty { value: String },
}

impl Window {
    /// Parse `HH:MM-HH:MM`.
    pub fn parse(text: &str) -> Result<Self, WindowError> {
        let syntax = || WindowError::Syntax {
            value: text.to_string(),
        };
        let (a, b) = text.trim().split_once('-').ok_or_else(syntax)?;
        let minutes = |part: &str, end: bool| -> Result<u16, WindowError> {
            let part = part.trim();
            let (h, m) = part.split_once(':').ok_or_else(syntax)?;
            let ok = |s: &str| s.len() == 2 && s.bytes().all(|c| c.is_ascii_digit());
            if !ok(h) || !ok(m) {
                return Err(syntax());
            }
            let (h, m): (u16, u16) = (h.parse().map_err(|_| syntax())?, m.parse().map_err(|_| syntax())?);
            if m > 59 || h > 24 || (h == 24 && (m != 0 || !end)) {
                return Err(WindowError::Time {
                    value: text.to_string(),
                    time: part.to_string(),
                });
            }
            Ok(h * 60 + m)
        };
        let (start, end) = (minutes(a, false)?, minutes(b, true)?);
        if start == end {
            return Err(WindowError::Empty {
                value: text.to_string(),
            });
        }
        Ok(Self { start, end })
    }

    /// Whether minute-of-day `m` (0..1440) is inside.
    pub fn contains(&self, m: u16) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&m)
        } else {
            m >= self.start || m < self.end
        }
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
        write!(f, "{}-{}", hm(self.start), hm(self.end))
    }
}

/// Which clock the windows are read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeZone {
    /// UTC (the default).
    #[default]
    Utc,
    /// The device's local time, as the caller's offset function gives it.
    Local,
}

/// Whether downloads may run now, and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowState {
    /// Inside a window (or there are none); it closes at this Unix time, if ever.
    Open { closes_at: Option<i64> },
    /// Outside every window; the next opens at this Unix time.
    Closed { opens_at: i64 },
}

/// The configured windows in their time zone. No windows: always open.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Schedule {
    pub windows: Vec<Window>,
    pub zone: TimeZone,
}

impl Schedule {
    fn open_at(&self, unix: i64, offset: &dyn Fn(i64) -> i32) -> bool {
        let shift = match self.zone {
            TimeZone::Utc => 0,
            TimeZone::Local => i64::from(offset(unix)),
        };
        let minute = (unix.saturating_add(shift)).rem_euclid(DAY) / 60;
        let minute = u16::try_from(minute).unwrap_or(0);
        self.windows.iter().any(|w| w.contains(minute))
    }

    /// The state at `now` (Unix seconds). `offset(t)` is the local time's offset from UTC
    /// in seconds at `t` (ignored for UTC). Transitions are found on whole minutes, up to
    /// three days ahead (enough for any DST shift); none found means it never changes.
    pub fn state(&self, now: i64, offset: &dyn Fn(i64) -> i32) -> WindowState {
        if self.windows.is_empty() {
            return WindowState::Open { closes_at: None };
        }
        let open = self.open_at(now, offset);
        let first = now - now.rem_euclid(60) + 60;
        let change = (0..3 * 1440)
            .map(|k| first + k * 60)
            .find(|t| self.open_at(*t, offset) != open);
        match (open, change) {
            (true, t) => WindowState::Open { closes_at: t },
            (false, Some(t)) => WindowState::Closed { opens_at: t },
            // Never open in three days: cannot happen with a non-empty window; stay closed a day.
            (false, None) => WindowState::Closed { opens_at: now + DAY },
        }
    }
}

/// The quota's count for one UTC day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct QuotaDay {
    /// Days since 1970-01-01 (UTC).
    pub day: i64,
    /// Bytes received that day.
    pub bytes: u64,
}

impl QuotaDay {
    /// The UTC day of Unix time `unix`.
    pub fn day_of(unix: i64) -> i64 {
        unix.div_euclid(DAY)
    }

    /// Start a new day's count when `now` is on a later day than the count (an earlier
    /// day, a clock set back, keeps the count: never a free second quota).
    pub fn roll(&mut self, now: i64) {
        let today = Self::day_of(now);
        if today > self.day {
            *self = Self { day: today, bytes: 0 };
        }
    }

    /// Count `bytes` received at `now`.
    pub fn add(&mut self, bytes: u64, now: i64) {
        self.roll(now);
        self.bytes = self.bytes.saturating_add(bytes);
    }

    /// Bytes left of `max` today at `now`.
    pub fn remaining(&self, max: u64, now: i64) -> u64 {
        let mut d = *self;
        d.roll(now);
        max.saturating_sub(d.bytes)
    }

    /// Unix time the next UTC day starts after `now`.
    pub fn next_day(now: i64) -> i64 {
        (Self::day_of(now) + 1) * DAY
    }
}

/// Why the link is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClosedBy {
    /// Outside every download window.
    Window,
    /// Today's `max_bytes_per_day` is used up.
    Quota,
}

impl ClosedBy {
    /// For logs and `status.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            ClosedBy::Window => "outside download windows",
            ClosedBy::Quota => "daily quota used up",
        }
    }
}

/// Whether a download may run now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Go on; stop at `until` (a window's end or the next UTC day for an unlimited quota
    /// check), if set.
    Open { until: Option<i64> },
    /// Stop now; try again at `opens_at`.
    Closed { by: ClosedBy, opens_at: i64 },
}

/// The gate at `now` from the windows' state and the quota (`max` per day, `None`: no
/// quota). A used-up quota reopens at the next UTC day, or the first window opening after
/// it.
pub fn gate(
    schedule: &Schedule,
    quota: Option<(u64, &QuotaDay)>,
    now: i64,
    offset: &dyn Fn(i64) -> i32,
) -> Gate {
    if let Some((max, day)) = quota
        && day.remaining(max, now) == 0
    {
        let tomorrow = QuotaDay::next_day(now);
        let opens_at = match schedule.state(tomorrow, offset) {
            WindowState::Open { .. } => tomorrow,
            WindowState::Closed { opens_at } => opens_at,
        };
        return Gate::Closed {
            by: ClosedBy::Quota,
            opens_at,
        };
    }
    match schedule.state(now, offset) {
        WindowState::Closed { opens_at } => Gate::Closed {
            by: ClosedBy::Window,
            opens_at,
        },
        WindowState::Open { closes_at } => Gate::Open { until: closes_at },
    }
}

/// A realistic time to download `remaining` bytes: at the cap, or at the measured rate
/// when that is lower (and known); `None` when neither is known.
pub fn eta(remaining: u64, cap: Option<u64>, measured: Option<u64>) -> Option<Duration> {
    let rate = match (cap, measured.filter(|m| *m > 0)) {
        (Some(c), Some(m)) => c.min(m),
        (Some(c), None) => c,
        (None, Some(m)) => m,
        (None, None) => return None,
    };
    Some(Duration::from_secs(remaining.div_ceil(rate.max(1))))
}

/// `unix` as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian, UTC).
pub fn rfc3339(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(DAY), unix.rem_euclid(DAY));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests;
