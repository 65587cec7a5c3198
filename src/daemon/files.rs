//! Writing `status.json` and the metrics textfile off the runtime.
//!
//! Owns: when and in which order those files are written. Each snapshot the supervisor
//! hands over is written by its own blocking task, so the supervisor loop never waits for
//! the disk. The tasks take turns, and one whose snapshot is older than the last written
//! skips its write: an older state never replaces a newer one. The metrics textfile is
//! rewritten only when its text changed, and only while its directory is one no other user
//! can write ([`atomic::check_dir`]; a refusal is logged once until the directory is
//! fixed). Never decides what the state is, and never writes on the runtime.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::task::{JoinHandle, spawn_blocking};

use super::atomic::{self, UnsafeDir};
use super::metrics::Metrics;
use super::status::{self, STATUS_FILE, Status};

/// The writer of the daemon's files.
pub(super) struct Files {
    /// The store root, where `status.json` lives.
    root: PathBuf,
    /// Number of the last snapshot handed over.
    handed: u64,
    shared: Arc<Mutex<Written>>,
    /// The task writing the last snapshot handed over.
    last: Option<JoinHandle<()>>,
}

/// What is on disk.
#[derive(Debug, Default)]
struct Written {
    /// Number of the last snapshot written.
    snapshot: u64,
    /// The metrics text last written.
    metrics: Option<String>,
    /// Why the last metrics write was refused (logged once).
    refused: Option<UnsafeDir>,
}

impl Files {
    pub(super) fn new(root: PathBuf) -> Self {
        Self {
            root,
            handed: 0,
            shared: Arc::default(),
            last: None,
        }
    }

    /// Write `status` and, when given, `metrics` to its textfile, in the background.
    pub(super) fn write(&mut self, status: Status, metrics: Option<(PathBuf, Metrics)>) {
        self.handed += 1;
        let snapshot = self.handed;
        let (root, shared) = (self.root.clone(), self.shared.clone());
        self.last = Some(spawn_blocking(move || {
            let mut written = shared.lock().unwrap_or_else(PoisonError::into_inner);
            if written.snapshot >= snapshot {
                return; // a newer snapshot is on disk already
            }
            written.snapshot = snapshot;
            if let Err(e) = status::write(&root, &status) {
                tracing::warn!(error = %e, path = %root.join(STATUS_FILE).display(), "cannot write status.json");
            }
            let Some((path, metrics)) = metrics else {
                return;
            };
            let text = metrics.render();
            if written.metrics.as_deref() == Some(text.as_str()) {
                return;
            }
            match atomic::check_dir(&path) {
                Ok(_) => written.refused = None,
                Err(unsafe_dir) => {
                    if written.refused.as_ref() != Some(&unsafe_dir) {
                        tracing::error!(path = %path.display(), "not writing the metrics textfile: {unsafe_dir}");
                        written.refused = Some(unsafe_dir);
                    }
                    return;
                }
            }
            match metrics.write(&path) {
                Ok(()) => written.metrics = Some(text),
                Err(e) => {
                    tracing::warn!(error = %e, path = %path.display(), "cannot write the metrics textfile")
                }
            }
        }));
    }

    /// Wait until the last snapshot handed over is on disk (or its write failed).
    pub(super) async fn flush(&mut self) {
        if let Some(task) = self.last.take()
            && let Err(e) = task.await
        {
            tracing::warn!(error = %e, "the task writing status.json and the metrics textfile failed");
        }
    }
}
