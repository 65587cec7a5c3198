//! Redirect chains and realms that try to leave the allowlist, end to end against the fake
//! registry (issue 9): one table, each row a hostile (or allowed) chain with the exact
//! error category and a fragment of the message it must give, and for every row ZERO
//! connections to the foreign listener (a TLS server on 127.0.0.1 the config never
//! allows; `localhost`, `127.0.0.1` and the pinned eastus name on its port all reach it,
//! so a client that followed would be counted) and no `Authorization` at a data endpoint.

mod common;

use std::net::SocketAddr;

use common::*;
use edgepull::exit::Category;
use edgepull_core::hostport::HostPort;
use edgepull_testkit::{ConnectProxy, DataRedirect, ServerName, random_bytes};

/// One row: what the registry does, and what edgepull must answer.
struct Case {
    name: &'static str,
    /// Knobs (and config edits) for this row.
    arrange: fn(&Env),
    /// `Some((category, message fragment))` for a refusal, `None` when the pull completes.
    expect: fn(&Env) -> Option<(Category, String)>,
}

fn foreign(env: &Env) -> SocketAddr {
    env.fake.foreign_addr()
}

fn f_port(env: &Env) -> u16 {
    foreign(env).port()
}

fn east(env: &Env) -> HostPort {
    env.fake.data_endpoint("eastus")
}

fn west(env: &Env) -> HostPort {
    env.fake.data_endpoint("westus")
}

fn login(env: &Env) -> String {
    env.fake.login_host().with_port()
}

fn location(env: &Env, loc: String) {
    env.fake.set_redirect_location_override(Some(&loc));
}

/// westus joins eastus as an allowed data endpoint.
fn allow_westus(env: &Env) {
    let west = west(env);
    env.edit_config(|c| {
        c["registry"]["data_endpoints"] = serde_json::json!([east(env).to_string(), west.to_string()]);
        c["registry"]["resolve"][west.host()] = "127.0.0.1".into();
    });
}

/// The host the URL parser makes of `url` (punycode for Unicode names).
fn parsed_host(url: &str) -> String {
    url::Url::parse(url)
        .expect("url")
        .host_str()
        .expect("host")
        .to_string()
}

