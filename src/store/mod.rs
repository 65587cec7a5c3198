//! The crash-safe local content store: an OCI image layout plus resumable ingests.
//!
//! On disk, under the configured `store.path` (`root`):
//! - `root/oci/`: a valid OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/<hex>`).
//!   Everything here is verified: a blob appears only after its size and digest matched,
//!   read-only (0440), by an fsynced rename; `index.json` is only ever replaced atomically.
//! - `root/ingest/sha256-<hex>/`: one partial download (`data`, `meta.json`, `checkpoint`).
//!   The store, not the network code, owns the resume offset: [`Ingest::offset`].
//! - `root/lock`: held exclusively (OS file lock) by the one process using the store; it
//!   contains that process's pid, and is emptied only at an orderly release (see below).
//!
//! Who may touch it (`perms`): [`Store::open`] refuses a root that another user owns or
//! can write, or that a directory above it lets another user replace
//! ([`StoreError::UnsafeDirectory`]). Directories are 0750, files 0640 and blobs 0440,
//! set explicitly whatever the umask. Temp files are created exclusively
//! (`O_CREAT|O_EXCL|O_NOFOLLOW`) and existing files are opened with `O_NOFOLLOW`: a link
//! planted in the store is removed or refused, never followed.
//!
//! Clean and unclean shutdown: the holder of the lock writes its pid into `root/lock`
//! (fsynced) when it takes the lock, and empties the file when the last clone of the
//! [`Store`] is dropped, but only if nothing is left to re-hash. A process that is killed,
//! aborts or loses power leaves its pid; so does every later process until a start-up
//! scrub ran. [`Store::open`] reads this before writing its own pid
//! ([`RecoveryReport::unclean_shutdown`]) and [`Store::scrub`] re-hashes the current
//! images' blobs when `store.verify_on_start` asks for it (`unclean`, the default:
//! only then), removing a corrupt one so the next pull fetches it again. This needs no
//! extra file and no write at shutdown beyond emptying the lock file: losing that write
//! only costs one extra scrub.
//!
//! Owns: every byte under `root`, the durability order of writes, and start-up recovery.
//! Must never: build a path from anything but a validated [`Digest`]; make unverified bytes
//! visible under `oci/`; trust a partial file beyond its durable checkpoint; let two writers
//! share an ingest or two processes share a root; block an async worker with file IO;
//! follow a link inside the store or truncate a file it did not create.
//!
//! Lifecycle (containerd's content-store contract, with a durable checkpoint added): an
//! ingest is invisible to readers until [`Ingest::commit`]; dropping an [`Ingest`] keeps it
//! for a later resume; [`Store::abort_ingest`] deletes it; once committed it is no longer
//! listed by [`Store::ingests`].
//!
//! Async façade: every [`Store`] method that touches the disk is `async` and runs its file
//! IO (fsync, `index.json` replaces, hashing, directory walks, the lock wait's attempts) on
//! tokio's blocking pool with a clone of the store, so a slow flash card stalls a blocking
//! thread, never one of the runtime's workers. Only the path getters (`root`,
//! [`Store::layout_dir`], [`Store::blob_path`]) and [`Store::recovery`] are synchronous;
//! they do no IO. The synchronous bodies (`*_blocking`, crate-private) are for code that is
//! already on the blocking pool. A blocking task that outlives its awaiting future (the
//! caller was cancelled) still finishes its durable write sequence.

mod blocking;
mod error;
mod fsio;
mod gc;
mod ingest;
mod layout;
mod lock;
mod perms;
mod scrub;
mod verify;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

pub use error::StoreError;
pub use gc::GcReport;
pub(crate) use gc::RepairReport;
pub use ingest::{Ingest, IngestStatus};
pub use layout::{ANNOTATION_REF_NAME, ANNOTATION_SOURCE_INDEX, ImageEntry};
pub(crate) use layout::{PreviousEntry, RolledBack, Switch};
pub use scrub::ScrubReport;
pub use verify::{CorruptBlob, Corruption, VerifyReport};

