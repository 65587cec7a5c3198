//! The registry client: egress allowlist and redirect policy, authentication, manifests,
//! and opening blob streams at the region's data endpoint.
//!
//! Layers, each using only those below it:
//! - [`client`]: manifests, blobs and their redirect chain, the 401 → token → retry dance;
//! - [`auth`]: challenges, tokens and their cache;
//! - `transport`: the one send (credentials only where the policy allows; a refused
//!   connection comes back as a policy error), bounded body reads and error summaries;
//! - [`http`]: building the `reqwest::Client` and its allowlist-only resolver;
//! - `connector`: the egress gate around the client's connector, which checks scheme, host
//!   and port of every connection it would open, direct or through the proxy.

pub mod auth;
pub mod client;
mod connector;
pub mod http;
mod transport;
