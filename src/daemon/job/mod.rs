//! One sync of one image: check, plan, budget, download, switch, collect garbage, run the
//! hook. Runs as its own task; the supervisor learns its progress through [`JobEvent`]s
//! and the shared [`Tracker`], and its result as a [`JobOutcome`].
//!
//! Requests, in order: one `HEAD` of the manifest (none for a pinned digest). When the
//! store already has that digest complete, that is all. Otherwise the manifests are
//! fetched by digest (so the plan cannot race a tag that moves again), the missing bytes
//! are checked against the disk budget, and only then are blobs downloaded.
//!
//! Never touches the supervisor's state (it only reports), and never blocks the runtime:
//! every store lookup, `statvfs`, the switch of `index.json` and garbage collection run in
//! `spawn_blocking`.

mod trial;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc::UnboundedSender;
use tokio::task::{JoinError, spawn_blocking};
use tokio_util::sync::CancellationToken;

use self::trial::{Judged, Which};
use super::health;
use super::hook::HookEnd;
use super::status::{human_bytes, rfc3339};
use super::tracker::Tracker;
use crate::config::{HooksConfig, RolloutConfig};
use crate::exit::Category;
use crate::link::Paused;
use crate::progress::FetchStats;
use crate::pull::{PullError, Puller};
use crate::registry::client::RegistryError;
use crate::store::{Store, StoreError};
use edgepull_core::health::{CheckEnd, Memory, Start};
use edgepull_core::oci::manifest::MAX_MANIFEST_BYTES;
use edgepull_core::oci::{Descriptor, Digest, ImageManifest, Reference};
use edgepull_core::rollout::{self, Action, Pending, Why};
use edgepull_core::schedule::{AfterHead, Budget, JobPhase, Local, after_head, budget};
use edgepull_core::signature::SignatureError;

/// What a running job tells the supervisor. Every event is progress for the watchdog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JobEvent {
    /// Asking the registry (HEAD).
    Checking,
    /// Downloading `total` bytes of blobs (some may already be stored).
    Downloading { total: u64 },
    /// Another phase of the job began; the image's state shown does not change.
    Phase(JobPhase),
}

impl JobEvent {
    /// The phase the job is in after this event.
    pub(crate) fn phase(&self) -> JobPhase {
        match self {
            JobEvent::Checking => JobPhase::Check,
            JobEvent::Downloading { .. } => JobPhase::Download,
            JobEvent::Phase(p) => *p,
        }
    }
}

/// How a job ended.
#[derive(Debug)]
pub(crate) enum JobOutcome {
    /// The store already has this version, complete.
    Unchanged,
    /// A new or incomplete version was downloaded and recorded.
    Updated(Box<Updated>),
    /// The download does not fit the disk budget; nothing was downloaded.
    Deferred(Deferral),
    /// The attempt failed.
    Failed(JobError),
    /// The link is closed (outside the windows, or over the daily quota): nothing more
    /// is downloaded until it opens; partial blobs are checkpointed.
    Paused(Paused),
    /// `digest` (what the tag points at) has no valid signature (`signatures`): refused
    /// now (`error`), or refused before and not fetched again (`None`) until the tag moves.
    Refused { digest: Digest, error: Option<JobError> },
    /// The new digest waits for this device's rollout slot (`rollout`): adopted at `until`
    /// (unix seconds); `prefetched` when its blobs were downloaded (`rollout.prefetch`).
    Waiting {
        pending: Pending,
        until: u64,
        prefetched: bool,
    },
    /// The new version failed its health check (`hooks.health_check`) and the image was
    /// rolled back to the previous version.
    RolledBack(Box<RollBack>),
    /// The tag still points at a digest that failed its health check: nothing was done.
    StillFailed(Digest),
    /// Shutdown.
    Cancelled,
}

