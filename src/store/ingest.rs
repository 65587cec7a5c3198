//! Resumable ingest of one blob: `root/ingest/sha256-<hex>/{data,meta.json,checkpoint}`.
//!
//! Owns: the partial bytes of a download, its running hash, and the durable resume offset
//! (`checkpoint`). The invariant is `checkpoint <= durable length of data`: data is
//! fdatasynced *before* the offset is persisted, and on resume `data` is truncated back to
//! the checkpoint and re-hashed, so a torn tail is never trusted. Only bytes actually
//! written are counted and hashed.
//!
//! Must never: make bytes visible in `blobs/` before the size and digest checks pass; write
//! past the descriptor size; keep an ingest whose content failed verification; run file IO
//! or hashing on the async executor (all of it runs in `spawn_blocking`); hold more than a
//! fixed-size buffer in memory, whatever the blob size.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::fsio::{
    io_err, make_read_only, make_writable, remove_file_if_exists, remove_tree_if_exists, rename_durable,
    sync_dir, unix_now, write_atomic,
};
use super::lock::{BusyGuard, BusySet};
use super::{Store, StoreError};
use edgepull_core::oci::{Digest, Hasher};

/// Prefix of an ingest directory name; the rest is the digest's hex.
pub(crate) const DIR_PREFIX: &str = "sha256-";
const DATA: &str = "data";
const META: &str = "meta.json";
const META_TMP: &str = "meta.json.tmp";
const CHECKPOINT: &str = "checkpoint";
const CHECKPOINT_TMP: &str = "checkpoint.tmp";

/// Default bytes written between automatic checkpoints.
pub const DEFAULT_CHECKPOINT_BYTES: u64 = 4 * 1024 * 1024;
/// Default time after which new bytes are checkpointed on the next write.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);
/// Buffer size for re-hashing files; memory use does not grow with blob size.
pub(crate) const HASH_BUF: usize = 256 * 1024;

/// `meta.json` of an ingest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct IngestMeta {
    pub(crate) digest: Digest,
    pub(crate) size: u64,
    pub(crate) media_type: String,
    /// Unix seconds when the ingest was created.
    pub(crate) started_at: u64,
}

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
        let ingest_root = store.ingest_root();
        let opened = tokio::task::spawn_blocking(move || {
            open_blocking(&ingest_root, &task_dir, digest, size, &media_type).map(|(file, hasher, offset)| {
                (
                    IoState {
                        file,
                        hasher,
                        _busy: busy,
                    },
                    offset,
                )
            })
        })
        .await;
        let (state, offset) = match opened {
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
            state: Some(state),
        })
    }

    /// The blob being written.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The expected (descriptor) size.
    pub fn size(&self) -> u64 {
        self.size
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
        let buf = chunk.to_vec();
        let (written, error) = self.with_state(move |st| Ok(write_counted(st, &buf))).await?;
        self.offset += written;
        if let Some(source) = error {
            return Err(StoreError::Io {
                op: "write",
                path: self.data_path(),
                source,
            });
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
        self.with_state(move |st| {
            let data = dir.join(DATA);
            st.file.sync_data().map_err(io_err("fdatasync", &data))?;
            write_checkpoint(&dir, offset)
        })
        .await?;
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
            write_checkpoint(&dir, 0)?;
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

    /// Verify and publish the blob: fsync; check that all `size` bytes were written and that
    /// the file has that length; check the digest; make it read-only; rename it into
    /// `blobs/sha256/<hex>`; fsync that directory; remove the ingest directory.
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
        match st.file.write(&buf[written..]) {
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
    digest: Digest,
    size: u64,
    dir: PathBuf,
    ingest_root: PathBuf,
    target: PathBuf,
}

impl CommitJob {
    fn run(self, state: IoState) -> Result<PathBuf, StoreError> {
        let IoState { file, hasher, _busy } = state;
        let data = self.dir.join(DATA);
        file.sync_all().map_err(io_err("fsync", &data))?;
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
            self.cleanup();
            return Ok(self.target);
        }
        // Read-only before the rename, so the blob is never visible writable.
        make_read_only(&file, &data)?;
        file.sync_all().map_err(io_err("fsync", &data))?;
        drop(file);
        rename_durable(&data, &self.target)?;
        // The blob is committed; nothing below can be rolled back, so it only logs.
        self.cleanup();
        Ok(self.target)
    }

    /// Delete the ingest after a failed verification. Logs if that fails.
    fn discard(&self, why: &str) {
        tracing::warn!(digest = %self.digest, dir = %self.dir.display(), "{why}; deleting the ingest");
        self.cleanup();
    }

    fn cleanup(&self) {
        if let Err(e) = remove_tree_if_exists(&self.dir) {
            tracing::warn!(digest = %self.digest, error = %e, "could not remove ingest directory");
            return;
        }
        if let Err(e) = sync_dir(&self.ingest_root) {
            tracing::warn!(error = %e, "could not fsync the ingest directory");
        }
    }
}

/// Whether `path` is a regular file of exactly `size` bytes.
pub(crate) fn blob_present(path: &Path, size: u64) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.len() == size)
}

