//! `index.json` in memory: the entries edgepull writes and the edits it makes to them.
//!
//! Owns: replacing an entry by ref name, rotating the older versions kept for rollback,
//! reading entries back, and naming the roots garbage collection must keep. Pure: no IO
//! (the parent module reads and writes the file). Must never persist descriptor `urls`,
//! and never leave two entries with one ref name or a ref name on an older version.

use serde::{Deserialize, Deserializer, Serialize};

use super::{
    ANNOTATION_PENDING_OF, ANNOTATION_PREVIOUS_OF, ANNOTATION_PREVIOUS_RANK, ANNOTATION_REF_NAME,
    ANNOTATION_SOURCE_INDEX,
};
use edgepull_core::gc::GcRoot;
use edgepull_core::oci::manifest::OCI_INDEX;
use edgepull_core::oci::{Descriptor, Digest};

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

/// An older version of an image kept for rollback (see [`ANNOTATION_PREVIOUS_OF`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PreviousEntry {
    /// The ref name this version was current under.
    pub(crate) ref_name: String,
    /// 1 for the most recent previous version.
    pub(crate) rank: u32,
    /// The manifest descriptor as stored.
    pub(crate) descriptor: Descriptor,
    /// The index the manifest was selected from, if any.
    pub(crate) source_index: Option<Digest>,
}

/// What [`IndexFile::switch`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Switch {
    /// The digest that was current before, when it differs from the new one.
    pub(crate) previous: Option<Digest>,
    /// False when the ref already pointed at this manifest (only annotations refreshed).
    pub(crate) changed: bool,
    /// Older versions that fell off the end of `keep_previous` (no longer referenced).
    pub(crate) dropped: Vec<Digest>,
}

