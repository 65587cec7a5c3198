//! journald's native protocol, written by hand: one datagram per entry to an `AF_UNIX`
//! socket (<https://systemd.io/JOURNAL_NATIVE_PROTOCOL/>).
//!
//! Owns: encoding an entry ([`encode`]: `KEY=value\n`, or `KEY\n` + 64-bit little-endian
//! length + value + `\n` for a value with a newline) and sending it ([`Journal`]). The
//! socket is journald's, `/run/systemd/journal/socket`, unless `EDGEPULL_JOURNAL_SOCKET`
//! names another ([`SOCKET_ENV`]: for tests and diagnostics, so an entry can be read back
//! exactly as journald would get it). Each value is cut at [`MAX_VALUE_BYTES`], so an entry
//! always fits a datagram. Never panics and never blocks for long: a send that cannot be
//! made within [`SEND_TIMEOUT`] drops the entry.

use std::ffi::OsString;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

/// journald's native socket.
pub(crate) const DEFAULT_SOCKET: &str = "/run/systemd/journal/socket";
/// The environment variable that points the journal output at another socket.
pub(crate) const SOCKET_ENV: &str = "EDGEPULL_JOURNAL_SOCKET";
/// Longest value sent for one field; longer ones are cut at a character boundary and end
/// in `…`.
pub(crate) const MAX_VALUE_BYTES: usize = 16 * 1024;
/// Longest wait for room in the socket's queue.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// A connection to the journal.
#[derive(Debug)]
pub(crate) struct Journal {
    socket: UnixDatagram,
    path: PathBuf,
}

impl Journal {
    /// Open the journal at `socket` ([`SOCKET_ENV`]'s value, else [`DEFAULT_SOCKET`]);
    /// fails when nothing listens there (an empty datagram, which journald ignores, is sent
    /// to find out).
    pub(crate) fn open(socket: Option<OsString>) -> io::Result<Self> {
        let path = socket
            .filter(|s| !s.is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_SOCKET), PathBuf::from);
        let journal = Self {
            socket: UnixDatagram::unbound()?,
            path,
        };
        journal.socket.set_write_timeout(Some(SEND_TIMEOUT))?;
        journal.send(&[])?;
        Ok(journal)
    }

    /// Send one encoded entry.
    pub(crate) fn send(&self, entry: &[u8]) -> io::Result<()> {
        self.socket.send_to(entry, &self.path).map(|_| ())
    }
}

/// One journal entry from `fields` (names already valid journal field names).
pub(crate) fn encode<'a>(fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    for (name, value) in fields {
        let value = cut(value);
        if value.contains('\n') {
            out.extend_from_slice(name.as_bytes());
            out.push(b'\n');
            out.extend_from_slice(&(value.len() as u64).to_le_bytes());
            out.extend_from_slice(value.as_bytes());
        } else {
            out.extend_from_slice(name.as_bytes());
            out.push(b'=');
            out.extend_from_slice(value.as_bytes());
        }
        out.push(b'\n');
    }
    out
}

/// `value`, at most [`MAX_VALUE_BYTES`] long.
fn cut(value: &str) -> std::borrow::Cow<'_, str> {
    if value.len() <= MAX_VALUE_BYTES {
        return value.into();
    }
    let mut end = MAX_VALUE_BYTES - '…'.len_utf8();
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &value[..end]).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_and_binary_fields() {
        let e = encode([("MESSAGE", "pull done"), ("ERROR", "a\nb"), ("EMPTY", "")]);
        let mut want = b"MESSAGE=pull done\nERROR\n".to_vec();
        want.extend_from_slice(&3u64.to_le_bytes());
        want.extend_from_slice(b"a\nb\nEMPTY=\n");
        assert_eq!(e, want);
    }

    #[test]
    fn long_values_are_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_VALUE_BYTES);
        let e = encode([("M", long.as_str())]);
        let value = std::str::from_utf8(&e[2..e.len() - 1]).unwrap();
        assert!(value.len() <= MAX_VALUE_BYTES, "{}", value.len());
        assert!(value.ends_with('…'));
        assert!(value.trim_end_matches('…').chars().all(|c| c == 'é'));
        assert_eq!(cut("short"), "short");
    }

    #[test]
    fn open_fails_without_a_listener_and_sends_to_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        assert!(Journal::open(Some(path.clone().into())).is_err());
        let listener = UnixDatagram::bind(&path).unwrap();
        let j = Journal::open(Some(path.into())).unwrap();
        j.send(&encode([("MESSAGE", "hi")])).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(listener.recv(&mut buf).unwrap(), 0, "the probe is empty");
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"MESSAGE=hi\n");
    }
}