use edgepull_core::oci::{Descriptor, Digest};
use edgepull_core::store::VerifyOnStart;
use fsio::WriteBudget;
use lock::{BusySet, StoreLock};

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
    /// The previous holder of the store did not shut down cleanly (killed, crashed, power
    /// cut), or a later run skipped the re-hash that called for: see [`Store::scrub`].
    pub unclean_shutdown: bool,
}

/// The content store. Cheap to clone; all clones share one lock, released when the last
/// clone (including those held by open [`Ingest`]s and by running blocking tasks) is
/// dropped.
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    busy: BusySet,
    /// Serializes read-modify-write of `index.json` (and garbage collection) within the
    /// process. Only ever taken on the blocking pool.
    index_lock: Mutex<()>,
    /// Makes `put_blob` temp names unique within the process.
    tmp_counter: AtomicU64,
    /// The group-committed fsync of `blobs/sha256` after a blob's rename.
    blob_dir_sync: fsio::GroupSync,
    /// Test seam: bytes writable before writes fail like a full disk (unlimited).
    budget: Arc<WriteBudget>,
    recovery: RecoveryReport,
    /// Held for the life of the store; dropped last.
    lock: StoreLock,
}

/// Run `f` on tokio's blocking pool. A task that did not finish becomes
/// [`StoreError::TaskLost`] naming `op` and `path`.
pub(crate) async fn run_blocking<T, F>(op: &'static str, path: PathBuf, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(source) => Err(StoreError::TaskLost { op, path, source }),
    }
}

impl Store {
    /// Open (creating if needed) the store at `root`: create the root (mode 0750) and check
    /// that no other user can write or replace it ([`StoreError::UnsafeDirectory`]), take
    /// the exclusive lock (retrying every 100 ms for up to `lock_wait`, sleeping on the
    /// timer, then [`StoreError::Locked`]), learn whether the previous run shut down
    /// cleanly, run start-up recovery (remove layout temp files, remove ingests that cannot
    /// be resumed), and create or check `oci-layout` and `index.json`.
    pub async fn open(root: &Path, lock_wait: Duration) -> Result<Store, StoreError> {
        let root = root.to_path_buf();
        let dir = root.clone();
        run_blocking("create directory", root.clone(), move || {
            perms::prepare_root(&dir)
        })
        .await?;
        let lock = StoreLock::acquire(&root.join("lock"), lock_wait).await?;
        let task_root = root.clone();
        run_blocking("open the store at", root, move || {
            Store::open_locked(task_root, lock)
        })
        .await
    }

    /// Run `f` with a clone of the store on the blocking pool (see [`run_blocking`]).
    async fn blocking<T, F>(&self, op: &'static str, path: PathBuf, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.clone();
        run_blocking(op, path, move || f(&store)).await
    }

    /// The store root (`store.path`).
    pub(crate) fn root(&self) -> &Path {
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

    fn index_path(&self) -> PathBuf {
        self.layout_dir().join(layout::INDEX_FILE)
    }

    fn ingest_root(&self) -> PathBuf {
        self.inner.root.join("ingest")
    }

    fn ingest_dir(&self, d: &Digest) -> PathBuf {
        self.ingest_root().join(ingest::dir_name(d))
    }

    /// Where a committed blob lives: `root/oci/blobs/sha256/<hex>`.
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.blobs_dir().join(d.hex())
    }

    /// Serializes read-modify-write of `index.json` (and garbage collection) in this process.
    /// Blocking: only on the blocking pool.
    fn lock_index(&self) -> MutexGuard<'_, ()> {
        self.inner
            .index_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the blob is committed with exactly `size` bytes. A check that could not run
    /// (its task was lost at shutdown) answers `false`: the caller then fetches the blob,
    /// and committing an already stored blob succeeds.
    pub async fn has_blob(&self, d: &Digest, size: u64) -> bool {
        let (d, path) = (*d, self.blob_path(d));
        match self
            .blocking("stat", path, move |s| Ok(s.has_blob_blocking(&d, size)))
            .await
        {
            Ok(present) => present,
            Err(e) => {
                tracing::warn!(digest = %d, error = %crate::error_chain(&e), "could not check for a stored blob; treating it as absent");
                false
            }
        }
    }

