//! Garbage collection and the start-up size check of committed blobs: the IO shell around
//! the pure decisions in [`edgepull_core::gc`].
//!
//! Owns: walking the layout (reading `index.json`, the root manifests and the blob
//! directory), deleting the blobs [`unreferenced`] names, removing the partial downloads
//! that [`ingest_is_stale`] says nobody has written to for `store.ingest_max_age`, and the
//! start-up repair that deletes blobs whose length disagrees with the manifests that
//! reference them (they are fetched again).
//!
//! What is referenced: every entry of `index.json` — the current version of each ref and
//! the older versions kept for rollback — with its manifest, the index it was chosen from
//! (`io.edgepull.source-index`), and the manifest's config and layers; plus the digests the
//! caller protects (downloads in flight, whose blobs are committed before the image is
//! recorded).
//!
//! Must never: delete a blob while the references of some present manifest are unknown
//! (an unparseable or foreign entry blocks the whole collection); touch an ingest that is
//! open or protected; follow anything but validated digests into paths; run on an async
//! worker (the `Store` methods run these bodies on the blocking pool).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::fsio::{io_err, read_capped, remove_file_if_exists, sync_dir};
use super::{Store, StoreError, ingest, layout};
use edgepull_core::gc::{
    Children, GcBlocked, ManifestRefs, classify_manifest, ingest_is_stale, unreferenced,
};
use edgepull_core::oci::manifest::MAX_MANIFEST_BYTES;
use edgepull_core::oci::{Descriptor, Digest};

/// What [`Store::gc`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs deleted.
    pub deleted: Vec<Digest>,
    /// Their total size.
    pub freed_bytes: u64,
    /// Blobs kept.
    pub kept: usize,
    /// Partial downloads removed because nobody wrote to them for `ingest_max_age`.
    pub removed_ingests: Vec<Digest>,
    /// Set when blobs could not be collected (nothing was deleted).
    pub blocked: Option<GcBlocked>,
}

/// A blob deleted at start-up because its length disagreed with a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RepairedBlob {
    /// The blob.
    pub(crate) digest: Digest,
    /// The size a descriptor records.
    pub(crate) expected: u64,
    /// The length found (for a manifest whose content did not match its digest: its length).
    pub(crate) actual: u64,
}

/// What [`Store::repair`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RepairReport {
    /// Blobs deleted (they are fetched again by the next pull).
    pub(crate) deleted: Vec<RepairedBlob>,
    /// Older versions dropped from `index.json` because their manifest is gone.
    pub(crate) dropped_previous: Vec<Digest>,
}

