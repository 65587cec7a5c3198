//! Daemon mode (`edgepull run`): keep every configured image in sync.
//!
//! Owns: start-up order, the supervisor loop, signals, systemd notifications, the
//! per-image schedule and state, `status.json` and the metrics textfile.
//!
//! Start-up: signal handlers first (an early SIGHUP must not kill the process), then the
//! config (invalid: exit 78), the store (lock, recovery of temp files and ingests, then
//! [`Store::repair`] of blobs whose size disagrees with their manifests, and a garbage
//! collection), then `READY=1`. Every image is checked at once, then every
//! `interval × (1 ± jitter)`.
//!
//! The supervisor is one loop that owns all state (no locks): it starts one sync job at a
//! time ([`job::Job`], its own task), applies the job's outcome, rewrites `status.json`,
//! and sends `WATCHDOG=1` from the same loop, so a hung loop stops the pings. One job at
//! a time keeps the link and the disk budget simple on a small device, and lets garbage
//! collection run after a switch without racing another download.
//!
//! Signals: SIGTERM/SIGINT stop (a running download checkpoints and is resumed at the
//! next start; the process exits within [`SHUTDOWN_GRACE`] plus a little); SIGHUP reloads
//! the config (`RELOADING=1` … `READY=1`; an invalid config is refused with a log line and
//! the running one is kept); SIGUSR1 checks every image now.

pub mod hook;
mod job;
pub mod metrics;

pub mod status;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::hook::HookEnd;
use self::job::{Job, JobEvent, JobOutcome, Tracker};
use self::metrics::Metrics;
use self::status::{HookStatus, ImageStatus, LastError, STATUS_VERSION, Stamp, State, Status};
use crate::app::SetupError;
use crate::config::{Config, ConfigError, ImageConfig};
use crate::exit::Category;
use crate::pull::Puller;
use crate::store::{Store, StoreError};
use crate::systemd::Notifier;
use edgepull_core::oci::Digest;
use edgepull_core::schedule::{BACKOFF_BASE, Backoff, poll_delay};

