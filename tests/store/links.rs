//! Links planted in the store and roots other users can write: a victim file outside the
//! store is never written, truncated or chmodded, and an unsafe root is refused with the fix.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _, symlink};

use super::*;

/// A file outside the store that a planted link points at.
struct Victim {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

const PRECIOUS: &[u8] = b"precious bytes that must never change\n";

impl Victim {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("victim");
        fs::write(&path, PRECIOUS).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        Self { _dir: dir, path }
    }

    #[track_caller]
    fn assert_untouched(&self) {
        assert_eq!(
            fs::read(&self.path).unwrap(),
            PRECIOUS,
            "the victim's content changed"
        );
        let mode = fs::metadata(&self.path).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o600, "the victim's mode changed");
    }
}

#[track_caller]
fn assert_regular_file(path: &Path) {
    let m = fs::symlink_metadata(path).unwrap();
    assert!(
        m.file_type().is_file(),
        "{} is not a regular file",
        path.display()
    );
}

#[tokio::test]
async fn a_link_at_the_lock_path_is_refused_and_its_target_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let victim = Victim::new();
    fs::create_dir(&root).unwrap();
    fs::set_permissions(&root, fs::Permissions::from_mode(0o750)).unwrap();
    symlink(&victim.path, root.join("lock")).unwrap();

    let err = Store::open(&root, Duration::ZERO).await.unwrap_err();
    victim.assert_untouched();
    assert!(matches!(err, StoreError::UnsafeLockFile { .. }), "{err:?}");
    let msg = err.to_string();
    let lock = root.join("lock");
    for want in [lock.to_str().unwrap(), "symbolic link", "rm "] {
        assert!(msg.contains(want), "{want:?} missing from: {msg}");
    }
    // The fix the message gives works.
    fs::remove_file(&lock).unwrap();
    open(&root).await;
}

#[tokio::test]
async fn a_lock_file_with_a_second_name_is_refused_and_its_target_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    fs::create_dir(&root).unwrap();
    fs::set_permissions(&root, fs::Permissions::from_mode(0o750)).unwrap();
    // Same filesystem as the store, so a hard link is possible.
    let victim = dir.path().join("victim");
    fs::write(&victim, PRECIOUS).unwrap();
    fs::hard_link(&victim, root.join("lock")).unwrap();

    let err = Store::open(&root, Duration::ZERO).await.unwrap_err();
    assert_eq!(fs::read(&victim).unwrap(), PRECIOUS);
    assert!(matches!(err, StoreError::UnsafeLockFile { .. }), "{err:?}");
    assert!(err.to_string().contains("hard links"), "{err}");
}

#[tokio::test]
async fn links_planted_at_ingest_temp_paths_are_replaced_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = open(root).await;
    let victim = Victim::new();

    // checkpoint.tmp inside an open ingest.
    let body = content(200_000, 40);
    let d = Digest::of(&body);
    let mut ing = store.ingest(&d, body.len() as u64, LAYER).await.unwrap();
    ing.write(&body[..100_000]).await.unwrap();
    let planted = ingest_dir(root, &d).join("checkpoint.tmp");
    symlink(&victim.path, &planted).unwrap();
    ing.checkpoint().await.unwrap();
    victim.assert_untouched();
    assert_eq!(checkpoint_on_disk(root, &d), 100_000);
    assert_regular_file(&ingest_dir(root, &d).join("checkpoint"));
    assert!(fs::symlink_metadata(&planted).is_err(), "the link is gone");
    ing.write(&body[100_000..]).await.unwrap();
    ing.commit().await.unwrap();

    // The temp file of put_blob (the first one of a store is numbered 0).
    let small = b"{\"small\":true}";
    let sd = Digest::of(small);
    symlink(&victim.path, root.join(format!("ingest/put-{}-0.tmp", sd.hex()))).unwrap();
    store.put_blob(&sd, small).await.unwrap();
    victim.assert_untouched();
    assert_regular_file(&store.blob_path(&sd));
    assert_eq!(fs::read(store.blob_path(&sd)).unwrap(), small);
}

#[tokio::test]
async fn a_link_at_index_json_tmp_is_replaced_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = open(root).await;
    let victim = Victim::new();
    let layer = Descriptor::new(LAYER, Digest::of(b"l"), 1);
    let config = Descriptor::new("application/vnd.oci.image.config.v1+json", Digest::of(b"c"), 1);
    let manifest = put_manifest(&store, &layer, &config).await;

    symlink(&victim.path, root.join("oci/index.json.tmp")).unwrap();
    store.set_image("app:1", &manifest, None).await.unwrap();
    victim.assert_untouched();
    assert_regular_file(&root.join("oci/index.json"));
    let images = store.images().await.unwrap();
    assert_eq!(images[0].descriptor.digest, manifest.digest);
}

