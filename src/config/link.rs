//! The `link` section: a bandwidth cap, download windows and a daily quota, read by
//! `pull` and `run`.
//!
//! Owns: [`LinkConfig`] and its validation (sizes parsed by the pure
//! [`parse_size`], windows by [`Window::parse`]). Pure; must never start a limiter or
//! read the quota file (the shell `crate::link` does).

use edgepull_core::link::{Schedule, TimeZone, Window, parse_size};

use super::ctx::{Ctx, q};
use super::error::ConfigError;
use super::path::FieldPath;
use super::raw::{RawLink, RawSize};

/// Most windows accepted.
const MAX_WINDOWS: usize = 48;

/// The `link` section; the default caps nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct LinkConfig {
    /// One token bucket for every download, bytes per second.
    pub(crate) max_bytes_per_sec: Option<u64>,
    /// Bytes per UTC day, counted from bytes received.
    pub(crate) max_bytes_per_day: Option<u64>,
    /// When downloads may run.
    pub(crate) schedule: Schedule,
}

impl Ctx {
    /// The `link` section; no limits when it is absent.
    pub(super) fn link(&self, raw: Option<RawLink>) -> Result<LinkConfig, ConfigError> {
        let at = FieldPath::root().key("link");
        let Some(raw) = raw else {
            return Ok(LinkConfig::default());
        };
        let size = |field: &str, raw: Option<RawSize>| -> Result<Option<u64>, ConfigError> {
            let path = at.key(field);
            match raw {
                None => Ok(None),
                Some(RawSize::Bytes(0)) => Err(self.invalid(
                    &path,
                    "0".into(),
                    "a number of bytes above 0, or a string such as \"2MiB\"; leave the field out for no limit",
                )),
                Some(RawSize::Bytes(n)) => Ok(Some(n)),
                Some(RawSize::Text(t)) => parse_size(&t).map(Some).map_err(|e| {
                    self.invalid(&path, q(&t), format!("{e}; or a plain number of bytes"))
                }),
            }
        };
        let max_bytes_per_sec = size("max_bytes_per_sec", raw.max_bytes_per_sec)?;
        let max_bytes_per_day = size("max_bytes_per_day", raw.max_bytes_per_day)?;
        let texts = raw.windows.unwrap_or_default();
        if texts.len() > MAX_WINDOWS {
            return Err(self.invalid(
                &at.key("windows"),
                format!("{} windows", texts.len()),
                format!("at most {MAX_WINDOWS}; join adjacent ones"),
            ));
        }
        let windows = texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                Window::parse(t).map_err(|e| self.invalid(&at.key("windows").index(i), q(t), e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let zone = match raw.timezone.as_deref() {
            None | Some("utc") => TimeZone::Utc,
            Some("local") => TimeZone::Local,
            Some(other) => {
                return Err(self.invalid(
                    &at.key("timezone"),
                    q(other),
                    "\"utc\" (the default) or \"local\" (the device's time zone, /etc/localtime)",
                ));
            }
        };
        Ok(LinkConfig {
            max_bytes_per_sec,
            max_bytes_per_day,
            schedule: Schedule { windows, zone },
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::{assert_invalid, err, ok, with};
    use super::*;

    #[test]
    fn link_section_parses_sizes_windows_and_zone() {
        let c = ok(&with(|v| {
            v["link"] = json!({
                "max_bytes_per_sec": "2MiB",
                "max_bytes_per_day": 500_000_000u64,
                "windows": ["22:00-06:00", "12:00-13:00"],
                "timezone": "local"
            })
        }));
        assert_eq!(c.link.max_bytes_per_sec, Some(2 << 20));
        assert_eq!(c.link.max_bytes_per_day, Some(500_000_000));
        assert_eq!(c.link.schedule.windows.len(), 2);
        assert_eq!(c.link.schedule.zone, TimeZone::Local);
        assert_eq!(ok(&with(|_| {})).link, LinkConfig::default());
    }

    #[test]
    fn link_section_errors_name_field_value_and_fix() {
        let cases = [
            (
                json!({"max_bytes_per_sec": "2 parsecs"}),
                "link.max_bytes_per_sec",
                "KiB",
            ),
            (
                json!({"max_bytes_per_sec": 0}),
                "link.max_bytes_per_sec",
                "leave the field out",
            ),
            (
                json!({"max_bytes_per_day": "0GiB"}),
                "link.max_bytes_per_day",
                "zero",
            ),
            (
                json!({"windows": ["22:00-06:00", "25:00-01:00"]}),
                "link.windows[1]",
                "25:00",
            ),
            (json!({"windows": ["9-17"]}), "link.windows[0]", "HH:MM-HH:MM"),
            (json!({"timezone": "Europe/Berlin"}), "link.timezone", "\"local\""),
        ];
        for (link, field, needle) in cases {
            let e = err(&with(|v| v["link"] = link.clone()));
            assert_invalid(&e, field, &[needle]);
        }
    }
}
