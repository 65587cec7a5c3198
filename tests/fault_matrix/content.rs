//! Cells about what the registry says the content is: digests, manifest and index
//! documents, descriptor sizes, foreign `urls` and layer media types.

use std::net::TcpListener;

use serde_json::json;

use super::helpers::*;
use crate::common::*;
use edgepull::exit::Category;
use edgepull_core::oci::manifest::{OCI_INDEX, OCI_MANIFEST};
use edgepull_core::oci::{Descriptor, Digest, Reference};
use edgepull_testkit::{CONFIG_MEDIA_TYPE, random_bytes};

const ZSTD_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const NONDISTRIBUTABLE_LAYER: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
const DOCKER_FOREIGN_LAYER: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

/// A config blob in `app`.
fn config(env: &Env) -> Descriptor {
    let body = json!({"architecture": "arm64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}});
    env.fake
        .add_blob_typed("app", body.to_string().into_bytes(), CONFIG_MEDIA_TYPE)
}

/// An OCI manifest over `config` and `layers` (JSON values, so any field may be odd).
fn manifest(config: &Descriptor, layers: Vec<serde_json::Value>) -> Vec<u8> {
    json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config,
        "layers": layers,
    })
    .to_string()
    .into_bytes()
}

fn layer_json(media_type: &str, digest: &Digest, size: serde_json::Value) -> serde_json::Value {
    json!({"mediaType": media_type, "digest": digest.to_string(), "size": size})
}

/// Serve `body` as `app:x` with an OCI manifest Content-Type.
fn serve_manifest(env: &Env, body: Vec<u8>) {
    env.fake.override_manifest("app", "x", body, OCI_MANIFEST);
}

/// A manifest whose one layer is `data` in the registry, described with `size`.
fn sized_layer_image(env: &Env, data: Vec<u8>, size: serde_json::Value) -> Vec<Descriptor> {
    let config = config(env);
    let layer = env.fake.add_blob("app", data);
    serve_manifest(
        env,
        manifest(&config, vec![layer_json(&layer.media_type, &layer.digest, size)]),
    );
    vec![config, layer]
}

#[test]
fn blob_unknown_at_the_login_server_is_a_registry_error() {
    let env = Env::token();
    let config = config(&env);
    let absent = Digest::of(b"never pushed");
    serve_manifest(
        &env,
        manifest(&config, vec![layer_json(LAYER, &absent, json!(12))]),
    );
    let puller = serial_puller(&env);
    pull_fails(
        &env,
        &puller,
        "x",
        Category::Registry,
        &["not found", "BLOB_UNKNOWN", &absent.to_string()],
    );
    assert_eq!(data_requests(&env).len(), 1, "only the config was fetched");
    drop(puller);
    assert!(rt().block_on(env.open_store().images()).unwrap().is_empty());
}

const LAYER: &str = edgepull_testkit::LAYER_MEDIA_TYPE;

#[test]
fn blob_digest_mismatch_leaves_nothing_visible() {
    let env = Env::token();
    let (_, blobs) = image(&env, vec![random_bytes(50_000)]);
    env.fake.set_corrupt_blob(Some(blobs[1].digest));
    let puller = serial_puller(&env);
    pull_fails(
        &env,
        &puller,
        "x",
        Category::Integrity,
        &[&blobs[1].digest.to_string()],
    );
    drop(puller);
    assert_nothing_visible(&env, &blobs[1..]);
    let ingests = rt().block_on(env.open_store().ingests()).unwrap();
    assert!(
        !ingests.iter().any(|i| i.digest == blobs[1].digest),
        "{ingests:?}"
    );
}

#[test]
fn docker_content_digest_mismatch_is_refused() {
    let env = Env::token();
    image(&env, vec![random_bytes(100)]);
    let other = Digest::of(b"another manifest");
    env.fake
        .update_knobs(|k| k.docker_content_digest_override = Some(other.to_string()));
    refused_before_any_download(
        &env,
        Category::Integrity,
        &["Docker-Content-Digest", &other.to_string()],
    );
}

