//! edgepull against software nobody here wrote: Debian's distribution 2.8
//! (`docker-registry`) as the login server, with token, htpasswd or no auth and the
//! `redirect` storage middleware sending blob GETs to nginx, which plays the regions'
//! dedicated data endpoints; skopeo pushes the images and pulls them for comparison;
//! skopeo and umoci read what edgepull stored. Every test runs the real `edgepull` binary.
//!
//! All on loopback, started and torn down by each test (see `real_registry/world.rs`).
//! Host names reach addresses only through edgepull's `resolve` config.
//! `scripts/real-registry-deps` installs the tools; with `CI` set a missing tool fails the
//! test, otherwise the test prints `skipped: <tool> missing` and passes.

#[path = "real_registry/mod.rs"]
mod support;

#[path = "real_registry/link.rs"]
mod link;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use edgepull_core::oci::Digest;
use serde_json::Value;
use support::net::wait_until;
use support::nginx::DataLine;
use support::oci_image::*;
use support::world::*;

/// Every regular file under `root`: relative path → content.
fn files_under(root: &Path) -> Files {
    fn walk(root: &Path, dir: &Path, out: &mut Files) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
            let entry = entry.expect("dir entry");
            let path = entry.path();
            let kind = entry.file_type().expect("file type");
            if kind.is_dir() {
                walk(root, &path, out);
            } else if kind.is_file() {
                let rel = path.strip_prefix(root).expect("under root");
                out.insert(
                    rel.to_string_lossy().into_owned(),
                    std::fs::read(&path).expect("read file"),
                );
            }
        }
    }
    let mut out = Files::new();
    walk(root, root, &mut out);
    out
}

/// Compare file trees by name and digest (the contents are megabytes of random bytes).
fn assert_same_files(actual: &Files, expected: &Files, what: &str) {
    let summary = |f: &Files| -> BTreeMap<String, String> {
        f.iter()
            .map(|(k, v)| (k.clone(), Digest::of(v).to_string()))
            .collect()
    };
    assert_eq!(
        summary(actual),
        summary(expected),
        "{what}: unpacked files differ"
    );
}

