//! edgepull's pure core: every decision the daemon makes, with no IO.
//!
//! Owns: the OCI types ([`oci`]), host names and ACR host shapes ([`hostport`], [`acr`]), the
//! egress allowlist and redirect policy with URL redaction ([`egress`]), the `WWW-Authenticate`
//! parser ([`challenge`]), the TLS bulk cipher order ([`cipher`]), the token endpoint's reply
//! ([`token`]), `Content-Range` and resume decisions ([`resume`]), the minimum transfer rate
//! ([`rate`]), the retry/backoff policy ([`retry`]), registry text made safe to show ([`text`]),
//! the daemon's schedule and watchdog decisions ([`schedule`]), who may write a directory the
//! daemon publishes into ([`perms`]), the content store's garbage-collection decisions ([`gc`]) and
//! start-up decisions ([`store`]: re-hash policy, directory safety), the redacted
//! [`secret::Secret`] credentials travel in, cosign signature verification ([`signature`]), when a
//! staged rollout adopts a new digest ([`rollout`]), and what a health check after an update
//! decides ([`health`]: keep, roll back, skip a failed digest).
//!
//! Must never: do IO (files, sockets, clocks read behind the caller's back: time is always
//! passed in), depend on an async runtime, an HTTP client or a TLS stack. Everything here is
//! tested with tables.

#![forbid(unsafe_code)]

pub mod acr;
pub mod challenge;
pub mod cipher;
pub mod egress;
pub mod gc;
pub mod health;
pub mod hostport;
pub mod link;
pub mod oci;
pub mod perms;
pub mod rate;
pub mod resume;
pub mod retry;
pub mod rollout;
pub mod schedule;
pub mod secret;
pub mod signature;
pub mod slots;
pub mod store;
pub mod text;
pub mod token;
