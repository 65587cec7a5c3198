//! Tests of the fake registry itself, driven with a plain reqwest client.

use std::time::{Duration, Instant};

use edgepull_core::oci::manifest::{OCI_INDEX, OCI_MANIFEST};
use edgepull_core::oci::{Digest, Document, Platform};
use edgepull_testkit::{AuthMode, FakeOptions, FakeRegistry, ServerName, TokenField, random_bytes};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, LOCATION, RANGE, WWW_AUTHENTICATE};

fn client(fake: &FakeRegistry) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = reqwest::Certificate::from_pem(fake.ca_pem().as_bytes()).unwrap();
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([ca])
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(20));
    for (host, addr) in fake.resolve_map() {
        builder = builder.resolve(&host, addr);
    }
    builder.build().unwrap()
}

async fn json(resp: reqwest::Response) -> serde_json::Value {
    serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap()
}

fn login_url(fake: &FakeRegistry, path: &str) -> String {
    format!("{}{path}", fake.login_host().https_base())
}

async fn anonymous_token(c: &reqwest::Client, fake: &FakeRegistry, repo: &str) -> String {
    let url = login_url(
        fake,
        &format!("/oauth2/token?service=contoso.azurecr.test&scope=repository:{repo}:pull"),
    );
    let reply = json(c.get(url).send().await.unwrap()).await;
    reply["access_token"].as_str().unwrap().to_string()
}

