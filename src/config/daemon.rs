//! The config sections only daemon mode (`edgepull run`) reads: `sync`, `hooks`, `metrics`.
//!
//! Owns: their types, defaults and validation. Same rules as the rest of the config: every
//! key optional, unknown keys refused, and every error names the file, the field and what
//! is allowed. Pure; must never run a hook or write the metrics file.

use std::path::PathBuf;
use std::time::Duration;

use super::ctx::{Ctx, Limits, q};
use super::error::ConfigError;
use super::images::{MAX_INTERVAL_SECS, MIN_INTERVAL_SECS};
use super::path::FieldPath;
use super::raw::{RawHooks, RawMetrics, RawSync};
use super::store::StoreConfig;

/// Default `sync.interval_secs`: poll every 5 minutes.
const DEFAULT_INTERVAL_SECS: u64 = 300;
/// Default `sync.jitter`: each wait is spread by ±20 %.
const DEFAULT_JITTER: f64 = 0.2;
/// Default `sync.backoff_max_secs`: failures back off up to 15 minutes.
const DEFAULT_BACKOFF_MAX_SECS: u64 = 15 * 60;
/// Default `hooks.timeout_secs`.
const DEFAULT_HOOK_TIMEOUT_SECS: u64 = 60;

/// `sync.interval_secs`: the same range as `images[].interval_secs`.
const INTERVAL_SECS: Limits = Limits {
    min: MIN_INTERVAL_SECS,
    max: MAX_INTERVAL_SECS,
    unit: " seconds (default 300)",
};
/// `sync.backoff_max_secs`: up to a day.
const BACKOFF_MAX_SECS: Limits = Limits {
    min: 1,
    max: 24 * 3600,
    unit: " seconds (default 900)",
};
/// Default `hooks.health_timeout_secs`.
const DEFAULT_HEALTH_TIMEOUT_SECS: u64 = 120;

/// `hooks.health_timeout_secs`: up to an hour.
const HEALTH_TIMEOUT_SECS: Limits = Limits {
    min: 1,
    max: 3600,
    unit: " seconds (default 120)",
};
/// `hooks.timeout_secs`: up to an hour.
const HOOK_TIMEOUT_SECS: Limits = Limits {
    min: 1,
    max: 3600,
    unit: " seconds (default 60)",
};
const MAX_HOOK_ARGS: usize = 64;

/// A fraction in `0.0..=1.0` (validated, never NaN).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub(crate) struct Jitter(f64);

// NaN is refused when parsing, so equality is total.
impl Eq for Jitter {}

impl Jitter {
    /// `value` if it is a fraction in `0.0..=1.0`.
    pub(crate) fn new(value: f64) -> Option<Self> {
        (0.0..=1.0).contains(&value).then_some(Self(value))
    }

    /// The fraction.
    pub(crate) fn get(self) -> f64 {
        self.0
    }
}

impl Default for Jitter {
    fn default() -> Self {
        Self(DEFAULT_JITTER)
    }
}

/// The `sync` section: how the daemon schedules checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SyncConfig {
    /// Time between checks of an image without its own `interval_secs`.
    pub(crate) interval: Duration,
    /// Each wait is `interval × (1 ± jitter)`, so a fleet does not poll in lockstep.
    pub(crate) jitter: Jitter,
    /// Longest wait after failures (exponential backoff from 1 s, with jitter).
    pub(crate) backoff_max: Duration,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(DEFAULT_INTERVAL_SECS),
            jitter: Jitter::default(),
            backoff_max: Duration::from_secs(DEFAULT_BACKOFF_MAX_SECS),
        }
    }
}

/// The `hooks` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HooksConfig {
    /// Command (argv, no shell) run after an image switched to a new digest.
    pub(crate) on_update: Option<Vec<String>>,
    /// How long a hook may run before it is killed.
    pub(crate) timeout: Duration,
    /// Command (argv, no shell) run after `on_update` to judge the new version: a non-zero
    /// exit, a signal or a timeout rolls the image back to the previous version.
    pub(crate) health_check: Option<Vec<String>>,
    /// How long the health check may run before it is killed (and counted as failed).
    pub(crate) health_timeout: Duration,
}

