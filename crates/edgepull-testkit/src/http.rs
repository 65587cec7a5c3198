//! The TLS accept loop shared by all servers, request logging, and response helpers.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RANGE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::body::FakeBody;
use super::state::{LogEntry, RequestRecord, ServerName, Shared, lock};
use super::{data, login, token};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accept TCP connections forever, counting them, and serve HTTP/1.1 over TLS on each.
pub(crate) async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    server: ServerName,
) {
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(_) => {
                // Out of descriptors or similar: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        shared.count_connection(server);
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await else {
                return;
            };
            let service = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(&shared, server, req).await) }
            });
            // Errors here are client disconnects or deliberate cuts.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

/// Route one request to its server's handler and log it.
async fn handle(shared: &Shared, server: ServerName, req: Request<Incoming>) -> Response<FakeBody> {
    let method = req.method().to_string();
    let path = truncate(req.uri().path(), 1024);
    let query = req.uri().query().map(redact_query);
    let range = header_str(req.headers(), &RANGE).map(|r| truncate(r, 200));
    let auth_scheme = auth_scheme(req.headers());
    let resp = match server {
        ServerName::Login => login::handle(shared, req).await,
        ServerName::Auth => token::handle_auth_host(shared, req).await,
        ServerName::EastUs | ServerName::WestUs => data::handle(shared, server, req),
    };
    let record = RequestRecord {
        server,
        method,
        path,
        query,
        range,
        auth_scheme,
        status: resp.status().as_u16(),
        body_bytes_sent: 0,
        at: Instant::now(),
    };
    lock(&shared.log).push(LogEntry {
        record,
        sent: resp.body().counter(),
    });
    resp
}

/// A header as text, if present and visible ASCII.
pub(crate) fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The scheme of `Authorization`, never the credentials: a known scheme followed by
/// credentials is reported as sent, anything else as `<other>` (a bare word could be a secret).
fn auth_scheme(headers: &HeaderMap) -> Option<String> {
    const KNOWN: [&str; 5] = ["Basic", "Bearer", "Digest", "Negotiate", "NTLM"];
    let value = headers.get(AUTHORIZATION)?;
    let scheme = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().split_once(' '))
        .map(|(scheme, _)| scheme)
        .filter(|s| KNOWN.iter().any(|k| k.eq_ignore_ascii_case(s)));
    Some(scheme.unwrap_or("<other>").to_string())
}

/// Keep `service` and `scope`; replace every other value (signatures, secrets).
fn redact_query(query: &str) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if k == "service" || k == "scope" {
            out.append_pair(&k, &v);
        } else {
            out.append_pair(&k, "REDACTED");
        }
    }
    truncate(&out.finish(), 2048)
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// A response from parts; header values that are not valid HTTP give a 500 instead of a
/// panic (knobs may hold arbitrary strings).
pub(crate) fn respond(status: u16, headers: &[(HeaderName, String)], body: FakeBody) -> Response<FakeBody> {
    let mut resp = Response::new(body);
    let Ok(code) = StatusCode::from_u16(status) else {
        return internal("invalid status code in testkit knob");
    };
    *resp.status_mut() = code;
    for (name, value) in headers {
        let Ok(value) = HeaderValue::from_str(value) else {
            return internal("invalid header value in testkit knob");
        };
        resp.headers_mut().append(name.clone(), value);
    }
    resp
}

fn internal(message: &str) -> Response<FakeBody> {
    let mut resp = Response::new(FakeBody::full(Bytes::from(message.to_string())));
    *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    resp
}

/// A JSON body with its Content-Type and Content-Length.
pub(crate) fn json(status: u16, body: String, extra: &[(HeaderName, String)]) -> Response<FakeBody> {
    let mut headers = vec![
        (CONTENT_TYPE, "application/json; charset=utf-8".to_string()),
        (CONTENT_LENGTH, body.len().to_string()),
    ];
    headers.extend_from_slice(extra);
    respond(status, &headers, FakeBody::full(body))
}

/// A registry error: `{"errors":[{"code":..,"message":..}]}`.
pub(crate) fn error(status: u16, code: &str, message: &str) -> Response<FakeBody> {
    error_with(status, code, message, &[])
}

/// A registry error with extra headers.
pub(crate) fn error_with(
    status: u16,
    code: &str,
    message: &str,
    extra: &[(HeaderName, String)],
) -> Response<FakeBody> {
    let body = serde_json::json!({"errors": [{"code": code, "message": message}]}).to_string();
    json(status, body, extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_scheme_never_reveals_credentials() {
        let scheme = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            auth_scheme(&h)
        };
        assert_eq!(scheme("Bearer abc").as_deref(), Some("Bearer"));
        assert_eq!(scheme("basic dXNlcjpwdw==").as_deref(), Some("basic"));
        assert_eq!(scheme("hunter2").as_deref(), Some("<other>"));
        assert_eq!(scheme("hunter2 more").as_deref(), Some("<other>"));
        assert_eq!(auth_scheme(&HeaderMap::new()), None);
    }

    #[test]
    fn query_values_are_redacted_except_service_and_scope() {
        assert_eq!(
            redact_query("service=s&scope=repository%3Aa%3Apull&sig=abc&se=1"),
            "service=s&scope=repository%3Aa%3Apull&sig=REDACTED&se=REDACTED"
        );
    }
}
