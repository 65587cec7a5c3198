//! Debian's tinyproxy as the device's HTTP `CONNECT` proxy: started by the test on
//! 127.0.0.1 with a config file and log of its own, never the system service.
//!
//! - `LogLevel Connect` logs every request line, so each tunnel shows up as
//!   `CONNECT … Request (file descriptor N): CONNECT <host>:<port> HTTP/1.1`.
//! - `ConnectPort` lines allow exactly the ports the test names; `Allow 127.0.0.1` only.
//! - Names are resolved by tinyproxy from a hosts file of its own: it runs in a private
//!   mount namespace (`unshare --mount`, as root) where that file is bind-mounted over
//!   `/etc/hosts`. Neither the machine's `/etc/hosts` nor edgepull's `resolve` is involved:
//!   with a proxy, edgepull resolves nothing but the proxy (here an address).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::net::{accepts, free_port, wait_until};
use super::proc::{Daemon, command};
use super::tools::Tools;

/// A running tinyproxy; killed on drop.
pub(crate) struct TinyProxy {
    pub port: u16,
    log: PathBuf,
    _daemon: Daemon,
}

impl TinyProxy {
    /// Start with `hosts` as its name table and CONNECT allowed to `connect_ports` only;
    /// files go under `<dir>/tinyproxy`. Retries with another port if the chosen one was
    /// taken in the meantime.
    pub(crate) fn start(
        tools: &Tools,
        dir: &Path,
        hosts: &[(&str, Ipv4Addr)],
        connect_ports: &[u16],
    ) -> Self {
        let dir = dir.join("tinyproxy");
        std::fs::create_dir_all(&dir).expect("tinyproxy dir");
        let mut table = String::from("127.0.0.1 localhost\n");
        for (name, ip) in hosts {
            table.push_str(&format!("{ip} {name}\n"));
        }
        let hosts_file = dir.join("hosts");
        std::fs::write(&hosts_file, table).expect("write hosts");
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port(&[Ipv4Addr::LOCALHOST]);
            match Self::try_start(tools, &dir, &hosts_file, connect_ports, port) {
                Ok(proxy) => return proxy,
                Err(e) => last = e,
            }
            if !last.contains("Address already in use") && !last.contains("address already in use") {
                break;
            }
        }
        panic!("tinyproxy did not start: {last}");
    }

    fn try_start(
        tools: &Tools,
        dir: &Path,
        hosts_file: &Path,
        connect_ports: &[u16],
        port: u16,
    ) -> Result<Self, String> {
        let log = dir.join("tinyproxy.log");
        let mut conf = format!(
            "Port {port}\n\
             Listen 127.0.0.1\n\
             Timeout 60\n\
             LogFile \"{}\"\n\
             LogLevel Connect\n\
             MaxClients 32\n\
             Allow 127.0.0.1\n\
             DisableViaHeader Yes\n",
            log.display()
        );
        for p in connect_ports {
            conf.push_str(&format!("ConnectPort {p}\n"));
        }
        let conf_path = dir.join("tinyproxy.conf");
        std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
        std::fs::write(&log, b"").map_err(|e| e.to_string())?;
        let out = dir.join("tinyproxy-stdout.log");
        let mut cmd = command(&tools.unshare);
        cmd.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
            .arg(r#"mount --bind "$1" /etc/hosts && exec "$2" -d -c "$3""#)
            .arg("sh")
            .arg(hosts_file)
            .arg(&tools.tinyproxy)
            .arg(&conf_path);
        let mut daemon = Daemon::spawn("tinyproxy", cmd, &out, &out).map_err(|e| e.to_string())?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        wait_until(
            "tinyproxy",
            Duration::from_secs(20),
            || accepts(addr),
            || {
                daemon.exited().map(|status| {
                    format!(
                        "exited ({status}): {}{}",
                        std::fs::read_to_string(&out).unwrap_or_default(),
                        std::fs::read_to_string(&log).unwrap_or_default()
                    )
                })
            },
        )?;
        Ok(Self {
            port,
            log,
            _daemon: daemon,
        })
    }

    /// `http://127.0.0.1:<port>`, for edgepull's `registry.proxy`.
    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The whole log.
    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log's `CONNECT` request lines, whole.
    pub(crate) fn connect_lines(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| l.contains("]: Request (file descriptor") && l.contains("): CONNECT "))
            .map(str::to_string)
            .collect()
    }

    /// The `host:port` of every `CONNECT` request, in order.
    pub(crate) fn connects(&self) -> Vec<String> {
        self.connect_lines()
            .iter()
            .filter_map(|l| {
                let (_, request) = l.split_once("): CONNECT ")?;
                Some(request.split_whitespace().next()?.to_string())
            })
            .collect()
    }
}