impl Default for HooksConfig {
    fn default() -> Self {
        Self {
            on_update: None,
            timeout: Duration::from_secs(DEFAULT_HOOK_TIMEOUT_SECS),
            health_check: None,
            health_timeout: Duration::from_secs(DEFAULT_HEALTH_TIMEOUT_SECS),
        }
    }
}

/// The `metrics` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MetricsConfig {
    /// node_exporter textfile (`*.prom`) rewritten atomically after each change.
    pub(crate) textfile: Option<PathBuf>,
}

impl Ctx {
    pub(super) fn sync(&self, raw: Option<RawSync>) -> Result<SyncConfig, ConfigError> {
        let at = FieldPath::root().key("sync");
        let default = SyncConfig::default();
        let Some(raw) = raw else { return Ok(default) };
        let interval = self.secs(&at.key("interval_secs"), raw.interval_secs, INTERVAL_SECS)?;
        let jitter = match raw.jitter {
            None => default.jitter,
            Some(j) => Jitter::new(j).ok_or_else(|| {
                self.invalid(
                    &at.key("jitter"),
                    j.to_string(),
                    "expected a fraction from 0.0 to 1.0 (default 0.2: each wait is spread by ±20 %)",
                )
            })?,
        };
        let backoff_max = self.secs(
            &at.key("backoff_max_secs"),
            raw.backoff_max_secs,
            BACKOFF_MAX_SECS,
        )?;
        Ok(SyncConfig {
            interval: interval.unwrap_or(default.interval),
            jitter,
            backoff_max: backoff_max.unwrap_or(default.backoff_max),
        })
    }

    /// The `hooks` section. A health check needs a previous version to roll back to, so it
    /// is refused with `store.keep_previous` 0.
    pub(super) fn hooks(
        &self,
        raw: Option<RawHooks>,
        store: &StoreConfig,
    ) -> Result<HooksConfig, ConfigError> {
        let at = FieldPath::root().key("hooks");
        let default = HooksConfig::default();
        let Some(raw) = raw else { return Ok(default) };
        let on_update = match raw.on_update {
            None => None,
            Some(argv) => Some(self.argv(&at.key("on_update"), argv)?),
        };
        let timeout = self.secs(&at.key("timeout_secs"), raw.timeout_secs, HOOK_TIMEOUT_SECS)?;
        let health_check = match raw.health_check {
            None => None,
            Some(argv) => Some(self.argv(&at.key("health_check"), argv)?),
        };
        if health_check.is_some() && store.keep_previous == 0 {
            return Err(self.invalid(
                &FieldPath::root().key("store").key("keep_previous"),
                "0".to_string(),
                "at least 1 when hooks.health_check is set: a failed health check rolls back to \
                 the previous version, which must be kept; set store.keep_previous to 1 or \
                 remove hooks.health_check",
            ));
        }
        let health_timeout = self.secs(
            &at.key("health_timeout_secs"),
            raw.health_timeout_secs,
            HEALTH_TIMEOUT_SECS,
        )?;
        Ok(HooksConfig {
            on_update,
            timeout: timeout.unwrap_or(default.timeout),
            health_check,
            health_timeout: health_timeout.unwrap_or(default.health_timeout),
        })
    }

    fn argv(&self, field: &FieldPath, argv: Vec<String>) -> Result<Vec<String>, ConfigError> {
        let shown = serde_json::Value::from(argv.clone()).to_string();
        let Some(program) = argv.first() else {
            return Err(self.invalid(
                field,
                shown,
                "expected a command as a list, program first, e.g. [\"/usr/local/bin/restart-app\", \"--graceful\"]; \
                 leave the hook out to run nothing",
            ));
        };
        if !program.starts_with('/') {
            return Err(self.invalid(
                &field.index(0),
                q(program),
                "the program must be an absolute path (no shell and no PATH lookup is used), \
                 e.g. /usr/local/bin/restart-app",
            ));
        }
        if argv.len() > MAX_HOOK_ARGS {
            return Err(self.invalid(
                field,
                format!("({} arguments)", argv.len()),
                format!("at most {MAX_HOOK_ARGS} arguments; use a script"),
            ));
        }
        if let Some(i) = argv.iter().position(|a| a.contains('\0')) {
            return Err(self.invalid(
                &field.index(i),
                q(&argv[i]),
                "arguments cannot contain NUL characters",
            ));
        }
        Ok(argv)
    }

