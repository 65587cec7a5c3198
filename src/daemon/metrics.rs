//! The optional Prometheus textfile (`metrics.textfile`), for node_exporter's textfile
//! collector.
//!
//! Owns: the counters and the text exposition format. Counters start at zero when the
//! daemon starts (Prometheus handles counter resets). The file is replaced atomically
//! ([`super::atomic::replace`]: a fresh temp file in the same directory, mode 0644, fsync,
//! rename), so the collector never reads half of it, and only in a directory no other user
//! can write ([`super::atomic::check_dir`], checked at start-up and before each write).
//! [`Metrics::write`] blocks: the daemon calls it only from `spawn_blocking`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// Counters of one image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ImageMetrics {
    /// Blob bytes downloaded and stored.
    pub bytes_downloaded: u64,
    /// Bytes not downloaded again thanks to a checkpoint from an earlier attempt.
    pub bytes_resumed: u64,
    /// Pulls of a new or incomplete version that completed.
    pub pulls_ok: u64,
    /// Attempts that failed.
    pub pulls_failed: u64,
    /// Downloads deferred for the disk budget.
    pub deferred: u64,
    /// Health checks (`hooks.health_check`) that failed.
    pub health_failures: u64,
    /// Rollbacks after a failed health check.
    pub rollbacks: u64,
    /// Unix time of the last successful check, if any.
    pub last_success: Option<u64>,
}

/// All counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Metrics {
    /// Per image reference.
    pub images: BTreeMap<String, ImageMetrics>,
    /// Requests refused by the egress policy (a host, redirect or realm outside the allowlist).
    pub egress_refusals: u64,
    /// The link's state when the file is written (`link` in the config).
    pub link: Option<crate::link::LinkStatus>,
}

