//! nginx playing the regions' dedicated data endpoints: one foreground process
//! (`master_process off`, so SIGKILL leaves no workers behind) with one TLS site per region,
//! each on its own loopback address and the same port, serving the registry's storage root
//! read-only with Range support. Each site logs to `<region>.log`, one line per request:
//!
//! `<unix time> <status> <method> <uri> range="<Range or ->" sent=<body bytes> auth=<yes|no> host=<Host> rt=<seconds> pauth=<yes|no>`
//!
//! (the time is when the request finished; `rt` is how long it took).
//!
//! `auth` and `pauth` say only whether an `Authorization` / `Proxy-Authorization` header
//! arrived (a `map`), never its value.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::net::{accepts, free_port, wait_until};
use super::pki::PkiFiles;
use super::proc::{Daemon, command};
use super::tools::Tools;

/// One region's site.
#[derive(Debug, Clone)]
pub(crate) struct Site {
    /// `eastus`, `westus`.
    pub region: &'static str,
    /// Its loopback address.
    pub ip: Ipv4Addr,
    /// `limit_rate` in bytes per second (per connection), if any.
    pub rate: Option<u64>,
}

impl Site {
    /// `contoso.<region>.data.azurecr.test`.
    pub(crate) fn host(&self) -> String {
        format!("contoso.{}.data.azurecr.test", self.region)
    }
}

/// The running nginx; killed on drop.
pub(crate) struct Nginx {
    pub port: u16,
    pub sites: Vec<Site>,
    dir: PathBuf,
    _daemon: Daemon,
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

impl Nginx {
    /// Start serving `root` on every site (same port on each address).
    pub(crate) fn start(tools: &Tools, dir: &Path, root: &Path, pki: &PkiFiles, sites: Vec<Site>) -> Self {
        let ips: Vec<Ipv4Addr> = sites.iter().map(|s| s.ip).collect();
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port(&ips);
            match Self::try_start(tools, dir, root, pki, &sites, port) {
                Ok(daemon) => {
                    return Self {
                        port,
                        sites,
                        dir: dir.to_path_buf(),
                        _daemon: daemon,
                    };
                }
                Err(e) => last = e,
            }
            if !last.contains("Address already in use") {
                break;
            }
        }
        panic!("nginx did not start: {last}");
    }

