//! `RegistryClient`: authenticated requests to the login server, manifests, and blob
//! responses taken only from the allowed data endpoint.
//!
//! Owns: the 401 → token → one retry dance, manifest fetching with its size cap and digest
//! checks, and the hand-followed blob redirect chain. Every request, each redirect hop
//! included, goes through the guarded `Transport::send`. Must never send
//! `Authorization` to anything but the login server, never follow a redirect the policy
//! refuses, and never log a signed URL's query string.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, Response, StatusCode};

use super::auth::{AuthError, Authenticator, Credentials, pull_scope};
use super::transport::{
    Request, Transport, TransportError, classify_transport, error_detail, read_limited, transport_kind,
};
use edgepull_core::challenge::{parse_challenges, preferred};
use edgepull_core::egress::{BlobStep, EgressPolicy, PolicyError, redact_url};
use edgepull_core::hostport::HostPort;
use edgepull_core::oci::manifest::{ACCEPT, MAX_MANIFEST_BYTES, ManifestError};
use edgepull_core::oci::{Descriptor, Digest};
use edgepull_core::retry::{Failure, is_transient_status, parse_retry_after};
use edgepull_core::text::{SHORT, sanitize};

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
    /// A data endpoint refused the signed link it was sent to (401/403): expired or revoked.
    #[error(
        "{what}: {host} refused the signed link with {status}{detail}; a fresh redirect from the login server is tried"
    )]
    LinkRejected {
        what: String,
        host: HostPort,
        status: u16,
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
    /// A failed request or body read for `what`. A body over its limit is a manifest over
    /// [`MAX_MANIFEST_BYTES`]: manifests are the only bodies this client reads whole.
    fn from_transport(what: &str, e: TransportError) -> Self {
        match e {
            TransportError::Policy(e) => RegistryError::Policy(e),
            TransportError::Network { host, source } => RegistryError::Transport {
                what: what.to_string(),
                host,
                kind: transport_kind(&source),
                source,
            },
            TransportError::TooLarge { host, size, .. } => RegistryError::ManifestTooLarge {
                what: what.to_string(),
                host,
                size,
            },
        }
    }

    /// The host that failed or answered, when the error names one host.
    pub(crate) fn host(&self) -> Option<&HostPort> {
        match self {
            RegistryError::Auth { host, .. }
            | RegistryError::Transport { host, .. }
            | RegistryError::Status { host, .. }
            | RegistryError::LinkRejected { host, .. }
            | RegistryError::NotFound { host, .. }
            | RegistryError::Manifest { host, .. }
            | RegistryError::ManifestTooLarge { host, .. }
            | RegistryError::BadHeader { host, .. }
            | RegistryError::ContentEncoding { host, .. } => Some(host),
            RegistryError::Policy(_) | RegistryError::DigestMismatch { .. } => None,
        }
    }

    /// The retry planner's view of this failure.
    pub(crate) fn failure(&self) -> Failure {
        match self {
            RegistryError::Transport { source, .. } => classify_transport(source),
            RegistryError::Status {
                status, retry_after, ..
            } => Failure::Status {
                code: *status,
                retry_after: *retry_after,
            },
            RegistryError::LinkRejected { .. } => Failure::LinkRejected,
            RegistryError::Auth { source, .. } if source.is_transient() => Failure::Connect,
            RegistryError::DigestMismatch { .. } => Failure::Integrity,
            _ => Failure::Fatal,
        }
    }

    /// The exit-code category.
    pub(crate) fn category(&self) -> crate::exit::Category {
        use crate::exit::Category;
        match self {
            RegistryError::Policy(_) => Category::Policy,
            RegistryError::Auth { source, .. } if source.is_transient() => Category::Transient,
            RegistryError::Auth {
                source: AuthError::Realm(_),
                ..
            } => Category::Policy,
            RegistryError::Auth { .. } => Category::Auth,
            RegistryError::Transport { .. } | RegistryError::LinkRejected { .. } => Category::Transient,
            RegistryError::Status { status, .. } if is_transient_status(*status) => Category::Transient,
            RegistryError::Status { .. } | RegistryError::NotFound { .. } => Category::Registry,
            RegistryError::Manifest { .. }
            | RegistryError::ManifestTooLarge { .. }
            | RegistryError::DigestMismatch { .. } => Category::Integrity,
            RegistryError::BadHeader { .. } | RegistryError::ContentEncoding { .. } => Category::Registry,
        }
    }
}

