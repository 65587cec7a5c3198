//! Black-box tests of the content store: commit visibility, integrity refusals, resume
//! from durable checkpoints, the OCI layout and index, the store lock, verify and recovery.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use edgepull::store::{ANNOTATION_REF_NAME, ANNOTATION_SOURCE_INDEX, Corruption, Ingest, Store, StoreError};
use edgepull_core::oci::manifest::{OCI_INDEX, OCI_MANIFEST};
use edgepull_core::oci::{Descriptor, Digest};

const MIB: usize = 1024 * 1024;
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Deterministic, non-repeating-looking content.
fn content(len: usize, seed: u8) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9 ^ u32::from(seed);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn open(root: &Path) -> Store {
    Store::open(root, Duration::ZERO).expect("open store")
}

fn ingest_dir(root: &Path, d: &Digest) -> PathBuf {
    root.join("ingest").join(format!("sha256-{}", d.hex()))
}

fn checkpoint_on_disk(root: &Path, d: &Digest) -> u64 {
    match fs::read_to_string(ingest_dir(root, d).join("checkpoint")) {
        Ok(s) => s.trim().parse().expect("numeric checkpoint"),
        Err(_) => 0,
    }
}

fn data_len(root: &Path, d: &Digest) -> u64 {
    fs::metadata(ingest_dir(root, d).join("data"))
        .map(|m| m.len())
        .unwrap_or(0)
}

async fn write_all(ing: &mut Ingest, bytes: &[u8], chunk: usize) {
    for c in bytes.chunks(chunk) {
        ing.write(c).await.expect("write");
    }
}

#[test]
fn store_and_ingest_are_thread_safe() {
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}
    assert_send_sync::<Store>();
    assert_send::<Ingest>();
    assert_send_sync::<StoreError>();
}

#[tokio::test]
async fn commit_makes_a_read_only_verified_blob_visible() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let body = content(MIB + 12_345, 1);
    let d = Digest::of(&body);
    assert!(!store.has_blob(&d, body.len() as u64));

    let mut ing = store.ingest(&d, body.len() as u64, LAYER).await.unwrap();
    assert_eq!(ing.resumed_from(), 0);
    write_all(&mut ing, &body, 64 * 1024).await;
    assert_eq!(ing.offset(), body.len() as u64);
    // Not visible before commit.
    assert!(!store.blob_path(&d).exists());
    let path = ing.commit().await.unwrap();

    assert_eq!(path, store.blob_path(&d));
    assert_eq!(path, dir.path().join("oci/blobs/sha256").join(d.hex()));
    assert!(store.has_blob(&d, body.len() as u64));
    assert!(!store.has_blob(&d, body.len() as u64 + 1));
    assert_eq!(fs::read(&path).unwrap(), body);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o444);
    }
    assert!(!ingest_dir(dir.path(), &d).exists(), "ingest dir removed");
    assert!(store.ingests().unwrap().is_empty());
    assert_eq!(store.read_blob(&d, body.len() as u64).unwrap(), body);

    // And the image becomes visible in index.json once recorded.
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{d}","size":{}}},"layers":[]}}"#,
        body.len()
    );
    let md = Digest::of(manifest.as_bytes());
    store.put_blob(&md, manifest.as_bytes()).unwrap();
    let desc = Descriptor::new(OCI_MANIFEST, md, manifest.len() as u64);
    store
        .set_image("contoso.azurecr.io/app:1.0", &desc, None)
        .unwrap();
    let images = store.images().unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].descriptor.digest, md);
    assert!(store.verify().unwrap().is_clean());
}

#[tokio::test]
async fn digest_mismatch_leaves_no_blob_and_no_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let body = content(300_000, 2);
    let claimed = Digest::of(b"something else");
    let mut ing = store.ingest(&claimed, body.len() as u64, LAYER).await.unwrap();
    write_all(&mut ing, &body, 50_000).await;
    let err = ing.commit().await.unwrap_err();
    match &err {
        StoreError::DigestMismatch { expected, actual, .. } => {
            assert_eq!(*expected, claimed);
            assert_eq!(*actual, Digest::of(&body));
        }
        other => panic!("expected DigestMismatch, got {other:?}"),
    }
    assert!(err.is_integrity());
    assert!(!store.blob_path(&claimed).exists());
    assert!(!store.blob_path(&Digest::of(&body)).exists());
    assert!(!ingest_dir(dir.path(), &claimed).exists());
    assert!(store.ingests().unwrap().is_empty());
    // The digest is free again.
    store.ingest(&claimed, 1, LAYER).await.unwrap();
}

