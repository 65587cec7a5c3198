//! A job's hooks and the trial of a new version: `on_update`, the health check, and the
//! automatic rollback after a failed one.
//!
//! Owns: running the hooks and logging how they ended, and the rollback's steps (switch
//! `index.json` back, record the failed digest, collect garbage, `on_update` with
//! `EDGEPULL_ROLLBACK=1`). Never decides (the core's [`health`] does) and never changes the
//! supervisor's state (the job's outcome says what happened).

use std::collections::BTreeSet;
use std::time::SystemTime;

use tokio::task::spawn_blocking;

use super::{Job, JobError, JobEvent, RollBack};
use crate::daemon::health::{HEALTH_FILE, check_end, remember};
use crate::daemon::hook::{self, HookEnd, HookEnv};
use edgepull_core::health::{self, Memory, Verdict};
use edgepull_core::oci::Digest;
use edgepull_core::schedule::JobPhase;

/// Which hook runs, for its log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Which {
    /// `on_update` after a switch to a new version.
    Update,
    /// `on_update` after a rollback (`EDGEPULL_ROLLBACK=1`).
    Rollback,
    /// `health_check`.
    Health,
}

/// How a version's trial ended ([`Job::judge`]).
#[derive(Debug)]
pub(super) enum Judged {
    /// The version stays: the check passed, was cut short by shutdown, or failed with no
    /// previous version to roll back to. With the check's run and the `on_update` run.
    Kept {
        check: (HookEnd, SystemTime),
        update_hook: Option<(HookEnd, SystemTime)>,
    },
    /// The check failed and the image was rolled back.
    RolledBack(Box<RollBack>),
}

impl Job {
    /// Record `memory` for this image in `health.json`, off the runtime.
    pub(super) async fn remember(&self, memory: Memory) -> Result<(), JobError> {
        let (root, name) = (self.store.root().to_path_buf(), self.name.clone());
        spawn_blocking(move || remember(&root, &name, memory))
            .await?
            .map_err(|source| {
                JobError::Store(crate::store::StoreError::Io {
                    op: "record the health state in",
                    path: self.store.root().join(HEALTH_FILE),
                    source,
                })
            })
    }

    /// Run `argv` (`which` hook) for `digest`, which replaced `previous`, and log its end.
    pub(super) async fn run_hook(
        &self,
        which: Which,
        argv: &[String],
        digest: &Digest,
        previous: Option<Digest>,
    ) -> (HookEnd, SystemTime) {
        let (digest_s, previous_s) = (
            digest.to_string(),
            previous.map(|d| d.to_string()).unwrap_or_default(),
        );
        let layout = self.store.layout_dir();
        let env = HookEnv {
            reference: &self.name,
            digest: &digest_s,
            previous: &previous_s,
            layout: &layout,
            rollback: which == Which::Rollback,
        };
        let timeout = match which {
            Which::Health => self.hooks.health_timeout,
            Which::Update | Which::Rollback => self.hooks.timeout,
        };
        let end = hook::run(argv, &env, timeout, &self.cancel).await;
        log_end(which, &self.name, digest, argv, &end, timeout);
        (end, SystemTime::now())
    }

