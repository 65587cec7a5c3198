//! The regional data endpoints: blob bytes for valid, unexpired signed links, with Range
//! support, the body misbehaviours and redirects of their own (`data_redirect`). `serve_blob` is shared with the login server's
//! `blob_direct` mode.

use std::time::Instant;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{
    ACCEPT_RANGES, AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, HeaderMap,
    HeaderName, LOCATION, RANGE,
};
use hyper::{Method, Request, Response};

use super::body::{FakeBody, Shaping};
use super::state::{DataRedirect, Knobs, ServerName, Shared, lock};
use super::wire::{header_str, respond};
use edgepull_core::oci::Digest;

pub(crate) fn handle(shared: &Shared, server: ServerName, req: Request<Incoming>) -> Response<FakeBody> {
    let region = server.region().unwrap_or("eastus");
    let head = *req.method() == Method::HEAD;
    if !head && *req.method() != Method::GET {
        return storage_error(
            405,
            "UnsupportedHttpVerb",
            "The resource doesn't support the specified HTTP verb.",
        );
    }
    let Some(id) = req.uri().path().strip_prefix("/blob/") else {
        return storage_error(404, "ResourceNotFound", "The specified resource does not exist.");
    };
    if req.headers().contains_key(AUTHORIZATION) && lock(&shared.knobs).data_rejects_authorization {
        return storage_error(
            400,
            "InvalidAuthenticationInfo",
            "Authentication information is not given in the correct format.",
        );
    }
    let sig = url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "sig")
        .map(|(_, v)| v.into_owned());
    let (digest, depth) = {
        let links = lock(&shared.links);
        let Some(link) = links.get(id) else {
            return denied("Signature did not match.");
        };
        if sig.as_deref() != Some(link.sig.as_str()) || link.region != region {
            return denied("Signature did not match.");
        }
        if link.expires <= Instant::now() {
            return denied("Signed expiry time has passed.");
        }
        (link.digest, link.depth)
    };
    let injected = lock(&shared.knobs).data_fail_next.pop_front();
    if let Some((status, retry_after)) = injected {
        return injected_error(status, retry_after);
    }
    if let Some(location) = redirect(shared, server, &req, digest, depth) {
        return respond(307, &[(LOCATION, location)], FakeBody::empty());
    }
    let Some(data) = lock(&shared.content).blobs.get(&digest).cloned() else {
        return storage_error(404, "BlobNotFound", "The specified blob does not exist.");
    };
    serve_blob(shared, &digest, data, req.headers(), head, false)
}

/// A `data_fail_next` answer: the storage error Azure sends for `status`.
fn injected_error(status: u16, retry_after: Option<String>) -> Response<FakeBody> {
    let (code, message) = match status {
        403 => ("AuthenticationFailed", "Signed expiry time has passed."),
        404 => ("BlobNotFound", "The specified blob does not exist."),
        408 => (
            "OperationTimedOut",
            "The operation could not be completed within the permitted time.",
        ),
        429 | 503 => (
            "ServerBusy",
            "The server is currently unable to receive requests.",
        ),
        _ => ("InternalError", "The server encountered an internal error."),
    };
    let mut resp = storage_error(status, code, message);
    if let Some(v) = retry_after.and_then(|v| hyper::header::HeaderValue::from_str(&v).ok()) {
        resp.headers_mut().insert(hyper::header::RETRY_AFTER, v);
    }
    resp
}
/// The `Location` the `data_redirect` knob sends for a valid link `depth` data hops into
/// its chain, if any.
fn redirect(
    shared: &Shared,
    server: ServerName,
    req: &Request<Incoming>,
    digest: Digest,
    depth: u32,
) -> Option<String> {
    let (redirect, ttl) = {
        let k = lock(&shared.knobs);
        (k.data_redirect.clone()?, k.link_ttl)
    };
    Some(match redirect {
        DataRedirect::To(location) => location,
        DataRedirect::Chain(n) if depth >= n => return None,
        DataRedirect::Chain(_) => {
            let other = if server == ServerName::EastUs {
                "westus"
            } else {
                "eastus"
            };
            shared.signed_link(other, digest, ttl, depth + 1)
        }
        DataRedirect::Loop => format!(
            "https://{}:{}{}",
            server.host(),
            shared.ports.of(server),
            req.uri().path_and_query().map_or("/", |p| p.as_str())
        ),
    })
}

