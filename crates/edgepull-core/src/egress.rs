//! The egress policy: which hosts edgepull may reach, which may receive credentials, and
//! what to do with each response to a blob request.
//!
//! Owns: the host allowlist (login server, token realm hosts, data endpoints, proxy; the
//! config's firewall lines come from [`allowlist`] too), the decision for every connection
//! edgepull opens ([`EgressPolicy::dial`]: scheme, host and port, direct or through the
//! proxy) and for every name it resolves, the realm check, the blob redirect
//! rules (redirects are followed by hand, never by the HTTP client), where blobs may come
//! from ([`BlobSource`], also the config's `registry.blob_source`) and URL redaction for
//! logs. ACR host shapes come from [`crate::acr`]. Pure: no IO, no clock.
//!
//! Must never: let a blob redirect leave the configured data endpoints; allow credentials
//! to a data endpoint (when a host is listed both as a data endpoint and as a realm host,
//! the data endpoint wins); put a query string (it may carry a signature) or userinfo into
//! an error or a log line.

use std::fmt::Write as _;

use url::Url;

use crate::acr::{self, AcrHost};
use crate::hostport::HostPort;

/// Most redirects followed for one blob request (login → data endpoint needs one).
pub const MAX_REDIRECT_HOPS: u8 = 3;

/// Where blob bytes may come from (the config's `registry.blob_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BlobSource {
    /// Only from a data endpoint, after a redirect from the login server (ACR with
    /// dedicated data endpoints). A body from the login server itself is refused.
    /// `"data-endpoint"`, the default.
    #[default]
    DataEndpoint,
    /// The login server may serve blobs itself (registries without data endpoints).
    /// Redirects are still followed only to the configured data endpoints. `"registry"`.
    Registry,
}

impl BlobSource {
    /// Every value, in the order the config documents them.
    const ALL: [Self; 2] = [Self::DataEndpoint, Self::Registry];

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DataEndpoint => "data-endpoint",
            Self::Registry => "registry",
        }
    }

    /// The value spelled `value` in the config ([`BlobSource::as_str`]); `None` for any
    /// other text.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.as_str() == value)
    }
}

