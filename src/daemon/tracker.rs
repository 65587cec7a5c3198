//! The running job's download progress as the supervisor and the watchdog see it.
//!
//! Owns: the per-blob stored offsets of the running plan and the byte counters, fed by the
//! fetcher's [`Progress`] callbacks. Never decides anything: the supervisor reads it.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use crate::progress::{FetchStats, Progress};
use crate::store::Store;
use edgepull_core::oci::{Descriptor, Digest};

/// Download progress of the running job: bytes stored per blob, the bytes received and
/// resumed since the last [`Tracker::take_counters`], and a count of transfer events the
/// watchdog reads as progress ([`Tracker::activity`]).
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
    /// Transfer events so far (never reset).
    activity: u64,
}

impl Tracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, TrackerInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Start tracking a plan's `blobs`. Blocking: looks each blob up in the store.
    pub(crate) fn begin(&self, blobs: &[Descriptor], store: &Store) {
        let mut t = self.lock();
        t.blobs.clear();
        t.present = 0;
        for b in blobs {
            if store.has_blob_blocking(&b.digest, b.size) {
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

    /// Transfer events so far: it changes whenever a transfer starts, stores bytes,
    /// restarts, ends or gives up.
    pub(crate) fn activity(&self) -> u64 {
        self.lock().activity
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
        t.activity = t.activity.wrapping_add(1);
        if offset > 0 {
            t.resumed += offset;
        }
        t.blobs.insert(desc.digest, (desc.size, offset));
    }

    fn advance(&self, desc: &Descriptor, offset: u64) {
        let mut t = self.lock();
        t.activity = t.activity.wrapping_add(1);
        let entry = t.blobs.entry(desc.digest).or_insert((desc.size, 0));
        let before = entry.1;
        entry.1 = offset;
        if offset > before {
            t.downloaded += offset - before;
        }
    }

    fn restart(&self, desc: &Descriptor) {
        let mut t = self.lock();
        t.activity = t.activity.wrapping_add(1);
        t.blobs.insert(desc.digest, (desc.size, 0));
    }

    fn finish(&self, desc: &Descriptor, _stats: &FetchStats) {
        let mut t = self.lock();
        t.activity = t.activity.wrapping_add(1);
        t.blobs.insert(desc.digest, (desc.size, desc.size));
    }

    fn fail(&self, _desc: &Descriptor) {
        let mut t = self.lock();
        t.activity = t.activity.wrapping_add(1);
    }
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
        // Every callback is activity for the watchdog; reading the counters is not.
        assert_eq!(t.activity(), 7);
        t.fail(&b);
        assert_eq!(t.activity(), 8);
    }
}