/// The details of [`JobOutcome::RolledBack`].
#[derive(Debug)]
pub(crate) struct RollBack {
    /// What the tag points at: not adopted again until it moves.
    pub failed: Digest,
    /// Its platform manifest, current until the rollback.
    pub failed_manifest: Digest,
    /// The platform manifest current again.
    pub restored: Digest,
    /// The newest older version still kept.
    pub previous: Option<Digest>,
    /// The `on_update` run after the switch to the failed version, if any.
    pub update_hook: Option<(HookEnd, SystemTime)>,
    /// The failed health check's run.
    pub check: (HookEnd, SystemTime),
    /// The `on_update` run after the rollback (`EDGEPULL_ROLLBACK=1`), if any.
    pub rollback_hook: Option<(HookEnd, SystemTime)>,
}

/// Why a sync attempt failed. The text (for logs and `status.json`) is the cause's own:
/// each variant says which step failed, not how it reads.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JobError {
    /// Reading what the store holds, its free space, or recording the new version.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The `HEAD` of the manifest.
    #[error(transparent)]
    Check(#[from] RegistryError),
    /// Planning, sizing or downloading the pull.
    #[error(transparent)]
    Pull(#[from] PullError),
    /// A blocking step of the job (a store operation) panicked.
    #[error(transparent)]
    Blocking(#[from] JoinError),
    /// The job's own task panicked or was aborted.
    #[error("sync task failed")]
    Task(#[source] JoinError),
    /// The new version failed its health check and was rolled back.
    #[error(
        "the health check of {digest} {} (hooks.health_check); rolled back to {restored}; \
         {digest} is not adopted again until the tag points elsewhere",
        check_text(*check)
    )]
    Unhealthy {
        digest: Digest,
        restored: Digest,
        check: CheckEnd,
    },
}

/// How a failed health check ended, in words.
fn check_text(check: CheckEnd) -> &'static str {
    match check {
        CheckEnd::Passed => "passed",
        CheckEnd::Failed => "failed (non-zero exit or killed by a signal)",
        CheckEnd::TimedOut => "timed out (hooks.health_timeout_secs)",
        CheckEnd::CouldNotRun => "could not run",
        CheckEnd::Cancelled => "was cut short by shutdown",
    }
}

impl JobError {
    /// The failure category (an egress refusal is counted in the metrics).
    pub(crate) fn category(&self) -> Category {
        match self {
            JobError::Check(e) => e.category(),
            JobError::Pull(e) => e.category(),
            JobError::Store(_) | JobError::Blocking(_) | JobError::Task(_) => Category::Store,
            JobError::Unhealthy { .. } => Category::Integrity,
        }
    }

    /// The signature refusal, when that is why the attempt failed.
    pub(crate) fn signature(&self) -> Option<&SignatureError> {
        match self {
            JobError::Pull(e) => e.signature_refusal(),
            _ => None,
        }
    }

    /// The `Retry-After` the registry sent with the failure: a floor for the backoff.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            JobError::Check(e) => e.failure().retry_after(),
            JobError::Pull(e) => e.retry_after(),
            JobError::Store(_) | JobError::Blocking(_) | JobError::Task(_) | JobError::Unhealthy { .. } => {
                None
            }
        }
    }
}

/// A download that does not fit the disk budget (`store.min_free_bytes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Deferral {
    /// Bytes still to download.
    pub missing: u64,
    /// The reserve that must stay free.
    pub min_free: u64,
    /// Free bytes on the store's filesystem.
    pub available: u64,
    /// The store's root.
    pub store: PathBuf,
}

impl fmt::Display for Deferral {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "needs {} to download plus {} kept free (store.min_free_bytes), but only {} are free on {}; \
             free space or lower store.min_free_bytes",
            human_bytes(self.missing),
            human_bytes(self.min_free),
            human_bytes(self.available),
            self.store.display()
        )
    }
}

