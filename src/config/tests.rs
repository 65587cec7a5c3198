//! Validation tests: every field's happy path and its errors, asserting the exact variant,
//! the field path and the file named in the message.

use super::*;
use edgepull_core::egress::BlobSource;
use serde_json::{Value, json};
use std::net::IpAddr;
use std::time::Duration;

const FILE: &str = "/etc/edgepull/test-config.json";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(name)
}

/// The smallest valid config: an ACR login server and the region.
fn base() -> Value {
    json!({ "registry": { "login_server": "contoso.azurecr.io", "region": "eastus" } })
}

/// `base()` with `patch` applied.
pub(super) fn with(patch: impl FnOnce(&mut Value)) -> Value {
    let mut v = base();
    patch(&mut v);
    v
}

fn load(v: &Value) -> Result<Config, ConfigError> {
    Config::from_json(&v.to_string(), Path::new(FILE))
}

pub(super) fn ok(v: &Value) -> Config {
    load(v).unwrap_or_else(|e| panic!("{v}\nshould load, got: {e}"))
}

pub(super) fn err(v: &Value) -> ConfigError {
    let e = load(v).expect_err(&v.to_string());
    // Every error names the config file.
    assert!(e.to_string().contains(FILE), "no file path in: {e}");
    e
}

/// Asserts `e` is `Invalid` at `field` and its message contains every needle.
#[track_caller]
pub(super) fn assert_invalid(e: &ConfigError, field: &str, needles: &[&str]) {
    let msg = e.to_string();
    match e {
        ConfigError::Invalid { field: f, .. } => assert_eq!(f, field, "{msg}"),
        other => panic!("expected Invalid at {field}, got {other:?}"),
    }
    for n in needles {
        assert!(msg.contains(n), "{n:?} missing from: {msg}");
    }
}

/// Asserts `e` is `Missing` at `field` and its message contains every needle.
#[track_caller]
fn assert_missing(e: &ConfigError, field: &str, needles: &[&str]) {
    let msg = e.to_string();
    match e {
        ConfigError::Missing { field: f, .. } => assert_eq!(f, field, "{msg}"),
        other => panic!("expected Missing at {field}, got {other:?}"),
    }
    for n in needles {
        assert!(msg.contains(n), "{n:?} missing from: {msg}");
    }
}

/// Asserts `e` is `Json` at `field` and its message contains every needle.
#[track_caller]
fn assert_json(e: &ConfigError, field: &str, needles: &[&str]) {
    let msg = e.to_string();
    match e {
        ConfigError::Json { field: f, line, .. } => {
            assert_eq!(f, field, "{msg}");
            assert!(*line >= 1, "{msg}");
        }
        other => panic!("expected Json at {field}, got {other:?}"),
    }
    for n in needles {
        assert!(msg.contains(n), "{n:?} missing from: {msg}");
    }
}

fn hp(s: &str) -> HostPort {
    HostPort::parse(s).unwrap()
}

impl AuthConfig {
    /// The username each form stands for. Test-only: the product never asks (Basic
    /// credentials carry their username; a refresh token is exchanged without one).
    fn username(&self) -> Option<&str> {
        match self {
            Self::Anonymous => None,
            Self::Basic { username, .. } => Some(username),
            Self::RefreshToken { .. } => Some(auth::REFRESH_TOKEN_USERNAME),
        }
    }
}

// --- defaults and the documented example -------------------------------------------------

#[test]
fn minimal_config_gets_documented_defaults() {
    let c = ok(&base());
    assert_eq!(c.path, Path::new(FILE));
    assert_eq!(c.registry.login_server, hp("contoso.azurecr.io"));
    assert_eq!(c.registry.region.as_deref(), Some("eastus"));
    assert_eq!(
        c.registry.data_endpoints,
        vec![hp("contoso.eastus.data.azurecr.io")]
    );
    assert_eq!(c.registry.data_endpoint_source, Some(DataEndpointSource::Derived));
    assert_eq!(c.registry.auth, AuthConfig::Anonymous);
    assert_eq!(c.registry.ca_file, None);
    assert!(c.registry.resolve.is_empty());
    assert!(c.registry.realm_hosts.is_empty());
    assert_eq!(c.registry.blob_source, BlobSource::DataEndpoint);
    assert_eq!(c.registry.proxy, None);
    assert_eq!(c.store.path, Path::new("/var/lib/edgepull"));
    assert_eq!(c.store.checkpoint_bytes, 4 * 1024 * 1024);
    assert_eq!(c.store.lock_wait, Duration::from_secs(30));
    assert_eq!(c.platform, crate::config::device_platform());
    assert!(c.platform_defaulted);
    assert!(c.images.is_empty());
    assert_eq!(c.concurrency, 3);
    assert_eq!(c.timeouts.connect, Duration::from_secs(15));
    assert_eq!(c.timeouts.idle_read, Duration::from_secs(60));
    assert!(c.notes.is_empty(), "{:?}", c.notes);
}

