//! Garbage collection and the start-up size check of committed blobs.
//!
//! Owns: deciding which blobs under `blobs/sha256` are still referenced (pure:
//! [`unreferenced`]), deleting the others, removing partial downloads that nobody has
//! written to for `store.ingest_max_age`, and the start-up repair that deletes blobs whose
//! length disagrees with the manifests that reference them (they are fetched again).
//!
//! What is referenced: every entry of `index.json` — the current version of each ref and
//! the older versions kept for rollback — with its manifest, the index it was chosen from
//! (`io.edgepull.source-index`), and the manifest's config and layers; plus the digests the
//! caller protects (downloads in flight, whose blobs are committed before the image is
//! recorded).
//!
//! Must never: delete a blob while the references of some present manifest are unknown
//! (an unparseable or foreign entry blocks the whole collection); touch an ingest that is
//! open or protected; follow anything but validated digests into paths.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::Read;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::fsio::{io_err, remove_file_if_exists, sync_dir};
use super::layout::{self, IndexFile};
use super::{Store, StoreError};
use edgepull_core::oci::manifest::{DOCKER_MANIFEST, MAX_MANIFEST_BYTES, OCI_MANIFEST};
use edgepull_core::oci::{Descriptor, Digest, ImageManifest};

/// One root of the reference graph: an `index.json` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcRoot {
    /// The manifest the entry names.
    pub manifest: Digest,
    /// The index it was chosen from, kept with it.
    pub source_index: Option<Digest>,
}

/// What the store could learn about a root manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Children {
    /// A stored image manifest: its config and layers.
    Blobs(Vec<Digest>),
    /// The manifest blob is absent (an image being repaired); it references nothing known.
    Missing,
    /// Present but not an image manifest edgepull can read: its references are unknown.
    Unknown(String),
}

/// Why a collection deleted nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcBlocked {
    /// The entry whose references are unknown.
    pub manifest: Digest,
    /// Why.
    pub reason: String,
}

/// The blobs of `present` that no root and no protected digest references, sorted.
/// `Err` when some root's references are unknown: then nothing may be deleted.
pub fn unreferenced(
    roots: &[GcRoot],
    children: &BTreeMap<Digest, Children>,
    present: &BTreeSet<Digest>,
    protected: &BTreeSet<Digest>,
) -> Result<Vec<Digest>, GcBlocked> {
    let mut keep: BTreeSet<Digest> = protected.clone();
    for root in roots {
        keep.insert(root.manifest);
        keep.extend(root.source_index);
        match children.get(&root.manifest) {
            Some(Children::Blobs(blobs)) => keep.extend(blobs.iter().copied()),
            Some(Children::Missing) => {}
            Some(Children::Unknown(reason)) => {
                return Err(GcBlocked {
                    manifest: root.manifest,
                    reason: reason.clone(),
                });
            }
            None => {
                return Err(GcBlocked {
                    manifest: root.manifest,
                    reason: "its references were not read".to_string(),
                });
            }
        }
    }
    Ok(present.difference(&keep).copied().collect())
}

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
pub struct RepairedBlob {
    /// The blob.
    pub digest: Digest,
    /// The size a descriptor records.
    pub expected: u64,
    /// The length found (for a manifest whose content did not match its digest: its length).
    pub actual: u64,
}

/// What [`Store::repair`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Blobs deleted (they are fetched again by the next pull).
    pub deleted: Vec<RepairedBlob>,
    /// Older versions dropped from `index.json` because their manifest is gone.
    pub dropped_previous: Vec<Digest>,
}

/// The roots of `index`: every entry, current or kept for rollback.
fn roots(index: &IndexFile) -> Vec<GcRoot> {
    index
        .manifests
        .iter()
        .map(|m| GcRoot {
            manifest: m.digest,
            source_index: m
                .annotations
                .get(layout::ANNOTATION_SOURCE_INDEX)
                .and_then(|s| Digest::parse(s).ok()),
        })
        .collect()
}

