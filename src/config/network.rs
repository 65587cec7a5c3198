//! How connections are made: `registry.resolve` (fixed addresses) and `registry.proxy`.
//!
//! Owns: validating both. Must never let `resolve` add a host to the allowlist (its keys
//! are hosts already allowed, from [`edgepull_core::egress::allowlist`]) or accept a proxy
//! URL with credentials, a path or a scheme other than `http`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use edgepull_core::egress;
use edgepull_core::hostport::HostPort;

use super::ctx::{Ctx, q};
use super::error::ConfigError;
use super::path::FieldPath;
use super::registry::RegistryConfig;

impl Ctx {
    /// `registry.proxy`: an HTTP CONNECT proxy as `http://host[:port]`.
    pub(super) fn proxy(&self, field: &FieldPath, value: &str) -> Result<HostPort, ConfigError> {
        let bad = |why: &str| {
            self.invalid(
                field,
                q(value),
                format!(
                    "{why}; expected an HTTP CONNECT proxy as http://host:port, e.g. http://proxy.local:3128"
                ),
            )
        };
        let url = url::Url::parse(value).map_err(|e| bad(&format!("not a URL ({e})")))?;
        if url.scheme() != "http" {
            return Err(bad(
                "only http:// proxies are supported (TLS to the registry runs inside the CONNECT tunnel)",
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            // Never echo the credentials: the message goes to the journal.
            let mut shown = url.clone();
            let _ = shown.set_username("");
            let _ = shown.set_password(None);
            let shown = shown.as_str().replacen("://", "://(credentials not shown)@", 1);
            return Err(self.invalid(
                field,
                q(&shown),
                "proxy credentials in the URL are not supported: they would be a secret in the config; \
                 expected an HTTP CONNECT proxy as http://host:port, e.g. http://proxy.local:3128",
            ));
        }
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err(bad("no path, query or fragment is allowed"));
        }
        let host = url.host_str().ok_or_else(|| bad("no host"))?;
        let port = url.port_or_known_default().unwrap_or(80);
        HostPort::new(host, port).map_err(|e| bad(&e.to_string()))
    }

    /// `registry.resolve`: fixed addresses, only for hosts already allowed (or only the
    /// proxy host when there is a proxy).
    pub(super) fn resolve(
        &self,
        at: &FieldPath,
        raw: BTreeMap<String, String>,
        reg: &RegistryConfig,
    ) -> Result<BTreeMap<String, IpAddr>, ConfigError> {
        // The allowlist without the proxy (it is resolved only when there is one, below).
        let hosts = egress::allowlist(&reg.login_server, &reg.realm_hosts, &reg.data_endpoints, None);
        let mut allowed: Vec<&str> = Vec::new();
        for hp in &hosts {
            if !allowed.contains(&hp.host()) {
                allowed.push(hp.host());
            }
        }
        let mut out = BTreeMap::new();
        for (key, value) in raw {
            let field = at.key(&key);
            let host = key.trim_end_matches('.').to_ascii_lowercase();
            if host.contains(':') || host.parse::<IpAddr>().is_ok() {
                return Err(self.invalid(
                    &field,
                    q(&value),
                    "the key must be a host name without port (the port of each URL is kept)",
                ));
            }
            if let Some(proxy) = &reg.proxy {
                if host != proxy.host() {
                    return Err(self.invalid(
                        &field,
                        q(&value),
                        format!(
                            "has no effect: with registry.proxy set, the proxy resolves {host}; remove \
                             this entry (only the proxy host {} may be resolved here)",
                            proxy.host()
                        ),
                    ));
                }
            } else if !allowed.contains(&host.as_str()) {
                return Err(self.invalid(
                    &field,
                    q(&value),
                    format!(
                        "{host} is not an allowed host; resolve never adds a host to the allowlist. \
                         Allowed keys: {}",
                        allowed.join(", ")
                    ),
                ));
            }
            let ip: IpAddr = value.trim().parse().map_err(|_| {
                self.invalid(
                    &field,
                    q(&value),
                    "expected an IPv4 or IPv6 address without port, e.g. 10.1.2.3 (the port of each URL is kept)",
                )
            })?;
            if ip.is_unspecified() || ip.is_multicast() {
                return Err(self.invalid(
                    &field,
                    q(&value),
                    "an unspecified or multicast address cannot be connected to; give the host's unicast address",
                ));
            }
            if out.insert(host.clone(), ip).is_some() {
                return Err(self.invalid(
                    &field,
                    q(&value),
                    format!("{host} is listed twice (host names are case-insensitive); keep one"),
                ));
            }
        }
        Ok(out)
    }
}