/// What [`IndexFile::roll_back`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RolledBack {
    /// The version current again.
    pub(crate) restored: Digest,
    /// The newest older version still kept after it, if any.
    pub(crate) previous: Option<Digest>,
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
    pub(super) fn empty() -> Self {
        Self {
            schema_version: 2,
            media_type: Some(OCI_INDEX.to_string()),
            manifests: Vec::new(),
            other: serde_json::Map::new(),
        }
    }

    /// Add the entry for `ref_name`, replacing (in place) any entry with that name.
    pub(super) fn upsert(&mut self, ref_name: &str, manifest: &Descriptor, source_index: Option<&Digest>) {
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
    pub(super) fn remove(&mut self, ref_name: &str) -> bool {
        let before = self
            .manifests
            .iter()
            .filter(|m| ref_name_of(m) == Some(ref_name))
            .count();
        self.manifests.retain(|m| {
            ref_name_of(m) != Some(ref_name)
                && previous_of(m) != Some(ref_name)
                && pending_of(m) != Some(ref_name)
        });
        before > 0
    }

    /// Record `pending` (a manifest and the index it was chosen from) as the version of
    /// `ref_name` downloaded ahead of its switch, replacing any earlier one; `None` drops
    /// it. Whether anything changed.
    pub(crate) fn set_pending(
        &mut self,
        ref_name: &str,
        pending: Option<(&Descriptor, Option<&Digest>)>,
    ) -> bool {
        let entry = pending.map(|(manifest, source_index)| {
            let mut d = manifest.clone();
            d.urls.clear();
            d.annotations.clear();
            d.annotations
                .insert(ANNOTATION_PENDING_OF.to_string(), ref_name.to_string());
            if let Some(ix) = source_index {
                d.annotations
                    .insert(ANNOTATION_SOURCE_INDEX.to_string(), ix.to_string());
            }
            d
        });
        let before = self.manifests.len();
        let old: Vec<Descriptor> = self
            .manifests
            .iter()
            .filter(|m| pending_of(m) == Some(ref_name))
            .cloned()
            .collect();
        if old.len() == 1 && entry.as_ref() == old.first() {
            return false;
        }
        self.manifests.retain(|m| pending_of(m) != Some(ref_name));
        let changed = self.manifests.len() != before || entry.is_some();
        self.manifests.extend(entry);
        changed
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
            // The pending version is current now (or replaced by this one).
            if previous_of(&m) == Some(ref_name) || pending_of(&m) == Some(ref_name) {
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

    /// Roll `ref_name` back from `failed` (its current version) to its newest older version,
    /// in place: that version becomes current again (with the index it was chosen from),
    /// `failed` leaves the index (its blobs go at the next garbage collection), and the
    /// older versions move up a rank. `None`, and nothing changes, when `failed` is not
    /// current or no older version is kept.
    pub(crate) fn roll_back(&mut self, ref_name: &str, failed: &Digest) -> Option<RolledBack> {
        let pos = self
            .manifests
            .iter()
            .position(|m| ref_name_of(m) == Some(ref_name) && m.digest == *failed)?;
        let mut older: Vec<Descriptor> = self
            .manifests
            .iter()
            .filter(|m| previous_of(m) == Some(ref_name) && m.digest != *failed)
            .cloned()
            .collect();
        older.sort_by_key(previous_rank);
        if older.is_empty() {
            return None;
        }
        let mut restored = older.remove(0);
        restored.annotations.remove(ANNOTATION_PREVIOUS_OF);
        restored.annotations.remove(ANNOTATION_PREVIOUS_RANK);
        restored
            .annotations
            .insert(ANNOTATION_REF_NAME.to_string(), ref_name.to_string());
        for (i, d) in older.iter_mut().enumerate() {
            d.annotations
                .insert(ANNOTATION_PREVIOUS_RANK.to_string(), (i + 1).to_string());
        }
        let done = RolledBack {
            restored: restored.digest,
            previous: older.first().map(|d| d.digest),
        };
        let mut out = Vec::with_capacity(self.manifests.len());
        for (i, m) in self.manifests.drain(..).enumerate() {
            if i == pos {
                out.push(restored.clone());
                out.append(&mut older);
            } else if previous_of(&m) != Some(ref_name) {
                out.push(m);
            }
        }
        self.manifests = out;
        Some(done)
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

    /// The roots of the reference graph: every entry, current or kept for rollback, with
    /// the index it was chosen from.
    pub(crate) fn gc_roots(&self) -> Vec<GcRoot> {
        self.manifests
            .iter()
            .map(|m| GcRoot {
                manifest: m.digest,
                source_index: m
                    .annotations
                    .get(ANNOTATION_SOURCE_INDEX)
                    .and_then(|s| Digest::parse(s).ok()),
            })
            .collect()
    }

    /// Drop the older versions (never a current entry) for which `keep` is false; returns
    /// their digests in file order.
    pub(crate) fn drop_previous(&mut self, mut keep: impl FnMut(&Descriptor) -> bool) -> Vec<Digest> {
        let mut dropped = Vec::new();
        self.manifests.retain(|m| {
            let gone = previous_of(m).is_some() && !keep(m);
            if gone {
                dropped.push(m.digest);
            }
            !gone
        });
        dropped
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

pub(super) fn ref_name_of(d: &Descriptor) -> Option<&str> {
    d.annotations.get(ANNOTATION_REF_NAME).map(String::as_str)
}

/// The ref an older version was kept for (never set on a named entry).
fn previous_of(d: &Descriptor) -> Option<&str> {
    if d.annotations.contains_key(ANNOTATION_REF_NAME) {
        return None;
    }
    d.annotations.get(ANNOTATION_PREVIOUS_OF).map(String::as_str)
}

/// The ref a version downloaded ahead of its switch is pending for (never set on a named
/// entry).
fn pending_of(d: &Descriptor) -> Option<&str> {
    if d.annotations.contains_key(ANNOTATION_REF_NAME) {
        return None;
    }
    d.annotations.get(ANNOTATION_PENDING_OF).map(String::as_str)
}

/// The rank of an older version; unparseable ranks sort last.
fn previous_rank(d: &Descriptor) -> u32 {
    d.annotations
        .get(ANNOTATION_PREVIOUS_RANK)
        .and_then(|r| r.parse().ok())
        .unwrap_or(u32::MAX)
}
