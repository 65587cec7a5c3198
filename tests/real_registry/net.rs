//! Free ports and readiness polling.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A port that is free on every address in `ips` right now (bind to port 0 on the first,
/// then check the others). The caller's server may still lose a race for it: callers retry
/// on "address already in use".
pub(crate) fn free_port(ips: &[Ipv4Addr]) -> u16 {
    for _ in 0..100 {
        let first = TcpListener::bind((ips[0], 0)).expect("bind port 0");
        let port = first.local_addr().expect("local addr").port();
        let others: Vec<_> = ips[1..].iter().map(|ip| TcpListener::bind((*ip, port))).collect();
        if others.iter().all(|r| r.is_ok()) {
            return port;
        }
    }
    panic!("no port free on all of {ips:?}");
}

/// Whether something accepts TCP connections at `addr`.
pub(crate) fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Poll `ready` every 20 ms until it is true, `failed` returns an error, or `timeout` passes.
pub(crate) fn wait_until(
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
    mut failed: impl FnMut() -> Option<String>,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(why) = failed() {
            return Err(format!("{what}: {why}"));
        }
        if ready() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{what}: not ready within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
