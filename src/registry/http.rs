//! The one HTTP client edgepull uses, and the egress choke point.
//!
//! Owns: building the `reqwest::Client` (rustls with ring, only the configured CA when one is
//! given, no automatic redirects, no Referer, no cookies, no decompression, no proxy from the
//! environment, connect and idle-read timeouts but no total timeout) and a DNS resolver that
//! refuses every name outside the allowlist. Must never attach credentials itself and never
//! resolve or connect to a host the [`EgressPolicy`] does not allow.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use edgepull_core::egress::EgressPolicy;
use edgepull_core::hostport::HostPort;

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
    /// The proxy URL was refused.
    #[error("proxy {proxy} is not usable")]
    Proxy {
        proxy: String,
        #[source]
        source: reqwest::Error,
    },
}

/// Settings for [`build_client`].
#[derive(Debug, Clone)]
pub(crate) struct HttpSettings {
    /// PEM file with the only roots to trust; `None` = the platform's roots.
    pub(crate) ca_file: Option<PathBuf>,
    /// Host → IP pins (curl's `--resolve`); they never widen the allowlist.
    pub(crate) resolve: BTreeMap<String, IpAddr>,
    /// An HTTP CONNECT proxy (`host:port`), if the device must use one.
    pub(crate) proxy: Option<HostPort>,
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

/// Build the client. Every name it resolves must pass `policy.may_connect` on some port.
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
        }));
    builder = match &settings.proxy {
        // Only the configured proxy, never HTTPS_PROXY & co from the environment.
        Some(proxy) => {
            let url = format!("http://{}", proxy.authority());
            let p = reqwest::Proxy::all(&url).map_err(|source| HttpError::Proxy {
                proxy: url.clone(),
                source,
            })?;
            builder.proxy(p)
        }
        None => builder.no_proxy(),
    };
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

/// Resolves only names on the allowlist; anything else fails before a packet leaves.
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
        let allowed = self.policy.allowlist().iter().any(|hp| hp.host() == host);
        Box::pin(async move {
            if !allowed {
                return Err(Box::new(NotAllowed { host }) as Box<dyn std::error::Error + Send + Sync>);
            }
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}
