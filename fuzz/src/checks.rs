//! The properties each fuzz target checks, one function per target. Shared by the
//! cargo-fuzz binaries (`fuzz/fuzz_targets/*.rs`) and by the normal test suite, which runs
//! every seed in `fuzz/seeds/<target>/` through the same function (`tests/fuzz_seeds.rs`).
//!
//! Every parser here reads bytes a registry, a config author or the `az` CLI controls.
//! Beyond "never panics", each check asserts what a caller relies on: a value that parses
//! prints back to text that parses to the same value, sizes and lifetimes stay in range, and
//! error messages stay bounded (they end up in logs and `status.json`).

use std::time::{Duration, SystemTime};

use edgepull_core::acr::{self, AcrHost, ShowEndpoints};
use edgepull_core::challenge::{parse_challenges, preferred};
use edgepull_core::hostport::HostPort;
use edgepull_core::oci::{Digest, Document, Platform, Reference, manifest};
use edgepull_core::resume::{ContentRange, parse_content_range, resume_check};
use edgepull_core::token::{TokenReply, refresh_margin};

/// Longest error message accepted: a hostile value must not flood a log line.
const MAX_ERROR_CHARS: usize = 4096;

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

fn bounded(e: &dyn std::error::Error) {
    let msg = e.to_string();
    assert!(
        msg.chars().count() <= MAX_ERROR_CHARS,
        "error message of {} chars",
        msg.chars().count()
    );
}

/// `Reference::parse`: round trip through `Display`; the registry is a valid `HostPort`.
pub fn reference(data: &[u8]) {
    let Some(s) = text(data) else { return };
    match Reference::parse(s) {
        Ok(r) => {
            let again = Reference::parse(&r.to_string()).expect("a printed reference parses");
            assert_eq!(again, r, "round trip of {s:?}");
            HostPort::parse(&r.registry().to_string()).expect("the registry prints as a host:port");
            let _ = r.manifest_ref();
        }
        Err(e) => bounded(&e),
    }
}

/// `Digest::parse`: round trip; the hex is what a store path is built from, so it must be
/// lowercase hex of the algorithm's length.
pub fn digest(data: &[u8]) {
    let Some(s) = text(data) else { return };
    match Digest::parse(s) {
        Ok(d) => {
            let printed = d.to_string();
            assert_eq!(Digest::parse(&printed).expect("a printed digest parses"), d);
            let hex = printed.split_once(':').expect("algorithm:hex").1;
            assert!(
                hex.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            );
            assert!(!hex.contains('/') && !hex.contains('.'));
        }
        Err(e) => bounded(&e),
    }
}

/// `Platform::parse`: round trip; choosing among arbitrary candidates never panics.
pub fn platform(data: &[u8]) {
    let Some(s) = text(data) else { return };
    match Platform::parse(s) {
        Ok(p) => {
            let again = Platform::parse(&p.to_string()).expect("a printed platform parses");
            assert_eq!(again, p, "round trip of {s:?}");
            let candidates: Vec<Platform> = s.split(',').filter_map(|c| Platform::parse(c).ok()).collect();
            if let Some(i) = edgepull_core::oci::platform::select(&p, &candidates) {
                assert!(i < candidates.len());
            }
        }
        Err(e) => bounded(&e),
    }
}

/// `WWW-Authenticate` values, one per line: parsing and choosing never panic, and a
/// chosen challenge is one of those parsed.
pub fn www_authenticate(data: &[u8]) {
    let Some(s) = text(data) else { return };
    let challenges = parse_challenges(s.lines());
    if let Some(c) = preferred(&challenges) {
        assert!(challenges.iter().any(|x| std::ptr::eq(x, c)));
    }
}

/// `Content-Range`: round trip, ordered bounds; the resume decision for any offset and size
/// never panics.
pub fn content_range(data: &[u8]) {
    let Some(s) = text(data) else { return };
    match parse_content_range(s) {
        Ok(cr) => {
            assert_eq!(
                parse_content_range(&cr.to_string()).expect("printed range parses"),
                cr
            );
            if let ContentRange::Bytes {
                first,
                last,
                complete,
            } = cr
            {
                assert!(first <= last);
                if let Some(c) = complete {
                    assert!(last < c);
                }
            }
        }
        Err(e) => bounded(&e),
    }
    // Offsets and sizes at the edges of u64, with this header and a few statuses.
    for (offset, size) in [
        (0, 0),
        (0, 10),
        (5, 10),
        (10, 10),
        (11, 10),
        (u64::MAX, u64::MAX),
        (1, u64::MAX),
    ] {
        for status in [200, 206, 416] {
            let _ = resume_check(offset, size, status, Some(s), None);
            let _ = resume_check(offset, size, status, Some(s), Some(u64::MAX));
        }
    }
}

/// Manifests and indexes: the first byte picks the media type, the rest is the body.
/// A parsed document's descriptors carry valid digests (by type) and the parse never
/// accepts more than the size cap.
pub fn manifest(data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let types = [
        manifest::OCI_MANIFEST,
        manifest::OCI_INDEX,
        manifest::DOCKER_MANIFEST,
        manifest::DOCKER_LIST,
        "",
        "application/json",
    ];
    let media_type = types[pick as usize % types.len()];
    match Document::parse(body, media_type) {
        Ok(Document::Manifest(m)) => {
            assert!(body.len() as u64 <= manifest::MAX_MANIFEST_BYTES);
            for d in m.blobs() {
                let _ = d.digest.to_string();
            }
        }
        Ok(Document::Index(i)) => {
            assert!(body.len() as u64 <= manifest::MAX_MANIFEST_BYTES);
            for d in &i.manifests {
                if let Some(p) = &d.platform {
                    let _ = p.to_platform().to_string();
                }
            }
        }
        Err(e) => bounded(&e),
    }
}

/// Token endpoint replies: a parsed reply has a non-empty token and a lifetime whose
/// renewal point lies within it, and deriving deadlines from it never overflows a clock.
pub fn token_reply(data: &[u8]) {
    match TokenReply::parse(data) {
        Ok(t) => {
            assert!(!t.token().is_empty());
            let lifetime = t.lifetime();
            assert!(t.renew_after() <= lifetime);
            let _ = refresh_margin(lifetime);
            let _ = t.issued_at();
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
            let _ = now.checked_add(lifetime);
        }
        Err(e) => bounded(&e),
    }
}

/// `az acr show-endpoints` JSON: every endpoint it lists is classified without panicking.
pub fn endpoints_file(data: &[u8]) {
    let Ok(doc) = serde_json::from_slice::<ShowEndpoints>(data) else {
        return;
    };
    let hosts = doc
        .data_endpoints
        .iter()
        .chain(&doc.regional_endpoints)
        .map(|e| e.endpoint.as_str())
        .chain(doc.login_server.as_deref());
    for host in hosts {
        let _ = acr::storage_or_wildcard(host);
        if let Some(h) = AcrHost::parse(host) {
            let _ = h.registry();
            for e in &doc.data_endpoints {
                let _ = h.data_endpoint(&e.region);
            }
        }
        if let Err(e) = HostPort::parse(host) {
            bounded(&e);
        }
    }
}
