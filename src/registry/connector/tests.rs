//! The gate at the connector, tested where it stands: raw requests through the client
//! `build_client` makes, with no redirect or realm check in front, against the fake
//! registry's listeners (which count TCP connections) and a recording `CONNECT` proxy.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use edgepull_core::egress::{BlobSource, EgressPolicy, PolicyError};
use edgepull_core::hostport::HostPort;
use edgepull_testkit::{ConnectProxy, FakeOptions, FakeRegistry, ServerName};

use super::{DialRefused, GateLayer, refusal};
use crate::registry::http::{HttpSettings, build_client};
use crate::registry::transport::{Request, Transport, TransportError};

/// A fake registry, and a client whose policy allows its login server and eastus only
/// (through `proxy` when given). Every fake name is pinned to 127.0.0.1, so nothing but the
/// gate stands between a URL and a socket.
struct Setup {
    fake: FakeRegistry,
    client: reqwest::Client,
    policy: Arc<EgressPolicy>,
    _dir: tempfile::TempDir,
}

fn setup(proxy: Option<&ConnectProxy>) -> Setup {
    let fake = FakeRegistry::start_blocking(FakeOptions::default());
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, fake.ca_pem()).expect("write ca");
    let mut policy = EgressPolicy::new(
        fake.login_host(),
        vec![fake.data_endpoint("eastus")],
        vec![],
        BlobSource::DataEndpoint,
    )
    .expect("policy");
    if let Some(p) = proxy {
        let addr = p.addr();
        policy = policy.with_proxy(HostPort::new(&addr.ip().to_string(), addr.port()).expect("proxy"));
    }
    let policy = Arc::new(policy);
    let resolve: BTreeMap<String, IpAddr> = ServerName::ALL.iter().map(|s| (s.host(), fake.ip())).collect();
    let settings = HttpSettings {
        ca_file: Some(ca_file),
        resolve,
        connect_timeout: Duration::from_secs(5),
        idle_read_timeout: Duration::from_secs(5),
    };
    let client = build_client(&settings, policy.clone()).expect("client");
    Setup {
        fake,
        client,
        policy,
        _dir: dir,
    }
}

fn url(s: &str) -> url::Url {
    url::Url::parse(s).expect("url")
}

/// GET `u` with the raw client; the gate's refusal, or the status.
async fn get(client: &reqwest::Client, u: &str) -> Result<u16, PolicyError> {
    match client.get(u).send().await {
        Ok(resp) => Ok(resp.status().as_u16()),
        Err(e) => match refusal(&e) {
            Some(DialRefused::Policy(p)) => Err(p.clone()),
            other => panic!("GET {u}: not a gate refusal: {other:?} ({e:?})"),
        },
    }
}

#[tokio::test]
async fn an_allowed_endpoint_is_dialled() {
    let s = setup(None);
    let east = s.fake.data_endpoint("eastus");
    assert_eq!(get(&s.client, &format!("https://{east}/nothing")).await, Ok(404));
    assert_eq!(s.fake.connections(ServerName::EastUs), 1);
    assert_eq!(
        get(&s.client, &format!("{}/v2/", s.fake.login_host().https_base())).await,
        Ok(401)
    );
    assert_eq!(s.fake.connections(ServerName::Login), 1);
}

/// Weakness 5: an IP literal never meets the resolver. Here it names a real listener (the
/// fake's westus) that the policy does not allow; no TCP connection may reach it.
#[tokio::test]
async fn an_ip_literal_outside_the_allowlist_is_refused_with_no_connection() {
    let s = setup(None);
    let west = s.fake.socket_addr(ServerName::WestUs);
    let foreign = s.fake.foreign_addr();
    for target in [west, foreign] {
        let err = get(&s.client, &format!("https://{target}/v2/"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, PolicyError::HostNotAllowed { host, .. } if host.with_port() == target.to_string()),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(&target.to_string()),
            "names host:port: {err}"
        );
    }
    // IPv6 literals too (nothing listens there; the point is a refusal, not a panic).
    let v6 = format!("[::1]:{}", west.port());
    let err = get(&s.client, &format!("https://{v6}/")).await.unwrap_err();
    assert!(err.to_string().contains(&v6), "{err}");
    assert_eq!(s.fake.connections(ServerName::WestUs), 0);
    assert_eq!(s.fake.foreign_connections(), 0);
    // The same through the one send path: a policy error, not a network error.
    let transport = Transport::new(s.client.clone(), s.policy.clone());
    let sent = transport
        .send(Request::new(
            reqwest::Method::GET,
            url(&format!("https://{west}/v2/")),
        ))
        .await;
    assert!(
        matches!(
            sent,
            Err(TransportError::Policy(PolicyError::HostNotAllowed { .. }))
        ),
        "{sent:?}"
    );
    assert_eq!(s.fake.connections(ServerName::WestUs), 0);
}

