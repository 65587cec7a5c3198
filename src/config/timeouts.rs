//! The `timeouts` section: network timeouts.
//!
//! Owns: [`TimeoutConfig`], its defaults and limits; a pull passes them to the HTTP
//! client, and the minimum transfer rate to the fetcher (a body slower than
//! `min_bytes_per_sec` over `min_rate_window_secs` is abandoned and resumed: see
//! [`edgepull_core::rate`]). Pure; must never build a client or open a connection.

use std::time::Duration;

use edgepull_core::rate::MinRate;

use super::ctx::{Ctx, Limits};
use super::error::ConfigError;
use super::path::FieldPath;
use super::raw::RawTimeouts;

/// Default `timeouts.connect_secs`.
const DEFAULT_CONNECT_SECS: u64 = 15;
/// Default `timeouts.idle_read_secs`.
const DEFAULT_IDLE_READ_SECS: u64 = 60;
/// `timeouts.connect_secs`.
const CONNECT_SECS: Limits = Limits {
    min: 1,
    max: 300,
    unit: " seconds",
};
/// `timeouts.idle_read_secs`.
const IDLE_READ_SECS: Limits = Limits {
    min: 1,
    max: 3600,
    unit: " seconds",
};

/// Default `timeouts.min_bytes_per_sec`: 1 KiB/s.
const DEFAULT_MIN_BYTES_PER_SEC: u64 = 1024;
/// Default `timeouts.min_rate_window_secs`.
const DEFAULT_MIN_RATE_WINDOW_SECS: u64 = 60;
/// `timeouts.min_bytes_per_sec`: 0 turns the rule off.
const MIN_BYTES_PER_SEC: Limits = Limits {
    min: 0,
    max: 1 << 30,
    unit: " bytes per second (0 turns the minimum off)",
};
/// `timeouts.min_rate_window_secs`.
const MIN_RATE_WINDOW_SECS: Limits = Limits {
    min: 1,
    max: 3600,
    unit: " seconds",
};

/// The `timeouts` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeoutConfig {
    /// TCP + TLS connect.
    pub(crate) connect: Duration,
    /// Longest wait for the next bytes of a response.
    pub(crate) idle_read: Duration,
    /// The slowest a blob body may arrive, averaged over a window; `None`: no minimum.
    pub(crate) min_rate: Option<MinRate>,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(DEFAULT_CONNECT_SECS),
            idle_read: Duration::from_secs(DEFAULT_IDLE_READ_SECS),
            min_rate: MinRate::new(
                DEFAULT_MIN_BYTES_PER_SEC,
                Duration::from_secs(DEFAULT_MIN_RATE_WINDOW_SECS),
            ),
        }
    }
}

impl Ctx {
    /// The `timeouts` section; defaults when it is absent.
    pub(super) fn timeouts(&self, raw: Option<RawTimeouts>) -> Result<TimeoutConfig, ConfigError> {
        let at = FieldPath::root().key("timeouts");
        let default = TimeoutConfig::default();
        let Some(raw) = raw else {
            return Ok(default);
        };
        let connect = self.secs(&at.key("connect_secs"), raw.connect_secs, CONNECT_SECS)?;
        let idle_read = self.secs(&at.key("idle_read_secs"), raw.idle_read_secs, IDLE_READ_SECS)?;
        let min_rate = self.number(
            &at.key("min_bytes_per_sec"),
            raw.min_bytes_per_sec,
            MIN_BYTES_PER_SEC,
        )?;
        let window = self.secs(
            &at.key("min_rate_window_secs"),
            raw.min_rate_window_secs,
            MIN_RATE_WINDOW_SECS,
        )?;
        Ok(TimeoutConfig {
            connect: connect.unwrap_or(default.connect),
            idle_read: idle_read.unwrap_or(default.idle_read),
            min_rate: MinRate::new(
                min_rate.unwrap_or(DEFAULT_MIN_BYTES_PER_SEC),
                window.unwrap_or(Duration::from_secs(DEFAULT_MIN_RATE_WINDOW_SECS)),
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assert_invalid, err, ok, with};
    use super::*;
    use serde_json::json;

    #[test]
    fn min_rate_defaults_values_and_errors() {
        let rate = |t: serde_json::Value| ok(&with(|v| v["timeouts"] = t)).timeouts.min_rate;
        let default = MinRate::new(1024, Duration::from_secs(60));
        assert_eq!(ok(&with(|_| {})).timeouts.min_rate, default);
        assert_eq!(rate(json!({})), default);
        assert_eq!(
            rate(json!({ "min_bytes_per_sec": 4096, "min_rate_window_secs": 2 })),
            MinRate::new(4096, Duration::from_secs(2))
        );
        assert_eq!(
            rate(json!({ "min_rate_window_secs": 10 })),
            MinRate::new(1024, Duration::from_secs(10))
        );
        assert_eq!(rate(json!({ "min_bytes_per_sec": 0 })), None, "0 turns it off");
        let e = err(&with(|v| {
            v["timeouts"] = json!({ "min_bytes_per_sec": (1u64 << 30) + 1 })
        }));
        assert_invalid(
            &e,
            "timeouts.min_bytes_per_sec",
            &["1073741825", "0 to 1073741824", "off"],
        );
        for bad in [0, 3601] {
            let e = err(&with(|v| v["timeouts"] = json!({ "min_rate_window_secs": bad })));
            assert_invalid(
                &e,
                "timeouts.min_rate_window_secs",
                &[&bad.to_string(), "1 to 3600"],
            );
        }
    }
}