/// A manifest as fetched: the exact bytes and what the registry said about them.
#[derive(Debug, Clone)]
pub(crate) struct FetchedManifest {
    /// The exact body bytes (digests cover these).
    pub(crate) bytes: Vec<u8>,
    /// `Content-Type` without parameters.
    pub(crate) media_type: String,
    /// sha256 of `bytes`, checked against the request or `Docker-Content-Digest`.
    pub(crate) digest: Digest,
}

impl FetchedManifest {
    /// A descriptor for this manifest.
    pub(crate) fn descriptor(&self) -> Descriptor {
        Descriptor::new(&self.media_type, self.digest, self.bytes.len() as u64)
    }
}

/// What a manifest HEAD found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestHead {
    /// The digest the tag points at.
    pub digest: Digest,
    /// True when the registry refused HEAD (405) and a GET was used.
    pub via_get: bool,
}

/// A blob response ready to stream, from an allowed host.
pub(crate) struct BlobResponse {
    /// 200 or 206 (or 416, passed through for the resume logic).
    pub(crate) status: u16,
    /// The host that is sending the bytes.
    pub(crate) from: HostPort,
    /// `Content-Range`, if any.
    pub(crate) content_range: Option<String>,
    /// `Content-Length`, if any.
    pub(crate) content_length: Option<u64>,
    /// What is being fetched, for errors.
    what: String,
    /// The response, body unread.
    response: Response,
}

impl BlobResponse {
    /// The next piece of the body, `None` at its end. A failed read is a
    /// [`RegistryError::Transport`] from [`BlobResponse::from`].
    pub(crate) async fn chunk(&mut self) -> Result<Option<Bytes>, RegistryError> {
        self.response.chunk().await.map_err(|source| {
            let source = source.without_url();
            RegistryError::Transport {
                what: self.what.clone(),
                host: self.from.clone(),
                kind: transport_kind(&source),
                source,
            }
        })
    }
}

/// A client for one registry (login server) under one egress policy.
pub struct RegistryClient {
    transport: Transport,
    login: HostPort,
    auth: Authenticator,
}

impl RegistryClient {
    /// A client for `policy`'s login server; `http` must have been built for `policy`.
    pub(crate) fn new(http: reqwest::Client, policy: Arc<EgressPolicy>, creds: Credentials) -> Self {
        let login = policy.login().clone();
        Self {
            transport: Transport::new(http, policy),
            auth: Authenticator::new(login.clone(), creds),
            login,
        }
    }

    /// The login server.
    pub(crate) fn login(&self) -> &HostPort {
        &self.login
    }

    fn url(&self, path: &str) -> url::Url {
        // The login server is a validated HostPort and `path` is built from validated parts.
        url::Url::parse(&format!("{}{path}", self.login.https_base())).expect("validated login URL")
    }