#[tokio::test]
async fn write_beyond_size_is_refused_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let body = b"0123456789";
    let d = Digest::of(body);
    let mut ing = store.ingest(&d, 10, LAYER).await.unwrap();
    ing.write(&body[..6]).await.unwrap();
    let err = ing.write(b"XXXXX").await.unwrap_err();
    match &err {
        StoreError::SizeExceeded { size, attempted, .. } => {
            assert_eq!((*size, *attempted), (10, 11));
        }
        other => panic!("expected SizeExceeded, got {other:?}"),
    }
    assert!(err.is_integrity());
    assert_eq!(ing.offset(), 6);
    assert_eq!(data_len(dir.path(), &d), 6);
    ing.write(&body[6..]).await.unwrap();
    ing.commit().await.unwrap();
    assert_eq!(store.read_blob(&d, 10).unwrap(), body);
}

#[tokio::test]
async fn resume_after_crash_truncates_to_the_checkpoint_and_rehashes() {
    let dir = tempfile::tempdir().unwrap();
    let body = content(5 * MIB + 7, 3);
    let d = Digest::of(&body);
    let size = body.len() as u64;
    {
        let store = open(dir.path());
        let mut ing = store.ingest(&d, size, LAYER).await.unwrap();
        ing.set_checkpoint_bytes(u64::MAX);
        ing.set_checkpoint_interval(Duration::from_secs(3600));
        write_all(&mut ing, &body[..3 * MIB], 100_000).await;
        ing.checkpoint().await.unwrap();
        assert_eq!(ing.checkpointed(), 3 * MIB as u64);
        // More bytes, never checkpointed: a torn tail after the "crash".
        write_all(&mut ing, &body[3 * MIB..4 * MIB], 100_000).await;
        assert_eq!(data_len(dir.path(), &d), 4 * MIB as u64);
        // Crash: drop everything without commit.
    }
    assert_eq!(checkpoint_on_disk(dir.path(), &d), 3 * MIB as u64);

    let store = open(dir.path());
    assert_eq!(store.recovery().kept_ingests, 1);
    let listed = store.ingests().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].digest, listed[0].size, listed[0].checkpoint),
        (d, size, 3 * MIB as u64)
    );
    assert_eq!(listed[0].media_type, LAYER);
    assert!(!listed[0].active);

    let mut ing = store.ingest(&d, size, LAYER).await.unwrap();
    assert_eq!(ing.resumed_from(), 3 * MIB as u64);
    assert_eq!(ing.offset(), 3 * MIB as u64);
    assert_eq!(data_len(dir.path(), &d), 3 * MIB as u64, "torn tail truncated");
    assert!(store.ingests().unwrap()[0].active);
    write_all(&mut ing, &body[3 * MIB..], 100_000).await;
    let path = ing.commit().await.unwrap();
    assert_eq!(fs::read(path).unwrap(), body);
}

#[tokio::test]
async fn checkpoint_never_exceeds_durable_length() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let body = content(2 * MIB, 4);
    let d = Digest::of(&body);
    let mut ing = store.ingest(&d, body.len() as u64, LAYER).await.unwrap();
    ing.set_checkpoint_bytes(150_000);
    let mut saw_auto_checkpoint = false;
    for c in body.chunks(64 * 1024) {
        ing.write(c).await.unwrap();
        let cp = checkpoint_on_disk(dir.path(), &d);
        assert!(cp <= data_len(dir.path(), &d));
        assert!(cp <= ing.offset());
        assert_eq!(cp, ing.checkpointed());
        assert!(ing.offset() - cp < 150_000, "auto checkpoint after 150 000 bytes");
        saw_auto_checkpoint |= cp > 0;
    }
    assert!(saw_auto_checkpoint);
    ing.checkpoint().await.unwrap();
    assert_eq!(checkpoint_on_disk(dir.path(), &d), ing.offset());
    ing.commit().await.unwrap();
}

