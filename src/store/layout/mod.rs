//! The OCI image layout under `root/oci`: the `oci-layout` marker, `index.json`, and
//! `blobs/sha256/<hex>`.
//!
//! Owns: reading, validating and atomically rewriting `index.json` (one entry per ref name,
//! annotated with `org.opencontainers.image.ref.name`), the annotations edgepull writes,
//! and the layout's start-up checks. The in-memory edits of the index (replace by name,
//! rotate older versions) are in `index`; this file holds the files.
//! Must never write `index.json` in place (always temp + fsync + rename + fsync dir), never
//! add an entry for a manifest that is not committed, and never persist descriptor `urls`.
//! Blocking file IO: called on the blocking pool only.

mod index;
#[cfg(test)]
mod tests;

use std::fs;
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::StoreError;
use super::fsio::{WriteBudget, io_err, read_capped, remove_file_if_exists, sync_dir, write_atomic};
use super::perms::{ensure_dir, open_read};
use edgepull_core::oci::{Descriptor, Digest};

pub use index::ImageEntry;
pub(crate) use index::IndexFile;
pub(crate) use index::{PreviousEntry, RolledBack, Switch};

/// Name of the layout marker file.
pub(crate) const OCI_LAYOUT_FILE: &str = "oci-layout";
/// Largest `oci-layout` read (the real one is 30 bytes).
const MAX_SMALL_FILE: u64 = 4096;
/// The only layout version written and accepted.
const IMAGE_LAYOUT_VERSION: &str = "1.0.0";
/// Name of the layout's index.
pub(crate) const INDEX_FILE: &str = "index.json";
/// Temp file used while replacing `index.json`; removed by start-up recovery.
pub(crate) const INDEX_TMP: &str = "index.json.tmp";
/// Temp file used while creating `oci-layout`; removed by start-up recovery.
pub(crate) const LAYOUT_TMP: &str = "oci-layout.tmp";
/// Annotation naming an index entry (OCI image-layout).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Annotation recording the image index the manifest was chosen from.
pub const ANNOTATION_SOURCE_INDEX: &str = "io.edgepull.source-index";
/// Annotation on an older version kept for rollback: the ref name it was current under.
/// Such entries carry no `org.opencontainers.image.ref.name` (that name belongs to the
/// current version), so tools that look images up by name see only the current one.
pub(crate) const ANNOTATION_PREVIOUS_OF: &str = "io.edgepull.previous-of";
/// Annotation on a version downloaded ahead of its switch (a staged rollout's `prefetch`):
/// the ref name it will be current under. Like an older version, it has no ref name, and
/// it is a root for garbage collection, so its blobs stay until the switch.
pub(crate) const ANNOTATION_PENDING_OF: &str = "io.edgepull.pending-of";
/// Annotation on an older version: 1 for the most recent previous version, 2 for the one
/// before, and so on.
pub(crate) const ANNOTATION_PREVIOUS_RANK: &str = "io.edgepull.previous-rank";

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LayoutMarker {
    image_layout_version: String,
}

/// Check `ref_name` against the OCI image-layout grammar for `org.opencontainers.image.ref.name`:
/// `component ("/" component)*`, `component ::= alphanum (separator alphanum)*`,
/// `alphanum ::= [A-Za-z0-9]+`, `separator ::= [-._:@+] | "--"`.
pub(crate) fn validate_ref_name(ref_name: &str) -> Result<(), StoreError> {
    let bad = || StoreError::InvalidRefName {
        ref_name: ref_name.chars().take(200).collect(),
    };
    if ref_name.is_empty() {
        return Err(bad());
    }
    for component in ref_name.split('/') {
        let bytes = component.as_bytes();
        let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
            return Err(bad());
        };
        if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
            return Err(bad());
        }
        let mut run = String::new();
        for &b in bytes {
            if b.is_ascii_alphanumeric() {
                if !(run.is_empty() || run.len() == 1 || run == "--") {
                    return Err(bad());
                }
                run.clear();
            } else if matches!(b, b'-' | b'.' | b'_' | b':' | b'@' | b'+') {
                run.push(b as char);
            } else {
                return Err(bad());
            }
        }
    }
    Ok(())
}

/// Create `oci_dir/blobs/sha256` (mode 0750), and `oci-layout` and an empty `index.json` when missing;
/// check both when present. Caller holds the store lock.
pub(crate) fn ensure(oci_dir: &Path, budget: &WriteBudget) -> Result<(), StoreError> {
    let blobs = oci_dir.join("blobs").join("sha256");
    ensure_dir(oci_dir)?;
    ensure_dir(&oci_dir.join("blobs"))?;
    ensure_dir(&blobs)?;
    sync_dir(oci_dir)?;
    sync_dir(&oci_dir.join("blobs"))?;

    let marker = oci_dir.join(OCI_LAYOUT_FILE);
    match read_capped(&marker, MAX_SMALL_FILE) {
        Ok(bytes) => {
            let bytes = bytes.unwrap_or_default();
            let found = serde_json::from_slice::<LayoutMarker>(&bytes)
                .map(|m| m.image_layout_version)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).chars().take(100).collect());
            if found != IMAGE_LAYOUT_VERSION {
                return Err(StoreError::UnsupportedLayout { path: marker, found });
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let body = encode(
                &LayoutMarker {
                    image_layout_version: IMAGE_LAYOUT_VERSION.to_string(),
                },
                &marker,
            )?;
            write_atomic(oci_dir, OCI_LAYOUT_FILE, LAYOUT_TMP, &body, budget)?;
        }
        Err(e) => return Err(io_err("read", &marker)(e)),
    }

    let index = oci_dir.join(INDEX_FILE);
    if fs::symlink_metadata(&index).is_ok() {
        read_index(oci_dir)?;
    } else {
        write_index(oci_dir, &IndexFile::empty(), budget)?;
    }
    Ok(())
}