/// Read what a root manifest references.
fn read_children(blobs_dir: &Path, entry: &Descriptor) -> Children {
    let path = blobs_dir.join(entry.digest.hex());
    let bytes = match read_capped(&path, MAX_MANIFEST_BYTES) {
        Ok(Some(b)) => b,
        Ok(None) => return Children::Unknown(format!("larger than {MAX_MANIFEST_BYTES} bytes")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Children::Missing,
        Err(e) => return Children::Unknown(format!("cannot read {}: {e}", path.display())),
    };
    if Digest::of(&bytes) != entry.digest {
        return Children::Unknown(
            "its content does not match its digest (run `edgepull store verify`)".into(),
        );
    }
    if !matches!(entry.media_type.as_str(), OCI_MANIFEST | DOCKER_MANIFEST) {
        return Children::Unknown(format!(
            "media type {:?} is not an image manifest (an entry edgepull did not write?)",
            entry.media_type
        ));
    }
    match serde_json::from_slice::<ImageManifest>(&bytes) {
        Ok(m) => Children::Blobs(m.blobs().map(|d| d.digest).collect()),
        Err(e) => Children::Unknown(format!("not a valid image manifest: {e}")),
    }
}

fn read_capped(path: &Path, max: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::new();
    File::open(path)?.take(max + 1).read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= max).then_some(bytes))
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
        let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
        out.insert(digest, len);
    }
    Ok(out)
}

/// The newest modification time of an ingest's files.
fn last_write(dir: &Path) -> Option<SystemTime> {
    ["data", "checkpoint", "meta.json"]
        .iter()
        .filter_map(|f| fs::metadata(dir.join(f)).and_then(|m| m.modified()).ok())
        .max()
}

/// Whether an ingest last written at `last_write` is stale at `now`. A clock that went
/// backwards (a board without RTC) never makes an ingest stale.
pub fn ingest_is_stale(last_write: SystemTime, now: SystemTime, max_age: Duration) -> bool {
    now.duration_since(last_write).is_ok_and(|age| age > max_age)
}

