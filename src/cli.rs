//! Command line: `run`, `status`, `pull`, `endpoints`, `store list|verify|gc`. Turns errors
//! into exit codes.
//!
//! Owns: argument parsing, logging set-up, the daemon's signal handlers, and human/JSON
//! output. The work itself lives in the library ([`edgepull::pull`], [`edgepull::store`],
//! [`edgepull::config`], [`edgepull::daemon`]); the library never installs a signal handler.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use edgepull::config::{Config, default_path};
use edgepull::daemon::Request;
use edgepull::exit::Category;
use edgepull::progress::{Bars, LogLines, Progress};
use edgepull::store::Store;
use edgepull_core::hostport::HostPort;
use edgepull_core::oci::Reference;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;

/// Keeps OCI images in sync on edge devices; blobs come only from the region's data endpoint.
#[derive(Parser, Debug)]
#[command(name = "edgepull", version = version(), about)]
pub(crate) struct Cli {
    /// Config file [default: $EDGEPULL_CONFIG, else /etc/edgepull/config.json]
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log output: auto = the journal when stderr is connected to it (under systemd),
    /// else text; json = one object per line on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Copy, Clone, Debug, ValueEnum, PartialEq, Eq)]
enum LogFormat {
    Auto,
    Text,
    Json,
    Journal,
}

impl From<LogFormat> for edgepull::telemetry::LogFormat {
    fn from(f: LogFormat) -> Self {
        match f {
            LogFormat::Auto => Self::Auto,
            LogFormat::Text => Self::Text,
            LogFormat::Json => Self::Json,
            LogFormat::Journal => Self::Journal,
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run as a daemon: keep every configured image in sync (SIGHUP reloads the config,
    /// SIGUSR1 checks now, SIGUSR2 adopts a pending staged-rollout update now, SIGTERM stops).
    Run,
    /// Show what the running daemon is doing (reads <store>/status.json).
    Status {
        /// Print the status file as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Pull images (the given references, or the config's `images`) into the store.
    Pull {
        /// References like contoso.azurecr.io/app:1.2 (or app:1.2 for the login server).
        refs: Vec<String>,
        /// Never draw progress bars, even on a terminal.
        #[arg(long)]
        no_progress: bool,
        /// Cap the download rate for this run (overrides link.max_bytes_per_sec): bytes per
        /// second, with an optional unit K, M, G (×1000) or KiB, MiB, GiB (×1024), e.g. 2MiB.
        #[arg(long, value_name = "RATE", value_parser = parse_rate)]
        max_rate: Option<u64>,
    },
    /// Show the login server, data endpoint(s), realm hosts and the firewall allowlist.
    Endpoints {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Inspect the local store.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
}

#[derive(Subcommand, Debug)]
enum StoreCommand {
    /// List images (reference and manifest digest).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Re-hash every blob; exit non-zero naming any that is corrupt.
    Verify,
    /// Delete blobs no kept version references and stale partial downloads (the daemon
    /// does this after every update; this needs the store lock, so not while it runs).
    Gc,
}

/// `0.1.0 (aarch64-unknown-linux-musl, commit 0123456789ab)`; the build script sets both.
fn version() -> &'static str {
    static VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "{} ({}, commit {})",
            env!("CARGO_PKG_VERSION"),
            option_env!("EDGEPULL_TARGET").unwrap_or("unknown target"),
            option_env!("EDGEPULL_GIT_COMMIT").unwrap_or("unknown")
        )
    });
    VERSION.as_str()
}

/// A failure with its exit category; `main` prints the chain.
pub(crate) struct Failure {
    pub category: Category,
    pub error: Box<dyn std::error::Error + Send + Sync>,
}

impl Failure {
    fn new(category: Category, e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self {
            category,
            error: Box::new(e),
        }
    }
}

/// Why a command refused to start its work (the work's own errors come from the library).
#[derive(Debug, thiserror::Error)]
enum CliError {
    /// `pull` was given a reference on another registry.
    #[error(
        "reference {reference} names registry {registry} but the configured login server is {login_server}; edgepull only pulls from its login server"
    )]
    ForeignRegistry {
        reference: String,
        registry: HostPort,
        login_server: HostPort,
    },
    /// `pull` without references, and the config lists no images.
    #[error("nothing to pull: give references or list \"images\" in {}", config.display())]
    NothingToPull { config: PathBuf },
    /// The daemon's signal handlers could not be installed.
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
}

