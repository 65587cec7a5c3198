//! Resumable ingest of one blob: `root/ingest/sha256-<hex>/{data,meta.json,checkpoint}`.
//!
//! Owns: the partial bytes of a download, its running hash, and the durable resume offset
//! (`checkpoint`). The invariant is `checkpoint <= durable length of data`: data is
//! fdatasynced *before* the offset is persisted, and on resume `data` is truncated back to
//! the checkpoint and re-hashed, so a torn tail is never trusted. Only bytes actually
//! written are counted and hashed. This file holds the open [`Ingest`] and its commit;
//! `disk` holds the on-disk format (file names, meta, checkpoint), resume, start-up
//! recovery and listing.
//!
//! Must never: make bytes visible in `blobs/` before the size and digest checks pass; write
//! past the descriptor size; keep an ingest whose content failed verification; run file IO
//! or hashing on the async executor (all of it runs in `spawn_blocking`); hold more than a
//! fixed-size buffer in memory, whatever the blob size.

mod disk;
#[cfg(test)]
mod tests;

use std::fs::{self, File};
use std::io::{self, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::fsio::{WriteBudget, io_err, remove_tree_if_exists, sync_dir, write_err};
use super::lock::BusyGuard;
use super::perms::{BLOB_MODE, set_mode};
use super::{Store, StoreError};
use edgepull_core::oci::{Digest, Hasher};
use edgepull_core::resume::DEFAULT_CHECKPOINT_BYTES;

use disk::{DATA, Opened, make_durable, open_blocking, write_checkpoint};
pub(crate) use disk::{blob_present, dir_name, hash_prefix, last_write, list, recover};

/// Default time after which new bytes are checkpointed on the next write.
const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);

/// A partial download found on disk, as listed by [`Store::ingests`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestStatus {
    /// The blob being downloaded.
    pub digest: Digest,
    /// Its descriptor size.
    pub size: u64,
    /// Its media type, as recorded when the ingest started.
    pub media_type: String,
    /// The durable resume offset (0 when no checkpoint was written yet).
    pub checkpoint: u64,
    /// Unix seconds when the ingest was created.
    pub started_at: u64,
    /// Whether an [`Ingest`] for it is open in this process now.
    pub active: bool,
}

/// The file and hash state of an open ingest; moved into blocking tasks and back.
/// Holds the busy mark, so the digest stays busy until any in-flight IO has finished,
/// even if the future awaiting it was dropped.
struct IoState {
    file: File,
    hasher: Hasher,
    /// The store's write budget (a test seam; unlimited in production).
    budget: Arc<WriteBudget>,
    _busy: BusyGuard,
}

/// An open, resumable write of one blob. Dropping it keeps the ingest on disk (resumable
/// from its last checkpoint); [`Store::abort_ingest`] deletes it; [`Ingest::commit`]
/// verifies it and makes it visible.
pub struct Ingest {
    store: Store,
    digest: Digest,
    size: u64,
    dir: PathBuf,
    offset: u64,
    resumed_from: u64,
    checkpointed: u64,
    last_checkpoint: Instant,
    checkpoint_bytes: u64,
    checkpoint_interval: Duration,
    /// Whether the ingest directory and its meta are durable (see `disk::Opened`).
    durable: bool,
    state: Option<IoState>,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("digest", &self.digest)
            .field("size", &self.size)
            .field("offset", &self.offset)
            .field("resumed_from", &self.resumed_from)
            .field("checkpointed", &self.checkpointed)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Ingest {
    /// Open or resume the ingest of `digest`. Called by [`Store::ingest`].
    pub(crate) async fn open(
        store: Store,
        digest: Digest,
        size: u64,
        media_type: &str,
        busy: BusyGuard,
    ) -> Result<Self, StoreError> {
        let dir = store.ingest_dir(&digest);
        let media_type = media_type.to_string();
        let task_dir = dir.clone();
        let budget = store.inner.budget.clone();
        let opened = tokio::task::spawn_blocking(move || {
            open_blocking(&task_dir, digest, size, &media_type, &budget).map(
                |Opened {
                     file,
                     hasher,
                     offset,
                     durable,
                 }| {
                    (
                        IoState {
                            file,
                            hasher,
                            budget,
                            _busy: busy,
                        },
                        offset,
                        durable,
                    )
                },
            )
        })
        .await;
        let (state, offset, durable) = match opened {
            Ok(r) => r?,
            Err(join) => {
                tracing::error!(digest = %digest, error = %join, "ingest open task failed");
                return Err(StoreError::Interrupted { digest, path: dir });
            }
        };
        if offset > 0 {
            tracing::info!(digest = %digest, offset, size, "resuming ingest from checkpoint");
        }
        Ok(Self {
            store,
            digest,
            size,
            dir,
            offset,
            resumed_from: offset,
            checkpointed: offset,
            last_checkpoint: Instant::now(),
            checkpoint_bytes: DEFAULT_CHECKPOINT_BYTES,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            durable,
            state: Some(state),
        })
    }

    /// Bytes written and hashed so far; the next byte to write is at this offset.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The durable checkpoint this ingest resumed from (0 for a fresh ingest).
    pub fn resumed_from(&self) -> u64 {
        self.resumed_from
    }

    /// The offset persisted by the last checkpoint.
    pub fn checkpointed(&self) -> u64 {
        self.checkpointed
    }

    /// Checkpoint automatically after this many new bytes (default 4 MiB; 0 = every write).
    pub fn set_checkpoint_bytes(&mut self, bytes: u64) {
        self.checkpoint_bytes = bytes;
    }

    /// Checkpoint automatically on the first write this long after the last checkpoint
    /// (default 5 s).
    pub fn set_checkpoint_interval(&mut self, interval: Duration) {
        self.checkpoint_interval = interval;
    }

    fn data_path(&self) -> PathBuf {
        self.dir.join(DATA)
    }

    /// Run `f` on the file and hash state in a blocking task and put the state back.
    /// If the task is lost (cancelled or panicked) the ingest is unusable from then on.
    async fn with_state<T, F>(&mut self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut IoState) -> Result<T, StoreError> + Send + 'static,
    {
        let Some(mut state) = self.state.take() else {
            return Err(StoreError::Interrupted {
                digest: self.digest,
                path: self.dir.clone(),
            });
        };
        let joined = tokio::task::spawn_blocking(move || {
            let r = f(&mut state);
            (state, r)
        })
        .await;
        match joined {
            Ok((state, r)) => {
                self.state = Some(state);
                r
            }
            Err(join) => {
                tracing::error!(digest = %self.digest, error = %join, "ingest IO task failed");
                Err(StoreError::Interrupted {
                    digest: self.digest,
                    path: self.dir.clone(),
                })
            }
        }
    }

    /// Append `chunk`. Refuses (writing nothing) a chunk that would go past the descriptor
    /// size. Checkpoints automatically (see [`Ingest::set_checkpoint_bytes`]).
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        self.write_bytes(Bytes::copy_from_slice(chunk)).await
    }

