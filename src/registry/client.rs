//! `RegistryClient`: authenticated requests to the login server, manifests, and blob
//! responses taken only from the allowed data endpoint.
//!
//! Owns: the single send path (every URL is checked against the egress policy before a
//! request is built), the 401 → token → one retry dance, manifest fetching with its size
//! cap and digest checks, and the hand-followed blob redirect chain. Must never send
//! `Authorization` to anything but the login server, never follow a redirect the policy
//! refuses, and never log a signed URL's query string.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, Response, StatusCode};

use super::auth::{AuthError, Authenticator, Credentials, pull_scope};
use edgepull_core::challenge::{parse_challenges, preferred};
use edgepull_core::egress::{BlobStep, EgressPolicy, PolicyError, redact_url};
use edgepull_core::hostport::HostPort;
use edgepull_core::oci::manifest::{ACCEPT, MAX_MANIFEST_BYTES, ManifestError};
use edgepull_core::oci::{Descriptor, Digest};
use edgepull_core::retry::{Failure, parse_retry_after};

/// Largest error body read (1 MiB).
pub const MAX_ERROR_BYTES: u64 = 1024 * 1024;

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The egress policy refused a host, redirect or realm.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// Authentication failed.
    #[error("authentication at {host} failed")]
    Auth {
        host: HostPort,
        #[source]
        source: AuthError,
    },
    /// Connecting or reading failed.
    #[error("{what}: request to {host} failed ({kind})")]
    Transport {
        what: String,
        host: HostPort,
        kind: &'static str,
        #[source]
        source: reqwest::Error,
    },
    /// An HTTP status the operation cannot use.
    #[error("{what}: {host} answered {status}{detail}")]
    Status {
        what: String,
        host: HostPort,
        status: u16,
        retry_after: Option<Duration>,
        detail: String,
    },
    /// The manifest or blob does not exist.
    #[error("{what}: not found at {host}{detail}; check the repository name and tag")]
    NotFound {
        what: String,
        host: HostPort,
        detail: String,
    },
    /// A manifest document was refused.
    #[error("manifest {what} from {host} refused")]
    Manifest {
        what: String,
        host: HostPort,
        #[source]
        source: ManifestError,
    },
    /// A manifest larger than the cap.
    #[error(
        "manifest {what} from {host} is larger than {MAX_MANIFEST_BYTES} bytes ({size} bytes); refusing it"
    )]
    ManifestTooLarge { what: String, host: HostPort, size: u64 },
    /// Content did not match its digest.
    #[error("{what}: content digest is {actual} but {expected} was expected ({source_of_expectation})")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
        source_of_expectation: &'static str,
    },
    /// A header carried a malformed value.
    #[error("{what}: {host} sent a malformed {header} header: {value:?}")]
    BadHeader {
        what: String,
        host: HostPort,
        header: &'static str,
        value: String,
    },
    /// The blob response is encoded; digests and offsets need the raw bytes.
    #[error(
        "{what}: {host} sent Content-Encoding {encoding:?}; edgepull needs the raw bytes (digests and Range offsets cover them)"
    )]
    ContentEncoding {
        what: String,
        host: HostPort,
        encoding: String,
    },
}

impl RegistryError {
    /// The retry planner's view of this failure.
    pub fn failure(&self) -> Failure {
        match self {
            RegistryError::Transport { source, .. } => classify_transport(source),
            RegistryError::Status {
                status, retry_after, ..
            } => Failure::Status {
                code: *status,
                retry_after: *retry_after,
            },
            RegistryError::Auth { source, .. } if source.is_transient() => Failure::Connect,
            RegistryError::DigestMismatch { .. } => Failure::Integrity,
            _ => Failure::Fatal,
        }
    }

    /// The exit-code category.
    pub fn category(&self) -> crate::exit::Category {
        use crate::exit::Category;
        match self {
            RegistryError::Policy(_) => Category::Policy,
            RegistryError::Auth { source, .. } if source.is_transient() => Category::Transient,
            RegistryError::Auth {
                source: AuthError::Realm(_),
                ..
            } => Category::Policy,
            RegistryError::Auth { .. } => Category::Auth,
            RegistryError::Transport { .. } => Category::Transient,
            RegistryError::Status { status, .. } if *status >= 500 || *status == 429 || *status == 408 => {
                Category::Transient
            }
            RegistryError::Status { .. } | RegistryError::NotFound { .. } => Category::Registry,
            RegistryError::Manifest { .. }
            | RegistryError::ManifestTooLarge { .. }
            | RegistryError::DigestMismatch { .. } => Category::Integrity,
            RegistryError::BadHeader { .. } | RegistryError::ContentEncoding { .. } => Category::Registry,
        }
    }
}

