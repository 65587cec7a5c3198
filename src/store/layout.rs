//! The OCI image layout under `root/oci`: the `oci-layout` marker, `index.json`, and
//! `blobs/sha256/<hex>`.
//!
//! Owns: reading, validating and atomically rewriting `index.json` (one entry per ref name,
//! annotated with `org.opencontainers.image.ref.name`), and the layout's start-up checks.
//! Must never write `index.json` in place (always temp + fsync + rename + fsync dir), never
//! add an entry for a manifest that is not committed, and never persist descriptor `urls`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use super::StoreError;
use super::fsio::{io_err, remove_file_if_exists, sync_dir, write_atomic};
use edgepull_core::oci::manifest::OCI_INDEX;
use edgepull_core::oci::{Descriptor, Digest};

/// Name of the layout marker file.
pub const OCI_LAYOUT_FILE: &str = "oci-layout";
/// The only layout version written and accepted.
pub(super) const IMAGE_LAYOUT_VERSION: &str = "1.0.0";
/// Name of the layout's index.
pub const INDEX_FILE: &str = "index.json";
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
pub const ANNOTATION_PREVIOUS_OF: &str = "io.edgepull.previous-of";
/// Annotation on an older version: 1 for the most recent previous version, 2 for the one
/// before, and so on.
pub const ANNOTATION_PREVIOUS_RANK: &str = "io.edgepull.previous-rank";

/// One image recorded in `index.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageEntry {
    /// The `org.opencontainers.image.ref.name` annotation.
    pub ref_name: String,
    /// The manifest descriptor as stored (annotations included).
    pub descriptor: Descriptor,
    /// The index the manifest was selected from, when the image came from an index.
    pub source_index: Option<Digest>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LayoutMarker {
    image_layout_version: String,
}

/// An older version of an image kept for rollback (see [`ANNOTATION_PREVIOUS_OF`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousEntry {
    /// The ref name this version was current under.
    pub ref_name: String,
    /// 1 for the most recent previous version.
    pub rank: u32,
    /// The manifest descriptor as stored.
    pub descriptor: Descriptor,
    /// The index the manifest was selected from, if any.
    pub source_index: Option<Digest>,
}

/// What [`IndexFile::switch`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Switch {
    /// The digest that was current before, when it differs from the new one.
    pub previous: Option<Digest>,
    /// False when the ref already pointed at this manifest (only annotations refreshed).
    pub changed: bool,
    /// Older versions that fell off the end of `keep_previous` (no longer referenced).
    pub dropped: Vec<Digest>,
}

/// `index.json` as stored. Unknown top-level keys are kept when rewriting.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct IndexFile {
    #[serde(deserialize_with = "schema_version_2")]
    schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    #[serde(default)]
    pub(crate) manifests: Vec<Descriptor>,
    #[serde(flatten)]
    other: serde_json::Map<String, serde_json::Value>,
}

fn schema_version_2<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = u32::deserialize(d)?;
    if v == 2 {
        Ok(v)
    } else {
        Err(serde::de::Error::custom(format!(
            "schemaVersion is {v}; expected 2"
        )))
    }
}

impl IndexFile {
    fn empty() -> Self {
        Self {
            schema_version: 2,
            media_type: Some(OCI_INDEX.to_string()),
            manifests: Vec::new(),
            other: serde_json::Map::new(),
        }
    }

    /// Add the entry for `ref_name`, replacing (in place) any entry with that name.
    fn upsert(&mut self, ref_name: &str, manifest: &Descriptor, source_index: Option<&Digest>) {
        let mut entry = manifest.clone();
        entry.urls.clear();
        entry
            .annotations
            .insert(ANNOTATION_REF_NAME.to_string(), ref_name.to_string());
        match source_index {
            Some(d) => {
                entry
                    .annotations
                    .insert(ANNOTATION_SOURCE_INDEX.to_string(), d.to_string());
            }
            None => {
                entry.annotations.remove(ANNOTATION_SOURCE_INDEX);
            }
        }
        match self
            .manifests
            .iter()
            .position(|m| ref_name_of(m) == Some(ref_name))
        {
            Some(i) => {
                self.manifests[i] = entry;
                // Drop any further duplicates a hand edit may have left.
                let mut seen = false;
                self.manifests.retain(|m| {
                    if ref_name_of(m) != Some(ref_name) {
                        return true;
                    }
                    let keep = !seen;
                    seen = true;
                    keep
                });
            }
            None => self.manifests.push(entry),
        }
    }

