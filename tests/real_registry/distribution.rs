//! One distribution 2.8 process (`docker-registry serve <config.yml>`) on 127.0.0.1, TLS,
//! filesystem storage shared by every instance of a world. Its access log (gorilla's
//! combined format, on stdout) goes to `<name>-access.log`, its app log to `<name>.log`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::net::{accepts, free_port, wait_until};
use super::pki::PkiFiles;
use super::proc::{Daemon, command};
use super::tools::Tools;

/// How the instance authenticates.
#[derive(Debug, Clone)]
pub(crate) enum Auth {
    /// `auth: token` against the test's token server.
    Token {
        realm: String,
        service: String,
        issuer: String,
        rootcertbundle: PathBuf,
    },
    /// `auth: htpasswd` (Basic) with a bcrypt file.
    Htpasswd { path: PathBuf },
    /// No auth section: anonymous pull (and push).
    None,
}

/// What to start.
#[derive(Debug, Clone)]
pub(crate) struct RegistrySpec {
    /// File-name prefix and log tag.
    pub name: String,
    pub auth: Auth,
    /// `redirect` storage middleware `baseurl`: every blob GET/HEAD is answered with a 307 to
    /// `<scheme>://<host>/<storage path>` (2.8 keeps only scheme and host of the baseurl).
    pub redirect: Option<String>,
    /// `storage.maintenance.readonly`: refuse pushes.
    pub read_only: bool,
}

/// A running instance; killed on drop.
pub(crate) struct Registry {
    pub name: String,
    pub port: u16,
    pub access_log: PathBuf,
    pub app_log: PathBuf,
    pub config: PathBuf,
    _daemon: Daemon,
}

fn q(s: impl AsRef<str>) -> String {
    // A JSON string is a valid YAML double-quoted scalar.
    serde_json::to_string(s.as_ref()).expect("json string")
}

fn qp(p: &Path) -> String {
    q(p.to_str().expect("utf-8 path"))
}

impl Registry {
    /// Write the config under `dir` and start the instance, retrying with another port if
    /// the chosen one was taken in the meantime.
    pub(crate) fn start(
        tools: &Tools,
        dir: &Path,
        storage: &Path,
        pki: &PkiFiles,
        spec: &RegistrySpec,
    ) -> Self {
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port(&[Ipv4Addr::LOCALHOST]);
            match Self::try_start(tools, dir, storage, pki, spec, port) {
                Ok(r) => return r,
                Err(e) => last = e,
            }
            if !last.contains("address already in use") {
                break;
            }
        }
        panic!("registry {} did not start: {last}", spec.name);
    }

    fn try_start(
        tools: &Tools,
        dir: &Path,
        storage: &Path,
        pki: &PkiFiles,
        spec: &RegistrySpec,
        port: u16,
    ) -> Result<Self, String> {
        let name = &spec.name;
        let config = dir.join(format!("{name}.yml"));
        let access_log = dir.join(format!("{name}-access.log"));
        let app_log = dir.join(format!("{name}.log"));
        let _ = std::fs::remove_file(&app_log);
        let _ = std::fs::remove_file(&access_log);

        let mut yml = format!(
            "version: 0.1\n\
             log:\n  level: info\n  formatter: text\n  fields:\n    instance: {name}\n\
             storage:\n  filesystem:\n    rootdirectory: {storage}\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n    readonly:\n      enabled: {ro}\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: edgepull-real-registry-tests\n  \
             tls:\n    certificate: {cert}\n    key: {key}\n  \
             headers:\n    X-Content-Type-Options: [nosniff]\n",
            name = q(name),
            storage = qp(storage),
            ro = spec.read_only,
            cert = qp(&pki.cert),
            key = qp(&pki.key),
        );
        match &spec.auth {
            Auth::Token {
                realm,
                service,
                issuer,
                rootcertbundle,
            } => yml.push_str(&format!(
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                q(realm),
                q(service),
                q(issuer),
                qp(rootcertbundle)
            )),
            Auth::Htpasswd { path } => yml.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: {}\n    path: {}\n",
                q("edgepull-test-basic"),
                qp(path)
            )),
            Auth::None => {}
        }
        if let Some(base) = &spec.redirect {
            yml.push_str(&format!(
                "middleware:\n  storage:\n    - name: redirect\n      options:\n        baseurl: {}\n",
                q(base)
            ));
        }
        std::fs::write(&config, yml).map_err(|e| format!("write config: {e}"))?;

        let mut cmd = command(&tools.registry);
        cmd.arg("serve").arg(&config);
        // Keep the instance away from anything in the environment that configures it.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("REGISTRY_") {
                cmd.env_remove(k);
            }
        }
        let mut daemon = Daemon::spawn(&format!("registry {name}"), cmd, &access_log, &app_log)
            .map_err(|e| e.to_string())?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let app = app_log.clone();
        wait_until(
            &format!("registry {name} on {addr}"),
            Duration::from_secs(20),
            || accepts(addr),
            || {
                daemon.exited().map(|status| {
                    format!(
                        "exited ({status}): {}",
                        std::fs::read_to_string(&app).unwrap_or_default()
                    )
                })
            },
        )?;
        Ok(Self {
            name: name.clone(),
            port,
            access_log,
            app_log,
            config,
            _daemon: daemon,
        })
    }

    /// Requests the instance logged so far.
    pub(crate) fn access(&self) -> Vec<AccessLine> {
        std::fs::read_to_string(&self.access_log)
            .unwrap_or_default()
            .lines()
            .filter_map(AccessLine::parse)
            .collect()
    }

    /// Its app log so far.
    pub(crate) fn app_log_text(&self) -> String {
        std::fs::read_to_string(&self.app_log).unwrap_or_default()
    }
}

/// One line of the combined access log:
/// `127.0.0.1 - - [02/Jan/2006:15:04:05 +0000] "GET /v2/ HTTP/1.1" 401 87 "" "edgepull/0.1.0"`.
#[derive(Debug, Clone)]
pub(crate) struct AccessLine {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub bytes: u64,
    pub user_agent: String,
    pub raw: String,
}

impl AccessLine {
    pub(crate) fn parse(line: &str) -> Option<Self> {
        let (_, rest) = line.split_once('"')?;
        let (request, rest) = rest.split_once('"')?;
        let mut req = request.split(' ');
        let method = req.next()?.to_string();
        let path = req.next()?.to_string();
        let mut nums = rest.split_whitespace();
        let status = nums.next()?.parse().ok()?;
        let bytes = nums.next()?.parse().unwrap_or(0);
        let user_agent = rest.rsplit('"').nth(1).unwrap_or_default().to_string();
        Some(Self {
            method,
            path,
            status,
            bytes,
            user_agent,
            raw: line.to_string(),
        })
    }

    /// A blob GET (`/v2/<repo>/blobs/<digest>`).
    pub(crate) fn is_blob_get(&self) -> bool {
        self.method == "GET" && self.path.starts_with("/v2/") && self.path.contains("/blobs/sha256:")
    }

    /// The request came from edgepull.
    pub(crate) fn by_edgepull(&self) -> bool {
        self.user_agent.starts_with("edgepull/")
    }
}