#[tokio::test]
async fn checkpoints_by_elapsed_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let body = content(1000, 5);
    let d = Digest::of(&body);
    let mut ing = store.ingest(&d, 1000, LAYER).await.unwrap();
    ing.set_checkpoint_interval(Duration::from_secs(3600));
    ing.write(&body[..10]).await.unwrap();
    assert_eq!(ing.checkpointed(), 0, "too early for a timed checkpoint");
    ing.set_checkpoint_interval(Duration::from_millis(50));
    tokio::time::sleep(Duration::from_millis(80)).await;
    ing.write(&body[10..20]).await.unwrap();
    assert_eq!(ing.checkpointed(), 20);
    assert_eq!(checkpoint_on_disk(dir.path(), &d), 20);
}

#[tokio::test]
async fn reset_truncates_and_rehashes_from_zero() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let body = content(200_000, 6);
    let d = Digest::of(&body);
    let mut ing = store.ingest(&d, body.len() as u64, LAYER).await.unwrap();
    // Wrong bytes first (a server that ignored Range sent the start again, say).
    ing.write(&content(120_000, 99)).await.unwrap();
    ing.checkpoint().await.unwrap();
    ing.reset().await.unwrap();
    assert_eq!(ing.offset(), 0);
    assert_eq!(ing.checkpointed(), 0);
    assert_eq!(data_len(dir.path(), &d), 0);
    assert_eq!(checkpoint_on_disk(dir.path(), &d), 0);
    write_all(&mut ing, &body, 30_000).await;
    ing.commit().await.unwrap();
    assert!(store.has_blob(&d, body.len() as u64));
}

#[tokio::test]
async fn ingest_recorded_with_another_size_restarts_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let body = content(100_000, 7);
    let d = Digest::of(&body);
    {
        let mut ing = store.ingest(&d, 200_000, LAYER).await.unwrap();
        ing.write(&body[..50_000]).await.unwrap();
        ing.checkpoint().await.unwrap();
    }
    let mut ing = store.ingest(&d, body.len() as u64, LAYER).await.unwrap();
    assert_eq!(ing.resumed_from(), 0);
    assert_eq!(data_len(dir.path(), &d), 0);
    assert_eq!(store.ingests().unwrap()[0].size, body.len() as u64);
    ing.write(&body).await.unwrap();
    ing.commit().await.unwrap();
}

#[tokio::test]
async fn data_shorter_than_checkpoint_restarts_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let body = content(100_000, 8);
    let d = Digest::of(&body);
    {
        let mut ing = store.ingest(&d, body.len() as u64, LAYER).await.unwrap();
        ing.write(&body[..60_000]).await.unwrap();
        ing.checkpoint().await.unwrap();
    }
    // The filesystem lost synced bytes (or someone truncated the file).
    fs::OpenOptions::new()
        .write(true)
        .open(ingest_dir(dir.path(), &d).join("data"))
        .unwrap()
        .set_len(10_000)
        .unwrap();
    let mut ing = store.ingest(&d, body.len() as u64, LAYER).await.unwrap();
    assert_eq!(ing.resumed_from(), 0);
    ing.write(&body).await.unwrap();
    ing.commit().await.unwrap();
}

#[tokio::test]
async fn incomplete_commit_keeps_the_ingest_for_resume() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let body = content(100_000, 9);
    let d = Digest::of(&body);
    let mut ing = store.ingest(&d, body.len() as u64, LAYER).await.unwrap();
    ing.write(&body[..40_000]).await.unwrap();
    ing.checkpoint().await.unwrap();
    let err = ing.commit().await.unwrap_err();
    assert!(err.is_incomplete(), "{err:?}");
    assert!(!err.is_integrity());
    assert!(!store.blob_path(&d).exists());
    let mut ing = store.ingest(&d, body.len() as u64, LAYER).await.unwrap();
    assert_eq!(ing.resumed_from(), 40_000);
    ing.write(&body[40_000..]).await.unwrap();
    ing.commit().await.unwrap();
}

#[tokio::test]
async fn commit_of_an_already_stored_blob_succeeds_and_drops_the_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let body = content(5000, 10);
    let d = Digest::of(&body);
    let mut ing = store.ingest(&d, 5000, LAYER).await.unwrap();
    ing.write(&body).await.unwrap();
    store.put_blob(&d, &body).unwrap();
    let path = ing.commit().await.unwrap();
    assert_eq!(path, store.blob_path(&d));
    assert!(!ingest_dir(dir.path(), &d).exists());
}

