//! The on-disk form of an ingest, `root/ingest/sha256-<hex>/`: its file names, `meta.json`,
//! the `checkpoint` file, opening or resuming one, start-up recovery of the ingest root,
//! and listing.
//!
//! Owns: the only copy of the ingest file names (garbage collection asks
//! [`last_write`] instead of naming them). Must never trust `data` beyond the checkpoint,
//! keep an ingest directory whose name is not a valid digest, or be called on an async
//! worker (everything here is blocking file IO).

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::IngestStatus;
use crate::store::StoreError;
use crate::store::fsio::{
    WriteBudget, io_err, read_capped, remove_file_if_exists, remove_tree_if_exists, sync_dir, unix_now,
    write_atomic, write_err,
};
use crate::store::lock::BusySet;
use crate::store::perms::{create_dir, create_exclusive, is_symlink, make_writable, open_read, open_rw};
use edgepull_core::oci::{Digest, Hasher};

/// Prefix of an ingest directory name; the rest is the digest's hex.
const DIR_PREFIX: &str = "sha256-";
/// The partial blob.
pub(super) const DATA: &str = "data";
/// What is being downloaded ([`IngestMeta`]).
const META: &str = "meta.json";
const META_TMP: &str = "meta.json.tmp";
/// The durable resume offset.
pub(super) const CHECKPOINT: &str = "checkpoint";
const CHECKPOINT_TMP: &str = "checkpoint.tmp";
/// Buffer size for re-hashing files; memory use does not grow with blob size.
pub(super) const HASH_BUF: usize = 256 * 1024;

/// `meta.json` of an ingest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IngestMeta {
    digest: Digest,
    size: u64,
    media_type: String,
    /// Unix seconds when the ingest was created.
    started_at: u64,
}

/// The directory name of the ingest of `d`.
pub(crate) fn dir_name(d: &Digest) -> String {
    format!("{DIR_PREFIX}{}", d.hex())
}

/// The newest modification time of an ingest's files (`None` if none can be read).
pub(crate) fn last_write(dir: &Path) -> Option<SystemTime> {
    [DATA, CHECKPOINT, META]
        .iter()
        .filter_map(|f| fs::metadata(dir.join(f)).and_then(|m| m.modified()).ok())
        .max()
}

/// Whether `path` is a regular file of exactly `size` bytes.
pub(crate) fn blob_present(path: &Path, size: u64) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.len() == size)
}

/// Largest `meta.json` or `checkpoint` read; anything longer is not one edgepull wrote.
const SMALL_FILE_MAX: u64 = 64 * 1024;

