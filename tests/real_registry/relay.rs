//! A loopback TCP relay in front of a data endpoint that records every write it hands to
//! a client, with its time: the server side of a transfer second by second (nginx logs a
//! request only once it ends). It copies bytes unchanged, so TLS passes through and the
//! client still talks to nginx; edgepull reaches it through its `resolve` config (same
//! host name and port, another loopback address).
//!
//! A write is recorded when the kernel took it (`write_all` returned): the bytes are then
//! in the relay's send buffer or the client's receive buffer, which a client that reads
//! slowly fills once, at the start. The relay's send buffer is kept small
//! ([`CLIENT_SNDBUF`]; on loopback Linux would grow it to 4 MiB), so that is mostly the
//! client's receive buffer (about 0.5 MiB for edgepull on loopback).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The relay's send buffer toward a client (the kernel doubles it).
const CLIENT_SNDBUF: u32 = 64 * 1024;

/// (when, bytes) of each write to a client, in order.
type Writes = Arc<Mutex<Vec<(Instant, usize)>>>;

/// The running relay; its accept loop stops on drop (open connections end with their
/// client).
pub(crate) struct Relay {
    pub addr: SocketAddr,
    writes: Writes,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Relay {
    /// Listen on `listen` and relay each connection to `upstream`.
    pub(crate) fn start(listen: SocketAddr, upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind(listen).unwrap_or_else(|e| panic!("relay bind {listen}: {e}"));
        listener.set_nonblocking(true).expect("nonblocking listener");
        let addr = listener.local_addr().expect("relay address");
        let writes = Writes::default();
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (writes, stop) = (writes.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            let writes = writes.clone();
                            std::thread::spawn(move || relay(client, upstream, writes));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Self {
            addr,
            writes,
            stop,
            accept: Some(accept),
        }
    }

    /// Every write to a client so far: (when, bytes).
    pub(crate) fn writes(&self) -> Vec<(Instant, usize)> {
        self.writes.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// One connection: client → upstream on its own thread, upstream → client (recorded) here.
fn relay(client: TcpStream, upstream: SocketAddr, writes: Writes) {
    let _ = client.set_nonblocking(false);
    // Through a duplicate of the descriptor: the option is the socket's.
    if let Ok(dup) = client.try_clone() {
        let _ = tokio::net::TcpSocket::from_std_stream(dup).set_send_buffer_size(CLIENT_SNDBUF);
    }
    let Ok(server) = TcpStream::connect(upstream) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (Ok(mut c_read), Ok(mut s_write)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c_read, &mut s_write);
        let _ = s_write.shutdown(Shutdown::Write);
    });
    let (mut s_read, mut c_write) = (server, client);
    // Small reads: one record per 16 KiB at most, so a 1 s slice is exact to a fraction
    // of a percent at MiB/s rates.
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match s_read.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if c_write.write_all(&buf[..n]).is_err() {
            break;
        }
        writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((Instant::now(), n));
    }
    let _ = c_write.shutdown(Shutdown::Write);
    let _ = s_read.shutdown(Shutdown::Both);
    let _ = up.join();
}