    pub(super) fn metrics(
        &self,
        raw: Option<RawMetrics>,
        store: &StoreConfig,
    ) -> Result<MetricsConfig, ConfigError> {
        let at = FieldPath::root().key("metrics");
        let Some(raw) = raw else {
            return Ok(MetricsConfig::default());
        };
        let textfile = match raw.textfile {
            None => None,
            Some(p) => {
                let field = at.key("textfile");
                let path = self.abs_path(&field, &p)?;
                let name_ok = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.len() > ".prom".len() && n.ends_with(".prom"));
                if !name_ok {
                    return Err(self.invalid(
                        &field,
                        q(&p),
                        "node_exporter's textfile collector reads only files named *.prom; use e.g. \
                         /var/lib/prometheus/node-exporter/edgepull.prom",
                    ));
                }
                if path.starts_with(&store.path) {
                    return Err(self.invalid(
                        &field,
                        q(&p),
                        format!(
                            "it is inside store.path ({}), which edgepull owns; put it in \
                             node_exporter's textfile directory",
                            store.path.display()
                        ),
                    ));
                }
                Some(path)
            }
        };
        Ok(MetricsConfig { textfile })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{assert_invalid, err, ok, with};
    use serde_json::json;

    #[test]
    fn defaults() {
        let c = ok(&with(|_| {}));
        assert_eq!(c.sync.interval, Duration::from_secs(300));
        assert_eq!(c.sync.jitter.get(), 0.2);
        assert_eq!(c.sync.backoff_max, Duration::from_secs(900));
        assert_eq!(c.hooks, HooksConfig::default());
        assert_eq!(c.hooks.timeout, Duration::from_secs(60));
        assert_eq!(c.metrics.textfile, None);
        assert_eq!(c.store.keep_previous, 1);
        assert_eq!(c.store.min_free_bytes, 64 * 1024 * 1024);
        assert_eq!(c.store.ingest_max_age, Duration::from_secs(7 * 24 * 3600));
    }

    #[test]
    fn every_field_happy_path() {
        let c = ok(&with(|v| {
            v["sync"] = json!({ "interval_secs": 1, "jitter": 0.0, "backoff_max_secs": 30 });
            v["hooks"] = json!({ "on_update": ["/usr/local/bin/restart", "--now", ""], "timeout_secs": 5 });
            v["metrics"] = json!({ "textfile": "/var/lib/node-exporter/edgepull.prom" });
            v["store"] = json!({ "keep_previous": 0, "min_free_bytes": 0, "ingest_max_age_secs": 60 });
        }));
        assert_eq!(c.sync.interval, Duration::from_secs(1));
        assert_eq!(c.sync.jitter, Jitter::new(0.0).unwrap());
        assert_eq!(c.sync.backoff_max, Duration::from_secs(30));
        assert_eq!(
            c.hooks.on_update.as_deref(),
            Some(&["/usr/local/bin/restart".to_string(), "--now".into(), "".into()][..])
        );
        assert_eq!(c.hooks.timeout, Duration::from_secs(5));
        assert_eq!(c.hooks.health_check, None);
        let h = ok(&with(|v| {
            v["hooks"] = json!({ "health_check": ["/usr/local/bin/app-healthy", "--quick"], "health_timeout_secs": 30 });
        }));
        assert_eq!(
            h.hooks.health_check.as_deref(),
            Some(&["/usr/local/bin/app-healthy".to_string(), "--quick".into()][..])
        );
        assert_eq!(h.hooks.health_timeout, Duration::from_secs(30));
        assert_eq!(h.hooks.on_update, None);
        assert_eq!(
            c.metrics.textfile.as_deref(),
            Some(std::path::Path::new("/var/lib/node-exporter/edgepull.prom"))
        );
        assert_eq!(c.store.keep_previous, 0);
        assert_eq!(c.store.min_free_bytes, 0);
        assert_eq!(c.store.ingest_max_age, Duration::from_secs(60));
        let c = ok(&with(|v| v["sync"] = json!({ "jitter": 1 })));
        assert_eq!(c.sync.jitter.get(), 1.0);
    }

