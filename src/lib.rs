//! edgepull: keeps OCI images in sync on edge devices behind tight egress rules.
//!
//! Architecture (data flows top to bottom):
//! - [`config`]: the JSON config, validated into types; derives the region's data endpoint.
//! - [`app`]: the composition root: policy, credentials, HTTP and registry clients and the
//!   [`pull::Puller`], built from a validated config.
//! - [`oci`]: spec types (`Digest`, `Reference`, `Platform`, manifests). Pure.
//! - [`registry`]: the registry client: egress allowlist and redirect policy, auth
//!   (challenges, tokens), manifests, and opening blob streams at the data endpoint.
//! - [`fetch`]: resumable, verified blob download with a pure retry policy.
//! - [`store`]: the crash-safe content store (an OCI image layout plus resumable ingests).
//! - [`pull`]: one pull: resolve → choose platform → fetch blobs → record in the layout.
//! - [`systemd`]: sd_notify (READY/RELOADING/STOPPING/STATUS/WATCHDOG); no-op outside systemd.
//! - [`daemon`]: `edgepull run`: the supervisor loop keeping every image in sync (schedule,
//!   backoff, disk budget, rollback versions, garbage collection, hooks, status, metrics).
//! - [`telemetry`]: logging to the journal (native fields), a terminal, or JSON lines.
//! - `cli` (in the binary): commands and exit codes.
//! - `testkit` (feature `testkit`, tests and the demo only): an in-process fake ACR.
//!
//! Invariants: no uploads and no host outside the allowlist; credentials only to the login
//! server and the token realm; nothing visible in the store unless verified; resume from
//! the last durable checkpoint; clear errors, no panics; memory flat in blob size.

#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod daemon;
pub mod exit;
pub mod fetch;
pub mod progress;
pub mod pull;
pub mod registry;
pub mod store;
pub mod systemd;
pub mod telemetry;

/// An error and its causes on one line (`a: b: c`), for logs and retry reasons.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = s.source();
    }
    out
}