/// The details of [`JobOutcome::Updated`].
#[derive(Debug)]
pub(crate) struct Updated {
    /// The manifest now current.
    pub manifest: Digest,
    /// The version it replaced, when the digest changed.
    pub previous: Option<Digest>,
    /// Whether `index.json` switched to a new digest (false for a repaired download).
    pub switched: bool,
    /// Blob bytes of the image.
    pub total_bytes: u64,
    /// The hook run, if one is configured and the digest changed.
    pub hook: Option<(HookEnd, SystemTime)>,
    /// The health check run, if one is configured and the digest changed (passed, or
    /// failed with no previous version to roll back to, or cut short by shutdown).
    pub health: Option<(HookEnd, SystemTime)>,
}

/// Everything one job needs; moved into its task.
pub(crate) struct Job {
    pub name: String,
    pub reference: Reference,
    pub puller: Arc<Puller>,
    pub tracker: Arc<Tracker>,
    pub store: Store,
    pub keep_previous: u32,
    pub min_free_bytes: u64,
    pub ingest_max_age: Duration,
    pub hooks: HooksConfig,
    pub cancel: CancellationToken,
    pub events: UnboundedSender<(String, JobEvent)>,
    /// A digest this image's tag pointed at that was refused for its signature.
    pub refused: Option<Digest>,
    /// Staged rollouts: the config, the pending digest recorded, whether it is already
    /// downloaded (`prefetch`), and whether an operator asked to adopt it now.
    pub rollout: RolloutConfig,
    pub pending: Option<Pending>,
    pub prefetched: bool,
    pub adopt_now: bool,
    /// The wall clock for the staged-rollout decision.
    pub clock: super::WallClock,
}

/// What the staged rollout lets a job do ([`Job::stage`]).
enum Stage {
    /// Pull and switch now.
    Go,
    /// Download now, switch at the slot (`until`, unix seconds).
    Prefetch(Pending, u64),
    /// Keep the current version; nothing more to do (already `prefetched`, or no prefetch).
    Wait {
        pending: Pending,
        until: u64,
        prefetched: bool,
    },
}

impl Job {
    pub(super) fn event(&self, e: JobEvent) {
        let _ = self.events.send((self.name.clone(), e));
    }

    fn failed(&self, e: impl Into<JobError>) -> JobOutcome {
        let e = e.into();
        tracing::warn!(image_ref = %self.name, error = %crate::error_chain(&e), "sync failed");
        JobOutcome::Failed(e)
    }

