//! The login server: `/v2/`, manifests, blob redirects to signed data-endpoint links, and
//! the token realm at `/oauth2/token`.

use std::time::Instant;

use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, LOCATION};
use hyper::{Method, Request, Response};

use super::body::FakeBody;
use super::data;
use super::state::{AUTH_HOST, AuthMode, LOGIN_HOST, RawManifest, Shared, lock};
use super::token;
use super::wire::{basic_credentials, error, error_with, json, respond, scheme_value};
use edgepull_core::oci::Digest;

const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
const WWW_AUTHENTICATE: HeaderName = HeaderName::from_static("www-authenticate");
const RETRY_AFTER: HeaderName = HeaderName::from_static("retry-after");

enum Kind {
    Manifest,
    Blob,
}

pub(crate) async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<FakeBody> {
    let mut resp = route(shared, req).await;
    resp.headers_mut().insert(
        HeaderName::from_static("docker-distribution-api-version"),
        HeaderValue::from_static("registry/2.0"),
    );
    resp
}

async fn route(shared: &Shared, req: Request<Incoming>) -> Response<FakeBody> {
    let path = req.uri().path().to_string();
    if path == "/oauth2/token" {
        return token::handle(shared, req).await;
    }
    let method = req.method().clone();
    let get_or_head = method == Method::GET || method == Method::HEAD;
    if path == "/v2/" || path == "/v2" {
        if !get_or_head {
            return error(405, "UNSUPPORTED", "method not allowed");
        }
        if let Some(challenge) = auth_rejection(shared, req.headers(), None) {
            return challenge;
        }
        return json(200, "{}".to_string(), &[]);
    }
    let Some((repo, kind, reference)) = parse_route(&path) else {
        return error(404, "NOT_FOUND", "no such route");
    };
    if !valid_repo_name(repo) {
        return error(400, "NAME_INVALID", "invalid repository name");
    }
    if !get_or_head {
        return error(405, "UNSUPPORTED", "this fake registry is read-only");
    }
    if let Some(challenge) = auth_rejection(shared, req.headers(), Some(repo)) {
        return challenge;
    }
    if take_invalid_token(shared) {
        if let Some(token) = scheme_value(req.headers(), "Bearer") {
            lock(&shared.tokens).remove(token);
        }
        return bearer_challenge(shared, Some(repo), Some("invalid_token"));
    }
    let head = method == Method::HEAD;
    match kind {
        Kind::Manifest => manifest(shared, head, repo, reference),
        Kind::Blob => blob(shared, req.headers(), head, repo, reference),
    }
}

/// `/v2/<name>/(manifests|blobs)/<reference>`.
fn parse_route(path: &str) -> Option<(&str, Kind, &str)> {
    let rest = path.strip_prefix("/v2/")?;
    let (left, reference) = rest.rsplit_once('/')?;
    let (repo, kind) = left.rsplit_once('/')?;
    let kind = match kind {
        "manifests" => Kind::Manifest,
        "blobs" => Kind::Blob,
        _ => return None,
    };
    Some((repo, kind, reference))
}

/// The distribution-spec name grammar: components of `[a-z0-9]+` joined by `.`, `_`,
/// `__` or runs of `-`, separated by `/`.
pub(crate) fn valid_repo_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && name.split('/').all(valid_component)
}

fn valid_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = c.as_bytes();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// `None` when the request for `repo` (or for `/v2/` with `None`) is authorized, else the 401.
fn auth_rejection(shared: &Shared, headers: &HeaderMap, repo: Option<&str>) -> Option<Response<FakeBody>> {
    if let AuthMode::Basic { user, pass } = &shared.auth {
        return match basic_credentials(headers) {
            Some((u, p)) if u == *user && p == *pass => None,
            _ => Some(error_with(
                401,
                "UNAUTHORIZED",
                "authentication required",
                &[(
                    WWW_AUTHENTICATE,
                    r#"Basic realm="Azure Container Registry""#.to_string(),
                )],
            )),
        };
    }
    let Some(token) = scheme_value(headers, "Bearer") else {
        return Some(bearer_challenge(shared, repo, None));
    };
    let problem = match lock(&shared.tokens).get(token) {
        Some(grant) if grant.expires > Instant::now() => match repo {
            Some(r) if !grant.repos.contains(r) => Some("insufficient_scope"),
            _ => None,
        },
        _ => Some("invalid_token"),
    };
    problem.map(|p| bearer_challenge(shared, repo, Some(p)))
}