#[test]
fn documented_example_loads() {
    let c = Config::load(&fixture("example.json")).unwrap();
    assert_eq!(c.path, fixture("example.json"));
    let r = &c.registry;
    assert_eq!(r.data_endpoints, vec![hp("contoso.eastus.data.azurecr.io")]);
    assert_eq!(r.data_endpoint_source, Some(DataEndpointSource::Config));
    assert_eq!(
        r.auth,
        AuthConfig::Basic {
            username: "device-42".into(),
            password_file: "/run/credentials/edgepull.service/registry-password".into(),
        }
    );
    assert_eq!(r.ca_file.as_deref(), Some(Path::new("/etc/edgepull/ca.pem")));
    assert_eq!(
        r.resolve["contoso.azurecr.io"],
        "10.1.2.3".parse::<IpAddr>().unwrap()
    );
    assert_eq!(c.platform.to_string(), "linux/arm64/v8");
    assert!(!c.platform_defaulted);
    assert_eq!(c.images.len(), 1);
    assert_eq!(c.images[0].reference.to_string(), "contoso.azurecr.io/app:stable");
    assert_eq!(c.images[0].interval, None);
    // data_endpoints wins over endpoints_file; the file is not read, and that is noted.
    assert_eq!(c.notes.len(), 1, "{:?}", c.notes);
    assert_eq!(c.notes[0].field, "registry.endpoints_file");
    assert_eq!(
        c.firewall_lines(),
        vec!["contoso.azurecr.io:443", "contoso.eastus.data.azurecr.io:443"]
    );
}

// --- the config file and its path --------------------------------------------------------

#[test]
fn path_precedence_is_cli_then_env_then_default() {
    let cli = Path::new("/tmp/cli.json");
    assert_eq!(choose_path(Some(cli), Some("/tmp/env.json".into())), cli);
    assert_eq!(
        choose_path(None, Some("/tmp/env.json".into())),
        Path::new("/tmp/env.json")
    );
    assert_eq!(choose_path(None, Some(OsString::new())), Path::new(DEFAULT_PATH));
    assert_eq!(choose_path(None, None), Path::new("/etc/edgepull/config.json"));
    assert_eq!(default_path(Some(cli)), cli);
}

#[test]
fn unreadable_config_names_the_file_and_the_way_to_point_elsewhere() {
    let missing = Path::new("/nonexistent/edgepull/config.json");
    let e = Config::load(missing).unwrap_err();
    assert!(
        matches!(&e, ConfigError::Read { file, .. } if file == missing),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("/nonexistent/edgepull/config.json") && msg.contains("EDGEPULL_CONFIG"),
        "{msg}"
    );

    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.json");
    std::fs::write(&big, vec![b' '; 1024 * 1024 + 1]).unwrap();
    let msg = Config::load(&big).unwrap_err().to_string();
    assert!(msg.contains("larger than"), "{msg}");
}

#[test]
fn syntax_errors_give_line_and_column() {
    let text = "{\n  \"registry\": {\n    \"login_server\": \"contoso.azurecr.io\",\n  }\n}\n";
    let e = Config::from_json(text, Path::new(FILE)).unwrap_err();
    match &e {
        ConfigError::Json { line, column, .. } => assert_eq!((*line, *column), (4, 3), "{e}"),
        other => panic!("{other:?}"),
    }
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!("{FILE}: line 4, column 3, at registry:")),
        "{msg}"
    );
    // The message does not repeat the position serde_json appends.
    assert!(!msg.contains(" at line "), "{msg}");

    let e = Config::from_json("", Path::new(FILE)).unwrap_err();
    assert!(e.to_string().contains("the top level"), "{e}");
    let e = Config::from_json("[]", Path::new(FILE)).unwrap_err();
    assert_json(&e, "", &["expected struct RawConfig"]);
}

// --- unknown fields and wrong types --------------------------------------------------------

#[test]
fn unknown_fields_are_errors_naming_their_path() {
    type Patch = fn(&mut Value);
    let cases: [(&str, Patch); 12] = [
        ("sync.every", |v| v["sync"] = json!({ "every": 5 })),
        ("hooks.on_start", |v| {
            v["hooks"] = json!({ "on_start": ["/bin/true"] })
        }),
        ("metrics.listen", |v| {
            v["metrics"] = json!({ "listen": "0.0.0.0:9100" })
        }),
        ("http_loopback_for_tests", |v| {
            v["http_loopback_for_tests"] = json!(true)
        }),
        ("registry.loginserver", |v| {
            v["registry"]["loginserver"] = json!("x")
        }),
        ("registry.auth.usrname", |v| {
            v["registry"]["auth"] = json!({ "usrname": "u", "password_file": "/p" })
        }),
        ("store.size", |v| {
            v["store"] = json!({ "path": "/var/lib/edgepull", "size": 1 })
        }),
        ("images[1].tag", |v| {
            v["images"] = json!([{ "ref": "app:1" }, { "ref": "app", "tag": "2" }])
        }),
        ("timeouts.read_secs", |v| {
            v["timeouts"] = json!({ "read_secs": 5 })
        }),
        ("registry.allow_http", |v| {
            v["registry"]["allow_http"] = json!(true)
        }),
        ("registry.insecure", |v| v["registry"]["insecure"] = json!(true)),
        ("registry.plain_http", |v| {
            v["registry"]["plain_http"] = json!(true)
        }),
    ];
    for (field, patch) in cases {
        let e = err(&with(patch));
        assert_json(&e, field, &["unknown field"]);
    }
}

#[test]
fn unknown_field_message_lists_allowed_names_only() {
    let e = err(&with(|v| v["registry"]["auth"] = json!({ "user": "u" })));
    assert_json(
        &e,
        "registry.auth.user",
        &["username", "password_file", "refresh_token_file"],
    );
    // The inline-secret keys are refused separately and never offered as allowed.
    assert!(!e.to_string().contains("`password`"), "{e}");
}

