//! The registry client: egress allowlist and redirect policy, authentication, manifests,
//! and opening blob streams at the region's data endpoint.
//!
//! Layers, each using only those below it:
//! - [`client`]: manifests, blobs and their redirect chain, the 401 → token → retry dance;
//! - [`auth`]: challenges, tokens and their cache;
//! - `transport`: the one guarded send (egress check by host and port before every
//!   request, token requests included), bounded body reads and error summaries;
//! - [`http`]: building the `reqwest::Client` and its allowlist-only resolver.

pub mod auth;
pub mod client;
pub mod http;
mod transport;