/// Remove temp files left by an interrupted `index.json` or `oci-layout` write.
pub(crate) fn remove_temp_files(oci_dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut removed = Vec::new();
    for name in [INDEX_TMP, LAYOUT_TMP] {
        let p = oci_dir.join(name);
        if fs::symlink_metadata(&p).is_ok() {
            remove_file_if_exists(&p)?;
            removed.push(p);
        }
    }
    Ok(removed)
}

/// Read and validate `oci_dir/index.json` (never through a link).
pub(crate) fn read_index(oci_dir: &Path) -> Result<IndexFile, StoreError> {
    let path = oci_dir.join(INDEX_FILE);
    let mut bytes = Vec::new();
    open_read(&path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(io_err("read", &path))?;
    serde_json::from_slice(&bytes).map_err(|source| StoreError::CorruptIndex { path, source })
}

pub(crate) fn write_index(oci_dir: &Path, index: &IndexFile, budget: &WriteBudget) -> Result<(), StoreError> {
    let path = oci_dir.join(INDEX_FILE);
    let body = encode(index, &path)?;
    write_atomic(oci_dir, INDEX_FILE, INDEX_TMP, &body, budget)?;
    Ok(())
}

fn encode<T: Serialize>(value: &T, path: &Path) -> Result<Vec<u8>, StoreError> {
    let mut body = serde_json::to_vec_pretty(value).map_err(|e| StoreError::Io {
        op: "encode JSON for",
        path: path.to_path_buf(),
        source: io::Error::other(e),
    })?;
    body.push(b'\n');
    Ok(body)
}

/// Read-modify-write `index.json` to record `ref_name`. Caller serializes index updates.
pub(crate) fn set_image(
    oci_dir: &Path,
    ref_name: &str,
    manifest: &Descriptor,
    source_index: Option<&Digest>,
    budget: &WriteBudget,
) -> Result<(), StoreError> {
    let mut index = read_index(oci_dir)?;
    index.upsert(ref_name, manifest, source_index);
    write_index(oci_dir, &index, budget)
}

/// Read-modify-write `index.json` to switch `ref_name` (see [`IndexFile::switch`]). Caller
/// serializes index updates.
pub(crate) fn switch_image(
    oci_dir: &Path,
    ref_name: &str,
    manifest: &Descriptor,
    source_index: Option<&Digest>,
    keep: u32,
    budget: &WriteBudget,
) -> Result<Switch, StoreError> {
    let mut index = read_index(oci_dir)?;
    let switch = index.switch(ref_name, manifest, source_index, keep);
    write_index(oci_dir, &index, budget)?;
    Ok(switch)
}

/// Read-modify-write `index.json` to roll `ref_name` back from `failed` (see
/// [`IndexFile::roll_back`]); nothing is written when there is nothing to roll back to.
/// Caller serializes index updates.
pub(crate) fn roll_back(
    oci_dir: &Path,
    ref_name: &str,
    failed: &Digest,
    budget: &WriteBudget,
) -> Result<Option<RolledBack>, StoreError> {
    let mut index = read_index(oci_dir)?;
    let done = index.roll_back(ref_name, failed);
    if done.is_some() {
        write_index(oci_dir, &index, budget)?;
    }
    Ok(done)
}

/// Read-modify-write `index.json` to record (`Some`) or drop (`None`) the version of
/// `ref_name` downloaded ahead of its switch ([`IndexFile::set_pending`]); nothing is
/// written when nothing changes. Caller serializes index updates.
pub(crate) fn set_pending(
    oci_dir: &Path,
    ref_name: &str,
    pending: Option<(&Descriptor, Option<&Digest>)>,
    budget: &WriteBudget,
) -> Result<(), StoreError> {
    let mut index = read_index(oci_dir)?;
    if index.set_pending(ref_name, pending) {
        write_index(oci_dir, &index, budget)?;
    }
    Ok(())
}

/// Read-modify-write `index.json` to drop `ref_name`. Caller serializes index updates.
pub(crate) fn remove_image(oci_dir: &Path, ref_name: &str, budget: &WriteBudget) -> Result<bool, StoreError> {
    let mut index = read_index(oci_dir)?;
    let removed = index.remove(ref_name);
    if removed {
        write_index(oci_dir, &index, budget)?;
    }
    Ok(removed)
}
