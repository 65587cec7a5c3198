//! The config file as serde reads it: exactly the accepted keys.
//!
//! Owns: the `Raw*` structs, one per JSON object, each with `deny_unknown_fields` so a
//! misspelt key is an error naming its path. Every field is optional, so that a missing
//! one gets the section's own message with its path. Must never validate or default
//! anything (the section modules do), and never be seen outside `config`.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The whole file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) registry: Option<RawRegistry>,
    pub(super) store: Option<RawStore>,
    pub(super) platform: Option<String>,
    pub(super) images: Option<Vec<RawImage>>,
    pub(super) concurrency: Option<u64>,
    pub(super) timeouts: Option<RawTimeouts>,
    pub(super) sync: Option<RawSync>,
    pub(super) hooks: Option<RawHooks>,
    pub(super) metrics: Option<RawMetrics>,
    pub(super) link: Option<RawLink>,
    pub(super) signatures: Option<RawSignatures>,
    pub(super) rollout: Option<RawRollout>,
}

/// `registry`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRegistry {
    pub(super) login_server: Option<String>,
    pub(super) region: Option<String>,
    pub(super) data_endpoints: Option<Vec<String>>,
    pub(super) endpoints_file: Option<String>,
    pub(super) auth: Option<RawAuth>,
    pub(super) ca_file: Option<String>,
    pub(super) resolve: Option<BTreeMap<String, String>>,
    pub(super) realm_hosts: Option<Vec<String>>,
    pub(super) blob_source: Option<String>,
    pub(super) proxy: Option<String>,
}

/// `registry.auth`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    pub(super) username: Option<String>,
    pub(super) password_file: Option<String>,
    pub(super) refresh_token_file: Option<String>,
}

/// `store`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub(super) path: Option<String>,
    pub(super) checkpoint_bytes: Option<u64>,
    pub(super) lock_wait_secs: Option<u64>,
    pub(super) keep_previous: Option<u64>,
    pub(super) min_free_bytes: Option<u64>,
    pub(super) ingest_max_age_secs: Option<u64>,
    pub(super) verify_on_start: Option<String>,
    pub(super) max_blob_bytes: Option<u64>,
}

/// One entry of `images`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawImage {
    #[serde(rename = "ref")]
    pub(super) reference: Option<String>,
    pub(super) interval_secs: Option<u64>,
    pub(super) identity: Option<String>,
}

/// `timeouts`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTimeouts {
    pub(super) connect_secs: Option<u64>,
    pub(super) idle_read_secs: Option<u64>,
    pub(super) min_bytes_per_sec: Option<u64>,
    pub(super) min_rate_window_secs: Option<u64>,
}

/// `sync` (daemon mode).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSync {
    pub(super) interval_secs: Option<u64>,
    pub(super) jitter: Option<f64>,
    pub(super) backoff_max_secs: Option<u64>,
}

/// `hooks` (daemon mode).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHooks {
    pub(super) on_update: Option<Vec<String>>,
    pub(super) timeout_secs: Option<u64>,
    pub(super) health_check: Option<Vec<String>>,
    pub(super) health_timeout_secs: Option<u64>,
}

/// `metrics` (daemon mode).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub(super) textfile: Option<String>,
}

/// A byte count: a number, or a string with a unit (`"2MiB"`).
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawSize {
    Bytes(u64),
    Text(String),
}

/// `link`: bandwidth cap, download windows, daily quota.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLink {
    pub(super) max_bytes_per_sec: Option<RawSize>,
    pub(super) max_bytes_per_day: Option<RawSize>,
    pub(super) windows: Option<Vec<String>>,
    pub(super) timezone: Option<String>,
}

/// `signatures`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSignatures {
    pub(super) public_keys: Option<Vec<String>>,
}

/// `rollout`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRollout {
    pub(super) window_secs: Option<u64>,
    pub(super) device_id_file: Option<String>,
    pub(super) prefetch: Option<bool>,
}
