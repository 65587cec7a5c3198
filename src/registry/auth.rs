//! Registry authentication: credentials, the Docker token flow and the token cache.
//!
//! Owns: turning a `401` challenge into a Bearer token (GET with Basic for passwords and
//! repository-scoped tokens — ACR refuses the POST password grant —, POST `grant_type=
//! refresh_token` for ACR refresh tokens, anonymous GET otherwise), the per-scope cache
//! with expiry on the monotonic clock (checked arithmetic: a server's `expires_in` never
//! overflows an `Instant`), and Basic auth when the login server asks for it.
//! Token requests go through the same guarded send as every other request
//! (`Transport::send`); the reply is parsed by the pure [`TokenReply`].
//! Must never send a credential anywhere but the login server and an allowed realm (the
//! realm is checked by [`EgressPolicy::check_realm`](edgepull_core::egress::EgressPolicy::check_realm)
//! before any credential leaves), and never print a secret.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Instant;

use base64::Engine as _;
use reqwest::Method;
use reqwest::header::HeaderValue;

use super::transport::{Request, Transport, TransportError, error_summary, read_limited};
use edgepull_core::challenge::{Challenge, Scheme};
use edgepull_core::egress::PolicyError;
use edgepull_core::hostport::HostPort;
use edgepull_core::retry::is_transient_status;
use edgepull_core::secret::Secret;
use edgepull_core::token::{TokenReply, TokenReplyError};

/// Largest token response read (1 MiB, as containers/image).
const MAX_TOKEN_BYTES: u64 = 1024 * 1024;

/// The identity edgepull presents.
pub(crate) enum Credentials {
    /// No credentials: anonymous pull.
    Anonymous,
    /// Username and password (ACR repository-scoped token, admin user, service principal).
    Basic {
        /// User or token name.
        username: String,
        /// Its password.
        password: Secret,
    },
    /// An ACR refresh token, exchanged at the realm with `grant_type=refresh_token`.
    RefreshToken(Secret),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, [REDACTED])"),
            Credentials::RefreshToken(_) => f.write_str("RefreshToken([REDACTED])"),
        }
    }
}

/// Why authentication failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The registry demands credentials but none are configured.
    #[error(
        "{host} requires credentials ({scheme} challenge) but none are configured; set registry.auth (username + password_file, or refresh_token_file)"
    )]
    CredentialsRequired { host: HostPort, scheme: &'static str },
    /// The challenge names a realm outside the allowlist (or not https), or the egress
    /// policy refused the request to it.
    #[error("token realm refused")]
    Realm(#[source] PolicyError),
    /// A Bearer challenge without a realm.
    #[error("{host} sent a Bearer challenge without a realm; cannot obtain a token")]
    NoRealm { host: HostPort },
    /// A challenge scheme edgepull does not speak.
    #[error("{host} asks for {scheme:?} authentication; edgepull supports Bearer (token) and Basic")]
    UnsupportedScheme { host: HostPort, scheme: String },
    /// The token server refused the credentials.
    #[error(
        "token server {realm_host} answered {status} for scope {scope:?}{detail}; check the username and password file (or refresh token) and that the token may pull this repository"
    )]
    TokenRejected {
        realm_host: HostPort,
        status: u16,
        scope: String,
        detail: String,
    },
    /// The token server's reply is not usable.
    #[error("token server {realm_host} sent an unusable reply")]
    BadTokenReply {
        realm_host: HostPort,
        #[source]
        source: TokenReplyError,
    },
    /// The token server's reply is larger than edgepull reads.
    #[error(
        "token server {realm_host} sent an unusable reply: reply of {size} bytes exceeds the {MAX_TOKEN_BYTES}-byte limit"
    )]
    TokenReplyTooLarge { realm_host: HostPort, size: u64 },
    /// The registry refused a fresh token (or Basic credentials) for the same request.
    #[error(
        "{host} refused the credentials for {what} even after re-authenticating{detail}; the identity may lack pull permission on this repository"
    )]
    Rejected {
        host: HostPort,
        what: String,
        detail: String,
    },
    /// A `401` that names no challenge edgepull can answer.
    #[error(
        "{host} refused the credentials for {what}{detail} (401 without a usable WWW-Authenticate challenge)"
    )]
    NoChallenge {
        host: HostPort,
        what: String,
        detail: String,
    },
    /// The token server could not be reached.
    #[error("cannot reach token server {realm_host}")]
    Transport {
        realm_host: HostPort,
        #[source]
        source: reqwest::Error,
    },
}