    /// Run the job to its end.
    pub(crate) async fn run(self) -> JobOutcome {
        let store = self.store.clone();
        let name = self.name.clone();
        let (local, memory) = match spawn_blocking(move || {
            hang_while_test_file_exists();
            let memory = health::load(store.root()).remove(&name);
            local_image(&store, &name).map(|l| (l, memory.unwrap_or_default()))
        })
        .await
        {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => return self.failed(e),
            Err(e) => return self.failed(e),
        };

        let remote = match self.reference.digest() {
            Some(pinned) => *pinned,
            None => {
                self.event(JobEvent::Checking);
                let tag = self.reference.manifest_ref();
                let head = tokio::select! {
                    biased;
                    () = self.cancel.cancelled() => return JobOutcome::Cancelled,
                    h = self.puller.registry().head_manifest(self.reference.repository(), &tag) => h,
                };
                match head {
                    Ok(h) => h.digest,
                    Err(e) => return self.failed(e),
                }
            }
        };
        let current = local.map(|l| l.top);
        let checking = self.hooks.health_check.is_some();
        let decision = edgepull_core::health::start(&memory, current.as_ref(), &remote, checking);
        let forget_failed = matches!(decision.start, Start::Proceed { forget_failed: true });
        if decision.forget_trial || forget_failed {
            let kept = Memory {
                trial: memory.trial.filter(|_| !decision.forget_trial),
                failed: memory.failed.filter(|_| !forget_failed),
            };
            if let Err(e) = self.remember(kept).await {
                return self.failed(e);
            }
        }
        match decision.start {
            Start::StillFailed(d) => {
                tracing::debug!(image_ref = %self.name, digest = %d, "still the digest that failed its health check");
                return JobOutcome::StillFailed(d);
            }
            Start::FinishTrial(d) => return self.finish_trial(d).await,
            Start::Proceed { .. } => {}
        }
        let reason = match after_head(&remote, local) {
            AfterHead::Nothing => {
                tracing::debug!(image_ref = %self.name, digest = %remote, "unchanged");
                if self.prefetched && self.pending.is_some() {
                    // The tag moved back: the version downloaded ahead is not needed.
                    if let Err(e) = self.store.set_pending(&self.name, None).await {
                        return self.failed(e);
                    }
                }
                return JobOutcome::Unchanged;
            }
            AfterHead::Pull(reason) => reason,
        };
        if self.refused == Some(remote) {
            tracing::debug!(image_ref = %self.name, digest = %remote, "still the digest refused for its signature");
            return JobOutcome::Refused {
                digest: remote,
                error: None,
            };
        }
        let stage = match self.stage(current.as_ref(), &remote) {
            Stage::Go => None,
            Stage::Prefetch(pending, until) => Some((pending, until)),
            Stage::Wait {
                pending,
                until,
                prefetched,
            } => {
                return JobOutcome::Waiting {
                    pending,
                    until,
                    prefetched,
                };
            }
        };
        // Outside the windows or over the quota: the HEAD above is all this check does.
        if let Err(p) = self.puller.link().check() {
            tracing::info!(image_ref = %self.name, digest = %remote, %p, "update waits for the link");
            return JobOutcome::Paused(p);
        }
        tracing::info!(image_ref = %self.name, digest = %remote, reason = reason.as_str(), "planning pull");
        self.event(JobEvent::Phase(JobPhase::Plan));

        let plan = match self.puller.plan(&self.reference, Some(remote)).await {
            Ok(p) => Arc::new(p),
            Err(e) if e.is_cancelled() => return JobOutcome::Cancelled,
            Err(e) if let Some(p) = e.paused() => return JobOutcome::Paused(p),
            Err(e) if e.signature_refusal().is_some() => {
                tracing::warn!(image_ref = %self.name, digest = %remote, error = %crate::error_chain(&e), "update refused: the current version stays; not retried until the tag moves");
                return JobOutcome::Refused {
                    digest: remote,
                    error: Some(e.into()),
                };
            }
            Err(e) => return self.failed(e),
        };
        let missing = match self.puller.missing(&plan).await {
            Ok(m) => m,
            Err(e) => return self.failed(e),
        };
        let root = self.store.root().to_path_buf();
        let available = match spawn_blocking(move || available_bytes(&root)).await {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                return self.failed(StoreError::Io {
                    op: "statvfs",
                    path: self.store.root().to_path_buf(),
                    source: e,
                });
            }
            Err(e) => return self.failed(e),
        };
        if let Budget::Defer {
            missing,
            min_free,
            available,
        } = budget(missing.bytes, self.min_free_bytes, available)
        {
            tracing::warn!(image_ref = %self.name, digest = %remote, missing, min_free, available, "download deferred: not enough disk space");
            return JobOutcome::Deferred(Deferral {
                missing,
                min_free,
                available,
                store: self.store.root().to_path_buf(),
            });
        }

