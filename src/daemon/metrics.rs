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
    }
}