impl AuthError {
    /// True when retrying later may help (token server unreachable or 5xx/408/429).
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            AuthError::Transport { .. } => true,
            AuthError::TokenRejected { status, .. } => is_transient_status(*status),
            _ => false,
        }
    }

    /// A failed request to (or body read from) the token server.
    fn from_transport(e: TransportError) -> Self {
        match e {
            TransportError::Policy(e) => AuthError::Realm(e),
            TransportError::Network { host, source } => AuthError::Transport {
                realm_host: host,
                source,
            },
            TransportError::TooLarge { host, size, .. } => AuthError::TokenReplyTooLarge {
                realm_host: host,
                size,
            },
        }
    }
}

/// A bearer token, as the header to send, with its renewal time on the monotonic clock;
/// prints as `[REDACTED]`.
#[derive(Clone)]
struct Token {
    header: HeaderValue,
    expires: Instant,
}

impl Token {
    /// The token of `reply`, received at `now`: renewed `reply.renew_after()` later. The
    /// core bounds that to a day; should the monotonic clock still not hold it, the token is
    /// due at once (renewed before its next use) instead of overflowing.
    fn new(reply: &TokenReply, now: Instant) -> Option<Self> {
        Some(Self {
            header: bearer(reply.token())?,
            expires: now.checked_add(reply.renew_after()).unwrap_or(now),
        })
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Token([REDACTED], expires in {:?})",
            self.expires.saturating_duration_since(Instant::now())
        )
    }
}

/// Parse a token reply body received from `realm_host` at `now`.
fn parse_token_reply(body: &[u8], realm_host: &HostPort, now: Instant) -> Result<Token, AuthError> {
    let bad = |source| AuthError::BadTokenReply {
        realm_host: realm_host.clone(),
        source,
    };
    let reply = TokenReply::parse(body).map_err(bad)?;
    Token::new(&reply, now).ok_or_else(|| bad(TokenReplyError::NotHeaderSafe))
}

/// Credentials plus the per-scope token cache for one login server.
pub(crate) struct Authenticator {
    creds: Credentials,
    login: HostPort,
    tokens: Mutex<HashMap<String, Token>>,
    /// Set once the login server answered with a Basic challenge.
    basic: std::sync::atomic::AtomicBool,
    /// The last Bearer challenge answered: lets an expired token be renewed before the next
    /// request instead of after a `401` round trip (one request less per renewal on metered
    /// links). Only its realm and service are reused; the realm was checked when it arrived.
    last_bearer: Mutex<Option<Challenge>>,
}

impl Authenticator {
    /// For `login` with `creds`.
    pub(crate) fn new(login: HostPort, creds: Credentials) -> Self {
        Self {
            creds,
            login,
            tokens: Mutex::new(HashMap::new()),
            basic: Default::default(),
            last_bearer: Mutex::new(None),
        }
    }

    /// The `Authorization` value to send to the login server for `scope`, if any is known:
    /// a cached, unexpired Bearer token, or Basic when the server asked for Basic.
    pub(crate) fn header_for(&self, scope: &str) -> Option<HeaderValue> {
        if self.basic.load(std::sync::atomic::Ordering::Relaxed) {
            return self.basic_header();
        }
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        let t = tokens.get(scope)?;
        if Instant::now() >= t.expires {
            return None;
        }
        Some(t.header.clone())
    }

