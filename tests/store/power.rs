//! Power-loss damage: the store is damaged the way a power cut can leave it, then a pull
//! from the fake registry completes. Recovery resumes (a `Range` from the durable
//! checkpoint) or fetches again; the bytes fetched are only what was lost, and the final
//! store verifies with every blob byte-identical to the registry's.

use std::fs::OpenOptions;
use std::io::Write as _;

use edgepull_core::store::VerifyOnStart;
use edgepull_testkit::{ServerName, random_bytes};

use super::common::{Env, platform, pull, rt};
use super::*;

const TAG: &str = "power";

/// A registry with one image: config, a 512 KiB layer and a 2 MiB layer.
struct Setup {
    env: Env,
    /// Config first, then the layers.
    blobs: Vec<Descriptor>,
}

impl Setup {
    fn new() -> Self {
        let env = Env::token();
        let (_, blobs) = env.fake.push_image_for(
            "app",
            TAG,
            &platform("linux/arm64"),
            vec![random_bytes(512 * 1024), random_bytes(2 * MIB)],
        );
        Self { env, blobs }
    }

    fn root(&self) -> PathBuf {
        self.env.store_path()
    }

    fn big(&self) -> &Descriptor {
        &self.blobs[2]
    }

    /// Every blob byte of the image.
    fn total(&self) -> u64 {
        self.blobs.iter().map(|b| b.size).sum()
    }

    /// Leave an ingest of `desc` as a crash would: `checkpointed` bytes durable, then more
    /// bytes written up to `written` but not checkpointed.
    fn partial(&self, desc: &Descriptor, checkpointed: usize, written: usize) {
        let bytes = self.env.fake.blob(&desc.digest).unwrap();
        rt().block_on(async {
            let store = open(&self.root()).await;
            let mut ing = store
                .ingest(&desc.digest, desc.size, &desc.media_type)
                .await
                .unwrap();
            ing.set_checkpoint_bytes(u64::MAX);
            ing.set_checkpoint_interval(Duration::from_secs(3600));
            ing.write(&bytes[..checkpointed]).await.unwrap();
            ing.checkpoint().await.unwrap();
            ing.write(&bytes[checkpointed..written]).await.unwrap();
        });
    }

    fn ingest_file(&self, desc: &Descriptor, name: &str) -> PathBuf {
        ingest_dir(&self.root(), &desc.digest).join(name)
    }

    /// Pull the image; returns the body bytes the data endpoint sent and its `Range`s.
    fn pull(&self) -> (u64, Vec<String>) {
        self.env.fake.clear_log();
        let puller = self.env.puller();
        pull(&self.env, &puller, TAG).unwrap_or_else(|e| panic!("pull: {}", edgepull::error_chain(&e)));
        drop(puller);
        let ranges = self
            .env
            .fake
            .requests_to(ServerName::EastUs)
            .into_iter()
            .filter_map(|r| r.range)
            .collect();
        (self.env.eastus_bytes(), ranges)
    }

    /// A complete pull, then the store is released.
    fn pull_all(&self) {
        let (bytes, _) = self.pull();
        assert_eq!(bytes, self.total());
    }

    /// The store verifies, records the image, and holds exactly the registry's bytes.
    fn assert_good(&self) {
        let store = self.env.open_store();
        let report = rt().block_on(store.verify()).unwrap();
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(rt().block_on(store.images()).unwrap().len(), 1);
        for b in &self.blobs {
            let on_disk = fs::read(store.blob_path(&b.digest)).unwrap();
            assert!(
                on_disk == self.env.fake.blob(&b.digest).unwrap(),
                "{} differs",
                b.digest
            );
        }
        assert!(rt().block_on(store.ingests()).unwrap().is_empty());
    }
}

#[test]
fn data_longer_than_its_checkpoint_resumes_from_the_checkpoint() {
    let s = Setup::new();
    let cp = MIB;
    s.partial(s.big(), cp, MIB + MIB / 2);
    let (bytes, ranges) = s.pull();
    assert_eq!(ranges, vec![format!("bytes={cp}-")]);
    assert_eq!(bytes, s.total() - cp as u64);
    s.assert_good();
}

#[test]
fn a_zero_filled_tail_after_the_checkpoint_is_cut_and_fetched_again() {
    let s = Setup::new();
    let cp = MIB;
    s.partial(s.big(), cp, cp);
    // A power cut after the file grew but before its blocks were written reads as zeros.
    let mut f = OpenOptions::new()
        .append(true)
        .open(s.ingest_file(s.big(), "data"))
        .unwrap();
    f.write_all(&vec![0u8; 700_000]).unwrap();
    drop(f);
    let (bytes, ranges) = s.pull();
    assert_eq!(ranges, vec![format!("bytes={cp}-")]);
    assert_eq!(bytes, s.total() - cp as u64);
    s.assert_good();
}