#[test]
fn wrong_types_name_their_path() {
    let e = err(&with(|v| v["concurrency"] = json!("3")));
    assert_json(&e, "concurrency", &["expected u64"]);
    let e = err(&with(|v| {
        v["registry"]["data_endpoints"] = json!(["a.example", 5])
    }));
    assert_json(&e, "registry.data_endpoints[1]", &["expected a string"]);
    let e = err(&with(|v| {
        v["registry"]["resolve"] = json!({ "contoso.azurecr.io": 10 })
    }));
    assert_json(
        &e,
        r#"registry.resolve["contoso.azurecr.io"]"#,
        &["expected a string"],
    );
    let e = err(&with(|v| v["store"] = json!({ "checkpoint_bytes": -1 })));
    assert_json(&e, "store.checkpoint_bytes", &["-1"]);
    let e = err(&with(|v| v["images"] = json!({ "ref": "app" })));
    assert_json(&e, "images", &["expected a sequence"]);
}

// --- registry.login_server and region --------------------------------------------------------

#[test]
fn login_server_is_required_and_plain() {
    let e = err(&json!({ "registry": { "region": "eastus" } }));
    assert_missing(&e, "registry.login_server", &["contoso.azurecr.io"]);
    let e = err(&json!({}));
    assert_missing(&e, "registry", &["login_server"]);
    for bad in [
        "https://contoso.azurecr.io",
        "contoso.azurecr.io/v2",
        "",
        "user@contoso.azurecr.io",
    ] {
        let e = err(&with(|v| v["registry"]["login_server"] = json!(bad)));
        assert_invalid(&e, "registry.login_server", &["host[:port]"]);
    }
    let e = err(&with(|v| {
        v["registry"]["login_server"] = json!("contoso.eastus.data.azurecr.io")
    }));
    assert_invalid(
        &e,
        "registry.login_server",
        &["data endpoint", "contoso.azurecr.io"],
    );
    let e = err(&with(|v| {
        v["registry"]["login_server"] = json!("acct.blob.core.windows.net")
    }));
    assert_invalid(&e, "registry.login_server", &["Azure Storage"]);
    let c = ok(&with(|v| {
        v["registry"]["login_server"] = json!("Contoso.AzureCR.io:443")
    }));
    assert_eq!(c.registry.login_server, hp("contoso.azurecr.io"));
}

#[test]
fn region_must_be_lowercase_letters_and_digits() {
    for bad in ["East US", "EastUS", "", "east-us", "eastus."] {
        let e = err(&with(|v| v["registry"]["region"] = json!(bad)));
        assert_invalid(&e, "registry.region", &["lower-case", "eastus"]);
    }
    let c = ok(&with(|v| v["registry"]["region"] = json!("westus2")));
    assert_eq!(
        c.registry.data_endpoints,
        vec![hp("contoso.westus2.data.azurecr.io")]
    );
}

// --- data endpoints: the three sources ------------------------------------------------------

#[test]
fn data_endpoints_from_config_are_used_as_listed() {
    let c = ok(&with(|v| {
        v["registry"]["data_endpoints"] =
            json!(["contoso.eastus.data.azurecr.io", "mirror.example.test:8443"]);
    }));
    assert_eq!(
        c.registry.data_endpoints,
        vec![
            hp("contoso.eastus.data.azurecr.io"),
            hp("mirror.example.test:8443")
        ]
    );
    assert_eq!(c.registry.data_endpoint_source, Some(DataEndpointSource::Config));
    // Region is optional when the endpoint is listed.
    let c = ok(&json!({ "registry": {
        "login_server": "registry.example.test",
        "data_endpoints": ["blobs.example.test"]
    }}));
    assert_eq!(c.registry.region, None);
    assert_eq!(c.registry.data_endpoints, vec![hp("blobs.example.test")]);

    let e = err(&with(|v| {
        v["registry"]["data_endpoints"] =
            json!(["contoso.eastus.data.azurecr.io", "CONTOSO.eastus.data.azurecr.io"]);
    }));
    assert_invalid(&e, "registry.data_endpoints[1]", &["twice"]);
    let e = err(&with(|v| {
        v["registry"]["data_endpoints"] = json!(["https://x.example/"])
    }));
    assert_invalid(&e, "registry.data_endpoints[0]", &["host[:port]"]);
}

#[test]
fn data_endpoint_from_endpoints_file_for_the_region() {
    let file = fixture("show-endpoints.json");
    for (region, want) in [
        ("eastus", "contoso.eastus.data.azurecr.io"),
        ("westus", "contoso.westus.data.azurecr.io"),
    ] {
        let c = ok(&with(|v| {
            v["registry"]["region"] = json!(region);
            v["registry"]["endpoints_file"] = json!(file);
        }));
        assert_eq!(c.registry.data_endpoints, vec![hp(want)]);
        assert_eq!(
            c.registry.data_endpoint_source,
            Some(DataEndpointSource::EndpointsFile(file.clone()))
        );
    }
}

