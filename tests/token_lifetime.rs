//! Token replies whose `expires_in` no clock can hold, end to end against the fake
//! registry (issue 9, weakness 1): the pull completes, and the process never panics (a
//! release build aborts on a panic, and systemd would restart it into the same reply).

mod common;

use common::*;
use edgepull::exit::Category;
use edgepull_testkit::{ServerName, random_bytes};

/// Pulls of two tags, one token each: the second reuses the first token only if its
/// lifetime was understood.
fn pull_twice_with(raw: &str) -> Env {
    let env = Env::token();
    let arm64 = platform("linux/arm64");
    env.fake
        .push_image_for("app", "a", &arm64, vec![random_bytes(2000)]);
    env.fake
        .push_image_for("app", "b", &arm64, vec![random_bytes(2000)]);
    env.fake.set_expires_in_raw(Some(raw));
    let puller = env.puller();
    for tag in ["a", "b"] {
        pull(&env, &puller, tag)
            .unwrap_or_else(|e| panic!("expires_in {raw}, tag {tag}: {}", edgepull::error_chain(&e)));
    }
    env.assert_no_auth_at_data_endpoints();
    env
}

#[test]
fn a_token_that_expires_in_i64_max_seconds_pulls() {
    let env = pull_twice_with("9223372036854775807");
    // The token was cached (clamped to a day), not refetched for every request.
    let token_requests = env
        .fake
        .requests_to(ServerName::Login)
        .iter()
        .filter(|r| r.path == "/oauth2/token")
        .count();
    assert_eq!(token_requests, 1, "{:?}", env.fake.requests());
}

#[test]
fn any_expires_in_a_server_can_send_still_pulls() {
    for raw in [
        "18446744073709551615",
        "18446744073709551616",
        "1e300",
        "0",
        "-1",
        "-9223372036854775808",
        "0.5",
        "\"300\"",
        "null",
        "{}",
    ] {
        pull_twice_with(raw);
    }
}

/// A number no JSON reader holds: a named error of the auth category, not a crash.
#[test]
fn an_unreadable_expires_in_is_an_auth_error_naming_the_token_server() {
    let env = Env::token();
    env.fake
        .push_image_for("app", "a", &platform("linux/arm64"), vec![random_bytes(100)]);
    env.fake.set_expires_in_raw(Some("1e400"));
    let puller = env.puller();
    let err = pull_err(&env, &puller, "a", Category::Auth);
    let msg = edgepull::error_chain(&err);
    assert!(
        msg.contains("token server") && msg.contains("unusable reply") && msg.contains("not JSON"),
        "{msg}"
    );
}