/// Why the policy refused a configuration, a realm or a blob response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// `BlobSource::DataEndpoint` with no data endpoint configured.
    #[error(
        "no data endpoint configured for {}: blobs may only be downloaded from a data endpoint; \
         set data_endpoints to the device region's <registry>.<region>.data.azurecr.io, or set \
         blob_source to \"registry\" for a registry without data endpoints",
        .login.with_port()
    )]
    NoDataEndpoint { login: HostPort },
    /// The login server is also listed as a data endpoint.
    #[error(
        "{} is configured both as the login server and as a data endpoint; credentials are never \
         sent to a data endpoint, so this configuration cannot authenticate: remove it from data_endpoints",
        .host.with_port()
    )]
    LoginIsDataEndpoint { host: HostPort },
    /// A storage account host configured as a dedicated data endpoint.
    #[error(
        "{} is an Azure Storage host, not a dedicated data endpoint; enable dedicated data endpoints \
         on the registry and configure <registry>.<region>.data.azurecr.io instead",
        .host.with_port()
    )]
    StorageHostAsDataEndpoint { host: HostPort },

    /// The realm is not an absolute URL with a usable host.
    #[error(
        "token realm refused: {reason}; the registry's WWW-Authenticate challenge must name an \
         absolute https URL"
    )]
    RealmInvalid { reason: String },
    /// The realm is not `https`.
    #[error(
        "token realm on {} refused: scheme {scheme:?} is not https, and credentials are only sent over https",
        opt_hp(.host)
    )]
    RealmNotHttps { scheme: String, host: Option<HostPort> },
    /// The realm carries `user[:password]@`.
    #[error(
        "token realm on {} refused: it carries userinfo (user:password@), which edgepull never \
         sends; fix the registry's token realm",
        .host.with_port()
    )]
    RealmUserinfo { host: HostPort },
    /// The realm is on a data endpoint.
    #[error(
        "token realm on {} refused: it is a data endpoint, and credentials are never sent to data \
         endpoints; if it really is the token server, remove it from data_endpoints",
        .host.with_port()
    )]
    RealmOnDataEndpoint { host: HostPort },
    /// The realm is on a host that is neither the login server nor a realm host.
    #[error(
        "token realm on {} refused: credentials go only to {}; add {} to realm_hosts only if you \
         trust it with the registry credentials",
        .host.with_port(),
        list(.allowed),
        .host.with_port()
    )]
    RealmHostNotAllowed { host: HostPort, allowed: Vec<HostPort> },

    /// A redirect without a `Location` header.
    #[error(
        "HTTP {status} redirect from {} has no Location header; the blob request cannot continue \
         (retry later; if it persists, report it to the registry operator)",
        .from.with_port()
    )]
    RedirectWithoutLocation { from: HostPort, status: u16 },
    /// A `Location` that is not a URL, or has no usable host. The value is not shown.
    #[error(
        "redirect from {} refused: its Location is not a valid https URL with a host (value not \
         shown: it may carry a signature)",
        .from.with_port()
    )]
    BadLocation { from: HostPort },
    /// A redirect to a scheme other than `https`.
    #[error(
        "blob redirect from {} to {scheme}://{} refused: only https is allowed (edgepull never \
         downloads over plain http)",
        .from.with_port(),
        opt_hp(.to)
    )]
    RedirectNotHttps {
        from: HostPort,
        scheme: String,
        to: Option<HostPort>,
    },
    /// A redirect whose `Location` carries `user[:password]@`.
    #[error(
        "blob redirect from {} to {} refused: the Location carries userinfo (user:password@), \
         which edgepull never sends",
        .from.with_port(),
        .to.with_port()
    )]
    RedirectUserinfo { from: HostPort, to: HostPort },
    /// A redirect to a host that is not an allowed data endpoint.
    #[error(
        "blob redirect from {} to {} refused: only {}. If {} is another region's data endpoint, \
         the login server routed this pull to another replica: use the device region's login \
         endpoint (<registry>.<region>.geo.azurecr.io); otherwise check data_endpoints in the config",
        .from.with_port(),
        .to.with_port(),
        allowed_phrase(.allowed),
        .to.with_port()
    )]
    RedirectHostNotAllowed {
        from: HostPort,
        to: HostPort,
        allowed: Vec<HostPort>,
    },
    /// More than [`MAX_REDIRECT_HOPS`] redirects.
    #[error(
        "blob redirect from {} refused: already followed {max} redirects for this blob; the \
         registry or data endpoint is looping (retry later or report it to the registry operator)",
        .from.with_port()
    )]
    TooManyRedirects { from: HostPort, max: u8 },
    /// A blob body from the login server while the policy requires a data endpoint.
    #[error(
        "blob body from the login server {} (HTTP {status}) refused: downloads must come from {}; \
         enable dedicated data endpoints on the registry, or set blob_source to \"registry\" if \
         this registry serves blobs itself",
        .host.with_port(),
        list(.allowed)
    )]
    BodyFromLoginServer {
        host: HostPort,
        status: u16,
        allowed: Vec<HostPort>,
    },
    /// A blob response from a host the policy never allows to answer one.
    #[error(
        "blob response from {} refused: it is neither the login server nor an allowed data \
         endpoint (this is a bug: the request should never have been sent there)",
        .host.with_port()
    )]
    UnexpectedResponder { host: HostPort },
    /// A request URL without a host.
    #[error("refusing a request to {url}: it names no host")]
    NoHost { url: String },
    /// A connection to a host:port outside the allowlist, refused where the socket would be
    /// opened ([`EgressPolicy::dial`]; the redirect and realm checks should have refused it
    /// earlier).
    #[error(
        "refusing to connect to {}: it is not in the egress allowlist ({})",
        .host.with_port(),
        list(.allowed)
    )]
    HostNotAllowed { host: HostPort, allowed: Vec<HostPort> },
    /// A `CONNECT` through the proxy to a host:port outside the allowlist.
    #[error(
        "refusing to ask proxy {} to connect to {}: it is not in the egress allowlist ({})",
        .proxy.with_port(),
        .host.with_port(),
        list(.allowed)
    )]
    TunnelNotAllowed {
        host: HostPort,
        proxy: HostPort,
        allowed: Vec<HostPort>,
    },
    /// A connection the HTTP client opened without showing it to [`EgressPolicy::dial`]
    /// first: refused, since the gate fails closed.
    #[error(
        "refusing to connect to {}: the connection was not shown to the egress check before \
         it would open (a bug in edgepull or its HTTP library; nothing was sent: report it)",
        .host.with_port()
    )]
    DialUnchecked { host: HostPort },
    /// A connection for a scheme other than `https`.
    #[error(
        "refusing to connect to {} for {scheme}://: edgepull only opens https connections",
        .host.with_port()
    )]
    DialNotHttps { scheme: String, host: HostPort },
    /// Credentials were about to go to a host that may not receive them.
    #[error(
        "refusing to send credentials to {}: only the login server and the token realm receive them",
        .host.with_port()
    )]
    CredentialsRefused { host: HostPort },
}

