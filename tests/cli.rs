//! The `edgepull` binary as a user runs it: exit codes, output, crash-resume, and what
//! never appears in its logs.

mod common;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use edgepull_testkit::{AuthMode, ServerName, random_bytes};

fn edgepull(config: &Path, args: &[&str]) -> Output {
    binary()
        .arg("--config")
        .arg(config)
        .args(args)
        .env("EDGEPULL_LOG", "debug")
        .output()
        .expect("run edgepull")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn pull_prints_ref_and_digest_and_store_commands_work() {
    let env = Env::token();
    let index = env.fake.push_index(
        "app",
        "1.2",
        vec![
            (platform("linux/amd64"), vec![random_bytes(1000)]),
            (platform("linux/arm64"), vec![random_bytes(2000)]),
        ],
    );
    let out = edgepull(&env.config_path, &["pull", "app:1.2"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let reference = env.reference("1.2").to_string();
    assert!(stdout.starts_with(&format!("{reference} -> sha256:")), "{stdout}");
    assert!(stdout.contains("(linux/arm64/v8)"), "{stdout}");
    assert!(
        !stdout.contains(&index.to_string()),
        "prints the platform manifest, not the index"
    );

    let list = edgepull(&env.config_path, &["store", "list", "--json"]);
    assert!(list.status.success(), "{}", text(&list));
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).expect("json");
    assert_eq!(v[0]["ref"], reference);
    assert_eq!(v[0]["source_index"], index.to_string());

    let verify = edgepull(&env.config_path, &["store", "verify"]);
    assert!(verify.status.success(), "{}", text(&verify));
}

#[test]
fn store_verify_names_a_corrupt_blob_and_fails() {
    let env = Env::token();
    let (_, blobs) = env
        .fake
        .push_image_for("app", "x", &platform("linux/arm64"), vec![random_bytes(4096)]);
    assert!(edgepull(&env.config_path, &["pull", "app:x"]).status.success());
    let path = env
        .store_path()
        .join("oci/blobs/sha256")
        .join(blobs[1].digest.hex());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 0xff;
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&path, perms).unwrap();
    std::fs::write(&path, bytes).unwrap();
    let out = edgepull(&env.config_path, &["store", "verify"]);
    assert_eq!(out.status.code(), Some(65), "{}", text(&out));
    assert!(
        text(&out).contains(&blobs[1].digest.to_string()),
        "{}",
        text(&out)
    );
}

#[test]
fn exit_codes_are_distinct_per_failure_kind() {
    let env = Env::token();
    env.fake
        .push_image_for("app", "x", &platform("linux/arm64"), vec![random_bytes(100)]);

    // Config error: unknown field, named with its path.
    let bad = env.dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"registry":{"login_server":"a.azurecr.io","region":"eastus","bogus":1}}"#,
    )
    .unwrap();
    let out = edgepull(&bad, &["pull", "app:x"]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    assert!(text(&out).contains("bogus"), "{}", text(&out));

    // Usage error: a reference on another registry.
    let out = edgepull(&env.config_path, &["pull", "other.azurecr.io/app:x"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // Egress policy: redirect to the other region.
    env.fake.set_redirect_region("westus");
    let out = edgepull(&env.config_path, &["pull", "app:x"]);
    assert_eq!(out.status.code(), Some(10), "{}", text(&out));
    assert!(text(&out).contains("westus"), "{}", text(&out));
    env.fake.set_redirect_region("eastus");

    // Integrity: a corrupted blob.
    let (_, blobs) = env
        .fake
        .push_image_for("app", "bad", &platform("linux/arm64"), vec![random_bytes(100)]);
    env.fake.set_corrupt_blob(Some(blobs[1].digest));
    let out = edgepull(&env.config_path, &["pull", "app:bad"]);
    assert_eq!(out.status.code(), Some(65), "{}", text(&out));
    env.fake.set_corrupt_blob(None);

    // Registry: unknown tag.
    let out = edgepull(&env.config_path, &["pull", "app:nope"]);
    assert_eq!(out.status.code(), Some(76), "{}", text(&out));

    // Auth: wrong password.
    std::fs::write(env.dir.path().join("password"), "wrong").unwrap();
    let out = edgepull(&env.config_path, &["pull", "app:x"]);
    assert_eq!(out.status.code(), Some(77), "{}", text(&out));
}

#[test]
fn transient_network_failure_exits_75() {
    let env = Env::token();
    env.fake
        .push_image_for("app", "x", &platform("linux/arm64"), vec![random_bytes(100)]);
    // A login server that is not listening: connect refused on every attempt.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    env.edit_config(|c| {
        c["registry"]["login_server"] = format!("contoso.azurecr.test:{port}").into();
        c["timeouts"] = serde_json::json!({"connect_secs": 1, "idle_read_secs": 2});
    });
    let started = Instant::now();
    let out = edgepull(&env.config_path, &["pull", "app:x"]);
    assert_eq!(out.status.code(), Some(75), "{}", text(&out));
    assert!(started.elapsed() < Duration::from_secs(120));
}