/// Weakness 5: the resolver compares names only. The allowed eastus name on westus's port
/// resolves (it is pinned) and would reach westus; the gate compares the port too.
#[tokio::test]
async fn the_right_host_on_another_port_is_refused_with_no_connection() {
    let s = setup(None);
    let east = s.fake.data_endpoint("eastus");
    let west_port = s.fake.socket_addr(ServerName::WestUs).port();
    let foreign_port = s.fake.foreign_addr().port();
    for port in [west_port, foreign_port] {
        let target = format!("{}:{port}", east.host());
        let err = get(&s.client, &format!("https://{target}/blob"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, PolicyError::HostNotAllowed { host, .. } if host.with_port() == target),
            "{err:?}"
        );
    }
    assert_eq!(s.fake.connections(ServerName::WestUs), 0);
    assert_eq!(s.fake.connections(ServerName::EastUs), 0);
    assert_eq!(s.fake.foreign_connections(), 0);
}

/// One connection's verdict never decides the next: refused, allowed, refused again.
#[tokio::test]
async fn verdicts_do_not_leak_between_connections() {
    let s = setup(None);
    let west = s.fake.socket_addr(ServerName::WestUs);
    let east = s.fake.data_endpoint("eastus");
    for _ in 0..3 {
        assert!(get(&s.client, &format!("https://{west}/")).await.is_err());
        assert_eq!(get(&s.client, &format!("https://{east}/x")).await, Ok(404));
    }
    assert_eq!(s.fake.connections(ServerName::WestUs), 0);
}

/// Through a proxy: the proxy is the only socket edgepull opens, its `CONNECT` targets are
/// the allowed endpoints only, and a refused target costs not even a proxy connection.
#[tokio::test]
async fn through_the_proxy_only_allowed_targets_are_tunnelled() {
    let proxy = ConnectProxy::start();
    let s = setup(Some(&proxy));
    let east = s.fake.data_endpoint("eastus");
    assert_eq!(get(&s.client, &format!("https://{east}/x")).await, Ok(404));
    assert_eq!(proxy.connections(), 1);
    let connects = proxy.connects();
    assert_eq!(connects.len(), 1);
    assert_eq!(connects[0].target, east.with_port());
    assert!(
        !connects[0]
            .headers
            .iter()
            .any(|h| h == "proxy-authorization" || h == "authorization"),
        "{connects:?}"
    );

    let west = s.fake.socket_addr(ServerName::WestUs);
    let refused = [
        format!("https://{west}/"),
        format!("https://{}:{}/", east.host(), west.port()),
        format!("https://{}/", s.fake.data_endpoint("westus")),
        // The proxy as a target: it is dialled only to tunnel.
        format!("https://{}/", proxy.addr()),
    ];
    for u in &refused {
        let err = get(&s.client, u).await.unwrap_err();
        assert!(
            matches!(err, PolicyError::TunnelNotAllowed { .. }),
            "{u}: {err:?}"
        );
        assert!(
            err.to_string().contains(&proxy.addr().to_string()),
            "names the proxy: {err}"
        );
    }
    assert_eq!(proxy.connections(), 1, "no proxy connection for a refused target");
    assert_eq!(proxy.connects().len(), 1);
    assert_eq!(s.fake.connections(ServerName::WestUs), 0);
}

/// The gate fails closed: a connector layer with no matcher deciding (a reqwest that
/// stopped consulting it) opens nothing.
#[tokio::test]
async fn a_connection_nobody_checked_is_refused() {
    crate::registry::http::install_crypto_provider();
    let fake = FakeRegistry::start_blocking(FakeOptions::default());
    let client = reqwest::Client::builder()
        .no_proxy()
        .connector_layer(GateLayer)
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(fake.ca_pem().as_bytes()).expect("ca"))
        .build()
        .expect("client");
    let err = client
        .get(format!("https://{}/x", fake.socket_addr(ServerName::EastUs)))
        .send()
        .await
        .unwrap_err();
    assert!(matches!(refusal(&err), Some(DialRefused::Unchecked)), "{err:?}");
    assert_eq!(fake.connections(ServerName::EastUs), 0);
}
