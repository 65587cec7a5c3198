//! One test's world, all on loopback, torn down on drop (processes first, then the temp dir):
//!
//! | what | where | role |
//! | --- | --- | --- |
//! | token server (in-process) | `https://127.0.0.1:<t>/token` | Docker token auth, ES256 JWTs |
//! | nginx site eastus | `contoso.eastus.data.azurecr.test` = 127.0.0.2:`<d>` | the region's data endpoint |
//! | nginx site westus | `contoso.westus.data.azurecr.test` = 127.0.0.3:`<d>` | the other region |
//! | registry `direct` | 127.0.0.1:`<p>` | token auth, no redirect, read-write: skopeo pushes and pulls here |
//! | registries the test asks for | `contoso.azurecr.test` = 127.0.0.1:`<q>` | what edgepull pulls from: token, htpasswd or no auth, redirect to a region or none, read-only |
//!
//! Every registry instance and nginx serve the same storage directory, so what skopeo
//! pushed through `direct` is what the login servers describe and the data endpoints send.
//! skopeo reaches `direct` by address because it resolves names through the system (the
//! tests never touch /etc/hosts); a redirecting instance would send skopeo to
//! `contoso.<region>.data.azurecr.test`, which only edgepull's `resolve` config can reach.
//! The realm is an address for the same reason.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::distribution::{Auth, Registry, RegistrySpec};
use super::nginx::{Nginx, Site};
use super::pki::{Pki, PkiFiles};
use super::proc::{Daemon, Finished, command, run};
use super::tokens::{TokenOptions, TokenServer, User};
use super::tools::{Tools, tools};

/// The login server's name (and the token `service`).
pub(crate) const LOGIN_HOST: &str = "contoso.azurecr.test";
/// The token issuer the registries trust.
pub(crate) const ISSUER: &str = "edgepull-real-registry-tests";
/// The repository every test uses.
pub(crate) const REPO: &str = "app";
/// eastus's data endpoint address.
pub(crate) const EASTUS_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// westus's data endpoint address.
pub(crate) const WESTUS_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
/// The device's platform.
pub(crate) const DEVICE_PLATFORM: &str = "linux/arm64";

/// How a world is set up.
#[derive(Debug, Clone)]
pub(crate) struct WorldOptions {
    /// nginx `limit_rate` for eastus (bytes per second per connection).
    pub eastus_rate: Option<u64>,
    /// Token lifetime.
    pub token_lifetime: Duration,
    /// Make the registry itself refuse tokens older than `token_lifetime`.
    pub enforce_token_lifetime: bool,
}

impl Default for WorldOptions {
    fn default() -> Self {
        Self {
            eastus_rate: None,
            token_lifetime: Duration::from_secs(300),
            enforce_token_lifetime: false,
        }
    }
}

/// How edgepull and a registry instance authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthKind {
    /// Docker token auth against the world's token server.
    Token,
    /// htpasswd (Basic) on the registry itself.
    Basic,
    /// None.
    Anonymous,
}

/// See the module docs.
pub(crate) struct World {
    pub tools: Tools,
    pub pki: PkiFiles,
    pub tokens: TokenServer,
    pub nginx: Nginx,
    /// Token auth, no redirect, read-write; skopeo's registry.
    pub direct: Registry,
    /// The registries' storage root (also nginx's document root).
    pub storage: PathBuf,
    /// Pull-only account (edgepull's).
    pub device: User,
    /// Pull+push account (skopeo's pushes).
    pub pusher: User,
    /// Last: removed after every process is gone.
    pub dir: tempfile::TempDir,
}

