//! The one HTTP client edgepull uses.
//!
//! Owns: building the `reqwest::Client` (rustls with ring, only the configured CA when one is
//! given, no automatic redirects, no Referer, no cookies, no decompression, no proxy from the
//! environment, connect and idle-read timeouts but no total timeout) with the egress gate
//! around its connector (`registry::connector`: every connection's scheme, host and port,
//! direct or through the configured proxy) and a DNS resolver that looks up only the names
//! [`EgressPolicy::may_resolve`] allows. Must never attach credentials itself and never
//! resolve or connect to a host the [`EgressPolicy`] does not allow.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::connector;
use edgepull_core::egress::EgressPolicy;

/// Why the HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The CA file could not be read.
    #[error("cannot read CA file {path}; check registry.ca_file")]
    CaRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The CA file is not PEM certificates.
    #[error("CA file {path} holds no usable PEM certificate; check registry.ca_file")]
    CaParse {
        path: PathBuf,
        #[source]
        source: reqwest::Error,
    },
    /// reqwest refused the settings.
    #[error("cannot build the HTTP client")]
    Build(#[source] reqwest::Error),
}

/// Settings for [`build_client`].
#[derive(Debug, Clone)]
pub(crate) struct HttpSettings {
    /// PEM file with the only roots to trust; `None` = the platform's roots.
    pub(crate) ca_file: Option<PathBuf>,
    /// Host → IP pins (curl's `--resolve`); they never widen the allowlist.
    pub(crate) resolve: BTreeMap<String, IpAddr>,
    /// TCP+TLS connect timeout.
    pub(crate) connect_timeout: Duration,
    /// Longest silence while reading a response before the read fails (not a total timeout).
    pub(crate) idle_read_timeout: Duration,
}

/// The `User-Agent` edgepull sends.
pub(crate) const USER_AGENT: &str = concat!("edgepull/", env!("CARGO_PKG_VERSION"));

/// Install ring as rustls' process-wide provider (idempotent). reqwest 0.13 with
/// `rustls-no-provider` panics at client build time without it.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Build the client. Every connection it opens passes [`EgressPolicy::dial`] (the gate), and
/// every name it resolves [`EgressPolicy::may_resolve`]; the proxy is the policy's.
pub(crate) fn build_client(
    settings: &HttpSettings,
    policy: Arc<EgressPolicy>,
) -> Result<reqwest::Client, HttpError> {
    install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .referer(false)
        .https_only(true)
        .connect_timeout(settings.connect_timeout)
        .read_timeout(settings.idle_read_timeout)
        .pool_idle_timeout(Duration::from_secs(30))
        .http1_only()
        .dns_resolver(Arc::new(AllowlistResolver {
            policy: policy.clone(),
        }))
        // The gate: the matcher decides every connection (and names the configured proxy,
        // never HTTPS_PROXY & co from the environment); the layer enforces the decision.
        .proxy(connector::matcher(policy.clone()))
        .connector_layer(connector::GateLayer);
    if let Some(path) = &settings.ca_file {
        let pem = std::fs::read(path).map_err(|source| HttpError::CaRead {
            path: path.clone(),
            source,
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| HttpError::CaParse {
            path: path.clone(),
            source,
        })?;
        builder = builder.tls_certs_only(certs);
    }
    for (host, ip) in &settings.resolve {
        // Port 0: reqwest keeps the URL's port.
        builder = builder.resolve(host, SocketAddr::new(*ip, 0));
    }
    builder.build().map_err(HttpError::Build)
}

/// Resolves only the names [`EgressPolicy::may_resolve`] allows (with a proxy, only the
/// proxy's); anything else fails before a packet leaves.
struct AllowlistResolver {
    policy: Arc<EgressPolicy>,
}

/// A name outside the allowlist reached the resolver.
#[derive(Debug, thiserror::Error)]
#[error("refusing to resolve {host}: it is not in edgepull's egress allowlist")]
struct NotAllowed {
    host: String,
}

impl Resolve for AllowlistResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_ascii_lowercase();
        let allowed = self.policy.may_resolve(&host);
        Box::pin(async move {
            if !allowed {
                return Err(Box::new(NotAllowed { host }) as Box<dyn std::error::Error + Send + Sync>);
            }
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}