    /// Read a committed blob fully (at most `max` bytes, else [`StoreError::TooLarge`]) and
    /// re-check its digest ([`StoreError::CorruptBlob`] on mismatch).
    pub async fn read_blob(&self, d: &Digest, max: u64) -> Result<Vec<u8>, StoreError> {
        let d = *d;
        self.blocking("read", self.blob_path(&d), move |s| s.read_blob_blocking(&d, max))
            .await
    }

    /// Store small content already in memory (manifests, indexes, configs): check
    /// `digest(bytes) == d`, then temp file + fsync + read-only + rename + fsync dir.
    /// Idempotent: a blob already present with that length is left alone.
    pub async fn put_blob(&self, d: &Digest, bytes: &[u8]) -> Result<(), StoreError> {
        let (d, bytes) = (*d, bytes.to_vec());
        self.blocking("store blob", self.blob_path(&d), move |s| {
            s.put_blob_blocking(&d, &bytes)
        })
        .await
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
    pub async fn ingests(&self) -> Result<Vec<IngestStatus>, StoreError> {
        self.blocking("read directory", self.ingest_root(), |s| s.ingests_blocking())
            .await
    }

    /// Delete the ingest of `d` (no-op if there is none). Refused with
    /// [`StoreError::Busy`] while an [`Ingest`] for it is open in this process.
    pub async fn abort_ingest(&self, d: &Digest) -> Result<(), StoreError> {
        let d = *d;
        self.blocking("remove", self.ingest_dir(&d), move |s| {
            s.abort_ingest_blocking(&d)
        })
        .await
    }

    /// Add or replace (by ref name) the `index.json` entry for an image, atomically. The
    /// entry is `manifest` annotated with `org.opencontainers.image.ref.name = ref_name`
    /// and, when the image came from an index, `io.edgepull.source-index = <digest>`.
    /// The manifest blob must already be committed ([`StoreError::NotFound`] otherwise), so
    /// the index never points at unverified content.
    pub async fn set_image(
        &self,
        ref_name: &str,
        manifest: &Descriptor,
        source_index: Option<&Digest>,
    ) -> Result<(), StoreError> {
        let (ref_name, manifest, source_index) =
            (ref_name.to_string(), manifest.clone(), source_index.copied());
        self.blocking("update", self.index_path(), move |s| {
            s.set_image_blocking(&ref_name, &manifest, source_index.as_ref())
        })
        .await
    }

    /// Make `manifest` the current version of `ref_name` and keep up to `keep_previous`
    /// older versions referenced in `index.json` for rollback, in one atomic replace of
    /// `index.json`. The version that was current becomes the newest older version: an
    /// entry without a ref name, annotated `io.edgepull.previous-of = <ref_name>` and
    /// `io.edgepull.previous-rank = 1`; versions beyond `keep_previous` are dropped from the
    /// index (their blobs go at the next [`Store::gc`]). Like [`Store::set_image`], the
    /// manifest blob must already be committed.
    pub(crate) async fn switch_image(
        &self,
        ref_name: &str,
        manifest: &Descriptor,
        source_index: Option<&Digest>,
        keep_previous: u32,
    ) -> Result<Switch, StoreError> {
        let (ref_name, manifest, source_index) =
            (ref_name.to_string(), manifest.clone(), source_index.copied());
        self.blocking("update", self.index_path(), move |s| {
            s.switch_image_blocking(&ref_name, &manifest, source_index.as_ref(), keep_previous)
        })
        .await
    }

    /// Record `pending` (a committed manifest and the index it was chosen from) in
    /// `index.json` as the version of `ref_name` downloaded ahead of its switch (a staged
    /// rollout's `prefetch`), replacing any earlier one; `None` drops it. The entry has no
    /// ref name (`io.edgepull.pending-of: <ref>`), so tools see only the current version,
    /// and it is a garbage-collection root, so the downloaded blobs stay until the switch,
    /// which drops it.
    pub(crate) async fn set_pending(
        &self,
        ref_name: &str,
        pending: Option<(Descriptor, Option<Digest>)>,
    ) -> Result<(), StoreError> {
        let ref_name = ref_name.to_string();
        self.blocking("update", self.index_path(), move |s| {
            let pending = pending.as_ref().map(|(m, ix)| (m, ix.as_ref()));
            s.set_pending_blocking(&ref_name, pending)
        })
        .await
    }

    /// Make the newest older version of `ref_name` current again in place of `failed`, in
    /// one atomic replace of `index.json`; `failed` leaves the index. `None` when `failed`
    /// is not current or no older version is kept.
    pub(crate) async fn roll_back(
        &self,
        ref_name: &str,
        failed: Digest,
    ) -> Result<Option<RolledBack>, StoreError> {
        let ref_name = ref_name.to_string();
        self.blocking("update", self.index_path(), move |s| {
            s.roll_back_blocking(&ref_name, &failed)
        })
        .await
    }

    /// Remove the `index.json` entry for `ref_name` and the older versions kept for it,
    /// atomically. Returns whether there was a current entry. Blobs are not deleted.
    pub async fn remove_image(&self, ref_name: &str) -> Result<bool, StoreError> {
        let ref_name = ref_name.to_string();
        self.blocking("update", self.index_path(), move |s| {
            s.remove_image_blocking(&ref_name)
        })
        .await
    }

    /// The images recorded in `index.json` (entries without a ref name are skipped).
    pub async fn images(&self) -> Result<Vec<ImageEntry>, StoreError> {
        self.blocking("read", self.index_path(), |s| s.images_blocking())
            .await
    }

    /// The older versions kept in `index.json` for rollback.
    pub(crate) async fn previous_images(&self) -> Result<Vec<PreviousEntry>, StoreError> {
        self.blocking("read", self.index_path(), |s| s.previous_images_blocking())
            .await
    }

    /// Re-hash every blob under `blobs/sha256` and report those that are corrupt (digest, or
    /// size recorded in the index or a stored manifest), entries whose name is not a valid
    /// digest, and referenced blobs that are missing. Changes nothing. Slow (reads every
    /// byte), on the blocking pool.
    pub async fn verify(&self) -> Result<VerifyReport, StoreError> {
        self.blocking("verify", self.blobs_dir(), |s| s.verify_blocking())
            .await
    }

    /// Delete the blobs no `index.json` entry (current or kept for rollback) references and
    /// that are not in `protected`, and the partial downloads not written to for
    /// `ingest_max_age` (except open or protected ones). Index updates wait meanwhile.
    pub async fn gc(
        &self,
        protected: &BTreeSet<Digest>,
        ingest_max_age: Duration,
    ) -> Result<GcReport, StoreError> {
        let protected = protected.clone();
        self.blocking("collect garbage in", self.layout_dir(), move |s| {
            s.gc_blocking(&protected, ingest_max_age)
        })
        .await
    }

    /// Start-up scrub: when `policy` asks for it (for [`VerifyOnStart::Unclean`], the
    /// default: only when [`RecoveryReport::unclean_shutdown`]), re-hash every blob of the
    /// current images (their manifests, the indexes they came from, configs and layers)
    /// and delete those whose content or size is wrong, so the next pull fetches them
    /// again. If a current manifest itself is unreadable or corrupt, every blob is
    /// re-hashed (its layers are unknown). Once it ran, the store is released as clean.
    /// Call it once at start-up, before serving. Slow (reads the images' bytes), on the
    /// blocking pool; the report counts what was hashed.
    pub async fn scrub(&self, policy: VerifyOnStart) -> Result<ScrubReport, StoreError> {
        self.blocking("re-hash", self.blobs_dir(), move |s| s.scrub_blocking(policy))
            .await
    }

    /// Test seam: make every later write of this store (every clone) fail like a full
    /// filesystem (`ENOSPC`) once `bytes` more bytes have been written; `None` lifts the
    /// limit. Never called by edgepull itself.
    #[doc(hidden)]
    pub fn set_write_budget_for_tests(&self, bytes: Option<u64>) {
        self.inner.budget.set(bytes);
    }

    /// Start-up repair: delete committed blobs whose length differs from the size recorded
    /// for them in `index.json` or in a stored manifest, and manifests whose content does
    /// not match their digest; then drop older versions whose manifest is gone. The next
    /// pull fetches what is missing. Re-hashing every layer is [`Store::verify`]'s job.
    pub(crate) async fn repair(&self) -> Result<RepairReport, StoreError> {
        self.blocking("repair", self.layout_dir(), |s| s.repair_blocking())
            .await
    }
}
