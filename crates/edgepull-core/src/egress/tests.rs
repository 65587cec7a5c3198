//! Table tests of the egress policy: construction, allowlist, credentials, realms, blob
//! responses and redaction.

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
    for hp in &want[..4] {
        assert!(p.is_endpoint(hp), "{hp:?}");
    }
    for denied in [
        "evil.example",
        "contoso.azurecr.io:444",
        "acct.blob.core.windows.net",
        // The proxy is dialled only to tunnel; it is no endpoint of its own.
        "proxy.local:3128",
    ] {
        assert!(!p.is_endpoint(&h(denied)), "{denied}");
    }
}

/// Every socket edgepull opens: scheme, host *and* port, direct or through the proxy
/// (issue 9, weakness 5).
#[test]
fn dial_table() {
    let direct = policy(BlobSource::DataEndpoint);
    let proxied = policy(BlobSource::DataEndpoint).with_proxy(h("proxy.local:3128"));
    let ip_login = EgressPolicy::new(
        h("10.0.0.5:5000"),
        vec![h(EAST)],
        vec![],
        BlobSource::DataEndpoint,
    )
    .unwrap();
    enum Want {
        Direct,
        Tunnel,
        Refused(&'static str),
        Tunnel403(&'static str),
        NotHttps,
    }
    let cases: &[(&EgressPolicy, &str, &str, Want)] = &[
        (&direct, "https", LOGIN, Want::Direct),
        (&direct, "https", "CONTOSO.AzureCR.io:443", Want::Direct),
        (&direct, "https", EAST, Want::Direct),
        (&direct, "https", REALM_HOST, Want::Direct),
        // Right host, other port.
        (
            &direct,
            "https",
            "contoso.azurecr.io:8443",
            Want::Refused("contoso.azurecr.io:8443"),
        ),
        (
            &direct,
            "https",
            "auth.contoso.example",
            Want::Refused("auth.contoso.example:443"),
        ),
        // IP literals are not names on the list.
        (&direct, "https", "127.0.0.1:443", Want::Refused("127.0.0.1:443")),
        (&direct, "https", "[::1]:443", Want::Refused("[::1]:443")),
        (
            &direct,
            "https",
            "contoso.westus.data.azurecr.io",
            Want::Refused("contoso.westus"),
        ),
        (
            &direct,
            "https",
            "xn--contso-3ve.azurecr.io",
            Want::Refused("xn--contso-3ve"),
        ),
        (&direct, "http", LOGIN, Want::NotHttps),
        (&direct, "ftp", EAST, Want::NotHttps),
        // An IP literal configured as the login server is allowed, on its port only.
        (&ip_login, "https", "10.0.0.5:5000", Want::Direct),
        (&ip_login, "https", "10.0.0.5:443", Want::Refused("10.0.0.5:443")),
        // Through the proxy: only endpoints, and never the proxy itself as a target.
        (&proxied, "https", LOGIN, Want::Tunnel),
        (&proxied, "https", EAST, Want::Tunnel),
        (
            &proxied,
            "https",
            "evil.example",
            Want::Tunnel403("evil.example:443"),
        ),
        (
            &proxied,
            "https",
            "proxy.local:3128",
            Want::Tunnel403("proxy.local:3128"),
        ),
        (
            &proxied,
            "https",
            "contoso.azurecr.io:444",
            Want::Tunnel403("contoso.azurecr.io:444"),
        ),
        (&proxied, "http", LOGIN, Want::NotHttps),
    ];
    for (p, scheme, target, want) in cases {
        let got = p.dial(scheme, &h(target));
        let ok = match (want, &got) {
            (Want::Direct, Ok(Dial::Direct)) => true,
            (Want::Tunnel, Ok(Dial::Tunnel(proxy))) => *proxy == h("proxy.local:3128"),
            (Want::Refused(named), Err(e @ PolicyError::HostNotAllowed { .. })) => {
                e.to_string().contains(named) && !e.to_string().contains("proxy")
            }
            (Want::Tunnel403(named), Err(e @ PolicyError::TunnelNotAllowed { .. })) => {
                let m = e.to_string();
                m.contains(named) && m.contains("proxy.local:3128")
            }
            (Want::NotHttps, Err(PolicyError::DialNotHttps { .. })) => true,
            _ => false,
        };
        assert!(ok, "{scheme}://{target}: {got:?}");
    }
    // The allowed list named in a refusal is the endpoints, not the proxy.
    let msg = proxied.dial("https", &h("evil.example")).unwrap_err().to_string();
    assert!(msg.contains("contoso.azurecr.io:443"), "{msg}");
    assert!(!msg.contains("(proxy.local:3128"), "{msg}");
}

#[test]
fn may_resolve_table() {
    let direct = policy(BlobSource::DataEndpoint);
    let proxied = policy(BlobSource::DataEndpoint).with_proxy(h("Proxy.Local:3128"));
    for (p, host, want) in [
        (&direct, LOGIN, true),
        (&direct, "Contoso.AzureCR.io", true),
        (&direct, EAST, true),
        (&direct, "auth.contoso.example", true),
        (&direct, "evil.example", false),
        (&direct, "proxy.local", false),
        // With a proxy, the proxy resolves the endpoints; edgepull resolves only the proxy.
        (&proxied, "proxy.local", true),
        (&proxied, "PROXY.local", true),
        (&proxied, LOGIN, false),
        (&proxied, EAST, false),
    ] {
        assert_eq!(p.may_resolve(host), want, "{host}");
    }
}

#[test]
fn blob_source_spelling_round_trips() {
    assert_eq!(BlobSource::default(), BlobSource::DataEndpoint);
    for source in BlobSource::ALL {
        assert_eq!(BlobSource::parse(source.as_str()), Some(source));
    }
    assert_eq!(BlobSource::DataEndpoint.as_str(), "data-endpoint");
    assert_eq!(BlobSource::Registry.as_str(), "registry");
    for other in ["", "storage", "Registry", "data_endpoint"] {
        assert_eq!(BlobSource::parse(other), None, "{other}");
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
            Want::Refuse(|e| matches!(e, PolicyError::RedirectNotHttps { scheme, .. } if scheme == "http")),
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
