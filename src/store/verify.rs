//! Full re-verification of committed blobs (`Store::verify`).
//!
//! Owns: re-hashing every file under `blobs/sha256` in fixed-size chunks and comparing it
//! with its name, and with the size recorded for it in `index.json` or in a stored
//! manifest. Must never delete or modify anything: it only reports.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use super::StoreError;
use super::fsio::{io_err, read_capped};
use super::ingest::hash_prefix;
use super::layout::IndexFile;
use edgepull_core::gc::{ManifestRefs, classify_manifest};
use edgepull_core::oci::Digest;
use edgepull_core::oci::manifest::{DOCKER_MANIFEST, MAX_MANIFEST_BYTES, OCI_MANIFEST};

/// What `Store::verify` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Blobs re-hashed.
    pub checked: u64,
    /// Bytes re-hashed.
    pub bytes: u64,
    /// Blobs whose content does not match their name or recorded size.
    pub corrupt: Vec<CorruptBlob>,
    /// Entries under `blobs/sha256` whose name is not a valid digest (reported, not deleted).
    pub misnamed: Vec<PathBuf>,
    /// Blobs referenced by `index.json` or a stored manifest but absent.
    pub missing: Vec<Digest>,
}

impl VerifyReport {
    /// True when nothing is corrupt, misnamed or missing.
    pub fn is_clean(&self) -> bool {
        self.corrupt.is_empty() && self.misnamed.is_empty() && self.missing.is_empty()
    }
}

/// One blob that failed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptBlob {
    /// The digest its name claims.
    pub digest: Digest,
    /// Where it is.
    pub path: PathBuf,
    /// What is wrong with it.
    pub problem: Corruption,
}

/// How a blob is corrupt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Corruption {
    /// Its content hashes to another digest.
    DigestMismatch {
        /// What it hashes to.
        actual: Digest,
    },
    /// Its length differs from the size a descriptor records for it.
    SizeMismatch {
        /// The recorded size.
        expected: u64,
        /// The file's length.
        actual: u64,
    },
    /// It is not a regular file (directory, symlink, ...).
    NotAFile,
}

/// Verify every blob in `blobs_dir` against `index`.
pub(super) fn run(blobs_dir: &Path, index: &IndexFile) -> Result<VerifyReport, StoreError> {
    let mut report = VerifyReport::default();
    let mut expected = expected_sizes(blobs_dir, index);
    let entries = fs::read_dir(blobs_dir).map_err(io_err("read directory", blobs_dir))?;
    let mut paths: Vec<_> = entries
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io_err("read directory", blobs_dir))?;
    paths.sort();
    for path in paths {
        let digest = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| Digest::parse(&format!("sha256:{n}")).ok());
        let Some(digest) = digest else {
            report.misnamed.push(path);
            continue;
        };
        let want_size = expected.remove(&digest);
        let meta = fs::symlink_metadata(&path).map_err(io_err("stat", &path))?;
        if !meta.is_file() {
            report.corrupt.push(CorruptBlob {
                digest,
                path,
                problem: Corruption::NotAFile,
            });
            continue;
        }
        let len = meta.len();
        let mut file = File::open(&path).map_err(io_err("open", &path))?;
        let actual = hash_prefix(&mut file, len, &path)?.finish();
        report.checked += 1;
        report.bytes += len;
        let problem = if actual != digest {
            Some(Corruption::DigestMismatch { actual })
        } else {
            match want_size {
                Some(expected) if expected != len => Some(Corruption::SizeMismatch {
                    expected,
                    actual: len,
                }),
                _ => None,
            }
        };
        if let Some(problem) = problem {
            report.corrupt.push(CorruptBlob {
                digest,
                path,
                problem,
            });
        }
    }
    report.missing = expected.into_keys().collect();
    Ok(report)
}

/// Sizes recorded for blobs: the manifests in `index.json`, and the config and layers of
/// each of those manifests that is stored and parses.
fn expected_sizes(blobs_dir: &Path, index: &IndexFile) -> BTreeMap<Digest, u64> {
    let mut sizes = BTreeMap::new();
    for m in &index.manifests {
        sizes.insert(m.digest, m.size);
        if !matches!(m.media_type.as_str(), OCI_MANIFEST | DOCKER_MANIFEST) || m.size > MAX_MANIFEST_BYTES {
            continue;
        }
        // Unreadable or too large: its blobs' sizes are unknown (a missing manifest is
        // reported by the scan).
        let Ok(Some(bytes)) = read_capped(&blobs_dir.join(m.digest.hex()), MAX_MANIFEST_BYTES) else {
            continue;
        };
        // Corrupt manifests are reported by the scan; unreadable ones record no sizes.
        if let ManifestRefs::Blobs(blobs) = classify_manifest(m, &bytes) {
            for d in blobs {
                sizes.insert(d.digest, d.size);
            }
        }
    }
    sizes
}