#[test]
fn endpoints_file_regions_compare_case_insensitively_and_extra_keys_are_tolerated() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("endpoints.json");
    let doc = json!({
        "loginServer": "contoso.azurecr.io",
        "dataEndpoints": [{ "region": "EastUS", "endpoint": "contoso.eastus.data.azurecr.io", "extra": 1 }],
        "somethingNew": { "x": [1, 2] }
    });
    std::fs::write(&file, doc.to_string()).unwrap();
    let c = ok(&with(|v| v["registry"]["endpoints_file"] = json!(file)));
    assert_eq!(
        c.registry.data_endpoints,
        vec![hp("contoso.eastus.data.azurecr.io")]
    );
}

#[test]
fn endpoints_file_needs_the_region_and_an_entry_for_it() {
    let file = fixture("show-endpoints.json");
    let e = err(&json!({ "registry": {
        "login_server": "contoso.azurecr.io",
        "endpoints_file": file
    }}));
    assert_missing(&e, "registry.region", &["endpoints_file"]);

    let e = err(&with(|v| {
        v["registry"]["region"] = json!("northeurope");
        v["registry"]["endpoints_file"] = json!(file);
    }));
    assert_invalid(
        &e,
        "registry.endpoints_file",
        &[
            "northeurope",
            "regions listed: eastus, westus",
            "show-endpoints.json",
        ],
    );
}

#[test]
fn endpoints_file_with_storage_wildcard_is_refused() {
    let file = fixture("show-endpoints-disabled.json");
    let e = err(&with(|v| v["registry"]["endpoints_file"] = json!(file)));
    assert_invalid(
        &e,
        "registry.endpoints_file",
        &[
            "*.blob.core.windows.net",
            "is a wildcard",
            "dataEndpoints[0].endpoint for region eastus",
            "az acr update --name contoso --data-endpoint-enabled true",
            "Premium",
            "contoso.eastus.data.azurecr.io",
        ],
    );
}

#[test]
fn endpoints_file_problems_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent.json");
    let e = err(&with(|v| v["registry"]["endpoints_file"] = json!(missing)));
    assert_invalid(
        &e,
        "registry.endpoints_file",
        &["absent.json", "cannot read", "az acr show-endpoints"],
    );

    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"loginServer": "contoso.azurecr.io", "dataEndpoints": [{"region": 1}]}"#,
    )
    .unwrap();
    let e = err(&with(|v| v["registry"]["endpoints_file"] = json!(bad)));
    assert_invalid(
        &e,
        "registry.endpoints_file",
        &["bad.json", "dataEndpoints[0].region"],
    );

    let other = dir.path().join("other.json");
    std::fs::write(
        &other,
        json!({ "loginServer": "fabrikam.azurecr.io", "dataEndpoints": [
            { "region": "eastus", "endpoint": "fabrikam.eastus.data.azurecr.io" }
        ]})
        .to_string(),
    )
    .unwrap();
    let e = err(&with(|v| v["registry"]["endpoints_file"] = json!(other)));
    assert_invalid(
        &e,
        "registry.endpoints_file",
        &["fabrikam.azurecr.io", "contoso.azurecr.io"],
    );

    let e = err(&with(|v| {
        v["registry"]["endpoints_file"] = json!("endpoints.json")
    }));
    assert_invalid(&e, "registry.endpoints_file", &["absolute path"]);
}

#[test]
fn regional_login_server_matches_the_files_regional_endpoints() {
    let c = ok(&with(|v| {
        v["registry"]["login_server"] = json!("contoso.eastus.geo.azurecr.io");
        v["registry"]["endpoints_file"] = json!(fixture("show-endpoints.json"));
    }));
    assert_eq!(
        c.registry.data_endpoints,
        vec![hp("contoso.eastus.data.azurecr.io")]
    );
}

#[test]
fn data_endpoint_derived_for_each_cloud_suffix() {
    let cases = [
        ("contoso.azurecr.io", "eastus", "contoso.eastus.data.azurecr.io"),
        (
            "contoso.azurecr.cn",
            "chinaeast2",
            "contoso.chinaeast2.data.azurecr.cn",
        ),
        (
            "contoso.azurecr.us",
            "usgovvirginia",
            "contoso.usgovvirginia.data.azurecr.us",
        ),
        (
            "contoso.westus.geo.azurecr.io",
            "westus",
            "contoso.westus.data.azurecr.io",
        ),
    ];
    for (login, region, want) in cases {
        let c = ok(&json!({ "registry": { "login_server": login, "region": region } }));
        assert_eq!(c.registry.data_endpoints, vec![hp(want)], "{login}");
        assert_eq!(c.registry.data_endpoint_source, Some(DataEndpointSource::Derived));
    }
}

#[test]
fn regional_login_server_must_be_in_the_configured_region() {
    let e = err(&with(|v| {
        v["registry"]["login_server"] = json!("contoso.westus.geo.azurecr.io")
    }));
    assert_invalid(&e, "registry.region", &["regional endpoint of westus"]);
}

#[test]
fn acr_login_server_without_region_needs_one_under_data_endpoint_mode() {
    let e = err(&json!({ "registry": { "login_server": "contoso.azurecr.cn" } }));
    assert_missing(
        &e,
        "registry.region",
        &[
            "contoso.<region>.data.azurecr.cn",
            "registry.data_endpoints",
            "registry.endpoints_file",
        ],
    );
    let c = ok(&json!({ "registry": { "login_server": "contoso.azurecr.cn", "blob_source": "registry" } }));
    assert!(c.registry.data_endpoints.is_empty());
    assert_eq!(c.registry.data_endpoint_source, None);
}