/// Read `meta.json`; `Ok(None)` if missing or invalid.
pub(crate) fn read_meta(dir: &Path) -> Result<Option<IngestMeta>, StoreError> {
    let path = dir.join(META);
    match fs::read(&path) {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", &path)(e)),
    }
}

/// Read `checkpoint`: `Some(0)` if missing, `None` if unreadable as a number.
pub(crate) fn read_checkpoint(dir: &Path) -> Result<Option<u64>, StoreError> {
    let path = dir.join(CHECKPOINT);
    match fs::read_to_string(&path) {
        Ok(s) => Ok(s.trim().parse().ok()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Some(0)),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => Ok(None),
        Err(e) => Err(io_err("read", &path)(e)),
    }
}

fn write_checkpoint(dir: &Path, offset: u64) -> Result<(), StoreError> {
    write_atomic(dir, CHECKPOINT, CHECKPOINT_TMP, format!("{offset}\n").as_bytes()).map(drop)
}

/// Resume the ingest in `dir` if its meta matches, else start it fresh.
/// Returns the open data file (positioned at the offset), the hash of the bytes before the
/// offset, and the offset.
fn open_blocking(
    ingest_root: &Path,
    dir: &Path,
    digest: Digest,
    size: u64,
    media_type: &str,
) -> Result<(File, Hasher, u64), StoreError> {
    match read_meta(dir)? {
        Some(meta) if meta.digest == digest && meta.size == size => {
            if let Some(resumed) = try_resume(dir, digest, size)? {
                return Ok(resumed);
            }
        }
        Some(meta) => tracing::info!(
            digest = %digest,
            recorded_size = meta.size,
            size,
            "ingest on disk was for another size; restarting at 0"
        ),
        None if dir.exists() => {
            tracing::info!(digest = %digest, "ingest on disk has no valid meta.json; restarting at 0")
        }
        None => {}
    }
    start_fresh(ingest_root, dir, digest, size, media_type)
}

/// Truncate `data` to the checkpoint and re-hash it. `None` if the ingest cannot be resumed
/// (bad checkpoint, data shorter than the checkpoint, missing data).
fn try_resume(dir: &Path, digest: Digest, size: u64) -> Result<Option<(File, Hasher, u64)>, StoreError> {
    let Some(checkpoint) = read_checkpoint(dir)? else {
        tracing::warn!(digest = %digest, "ingest checkpoint is unreadable; restarting at 0");
        return Ok(None);
    };
    let data = dir.join(DATA);
    let open = || OpenOptions::new().read(true).write(true).open(&data);
    let mut file = match open() {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            // A commit that crashed after making `data` read-only and before the rename.
            make_writable(&data)?;
            open().map_err(io_err("open", &data))?
        }
        Err(e) => return Err(io_err("open", &data)(e)),
    };
    let len = file.metadata().map_err(io_err("stat", &data))?.len();
    if checkpoint > size || checkpoint > len {
        tracing::warn!(
            digest = %digest,
            checkpoint,
            data_len = len,
            size,
            "ingest checkpoint is beyond the data or the blob size; restarting at 0"
        );
        return Ok(None);
    }
    if len != checkpoint {
        file.set_len(checkpoint).map_err(io_err("truncate", &data))?;
    }
    file.seek(SeekFrom::Start(0)).map_err(io_err("seek", &data))?;
    let hasher = hash_prefix(&mut file, checkpoint, &data)?;
    file.seek(SeekFrom::Start(checkpoint))
        .map_err(io_err("seek", &data))?;
    Ok(Some((file, hasher, checkpoint)))
}

/// Hash the next `len` bytes of `file` with a fixed-size buffer.
pub(crate) fn hash_prefix(file: &mut File, len: u64, path: &Path) -> Result<Hasher, StoreError> {
    let mut hasher = Hasher::new();
    let mut buf = vec![0u8; HASH_BUF];
    let mut left = len;
    while left > 0 {
        let want = usize::try_from(left).map_or(HASH_BUF, |l| l.min(HASH_BUF));
        let n = match file.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(io_err("read", path)(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shorter than expected while re-hashing",
                )));
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err("read", path)(e)),
        };
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(hasher)
}

