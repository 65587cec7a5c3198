//! Daemon mode (`edgepull run`): keep every configured image in sync.
//!
//! Owns: start-up order, the supervisor loop, systemd notifications, the per-image
//! schedule and state, `status.json` and the metrics textfile. Never installs a signal
//! handler (the caller says when to stop, reload or check: [`run`]'s arguments) and never
//! blocks the runtime (every file read or write runs in `spawn_blocking`).
//!
//! Start-up: the config (invalid: exit 78), the store (lock, recovery of temp files and
//! ingests, then [`Store::repair`](crate::store::Store::repair) of blobs whose size
//! disagrees with their manifests, and a garbage collection), then `READY=1`. Every image
//! is checked at once, then every `interval × (1 ± jitter)`. The binary installs its signal
//! handlers before any of this, so an early SIGHUP cannot kill the process.
//!
//! The supervisor is one loop that owns all state (no locks): it starts one sync job at a
//! time ([`job::Job`], its own task), applies the job's outcome, sends `STATUS=` and hands
//! `status.json` to its writer ([`files::Files`], never waited for), and sends
//! `WATCHDOG=1` from the same loop, so a hung loop stops the pings. One job at
//! a time keeps the link and the disk budget simple on a small device, and lets garbage
//! collection run after a switch without racing another download.
//!
//! Watchdog: a turning loop is not enough. While a job runs, a ping also needs progress
//! from it: a stored byte or any transfer event ([`tracker::Tracker::activity`]), or a new
//! phase ([`JobEvent`]). [`edgepull_core::schedule::watchdog_ping`] decides, allowing
//! each phase the silence its own bounds permit (the network timeouts and retry waits,
//! the hook timeout; [`setup::silences`]): a stalled server is answered by those, never by
//! a restart, while a job stuck where no timeout reaches (a hung disk, a bug) stops the
//! pings and systemd restarts the daemon, which resumes from its checkpoints.
//!
//! Control: when the shutdown future completes (SIGTERM/SIGINT in the binary) the daemon
//! stops: a running download checkpoints and is resumed at the next start, and [`run`]
//! returns within [`SHUTDOWN_GRACE`] plus a little. [`Request::Reload`] (SIGHUP) re-reads
//! the config (`RELOADING=1` … `READY=1`; an invalid config is refused with a log line and
//! the running one is kept); [`Request::CheckNow`] (SIGUSR1) checks every image now.
//!
//! Staged rollouts (`rollout`): a tag's new digest is adopted at `first_seen + slot`
//! ([`edgepull_core::rollout`] decides in the job); `first_seen` is kept in
//! `<store>/rollout.json` (`rollout`), so a restart does not reset the wait. A check still
//! runs every interval (a tag moved back cancels), SIGUSR1 does not skip the wait, and
//! [`Request::AdoptNow`] (SIGUSR2) does.
//!
//! In process (tests): `run` works on any runtime. The schedule uses Tokio's clock, so
//! with paused time `tokio::time::advance` drives it without real waits.

mod atomic;
mod files;
mod health;
mod hook;
mod job;
mod metrics;
mod outcome;
mod reload;
mod rollout;
mod setup;
mod slot;
pub mod status;
mod tracker;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinHandle};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::files::Files;
use self::job::{Job, JobError, JobEvent, JobOutcome};
use self::metrics::Metrics;
use self::slot::Slot;
use self::status::{STATUS_VERSION, Stamp, State, Status};
use self::tracker::Tracker;
use crate::config::{Config, ConfigError};
use crate::exit::Category;
use crate::link::Link;
use crate::pull::Puller;
use crate::store::{Store, StoreError};
use crate::systemd::Notifier;
use edgepull_core::schedule::{JobPhase, Silences, watchdog_ping};