    /// Remove the entry for `ref_name` and the older versions kept for it; whether a
    /// current entry existed.
    fn remove(&mut self, ref_name: &str) -> bool {
        let before = self
            .manifests
            .iter()
            .filter(|m| ref_name_of(m) == Some(ref_name))
            .count();
        self.manifests
            .retain(|m| ref_name_of(m) != Some(ref_name) && previous_of(m) != Some(ref_name));
        before > 0
    }

    /// Make `manifest` the current version of `ref_name` in one step, keeping up to `keep`
    /// older versions for rollback: the version that was current becomes previous rank 1,
    /// the older ones move down a rank, and the ones beyond `keep` are dropped. A version
    /// that becomes current again (a rollback in the registry) leaves the previous list.
    /// Entries of other refs keep their place; the older versions of `ref_name` follow its
    /// current entry.
    pub(crate) fn switch(
        &mut self,
        ref_name: &str,
        manifest: &Descriptor,
        source_index: Option<&Digest>,
        keep: u32,
    ) -> Switch {
        let current_pos = self
            .manifests
            .iter()
            .position(|m| ref_name_of(m) == Some(ref_name));
        let old_current = current_pos.map(|i| self.manifests[i].clone());
        if old_current.as_ref().is_some_and(|c| c.digest == manifest.digest) {
            self.upsert(ref_name, manifest, source_index);
            return Switch::default();
        }
        let mut older: Vec<Descriptor> = self
            .manifests
            .iter()
            .filter(|m| previous_of(m) == Some(ref_name))
            .cloned()
            .collect();
        older.sort_by_key(previous_rank);
        let mut chain: Vec<Descriptor> = Vec::new();
        for mut d in old_current.iter().cloned().chain(older) {
            if d.digest == manifest.digest || chain.iter().any(|c| c.digest == d.digest) {
                continue;
            }
            d.annotations.remove(ANNOTATION_REF_NAME);
            d.annotations
                .insert(ANNOTATION_PREVIOUS_OF.to_string(), ref_name.to_string());
            chain.push(d);
        }
        let keep = usize::try_from(keep).unwrap_or(usize::MAX);
        let dropped: Vec<Digest> = chain.iter().skip(keep).map(|d| d.digest).collect();
        chain.truncate(keep);
        for (i, d) in chain.iter_mut().enumerate() {
            d.annotations
                .insert(ANNOTATION_PREVIOUS_RANK.to_string(), (i + 1).to_string());
        }

        let mut current = manifest.clone();
        current.urls.clear();
        current.annotations.remove(ANNOTATION_PREVIOUS_OF);
        current.annotations.remove(ANNOTATION_PREVIOUS_RANK);
        current
            .annotations
            .insert(ANNOTATION_REF_NAME.to_string(), ref_name.to_string());
        match source_index {
            Some(d) => {
                current
                    .annotations
                    .insert(ANNOTATION_SOURCE_INDEX.to_string(), d.to_string());
            }
            None => {
                current.annotations.remove(ANNOTATION_SOURCE_INDEX);
            }
        }

        let mut out = Vec::with_capacity(self.manifests.len() + 1);
        let mut placed = false;
        for m in self.manifests.drain(..) {
            if previous_of(&m) == Some(ref_name) {
                continue;
            }
            if ref_name_of(&m) == Some(ref_name) {
                if !placed {
                    out.push(current.clone());
                    out.append(&mut chain);
                    placed = true;
                }
                continue;
            }
            out.push(m);
        }
        if !placed {
            out.push(current);
            out.append(&mut chain);
        }
        self.manifests = out;
        Switch {
            previous: old_current.map(|c| c.digest),
            changed: true,
            dropped,
        }
    }

    /// The older versions kept for rollback, in file order.
    pub(crate) fn previous_entries(&self) -> Vec<PreviousEntry> {
        self.manifests
            .iter()
            .filter_map(|m| {
                Some(PreviousEntry {
                    ref_name: previous_of(m)?.to_string(),
                    rank: previous_rank(m),
                    descriptor: m.clone(),
                    source_index: m
                        .annotations
                        .get(ANNOTATION_SOURCE_INDEX)
                        .and_then(|s| Digest::parse(s).ok()),
                })
            })
            .collect()
    }

    /// The named entries, in file order. Entries without a ref name are skipped.
    pub(crate) fn entries(&self) -> Vec<ImageEntry> {
        self.manifests
            .iter()
            .filter_map(|m| {
                let ref_name = ref_name_of(m)?.to_string();
                let source_index = m
                    .annotations
                    .get(ANNOTATION_SOURCE_INDEX)
                    .and_then(|s| Digest::parse(s).ok());
                Some(ImageEntry {
                    ref_name,
                    descriptor: m.clone(),
                    source_index,
                })
            })
            .collect()
    }
}

