//! The crash-safe local content store: an OCI image layout plus resumable ingests.
//!
//! On disk, under the configured `store.path` (`root`):
//! - `root/oci/`: a valid OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/<hex>`).
//!   Everything here is verified: a blob appears only after its size and digest matched,
//!   read-only (0444), by an fsynced rename; `index.json` is only ever replaced atomically.
//! - `root/ingest/sha256-<hex>/`: one partial download (`data`, `meta.json`, `checkpoint`).
//!   The store, not the network code, owns the resume offset: [`Ingest::offset`].
//! - `root/lock`: held exclusively (OS file lock) by the one process using the store; it
//!   contains that process's pid.
//!
//! Owns: every byte under `root`, the durability order of writes, and start-up recovery.
//! Must never: build a path from anything but a validated [`Digest`]; make unverified bytes
//! visible under `oci/`; trust a partial file beyond its durable checkpoint; let two writers
//! share an ingest or two processes share a root; block the async runtime with ingest IO.
//!
//! Lifecycle (containerd's content-store contract, with a durable checkpoint added): an
//! ingest is invisible to readers until [`Ingest::commit`]; dropping an [`Ingest`] keeps it
//! for a later resume; [`Store::abort_ingest`] deletes it; once committed it is no longer
//! listed by [`Store::ingests`].
//!
//! The synchronous methods ([`Store::open`], [`Store::verify`], ...) do blocking file IO;
//! call them from `spawn_blocking` when on the runtime, except the small ones
//! ([`Store::put_blob`], [`Store::set_image`]) which touch a few KiB.

mod fsio;
mod gc;
mod ingest;
mod layout;
mod lock;
mod verify;

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

pub use gc::{
    Children, GcBlocked, GcReport, GcRoot, RepairReport, RepairedBlob, ingest_is_stale, unreferenced,
};
pub use ingest::{DEFAULT_CHECKPOINT_BYTES, DEFAULT_CHECKPOINT_INTERVAL, Ingest, IngestStatus};
pub use layout::{
    ANNOTATION_PREVIOUS_OF, ANNOTATION_PREVIOUS_RANK, ANNOTATION_REF_NAME, ANNOTATION_SOURCE_INDEX,
    INDEX_FILE, ImageEntry, OCI_LAYOUT_FILE, PreviousEntry, Switch, validate_ref_name,
};
pub use verify::{CorruptBlob, Corruption, VerifyReport};

use edgepull_core::oci::{Descriptor, Digest};
use fsio::{io_err, remove_tree_if_exists, rename_durable, sync_dir, write_synced};
use lock::{BusySet, StoreLock};

