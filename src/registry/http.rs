//! The one HTTP client edgepull uses.
//!
//! Owns: building the `reqwest::Client` (rustls with ring, its cipher suites ordered for the CPU by
//! `core::cipher`, only the configured CA when one is given, no automatic redirects, no Referer, no
//! cookies, no decompression, no proxy from the environment, connect and idle-read timeouts but no
//! total timeout) with the egress gate around its connector (`registry::connector`: every
//! connection's scheme, host and port, direct or through the configured proxy) and a DNS resolver
//! that looks up only the names [`EgressPolicy::may_resolve`] allows. Must never attach credentials
//! itself and never resolve or connect to a host the [`EgressPolicy`] does not allow.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use rustls::SupportedCipherSuite;

use super::connector;
use edgepull_core::cipher::{self, Bulk};
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

/// Install ring as rustls' process-wide provider (idempotent), its cipher suites in the order
/// `cipher_suites` gives for this CPU. reqwest 0.13 with `rustls-no-provider` panics at
/// client build time without it.
pub fn install_crypto_provider() {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = cipher_suites(provider.cipher_suites, aes_gcm_hardware());
    let _ = provider.install_default();
}

/// Whether ring runs AES-GCM on this CPU's instructions: AES-NI and PCLMULQDQ on x86, AES and
/// PMULL on aarch64. ring uses no AES instructions on 32-bit ARM, so there it is `false`.
fn aes_gcm_hardware() -> bool {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes") && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// `suites` reordered, never added to or taken from: TLS 1.3 before TLS 1.2, and within each
/// the bulk cipher in [`cipher::preference`] order (stable: ECDSA before RSA stays).
fn cipher_suites(mut suites: Vec<SupportedCipherSuite>, aes_gcm_hardware: bool) -> Vec<SupportedCipherSuite> {
    suites.sort_by_key(|s| {
        let rank = bulk(s.suite()).map_or(usize::MAX, |b| cipher::rank(b, aes_gcm_hardware));
        (s.tls13().is_none(), rank)
    });
    suites
}

/// The bulk cipher of a suite ring offers; `None` for one this table does not know.
fn bulk(suite: rustls::CipherSuite) -> Option<Bulk> {
    use rustls::CipherSuite as S;
    match suite {
        S::TLS13_AES_128_GCM_SHA256
        | S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => Some(Bulk::Aes128Gcm),
        S::TLS13_AES_256_GCM_SHA384
        | S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        | S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => Some(Bulk::Aes256Gcm),
        S::TLS13_CHACHA20_POLY1305_SHA256
        | S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        | S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => Some(Bulk::ChaCha20Poly1305),
        _ => None,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cipher_suites_are_reordered_for_the_cpu_never_dropped() {
        let default = rustls::crypto::ring::default_provider().cipher_suites;
        for hw in [true, false] {
            let ordered = cipher_suites(default.clone(), hw);
            let names = |v: &[SupportedCipherSuite]| {
                let mut n: Vec<_> = v.iter().map(|s| format!("{:?}", s.suite())).collect();
                n.sort();
                n
            };
            assert_eq!(
                names(&ordered),
                names(&default),
                "the same suites, aes hardware {hw}"
            );
            let first = cipher::preference(hw)[0];
            let v13: Vec<_> = ordered.iter().filter(|s| s.tls13().is_some()).collect();
            let v12: Vec<_> = ordered.iter().filter(|s| s.tls13().is_none()).collect();
            assert!(!v13.is_empty() && !v12.is_empty(), "both versions offered");
            assert!(
                ordered[..v13.len()].iter().all(|s| s.tls13().is_some()),
                "TLS 1.3 first: {ordered:?}"
            );
            assert_eq!(
                bulk(v13[0].suite()),
                Some(first),
                "aes hardware {hw}: {ordered:?}"
            );
            assert_eq!(
                bulk(v12[0].suite()),
                Some(first),
                "aes hardware {hw}: {ordered:?}"
            );
            for s in &ordered {
                assert!(
                    bulk(s.suite()).is_some(),
                    "{:?} has no place in the order",
                    s.suite()
                );
            }
            // Within TLS 1.2 the ECDSA suite of each cipher comes before the RSA one.
            let first_ecdsa = format!("{:?}", v12[0].suite());
            assert!(first_ecdsa.contains("ECDSA"), "{first_ecdsa}");
        }
    }
}