fn denied(message: &str) -> Response<FakeBody> {
    storage_error(403, "AuthenticationFailed", message)
}

/// An Azure-storage-style XML error.
fn storage_error(status: u16, code: &str, message: &str) -> Response<FakeBody> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    let headers = [
        (CONTENT_TYPE, "application/xml".to_string()),
        (CONTENT_LENGTH, body.len().to_string()),
    ];
    respond(status, &headers, FakeBody::full(body))
}

/// `bytes=N-` or `bytes=N-M`; anything else is ignored (RFC 9110 allows that).
fn parse_range(value: &str) -> Option<(u64, Option<u64>)> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let start = a.trim().parse().ok()?;
    let end = match b.trim() {
        "" => None,
        e => Some(e.parse().ok()?),
    };
    match end {
        Some(e) if e < start => None,
        _ => Some((start, end)),
    }
}

/// Take one use of `cut_after`, if armed and the body (`total` bytes) is long enough to be
/// cut; shorter bodies pass untouched and do not use up the knob.
fn take_cut(knobs: &mut Knobs, total: u64) -> Option<u64> {
    take_once(&mut knobs.cut_after, Some(total))
}

/// Take one use of an `(n, times)` knob; with `total`, only for a body longer than `n`
/// (shorter bodies pass untouched and do not use up the knob).
fn take_once(slot: &mut Option<(u64, u32)>, total: Option<u64>) -> Option<u64> {
    let (n, times) = (*slot)?;
    if total.is_some_and(|total| n >= total) {
        return None;
    }
    *slot = if times > 1 { Some((n, times - 1)) } else { None };
    (times > 0).then_some(n)
}

/// Answer a blob GET/HEAD for `data`, applying Range and the body knobs.
pub(crate) fn serve_blob(
    shared: &Shared,
    digest: &Digest,
    data: Bytes,
    req_headers: &HeaderMap,
    head: bool,
    docker_digest: bool,
) -> Response<FakeBody> {
    let size = data.len() as u64;
    let knobs = body_knobs(&lock(&shared.knobs));
    if header_str(req_headers, &RANGE).is_some()
        && let Some(status) = lock(&shared.knobs).range_fail_next.pop_front()
    {
        let mut headers = vec![(CONTENT_LENGTH, "0".to_string())];
        if status == 416 {
            headers.push((CONTENT_RANGE, format!("bytes */{size}")));
        }
        return respond(status, &headers, FakeBody::empty());
    }
    let range = if knobs.ignore_range {
        None
    } else {
        header_str(req_headers, &RANGE).and_then(parse_range)
    };
    let mut headers: Vec<(HeaderName, String)> = vec![
        (CONTENT_TYPE, "application/octet-stream".to_string()),
        (ACCEPT_RANGES, "bytes".to_string()),
    ];
    if docker_digest {
        headers.push((
            HeaderName::from_static("docker-content-digest"),
            digest.to_string(),
        ));
    }
    if let Some(encoding) = knobs.content_encoding {
        headers.push((CONTENT_ENCODING, encoding));
    }
    let (status, start, end) = match range {
        Some((start, _)) if start >= size => {
            headers.push((CONTENT_RANGE, format!("bytes */{size}")));
            headers.push((CONTENT_LENGTH, "0".to_string()));
            return respond(416, &headers, FakeBody::empty());
        }
        Some((start, end)) => {
            let end = end.unwrap_or(size - 1).min(size - 1);
            let shown = match (knobs.wrong_content_range, start) {
                (false, s) => s,
                (true, 0) => 1,
                (true, _) => 0,
            };
            if !knobs.omit_content_range {
                headers.push((CONTENT_RANGE, format!("bytes {shown}-{end}/{size}")));
            }
            (206, start, end + 1)
        }
        None => (200, 0, size),
    };
    let mut parts = Vec::new();
    let flip = (knobs.corrupt_blob.as_ref() == Some(digest) && size > 0).then_some(size / 2);
    match flip {
        Some(p) if (start..end).contains(&p) => {
            parts.push(data.slice(start as usize..p as usize));
            parts.push(Bytes::from(vec![data[p as usize] ^ 0xff]));
            parts.push(data.slice(p as usize + 1..end as usize));
        }
        _ => parts.push(data.slice(start as usize..end as usize)),
    }
    if knobs.extra_bytes > 0 {
        let mut garbage = vec![0u8; usize::try_from(knobs.extra_bytes).unwrap_or(0)];
        rand::fill(&mut garbage[..]);
        parts.push(Bytes::from(garbage));
    }
    let total: u64 = parts.iter().map(|p| p.len() as u64).sum();
    let shaping = if head {
        Shaping::default()
    } else {
        let mut k = lock(&shared.knobs);
        let trickle = take_once(&mut k.trickle, None);
        Shaping {
            rate: trickle.or(knobs.rate_limit),
            cut_at: take_cut(&mut k, total),
            stall_at: take_once(&mut k.stall_after, Some(total)),
            end_at: take_once(&mut k.short_body, Some(total)),
        }
    };
    // A clean early end is only well-formed HTTP without a Content-Length.
    let chunked = knobs.chunked || shaping.end_at.is_some();
    if !chunked {
        headers.push((CONTENT_LENGTH, total.to_string()));
    }
    if head {
        return respond(status, &headers, FakeBody::empty());
    }
    let body = FakeBody::streamed(parts, shaping);
    respond(status, &headers, if chunked { body.chunked() } else { body })
}

