//! The daemon's start-up and reload steps that read or write the disk: the config, the
//! store (open, recovery, repair, garbage collection), the registry client (it reads the CA
//! and credential files) and the versions `index.json` records.
//!
//! Owns: running each step off the runtime, in `spawn_blocking`. Never keeps state and
//! never decides anything about the schedule: the supervisor calls these and applies the
//! results.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::spawn_blocking;
use tokio_util::sync::CancellationToken;

use super::DaemonError;
use super::atomic::{self, DirCheck};
use super::status::STATUS_FILE;
use super::tracker::Tracker;
use crate::config::Config;
use crate::link::Link;
use crate::pull::Puller;
use crate::store::{ImageEntry, PreviousEntry, Store};
use edgepull_core::retry::RetryPolicy;
use edgepull_core::schedule::Silences;

/// First wait between two attempts of one request inside a sync job.
const RETRY_BASE: Duration = Duration::from_secs(1);
/// Longest wait between two attempts inside a sync job.
const RETRY_CAP: Duration = Duration::from_secs(30);
/// Attempts of one request inside a sync job (the daemon's backoff takes over after).
const RETRY_ATTEMPTS: u32 = 4;

/// How long each phase of a sync job may go without progress under `cfg`: from its
/// network timeouts, the job's retry budget and the hook timeout.
pub(super) fn silences(cfg: &Config) -> Silences {
    Silences::new(
        cfg.timeouts.connect,
        cfg.timeouts.idle_read,
        RETRY_ATTEMPTS,
        RETRY_CAP,
        // The longer of the two hooks (the health check runs in the same phase).
        cfg.hooks.timeout.max(cfg.hooks.health_timeout),
    )
}

/// Read and validate the config at `path`, and check the metrics textfile's directory
/// ([`check_metrics_dir`]).
pub(super) async fn load_config(path: std::path::PathBuf) -> Result<Config, DaemonError> {
    let cfg = spawn_blocking(move || Config::load(&path)).await??;
    if let Some(textfile) = cfg.metrics.textfile.clone() {
        spawn_blocking(move || check_metrics_dir(&textfile)).await??;
    }
    Ok(cfg)
}

/// Refuse a metrics directory another user can write; remove temp files an earlier run
/// left there. A directory that cannot be inspected (not created yet) is only a warning:
/// each write checks again ([`super::files`]).
fn check_metrics_dir(textfile: &std::path::Path) -> Result<(), DaemonError> {
    match atomic::check_dir(textfile) {
        Ok(DirCheck::Safe) => {
            atomic::remove_stale_temps(textfile);
            Ok(())
        }
        Ok(DirCheck::Unknown(e)) => {
            tracing::warn!(path = %textfile.display(), error = %e, "cannot inspect the directory of metrics.textfile; the metrics are written once it exists");
            Ok(())
        }
        Err(u) => Err(DaemonError::UnsafeMetricsDir {
            dir: u.dir,
            problem: u.problem,
        }),
    }
}

/// Open the store, recover it, repair blobs whose size disagrees with their manifests and
/// collect garbage: everything before `READY=1`. The store runs each step off the runtime.
pub(super) async fn open_store(cfg: &Config) -> Result<Store, DaemonError> {
    let store = Store::open(&cfg.store.path, cfg.store.lock_wait)
        .await
        .map_err(DaemonError::Store)?;
    // After an unclean stop (or always, as configured): re-hash the current images' blobs
    // and drop corrupt ones so this run fetches them again, before READY.
    store
        .scrub(cfg.store.verify_on_start)
        .await
        .map_err(DaemonError::Store)?;
    // Temp files of status.json a crash left in the store root (the store's own temp
    // files are the store's business).
    let status = store.root().join(STATUS_FILE);
    spawn_blocking(move || atomic::remove_stale_temps(&status)).await?;
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

/// The registry client and puller for `cfg`, reporting to `tracker`, stopped by `cancel`.
/// [`crate::app::puller`] reads the CA and credential files off the runtime.
pub(super) async fn build_puller(
    cfg: &Config,
    store: &Store,
    tracker: &Arc<Tracker>,
    cancel: &CancellationToken,
    link: &Arc<Link>,
) -> Result<Arc<Puller>, DaemonError> {
    let mut p = crate::app::puller(cfg, store.clone(), tracker.clone())
        .await
        .map_err(DaemonError::Setup)?;
    // A few quick retries inside one attempt; beyond that the daemon's own backoff
    // (up to sync.backoff_max_secs) takes over and the next attempt resumes.
    let retry = RetryPolicy::new(RETRY_BASE, RETRY_CAP, Some(RETRY_ATTEMPTS)).unwrap_or_default();
    p.set_retry(retry);
    p.set_cancel(cancel.child_token());
    // One limiter for the daemon's life: a reload reconfigures it, downloads go on.
    p.set_link(link.clone());
    Ok(Arc::new(p))
}

/// The images `index.json` records as current, and the older versions it keeps. A store
/// that cannot be read shows nothing (the next sync reports the error).
pub(super) async fn recorded_versions(store: &Store) -> (Vec<ImageEntry>, Vec<PreviousEntry>) {
    (
        store.images().await.unwrap_or_default(),
        store.previous_images().await.unwrap_or_default(),
    )
}