    /// Send one request through the guarded transport.
    async fn send(&self, what: &str, request: Request) -> Result<Response, RegistryError> {
        self.transport
            .send(request)
            .await
            .map_err(|e| RegistryError::from_transport(what, e))
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
        let auth_err = |source| RegistryError::Auth {
            host: self.login.clone(),
            source,
        };
        let mut answered = false;
        loop {
            if !answered {
                self.auth.refresh_if_due(&self.transport, scope).await;
            }
            let authz = if answered {
                self.auth.header_after_challenge(scope)
            } else {
                self.auth.header_for(scope)
            };
            let had_auth = authz.is_some();
            let request = Request::new(method.clone(), url.clone())
                .headers(headers.clone())
                .authorization(authz);
            let resp = self.send(what, request).await?;
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
            let detail = error_detail(resp, &self.login).await;
            if answered {
                return Err(auth_err(AuthError::Rejected {
                    host: self.login.clone(),
                    what: what.to_string(),
                    detail,
                }));
            }
            let Some(challenge) = preferred(&challenges) else {
                return Err(auth_err(AuthError::NoChallenge {
                    host: self.login.clone(),
                    what: what.to_string(),
                    detail,
                }));
            };
            if had_auth {
                tracing::debug!(host = %self.login, error = ?challenge.error(), "credentials refused, re-authenticating once");
                self.auth.invalidate(scope);
            }
            self.auth
                .respond(&self.transport, challenge, scope)
                .await
                .map_err(auth_err)?;
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
        let detail = error_detail(resp, &host).await;
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
    pub(crate) async fn get_manifest(
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
                value: sanitize(v, SHORT),
            })?),
            None => None,
        };
        let bytes = read_limited(resp, &self.login, MAX_MANIFEST_BYTES)
            .await
            .map_err(|e| RegistryError::from_transport(&what, e))?;
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
            if let Some(v) = header_str(resp.headers(), "docker-content-digest")
                && let Ok(digest) = Digest::parse(v.trim())
            {
                return Ok(ManifestHead {
                    digest,
                    via_get: false,
                });
            }
        } else if status != StatusCode::METHOD_NOT_ALLOWED {
            return Err(self.status_error(&what, self.login.clone(), resp).await);
        }
        let m = self.get_manifest(repository, reference, None).await?;
        Ok(ManifestHead {
            digest: m.digest,
            via_get: true,
        })
    }

    /// GET a small blob whole (a signature payload): the same redirect rules as
    /// [`RegistryClient::open_blob`], at most `desc.size` bytes kept (the caller caps
    /// `desc.size`), and the bytes checked against `desc`'s digest and size.
    pub(crate) async fn get_small_blob(
        &self,
        repository: &str,
        desc: &Descriptor,
    ) -> Result<Vec<u8>, RegistryError> {
        let mut resp = self.open_blob(repository, desc, 0).await?;
        if resp.status != 200 {
            return Err(RegistryError::Status {
                what: resp.what.clone(),
                host: resp.from.clone(),
                status: resp.status,
                retry_after: None,
                detail: String::new(),
            });
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await? {
            bytes.extend_from_slice(&chunk);
            if bytes.len() as u64 > desc.size {
                break;
            }
        }
        let actual = Digest::of(&bytes);
        if bytes.len() as u64 != desc.size || actual != desc.digest {
            return Err(RegistryError::DigestMismatch {
                what: resp.what,
                expected: desc.digest,
                actual,
                source_of_expectation: "the manifest that lists it",
            });
        }
        Ok(bytes)
    }

    /// Open a blob at `offset`: always starts at the login server (so a fresh signed link is
    /// obtained on every (re)open), follows only redirects the policy allows, and sends the
    /// data endpoint no credentials. Returns the response to stream.
    pub(crate) async fn open_blob(
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
            // Read as UTF-8 (lossy), not as visible ASCII only: a raw Unicode host is judged
            // by what the URL parser makes of it (punycode), never taken for a missing header.
            let location = resp
                .headers()
                .get(header::LOCATION)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            match self
                .transport
                .policy()
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
                    let request = Request::new(Method::GET, next.clone()).headers(headers.clone());
                    resp = self.send(&what, request).await?;
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
                            encoding: sanitize(enc, SHORT),
                        });
                    }
                    let content_range = header_str(resp.headers(), header::CONTENT_RANGE).map(str::to_string);
                    let content_length = resp.content_length();
                    return Ok(BlobResponse {
                        status,
                        from,
                        content_range,
                        content_length,
                        what,
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
                            what,
                            response: resp,
                        });
                    }
                    if hop > 0 && matches!(status, 401 | 403) {
                        // The login server's redirect was followed and the data endpoint
                        // refused the link itself (Azure storage: "Signed expiry time has
                        // passed"): a retry starts again at the login server.
                        let detail = error_detail(resp, &from).await;
                        return Err(RegistryError::LinkRejected {
                            what,
                            host: from,
                            status,
                            detail,
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
