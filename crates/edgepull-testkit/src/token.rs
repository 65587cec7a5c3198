//! The ACR-style token realm (`/oauth2/token`), served by the login server and the auth host.

use std::collections::HashSet;
use std::time::Instant;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};

use super::body::FakeBody;
use super::state::{AuthMode, Grant, LOGIN_HOST, Shared, TokenField, lock, random_hex};
use super::wire::basic_credentials;
use super::wire::{error, json};

/// Largest form body accepted on POST.
const MAX_FORM: usize = 64 * 1024;

/// The auth host serves only the token endpoint.
pub(crate) async fn handle_auth_host(shared: &Shared, req: Request<Incoming>) -> Response<FakeBody> {
    if req.uri().path() == "/oauth2/token" {
        handle(shared, req).await
    } else {
        error(404, "NOT_FOUND", "no such route")
    }
}

/// `GET|POST /oauth2/token`.
pub(crate) async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<FakeBody> {
    if matches!(shared.auth, AuthMode::Basic { .. }) {
        return error(404, "NOT_FOUND", "this registry has no token server (Basic auth)");
    }
    match *req.method() {
        Method::GET => {
            let params = pairs(req.uri().query().unwrap_or("").as_bytes());
            if let Some(bad) = check_service(&params) {
                return bad;
            }
            let creds = basic_credentials(req.headers());
            let allowed = match &shared.auth {
                AuthMode::Anonymous => true,
                AuthMode::Token { user, pass } => creds.is_some_and(|(u, p)| u == *user && p == *pass),
                AuthMode::RefreshToken { refresh_token } => creds.is_some_and(|(_, p)| p == *refresh_token),
                AuthMode::Basic { .. } => false,
            };
            if !allowed {
                return error(401, "UNAUTHORIZED", "invalid credentials");
            }
            issue(shared, &params)
        }
        Method::POST => {
            let body = match Limited::new(req.into_body(), MAX_FORM).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(_) => return error(400, "BAD_REQUEST", "unreadable or oversized form body"),
            };
            let params = pairs(&body);
            if let Some(bad) = check_service(&params) {
                return bad;
            }
            match param(&params, "grant_type") {
                Some("password") => error(
                    400,
                    "UNSUPPORTED",
                    "grant_type=password is not supported; use GET with Basic credentials",
                ),
                Some("refresh_token") => match &shared.auth {
                    AuthMode::RefreshToken { refresh_token }
                        if param(&params, "refresh_token") == Some(refresh_token) =>
                    {
                        issue(shared, &params)
                    }
                    _ => error(401, "UNAUTHORIZED", "invalid refresh token"),
                },
                _ => error(400, "UNSUPPORTED", "unsupported grant_type"),
            }
        }
        _ => error(405, "UNSUPPORTED", "method not allowed"),
    }
}

fn pairs(input: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(input).into_owned().collect()
}

fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn check_service(params: &[(String, String)]) -> Option<Response<FakeBody>> {
    match param(params, "service") {
        Some(LOGIN_HOST) => None,
        Some(_) => Some(error(400, "BAD_REQUEST", "unknown service")),
        None => Some(error(400, "BAD_REQUEST", "missing service")),
    }
}

/// Repositories granted pull by the `scope` parameters (repeated and/or space-separated).
fn granted_repos(params: &[(String, String)]) -> HashSet<String> {
    params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' '))
        .filter_map(|scope| {
            let (name, actions) = scope.strip_prefix("repository:")?.rsplit_once(':')?;
            actions
                .split(',')
                .any(|a| a == "pull" || a == "*")
                .then(|| name.to_string())
        })
        .collect()
}

fn issue(shared: &Shared, params: &[(String, String)]) -> Response<FakeBody> {
    let (ttl, omit_expires_in, expires_in_raw, field, reply_override) = {
        let k = lock(&shared.knobs);
        (
            k.token_ttl,
            k.omit_expires_in,
            k.expires_in_raw.clone(),
            k.token_field,
            k.token_reply_override.clone(),
        )
    };
    let token = random_hex(32);
    let now = Instant::now();
    {
        let mut tokens = lock(&shared.tokens);
        tokens.retain(|_, g| g.expires > now);
        tokens.insert(
            token.clone(),
            Grant {
                expires: now.checked_add(ttl).unwrap_or(now),
                repos: granted_repos(params),
            },
        );
    }
    if let Some(template) = reply_override {
        return json(200, template.replace("{token}", &token), &[]);
    }
    let mut reply = serde_json::Map::new();
    if matches!(field, TokenField::Token | TokenField::Both) {
        reply.insert("token".into(), token.clone().into());
    }
    if matches!(field, TokenField::AccessToken | TokenField::Both) {
        reply.insert("access_token".into(), token.into());
    }
    if !omit_expires_in && expires_in_raw.is_none() {
        reply.insert("expires_in".into(), ttl.as_secs().into());
    }
    let mut text = serde_json::Value::Object(reply).to_string();
    if let Some(raw) = expires_in_raw {
        // Spliced in as text: it may be a number no JSON library would write.
        text.pop();
        text.push_str(&format!(",\"expires_in\":{raw}}}"));
    }
    json(200, text, &[])
}
