//! One sync of one image: check, plan, budget, download, switch, collect garbage, run the
//! hook. Runs as its own task; the supervisor learns its progress through [`JobEvent`]s
//! and the shared [`Tracker`], and its result as a [`JobOutcome`].
//!
//! Requests, in order: one `HEAD` of the manifest (none for a pinned digest). When the
//! store already has that digest complete, that is all. Otherwise the manifests are
//! fetched by digest (so the plan cannot race a tag that moves again), the missing bytes
//! are checked against the disk budget, and only then are blobs downloaded.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::hook::{self, HookEnd, HookEnv};
use crate::config::HooksConfig;
use crate::exit::Category;
use crate::progress::{FetchStats, Progress};
use crate::pull::{PullPlan, Puller};
use crate::store::{Store, StoreError};
use edgepull_core::oci::manifest::MAX_MANIFEST_BYTES;
use edgepull_core::oci::{Descriptor, Digest, ImageManifest, Reference};
use edgepull_core::schedule::{AfterHead, Budget, Local, after_head, budget};

/// What a running job tells the supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JobEvent {
    /// Asking the registry (HEAD).
    Checking,
    /// Downloading `total` bytes of blobs (some may already be stored).
    Downloading { total: u64 },
}

/// How a job ended.
#[derive(Debug)]
pub(crate) enum JobOutcome {
    /// The store already has this version, complete.
    Unchanged,
    /// A new or incomplete version was downloaded and recorded.
    Updated(Box<Updated>),
    /// The download does not fit the disk budget; nothing was downloaded.
    Deferred { message: String },
    /// The attempt failed.
    Failed {
        message: String,
        retry_after: Option<Duration>,
        category: Category,
    },
    /// Shutdown.
    Cancelled,
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
}

impl Job {
    fn event(&self, e: JobEvent) {
        let _ = self.events.send((self.name.clone(), e));
    }

    fn failed(
        &self,
        e: &dyn std::error::Error,
        category: Category,
        retry_after: Option<Duration>,
    ) -> JobOutcome {
        let message = crate::error_chain(e);
        tracing::warn!(image_ref = %self.name, error = %message, "sync failed");
        JobOutcome::Failed {
            message,
            retry_after,
            category,
        }
    }

    /// Run the job to its end.
    pub(crate) async fn run(self) -> JobOutcome {
        let store = self.store.clone();
        let name = self.name.clone();
        let local = match tokio::task::spawn_blocking(move || local_image(&store, &name)).await {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => return self.failed(&e, e.category(), None),
            Err(e) => return self.failed(&e, Category::Store, None),
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
                    Err(e) => {
                        let ra = e.failure().retry_after();
                        return self.failed(&e, e.category(), ra);
                    }
                }
            }
        };
        let reason = match after_head(&remote, local) {
            AfterHead::Nothing => {
                tracing::debug!(image_ref = %self.name, digest = %remote, "unchanged");
                return JobOutcome::Unchanged;
            }
            AfterHead::Pull(reason) => reason,
        };
        tracing::info!(image_ref = %self.name, digest = %remote, reason = reason.as_str(), "planning pull");

        let plan = match self.puller.plan(&self.reference, Some(remote)).await {
            Ok(p) => p,
            Err(e) if e.is_cancelled() => return JobOutcome::Cancelled,
            Err(e) => return self.failed(&e, e.category(), e.retry_after()),
        };
        let missing = match self.puller.missing(&plan).await {
            Ok(m) => m,
            Err(e) => return self.failed(&e, e.category(), None),
        };
        let root = self.store.root().to_path_buf();
        let available = match tokio::task::spawn_blocking(move || available_bytes(&root)).await {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                let e = StoreError::Io {
                    op: "statvfs",
                    path: self.store.root().to_path_buf(),
                    source: e,
                };
                return self.failed(&e, e.category(), None);
            }
            Err(e) => return self.failed(&e, Category::Store, None),
        };
        if let Budget::Defer {
            missing,
            min_free,
            available,
        } = budget(missing.bytes, self.min_free_bytes, available)
        {
            let message = format!(
                "needs {} to download plus {} kept free (store.min_free_bytes), but only {} are free on {}; \
                 free space or lower store.min_free_bytes",
                super::status::human_bytes(missing),
                super::status::human_bytes(min_free),
                super::status::human_bytes(available),
                self.store.root().display()
            );
            tracing::warn!(image_ref = %self.name, digest = %remote, missing, min_free, available, "download deferred: not enough disk space");
            return JobOutcome::Deferred { message };
        }

        self.tracker.begin(&plan, &self.store).await;
        self.event(JobEvent::Downloading {
            total: plan.total_bytes(),
        });
        let stats: Vec<FetchStats> = match self.puller.download(&plan).await {
            Ok(s) => s,
            Err(e) if e.is_cancelled() => return JobOutcome::Cancelled,
            Err(e) => return self.failed(&e, e.category(), e.retry_after()),
        };
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
            Err(e) => return self.failed(&e, e.category(), None),
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

        let hook = match (&self.hooks.on_update, switch.changed) {
            (Some(argv), true) => Some(self.run_hook(argv, &plan, switch.previous).await),
            _ => None,
        };
        JobOutcome::Updated(Box::new(Updated {
            manifest: plan.manifest.digest,
            previous: switch.previous,
            switched: switch.changed,
            total_bytes: plan.total_bytes(),
            hook,
        }))
    }

    async fn run_hook(
        &self,
        argv: &[String],
        plan: &PullPlan,
        previous: Option<Digest>,
    ) -> (HookEnd, SystemTime) {
        let digest = plan.manifest.digest.to_string();
        let previous = previous.map(|d| d.to_string()).unwrap_or_default();
        let layout = self.store.layout_dir();
        let env = HookEnv {
            reference: &self.name,
            digest: &digest,
            previous: &previous,
            layout: &layout,
        };
        let program = argv.first().map(String::as_str).unwrap_or_default();
        let end = hook::run(argv, &env, self.hooks.timeout, &self.cancel).await;
        match &end {
            HookEnd::Exited(0) => {
                tracing::info!(image_ref = %self.name, digest = %digest, program, exit_code = 0, "update hook succeeded")
            }
            HookEnd::Exited(code) => {
                tracing::warn!(image_ref = %self.name, digest = %digest, program, exit_code = code, "update hook failed; the new version stays current")
            }
            HookEnd::Signalled(sig) => {
                tracing::warn!(image_ref = %self.name, digest = %digest, program, signal = sig, "update hook was killed by a signal; the new version stays current")
            }
            HookEnd::TimedOut => {
                tracing::warn!(image_ref = %self.name, digest = %digest, program, timeout = ?self.hooks.timeout, "update hook timed out and was killed (hooks.timeout_secs); the new version stays current")
            }
            HookEnd::Cancelled => {
                tracing::warn!(image_ref = %self.name, digest = %digest, program, "update hook killed for shutdown")
            }
            HookEnd::SpawnFailed(e) => {
                tracing::warn!(image_ref = %self.name, digest = %digest, program, error = %e, "update hook could not run; check hooks.on_update")
            }
        }
        (end, SystemTime::now())
    }
}