    /// The `Authorization` value for `scope` right after answering a challenge: the token
    /// just fetched even if it is already due (a server may hand out a token of a second;
    /// it is still good for the request it was fetched for), or Basic.
    pub(crate) fn header_after_challenge(&self, scope: &str) -> Option<HeaderValue> {
        if self.basic.load(std::sync::atomic::Ordering::Relaxed) {
            return self.basic_header();
        }
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.get(scope).map(|t| t.header.clone())
    }

    /// Renew the token of `scope` ahead of a request when it has expired (or was never
    /// fetched for this scope) and a Bearer challenge from this login server is known.
    /// Errors are left to the normal 401 path.
    pub(crate) async fn refresh_if_due(&self, transport: &Transport, scope: &str) {
        if self.basic.load(std::sync::atomic::Ordering::Relaxed) || self.header_for(scope).is_some() {
            return;
        }
        let challenge = self.last_bearer.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(challenge) = challenge
            && let Err(e) = self.respond(transport, &challenge, scope).await
        {
            tracing::debug!(host = %self.login, error = %crate::error_chain(&e), "early token renewal failed");
        }
    }

    /// Forget the cached token of `scope` (after `invalid_token`).
    pub(crate) fn invalidate(&self, scope: &str) {
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(scope);
    }

    fn basic_header(&self) -> Option<HeaderValue> {
        match &self.creds {
            Credentials::Basic { username, password } => {
                let raw = format!("{username}:{}", password.expose());
                let mut v = HeaderValue::from_str(&format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(raw)
                ))
                .ok()?;
                v.set_sensitive(true);
                Some(v)
            }
            _ => None,
        }
    }

    /// Answer a challenge from the login server for `scope`: obtain what the next attempt
    /// should send. The realm is checked against the policy before any credential leaves.
    pub(crate) async fn respond(
        &self,
        transport: &Transport,
        challenge: &Challenge,
        scope: &str,
    ) -> Result<(), AuthError> {
        match &challenge.scheme {
            Scheme::Basic => {
                if !matches!(self.creds, Credentials::Basic { .. }) {
                    return Err(AuthError::CredentialsRequired {
                        host: self.login.clone(),
                        scheme: "Basic",
                    });
                }
                self.basic.store(true, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            }
            Scheme::Bearer => {
                let realm = challenge.realm().ok_or_else(|| AuthError::NoRealm {
                    host: self.login.clone(),
                })?;
                let realm = transport.policy().check_realm(realm).map_err(AuthError::Realm)?;
                let service = challenge.service().unwrap_or(self.login.host()).to_string();
                let token = self.fetch_token(transport, realm, &service, scope).await?;
                self.tokens
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(scope.to_string(), token);
                *self.last_bearer.lock().unwrap_or_else(|p| p.into_inner()) = Some(challenge.clone());
                Ok(())
            }
            Scheme::Other(name) => Err(AuthError::UnsupportedScheme {
                host: self.login.clone(),
                scheme: name.clone(),
            }),
        }
    }

    async fn fetch_token(
        &self,
        transport: &Transport,
        realm: url::Url,
        service: &str,
        scope: &str,
    ) -> Result<Token, AuthError> {
        let realm_host = HostPort::from_url(&realm).unwrap_or_else(|| self.login.clone());
        let request = match &self.creds {
            Credentials::RefreshToken(refresh) => {
                let body = url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("grant_type", "refresh_token")
                    .append_pair("service", service)
                    .append_pair("scope", scope)
                    .append_pair("refresh_token", refresh.expose())
                    .finish();
                Request::new(Method::POST, realm).form(body)
            }
            Credentials::Basic { .. } | Credentials::Anonymous => {
                let mut url = realm;
                url.query_pairs_mut()
                    .append_pair("service", service)
                    .append_pair("scope", scope);
                // Basic for passwords, nothing for anonymous pulls.
                Request::new(Method::GET, url).authorization(self.basic_header())
            }
        };
        let resp = transport.send(request).await.map_err(AuthError::from_transport)?;
        let status = resp.status().as_u16();
        let body = read_limited(resp, &realm_host, MAX_TOKEN_BYTES)
            .await
            .map_err(AuthError::from_transport)?;
        if status != 200 {
            return Err(AuthError::TokenRejected {
                realm_host,
                status,
                scope: scope.to_string(),
                detail: error_summary(&body),
            });
        }
        parse_token_reply(&body, &realm_host, Instant::now())
    }
}