        let (tracker, store, blobs) = (self.tracker.clone(), self.store.clone(), plan.blobs.clone());
        if let Err(e) = spawn_blocking(move || tracker.begin(&blobs, &store)).await {
            return self.failed(e);
        }
        self.event(JobEvent::Downloading {
            total: plan.total_bytes(),
        });
        let stats: Vec<FetchStats> = match self.puller.download(&plan).await {
            Ok(s) => s,
            Err(e) if e.is_cancelled() => return JobOutcome::Cancelled,
            Err(e) if let Some(p) = e.paused() => return JobOutcome::Paused(p),
            Err(e) => return self.failed(e),
        };
        self.event(JobEvent::Phase(JobPhase::Local));
        if let Some((pending, until)) = stage {
            // Recorded in index.json, so no garbage collection takes its blobs before the
            // switch.
            let ahead = Some((plan.manifest.clone(), plan.index));
            if let Err(e) = self.store.set_pending(&self.name, ahead).await {
                return self.failed(e);
            }
            tracing::info!(image_ref = %self.name, digest = %remote, adopt_at = %rfc3339(until), "prefetched; switched at this device's rollout slot");
            return JobOutcome::Waiting {
                pending,
                until,
                prefetched: true,
            };
        }
        // The trial begins before the switch, so a crash in between is finished at the next
        // start (`health::start`).
        let trial = checking && current != Some(remote);
        if trial
            && let Err(e) = self
                .remember(Memory {
                    trial: Some(remote),
                    failed: None,
                })
                .await
        {
            return self.failed(e);
        }
        let switch = match self
            .store
            .switch_image(
                &self.name,
                &plan.manifest,
                plan.index.as_ref(),
                self.keep_previous,
            )
            .await
        {
            Ok(s) => s,
            Err(e) => return self.failed(e),
        };
        let report = plan.report(&stats);
        tracing::info!(
            image_ref = %self.name,
            digest = %plan.manifest.digest,
            previous_digest = %switch.previous.map(|d| d.to_string()).unwrap_or_default(),
            reason = reason.as_str(),
            bytes_received = report.bytes_received,
            bytes_resumed = report.bytes_resumed,
            "image updated"
        );

        self.collect_garbage().await;

        let mut hook = match (&self.hooks.on_update, switch.changed) {
            (Some(argv), true) => {
                self.event(JobEvent::Phase(JobPhase::Hook));
                let digest = plan.manifest.digest;
                Some(self.run_hook(Which::Update, argv, &digest, switch.previous).await)
            }
            _ => None,
        };
        let mut health = None;
        if let Some(argv) = self.hooks.health_check.as_ref().filter(|_| trial) {
            if !switch.changed {
                // Repaired, not switched: nothing is on trial.
                if let Err(e) = self.remember(Memory::default()).await {
                    return self.failed(e);
                }
            } else {
                let digests = (remote, plan.manifest.digest);
                match self.judge(argv, digests, switch.previous, hook.take()).await {
                    Ok(Judged::RolledBack(rb)) => return JobOutcome::RolledBack(rb),
                    Ok(Judged::Kept { check, update_hook }) => {
                        health = Some(check);
                        hook = update_hook;
                    }
                    Err(e) => return self.failed(e),
                }
            }
        }
        JobOutcome::Updated(Box::new(Updated {
            manifest: plan.manifest.digest,
            previous: switch.previous,
            switched: switch.changed,
            total_bytes: plan.total_bytes(),
            hook,
            health,
        }))
    }

    /// Finish the trial of the current version `top`, cut short by a restart: `on_update`
    /// again (the application may not have been told), then the health check.
    async fn finish_trial(&self, top: Digest) -> JobOutcome {
        let (images, previous) = match tokio::try_join!(self.store.images(), self.store.previous_images()) {
            Ok(found) => found,
            Err(e) => return self.failed(e),
        };
        let Some(manifest) = images
            .into_iter()
            .find(|i| i.ref_name == self.name)
            .map(|i| i.descriptor.digest)
        else {
            return JobOutcome::Unchanged;
        };
        let previous = previous
            .into_iter()
            .filter(|p| p.ref_name == self.name)
            .min_by_key(|p| p.rank)
            .map(|p| p.descriptor.digest);
        tracing::warn!(image_ref = %self.name, digest = %top, "the health check of the current version did not end before the last stop; running it now");
        let hook = match &self.hooks.on_update {
            Some(argv) => {
                self.event(JobEvent::Phase(JobPhase::Hook));
                Some(self.run_hook(Which::Update, argv, &manifest, previous).await)
            }
            None => None,
        };
        let Some(argv) = &self.hooks.health_check else {
            return JobOutcome::Unchanged;
        };
        match self.judge(argv, (top, manifest), previous, hook).await {
            Ok(Judged::RolledBack(rb)) => JobOutcome::RolledBack(rb),
            Ok(Judged::Kept { check, update_hook }) => JobOutcome::Updated(Box::new(Updated {
                manifest,
                previous,
                switched: false,
                total_bytes: 0,
                hook: update_hook,
                health: Some(check),
            })),
            Err(e) => self.failed(e),
        }
    }

    /// The staged-rollout decision for `remote` ([`rollout::decide`]).
    fn stage(&self, current: Option<&Digest>, remote: &Digest) -> Stage {
        let policy = rollout::Policy {
            device_id: &self.rollout.device_id,
            window_secs: self.rollout.window_secs,
            prefetch: self.rollout.prefetch,
        };
        let now = self
            .clock
            .now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let verdict = rollout::decide(
            &policy,
            &rollout::Seen {
                current,
                pending: self.pending.as_ref(),
                remote,
                pinned: self.reference.digest().is_some(),
                adopt_now: self.adopt_now,
                now,
            },
        );
        let why = verdict.why.as_str();
        let (until, download) = match verdict.action {
            Action::Adopt => {
                if verdict.pending.is_some() {
                    tracing::info!(image_ref = %self.name, digest = %remote, why, "adopting the pending update");
                }
                return Stage::Go;
            }
            Action::Wait { until, download } => (until, download),
        };
        let pending = verdict.pending.unwrap_or(rollout::Pending {
            digest: *remote,
            first_seen: now,
        });
        match verdict.why {
            Why::Waiting => {
                tracing::debug!(image_ref = %self.name, digest = %remote, adopt_at = %rfc3339(until), "waiting for this device's rollout slot")
            }
            _ => {
                tracing::info!(image_ref = %self.name, digest = %remote, why, adopt_at = %rfc3339(until), "new version seen; adopted at this device's rollout slot (staged rollout)")
            }
        }
        if download && !(self.prefetched && self.pending.is_some_and(|p| p.digest == *remote)) {
            return Stage::Prefetch(pending, until);
        }
        Stage::Wait {
            pending,
            until,
            prefetched: download,
        }
    }
}