#[test]
fn endpoints_prints_the_firewall_allowlist() {
    let env = Env::token();
    let out = edgepull(&env.config_path, &["endpoints"]);
    assert!(out.status.success(), "{}", text(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    let tail: Vec<&str> = s
        .lines()
        .skip_while(|l| !l.starts_with("firewall allowlist"))
        .skip(1)
        .collect();
    let login = env.fake.login_host();
    let east = env.fake.data_endpoint("eastus");
    assert_eq!(
        tail,
        vec![
            format!("{}:{}", login.host(), login.port()),
            format!("{}:{}", east.host(), east.port())
        ],
        "{s}"
    );
    let json = edgepull(&env.config_path, &["endpoints", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(v["region"], "eastus");
    assert_eq!(v["data_endpoints"][0], east.to_string());
}

/// `edgepull --log-format FORMAT pull REF` at `EDGEPULL_LOG=trace`: every event of
/// edgepull and of its libraries.
fn pull_at_trace(config: &Path, format: &str, reference: &str) -> Output {
    binary()
        .arg("--config")
        .arg(config)
        .args(["--log-format", format, "pull", reference])
        .env("EDGEPULL_LOG", "trace")
        .output()
        .expect("run edgepull")
}

/// The secrets one auth mode gives edgepull: what it sends (the password or refresh
/// token) and what it receives (tokens, signed links), checked afterwards by value.
fn secrets_of(auth: &AuthMode) -> Vec<String> {
    match auth {
        AuthMode::Anonymous => vec![],
        AuthMode::Basic { pass, .. } | AuthMode::Token { pass, .. } => vec![pass.clone()],
        AuthMode::RefreshToken { refresh_token } => vec![refresh_token.clone()],
    }
}

/// No password, refresh token, token or link signature in the logs, even at trace level
/// (edgepull's events and its libraries'), as text or as JSON lines: for Basic auth, the
/// token flow with a password, and ACR refresh tokens, through a download that is cut
/// and resumed (a second signed link), a redirect refused by the policy and a wrong
/// password. The issued tokens and signatures are taken from the fake registry, so the
/// check is by exact value. (The journal output: tests/journal.rs.)
#[test]
fn secrets_and_signed_urls_never_reach_the_logs() {
    let modes = [
        AuthMode::Basic {
            user: "device-42".into(),
            pass: "s3cret-basic-password".into(),
        },
        AuthMode::Token {
            user: "device-42".into(),
            pass: "s3cret-device-password".into(),
        },
        AuthMode::RefreshToken {
            refresh_token: "s3cret-acr-refresh-token".into(),
        },
    ];
    for auth in modes {
        let env = Env::new(auth.clone());
        let mut outputs = Vec::new();
        for format in ["text", "json"] {
            let tag = format!("x-{format}");
            env.fake
                .push_image_for("app", &tag, &platform("linux/arm64"), vec![random_bytes(300_000)]);
            env.fake.set_cut_after(Some((100_000, 1)));
            let ok = pull_at_trace(&env.config_path, format, &format!("app:{tag}"));
            assert!(ok.status.success(), "{auth:?} {format}: {}", text(&ok));
            outputs.push((format, ok));
        }
        if matches!(auth, AuthMode::Token { .. }) {
            env.fake.set_redirect_region("westus");
            env.fake
                .push_image_for("app", "y", &platform("linux/arm64"), vec![random_bytes(1000)]);
            let refused = pull_at_trace(&env.config_path, "text", "app:y");
            assert_eq!(refused.status.code(), Some(10), "{}", text(&refused));
            env.fake.set_redirect_region("eastus");
            outputs.push(("text", refused));
            std::fs::write(env.dir.path().join("password"), "wrong-password-value").unwrap();
            let denied = pull_at_trace(&env.config_path, "json", "app:x-text");
            assert_eq!(denied.status.code(), Some(77), "{}", text(&denied));
            outputs.push(("json", denied));
        }
        let tokens = env.fake.issued_tokens();
        let signatures = env.fake.link_signatures();
        if !matches!(auth, AuthMode::Basic { .. }) {
            assert!(!tokens.is_empty(), "{auth:?}: no token was issued");
        }
        assert!(
            signatures.len() >= 4,
            "{auth:?}: {} signed links",
            signatures.len()
        );
        let mut secrets = secrets_of(&auth);
        secrets.push("wrong-password-value".into());
        secrets.extend(tokens);
        secrets.extend(signatures);
        for (format, out) in &outputs {
            let t = text(out);
            let trace_events = t
                .lines()
                .filter(|l| match *format {
                    "json" => {
                        serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| v["level"] == "TRACE")
                    }
                    _ => l.contains(" TRACE "),
                })
                .count();
            assert!(
                trace_events > 0,
                "{auth:?} {format}: no trace-level event in:\n{t}"
            );
            for secret in &secrets {
                assert!(
                    !t.contains(secret.as_str()),
                    "{auth:?} {format}: {secret:?} leaked into:\n{t}"
                );
            }
            // Signed-link query values are always redacted.
            for key in ["sig=", "se="] {
                for (i, _) in t.match_indices(key) {
                    assert!(
                        t[i + key.len()..].starts_with("REDACTED"),
                        "{auth:?} {format}: {key} value leaked into:\n{t}"
                    );
                }
            }
            assert!(
                !t.to_ascii_lowercase().contains("bearer "),
                "{auth:?} {format}: a token header leaked:\n{t}"
            );
        }
    }
}

#[test]
fn sigkill_mid_blob_then_rerun_resumes_from_the_checkpoint() {
    let env = Env::token();
    let size = 12 << 20;
    let (_, blobs) =
        env.fake
            .push_image_for("app", "big", &platform("linux/arm64"), vec![random_bytes(size)]);
    let layer = blobs[1].clone();
    env.fake.set_rate_limit(Some(3 << 20));
    env.edit_config(|c| c["store"]["checkpoint_bytes"] = (256u64 << 10).into());
    let mut child = binary()
        .args(["--config"])
        .arg(&env.config_path)
        .args(["pull", "app:big"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let checkpoint_file = env
        .store_path()
        .join("ingest")
        .join(format!("sha256-{}", layer.digest.hex()))
        .join("checkpoint");
    let deadline = Instant::now() + Duration::from_secs(30);
    let read_cp = || {
        std::fs::read_to_string(&checkpoint_file)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    while read_cp().unwrap_or(0) < (1 << 20) {
        assert!(Instant::now() < deadline, "no checkpoint appeared");
        assert!(
            child.try_wait().unwrap().is_none(),
            "edgepull finished before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().expect("SIGKILL"); // Child::kill sends SIGKILL on Unix.
    child.wait().unwrap();
    let checkpoint = read_cp().expect("checkpoint survives the kill");
    assert!(checkpoint > 0 && checkpoint < size as u64, "{checkpoint}");
    assert!(
        !has_blob_file(&env.store_path(), &layer.digest),
        "nothing visible before verification"
    );

    env.fake.set_rate_limit(None);
    env.fake.clear_log();
    let out = edgepull(&env.config_path, &["pull", "app:big"]);
    assert!(out.status.success(), "{}", text(&out));
    let ranges: Vec<String> = env
        .fake
        .requests_to(ServerName::EastUs)
        .into_iter()
        .filter_map(|r| r.range)
        .collect();
    assert_eq!(
        ranges,
        vec![format!("bytes={checkpoint}-")],
        "resumed from the durable checkpoint"
    );
    // The re-run fetched exactly the missing tail of the layer (the config was already stored).
    assert_eq!(env.eastus_bytes(), size as u64 - checkpoint);
    let verify = edgepull(&env.config_path, &["store", "verify"]);
    assert!(verify.status.success(), "{}", text(&verify));
}

#[test]
fn a_second_process_on_the_same_store_fails_clearly() {
    let env = Env::token();
    let _held = env.open_store();
    env.edit_config(|c| c["store"]["lock_wait_secs"] = 1.into());
    let out = edgepull(&env.config_path, &["store", "list"]);
    assert_eq!(out.status.code(), Some(74), "{}", text(&out));
    assert!(text(&out).contains("lock"), "{}", text(&out));
}
