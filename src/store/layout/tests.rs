//! Unit tests of the layout: the ref-name grammar, the index edits, and the files.

use std::fs;

use super::index::ref_name_of;
use super::*;
use edgepull_core::oci::manifest::{OCI_INDEX, OCI_MANIFEST};

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
fn roll_back_restores_the_newest_older_version_table() {
    let m = |n: u8| Descriptor::new(OCI_MANIFEST, Digest::of(&[n]), 10);
    let ix = Digest::of(b"index-of-1");
    // History of "a": 1 (from an index), 2, 3 (current), keep 2; "b" in between.
    let build = || {
        let mut idx = IndexFile::empty();
        idx.switch("a", &m(1), Some(&ix), 2);
        idx.switch("b", &m(9), None, 2);
        idx.switch("a", &m(2), None, 2);
        idx.switch("a", &m(3), None, 2);
        idx
    };
    // (failed, want restored, want previous after, want order)
    type Row = (Digest, Option<Digest>, Option<Digest>, Vec<Digest>);
    let table: [Row; 3] = [
        (
            m(3).digest,
            Some(m(2).digest),
            Some(m(1).digest),
            vec![m(2).digest, m(1).digest, m(9).digest],
        ),
        // Not the current version: nothing changes.
        (
            m(2).digest,
            None,
            None,
            vec![m(3).digest, m(2).digest, m(1).digest, m(9).digest],
        ),
        (
            m(9).digest,
            None,
            None,
            vec![m(3).digest, m(2).digest, m(1).digest, m(9).digest],
        ),
    ];
    for (failed, restored, previous, order) in table {
        let mut idx = build();
        let done = idx.roll_back("a", &failed);
        assert_eq!(done.map(|d| d.restored), restored, "{failed}");
        assert_eq!(done.and_then(|d| d.previous), previous, "{failed}");
        let got: Vec<Digest> = idx.manifests.iter().map(|d| d.digest).collect();
        assert_eq!(got, order, "{failed}");
    }
    // Twice: 3 -> 2 -> 1, which keeps the index it was chosen from.
    let mut idx = build();
    idx.roll_back("a", &m(3).digest).unwrap();
    let done = idx.roll_back("a", &m(2).digest).unwrap();
    assert_eq!((done.restored, done.previous), (m(1).digest, None));
    let a = idx.entries().into_iter().find(|e| e.ref_name == "a").unwrap();
    assert_eq!((a.descriptor.digest, a.source_index), (m(1).digest, Some(ix)));
    assert!(idx.previous_entries().is_empty());
    // Nothing left to roll back to.
    assert_eq!(idx.roll_back("a", &m(1).digest), None);
    // Ranks are renumbered from 1.
    let mut idx = build();
    idx.roll_back("a", &m(3).digest).unwrap();
    let prev = idx.previous_entries();
    assert_eq!(
        (prev.len(), prev[0].rank, prev[0].descriptor.digest),
        (1, 1, m(1).digest)
    );
}

#[test]
fn a_pending_version_is_a_gc_root_without_a_name_until_the_switch_drops_it() {
    let m = |n: u8| Descriptor::new(OCI_MANIFEST, Digest::of(&[n]), 10);
    let ix = Digest::of(b"index-of-3");
    let mut idx = IndexFile::empty();
    idx.switch("a", &m(1), None, 1);
    idx.switch("b", &m(9), None, 1);
    let roots = |idx: &IndexFile| -> Vec<Digest> { idx.gc_roots().iter().map(|r| r.manifest).collect() };
    let names =
        |idx: &IndexFile| -> Vec<Digest> { idx.entries().iter().map(|e| e.descriptor.digest).collect() };
    // Recorded: a root, not a named entry, not a previous version.
    assert!(idx.set_pending("a", Some((&m(2), None))));
    assert!(roots(&idx).contains(&m(2).digest));
    assert_eq!(names(&idx), vec![m(1).digest, m(9).digest]);
    assert!(idx.previous_entries().is_empty());
    // The same again changes nothing; another replaces it, with its source index.
    assert!(!idx.set_pending("a", Some((&m(2), None))));
    assert!(idx.set_pending("a", Some((&m(3), Some(&ix)))));
    assert!(!roots(&idx).contains(&m(2).digest));
    let r = idx
        .gc_roots()
        .into_iter()
        .find(|r| r.manifest == m(3).digest)
        .unwrap();
    assert_eq!(r.source_index, Some(ix));
    // Another ref's pending version is its own.
    assert!(idx.set_pending("b", Some((&m(8), None))));
    // The switch of "a" drops its pending entry, not b's.
    idx.switch("a", &m(3), Some(&ix), 1);
    let all: Vec<Digest> = idx.manifests.iter().map(|d| d.digest).collect();
    assert_eq!(all, vec![m(3).digest, m(1).digest, m(9).digest, m(8).digest]);
    // Dropping: `None` removes it once; `remove` takes it with the ref.
    assert!(idx.set_pending("b", None));
    assert!(!idx.set_pending("b", None));
    idx.set_pending("b", Some((&m(8), None)));
    assert!(idx.remove("b"));
    assert_eq!(roots(&idx), vec![m(3).digest, m(1).digest]);
}

#[test]
fn ensure_creates_valid_layout_and_rejects_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let oci = dir.path().join("oci");
    ensure(&oci, &WriteBudget::default()).unwrap();
    let marker: serde_json::Value =
        serde_json::from_slice(&fs::read(oci.join(OCI_LAYOUT_FILE)).unwrap()).unwrap();
    assert_eq!(marker, serde_json::json!({"imageLayoutVersion": "1.0.0"}));
    let index: serde_json::Value = serde_json::from_slice(&fs::read(oci.join(INDEX_FILE)).unwrap()).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["mediaType"], OCI_INDEX);
    assert_eq!(index["manifests"], serde_json::json!([]));
    assert!(oci.join("blobs/sha256").is_dir());
    // Idempotent.
    ensure(&oci, &WriteBudget::default()).unwrap();

    fs::write(oci.join(INDEX_FILE), br#"{"schemaVersion":1,"manifests":[]}"#).unwrap();
    assert!(matches!(
        ensure(&oci, &WriteBudget::default()),
        Err(StoreError::CorruptIndex { .. })
    ));
    fs::write(oci.join(INDEX_FILE), b"{not json").unwrap();
    assert!(matches!(
        ensure(&oci, &WriteBudget::default()),
        Err(StoreError::CorruptIndex { .. })
    ));
    fs::write(oci.join(OCI_LAYOUT_FILE), br#"{"imageLayoutVersion":"2.0.0"}"#).unwrap();
    match ensure(&oci, &WriteBudget::default()) {
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
    set_image(oci, "x", &m, None, &WriteBudget::default()).unwrap();
    let index: serde_json::Value = serde_json::from_slice(&fs::read(oci.join(INDEX_FILE)).unwrap()).unwrap();
    assert_eq!(index["annotations"]["k"], "v");
    assert_eq!(index["manifests"][0]["annotations"][ANNOTATION_REF_NAME], "x");
    assert!(!oci.join(INDEX_TMP).exists());
}