fn bearer(token: &str) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
    v.set_sensitive(true);
    Some(v)
}

/// The pull scope for a repository (edgepull never asks for push).
pub(crate) fn pull_scope(repository: &str) -> String {
    format!("repository:{repository}:pull")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn host() -> HostPort {
        HostPort::parse("r.example").unwrap()
    }

    #[test]
    fn token_reply_expires_on_the_monotonic_clock() {
        let now = Instant::now();
        let t = parse_token_reply(br#"{"token":"abc","expires_in":300}"#, &host(), now).unwrap();
        assert_eq!(t.header, "Bearer abc");
        assert!(t.header.is_sensitive());
        assert_eq!(
            t.expires,
            now + Duration::from_secs(300) - Duration::from_secs(30)
        );
        let t = parse_token_reply(br#"{"access_token":"xyz"}"#, &host(), now).unwrap();
        assert_eq!(t.header, "Bearer xyz");
        assert_eq!(
            t.expires,
            now + Duration::from_secs(60) - Duration::from_secs(6),
            "default 60 s life"
        );
        for bad in [&br#"{}"#[..], b"not json", br#"{"token":"a\nb"}"#] {
            assert!(matches!(
                parse_token_reply(bad, &host(), now),
                Err(AuthError::BadTokenReply { .. })
            ));
        }
    }

    /// Issue 9, weakness 1: `Instant + 292 billion years` panicked (abort in release, a
    /// systemd restart loop). The lifetime is a day at most, anchored with checked
    /// arithmetic.
    #[test]
    fn a_huge_expires_in_does_not_overflow_the_clock() {
        let now = Instant::now();
        for raw in ["9223372036854775807", "18446744073709551615", "1e300"] {
            let body = format!(r#"{{"token":"t","expires_in":{raw}}}"#);
            let t = parse_token_reply(body.as_bytes(), &host(), now).unwrap();
            assert_eq!(
                t.expires.checked_duration_since(now),
                Some(edgepull_core::token::MAX_TOKEN_LIFETIME - Duration::from_secs(30)),
                "{raw}"
            );
        }
    }

    /// A token already due (a server that hands out 1 s tokens, a slow device) is still
    /// sent on the request it was fetched for; only later requests renew it first.
    #[test]
    fn a_token_just_fetched_is_used_even_when_due() {
        let auth = Authenticator::new(host(), Credentials::Anonymous);
        let due = Token {
            header: bearer("fresh").unwrap(),
            expires: Instant::now(),
        };
        auth.tokens.lock().unwrap().insert("s".into(), due);
        assert_eq!(auth.header_for("s"), None, "due: renewed before a new request");
        assert_eq!(auth.header_after_challenge("s").unwrap(), "Bearer fresh");
        assert_eq!(auth.header_after_challenge("other"), None);
    }

    #[test]
    fn debug_never_prints_secrets() {
        let c = Credentials::Basic {
            username: "device-42".into(),
            password: Secret::new("hunter2".into()),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        let t = Token {
            header: bearer("tok-secret").unwrap(),
            expires: Instant::now(),
        };
        assert!(!format!("{t:?}").contains("tok-secret"));
    }

    #[test]
    fn scope_is_pull_only() {
        assert_eq!(pull_scope("team/app"), "repository:team/app:pull");
    }
}