fn ref_name_of(d: &Descriptor) -> Option<&str> {
    d.annotations.get(ANNOTATION_REF_NAME).map(String::as_str)
}

/// The ref an older version was kept for (never set on a named entry).
fn previous_of(d: &Descriptor) -> Option<&str> {
    if d.annotations.contains_key(ANNOTATION_REF_NAME) {
        return None;
    }
    d.annotations.get(ANNOTATION_PREVIOUS_OF).map(String::as_str)
}

/// The rank of an older version; unparseable ranks sort last.
fn previous_rank(d: &Descriptor) -> u32 {
    d.annotations
        .get(ANNOTATION_PREVIOUS_RANK)
        .and_then(|r| r.parse().ok())
        .unwrap_or(u32::MAX)
}

/// Check `ref_name` against the OCI image-layout grammar for `org.opencontainers.image.ref.name`:
/// `component ("/" component)*`, `component ::= alphanum (separator alphanum)*`,
/// `alphanum ::= [A-Za-z0-9]+`, `separator ::= [-._:@+] | "--"`.
pub fn validate_ref_name(ref_name: &str) -> Result<(), StoreError> {
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

/// Create `oci_dir/blobs/sha256`, and `oci-layout` and an empty `index.json` when missing;
/// check both when present. Caller holds the store lock.
pub(crate) fn ensure(oci_dir: &Path) -> Result<(), StoreError> {
    let blobs = oci_dir.join("blobs").join("sha256");
    fs::create_dir_all(&blobs).map_err(io_err("create directory", &blobs))?;
    sync_dir(oci_dir)?;
    sync_dir(&oci_dir.join("blobs"))?;

    let marker = oci_dir.join(OCI_LAYOUT_FILE);
    match fs::read(&marker) {
        Ok(bytes) => {
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
            write_atomic(oci_dir, OCI_LAYOUT_FILE, LAYOUT_TMP, &body)?;
        }
        Err(e) => return Err(io_err("read", &marker)(e)),
    }

    let index = oci_dir.join(INDEX_FILE);
    if index.exists() {
        read_index(oci_dir)?;
    } else {
        write_index(oci_dir, &IndexFile::empty())?;
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

/// Read and validate `oci_dir/index.json`.
pub(crate) fn read_index(oci_dir: &Path) -> Result<IndexFile, StoreError> {
    let path = oci_dir.join(INDEX_FILE);
    let bytes = fs::read(&path).map_err(io_err("read", &path))?;
    serde_json::from_slice(&bytes).map_err(|source| StoreError::CorruptIndex { path, source })
}

pub(crate) fn write_index(oci_dir: &Path, index: &IndexFile) -> Result<(), StoreError> {
    let path = oci_dir.join(INDEX_FILE);
    let body = encode(index, &path)?;
    write_atomic(oci_dir, INDEX_FILE, INDEX_TMP, &body)?;
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
) -> Result<(), StoreError> {
    let mut index = read_index(oci_dir)?;
    index.upsert(ref_name, manifest, source_index);
    write_index(oci_dir, &index)
}

/// Read-modify-write `index.json` to switch `ref_name` (see [`IndexFile::switch`]). Caller
/// serializes index updates.
pub(crate) fn switch_image(
    oci_dir: &Path,
    ref_name: &str,
    manifest: &Descriptor,
    source_index: Option<&Digest>,
    keep: u32,
) -> Result<Switch, StoreError> {
    let mut index = read_index(oci_dir)?;
    let switch = index.switch(ref_name, manifest, source_index, keep);
    write_index(oci_dir, &index)?;
    Ok(switch)
}

/// Read-modify-write `index.json` to drop `ref_name`. Caller serializes index updates.
pub(crate) fn remove_image(oci_dir: &Path, ref_name: &str) -> Result<bool, StoreError> {
    let mut index = read_index(oci_dir)?;
    let removed = index.remove(ref_name);
    if removed {
        write_index(oci_dir, &index)?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgepull_core::oci::manifest::OCI_MANIFEST;

    #[test]
    fn ref_name_grammar() {
        for ok in [
            "latest",
            "contoso.azurecr.io/app:1.0",
            "localhost:5000/a/b@sha256:0123abcd",
            "a--b",
            "v1.2+build",
        ] {
            validate_ref_name(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "", "/a", "a/", "a//b", "-a", "a-", "a..b", "a---b", "a b", "a\nb", "ä", "a/../b",
        ] {
            assert!(
                matches!(validate_ref_name(bad), Err(StoreError::InvalidRefName { .. })),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn upsert_replaces_by_name_and_sets_annotations() {
        let mut idx = IndexFile::empty();
        let mut m1 = Descriptor::new(OCI_MANIFEST, Digest::of(b"1"), 1);
        m1.urls.push("https://elsewhere.example/x".into());
        m1.annotations
            .insert(ANNOTATION_SOURCE_INDEX.into(), "stale".into());
        let m2 = Descriptor::new(OCI_MANIFEST, Digest::of(b"2"), 2);
        let ix = Digest::of(b"index");
        idx.upsert("a", &m1, None);
        idx.upsert("b", &m2, Some(&ix));
        idx.upsert("a", &m2, Some(&ix));
        let e = idx.entries();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].ref_name, "a");
        assert_eq!(e[0].descriptor.digest, m2.digest);
        assert_eq!(e[0].source_index, Some(ix));
        assert_eq!(e[1].ref_name, "b");
        idx.upsert("b", &m1, None);
        let e = idx.entries();
        assert_eq!(e[1].source_index, None);
        assert!(e[1].descriptor.urls.is_empty(), "urls must not be persisted");
        assert!(!e[1].descriptor.annotations.contains_key(ANNOTATION_SOURCE_INDEX));
        assert!(idx.remove("a"));
        assert!(!idx.remove("a"));
        assert_eq!(idx.entries().len(), 1);
    }

    /// (ref name, previous-of, previous-rank, digest) of one entry.
    type Row = (Option<String>, Option<String>, Option<String>, Digest);

    fn digests(idx: &IndexFile) -> Vec<Row> {
        idx.manifests
            .iter()
            .map(|m| {
                (
                    ref_name_of(m).map(str::to_string),
                    m.annotations.get(ANNOTATION_PREVIOUS_OF).cloned(),
                    m.annotations.get(ANNOTATION_PREVIOUS_RANK).cloned(),
                    m.digest,
                )
            })
            .collect()
    }

    #[test]
    fn switch_rotates_previous_versions_table() {
        let m = |n: u8| Descriptor::new(OCI_MANIFEST, Digest::of(&[n]), 10);
        let d = |n: u8| Digest::of(&[n]);
        let cur = |r: &str, n: u8| (Some(r.to_string()), None, None, d(n));
        let prev = |r: &str, rank: u32, n: u8| (None, Some(r.to_string()), Some(rank.to_string()), d(n));
        // (steps: (ref, manifest, keep)), expected layout, expected last Switch
        struct Case {
            steps: Vec<(&'static str, u8, u32)>,
            want: Vec<Row>,
            last: Switch,
        }
        let cases = vec![
            Case {
                steps: vec![("a", 1, 1)],
                want: vec![cur("a", 1)],
                last: Switch {
                    previous: None,
                    changed: true,
                    dropped: vec![],
                },
            },
            Case {
                steps: vec![("a", 1, 1), ("a", 2, 1)],
                want: vec![cur("a", 2), prev("a", 1, 1)],
                last: Switch {
                    previous: Some(d(1)),
                    changed: true,
                    dropped: vec![],
                },
            },
            Case {
                steps: vec![("a", 1, 1), ("a", 2, 1), ("a", 3, 1)],
                want: vec![cur("a", 3), prev("a", 1, 2)],
                last: Switch {
                    previous: Some(d(2)),
                    changed: true,
                    dropped: vec![d(1)],
                },
            },
            Case {
                steps: vec![("a", 1, 2), ("a", 2, 2), ("a", 3, 2)],
                want: vec![cur("a", 3), prev("a", 1, 2), prev("a", 2, 1)],
                last: Switch {
                    previous: Some(d(2)),
                    changed: true,
                    dropped: vec![],
                },
            },
            // keep 0: no rollback copy.
            Case {
                steps: vec![("a", 1, 0), ("a", 2, 0)],
                want: vec![cur("a", 2)],
                last: Switch {
                    previous: Some(d(1)),
                    changed: true,
                    dropped: vec![d(1)],
                },
            },
            // Same digest again: nothing rotates.
            Case {
                steps: vec![("a", 1, 1), ("a", 2, 1), ("a", 2, 1)],
                want: vec![cur("a", 2), prev("a", 1, 1)],
                last: Switch::default(),
            },
            // Rollback in the registry: 1 → 2 → 1 keeps 2 as previous, not 1 twice.
            Case {
                steps: vec![("a", 1, 2), ("a", 2, 2), ("a", 1, 2)],
                want: vec![cur("a", 1), prev("a", 1, 2)],
                last: Switch {
                    previous: Some(d(2)),
                    changed: true,
                    dropped: vec![],
                },
            },
            // Other refs keep their place and their own previous versions.
            Case {
                steps: vec![("a", 1, 1), ("b", 5, 1), ("a", 2, 1), ("b", 6, 1)],
                want: vec![cur("a", 2), prev("a", 1, 1), cur("b", 6), prev("b", 1, 5)],
                last: Switch {
                    previous: Some(d(5)),
                    changed: true,
                    dropped: vec![],
                },
            },
        ];
        for (i, case) in cases.into_iter().enumerate() {
            let mut idx = IndexFile::empty();
            let mut last = Switch::default();
            for (r, n, keep) in &case.steps {
                last = idx.switch(r, &m(*n), None, *keep);
            }
            assert_eq!(digests(&idx), case.want, "case {i}");
            assert_eq!(last, case.last, "case {i}");
            // Named entries stay unique and older versions never carry a ref name.
            assert_eq!(
                idx.entries().len(),
                idx.manifests.iter().filter(|m| ref_name_of(m).is_some()).count()
            );
        }
    }

    #[test]
    fn switch_keeps_previous_right_after_current_and_remove_drops_them() {
        let m = |n: u8| Descriptor::new(OCI_MANIFEST, Digest::of(&[n]), 10);
        let mut idx = IndexFile::empty();
        idx.switch("a", &m(1), None, 1);
        idx.switch("b", &m(9), None, 1);
        let ix = Digest::of(b"index");
        idx.switch("a", &m(2), Some(&ix), 1);
        let order: Vec<Digest> = idx.manifests.iter().map(|d| d.digest).collect();
        assert_eq!(order, vec![m(2).digest, m(1).digest, m(9).digest]);
        assert_eq!(idx.entries()[0].source_index, Some(ix));
        let prev = idx.previous_entries();
        assert_eq!(prev.len(), 1);
        assert_eq!((prev[0].ref_name.as_str(), prev[0].rank), ("a", 1));
        assert!(idx.remove("a"));
        assert_eq!(idx.manifests.len(), 1);
        assert!(idx.previous_entries().is_empty());
    }

    #[test]
    fn ensure_creates_valid_layout_and_rejects_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let oci = dir.path().join("oci");
        ensure(&oci).unwrap();
        let marker: serde_json::Value =
            serde_json::from_slice(&fs::read(oci.join(OCI_LAYOUT_FILE)).unwrap()).unwrap();
        assert_eq!(marker, serde_json::json!({"imageLayoutVersion": "1.0.0"}));
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(oci.join(INDEX_FILE)).unwrap()).unwrap();
        assert_eq!(index["schemaVersion"], 2);
        assert_eq!(index["mediaType"], OCI_INDEX);
        assert_eq!(index["manifests"], serde_json::json!([]));
        assert!(oci.join("blobs/sha256").is_dir());
        // Idempotent.
        ensure(&oci).unwrap();

        fs::write(oci.join(INDEX_FILE), br#"{"schemaVersion":1,"manifests":[]}"#).unwrap();
        assert!(matches!(ensure(&oci), Err(StoreError::CorruptIndex { .. })));
        fs::write(oci.join(INDEX_FILE), b"{not json").unwrap();
        assert!(matches!(ensure(&oci), Err(StoreError::CorruptIndex { .. })));
        fs::write(oci.join(OCI_LAYOUT_FILE), br#"{"imageLayoutVersion":"2.0.0"}"#).unwrap();
        match ensure(&oci) {
            Err(StoreError::UnsupportedLayout { found, .. }) => assert_eq!(found, "2.0.0"),
            other => panic!("expected UnsupportedLayout, got {other:?}"),
        }
    }

    #[test]
    fn unknown_index_keys_survive_a_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let oci = dir.path();
        fs::write(
            oci.join(INDEX_FILE),
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[],"annotations":{"k":"v"}}"#,
        )
        .unwrap();
        let m = Descriptor::new(OCI_MANIFEST, Digest::of(b"m"), 1);
        set_image(oci, "x", &m, None).unwrap();
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(oci.join(INDEX_FILE)).unwrap()).unwrap();
        assert_eq!(index["annotations"]["k"], "v");
        assert_eq!(index["manifests"][0]["annotations"][ANNOTATION_REF_NAME], "x");
        assert!(!oci.join(INDEX_TMP).exists());
    }
}
