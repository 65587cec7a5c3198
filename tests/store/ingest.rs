//! Ingests: commit visibility, integrity refusals, checkpoints, resume after a crash,
//! reset, and what a cancelled write leaves.

use std::fs;
use std::time::{Duration, Instant};

use super::*;

#[tokio::test]
async fn commit_makes_a_read_only_verified_blob_visible() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let body = content(MIB + 12_345, 1);
    let d = Digest::of(&body);
    assert!(!store.has_blob(&d, body.len() as u64).await);

    let mut ing = store.ingest(&d, body.len() as u64, LAYER).await.unwrap();
    assert_eq!(ing.resumed_from(), 0);
    write_all(&mut ing, &body, 64 * 1024).await;
    assert_eq!(ing.offset(), body.len() as u64);
    // Not visible before commit.
    assert!(!store.blob_path(&d).exists());
    let path = ing.commit().await.unwrap();

    assert_eq!(path, store.blob_path(&d));
    assert_eq!(path, dir.path().join("oci/blobs/sha256").join(d.hex()));
    assert!(store.has_blob(&d, body.len() as u64).await);
    assert!(!store.has_blob(&d, body.len() as u64 + 1).await);
    assert_eq!(fs::read(&path).unwrap(), body);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o440);
    }
    assert!(!ingest_dir(dir.path(), &d).exists(), "ingest dir removed");
    assert!(store.ingests().await.unwrap().is_empty());
    assert_eq!(store.read_blob(&d, body.len() as u64).await.unwrap(), body);

    // And the image becomes visible in index.json once recorded.
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{d}","size":{}}},"layers":[]}}"#,
        body.len()
    );
    let md = Digest::of(manifest.as_bytes());
    store.put_blob(&md, manifest.as_bytes()).await.unwrap();
    let desc = Descriptor::new(OCI_MANIFEST, md, manifest.len() as u64);
    store
        .set_image("contoso.azurecr.io/app:1.0", &desc, None)
        .await
        .unwrap();
    let images = store.images().await.unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].descriptor.digest, md);
    assert!(store.verify().await.unwrap().is_clean());
}

#[tokio::test]
async fn digest_mismatch_leaves_no_blob_and_no_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
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
    assert!(store.ingests().await.unwrap().is_empty());
    // The digest is free again.
    store.ingest(&claimed, 1, LAYER).await.unwrap();
}

#[tokio::test]
async fn write_beyond_size_is_refused_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
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
    assert_eq!(store.read_blob(&d, 10).await.unwrap(), body);
}

#[tokio::test]
async fn resume_after_crash_truncates_to_the_checkpoint_and_rehashes() {
    let dir = tempfile::tempdir().unwrap();
    let body = content(5 * MIB + 7, 3);
    let d = Digest::of(&body);
    let size = body.len() as u64;
    {
        let store = open(dir.path()).await;
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

    let store = open(dir.path()).await;
    assert_eq!(store.recovery().kept_ingests, 1);
    let listed = store.ingests().await.unwrap();
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
    assert!(store.ingests().await.unwrap()[0].active);
    write_all(&mut ing, &body[3 * MIB..], 100_000).await;
    let path = ing.commit().await.unwrap();
    assert_eq!(fs::read(path).unwrap(), body);
}

#[tokio::test]
async fn checkpoint_never_exceeds_durable_length() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
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
    let store = open(dir.path()).await;
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
    let store = open(dir.path()).await;
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
    assert!(store.has_blob(&d, body.len() as u64).await);
}

#[tokio::test]
async fn ingest_recorded_with_another_size_restarts_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
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
    assert_eq!(store.ingests().await.unwrap()[0].size, body.len() as u64);
    ing.write(&body).await.unwrap();
    ing.commit().await.unwrap();
}

#[tokio::test]
async fn data_shorter_than_checkpoint_restarts_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
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
    let store = open(dir.path()).await;
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
    let store = open(dir.path()).await;
    let body = content(5000, 10);
    let d = Digest::of(&body);
    let mut ing = store.ingest(&d, 5000, LAYER).await.unwrap();
    ing.write(&body).await.unwrap();
    store.put_blob(&d, &body).await.unwrap();
    let path = ing.commit().await.unwrap();
    assert_eq!(path, store.blob_path(&d));
    assert!(!ingest_dir(dir.path(), &d).exists());
}

#[tokio::test]
async fn empty_blob_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let d = Digest::of(b"");
    let ing = store.ingest(&d, 0, LAYER).await.unwrap();
    ing.commit().await.unwrap();
    assert!(store.has_blob(&d, 0).await);
}

#[tokio::test]
async fn a_second_ingest_of_the_same_digest_is_busy() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let body = content(1000, 11);
    let d = Digest::of(&body);
    let mut first = store.ingest(&d, 1000, LAYER).await.unwrap();
    first.write(&body[..100]).await.unwrap();
    first.checkpoint().await.unwrap();
    let err = store.clone().ingest(&d, 1000, LAYER).await.unwrap_err();
    assert!(err.is_busy(), "{err:?}");
    assert!(matches!(
        store.abort_ingest(&d).await,
        Err(StoreError::Busy { .. })
    ));
    // Another digest is fine meanwhile.
    store.ingest(&Digest::of(b"other"), 5, LAYER).await.unwrap();
    drop(first);
    let second = store.ingest(&d, 1000, LAYER).await.unwrap();
    assert_eq!(second.resumed_from(), 100);
    drop(second);
    store.abort_ingest(&d).await.unwrap();
    assert!(!ingest_dir(dir.path(), &d).exists());
    store.abort_ingest(&d).await.unwrap();
    assert!(store.ingests().await.unwrap().iter().all(|s| s.digest != d));
}

#[tokio::test]
async fn resumes_a_data_file_left_read_only_by_an_interrupted_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
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
    let store = open(dir.path()).await;
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