/// How a connection to an allowed host:port is opened ([`EgressPolicy::dial`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dial {
    /// A TCP connection to the host:port itself.
    Direct,
    /// A TCP connection to this proxy, then `CONNECT host:port`.
    Tunnel(HostPort),
}

/// What to do with a response to a blob request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobStep {
    /// Read the body (200 or 206): it comes from an allowed source.
    Body,
    /// Follow this redirect: a new request without `Authorization`, cookies or `Referer`.
    Follow(Url),
    /// Do not read the body and do not follow; close the connection.
    Refuse(PolicyError),
    /// Neither a body nor a redirect (401, 404, 416, 429, 5xx...): the caller classifies it.
    NotRedirect,
}

/// The egress policy for one registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressPolicy {
    login: HostPort,
    data_endpoints: Vec<HostPort>,
    realm_hosts: Vec<HostPort>,
    blob_source: BlobSource,
    proxy: Option<HostPort>,
}

impl EgressPolicy {
    /// A policy for `login`. Duplicates are dropped (first occurrence kept).
    ///
    /// Refuses: no data endpoint under `BlobSource::DataEndpoint`; the login server listed
    /// as a data endpoint; under `BlobSource::DataEndpoint`, an Azure Storage host
    /// (`*.blob.core.*`) listed as a data endpoint.
    pub fn new(
        login: HostPort,
        data_endpoints: Vec<HostPort>,
        realm_hosts: Vec<HostPort>,
        blob_source: BlobSource,
    ) -> Result<Self, PolicyError> {
        let data_endpoints = dedup(data_endpoints);
        let realm_hosts = dedup(realm_hosts);
        if blob_source == BlobSource::DataEndpoint {
            if data_endpoints.is_empty() {
                return Err(PolicyError::NoDataEndpoint { login });
            }
            if let Some(h) = data_endpoints.iter().find(|h| acr::is_storage_host(h.host())) {
                return Err(PolicyError::StorageHostAsDataEndpoint { host: h.clone() });
            }
        }
        if data_endpoints.contains(&login) {
            return Err(PolicyError::LoginIsDataEndpoint { host: login });
        }
        Ok(Self {
            login,
            data_endpoints,
            realm_hosts,
            blob_source,
            proxy: None,
        })
    }

    /// Connect through this HTTPS proxy (it joins the allowlist; it never gets credentials).
    pub fn with_proxy(mut self, proxy: HostPort) -> Self {
        self.proxy = Some(proxy);
        self
    }

    /// The login server.
    pub fn login(&self) -> &HostPort {
        &self.login
    }

    /// Where blob bytes may come from.
    pub fn blob_source(&self) -> BlobSource {
        self.blob_source
    }

    /// Every host edgepull may connect to ([`allowlist`] of this policy's hosts).
    pub fn allowlist(&self) -> Vec<HostPort> {
        allowlist(
            &self.login,
            &self.realm_hosts,
            &self.data_endpoints,
            self.proxy.as_ref(),
        )
    }

    /// Whether `hp` is an endpoint edgepull talks HTTPS to: the login server, a realm host
    /// or a data endpoint. The proxy is not one: it is only ever dialled to tunnel to these.
    pub fn is_endpoint(&self, hp: &HostPort) -> bool {
        *hp == self.login || self.realm_hosts.contains(hp) || self.is_data_endpoint(hp)
    }

    /// How to open a connection for `scheme://target`, or why not: the one decision every
    /// socket edgepull opens goes through. Only `https`, only to an endpoint
    /// ([`EgressPolicy::is_endpoint`]: host *and* port compared, an IP literal only when it
    /// is configured as such), and, with a proxy, always through it: the proxy dial goes to
    /// the configured proxy and nowhere else, the `CONNECT` target is the checked endpoint.
    pub fn dial(&self, scheme: &str, target: &HostPort) -> Result<Dial, PolicyError> {
        if scheme != "https" {
            return Err(PolicyError::DialNotHttps {
                scheme: scheme.chars().take(16).collect(),
                host: target.clone(),
            });
        }
        if !self.is_endpoint(target) {
            let allowed = self.endpoints();
            return Err(match &self.proxy {
                Some(proxy) => PolicyError::TunnelNotAllowed {
                    host: target.clone(),
                    proxy: proxy.clone(),
                    allowed,
                },
                None => PolicyError::HostNotAllowed {
                    host: target.clone(),
                    allowed,
                },
            });
        }
        Ok(match &self.proxy {
            Some(proxy) => Dial::Tunnel(proxy.clone()),
            None => Dial::Direct,
        })
    }

