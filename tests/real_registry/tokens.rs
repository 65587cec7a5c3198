//! The token server (Docker token auth, `GET <realm>?service=..&scope=..` with Basic
//! credentials), run by the test on 127.0.0.1 over TLS, issuing JWTs that distribution 2.8
//! accepts:
//! - header `{"typ":"JWT","alg":"ES256","x5c":[signer, CA]}` (standard base64 DER): the
//!   registry verifies the chain against its `rootcertbundle` (the CA) and the signature
//!   with the signer's public key; ES256 signatures are r||s, 64 bytes (ring's FIXED form);
//! - claims `iss` (= the registry's `issuer`), `sub`, `aud` (= its `service`, a string: 2.8
//!   reads `aud` as one string), `exp`, `nbf`, `iat`, `jti`, `access`
//!   (`[{"type":"repository","name":..,"actions":[..]}]`, requested ∩ allowed actions).
//!
//! distribution accepts `exp` up to 60 s late (`token.Leeway`). With
//! [`TokenOptions::enforce_at_registry`] the JWT's `exp` is written 60 s early, so the
//! registry itself refuses a token once `lifetime` has passed; `expires_in` always says
//! `lifetime`. Only GET is served: a POST (OAuth2 password grant) gets 404, which tells a
//! client to fall back to GET (distribution's oauth.md).
//!
//! Every request is recorded ([`TokenServer::requests`]): time, user, scopes, grant,
//! status; never a password or token.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::EcdsaKeyPair;
use serde_json::json;

/// distribution's `token.Leeway`: `exp` and `nbf` are checked with this much slack.
pub(crate) const REGISTRY_LEEWAY_SECS: i64 = 60;

/// One account.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub name: String,
    pub password: String,
    /// Actions this user may get, e.g. `["pull"]` or `["pull", "push"]`.
    pub actions: Vec<&'static str>,
}

/// How tokens are issued.
#[derive(Debug, Clone)]
pub(crate) struct TokenOptions {
    /// The registry's `auth.token.service`; the JWT `aud`.
    pub service: String,
    /// The registry's `auth.token.issuer`; the JWT `iss`.
    pub issuer: String,
    /// Token lifetime (`expires_in`).
    pub lifetime: Duration,
    /// Write `exp` [`REGISTRY_LEEWAY_SECS`] early so the registry enforces `lifetime`.
    pub enforce_at_registry: bool,
}

/// One request to the token server.
#[derive(Debug, Clone)]
pub(crate) struct TokenRequest {
    /// Unix time (seconds) it was answered.
    pub at: f64,
    pub method: String,
    /// Basic user, if credentials came.
    pub user: Option<String>,
    /// `scope` parameters as sent.
    pub scopes: Vec<String>,
    /// Granted `type:name:actions` entries.
    pub granted: Vec<String>,
    pub status: u16,
}

struct Shared {
    opts: TokenOptions,
    users: Vec<User>,
    key: EcdsaKeyPair,
    x5c: Vec<String>,
    tls: Arc<rustls::ServerConfig>,
    log: Mutex<Vec<TokenRequest>>,
    serial: AtomicU64,
    rng: SystemRandom,
}

/// A running token server; stops on drop.
pub(crate) struct TokenServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