    #[test]
    fn errors_name_field_and_fix() {
        type Patch = fn(&mut serde_json::Value);
        let cases: Vec<(Patch, &str, &[&str])> = vec![
            (
                |v| v["sync"] = json!({ "interval_secs": 0 }),
                "sync.interval_secs",
                &["1 to"],
            ),
            (
                |v| v["sync"] = json!({ "jitter": 1.5 }),
                "sync.jitter",
                &["0.0 to 1.0"],
            ),
            (
                |v| v["sync"] = json!({ "jitter": -0.1 }),
                "sync.jitter",
                &["fraction"],
            ),
            (
                |v| v["sync"] = json!({ "backoff_max_secs": 0 }),
                "sync.backoff_max_secs",
                &["1 to 86400"],
            ),
            (
                |v| v["hooks"] = json!({ "on_update": [] }),
                "hooks.on_update",
                &["program first"],
            ),
            (
                |v| v["hooks"] = json!({ "on_update": ["restart-app"] }),
                "hooks.on_update[0]",
                &["absolute path", "no shell"],
            ),
            (
                |v| v["hooks"] = json!({ "on_update": ["/bin/x", "a\u{0}b"] }),
                "hooks.on_update[1]",
                &["NUL"],
            ),
            (
                |v| v["hooks"] = json!({ "timeout_secs": 0 }),
                "hooks.timeout_secs",
                &["1 to 3600"],
            ),
            (
                |v| v["hooks"] = json!({ "health_check": ["healthy"] }),
                "hooks.health_check[0]",
                &["absolute path"],
            ),
            (
                |v| v["hooks"] = json!({ "health_check": [] }),
                "hooks.health_check",
                &["program first"],
            ),
            (
                |v| v["hooks"] = json!({ "health_timeout_secs": 7200 }),
                "hooks.health_timeout_secs",
                &["1 to 3600"],
            ),
            (
                |v| {
                    v["hooks"] = json!({ "health_check": ["/bin/true"] });
                    v["store"] = json!({ "keep_previous": 0 });
                },
                "store.keep_previous",
                &["hooks.health_check", "roll"],
            ),
            (
                |v| v["metrics"] = json!({ "textfile": "/var/lib/x/edgepull.txt" }),
                "metrics.textfile",
                &["*.prom"],
            ),
            (
                |v| v["metrics"] = json!({ "textfile": "edgepull.prom" }),
                "metrics.textfile",
                &["absolute"],
            ),
            (
                |v| v["metrics"] = json!({ "textfile": "/var/lib/edgepull/m.prom" }),
                "metrics.textfile",
                &["inside store.path"],
            ),
            (
                |v| v["store"] = json!({ "keep_previous": 17 }),
                "store.keep_previous",
                &["0 to 16"],
            ),
            (
                |v| v["store"] = json!({ "ingest_max_age_secs": 59 }),
                "store.ingest_max_age_secs",
                &["60 to"],
            ),
            (
                |v| v["images"] = json!([{ "ref": "app", "interval_secs": 0 }]),
                "images[0].interval_secs",
                &["1 to"],
            ),
        ];
        for (patch, field, needles) in cases {
            let e = err(&with(patch));
            assert_invalid(&e, field, needles);
        }
    }

    #[test]
    fn unknown_keys_are_refused_with_their_path() {
        for (section, key) in [
            ("sync", "intervall"),
            ("hooks", "on_updated"),
            ("metrics", "path"),
        ] {
            let e = err(&with(|v| v[section] = json!({ key: 1 })));
            let msg = e.to_string();
            assert!(
                matches!(&e, ConfigError::Json { field, .. } if *field == format!("{section}.{key}")),
                "{msg}"
            );
            assert!(msg.contains("unknown field"), "{msg}");
        }
    }
}