/// The daemon's signal handlers. Installed first thing for `run`: until a handler exists,
/// SIGHUP's default action (terminate) applies, so a reload sent while the service starts
/// would kill it. Signals that arrive before the daemon is ready wait in the handlers.
struct DaemonSignals {
    term: Signal,
    int: Signal,
    hup: Signal,
    usr1: Signal,
    usr2: Signal,
}

impl DaemonSignals {
    fn install() -> Result<Self, Failure> {
        let one = |kind| signal(kind).map_err(|e| Failure::new(Category::Store, CliError::Signals(e)));
        Ok(Self {
            term: one(SignalKind::terminate())?,
            int: one(SignalKind::interrupt())?,
            hup: one(SignalKind::hangup())?,
            usr1: one(SignalKind::user_defined1())?,
            usr2: one(SignalKind::user_defined2())?,
        })
    }

    /// The daemon's shutdown future: forwards SIGHUP as [`Request::Reload`], SIGUSR1 as
    /// [`Request::CheckNow`] and SIGUSR2 as [`Request::AdoptNow`], and completes on SIGTERM
    /// or SIGINT.
    async fn until_stopped(mut self, requests: mpsc::UnboundedSender<Request>) {
        loop {
            tokio::select! {
                biased;
                _ = self.term.recv() => {
                    tracing::info!(signal = "SIGTERM", "stopping");
                    return;
                }
                _ = self.int.recv() => {
                    tracing::info!(signal = "SIGINT", "stopping");
                    return;
                }
                Some(()) = self.hup.recv() => {
                    tracing::debug!(signal = "SIGHUP", "reload requested");
                    let _ = requests.send(Request::Reload);
                }
                Some(()) = self.usr1.recv() => {
                    tracing::debug!(signal = "SIGUSR1", "check requested");
                    let _ = requests.send(Request::CheckNow);
                }
                Some(()) = self.usr2.recv() => {
                    tracing::debug!(signal = "SIGUSR2", "adopt-now requested");
                    let _ = requests.send(Request::AdoptNow);
                }
            }
        }
    }
}

fn load_config(cli: &Cli) -> Result<Config, Failure> {
    let path = default_path(cli.config.as_deref());
    let cfg = Config::load(&path).map_err(|e| Failure::new(Category::Config, e))?;
    for note in &cfg.notes {
        tracing::warn!(config = %cfg.path.display(), "{note}");
    }
    Ok(cfg)
}

async fn open_store(cfg: &Config) -> Result<Store, Failure> {
    Store::open(&cfg.store.path, cfg.store.lock_wait)
        .await
        .map_err(|e| Failure::new(e.category(), e))
}

/// Run the command line; the `Ok` value is the exit code.
pub(crate) async fn run(cli: Cli) -> Result<u8, Failure> {
    // The daemon's signal handlers before anything else, logging included.
    let signals = match cli.command {
        Command::Run => Some(DaemonSignals::install()?),
        _ => None,
    };
    edgepull::telemetry::init(cli.log_format.into());
    match &cli.command {
        Command::Run => run_daemon(&cli, signals).await,
        Command::Status { json } => status(&cli, *json),
        Command::Store {
            command: StoreCommand::Gc,
        } => store_gc(&cli).await,
        Command::Pull {
            refs,
            no_progress,
            max_rate,
        } => pull(&cli, refs, *no_progress, *max_rate).await,
        Command::Endpoints { json } => endpoints(&cli, *json),
        Command::Store {
            command: StoreCommand::List { json },
        } => store_list(&cli, *json).await,
        Command::Store {
            command: StoreCommand::Verify,
        } => store_verify(&cli).await,
    }
}

