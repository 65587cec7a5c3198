//! The store lock and start-up recovery.

use std::time::Instant;

use super::*;

#[tokio::test]
async fn second_open_fails_with_locked_naming_the_pid_then_succeeds_after_drop() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path()).await;
    let start = Instant::now();
    let err = Store::open(dir.path(), Duration::from_millis(300))
        .await
        .unwrap_err();
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
    assert!(
        Store::open(dir.path(), Duration::ZERO)
            .await
            .unwrap_err()
            .is_locked()
    );
    drop(clone);
    let again = Store::open(dir.path(), Duration::ZERO).await.unwrap();
    drop(again);
}

#[tokio::test]
async fn an_open_ingest_keeps_the_store_locked() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let ing = store.ingest(&Digest::of(b"x"), 1, LAYER).await.unwrap();
    drop(store);
    assert!(
        Store::open(dir.path(), Duration::ZERO)
            .await
            .unwrap_err()
            .is_locked()
    );
    drop(ing);
    Store::open(dir.path(), Duration::ZERO).await.unwrap();
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
        let store = open(root).await;
        let mut ing = store.ingest(&d, body.len() as u64, LAYER).await.unwrap();
        ing.write(&body[..50_000]).await.unwrap();
        ing.checkpoint().await.unwrap();
        // An ingest whose blob got committed, but whose directory survived a crash.
        let mut ing2 = store.ingest(&dd, 10, LAYER).await.unwrap();
        ing2.write(&done).await.unwrap();
        ing2.checkpoint().await.unwrap();
        store.put_blob(&dd, &done).await.unwrap();
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

    let store = open(root).await;
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
    assert!(store.has_blob(&dd, 10).await);

    // The kept ingest resumes.
    let mut ing = store.ingest(&d, body.len() as u64, LAYER).await.unwrap();
    assert_eq!(ing.resumed_from(), 50_000);
    ing.write(&body[50_000..]).await.unwrap();
    ing.commit().await.unwrap();
}