/// Read a small ingest file without following a link: `Ok(None)` when missing, a link or
/// too long.
fn read_small(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    match read_capped(path, SMALL_FILE_MAX) {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        // ELOOP: a link where a file should be; treated as garbage, never followed.
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => Ok(None),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

/// Read `meta.json`; `Ok(None)` if missing or invalid.
fn read_meta(dir: &Path) -> Result<Option<IngestMeta>, StoreError> {
    let Some(bytes) = read_small(&dir.join(META))? else {
        return Ok(None);
    };
    Ok(serde_json::from_slice(&bytes).ok())
}

/// Read `checkpoint`: `Some(0)` if missing, `None` if unreadable as a number.
pub(super) fn read_checkpoint(dir: &Path) -> Result<Option<u64>, StoreError> {
    let path = dir.join(CHECKPOINT);
    if fs::symlink_metadata(&path).is_err_and(|e| e.kind() == io::ErrorKind::NotFound) {
        return Ok(Some(0));
    }
    let Some(bytes) = read_small(&path)? else {
        return Ok(None);
    };
    Ok(std::str::from_utf8(&bytes)
        .ok()
        .and_then(|s| s.trim().parse().ok()))
}

pub(super) fn write_checkpoint(dir: &Path, offset: u64, budget: &WriteBudget) -> Result<(), StoreError> {
    write_atomic(
        dir,
        CHECKPOINT,
        CHECKPOINT_TMP,
        format!("{offset}\n").as_bytes(),
        budget,
    )
    .map(drop)
}

/// An ingest opened by [`open_blocking`].
pub(super) struct Opened {
    /// The data file, positioned at `offset`.
    pub(super) file: File,
    /// The hash of the bytes before `offset`.
    pub(super) hasher: Hasher,
    pub(super) offset: u64,
    /// Whether the directory and its meta are durable. A fresh ingest is not: it has no
    /// checkpoint to lose, so making it durable waits for its first checkpoint
    /// ([`make_durable`]), and a blob that completes before one costs no fsync to start.
    pub(super) durable: bool,
}

/// Resume the ingest in `dir` if its meta matches, else start it fresh.
pub(super) fn open_blocking(
    dir: &Path,
    digest: Digest,
    size: u64,
    media_type: &str,
    budget: &WriteBudget,
) -> Result<Opened, StoreError> {
    if is_symlink(dir) {
        tracing::warn!(digest = %digest, dir = %dir.display(), "ingest directory is a symbolic link; removing the link and restarting at 0");
        return start_fresh(dir, digest, size, media_type, budget);
    }
    match read_meta(dir)? {
        Some(meta) if meta.digest == digest && meta.size == size => {
            if let Some((file, hasher, offset)) = try_resume(dir, digest, size)? {
                return Ok(Opened {
                    file,
                    hasher,
                    offset,
                    durable: true,
                });
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
    start_fresh(dir, digest, size, media_type, budget)
}

/// Truncate `data` to the checkpoint and re-hash it. `None` if the ingest cannot be resumed
/// (bad checkpoint, data shorter than the checkpoint, missing data).
fn try_resume(dir: &Path, digest: Digest, size: u64) -> Result<Option<(File, Hasher, u64)>, StoreError> {
    let Some(checkpoint) = read_checkpoint(dir)? else {
        tracing::warn!(digest = %digest, "ingest checkpoint is unreadable; restarting at 0");
        return Ok(None);
    };
    let data = dir.join(DATA);
    let mut file = match open_rw(&data) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            // A commit that crashed after making `data` read-only and before the rename.
            make_writable(&data)?;
            open_rw(&data).map_err(io_err("open", &data))?
        }
        // A link (ELOOP) or a special file (EINVAL) where `data` should be: never
        // followed, restarted.
        Err(e)
            if [rustix::io::Errno::LOOP, rustix::io::Errno::INVAL]
                .iter()
                .any(|n| e.raw_os_error() == Some(n.raw_os_error())) =>
        {
            tracing::warn!(digest = %digest, path = %data.display(), "ingest data is not a plain file; restarting at 0");
            return Ok(None);
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
    dir: &Path,
    digest: Digest,
    size: u64,
    media_type: &str,
    budget: &WriteBudget,
) -> Result<Opened, StoreError> {
    remove_tree_if_exists(dir)?;
    create_dir(dir)?;
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
    // Written in place, not synced: the directory is new, and a torn or missing meta.json
    // after a crash only means "no valid meta", which recovery removes and `open` restarts
    // (there is no checkpoint yet to lose). The first checkpoint syncs it first.
    let meta_path = dir.join(META);
    let mut f = create_exclusive(&meta_path)?;
    budget
        .write_all(&mut f, &body)
        .map_err(write_err("write", &meta_path, Some(body.len() as u64)))?;
    drop(f);
    let file = create_exclusive(&dir.join(DATA))?;
    Ok(Opened {
        file,
        hasher: Hasher::new(),
        offset: 0,
        durable: false,
    })
}

/// Make a fresh ingest durable before its first checkpoint is written: fsync `meta.json`
/// and the ingest root (which holds the new directory). The checkpoint's own rename then
/// fsyncs the ingest directory, which makes the names of `meta.json` and `data` durable.
pub(super) fn make_durable(ingest_root: &Path, dir: &Path) -> Result<(), StoreError> {
    let meta = dir.join(META);
    let f = open_read(&meta).map_err(io_err("open", &meta))?;
    f.sync_all().map_err(io_err("fsync", &meta))?;
    sync_dir(ingest_root)
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

pub(super) fn parse_dir_name(name: &std::ffi::OsStr) -> Option<Digest> {
    let hex = name.to_str()?.strip_prefix(DIR_PREFIX)?;
    Digest::parse(&format!("sha256:{hex}")).ok()
}
