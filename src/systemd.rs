//! The daemon's side of the systemd notify protocol (`sd_notify(3)`), written by hand.
//!
//! systemd starts `Type=notify` services with `NOTIFY_SOCKET` set to an `AF_UNIX` datagram
//! socket: an absolute path, or `@name` for a socket in the abstract namespace. Each
//! datagram is a list of `KEY=VALUE` lines. edgepull sends:
//!
//! - `READY=1` once config validation and store recovery are done ([`Notifier::ready`]),
//! - `RELOADING=1` + `MONOTONIC_USEC=` when a SIGHUP reload starts ([`Notifier::reloading`]),
//!   followed by `READY=1` when it has finished,
//! - `STOPPING=1` when shutdown begins ([`Notifier::stopping`]),
//! - `STATUS=` one-line progress for `systemctl status` ([`Notifier::status`]),
//! - `WATCHDOG=1` from the loop that does the real work ([`Notifier::watchdog`]), every
//!   [`Notifier::watchdog_interval`], while a running sync job makes progress (the daemon
//!   decides when to call it).
//!
//! Outside systemd (`NOTIFY_SOCKET` unset) every method is a no-op. Notification is never
//! fatal: the first failure is logged as a warning, later ones are dropped silently so a
//! broken socket cannot flood the journal every watchdog tick.
//!
//! The environment is read once and left as it is: removing variables is `unsafe` in
//! edition 2024 and this crate forbids `unsafe`. The only child processes, the update
//! hooks, get an environment built from scratch, without `NOTIFY_SOCKET` and the
//! watchdog variables, and the unit sets `NotifyAccess=main` in any case.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Longest `STATUS=` text sent, in bytes. systemd reads notification datagrams into a
/// buffer of `PIPE_BUF` (4096) bytes and ignores longer ones; a status line is meant for
/// one line of `systemctl status` anyway.
pub(crate) const MAX_STATUS_LEN: usize = 1024;