/// The knobs `serve_blob` reads, copied out so the lock is held briefly.
struct BodyKnobs {
    ignore_range: bool,
    extra_bytes: u64,
    corrupt_blob: Option<Digest>,
    rate_limit: Option<u64>,
    wrong_content_range: bool,
    content_encoding: Option<String>,
    omit_content_range: bool,
    chunked: bool,
}

fn body_knobs(k: &Knobs) -> BodyKnobs {
    BodyKnobs {
        ignore_range: k.ignore_range,
        extra_bytes: k.extra_bytes,
        corrupt_blob: k.corrupt_blob,
        rate_limit: k.rate_limit,
        wrong_content_range: k.wrong_content_range,
        content_encoding: k.content_encoding.clone(),
        omit_content_range: k.omit_content_range,
        chunked: k.chunked,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=10-"), Some((10, None)));
        assert_eq!(parse_range("bytes=0-9"), Some((0, Some(9))));
        assert_eq!(parse_range("bytes=9-0"), None);
        assert_eq!(parse_range("bytes=-5"), None);
        assert_eq!(parse_range("bytes=1-2,4-5"), None);
        assert_eq!(parse_range("items=1-"), None);
        assert_eq!(parse_range("bytes=x-"), None);
    }

    #[test]
    fn cut_counts_down() {
        let mut k = Knobs {
            cut_after: Some((5, 2)),
            ..Knobs::default()
        };
        assert_eq!(
            take_cut(&mut k, 3),
            None,
            "a short body is not cut and keeps the knob"
        );
        assert_eq!(take_cut(&mut k, 10), Some(5));
        assert_eq!(take_cut(&mut k, 10), Some(5));
        assert_eq!(take_cut(&mut k, 10), None);
        k.cut_after = Some((5, 0));
        assert_eq!(take_cut(&mut k, 10), None);
        assert!(k.cut_after.is_none());
    }

    #[test]
    fn one_shot_knobs_without_a_size_count_down() {
        let mut slot = Some((2_000, 2));
        assert_eq!(take_once(&mut slot, None), Some(2_000));
        assert_eq!(take_once(&mut slot, None), Some(2_000));
        assert_eq!(take_once(&mut slot, None), None);
        let mut slot = Some((100, 1));
        assert_eq!(take_once(&mut slot, Some(100)), None, "not shorter than the body");
        assert_eq!(take_once(&mut slot, Some(101)), Some(100));
        assert_eq!(slot, None);
    }
}
