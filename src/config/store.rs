//! The `store` section: where and how the local content store is kept.
//!
//! Owns: [`StoreConfig`], its defaults and limits. The checkpoint default is the store's
//! own ([`edgepull_core::resume::DEFAULT_CHECKPOINT_BYTES`]), never a copy. Pure; must
//! never touch the store itself.
//!
//! `max_blob_bytes` bounds every descriptor size a manifest may claim (checked by the pure
//! [`edgepull_core::oci::sizes::check_blob_sizes`] before anything is downloaded).

use std::path::PathBuf;
use std::time::Duration;

use edgepull_core::resume::DEFAULT_CHECKPOINT_BYTES;
use edgepull_core::store::VerifyOnStart;

use super::ctx::{Ctx, Limits, q};
use super::error::ConfigError;
use super::path::FieldPath;
use super::raw::RawStore;

/// Default `store.path`.
const DEFAULT_STORE_PATH: &str = "/var/lib/edgepull";
/// `store.checkpoint_bytes`: 64 KiB to 1 GiB.
const CHECKPOINT_BYTES: Limits = Limits {
    min: 64 * 1024,
    max: 1024 * 1024 * 1024,
    unit: " bytes (64 KiB to 1 GiB)",
};
/// Default `store.lock_wait_secs`.
const DEFAULT_LOCK_WAIT_SECS: u64 = 30;
/// `store.lock_wait_secs`.
const LOCK_WAIT_SECS: Limits = Limits {
    min: 0,
    max: 3600,
    unit: " seconds",
};
/// Default `store.keep_previous`: one older version stays for rollback.
const DEFAULT_KEEP_PREVIOUS: u32 = 1;
/// `store.keep_previous`: at most 16.
const KEEP_PREVIOUS: Limits = Limits {
    min: 0,
    max: 16,
    unit: " older versions per image (0 keeps none: no rollback)",
};
/// Default `store.min_free_bytes`: 64 MiB stay free on the store's filesystem.
const DEFAULT_MIN_FREE_BYTES: u64 = 64 * 1024 * 1024;
/// Default `store.ingest_max_age_secs`: a partial download untouched for 7 days is removed.
const DEFAULT_INGEST_MAX_AGE_SECS: u64 = 7 * 24 * 3600;
/// `store.ingest_max_age_secs`: 1 minute to 1 year.
const INGEST_MAX_AGE_SECS: Limits = Limits {
    min: 60,
    max: 365 * 24 * 3600,
    unit: " seconds (1 minute to 1 year; partial downloads are resumed until then)",
};

/// Default `store.max_blob_bytes`: 64 GiB.
const DEFAULT_MAX_BLOB_BYTES: u64 = 64 << 30;
/// `store.max_blob_bytes`: 1 MiB to 2^63 bytes (8 EiB, in effect no limit; the sum of all
/// sizes is still checked against `u64`).
const MAX_BLOB_BYTES: Limits = Limits {
    min: 1 << 20,
    max: 1 << 63,
    unit: " bytes (1 MiB to 8 EiB; a manifest claiming a larger blob is refused)",
};

/// The `store` section, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Store root (absolute).
    pub path: PathBuf,
    /// Bytes between durable checkpoints of a download (≥ 64 KiB).
    pub(crate) checkpoint_bytes: u64,
    /// How long to wait for the store lock held by another process.
    pub lock_wait: Duration,
    /// Older versions of each image kept (and referenced in `index.json`) for rollback.
    pub(crate) keep_previous: u32,
    /// Bytes that must stay free on the store's filesystem after a download.
    pub(crate) min_free_bytes: u64,
    /// Partial downloads not written to for this long are removed.
    pub ingest_max_age: Duration,
    /// When the daemon re-hashes the current images' blobs at start-up.
    pub(crate) verify_on_start: VerifyOnStart,
    /// The largest blob size a manifest may claim.
    pub(crate) max_blob_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from(DEFAULT_STORE_PATH),
            checkpoint_bytes: DEFAULT_CHECKPOINT_BYTES,
            lock_wait: Duration::from_secs(DEFAULT_LOCK_WAIT_SECS),
            keep_previous: DEFAULT_KEEP_PREVIOUS,
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
            ingest_max_age: Duration::from_secs(DEFAULT_INGEST_MAX_AGE_SECS),
            verify_on_start: VerifyOnStart::default(),
            max_blob_bytes: DEFAULT_MAX_BLOB_BYTES,
        }
    }
}