/// Free bytes for an unprivileged user on the filesystem holding `path`.
pub(crate) fn available_bytes(path: &std::path::Path) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(path).map_err(std::io::Error::from)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Debug builds only, for the watchdog test in `tests/daemon.rs`: while the file named by
/// `EDGEPULL_TEST_HANG_FILE` exists, the job's first store step blocks its thread as a hung
/// disk would (the store opens its files non-blocking, so a FIFO can no longer stand in
/// for one). Compiled out of release builds.
fn hang_while_test_file_exists() {
    #[cfg(debug_assertions)]
    if let Some(path) = std::env::var_os("EDGEPULL_TEST_HANG_FILE") {
        while std::path::Path::new(&path).exists() {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// What the store has for `name`: the digest a HEAD returns for it, and whether the
/// manifest and all its blobs are present with the right sizes.
pub(crate) fn local_image(store: &Store, name: &str) -> Result<Option<Local>, StoreError> {
    let Some(entry) = store.images_blocking()?.into_iter().find(|i| i.ref_name == name) else {
        return Ok(None);
    };
    let manifest = &entry.descriptor;
    let top = entry.source_index.unwrap_or(manifest.digest);
    Ok(Some(Local {
        top,
        complete: is_complete(store, manifest, entry.source_index.as_ref()),
    }))
}

fn is_complete(store: &Store, manifest: &Descriptor, index: Option<&Digest>) -> bool {
    if !store.has_blob_blocking(&manifest.digest, manifest.size) {
        return false;
    }
    if index.is_some_and(|d| !store.blob_path(d).is_file()) {
        return false;
    }
    let Ok(bytes) = store.read_blob_blocking(&manifest.digest, MAX_MANIFEST_BYTES) else {
        return false;
    };
    let Ok(m) = serde_json::from_slice::<ImageManifest>(&bytes) else {
        return false;
    };
    m.blobs().all(|b| store.has_blob_blocking(&b.digest, b.size))
}
