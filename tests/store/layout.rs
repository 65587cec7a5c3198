//! Small blobs (`put_blob`, `read_blob`), `index.json` updates, and verify.

use edgepull::store::{ANNOTATION_REF_NAME, ANNOTATION_SOURCE_INDEX, Corruption};
use edgepull_core::oci::manifest::OCI_INDEX;

use super::*;

#[tokio::test]
async fn put_blob_verifies_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let body = br#"{"schemaVersion":2}"#;
    let d = Digest::of(body);
    let wrong = Digest::of(b"x");
    let err = store.put_blob(&wrong, body).await.unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch { .. }) && err.is_integrity());
    assert!(!store.blob_path(&wrong).exists());
    store.put_blob(&d, body).await.unwrap();
    store.put_blob(&d, body).await.unwrap();
    assert_eq!(store.read_blob(&d, 100).await.unwrap(), body);
    // No temp files left anywhere.
    assert_eq!(fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0);
    assert_eq!(
        fs::read_dir(dir.path().join("oci/blobs/sha256")).unwrap().count(),
        1
    );
}

#[tokio::test]
async fn read_blob_enforces_limit_presence_and_digest() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let body = content(1000, 12);
    let d = Digest::of(&body);
    let err = store.read_blob(&d, 10_000).await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    store.put_blob(&d, &body).await.unwrap();
    match store.read_blob(&d, 999).await.unwrap_err() {
        StoreError::TooLarge { size, max, .. } => assert_eq!((size, max), (1000, 999)),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    corrupt_one_byte(&store.blob_path(&d));
    let err = store.read_blob(&d, 10_000).await.unwrap_err();
    assert!(
        matches!(err, StoreError::CorruptBlob { .. }) && err.is_integrity(),
        "{err:?}"
    );
}

fn index_json(root: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(root.join("oci/index.json")).unwrap()).unwrap()
}

#[tokio::test]
async fn index_updates_are_atomic_replace_by_name_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = open(root).await;

    let layout: serde_json::Value =
        serde_json::from_slice(&fs::read(root.join("oci/oci-layout")).unwrap()).unwrap();
    assert_eq!(layout, serde_json::json!({"imageLayoutVersion": "1.0.0"}));
    let empty = index_json(root);
    assert_eq!(empty["schemaVersion"], 2);
    assert_eq!(empty["mediaType"], OCI_INDEX);
    assert!(store.images().await.unwrap().is_empty());

    let cfg = Descriptor::new("application/vnd.oci.image.config.v1+json", Digest::of(b"c"), 1);
    let m1 = put_manifest(&store, &Descriptor::new(LAYER, Digest::of(b"l1"), 2), &cfg).await;
    let m2 = put_manifest(&store, &Descriptor::new(LAYER, Digest::of(b"l2"), 2), &cfg).await;
    let source = Digest::of(b"the index");

    // The manifest must be committed first.
    let missing = Descriptor::new(OCI_MANIFEST, Digest::of(b"nope"), 4);
    assert!(
        store
            .set_image("app:1", &missing, None)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(matches!(
        store.set_image("bad name", &m1, None).await,
        Err(StoreError::InvalidRefName { .. })
    ));

    store.set_image("app:1", &m1, Some(&source)).await.unwrap();
    store.set_image("app:2", &m2, None).await.unwrap();
    store.set_image("app:1", &m2, None).await.unwrap();
    let images = store.images().await.unwrap();
    assert_eq!(images.len(), 2);
    assert_eq!(images[0].ref_name, "app:1");
    assert_eq!(images[0].descriptor.digest, m2.digest);
    assert_eq!(images[0].source_index, None);
    store.set_image("app:1", &m1, Some(&source)).await.unwrap();

    let raw = index_json(root);
    assert_eq!(raw["schemaVersion"], 2);
    assert_eq!(raw["mediaType"], OCI_INDEX);
    let entries = raw["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["digest"], m1.digest.to_string());
    assert_eq!(entries[0]["mediaType"], OCI_MANIFEST);
    assert_eq!(entries[0]["annotations"][ANNOTATION_REF_NAME], "app:1");
    assert_eq!(
        entries[0]["annotations"][ANNOTATION_SOURCE_INDEX],
        source.to_string()
    );
    assert!(entries[1]["annotations"].get(ANNOTATION_SOURCE_INDEX).is_none());
    let leftovers: Vec<_> = fs::read_dir(root.join("oci"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let before = store.images().await.unwrap();
    drop(store);
    let store = open(root).await;
    assert_eq!(store.images().await.unwrap(), before);
    assert_eq!(before[0].source_index, Some(source));
    assert!(store.remove_image("app:2").await.unwrap());
    assert_eq!(store.images().await.unwrap().len(), 1);
}

#[tokio::test]
async fn verify_reports_corrupt_misnamed_and_missing_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let good = content(300_000, 13);
    let bad = content(400_000, 14);
    let (gd, bd) = (Digest::of(&good), Digest::of(&bad));
    for body in [&good, &bad] {
        let d = Digest::of(body);
        let mut ing = store.ingest(&d, body.len() as u64, LAYER).await.unwrap();
        ing.write(body).await.unwrap();
        ing.commit().await.unwrap();
    }
    assert!(store.verify().await.unwrap().is_clean());

    corrupt_one_byte(&store.blob_path(&bd));
    let stray = dir.path().join("oci/blobs/sha256/not-a-digest");
    fs::write(&stray, b"?").unwrap();
    // A manifest whose config is stored and whose layer is not, and whose config size is wrong.
    let absent = Descriptor::new(LAYER, Digest::of(b"absent"), 6);
    let config = Descriptor::new("application/vnd.oci.image.config.v1+json", gd, 1);
    let m = put_manifest(&store, &absent, &config).await;
    store.set_image("app:1", &m, None).await.unwrap();

    let report = store.verify().await.unwrap();
    assert!(!report.is_clean());
    assert_eq!(report.checked, 3);
    assert_eq!(report.misnamed, vec![stray.clone()]);
    assert!(stray.exists(), "verify reports, never deletes");
    assert_eq!(report.missing, vec![absent.digest]);
    assert_eq!(report.corrupt.len(), 2, "{:?}", report.corrupt);
    let by_digest = |d: Digest| report.corrupt.iter().find(|c| c.digest == d).unwrap();
    assert!(matches!(by_digest(bd).problem, Corruption::DigestMismatch { actual } if actual != bd));
    assert_eq!(by_digest(bd).path, store.blob_path(&bd));
    assert_eq!(
        by_digest(gd).problem,
        Corruption::SizeMismatch {
            expected: 1,
            actual: 300_000
        }
    );
}