/// Why a store operation failed. Each variant names the path and/or digest involved and
/// says what to do; branch on the `is_*` methods, never on the message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process holds the store lock.
    #[error(
        "store lock {path} is held by {} (waited {waited:?}); stop that edgepull process, or give this one another store.path",
        holder(*.holder_pid)
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// The pid written in the lock file by its holder, if readable.
        holder_pid: Option<u32>,
        /// How long this process waited.
        waited: Duration,
    },
    /// A filesystem operation failed.
    #[error("could not {op} {path}; check that the store filesystem is mounted, writable and not full")]
    Io {
        /// What was being done ("fsync", "rename into place", ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `oci-layout` declares a version this store does not handle.
    #[error(
        "{path} declares image layout version {found:?}; only 1.0.0 is supported: point store.path at an empty directory or remove the layout"
    )]
    UnsupportedLayout {
        /// The `oci-layout` file.
        path: PathBuf,
        /// What it declares.
        found: String,
    },
    /// `index.json` is not a valid OCI image index.
    #[error(
        "{path} is not a valid OCI image index; restore it from a backup, or delete it to start an empty index (images will be pulled again; blobs are kept)"
    )]
    CorruptIndex {
        /// The `index.json` file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A ref name that the OCI image-layout grammar does not allow.
    #[error(
        "{ref_name:?} is not a valid org.opencontainers.image.ref.name (components of [A-Za-z0-9] joined by one of -._:@+ or --, separated by /)"
    )]
    InvalidRefName {
        /// The refused name (truncated).
        ref_name: String,
    },
    /// The blob is not in the store.
    #[error("blob {digest} is not in the store ({path}); pull it first")]
    NotFound {
        /// The blob.
        digest: Digest,
        /// Where it would be.
        path: PathBuf,
    },
    /// A stored blob is larger than the caller's limit.
    #[error("blob {digest} at {path} is {size} bytes, more than the {max}-byte limit for this read")]
    TooLarge {
        /// The blob.
        digest: Digest,
        /// Its length on disk.
        size: u64,
        /// The limit.
        max: u64,
        /// Where it is.
        path: PathBuf,
    },
    /// A write would go past the descriptor size; nothing was written.
    #[error(
        "blob {digest} would grow to {attempted} bytes but its descriptor says {size}; nothing past {size} was written: the source is sending too much, so stop this transfer and fetch the blob again from zero"
    )]
    SizeExceeded {
        /// The blob.
        digest: Digest,
        /// The descriptor size.
        size: u64,
        /// Offset plus the refused chunk's length.
        attempted: u64,
    },
    /// Commit was called before all bytes were written; the ingest is kept.
    #[error(
        "ingest of {digest} has {offset} of {size} bytes; write the rest (resume from offset {offset}) before committing ({path})"
    )]
    Incomplete {
        /// The blob.
        digest: Digest,
        /// Bytes written.
        offset: u64,
        /// The descriptor size.
        size: u64,
        /// The ingest directory.
        path: PathBuf,
    },
    /// The ingested file's length differs from the descriptor size; the ingest was deleted.
    #[error(
        "ingest of {digest} is {actual} bytes on disk, expected {expected}; the partial download {path} was deleted, fetch the blob again"
    )]
    SizeMismatch {
        /// The blob.
        digest: Digest,
        /// The descriptor size.
        expected: u64,
        /// The length found.
        actual: u64,
        /// The file checked.
        path: PathBuf,
    },
    /// Content did not hash to its digest; it was not stored (an ingest is deleted).
    #[error(
        "content for {expected} hashed to {actual}; it was not stored and {path} was not kept: fetch it again, and if this repeats the source is serving wrong data"
    )]
    DigestMismatch {
        /// The digest that was asked for.
        expected: Digest,
        /// What the content hashed to.
        actual: Digest,
        /// The ingest file (deleted) or the blob path that was not written.
        path: PathBuf,
    },
    /// A committed blob no longer matches its digest (disk corruption or tampering).
    #[error(
        "stored blob {path} hashes to {actual}, not {digest}; the store is damaged: delete that file (or run verify) and pull the image again"
    )]
    CorruptBlob {
        /// The digest its name claims.
        digest: Digest,
        /// What it hashes to.
        actual: Digest,
        /// The blob file.
        path: PathBuf,
    },
    /// Another ingest of the same digest is open in this process.
    #[error("blob {digest} is already being ingested in this process; wait for that download to finish")]
    Busy {
        /// The blob.
        digest: Digest,
    },
    /// An earlier operation on this ingest was cancelled or failed mid-way; it is unusable.
    #[error(
        "ingest of {digest} ({path}) was interrupted by a cancelled or failed operation; drop it and call Store::ingest again to resume from the last checkpoint"
    )]
    Interrupted {
        /// The blob.
        digest: Digest,
        /// The ingest directory.
        path: PathBuf,
    },
}

fn holder(pid: Option<u32>) -> String {
    pid.map_or_else(|| "another process".to_string(), |p| format!("pid {p}"))
}

impl StoreError {
    /// Content failed a size or digest check (the source sent wrong bytes, or a stored
    /// blob is damaged). Retrying the same source blindly will not help.
    pub fn is_integrity(&self) -> bool {
        matches!(
            self,
            StoreError::SizeExceeded { .. }
                | StoreError::SizeMismatch { .. }
                | StoreError::DigestMismatch { .. }
                | StoreError::CorruptBlob { .. }
        )
    }

    /// Another process holds the store.
    pub fn is_locked(&self) -> bool {
        matches!(self, StoreError::Locked { .. })
    }