fn bearer_challenge(shared: &Shared, repo: Option<&str>, err: Option<&str>) -> Response<FakeBody> {
    let realm = {
        let knobs = lock(&shared.knobs);
        match (&knobs.realm_override, knobs.realm_on_auth_host) {
            (Some(realm), _) => realm.clone(),
            (None, true) => format!("https://{AUTH_HOST}:{}/oauth2/token", shared.ports.auth),
            (None, false) => format!("https://{LOGIN_HOST}:{}/oauth2/token", shared.ports.login),
        }
    };
    let mut challenge = format!(r#"Bearer realm="{realm}",service="{LOGIN_HOST}""#);
    if let Some(repo) = repo {
        challenge.push_str(&format!(r#",scope="repository:{repo}:pull""#));
    }
    if let Some(err) = err {
        challenge.push_str(&format!(r#",error="{err}""#));
    }
    error_with(
        401,
        "UNAUTHORIZED",
        "authentication required",
        &[(WWW_AUTHENTICATE, challenge)],
    )
}

/// Count down `invalid_token_after`; true (once) when it runs out.
fn take_invalid_token(shared: &Shared) -> bool {
    let mut knobs = lock(&shared.knobs);
    match knobs.invalid_token_after {
        Some(0) => {
            knobs.invalid_token_after = None;
            true
        }
        Some(n) => {
            knobs.invalid_token_after = Some(n - 1);
            false
        }
        None => false,
    }
}

/// The next queued failure, if any.
fn take_failure(shared: &Shared) -> Option<Response<FakeBody>> {
    let (status, retry_after, message) = {
        let mut knobs = lock(&shared.knobs);
        let (status, retry_after) = knobs.fail_next.pop_front()?;
        (status, retry_after, knobs.fail_message.clone())
    };
    let code = match status {
        429 => "TOOMANYREQUESTS",
        401 => "UNAUTHORIZED",
        403 => "DENIED",
        404 => "NAME_UNKNOWN",
        _ => "UNKNOWN",
    };
    let extra: Vec<_> = retry_after.into_iter().map(|v| (RETRY_AFTER, v)).collect();
    let message = message.as_deref().unwrap_or("injected failure (fail_next)");
    Some(error_with(status, code, message, &extra))
}

fn manifest(shared: &Shared, head: bool, repo: &str, reference: &str) -> Response<FakeBody> {
    if Digest::parse(reference).is_err() && !valid_tag(reference) {
        return error(400, "MANIFEST_INVALID", "invalid tag or digest");
    }
    if head && lock(&shared.knobs).head_manifest_405 {
        return error(405, "UNSUPPORTED", "HEAD is not supported on manifests here");
    }
    if let Some(failure) = take_failure(shared) {
        return failure;
    }
    let overridden = lock(&shared.knobs)
        .manifest_override
        .get(&(repo.to_string(), reference.to_string()))
        .cloned();
    let found = match overridden {
        Some(raw) => Some((Digest::of(&raw.body), raw)),
        None => lock(&shared.content).manifest(repo, reference),
    };
    let Some((digest, RawManifest { body, content_type })) = found else {
        return error(404, "MANIFEST_UNKNOWN", "manifest unknown");
    };
    let (digest_header, chunked) = {
        let k = lock(&shared.knobs);
        (k.docker_content_digest_override.clone(), k.chunked)
    };
    let mut headers = vec![
        (CONTENT_TYPE, content_type),
        (
            DOCKER_CONTENT_DIGEST,
            digest_header.unwrap_or_else(|| digest.to_string()),
        ),
    ];
    if !chunked {
        headers.push((CONTENT_LENGTH, body.len().to_string()));
    }
    let body = match (head, chunked) {
        (true, _) => FakeBody::empty(),
        (false, false) => FakeBody::full(body),
        // Streamed in 64 KiB pieces, so a reader that stops early stops the sender too.
        (false, true) => FakeBody::streamed(vec![body], Default::default()).chunked(),
    };
    respond(200, &headers, body)
}

fn blob(shared: &Shared, headers: &HeaderMap, head: bool, repo: &str, reference: &str) -> Response<FakeBody> {
    let Ok(digest) = Digest::parse(reference) else {
        return error(400, "DIGEST_INVALID", "invalid digest");
    };
    if let Some(failure) = take_failure(shared) {
        return failure;
    }
    let Some(data) = lock(&shared.content).blob(repo, &digest) else {
        return error(404, "BLOB_UNKNOWN", "blob unknown to registry");
    };
    if head {
        let headers = [
            (CONTENT_TYPE, "application/octet-stream".to_string()),
            (CONTENT_LENGTH, data.len().to_string()),
            (DOCKER_CONTENT_DIGEST, digest.to_string()),
        ];
        return respond(200, &headers, FakeBody::empty());
    }
    let (direct, location_override, region, ttl) = {
        let k = lock(&shared.knobs);
        (
            k.blob_direct,
            k.redirect_location_override.clone(),
            k.redirect_region.clone(),
            k.link_ttl,
        )
    };
    if direct {
        return data::serve_blob(shared, &digest, data, headers, false, true);
    }
    let location = location_override.unwrap_or_else(|| shared.signed_link(&region, digest, ttl, 0));
    let headers = [(LOCATION, location), (DOCKER_CONTENT_DIGEST, digest.to_string())];
    respond(307, &headers, FakeBody::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_names() {
        for ok in [
            "app",
            "a/b",
            "my-app",
            "my--app",
            "a.b",
            "a_b",
            "a__b",
            "library/ubuntu2",
        ] {
            assert!(valid_repo_name(ok), "{ok}");
        }
        for bad in [
            "", "A", "a//b", "/a", "a/", "a..b", "a___b", "-a", "a-", "a%2fb", "a:b", "._a",
        ] {
            assert!(!valid_repo_name(bad), "{bad}");
        }
    }

    #[test]
    fn routes() {
        let (repo, kind, r) = parse_route("/v2/a/manifests/b/manifests/latest").unwrap();
        assert_eq!((repo, r), ("a/manifests/b", "latest"));
        assert!(matches!(kind, Kind::Manifest));
        assert!(parse_route("/v2/a/tags/list").is_none());
        assert!(parse_route("/v2/blobs/x").is_none());
        assert!(parse_route("/v3/a/blobs/x").is_none());
    }
}