impl Store {
    /// Delete the blobs no `index.json` entry (current or kept for rollback) references and
    /// that are not in `protected`, and the partial downloads not written to for
    /// `ingest_max_age` (except open or protected ones). Index updates wait meanwhile.
    ///
    /// Blocking: call from `spawn_blocking` when on the runtime.
    pub fn gc(&self, protected: &BTreeSet<Digest>, ingest_max_age: Duration) -> Result<GcReport, StoreError> {
        let mut report = GcReport::default();
        let now = SystemTime::now();
        for ingest in self.ingests()? {
            if ingest.active || protected.contains(&ingest.digest) {
                continue;
            }
            let Some(written) = last_write(&self.ingest_dir(&ingest.digest)) else {
                continue;
            };
            if ingest_is_stale(written, now, ingest_max_age) {
                match self.abort_ingest(&ingest.digest) {
                    Ok(()) => {
                        tracing::info!(digest = %ingest.digest, checkpoint = ingest.checkpoint, "removed a stale partial download");
                        report.removed_ingests.push(ingest.digest);
                    }
                    Err(e) if e.is_busy() => {}
                    Err(e) => return Err(e),
                }
            }
        }

        let _guard = self.lock_index();
        let blobs_dir = self.blobs_dir();
        let index = layout::read_index(&self.layout_dir())?;
        let roots = roots(&index);
        let children: BTreeMap<Digest, Children> = index
            .manifests
            .iter()
            .map(|m| (m.digest, read_children(&blobs_dir, m)))
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

    /// Start-up repair: delete committed blobs whose length differs from the size recorded
    /// for them in `index.json` or in a stored manifest, and manifests whose content does
    /// not match their digest; then drop older versions whose manifest is gone. The next
    /// pull fetches what is missing. Re-hashing every layer is [`Store::verify`]'s job.
    ///
    /// Blocking: call from `spawn_blocking` when on the runtime.
    pub fn repair(&self) -> Result<RepairReport, StoreError> {
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
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.len() != m.size {
                delete(m.digest, m.size, meta.len())?;
                continue;
            }
            match read_children(&blobs_dir, m) {
                Children::Unknown(reason) if reason.contains("does not match its digest") => {
                    delete(m.digest, m.size, meta.len())?;
                }
                Children::Blobs(_) => {
                    if let Ok(Some(bytes)) = read_capped(&path, MAX_MANIFEST_BYTES)
                        && let Ok(parsed) = serde_json::from_slice::<ImageManifest>(&bytes)
                    {
                        for d in parsed.blobs() {
                            sizes.insert(d.digest, d.size);
                        }
                    }
                }
                _ => {}
            }
        }
        for (digest, expected) in sizes {
            let path = blobs_dir.join(digest.hex());
            if let Ok(meta) = fs::symlink_metadata(&path)
                && meta.len() != expected
            {
                delete(digest, expected, meta.len())?;
            }
        }
        if !report.deleted.is_empty() {
            sync_dir(&blobs_dir)?;
        }
        let before = index.manifests.len();
        index.manifests.retain(|m| {
            let gone = !m.annotations.contains_key(layout::ANNOTATION_REF_NAME)
                && m.annotations.contains_key(layout::ANNOTATION_PREVIOUS_OF)
                && !blobs_dir.join(m.digest.hex()).exists();
            if gone {
                report.dropped_previous.push(m.digest);
            }
            !gone
        });
        if index.manifests.len() != before {
            layout::write_index(&self.layout_dir(), &index)?;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> Digest {
        Digest::of(&[n])
    }

    fn set(v: &[u8]) -> BTreeSet<Digest> {
        v.iter().map(|n| d(*n)).collect()
    }

    fn sorted(v: &[u8]) -> Vec<Digest> {
        set(v).into_iter().collect()
    }

    #[test]
    fn unreferenced_table() {
        let root = |m: u8, idx: Option<u8>| GcRoot {
            manifest: d(m),
            source_index: idx.map(d),
        };
        let blobs = |v: &[u8]| Children::Blobs(v.iter().map(|n| d(*n)).collect());
        // (roots, children, present, protected, expected)
        type Case = (
            Vec<GcRoot>,
            Vec<(u8, Children)>,
            Vec<u8>,
            Vec<u8>,
            Result<Vec<Digest>, u8>,
        );
        let cases: Vec<Case> = vec![
            // Empty index: everything goes.
            (vec![], vec![], vec![1, 2], vec![], Ok(sorted(&[1, 2]))),
            // One image: manifest 10 with blobs 1, 2; blob 3 is garbage.
            (
                vec![root(10, None)],
                vec![(10, blobs(&[1, 2]))],
                vec![10, 1, 2, 3],
                vec![],
                Ok(sorted(&[3])),
            ),
            // Current + previous share a base layer; the source index is kept.
            (
                vec![root(10, Some(20)), root(11, Some(21))],
                vec![(10, blobs(&[1, 2])), (11, blobs(&[1, 3]))],
                vec![10, 11, 20, 21, 1, 2, 3, 4, 22],
                vec![],
                Ok(sorted(&[4, 22])),
            ),
            // Protected (in-flight) blobs survive.
            (
                vec![root(10, None)],
                vec![(10, blobs(&[1]))],
                vec![10, 1, 5, 6],
                vec![5],
                Ok(sorted(&[6])),
            ),
            // A missing manifest references nothing known.
            (
                vec![root(10, None)],
                vec![(10, Children::Missing)],
                vec![1],
                vec![],
                Ok(sorted(&[1])),
            ),
            // Unknown references block everything.
            (
                vec![root(10, None), root(11, None)],
                vec![(10, blobs(&[1])), (11, Children::Unknown("index".into()))],
                vec![10, 11, 1, 2],
                vec![],
                Err(11),
            ),
            // Nothing present: nothing to delete.
            (
                vec![root(10, None)],
                vec![(10, blobs(&[1]))],
                vec![],
                vec![],
                Ok(vec![]),
            ),
        ];
        for (i, (roots, children, present, protected, want)) in cases.into_iter().enumerate() {
            let children: BTreeMap<Digest, Children> = children.into_iter().map(|(m, c)| (d(m), c)).collect();
            let got = unreferenced(&roots, &children, &set(&present), &set(&protected));
            match want {
                Ok(w) => assert_eq!(got, Ok(w), "case {i}"),
                Err(m) => assert_eq!(got.map_err(|b| b.manifest), Err(d(m)), "case {i}"),
            }
        }
    }

    #[test]
    fn stale_ingest_table() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let h = Duration::from_secs(3600);
        let cases = [
            (t0, t0, h, false),
            (t0, t0 + h, h, false),
            (t0, t0 + h + Duration::from_secs(1), h, true),
            // The clock went back: never stale.
            (t0 + h * 10, t0, h, false),
        ];
        for (written, now, max, want) in cases {
            assert_eq!(ingest_is_stale(written, now, max), want, "{written:?} {now:?}");
        }
    }

    /// Store an image (config + layers + manifest) and return its manifest descriptor.
    fn put_image(store: &Store, layers: &[&[u8]]) -> (Descriptor, Vec<Digest>) {
        use edgepull_core::oci::manifest::OCI_MANIFEST;
        let config = br#"{"architecture":"arm64","os":"linux"}"#;
        store.put_blob(&Digest::of(config), config).unwrap();
        let mut descs = Vec::new();
        for l in layers {
            store.put_blob(&Digest::of(l), l).unwrap();
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
        store.put_blob(&md, &bytes).unwrap();
        let blobs = manifest.blobs().map(|d| d.digest).collect();
        (Descriptor::new(OCI_MANIFEST, md, bytes.len() as u64), blobs)
    }

    #[test]
    fn gc_keeps_current_and_previous_and_drops_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Duration::ZERO).unwrap();
        let (v1, b1) = put_image(&store, &[b"base", b"one"]);
        let (v2, b2) = put_image(&store, &[b"base", b"two"]);
        let (v3, b3) = put_image(&store, &[b"base", b"three"]);
        store.switch_image("app:stable", &v1, None, 1).unwrap();
        store.switch_image("app:stable", &v2, None, 1).unwrap();
        let sw = store.switch_image("app:stable", &v3, None, 1).unwrap();
        assert_eq!(sw.previous, Some(v2.digest));
        assert_eq!(sw.dropped, vec![v1.digest]);
        let stray = b"stray";
        store.put_blob(&Digest::of(stray), stray).unwrap();
        let protected: BTreeSet<Digest> = [Digest::of(b"in flight")].into();
        store.put_blob(&Digest::of(b"in flight"), b"in flight").unwrap();

        let report = store.gc(&protected, Duration::from_secs(3600)).unwrap();
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
        assert_eq!(store.previous_images().unwrap()[0].descriptor.digest, v2.digest);
        // Idempotent.
        assert!(
            store
                .gc(&protected, Duration::from_secs(3600))
                .unwrap()
                .deleted
                .is_empty()
        );
    }

