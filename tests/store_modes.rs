//! The store's file modes do not depend on the process umask: directories 0750, files 0640,
//! blobs 0440, under umask 0 and under umask 077.
//!
//! A test binary of its own, with a single test: the umask is per process, so nothing else
//! may run in this process while it is changed.

use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::time::Duration;

use edgepull::store::Store;
use edgepull_core::oci::{Descriptor, Digest};
use rustix::fs::Mode;

const LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// Every entry under `root` (the root included) with its permission bits.
fn modes(root: &Path) -> Vec<(String, bool, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).unwrap();
        let name = p.strip_prefix(root).unwrap().display().to_string();
        out.push((name, m.is_dir(), m.mode() & 0o7777));
        if m.is_dir() {
            stack.extend(fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    out.sort();
    out
}

/// Open a store under `parent` (creating `parent/a/store`), leave a partial ingest, commit a
/// blob, store a manifest and record it: every kind of file the store writes.
fn populate(parent: &Path) -> std::path::PathBuf {
    let root = parent.join("a").join("store");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Store::open(&root, Duration::ZERO).await.unwrap();
        let body = vec![7u8; 100_000];
        let d = Digest::of(&body);
        let mut ing = store.ingest(&d, body.len() as u64, LAYER).await.unwrap();
        ing.write(&body).await.unwrap();
        ing.commit().await.unwrap();
        let partial = vec![9u8; 5000];
        let mut ing = store
            .ingest(&Digest::of(&partial), 5000, LAYER)
            .await
            .unwrap();
        ing.write(&partial[..100]).await.unwrap();
        ing.checkpoint().await.unwrap();
        drop(ing);
        let config = br#"{"os":"linux"}"#;
        store.put_blob(&Digest::of(config), config).await.unwrap();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": Descriptor::new("application/vnd.oci.image.config.v1+json", Digest::of(config), config.len() as u64),
            "layers": [Descriptor::new(LAYER, d, body.len() as u64)],
        })
        .to_string();
        let md = Digest::of(manifest.as_bytes());
        store.put_blob(&md, manifest.as_bytes()).await.unwrap();
        let desc = Descriptor::new("application/vnd.oci.image.manifest.v1+json", md, manifest.len() as u64);
        store.set_image("app:1", &desc, None).await.unwrap();
    });
    root
}

#[track_caller]
fn assert_store_modes(parent: &Path, root: &Path, umask: u32) {
    let all = modes(root);
    let blobs = Path::new("oci/blobs/sha256");
    let mut seen = (0, 0, 0);
    for (name, is_dir, mode) in &all {
        let want = if *is_dir {
            seen.0 += 1;
            0o750
        } else if Path::new(name).parent() == Some(blobs) {
            seen.1 += 1;
            0o440
        } else {
            seen.2 += 1;
            0o640
        };
        assert_eq!(
            *mode, want,
            "umask {umask:03o}: {name:?} has mode {mode:04o}, want {want:04o}"
        );
    }
    // root, oci, blobs, sha256, ingest, one ingest dir; 3 blobs; lock, oci-layout,
    // index.json, meta.json, checkpoint, data.
    assert_eq!(seen, (6, 3, 6), "umask {umask:03o}: {all:?}");
    // The directory created above the store has the store's mode too.
    let above = fs::metadata(parent.join("a")).unwrap().mode() & 0o7777;
    assert_eq!(above, 0o750, "umask {umask:03o}");
}

#[test]
fn modes_do_not_depend_on_the_umask() {
    for umask in [0o000, 0o077] {
        // Made before the umask changes: under umask 0 it would be writable by all (and
        // the store would rightly refuse to live in it).
        let dir = tempfile::tempdir().unwrap();
        let old = rustix::process::umask(Mode::from_bits_truncate(umask));
        let root = populate(dir.path());
        rustix::process::umask(old);
        assert_store_modes(dir.path(), &root, umask);
    }
    directories_left_wider_are_narrowed_at_open();
}

/// Directories an older version left 0755 are narrowed to 0750 when the store opens.
fn directories_left_wider_are_narrowed_at_open() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let root = populate(dir.path());
    for sub in ["oci", "oci/blobs", "oci/blobs/sha256", "ingest"] {
        fs::set_permissions(root.join(sub), fs::Permissions::from_mode(0o755)).unwrap();
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    drop(rt.block_on(Store::open(&root, Duration::ZERO)).unwrap());
    for sub in ["oci", "oci/blobs", "oci/blobs/sha256", "ingest"] {
        let mode = fs::metadata(root.join(sub)).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o750, "{sub}");
    }
}