    fn try_start(
        tools: &Tools,
        dir: &Path,
        root: &Path,
        pki: &PkiFiles,
        sites: &[Site],
        port: u16,
    ) -> Result<Daemon, String> {
        let tmp = dir.join("nginx-tmp");
        std::fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
        let error_log = dir.join("nginx-error.log");
        let _ = std::fs::remove_file(&error_log);
        let mut conf = format!(
            "master_process off;\n\
             worker_processes 1;\n\
             pid {pid};\n\
             error_log {err} info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
             \x20 default_type application/octet-stream;\n\
             \x20 client_body_temp_path {tmp}/body;\n\
             \x20 proxy_temp_path {tmp}/proxy;\n\
             \x20 fastcgi_temp_path {tmp}/fastcgi;\n\
             \x20 uwsgi_temp_path {tmp}/uwsgi;\n\
             \x20 scgi_temp_path {tmp}/scgi;\n\
             \x20 sendfile on;\n\
             \x20 server_tokens off;\n\
             \x20 keepalive_timeout 30s;\n\
             \x20 map $http_authorization $auth_present {{ default yes; \"\" no; }}\n\
             \x20 map $http_proxy_authorization $proxy_auth_present {{ default yes; \"\" no; }}\n\
             \x20 log_format data '$msec $status $request_method $uri range=\"$http_range\" \
             sent=$body_bytes_sent auth=$auth_present host=$http_host rt=$request_time \
             pauth=$proxy_auth_present';\n",
            pid = p(&dir.join("nginx.pid")),
            err = p(&error_log),
            tmp = p(&tmp),
        );
        for site in sites {
            let rate = site
                .rate
                .map(|r| format!("    limit_rate {r};\n"))
                .unwrap_or_default();
            conf.push_str(&format!(
                "  server {{\n\
                 \x20   listen {ip}:{port} ssl;\n\
                 \x20   server_name {host};\n\
                 \x20   ssl_certificate {cert};\n\
                 \x20   ssl_certificate_key {key};\n\
                 \x20   access_log {log} data;\n\
                 \x20   root {root};\n\
                 {rate}\
                 \x20   location / {{ limit_except GET {{ deny all; }} }}\n\
                 \x20 }}\n",
                ip = site.ip,
                host = site.host(),
                cert = p(&pki.cert),
                key = p(&pki.key),
                log = p(&dir.join(format!("{}.log", site.region))),
                root = p(root),
            ));
        }
        conf.push_str("}\n");
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
        for site in sites {
            // Exists (empty) from the start: "nothing logged" is then an empty file.
            std::fs::write(dir.join(format!("{}.log", site.region)), b"").map_err(|e| e.to_string())?;
        }

        let mut cmd = command(&tools.nginx);
        cmd.arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(&error_log)
            .arg("-c")
            .arg(&conf_path)
            .args(["-g", "daemon off;"]);
        let out = dir.join("nginx-stdout.log");
        let mut daemon = Daemon::spawn("nginx", cmd, &out, &out).map_err(|e| e.to_string())?;
        let addrs: Vec<SocketAddr> = sites.iter().map(|s| SocketAddr::from((s.ip, port))).collect();
        wait_until(
            "nginx",
            Duration::from_secs(20),
            || addrs.iter().all(|a| accepts(*a)),
            || {
                daemon.exited().map(|status| {
                    format!(
                        "exited ({status}): {}{}",
                        std::fs::read_to_string(&error_log).unwrap_or_default(),
                        std::fs::read_to_string(&out).unwrap_or_default()
                    )
                })
            },
        )?;
        Ok(daemon)
    }

    /// The site of `region`.
    pub(crate) fn site(&self, region: &str) -> &Site {
        self.sites
            .iter()
            .find(|s| s.region == region)
            .unwrap_or_else(|| panic!("no nginx site for {region}"))
    }

    /// `contoso.<region>.data.azurecr.test:<port>`.
    pub(crate) fn endpoint(&self, region: &str) -> String {
        format!("{}:{}", self.site(region).host(), self.port)
    }

    /// The raw log of `region`.
    pub(crate) fn log_text(&self, region: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{region}.log"))).unwrap_or_default()
    }

    /// Parsed log lines of `region`.
    pub(crate) fn log(&self, region: &str) -> Vec<DataLine> {
        self.log_text(region)
            .lines()
            .map(|l| DataLine::parse(l).unwrap_or_else(|| panic!("unparsable nginx log line: {l}")))
            .collect()
    }
}

/// One request a data endpoint served.
#[derive(Debug, Clone)]
pub(crate) struct DataLine {
    /// Unix time (seconds, ms precision) the request finished.
    pub t: f64,
    pub status: u16,
    pub method: String,
    pub uri: String,
    /// The `Range` header, if one came.
    pub range: Option<String>,
    /// Body bytes sent.
    pub sent: u64,
    /// Whether an `Authorization` header came.
    pub auth: bool,
    /// Whether a `Proxy-Authorization` header came.
    pub proxy_auth: bool,
    pub host: String,
    /// `$request_time`: seconds from the first request byte to the log line.
    pub request_time: f64,
    pub raw: String,
}

impl DataLine {
    pub(crate) fn parse(line: &str) -> Option<Self> {
        let mut it = line.split_whitespace();
        let t = it.next()?.parse().ok()?;
        let status = it.next()?.parse().ok()?;
        let method = it.next()?.to_string();
        let uri = it.next()?.to_string();
        let range = it.next()?.strip_prefix("range=\"")?.strip_suffix('"')?;
        let sent = it.next()?.strip_prefix("sent=")?.parse().ok()?;
        let auth = match it.next()?.strip_prefix("auth=")? {
            "yes" => true,
            "no" => false,
            _ => return None,
        };
        let host = it.next()?.strip_prefix("host=")?.to_string();
        let request_time = it.next()?.strip_prefix("rt=")?.parse().ok()?;
        let proxy_auth = match it.next()?.strip_prefix("pauth=")? {
            "yes" => true,
            "no" => false,
            _ => return None,
        };
        Some(Self {
            t,
            status,
            method,
            uri,
            range: (range != "-" && !range.is_empty()).then(|| range.to_string()),
            sent,
            auth,
            proxy_auth,
            host,
            request_time,
            raw: line.to_string(),
        })
    }

    /// Unix time the request started.
    pub(crate) fn started(&self) -> f64 {
        self.t - self.request_time
    }

    /// The blob this request was for: the hex in `.../blobs/sha256/<2>/<hex>/data`.
    pub(crate) fn blob_hex(&self) -> Option<&str> {
        let rest = self.uri.strip_prefix("/docker/registry/v2/blobs/sha256/")?;
        let (_, rest) = rest.split_once('/')?;
        rest.strip_suffix("/data")
    }
}
