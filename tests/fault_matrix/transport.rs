//! Cells about the transfer itself: cuts, stalls, trickles, short and long bodies,
//! encodings, HTTP statuses from the login server and the data endpoint, `Retry-After`,
//! tokens revoked mid-pull, and every odd answer to a `Range` request.

use std::time::{Duration, Instant, SystemTime};

use super::helpers::*;
use crate::common::*;
use edgepull::exit::Category;
use edgepull_testkit::{ServerName, random_bytes};

fn range(offset: u64) -> Option<String> {
    Some(format!("bytes={offset}-"))
}

#[test]
fn reset_mid_body_resumes_with_one_range_request() {
    let env = Env::token();
    let (_, blobs) = image(&env, vec![random_bytes(1_500_000)]);
    env.fake.set_cut_after(Some((600_000, 1)));
    let puller = serial_puller(&env);
    let report = pull_ok(&env, &puller);
    assert_eq!(report.bytes_refetched, 0);
    assert_eq!(
        data_log(&env),
        vec![(200, None), (200, None), (206, range(600_000))]
    );
    assert_eq!(data_bytes(&env), total(&blobs), "not one byte sent twice");
    assert_eq!(
        redirects_for(&env, &blobs[1].digest),
        2,
        "a fresh link per reopen"
    );
    drop(puller);
    assert_stored(&env, &blobs);
}

#[test]
fn stall_mid_body_times_out_and_resumes_where_it_stalled() {
    let env = Env::token();
    let (_, blobs) = image(&env, vec![random_bytes(1_000_000)]);
    env.edit_config(|c| c["timeouts"] = serde_json::json!({"idle_read_secs": 1}));
    env.fake.update_knobs(|k| k.stall_after = Some((300_000, 1)));
    let puller = serial_puller(&env);
    let started = Instant::now();
    pull_ok(&env, &puller);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited for the idle timeout"
    );
    assert_eq!(
        data_log(&env),
        vec![(200, None), (200, None), (206, range(300_000))]
    );
    drop(puller);
    assert_stored(&env, &blobs);
}

#[test]
fn trickle_below_the_minimum_rate_reconnects_and_finishes() {
    let env = Env::token();
    let (_, blobs) = image(&env, vec![random_bytes(300_000)]);
    env.edit_config(|c| {
        c["timeouts"] = serde_json::json!({"min_bytes_per_sec": 50_000, "min_rate_window_secs": 2});
    });
    // Config and layer bodies trickle at 2 kB/s (the layer alone would take 150 s); the
    // reconnect after the min-rate timeout is served at full speed.
    env.fake.update_knobs(|k| k.trickle = Some((2_000, 2)));
    let puller = serial_puller(&env);
    let started = Instant::now();
    pull_ok(&env, &puller);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "gave up on the trickle: {:?}",
        started.elapsed()
    );
    let resumed = data_log(&env)
        .into_iter()
        .any(|(status, r)| status == 206 && r.is_some_and(|r| r != "bytes=0-"));
    assert!(resumed, "a ranged reconnect: {:?}", data_log(&env));
    drop(puller);
    assert_stored(&env, &blobs);
}

#[test]
fn short_body_resumes_with_range() {
    let env = Env::token();
    let (_, blobs) = image(&env, vec![random_bytes(1_000_000)]);
    env.fake.update_knobs(|k| k.short_body = Some((200_000, 1)));
    let puller = serial_puller(&env);
    pull_ok(&env, &puller);
    assert_eq!(
        data_log(&env),
        vec![(200, None), (200, None), (206, range(200_000))]
    );
    assert_eq!(data_bytes(&env), total(&blobs));
    drop(puller);
    assert_stored(&env, &blobs);
}

fn long_body(chunked: bool) {
    let env = Env::token();
    let (_, blobs) = image(&env, vec![random_bytes(10_000)]);
    env.fake.update_knobs(|k| {
        k.extra_bytes = 5000;
        k.chunked = chunked;
    });
    let puller = serial_puller(&env);
    pull_ok(&env, &puller);
    let gets = data_requests(&env).len();
    assert_eq!(gets, blobs.len(), "one GET per blob, nothing refetched");
    drop(puller);
    assert_stored(&env, &blobs);
}

#[test]
fn long_body_with_content_length_stops_at_the_descriptor_size() {
    long_body(false);
}

#[test]
fn long_chunked_body_stops_at_the_descriptor_size() {
    long_body(true);
}

#[test]
fn content_encoding_gzip_is_refused() {
    let env = Env::token();
    let (_, blobs) = image(&env, vec![random_bytes(1000)]);
    env.fake.set_content_encoding(Some("gzip"));
    let puller = serial_puller(&env);
    pull_fails(
        &env,
        &puller,
        "x",
        Category::Registry,
        &["Content-Encoding \"gzip\"", "raw bytes"],
    );
    drop(puller);
    assert_nothing_visible(&env, &blobs);
}

