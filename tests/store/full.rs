//! A full disk, through the store's write budget seam (`set_write_budget_for_tests`, which
//! fails writes with `ENOSPC` as a full filesystem does): a clear "no space" error naming the
//! file and the bytes needed, nothing visible corrupted, and the pull resumes from the
//! checkpoint (`Range`) once space is freed. `tests/crash.rs` does the same on a real,
//! loop-mounted ext4 filesystem when it can mount one.

use std::sync::Arc;

use edgepull::exit::Category;
use edgepull::progress::Silent;
use edgepull_testkit::{ServerName, random_bytes};

use super::common::{Env, fast_retry, platform, pull, rt};
use super::*;

#[test]
fn a_full_disk_mid_layer_fails_clearly_keeps_the_store_valid_and_resumes_later() {
    let env = Env::token();
    env.edit_config(|c| c["store"]["checkpoint_bytes"] = serde_json::json!(256 * 1024));
    let (_, blobs) = env.fake.push_image_for(
        "app",
        "full",
        &platform("linux/arm64"),
        vec![random_bytes(3 * MIB)],
    );
    let layer = blobs[1].clone();
    let total: u64 = blobs.iter().map(|b| b.size).sum();
    let cfg = env.config();
    let store = env.open_store();
    let mut puller = edgepull::app::puller_blocking(&cfg, store.clone(), Arc::new(Silent)).unwrap();
    puller.set_retry(fast_retry());
    // One blob at a time, config first: the budget then runs out in the layer, always (with
    // both downloading at once, the layer could use it up before the config's last bytes).
    puller.set_concurrency(1);

    // Room for the config, the ingest's small files and about 1.3 MiB of the layer.
    store.set_write_budget_for_tests(Some(1_300_000 + 4096));
    let err = pull(&env, &puller, "full").expect_err("the disk is full");
    assert_eq!(err.category(), Category::Store, "{}", edgepull::error_chain(&err));
    let chain = edgepull::error_chain(&err);
    let data = ingest_dir(&env.store_path(), &layer.digest).join("data");
    for want in [
        "no space left on the store filesystem".to_string(),
        data.display().to_string(),
        "more bytes needed".to_string(),
        "resumes from its last checkpoint".to_string(),
    ] {
        assert!(chain.contains(&want), "{want:?} missing from: {chain}");
    }
    // The needed bytes are the rest of the layer from where the write failed.
    let needed: u64 = chain
        .split(" more bytes needed")
        .next()
        .and_then(|s| s.rsplit('(').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in: {chain}"));
    assert!(needed > 1_000_000 && needed < layer.size, "{needed}");

    // Nothing visible is corrupt: no layer, no image, index.json intact, the store verifies.
    let root = env.store_path();
    assert!(!store.blob_path(&layer.digest).exists());
    assert!(rt().block_on(store.images()).unwrap().is_empty());
    let report = rt().block_on(store.verify()).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert!(!root.join("oci/index.json.tmp").exists());
    // The durable checkpoint is at most one checkpoint interval (256 KiB, plus the chunk
    // that crossed it) behind the byte the disk refused.
    let checkpoint = checkpoint_on_disk(&root, &layer.digest);
    let failed_at = layer.size - needed;
    assert!(
        checkpoint > 0 && failed_at - checkpoint < 2 * 256 * 1024,
        "checkpoint {checkpoint}, failed at {failed_at}"
    );

    // Space is freed: the same puller resumes from the checkpoint.
    store.set_write_budget_for_tests(None);
    env.fake.clear_log();
    pull(&env, &puller, "full").unwrap_or_else(|e| panic!("{}", edgepull::error_chain(&e)));
    let ranges: Vec<String> = env
        .fake
        .requests_to(ServerName::EastUs)
        .into_iter()
        .filter_map(|r| r.range)
        .collect();
    assert_eq!(ranges, vec![format!("bytes={checkpoint}-")]);
    assert_eq!(env.eastus_bytes(), layer.size - checkpoint);
    let report = rt().block_on(store.verify()).unwrap();
    assert!(
        report.is_clean() && report.bytes == total + cfg_manifest_len(&store),
        "{report:?}"
    );
}

/// Bytes of the stored manifest (verify hashes it too).
fn cfg_manifest_len(store: &Store) -> u64 {
    let images = rt().block_on(store.images()).unwrap();
    images[0].descriptor.size
}

#[tokio::test]
async fn a_full_disk_during_an_index_update_keeps_the_old_index() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = open(root).await;
    let layer = Descriptor::new(LAYER, Digest::of(b"l"), 1);
    let config = Descriptor::new("application/vnd.oci.image.config.v1+json", Digest::of(b"c"), 1);
    let manifest = put_manifest(&store, &layer, &config).await;
    let before = fs::read(root.join("oci/index.json")).unwrap();

    store.set_write_budget_for_tests(Some(10));
    let err = store.set_image("app:1", &manifest, None).await.unwrap_err();
    assert!(err.is_no_space(), "{err:?}");
    let msg = err.to_string();
    let tmp = root.join("oci/index.json.tmp");
    assert!(msg.contains(tmp.to_str().unwrap()), "{msg}");
    assert!(msg.contains("more bytes needed"), "{msg}");
    assert_eq!(fs::read(root.join("oci/index.json")).unwrap(), before);
    assert!(!tmp.exists(), "the temp file of the failed write is removed");

    store.set_write_budget_for_tests(None);
    store.set_image("app:1", &manifest, None).await.unwrap();
    assert_eq!(store.images().await.unwrap().len(), 1);
}