/// `edgepull run`: the daemon until SIGTERM or SIGINT (`signals`: installed by [`run`]).
async fn run_daemon(cli: &Cli, signals: Option<DaemonSignals>) -> Result<u8, Failure> {
    let signals = match signals {
        Some(s) => s,
        None => DaemonSignals::install()?,
    };
    let path = default_path(cli.config.as_deref());
    let notifier = edgepull::systemd::Notifier::from_env();
    let (requests, requests_rx) = mpsc::unbounded_channel();
    edgepull::daemon::run(path, notifier, requests_rx, signals.until_stopped(requests))
        .await
        .map_err(|e| Failure::new(e.category(), e))?;
    Ok(0)
}

fn status(cli: &Cli, json: bool) -> Result<u8, Failure> {
    let cfg = load_config(cli)?;
    let status =
        edgepull::daemon::status::read(&cfg.store.path).map_err(|e| Failure::new(Category::Store, e))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status).unwrap_or_default());
    } else {
        print!(
            "{}",
            edgepull::daemon::status::render(&status, std::time::SystemTime::now())
        );
    }
    Ok(0)
}

async fn store_gc(cli: &Cli) -> Result<u8, Failure> {
    use edgepull::daemon::status::human_bytes;
    let cfg = load_config(cli)?;
    let store = open_store(&cfg).await?;
    let report = store
        .gc(&Default::default(), cfg.store.ingest_max_age)
        .await
        .map_err(|e| Failure::new(e.category(), e))?;
    if let Some(b) = &report.blocked {
        eprintln!(
            "nothing deleted: the references of index.json entry {} are unknown ({})",
            b.manifest, b.reason
        );
        return Ok(Category::Integrity.code());
    }
    println!(
        "{} blob(s) deleted ({}), {} kept, {} stale partial download(s) removed",
        report.deleted.len(),
        human_bytes(report.freed_bytes),
        report.kept,
        report.removed_ingests.len()
    );
    Ok(0)
}

/// `--max-rate`: a size with an optional unit (parsed by the core).
fn parse_rate(text: &str) -> Result<u64, String> {
    edgepull_core::link::parse_size(text).map_err(|e| e.to_string())
}

async fn pull(cli: &Cli, refs: &[String], no_progress: bool, max_rate: Option<u64>) -> Result<u8, Failure> {
    let mut cfg = load_config(cli)?;
    if let Some(rate) = max_rate {
        cfg.set_max_rate(rate);
    }
    if cfg.platform_defaulted {
        tracing::info!(platform = %cfg.platform, "platform not configured; using this build's platform");
    }
    let references: Vec<Reference> = if refs.is_empty() {
        cfg.images.iter().map(|i| i.reference.clone()).collect()
    } else {
        refs.iter()
            .map(|r| {
                let parsed = Reference::parse_with_default(r, &cfg.registry.login_server)
                    .map_err(|e| Failure::new(Category::Usage, e))?;
                if parsed.registry() != &cfg.registry.login_server {
                    return Err(Failure::new(
                        Category::Usage,
                        CliError::ForeignRegistry {
                            reference: r.clone(),
                            registry: parsed.registry().clone(),
                            login_server: cfg.registry.login_server.clone(),
                        },
                    ));
                }
                Ok(parsed)
            })
            .collect::<Result<_, _>>()?
    };
    if references.is_empty() {
        return Err(Failure::new(
            Category::Usage,
            CliError::NothingToPull {
                config: cfg.path.clone(),
            },
        ));
    }
    let store = open_store(&cfg).await?;
    let progress: Arc<dyn Progress> = if !no_progress && std::io::stderr().is_terminal() {
        Arc::new(Bars::capped(cfg.max_rate()))
    } else {
        Arc::new(LogLines::new(Duration::from_secs(10)).capped(cfg.max_rate()))
    };
    let puller = edgepull::app::puller(&cfg, store, progress)
        .await
        .map_err(|e| Failure::new(e.category(), e))?;
    let mut worst: Option<Category> = None;
    for r in &references {
        match puller.pull(r).await {
            Ok(rep) => {
                let platform = rep
                    .platform
                    .as_ref()
                    .map(|p| format!(" ({p})"))
                    .unwrap_or_default();
                println!("{} -> {}{platform}", rep.reference, rep.manifest.digest);
                tracing::info!(
                    reference = %rep.reference, digest = %rep.manifest.digest, blobs = rep.blobs,
                    already_present = rep.blobs_present, bytes_received = rep.bytes_received,
                    bytes_resumed = rep.bytes_resumed, bytes_refetched = rep.bytes_refetched, "pull complete"
                );
            }
            Err(e) => {
                let cat = e.category();
                crate::report(&e);
                worst = Some(match worst {
                    Some(w) if w.severity() >= cat.severity() => w,
                    _ => cat,
                });
            }
        }
    }
    Ok(worst.map(Category::code).unwrap_or(0))
}

