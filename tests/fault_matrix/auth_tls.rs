//! Cells about the peers themselves: TLS certificates that must not be trusted, and token
//! replies that are too large, malformed, or carry odd lifetimes.

use super::helpers::*;
use crate::common::*;
use edgepull::exit::Category;
use edgepull_testkit::{AuthMode, CertMode, FakeOptions, FakeRegistry, ServerName, random_bytes};

/// An `Env` whose servers present `cert`.
fn env_with_cert(cert: CertMode) -> Env {
    let fake = FakeRegistry::start_with_cert(
        FakeOptions {
            auth: AuthMode::Token {
                user: "device-42".into(),
                pass: "s3cret-device-password".into(),
            },
            ..Default::default()
        },
        cert,
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let config_path = fake.write_client_files(dir.path());
    Env {
        fake,
        dir,
        config_path,
    }
}

/// The handshake fails: no request reaches any server, and nothing is stored.
fn refused_certificate(cert: CertMode, fragments: &[&str]) {
    let env = env_with_cert(cert);
    let (_, blobs) = image(&env, vec![random_bytes(100)]);
    let puller = serial_puller(&env);
    let chain = pull_fails(&env, &puller, "x", Category::Transient, fragments);
    assert!(!chain.contains("s3cret"), "{chain}");
    assert!(
        env.fake.connections(ServerName::Login) > 0,
        "the login server was tried"
    );
    assert!(
        env.fake.requests().is_empty(),
        "no request got past the handshake: {:?}",
        env.fake.requests()
    );
    drop(puller);
    assert_nothing_visible(&env, &blobs);
}

#[test]
fn certificate_for_the_wrong_name_is_refused() {
    refused_certificate(
        CertMode::WrongName,
        &[
            "invalid peer certificate",
            "not valid for name \"contoso.azurecr.test\"",
        ],
    );
}

#[test]
fn expired_certificate_is_refused() {
    refused_certificate(CertMode::Expired, &["certificate", "expired"]);
}

/// Token replies are `template` (`{token}` = a valid token).
fn token_env(template: &str) -> (Env, Vec<edgepull_core::oci::Descriptor>) {
    let env = Env::token();
    let (_, blobs) = image(&env, vec![random_bytes(1000)]);
    env.fake
        .update_knobs(|k| k.token_reply_override = Some(template.to_string()));
    (env, blobs)
}

fn token_refused(template: &str, fragments: &[&str]) {
    let (env, blobs) = token_env(template);
    let puller = serial_puller(&env);
    pull_fails(&env, &puller, "x", Category::Auth, fragments);
    assert_eq!(token_requests(&env), 1, "no retry of an unusable reply");
    assert!(data_requests(&env).is_empty());
    drop(puller);
    assert_nothing_visible(&env, &blobs);
}

fn token_accepted(template: &str) {
    let (env, blobs) = token_env(template);
    let puller = serial_puller(&env);
    pull_ok(&env, &puller);
    assert_eq!(token_requests(&env), 1);
    drop(puller);
    assert_stored(&env, &blobs);
}

#[test]
fn token_reply_over_one_mebibyte_is_refused() {
    let pad = "a".repeat((1 << 20) + 10);
    token_refused(
        &format!(r#"{{"access_token":"{{token}}","expires_in":300,"pad":"{pad}"}}"#),
        &["unusable reply", "exceeds the 1048576-byte limit"],
    );
}

#[test]
fn token_reply_with_malformed_json_is_refused() {
    token_refused(
        r#"{"access_token":"{token}","expires_in":"#,
        &["unusable reply", "not JSON"],
    );
}

#[test]
fn token_reply_without_a_token_is_refused() {
    token_refused(
        r#"{"expires_in":300}"#,
        &["unusable reply", r#"neither "token" nor "access_token""#],
    );
}

#[test]
fn token_expires_in_zero_uses_the_default_lifetime() {
    token_accepted(r#"{"access_token":"{token}","expires_in":0}"#);
}

#[test]
fn token_expires_in_negative_uses_the_default_lifetime() {
    token_accepted(r#"{"access_token":"{token}","expires_in":-300}"#);
}

#[test]
fn token_expires_in_huge_is_clamped() {
    token_accepted(&format!(
        r#"{{"access_token":"{{token}}","expires_in":{}}}"#,
        i64::MAX
    ));
}