/// Why talking to the service manager did not work. Logged (once), never returned.
#[derive(Debug, thiserror::Error)]
enum NotifyError {
    /// `NOTIFY_SOCKET` is neither an absolute path nor `@name` (e.g. systemd's newer
    /// `vsock:` form, which edgepull does not speak).
    #[error("NOTIFY_SOCKET {value:?} is not an absolute path or an @abstract name")]
    UnsupportedAddress { value: OsString },
    /// The path or abstract name does not fit a `sockaddr_un`.
    #[error("NOTIFY_SOCKET {value:?} is not a usable socket address")]
    BadAddress {
        value: OsString,
        #[source]
        source: io::Error,
    },
    /// `WATCHDOG_USEC` or `WATCHDOG_PID` is not a decimal number.
    #[error("{name}={value:?} is not a decimal number; the watchdog stays off")]
    BadWatchdogVar { name: &'static str, value: OsString },
    /// Creating the datagram socket or sending on it failed.
    #[error("could not send {what} to the service manager at NOTIFY_SOCKET {socket:?}")]
    Send {
        what: &'static str,
        socket: OsString,
        #[source]
        source: io::Error,
    },
}

/// Sends state notifications to systemd. Cheap to share: every method takes `&self`.
#[derive(Debug)]
pub struct Notifier {
    /// Destination of every datagram; `None` outside systemd (or when `NOTIFY_SOCKET` is
    /// unusable), which turns every method into a no-op.
    target: Option<Target>,
    /// Half of `WATCHDOG_USEC`, when the watchdog is armed for this process.
    watchdog_interval: Option<Duration>,
    /// Set once the first error has been logged; later errors are not logged.
    error_logged: AtomicBool,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`. A variable that is unset
    /// or empty means "not requested"; a malformed one is logged and treated as unset.
    pub fn from_env() -> Self {
        let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
        Self::from_vars(
            var("NOTIFY_SOCKET").as_deref(),
            var("WATCHDOG_USEC").as_deref(),
            var("WATCHDOG_PID").as_deref(),
        )
    }

    /// Builds a notifier from already-parsed values: the `NOTIFY_SOCKET` value, the
    /// watchdog timeout in microseconds and the pid the watchdog is meant for. For tests
    /// and callers that do not want the process environment.
    pub fn new(notify_socket: Option<&OsStr>, watchdog_usec: Option<u64>, watchdog_pid: Option<u32>) -> Self {
        let mut bad_socket = None;
        let target = notify_socket.and_then(|name| match parse_address(name) {
            Ok(addr) => Some(Target {
                addr,
                name: name.to_owned(),
            }),
            Err(err) => {
                bad_socket = Some(err);
                None
            }
        });
        let notifier = Notifier {
            target,
            watchdog_interval: watchdog_interval(watchdog_usec, watchdog_pid, std::process::id()),
            error_logged: AtomicBool::new(false),
        };
        if let Some(err) = &bad_socket {
            notifier.report(err);
        }
        notifier
    }

    /// [`Notifier::new`] from the raw variable values, as found in the environment.
    fn from_vars(notify_socket: Option<&OsStr>, usec: Option<&OsStr>, pid: Option<&OsStr>) -> Self {
        let usec = usec.map(|v| parse_decimal::<u64>("WATCHDOG_USEC", v)).transpose();
        let pid = pid.map(|v| parse_decimal::<u32>("WATCHDOG_PID", v)).transpose();
        match (usec, pid) {
            (Ok(usec), Ok(pid)) => Self::new(notify_socket, usec, pid),
            // A watchdog we cannot parse is not armed: better than pinging on a wrong period.
            (Err((name, value)), _) | (_, Err((name, value))) => {
                let notifier = Self::new(notify_socket, None, None);
                notifier.report(&NotifyError::BadWatchdogVar { name, value });
                notifier
            }
        }
    }

    /// `READY=1`: startup (or a reload) has finished.
    pub fn ready(&self) {
        self.send("READY=1", "READY=1");
    }

    /// `RELOADING=1` with `MONOTONIC_USEC=`, the current `CLOCK_MONOTONIC` time: newer
    /// systemd (253+) uses it to tie the following `READY=1` to this reload, and may ignore
    /// a `RELOADING=1` without it. Older versions ignore the field. Send
    /// [`Notifier::ready`] when the reload is done.
    pub fn reloading(&self) {
        if self.target.is_some() {
            let msg = format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec());
            self.send(&msg, "RELOADING=1");
        }
    }

    /// `STOPPING=1`: shutdown has begun.
    pub fn stopping(&self) {
        self.send("STOPPING=1", "STOPPING=1");
    }

    /// `STATUS=`: a one-line description of what the daemon is doing. Control characters
    /// (newlines included) become spaces, so the text cannot inject further `KEY=` lines;
    /// the text is cut to [`MAX_STATUS_LEN`] bytes.
    pub fn status(&self, text: &str) {
        if self.target.is_some() {
            self.send(&format!("STATUS={}", sanitize_status(text)), "STATUS=");
        }
    }

    /// `WATCHDOG=1`: the main loop is alive. Call at least every [`Notifier::watchdog_interval`].
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1", "WATCHDOG=1");
    }

    /// How often to call [`Notifier::watchdog`]: half of `WATCHDOG_USEC`, when systemd armed
    /// a watchdog for this process (`WATCHDOG_PID` unset or equal to our pid). `None`
    /// means no pings are expected.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog_interval
    }

    fn send(&self, msg: &str, what: &'static str) {
        let Some(target) = &self.target else { return };
        if let Err(source) = send_datagram(&target.addr, msg.as_bytes()) {
            self.report(&NotifyError::Send {
                what,
                socket: target.name.clone(),
                source,
            });
        }
    }

    /// Logs `err` if nothing has been logged yet.
    fn report(&self, err: &NotifyError) {
        if !self.error_logged.swap(true, Ordering::Relaxed) {
            let message = crate::error_chain(err);
            tracing::warn!("sd_notify: {message} (further notification errors are not logged)");
        }
    }
}

/// Where notifications go.
#[derive(Debug)]
struct Target {
    /// The parsed `NOTIFY_SOCKET`.
    addr: SocketAddr,
    /// `NOTIFY_SOCKET` as given, for log messages.
    name: OsString,
}

/// The watchdog period to use, given `WATCHDOG_USEC`, `WATCHDOG_PID` and our own pid.
fn watchdog_interval(usec: Option<u64>, pid: Option<u32>, own_pid: u32) -> Option<Duration> {
    match (usec, pid) {
        (None | Some(0), _) => None,
        (Some(_), Some(pid)) if pid != own_pid => None,
        (Some(usec), _) => Some(Duration::from_micros(usec) / 2),
    }
}

fn parse_decimal<T: std::str::FromStr>(
    name: &'static str,
    value: &OsStr,
) -> Result<T, (&'static str, OsString)> {
    value
        .to_str()
        .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| (name, value.to_owned()))
}

fn parse_address(value: &OsStr) -> Result<SocketAddr, NotifyError> {
    let bad = |source| NotifyError::BadAddress {
        value: value.to_owned(),
        source,
    };
    match value.as_bytes() {
        [b'/', ..] => SocketAddr::from_pathname(value).map_err(bad),
        [b'@', name @ ..] => abstract_address(name).map_err(bad),
        _ => Err(NotifyError::UnsupportedAddress {
            value: value.to_owned(),
        }),
    }
}

#[cfg(target_os = "linux")]
fn abstract_address(name: &[u8]) -> io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(target_os = "linux"))]
fn abstract_address(_name: &[u8]) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract sockets exist only on Linux",
    ))
}

/// One datagram from a fresh unbound socket, as `sd_notify` does. The socket is
/// non-blocking: if systemd's receive queue is full we drop the message (and log it)
/// rather than stall an executor thread.
fn send_datagram(addr: &SocketAddr, msg: &[u8]) -> io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    socket.set_nonblocking(true)?;
    let sent = socket.send_to_addr(msg, addr)?;
    if sent != msg.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sent {sent} of {} bytes", msg.len()),
        ));
    }
    Ok(())
}

/// Control characters become spaces; the result is at most [`MAX_STATUS_LEN`] bytes,
/// cut at a character boundary.
fn sanitize_status(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_STATUS_LEN));
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > MAX_STATUS_LEN {
            break;
        }
        out.push(c);
    }
    out
}

/// `CLOCK_MONOTONIC` in microseconds: the clock systemd compares `MONOTONIC_USEC` with.
///
/// Not `std::time::Instant` (opaque: its raw value cannot be read) and not
/// `/proc/uptime` (that is `CLOCK_BOOTTIME`, which keeps counting during suspend, has
/// 10 ms resolution, and is hidden by the unit's `ProcSubset=pid`). rustix reads the clock
/// through the vDSO without `unsafe` in this crate.
fn monotonic_usec() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let secs = u64::try_from(now.tv_sec).unwrap_or(0);
    let micros = u64::try_from(now.tv_nsec).unwrap_or(0) / 1_000;
    secs.saturating_mul(1_000_000).saturating_add(micros)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::sync::{Arc, Mutex};

    /// A bound datagram socket standing in for systemd's notify socket.
    struct FakeManager {
        socket: UnixDatagram,
        dir: tempfile::TempDir,
    }

    impl FakeManager {
        fn bind() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let socket = UnixDatagram::bind(dir.path().join("notify")).unwrap();
            socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            FakeManager { socket, dir }
        }

        fn path(&self) -> &Path {
            self.dir.path()
        }

        fn notify_socket(&self) -> OsString {
            self.path().join("notify").into_os_string()
        }

        fn recv(&self) -> String {
            let mut buf = vec![0u8; 8192];
            let n = self.socket.recv(&mut buf).unwrap();
            String::from_utf8(buf[..n].to_vec()).unwrap()
        }

        fn assert_nothing_queued(&self) {
            self.socket.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 16];
            let err = self.socket.recv(&mut buf).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        }
    }

    /// Runs `f` with a tracing subscriber local to this thread and returns what it logged.
    fn logs_of(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl io::Write for Buf {
            fn write(&mut self, data: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(data);
                Ok(data.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buf.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn sends_exact_datagrams_to_a_path_socket() {
        let manager = FakeManager::bind();
        let notifier = Notifier::new(Some(&manager.notify_socket()), None, None);

        notifier.ready();
        assert_eq!(manager.recv(), "READY=1");
        notifier.stopping();
        assert_eq!(manager.recv(), "STOPPING=1");
        notifier.watchdog();
        assert_eq!(manager.recv(), "WATCHDOG=1");
        notifier.status("pulling contoso.azurecr.io/app:stable (3/7 blobs)");
        assert_eq!(
            manager.recv(),
            "STATUS=pulling contoso.azurecr.io/app:stable (3/7 blobs)"
        );
        manager.assert_nothing_queued();
    }

    #[test]
    fn reloading_carries_the_monotonic_clock() {
        let manager = FakeManager::bind();
        let notifier = Notifier::new(Some(&manager.notify_socket()), None, None);

        let before = monotonic_usec();
        notifier.reloading();
        let after = monotonic_usec();

        let msg = manager.recv();
        let usec = msg
            .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
            .unwrap_or_else(|| panic!("unexpected datagram {msg:?}"));
        assert!(usec.bytes().all(|b| b.is_ascii_digit()), "{msg:?}");
        let usec: u64 = usec.parse().unwrap();
        assert!(before <= usec && usec <= after, "{before} <= {usec} <= {after}");
    }

    #[test]
    fn monotonic_clock_does_not_go_back_and_counts_in_microseconds() {
        let a = monotonic_usec();
        std::thread::sleep(Duration::from_millis(20));
        let b = monotonic_usec();
        assert!(a > 0);
        // 20 ms sleep: at least 20_000 us, and not off by a factor of 1000.
        assert!(b - a >= 20_000 && b - a < 20_000_000, "{a} -> {b}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("edgepull-test-{}-{}", std::process::id(), rand::random::<u64>());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();

        let notifier = Notifier::new(Some(OsStr::new(&format!("@{name}"))), None, None);
        notifier.ready();

        let mut buf = [0u8; 64];
        let n = socket.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn status_is_one_line_and_bounded() {
        let manager = FakeManager::bind();
        let notifier = Notifier::new(Some(&manager.notify_socket()), None, None);

        notifier.status("line one\nREADY=1\r\tend\u{7f}");
        assert_eq!(manager.recv(), "STATUS=line one READY=1  end ");

        let long = "é".repeat(MAX_STATUS_LEN); // 2 bytes each
        notifier.status(&long);
        let msg = manager.recv();
        let text = msg.strip_prefix("STATUS=").unwrap();
        assert_eq!(text.len(), MAX_STATUS_LEN);
        assert!(text.chars().all(|c| c == 'é'));

        // A cut inside a multi-byte character drops the whole character.
        let odd = format!("a{}", "é".repeat(MAX_STATUS_LEN));
        notifier.status(&odd);
        let msg = manager.recv();
        assert_eq!(msg.len(), "STATUS=".len() + MAX_STATUS_LEN - 1);
    }

    #[test]
    fn without_notify_socket_everything_is_a_no_op() {
        let logs = logs_of(|| {
            let notifier = Notifier::new(None, None, None);
            notifier.ready();
            notifier.reloading();
            notifier.stopping();
            notifier.status("x");
            notifier.watchdog();
            assert_eq!(notifier.watchdog_interval(), None);
        });
        assert_eq!(logs, "");
    }

    #[test]
    fn watchdog_interval_follows_usec_and_pid() {
        let own = 4242;
        let cases: &[(Option<u64>, Option<u32>, Option<Duration>)] = &[
            (None, None, None),
            (None, Some(own), None),
            (Some(0), None, None),
            (Some(60_000_000), None, Some(Duration::from_secs(30))),
            (Some(60_000_000), Some(own), Some(Duration::from_secs(30))),
            (Some(60_000_000), Some(own + 1), None),
            (Some(3), None, Some(Duration::from_nanos(1_500))),
        ];
        for &(usec, pid, want) in cases {
            assert_eq!(
                watchdog_interval(usec, pid, own),
                want,
                "usec={usec:?} pid={pid:?}"
            );
        }

        let ours = Notifier::new(None, Some(60_000_000), Some(std::process::id()));
        assert_eq!(ours.watchdog_interval(), Some(Duration::from_secs(30)));
        let theirs = Notifier::new(None, Some(60_000_000), Some(std::process::id().wrapping_add(1)));
        assert_eq!(theirs.watchdog_interval(), None);
    }

    #[test]
    fn raw_variables_are_parsed_strictly() {
        let pid = std::process::id().to_string();
        let n = Notifier::from_vars(None, Some(OsStr::new("60000000")), Some(OsStr::new(&pid)));
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(30)));

        for (usec, pid) in [("60s", None), ("+60000000", None), ("60000000", Some("me"))] {
            let logs = logs_of(|| {
                let n = Notifier::from_vars(None, Some(OsStr::new(usec)), pid.map(OsStr::new));
                assert_eq!(n.watchdog_interval(), None, "usec={usec:?} pid={pid:?}");
            });
            assert_eq!(logs.matches("is not a decimal number").count(), 1, "{logs}");
        }
    }

    #[test]
    fn unusable_socket_values_disable_notification_and_log_once() {
        let too_long = format!("/{}", "x".repeat(200));
        for value in ["run/systemd/notify", "vsock:2:1234", too_long.as_str()] {
            let logs = logs_of(|| {
                let notifier = Notifier::new(Some(OsStr::new(value)), None, None);
                assert!(notifier.target.is_none());
                notifier.ready();
                notifier.watchdog();
            });
            assert_eq!(logs.matches("sd_notify:").count(), 1, "{value}: {logs}");
        }
    }

    #[test]
    fn send_failures_are_logged_once_and_never_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-socket").into_os_string();
        let logs = logs_of(|| {
            let notifier = Notifier::new(Some(&missing), None, None);
            notifier.ready();
            notifier.watchdog();
            notifier.status("still here");
            notifier.stopping();
        });
        assert_eq!(logs.matches("sd_notify:").count(), 1, "{logs}");
        assert!(logs.contains("could not send READY=1"), "{logs}");
        assert!(
            logs.contains("further notification errors are not logged"),
            "{logs}"
        );
    }
}