#[test]
fn zeros_under_the_checkpoint_are_caught_by_the_digest_and_fetched_from_zero() {
    let s = Setup::new();
    let cp = MIB;
    s.partial(s.big(), cp, cp);
    // A disk that lied about an fsync: durable-looking bytes that are zeros.
    let data = s.ingest_file(s.big(), "data");
    let mut bytes = fs::read(&data).unwrap();
    bytes[1000..5000].fill(0);
    fs::write(&data, bytes).unwrap();
    let (fetched, ranges) = s.pull();
    assert_eq!(
        ranges,
        vec![format!("bytes={cp}-")],
        "resumed once, then from zero"
    );
    assert_eq!(fetched, s.total() - cp as u64 + s.big().size);
    s.assert_good();
}

#[test]
fn a_torn_or_missing_meta_json_restarts_that_blob_from_zero() {
    for damage in ["torn", "missing"] {
        let s = Setup::new();
        s.partial(s.big(), MIB, MIB);
        let meta = s.ingest_file(s.big(), "meta.json");
        match damage {
            "torn" => {
                let full = fs::read(&meta).unwrap();
                fs::write(&meta, &full[..full.len() / 2]).unwrap();
            }
            _ => fs::remove_file(&meta).unwrap(),
        }
        let (bytes, ranges) = s.pull();
        assert!(ranges.is_empty(), "{damage}: {ranges:?}");
        assert_eq!(bytes, s.total(), "{damage}");
        s.assert_good();
    }
}

#[test]
fn a_torn_missing_or_impossible_checkpoint_restarts_from_zero() {
    for damage in ["empty", "garbage", "missing", "beyond the data"] {
        let s = Setup::new();
        s.partial(s.big(), MIB, MIB);
        let cp = s.ingest_file(s.big(), "checkpoint");
        match damage {
            "empty" => fs::write(&cp, b"").unwrap(),
            "garbage" => fs::write(&cp, b"10485\x00\x00").unwrap(),
            "missing" => fs::remove_file(&cp).unwrap(),
            // The checkpoint survived but the data it covers did not.
            _ => fs::write(&cp, format!("{}\n", 2 * MIB - 1)).unwrap(),
        }
        let (bytes, ranges) = s.pull();
        assert!(ranges.is_empty(), "{damage}: {ranges:?}");
        assert_eq!(bytes, s.total(), "{damage}");
        s.assert_good();
    }
}

#[test]
fn a_leftover_index_json_tmp_is_removed_and_the_index_stays_valid() {
    let s = Setup::new();
    s.pull_all();
    let root = s.root();
    let index_before = fs::read(root.join("oci/index.json")).unwrap();
    fs::write(
        root.join("oci/index.json.tmp"),
        &index_before[..index_before.len() / 3],
    )
    .unwrap();
    let (bytes, _) = s.pull();
    assert_eq!(bytes, 0, "nothing was lost");
    assert!(!root.join("oci/index.json.tmp").exists());
    serde_json::from_slice::<serde_json::Value>(&fs::read(root.join("oci/index.json")).unwrap()).unwrap();
    s.assert_good();
}

#[test]
fn a_blob_whose_rename_was_lost_is_fetched_again() {
    let s = Setup::new();
    s.pull_all();
    // The directory entry of the rename never reached the disk: index.json names a blob
    // that is not there.
    fs::remove_file(s.root().join("oci/blobs/sha256").join(s.big().digest.hex())).unwrap();
    let (bytes, _) = s.pull();
    assert_eq!(bytes, s.big().size);
    s.assert_good();
}

#[test]
fn a_blob_left_short_is_fetched_again() {
    let s = Setup::new();
    s.pull_all();
    let path = s.root().join("oci/blobs/sha256").join(s.big().digest.hex());
    corrupt_one_byte(&path);
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(100_000)
        .unwrap();
    let (bytes, _) = s.pull();
    assert_eq!(bytes, s.big().size);
    s.assert_good();
}

#[test]
fn a_blob_with_wrong_bytes_is_found_by_the_scrub_after_an_unclean_stop_and_fetched_again() {
    let s = Setup::new();
    s.pull_all();
    let root = s.root();
    // Right name and size, wrong content: only a re-hash can tell.
    corrupt_one_byte(&root.join("oci/blobs/sha256").join(s.big().digest.hex()));
    // The process died holding the lock: its pid is still there.
    fs::write(root.join("lock"), b"4242\n").unwrap();
    let report = rt().block_on(async {
        let store = open(&root).await;
        store.scrub(VerifyOnStart::default()).await.unwrap()
    });
    assert_eq!(report.removed.len(), 1, "{report:?}");
    assert_eq!(report.removed[0].digest, s.big().digest);
    let (bytes, _) = s.pull();
    assert_eq!(bytes, s.big().size);
    s.assert_good();
}