#[tokio::test]
async fn a_link_in_place_of_ingest_data_is_never_followed_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = open(root).await;
    let body = content(100_000, 41);
    let d = Digest::of(&body);
    {
        let mut ing = store.ingest(&d, body.len() as u64, LAYER).await.unwrap();
        ing.write(&body[..10]).await.unwrap();
        ing.checkpoint().await.unwrap();
    }
    let victim = Victim::new();
    let data = ingest_dir(root, &d).join("data");
    fs::remove_file(&data).unwrap();
    symlink(&victim.path, &data).unwrap();

    let mut ing = store.ingest(&d, body.len() as u64, LAYER).await.unwrap();
    victim.assert_untouched();
    assert_eq!(ing.resumed_from(), 0, "a linked data file is not resumed");
    ing.write(&body).await.unwrap();
    ing.commit().await.unwrap();
    victim.assert_untouched();
    assert_eq!(fs::read(store.blob_path(&d)).unwrap(), body);
}

#[tokio::test]
async fn a_store_root_others_can_write_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    fs::create_dir(&root).unwrap();
    for mode in [0o777, 0o770, 0o757] {
        fs::set_permissions(&root, fs::Permissions::from_mode(mode)).unwrap();
        let err = Store::open(&root, Duration::ZERO).await.unwrap_err();
        assert!(matches!(err, StoreError::UnsafeDirectory { .. }), "{err:?}");
        let msg = err.to_string();
        let mode_text = format!("mode {mode:04o}");
        let fix = format!("chmod 0750 {}", root.display());
        for want in [mode_text.as_str(), "owner uid", fix.as_str()] {
            assert!(msg.contains(want), "{want:?} missing from: {msg}");
        }
        assert!(
            !root.join("lock").exists(),
            "nothing is created in a refused root"
        );
    }
    fs::set_permissions(&root, fs::Permissions::from_mode(0o750)).unwrap();
    open(&root).await;
}

#[tokio::test]
async fn a_store_root_owned_by_another_user_is_refused() {
    if rustix::process::geteuid().as_raw() != 0 {
        println!("skipped: giving the root to another uid needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    fs::create_dir(&root).unwrap();
    fs::set_permissions(&root, fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::chown(&root, Some(4242), Some(4242)).unwrap();
    let err = Store::open(&root, Duration::ZERO).await.unwrap_err();
    assert!(matches!(err, StoreError::UnsafeDirectory { .. }), "{err:?}");
    let msg = err.to_string();
    for want in ["uid 4242", "another user", "chown"] {
        assert!(msg.contains(want), "{want:?} missing from: {msg}");
    }
}

#[tokio::test]
async fn a_parent_others_can_write_is_refused_unless_sticky() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
    let root = shared.join("store");
    let err = Store::open(&root, Duration::ZERO).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::UnsafeDirectory { .. }), "{err:?}");
    let fix = format!("chmod go-w {}", shared.display());
    assert!(msg.contains(&fix), "{msg}");
    // With the sticky bit (as /tmp), others cannot replace the store directory.
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
    open(&root).await;
}

#[tokio::test]
async fn a_link_in_place_of_a_store_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let elsewhere = tempfile::tempdir().unwrap();
    open(&root).await;
    fs::rename(root.join("ingest"), elsewhere.path().join("ingest")).unwrap();
    symlink(elsewhere.path().join("ingest"), root.join("ingest")).unwrap();
    let err = Store::open(&root, Duration::ZERO).await.unwrap_err();
    assert!(matches!(err, StoreError::NotADirectory { .. }), "{err:?}");
    assert!(err.to_string().contains("symbolic link"), "{err}");
}

#[tokio::test]
async fn a_root_reached_through_a_link_in_a_shared_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    let shared = dir.path().join("shared");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
    open(&real).await;
    // Anyone could replace this link with one to a store of their own.
    let link = shared.join("store");
    symlink(&real, &link).unwrap();
    let err = Store::open(&link, Duration::ZERO).await.unwrap_err();
    assert!(matches!(err, StoreError::UnsafeDirectory { .. }), "{err:?}");
    assert!(err.to_string().contains(shared.to_str().unwrap()), "{err}");
}

#[tokio::test]
async fn a_linked_ingest_directory_is_never_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = open(&root).await;
    let body = content(100_000, 42);
    let d = Digest::of(&body);
    {
        let mut ing = store.ingest(&d, body.len() as u64, LAYER).await.unwrap();
        ing.write(&body[..10]).await.unwrap();
        ing.checkpoint().await.unwrap();
    }
    // Move the ingest out and link it back: its `data` is now a victim outside the store.
    let outside = tempfile::tempdir().unwrap();
    let moved = outside.path().join("ingest");
    fs::rename(ingest_dir(&root, &d), &moved).unwrap();
    fs::write(moved.join("data"), PRECIOUS).unwrap();
    symlink(&moved, ingest_dir(&root, &d)).unwrap();

    let mut ing = store.ingest(&d, body.len() as u64, LAYER).await.unwrap();
    assert_eq!(fs::read(moved.join("data")).unwrap(), PRECIOUS);
    assert_eq!(ing.resumed_from(), 0);
    assert!(
        !fs::symlink_metadata(ingest_dir(&root, &d))
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link was replaced by a directory of the store's own"
    );
    ing.write(&body).await.unwrap();
    ing.commit().await.unwrap();
    assert_eq!(fs::read(moved.join("data")).unwrap(), PRECIOUS);
}