#[test]
fn malformed_docker_content_digest_is_refused() {
    let env = Env::token();
    image(&env, vec![random_bytes(100)]);
    env.fake
        .update_knobs(|k| k.docker_content_digest_override = Some("sha256:not-hex".into()));
    refused_before_any_download(
        &env,
        Category::Registry,
        &["malformed Docker-Content-Digest header", "sha256:not-hex"],
    );
}

#[test]
fn manifest_by_digest_with_other_content_is_refused() {
    let env = Env::token();
    let claimed = Digest::of(b"what the reference should have named");
    let body = manifest(&config(&env), vec![]);
    env.fake
        .put_manifest("app", &claimed.to_string(), body, OCI_MANIFEST);
    let puller = serial_puller(&env);
    let reference = Reference::parse(&format!("{}/app@{claimed}", env.fake.login_host())).unwrap();
    let err = rt().block_on(puller.pull(&reference)).expect_err("refused");
    let chain = edgepull::error_chain(&err);
    assert_eq!(err.category(), Category::Integrity, "{chain}");
    assert!(
        chain.contains("the requested digest") && chain.contains(&claimed.to_string()),
        "{chain}"
    );
    assert!(data_requests(&env).is_empty());
}

#[test]
fn document_with_manifests_and_layers_is_refused() {
    let env = Env::token();
    let config = config(&env);
    let body = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [],
        "layers": [layer_json(LAYER, &config.digest, json!(config.size))],
    });
    env.fake
        .override_manifest("app", "x", body.to_string().into_bytes(), OCI_INDEX);
    let puller = serial_puller(&env);
    pull_fails(&env, &puller, "x", Category::Integrity, &["CVE-2021-41190"]);
    assert!(data_requests(&env).is_empty());
}

#[test]
fn index_body_under_a_manifest_content_type_is_refused() {
    let env = Env::token();
    let body = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []});
    serve_manifest(&env, body.to_string().into_bytes());
    let puller = serial_puller(&env);
    pull_fails(
        &env,
        &puller,
        "x",
        Category::Integrity,
        &["Content-Type", OCI_INDEX],
    );
}

/// An index for linux/arm64 whose one entry is `entry` bytes of type `media_type`,
/// described as `size`.
fn index_over(env: &Env, entry: Vec<u8>, media_type: &str, size: u64) {
    let digest = env
        .fake
        .put_manifest("app", &Digest::of(&entry).to_string(), entry, media_type);
    let body = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": media_type,
            "digest": digest.to_string(),
            "size": size,
            "platform": {"architecture": "arm64", "os": "linux"},
        }],
    });
    env.fake
        .override_manifest("app", "x", body.to_string().into_bytes(), OCI_INDEX);
}

#[test]
fn nested_index_is_refused() {
    let env = Env::token();
    let inner = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})
        .to_string()
        .into_bytes();
    let len = inner.len() as u64;
    index_over(&env, inner, OCI_INDEX, len);
    refused_before_any_download(
        &env,
        Category::Registry,
        &["nested indexes are not supported", "linux/arm64"],
    );
}

#[test]
fn index_entry_size_mismatch_is_refused() {
    let env = Env::token();
    let cfg = config(&env);
    let inner = manifest(&cfg, vec![]);
    let len = inner.len() as u64;
    index_over(&env, inner, OCI_MANIFEST, len + 1);
    refused_before_any_download(
        &env,
        Category::Integrity,
        &[&format!("has {} bytes but {len} arrived", len + 1)],
    );
}

#[test]
fn schema1_manifest_is_refused() {
    let env = Env::token();
    env.fake.override_manifest(
        "app",
        "x",
        br#"{"schemaVersion":1,"name":"app","tag":"x","fsLayers":[]}"#.to_vec(),
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    );
    let puller = serial_puller(&env);
    pull_fails(&env, &puller, "x", Category::Integrity, &["schema 1"]);
}