    /// Whether edgepull itself may look `host` up in DNS: with a proxy only the proxy's name
    /// (the proxy resolves the endpoints), without one only the endpoints' names.
    pub fn may_resolve(&self, host: &str) -> bool {
        match &self.proxy {
            Some(proxy) => proxy.host().eq_ignore_ascii_case(host),
            None => self
                .endpoints()
                .iter()
                .any(|hp| hp.host().eq_ignore_ascii_case(host)),
        }
    }

    /// The proxy, if connections go through one.
    pub fn proxy(&self) -> Option<&HostPort> {
        self.proxy.as_ref()
    }

    /// Login server, realm hosts and data endpoints (the allowlist without the proxy).
    fn endpoints(&self) -> Vec<HostPort> {
        allowlist(&self.login, &self.realm_hosts, &self.data_endpoints, None)
    }

    /// Whether `Authorization` (Basic or Bearer) may be sent to `hp`: the login server and
    /// realm hosts only, and never a data endpoint, whatever else lists it.
    pub fn may_send_credentials(&self, hp: &HostPort) -> bool {
        !self.is_data_endpoint(hp) && (*hp == self.login || self.realm_hosts.contains(hp))
    }

    /// Whether `hp` is an allowed data endpoint.
    pub fn is_data_endpoint(&self, hp: &HostPort) -> bool {
        self.data_endpoints.contains(hp)
    }

    /// Validate a token realm from a `WWW-Authenticate` challenge: an absolute `https` URL,
    /// without userinfo, whose host:port is the login server or a realm host and not a
    /// data endpoint. Returns it without its fragment.
    pub fn check_realm(&self, realm: &str) -> Result<Url, PolicyError> {
        let mut url = Url::parse(realm.trim()).map_err(|e| PolicyError::RealmInvalid {
            reason: format!("not an absolute URL ({e})"),
        })?;
        let host = HostPort::from_url(&url);
        if url.scheme() != "https" {
            return Err(PolicyError::RealmNotHttps {
                scheme: short_scheme(&url),
                host,
            });
        }
        let Some(host) = host else {
            return Err(PolicyError::RealmInvalid {
                reason: "it has no usable host".to_string(),
            });
        };
        if has_userinfo(&url) {
            return Err(PolicyError::RealmUserinfo { host });
        }
        if self.is_data_endpoint(&host) {
            return Err(PolicyError::RealmOnDataEndpoint { host });
        }
        if host != self.login && !self.realm_hosts.contains(&host) {
            let allowed = std::iter::once(&self.login)
                .chain(&self.realm_hosts)
                .cloned()
                .collect();
            return Err(PolicyError::RealmHostNotAllowed { host, allowed });
        }
        url.set_fragment(None);
        Ok(url)
    }

    /// What to do with a blob response.
    ///
    /// `from` = host that answered, `status` its status, `location` its `Location` header,
    /// `base` = the URL that was requested (relative locations resolve against it), `hop` =
    /// redirects followed so far for this blob (0 for the request to the login server).
    pub fn blob_response(
        &self,
        from: &HostPort,
        status: u16,
        location: Option<&str>,
        base: &Url,
        hop: u8,
    ) -> BlobStep {
        let from_data = self.is_data_endpoint(from);
        if !from_data && *from != self.login {
            return BlobStep::Refuse(PolicyError::UnexpectedResponder { host: from.clone() });
        }
        match status {
            200 | 206 if from_data || self.blob_source == BlobSource::Registry => BlobStep::Body,
            200 | 206 => BlobStep::Refuse(PolicyError::BodyFromLoginServer {
                host: from.clone(),
                status,
                allowed: self.data_endpoints.clone(),
            }),
            301 | 302 | 303 | 307 | 308 => match self.check_redirect(from, status, location, base, hop) {
                Ok(url) => BlobStep::Follow(url),
                Err(e) => BlobStep::Refuse(e),
            },
            _ => BlobStep::NotRedirect,
        }
    }