/// A transport error as the retry planner sees it.
pub fn classify_transport(e: &reqwest::Error) -> Failure {
    if e.is_connect() {
        Failure::Connect
    } else if e.is_timeout() {
        Failure::Stall
    } else {
        Failure::Reset
    }
}

fn transport_kind(e: &reqwest::Error) -> &'static str {
    match classify_transport(e) {
        Failure::Connect => "connect",
        Failure::Stall => "idle timeout",
        _ => "connection lost",
    }
}

/// Failure of [`read_limited`].
#[derive(Debug)]
pub enum LimitedReadError {
    /// The body was larger than allowed.
    TooLarge { size: u64 },
    /// Reading failed.
    Transport(reqwest::Error),
}

/// Read a whole body, refusing more than `limit` bytes (checked on `Content-Length` first,
/// then while reading).
pub async fn read_limited(resp: Response, limit: u64) -> Result<Vec<u8>, LimitedReadError> {
    if let Some(len) = resp.content_length()
        && len > limit
    {
        return Err(LimitedReadError::TooLarge { size: len });
    }
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| LimitedReadError::Transport(e.without_url()))?;
        if out.len() as u64 + chunk.len() as u64 > limit {
            return Err(LimitedReadError::TooLarge {
                size: out.len() as u64 + chunk.len() as u64,
            });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// A short, safe summary of a registry error body (`{"errors":[{"code","message"}]}`).
pub fn error_summary(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Envelope {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        code: Option<String>,
        message: Option<String>,
    }
    match serde_json::from_slice::<Envelope>(body) {
        Ok(env) if !env.errors.is_empty() => {
            let parts: Vec<String> = env
                .errors
                .iter()
                .take(3)
                .map(|e| {
                    let code = e
                        .code
                        .clone()
                        .filter(|c| !c.is_empty())
                        .unwrap_or_else(|| "UNKNOWN".into());
                    match &e.message {
                        Some(m) if !m.is_empty() => {
                            format!("{code}: {}", m.chars().take(200).collect::<String>())
                        }
                        _ => code,
                    }
                })
                .collect();
            format!(" ({})", parts.join("; "))
        }
        _ => String::new(),
    }
}

/// A manifest as fetched: the exact bytes and what the registry said about them.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// The exact body bytes (digests cover these).
    pub bytes: Vec<u8>,
    /// `Content-Type` without parameters.
    pub media_type: String,
    /// sha256 of `bytes`, checked against the request or `Docker-Content-Digest`.
    pub digest: Digest,
}

impl FetchedManifest {
    /// A descriptor for this manifest.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(&self.media_type, self.digest, self.bytes.len() as u64)
    }
}

/// What a manifest HEAD found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestHead {
    /// The digest the tag points at.
    pub digest: Digest,
    /// Its media type, when given.
    pub media_type: Option<String>,
    /// True when the registry refused HEAD (405) and a GET was used.
    pub via_get: bool,
}

/// A blob response ready to stream, from an allowed host.
pub struct BlobResponse {
    /// 200 or 206 (or 416, passed through for the resume logic).
    pub status: u16,
    /// The host that is sending the bytes.
    pub from: HostPort,
    /// `Content-Range`, if any.
    pub content_range: Option<String>,
    /// `Content-Length`, if any.
    pub content_length: Option<u64>,
    /// The response, body unread.
    pub response: Response,
}

/// A client for one registry (login server) under one egress policy.
pub struct RegistryClient {
    http: reqwest::Client,
    policy: Arc<EgressPolicy>,
    login: HostPort,
    auth: Authenticator,
}

impl RegistryClient {
    /// A client for `policy`'s login server.
    pub fn new(http: reqwest::Client, policy: Arc<EgressPolicy>, creds: Credentials) -> Self {
        let login = policy.login().clone();
        Self {
            http,
            auth: Authenticator::new(login.clone(), creds),
            policy,
            login,
        }
    }

    /// The login server.
    pub fn login(&self) -> &HostPort {
        &self.login
    }

    /// The egress policy.
    pub fn policy(&self) -> &EgressPolicy {
        &self.policy
    }

    fn url(&self, path: &str) -> url::Url {
        // The login server is a validated HostPort and `path` is built from validated parts.
        url::Url::parse(&format!("{}{path}", self.login.https_base())).expect("validated login URL")
    }

    /// Send one request. The URL's host must be allowed; `authorization` is attached only
    /// when the host may receive credentials.
    async fn send(
        &self,
        what: &str,
        method: Method,
        url: url::Url,
        headers: HeaderMap,
        authorization: Option<HeaderValue>,
    ) -> Result<Response, RegistryError> {
        let host = HostPort::from_url(&url).ok_or_else(|| PolicyError::NoHost {
            url: redact_url(&url),
        })?;
        if !self.policy.may_connect(&host) {
            return Err(PolicyError::HostNotAllowed {
                host,
                allowed: self.policy.allowlist(),
            }
            .into());
        }
        let mut req = self.http.request(method, url).headers(headers);
        if let Some(a) = authorization {
            if !self.policy.may_send_credentials(&host) {
                return Err(PolicyError::CredentialsRefused { host }.into());
            }
            req = req.header(header::AUTHORIZATION, a);
        }
        // `without_url`: a signed data-endpoint URL must never reach an error message or log.
        req.send().await.map_err(|source| RegistryError::Transport {
            what: what.to_string(),
            host: host.clone(),
            kind: transport_kind(&source),
            source: source.without_url(),
        })
    }