#[test]
fn huge_manifest_with_content_length_is_refused() {
    let env = Env::token();
    serve_manifest(&env, vec![b' '; 5 << 20]);
    let puller = serial_puller(&env);
    pull_fails(
        &env,
        &puller,
        "x",
        Category::Integrity,
        &["larger than 4194304 bytes", &format!("({} bytes)", 5 << 20)],
    );
}

#[test]
fn huge_chunked_manifest_is_refused_while_reading() {
    let env = Env::token();
    serve_manifest(&env, vec![b' '; 5 << 20]);
    env.fake.update_knobs(|k| k.chunked = true);
    let puller = serial_puller(&env);
    pull_fails(
        &env,
        &puller,
        "x",
        Category::Integrity,
        &["larger than 4194304 bytes"],
    );
}

#[test]
fn zero_size_layer_is_refused() {
    let env = Env::token();
    sized_layer_image(&env, random_bytes(100), json!(0));
    let puller = serial_puller(&env);
    pull_fails(&env, &puller, "x", Category::Integrity, &["size 0"]);
    assert!(data_requests(&env).is_empty());
}

#[test]
fn negative_size_layer_is_refused() {
    let env = Env::token();
    sized_layer_image(&env, random_bytes(100), json!(-5));
    let puller = serial_puller(&env);
    pull_fails(&env, &puller, "x", Category::Integrity, &["-5"]);
    assert!(data_requests(&env).is_empty());
}

#[test]
fn size_larger_than_the_blob_is_refused() {
    let env = Env::token();
    let blobs = sized_layer_image(&env, random_bytes(10_000), json!(10_001));
    let puller = serial_puller(&env);
    pull_fails(
        &env,
        &puller,
        "x",
        Category::Integrity,
        &["Content-Length 10000 is less than the 10001 bytes expected"],
    );
    drop(puller);
    assert_nothing_visible(&env, &blobs[1..]);
}

#[test]
fn size_smaller_than_the_blob_is_refused() {
    let env = Env::token();
    let blobs = sized_layer_image(&env, random_bytes(10_000), json!(9_999));
    let puller = serial_puller(&env);
    pull_fails(
        &env,
        &puller,
        "x",
        Category::Integrity,
        &["hashed to", "was not stored"],
    );
    drop(puller);
    assert_nothing_visible(&env, &blobs[1..]);
}

#[test]
fn size_u64_max_is_refused_and_nothing_is_kept() {
    let env = Env::token();
    let blobs = sized_layer_image(&env, random_bytes(10_000), json!(u64::MAX));
    let puller = serial_puller(&env);
    pull_fails(&env, &puller, "x", Category::Integrity, &[&u64::MAX.to_string()]);
    drop(puller);
    assert_nothing_visible(&env, &blobs[1..]);
}

#[test]
fn size_sum_overflow_is_refused_before_any_download() {
    let env = Env::token();
    let config = config(&env);
    let a = env.fake.add_blob("app", random_bytes(100));
    let b = env.fake.add_blob("app", random_bytes(100));
    let half = json!(1u64 << 63);
    serve_manifest(
        &env,
        manifest(
            &config,
            vec![
                layer_json(LAYER, &a.digest, half.clone()),
                layer_json(LAYER, &b.digest, half),
            ],
        ),
    );
    let puller = serial_puller(&env);
    pull_fails(
        &env,
        &puller,
        "x",
        Category::Integrity,
        &[&(1u64 << 63).to_string()],
    );
    assert!(data_requests(&env).is_empty(), "refused before any download");
}

/// A loopback listener nobody should connect to; `connections()` counts who did.
struct Trap(TcpListener);

