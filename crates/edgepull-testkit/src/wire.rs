//! Request and response helpers shared by every fake server: header access, credentials
//! from `Authorization`, redaction for the request log, and response builders. A leaf: it
//! knows no server.

use base64::Engine as _;
use bytes::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use hyper::{Response, StatusCode};

use super::body::FakeBody;

/// A header as text, if present and visible ASCII.
pub(crate) fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The scheme of `Authorization`, never the credentials: a known scheme followed by
/// credentials is reported as sent, anything else as `<other>` (a bare word could be a secret).
pub(crate) fn auth_scheme(headers: &HeaderMap) -> Option<String> {
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
pub(crate) fn redact_query(query: &str) -> String {
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

pub(crate) fn truncate(s: &str, max: usize) -> String {
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

/// `user:pass` from `Authorization: Basic ...`.
pub(crate) fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let token = scheme_value(headers, "Basic")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}

/// The value after `scheme ` in `Authorization`, scheme compared case-insensitively.
pub(crate) fn scheme_value<'a>(headers: &'a HeaderMap, scheme: &str) -> Option<&'a str> {
    let value = header_str(headers, &AUTHORIZATION)?;
    let (s, rest) = value.trim().split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then_some(rest.trim())
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
