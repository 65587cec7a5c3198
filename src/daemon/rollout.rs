//! `<store>/rollout.json`: when this device first saw each pending digest, so that a
//! restart does not reset a staged rollout's wait.
//!
//! Owns: the file's format and its reads and writes. Writes go through
//! [`super::atomic::replace`] (exclusive temp file, fsync, rename) in `spawn_blocking`, in
//! the order they were handed over: an older record never replaces a newer one. Never
//! decides when a digest is adopted (`edgepull_core::rollout` does) and never writes on
//! the runtime.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use tokio::task::{JoinHandle, spawn_blocking};

use edgepull_core::oci::Digest;
use edgepull_core::rollout::{Pending, Policy, adopt_at};
use tokio::time::Instant;

use super::slot::Slot;
use crate::config::RolloutConfig;

/// Name of the file in the store root.
pub(super) const ROLLOUT_FILE: &str = "rollout.json";
/// The format version written.
const VERSION: u32 = 1;
/// Largest file read (a few entries per configured image).
const MAX_BYTES: u64 = 1024 * 1024;

#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    /// Image reference → its pending digest.
    pending: BTreeMap<String, Entry>,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    digest: String,
    /// Unix seconds.
    first_seen: u64,
}

/// The pending digests recorded in `root`, by image reference (blocking). A missing file
/// is no pending digest; an unreadable or malformed one is logged and ignored (the waits
/// start again: later, never earlier).
pub(super) fn load(root: &Path) -> BTreeMap<String, Pending> {
    let Some(file) = super::atomic::load_record::<File>(
        &root.join(ROLLOUT_FILE),
        MAX_BYTES,
        "staged-rollout record",
        "pending updates start their wait again",
    ) else {
        return BTreeMap::new();
    };
    file.pending
        .into_iter()
        .filter_map(|(name, e)| {
            let digest = Digest::parse(&e.digest).ok()?;
            Some((
                name,
                Pending {
                    digest,
                    first_seen: e.first_seen,
                },
            ))
        })
        .collect()
}

/// Mark every slot with a pending digest to adopt it now, and make it due at `now`.
pub(super) fn adopt_now(slots: &mut [Slot], now: Instant) {
    let mut any = false;
    for s in slots.iter_mut() {
        let Some((p, _)) = s.pending else { continue };
        tracing::info!(image_ref = %s.name, digest = %p.digest, "adopting the pending update now (operator request)");
        s.adopt_now = true;
        s.next_due = now;
        any = true;
    }
    if !any {
        tracing::info!("adopt-now requested, but no update is pending");
    }
}

/// Recompute when each pending digest is adopted under `cfg` (at start-up and on reload).
pub(super) fn refresh_adopt_at(slots: &mut [Slot], cfg: &RolloutConfig) {
    let policy = Policy {
        device_id: &cfg.device_id,
        window_secs: cfg.window_secs,
        prefetch: cfg.prefetch,
    };
    for s in slots.iter_mut() {
        if let Some((p, at)) = s.pending.as_mut() {
            *at = adopt_at(&policy, p);
        }
    }
}

/// The pending digest of every slot that has one, by image reference.
pub(super) fn pending_of(slots: &[Slot]) -> BTreeMap<String, Pending> {
    slots
        .iter()
        .filter_map(|s| Some((s.name.clone(), s.pending?.0)))
        .collect()
}

/// Write `pending` to `root` (blocking).
fn write(root: &Path, pending: &BTreeMap<String, Pending>) -> std::io::Result<()> {
    let file = File {
        version: VERSION,
        pending: pending
            .iter()
            .map(|(name, p)| {
                (
                    name.clone(),
                    Entry {
                        digest: p.digest.to_string(),
                        first_seen: p.first_seen,
                    },
                )
            })
            .collect(),
    };
    let mut body = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
    body.push(b'\n');
    super::atomic::replace(&root.join(ROLLOUT_FILE), &body, super::atomic::STATUS_MODE)
}

/// The writer of `rollout.json`, off the runtime.
pub(super) struct Record {
    root: PathBuf,
    handed: u64,
    written: Arc<Mutex<u64>>,
    last: Option<JoinHandle<()>>,
}

impl Record {
    pub(super) fn new(root: PathBuf) -> Self {
        Self {
            root,
            handed: 0,
            written: Arc::default(),
            last: None,
        }
    }

    /// Write `pending` in the background.
    pub(super) fn save(&mut self, pending: BTreeMap<String, Pending>) {
        self.handed += 1;
        let snapshot = self.handed;
        let (root, written) = (self.root.clone(), self.written.clone());
        self.last = Some(spawn_blocking(move || {
            let mut w = written.lock().unwrap_or_else(PoisonError::into_inner);
            if *w >= snapshot {
                return;
            }
            *w = snapshot;
            if let Err(e) = write(&root, &pending) {
                tracing::warn!(path = %root.join(ROLLOUT_FILE).display(), error = %e, "cannot record when pending updates were first seen");
            }
        }));
    }

    /// Wait for the last write handed over.
    pub(super) async fn flush(&mut self) {
        if let Some(t) = self.last.take() {
            let _ = t.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_tolerates_a_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).is_empty());
        let mut m = BTreeMap::new();
        m.insert(
            "h/app:stable".to_string(),
            Pending {
                digest: Digest::of(b"x"),
                first_seen: 1_700_000_000,
            },
        );
        write(dir.path(), &m).unwrap();
        assert_eq!(load(dir.path()), m);
        std::fs::write(dir.path().join(ROLLOUT_FILE), "{not json").unwrap();
        assert!(load(dir.path()).is_empty());
    }
}