/// Read and classify what the root manifest `entry` references. `Err` holds what to record
/// for it when its bytes cannot be read: absent ([`Children::Missing`]), too large or
/// unreadable ([`Children::Unknown`]).
fn read_refs(blobs_dir: &Path, entry: &Descriptor) -> Result<ManifestRefs, Children> {
    let path = blobs_dir.join(entry.digest.hex());
    match read_capped(&path, MAX_MANIFEST_BYTES) {
        Ok(Some(bytes)) => Ok(classify_manifest(entry, &bytes)),
        Ok(None) => Err(Children::Unknown(format!(
            "larger than {MAX_MANIFEST_BYTES} bytes"
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Children::Missing),
        Err(e) => Err(Children::Unknown(format!("cannot read {}: {e}", path.display()))),
    }
}

/// Committed blobs: digest → length. Misnamed entries are left alone (verify reports them).
fn present_blobs(blobs_dir: &Path) -> Result<BTreeMap<Digest, u64>, StoreError> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(blobs_dir).map_err(io_err("read directory", blobs_dir))? {
        let entry = entry.map_err(io_err("read directory", blobs_dir))?;
        let Some(digest) = entry
            .file_name()
            .to_str()
            .and_then(|n| Digest::parse(&format!("sha256:{n}")).ok())
        else {
            continue;
        };
        // Only feeds `freed_bytes`, a statistic: a blob that cannot be stat'ed counts 0.
        let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
        out.insert(digest, len);
    }
    Ok(out)
}

impl Store {
    /// [`Store::gc`], blocking.
    pub(super) fn gc_blocking(
        &self,
        protected: &BTreeSet<Digest>,
        ingest_max_age: Duration,
    ) -> Result<GcReport, StoreError> {
        let mut report = GcReport::default();
        let now = SystemTime::now();
        for ingest in self.ingests_blocking()? {
            if ingest.active || protected.contains(&ingest.digest) {
                continue;
            }
            let Some(written) = ingest::last_write(&self.ingest_dir(&ingest.digest)) else {
                continue;
            };
            if ingest_is_stale(written, now, ingest_max_age) {
                match self.abort_ingest_blocking(&ingest.digest) {
                    Ok(()) => {
                        tracing::info!(digest = %ingest.digest, checkpoint = ingest.checkpoint, "removed a stale partial download");
                        report.removed_ingests.push(ingest.digest);
                    }
                    // Opened since it was listed: it is being written to, so not stale.
                    Err(e) if e.is_busy() => {}
                    Err(e) => return Err(e),
                }
            }
        }

        let _guard = self.lock_index();
        let blobs_dir = self.blobs_dir();
        let index = layout::read_index(&self.layout_dir())?;
        let roots = index.gc_roots();
        let children: BTreeMap<Digest, Children> = index
            .manifests
            .iter()
            .map(|m| {
                let children = match read_refs(&blobs_dir, m) {
                    Ok(refs) => refs.into(),
                    Err(unreadable) => unreadable,
                };
                (m.digest, children)
            })
            .collect();
        let present = present_blobs(&blobs_dir)?;
        let names: BTreeSet<Digest> = present.keys().copied().collect();
        match unreferenced(&roots, &children, &names, protected) {
            Ok(garbage) => {
                for d in &garbage {
                    remove_file_if_exists(&blobs_dir.join(d.hex()))?;
                    report.freed_bytes += present.get(d).copied().unwrap_or(0);
                }
                if !garbage.is_empty() {
                    sync_dir(&blobs_dir)?;
                }
                report.kept = names.len() - garbage.len();
                report.deleted = garbage;
            }
            Err(blocked) => {
                tracing::warn!(manifest = %blocked.manifest, reason = %blocked.reason, "garbage collection skipped: the references of an index.json entry are unknown");
                report.kept = names.len();
                report.blocked = Some(blocked);
            }
        }
        Ok(report)
    }

    /// [`Store::repair`], blocking.
    pub(super) fn repair_blocking(&self) -> Result<RepairReport, StoreError> {
        let _guard = self.lock_index();
        let blobs_dir = self.blobs_dir();
        let mut index = layout::read_index(&self.layout_dir())?;
        let mut report = RepairReport::default();
        let mut delete = |digest: Digest, expected: u64, actual: u64| -> Result<(), StoreError> {
            tracing::warn!(%digest, expected, actual, "stored blob has the wrong size or content; deleting it so it is fetched again");
            remove_file_if_exists(&blobs_dir.join(digest.hex()))?;
            report.deleted.push(RepairedBlob {
                digest,
                expected,
                actual,
            });
            Ok(())
        };
        let mut sizes: BTreeMap<Digest, u64> = BTreeMap::new();
        for m in &index.manifests {
            let path = blobs_dir.join(m.digest.hex());
            // Absent: nothing to check (the next pull fetches it).
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.len() != m.size {
                delete(m.digest, m.size, meta.len())?;
                continue;
            }
            match read_refs(&blobs_dir, m) {
                Ok(ManifestRefs::Corrupt) => delete(m.digest, m.size, meta.len())?,
                Ok(ManifestRefs::Blobs(blobs)) => {
                    for d in blobs {
                        sizes.insert(d.digest, d.size);
                    }
                }
                // Not an image manifest, or unreadable: its blobs' sizes are unknown.
                Ok(ManifestRefs::Unknown(_)) | Err(_) => {}
            }
        }
        for (digest, expected) in sizes {
            let path = blobs_dir.join(digest.hex());
            // Absent: nothing to check (the next pull fetches it).
            if let Ok(meta) = fs::symlink_metadata(&path)
                && meta.len() != expected
            {
                delete(digest, expected, meta.len())?;
            }
        }
        if !report.deleted.is_empty() {
            sync_dir(&blobs_dir)?;
        }
        report.dropped_previous = index.drop_previous(|m| blobs_dir.join(m.digest.hex()).exists());
        if !report.dropped_previous.is_empty() {
            layout::write_index(&self.layout_dir(), &index, &self.inner.budget)?;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgepull_core::oci::ImageManifest;
    use std::fs::File;

    /// Store an image (config + layers + manifest) and return its manifest descriptor.
    async fn put_image(store: &Store, layers: &[&[u8]]) -> (Descriptor, Vec<Digest>) {
        use edgepull_core::oci::manifest::OCI_MANIFEST;
        let config = br#"{"architecture":"arm64","os":"linux"}"#;
        store.put_blob(&Digest::of(config), config).await.unwrap();
        let mut descs = Vec::new();
        for l in layers {
            store.put_blob(&Digest::of(l), l).await.unwrap();
            descs.push(Descriptor::new(
                "application/vnd.oci.image.layer.v1.tar",
                Digest::of(l),
                l.len() as u64,
            ));
        }
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.to_string()),
            config: Descriptor::new(
                "application/vnd.oci.image.config.v1+json",
                Digest::of(config),
                config.len() as u64,
            ),
            layers: descs,
        };
        let bytes = serde_json::to_vec(&manifest).unwrap();
        let md = Digest::of(&bytes);
        store.put_blob(&md, &bytes).await.unwrap();
        let blobs = manifest.blobs().map(|d| d.digest).collect();
        (Descriptor::new(OCI_MANIFEST, md, bytes.len() as u64), blobs)
    }

    #[tokio::test]
    async fn gc_keeps_current_and_previous_and_drops_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Duration::ZERO).await.unwrap();
        let (v1, b1) = put_image(&store, &[b"base", b"one"]).await;
        let (v2, b2) = put_image(&store, &[b"base", b"two"]).await;
        let (v3, b3) = put_image(&store, &[b"base", b"three"]).await;
        store.switch_image("app:stable", &v1, None, 1).await.unwrap();
        store.switch_image("app:stable", &v2, None, 1).await.unwrap();
        let sw = store.switch_image("app:stable", &v3, None, 1).await.unwrap();
        assert_eq!(sw.previous, Some(v2.digest));
        assert_eq!(sw.dropped, vec![v1.digest]);
        let stray = b"stray";
        store.put_blob(&Digest::of(stray), stray).await.unwrap();
        let protected: BTreeSet<Digest> = [Digest::of(b"in flight")].into();
        store
            .put_blob(&Digest::of(b"in flight"), b"in flight")
            .await
            .unwrap();

        let report = store.gc(&protected, Duration::from_secs(3600)).await.unwrap();
        let mut want = vec![v1.digest, Digest::of(b"one"), Digest::of(stray)];
        want.sort();
        assert_eq!(report.deleted, want);
        assert_eq!(report.blocked, None);
        for d in b2
            .iter()
            .chain(&b3)
            .chain([&v2.digest, &v3.digest, &Digest::of(b"in flight")])
        {
            assert!(store.blob_path(d).exists(), "{d} was collected");
        }
        assert!(!store.blob_path(&b1[2]).exists());
        assert_eq!(
            store.previous_images().await.unwrap()[0].descriptor.digest,
            v2.digest
        );
        // Idempotent.
        assert!(
            store
                .gc(&protected, Duration::from_secs(3600))
                .await
                .unwrap()
                .deleted
                .is_empty()
        );
    }

    #[tokio::test]
    async fn gc_removes_stale_ingests_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Duration::ZERO).await.unwrap();
        let (old, young) = (Digest::of(b"old"), Digest::of(b"young"));
        for d in [old, young] {
            let mut i = store.ingest(&d, 100, "x").await.unwrap();
            i.write(b"abc").await.unwrap();
            i.checkpoint().await.unwrap();
        }
        let past = SystemTime::now() - Duration::from_secs(7200);
        for f in ["data", "checkpoint", "meta.json"] {
            let file = File::options()
                .write(true)
                .open(store.ingest_dir(&old).join(f))
                .unwrap();
            file.set_modified(past).unwrap();
        }
        let report = store
            .gc(&BTreeSet::new(), Duration::from_secs(3600))
            .await
            .unwrap();
        assert_eq!(report.removed_ingests, vec![old]);
        let left: Vec<Digest> = store.ingests().await.unwrap().iter().map(|i| i.digest).collect();
        assert_eq!(left, vec![young]);
    }

    #[tokio::test]
    async fn repair_deletes_blobs_whose_size_disagrees_and_orphaned_previous_entries() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Duration::ZERO).await.unwrap();
        let (v1, _) = put_image(&store, &[b"layer-one"]).await;
        let (v2, b2) = put_image(&store, &[b"layer-two"]).await;
        store.switch_image("app:1", &v1, None, 1).await.unwrap();
        store.switch_image("app:1", &v2, None, 1).await.unwrap();
        // A torn layer of the current image and a lost manifest of the previous one.
        let layer = store.blob_path(&b2[1]);
        fs::remove_file(&layer).unwrap();
        fs::write(&layer, b"layer-t").unwrap();
        fs::remove_file(store.blob_path(&v1.digest)).unwrap();

        let report = store.repair().await.unwrap();
        assert_eq!(
            report.deleted,
            vec![RepairedBlob {
                digest: b2[1],
                expected: 9,
                actual: 7
            }]
        );
        assert_eq!(report.dropped_previous, vec![v1.digest]);
        assert!(!layer.exists());
        assert!(store.previous_images().await.unwrap().is_empty());
        assert_eq!(store.images().await.unwrap()[0].descriptor.digest, v2.digest);
        assert_eq!(store.repair().await.unwrap(), RepairReport::default());
    }
}