/// Where worlds live: tmpfs (/dev/shm) when there is one. distribution fsyncs every file
/// of every upload; on tmpfs that costs nothing, which halves the 200-layer push.
fn scratch_base() -> PathBuf {
    let shm = Path::new("/dev/shm");
    let writable = tempfile::Builder::new()
        .prefix("edgepull-realreg-probe-")
        .tempfile_in(shm)
        .is_ok();
    if writable {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

fn hex_secret() -> String {
    edgepull_testkit::random_bytes(16)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl World {
    /// Start the world, or `None` when a tool is missing outside CI (already reported).
    pub(crate) fn start(opts: WorldOptions) -> Option<Self> {
        let tools = tools()?;
        edgepull::registry::http::install_crypto_provider();
        let dir = tempfile::Builder::new()
            .prefix("edgepull-realreg-")
            .tempdir_in(scratch_base())
            .expect("temp dir");
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).expect("storage dir");

        let pki = Pki::generate();
        let files = pki.write(dir.path());
        let device = User {
            name: "device-42".into(),
            password: hex_secret(),
            actions: vec!["pull"],
        };
        let pusher = User {
            name: "pusher".into(),
            password: hex_secret(),
            actions: vec!["pull", "push"],
        };
        let Pki {
            ca_der,
            tls_server,
            signing_cert_der,
            signing_key,
            ..
        } = pki;
        let tokens = TokenServer::start(
            TokenOptions {
                service: LOGIN_HOST.into(),
                issuer: ISSUER.into(),
                lifetime: opts.token_lifetime,
                enforce_at_registry: opts.enforce_token_lifetime,
            },
            vec![device.clone(), pusher.clone()],
            signing_key,
            &[&signing_cert_der, &ca_der],
            tls_server,
        );
        let nginx = Nginx::start(
            &tools,
            dir.path(),
            &storage,
            &files,
            vec![
                Site {
                    region: "eastus",
                    ip: EASTUS_IP,
                    rate: opts.eastus_rate,
                },
                Site {
                    region: "westus",
                    ip: WESTUS_IP,
                    rate: None,
                },
            ],
        );
        let direct_spec = RegistrySpec {
            name: "direct".into(),
            auth: Auth::Token {
                realm: tokens.realm(),
                service: LOGIN_HOST.into(),
                issuer: ISSUER.into(),
                rootcertbundle: files.ca.clone(),
            },
            redirect: None,
            read_only: false,
        };
        let direct = Registry::start(&tools, dir.path(), &storage, &files, &direct_spec);
        Some(Self {
            tools,
            pki: files,
            tokens,
            nginx,
            direct,
            storage,
            device,
            pusher,
            dir,
        })
    }

    /// The world's temp dir.
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Start a read-only login server instance over the world's storage. `redirect` names
    /// the region whose data endpoint the `redirect` middleware sends blob GETs to.
    pub(crate) fn registry(&self, name: &str, auth: AuthKind, redirect: Option<&str>) -> Registry {
        let auth = match auth {
            AuthKind::Token => Auth::Token {
                realm: self.tokens.realm(),
                service: LOGIN_HOST.into(),
                issuer: ISSUER.into(),
                rootcertbundle: self.pki.ca.clone(),
            },
            AuthKind::Basic => Auth::Htpasswd {
                path: self.htpasswd_file(),
            },
            AuthKind::Anonymous => Auth::None,
        };
        let spec = RegistrySpec {
            name: name.into(),
            auth,
            redirect: redirect.map(|region| format!("https://{}/", self.nginx.endpoint(region))),
            read_only: true,
        };
        Registry::start(&self.tools, self.path(), &self.storage, &self.pki, &spec)
    }

    /// A bcrypt htpasswd file for the device account (made once).
    pub(crate) fn htpasswd_file(&self) -> PathBuf {
        let path = self.path().join("htpasswd");
        if !path.exists() {
            let mut cmd = command(&self.tools.htpasswd);
            cmd.args(["-nbB", &self.device.name, &self.device.password]);
            let out = run(cmd, Duration::from_secs(30)).expect_success("htpasswd");
            std::fs::write(&path, out.stdout.trim_end().to_string() + "\n").expect("write htpasswd");
        }
        path
    }

    // ----- skopeo and umoci -----

    /// `skopeo --insecure-policy <args>` (no policy.json needed; signatures are not tested).
    pub(crate) fn skopeo(&self, args: &[&str]) -> Finished {
        let mut cmd = command(&self.tools.skopeo);
        cmd.arg("--insecure-policy").args(args);
        cmd.env("TMPDIR", self.path());
        run(cmd, Duration::from_secs(120))
    }

    /// Push `tag` of the OCI layout at `layout` to `direct` as `app:<tag>`, keeping every
    /// digest (`--preserve-digests`; `--all` for an index).
    pub(crate) fn push(&self, layout: &Path, tag: &str, all: bool) {
        let src = format!("oci:{}:{tag}", layout.display());
        let dst = format!("docker://127.0.0.1:{}/{REPO}:{tag}", self.direct.port);
        let creds = format!("{}:{}", self.pusher.name, self.pusher.password);
        let cert_dir = self.pki.cert_dir.display().to_string();
        let mut args = vec!["copy", "--preserve-digests", "--dest-cert-dir", &cert_dir];
        args.extend(["--dest-creds", &creds]);
        if all {
            args.push("--all");
        }
        args.extend([src.as_str(), dst.as_str()]);
        self.skopeo(&args)
            .expect_success(&format!("skopeo push of {tag}"));
    }

    /// `umoci <args>`.
    pub(crate) fn umoci(&self, args: &[&str]) -> Finished {
        let mut cmd = command(&self.tools.umoci);
        cmd.args(args);
        run(cmd, Duration::from_secs(120))
    }

    // ----- edgepull -----

    /// `contoso.azurecr.test:<port>` of a login server instance.
    pub(crate) fn login(&self, reg: &Registry) -> String {
        format!("{LOGIN_HOST}:{}", reg.port)
    }

    /// `contoso.azurecr.test:<port>/app:<tag>`.
    pub(crate) fn reference(&self, reg: &Registry, tag: &str) -> String {
        format!("{}/{REPO}:{tag}", self.login(reg))
    }

    /// Write an edgepull config for pulling from `reg` as the eastus device into `store`,
    /// let `edit` change it, and return its path.
    pub(crate) fn config(
        &self,
        reg: &Registry,
        auth: AuthKind,
        store: &Path,
        edit: impl FnOnce(&mut Value),
    ) -> PathBuf {
        let password_file = self.path().join("device.password");
        std::fs::write(&password_file, &self.device.password).expect("password file");
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        let mut cfg = json!({
            "registry": {
                "login_server": self.login(reg),
                "region": "eastus",
                "data_endpoints": [self.nginx.endpoint("eastus")],
                "ca_file": self.pki.ca,
                "resolve": {
                    LOGIN_HOST: "127.0.0.1",
                    self.nginx.site("eastus").host(): EASTUS_IP.to_string(),
                },
            },
            "store": {"path": store, "checkpoint_bytes": 256 * 1024, "lock_wait_secs": 5},
            "platform": DEVICE_PLATFORM,
            "concurrency": 3,
            "timeouts": {"connect_secs": 5, "idle_read_secs": 20},
        });
        match auth {
            AuthKind::Token => {
                cfg["registry"]["realm_hosts"] = json!([self.tokens.host_port()]);
                cfg["registry"]["auth"] =
                    json!({"username": self.device.name, "password_file": password_file});
            }
            AuthKind::Basic => {
                cfg["registry"]["auth"] =
                    json!({"username": self.device.name, "password_file": password_file});
            }
            AuthKind::Anonymous => {}
        }
        edit(&mut cfg);
        let path = store.with_extension("config.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&cfg).expect("json")).expect("write config");
        path
    }

    fn edgepull_command(&self, config: &Path, args: &[&str]) -> std::process::Command {
        let mut cmd = command(Path::new(env!("CARGO_BIN_EXE_edgepull")));
        cmd.arg("--config").arg(config).args(args);
        cmd.env("EDGEPULL_LOG", "info").env_remove("EDGEPULL_CONFIG");
        cmd
    }

    /// Run the real edgepull binary to completion.
    pub(crate) fn edgepull(&self, config: &Path, args: &[&str]) -> Finished {
        run(self.edgepull_command(config, args), Duration::from_secs(120))
    }

    /// `edgepull pull --no-progress <refs>`.
    pub(crate) fn pull(&self, config: &Path, refs: &[&str]) -> Finished {
        let mut args = vec!["pull", "--no-progress"];
        args.extend_from_slice(refs);
        self.edgepull(config, &args)
    }

    /// Start edgepull in the background (killed on drop); output goes to `<log>`.
    pub(crate) fn spawn_edgepull(&self, config: &Path, args: &[&str], log: &Path) -> Daemon {
        self.spawn_edgepull_env(config, args, log, &[])
    }

    /// [`World::spawn_edgepull`] with extra environment variables (the debug builds' test
    /// seams, e.g. `EDGEPULL_TEST_CLOCK_FILE`).
    pub(crate) fn spawn_edgepull_env(
        &self,
        config: &Path,
        args: &[&str],
        log: &Path,
        env: &[(&str, &Path)],
    ) -> Daemon {
        let mut cmd = self.edgepull_command(config, args);
        cmd.envs(env.iter().copied());
        Daemon::spawn("edgepull", cmd, log, log).expect("spawn edgepull")
    }
}

/// A response to [`World::https_get`].
#[derive(Debug)]
pub(crate) struct Probe {
    pub status: u16,
    pub www_authenticate: Option<String>,
    pub body: String,
}

impl World {
    /// GET `url` (an address, trusted through the world's CA) with an optional
    /// `Authorization` value, outside edgepull: for checking what the servers themselves do.
    pub(crate) fn https_get(&self, url: &str, authorization: Option<&str>) -> Probe {
        let ca = std::fs::read(&self.pki.ca).expect("read ca");
        let certs = reqwest::Certificate::from_pem_bundle(&ca).expect("ca pem");
        let client = reqwest::Client::builder()
            .tls_certs_only(certs)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("probe client");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut req = client.get(url);
            if let Some(a) = authorization {
                req = req.header(reqwest::header::AUTHORIZATION, a);
            }
            let resp = req.send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
            let status = resp.status().as_u16();
            let www_authenticate = resp
                .headers()
                .get(reqwest::header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = resp.text().await.unwrap_or_default();
            Probe {
                status,
                www_authenticate,
                body,
            }
        })
    }

    /// A token for `repository:app:pull` as the device, straight from the token server.
    pub(crate) fn device_token(&self) -> String {
        use base64::Engine as _;
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.device.name, self.device.password));
        let url = format!(
            "{}?service={LOGIN_HOST}&scope=repository:{REPO}:pull",
            self.tokens.realm()
        );
        let probe = self.https_get(&url, Some(&format!("Basic {basic}")));
        assert_eq!(probe.status, 200, "token request: {}", probe.body);
        let v: Value = serde_json::from_str(&probe.body).expect("token json");
        v["token"].as_str().expect("token field").to_string()
    }
}
