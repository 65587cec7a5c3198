//! The synchronous bodies of the [`Store`] operations: what the async façade in `mod.rs`
//! runs on tokio's blocking pool.
//!
//! Owns: opening a locked root (directories, recovery, layout checks), small blob reads and
//! writes, ingest listing and removal, and the `index.json` updates under the index lock.
//! Must never be called on an async worker: every function here does blocking file IO
//! (and may wait for the index lock). Crate code that is already on the blocking pool may
//! call the `pub(crate)` ones directly.

use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::fsio::{
    GroupSync, WriteBudget, discard_temp, io_err, remove_tree_if_exists, rename_durable, sync_dir,
    write_synced,
};
use super::layout::{self, ImageEntry, PreviousEntry, RolledBack, Switch, validate_ref_name};
use super::lock::{BusySet, StoreLock};
use super::perms::{BLOB_MODE, ensure_dir, open_read};
use super::verify::{self, VerifyReport};
use super::{Inner, RecoveryReport, Store, StoreError, ingest};
use edgepull_core::oci::{Descriptor, Digest};

impl Store {
    /// Everything [`Store::open`] does once the lock is held: create `oci/` and `ingest/`
    /// (mode 0750, never through a link), fsync the root, run recovery, and create or check
    /// the layout.
    pub(super) fn open_locked(root: PathBuf, lock: StoreLock) -> Result<Store, StoreError> {
        let oci = root.join("oci");
        let ingest_root = root.join("ingest");
        for dir in [&oci, &ingest_root] {
            ensure_dir(dir)?;
        }
        sync_dir(&root)?;

        let budget = Arc::new(WriteBudget::default());
        let removed_temp_files = layout::remove_temp_files(&oci)?;
        layout::ensure(&oci, &budget)?;
        let blobs_dir = oci.join("blobs").join("sha256");
        let (removed_ingests, kept_ingests) = ingest::recover(&ingest_root, &blobs_dir)?;
        let recovery = RecoveryReport {
            removed_temp_files,
            removed_ingests,
            kept_ingests,
            unclean_shutdown: lock.unclean(),
        };
        if recovery.unclean_shutdown {
            tracing::warn!(lock = %root.join("lock").display(), "the previous run did not shut down cleanly (or its start-up re-hash is still pending)");
        }
        if !recovery.removed_temp_files.is_empty() || !recovery.removed_ingests.is_empty() {
            tracing::info!(
                temp_files = recovery.removed_temp_files.len(),
                ingests_removed = recovery.removed_ingests.len(),
                ingests_kept = recovery.kept_ingests,
                "store recovery cleaned up after an interrupted run"
            );
        }
        Ok(Store {
            inner: Arc::new(Inner {
                root,
                busy: BusySet::default(),
                index_lock: Mutex::new(()),
                tmp_counter: AtomicU64::new(0),
                blob_dir_sync: GroupSync::new(blobs_dir),
                budget,
                recovery,
                lock,
            }),
        })
    }

    /// [`Store::has_blob`], blocking.
    pub(crate) fn has_blob_blocking(&self, d: &Digest, size: u64) -> bool {
        ingest::blob_present(&self.blob_path(d), size)
    }