    /// Another ingest of the same digest is open in this process.
    pub fn is_busy(&self) -> bool {
        matches!(self, StoreError::Busy { .. })
    }

    /// The blob is not stored.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }

    /// Commit came before all bytes were written; the ingest can be resumed.
    pub fn is_incomplete(&self) -> bool {
        matches!(self, StoreError::Incomplete { .. })
    }

    /// A filesystem error (permissions, disk full, IO error).
    pub fn is_io(&self) -> bool {
        matches!(self, StoreError::Io { .. })
    }
}

/// What start-up recovery did in [`Store::open`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Temp files of interrupted layout writes that were removed.
    pub removed_temp_files: Vec<PathBuf>,
    /// Ingest entries removed: stray files, bad names, missing or invalid meta, or already
    /// committed.
    pub removed_ingests: Vec<PathBuf>,
    /// Ingests kept for resuming.
    pub kept_ingests: usize,
}

/// The content store. Cheap to clone; all clones share one lock, released when the last
/// clone (including those held by open [`Ingest`]s) is dropped.
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    busy: BusySet,
    /// Serializes read-modify-write of `index.json` within the process.
    index_lock: Mutex<()>,
    /// Makes `put_blob` temp names unique within the process.
    tmp_counter: AtomicU64,
    recovery: RecoveryReport,
    /// Held for the life of the store; dropped last.
    _lock: StoreLock,
}