#[tokio::test]
async fn empty_blob_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let d = Digest::of(b"");
    let ing = store.ingest(&d, 0, LAYER).await.unwrap();
    ing.commit().await.unwrap();
    assert!(store.has_blob(&d, 0));
}

#[tokio::test]
async fn a_second_ingest_of_the_same_digest_is_busy() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let body = content(1000, 11);
    let d = Digest::of(&body);
    let mut first = store.ingest(&d, 1000, LAYER).await.unwrap();
    first.write(&body[..100]).await.unwrap();
    first.checkpoint().await.unwrap();
    let err = store.clone().ingest(&d, 1000, LAYER).await.unwrap_err();
    assert!(err.is_busy(), "{err:?}");
    assert!(matches!(store.abort_ingest(&d), Err(StoreError::Busy { .. })));
    // Another digest is fine meanwhile.
    store.ingest(&Digest::of(b"other"), 5, LAYER).await.unwrap();
    drop(first);
    let second = store.ingest(&d, 1000, LAYER).await.unwrap();
    assert_eq!(second.resumed_from(), 100);
    drop(second);
    store.abort_ingest(&d).unwrap();
    assert!(!ingest_dir(dir.path(), &d).exists());
    store.abort_ingest(&d).unwrap();
    assert!(store.ingests().unwrap().iter().all(|s| s.digest != d));
}

#[test]
fn put_blob_verifies_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let body = br#"{"schemaVersion":2}"#;
    let d = Digest::of(body);
    let wrong = Digest::of(b"x");
    let err = store.put_blob(&wrong, body).unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch { .. }) && err.is_integrity());
    assert!(!store.blob_path(&wrong).exists());
    store.put_blob(&d, body).unwrap();
    store.put_blob(&d, body).unwrap();
    assert_eq!(store.read_blob(&d, 100).unwrap(), body);
    // No temp files left anywhere.
    assert_eq!(fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0);
    assert_eq!(
        fs::read_dir(dir.path().join("oci/blobs/sha256")).unwrap().count(),
        1
    );
}

#[test]
fn read_blob_enforces_limit_presence_and_digest() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let body = content(1000, 12);
    let d = Digest::of(&body);
    let err = store.read_blob(&d, 10_000).unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    store.put_blob(&d, &body).unwrap();
    match store.read_blob(&d, 999).unwrap_err() {
        StoreError::TooLarge { size, max, .. } => assert_eq!((size, max), (1000, 999)),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    corrupt_one_byte(&store.blob_path(&d));
    let err = store.read_blob(&d, 10_000).unwrap_err();
    assert!(
        matches!(err, StoreError::CorruptBlob { .. }) && err.is_integrity(),
        "{err:?}"
    );
}

fn index_json(root: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(root.join("oci/index.json")).unwrap()).unwrap()
}

fn put_manifest(store: &Store, layer: &Descriptor, config: &Descriptor) -> Descriptor {
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config,
        "layers": [layer],
    })
    .to_string();
    let d = Digest::of(body.as_bytes());
    store.put_blob(&d, body.as_bytes()).unwrap();
    Descriptor::new(OCI_MANIFEST, d, body.len() as u64)
}