#[test]
fn non_acr_login_server_without_data_endpoint() {
    let e = err(&json!({ "registry": { "login_server": "registry.example.test:5000", "region": "eastus" } }));
    assert_missing(
        &e,
        "registry.data_endpoints",
        &[
            "registry.example.test:5000",
            "registry.data_endpoints",
            "registry.endpoints_file",
            "registry.region",
            "\"registry\"",
        ],
    );
    let c = ok(&json!({ "registry": {
        "login_server": "registry.example.test:5000",
        "blob_source": "registry"
    }}));
    assert_eq!(c.registry.blob_source, BlobSource::Registry);
    assert!(c.registry.data_endpoints.is_empty());
    assert_eq!(c.registry.data_endpoint_source, None);
    assert_eq!(c.firewall_lines(), vec!["registry.example.test:5000"]);
}

// --- data endpoints: what is refused ---------------------------------------------------------

#[test]
fn storage_hosts_and_wildcards_are_refused_as_data_endpoints() {
    for bad in [
        "*.blob.core.windows.net",
        "*",
        "contoso.*.data.azurecr.io",
        "acct.blob.core.windows.net",
        "acct.blob.core.chinacloudapi.cn",
        "acct.blob.core.usgovcloudapi.net:443",
    ] {
        for mode in ["data-endpoint", "registry"] {
            let e = err(&with(|v| {
                v["registry"]["blob_source"] = json!(mode);
                v["registry"]["data_endpoints"] = json!(["contoso.eastus.data.azurecr.io", bad]);
            }));
            assert_invalid(
                &e,
                "registry.data_endpoints[1]",
                &[
                    "--data-endpoint-enabled true",
                    "Premium",
                    "contoso.eastus.data.azurecr.io",
                ],
            );
        }
    }
}

#[test]
fn data_endpoints_must_match_the_login_server_and_region() {
    let cases = [
        (
            "fabrikam.eastus.data.azurecr.io",
            "belongs to registry fabrikam.azurecr.io",
        ),
        (
            "contoso.eastus.data.azurecr.cn",
            "belongs to registry contoso.azurecr.cn",
        ),
        ("contoso.westus.data.azurecr.io", "region westus"),
        ("contoso.azurecr.io", "login server"),
        ("contoso.eastus.geo.azurecr.io", "login server name"),
    ];
    for (endpoint, needle) in cases {
        let e = err(&with(|v| v["registry"]["data_endpoints"] = json!([endpoint])));
        assert_invalid(
            &e,
            "registry.data_endpoints[0]",
            &[needle, "contoso.eastus.data.azurecr.io"],
        );
    }
    // A non-ACR login server cannot list itself as its data endpoint either.
    let e = err(&json!({ "registry": {
        "login_server": "registry.example.test",
        "data_endpoints": ["REGISTRY.example.test:443"]
    }}));
    assert_invalid(&e, "registry.data_endpoints[0]", &["login server", "blob_source"]);
}

// --- auth ----------------------------------------------------------------------------------------

#[test]
fn auth_forms() {
    let c = ok(&with(
        |v| {
            v["registry"]["auth"] =
                json!({ "username": "device-42", "password_file": "/run/credentials/x/pw" })
        },
    ));
    assert_eq!(c.registry.auth.username(), Some("device-42"));
    assert_eq!(
        c.registry.auth.secret_file(),
        Some(Path::new("/run/credentials/x/pw"))
    );

    let c = ok(&with(|v| {
        v["registry"]["auth"] = json!({ "refresh_token_file": "/run/credentials/x/rt" })
    }));
    assert_eq!(
        c.registry.auth,
        AuthConfig::RefreshToken {
            refresh_token_file: "/run/credentials/x/rt".into()
        }
    );
    assert_eq!(
        c.registry.auth.username(),
        Some("00000000-0000-0000-0000-000000000000")
    );

    assert_eq!(AuthConfig::Anonymous.username(), None);
    assert_eq!(AuthConfig::Anonymous.secret_file(), None);
}

#[test]
fn auth_errors() {
    let e = err(&with(|v| v["registry"]["auth"] = json!({})));
    assert_invalid(
        &e,
        "registry.auth",
        &["anonymous", "password_file", "refresh_token_file"],
    );
    let e = err(&with(|v| v["registry"]["auth"] = json!({ "username": "u" })));
    assert_missing(&e, "registry.auth.password_file", &["LoadCredential"]);
    let e = err(&with(|v| {
        v["registry"]["auth"] = json!({ "password_file": "/p" })
    }));
    assert_missing(&e, "registry.auth.username", &[]);
    let e = err(&with(
        |v| {
            v["registry"]["auth"] =
                json!({ "username": "u", "password_file": "/p", "refresh_token_file": "/t" })
        },
    ));
    assert_invalid(
        &e,
        "registry.auth.username",
        &["00000000-0000-0000-0000-000000000000"],
    );
    let e = err(&with(|v| {
        v["registry"]["auth"] = json!({ "password_file": "/p", "refresh_token_file": "/t" })
    }));
    assert_invalid(&e, "registry.auth.password_file", &["refresh_token_file"]);
    let e = err(&with(|v| {
        v["registry"]["auth"] = json!({ "username": "a:b", "password_file": "/p" })
    }));
    assert_invalid(&e, "registry.auth.username", &["':'"]);
    let e = err(&with(|v| {
        v["registry"]["auth"] = json!({ "username": "u", "password_file": "pw.txt" })
    }));
    assert_invalid(&e, "registry.auth.password_file", &["absolute path"]);
    let e = err(&with(|v| {
        v["registry"]["auth"] = json!({ "refresh_token_file": "" })
    }));
    assert_invalid(&e, "registry.auth.refresh_token_file", &["absolute path"]);
}