impl Trap {
    fn new() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.set_nonblocking(true).expect("nonblocking");
        Self(l)
    }

    fn url(&self) -> String {
        format!(
            "https://127.0.0.1:{}/foreign/layer.tar.gz",
            self.0.local_addr().unwrap().port()
        )
    }

    fn connections(&self) -> usize {
        std::iter::from_fn(|| self.0.accept().ok()).count()
    }
}

/// A layer of `media_type` with `urls` (a trap and a path on the data endpoint itself);
/// `in_registry` says whether the registry holds the blob too.
fn foreign_layer_image(env: &Env, trap: &Trap, media_type: &str, in_registry: bool) -> Vec<Descriptor> {
    typed_layer_image(env, Some(trap), media_type, in_registry)
}

/// A layer of `media_type`, with `urls` when a trap is given.
fn typed_layer_image(env: &Env, trap: Option<&Trap>, media_type: &str, in_registry: bool) -> Vec<Descriptor> {
    let config = config(env);
    let data = random_bytes(4096);
    let layer = if in_registry {
        env.fake.add_blob_typed("app", data, media_type)
    } else {
        Descriptor::new(media_type, Digest::of(&data), data.len() as u64)
    };
    let east = env.fake.data_endpoint("eastus");
    let mut entry = layer_json(media_type, &layer.digest, json!(layer.size));
    if let Some(trap) = trap {
        entry["urls"] = json!([trap.url(), format!("https://{east}/foreign/layer.tar.gz")]);
    }
    serve_manifest(env, manifest(&config, vec![entry]));
    vec![config, layer]
}

fn no_foreign_fetch(env: &Env, trap: &Trap) {
    assert_eq!(trap.connections(), 0, "a foreign URL was contacted");
    assert!(
        !data_requests(env).iter().any(|r| r.path.starts_with("/foreign")),
        "a foreign URL on the data endpoint was fetched"
    );
}

#[test]
fn foreign_urls_on_a_layer_are_never_fetched() {
    let env = Env::token();
    let trap = Trap::new();
    let blobs = foreign_layer_image(&env, &trap, LAYER, true);
    let puller = serial_puller(&env);
    pull_ok(&env, &puller);
    no_foreign_fetch(&env, &trap);
    drop(puller);
    assert_stored(&env, &blobs);
}

#[test]
fn foreign_layer_absent_from_the_registry_fails_without_touching_its_urls() {
    let env = Env::token();
    let trap = Trap::new();
    let blobs = foreign_layer_image(&env, &trap, DOCKER_FOREIGN_LAYER, false);
    let puller = serial_puller(&env);
    pull_fails(
        &env,
        &puller,
        "x",
        Category::Registry,
        &["not found", &blobs[1].digest.to_string()],
    );
    no_foreign_fetch(&env, &trap);
}

/// A layer of `media_type` held by the registry (with foreign `urls` when `urls`) is
/// stored byte for byte, from the registry only.
fn typed_layer_is_stored(media_type: &str, urls: bool) {
    let env = Env::token();
    let trap = Trap::new();
    let blobs = typed_layer_image(&env, urls.then_some(&trap), media_type, true);
    let puller = serial_puller(&env);
    let report = pull_ok(&env, &puller);
    no_foreign_fetch(&env, &trap);
    drop(puller);
    assert_stored(&env, &blobs);
    let store = env.open_store();
    let stored = rt()
        .block_on(store.read_blob(&blobs[1].digest, 1 << 20))
        .expect("read");
    assert_eq!(stored, env.fake.blob(&blobs[1].digest).unwrap().to_vec());
    let manifest = rt()
        .block_on(store.read_blob(&report.manifest.digest, 1 << 20))
        .expect("manifest");
    assert!(String::from_utf8_lossy(&manifest).contains(media_type));
}

#[test]
fn zstd_layer_is_stored_like_any_blob() {
    typed_layer_is_stored(ZSTD_LAYER, false);
}

#[test]
fn non_distributable_layer_is_stored_like_any_blob() {
    typed_layer_is_stored(NONDISTRIBUTABLE_LAYER, true);
}