#[test]
fn index_updates_are_atomic_replace_by_name_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = open(root);

    let layout: serde_json::Value =
        serde_json::from_slice(&fs::read(root.join("oci/oci-layout")).unwrap()).unwrap();
    assert_eq!(layout, serde_json::json!({"imageLayoutVersion": "1.0.0"}));
    let empty = index_json(root);
    assert_eq!(empty["schemaVersion"], 2);
    assert_eq!(empty["mediaType"], OCI_INDEX);
    assert!(store.images().unwrap().is_empty());

    let cfg = Descriptor::new("application/vnd.oci.image.config.v1+json", Digest::of(b"c"), 1);
    let m1 = put_manifest(&store, &Descriptor::new(LAYER, Digest::of(b"l1"), 2), &cfg);
    let m2 = put_manifest(&store, &Descriptor::new(LAYER, Digest::of(b"l2"), 2), &cfg);
    let source = Digest::of(b"the index");

    // The manifest must be committed first.
    let missing = Descriptor::new(OCI_MANIFEST, Digest::of(b"nope"), 4);
    assert!(
        store
            .set_image("app:1", &missing, None)
            .unwrap_err()
            .is_not_found()
    );
    assert!(matches!(
        store.set_image("bad name", &m1, None),
        Err(StoreError::InvalidRefName { .. })
    ));

    store.set_image("app:1", &m1, Some(&source)).unwrap();
    store.set_image("app:2", &m2, None).unwrap();
    store.set_image("app:1", &m2, None).unwrap();
    let images = store.images().unwrap();
    assert_eq!(images.len(), 2);
    assert_eq!(images[0].ref_name, "app:1");
    assert_eq!(images[0].descriptor.digest, m2.digest);
    assert_eq!(images[0].source_index, None);
    store.set_image("app:1", &m1, Some(&source)).unwrap();

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

    let before = store.images().unwrap();
    drop(store);
    let store = open(root);
    assert_eq!(store.images().unwrap(), before);
    assert_eq!(before[0].source_index, Some(source));
    assert!(store.remove_image("app:2").unwrap());
    assert_eq!(store.images().unwrap().len(), 1);
}

#[test]
fn second_open_fails_with_locked_naming_the_pid_then_succeeds_after_drop() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path());
    let start = Instant::now();
    let err = Store::open(dir.path(), Duration::from_millis(300)).unwrap_err();
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert!(err.is_locked(), "{err:?}");
    match &err {
        StoreError::Locked { path, holder_pid, .. } => {
            assert_eq!(*path, dir.path().join("lock"));
            assert_eq!(*holder_pid, Some(std::process::id()));
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(&format!("pid {}", std::process::id())), "{msg}");
    assert!(msg.contains("lock"), "{msg}");

    // A clone keeps the lock; only the last drop releases it.
    let clone = first.clone();
    drop(first);
    assert!(Store::open(dir.path(), Duration::ZERO).unwrap_err().is_locked());
    drop(clone);
    let again = Store::open(dir.path(), Duration::ZERO).unwrap();
    drop(again);
}

#[tokio::test]
async fn an_open_ingest_keeps_the_store_locked() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ing = store.ingest(&Digest::of(b"x"), 1, LAYER).await.unwrap();
    drop(store);
    assert!(Store::open(dir.path(), Duration::ZERO).unwrap_err().is_locked());
    drop(ing);
    Store::open(dir.path(), Duration::ZERO).unwrap();
}

fn corrupt_one_byte(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
    }
    let mut bytes = fs::read(path).unwrap();
    bytes[0] ^= 0xff;
    fs::write(path, bytes).unwrap();
}

#[tokio::test]
async fn verify_reports_corrupt_misnamed_and_missing_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let good = content(300_000, 13);
    let bad = content(400_000, 14);
    let (gd, bd) = (Digest::of(&good), Digest::of(&bad));
    for body in [&good, &bad] {
        let d = Digest::of(body);
        let mut ing = store.ingest(&d, body.len() as u64, LAYER).await.unwrap();
        ing.write(body).await.unwrap();
        ing.commit().await.unwrap();
    }
    assert!(store.verify().unwrap().is_clean());

    corrupt_one_byte(&store.blob_path(&bd));
    let stray = dir.path().join("oci/blobs/sha256/not-a-digest");
    fs::write(&stray, b"?").unwrap();
    // A manifest whose config is stored and whose layer is not, and whose config size is wrong.
    let absent = Descriptor::new(LAYER, Digest::of(b"absent"), 6);
    let config = Descriptor::new("application/vnd.oci.image.config.v1+json", gd, 1);
    let m = put_manifest(&store, &absent, &config);
    store.set_image("app:1", &m, None).unwrap();

    let report = store.verify().unwrap();
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