impl TokenServer {
    /// Start on 127.0.0.1 with a free port.
    pub(crate) fn start(
        opts: TokenOptions,
        users: Vec<User>,
        key: EcdsaKeyPair,
        chain_der: &[&[u8]],
        tls: Arc<rustls::ServerConfig>,
    ) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind token server");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Shared {
            opts,
            users,
            key,
            x5c: chain_der.iter().map(|d| STANDARD.encode(d)).collect(),
            tls,
            log: Mutex::new(Vec::new()),
            serial: AtomicU64::new(0),
            rng: SystemRandom::new(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::Builder::new()
                .name("token-server".into())
                .spawn(move || accept_loop(listener, shared, stop))
                .expect("spawn token server")
        };
        Self {
            addr,
            shared,
            stop,
            accept: Some(accept),
        }
    }

    /// The port on 127.0.0.1.
    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The realm URL for the registry config: `https://127.0.0.1:<port>/token`. An address,
    /// not a name, because skopeo resolves names through the system resolver and the tests
    /// never edit /etc/hosts.
    pub(crate) fn realm(&self) -> String {
        format!("https://127.0.0.1:{}/token", self.port())
    }

    /// `127.0.0.1:<port>`, for edgepull's `registry.realm_hosts`.
    pub(crate) fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }

    /// Every request so far.
    pub(crate) fn requests(&self) -> Vec<TokenRequest> {
        self.shared.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((tcp, _)) => {
                let shared = shared.clone();
                let _ = std::thread::Builder::new()
                    .name("token-conn".into())
                    .spawn(move || {
                        let _ = serve(&shared, tcp);
                    });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 64 * 1024;

/// One request per connection (`Connection: close`).
fn serve(shared: &Shared, tcp: TcpStream) -> io::Result<()> {
    tcp.set_nonblocking(false)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(10)))?;
    let conn = rustls::ServerConnection::new(shared.tls.clone()).map_err(io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);

    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        if buf.len() > MAX_HEAD {
            return Err(io::Error::other("request head too large"));
        }
        let mut chunk = [0u8; 4096];
        let n = tls.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    // Drain a body (POST) so that closing does not reset the connection.
    let length: usize = header(&headers, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
        .min(MAX_BODY);
    let mut have = buf.len() - head_end - 4;
    while have < length {
        let mut chunk = [0u8; 4096];
        let n = tls.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        have += n;
    }

    let (status, body) = shared.respond(&method, &target, &headers);
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Internal Server Error",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status == 401 {
        out.push_str("WWW-Authenticate: Basic realm=\"edgepull test token server\"\r\n");
    }
    out.push_str("\r\n");
    tls.write_all(out.as_bytes())?;
    tls.write_all(body.as_bytes())?;
    tls.conn.send_close_notify();
    tls.flush()?;
    Ok(())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn error_body(code: &str, message: &str) -> String {
    json!({"errors": [{"code": code, "message": message}]}).to_string()
}

impl Shared {
    fn respond(&self, method: &str, target: &str, headers: &[(String, String)]) -> (u16, String) {
        let mut record = TokenRequest {
            at: now_unix(),
            method: method.to_string(),
            user: None,
            scopes: Vec::new(),
            granted: Vec::new(),
            status: 0,
        };
        let (status, body) = self.decide(method, target, headers, &mut record);
        record.status = status;
        self.log.lock().unwrap_or_else(|p| p.into_inner()).push(record);
        (status, body)
    }

    fn decide(
        &self,
        method: &str,
        target: &str,
        headers: &[(String, String)],
        record: &mut TokenRequest,
    ) -> (u16, String) {
        let Ok(url) = url::Url::parse(&format!("https://token.invalid{target}")) else {
            return (400, error_body("BAD_REQUEST", "unparsable request target"));
        };
        if url.path() != "/token" {
            return (404, error_body("NOT_FOUND", "the realm is /token"));
        }
        if method != "GET" {
            return (404, error_body("UNSUPPORTED", "only GET with Basic credentials"));
        }
        let mut service = None;
        for (k, v) in url.query_pairs() {
            match &*k {
                "service" => service = Some(v.into_owned()),
                "scope" => record.scopes.extend(v.split(' ').map(str::to_string)),
                _ => {}
            }
        }
        if service.as_deref() != Some(self.opts.service.as_str()) {
            return (400, error_body("BAD_REQUEST", "unknown or missing service"));
        }
        let creds = header(headers, "authorization")
            .and_then(|v| v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")))
            .and_then(|b64| STANDARD.decode(b64.trim()).ok())
            .and_then(|raw| String::from_utf8(raw).ok())
            .and_then(|s| s.split_once(':').map(|(u, p)| (u.to_string(), p.to_string())));
        let Some((name, password)) = creds else {
            return (401, error_body("UNAUTHORIZED", "credentials required"));
        };
        record.user = Some(name.clone());
        let Some(user) = self
            .users
            .iter()
            .find(|u| u.name == name && u.password == password)
        else {
            return (401, error_body("UNAUTHORIZED", "invalid credentials"));
        };

        let mut access = Vec::new();
        for scope in &record.scopes {
            // type:name:actions; the name may itself hold colons (host:port/repo).
            let Some((rest, actions)) = scope.rsplit_once(':') else {
                continue;
            };
            let Some((kind, name)) = rest.split_once(':') else {
                continue;
            };
            if kind != "repository" {
                continue;
            }
            let granted: Vec<&str> = actions.split(',').filter(|a| user.actions.contains(a)).collect();
            record
                .granted
                .push(format!("{kind}:{name}:{}", granted.join(",")));
            access.push(json!({"type": kind, "name": name, "actions": granted}));
        }

        let now = now_unix() as i64;
        let lifetime = self.opts.lifetime.as_secs() as i64;
        let shift = if self.opts.enforce_at_registry {
            REGISTRY_LEEWAY_SECS
        } else {
            0
        };
        let serial = self.serial.fetch_add(1, Ordering::SeqCst);
        let header = json!({"typ": "JWT", "alg": "ES256", "x5c": self.x5c});
        let claims = json!({
            "iss": self.opts.issuer,
            "sub": user.name,
            "aud": self.opts.service,
            "exp": now + lifetime - shift,
            "nbf": now,
            "iat": now,
            "jti": format!("token-{serial}-{}", edgepull_testkit::random_bytes(8).iter().map(|b| format!("{b:02x}")).collect::<String>()),
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let Ok(sig) = self.key.sign(&self.rng, signing_input.as_bytes()) else {
            return (500, error_body("INTERNAL", "signing failed"));
        };
        let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()));
        let body = json!({"token": token, "access_token": token, "expires_in": lifetime});
        (200, body.to_string())
    }
}
