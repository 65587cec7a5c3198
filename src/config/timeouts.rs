//! The `timeouts` section: network timeouts.
//!
//! Owns: [`TimeoutConfig`], its defaults and limits; a pull passes them to the HTTP
//! client. Pure; must never build a client or open a connection.

use std::time::Duration;

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

/// The `timeouts` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeoutConfig {
    /// TCP + TLS connect.
    pub(crate) connect: Duration,
    /// Longest wait for the next bytes of a response.
    pub(crate) idle_read: Duration,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(DEFAULT_CONNECT_SECS),
            idle_read: Duration::from_secs(DEFAULT_IDLE_READ_SECS),
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
        Ok(TimeoutConfig {
            connect: connect.unwrap_or(default.connect),
            idle_read: idle_read.unwrap_or(default.idle_read),
        })
    }
}
