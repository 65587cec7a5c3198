//! The one send path under every registry request, and bounded body reads.
//!
//! Owns: the `reqwest::Client` at run time (built by [`super::http::build_client`]) with the
//! [`EgressPolicy`] it serves; [`Transport::send`], the only place a request leaves edgepull:
//! every request — manifests, blobs, each redirect hop, token realm requests — goes through
//! the client's connector gate ([`super::connector`], which checks scheme, host *and* port of
//! every connection it would open; a refusal comes back as [`TransportError::Policy`]), and
//! it attaches an `Authorization` value only where [`EgressPolicy::may_send_credentials`]
//! allows; bounded whole-body reads ([`read_limited`]), the short summary of a registry error
//! body ([`error_summary`]), and how a transport failure is classified for retries.
//!
//! Must never: follow a redirect (the client is built without), reach a host:port the
//! policy refuses, or let a URL (a signed query string) into an error or a log.

use std::sync::Arc;

use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, Response};

use super::connector::{self, DialRefused};
use edgepull_core::egress::{EgressPolicy, PolicyError, redact_url};
use edgepull_core::hostport::HostPort;
use edgepull_core::retry::Failure;
use edgepull_core::text::{MESSAGE, SHORT, sanitize};

/// Largest error body read (1 MiB).
pub(crate) const MAX_ERROR_BYTES: u64 = 1024 * 1024;

/// Why a request or a body read failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TransportError {
    /// The egress policy refused the host (at the connector) or credentials for it.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// Connecting, sending or reading failed.
    #[error("request to {host} failed ({})", transport_kind(source))]
    Network {
        host: HostPort,
        #[source]
        source: reqwest::Error,
    },
    /// A body read whole was larger than allowed.
    #[error("{host} sent a body of {size} bytes, over the {limit}-byte limit")]
    TooLarge { host: HostPort, size: u64, limit: u64 },
}

/// One request to send: method, URL, headers, and what may only travel to some hosts.
pub(crate) struct Request {
    method: Method,
    url: url::Url,
    headers: HeaderMap,
    authorization: Option<HeaderValue>,
    form: Option<String>,
}

impl Request {
    /// `method url`, no headers.
    pub(crate) fn new(method: Method, url: url::Url) -> Self {
        Self {
            method,
            url,
            headers: HeaderMap::new(),
            authorization: None,
            form: None,
        }
    }

    /// Send these headers (never `Authorization`: see [`Request::authorization`]).
    pub(crate) fn headers(mut self, headers: HeaderMap) -> Self {
        self.headers = headers;
        self
    }

    /// Credentials, sent only if the policy lets this host have them.
    pub(crate) fn authorization(mut self, value: Option<HeaderValue>) -> Self {
        self.authorization = value;
        self
    }

    /// An `application/x-www-form-urlencoded` body.
    pub(crate) fn form(mut self, body: String) -> Self {
        self.form = Some(body);
        self
    }
}

/// The HTTP client under one egress policy.
pub(crate) struct Transport {
    http: reqwest::Client,
    policy: Arc<EgressPolicy>,
}

impl Transport {
    /// `http` must have been built for `policy` ([`super::http::build_client`]).
    pub(crate) fn new(http: reqwest::Client, policy: Arc<EgressPolicy>) -> Self {
        Self { http, policy }
    }

    /// The egress policy.
    pub(crate) fn policy(&self) -> &EgressPolicy {
        &self.policy
    }

    /// Send one request. The connector gate refuses a host:port the policy does not allow
    /// (a [`TransportError::Policy`]); `Authorization` is attached only when that host may
    /// receive credentials (else the request is refused before it is sent).
    pub(crate) async fn send(&self, request: Request) -> Result<Response, TransportError> {
        let Request {
            method,
            url,
            headers,
            authorization,
            form,
        } = request;
        let host = HostPort::from_url(&url).ok_or_else(|| PolicyError::NoHost {
            url: redact_url(&url),
        })?;
        let mut req = self.http.request(method, url).headers(headers);
        if let Some(a) = authorization {
            if !self.policy.may_send_credentials(&host) {
                return Err(PolicyError::CredentialsRefused { host }.into());
            }
            req = req.header(header::AUTHORIZATION, a);
        }
        if let Some(body) = form {
            req = req
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(body);
        }
        req.send()
            .await
            .map_err(|source| match connector::refusal(&source) {
                Some(DialRefused::Policy(e)) => TransportError::Policy(e.clone()),
                Some(DialRefused::Unchecked) => PolicyError::DialUnchecked { host }.into(),
                // `without_url`: a signed data-endpoint URL must never reach an error or a log.
                None => TransportError::Network {
                    host,
                    source: source.without_url(),
                },
            })
    }
}

/// Read a whole body from `host`, refusing more than `limit` bytes (checked on
/// `Content-Length` first, then while reading).
pub(crate) async fn read_limited(
    mut resp: Response,
    host: &HostPort,
    limit: u64,
) -> Result<Vec<u8>, TransportError> {
    let too_large = |size| TransportError::TooLarge {
        host: host.clone(),
        size,
        limit,
    };
    if let Some(len) = resp.content_length()
        && len > limit
    {
        return Err(too_large(len));
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| TransportError::Network {
        host: host.clone(),
        source: e.without_url(),
    })? {
        let size = out.len() as u64 + chunk.len() as u64;
        if size > limit {
            return Err(too_large(size));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The summary of an error body from `host` ([`error_summary`]); empty when it cannot be
/// read within [`MAX_ERROR_BYTES`].
pub(crate) async fn error_detail(resp: Response, host: &HostPort) -> String {
    match read_limited(resp, host, MAX_ERROR_BYTES).await {
        Ok(body) => error_summary(&body),
        Err(_) => String::new(),
    }
}

/// A short, safe summary of a registry error body (`{"errors":[{"code","message"}]}`): at
/// most three entries, each code and message escaped and capped ([`sanitize`]), since they
/// reach a terminal, the journal and `status.json`.
pub(crate) fn error_summary(body: &[u8]) -> String {
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
                        .as_deref()
                        .filter(|c| !c.is_empty())
                        .map_or_else(|| "UNKNOWN".into(), |c| sanitize(c, SHORT));
                    match &e.message {
                        Some(m) if !m.is_empty() => format!("{code}: {}", sanitize(m, MESSAGE)),
                        _ => code,
                    }
                })
                .collect();
            format!(" ({})", parts.join("; "))
        }
        _ => String::new(),
    }
}

/// A transport error as the retry planner sees it.
pub(crate) fn classify_transport(e: &reqwest::Error) -> Failure {
    if e.is_connect() {
        Failure::Connect
    } else if e.is_timeout() {
        Failure::Stall
    } else {
        Failure::Reset
    }
}

/// A transport error in a few words, for messages.
pub(crate) fn transport_kind(e: &reqwest::Error) -> &'static str {
    match classify_transport(e) {
        Failure::Connect => "connect",
        Failure::Stall => "idle timeout",
        _ => "connection lost",
    }
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

    #[test]
    fn error_summary_escapes_registry_text() {
        let hostile = format!("\x1b[2J\r\0{}", "A".repeat(100 * 1024));
        let body = serde_json::json!({"errors": [{"code": hostile, "message": hostile}]}).to_string();
        let got = error_summary(body.as_bytes());
        assert!(got.starts_with(" (\\u{1b}[2J\\r\\u{0}AAA"), "{got}");
        assert!(!got.chars().any(char::is_control), "{got:?}");
        assert!(
            got.chars().count() <= SHORT + MESSAGE + 8,
            "{} chars",
            got.chars().count()
        );
    }
}
