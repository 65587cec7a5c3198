//! Garbage-collection decisions of the content store, without the IO.
//!
//! Owns: which stored blobs no root of the reference graph reaches ([`unreferenced`]), what
//! the bytes of a stored root manifest reference ([`classify_manifest`]), and when a partial
//! download is stale ([`ingest_is_stale`]). The store's shell walks the layout, reads the
//! files, passes the results and the current time in here, and deletes what these
//! functions name.
//!
//! Must never: do IO or read a clock (time is passed in); declare a blob unreferenced while
//! the references of some root are unknown (the whole collection is then blocked, see
//! [`GcBlocked`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use crate::oci::manifest::{DOCKER_MANIFEST, OCI_MANIFEST};
use crate::oci::{Descriptor, Digest, ImageManifest};

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

/// What the stored bytes of a root manifest reference ([`classify_manifest`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestRefs {
    /// An image manifest: its config and layers, with the sizes it records for them.
    Blobs(Vec<Descriptor>),
    /// The bytes do not hash to the entry's digest: the stored blob is damaged.
    Corrupt,
    /// Intact, but not an image manifest edgepull can read: its references are unknown.
    Unknown(String),
}

impl From<ManifestRefs> for Children {
    fn from(refs: ManifestRefs) -> Self {
        match refs {
            ManifestRefs::Blobs(blobs) => Children::Blobs(blobs.into_iter().map(|d| d.digest).collect()),
            ManifestRefs::Corrupt => Children::Unknown(
                "its content does not match its digest (run `edgepull store verify`)".into(),
            ),
            ManifestRefs::Unknown(reason) => Children::Unknown(reason),
        }
    }
}

/// Classify `bytes`, the stored content of the index entry `entry`: first the digest (a
/// damaged blob is [`ManifestRefs::Corrupt`] whatever its type), then the media type (only
/// OCI and Docker image manifests have known references), then the JSON.
pub fn classify_manifest(entry: &Descriptor, bytes: &[u8]) -> ManifestRefs {
    if Digest::of(bytes) != entry.digest {
        return ManifestRefs::Corrupt;
    }
    if !matches!(entry.media_type.as_str(), OCI_MANIFEST | DOCKER_MANIFEST) {
        return ManifestRefs::Unknown(format!(
            "media type {:?} is not an image manifest (an entry edgepull did not write?)",
            entry.media_type
        ));
    }
    match serde_json::from_slice::<ImageManifest>(bytes) {
        Ok(m) => ManifestRefs::Blobs(m.blobs().cloned().collect()),
        Err(e) => ManifestRefs::Unknown(format!("not a valid image manifest: {e}")),
    }
}

/// Whether an ingest last written at `last_write` is stale at `now`. A clock that went
/// backwards (a board without RTC) never makes an ingest stale.
pub fn ingest_is_stale(last_write: SystemTime, now: SystemTime, max_age: Duration) -> bool {
    now.duration_since(last_write).is_ok_and(|age| age > max_age)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::manifest::OCI_INDEX;

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
    fn unread_root_blocks_collection() {
        let roots = [GcRoot {
            manifest: d(10),
            source_index: None,
        }];
        let got = unreferenced(&roots, &BTreeMap::new(), &set(&[1]), &BTreeSet::new());
        assert_eq!(
            got,
            Err(GcBlocked {
                manifest: d(10),
                reason: "its references were not read".into()
            })
        );
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

    #[test]
    fn classify_manifest_table() {
        let layer = Descriptor::new("application/vnd.oci.image.layer.v1.tar", d(1), 7);
        let config = Descriptor::new("application/vnd.oci.image.config.v1+json", d(2), 3);
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.to_string()),
            config: config.clone(),
            layers: vec![layer.clone()],
        };
        let good = serde_json::to_vec(&manifest).unwrap();
        let entry = |media_type: &str, bytes: &[u8]| {
            Descriptor::new(media_type, Digest::of(bytes), bytes.len() as u64)
        };
        let not_json = b"{not json".as_slice();
        // (entry, stored bytes, expected)
        let cases: Vec<(Descriptor, &[u8], ManifestRefs)> = vec![
            (
                entry(OCI_MANIFEST, &good),
                &good,
                ManifestRefs::Blobs(vec![config.clone(), layer.clone()]),
            ),
            (
                entry(DOCKER_MANIFEST, &good),
                &good,
                ManifestRefs::Blobs(vec![config, layer]),
            ),
            // Damaged bytes: corrupt, whatever the media type says.
            (entry(OCI_MANIFEST, b"other"), &good, ManifestRefs::Corrupt),
            (entry(OCI_INDEX, b"other"), &good, ManifestRefs::Corrupt),
            (
                entry(OCI_INDEX, &good),
                &good,
                ManifestRefs::Unknown(format!(
                    "media type {OCI_INDEX:?} is not an image manifest (an entry edgepull did not write?)"
                )),
            ),
        ];
        for (i, (entry, bytes, want)) in cases.into_iter().enumerate() {
            assert_eq!(classify_manifest(&entry, bytes), want, "case {i}");
        }
        let ManifestRefs::Unknown(reason) = classify_manifest(&entry(OCI_MANIFEST, not_json), not_json)
        else {
            panic!("invalid JSON must be unknown")
        };
        assert!(reason.starts_with("not a valid image manifest: "), "{reason}");
    }

    #[test]
    fn refs_become_children() {
        let blob = Descriptor::new(OCI_MANIFEST, d(1), 1);
        assert_eq!(
            Children::from(ManifestRefs::Blobs(vec![blob])),
            Children::Blobs(vec![d(1)])
        );
        assert_eq!(
            Children::from(ManifestRefs::Corrupt),
            Children::Unknown("its content does not match its digest (run `edgepull store verify`)".into())
        );
        assert_eq!(
            Children::from(ManifestRefs::Unknown("x".into())),
            Children::Unknown("x".into())
        );
    }
}
