//! The start-up scrub ([`Store::scrub`]): re-hash the blobs of the current images when
//! `store.verify_on_start` asks for it, and delete the corrupt ones so the next pull
//! fetches them again.
//!
//! Owns: which blobs a scrub reads (the current `index.json` entries' manifests and the
//! indexes they came from, then each manifest's config and layers; every blob when a current
//! manifest cannot be read), and marking the store clean once a scrub ran. The decision
//! whether to run is `edgepull_core::store::VerifyOnStart::should_scrub`.
//!
//! Must never: delete a blob that hashes to its name with the recorded size, touch
//! `index.json` (the daemon sees the image incomplete and fetches what is missing), or run
//! on an async worker (the `Store` method runs this body on the blocking pool).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;

use super::fsio::{io_err, read_capped, remove_tree_if_exists, sync_dir};
use super::ingest::hash_prefix;
use super::layout;
use super::perms::open_read;
use super::verify::{CorruptBlob, Corruption};
use super::{Store, StoreError};
use edgepull_core::gc::{ManifestRefs, classify_manifest};
use edgepull_core::oci::Digest;
use edgepull_core::oci::manifest::MAX_MANIFEST_BYTES;
use edgepull_core::store::VerifyOnStart;

/// What [`Store::scrub`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrubReport {
    /// The policy it ran under.
    pub policy: VerifyOnStart,
    /// Whether the store was left unclean by the previous run.
    pub unclean: bool,
    /// Whether it re-hashed (false: the policy said no).
    pub ran: bool,
    /// Blobs re-hashed.
    pub checked: u64,
    /// Bytes re-hashed.
    pub bytes: u64,
    /// Corrupt blobs deleted (they are fetched again by the next pull).
    pub removed: Vec<CorruptBlob>,
    /// Blobs that could not be read (an IO error): deleted too.
    pub unreadable: Vec<Digest>,
    /// A current manifest was missing, unreadable or corrupt, so every blob was re-hashed.
    pub full: bool,
}

/// The state of one checked blob.
enum Checked {
    Good,
    Absent,
    Removed,
}

impl Store {
    /// [`Store::scrub`], blocking.
    pub(super) fn scrub_blocking(&self, policy: VerifyOnStart) -> Result<ScrubReport, StoreError> {
        let unclean = self.inner.recovery.unclean_shutdown;
        let mut report = ScrubReport {
            policy,
            unclean,
            ..ScrubReport::default()
        };
        if !policy.should_scrub(unclean) {
            if unclean {
                tracing::warn!(
                    policy = policy.as_str(),
                    "not re-hashing the blobs after an unclean shutdown (store.verify_on_start); it stays pending"
                );
            }
            return Ok(report);
        }
        report.ran = true;
        tracing::info!(
            policy = policy.as_str(),
            unclean,
            "re-hashing the blobs of the current images"
        );
        let _guard = self.lock_index();
        let index = layout::read_index(&self.layout_dir())?;
        let entries = index.entries();

        // The roots first: a layer list is only trusted from a manifest that hashed right.
        let mut expected: BTreeMap<Digest, Option<u64>> = BTreeMap::new();
        let mut done: BTreeSet<Digest> = BTreeSet::new();
        for e in &entries {
            let d = &e.descriptor;
            let state = self.scrub_one(&d.digest, Some(d.size), &mut report)?;
            done.insert(d.digest);
            if let Some(ix) = e.source_index
                && done.insert(ix)
            {
                self.scrub_one(&ix, None, &mut report)?;
            }
            let refs = match state {
                Checked::Good => read_capped(&self.blob_path(&d.digest), MAX_MANIFEST_BYTES)
                    .ok()
                    .flatten()
                    .map(|bytes| classify_manifest(d, &bytes)),
                Checked::Absent | Checked::Removed => None,
            };
            match refs {
                Some(ManifestRefs::Blobs(blobs)) => {
                    for b in blobs {
                        expected.insert(b.digest, Some(b.size));
                    }
                }
                _ => report.full = true,
            }
        }
        if report.full {
            tracing::warn!("a current manifest is missing or unusable; re-hashing every blob");
            for d in self.blob_names()? {
                expected.entry(d).or_insert(None);
            }
        }
        for (d, size) in expected {
            if done.insert(d) {
                self.scrub_one(&d, size, &mut report)?;
            }
        }
        if !report.removed.is_empty() || !report.unreadable.is_empty() {
            sync_dir(&self.blobs_dir())?;
        }
        self.inner.lock.mark_clean();
        tracing::info!(
            checked = report.checked,
            bytes = report.bytes,
            removed = report.removed.len() + report.unreadable.len(),
            "start-up re-hash done"
        );
        Ok(report)
    }

    /// Check one blob: absent is fine (the pull fetches it); anything else than a regular
    /// file of the expected size hashing to its name is deleted and reported.
    fn scrub_one(
        &self,
        d: &Digest,
        size: Option<u64>,
        report: &mut ScrubReport,
    ) -> Result<Checked, StoreError> {
        let path = self.blob_path(d);
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Checked::Absent),
            Err(e) => return Err(io_err("stat", &path)(e)),
        };
        let len = meta.len();
        let problem = if !meta.is_file() {
            Some(Corruption::NotAFile)
        } else if let Some(expected) = size.filter(|s| *s != len) {
            Some(Corruption::SizeMismatch {
                expected,
                actual: len,
            })
        } else {
            let hashed = open_read(&path)
                .map_err(io_err("open", &path))
                .and_then(|mut f| hash_prefix(&mut f, len, &path));
            match hashed {
                Ok(h) => {
                    report.checked += 1;
                    report.bytes += len;
                    let actual = h.finish();
                    (actual != *d).then_some(Corruption::DigestMismatch { actual })
                }
                Err(e) => {
                    tracing::warn!(digest = %d, error = %crate::error_chain(&e), "stored blob cannot be read; deleting it so it is fetched again");
                    remove_tree_if_exists(&path)?;
                    report.unreadable.push(*d);
                    return Ok(Checked::Removed);
                }
            }
        };
        let Some(problem) = problem else {
            return Ok(Checked::Good);
        };
        tracing::warn!(digest = %d, path = %path.display(), ?problem, "stored blob is corrupt; deleting it so it is fetched again");
        remove_tree_if_exists(&path)?;
        report.removed.push(CorruptBlob {
            digest: *d,
            path,
            problem,
        });
        Ok(Checked::Removed)
    }

    /// Digests of the entries under `blobs/sha256` (misnamed entries are skipped).
    fn blob_names(&self) -> Result<Vec<Digest>, StoreError> {
        let dir = self.blobs_dir();
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("read directory", &dir))? {
            let entry = entry.map_err(io_err("read directory", &dir))?;
            if let Some(d) = entry
                .file_name()
                .to_str()
                .and_then(|n| Digest::parse(&format!("sha256:{n}")).ok())
            {
                out.push(d);
            }
        }
        Ok(out)
    }
}