#[test]
fn content_encoding_identity_is_accepted() {
    let env = Env::token();
    let (_, blobs) = image(&env, vec![random_bytes(1000)]);
    env.fake.set_content_encoding(Some("identity"));
    let puller = serial_puller(&env);
    pull_ok(&env, &puller);
    drop(puller);
    assert_stored(&env, &blobs);
}

/// The manifest GET is answered `status` once, then the pull succeeds.
fn login_status_once(status: u16) {
    let env = Env::token();
    let (_, blobs) = image(&env, vec![random_bytes(1000)]);
    env.fake.fail_next(status, None);
    let puller = serial_puller(&env);
    pull_ok(&env, &puller);
    // 401 challenge, the injected status, then the manifest and two blob redirects.
    assert_eq!(login_statuses(&env), vec![401, status, 200, 307, 307]);
    drop(puller);
    assert_stored(&env, &blobs);
}

#[test]
fn manifest_500_is_retried_then_succeeds() {
    login_status_once(500);
}

#[test]
fn manifest_502_is_retried_then_succeeds() {
    login_status_once(502);
}

#[test]
fn manifest_503_is_retried_then_succeeds() {
    login_status_once(503);
}

#[test]
fn manifest_504_is_retried_then_succeeds() {
    login_status_once(504);
}

#[test]
fn manifest_408_is_retried_then_succeeds() {
    login_status_once(408);
}

#[test]
fn persistent_500_gives_up_after_three_attempts() {
    let env = Env::token();
    image(&env, vec![random_bytes(100)]);
    for _ in 0..10 {
        env.fake.fail_next(500, None);
    }
    let puller = serial_puller(&env);
    pull_fails(&env, &puller, "x", Category::Transient, &["answered 500"]);
    assert_eq!(login_statuses(&env), vec![401, 500, 500, 500]);
    assert!(data_requests(&env).is_empty());
}

/// Time from the login server's 429 to the next manifest request.
fn wait_after_429(env: &Env) -> Duration {
    let login = env.fake.requests_to(ServerName::Login);
    let i = login
        .iter()
        .position(|r| r.status == 429)
        .expect("a 429 was served");
    let next = login[i + 1..]
        .iter()
        .find(|r| r.path.contains("/manifests/"))
        .expect("a request after the 429");
    next.at.duration_since(login[i].at)
}

#[test]
fn retry_after_in_seconds_is_honoured() {
    let env = Env::token();
    let (_, blobs) = image(&env, vec![random_bytes(100)]);
    env.fake.fail_next(429, Some("2"));
    let puller = patient_puller(&env);
    pull_ok(&env, &puller);
    let waited = wait_after_429(&env);
    assert!(waited >= Duration::from_secs(2), "{waited:?}");
    drop(puller);
    assert_stored(&env, &blobs);
}

#[test]
fn retry_after_as_an_http_date_is_honoured() {
    let env = Env::token();
    let (_, blobs) = image(&env, vec![random_bytes(100)]);
    // HTTP dates have whole seconds: "now + 3 s" is 2 to 3 s away when it is sent.
    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3));
    env.fake.fail_next(429, Some(&date));
    let puller = patient_puller(&env);
    pull_ok(&env, &puller);
    let waited = wait_after_429(&env);
    assert!(waited >= Duration::from_millis(1500), "{waited:?} for {date}");
    drop(puller);
    assert_stored(&env, &blobs);
}

#[test]
fn data_endpoint_503_gets_a_fresh_redirect_and_succeeds() {
    let env = Env::token();
    let (_, blobs) = image(&env, vec![random_bytes(1000)]);
    env.fake.update_knobs(|k| k.data_fail_next.push_back((503, None)));
    let puller = serial_puller(&env);
    pull_ok(&env, &puller);
    assert_eq!(data_log(&env), vec![(503, None), (200, None), (200, None)]);
    assert_eq!(redirects_for(&env, &blobs[0].digest), 2);
    drop(puller);
    assert_stored(&env, &blobs);
}

#[test]
fn data_endpoint_429_with_retry_after_is_honoured() {
    let env = Env::token();
    let (_, blobs) = image(&env, vec![random_bytes(1000)]);
    env.fake
        .update_knobs(|k| k.data_fail_next.push_back((429, Some("1".into()))));
    let puller = patient_puller(&env);
    pull_ok(&env, &puller);
    let data = data_requests(&env);
    assert_eq!(
        data.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![429, 200, 200]
    );
    let waited = data[1].at.duration_since(data[0].at);
    assert!(waited >= Duration::from_secs(1), "{waited:?}");
    assert_eq!(redirects_for(&env, &blobs[0].digest), 2);
    drop(puller);
    assert_stored(&env, &blobs);
}