#[test]
fn inline_secrets_are_refused_without_echoing_them() {
    let cases = [
        (
            "registry.auth.password",
            json!({ "username": "u", "password": "hunter2" }),
            "password_file",
        ),
        (
            "registry.auth.token",
            json!({ "token": "hunter2" }),
            "refresh_token_file",
        ),
        (
            "registry.auth.refresh_token",
            json!({ "refresh_token": "hunter2" }),
            "refresh_token_file",
        ),
    ];
    for (field, auth, file_key) in cases {
        let e = err(&with(|v| v["registry"]["auth"] = auth));
        assert_invalid(&e, field, &[file_key, "LoadCredential"]);
        assert!(
            !e.to_string().contains("hunter2") && !format!("{e:?}").contains("hunter2"),
            "{e}"
        );
    }
    let e = err(&with(|v| v["registry"]["password"] = json!("hunter2")));
    assert_invalid(&e, "registry.password", &["password_file"]);
    assert!(!format!("{e:?}").contains("hunter2"));
}

#[cfg(unix)]
#[test]
fn readable_secret_file_gives_a_note_not_an_error() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "hunter2\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let v = with(|v| v["registry"]["auth"] = json!({ "username": "u", "password_file": pw }));
    let c = ok(&v);
    assert_eq!(c.notes.len(), 1, "{:?}", c.notes);
    assert_eq!(c.notes[0].field, "registry.auth.password_file");
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(ok(&v).notes.is_empty());
    // The secret itself is read only on demand.
    let secret = load_secret(c.registry.auth.secret_file().unwrap()).unwrap();
    assert_eq!(secret.expose(), "hunter2");
}

// --- ca_file, realm_hosts, blob_source, proxy -----------------------------------------------

#[test]
fn ca_file_must_be_absolute() {
    let c = ok(&with(|v| {
        v["registry"]["ca_file"] = json!("/etc/edgepull/ca.pem")
    }));
    assert_eq!(c.registry.ca_file, Some(PathBuf::from("/etc/edgepull/ca.pem")));
    let e = err(&with(|v| v["registry"]["ca_file"] = json!("ca.pem")));
    assert_invalid(&e, "registry.ca_file", &["absolute path"]);
}

#[test]
fn realm_hosts_are_host_ports_and_join_the_allowlist() {
    let c = ok(&with(|v| {
        v["registry"]["realm_hosts"] = json!([
            "login.example.test",
            "LOGIN.example.test:443",
            "contoso.azurecr.io"
        ])
    }));
    assert_eq!(c.registry.realm_hosts, vec![hp("login.example.test")]);
    assert_eq!(
        c.allowlist(),
        vec![
            hp("contoso.azurecr.io"),
            hp("login.example.test"),
            hp("contoso.eastus.data.azurecr.io")
        ]
    );
    let e = err(&with(|v| {
        v["registry"]["realm_hosts"] = json!(["ok.example.test", "*.example.test"])
    }));
    assert_invalid(&e, "registry.realm_hosts[1]", &["host[:port]"]);
    for data in [
        "contoso.eastus.data.azurecr.io",
        "contoso.westus.data.azurecr.io",
        "acct.blob.core.windows.net",
    ] {
        let e = err(&with(|v| {
            v["registry"]["realm_hosts"] = json!(["ok.example.test", data])
        }));
        assert_invalid(&e, "registry.realm_hosts[1]", &["never receive credentials"]);
    }
    let e = err(&json!({ "registry": {
        "login_server": "registry.example.test",
        "data_endpoints": ["blobs.example.test"],
        "realm_hosts": ["blobs.example.test"]
    }}));
    assert_invalid(&e, "registry.realm_hosts[0]", &["never receive credentials"]);
}

#[test]
fn blob_source_values() {
    let c = ok(&with(|v| v["registry"]["blob_source"] = json!("registry")));
    assert_eq!(c.registry.blob_source, BlobSource::Registry);
    // An ACR login server with a region still gets its data endpoint: the login server
    // redirects blob downloads there.
    assert_eq!(
        c.registry.data_endpoints,
        vec![hp("contoso.eastus.data.azurecr.io")]
    );
    let e = err(&with(|v| v["registry"]["blob_source"] = json!("storage")));
    assert_invalid(&e, "registry.blob_source", &["\"data-endpoint\"", "\"registry\""]);
    assert_eq!(BlobSource::default().as_str(), "data-endpoint");
}

