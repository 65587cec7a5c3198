//! The registry client: egress allowlist and redirect policy, authentication, manifests,
//! and opening blob streams at the region's data endpoint.

pub mod auth;
pub mod client;
pub mod http;