impl Ctx {
    /// The `store` section; defaults when it is absent.
    pub(super) fn store(&self, raw: Option<RawStore>) -> Result<StoreConfig, ConfigError> {
        let at = FieldPath::root().key("store");
        let Some(raw) = raw else {
            return Ok(StoreConfig::default());
        };
        let default = StoreConfig::default();
        let path = match raw.path {
            None => default.path,
            Some(p) => self.abs_path(&at.key("path"), &p)?,
        };
        let checkpoint_bytes = self.number(
            &at.key("checkpoint_bytes"),
            raw.checkpoint_bytes,
            CHECKPOINT_BYTES,
        )?;
        let lock_wait = self.secs(&at.key("lock_wait_secs"), raw.lock_wait_secs, LOCK_WAIT_SECS)?;
        let keep_previous = self.number(&at.key("keep_previous"), raw.keep_previous, KEEP_PREVIOUS)?;
        let ingest_max_age = self.secs(
            &at.key("ingest_max_age_secs"),
            raw.ingest_max_age_secs,
            INGEST_MAX_AGE_SECS,
        )?;
        let max_blob_bytes = self.number(&at.key("max_blob_bytes"), raw.max_blob_bytes, MAX_BLOB_BYTES)?;
        Ok(StoreConfig {
            path,
            checkpoint_bytes: checkpoint_bytes.unwrap_or(default.checkpoint_bytes),
            lock_wait: lock_wait.unwrap_or(default.lock_wait),
            keep_previous: keep_previous.map_or(default.keep_previous, |n| {
                u32::try_from(n).unwrap_or(DEFAULT_KEEP_PREVIOUS)
            }),
            min_free_bytes: raw.min_free_bytes.unwrap_or(default.min_free_bytes),
            ingest_max_age: ingest_max_age.unwrap_or(default.ingest_max_age),
            verify_on_start: self.verify_on_start(&at, raw.verify_on_start.as_deref())?,
            max_blob_bytes: max_blob_bytes.unwrap_or(default.max_blob_bytes),
        })
    }

    /// `store.verify_on_start`: one of [`VerifyOnStart::ALL`]'s spellings.
    fn verify_on_start(&self, at: &FieldPath, raw: Option<&str>) -> Result<VerifyOnStart, ConfigError> {
        let Some(value) = raw else {
            return Ok(VerifyOnStart::default());
        };
        VerifyOnStart::parse(value).ok_or_else(|| {
            self.invalid(
                &at.key("verify_on_start"),
                q(value),
                "allowed: \"unclean\" (re-hash the current images' blobs at start-up after a run that did not shut down cleanly; the default), \"always\" (at every start) or \"never\"",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{assert_invalid, err, ok, with};
    use serde_json::json;

    #[test]
    fn verify_on_start_defaults_to_unclean_and_takes_each_spelling() {
        assert_eq!(ok(&with(|_| {})).store.verify_on_start, VerifyOnStart::Unclean);
        for v in VerifyOnStart::ALL {
            let c = ok(&with(|c| c["store"] = json!({ "verify_on_start": v.as_str() })));
            assert_eq!(c.store.verify_on_start, v);
        }
    }

    #[test]
    fn verify_on_start_refuses_other_values_naming_the_field_and_the_choices() {
        let e = err(&with(|c| c["store"] = json!({ "verify_on_start": "sometimes" })));
        assert_invalid(
            &e,
            "store.verify_on_start",
            &["\"sometimes\"", "\"unclean\"", "\"always\"", "\"never\""],
        );
    }

    #[test]
    fn max_blob_bytes_default_range_and_errors() {
        assert_eq!(ok(&with(|_| {})).store.max_blob_bytes, 64 << 30);
        for n in [1u64 << 20, 1 << 40, 1 << 63] {
            let c = ok(&with(|v| v["store"] = json!({ "max_blob_bytes": n })));
            assert_eq!(c.store.max_blob_bytes, n);
        }
        for bad in [0u64, (1 << 20) - 1, (1 << 63) + 1, u64::MAX] {
            let e = err(&with(|v| v["store"] = json!({ "max_blob_bytes": bad })));
            assert_invalid(
                &e,
                "store.max_blob_bytes",
                &[
                    &bad.to_string(),
                    "1048576 to 9223372036854775808",
                    "1 MiB to 8 EiB",
                ],
            );
        }
    }
}