#[test]
fn proxy_joins_the_allowlist() {
    let c = ok(&with(|v| {
        v["registry"]["proxy"] = json!("http://proxy.local:3128")
    }));
    assert_eq!(c.registry.proxy, Some(hp("proxy.local:3128")));
    assert_eq!(
        c.firewall_lines(),
        vec![
            "contoso.azurecr.io:443",
            "contoso.eastus.data.azurecr.io:443",
            "proxy.local:3128"
        ]
    );
    let c = ok(&with(|v| v["registry"]["proxy"] = json!("http://[fd00::1]")));
    assert_eq!(c.registry.proxy, Some(hp("[fd00::1]:80")));
    assert_eq!(c.firewall_lines().last().unwrap(), "[fd00::1]:80");
    let cases = [
        ("https://proxy.local:3128", "only http://"),
        ("socks5://proxy.local:1080", "only http://"),
        ("http://user:pw@proxy.local:3128", "credentials"),
        ("http://proxy.local:3128/path", "no path"),
        ("proxy.local:3128", "http://host:port"),
        ("http://", "http://host:port"),
    ];
    for (bad, needle) in cases {
        let e = err(&with(|v| v["registry"]["proxy"] = json!(bad)));
        assert_invalid(&e, "registry.proxy", &[needle]);
        if bad.contains("pw@") {
            // The credentials are not shown; the message says why the value is refused.
            assert!(e.to_string().contains("secret"), "{e}");
        }
    }
}

// --- resolve --------------------------------------------------------------------------------------

#[test]
fn resolve_accepts_allowed_hosts_only() {
    let c = ok(&with(|v| {
        v["registry"]["realm_hosts"] = json!(["login.example.test"]);
        v["registry"]["resolve"] = json!({
            "Contoso.azurecr.io": "10.1.2.3",
            "contoso.eastus.data.azurecr.io": "fd00::7",
            "login.example.test": "10.1.2.4"
        });
    }));
    let r = &c.registry.resolve;
    assert_eq!(r["contoso.azurecr.io"], "10.1.2.3".parse::<IpAddr>().unwrap());
    assert_eq!(
        r["contoso.eastus.data.azurecr.io"],
        "fd00::7".parse::<IpAddr>().unwrap()
    );
    assert_eq!(r.len(), 3);
    // resolve never adds a host.
    assert_eq!(c.allowlist().len(), 3);

    let e = err(&with(|v| {
        v["registry"]["resolve"] = json!({ "evil.example.test": "10.0.0.1" })
    }));
    assert_invalid(
        &e,
        r#"registry.resolve["evil.example.test"]"#,
        &[
            "not an allowed host",
            "contoso.azurecr.io, contoso.eastus.data.azurecr.io",
        ],
    );
}