fn start_fresh(
    ingest_root: &Path,
    dir: &Path,
    digest: Digest,
    size: u64,
    media_type: &str,
) -> Result<(File, Hasher, u64), StoreError> {
    remove_tree_if_exists(dir)?;
    fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    sync_dir(ingest_root)?;
    let meta = IngestMeta {
        digest,
        size,
        media_type: media_type.to_string(),
        started_at: unix_now(),
    };
    let body = serde_json::to_vec(&meta).map_err(|e| StoreError::Io {
        op: "encode JSON for",
        path: dir.join(META),
        source: io::Error::other(e),
    })?;
    write_atomic(dir, META, META_TMP, &body)?;
    let data = dir.join(DATA);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&data)
        .map_err(io_err("create", &data))?;
    Ok((file, Hasher::new(), 0))
}

/// Start-up recovery of `ingest_root`: remove everything that is not a resumable ingest
/// directory (stray files, bad names, missing/invalid meta, meta for another digest,
/// ingests whose blob is already committed) and temp files inside kept ones.
/// Returns (removed paths, kept count).
pub(crate) fn recover(root: &Path, blobs_dir: &Path) -> Result<(Vec<PathBuf>, usize), StoreError> {
    let mut removed = Vec::new();
    let mut kept = 0;
    let entries = fs::read_dir(root).map_err(io_err("read directory", root))?;
    for entry in entries {
        let entry = entry.map_err(io_err("read directory", root))?;
        let path = entry.path();
        let keep = match parse_dir_name(&entry.file_name()) {
            Some(digest) if entry.file_type().is_ok_and(|t| t.is_dir()) => match read_meta(&path)? {
                Some(meta) if meta.digest == digest => {
                    !blob_present(&blobs_dir.join(digest.hex()), meta.size)
                }
                _ => false,
            },
            _ => false,
        };
        if keep {
            for tmp in [META_TMP, CHECKPOINT_TMP] {
                remove_file_if_exists(&path.join(tmp))?;
            }
            kept += 1;
        } else {
            tracing::info!(path = %path.display(), "removing stale ingest entry");
            remove_tree_if_exists(&path)?;
            removed.push(path);
        }
    }
    if !removed.is_empty() {
        sync_dir(root)?;
    }
    Ok((removed, kept))
}

/// List resumable ingests on disk.
pub(crate) fn list(root: &Path, busy: &BusySet) -> Result<Vec<IngestStatus>, StoreError> {
    let mut out = Vec::new();
    let entries = fs::read_dir(root).map_err(io_err("read directory", root))?;
    for entry in entries {
        let entry = entry.map_err(io_err("read directory", root))?;
        let Some(digest) = parse_dir_name(&entry.file_name()) else {
            continue;
        };
        let path = entry.path();
        let Some(meta) = read_meta(&path)? else { continue };
        if meta.digest != digest {
            continue;
        }
        out.push(IngestStatus {
            digest,
            size: meta.size,
            media_type: meta.media_type,
            checkpoint: read_checkpoint(&path)?.unwrap_or(0),
            started_at: meta.started_at,
            active: busy.contains(&digest),
        });
    }
    out.sort_by_key(|s| s.digest);
    Ok(out)
}

fn parse_dir_name(name: &std::ffi::OsStr) -> Option<Digest> {
    let hex = name.to_str()?.strip_prefix(DIR_PREFIX)?;
    Digest::parse(&format!("sha256:{hex}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_names_parse_only_valid_digests() {
        let d = Digest::of(b"x");
        assert_eq!(parse_dir_name(format!("sha256-{}", d.hex()).as_ref()), Some(d));
        assert_eq!(parse_dir_name("sha256-../../etc".as_ref()), None);
        assert_eq!(parse_dir_name(d.hex().as_ref()), None);
    }

    #[test]
    fn checkpoint_files_round_trip_and_bad_ones_read_as_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_checkpoint(dir.path()).unwrap(), Some(0));
        write_checkpoint(dir.path(), 12345).unwrap();
        assert_eq!(read_checkpoint(dir.path()).unwrap(), Some(12345));
        fs::write(dir.path().join(CHECKPOINT), b"12x").unwrap();
        assert_eq!(read_checkpoint(dir.path()).unwrap(), None);
    }

    #[test]
    fn hash_prefix_covers_exactly_len_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let body: Vec<u8> = (0..(HASH_BUF * 2 + 17)).map(|i| i as u8).collect();
        fs::write(&p, &body).unwrap();
        let mut f = File::open(&p).unwrap();
        let n = HASH_BUF + 5;
        let h = hash_prefix(&mut f, n as u64, &p).unwrap();
        assert_eq!(h.finish(), Digest::of(&body[..n]));
        let mut f = File::open(&p).unwrap();
        let Err(err) = hash_prefix(&mut f, body.len() as u64 + 1, &p) else {
            panic!("hashing past the end must fail")
        };
        assert!(matches!(err, StoreError::Io { op: "read", .. }), "{err:?}");
    }
}