fn endpoints(cli: &Cli, json: bool) -> Result<u8, Failure> {
    let cfg = load_config(cli)?;
    let r = &cfg.registry;
    if json {
        let v = serde_json::json!({
            "login_server": r.login_server.to_string(),
            "region": r.region,
            "data_endpoints": r.data_endpoints.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
            "data_endpoint_source": r.data_endpoint_source.as_ref().map(|s| s.to_string()),
            "realm_hosts": r.realm_hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
            "blob_source": r.blob_source.as_str(),
            "proxy": r.proxy.as_ref().map(|p| p.to_string()),
            "allowlist": cfg.firewall_lines(),
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        println!("login server:    {}", r.login_server);
        println!("region:          {}", r.region.as_deref().unwrap_or("(not set)"));
        let source = r
            .data_endpoint_source
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default();
        for d in &r.data_endpoints {
            println!("data endpoint:   {d}   (from {source})");
        }
        if r.data_endpoints.is_empty() {
            println!("data endpoint:   (none; blobs come from the login server: blob_source = registry)");
        }
        let realms: Vec<String> = r.realm_hosts.iter().map(|h| h.to_string()).collect();
        println!(
            "realm hosts:     {}",
            if realms.is_empty() {
                format!("{} (login server only)", r.login_server)
            } else {
                realms.join(", ")
            }
        );
        if let Some(p) = &r.proxy {
            println!("proxy:           {p}");
        }
        println!("\nfirewall allowlist (host:port, one per line):");
        for line in cfg.firewall_lines() {
            println!("{line}");
        }
    }
    Ok(0)
}

async fn store_list(cli: &Cli, json: bool) -> Result<u8, Failure> {
    let cfg = load_config(cli)?;
    let store = open_store(&cfg).await?;
    let images = store.images().await.map_err(|e| Failure::new(e.category(), e))?;
    if json {
        let v: Vec<_> = images
            .iter()
            .map(|i| {
                serde_json::json!({
                    "ref": i.ref_name,
                    "digest": i.descriptor.digest.to_string(),
                    "media_type": i.descriptor.media_type,
                    "size": i.descriptor.size,
                    "source_index": i.source_index.map(|d| d.to_string()),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else if images.is_empty() {
        println!("(no images in {})", store.layout_dir().display());
    } else {
        for i in &images {
            println!("{}\t{}", i.ref_name, i.descriptor.digest);
        }
    }
    Ok(0)
}

async fn store_verify(cli: &Cli) -> Result<u8, Failure> {
    let cfg = load_config(cli)?;
    let store = open_store(&cfg).await?;
    let report = store.verify().await.map_err(|e| Failure::new(e.category(), e))?;
    use edgepull::store::Corruption;
    for bad in &report.corrupt {
        let why = match &bad.problem {
            Corruption::DigestMismatch { actual } => format!("content hashes to {actual}"),
            Corruption::SizeMismatch { expected, actual } => format!("{actual} bytes, {expected} expected"),
            Corruption::NotAFile => "not a regular file".to_string(),
        };
        eprintln!("CORRUPT {} at {}: {why}", bad.digest, bad.path.display());
    }
    for path in &report.misnamed {
        eprintln!("MISNAMED {} (not a sha256 digest name)", path.display());
    }
    for d in &report.missing {
        eprintln!("MISSING {d} (referenced by an image but absent)");
    }
    println!(
        "{} blob(s), {} bytes checked: {} corrupt, {} misnamed, {} missing",
        report.checked,
        report.bytes,
        report.corrupt.len(),
        report.misnamed.len(),
        report.missing.len()
    );
    Ok(if report.is_clean() {
        0
    } else {
        Category::Integrity.code()
    })
}