/// A label value with `\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    /// The counters of `reference` (created at zero).
    pub(crate) fn image(&mut self, reference: &str) -> &mut ImageMetrics {
        self.images.entry(reference.to_string()).or_default()
    }

    /// The text exposition format.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let mut family =
            |name: &str, kind: &str, help: &str, value: &dyn Fn(&ImageMetrics) -> Option<String>| {
                let _ = writeln!(out, "# HELP {name} {help}");
                let _ = writeln!(out, "# TYPE {name} {kind}");
                for (image, m) in &self.images {
                    if let Some(v) = value(m) {
                        let _ = writeln!(out, "{name}{{image=\"{}\"}} {v}", label(image));
                    }
                }
            };
        family(
            "edgepull_downloaded_bytes_total",
            "counter",
            "Blob bytes downloaded and stored.",
            &|m| Some(m.bytes_downloaded.to_string()),
        );
        family(
            "edgepull_resumed_bytes_total",
            "counter",
            "Blob bytes not downloaded again thanks to a checkpoint.",
            &|m| Some(m.bytes_resumed.to_string()),
        );
        family(
            "edgepull_pulls_ok_total",
            "counter",
            "Pulls of a new or incomplete version that completed.",
            &|m| Some(m.pulls_ok.to_string()),
        );
        family(
            "edgepull_pulls_failed_total",
            "counter",
            "Sync attempts that failed.",
            &|m| Some(m.pulls_failed.to_string()),
        );
        family(
            "edgepull_deferred_total",
            "counter",
            "Downloads deferred because they did not fit the disk budget.",
            &|m| Some(m.deferred.to_string()),
        );
        family(
            "edgepull_health_check_failures_total",
            "counter",
            "Health checks after an update (hooks.health_check) that failed or timed out.",
            &|m| Some(m.health_failures.to_string()),
        );
        family(
            "edgepull_rollbacks_total",
            "counter",
            "Rollbacks to the previous version after a failed health check.",
            &|m| Some(m.rollbacks.to_string()),
        );
        family(
            "edgepull_last_success_timestamp_seconds",
            "gauge",
            "Unix time of the last check that ended without error.",
            &|m| m.last_success.map(|t| t.to_string()),
        );
        let _ = writeln!(
            out,
            "# HELP edgepull_egress_refusals_total Requests refused by the egress allowlist.\n\
             # TYPE edgepull_egress_refusals_total counter\n\
             edgepull_egress_refusals_total {}",
            self.egress_refusals
        );
        if let Some(link) = &self.link {
            let gauges = [
                (
                    "edgepull_link_cap_bytes_per_second",
                    "The bandwidth cap every download shares (link.max_bytes_per_sec); 0: no cap.",
                    link.cap_bytes_per_sec.unwrap_or(0),
                ),
                (
                    "edgepull_link_bytes_today",
                    "Bytes received today (UTC), as counted for link.max_bytes_per_day.",
                    link.bytes_today,
                ),
                (
                    "edgepull_link_paused",
                    "1 while downloads wait for a download window or the next day's quota.",
                    u64::from(link.paused.is_some()),
                ),
                (
                    "edgepull_link_rate_bytes_per_second",
                    "Bytes per second received over the last 5 s.",
                    link.rate_bytes_per_sec,
                ),
            ];
            for (name, help, value) in gauges {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
            }
            if let Some(q) = link.quota_bytes_per_day {
                let _ = writeln!(
                    out,
                    "# HELP edgepull_link_quota_bytes_per_day The daily quota (link.max_bytes_per_day).\n\
                     # TYPE edgepull_link_quota_bytes_per_day gauge\n\
                     edgepull_link_quota_bytes_per_day {q}"
                );
            }
        }
        out
    }

    /// Replace `path` with [`Metrics::render`] atomically, mode 0644 (node_exporter runs
    /// as another user): [`super::atomic::replace`].
    pub(crate) fn write(&self, path: &Path) -> std::io::Result<()> {
        super::atomic::replace(path, self.render().as_bytes(), super::atomic::METRICS_MODE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_node_exporter_text_format() {
        let mut m = Metrics::default();
        *m.image("h/app:stable") = ImageMetrics {
            bytes_downloaded: 10,
            bytes_resumed: 4,
            pulls_ok: 1,
            pulls_failed: 2,
            deferred: 0,
            health_failures: 2,
            rollbacks: 1,
            last_success: Some(1_700_000_000),
        };
        m.image("h/we\"ird\\:1");
        m.egress_refusals = 3;
        let text = m.render();
        for line in [
            "# TYPE edgepull_downloaded_bytes_total counter",
            "edgepull_downloaded_bytes_total{image=\"h/app:stable\"} 10",
            "edgepull_resumed_bytes_total{image=\"h/app:stable\"} 4",
            "edgepull_pulls_ok_total{image=\"h/app:stable\"} 1",
            "edgepull_pulls_failed_total{image=\"h/app:stable\"} 2",
            "edgepull_last_success_timestamp_seconds{image=\"h/app:stable\"} 1700000000",
            "edgepull_pulls_ok_total{image=\"h/we\\\"ird\\\\:1\"} 0",
            "edgepull_egress_refusals_total 3",
            "edgepull_health_check_failures_total{image=\"h/app:stable\"} 2",
            "edgepull_rollbacks_total{image=\"h/app:stable\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing in:\n{text}");
        }
        // No timestamp for an image that never succeeded.
        assert!(!text.contains("edgepull_last_success_timestamp_seconds{image=\"h/we"));
        assert!(text.ends_with('\n'));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("edgepull.prom");
        m.write(&p).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), text);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(
            !text.contains("edgepull_link_"),
            "no link gauges without a link: {text}"
        );
    }

    #[test]
    fn link_gauges() {
        let mut m = Metrics {
            link: Some(crate::link::LinkStatus {
                cap_bytes_per_sec: Some(4_194_304),
                quota_bytes_per_day: Some(100_000_000),
                bytes_today: 12_345,
                rate_bytes_per_sec: 4_000_000,
                paused: Some("daily quota used up; downloads go on at 2030-01-02T00:00:00Z".into()),
                next_window_start: Some("2030-01-02T00:00:00Z".into()),
                eta_secs: None,
            }),
            ..Metrics::default()
        };
        let text = m.render();
        for line in [
            "# TYPE edgepull_link_cap_bytes_per_second gauge",
            "edgepull_link_cap_bytes_per_second 4194304",
            "edgepull_link_bytes_today 12345",
            "edgepull_link_paused 1",
            "edgepull_link_rate_bytes_per_second 4000000",
            "edgepull_link_quota_bytes_per_day 100000000",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing in:\n{text}");
        }
        m.link = Some(crate::link::LinkStatus::default());
        let text = m.render();
        for line in ["edgepull_link_cap_bytes_per_second 0", "edgepull_link_paused 0"] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing in:\n{text}");
        }
        assert!(!text.contains("edgepull_link_quota"), "{text}");
    }
}