impl Store {
    /// Open (creating if needed) the store at `root`: create the directories, take the
    /// exclusive lock (polling every 100 ms for up to `lock_wait`, then
    /// [`StoreError::Locked`]), run start-up recovery (remove layout temp files, remove
    /// ingests that cannot be resumed), and create or check `oci-layout` and `index.json`.
    ///
    /// Blocking: call from `spawn_blocking` when on the runtime.
    pub fn open(root: &Path, lock_wait: Duration) -> Result<Store, StoreError> {
        fs::create_dir_all(root).map_err(io_err("create directory", root))?;
        let lock = StoreLock::acquire(&root.join("lock"), lock_wait)?;
        let oci = root.join("oci");
        let ingest_root = root.join("ingest");
        for dir in [&oci, &ingest_root] {
            fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        }
        sync_dir(root)?;

        let removed_temp_files = layout::remove_temp_files(&oci)?;
        layout::ensure(&oci)?;
        let (removed_ingests, kept_ingests) =
            ingest::recover(&ingest_root, &oci.join("blobs").join("sha256"))?;
        let recovery = RecoveryReport {
            removed_temp_files,
            removed_ingests,
            kept_ingests,
        };
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
                root: root.to_path_buf(),
                busy: BusySet::default(),
                index_lock: Mutex::new(()),
                tmp_counter: AtomicU64::new(0),
                recovery,
                _lock: lock,
            }),
        })
    }

    /// The store root (`store.path`).
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// What start-up recovery did.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    /// The OCI image layout directory, `root/oci`.
    pub fn layout_dir(&self) -> PathBuf {
        self.inner.root.join("oci")
    }

    fn blobs_dir(&self) -> PathBuf {
        self.layout_dir().join("blobs").join("sha256")
    }

    pub(crate) fn ingest_root(&self) -> PathBuf {
        self.inner.root.join("ingest")
    }

    pub(crate) fn ingest_dir(&self, d: &Digest) -> PathBuf {
        self.ingest_root()
            .join(format!("{}{}", ingest::DIR_PREFIX, d.hex()))
    }

    /// Where a committed blob lives: `root/oci/blobs/sha256/<hex>`.
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.blobs_dir().join(d.hex())
    }

    /// Whether the blob is committed with exactly `size` bytes.
    pub fn has_blob(&self, d: &Digest, size: u64) -> bool {
        ingest::blob_present(&self.blob_path(d), size)
    }

    /// Read a committed blob fully (at most `max` bytes, else [`StoreError::TooLarge`]) and
    /// re-check its digest ([`StoreError::CorruptBlob`] on mismatch).
    pub fn read_blob(&self, d: &Digest, max: u64) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(d);
        let file = match File::open(&path) {
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

    /// Store small content already in memory (manifests, indexes, configs): check
    /// `digest(bytes) == d`, then temp file + fsync + read-only + rename + fsync dir.
    /// Idempotent: a blob already present with that length is left alone.
    pub fn put_blob(&self, d: &Digest, bytes: &[u8]) -> Result<(), StoreError> {
        let target = self.blob_path(d);
        let actual = Digest::of(bytes);
        if actual != *d {
            return Err(StoreError::DigestMismatch {
                expected: *d,
                actual,
                path: target,
            });
        }
        if self.has_blob(d, bytes.len() as u64) {
            return Ok(());
        }
        // The temp file lives in ingest/ (same filesystem), never in blobs/: recovery
        // removes it there if we crash.
        let n = self.inner.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self.ingest_root().join(format!("put-{}-{n}.tmp", d.hex()));
        let res = write_synced(&tmp, bytes, true).and_then(|()| rename_durable(&tmp, &target));
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res
    }

    /// Start or resume the ingest of blob `d` of `size` bytes.
    ///
    /// Resume: read the durable checkpoint (0 if none), truncate `data` to it, re-hash those
    /// bytes, and continue from there ([`Ingest::resumed_from`]). An ingest recorded with
    /// another size, or whose checkpoint is unusable, is discarded and restarted at 0.
    /// A second concurrent ingest of the same digest in this process gets
    /// [`StoreError::Busy`].
    pub async fn ingest(&self, d: &Digest, size: u64, media_type: &str) -> Result<Ingest, StoreError> {
        let busy = self
            .inner
            .busy
            .try_acquire(*d)
            .ok_or(StoreError::Busy { digest: *d })?;
        Ingest::open(self.clone(), *d, size, media_type, busy).await
    }

    /// Resumable ingests on disk, sorted by digest.
    pub fn ingests(&self) -> Result<Vec<IngestStatus>, StoreError> {
        ingest::list(&self.ingest_root(), &self.inner.busy)
    }

    /// Delete the ingest of `d` (no-op if there is none). Refused with
    /// [`StoreError::Busy`] while an [`Ingest`] for it is open in this process.
    pub fn abort_ingest(&self, d: &Digest) -> Result<(), StoreError> {
        // Hold the busy mark while deleting so no ingest of `d` can start meanwhile.
        let _busy = self
            .inner
            .busy
            .try_acquire(*d)
            .ok_or(StoreError::Busy { digest: *d })?;
        remove_tree_if_exists(&self.ingest_dir(d))?;
        sync_dir(&self.ingest_root())
    }

    /// Add or replace (by ref name) the `index.json` entry for an image, atomically. The
    /// entry is `manifest` annotated with `org.opencontainers.image.ref.name = ref_name`
    /// and, when the image came from an index, `io.edgepull.source-index = <digest>`.
    /// The manifest blob must already be committed ([`StoreError::NotFound`] otherwise), so
    /// the index never points at unverified content.
    pub fn set_image(
        &self,
        ref_name: &str,
        manifest: &Descriptor,
        source_index: Option<&Digest>,
    ) -> Result<(), StoreError> {
        validate_ref_name(ref_name)?;
        if !self.has_blob(&manifest.digest, manifest.size) {
            return Err(StoreError::NotFound {
                digest: manifest.digest,
                path: self.blob_path(&manifest.digest),
            });
        }
        let _guard = self
            .inner
            .index_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        layout::set_image(&self.layout_dir(), ref_name, manifest, source_index)
    }

    /// Make `manifest` the current version of `ref_name` and keep up to `keep_previous`
    /// older versions referenced in `index.json` for rollback, in one atomic replace of
    /// `index.json`. The version that was current becomes the newest older version: an
    /// entry without a ref name, annotated `io.edgepull.previous-of = <ref_name>` and
    /// `io.edgepull.previous-rank = 1`; versions beyond `keep_previous` are dropped from the
    /// index (their blobs go at the next [`Store::gc`]). Like [`Store::set_image`], the
    /// manifest blob must already be committed.
    pub fn switch_image(
        &self,
        ref_name: &str,
        manifest: &Descriptor,
        source_index: Option<&Digest>,
        keep_previous: u32,
    ) -> Result<Switch, StoreError> {
        validate_ref_name(ref_name)?;
        if !self.has_blob(&manifest.digest, manifest.size) {
            return Err(StoreError::NotFound {
                digest: manifest.digest,
                path: self.blob_path(&manifest.digest),
            });
        }
        let _guard = self.lock_index();
        layout::switch_image(
            &self.layout_dir(),
            ref_name,
            manifest,
            source_index,
            keep_previous,
        )
    }

    /// Remove the `index.json` entry for `ref_name` and the older versions kept for it,
    /// atomically. Returns whether there was a current entry. Blobs are not deleted.
    pub fn remove_image(&self, ref_name: &str) -> Result<bool, StoreError> {
        let _guard = self.lock_index();
        layout::remove_image(&self.layout_dir(), ref_name)
    }

    /// The older versions kept in `index.json` for rollback.
    pub fn previous_images(&self) -> Result<Vec<PreviousEntry>, StoreError> {
        Ok(layout::read_index(&self.layout_dir())?.previous_entries())
    }

    /// Serializes read-modify-write of `index.json` (and garbage collection) in this process.
    fn lock_index(&self) -> std::sync::MutexGuard<'_, ()> {
        self.inner
            .index_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The images recorded in `index.json` (entries without a ref name are skipped).
    pub fn images(&self) -> Result<Vec<ImageEntry>, StoreError> {
        Ok(layout::read_index(&self.layout_dir())?.entries())
    }

    /// Re-hash every blob under `blobs/sha256` and report those that are corrupt (digest, or
    /// size recorded in the index or a stored manifest), entries whose name is not a valid
    /// digest, and referenced blobs that are missing. Changes nothing.
    ///
    /// Blocking and slow (reads every byte): call from `spawn_blocking`.
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        let index = layout::read_index(&self.layout_dir())?;
        verify::run(&self.blobs_dir(), &index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_object_and_the_fix_without_repeating_the_cause() {
        let d = Digest::of(b"x");
        let p = PathBuf::from("/var/lib/edgepull/oci/blobs/sha256/abc");
        let ds = d.to_string();
        let cases = [
            (
                StoreError::Locked {
                    path: PathBuf::from("/var/lib/edgepull/lock"),
                    holder_pid: Some(42),
                    waited: Duration::from_secs(1),
                },
                vec!["/var/lib/edgepull/lock", "pid 42", "stop that edgepull process"],
            ),
            (
                StoreError::Locked {
                    path: PathBuf::from("/l"),
                    holder_pid: None,
                    waited: Duration::ZERO,
                },
                vec!["another process"],
            ),
            (
                StoreError::Io {
                    op: "fsync",
                    path: p.clone(),
                    source: io::Error::other("disk on fire"),
                },
                vec!["fsync", "/var/lib/edgepull/oci/blobs/sha256/abc", "not full"],
            ),
            (
                StoreError::DigestMismatch {
                    expected: d,
                    actual: Digest::of(b"y"),
                    path: p.clone(),
                },
                vec![ds.as_str(), "fetch it again"],
            ),
            (
                StoreError::SizeExceeded {
                    digest: d,
                    size: 10,
                    attempted: 11,
                },
                vec![ds.as_str(), "11", "10"],
            ),
            (StoreError::Busy { digest: d }, vec![ds.as_str(), "wait"]),
        ];
        for (err, wants) in cases {
            let msg = err.to_string();
            for w in wants {
                assert!(msg.contains(w), "{msg:?} lacks {w:?}");
            }
            assert!(!msg.contains("disk on fire"), "cause repeated in {msg:?}");
        }
    }

    #[test]
    fn classification() {
        let d = Digest::of(b"x");
        let integrity = StoreError::CorruptBlob {
            digest: d,
            actual: d,
            path: PathBuf::new(),
        };
        assert!(integrity.is_integrity() && !integrity.is_io());
        let locked = StoreError::Locked {
            path: PathBuf::new(),
            holder_pid: None,
            waited: Duration::ZERO,
        };
        assert!(locked.is_locked() && !locked.is_integrity());
        assert!(StoreError::Busy { digest: d }.is_busy());
    }
}