    /// The trial of `top` (what the tag points at), whose platform manifest `manifest` is
    /// current and replaced `previous` (kept for rollback), after `update_hook` ran: run
    /// the health check and act on the core's verdict. Errors only when the store or the
    /// record cannot be written.
    pub(super) async fn judge(
        &self,
        argv: &[String],
        (top, manifest): (Digest, Digest),
        previous: Option<Digest>,
        update_hook: Option<(HookEnd, SystemTime)>,
    ) -> Result<Judged, JobError> {
        self.event(JobEvent::Phase(JobPhase::Hook));
        let check = self.run_hook(Which::Health, argv, &manifest, previous).await;
        let end = check_end(&check.0);
        let mut verdict = health::verdict(end, previous);
        let mut restored = None;
        if let Verdict::RollBack(_) = verdict {
            self.event(JobEvent::Phase(JobPhase::Local));
            restored = self.store.roll_back(&self.name, manifest).await?;
            if restored.is_none() {
                verdict = Verdict::NoPrevious;
            }
        }
        let failed = Memory {
            trial: None,
            failed: Some(top),
        };
        match (verdict, restored) {
            (Verdict::RollBack(_), Some(rb)) => {
                tracing::error!(
                    image_ref = %self.name,
                    digest = %top,
                    restored_digest = %rb.restored,
                    check = end.as_str(),
                    "health check failed: rolled back to the previous version; \
                     this digest is not adopted again until the tag moves"
                );
                self.remember(failed).await?;
                self.collect_garbage().await;
                let rollback_hook = match &self.hooks.on_update {
                    Some(argv) => {
                        self.event(JobEvent::Phase(JobPhase::Hook));
                        let back = Some(manifest);
                        Some(self.run_hook(Which::Rollback, argv, &rb.restored, back).await)
                    }
                    None => None,
                };
                return Ok(Judged::RolledBack(Box::new(RollBack {
                    failed: top,
                    failed_manifest: manifest,
                    restored: rb.restored,
                    previous: rb.previous,
                    update_hook,
                    check,
                    rollback_hook,
                })));
            }
            (Verdict::Keep, _) => self.remember(Memory::default()).await?,
            (Verdict::Unfinished, _) => {
                tracing::warn!(image_ref = %self.name, digest = %top, "health check killed for shutdown; it runs again at the next start");
            }
            (Verdict::NoPrevious | Verdict::RollBack(_), _) => {
                tracing::error!(
                    image_ref = %self.name,
                    digest = %top,
                    check = end.as_str(),
                    "health check failed, but no previous version is kept to roll back to; \
                     the new version stays current"
                );
                self.remember(failed).await?;
            }
        }
        Ok(Judged::Kept { check, update_hook })
    }

    /// Delete what no `index.json` entry references (a failed version, an older version
    /// that fell off `keep_previous`). A failure is logged: it is retried after the next
    /// update.
    pub(super) async fn collect_garbage(&self) {
        match self.store.gc(&BTreeSet::new(), self.ingest_max_age).await {
            Ok(r) => {
                if !r.deleted.is_empty() || !r.removed_ingests.is_empty() {
                    tracing::info!(image_ref = %self.name, blobs = r.deleted.len(), bytes = r.freed_bytes, ingests = r.removed_ingests.len(), "garbage collected");
                }
            }
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "garbage collection failed; retried after the next update")
            }
        }
    }
}

/// The log line for a hook's end.
fn log_end(
    which: Which,
    name: &str,
    digest: &Digest,
    argv: &[String],
    end: &HookEnd,
    timeout: std::time::Duration,
) {
    let program = argv.first().map(String::as_str).unwrap_or_default();
    let (what, after) = match which {
        Which::Update => ("update hook", "the new version stays current"),
        Which::Rollback => ("update hook (rollback)", "the restored version stays current"),
        Which::Health => ("health check", "counted as failed"),
    };
    match end {
        HookEnd::Exited(0) => {
            tracing::info!(image_ref = %name, digest = %digest, program, exit_code = 0, "{what} succeeded")
        }
        HookEnd::Exited(code) => {
            tracing::warn!(image_ref = %name, digest = %digest, program, exit_code = code, "{what} failed; {after}")
        }
        HookEnd::Signalled(sig) => {
            tracing::warn!(image_ref = %name, digest = %digest, program, signal = sig, "{what} was killed by a signal; {after}")
        }
        HookEnd::TimedOut => {
            tracing::warn!(image_ref = %name, digest = %digest, program, timeout = ?timeout, "{what} timed out and was killed; {after}")
        }
        HookEnd::Cancelled => {
            tracing::warn!(image_ref = %name, digest = %digest, program, "{what} killed for shutdown")
        }
        HookEnd::SpawnFailed(e) => {
            tracing::warn!(image_ref = %name, digest = %digest, program, error = %crate::error_chain(e), "{what} could not run; check the hooks section; {after}")
        }
    }
}