#[test]
fn expired_signed_link_403_gets_a_fresh_redirect_and_succeeds() {
    let env = Env::token();
    let (_, blobs) = image(&env, vec![random_bytes(1000)]);
    env.fake.update_knobs(|k| k.expired_links_next = 1);
    let puller = serial_puller(&env);
    pull_ok(&env, &puller);
    assert_eq!(data_log(&env), vec![(403, None), (200, None), (200, None)]);
    assert_eq!(redirects_for(&env, &blobs[0].digest), 2);
    drop(puller);
    assert_stored(&env, &blobs);
}

#[test]
fn invalid_token_mid_pull_reauthenticates_once() {
    let env = Env::token();
    let (_, blobs) = image(&env, vec![random_bytes(1000)]);
    // Manifest and config pass; the layer's blob GET gets 401 invalid_token.
    env.fake.update_knobs(|k| k.invalid_token_after = Some(2));
    let puller = serial_puller(&env);
    pull_ok(&env, &puller);
    assert_eq!(login_statuses(&env), vec![401, 200, 307, 401, 307]);
    assert_eq!(token_requests(&env), 2, "one fresh token after invalid_token");
    drop(puller);
    assert_stored(&env, &blobs);
}

#[test]
fn blob_missing_at_the_data_endpoint_is_a_registry_error() {
    let env = Env::token();
    let (_, blobs) = image(&env, vec![random_bytes(1000)]);
    env.fake.update_knobs(|k| k.data_fail_next.push_back((404, None)));
    let puller = serial_puller(&env);
    pull_fails(
        &env,
        &puller,
        "x",
        Category::Registry,
        &[
            "not found at contoso.eastus.data.azurecr.test",
            &blobs[0].digest.to_string(),
        ],
    );
    assert_eq!(data_log(&env), vec![(404, None)]);
    drop(puller);
    assert_nothing_visible(&env, &blobs);
}

#[test]
fn range_answered_416_restarts_from_zero() {
    let env = Env::token();
    let (_, blobs) = image(&env, vec![random_bytes(1_000_000)]);
    env.fake.update_knobs(|k| {
        k.cut_after = Some((300_000, 1));
        k.range_fail_next.push_back(416);
    });
    let puller = serial_puller(&env);
    pull_ok(&env, &puller);
    assert_eq!(
        data_log(&env),
        vec![(200, None), (200, None), (416, range(300_000)), (200, None)]
    );
    drop(puller);
    assert_stored(&env, &blobs);
}

#[test]
fn content_range_not_matching_is_refused_and_the_partial_is_kept() {
    let env = Env::token();
    let (_, blobs) = image(&env, vec![random_bytes(1_000_000)]);
    let layer = blobs[1].clone();
    env.fake.update_knobs(|k| {
        k.cut_after = Some((300_000, 1));
        k.wrong_content_range = true;
    });
    let puller = serial_puller(&env);
    pull_fails(
        &env,
        &puller,
        "x",
        Category::Integrity,
        &[
            "range request for offset 300000 unusably",
            "206 starts at byte 0, but byte 300000 was requested",
        ],
    );
    drop(puller);
    assert_nothing_visible(&env, &blobs[1..]);
    let ingests = rt().block_on(env.open_store().ingests()).expect("ingests");
    let kept = ingests
        .iter()
        .find(|i| i.digest == layer.digest)
        .expect("the partial download is kept");
    assert_eq!(kept.checkpoint, 300_000);

    // A well-behaved server next time: the pull resumes exactly there.
    env.fake.set_wrong_content_range(false);
    env.fake.clear_log();
    let puller = serial_puller(&env);
    pull_ok(&env, &puller);
    assert_eq!(data_log(&env), vec![(206, range(300_000))]);
    drop(puller);
    assert_stored(&env, &blobs);
}

#[test]
fn partial_content_without_content_range_is_refused() {
    let env = Env::token();
    let (_, blobs) = image(&env, vec![random_bytes(1_000_000)]);
    env.fake.update_knobs(|k| {
        k.cut_after = Some((300_000, 1));
        k.omit_content_range = true;
    });
    let puller = serial_puller(&env);
    pull_fails(
        &env,
        &puller,
        "x",
        Category::Integrity,
        &["206 Partial Content without a Content-Range header"],
    );
    assert_eq!(
        data_log(&env),
        vec![(200, None), (200, None), (206, range(300_000))]
    );
    drop(puller);
    assert_nothing_visible(&env, &blobs[1..]);
}

#[test]
fn full_200_to_a_range_request_restarts_from_zero() {
    let env = Env::token();
    let (_, blobs) = image(&env, vec![random_bytes(1_000_000)]);
    env.fake.update_knobs(|k| {
        k.cut_after = Some((400_000, 1));
        k.ignore_range = true;
    });
    let puller = serial_puller(&env);
    let report = pull_ok(&env, &puller);
    assert_eq!(report.bytes_refetched, 400_000);
    assert_eq!(
        data_log(&env),
        vec![(200, None), (200, None), (200, range(400_000))]
    );
    drop(puller);
    assert_stored(&env, &blobs);
}