/// How long shutdown waits for a running job to checkpoint and stop before abandoning it.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);
/// How often download progress is written to `status.json` and `STATUS=`.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The config is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be opened or recovered.
    #[error("cannot open the content store")]
    Store(#[source] StoreError),
    /// The registry client could not be built from the config.
    #[error("cannot set up the registry client")]
    Setup(#[source] SetupError),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
}

impl DaemonError {
    /// The exit-code category.
    pub fn category(&self) -> Category {
        match self {
            DaemonError::Config(_) => Category::Config,
            DaemonError::Store(e) => e.category(),
            DaemonError::Setup(e) => e.category(),
            DaemonError::Signals(_) => Category::Store,
        }
    }
}

/// One configured image, as the supervisor tracks it.
struct Slot {
    image: ImageConfig,
    name: String,
    state: State,
    current: Option<Digest>,
    previous: Option<Digest>,
    bytes_done: u64,
    bytes_total: u64,
    message: Option<String>,
    last_success: Option<SystemTime>,
    last_error: Option<(SystemTime, String)>,
    last_hook: Option<HookStatus>,
    checks: u64,
    backoff: Backoff,
    next_due: Instant,
}

impl Slot {
    fn new(image: ImageConfig, now: Instant) -> Self {
        Self {
            name: image.reference.to_string(),
            image,
            state: State::Idle,
            current: None,
            previous: None,
            bytes_done: 0,
            bytes_total: 0,
            message: None,
            last_success: None,
            last_error: None,
            last_hook: None,
            checks: 0,
            backoff: Backoff::default(),
            next_due: now,
        }
    }
}

struct Running {
    name: String,
    handle: JoinHandle<JobOutcome>,
}

struct Daemon {
    cfg: Config,
    store: Store,
    puller: Arc<Puller>,
    tracker: Arc<Tracker>,
    notifier: Notifier,
    cancel: CancellationToken,
    slots: Vec<Slot>,
    metrics: Metrics,
    metrics_written: Option<String>,
    running: Option<Running>,
    events_tx: mpsc::UnboundedSender<(String, JobEvent)>,
}

/// Run the daemon with the config at `config_path` until SIGTERM or SIGINT.
pub async fn run(config_path: &Path, notifier: Notifier) -> Result<(), DaemonError> {
    let mut sigterm = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    let mut sigusr1 = signal(SignalKind::user_defined1()).map_err(DaemonError::Signals)?;

    let cfg = load_config(config_path.to_path_buf()).await?;
    for note in &cfg.notes {
        tracing::warn!(config = %cfg.path.display(), "{note}");
    }
    let store = open_store(&cfg).await?;
    let cancel = CancellationToken::new();
    let tracker = Arc::new(Tracker::default());
    let puller = build_puller(&cfg, &store, &tracker, &cancel)
        .await
        .map_err(DaemonError::Setup)?;
    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let now = Instant::now();
    let mut d = Daemon {
        slots: cfg.images.iter().map(|i| Slot::new(i.clone(), now)).collect(),
        cfg,
        store,
        puller,
        tracker,
        notifier,
        cancel,
        metrics: Metrics::default(),
        metrics_written: None,
        running: None,
        events_tx,
    };
    d.load_local_state().await;
    for s in &d.slots {
        d.metrics.image(&s.name);
    }
    d.publish();
    if d.slots.is_empty() {
        tracing::warn!(config = %d.cfg.path.display(), "no images configured; add \"images\" to the config and reload");
    }
    tracing::info!(images = d.slots.len(), store = %d.store.root().display(), "edgepull daemon ready");
    d.notifier.ready();

    let mut watchdog = d.notifier.watchdog_interval().map(|every| {
        let mut i = tokio::time::interval(every);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let mut progress = tokio::time::interval(PROGRESS_EVERY);
    progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        if d.running.is_none() {
            d.start_due_job();
        }
        let next_due = if d.running.is_none() { d.next_due() } else { None };
        let downloading = d.slots.iter().any(|s| s.state == State::Downloading);
        tokio::select! {
            biased;
            _ = sigterm.recv() => { tracing::info!(signal = "SIGTERM", "stopping"); break; }
            _ = sigint.recv() => { tracing::info!(signal = "SIGINT", "stopping"); break; }
            _ = sighup.recv() => d.reload().await,
            _ = sigusr1.recv() => {
                tracing::info!(signal = "SIGUSR1", "checking every image now");
                let now = Instant::now();
                for s in &mut d.slots {
                    s.next_due = now;
                }
            }
            outcome = async {
                match d.running.as_mut() {
                    Some(r) => (&mut r.handle).await,
                    None => std::future::pending().await,
                }
            } => {
                let name = d.running.take().map(|r| r.name).unwrap_or_default();
                let outcome = outcome.unwrap_or_else(|e| JobOutcome::Failed {
                    message: format!("sync task failed: {e}"),
                    retry_after: None,
                    category: Category::Store,
                });
                d.finish_job(&name, outcome);
            }
            Some((name, event)) = events_rx.recv() => d.job_event(&name, event),
            _ = async {
                match watchdog.as_mut() {
                    Some(w) => { w.tick().await; }
                    None => std::future::pending().await,
                }
            } => d.notifier.watchdog(),
            _ = async {
                if downloading {
                    progress.tick().await;
                } else {
                    std::future::pending::<()>().await;
                }
            } => d.refresh_progress(),
            () = async {
                match next_due {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
    }

    d.notifier.stopping();
    d.shutdown().await;
    Ok(())
}

async fn load_config(path: PathBuf) -> Result<Config, ConfigError> {
    tokio::task::spawn_blocking(move || Config::load(&path))
        .await
        .unwrap_or_else(|e| {
            Err(ConfigError::Read {
                file: PathBuf::new(),
                error: std::io::Error::other(e),
            })
        })
}

async fn open_store(cfg: &Config) -> Result<Store, DaemonError> {
    let store = Store::open(&cfg.store.path, cfg.store.lock_wait)
        .await
        .map_err(DaemonError::Store)?;
    store
        .scrub(cfg.store.verify_on_start)
        .await
        .map_err(DaemonError::Store)?;
    let repair = store.repair().await.map_err(DaemonError::Store)?;
    if !repair.deleted.is_empty() || !repair.dropped_previous.is_empty() {
        tracing::warn!(
            blobs = repair.deleted.len(),
            previous_entries = repair.dropped_previous.len(),
            "start-up repair removed blobs whose size disagreed with their manifests; they are fetched again"
        );
    }
    let gc = store
        .gc(&Default::default(), cfg.store.ingest_max_age)
        .await
        .map_err(DaemonError::Store)?;
    if !gc.deleted.is_empty() || !gc.removed_ingests.is_empty() {
        tracing::info!(
            blobs = gc.deleted.len(),
            bytes = gc.freed_bytes,
            ingests = gc.removed_ingests.len(),
            "garbage collected at start-up"
        );
    }
    Ok(store)
}

async fn build_puller(
    cfg: &Config,
    store: &Store,
    tracker: &Arc<Tracker>,
    cancel: &CancellationToken,
) -> Result<Arc<Puller>, SetupError> {
    let mut p = crate::app::puller(cfg, store.clone(), tracker.clone()).await?;
    // A few quick retries inside one attempt; beyond that the daemon's own backoff
    // (up to sync.backoff_max_secs) takes over and the next attempt resumes.
    let retry =
        edgepull_core::retry::RetryPolicy::new(Duration::from_secs(1), Duration::from_secs(30), Some(4))
            .unwrap_or_default();
    p.set_retry(retry);
    p.set_cancel(cancel.child_token());
    Ok(Arc::new(p))
}

impl Daemon {
    /// The current and previous digests recorded in the store.
    async fn load_local_state(&mut self) {
        let images = self.store.images().await.unwrap_or_default();
        let previous = self.store.previous_images().await.unwrap_or_default();
        for s in &mut self.slots {
            s.current = images
                .iter()
                .find(|i| i.ref_name == s.name)
                .map(|i| i.descriptor.digest);
            s.previous = previous
                .iter()
                .filter(|p| p.ref_name == s.name)
                .min_by_key(|p| p.rank)
                .map(|p| p.descriptor.digest);
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.slots.iter().map(|s| s.next_due).min()
    }

    fn start_due_job(&mut self) {
        let now = Instant::now();
        let Some(i) = (0..self.slots.len())
            .filter(|i| self.slots[*i].next_due <= now)
            .min_by_key(|i| self.slots[*i].next_due)
        else {
            return;
        };
        let slot = &mut self.slots[i];
        // Shown until the job reports otherwise; a pinned digest that is complete makes
        // no request at all.
        slot.state = State::Checking;
        slot.message = None;
        let job = Job {
            name: slot.name.clone(),
            reference: slot.image.reference.clone(),
            puller: self.puller.clone(),
            tracker: self.tracker.clone(),
            store: self.store.clone(),
            keep_previous: self.cfg.store.keep_previous,
            min_free_bytes: self.cfg.store.min_free_bytes,
            ingest_max_age: self.cfg.store.ingest_max_age,
            hooks: self.cfg.hooks.clone(),
            cancel: self.cancel.child_token(),
            events: self.events_tx.clone(),
        };
        self.running = Some(Running {
            name: slot.name.clone(),
            handle: tokio::spawn(job.run()),
        });
        self.publish();
    }

    fn job_event(&mut self, name: &str, event: JobEvent) {
        let Some(slot) = self.slots.iter_mut().find(|s| s.name == name) else {
            return;
        };
        match event {
            JobEvent::Checking => slot.state = State::Checking,
            JobEvent::Downloading { total } => {
                slot.state = State::Downloading;
                slot.bytes_total = total;
                slot.bytes_done = self.tracker.done();
            }
        }
        self.publish();
    }

    fn refresh_progress(&mut self) {
        let done = self.tracker.done();
        let Some(slot) = self.slots.iter_mut().find(|s| s.state == State::Downloading) else {
            return;
        };
        if slot.bytes_done != done {
            slot.bytes_done = done;
            self.publish();
        }
    }

    fn interval_of(&self, slot: &Slot) -> Duration {
        slot.image.interval.unwrap_or(self.cfg.sync.interval)
    }

    fn finish_job(&mut self, name: &str, outcome: JobOutcome) {
        let (downloaded, resumed) = self.tracker.take_counters();
        let now = SystemTime::now();
        let sync = self.cfg.sync;
        let Some(i) = self.slots.iter().position(|s| s.name == name) else {
            return; // removed by a reload while it ran
        };
        let interval = self.interval_of(&self.slots[i]);
        let mut refusal = false;
        let m = self.metrics.image(name);
        m.bytes_downloaded += downloaded;
        m.bytes_resumed += resumed;
        let slot = &mut self.slots[i];
        let next_poll = Instant::now() + poll_delay(interval, sync.jitter.get(), rand::random());
        if !matches!(outcome, JobOutcome::Cancelled) {
            slot.checks += 1;
        }
        match outcome {
            JobOutcome::Unchanged => {
                slot.state = State::Idle;
                slot.message = None;
                slot.last_success = Some(now);
                slot.backoff.reset();
                slot.next_due = next_poll;
                m.last_success = Some(Stamp::of(now).unix);
            }
            JobOutcome::Updated(u) => {
                slot.state = State::Idle;
                slot.message = None;
                slot.current = Some(u.manifest);
                if u.switched {
                    slot.previous = u.previous.or(slot.previous);
                }
                slot.bytes_total = u.total_bytes;
                slot.bytes_done = u.total_bytes;
                slot.last_success = Some(now);
                slot.backoff.reset();
                slot.next_due = next_poll;
                if let Some((end, at)) = u.hook {
                    slot.last_hook = Some(hook_status(&end, at, &u.manifest));
                }
                m.pulls_ok += 1;
                m.last_success = Some(Stamp::of(now).unix);
            }
            JobOutcome::Deferred { message } => {
                slot.state = State::Deferred;
                slot.message = Some(message);
                slot.backoff.reset();
                slot.next_due = next_poll;
                m.deferred += 1;
            }
            JobOutcome::Failed {
                message,
                retry_after,
                category,
            } => {
                let wait =
                    slot.backoff
                        .on_failure(BACKOFF_BASE, sync.backoff_max, retry_after, rand::random());
                slot.state = State::Error;
                slot.message = Some(format!("retrying in {}", status::human_duration(wait)));
                slot.last_error = Some((now, message));
                slot.next_due = Instant::now() + wait;
                m.pulls_failed += 1;
                refusal = category == Category::Policy;
            }
            JobOutcome::Cancelled => {
                slot.state = State::Idle;
            }
        }
        if refusal {
            self.metrics.egress_refusals += 1;
        }
        self.publish();
    }

    /// SIGHUP: re-read the config; keep the running one if the new one is refused.
    async fn reload(&mut self) {
        self.notifier.reloading();
        tracing::info!(config = %self.cfg.path.display(), "reloading the config (SIGHUP)");
        match self.try_reload().await {
            Ok(()) => tracing::info!(images = self.slots.len(), "config reloaded"),
            Err(reason) => tracing::error!(
                config = %self.cfg.path.display(),
                error = %reason,
                "config reload refused; still running with the previous config"
            ),
        }
        self.publish();
        self.notifier.ready();
    }

    async fn try_reload(&mut self) -> Result<(), String> {
        let new = load_config(self.cfg.path.clone())
            .await
            .map_err(|e| crate::error_chain(&e))?;
        if new.store.path != self.cfg.store.path {
            return Err(format!(
                "store.path changed from {} to {}; a running daemon keeps its store: restart the service to move it",
                self.cfg.store.path.display(),
                new.store.path.display()
            ));
        }
        for note in &new.notes {
            tracing::warn!(config = %new.path.display(), "{note}");
        }
        let puller = build_puller(&new, &self.store, &self.tracker, &self.cancel)
            .await
            .map_err(|e| crate::error_chain(&e))?;
        let now = Instant::now();
        let mut old: Vec<Slot> = std::mem::take(&mut self.slots);
        self.slots = new
            .images
            .iter()
            .map(
                |img| match old.iter().position(|s| s.image.reference == img.reference) {
                    Some(p) => {
                        let mut s = old.swap_remove(p);
                        if s.image.interval != img.interval {
                            s.next_due = now;
                        }
                        s.image = img.clone();
                        s
                    }
                    None => Slot::new(img.clone(), now),
                },
            )
            .collect();
        self.puller = puller;
        self.cfg = new;
        self.load_local_state().await;
        for s in &self.slots {
            self.metrics.image(&s.name);
        }
        let names: Vec<String> = self.slots.iter().map(|s| s.name.clone()).collect();
        self.metrics.images.retain(|k, _| names.contains(k));
        Ok(())
    }

    async fn shutdown(&mut self) {
        self.cancel.cancel();
        if let Some(mut r) = self.running.take() {
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut r.handle).await {
                Ok(Ok(outcome)) => self.finish_job(&r.name, outcome),
                Ok(Err(e)) => tracing::warn!(error = %e, "sync task failed during shutdown"),
                Err(_) => {
                    tracing::warn!(image_ref = %r.name, "sync did not stop in time; abandoning it (it resumes from its last checkpoint)");
                    r.handle.abort();
                }
            }
        }
        for s in &mut self.slots {
            if matches!(s.state, State::Checking | State::Downloading) {
                s.state = State::Idle;
            }
        }
        self.publish();
        tracing::info!("edgepull daemon stopped");
    }

    /// Write `status.json`, the metrics textfile (when changed) and `STATUS=`.
    fn publish(&mut self) {
        let status = self.status();
        if let Err(e) = status::write(self.store.root(), &status) {
            tracing::warn!(error = %e, path = %self.store.root().join(status::STATUS_FILE).display(), "cannot write status.json");
        }
        if let Some(path) = &self.cfg.metrics.textfile {
            let text = self.metrics.render();
            if self.metrics_written.as_deref() != Some(text.as_str()) {
                match self.metrics.write(path) {
                    Ok(()) => self.metrics_written = Some(text),
                    Err(e) => {
                        tracing::warn!(error = %e, path = %path.display(), "cannot write the metrics textfile")
                    }
                }
            }
        }
        self.notifier.status(&self.summary());
    }

    fn status(&self) -> Status {
        let now = Instant::now();
        Status {
            version: STATUS_VERSION,
            pid: std::process::id(),
            updated: Stamp::of(SystemTime::now()),
            images: self
                .slots
                .iter()
                .map(|s| ImageStatus {
                    reference: s.name.clone(),
                    state: s.state,
                    current_digest: s.current.map(|d| d.to_string()),
                    previous_digest: s.previous.map(|d| d.to_string()),
                    bytes_done: s.bytes_done,
                    bytes_total: s.bytes_total,
                    message: s.message.clone(),
                    last_success: s.last_success.map(Stamp::of),
                    last_error: s.last_error.as_ref().map(|(t, m)| LastError {
                        when: Stamp::of(*t),
                        message: m.clone(),
                    }),
                    last_hook: s.last_hook.clone(),
                    checks: s.checks,
                    consecutive_failures: s.backoff.failures(),
                    next_check_in_secs: matches!(s.state, State::Idle | State::Deferred | State::Error)
                        .then(|| s.next_due.saturating_duration_since(now).as_secs()),
                })
                .collect(),
        }
    }

    /// One line for `systemctl status`.
    fn summary(&self) -> String {
        if self.slots.is_empty() {
            return "no images configured".to_string();
        }
        let mut parts = Vec::new();
        for state in [
            State::Downloading,
            State::Checking,
            State::Deferred,
            State::Error,
            State::Idle,
        ] {
            let n = self.slots.iter().filter(|s| s.state == state).count();
            if n > 0 {
                parts.push(format!("{n} {}", state.as_str()));
            }
        }
        let mut line = format!("{} image(s): {}", self.slots.len(), parts.join(", "));
        if let Some(s) = self.slots.iter().find(|s| s.state == State::Downloading) {
            line.push_str(&format!(
                "; downloading {} {} of {}",
                s.name,
                status::human_bytes(s.bytes_done),
                status::human_bytes(s.bytes_total)
            ));
        } else if let Some((name, (_, m))) = self
            .slots
            .iter()
            .find(|s| s.state == State::Error)
            .and_then(|s| Some((&s.name, s.last_error.as_ref()?)))
        {
            let short: String = m.chars().take(200).collect();
            line.push_str(&format!("; {name}: {short}"));
        }
        line
    }
}

fn hook_status(end: &HookEnd, at: SystemTime, digest: &Digest) -> HookStatus {
    let (exit_code, signal, timed_out, error) = match end {
        HookEnd::Exited(c) => (Some(*c), None, false, None),
        HookEnd::Signalled(s) => (None, Some(*s), false, None),
        HookEnd::TimedOut => (None, None, true, None),
        HookEnd::Cancelled => (None, None, false, Some("killed for shutdown".to_string())),
        HookEnd::SpawnFailed(e) => (None, None, false, Some(e.clone())),
    };
    HookStatus {
        when: Stamp::of(at),
        digest: digest.to_string(),
        exit_code,
        signal,
        timed_out,
        error,
        ok: end.ok(),
    }
}
