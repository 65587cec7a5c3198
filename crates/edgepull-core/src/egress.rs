//! The egress policy: which hosts edgepull may reach, which may receive credentials, and
//! what to do with each response to a blob request.
//!
//! Owns: the host allowlist (login server, token realm hosts, data endpoints, proxy), the
//! realm check, the blob redirect rules (redirects are followed by hand, never by the HTTP
//! client) and URL redaction for logs. Pure: no IO, no clock.
//!
//! Must never: let a blob redirect leave the configured data endpoints; allow credentials
//! to a data endpoint (when a host is listed both as a data endpoint and as a realm host,
//! the data endpoint wins); put a query string (it may carry a signature) or userinfo into
//! an error or a log line.

use std::fmt::Write as _;

use url::Url;

use crate::hostport::HostPort;

/// Most redirects followed for one blob request (login → data endpoint needs one).
pub const MAX_REDIRECT_HOPS: u8 = 3;

/// Where blob bytes may come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobSource {
    /// Only from a data endpoint, after a redirect from the login server (ACR with
    /// dedicated data endpoints). A body from the login server itself is refused.
    DataEndpoint,
    /// The login server may serve blobs itself (registries without data endpoints).
    /// Redirects are still followed only to the configured data endpoints.
    Registry,
}

/// Why the policy refused a configuration, a realm or a blob response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// `BlobSource::DataEndpoint` with no data endpoint configured.
    #[error(
        "no data endpoint configured for {}: blobs may only be downloaded from a data endpoint; \
         set data_endpoints to the device region's <registry>.<region>.data.azurecr.io, or set \
         blob_source to \"registry\" for a registry without data endpoints",
        hp(.login)
    )]
    NoDataEndpoint { login: HostPort },
    /// The login server is also listed as a data endpoint.
    #[error(
        "{} is configured both as the login server and as a data endpoint; credentials are never \
         sent to a data endpoint, so this configuration cannot authenticate: remove it from data_endpoints",
        hp(.host)
    )]
    LoginIsDataEndpoint { host: HostPort },
    /// A storage account host configured as a dedicated data endpoint.
    #[error(
        "{} is an Azure Storage host, not a dedicated data endpoint; enable dedicated data endpoints \
         on the registry and configure <registry>.<region>.data.azurecr.io instead",
        hp(.host)
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
        hp(.host)
    )]
    RealmUserinfo { host: HostPort },
    /// The realm is on a data endpoint.
    #[error(
        "token realm on {} refused: it is a data endpoint, and credentials are never sent to data \
         endpoints; if it really is the token server, remove it from data_endpoints",
        hp(.host)
    )]
    RealmOnDataEndpoint { host: HostPort },
    /// The realm is on a host that is neither the login server nor a realm host.
    #[error(
        "token realm on {} refused: credentials go only to {}; add {} to realm_hosts only if you \
         trust it with the registry credentials",
        hp(.host),
        list(.allowed),
        hp(.host)
    )]
    RealmHostNotAllowed { host: HostPort, allowed: Vec<HostPort> },

    /// A redirect without a `Location` header.
    #[error(
        "HTTP {status} redirect from {} has no Location header; the blob request cannot continue \
         (retry later; if it persists, report it to the registry operator)",
        hp(.from)
    )]
    RedirectWithoutLocation { from: HostPort, status: u16 },
    /// A `Location` that is not a URL, or has no usable host. The value is not shown.
    #[error(
        "redirect from {} refused: its Location is not a valid https URL with a host (value not \
         shown: it may carry a signature)",
        hp(.from)
    )]
    BadLocation { from: HostPort },
    /// A redirect to a scheme other than `https`.
    #[error(
        "blob redirect from {} to {scheme}://{} refused: only https is allowed (edgepull never \
         downloads over plain http)",
        hp(.from),
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
        hp(.from),
        hp(.to)
    )]
    RedirectUserinfo { from: HostPort, to: HostPort },
    /// A redirect to a host that is not an allowed data endpoint.
    #[error(
        "blob redirect from {} to {} refused: only {}. If {} is another region's data endpoint, \
         the login server routed this pull to another replica: use the device region's login \
         endpoint (<registry>.<region>.geo.azurecr.io); otherwise check data_endpoints in the config",
        hp(.from),
        hp(.to),
        allowed_phrase(.allowed),
        hp(.to)
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
        hp(.from)
    )]
    TooManyRedirects { from: HostPort, max: u8 },
    /// A blob body from the login server while the policy requires a data endpoint.
    #[error(
        "blob body from the login server {} (HTTP {status}) refused: downloads must come from {}; \
         enable dedicated data endpoints on the registry, or set blob_source to \"registry\" if \
         this registry serves blobs itself",
        hp(.host),
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
        hp(.host)
    )]
    UnexpectedResponder { host: HostPort },
    /// A request URL without a host.
    #[error("refusing a request to {url}: it names no host")]
    NoHost { url: String },
    /// A request to a host outside the allowlist (the last line of defence: the redirect and
    /// realm checks should have refused it earlier).
    #[error(
        "refusing to connect to {}: it is not in the egress allowlist ({})",
        hp(.host),
        list(.allowed)
    )]
    HostNotAllowed { host: HostPort, allowed: Vec<HostPort> },
    /// Credentials were about to go to a host that may not receive them.
    #[error(
        "refusing to send credentials to {}: only the login server and the token realm receive them",
        hp(.host)
    )]
    CredentialsRefused { host: HostPort },
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
            if let Some(h) = data_endpoints.iter().find(|h| is_storage_host(h)) {
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

    /// The allowed data endpoints.
    pub fn data_endpoints(&self) -> &[HostPort] {
        &self.data_endpoints
    }

    /// Where blob bytes may come from.
    pub fn blob_source(&self) -> BlobSource {
        self.blob_source
    }

    /// Every host edgepull may connect to: login server, realm hosts, data endpoints, proxy.
    /// Without duplicates, in that order.
    pub fn allowlist(&self) -> Vec<HostPort> {
        let all = std::iter::once(&self.login)
            .chain(&self.realm_hosts)
            .chain(&self.data_endpoints)
            .chain(&self.proxy)
            .cloned()
            .collect();
        dedup(all)
    }

    /// Whether a connection to `hp` is allowed.
    pub fn may_connect(&self, hp: &HostPort) -> bool {
        *hp == self.login
            || self.realm_hosts.contains(hp)
            || self.is_data_endpoint(hp)
            || self.proxy.as_ref() == Some(hp)
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

fn is_storage_host(hp: &HostPort) -> bool {
    format!(".{}", hp.host()).contains(".blob.core.")
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

/// `host:port`, always with the port (IPv6 in brackets).
fn hp(h: &HostPort) -> String {
    if h.host().contains(':') {
        format!("[{}]:{}", h.host(), h.port())
    } else {
        format!("{}:{}", h.host(), h.port())
    }
}

fn opt_hp(h: &Option<HostPort>) -> String {
    h.as_ref().map_or_else(|| "(no host)".to_string(), hp)
}

/// The region of an ACR data endpoint (`<registry>.<region>.data.<suffix>`).
fn data_region(h: &HostPort) -> Option<&str> {
    let mut labels = h.host().split('.');
    let (_registry, region, data) = (labels.next()?, labels.next()?, labels.next()?);
    (data == "data" && labels.next().is_some()).then_some(region)
}

/// `a:443 (region eastus), b:8443`.
fn list(hosts: &[HostPort]) -> String {
    hosts
        .iter()
        .map(|h| match data_region(h) {
            Some(region) => format!("{} (region {region})", hp(h)),
            None => hp(h),
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
mod tests {
    use super::*;

    const LOGIN: &str = "contoso.azurecr.io";
    const EAST: &str = "contoso.eastus.data.azurecr.io";
    const REALM_HOST: &str = "auth.contoso.example:8443";
    const BLOB: &str = "https://contoso.azurecr.io/v2/app/blobs/sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn h(s: &str) -> HostPort {
        HostPort::parse(s).unwrap()
    }

    fn policy(source: BlobSource) -> EgressPolicy {
        EgressPolicy::new(h(LOGIN), vec![h(EAST)], vec![h(REALM_HOST)], source).unwrap()
    }

    fn base() -> Url {
        Url::parse(BLOB).unwrap()
    }

    #[test]
    fn new_table() {
        type Check = fn(&Result<EgressPolicy, PolicyError>) -> bool;
        /// login, data endpoints, realm hosts, blob source, expectation.
        type Case = (
            &'static str,
            Vec<&'static str>,
            Vec<&'static str>,
            BlobSource,
            Check,
        );
        let cases: &[Case] = &[
            (LOGIN, vec![EAST], vec![], BlobSource::DataEndpoint, |r| r.is_ok()),
            (LOGIN, vec![], vec![], BlobSource::Registry, |r| r.is_ok()),
            (LOGIN, vec![], vec![], BlobSource::DataEndpoint, |r| {
                matches!(r, Err(PolicyError::NoDataEndpoint { .. }))
            }),
            (
                LOGIN,
                vec![EAST, "Contoso.AzureCR.io:443"],
                vec![],
                BlobSource::DataEndpoint,
                |r| matches!(r, Err(PolicyError::LoginIsDataEndpoint { .. })),
            ),
            (
                LOGIN,
                vec!["acct.blob.core.windows.net"],
                vec![],
                BlobSource::DataEndpoint,
                |r| matches!(r, Err(PolicyError::StorageHostAsDataEndpoint { .. })),
            ),
            (
                LOGIN,
                vec!["acct.blob.core.windows.net"],
                vec![],
                BlobSource::Registry,
                |r| r.is_ok(),
            ),
        ];
        for (login, data, realms, source, check) in cases {
            let r = EgressPolicy::new(
                h(login),
                data.iter().map(|s| h(s)).collect(),
                realms.iter().map(|s| h(s)).collect(),
                *source,
            );
            assert!(check(&r), "{login} {data:?} {realms:?} {source:?}: {r:?}");
        }
    }

    #[test]
    fn allowlist_is_deduplicated_and_ordered() {
        let p = EgressPolicy::new(
            h(LOGIN),
            vec![
                h(EAST),
                h("CONTOSO.eastus.data.azurecr.io:443"),
                h("contoso.westus.data.azurecr.io"),
            ],
            vec![h(REALM_HOST), h(LOGIN), h(REALM_HOST)],
            BlobSource::DataEndpoint,
        )
        .unwrap()
        .with_proxy(h("proxy.local:3128"));
        let want: Vec<HostPort> = [
            LOGIN,
            REALM_HOST,
            EAST,
            "contoso.westus.data.azurecr.io",
            "proxy.local:3128",
        ]
        .iter()
        .map(|s| h(s))
        .collect();
        assert_eq!(p.allowlist(), want);
        for hp in &want {
            assert!(p.may_connect(hp), "{hp:?}");
        }
        for denied in [
            "evil.example",
            "contoso.azurecr.io:444",
            "acct.blob.core.windows.net",
        ] {
            assert!(!p.may_connect(&h(denied)), "{denied}");
        }
    }

    #[test]
    fn credentials_table() {
        // EAST is also (wrongly) listed as a realm host: the data endpoint wins.
        let p = EgressPolicy::new(
            h(LOGIN),
            vec![h(EAST)],
            vec![h(REALM_HOST), h(EAST)],
            BlobSource::DataEndpoint,
        )
        .unwrap()
        .with_proxy(h("proxy.local:3128"));
        let cases = [
            (LOGIN, true),
            ("CONTOSO.AZURECR.IO", true),
            (REALM_HOST, true),
            ("auth.contoso.example", false), // port differs
            (EAST, false),
            ("proxy.local:3128", false),
            ("evil.example", false),
        ];
        for (host, want) in cases {
            assert_eq!(p.may_send_credentials(&h(host)), want, "{host}");
        }
        assert!(matches!(
            p.check_realm("https://contoso.eastus.data.azurecr.io/oauth2/token"),
            Err(PolicyError::RealmOnDataEndpoint { .. })
        ));
    }

    #[test]
    fn realm_table() {
        type Check = fn(&Result<Url, PolicyError>) -> bool;
        let p = policy(BlobSource::DataEndpoint);
        let cases: &[(&str, Check)] = &[
            ("https://contoso.azurecr.io/oauth2/token", |r| {
                r.as_ref()
                    .is_ok_and(|u| u.as_str() == "https://contoso.azurecr.io/oauth2/token")
            }),
            ("https://CONTOSO.azurecr.io:443/oauth2/token?x=1#frag", |r| {
                r.as_ref()
                    .is_ok_and(|u| u.as_str() == "https://contoso.azurecr.io/oauth2/token?x=1")
            }),
            ("https://auth.contoso.example:8443/token", |r| r.is_ok()),
            ("https://auth.contoso.example/token", |r| {
                matches!(r, Err(PolicyError::RealmHostNotAllowed { .. }))
            }),
            ("https://evil.example/token", |r| {
                matches!(r, Err(PolicyError::RealmHostNotAllowed { .. }))
            }),
            ("http://contoso.azurecr.io/oauth2/token", |r| {
                matches!(r, Err(PolicyError::RealmNotHttps { .. }))
            }),
            ("https://user:pw@contoso.azurecr.io/oauth2/token", |r| {
                matches!(r, Err(PolicyError::RealmUserinfo { .. }))
            }),
            ("https://user@contoso.azurecr.io/oauth2/token", |r| {
                matches!(r, Err(PolicyError::RealmUserinfo { .. }))
            }),
            ("/oauth2/token", |r| {
                matches!(r, Err(PolicyError::RealmInvalid { .. }))
            }),
            ("", |r| matches!(r, Err(PolicyError::RealmInvalid { .. }))),
            ("Azure Container Registry", |r| {
                matches!(r, Err(PolicyError::RealmInvalid { .. }))
            }),
        ];
        for (realm, check) in cases {
            let r = p.check_realm(realm);
            assert!(check(&r), "{realm:?}: {r:?}");
        }
    }

    enum Want {
        Body,
        Follow(&'static str),
        Refuse(fn(&PolicyError) -> bool),
        NotRedirect,
    }

    #[test]
    fn blob_response_table() {
        use BlobSource::{DataEndpoint as DE, Registry as RG};
        let sas = "https://contoso.eastus.data.azurecr.io/?t=1&d=sha256:ab&s=SECRET&v=1";
        /// mode, responder, status, Location, hops so far, expectation.
        type Case = (BlobSource, &'static str, u16, Option<&'static str>, u8, Want);
        let cases: &[Case] = &[
            // login → data endpoint, every redirect status.
            (DE, LOGIN, 307, Some(sas), 0, Want::Follow(sas)),
            (DE, LOGIN, 301, Some(sas), 0, Want::Follow(sas)),
            (DE, LOGIN, 302, Some(sas), 0, Want::Follow(sas)),
            (DE, LOGIN, 303, Some(sas), 0, Want::Follow(sas)),
            (DE, LOGIN, 308, Some(sas), 0, Want::Follow(sas)),
            (RG, LOGIN, 307, Some(sas), 0, Want::Follow(sas)),
            // Not redirects.
            (DE, LOGIN, 300, Some(sas), 0, Want::NotRedirect),
            (DE, LOGIN, 304, Some(sas), 0, Want::NotRedirect),
            (DE, LOGIN, 401, None, 0, Want::NotRedirect),
            (DE, EAST, 403, None, 1, Want::NotRedirect),
            (DE, EAST, 416, None, 1, Want::NotRedirect),
            (DE, LOGIN, 429, None, 0, Want::NotRedirect),
            // Upper-case host and explicit :443 accepted; fragment dropped.
            (
                DE,
                LOGIN,
                307,
                Some("https://CONTOSO.EastUS.data.azurecr.io:443/?s=x#f"),
                0,
                Want::Follow("https://contoso.eastus.data.azurecr.io/?s=x"),
            ),
            // Another region, storage, arbitrary host, trailing dot: refused.
            (
                DE,
                LOGIN,
                307,
                Some("https://contoso.westus.data.azurecr.io/?s=x"),
                0,
                Want::Refuse(
                    |e| matches!(e, PolicyError::RedirectHostNotAllowed { to, .. } if to.host() == "contoso.westus.data.azurecr.io"),
                ),
            ),
            (
                DE,
                LOGIN,
                307,
                Some("https://acct.blob.core.windows.net/c/data?sig=x"),
                0,
                Want::Refuse(|e| matches!(e, PolicyError::RedirectHostNotAllowed { .. })),
            ),
            (
                DE,
                LOGIN,
                307,
                Some("//evil.example/x"),
                0,
                Want::Refuse(
                    |e| matches!(e, PolicyError::RedirectHostNotAllowed { to, .. } if to.host() == "evil.example"),
                ),
            ),
            (
                DE,
                LOGIN,
                307,
                Some("https://contoso.eastus.data.azurecr.io./"),
                0,
                Want::Refuse(|e| matches!(e, PolicyError::RedirectHostNotAllowed { .. })),
            ),
            // Plain http, userinfo, port mismatch.
            (
                DE,
                LOGIN,
                307,
                Some("http://contoso.eastus.data.azurecr.io/?s=x"),
                0,
                Want::Refuse(
                    |e| matches!(e, PolicyError::RedirectNotHttps { scheme, .. } if scheme == "http"),
                ),
            ),
            (
                DE,
                LOGIN,
                307,
                Some("https://u:p@contoso.eastus.data.azurecr.io/"),
                0,
                Want::Refuse(|e| matches!(e, PolicyError::RedirectUserinfo { .. })),
            ),
            (
                DE,
                LOGIN,
                307,
                Some("https://contoso.eastus.data.azurecr.io:8443/"),
                0,
                Want::Refuse(
                    |e| matches!(e, PolicyError::RedirectHostNotAllowed { to, .. } if to.port() == 8443),
                ),
            ),
            // Relative Location resolves against the login URL, so it points at the login
            // server, which is not a data endpoint (in either mode).
            (
                DE,
                LOGIN,
                307,
                Some("/v2/app/blobs/other"),
                0,
                Want::Refuse(
                    |e| matches!(e, PolicyError::RedirectHostNotAllowed { to, .. } if to.host() == LOGIN),
                ),
            ),
            (
                RG,
                LOGIN,
                307,
                Some("/v2/app/blobs/other"),
                0,
                Want::Refuse(|e| matches!(e, PolicyError::RedirectHostNotAllowed { .. })),
            ),
            // Missing or unusable Location.
            (
                DE,
                LOGIN,
                307,
                None,
                0,
                Want::Refuse(|e| matches!(e, PolicyError::RedirectWithoutLocation { status: 307, .. })),
            ),
            (
                DE,
                LOGIN,
                307,
                Some("https://"),
                0,
                Want::Refuse(|e| matches!(e, PolicyError::BadLocation { .. })),
            ),
            (
                DE,
                LOGIN,
                307,
                Some("https://[::1"),
                0,
                Want::Refuse(|e| matches!(e, PolicyError::BadLocation { .. })),
            ),
            // Hops: 3 followed is the limit, the 4th is refused.
            (DE, EAST, 307, Some(sas), 1, Want::Follow(sas)),
            (DE, EAST, 307, Some(sas), 2, Want::Follow(sas)),
            (
                DE,
                EAST,
                307,
                Some(sas),
                3,
                Want::Refuse(|e| matches!(e, PolicyError::TooManyRedirects { max: 3, .. })),
            ),
            // A data endpoint may redirect only to an allowed data endpoint.
            (
                DE,
                EAST,
                302,
                Some(BLOB),
                1,
                Want::Refuse(|e| matches!(e, PolicyError::RedirectHostNotAllowed { .. })),
            ),
            // Bodies.
            (DE, EAST, 200, None, 1, Want::Body),
            (DE, EAST, 206, None, 1, Want::Body),
            (RG, EAST, 200, None, 1, Want::Body),
            (
                DE,
                LOGIN,
                200,
                None,
                0,
                Want::Refuse(|e| matches!(e, PolicyError::BodyFromLoginServer { status: 200, .. })),
            ),
            (
                DE,
                "CONTOSO.AZURECR.IO",
                206,
                None,
                0,
                Want::Refuse(|e| matches!(e, PolicyError::BodyFromLoginServer { status: 206, .. })),
            ),
            (RG, LOGIN, 200, None, 0, Want::Body),
            (RG, LOGIN, 206, None, 0, Want::Body),
            // A responder the policy never sends blob requests to.
            (
                DE,
                "evil.example",
                200,
                None,
                1,
                Want::Refuse(|e| matches!(e, PolicyError::UnexpectedResponder { .. })),
            ),
            (
                DE,
                REALM_HOST,
                307,
                Some(sas),
                0,
                Want::Refuse(|e| matches!(e, PolicyError::UnexpectedResponder { .. })),
            ),
        ];
        for (source, from, status, location, hop, want) in cases {
            let p = policy(*source);
            let got = p.blob_response(&h(from), *status, *location, &base(), *hop);
            let ok = match (want, &got) {
                (Want::Body, BlobStep::Body) | (Want::NotRedirect, BlobStep::NotRedirect) => true,
                (Want::Follow(u), BlobStep::Follow(g)) => g.as_str() == *u,
                (Want::Refuse(check), BlobStep::Refuse(e)) => check(e),
                _ => false,
            };
            assert!(ok, "{source:?} {from} {status} {location:?} hop {hop}: {got:?}");
        }
    }

    #[test]
    fn error_messages_name_hosts_and_never_the_query() {
        let p = policy(BlobSource::DataEndpoint);
        let step = p.blob_response(
            &h(LOGIN),
            307,
            Some("https://contoso.westus.data.azurecr.io/?t=1&s=TOPSECRET&sig=SIG"),
            &base(),
            0,
        );
        let BlobStep::Refuse(e) = step else {
            panic!("{step:?}")
        };
        let msg = e.to_string();
        assert!(
            msg.contains(
                "to contoso.westus.data.azurecr.io:443 refused: only \
                 contoso.eastus.data.azurecr.io:443 (region eastus) is allowed"
            ),
            "{msg}"
        );
        assert!(msg.contains("from contoso.azurecr.io:443"), "{msg}");
        assert!(msg.contains(".geo.azurecr.io"), "{msg}");
        for secret in ["TOPSECRET", "SIG", "?"] {
            assert!(!msg.contains(secret), "{msg}");
        }
        for loc in [
            "http://x.example/?sig=TOPSECRET",
            "https://u:TOPSECRET@contoso.eastus.data.azurecr.io/",
            "https://[::1/?sig=TOPSECRET",
        ] {
            let BlobStep::Refuse(e) = p.blob_response(&h(LOGIN), 307, Some(loc), &base(), 0) else {
                panic!("{loc}")
            };
            assert!(!e.to_string().contains("TOPSECRET"), "{e}");
        }
        let e = p.check_realm("https://evil.example:444/token").unwrap_err();
        assert!(e.to_string().contains("evil.example:444"), "{e}");
        assert!(
            e.to_string()
                .contains("contoso.azurecr.io:443, auth.contoso.example:8443"),
            "{e}"
        );
    }

    #[test]
    fn redact_url_table() {
        let cases = [
            (
                "https://contoso.eastus.data.azurecr.io/?t=1&h=contoso.azurecr.io&s=abc&v=1",
                "https://contoso.eastus.data.azurecr.io:443/?t=REDACTED&h=REDACTED&s=REDACTED&v=REDACTED",
            ),
            (
                "https://user:pw@acct.blob.core.windows.net/c//docker/data?se=2026&sig=SeCrEt%3D&sp=r#frag",
                "https://acct.blob.core.windows.net:443/c//docker/data?se=REDACTED&sig=REDACTED&sp=REDACTED",
            ),
            (
                "https://x.example:8443/v2/?BARETOKEN",
                "https://x.example:8443/v2/?REDACTED",
            ),
            ("https://x.example/v2/", "https://x.example:443/v2/"),
            ("https://[::1]:5000/a?k=v", "https://[::1]:5000/a?k=REDACTED"),
            ("data:text/plain,SECRET", "data:REDACTED"),
        ];
        for (input, want) in cases {
            let got = redact_url(&Url::parse(input).unwrap());
            assert_eq!(got, want, "{input}");
            assert!(!got.contains("SeCrEt") && !got.contains("pw@") && !got.contains("SECRET"));
        }
    }
}