const HOMOGLYPH: &str = "c\u{043e}ntoso.eastus.data.azurecr.test";
const UNICODE_SUFFIX: &str = "contoso.eastus.data.azurecr.test.\u{0438}\u{0441}\u{043f}\u{044b}\u{0442}\u{0430}\u{043d}\u{0438}\u{0435}";

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "login → allowed data endpoint → foreign host",
            arrange: |env| {
                let to = format!("https://localhost:{}/blob", f_port(env));
                env.fake.set_data_redirect(Some(DataRedirect::To(to)));
            },
            expect: |env| {
                Some((
                    Category::Policy,
                    format!(
                        "blob redirect from {} to localhost:{} refused: only {} is allowed",
                        east(env).with_port(),
                        f_port(env),
                        east(env).with_port()
                    ),
                ))
            },
        },
        Case {
            name: "login → allowed data endpoint → foreign IP literal",
            arrange: |env| {
                let to = format!("https://{}/blob", foreign(env));
                env.fake.set_data_redirect(Some(DataRedirect::To(to)));
            },
            expect: |env| {
                Some((
                    Category::Policy,
                    format!(
                        "blob redirect from {} to {} refused",
                        east(env).with_port(),
                        foreign(env)
                    ),
                ))
            },
        },
        Case {
            name: "login → allowed data endpoint → the other region (not configured)",
            arrange: |env| env.fake.set_data_redirect(Some(DataRedirect::Chain(1))),
            expect: |env| {
                Some((
                    Category::Policy,
                    format!(
                        "blob redirect from {} to {} refused",
                        east(env).with_port(),
                        west(env).with_port()
                    ),
                ))
            },
        },
        Case {
            name: "userinfo in Location (foreign host)",
            arrange: |env| {
                location(
                    env,
                    format!("https://edgepull:hunter2@localhost:{}/blob", f_port(env)),
                )
            },
            expect: |env| {
                Some((
                    Category::Policy,
                    format!(
                        "blob redirect from {} to localhost:{} refused: the Location carries userinfo",
                        login(env),
                        f_port(env)
                    ),
                ))
            },
        },
        Case {
            name: "userinfo in Location (the allowed data endpoint)",
            arrange: |env| location(env, format!("https://edgepull:hunter2@{}/blob/x", east(env))),
            expect: |env| {
                Some((
                    Category::Policy,
                    format!(
                        "to {} refused: the Location carries userinfo",
                        east(env).with_port()
                    ),
                ))
            },
        },
        Case {
            name: "http:// downgrade (foreign host)",
            arrange: |env| location(env, format!("http://localhost:{}/blob", f_port(env))),
            expect: |env| {
                Some((
                    Category::Policy,
                    format!(
                        "blob redirect from {} to http://localhost:{} refused: only https is allowed",
                        login(env),
                        f_port(env)
                    ),
                ))
            },
        },
        Case {
            name: "http:// downgrade (the allowed data endpoint)",
            arrange: |env| location(env, format!("http://{}/blob/x", east(env).with_port())),
            expect: |env| {
                Some((
                    Category::Policy,
                    format!(
                        "to http://{} refused: only https is allowed",
                        east(env).with_port()
                    ),
                ))
            },
        },
        Case {
            name: "same host, other port",
            arrange: |env| location(env, format!("https://{}:{}/blob", east(env).host(), f_port(env))),
            expect: |env| {
                Some((
                    Category::Policy,
                    format!(
                        "blob redirect from {} to {}:{} refused",
                        login(env),
                        east(env).host(),
                        f_port(env)
                    ),
                ))
            },
        },
        Case {
            name: "IP literal",
            arrange: |env| location(env, format!("https://{}/blob", foreign(env))),
            expect: |env| {
                Some((
                    Category::Policy,
                    format!("blob redirect from {} to {} refused", login(env), foreign(env)),
                ))
            },
        },
        Case {
            name: "IDN homoglyph of the data endpoint (Cyrillic o)",
            arrange: |env| location(env, format!("https://{HOMOGLYPH}:{}/blob", east(env).port())),
            expect: |env| {
                let host = parsed_host(&format!("https://{HOMOGLYPH}/"));
                assert!(host.starts_with("xn--"), "the parser makes punycode: {host}");
                Some((
                    Category::Policy,
                    format!("to {host}:{} refused", east(env).port()),
                ))
            },
        },
        Case {
            name: "IDN homoglyph of the data endpoint, sent as punycode",
            arrange: |env| {
                let host = parsed_host(&format!("https://{HOMOGLYPH}/"));
                location(env, format!("https://{host}:{}/blob", east(env).port()));
            },
            expect: |env| {
                let host = parsed_host(&format!("https://{HOMOGLYPH}/"));
                Some((
                    Category::Policy,
                    format!("to {host}:{} refused", east(env).port()),
                ))
            },
        },
        Case {
            name: "the data endpoint's name under a Unicode suffix",
            arrange: |env| location(env, format!("https://{UNICODE_SUFFIX}:{}/blob", east(env).port())),
            expect: |env| {
                let host = parsed_host(&format!("https://{UNICODE_SUFFIX}/"));
                assert!(
                    host.starts_with("contoso.eastus.data.azurecr.test.xn--"),
                    "{host}"
                );
                Some((
                    Category::Policy,
                    format!("to {host}:{} refused", east(env).port()),
                ))
            },
        },
        Case {
            name: "realm on another host",
            arrange: |env| {
                let realm = format!("https://localhost:{}/oauth2/token", f_port(env));
                env.fake.set_realm_override(Some(&realm));
            },
            expect: |env| {
                Some((
                    Category::Policy,
                    format!(
                        "token realm on localhost:{} refused: credentials go only to {}",
                        f_port(env),
                        login(env)
                    ),
                ))
            },
        },
        Case {
            name: "realm over http",
            arrange: |env| {
                let realm = format!("http://{}/oauth2/token", login(env));
                env.fake.set_realm_override(Some(&realm));
            },
            expect: |env| {
                Some((
                    Category::Policy,
                    format!(
                        "token realm on {} refused: scheme \"http\" is not https",
                        env.fake.login_host().host().to_string()
                            + ":"
                            + &env.fake.login_host().port().to_string()
                    ),
                ))
            },
        },
        Case {
            name: "a redirect loop at the data endpoint",
            arrange: |env| env.fake.set_data_redirect(Some(DataRedirect::Loop)),
            expect: |env| {
                Some((
                    Category::Policy,
                    format!(
                        "blob redirect from {} refused: already followed 3 redirects for this blob",
                        east(env).with_port()
                    ),
                ))
            },
        },
        Case {
            name: "more than 3 hops among allowed endpoints",
            arrange: |env| {
                allow_westus(env);
                env.fake.set_data_redirect(Some(DataRedirect::Chain(3)));
            },
            expect: |env| {
                // login → eastus → westus → eastus, which redirects a fourth time.
                Some((
                    Category::Policy,
                    format!(
                        "blob redirect from {} refused: already followed 3 redirects for this blob",
                        east(env).with_port()
                    ),
                ))
            },
        },
        Case {
            name: "3 hops among allowed endpoints: the pull completes",
            arrange: |env| {
                allow_westus(env);
                env.fake.set_data_redirect(Some(DataRedirect::Chain(2)));
            },
            expect: |_| None,
        },
    ]
}