    /// [`Store::read_blob`], blocking.
    pub(crate) fn read_blob_blocking(&self, d: &Digest, max: u64) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(d);
        let file = match open_read(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound { digest: *d, path });
            }
            Err(e) => return Err(io_err("open", &path)(e)),
        };
        let len = file.metadata().map_err(io_err("stat", &path))?.len();
        if len > max {
            return Err(StoreError::TooLarge {
                digest: *d,
                size: len,
                max,
                path,
            });
        }
        let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        file.take(max.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(io_err("read", &path))?;
        if bytes.len() as u64 > max {
            return Err(StoreError::TooLarge {
                digest: *d,
                size: bytes.len() as u64,
                max,
                path,
            });
        }
        let actual = Digest::of(&bytes);
        if actual != *d {
            return Err(StoreError::CorruptBlob {
                digest: *d,
                actual,
                path,
            });
        }
        Ok(bytes)
    }

    /// [`Store::put_blob`], blocking.
    pub(super) fn put_blob_blocking(&self, d: &Digest, bytes: &[u8]) -> Result<(), StoreError> {
        let target = self.blob_path(d);
        let actual = Digest::of(bytes);
        if actual != *d {
            return Err(StoreError::DigestMismatch {
                expected: *d,
                actual,
                path: target,
            });
        }
        if self.has_blob_blocking(d, bytes.len() as u64) {
            return Ok(());
        }
        // The temp file lives in ingest/ (same filesystem), never in blobs/: recovery
        // removes it there if we crash.
        let n = self.inner.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self.ingest_root().join(format!("put-{}-{n}.tmp", d.hex()));
        let res = write_synced(&tmp, bytes, BLOB_MODE, &self.inner.budget)
            .and_then(|()| rename_durable(&tmp, &target));
        if res.is_err() {
            discard_temp(&tmp);
        }
        res
    }

    /// [`Store::ingests`], blocking.
    pub(super) fn ingests_blocking(&self) -> Result<Vec<ingest::IngestStatus>, StoreError> {
        ingest::list(&self.ingest_root(), &self.inner.busy)
    }

    /// [`Store::abort_ingest`], blocking.
    pub(super) fn abort_ingest_blocking(&self, d: &Digest) -> Result<(), StoreError> {
        // Hold the busy mark while deleting so no ingest of `d` can start meanwhile.
        let _busy = self
            .inner
            .busy
            .try_acquire(*d)
            .ok_or(StoreError::Busy { digest: *d })?;
        remove_tree_if_exists(&self.ingest_dir(d))?;
        sync_dir(&self.ingest_root())
    }

    /// The manifest must be committed before an index entry may name it.
    fn require_manifest(&self, manifest: &Descriptor) -> Result<(), StoreError> {
        if self.has_blob_blocking(&manifest.digest, manifest.size) {
            Ok(())
        } else {
            Err(StoreError::NotFound {
                digest: manifest.digest,
                path: self.blob_path(&manifest.digest),
            })
        }
    }

    /// [`Store::set_image`], blocking.
    pub(super) fn set_image_blocking(
        &self,
        ref_name: &str,
        manifest: &Descriptor,
        source_index: Option<&Digest>,
    ) -> Result<(), StoreError> {
        validate_ref_name(ref_name)?;
        self.require_manifest(manifest)?;
        let _guard = self.lock_index();
        layout::set_image(
            &self.layout_dir(),
            ref_name,
            manifest,
            source_index,
            &self.inner.budget,
        )
    }

    /// [`Store::switch_image`], blocking.
    pub(super) fn switch_image_blocking(
        &self,
        ref_name: &str,
        manifest: &Descriptor,
        source_index: Option<&Digest>,
        keep_previous: u32,
    ) -> Result<Switch, StoreError> {
        validate_ref_name(ref_name)?;
        self.require_manifest(manifest)?;
        let _guard = self.lock_index();
        layout::switch_image(
            &self.layout_dir(),
            ref_name,
            manifest,
            source_index,
            keep_previous,
            &self.inner.budget,
        )
    }

    /// [`Store::set_pending`], blocking.
    pub(super) fn set_pending_blocking(
        &self,
        ref_name: &str,
        pending: Option<(&Descriptor, Option<&Digest>)>,
    ) -> Result<(), StoreError> {
        validate_ref_name(ref_name)?;
        if let Some((manifest, _)) = pending {
            self.require_manifest(manifest)?;
        }
        let _guard = self.lock_index();
        layout::set_pending(&self.layout_dir(), ref_name, pending, &self.inner.budget)
    }

    /// [`Store::roll_back`], blocking.
    pub(super) fn roll_back_blocking(
        &self,
        ref_name: &str,
        failed: &Digest,
    ) -> Result<Option<RolledBack>, StoreError> {
        let _guard = self.lock_index();
        layout::roll_back(&self.layout_dir(), ref_name, failed, &self.inner.budget)
    }

    /// [`Store::remove_image`], blocking.
    pub(super) fn remove_image_blocking(&self, ref_name: &str) -> Result<bool, StoreError> {
        let _guard = self.lock_index();
        layout::remove_image(&self.layout_dir(), ref_name, &self.inner.budget)
    }

    /// [`Store::images`], blocking.
    pub(crate) fn images_blocking(&self) -> Result<Vec<ImageEntry>, StoreError> {
        Ok(layout::read_index(&self.layout_dir())?.entries())
    }

    /// [`Store::previous_images`], blocking.
    pub(super) fn previous_images_blocking(&self) -> Result<Vec<PreviousEntry>, StoreError> {
        Ok(layout::read_index(&self.layout_dir())?.previous_entries())
    }

    /// [`Store::verify`], blocking.
    pub(super) fn verify_blocking(&self) -> Result<VerifyReport, StoreError> {
        let index = layout::read_index(&self.layout_dir())?;
        verify::run(&self.blobs_dir(), &index)
    }
}