#[tokio::test]
async fn recovery_removes_stale_temp_files_and_unresumable_ingests() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let body = content(100_000, 15);
    let d = Digest::of(&body);
    let done = content(10, 16);
    let dd = Digest::of(&done);
    {
        let store = open(root);
        let mut ing = store.ingest(&d, body.len() as u64, LAYER).await.unwrap();
        ing.write(&body[..50_000]).await.unwrap();
        ing.checkpoint().await.unwrap();
        // An ingest whose blob got committed, but whose directory survived a crash.
        let mut ing2 = store.ingest(&dd, 10, LAYER).await.unwrap();
        ing2.write(&done).await.unwrap();
        ing2.checkpoint().await.unwrap();
        store.put_blob(&dd, &done).unwrap();
    }
    let ingest = root.join("ingest");
    fs::write(root.join("oci/index.json.tmp"), b"{half").unwrap();
    fs::write(ingest_dir(root, &d).join("checkpoint.tmp"), b"12").unwrap();
    let metaless = ingest_dir(root, &Digest::of(b"no meta"));
    fs::create_dir_all(&metaless).unwrap();
    fs::write(metaless.join("data"), b"partial").unwrap();
    let bad_meta = ingest_dir(root, &Digest::of(b"bad meta"));
    fs::create_dir_all(&bad_meta).unwrap();
    fs::write(bad_meta.join("meta.json"), b"{not json").unwrap();
    let junk_dir = ingest.join("junk");
    fs::create_dir_all(&junk_dir).unwrap();
    let stray_put = ingest.join(format!("put-{}-0.tmp", d.hex()));
    fs::write(&stray_put, b"half a manifest").unwrap();

    let store = open(root);
    let report = store.recovery().clone();
    assert_eq!(report.removed_temp_files, vec![root.join("oci/index.json.tmp")]);
    let mut removed = report.removed_ingests.clone();
    removed.sort();
    let mut expected = vec![metaless, bad_meta, junk_dir, stray_put, ingest_dir(root, &dd)];
    expected.sort();
    assert_eq!(removed, expected);
    assert!(expected.iter().all(|p| !p.exists()));
    assert!(!root.join("oci/index.json.tmp").exists());
    assert!(!ingest_dir(root, &d).join("checkpoint.tmp").exists());
    assert_eq!(report.kept_ingests, 1);
    assert!(store.has_blob(&dd, 10));

    // The kept ingest resumes.
    let mut ing = store.ingest(&d, body.len() as u64, LAYER).await.unwrap();
    assert_eq!(ing.resumed_from(), 50_000);
    ing.write(&body[50_000..]).await.unwrap();
    ing.commit().await.unwrap();
}

#[tokio::test]
async fn resumes_a_data_file_left_read_only_by_an_interrupted_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let body = content(70_000, 17);
    let d = Digest::of(&body);
    {
        let mut ing = store.ingest(&d, body.len() as u64, LAYER).await.unwrap();
        ing.write(&body[..30_000]).await.unwrap();
        ing.checkpoint().await.unwrap();
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let data = ingest_dir(dir.path(), &d).join("data");
        fs::set_permissions(&data, fs::Permissions::from_mode(0o444)).unwrap();
    }
    let mut ing = store.ingest(&d, body.len() as u64, LAYER).await.unwrap();
    assert_eq!(ing.resumed_from(), 30_000);
    ing.write(&body[30_000..]).await.unwrap();
    ing.commit().await.unwrap();
}

#[tokio::test]
async fn a_write_cancelled_mid_io_poisons_the_ingest_but_not_the_data() {
    use futures_util::FutureExt as _;

    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let body = content(3 * MIB, 18);
    let d = Digest::of(&body);
    let mut ing = store.ingest(&d, body.len() as u64, LAYER).await.unwrap();
    ing.write(&body[..MIB]).await.unwrap();
    ing.checkpoint().await.unwrap();
    // Poll a write once and drop it: the blocking IO goes on without us.
    let cancelled = ing.write(&body[MIB..2 * MIB]).now_or_never().is_none();
    if cancelled {
        let err = ing.write(&body[MIB..2 * MIB]).await.unwrap_err();
        assert!(matches!(err, StoreError::Interrupted { .. }), "{err:?}");
        assert_eq!(ing.offset(), MIB as u64, "cancelled bytes are not counted");
    }
    drop(ing);
    // The digest stays busy until the orphaned IO has finished, then resumes from the
    // durable checkpoint.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ing = loop {
        match store.ingest(&d, body.len() as u64, LAYER).await {
            Ok(ing) => break ing,
            Err(e) if e.is_busy() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => panic!("could not reopen: {e:?}"),
        }
    };
    let from = ing.resumed_from() as usize;
    assert!(from == MIB || (!cancelled && from == 0), "resumed from {from}");
    write_all(&mut ing, &body[from..], 256 * 1024).await;
    ing.commit().await.unwrap();
}