/// Blob GET on the login server with a token; returns the redirect target.
async fn blob_location(
    c: &reqwest::Client,
    fake: &FakeRegistry,
    token: &str,
    repo: &str,
    digest: &Digest,
) -> String {
    let resp = c
        .get(login_url(fake, &format!("/v2/{repo}/blobs/{digest}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TEMPORARY_REDIRECT);
    resp.headers()[LOCATION].to_str().unwrap().to_string()
}

#[tokio::test]
async fn blob_get_redirects_to_eastus_and_the_link_serves_bytes_without_authorization() {
    let fake = FakeRegistry::start(FakeOptions::default()).await;
    let c = client(&fake);
    let data = random_bytes(200_000);
    let desc = fake.add_blob("app", data.clone());

    let unauth = c
        .get(login_url(&fake, &format!("/v2/app/blobs/{}", desc.digest)))
        .send()
        .await
        .unwrap();
    assert_eq!(unauth.status(), StatusCode::UNAUTHORIZED);
    let challenge = unauth.headers()[WWW_AUTHENTICATE].to_str().unwrap();
    assert_eq!(
        challenge,
        format!(
            r#"Bearer realm="https://contoso.azurecr.test:{}/oauth2/token",service="contoso.azurecr.test",scope="repository:app:pull""#,
            fake.login_host().port()
        )
    );

    let token = anonymous_token(&c, &fake, "app").await;
    let location = blob_location(&c, &fake, &token, "app", &desc.digest).await;
    let url = url::Url::parse(&location).unwrap();
    assert_eq!(url.host_str(), Some("contoso.eastus.data.azurecr.test"));
    assert_eq!(url.port(), Some(fake.data_endpoint("eastus").port()));
    let keys: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
    assert_eq!(keys, ["sig", "se"]);

    let resp = c.get(&location).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.content_length(), Some(data.len() as u64));
    assert_eq!(resp.bytes().await.unwrap(), data);

    // Azure storage refuses a forwarded registry Authorization header.
    let forwarded = c.get(&location).bearer_auth(&token).send().await.unwrap();
    assert_eq!(forwarded.status(), StatusCode::BAD_REQUEST);

    // A tampered signature is refused.
    let tampered = location.replace("sig=", "sig=0");
    assert_eq!(
        c.get(&tampered).send().await.unwrap().status(),
        StatusCode::FORBIDDEN
    );

    let log = fake.requests();
    let east: Vec<_> = log.iter().filter(|r| r.server == ServerName::EastUs).collect();
    assert_eq!(east.len(), 3);
    assert_eq!(east[0].auth_scheme, None);
    assert_eq!(east[0].status, 200);
    assert_eq!(east[0].body_bytes_sent, data.len() as u64);
    assert_eq!(east[0].query.as_deref(), Some("sig=REDACTED&se=REDACTED"));
    assert_eq!(east[1].auth_scheme.as_deref(), Some("Bearer"));
    let login_blob: Vec<_> = log
        .iter()
        .filter(|r| r.server == ServerName::Login && r.path.contains("/blobs/"))
        .map(|r| (r.auth_scheme.clone(), r.status))
        .collect();
    assert_eq!(login_blob, [(None, 401), (Some("Bearer".to_string()), 307)]);
    assert_eq!(fake.connections(ServerName::WestUs), 0);
    assert!(fake.connections(ServerName::EastUs) >= 1);
}

#[tokio::test]
async fn range_requests_get_206_or_416() {
    let fake = FakeRegistry::start(FakeOptions::default()).await;
    let c = client(&fake);
    let data = random_bytes(100_000);
    let desc = fake.add_blob("app", data.clone());
    let token = anonymous_token(&c, &fake, "app").await;
    let location = blob_location(&c, &fake, &token, "app", &desc.digest).await;

    let resp = c
        .get(&location)
        .header(RANGE, "bytes=60000-")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(resp.headers()[CONTENT_RANGE], "bytes 60000-99999/100000");
    assert_eq!(resp.bytes().await.unwrap(), data[60000..]);

    let resp = c
        .get(&location)
        .header(RANGE, "bytes=100000-")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(resp.headers()[CONTENT_RANGE], "bytes */100000");

    fake.set_wrong_content_range(true);
    let resp = c.get(&location).header(RANGE, "bytes=10-").send().await.unwrap();
    assert_eq!(resp.headers()[CONTENT_RANGE], "bytes 0-99999/100000");
    fake.set_wrong_content_range(false);

    fake.set_ignore_range(true);
    let resp = c.get(&location).header(RANGE, "bytes=10-").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap().len(), data.len());

    let ranges: Vec<_> = fake
        .requests_to(ServerName::EastUs)
        .into_iter()
        .map(|r| r.range)
        .collect();
    assert_eq!(ranges[0].as_deref(), Some("bytes=60000-"));
}

#[tokio::test]
async fn token_mode_flow_and_records_never_hold_secrets() {
    let fake = FakeRegistry::start(FakeOptions {
        auth: AuthMode::Token {
            user: "puller".into(),
            pass: "s3cret-pw".into(),
        },
        ..FakeOptions::default()
    })
    .await;
    let c = client(&fake);
    let (digest, blobs) = fake.push_image("team/app", "v1", vec![random_bytes(1000)]);
    assert_eq!(blobs.len(), 2);

    let v2 = c.get(login_url(&fake, "/v2/")).send().await.unwrap();
    assert_eq!(v2.status(), StatusCode::UNAUTHORIZED);
    let challenge = v2.headers()[WWW_AUTHENTICATE].to_str().unwrap().to_string();
    assert!(
        challenge.starts_with("Bearer realm=") && !challenge.contains("scope="),
        "{challenge}"
    );

    let token_url = login_url(
        &fake,
        "/oauth2/token?service=contoso.azurecr.test&scope=repository:team/app:pull",
    );
    assert_eq!(
        c.get(&token_url).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let wrong = c
        .get(&token_url)
        .basic_auth("puller", Some("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    // ACR refuses the OAuth2 password grant with 400; clients fall back to GET.
    let post = c
        .post(login_url(&fake, "/oauth2/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=password&service=contoso.azurecr.test&scope=repository%3Ateam%2Fapp%3Apull&username=puller&password=s3cret-pw&client_id=x")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), StatusCode::BAD_REQUEST);

    let reply = json(
        c.get(&token_url)
            .basic_auth("puller", Some("s3cret-pw"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply["expires_in"], 300);
    let token = reply["access_token"].as_str().unwrap();

    let manifest = c
        .get(login_url(&fake, "/v2/team/app/manifests/v1"))
        .bearer_auth(token)
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(manifest.status(), StatusCode::OK);
    assert_eq!(
        manifest.headers()["docker-content-digest"],
        digest.to_string().as_str()
    );
    let ct = manifest.headers()["content-type"].to_str().unwrap().to_string();
    let body = manifest.bytes().await.unwrap();
    assert_eq!(Digest::of(&body), digest);
    let Document::Manifest(m) = Document::parse(&body, &ct).unwrap() else {
        panic!("expected a manifest")
    };
    assert_eq!(m.config.digest, blobs[0].digest);

    // A token for one repository does not open another.
    let other = c
        .get(login_url(&fake, "/v2/other/manifests/v1"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert!(
        other.headers()[WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .contains(r#"error="insufficient_scope""#)
    );

    fake.expire_tokens();
    let expired = c
        .head(login_url(&fake, "/v2/team/app/manifests/v1"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);
    assert!(
        expired.headers()[WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .contains(r#"error="invalid_token""#)
    );

    let log = fake.requests();
    let schemes: Vec<_> = log
        .iter()
        .filter(|r| r.path == "/oauth2/token")
        .map(|r| (r.method.as_str(), r.auth_scheme.as_deref(), r.status))
        .collect();
    assert_eq!(
        schemes,
        [
            ("GET", None, 401),
            ("GET", Some("Basic"), 401),
            ("POST", None, 400),
            ("GET", Some("Basic"), 200)
        ]
    );
    let dump = format!("{log:?}");
    assert!(!dump.contains("s3cret-pw") && !dump.contains(token));
}

#[tokio::test]
async fn refresh_token_and_basic_modes() {
    let fake = FakeRegistry::start(FakeOptions {
        auth: AuthMode::RefreshToken {
            refresh_token: "rt-123".into(),
        },
        ..FakeOptions::default()
    })
    .await;
    fake.set_token_field(TokenField::Token);
    fake.set_omit_expires_in(true);
    let c = client(&fake);
    let form = |rt: &str| {
        format!(
            "grant_type=refresh_token&service=contoso.azurecr.test&scope=repository%3Aapp%3Apull&refresh_token={rt}"
        )
    };
    let post = |body: String| {
        c.post(login_url(&fake, "/oauth2/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    assert_eq!(
        post(form("wrong")).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let reply = json(post(form("rt-123")).await.unwrap()).await;
    assert!(reply["token"].is_string() && reply.get("access_token").is_none());
    assert!(reply.get("expires_in").is_none());
    let ok = c
        .get(login_url(&fake, "/v2/"))
        .bearer_auth(reply["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);

    let basic = FakeRegistry::start(FakeOptions {
        auth: AuthMode::Basic {
            user: "u".into(),
            pass: "p".into(),
        },
        ..FakeOptions::default()
    })
    .await;
    let c = client(&basic);
    let resp = c.get(login_url(&basic, "/v2/")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(
        resp.headers()[WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Basic realm=")
    );
    let resp = c
        .get(login_url(&basic, "/v2/"))
        .basic_auth("u", Some("p"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = c
        .get(login_url(&basic, "/oauth2/token?service=contoso.azurecr.test"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn realm_on_the_auth_host() {
    let fake = FakeRegistry::start(FakeOptions {
        auth: AuthMode::Token {
            user: "u".into(),
            pass: "p".into(),
        },
        ..FakeOptions::default()
    })
    .await;
    fake.set_realm_on_auth_host(true);
    let c = client(&fake);
    let resp = c.get(login_url(&fake, "/v2/")).send().await.unwrap();
    let challenge = resp.headers()[WWW_AUTHENTICATE].to_str().unwrap().to_string();
    let realm = format!(
        "https://auth.contoso.test:{}/oauth2/token",
        fake.auth_host().port()
    );
    assert!(challenge.contains(&realm), "{challenge}");
    let reply = json(
        c.get(format!("{realm}?service=contoso.azurecr.test"))
            .basic_auth("u", Some("p"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let ok = c
        .get(login_url(&fake, "/v2/"))
        .bearer_auth(reply["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(fake.requests_to(ServerName::Auth).len(), 1);
    assert_eq!(fake.connections(ServerName::Auth), 1);
}

#[tokio::test]
async fn cut_after_aborts_the_body_then_recovers() {
    let fake = FakeRegistry::start(FakeOptions::default()).await;
    let c = client(&fake);
    let data = random_bytes(300_000);
    let desc = fake.add_blob("app", data.clone());
    let token = anonymous_token(&c, &fake, "app").await;
    let location = blob_location(&c, &fake, &token, "app", &desc.digest).await;
    fake.set_cut_after(Some((100_000, 1)));

    let mut resp = c.get(&location).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.content_length(), Some(300_000));
    let mut got = Vec::new();
    let err = loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => got.extend_from_slice(&chunk),
            Ok(None) => panic!("body completed despite cut_after"),
            Err(e) => break e,
        }
    };
    assert!(err.is_body() || err.is_decode() || err.is_request(), "{err:?}");
    assert_eq!(got.len(), 100_000);
    assert_eq!(got, data[..100_000]);
    let sent = fake.requests_to(ServerName::EastUs)[0].body_bytes_sent;
    assert_eq!(sent, 100_000);

    // Only one response was cut; resuming with Range completes the blob.
    let resp = c
        .get(&location)
        .header(RANGE, "bytes=100000-")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    got.extend_from_slice(&resp.bytes().await.unwrap());
    assert_eq!(Digest::of(&got), desc.digest);
}

#[tokio::test]
async fn body_misbehaviours() {
    let fake = FakeRegistry::start(FakeOptions::default()).await;
    let c = client(&fake);
    let data = random_bytes(50_000);
    let desc = fake.add_blob("app", data.clone());
    let token = anonymous_token(&c, &fake, "app").await;
    let location = blob_location(&c, &fake, &token, "app", &desc.digest).await;

    fake.set_extra_bytes(10);
    let resp = c.get(&location).send().await.unwrap();
    assert_eq!(resp.content_length(), Some(50_010));
    let body = resp.bytes().await.unwrap();
    assert_eq!(body[..50_000], data[..]);
    fake.set_extra_bytes(0);

    fake.set_corrupt_blob(Some(desc.digest));
    fake.set_content_encoding(Some("gzip"));
    let resp = c.get(&location).send().await.unwrap();
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let body = resp.bytes().await.unwrap();
    assert_eq!(body.len(), data.len());
    assert_ne!(Digest::of(&body), desc.digest);
    assert_eq!(body[25_000], data[25_000] ^ 0xff);
    fake.set_corrupt_blob(None);
    fake.set_content_encoding(None);

    fake.set_rate_limit(Some(200_000));
    let started = Instant::now();
    let body = c.get(&location).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(body, data);
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    fake.set_rate_limit(None);

    fake.expire_links();
    assert_eq!(
        c.get(&location).send().await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn login_server_misbehaviours() {
    let fake = FakeRegistry::start(FakeOptions::default()).await;
    let c = client(&fake);
    let data = random_bytes(4000);
    let desc = fake.add_blob("app", data.clone());
    let (digest, _) = fake.push_image("app", "v1", vec![random_bytes(10)]);
    let token = anonymous_token(&c, &fake, "app").await;
    let get = |path: String| c.get(login_url(&fake, &path)).bearer_auth(&token).send();
    let blob_path = format!("/v2/app/blobs/{}", desc.digest);

    fake.fail_next(429, Some("1"));
    fake.fail_next(503, None);
    let resp = get(blob_path.clone()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(get("/v2/app/manifests/v1".into()).await.unwrap().status(), 503);
    assert_eq!(get(blob_path.clone()).await.unwrap().status(), 307);

    fake.set_redirect_region("westus");
    let location = blob_location(&c, &fake, &token, "app", &desc.digest).await;
    assert!(location.starts_with(&fake.data_endpoint("westus").https_base()));
    assert_eq!(
        c.get(&location).send().await.unwrap().bytes().await.unwrap(),
        data
    );
    // A westus link is not valid on eastus.
    let on_east = location.replace(
        &fake.data_endpoint("westus").https_base(),
        &fake.data_endpoint("eastus").https_base(),
    );
    assert_eq!(
        c.get(&on_east).send().await.unwrap().status(),
        StatusCode::FORBIDDEN
    );

    fake.set_redirect_location_override(Some("https://evil.test:1/x"));
    assert_eq!(
        blob_location(&c, &fake, &token, "app", &desc.digest).await,
        "https://evil.test:1/x"
    );
    fake.set_redirect_location_override(None);

    fake.set_blob_direct(true);
    let resp = get(blob_path.clone()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap(), data);
    fake.set_blob_direct(false);

    fake.set_head_manifest_405(true);
    let head = c
        .head(login_url(&fake, "/v2/app/manifests/v1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::METHOD_NOT_ALLOWED);
    fake.set_head_manifest_405(false);
    let head = c
        .head(login_url(&fake, &format!("/v2/app/manifests/{digest}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(
        head.headers()["docker-content-digest"],
        digest.to_string().as_str()
    );
    assert!(
        head.headers()["content-length"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );

    let huge = vec![b' '; 5 * 1024 * 1024];
    fake.override_manifest("app", "big", huge, OCI_MANIFEST);
    let resp = get("/v2/app/manifests/big".into()).await.unwrap();
    assert_eq!(resp.content_length(), Some(5 * 1024 * 1024));
    assert_eq!(resp.bytes().await.unwrap().len(), 5 * 1024 * 1024);

    assert_eq!(get("/v2/app/manifests/nope".into()).await.unwrap().status(), 404);
    assert_eq!(get("/v2/BAD/manifests/v1".into()).await.unwrap().status(), 400);
    assert_eq!(get("/v2/app/blobs/sha256:zz".into()).await.unwrap().status(), 400);
}

#[tokio::test]
async fn index_and_tags() {
    let fake = FakeRegistry::start(FakeOptions::default()).await;
    let c = client(&fake);
    let arm64 = Platform::parse("linux/arm64").unwrap();
    let amd64 = Platform::parse("linux/amd64").unwrap();
    let index = fake.push_index(
        "multi",
        "latest",
        vec![
            (amd64, vec![random_bytes(100)]),
            (arm64.clone(), vec![random_bytes(200), random_bytes(300)]),
        ],
    );
    let token = anonymous_token(&c, &fake, "multi").await;
    let resp = c
        .get(login_url(&fake, "/v2/multi/manifests/latest"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], OCI_INDEX);
    let body = resp.bytes().await.unwrap();
    assert_eq!(Digest::of(&body), index);
    let Document::Index(idx) = Document::parse(&body, OCI_INDEX).unwrap() else {
        panic!("expected an index")
    };
    let entry = idx
        .manifests
        .iter()
        .find(|d| d.platform.as_ref().unwrap().to_platform() == arm64)
        .unwrap();
    let resp = c
        .get(login_url(&fake, &format!("/v2/multi/manifests/{}", entry.digest)))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    let Document::Manifest(m) = Document::parse(&resp.bytes().await.unwrap(), &ct).unwrap() else {
        panic!("expected a manifest")
    };
    assert_eq!(m.layers.len(), 2);
    let config = fake.blob(&m.config.digest).unwrap();
    let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
    assert_eq!(config["architecture"], "arm64");
    assert_eq!(config["rootfs"]["diff_ids"][1], m.layers[1].digest.to_string());

    fake.move_tag("multi", "latest", entry.digest);
    let resp = c
        .get(login_url(&fake, "/v2/multi/manifests/latest"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["docker-content-digest"],
        entry.digest.to_string().as_str()
    );
}

#[tokio::test]
async fn client_files_connections_and_shutdown() {
    let fake = FakeRegistry::start(FakeOptions {
        auth: AuthMode::Token {
            user: "puller".into(),
            pass: "pw".into(),
        },
        ..FakeOptions::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config_path = fake.write_client_files(dir.path());
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    let reg = &config["registry"];
    assert_eq!(reg["login_server"], fake.login_host().to_string());
    assert_eq!(reg["region"], "eastus");
    assert_eq!(reg["data_endpoints"][0], fake.data_endpoint("eastus").to_string());
    // Only the allowed hosts are pinned: edgepull refuses pins for any other name.
    assert_eq!(reg["resolve"]["contoso.eastus.data.azurecr.test"], "127.0.0.1");
    assert_eq!(reg["resolve"]["contoso.azurecr.test"], "127.0.0.1");
    assert_eq!(reg["resolve"].as_object().unwrap().len(), 2);
    assert_eq!(reg["auth"]["username"], "puller");
    let pw_file = reg["auth"]["password_file"].as_str().unwrap();
    assert_eq!(std::fs::read_to_string(pw_file).unwrap(), "pw");
    let ca = std::fs::read_to_string(reg["ca_file"].as_str().unwrap()).unwrap();
    assert_eq!(ca, fake.ca_pem());
    assert_eq!(
        config["store"]["path"],
        dir.path().join("store").to_str().unwrap()
    );

    let c = client(&fake);
    for _ in 0..3 {
        c.get(login_url(&fake, "/v2/")).send().await.unwrap();
    }
    assert_eq!(
        fake.connections(ServerName::Login),
        1,
        "keep-alive reuses one connection"
    );
    fake.clear_log();
    assert!(fake.requests().is_empty());
    assert_eq!(fake.connections(ServerName::Login), 0);

    let addr = fake.socket_addr(ServerName::Login);
    drop(fake);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
