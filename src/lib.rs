//! edgepull: keeps OCI images in sync on edge devices behind tight egress rules.
//!
//! Architecture (data flows top to bottom):
//! - [`config`]: the JSON config, validated into types; derives the region's data endpoint.
//! - [`app`]: the composition root: policy, credentials, HTTP and registry clients and the
//!   [`pull::Puller`], built from a validated config.
//! - `oci` (in `edgepull-core`): spec types (`Digest`, `Reference`, `Platform`, manifests). Pure.
//! - [`registry`]: the registry client: egress allowlist and redirect policy, auth
//!   (challenges, tokens), manifests, and opening blob streams at the data endpoint.
//! - `fetch` (private): resumable, verified blob download with a pure retry policy.
//! - [`store`]: the crash-safe content store (an OCI image layout plus resumable ingests).
//! - [`pull`]: one pull: resolve → choose platform → fetch blobs → record in the layout.
//! - `verify` (private): signed updates: a plan is accepted only with a valid cosign
//!   signature by a configured key (decisions in `edgepull_core::signature`).
//! - [`systemd`]: sd_notify (READY/RELOADING/STOPPING/STATUS/WATCHDOG); no-op outside systemd.
//! - [`daemon`]: `edgepull run`: the supervisor loop keeping every image in sync (schedule,
//!   backoff, disk budget, rollback versions, garbage collection, hooks, status, metrics).
//!   It takes its shutdown and requests from the caller; the binary wires the signals.
//! - [`telemetry`]: logging to the journal (native fields), a terminal, or JSON lines.
//! - `cli` (in the binary): commands, signals and exit codes.
//! - `testkit` (crate `edgepull-testkit`, tests and the demo only): an in-process fake ACR.
//!
//! A module is `pub` only when the binary, `tests/` or `examples/` use it (all do but
//! `fetch`); the rest is crate-private, so the compiler can find its dead code.
//!
//! Invariants: no uploads and no host outside the allowlist; credentials only to the login
//! server and the token realm; nothing visible in the store unless verified; resume from
//! the last durable checkpoint; clear errors, no panics; memory flat in blob size.

#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod daemon;
pub mod exit;
// Used by `pull` only. `expect`, not `allow`: once fetch's owner narrows these items to
// `pub(crate)`, the unfulfilled expectation warns and this attribute goes.
#[expect(
    unreachable_pub,
    reason = "fetch is crate-private now; its items still say `pub` (LINK_REFRESH_AFTER, Fetcher, Fetcher::fetch)"
)]
mod fetch;
pub mod link;
pub mod progress;
pub mod pull;
pub mod registry;
pub mod store;
pub mod systemd;
pub mod telemetry;
mod verify;

use std::error::Error;

/// An error and then each of its causes, outermost first: the one walk of a cause chain.
pub fn causes<'a>(e: &'a (dyn Error + 'a)) -> impl Iterator<Item = &'a (dyn Error + 'a)> {
    std::iter::successors(Some(e), |&e: &&'a (dyn Error + 'a)| {
        e.source().map(|s| s as &'a (dyn Error + 'a))
    })
}

/// An error and its causes on one line (`a: b: c`), for logs and retry reasons. A cause
/// whose text the line already contains (a wrapper that repeats its source) is left out.
pub fn error_chain(e: &dyn Error) -> String {
    let mut out = String::new();
    for (i, cause) in causes(e).enumerate() {
        let msg = cause.to_string();
        if i == 0 {
            out = msg;
        } else if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Chain {
        #[error("cannot read /x")]
        Read(#[source] std::io::Error),
        /// A wrapper whose text repeats its source's.
        #[error("config: cannot read /x")]
        Config(#[source] Box<Chain>),
    }

    #[test]
    fn causes_walk_outermost_first_and_the_line_skips_repeats() {
        let e = Chain::Config(Box::new(Chain::Read(std::io::Error::other("gone"))));
        let all: Vec<String> = causes(&e).map(|c| c.to_string()).collect();
        assert_eq!(all, ["config: cannot read /x", "cannot read /x", "gone"]);
        assert_eq!(error_chain(&e), "config: cannot read /x: gone");
        assert_eq!(error_chain(&std::io::Error::other("alone")), "alone");
    }
}