/// How long shutdown waits for a running job to checkpoint and stop before abandoning it.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);
/// How often download progress is written to `status.json` and `STATUS=`.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// A request to the running daemon. The binary sends one per SIGHUP and SIGUSR1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Re-read the config (`RELOADING=1` … `READY=1`). An invalid config, or one that
    /// moves `store.path`, is refused with a log line and the running one is kept.
    Reload,
    /// Check every image now, whatever its schedule or backoff. A new version waiting for
    /// this device's rollout slot keeps waiting.
    CheckNow,
    /// Adopt every pending new version now, without waiting for the rollout slot (SIGUSR2).
    AdoptNow,
}

/// Why the daemon could not start, or why a reload was refused.
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
    Setup(#[source] crate::app::SetupError),
    /// A reload changed `store.path`.
    #[error(
        "store.path changed from {} to {}; a running daemon keeps its store: restart the service to move it",
        from.display(),
        to.display()
    )]
    StoreMoved { from: PathBuf, to: PathBuf },
    /// The metrics textfile's directory can be written by another user.
    #[error("{}", atomic::describe(dir, problem))]
    UnsafeMetricsDir {
        dir: PathBuf,
        problem: edgepull_core::perms::DirProblem,
    },
    /// A start-up step running off the runtime panicked.
    #[error("a start-up task failed")]
    Blocking(#[from] JoinError),
}

impl DaemonError {
    /// The exit-code category.
    pub fn category(&self) -> Category {
        match self {
            DaemonError::Config(_)
            | DaemonError::StoreMoved { .. }
            | DaemonError::UnsafeMetricsDir { .. } => Category::Config,
            DaemonError::Store(e) => e.category(),
            DaemonError::Blocking(_) => Category::Store,
            DaemonError::Setup(e) => e.category(),
        }
    }
}

struct Running {
    name: String,
    handle: JoinHandle<JobOutcome>,
    /// What the watchdog knows of its progress.
    pulse: Pulse,
}

/// The running job's progress, as the watchdog sees it.
struct Pulse {
    phase: JobPhase,
    /// The last progress seen: the job's start, a new phase, or new [`Tracker::activity`].
    since: Instant,
    /// [`Tracker::activity`] when last looked at.
    seen: u64,
    /// Pings are withheld (logged once per stall).
    withheld: bool,
}

struct Daemon {
    cfg: Config,
    store: Store,
    puller: Arc<Puller>,
    link: Arc<Link>,
    tracker: Arc<Tracker>,
    notifier: Notifier,
    cancel: CancellationToken,
    slots: Vec<Slot>,
    metrics: Metrics,
    files: Files,
    running: Option<Running>,
    events_tx: mpsc::UnboundedSender<(String, JobEvent)>,
    /// The healthy silence of each job phase under the current config.
    silences: Silences,
    /// `rollout.json`: when each pending digest was first seen.
    record: rollout::Record,
    /// The wall clock (staged rollouts, stamps).
    clock: WallClock,
}

/// Run the daemon with the config at `config_path` until `shutdown` completes, telling
/// systemd through `notifier` and serving `requests` (a closed channel is no error: the
/// daemon runs on without requests). Returns once stopped; errors only at start-up.
pub async fn run(
    config_path: PathBuf,
    notifier: Notifier,
    requests: mpsc::UnboundedReceiver<Request>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    run_with_clock(config_path, notifier, requests, shutdown, WallClock::system()).await
}

/// The wall clock the daemon reads for staged rollouts (`first_seen`, the slot, when a
/// pending digest is adopted) and the stamps of `status.json`. [`WallClock::system`] in
/// the product; a simulation (`examples/fleet-sim`) passes one that follows its paused
/// Tokio clock, so simulated hours run in seconds.
#[derive(Clone)]
pub struct WallClock(Arc<dyn Fn() -> SystemTime + Send + Sync>);

impl WallClock {
    /// The system's clock (`SystemTime::now`).
    pub fn system() -> Self {
        Self(Arc::new(SystemTime::now))
    }

    /// A clock that reads `now`.
    pub fn new(now: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        Self(Arc::new(now))
    }

    /// The time now.
    pub(crate) fn now(&self) -> SystemTime {
        (self.0)()
    }
}