/// Free bytes for an unprivileged user on the filesystem holding `path`.
pub(crate) fn available_bytes(path: &std::path::Path) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(path).map_err(std::io::Error::from)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// What the store has for `name`: the digest a HEAD returns for it, and whether the
/// manifest and all its blobs are present with the right sizes. Blocking (the store's
/// `*_blocking` reads): call it from `spawn_blocking`.
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

/// Download progress of the running job: bytes stored per blob, and the bytes received
/// and resumed since the last [`Tracker::take_counters`].
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    inner: Mutex<TrackerInner>,
}

#[derive(Debug, Default)]
struct TrackerInner {
    /// Blobs of the running plan not in the store: digest → (size, stored offset).
    blobs: HashMap<Digest, (u64, u64)>,
    /// Bytes of the plan's blobs already in the store when it began.
    present: u64,
    downloaded: u64,
    resumed: u64,
}

impl Tracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, TrackerInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Start tracking `plan`.
    pub(crate) async fn begin(&self, plan: &PullPlan, store: &Store) {
        let mut present = Vec::with_capacity(plan.blobs.len());
        for b in &plan.blobs {
            present.push(store.has_blob(&b.digest, b.size).await);
        }
        let mut t = self.lock();
        t.blobs.clear();
        t.present = 0;
        for (b, present) in plan.blobs.iter().zip(present) {
            if present {
                // The plan's sizes passed `check_blob_sizes`; saturate anyway.
                t.present = t.present.saturating_add(b.size);
            } else {
                t.blobs.insert(b.digest, (b.size, 0));
            }
        }
    }

    /// Bytes of the plan stored so far.
    pub(crate) fn done(&self) -> u64 {
        let t = self.lock();
        t.blobs.values().fold(t.present, |sum, (size, off)| {
            sum.saturating_add((*off).min(*size))
        })
    }

    /// Bytes downloaded and resumed since the last call.
    pub(crate) fn take_counters(&self) -> (u64, u64) {
        let mut t = self.lock();
        let out = (t.downloaded, t.resumed);
        t.downloaded = 0;
        t.resumed = 0;
        out
    }
}

impl Progress for Tracker {
    fn start(&self, desc: &Descriptor, offset: u64) {
        let mut t = self.lock();
        if offset > 0 {
            t.resumed += offset;
        }
        t.blobs.insert(desc.digest, (desc.size, offset));
    }

    fn advance(&self, desc: &Descriptor, offset: u64) {
        let mut t = self.lock();
        let entry = t.blobs.entry(desc.digest).or_insert((desc.size, 0));
        let before = entry.1;
        entry.1 = offset;
        if offset > before {
            t.downloaded += offset - before;
        }
    }

    fn restart(&self, desc: &Descriptor) {
        self.lock().blobs.insert(desc.digest, (desc.size, 0));
    }

    fn finish(&self, desc: &Descriptor, _stats: &FetchStats) {
        self.lock().blobs.insert(desc.digest, (desc.size, desc.size));
    }

    fn fail(&self, _desc: &Descriptor) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_counts_received_resumed_and_done() {
        let t = Tracker::default();
        let a = Descriptor::new("x", Digest::of(b"a"), 100);
        let b = Descriptor::new("x", Digest::of(b"b"), 50);
        t.start(&a, 40);
        t.advance(&a, 70);
        t.start(&b, 0);
        t.advance(&b, 10);
        t.restart(&b);
        t.advance(&b, 50);
        assert_eq!(t.done(), 70 + 50);
        assert_eq!(t.take_counters(), (30 + 10 + 50, 40));
        assert_eq!(t.take_counters(), (0, 0));
        t.finish(&a, &FetchStats::default());
        assert_eq!(t.done(), 150);
    }
}
