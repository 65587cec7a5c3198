//! What the cells share: an image on the fake, pulls with their outcome, and views of the
//! request log.

use std::time::Duration;

use crate::common::*;
use edgepull::exit::Category;
use edgepull::pull::{PullError, PullReport, Puller};
use edgepull_core::oci::{Descriptor, Digest};
use edgepull_core::retry::RetryPolicy;
use edgepull_testkit::{RequestRecord, ServerName};

/// Push `app:x` for linux/arm64 with `layers`; its manifest digest and blobs (config first).
pub(crate) fn image(env: &Env, layers: Vec<Vec<u8>>) -> (Digest, Vec<Descriptor>) {
    env.fake
        .push_image_for("app", "x", &platform("linux/arm64"), layers)
}

/// A puller fetching one blob at a time (config first), so the order of data endpoint
/// requests is the manifest's.
pub(crate) fn serial_puller(env: &Env) -> Puller {
    let mut p = env.puller();
    p.set_concurrency(1);
    p
}

/// A puller whose retry cap leaves room for a `Retry-After` of a few seconds.
pub(crate) fn patient_puller(env: &Env) -> Puller {
    let mut p = serial_puller(env);
    p.set_retry(
        RetryPolicy::new(Duration::from_millis(20), Duration::from_secs(10), Some(6)).expect("policy"),
    );
    p
}

/// Pull `app:x` and expect success; then the store must verify clean and hold the image.
pub(crate) fn pull_ok(env: &Env, puller: &Puller) -> PullReport {
    let report =
        pull(env, puller, "x").unwrap_or_else(|e| panic!("pull failed: {}", edgepull::error_chain(&e)));
    env.assert_no_auth_at_data_endpoints();
    report
}

/// After `pull_ok`, with the puller dropped: every blob present and the store clean.
pub(crate) fn assert_stored(env: &Env, blobs: &[Descriptor]) {
    let store = env.open_store();
    for b in blobs {
        assert!(
            rt().block_on(store.has_blob(&b.digest, b.size)),
            "{} missing",
            b.digest
        );
    }
    let report = rt().block_on(store.verify()).expect("verify");
    assert!(report.corrupt.is_empty(), "{report:?}");
    assert_eq!(rt().block_on(store.images()).expect("images").len(), 1);
}

/// Pull `tag` and expect `want`; every fragment must be in the error chain. Returns the
/// chain.
pub(crate) fn pull_fails(
    env: &Env,
    puller: &Puller,
    tag: &str,
    want: Category,
    fragments: &[&str],
) -> String {
    let err: PullError = pull(env, puller, tag).expect_err("the pull should fail");
    let chain = edgepull::error_chain(&err);
    eprintln!("{tag}: {:?}: {chain}", err.category());
    assert_eq!(err.category(), want, "{chain}");
    assert_eq!(err.category().code(), want.code());
    for f in fragments {
        assert!(chain.contains(f), "{f:?} missing from: {chain}");
    }
    env.assert_no_auth_at_data_endpoints();
    chain
}

/// Pull tag `x` one blob at a time: it fails with `want` and `fragments` (as
/// [`pull_fails`]), and no request reached a data endpoint.
pub(crate) fn refused_before_any_download(env: &Env, want: Category, fragments: &[&str]) {
    let puller = serial_puller(env);
    pull_fails(env, &puller, "x", want, fragments);
    assert!(data_requests(env).is_empty());
}

/// No blob of `blobs` is visible, and no image is recorded.
pub(crate) fn assert_nothing_visible(env: &Env, blobs: &[Descriptor]) {
    for b in blobs {
        assert!(
            !has_blob_file(&env.store_path(), &b.digest),
            "{} visible",
            b.digest
        );
    }
    assert!(
        rt().block_on(env.open_store().images())
            .expect("images")
            .is_empty()
    );
}

/// Requests that reached the eastus data endpoint.
pub(crate) fn data_requests(env: &Env) -> Vec<RequestRecord> {
    env.fake.requests_to(ServerName::EastUs)
}

/// `(status, Range)` of every eastus request, in order.
pub(crate) fn data_log(env: &Env) -> Vec<(u16, Option<String>)> {
    data_requests(env)
        .into_iter()
        .map(|r| (r.status, r.range))
        .collect()
}

/// Statuses the login server sent for manifest and blob requests, in order.
pub(crate) fn login_statuses(env: &Env) -> Vec<u16> {
    env.fake
        .requests_to(ServerName::Login)
        .iter()
        .filter(|r| r.path.contains("/manifests/") || r.path.contains("/blobs/"))
        .map(|r| r.status)
        .collect()
}

/// Token requests the login server answered.
pub(crate) fn token_requests(env: &Env) -> usize {
    env.fake
        .requests_to(ServerName::Login)
        .iter()
        .filter(|r| r.path == "/oauth2/token")
        .count()
}

/// Redirects (307) the login server sent for blob `d`.
pub(crate) fn redirects_for(env: &Env, d: &Digest) -> usize {
    env.fake
        .requests_to(ServerName::Login)
        .iter()
        .filter(|r| r.path.ends_with(&d.to_string()) && r.status == 307)
        .count()
}

/// Body bytes eastus sent.
pub(crate) fn data_bytes(env: &Env) -> u64 {
    env.eastus_bytes()
}

/// Sum of the descriptor sizes.
pub(crate) fn total(blobs: &[Descriptor]) -> u64 {
    blobs.iter().map(|b| b.size).sum()
}