    fn check_redirect(
        &self,
        from: &HostPort,
        status: u16,
        location: Option<&str>,
        base: &Url,
        hop: u8,
    ) -> Result<Url, PolicyError> {
        let src = || from.clone();
        if hop >= MAX_REDIRECT_HOPS {
            return Err(PolicyError::TooManyRedirects {
                from: src(),
                max: MAX_REDIRECT_HOPS,
            });
        }
        let location =
            location.ok_or_else(|| PolicyError::RedirectWithoutLocation { from: src(), status })?;
        let mut url = base
            .join(location)
            .map_err(|_| PolicyError::BadLocation { from: src() })?;
        let to = HostPort::from_url(&url);
        if url.scheme() != "https" {
            return Err(PolicyError::RedirectNotHttps {
                from: src(),
                scheme: short_scheme(&url),
                to,
            });
        }
        let to = to.ok_or_else(|| PolicyError::BadLocation { from: src() })?;
        if has_userinfo(&url) {
            return Err(PolicyError::RedirectUserinfo { from: src(), to });
        }
        if !self.is_data_endpoint(&to) {
            return Err(PolicyError::RedirectHostNotAllowed {
                from: src(),
                to,
                allowed: self.data_endpoints.clone(),
            });
        }
        url.set_fragment(None);
        Ok(url)
    }
}

/// Every host edgepull may connect to: login server, realm hosts, data endpoints, proxy;
/// without duplicates, in that order. [`EgressPolicy::allowlist`] and the config's firewall
/// lines both come from here.
pub fn allowlist(
    login: &HostPort,
    realm_hosts: &[HostPort],
    data_endpoints: &[HostPort],
    proxy: Option<&HostPort>,
) -> Vec<HostPort> {
    let all = std::iter::once(login)
        .chain(realm_hosts)
        .chain(data_endpoints)
        .chain(proxy)
        .cloned()
        .collect();
    dedup(all)
}

/// A URL safe to log: `scheme://host:port/path?name=REDACTED&...`, with no userinfo and no
/// fragment. Every query value is replaced (a bare `?value` becomes `?REDACTED`).
pub fn redact_url(url: &Url) -> String {
    let mut out = format!("{}:", url.scheme());
    if let Some(host) = url.host_str() {
        out.push_str("//");
        out.push_str(host);
        if let Some(port) = url.port_or_known_default() {
            let _ = write!(out, ":{port}");
        }
        out.push_str(url.path());
    } else {
        // A URL without a host (`data:`, `mailto:`) is opaque: show only its scheme.
        out.push_str("REDACTED");
    }
    if let Some(query) = url.query() {
        let pieces: Vec<String> = query
            .split('&')
            .map(|piece| match piece.split_once('=') {
                Some((name, _)) => format!("{name}=REDACTED"),
                None => "REDACTED".to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&pieces.join("&"));
    }
    out
}

fn has_userinfo(url: &Url) -> bool {
    !url.username().is_empty() || url.password().is_some()
}

/// The scheme, bounded in length (it comes from the network).
fn short_scheme(url: &Url) -> String {
    url.scheme().chars().take(16).collect()
}

fn dedup(hosts: Vec<HostPort>) -> Vec<HostPort> {
    let mut out: Vec<HostPort> = Vec::with_capacity(hosts.len());
    for h in hosts {
        if !out.contains(&h) {
            out.push(h);
        }
    }
    out
}

fn opt_hp(h: &Option<HostPort>) -> String {
    h.as_ref()
        .map_or_else(|| "(no host)".to_string(), HostPort::with_port)
}

/// `a:443 (region eastus), b:8443`: the region of each ACR data endpoint.
fn list(hosts: &[HostPort]) -> String {
    hosts
        .iter()
        .map(|h| match AcrHost::parse(h.host()) {
            Some(AcrHost::Data { region, .. }) => format!("{} (region {region})", h.with_port()),
            _ => h.with_port(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `a:443 (region eastus) is allowed` / `a:443, b:443 are allowed`.
fn allowed_phrase(hosts: &[HostPort]) -> String {
    match hosts {
        [] => "no data endpoint is configured, so no redirect is allowed".to_string(),
        [one] => format!("{} is allowed", list(std::slice::from_ref(one))),
        many => format!("{} are allowed", list(many)),
    }
}

#[cfg(test)]
mod tests;