impl std::fmt::Debug for WallClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WallClock")
    }
}

/// [`run`], reading the wall clock from `clock`.
pub async fn run_with_clock(
    config_path: PathBuf,
    notifier: Notifier,
    mut requests: mpsc::UnboundedReceiver<Request>,
    shutdown: impl Future<Output = ()>,
    clock: WallClock,
) -> Result<(), DaemonError> {
    let cfg = setup::load_config(config_path).await?;
    for note in &cfg.notes {
        tracing::warn!(config = %cfg.path.display(), "{note}");
    }
    let store = setup::open_store(&cfg).await?;
    let cancel = CancellationToken::new();
    let tracker = Arc::new(Tracker::default());
    let link = Link::open(&cfg.link, store.root()).await;
    let puller = setup::build_puller(&cfg, &store, &tracker, &cancel, &link).await?;
    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let now = Instant::now();
    let mut d = Daemon {
        slots: cfg.images.iter().map(|i| Slot::new(i.clone(), now)).collect(),
        files: Files::new(store.root().to_path_buf()),
        record: rollout::Record::new(store.root().to_path_buf()),
        silences: setup::silences(&cfg),
        cfg,
        store,
        puller,
        link,
        tracker,
        notifier,
        cancel,
        metrics: Metrics::default(),
        running: None,
        events_tx,
        clock,
    };
    d.load_local_state().await;
    d.load_pending().await;
    for s in &d.slots {
        d.metrics.image(&s.name);
    }
    d.publish();
    d.files.flush().await;
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
    let mut shutdown = std::pin::pin!(shutdown);
    let mut requests_open = true;

    loop {
        if d.running.is_none() {
            d.start_due_job();
        }
        let next_due = if d.running.is_none() { d.next_due() } else { None };
        let downloading = d.slots.iter().any(|s| s.state == State::Downloading);
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            request = requests.recv(), if requests_open => match request {
                Some(Request::Reload) => d.reload().await,
                Some(Request::CheckNow) => d.check_now(),
                Some(Request::AdoptNow) => d.adopt_now(),
                None => requests_open = false,
            },
            outcome = async {
                match d.running.as_mut() {
                    Some(r) => (&mut r.handle).await,
                    None => std::future::pending().await,
                }
            } => {
                let name = d.running.take().map(|r| r.name).unwrap_or_default();
                let outcome = outcome.unwrap_or_else(|e| JobOutcome::Failed(JobError::Task(e)));
                d.finish_job(&name, outcome);
            }
            Some((name, event)) = events_rx.recv() => d.job_event(&name, event),
            every = async {
                match watchdog.as_mut() {
                    Some(w) => { w.tick().await; w.period() }
                    None => std::future::pending().await,
                }
            } => d.watchdog(every),
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

impl Daemon {
    /// The current and previous digests recorded in the store.
    async fn load_local_state(&mut self) {
        let (images, previous) = setup::recorded_versions(&self.store).await;
        let root = self.store.root().to_path_buf();
        let memory = tokio::task::spawn_blocking(move || health::load(&root))
            .await
            .unwrap_or_default();
        for s in &mut self.slots {
            let entry = images.iter().find(|i| i.ref_name == s.name);
            s.current = entry.map(|i| i.descriptor.digest);
            // Shown as failed only when it was rolled back (not still current).
            let top = entry.map(|i| i.source_index.unwrap_or(i.descriptor.digest));
            s.failed = memory
                .get(&s.name)
                .and_then(|m| m.failed)
                .filter(|f| Some(*f) != top);
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
        slot.note = None;
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
            refused: slot.refused.map(|(d, _)| d),
            rollout: self.cfg.rollout.clone(),
            pending: slot.pending.map(|(p, _)| p),
            prefetched: slot.prefetched,
            adopt_now: slot.adopt_now,
            clock: self.clock.clone(),
        };
        self.running = Some(Running {
            name: slot.name.clone(),
            handle: tokio::spawn(job.run()),
            pulse: Pulse {
                phase: JobPhase::Local,
                since: now,
                seen: self.tracker.activity(),
                withheld: false,
            },
        });
        self.publish();
    }

    fn job_event(&mut self, name: &str, event: JobEvent) {
        if let Some(r) = self.running.as_mut().filter(|r| r.name == name) {
            r.pulse.phase = event.phase();
            r.pulse.since = Instant::now();
        }
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
            JobEvent::Phase(_) => return, // nothing shown changes
        }
        self.publish();
    }

    /// A watchdog tick (`every` apart): `WATCHDOG=1` unless the running job has been silent
    /// for longer than its phase allows ([`watchdog_ping`]).
    fn watchdog(&mut self, every: Duration) {
        let now = Instant::now();
        let activity = self.tracker.activity();
        let job = self.running.as_mut().map(|r| {
            let p = &mut r.pulse;
            if p.seen != activity {
                p.seen = activity;
                p.since = now;
            }
            (r.name.as_str(), p)
        });
        let Some((name, pulse)) = job else {
            self.notifier.watchdog();
            return;
        };
        let silent = now.saturating_duration_since(pulse.since);
        if watchdog_ping(Some((pulse.phase, silent)), &self.silences, every) {
            if std::mem::take(&mut pulse.withheld) {
                tracing::info!(image_ref = %name, phase = pulse.phase.as_str(), "the sync job moves again; watchdog pings resume");
            }
            self.notifier.watchdog();
        } else if !std::mem::replace(&mut pulse.withheld, true) {
            tracing::error!(
                image_ref = %name,
                phase = pulse.phase.as_str(),
                silent = ?silent,
                "the sync job has made no progress for longer than its own timeouts allow; \
                 withholding the watchdog ping so systemd restarts edgepull (downloads resume \
                 from their checkpoints)"
            );
        }
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

    /// [`Request::CheckNow`]: every image is due.
    fn check_now(&mut self) {
        tracing::info!("checking every image now");
        let now = Instant::now();
        for s in &mut self.slots {
            s.next_due = now;
        }
    }

    /// [`Request::AdoptNow`]: every pending new version is adopted at its next check, now.
    fn adopt_now(&mut self) {
        rollout::adopt_now(&mut self.slots, Instant::now());
    }

    /// The pending digests recorded in the store (`rollout.json`), given to their images.
    async fn load_pending(&mut self) {
        let root = self.store.root().to_path_buf();
        let recorded = tokio::task::spawn_blocking(move || rollout::load(&root))
            .await
            .unwrap_or_default();
        for s in &mut self.slots {
            s.pending = recorded.get(&s.name).map(|p| (*p, 0));
        }
        rollout::refresh_adopt_at(&mut self.slots, &self.cfg.rollout);
    }

    /// Hand the pending digests to `rollout.json`'s writer.
    fn save_pending(&mut self) {
        self.record.save(rollout::pending_of(&self.slots));
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
        self.files.flush().await;
        self.record.flush().await;
        tracing::info!("edgepull daemon stopped");
    }

    /// Hand `status.json` and the metrics (when there is a textfile) to the writer, and send
    /// `STATUS=`. Never waits for the disk ([`Files`]).
    fn publish(&mut self) {
        let metrics = self
            .cfg
            .metrics
            .textfile
            .clone()
            .map(|path| (path, self.metrics.clone()));
        let status = self.status();
        let metrics = metrics.map(|(path, mut m)| {
            m.link = status.link.as_deref().cloned();
            (path, m)
        });
        self.files.write(status, metrics);
        self.notifier.status(&slot::summary(&self.slots));
    }

    fn status(&self) -> Status {
        let now = Instant::now();
        let mut status = Status {
            version: STATUS_VERSION,
            pid: std::process::id(),
            updated: Stamp::of(self.clock.now()),
            images: self.slots.iter().map(|s| s.status(now)).collect(),
            link: Some(Box::new(self.link.status())),
        };
        status.fill_eta();
        status
    }
}