#[test]
fn hostile_redirect_chains_and_realms_are_refused_without_touching_the_foreign_listener() {
    let mut failures = Vec::new();
    for case in cases() {
        let env = Env::token();
        let (_, blobs) =
            env.fake
                .push_image_for("app", "x", &platform("linux/arm64"), vec![random_bytes(3000)]);
        (case.arrange)(&env);
        let puller = env.puller();
        let result = pull(&env, &puller, "x");
        drop(puller);
        let name = case.name;
        match ((case.expect)(&env), result) {
            (Some((category, fragment)), Err(err)) => {
                let msg = edgepull::error_chain(&err);
                if err.category() != category || !msg.contains(&fragment) {
                    failures.push(format!(
                        "{name}: want {category:?} with {fragment:?}, got {:?}: {msg}",
                        err.category()
                    ));
                }
                for secret in ["hunter2", "sig="] {
                    assert!(!msg.contains(secret), "{name}: {secret} in the error: {msg}");
                }
                assert!(
                    blob_files(&env.store_path()).is_empty(),
                    "{name}: a blob became visible"
                );
            }
            (Some((_, fragment)), Ok(_)) => failures.push(format!("{name}: pulled, want {fragment:?}")),
            (None, Err(err)) => failures.push(format!("{name}: {}", edgepull::error_chain(&err))),
            (None, Ok(_)) => {
                // Every blob came over login → eastus → westus → eastus, credentials only
                // on the first hop.
                for b in &blobs {
                    assert!(
                        blob_files(&env.store_path()).contains(&b.digest.hex().to_string()),
                        "{name}: {} missing",
                        b.digest
                    );
                }
                let reqs = env.fake.requests();
                let count = |s: ServerName| reqs.iter().filter(|r| r.server == s && r.status == 307).count();
                assert_eq!(count(ServerName::EastUs), blobs.len(), "{name}: {reqs:#?}");
                assert_eq!(count(ServerName::WestUs), blobs.len(), "{name}: {reqs:#?}");
                assert!(
                    reqs.iter()
                        .filter(|r| r.server == ServerName::Login && r.path.contains("/blobs/"))
                        .all(|r| r.status != 307 || r.auth_scheme.as_deref() == Some("Bearer")),
                    "{name}: the login server's redirects answer authorized requests"
                );
            }
        }
        assert_eq!(
            env.fake.foreign_connections(),
            0,
            "{name}: the foreign listener was dialled"
        );
        env.assert_no_auth_at_data_endpoints();
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Through a `CONNECT` proxy: the pull works, every tunnel goes to an allowed endpoint, no
/// `CONNECT` carries credentials, and a redirect elsewhere asks the proxy for nothing.
#[test]
fn through_a_proxy_only_allowed_endpoints_are_tunnelled() {
    let env = Env::token();
    env.fake
        .push_image_for("app", "x", &platform("linux/arm64"), vec![random_bytes(3000)]);
    let proxy = ConnectProxy::start();
    env.edit_config(|c| {
        c["registry"]["proxy"] = format!("http://{}", proxy.addr()).into();
        // With a proxy, the proxy resolves the endpoints (config allows only its own name).
        c["registry"].as_object_mut().expect("registry").remove("resolve");
    });
    let puller = env.puller();
    pull(&env, &puller, "x").unwrap_or_else(|e| panic!("{}", edgepull::error_chain(&e)));
    drop(puller);
    let allowed = [login(&env), east(&env).with_port()];
    let connects = proxy.connects();
    let targets: std::collections::BTreeSet<&str> = connects.iter().map(|c| c.target.as_str()).collect();
    assert_eq!(
        targets,
        allowed.iter().map(String::as_str).collect(),
        "{connects:?}"
    );
    for c in &connects {
        assert!(
            !c.headers
                .iter()
                .any(|h| h == "authorization" || h == "proxy-authorization"),
            "{c:?}"
        );
    }
    env.assert_no_auth_at_data_endpoints();

    // Redirects elsewhere: the other region, the foreign listener by address and by name.
    for hostile in [
        None,
        Some(format!("https://{}/blob", foreign(&env))),
        Some(format!("https://localhost:{}/blob", f_port(&env))),
    ] {
        match &hostile {
            None => env.fake.set_redirect_region("westus"),
            Some(loc) => location(&env, loc.clone()),
        }
        let before = proxy.connects().len();
        let puller = env.puller();
        env.fake
            .push_image_for("app", "y", &platform("linux/arm64"), vec![random_bytes(3000)]);
        let err = pull(&env, &puller, "y").expect_err("refused");
        assert_eq!(
            err.category(),
            Category::Policy,
            "{}",
            edgepull::error_chain(&err)
        );
        let new: Vec<String> = proxy.connects()[before..]
            .iter()
            .map(|c| c.target.clone())
            .collect();
        assert!(
            new.iter().all(|t| allowed.contains(t)),
            "{hostile:?}: tunnels to {new:?}"
        );
        env.fake.set_redirect_region("eastus");
        env.fake.set_redirect_location_override(None);
    }
    assert_eq!(env.fake.connections(ServerName::WestUs), 0);
    assert_eq!(env.fake.foreign_connections(), 0);
}