    /// Send to the login server with authentication: on 401, answer the challenge once and
    /// retry; a second 401 is an auth error.
    async fn send_authed(
        &self,
        what: &str,
        method: Method,
        path: &str,
        scope: &str,
        headers: HeaderMap,
    ) -> Result<Response, RegistryError> {
        let url = self.url(path);
        let mut answered = false;
        loop {
            if !answered {
                self.auth.refresh_if_due(&self.http, &self.policy, scope).await;
            }
            let authz = self.auth.header_for(scope);
            let had_auth = authz.is_some();
            let resp = self
                .send(what, method.clone(), url.clone(), headers.clone(), authz)
                .await?;
            if resp.status() != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            let values: Vec<String> = resp
                .headers()
                .get_all(header::WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok().map(str::to_string))
                .collect();
            let challenges = parse_challenges(values.iter().map(String::as_str));
            let body = read_limited(resp, MAX_ERROR_BYTES).await.unwrap_or_default();
            let detail = error_summary(&body);
            if answered {
                return Err(RegistryError::Auth {
                    host: self.login.clone(),
                    source: AuthError::Rejected {
                        host: self.login.clone(),
                        what: what.to_string(),
                        detail,
                    },
                });
            }
            let Some(challenge) = preferred(&challenges) else {
                return Err(RegistryError::Auth {
                    host: self.login.clone(),
                    source: AuthError::Rejected {
                        host: self.login.clone(),
                        what: what.to_string(),
                        detail: format!("{detail} (401 without a usable WWW-Authenticate challenge)"),
                    },
                });
            };
            if had_auth {
                tracing::debug!(host = %self.login, error = ?challenge.error(), "credentials refused, re-authenticating once");
                self.auth.invalidate(scope);
            }
            self.auth
                .respond(&self.http, &self.policy, challenge, scope)
                .await
                .map_err(|source| RegistryError::Auth {
                    host: self.login.clone(),
                    source,
                })?;
            answered = true;
        }
    }

    async fn status_error(&self, what: &str, host: HostPort, resp: Response) -> RegistryError {
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let body = read_limited(resp, MAX_ERROR_BYTES).await.unwrap_or_default();
        let detail = error_summary(&body);
        if status == 404 {
            RegistryError::NotFound {
                what: what.to_string(),
                host,
                detail,
            }
        } else {
            RegistryError::Status {
                what: what.to_string(),
                host,
                status,
                retry_after,
                detail,
            }
        }
    }

    /// GET a manifest by tag or digest. Checks: size cap, digest against `expected` (when
    /// pulling by digest) or against `Docker-Content-Digest` (when by tag).
    pub async fn get_manifest(
        &self,
        repository: &str,
        reference: &str,
        expected: Option<&Digest>,
    ) -> Result<FetchedManifest, RegistryError> {
        let what = format!("{repository}:{reference}");
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static(ACCEPT));
        headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        let path = format!("/v2/{repository}/manifests/{reference}");
        let resp = self
            .send_authed(&what, Method::GET, &path, &pull_scope(repository), headers)
            .await?;
        if resp.status() != StatusCode::OK {
            return Err(self.status_error(&what, self.login.clone(), resp).await);
        }
        let media_type = header_str(resp.headers(), header::CONTENT_TYPE)
            .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
            .unwrap_or_default();
        let header_digest = match header_str(resp.headers(), "docker-content-digest") {
            Some(v) => Some(Digest::parse(v.trim()).map_err(|_| RegistryError::BadHeader {
                what: what.clone(),
                host: self.login.clone(),
                header: "Docker-Content-Digest",
                value: v.chars().take(100).collect(),
            })?),
            None => None,
        };
        let bytes = read_limited(resp, MAX_MANIFEST_BYTES)
            .await
            .map_err(|e| match e {
                LimitedReadError::TooLarge { size } => RegistryError::ManifestTooLarge {
                    what: what.clone(),
                    host: self.login.clone(),
                    size,
                },
                LimitedReadError::Transport(source) => RegistryError::Transport {
                    what: what.clone(),
                    host: self.login.clone(),
                    kind: transport_kind(&source),
                    source,
                },
            })?;
        let digest = Digest::of(&bytes);
        match (expected, header_digest) {
            (Some(exp), _) if *exp != digest => {
                return Err(RegistryError::DigestMismatch {
                    what,
                    expected: *exp,
                    actual: digest,
                    source_of_expectation: "the requested digest",
                });
            }
            (None, Some(h)) if h != digest => {
                return Err(RegistryError::DigestMismatch {
                    what,
                    expected: h,
                    actual: digest,
                    source_of_expectation: "the Docker-Content-Digest header",
                });
            }
            _ => {}
        }
        Ok(FetchedManifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// HEAD a manifest to learn its digest (one request per poll); falls back to GET when the
    /// registry answers 405 or omits `Docker-Content-Digest`.
    pub async fn head_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<ManifestHead, RegistryError> {
        let what = format!("{repository}:{reference}");
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static(ACCEPT));
        let path = format!("/v2/{repository}/manifests/{reference}");
        let resp = self
            .send_authed(&what, Method::HEAD, &path, &pull_scope(repository), headers)
            .await?;
        let status = resp.status();
        if status == StatusCode::OK {
            let media_type = header_str(resp.headers(), header::CONTENT_TYPE)
                .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
            if let Some(v) = header_str(resp.headers(), "docker-content-digest")
                && let Ok(digest) = Digest::parse(v.trim())
            {
                return Ok(ManifestHead {
                    digest,
                    media_type,
                    via_get: false,
                });
            }
        } else if status != StatusCode::METHOD_NOT_ALLOWED {
            return Err(self.status_error(&what, self.login.clone(), resp).await);
        }
        let m = self.get_manifest(repository, reference, None).await?;
        Ok(ManifestHead {
            digest: m.digest,
            media_type: Some(m.media_type),
            via_get: true,
        })
    }