#[test]
fn resolve_values_and_keys_are_validated() {
    let field = r#"registry.resolve["contoso.azurecr.io"]"#;
    for bad in [
        "10.1.2",
        "10.1.2.3:443",
        "host.example",
        "0.0.0.0",
        "::",
        "224.0.0.1",
        "",
    ] {
        let e = err(&with(|v| {
            v["registry"]["resolve"] = json!({ "contoso.azurecr.io": bad })
        }));
        assert_invalid(&e, field, &[]);
    }
    let e = err(&with(|v| {
        v["registry"]["resolve"] = json!({ "contoso.azurecr.io:443": "10.1.2.3" })
    }));
    assert_invalid(
        &e,
        r#"registry.resolve["contoso.azurecr.io:443"]"#,
        &["without port"],
    );
    let e = err(&with(
        |v| {
            v["registry"]["resolve"] =
                json!({ "contoso.azurecr.io": "10.1.2.3", "CONTOSO.azurecr.io": "10.1.2.4" })
        },
    ));
    assert_invalid(&e, r#"registry.resolve["contoso.azurecr.io"]"#, &["twice"]);
}

#[test]
fn resolve_through_a_proxy_only_for_the_proxy_host() {
    let c = ok(&with(|v| {
        v["registry"]["proxy"] = json!("http://proxy.local:3128");
        v["registry"]["resolve"] = json!({ "proxy.local": "10.9.9.9" });
    }));
    assert_eq!(
        c.registry.resolve["proxy.local"],
        "10.9.9.9".parse::<IpAddr>().unwrap()
    );
    let e = err(&with(|v| {
        v["registry"]["proxy"] = json!("http://proxy.local:3128");
        v["registry"]["resolve"] = json!({ "contoso.azurecr.io": "10.1.2.3" });
    }));
    assert_invalid(
        &e,
        r#"registry.resolve["contoso.azurecr.io"]"#,
        &["no effect", "proxy"],
    );
}

// --- store, platform, images, concurrency, timeouts ---------------------------------------------

#[test]
fn store_fields() {
    let c = ok(&with(
        |v| v["store"] = json!({ "path": "/data/edgepull", "checkpoint_bytes": 65536, "lock_wait_secs": 0 }),
    ));
    assert_eq!(
        c.store,
        StoreConfig {
            path: "/data/edgepull".into(),
            checkpoint_bytes: 64 * 1024,
            lock_wait: Duration::ZERO,
            ..StoreConfig::default()
        }
    );
    assert_eq!(
        ok(&with(|v| v["store"] = json!({}))).store,
        StoreConfig::default()
    );
    let e = err(&with(|v| v["store"] = json!({ "checkpoint_bytes": 65535 })));
    assert_invalid(&e, "store.checkpoint_bytes", &["65536", "64 KiB"]);
    let e = err(&with(|v| v["store"] = json!({ "path": "var/lib/edgepull" })));
    assert_invalid(&e, "store.path", &["absolute path"]);
    let e = err(&with(|v| v["store"] = json!({ "lock_wait_secs": 3601 })));
    assert_invalid(&e, "store.lock_wait_secs", &["0 to 3600"]);
}

#[test]
fn platform_is_parsed_or_defaulted() {
    let c = ok(&with(|v| v["platform"] = json!("linux/arm/v7")));
    assert_eq!(c.platform.to_string(), "linux/arm/v7");
    assert!(!c.platform_defaulted);
    let c = ok(&base());
    assert_eq!(c.platform, crate::config::device_platform());
    assert!(c.platform_defaulted);
    let e = err(&with(|v| v["platform"] = json!("arm64")));
    assert_invalid(&e, "platform", &["os/arch", "leave it out"]);
}

#[test]
fn images_are_on_the_login_server() {
    let c = ok(&with(|v| {
        v["images"] = json!([
            { "ref": "app:stable" },
            { "ref": "contoso.azurecr.io/team/tool:1.2", "interval_secs": 300 },
        ])
    }));
    assert_eq!(c.images[0].reference.to_string(), "contoso.azurecr.io/app:stable");
    assert_eq!(c.images[1].reference.repository(), "team/tool");
    assert_eq!(c.images[1].interval, Some(Duration::from_secs(300)));

    let e = err(&with(|v| {
        v["images"] = json!([{ "ref": "app" }, { "ref": "fabrikam.azurecr.io/app:1" }])
    }));
    assert_invalid(
        &e,
        "images[1].ref",
        &["fabrikam.azurecr.io", "contoso.azurecr.io"],
    );
    let e = err(&with(|v| {
        v["images"] = json!([{ "ref": "contoso.azurecr.io:8443/app" }])
    }));
    assert_invalid(&e, "images[0].ref", &["contoso.azurecr.io:8443"]);
    let e = err(&with(|v| v["images"] = json!([{ "ref": "App:1" }])));
    assert_invalid(&e, "images[0].ref", &["repository"]);
    let e = err(&with(|v| v["images"] = json!([{ "interval_secs": 60 }])));
    assert_missing(&e, "images[0].ref", &[]);
    let e =
        err(&with(
            |v| v["images"] = json!([{ "ref": "app:1" }, { "ref": "contoso.azurecr.io/app:1" }]),
        ));
    assert_invalid(&e, "images[1].ref", &["twice"]);
    let e = err(&with(|v| {
        v["images"] = json!([{ "ref": "app", "interval_secs": 0 }])
    }));
    assert_invalid(&e, "images[0].interval_secs", &["1 to"]);
}

#[test]
fn concurrency_and_timeouts() {
    let c = ok(&with(|v| {
        v["concurrency"] = json!(16);
        v["timeouts"] = json!({ "connect_secs": 5, "idle_read_secs": 120 });
    }));
    assert_eq!(c.concurrency, 16);
    assert_eq!(
        c.timeouts,
        TimeoutConfig {
            connect: Duration::from_secs(5),
            idle_read: Duration::from_secs(120),
            ..TimeoutConfig::default()
        }
    );
    for bad in [0, 17] {
        let e = err(&with(|v| v["concurrency"] = json!(bad)));
        assert_invalid(&e, "concurrency", &["1 to 16"]);
    }
    let e = err(&with(|v| v["timeouts"] = json!({ "connect_secs": 0 })));
    assert_invalid(&e, "timeouts.connect_secs", &["1 to 300"]);
    let e = err(&with(|v| v["timeouts"] = json!({ "idle_read_secs": 0 })));
    assert_invalid(&e, "timeouts.idle_read_secs", &[]);
}

// --- allowlist and firewall lines -----------------------------------------------------------------

#[test]
fn allowlist_order_and_firewall_lines() {
    let c = ok(&json!({ "registry": {
        "login_server": "registry.example.test:8443",
        "data_endpoints": ["blobs.example.test", "[fd00::2]:9443"],
        "realm_hosts": ["auth.example.test"],
        "proxy": "http://proxy.local:3128"
    }}));
    assert_eq!(
        c.firewall_lines(),
        vec![
            "registry.example.test:8443",
            "auth.example.test:443",
            "blobs.example.test:443",
            "[fd00::2]:9443",
            "proxy.local:3128",
        ]
    );
}

#[test]
fn data_endpoint_source_display() {
    assert_eq!(DataEndpointSource::Config.to_string(), "registry.data_endpoints");
    assert_eq!(
        DataEndpointSource::EndpointsFile("/etc/edgepull/endpoints.json".into()).to_string(),
        "registry.endpoints_file (/etc/edgepull/endpoints.json)"
    );
    assert!(DataEndpointSource::Derived.to_string().contains("derived"));
}

/// Run on each shipped target (scripts/cross-build --test): the build's platform follows
/// from the triple cargo built for (EDGEPULL_TARGET, from scripts/build.rs), e.g. the armv6
/// build must not claim v7.
#[test]
fn host_platform_matches_the_target_triple() {
    let host = Platform::host();
    let want = match env!("EDGEPULL_TARGET") {
        "aarch64-unknown-linux-musl" | "aarch64-unknown-linux-gnu" => "linux/arm64/v8",
        "armv7-unknown-linux-musleabihf" | "armv7-unknown-linux-gnueabihf" => "linux/arm/v7",
        "arm-unknown-linux-musleabihf" | "arm-unknown-linux-gnueabihf" => "linux/arm/v6",
        "x86_64-unknown-linux-gnu" | "x86_64-unknown-linux-musl" => "linux/amd64",
        other => panic!("no expectation for target {other}"),
    };
    assert_eq!(host.to_string(), want);
    assert_eq!(edgepull_core::oci::cpuinfo::default_platform(&host, None), host);
}