    /// [`Ingest::write`] for a chunk the caller already owns (the body of a response): it
    /// moves to the blocking task without a copy.
    pub async fn write_bytes(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        if chunk.is_empty() {
            return Ok(());
        }
        let attempted = self.offset.saturating_add(chunk.len() as u64);
        if attempted > self.size {
            return Err(StoreError::SizeExceeded {
                digest: self.digest,
                size: self.size,
                attempted,
            });
        }
        let (written, error) = self.with_state(move |st| Ok(write_counted(st, &chunk))).await?;
        self.offset += written;
        if let Some(source) = error {
            let needed = self.size - self.offset;
            return Err(write_err("write", &self.data_path(), Some(needed))(source));
        }
        let unsaved = self.offset - self.checkpointed;
        if unsaved >= self.checkpoint_bytes
            || (unsaved > 0 && self.last_checkpoint.elapsed() >= self.checkpoint_interval)
        {
            self.checkpoint().await?;
        }
        Ok(())
    }

    /// Make the bytes written so far durable (fdatasync), then persist the offset (temp
    /// file + fsync + rename + fsync dir), so the checkpoint never exceeds durable data.
    pub async fn checkpoint(&mut self) -> Result<(), StoreError> {
        if self.offset == self.checkpointed {
            return Ok(());
        }
        let offset = self.offset;
        let dir = self.dir.clone();
        let ingest_root = (!self.durable).then(|| self.store.ingest_root());
        self.with_state(move |st| {
            let data = dir.join(DATA);
            st.file.sync_data().map_err(io_err("fdatasync", &data))?;
            if let Some(root) = ingest_root {
                make_durable(&root, &dir)?;
            }
            write_checkpoint(&dir, offset, &st.budget)
        })
        .await?;
        self.durable = true;
        self.checkpointed = offset;
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    /// Discard everything written: persist checkpoint 0, truncate `data` to 0 and reset the
    /// hash. For a server that ignored `Range`, or a retry from zero.
    pub async fn reset(&mut self) -> Result<(), StoreError> {
        let dir = self.dir.clone();
        self.with_state(move |st| {
            // Checkpoint first: at no instant may the checkpoint exceed the data length.
            write_checkpoint(&dir, 0, &st.budget)?;
            let data = dir.join(DATA);
            st.file.set_len(0).map_err(io_err("truncate", &data))?;
            st.file.seek(SeekFrom::Start(0)).map_err(io_err("seek", &data))?;
            st.hasher = Hasher::new();
            Ok(())
        })
        .await?;
        self.offset = 0;
        self.checkpointed = 0;
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    /// Verify and publish the blob: check that all `size` bytes were written and that the
    /// file has that length; check the digest; make it read-only; fsync; rename it into
    /// `blobs/sha256/<hex>`; fsync that directory (shared with concurrent commits); remove
    /// the ingest directory.
    ///
    /// - Fewer than `size` bytes written: [`StoreError::Incomplete`]; the ingest is kept
    ///   (resume it with [`Store::ingest`]).
    /// - Size or digest mismatch: the ingest is deleted (nothing unverified survives) and the
    ///   integrity error is returned.
    /// - The blob is already committed: success; the ingest is dropped.
    ///
    /// The blob is never visible before the checks pass. Failures after the rename only log.
    pub async fn commit(mut self) -> Result<PathBuf, StoreError> {
        let Some(state) = self.state.take() else {
            return Err(StoreError::Interrupted {
                digest: self.digest,
                path: self.dir.clone(),
            });
        };
        if self.offset < self.size {
            return Err(StoreError::Incomplete {
                digest: self.digest,
                offset: self.offset,
                size: self.size,
                path: self.dir.clone(),
            });
        }
        let job = CommitJob {
            store: self.store.clone(),
            digest: self.digest,
            size: self.size,
            dir: self.dir.clone(),
            ingest_root: self.store.ingest_root(),
            target: self.store.blob_path(&self.digest),
        };
        match tokio::task::spawn_blocking(move || job.run(state)).await {
            Ok(r) => r,
            Err(join) => {
                tracing::error!(digest = %self.digest, error = %join, "commit task failed");
                Err(StoreError::Interrupted {
                    digest: self.digest,
                    path: self.dir.clone(),
                })
            }
        }
    }
}

/// Write all of `buf`, hashing exactly the bytes the OS accepted. Returns the count written
/// and the error that stopped it, if any.
fn write_counted(st: &mut IoState, buf: &[u8]) -> (u64, Option<io::Error>) {
    let mut written = 0usize;
    while written < buf.len() {
        match st.budget.write(&mut st.file, &buf[written..]) {
            Ok(0) => return (written as u64, Some(io::ErrorKind::WriteZero.into())),
            Ok(n) => {
                st.hasher.update(&buf[written..written + n]);
                written += n;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (written as u64, Some(e)),
        }
    }
    (written as u64, None)
}

struct CommitJob {
    store: Store,
    digest: Digest,
    size: u64,
    dir: PathBuf,
    ingest_root: PathBuf,
    target: PathBuf,
}

impl CommitJob {
    fn run(self, state: IoState) -> Result<PathBuf, StoreError> {
        let IoState {
            file, hasher, _busy, ..
        } = state;
        let data = self.dir.join(DATA);
        let on_disk = file.metadata().map_err(io_err("stat", &data))?.len();
        if on_disk != self.size {
            drop(file);
            self.discard("size mismatch");
            return Err(StoreError::SizeMismatch {
                digest: self.digest,
                expected: self.size,
                actual: on_disk,
                path: data,
            });
        }
        let actual = hasher.finish();
        if actual != self.digest {
            drop(file);
            self.discard("digest mismatch");
            return Err(StoreError::DigestMismatch {
                expected: self.digest,
                actual,
                path: data,
            });
        }
        if blob_present(&self.target, self.size) {
            drop(file);
            tracing::debug!(digest = %self.digest, "blob already committed; dropping the ingest");
            self.cleanup(false);
            return Ok(self.target);
        }
        // Read-only before the rename, so the blob is never visible writable; one fsync
        // makes the bytes and the mode durable before the name exists.
        set_mode(&file, BLOB_MODE, &data)?;
        file.sync_all().map_err(io_err("fsync", &data))?;
        drop(file);
        fs::rename(&data, &self.target).map_err(io_err("rename into place", &self.target))?;
        // Concurrent commits share the fsync of `blobs/sha256` (group commit).
        self.store.inner.blob_dir_sync.sync()?;
        // The blob is committed; nothing below can be rolled back, so it only logs. No fsync
        // of the ingest root: an ingest that a power cut brings back is removed by start-up
        // recovery, since its blob is committed.
        self.cleanup(false);
        Ok(self.target)
    }

    /// Delete the ingest after a failed verification. Logs if that fails.
    fn discard(&self, why: &str) {
        tracing::warn!(digest = %self.digest, dir = %self.dir.display(), "{why}; deleting the ingest");
        self.cleanup(true);
    }

    /// Remove the ingest directory; `durable`: and fsync the ingest root, so that a power
    /// cut cannot bring back content that failed verification.
    fn cleanup(&self, durable: bool) {
        if let Err(e) = remove_tree_if_exists(&self.dir) {
            tracing::warn!(digest = %self.digest, error = %crate::error_chain(&e), "could not remove ingest directory");
            return;
        }
        if !durable {
            return;
        }
        if let Err(e) = sync_dir(&self.ingest_root) {
            tracing::warn!(error = %crate::error_chain(&e), "could not fsync the ingest directory");
        }
    }
}
