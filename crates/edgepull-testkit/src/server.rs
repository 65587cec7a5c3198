//! The TLS accept loop shared by all servers: routes each request to its server (login,
//! token realm, data endpoints) and logs it; and the foreign listener's loop.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::RANGE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::body::FakeBody;
use super::state::{LogEntry, RequestRecord, ServerName, Shared, lock};
use super::wire::{auth_scheme, error, header_str, redact_query, truncate};
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
        let _ = tcp.set_nodelay(true);
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

/// The foreign listener: count every TCP connection, then answer every request 404.
pub(crate) async fn serve_foreign(listener: TcpListener, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        shared
            .foreign_connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await else {
                return;
            };
            let service = service_fn(|_req: Request<Incoming>| async {
                Ok::<_, Infallible>(error(404, "NOT_FOUND", "the foreign listener serves nothing"))
            });
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
