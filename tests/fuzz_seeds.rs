//! Every seed of every fuzz target (`fuzz/seeds/<target>/*`) through the same checks the
//! fuzzers run (`fuzz/src/checks.rs`): the normal suite keeps the fuzzers' properties and
//! their past findings (saved as seeds) without nightly or libFuzzer.

#[path = "../fuzz/src/checks.rs"]
#[allow(unreachable_pub)] // pub for the fuzz crate, whose library this file is
mod checks;

use std::path::Path;

fn run(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("seed entry").path();
        let data = std::fs::read(&path).expect("read seed");
        check(&data);
        n += 1;
    }
    assert!(n > 0, "no seeds in {}", dir.display());
}

#[test]
fn reference_seeds() {
    run("reference", checks::reference);
}

#[test]
fn digest_seeds() {
    run("digest", checks::digest);
}

#[test]
fn platform_seeds() {
    run("platform", checks::platform);
}

#[test]
fn www_authenticate_seeds() {
    run("www_authenticate", checks::www_authenticate);
}

#[test]
fn content_range_seeds() {
    run("content_range", checks::content_range);
}

#[test]
fn manifest_seeds() {
    run("manifest", checks::manifest);
}

#[test]
fn token_reply_seeds() {
    run("token_reply", checks::token_reply);
}

#[test]
fn endpoints_file_seeds() {
    run("endpoints_file", checks::endpoints_file);
}
