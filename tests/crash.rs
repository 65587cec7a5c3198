//! The real binary under hostile conditions: SIGKILL at random moments during a multi-layer
//! pull, and a full filesystem (a loop-mounted ext4 image).
//!
//! The crash loop is seeded: set `EDGEPULL_CRASH_SEED` to replay a run (the seed is
//! printed). The disk-full test needs root to mount; it prints `skipped: …` and returns
//! when `mount` is refused (`tests/store/full.rs` covers the same through the store's
//! write budget seam, which always runs).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use edgepull_core::oci::Digest;
use edgepull_testkit::{ServerName, random_bytes};

const MIB: u64 = 1024 * 1024;
const CHECKPOINT_BYTES: u64 = 256 * 1024;

fn edgepull(config: &Path, args: &[&str]) -> Output {
    binary()
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run edgepull")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// splitmix64: a small seeded generator, so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn seed() -> u64 {
    match std::env::var("EDGEPULL_CRASH_SEED") {
        Ok(s) => s.parse().expect("EDGEPULL_CRASH_SEED is a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    }
}

/// After a kill: `index.json`, when present, parses; every blob that appeared since the last
/// check hashes to its name (committed blobs never change, so each is read once).
fn check_store_after_kill(root: &Path, verified: &mut BTreeSet<String>, kill: u32) {
    let index = root.join("oci/index.json");
    if let Ok(bytes) = std::fs::read(&index)
        && let Err(e) = serde_json::from_slice::<serde_json::Value>(&bytes)
    {
        panic!("after kill {kill}: index.json does not parse: {e}");
    }
    let Ok(entries) = std::fs::read_dir(root.join("oci/blobs/sha256")) else {
        return;
    };
    for e in entries {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if verified.contains(&name) {
            continue;
        }
        let bytes = std::fs::read(e.path()).unwrap();
        assert_eq!(
            Digest::of(&bytes).hex(),
            name,
            "after kill {kill}: a visible blob does not match its name"
        );
        verified.insert(name);
    }
}

/// Push a fresh image of 4 layers of 4–8 MiB (sizes from `rng`) under `tag`; its blobs.
fn push_crash_image(env: &Env, rng: &mut Rng, tag: &str) -> Vec<edgepull_core::oci::Descriptor> {
    let layers: Vec<Vec<u8>> = (0..4)
        .map(|_| random_bytes(rng.range(4 * MIB, 8 * MIB) as usize))
        .collect();
    env.fake
        .push_image_for("app", tag, &platform("linux/arm64"), layers)
        .1
}

/// Pulls are SIGKILLed at seeded random moments (100–700 ms after the start: opening the
/// store, resuming, downloading, committing, updating the index). When a pull completes
/// between two kills, the loop goes on with a fresh image, so every run makes its 30 kills
/// however fast the machine is; the byte bound sums the images pulled.
#[test]
fn sigkill_at_random_moments_never_shows_bad_bytes_and_the_pull_completes() {
    const KILLS: u32 = 30;
    let seed = seed();
    println!("crash loop seed: {seed} (replay with EDGEPULL_CRASH_SEED={seed})");
    let mut rng = Rng(seed);

    let env = Env::token();
    // One blob in flight, so a kill loses at most what that blob wrote since its last
    // durable checkpoint (plus the chunk on the wire).
    env.edit_config(|c| {
        c["store"]["checkpoint_bytes"] = CHECKPOINT_BYTES.into();
        c["concurrency"] = 1.into();
    });
    env.fake.set_rate_limit(Some(4 * MIB));
    let root = env.store_path();
    let started = Instant::now();

    let mut round = 0u32;
    let mut tag = format!("crash-{round}");
    let mut blobs = push_crash_image(&env, &mut rng, &tag);
    let mut image_bytes: u64 = blobs.iter().map(|b| b.size).sum();
    let mut kills = 0u32;
    let mut runs = 0u32;
    let mut verified = BTreeSet::new();
    while kills < KILLS {
        runs += 1;
        assert!(
            runs < 4 * KILLS,
            "edgepull kept exiting before it could be killed"
        );
        let mut child = binary()
            .arg("--config")
            .arg(&env.config_path)
            .args(["pull", &format!("app:{tag}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn edgepull");
        std::thread::sleep(Duration::from_millis(rng.range(100, 700)));
        if let Some(status) = child.try_wait().unwrap() {
            // It completed before the kill: the image is there; go on with a new one.
            assert!(status.success(), "edgepull exited with {status} between kills");
            check_store_after_kill(&root, &mut verified, kills);
            for b in &blobs {
                assert!(verified.contains(&b.digest.hex()), "{} not stored", b.digest);
            }
            round += 1;
            tag = format!("crash-{round}");
            blobs = push_crash_image(&env, &mut rng, &tag);
            image_bytes += blobs.iter().map(|b| b.size).sum::<u64>();
            continue;
        }
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        kills += 1;
        check_store_after_kill(&root, &mut verified, kills);
    }

    // Let the last one finish, at full speed.
    env.fake.set_rate_limit(None);
    let out = edgepull(&env.config_path, &["pull", &format!("app:{tag}")]);
    assert!(out.status.success(), "final pull: {}", text(&out));
    let verify = edgepull(&env.config_path, &["store", "verify"]);
    assert!(verify.status.success(), "store verify: {}", text(&verify));
    check_store_after_kill(&root, &mut verified, kills);
    for b in &blobs {
        assert!(verified.contains(&b.digest.hex()), "{} not stored", b.digest);
    }

    let served = env.eastus_bytes();
    let bound = image_bytes + u64::from(kills) * CHECKPOINT_BYTES;
    println!(
        "crash loop: {kills} kills in {runs} runs over {} image(s); {served} blob bytes served for {image_bytes} bytes of images \
         (bound {bound}; {:.1}% over the images, {} bytes per kill); {:?}",
        round + 1,
        (served as f64 - image_bytes as f64) * 100.0 / image_bytes as f64,
        served.saturating_sub(image_bytes) / u64::from(kills),
        started.elapsed()
    );
    assert!(served >= image_bytes, "{served} < {image_bytes}");
    assert!(
        served <= bound,
        "served {served} bytes, more than the bound {bound} (seed {seed})"
    );
}

/// A loop-mounted ext4 image, unmounted on drop.
struct LoopMount {
    dir: PathBuf,
}

impl LoopMount {
    /// `Err(reason)` when it cannot be mounted here (not root, no mkfs.ext4, mount refused).
    fn new(parent: &Path, bytes: u64) -> Result<Self, String> {
        if rustix::process::geteuid().as_raw() != 0 {
            return Err("mounting a filesystem needs root".into());
        }
        let image = parent.join("fs.img");
        let f = std::fs::File::create(&image).map_err(|e| e.to_string())?;
        f.set_len(bytes).map_err(|e| e.to_string())?;
        drop(f);
        // -m 0: no blocks reserved for root (the test runs as root).
        let mkfs = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(&image)
            .output()
            .map_err(|e| format!("mkfs.ext4: {e}"))?;
        if !mkfs.status.success() {
            return Err(format!("mkfs.ext4 failed: {}", text(&mkfs)));
        }
        let dir = parent.join("mnt");
        std::fs::create_dir(&dir).map_err(|e| e.to_string())?;
        let mount = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&dir)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !mount.status.success() {
            return Err(format!("mount refused: {}", text(&mount).trim()));
        }
        Ok(Self { dir })
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// Bytes free for this process on the filesystem holding `path`.
fn available(path: &Path) -> u64 {
    let s = rustix::fs::statvfs(path).expect("statvfs");
    s.f_bavail * s.f_frsize
}

#[test]
fn a_full_ext4_filesystem_fails_clearly_and_the_pull_resumes_after_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = match LoopMount::new(dir.path(), 32 * MIB) {
        Ok(m) => m,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    let env = Env::token();
    let store = mnt.dir.join("store");
    env.edit_config(|c| {
        c["store"]["path"] = store.to_string_lossy().into_owned().into();
        c["store"]["checkpoint_bytes"] = CHECKPOINT_BYTES.into();
    });
    let (_, blobs) = env.fake.push_image_for(
        "app",
        "full",
        &platform("linux/arm64"),
        vec![random_bytes(8 * MIB as usize)],
    );
    let layer = blobs[1].clone();
    // Leave about 3 MiB free.
    let filler = mnt.dir.join("filler");
    let fill = available(&mnt.dir).saturating_sub(3 * MIB);
    std::fs::write(&filler, vec![0x5a; fill as usize]).unwrap();

    let out = edgepull(&env.config_path, &["pull", "app:full"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(74), "a store error: {said}");
    let data = store
        .join("ingest")
        .join(format!("sha256-{}", layer.digest.hex()))
        .join("data");
    for want in [
        "no space left on the store filesystem",
        data.to_str().unwrap(),
        "more bytes needed",
    ] {
        assert!(said.contains(want), "{want:?} missing from: {said}");
    }
    // Nothing visible is corrupt.
    let index = std::fs::read(store.join("oci/index.json")).unwrap();
    serde_json::from_slice::<serde_json::Value>(&index).expect("index.json parses");
    assert!(!has_blob_file(&store, &layer.digest));
    let checkpoint: u64 = std::fs::read_to_string(data.with_file_name("checkpoint"))
        .expect("a checkpoint survives")
        .trim()
        .parse()
        .unwrap();
    assert!(checkpoint >= MIB, "checkpoint {checkpoint}");
    let verify = edgepull(&env.config_path, &["store", "verify"]);
    assert!(verify.status.success(), "{}", text(&verify));

    // Space is freed: the next run resumes from the checkpoint.
    std::fs::remove_file(&filler).unwrap();
    env.fake.clear_log();
    let out = edgepull(&env.config_path, &["pull", "app:full"]);
    assert!(out.status.success(), "{}", text(&out));
    let ranges: Vec<String> = env
        .fake
        .requests_to(ServerName::EastUs)
        .into_iter()
        .filter_map(|r| r.range)
        .collect();
    assert_eq!(ranges, vec![format!("bytes={checkpoint}-")]);
    assert_eq!(env.eastus_bytes(), layer.size - checkpoint);
    let verify = edgepull(&env.config_path, &["store", "verify"]);
    assert!(verify.status.success(), "{}", text(&verify));
}

#[test]
fn after_an_unclean_stop_the_daemon_re_hashes_and_fetches_a_corrupt_layer_again() {
    let env = Env::token();
    let (_, blobs) = env.fake.push_image_for(
        "app",
        "scrub",
        &platform("linux/arm64"),
        vec![random_bytes(MIB as usize)],
    );
    let layer = blobs[1].clone();
    let out = edgepull(&env.config_path, &["pull", "app:scrub"]);
    assert!(out.status.success(), "{}", text(&out));

    // Same name and size, one byte flipped; and the process "died" holding the lock.
    let store = env.store_path();
    let path = store.join("oci/blobs/sha256").join(layer.digest.hex());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[1234] ^= 0x55;
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    std::fs::write(store.join("lock"), b"4242\n").unwrap();

    env.edit_config(|c| {
        c["images"] = serde_json::json!([{ "ref": "app:scrub", "interval_secs": 3600 }]);
        c["store"]["min_free_bytes"] = 0.into();
    });
    env.fake.clear_log();
    let mut daemon = binary()
        .arg("--config")
        .arg(&env.config_path)
        .args(["run", "--log-format", "text"])
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start edgepull run");
    let deadline = Instant::now() + Duration::from_secs(30);
    let repaired = loop {
        if std::fs::read(&path).is_ok_and(|b| Digest::of(&b) == layer.digest) {
            break true;
        }
        if Instant::now() > deadline || daemon.try_wait().unwrap().is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let pid = rustix::process::Pid::from_raw(daemon.id() as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    let status = daemon.wait().unwrap();
    assert!(repaired, "the daemon never fetched the corrupt layer again");
    assert!(status.success(), "daemon exit: {status}");
    // Only the corrupt layer was fetched again.
    assert_eq!(env.eastus_bytes(), layer.size);
    let verify = edgepull(&env.config_path, &["store", "verify"]);
    assert!(verify.status.success(), "{}", text(&verify));
    // The scrub ran and the daemon stopped in order: the lock file is empty again.
    assert_eq!(std::fs::read(store.join("lock")).unwrap(), b"");
}
