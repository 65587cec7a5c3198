//! Black-box tests of the content store: commit visibility, integrity refusals, resume
//! from durable checkpoints, the OCI layout and index, the store lock, verify and recovery.
//!
//! By subject: `store/ingest.rs` (writes, checkpoints, resume, commit), `store/layout.rs`
//! (small blobs, `index.json`, verify), `store/lifecycle.rs` (the lock, start-up
//! recovery), `store/links.rs` (planted links, unsafe roots), `store/scrub.rs` (the
//! start-up re-hash), `store/power.rs` (power-cut damage, then a pull from the fake
//! registry) and `store/full.rs` (a full disk). The helpers they share are here.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use edgepull::store::{Ingest, Store, StoreError};
use edgepull_core::oci::manifest::OCI_MANIFEST;
use edgepull_core::oci::{Descriptor, Digest};

#[path = "common/mod.rs"]
mod common;
#[path = "store/full.rs"]
mod full;
#[path = "store/ingest.rs"]
mod ingest;
#[path = "store/layout.rs"]
mod layout;
#[path = "store/lifecycle.rs"]
mod lifecycle;
#[path = "store/links.rs"]
mod links;
#[path = "store/power.rs"]
mod power;
#[path = "store/scrub.rs"]
mod scrub;

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

async fn open(root: &Path) -> Store {
    Store::open(root, Duration::ZERO).await.expect("open store")
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

async fn put_manifest(store: &Store, layer: &Descriptor, config: &Descriptor) -> Descriptor {
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config,
        "layers": [layer],
    })
    .to_string();
    let d = Digest::of(body.as_bytes());
    store.put_blob(&d, body.as_bytes()).await.unwrap();
    Descriptor::new(OCI_MANIFEST, d, body.len() as u64)
}

#[test]
fn store_and_ingest_are_thread_safe() {
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}
    assert_send_sync::<Store>();
    assert_send::<Ingest>();
    assert_send_sync::<StoreError>();
}