    /// Open a blob at `offset`: always starts at the login server (so a fresh signed link is
    /// obtained on every (re)open), follows only redirects the policy allows, and sends the
    /// data endpoint no credentials. Returns the response to stream.
    pub async fn open_blob(
        &self,
        repository: &str,
        desc: &Descriptor,
        offset: u64,
    ) -> Result<BlobResponse, RegistryError> {
        let what = format!("blob {}", desc.digest);
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        if offset > 0 {
            let range = HeaderValue::from_str(&format!("bytes={offset}-")).expect("ascii range header");
            headers.insert(header::RANGE, range);
        }
        let path = format!("/v2/{repository}/blobs/{}", desc.digest);
        let mut resp = self
            .send_authed(
                &what,
                Method::GET,
                &path,
                &pull_scope(repository),
                headers.clone(),
            )
            .await?;
        let mut from = self.login.clone();
        let mut base = self.url(&path);
        let mut hop = 0u8;
        loop {
            let status = resp.status().as_u16();
            let location = header_str(resp.headers(), header::LOCATION).map(str::to_string);
            match self
                .policy
                .blob_response(&from, status, location.as_deref(), &base, hop)
            {
                BlobStep::Follow(next) => {
                    hop += 1;
                    drop(resp);
                    let next_host = HostPort::from_url(&next).ok_or_else(|| PolicyError::NoHost {
                        url: redact_url(&next),
                    })?;
                    tracing::debug!(digest = %desc.digest, to = %redact_url(&next), "following blob redirect");
                    // No Authorization, no cookies, no Referer: only Range, Accept-Encoding, User-Agent.
                    resp = self
                        .send(&what, Method::GET, next.clone(), headers.clone(), None)
                        .await?;
                    from = next_host;
                    base = next;
                }
                BlobStep::Refuse(e) => return Err(e.into()),
                BlobStep::Body => {
                    if let Some(enc) = header_str(resp.headers(), header::CONTENT_ENCODING)
                        && !enc.trim().eq_ignore_ascii_case("identity")
                    {
                        return Err(RegistryError::ContentEncoding {
                            what,
                            host: from,
                            encoding: enc.to_string(),
                        });
                    }
                    let content_range = header_str(resp.headers(), header::CONTENT_RANGE).map(str::to_string);
                    let content_length = resp.content_length();
                    return Ok(BlobResponse {
                        status,
                        from,
                        content_range,
                        content_length,
                        response: resp,
                    });
                }
                BlobStep::NotRedirect => {
                    if status == 416 {
                        let content_range =
                            header_str(resp.headers(), header::CONTENT_RANGE).map(str::to_string);
                        return Ok(BlobResponse {
                            status,
                            from,
                            content_range,
                            content_length: None,
                            response: resp,
                        });
                    }
                    return Err(self.status_error(&what, from, resp).await);
                }
            }
        }
    }
}

fn header_str(h: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_summary_is_bounded_and_safe() {
        let body = br#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"},{"code":""}]}"#;
        assert_eq!(
            error_summary(body),
            " (DENIED: requested access to the resource is denied; UNKNOWN)"
        );
        assert_eq!(error_summary(b"<html>"), "");
    }
}
