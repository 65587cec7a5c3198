//! The start-up scrub (`Store::scrub`, `store.verify_on_start`): after an unclean stop the
//! current images' blobs are re-hashed and a corrupt one is deleted; after a clean stop
//! nothing is read unless the policy says `always`.

use edgepull::store::{Corruption, ScrubReport};
use edgepull_core::store::VerifyOnStart;

use super::*;

struct Image {
    layer: Descriptor,
    manifest: Descriptor,
    /// Bytes of the manifest, config and layer.
    total: u64,
}

const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// An image (config, a 300 kB layer through an ingest, manifest) recorded as `app:1`; the
/// store is dropped (a clean release).
async fn stored_image(root: &Path) -> Image {
    let store = open(root).await;
    let config_bytes = br#"{"architecture":"arm64","os":"linux"}"#;
    let config = Descriptor::new(CONFIG_TYPE, Digest::of(config_bytes), config_bytes.len() as u64);
    store.put_blob(&config.digest, config_bytes).await.unwrap();
    let body = content(300_000, 60);
    let layer = Descriptor::new(LAYER, Digest::of(&body), body.len() as u64);
    let mut ing = store.ingest(&layer.digest, layer.size, LAYER).await.unwrap();
    ing.write(&body).await.unwrap();
    ing.commit().await.unwrap();
    let manifest = put_manifest(&store, &layer, &config).await;
    store.set_image("app:1", &manifest, None).await.unwrap();
    let total = manifest.size + config.size + layer.size;
    Image {
        layer,
        manifest,
        total,
    }
}

/// What a SIGKILL or a power cut leaves: the holder's pid still in the lock file.
fn simulate_unclean_stop(root: &Path) {
    fs::write(root.join("lock"), b"4242\n").unwrap();
}

async fn open_and_scrub(root: &Path, policy: VerifyOnStart) -> (Store, ScrubReport) {
    let store = open(root).await;
    let report = store.scrub(policy).await.unwrap();
    (store, report)
}

#[tokio::test]
async fn after_an_unclean_stop_a_flipped_byte_is_found_removed_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let image = stored_image(root).await;
    let layer_path = root.join("oci/blobs/sha256").join(image.layer.digest.hex());
    corrupt_one_byte(&layer_path);
    simulate_unclean_stop(root);

    let (store, report) = open_and_scrub(root, VerifyOnStart::Unclean).await;
    assert!(store.recovery().unclean_shutdown);
    assert!(report.ran && report.unclean && !report.full, "{report:?}");
    assert_eq!(report.checked, 3, "{report:?}");
    assert_eq!(report.bytes, image.total, "{report:?}");
    assert_eq!(report.removed.len(), 1, "{report:?}");
    assert_eq!(report.removed[0].digest, image.layer.digest);
    assert!(matches!(
        report.removed[0].problem,
        Corruption::DigestMismatch { .. }
    ));
    assert!(
        !layer_path.exists(),
        "the corrupt layer is gone, so the next pull fetches it"
    );
    // What is left verifies: the layer is only missing.
    let v = store.verify().await.unwrap();
    assert!(
        v.corrupt.is_empty() && v.missing == vec![image.layer.digest],
        "{v:?}"
    );
    drop(store);

    // The scrub ran, so the next start is clean and reads nothing.
    let (store, report) = open_and_scrub(root, VerifyOnStart::Unclean).await;
    assert!(!store.recovery().unclean_shutdown);
    assert!(!report.ran && report.bytes == 0, "{report:?}");
}

#[tokio::test]
async fn never_reads_nothing_and_the_scrub_stays_pending_for_a_later_start() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let image = stored_image(root).await;
    let layer_path = root.join("oci/blobs/sha256").join(image.layer.digest.hex());
    corrupt_one_byte(&layer_path);
    simulate_unclean_stop(root);

    let (store, report) = open_and_scrub(root, VerifyOnStart::Never).await;
    assert!(!report.ran && report.unclean, "{report:?}");
    assert_eq!((report.checked, report.bytes), (0, 0));
    assert!(layer_path.exists(), "never: not checked");
    drop(store);
    // Another open without a scrub (e.g. `edgepull store list`) keeps it pending too.
    drop(open(root).await);

    let (_store, report) = open_and_scrub(root, VerifyOnStart::Unclean).await;
    assert!(report.ran && report.unclean, "{report:?}");
    assert_eq!(report.removed.len(), 1, "{report:?}");
    assert!(!layer_path.exists());
}

#[tokio::test]
async fn after_a_clean_stop_unclean_hashes_nothing_and_always_hashes_everything() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let image = stored_image(root).await;

    let (store, report) = open_and_scrub(root, VerifyOnStart::Unclean).await;
    assert!(!report.unclean && !report.ran, "{report:?}");
    assert_eq!((report.checked, report.bytes), (0, 0));
    let report = store.scrub(VerifyOnStart::Always).await.unwrap();
    assert!(report.ran && report.removed.is_empty(), "{report:?}");
    assert_eq!((report.checked, report.bytes), (3, image.total));
}

#[tokio::test]
async fn a_corrupt_current_manifest_makes_the_scrub_read_every_blob() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let image = stored_image(root).await;
    let layer_path = root.join("oci/blobs/sha256").join(image.layer.digest.hex());
    corrupt_one_byte(&layer_path);
    corrupt_one_byte(&root.join("oci/blobs/sha256").join(image.manifest.digest.hex()));
    simulate_unclean_stop(root);

    let (_store, report) = open_and_scrub(root, VerifyOnStart::Unclean).await;
    assert!(report.full, "{report:?}");
    let mut removed: Vec<Digest> = report.removed.iter().map(|c| c.digest).collect();
    removed.sort();
    let mut want = vec![image.manifest.digest, image.layer.digest];
    want.sort();
    assert_eq!(removed, want, "{report:?}");
    assert_eq!(report.bytes, image.total);
}

#[tokio::test]
async fn a_truncated_blob_is_removed_without_hashing_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let image = stored_image(root).await;
    let layer_path = root.join("oci/blobs/sha256").join(image.layer.digest.hex());
    corrupt_one_byte(&layer_path);
    let f = fs::OpenOptions::new().write(true).open(&layer_path).unwrap();
    f.set_len(1000).unwrap();
    simulate_unclean_stop(root);

    let (_store, report) = open_and_scrub(root, VerifyOnStart::Unclean).await;
    assert_eq!(report.removed.len(), 1, "{report:?}");
    assert_eq!(
        report.removed[0].problem,
        Corruption::SizeMismatch {
            expected: image.layer.size,
            actual: 1000
        }
    );
    assert_eq!(report.bytes, image.total - image.layer.size);
}