    #[test]
    fn gc_removes_stale_ingests_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Duration::ZERO).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (old, young) = (Digest::of(b"old"), Digest::of(b"young"));
        rt.block_on(async {
            for d in [old, young] {
                let mut i = store.ingest(&d, 100, "x").await.unwrap();
                i.write(b"abc").await.unwrap();
                i.checkpoint().await.unwrap();
            }
        });
        let past = SystemTime::now() - Duration::from_secs(7200);
        for f in ["data", "checkpoint", "meta.json"] {
            let file = File::options()
                .write(true)
                .open(store.ingest_dir(&old).join(f))
                .unwrap();
            file.set_modified(past).unwrap();
        }
        let report = store.gc(&BTreeSet::new(), Duration::from_secs(3600)).unwrap();
        assert_eq!(report.removed_ingests, vec![old]);
        let left: Vec<Digest> = store.ingests().unwrap().iter().map(|i| i.digest).collect();
        assert_eq!(left, vec![young]);
    }

    #[test]
    fn repair_deletes_blobs_whose_size_disagrees_and_orphaned_previous_entries() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Duration::ZERO).unwrap();
        let (v1, _) = put_image(&store, &[b"layer-one"]);
        let (v2, b2) = put_image(&store, &[b"layer-two"]);
        store.switch_image("app:1", &v1, None, 1).unwrap();
        store.switch_image("app:1", &v2, None, 1).unwrap();
        // A torn layer of the current image and a lost manifest of the previous one.
        let layer = store.blob_path(&b2[1]);
        fs::remove_file(&layer).unwrap();
        fs::write(&layer, b"layer-t").unwrap();
        fs::remove_file(store.blob_path(&v1.digest)).unwrap();

        let report = store.repair().unwrap();
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
        assert!(store.previous_images().unwrap().is_empty());
        assert_eq!(store.images().unwrap()[0].descriptor.digest, v2.digest);
        assert_eq!(store.repair().unwrap(), RepairReport::default());
    }
}
