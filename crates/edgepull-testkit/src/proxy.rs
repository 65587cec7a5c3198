//! Test-only: a recording HTTP `CONNECT` proxy on 127.0.0.1, for tests that must see every
//! tunnel a client asks for. It counts TCP connections, records each `CONNECT` target as
//! the client wrote it and the header names of the `CONNECT` request, and tunnels to the
//! fake's host names (and `localhost`) on 127.0.0.1 or to an IP literal; any other name
//! gets a 502. Anything but `CONNECT` gets a 405.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

use super::state::lock;

/// Largest `CONNECT` request head read.
const MAX_HEAD: usize = 16 * 1024;

/// One `CONNECT` request as the proxy saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRecord {
    /// The target as written (`host:port`).
    pub target: String,
    /// The request's header names, lower-cased.
    pub headers: Vec<String>,
}

#[derive(Default)]
struct State {
    connections: AtomicU64,
    connects: Mutex<Vec<ConnectRecord>>,
}

/// A running recording proxy; dropping it stops it.
pub struct ConnectProxy {
    addr: SocketAddr,
    state: Arc<State>,
    runtime: Option<Runtime>,
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl ConnectProxy {
    /// Start on 127.0.0.1 with a port of its own. Panics if it cannot (a test helper).
    pub fn start() -> Self {
        Self::try_start().unwrap_or_else(|e| panic!("testkit: cannot start the CONNECT proxy: {e}"))
    }

    fn try_start() -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("edgepull-testkit-proxy")
            .enable_all()
            .build()?;
        let std_listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let state = Arc::new(State::default());
        {
            let _guard = runtime.enter();
            let listener = TcpListener::from_std(std_listener)?;
            runtime.spawn(accept_loop(listener, state.clone()));
        }
        Ok(Self {
            addr,
            state,
            runtime: Some(runtime),
        })
    }

    /// Where the proxy listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::Relaxed)
    }

    /// Every `CONNECT` request so far, in order.
    pub fn connects(&self) -> Vec<ConnectRecord> {
        lock(&self.state.connects).clone()
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        state.connections.fetch_add(1, Ordering::Relaxed);
        let state = state.clone();
        tokio::spawn(async move {
            let _ = tunnel(client, &state).await;
        });
    }
}

async fn tunnel(mut client: TcpStream, state: &State) -> io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = client.read(&mut buf).await?;
        if n == 0 || head.len() + n > MAX_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let mut request = lines.next().unwrap_or("").split(' ');
    let (method, target) = (request.next().unwrap_or(""), request.next().unwrap_or(""));
    if method != "CONNECT" {
        return client.write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n").await;
    }
    let headers = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(name, _)| name.trim().to_ascii_lowercase())
        })
        .collect();
    lock(&state.connects).push(ConnectRecord {
        target: target.to_string(),
        headers,
    });
    let Some(addr) = upstream(target) else {
        return client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
    };
    let Ok(mut server) = TcpStream::connect(addr).await else {
        return client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
    };
    client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await?;
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}

/// Where a `host:port` target goes: the fake's names and `localhost` to 127.0.0.1, IP
/// literals to themselves.
fn upstream(target: &str) -> Option<SocketAddr> {
    let (host, port) = target.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip = match host.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) if host == "localhost" || host.ends_with(".test") => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Err(_) => return None,
    };
    Some(SocketAddr::new(ip, port))
}