/// `org.opencontainers.image.ref.name` → manifest digest, from an OCI layout's index.json.
fn layout_refs(layout: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(layout.join("index.json")).expect("index.json");
    let v: Value = serde_json::from_str(&text).expect("index.json is JSON");
    v["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .filter_map(|m| {
            Some((
                m["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()?
                    .to_string(),
                m["digest"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// The manifest digest plus the config and layer digests it names, read from a layout.
fn reachable_blobs(layout: &Path, manifest: &str) -> BTreeSet<String> {
    let hex = manifest.strip_prefix("sha256:").expect("sha256 digest");
    let text = std::fs::read_to_string(layout.join("blobs/sha256").join(hex)).expect("manifest blob");
    let m: Value = serde_json::from_str(&text).expect("manifest JSON");
    let mut out = BTreeSet::from([manifest.to_string()]);
    out.insert(m["config"]["digest"].as_str().expect("config").to_string());
    for l in m["layers"].as_array().expect("layers") {
        out.insert(l["digest"].as_str().expect("layer digest").to_string());
    }
    out
}

/// File names under `<layout>/blobs/sha256`.
fn blob_files(layout: &Path) -> BTreeSet<String> {
    std::fs::read_dir(layout.join("blobs/sha256"))
        .expect("blobs dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

/// Body bytes the data endpoint sent for `digest`, over all its requests.
fn sent_for(lines: &[DataLine], digest: &Digest) -> u64 {
    lines
        .iter()
        .filter(|l| l.blob_hex() == Some(digest.hex().as_str()))
        .map(|l| l.sent)
        .sum()
}

/// `(digest, size)` of the config and every layer of `image`.
fn blobs_of(image: &Image) -> Vec<(Digest, u64)> {
    let mut v = vec![(image.config, image.config_size)];
    v.extend(image.layers.iter().map(|l| (l.digest, l.size)));
    v
}

/// A small single-arch image: two layers of random files plus a small text file.
fn small_image(layout: &mut Layout, tag: &str) -> Image {
    let mut etc = Files::new();
    etc.insert("etc/app/version".into(), format!("{tag}\n").into_bytes());
    layout.image(
        tag,
        &LINUX_ARM64,
        vec![
            random_files("opt/app", 3, 200_000),
            etc,
            random_files("var/lib/app", 2, 70_000),
        ],
    )
}

// ---------------------------------------------------------------------------------------
// 1. Pulls complete; skopeo and umoci read the result.

/// nginx eastus's log lines for `blob`.
fn lines_for(w: &World, blob: &Digest) -> Vec<DataLine> {
    w.nginx
        .log("eastus")
        .into_iter()
        .filter(|l| l.blob_hex() == Some(blob.hex().as_str()))
        .collect()
}

/// The layer's requests after an interruption: the cut one (a plain 200 GET) and exactly
/// one `Range: bytes=<checkpoint>-` (206, the rest of the layer); no other request of the
/// whole log carried a `Range`, and none carried credentials. Returns (cut, resumed).
#[track_caller]
fn assert_one_resume(w: &World, layer: &Layer, checkpoint: u64) -> (DataLine, DataLine) {
    let lines = lines_for(w, &layer.digest);
    let all = w.nginx.log_text("eastus");
    assert_eq!(lines.len(), 2, "two requests for the layer:\n{all}");
    let (cut, resumed) = (&lines[0], &lines[1]);
    assert_eq!((cut.status, cut.range.as_deref()), (200, None), "{}", cut.raw);
    assert_eq!(resumed.status, 206, "{}", resumed.raw);
    assert_eq!(
        resumed.range.as_deref(),
        Some(format!("bytes={checkpoint}-").as_str()),
        "the Range starts at the checkpoint: {}",
        resumed.raw
    );
    assert_eq!(
        resumed.sent,
        layer.size - checkpoint,
        "the rest of the layer, once"
    );
    let ranged = w.nginx.log("eastus").iter().filter(|l| l.range.is_some()).count();
    assert_eq!(ranged, 1, "one Range request in all:\n{all}");
    for l in w.nginx.log("eastus") {
        assert!(!l.auth, "no Authorization at the data endpoint: {}", l.raw);
    }
    (cut.clone(), resumed.clone())
}

#[test]
fn pulled_images_are_read_by_skopeo_and_unpacked_by_umoci() {
    let Some(w) = World::start(WorldOptions::default()) else {
        return;
    };
    let mut layout = Layout::create(&w.path().join("src"));
    let single = small_image(&mut layout, "1.0");
    // 200 plain tar layers (the others are gzip): both layer media types are covered.
    layout.set_gzip(false);
    let many = layout.image(
        "many",
        &LINUX_ARM64,
        (0..200)
            .map(|i| random_files(&format!("layers/{i:03}"), 1, 1500))
            .collect(),
    );
    layout.set_gzip(true);
    let multi = layout.index(
        "multi",
        vec![
            (LINUX_AMD64, vec![random_files("arch/amd64", 2, 40_000)]),
            (LINUX_ARM64, vec![random_files("arch/arm64", 2, 40_000)]),
            (LINUX_ARMV7, vec![random_files("arch/armv7", 2, 40_000)]),
        ],
    );
    w.push(&layout.dir, "1.0", false);
    w.push(&layout.dir, "many", false);
    w.push(&layout.dir, "multi", true);

    let reg = w.registry("login", AuthKind::Token, Some("eastus"));
    let store = w.path().join("store");
    let cfg = w.config(&reg, AuthKind::Token, &store, |_| {});
    let cases = [
        ("single", w.reference(&reg, "1.0"), &single),
        ("many", w.reference(&reg, "many"), &many),
        ("multi", w.reference(&reg, "multi"), multi.image(&LINUX_ARM64)),
        // By digest: the recorded name then holds '@' and "sha256:" as well.
        (
            "by-digest",
            format!("{}/{REPO}@{}", w.login(&reg), single.manifest),
            &single,
        ),
    ];
    let refs: Vec<&str> = cases.iter().map(|(_, r, _)| r.as_str()).collect();
    let out = w.pull(&cfg, &refs).expect_success("edgepull pull");
    for (_, r, image) in &cases {
        assert!(
            out.stdout.contains(&format!("{r} -> {}", image.manifest)),
            "pull output names {r} -> {}:\n{}",
            image.manifest,
            out.stdout
        );
    }
    w.edgepull(&cfg, &["store", "verify"])
        .expect_success("edgepull store verify");

    let oci = store.join("oci");
    assert_eq!(
        layout_refs(&oci),
        cases
            .iter()
            .map(|(_, r, i)| (r.clone(), i.manifest.to_string()))
            .collect(),
        "index.json names each image by the reference as given"
    );
    for (label, r, image) in &cases {
        // skopeo's oci transport splits `oci:<path>:<name>` at the first colon, so a
        // name holding `host:port/repo:tag` works as long as the path has no colon (with
        // one, skopeo looks for `<path up to it>/index.json` and umoci reports "invalid
        // image detected").
        let source = format!("oci:{}:{r}", oci.display());
        let inspect = w
            .skopeo(&["inspect", &source])
            .expect_success(&format!("skopeo inspect {source}"));
        let v: Value = serde_json::from_str(&inspect.stdout).expect("skopeo inspect JSON");
        assert_eq!(v["Digest"], image.manifest.to_string(), "{label}: digest");
        assert_eq!(v["Architecture"], "arm64", "{label}: architecture");
        let layers: Vec<String> = image.layers.iter().map(|l| l.digest.to_string()).collect();
        assert_eq!(v["Layers"], serde_json::json!(layers), "{label}: layers");

        // A byte-exact copy out of edgepull's layout (without --preserve-digests skopeo
        // would gzip the plain tar layers of "many" on the way).
        let copy = w.path().join(format!("copy-{label}"));
        w.skopeo(&[
            "copy",
            "--preserve-digests",
            &source,
            &format!("oci:{}:x", copy.display()),
        ])
        .expect_success(&format!("skopeo copy {source}"));
        assert_eq!(
            layout_refs(&copy).get("x"),
            Some(&image.manifest.to_string()),
            "{label}: the copy has the same manifest"
        );

        // umoci's --image also splits at the first colon and accepts this name.
        let bundle = w.path().join(format!("bundle-{label}"));
        let image_arg = format!("{}:{r}", oci.display());
        w.umoci(&[
            "unpack",
            "--rootless",
            "--image",
            &image_arg,
            bundle.to_str().expect("utf-8"),
        ])
        .expect_success(&format!("umoci unpack {image_arg}"));
        assert_same_files(&files_under(&bundle.join("rootfs")), &image.files(), label);
    }
}

// ---------------------------------------------------------------------------------------
// 2. Every blob byte from the region's endpoint, no Authorization there, no blob body
//    from the registry.

#[test]
fn every_blob_byte_comes_from_the_region_endpoint_without_authorization() {
    let Some(w) = World::start(WorldOptions::default()) else {
        return;
    };
    let mut layout = Layout::create(&w.path().join("src"));
    let image = small_image(&mut layout, "1.0");
    w.push(&layout.dir, "1.0", false);
    let reg = w.registry("login", AuthKind::Token, Some("eastus"));
    let store = w.path().join("store");
    let cfg = w.config(&reg, AuthKind::Token, &store, |_| {});
    w.pull(&cfg, &[&w.reference(&reg, "1.0")])
        .expect_success("edgepull pull");

    let east = w.nginx.log("eastus");
    let blobs = blobs_of(&image);
    assert_eq!(
        east.len(),
        blobs.len(),
        "one request per blob:\n{}",
        w.nginx.log_text("eastus")
    );
    for line in &east {
        assert!(
            !line.auth,
            "Authorization reached the data endpoint: {}",
            line.raw
        );
        assert_eq!(line.method, "GET", "{}", line.raw);
        assert_eq!(line.status, 200, "{}", line.raw);
        assert_eq!(line.host, w.nginx.endpoint("eastus"), "{}", line.raw);
    }
    for (digest, size) in &blobs {
        assert_eq!(sent_for(&east, digest), *size, "bytes of {digest} from eastus");
    }
    assert_eq!(w.nginx.log_text("westus"), "", "westus saw nothing");

    // The login server answered every blob GET with a 307 (no body); it served manifests only.
    let access = reg.access();
    let blob_gets: Vec<_> = access.iter().filter(|a| a.is_blob_get()).collect();
    assert_eq!(
        blob_gets.len(),
        blobs.len(),
        "one blob GET per blob at the registry"
    );
    for a in &blob_gets {
        assert_eq!(a.status, 307, "the registry served a blob itself: {}", a.raw);
    }
    let requested: BTreeSet<String> = blob_gets
        .iter()
        .filter_map(|a| a.path.rsplit('/').next().map(str::to_string))
        .collect();
    let expected: BTreeSet<String> = blobs.iter().map(|(d, _)| d.to_string()).collect();
    assert_eq!(requested, expected);
    assert!(
        access
            .iter()
            .all(|a| a.by_edgepull() && (a.status != 200 || a.path.contains("/manifests/"))),
        "only manifests came from the registry with a 200:\n{}",
        access
            .iter()
            .map(|a| a.raw.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// 3. A redirect to the other region is refused; that region hears nothing.

#[test]
fn redirect_to_the_other_region_is_refused_with_the_policy_exit_code() {
    let Some(w) = World::start(WorldOptions::default()) else {
        return;
    };
    let mut layout = Layout::create(&w.path().join("src"));
    let image = small_image(&mut layout, "1.0");
    w.push(&layout.dir, "1.0", false);
    // A login server whose middleware points at westus; the device is in eastus.
    let reg = w.registry("login-westus", AuthKind::Token, Some("westus"));
    let store = w.path().join("store");
    let cfg = w.config(&reg, AuthKind::Token, &store, |_| {});
    let out = w.pull(&cfg, &[&w.reference(&reg, "1.0")]);
    assert_eq!(
        out.code(),
        10,
        "policy exit code expected:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    let westus = w.nginx.site("westus").host();
    assert!(
        out.stderr.contains(&westus),
        "the error names {westus}:\n{}",
        out.stderr
    );
    assert_eq!(w.nginx.log_text("westus"), "", "westus was never contacted");
    assert_eq!(w.nginx.log_text("eastus"), "", "nothing was downloaded at all");
    // The refusal happened at the redirect: the registry did answer blob GETs with 307.
    assert!(
        reg.access().iter().any(|a| a.is_blob_get() && a.status == 307),
        "the registry issued the westus redirect"
    );
    for (digest, _) in blobs_of(&image) {
        assert!(
            !store.join("oci/blobs/sha256").join(digest.hex()).exists(),
            "{digest} must not be stored"
        );
    }
    let list = w
        .edgepull(&cfg, &["store", "list", "--json"])
        .expect_success("store list");
    assert_eq!(list.stdout.trim(), "[]", "no image recorded");
}

// ---------------------------------------------------------------------------------------
// 4. SIGKILL mid-layer, then a re-run resumes with a Range from the checkpoint.

#[test]
fn killed_pull_resumes_from_its_checkpoint_with_a_range_request() {
    const RATE: u64 = 1024 * 1024;
    const CHECKPOINT: u64 = 256 * 1024;
    const LAYER: usize = 4 * 1024 * 1024;
    let Some(w) = World::start(WorldOptions {
        eastus_rate: Some(RATE),
        ..Default::default()
    }) else {
        return;
    };
    let mut layout = Layout::create(&w.path().join("src"));
    let image = layout.image("big", &LINUX_ARM64, vec![random_files("big", 1, LAYER)]);
    w.push(&layout.dir, "big", false);
    let layer = &image.layers[0];
    let reg = w.registry("login", AuthKind::Token, Some("eastus"));
    let store = w.path().join("store");
    let cfg = w.config(&reg, AuthKind::Token, &store, |c| {
        c["store"]["checkpoint_bytes"] = CHECKPOINT.into();
        c["concurrency"] = 1.into();
    });
    let reference = w.reference(&reg, "big");
    let checkpoint_file = store
        .join("ingest")
        .join(format!("sha256-{}", layer.digest.hex()))
        .join("checkpoint");
    let read_checkpoint = || -> u64 {
        std::fs::read_to_string(&checkpoint_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };

    // Run 1: SIGKILL mid-way between two checkpoints, once past 1.5 MiB. At RATE nginx
    // writes 64 KiB every ~62 ms, so a checkpoint (every CHECKPOINT = 4 writes) lands every
    // ~250 ms; killing 120 ms after one has been seen leaves about two writes unsaved.
    let log1 = w.path().join("edgepull-run1.log");
    let mut run1 = w.spawn_edgepull(&cfg, &["pull", "--no-progress", &reference], &log1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while read_checkpoint() < 6 * CHECKPOINT {
        if let Some(status) = run1.exited() {
            panic!(
                "edgepull exited early ({status}):\n{}",
                std::fs::read_to_string(&log1).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint past 1.5 MiB within 30 s"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(120));
    let status = run1.kill();
    let data_len = std::fs::metadata(checkpoint_file.with_file_name("data")).map_or(0, |m| m.len());
    assert!(!status.success(), "edgepull was killed, not finished");
    let checkpoint = read_checkpoint();
    assert!(
        checkpoint >= 6 * CHECKPOINT && checkpoint < layer.size,
        "checkpoint {checkpoint} inside the layer"
    );
    assert!(
        !store.join("oci/blobs/sha256").join(layer.digest.hex()).exists(),
        "the layer is not complete"
    );
    // nginx logs the cut request once it notices the client has gone.
    wait_until(
        "nginx logs the cut request",
        Duration::from_secs(10),
        || !lines_for(&w, &layer.digest).is_empty(),
        || None,
    )
    .expect("nginx log line for run 1");

    // Run 2: resumes.
    let out = w
        .pull(&cfg, &[&reference])
        .expect_success("edgepull pull after the kill");
    assert!(
        out.stderr.contains("resuming from checkpoint")
            && out.stderr.contains(&format!("offset={checkpoint}")),
        "edgepull says it resumes from {checkpoint}:\n{}",
        out.stderr
    );
    let (first, second) = assert_one_resume(&w, layer, checkpoint);
    eprintln!("nginx eastus log, the layer:\n{}\n{}", first.raw, second.raw);
    // Bytes lost to the kill = what run 1 was sent beyond its checkpoint: bytes edgepull
    // received after its last durable checkpoint, plus bytes nginx had handed to the kernel
    // that edgepull had not read yet. The store checkpoints every CHECKPOINT bytes or every
    // 5 s, whichever comes first; at RATE, 5 s is 5 MiB, so the byte interval binds: at most
    // CHECKPOINT bytes are ever unsaved. edgepull reads each rate-limited 64 KiB write as it
    // arrives, so almost nothing is in flight: the total stays within the layer plus one
    // interval. (When run 1 had written more than it checkpointed, the Range above also
    // shows the resume starts at the checkpoint, not at the length of the partial file.)
    let total = first.sent + second.sent;
    let lost = first.sent - checkpoint;
    eprintln!(
        "layer {} bytes; run 1 sent {}, wrote {data_len}, checkpoint {checkpoint}, lost {lost}; run 2 sent {}; total {total}",
        layer.size, first.sent, second.sent
    );
    assert!(
        first.sent >= checkpoint,
        "run 1 sent at least what it checkpointed"
    );
    assert!(
        total <= layer.size + CHECKPOINT,
        "total {total} exceeds layer {} + one checkpoint interval {CHECKPOINT}",
        layer.size
    );
    for line in w.nginx.log("eastus") {
        assert!(!line.auth, "{}", line.raw);
    }
    w.edgepull(&cfg, &["store", "verify"])
        .expect_success("store verify after resume");
}

// ---------------------------------------------------------------------------------------
// 5. Tokens that expire during the pull are renewed.

#[test]
fn tokens_shorter_lived_than_the_pull_are_renewed() {
    const LIFETIME: Duration = Duration::from_secs(10);
    const RATE: u64 = 256 * 1024;
    let Some(w) = World::start(WorldOptions {
        eastus_rate: Some(RATE),
        token_lifetime: LIFETIME,
        enforce_token_lifetime: true,
    }) else {
        return;
    };
    let mut layout = Layout::create(&w.path().join("src"));
    // Four 1 MiB layers, one at a time, at 256 KiB/s: about 4 s each (nginx's rate
    // accounting works in whole seconds), 16 s in all; the last redirect comes at ~12 s.
    let image = layout.image(
        "slow",
        &LINUX_ARM64,
        (0..4)
            .map(|i| random_files(&format!("slow/{i}"), 1, 1024 * 1024))
            .collect(),
    );
    w.push(&layout.dir, "slow", false);
    let reg = w.registry("login", AuthKind::Token, Some("eastus"));
    let store = w.path().join("store");
    let cfg = w.config(&reg, AuthKind::Token, &store, |c| c["concurrency"] = 1.into());
    // A token taken now: the registry must refuse it once LIFETIME has passed.
    let early_token = w.device_token();
    let v2 = format!("https://127.0.0.1:{}/v2/", reg.port);
    assert_eq!(
        w.https_get(&v2, Some(&format!("Bearer {early_token}"))).status,
        200,
        "a fresh token works"
    );

    let tokens_before = w.tokens.requests().len();
    let started = Instant::now();
    w.pull(&cfg, &[&w.reference(&reg, "slow")])
        .expect_success("edgepull pull");
    let took = started.elapsed();
    assert!(
        took > LIFETIME + Duration::from_secs(1),
        "the pull took {took:?}, longer than a token lives"
    );

    // The registry itself refuses an expired token (so a client that did not renew would
    // have failed).
    let stale = w.https_get(&v2, Some(&format!("Bearer {early_token}")));
    assert_eq!(stale.status, 401, "an expired token is refused: {stale:?}");
    assert!(
        stale
            .www_authenticate
            .as_deref()
            .unwrap_or("")
            .contains("invalid_token"),
        "{stale:?}"
    );

    let edgepull_tokens: Vec<_> = w.tokens.requests()[tokens_before..]
        .iter()
        .filter(|r| r.user.as_deref() == Some(w.device.name.as_str()) && r.status == 200)
        .cloned()
        .collect();
    assert!(
        edgepull_tokens.len() >= 2,
        "edgepull took a fresh token during the pull: {edgepull_tokens:?}"
    );
    for t in &edgepull_tokens {
        assert_eq!(t.granted, vec![format!("repository:{REPO}:pull")], "{t:?}");
    }
    let first_token_at = edgepull_tokens[0].at;
    let token_times: Vec<f64> = edgepull_tokens.iter().map(|t| t.at - first_token_at).collect();

    // Fresh redirects: every blob got its own 307 from the login server when its turn came,
    // and some came after the first token had expired at the registry: those were
    // authorized by a renewed token.
    let blob_gets: Vec<_> = reg.access().into_iter().filter(|a| a.is_blob_get()).collect();
    assert_eq!(
        blob_gets.iter().filter(|a| a.status == 307).count(),
        blobs_of(&image).len(),
        "a redirect per blob"
    );
    assert!(blob_gets.iter().all(|a| a.status == 307 || a.status == 401));
    let east = w.nginx.log("eastus");
    for (digest, size) in blobs_of(&image) {
        assert_eq!(sent_for(&east, &digest), size, "{digest} in full from eastus");
    }
    let starts: Vec<f64> = east.iter().map(|l| l.started() - first_token_at).collect();
    eprintln!(
        "pull took {took:?}; token requests at {token_times:?} s; data requests started at {starts:?} s"
    );
    let late = starts
        .iter()
        .filter(|s| **s > LIFETIME.as_secs_f64() + 0.5)
        .count();
    assert!(
        late >= 1,
        "a blob was redirected after the first token expired: {starts:?}"
    );
    assert!(east.iter().all(|l| !l.auth));
}

// ---------------------------------------------------------------------------------------
// 6. Basic auth and anonymous registries.

#[test]
fn basic_auth_registry_pulls_through_the_data_endpoint() {
    let Some(w) = World::start(WorldOptions::default()) else {
        return;
    };
    let mut layout = Layout::create(&w.path().join("src"));
    let image = small_image(&mut layout, "1.0");
    w.push(&layout.dir, "1.0", false);
    let token_requests_before = w.tokens.requests().len();
    // htpasswd auth, still redirecting blob GETs to eastus: blob_source stays data-endpoint.
    let reg = w.registry("login-basic", AuthKind::Basic, Some("eastus"));
    let store = w.path().join("store");
    let cfg = w.config(&reg, AuthKind::Basic, &store, |_| {});
    let out = w
        .pull(&cfg, &[&w.reference(&reg, "1.0")])
        .expect_success("edgepull pull (Basic)");
    assert!(out.stdout.contains(&image.manifest.to_string()));

    let east = w.nginx.log("eastus");
    for (digest, size) in blobs_of(&image) {
        assert_eq!(sent_for(&east, &digest), size, "{digest} from eastus");
    }
    assert!(
        east.iter().all(|l| !l.auth),
        "the Basic password never reached the data endpoint:\n{}",
        w.nginx.log_text("eastus")
    );
    let access = reg.access();
    assert_eq!(access.first().map(|a| a.status), Some(401), "challenged first");
    assert!(access.iter().filter(|a| a.is_blob_get()).all(|a| a.status == 307));
    // htpasswd logs "authorized request" only for valid Basic credentials.
    assert!(
        reg.app_log_text().contains("authorized request"),
        "the registry authenticated the device by Basic"
    );
    assert_eq!(
        w.tokens.requests().len(),
        token_requests_before,
        "no token server involved"
    );
}

#[test]
fn anonymous_registry_pulls_with_and_without_a_data_endpoint() {
    let Some(w) = World::start(WorldOptions::default()) else {
        return;
    };
    let mut layout = Layout::create(&w.path().join("src"));
    let image = small_image(&mut layout, "1.0");
    w.push(&layout.dir, "1.0", false);

    // a) No auth, redirecting to eastus: the default blob_source (data-endpoint).
    let redirecting = w.registry("login-anon", AuthKind::Anonymous, Some("eastus"));
    let store_a = w.path().join("store-a");
    let cfg_a = w.config(&redirecting, AuthKind::Anonymous, &store_a, |_| {});
    w.pull(&cfg_a, &[&w.reference(&redirecting, "1.0")])
        .expect_success("anonymous pull via the data endpoint");
    let east = w.nginx.log("eastus");
    for (digest, size) in blobs_of(&image) {
        assert_eq!(sent_for(&east, &digest), size, "{digest} from eastus");
    }
    assert!(east.iter().all(|l| !l.auth));
    assert!(
        redirecting.access().iter().all(|a| a.status != 401),
        "never challenged"
    );

    // b) No auth and no redirect (a plain registry): only blob_source "registry" pulls.
    // The refused pull talks to an instance of its own: distribution writes the access line
    // of a body edgepull refused whenever its handler notices, which can be after edgepull
    // exited, so counting that instance's lines from "now" on would race.
    let plain_refused = w.registry("login-plain-refused", AuthKind::Anonymous, None);
    let plain = w.registry("login-plain", AuthKind::Anonymous, None);
    let store_b = w.path().join("store-b");
    let cfg_refused = w.config(&plain_refused, AuthKind::Anonymous, &store_b, |_| {});
    let refused = w.pull(&cfg_refused, &[&w.reference(&plain_refused, "1.0")]);
    assert_eq!(
        refused.code(),
        10,
        "data-endpoint policy refuses a blob served by the login server:\n{}",
        refused.stderr
    );
    let cfg_b = w.config(&plain, AuthKind::Anonymous, &store_b, |c| {
        c["registry"]["blob_source"] = "registry".into();
        let reg = c["registry"].as_object_mut().expect("registry");
        reg.remove("data_endpoints");
        reg["resolve"]
            .as_object_mut()
            .expect("resolve")
            .retain(|host, _| host == LOGIN_HOST);
    });
    let before = plain.access().len();
    w.pull(&cfg_b, &[&w.reference(&plain, "1.0")])
        .expect_success("anonymous pull from the registry itself");
    assert_eq!(w.nginx.log("eastus").len(), east.len(), "eastus not used by b)");
    let served: u64 = plain.access()[before..]
        .iter()
        .filter(|a| a.is_blob_get() && a.status == 200)
        .map(|a| a.bytes)
        .sum();
    let expected: u64 = blobs_of(&image).iter().map(|(_, s)| s).sum();
    assert_eq!(
        served, expected,
        "the plain registry served every blob byte itself"
    );
}

// ---------------------------------------------------------------------------------------
// 7. edgepull and skopeo agree.

#[test]
fn edgepull_and_skopeo_pull_the_same_image() {
    let Some(w) = World::start(WorldOptions::default()) else {
        return;
    };
    let mut layout = Layout::create(&w.path().join("src"));
    let single = small_image(&mut layout, "1.0");
    let multi = layout.index(
        "multi",
        vec![
            (LINUX_AMD64, vec![random_files("arch/amd64", 1, 30_000)]),
            (LINUX_ARM64, vec![random_files("arch/arm64", 1, 30_000)]),
            (LINUX_ARMV7, vec![random_files("arch/armv7", 1, 30_000)]),
        ],
    );
    w.push(&layout.dir, "1.0", false);
    w.push(&layout.dir, "multi", true);

    let reg = w.registry("login", AuthKind::Token, Some("eastus"));
    let store = w.path().join("store");
    let cfg = w.config(&reg, AuthKind::Token, &store, |_| {});
    let (r_single, r_multi) = (w.reference(&reg, "1.0"), w.reference(&reg, "multi"));
    w.pull(&cfg, &[&r_single, &r_multi])
        .expect_success("edgepull pull");

    // skopeo pulls the same tags from the same storage through `direct` (token auth, no
    // redirect: skopeo cannot resolve the data endpoint's name), as the pull-only device,
    // choosing arm64/v8 from the index like edgepull's "platform": "linux/arm64".
    let theirs = w.path().join("skopeo");
    let creds = format!("{}:{}", w.device.name, w.device.password);
    let cert_dir = w.pki.cert_dir.display().to_string();
    for (tag, name, platform) in [("1.0", "single", false), ("multi", "multi", true)] {
        let src = format!("docker://127.0.0.1:{}/{REPO}:{tag}", w.direct.port);
        let dst = format!("oci:{}:{name}", theirs.display());
        let mut args = vec!["copy", "--src-cert-dir", &cert_dir, "--src-creds", &creds];
        if platform {
            args.extend([
                "--override-os",
                "linux",
                "--override-arch",
                "arm64",
                "--override-variant",
                "v8",
            ]);
        }
        args.extend([src.as_str(), dst.as_str()]);
        w.skopeo(&args).expect_success(&format!("skopeo copy {src}"));
    }

    let ours = store.join("oci");
    let our_refs = layout_refs(&ours);
    let their_refs = layout_refs(&theirs);
    let arm64 = multi.image(&LINUX_ARM64);
    for (our_name, their_name, image) in [(&r_single, "single", &single), (&r_multi, "multi", arm64)] {
        let ours_digest = our_refs.get(our_name.as_str()).expect("edgepull recorded it");
        let theirs_digest = their_refs.get(their_name).expect("skopeo recorded it");
        assert_eq!(ours_digest, theirs_digest, "{their_name}: same manifest digest");
        assert_eq!(
            ours_digest,
            &image.manifest.to_string(),
            "{their_name}: the pushed one"
        );
        let our_blobs = reachable_blobs(&ours, ours_digest);
        assert_eq!(
            our_blobs,
            reachable_blobs(&theirs, theirs_digest),
            "{their_name}: same blob set"
        );
        assert_eq!(
            our_blobs,
            image
                .blobs()
                .iter()
                .map(|d| d.to_string())
                .collect::<BTreeSet<_>>()
        );
        for blob in &our_blobs {
            let hex = blob.strip_prefix("sha256:").expect("sha256");
            assert!(
                std::fs::read(ours.join("blobs/sha256").join(hex)).expect("ours")
                    == std::fs::read(theirs.join("blobs/sha256").join(hex)).expect("theirs"),
                "{blob}: same bytes"
            );
        }
    }
    // Whole stores: edgepull keeps the index it chose from as well.
    let mut expected = blob_files(&theirs);
    expected.insert(multi.digest.hex());
    assert_eq!(blob_files(&ours), expected, "same blobs, plus the index");
}

// ---------------------------------------------------------------------------------------
// 7. Through an HTTP CONNECT proxy (Debian's tinyproxy, started by the test).

/// A name no edgepull config allows; the proxy's hosts file maps it to westus's nginx.
const FOREIGN_HOST: &str = "foreign.example.test";

/// tinyproxy for world `w`: it resolves the login server, both regions and
/// [`FOREIGN_HOST`], and tunnels to the ports of `reg`, nginx and the token server only.
fn start_proxy(w: &World, reg: &support::distribution::Registry) -> support::proxy::TinyProxy {
    let east = w.nginx.site("eastus").host();
    let west = w.nginx.site("westus").host();
    support::proxy::TinyProxy::start(
        &w.tools,
        w.path(),
        &[
            (support::world::LOGIN_HOST, std::net::Ipv4Addr::LOCALHOST),
            (&east, EASTUS_IP),
            (&west, WESTUS_IP),
            (FOREIGN_HOST, WESTUS_IP),
        ],
        &[reg.port, w.nginx.port, w.tokens.port()],
    )
}

/// edgepull's config for pulling from `reg` through `proxy`: `registry.proxy` set, no
/// `resolve` (with a proxy, only the proxy's own name could be pinned, and it is an
/// address).
fn proxied_config(
    w: &World,
    reg: &support::distribution::Registry,
    proxy: &support::proxy::TinyProxy,
    store: &Path,
) -> std::path::PathBuf {
    w.config(reg, AuthKind::Token, store, |c| {
        c["registry"]["proxy"] = proxy.url().into();
        c["registry"].as_object_mut().expect("registry").remove("resolve");
    })
}

/// The host:ports edgepull may tunnel to for `reg`: login server, token realm, eastus.
fn allowed_tunnels(w: &World, reg: &support::distribution::Registry) -> BTreeSet<String> {
    BTreeSet::from([w.login(reg), w.tokens.host_port(), w.nginx.endpoint("eastus")])
}

#[test]
fn a_pull_through_tinyproxy_tunnels_only_to_allowed_endpoints() {
    let Some(w) = World::start(WorldOptions::default()) else {
        return;
    };
    let mut layout = Layout::create(&w.path().join("src"));
    let image = small_image(&mut layout, "1.0");
    w.push(&layout.dir, "1.0", false);
    let reg = w.registry("login", AuthKind::Token, Some("eastus"));
    let proxy = start_proxy(&w, &reg);
    let store = w.path().join("store");
    let cfg = proxied_config(&w, &reg, &proxy, &store);
    w.pull(&cfg, &[&w.reference(&reg, "1.0")])
        .expect_success("edgepull pull through tinyproxy");

    let connects = proxy.connects();
    eprintln!("tinyproxy CONNECT lines:\n{}", proxy.connect_lines().join("\n"));
    let tunnels: BTreeSet<String> = connects.iter().cloned().collect();
    assert_eq!(
        tunnels,
        allowed_tunnels(&w, &reg),
        "tunnels to login, realm and eastus, nothing else:\n{}",
        proxy.log_text()
    );
    // Every blob byte came from eastus, through the tunnel, with no credentials of any kind.
    let east = w.nginx.log("eastus");
    for (digest, size) in blobs_of(&image) {
        assert_eq!(sent_for(&east, &digest), size, "bytes of {digest} from eastus");
    }
    for line in &east {
        assert!(
            !line.auth && !line.proxy_auth,
            "credentials at the data endpoint: {}",
            line.raw
        );
    }
    assert_eq!(w.nginx.log_text("westus"), "", "westus saw nothing");
    w.edgepull(&cfg, &["store", "verify"])
        .expect_success("store verify");
}

#[test]
fn through_tinyproxy_a_redirect_elsewhere_opens_no_tunnel() {
    let Some(w) = World::start(WorldOptions::default()) else {
        return;
    };
    let mut layout = Layout::create(&w.path().join("src"));
    small_image(&mut layout, "1.0");
    w.push(&layout.dir, "1.0", false);
    // One login server redirecting to the other region, one to a foreign host (which the
    // proxy could reach: its hosts file maps it to westus's nginx).
    let to_westus = w.registry("login-westus", AuthKind::Token, Some("westus"));
    let to_foreign = support::distribution::Registry::start(
        &w.tools,
        w.path(),
        &w.storage,
        &w.pki,
        &support::distribution::RegistrySpec {
            name: "login-foreign".into(),
            auth: support::distribution::Auth::Token {
                realm: w.tokens.realm(),
                service: support::world::LOGIN_HOST.into(),
                issuer: support::world::ISSUER.into(),
                rootcertbundle: w.pki.ca.clone(),
            },
            redirect: Some(format!("https://{FOREIGN_HOST}:{}/", w.nginx.port)),
            read_only: true,
        },
    );
    for (reg, refused) in [
        (&to_westus, w.nginx.endpoint("westus")),
        (&to_foreign, format!("{FOREIGN_HOST}:{}", w.nginx.port)),
    ] {
        let proxy = start_proxy(&w, reg);
        let store = w.path().join(format!("store-{}", reg.name));
        let cfg = proxied_config(&w, reg, &proxy, &store);
        let out = w.pull(&cfg, &[&w.reference(reg, "1.0")]);
        eprintln!(
            "tinyproxy CONNECT lines ({}):\n{}",
            reg.name,
            proxy.connect_lines().join("\n")
        );
        let tunnels: BTreeSet<String> = proxy.connects().into_iter().collect();
        assert!(
            tunnels.is_subset(&allowed_tunnels(&w, reg)),
            "tunnels only to allowed endpoints:\n{}",
            proxy.log_text()
        );
        assert!(tunnels.contains(&w.login(reg)), "the pull went through the proxy");
        assert_eq!(
            out.code(),
            10,
            "policy exit code:\n{}\n{}",
            out.stdout,
            out.stderr
        );
        assert!(
            out.stderr.contains(&format!("to {refused} refused")),
            "the error names {refused}:\n{}",
            out.stderr
        );
        // The redirect was issued and refused before any tunnel to it.
        assert!(
            reg.access().iter().any(|a| a.is_blob_get() && a.status == 307),
            "the registry issued the redirect"
        );
    }
    assert_eq!(
        w.nginx.log_text("westus"),
        "",
        "westus (and the foreign name) heard nothing"
    );
    assert_eq!(w.nginx.log_text("eastus"), "", "nothing was downloaded");
}
