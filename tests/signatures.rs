//! Signed updates against the fake registry: with `signatures` configured, an image is
//! recorded only when a valid cosign signature by a configured key covers its index or its
//! platform manifest; the signature manifest comes from the login server and the payload
//! from the data endpoint; a refusal is exit category `Signature` with nothing visible.

mod common;

#[path = "common/signing.rs"]
mod signing;

use base64::Engine as _;

use common::{Env, blob_files, pull, pull_err, rt};
use edgepull::exit::Category;
use edgepull_core::oci::Digest;
use edgepull_core::signature::{Refusal, signature_tag};
use edgepull_testkit::ServerName;
use signing::{Signer, payload};

/// Push a signature manifest for `signed` in `app` with one layer per `(payload, signature)`.
fn push_signatures(env: &Env, _repo: &str, signed: &Digest, layers: &[(Vec<u8>, String)]) {
    signing::push_signatures(&env.fake, "app", signed, layers);
}

/// An env whose config requires signatures by `keys` (written into the env's directory).
fn signed_env(keys: &[&Signer]) -> Env {
    let env = Env::token();
    let paths: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            k.write_public(env.dir.path(), &format!("key{i}.pub"))
                .display()
                .to_string()
        })
        .collect();
    env.edit_config(|v| v["signatures"] = serde_json::json!({"public_keys": paths}));
    env
}

fn identity(env: &Env) -> String {
    format!("{}/app", env.fake.login_host())
}

/// Push an arm64 + amd64 index tagged `tag` (layers made distinct by `tag`); returns the
/// digests of the index, the arm64 manifest and the amd64 manifest.
fn push_index(env: &Env, tag: &str) -> (Digest, Digest, Digest) {
    let index = env.fake.push_index(
        "app",
        tag,
        vec![
            (
                common::platform("linux/arm64/v8"),
                vec![format!("arm64 {tag}").into_bytes()],
            ),
            (
                common::platform("linux/amd64"),
                vec![format!("amd64 {tag}").into_bytes()],
            ),
        ],
    );
    let bytes = env.fake.manifest("app", &index).expect("index stored");
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("index json");
    let of = |arch: &str| {
        let entry = v["manifests"]
            .as_array()
            .expect("manifests")
            .iter()
            .find(|m| m["platform"]["architecture"] == arch)
            .expect("platform entry");
        Digest::parse(entry["digest"].as_str().expect("digest")).expect("digest")
    };
    (index, of("arm64"), of("amd64"))
}

fn recorded(env: &Env) -> Vec<Digest> {
    rt().block_on(env.open_store().images())
        .expect("images")
        .into_iter()
        .map(|i| i.source_index.unwrap_or(i.descriptor.digest))
        .collect()
}

fn refusal(err: &edgepull::pull::PullError) -> Refusal {
    match err {
        edgepull::pull::PullError::Signature { source, .. } => source.refusal(),
        other => panic!("not a signature refusal: {}", edgepull::error_chain(other)),
    }
}

#[test]
fn signed_image_is_recorded_and_its_signature_fetched_like_any_content() {
    let key = Signer::new();
    let env = signed_env(&[&key]);
    let (digest, _) = env.fake.push_image("app", "1.0", vec![b"layer one".to_vec()]);
    let p = payload(&format!("{}:1.0", identity(&env)), &digest);
    push_signatures(&env, "app", &digest, &[(p.clone(), key.sign(&p))]);

    let report = pull(&env, &env.puller(), "1.0").expect("signed pull");
    assert_eq!(report.manifest.digest, digest);
    assert_eq!(recorded(&env), vec![digest]);
    let reqs = env.fake.requests();
    let tag = signature_tag(&digest);
    assert!(
        reqs.iter()
            .any(|r| r.server == ServerName::Login && r.path == format!("/v2/app/manifests/{tag}")),
        "the signature manifest comes from the login server"
    );
    let payload_path = format!("/v2/app/blobs/{}", Digest::of(&p));
    let at = reqs
        .iter()
        .position(|r| r.server == ServerName::Login && r.path == payload_path)
        .expect("the payload is asked for at the login server");
    assert_eq!(reqs[at].status, 307, "the login server redirects the payload");
    let next = &reqs[at + 1];
    assert_eq!(
        (next.server, next.body_bytes_sent),
        (ServerName::EastUs, p.len() as u64),
        "the payload body comes from the data endpoint"
    );
    env.assert_no_auth_at_data_endpoints();
}

#[test]
fn unsigned_image_is_refused_before_any_blob_is_downloaded() {
    let key = Signer::new();
    let env = signed_env(&[&key]);
    env.fake.push_image("app", "1.0", vec![b"layer one".to_vec()]);
    let err = pull_err(&env, &env.puller(), "1.0", Category::Signature);
    assert_eq!(refusal(&err), Refusal::Missing);
    assert_eq!(err.category().code(), 11);
    assert!(recorded(&env).is_empty(), "nothing unsigned in index.json");
    assert!(
        blob_files(&env.store_path()).is_empty(),
        "no blob of the image was stored"
    );
    assert_eq!(env.eastus_bytes(), 0, "no byte was downloaded");
    let msg = edgepull::error_chain(&err);
    assert!(msg.contains("signature missing") && msg.contains(".sig"), "{msg}");
}

#[test]
fn without_the_section_unsigned_images_are_pulled() {
    let env = Env::token();
    env.fake.push_image("app", "1.0", vec![b"layer one".to_vec()]);
    pull(&env, &env.puller(), "1.0").expect("unsigned pull without signatures section");
}

#[test]
fn index_or_platform_manifest_signature_is_accepted() {
    let key = Signer::new();
    let env = signed_env(&[&key]);
    env.edit_config(|v| v["platform"] = "linux/arm64/v8".into());
    let sign = |d: &Digest| {
        let p = payload(&identity(&env), d);
        push_signatures(&env, "app", d, &[(p.clone(), key.sign(&p))]);
    };

    let (index, _, _) = push_index(&env, "idx");
    sign(&index);
    let report = pull(&env, &env.puller(), "idx").expect("signed index");
    assert_eq!(report.index, Some(index));

    let (_, arm64, _) = push_index(&env, "plat");
    sign(&arm64);
    let report = pull(&env, &env.puller(), "plat").expect("signed platform manifest");
    assert_eq!(report.manifest.digest, arm64);

    // Only the amd64 manifest is signed: this arm64 device refuses the index.
    let (index3, _, amd64) = push_index(&env, "other-platform");
    sign(&amd64);
    let err = pull_err(&env, &env.puller(), "other-platform", Category::Signature);
    assert_eq!(refusal(&err), Refusal::Missing);
    assert!(!recorded(&env).contains(&index3));
}

/// Each case pushes one image tagged with the case name and its signature manifest; the
/// pull's verdict must be the expected one, and a refused image is never recorded.
#[test]
fn refusals_and_acceptances() {
    let key = Signer::new();
    let other = Signer::new();
    let env = signed_env(&[&other, &key]); // the second key is the one that signs
    let id = identity(&env);
    let cases: Vec<(&str, Option<Refusal>)> = vec![
        ("second-key", None),
        ("tagged-identity", None),
        ("unknown-key", Some(Refusal::Invalid)),
        ("other-digest", Some(Refusal::Mismatch)),
        ("other-identity", Some(Refusal::Mismatch)),
        ("tampered-payload", Some(Refusal::Invalid)),
        ("tampered-annotation", Some(Refusal::Invalid)),
        ("bad-then-good", None),
    ];
    let stranger = Signer::new();
    for (case, want) in cases {
        let (digest, _) = env
            .fake
            .push_image("app", case, vec![format!("layer {case}").into_bytes()]);
        let good = payload(&id, &digest);
        let layers = match case {
            "second-key" => vec![(good.clone(), key.sign(&good))],
            "tagged-identity" => {
                let p = payload(&format!("{id}:{case}"), &digest);
                vec![(p.clone(), key.sign(&p))]
            }
            "unknown-key" => vec![(good.clone(), stranger.sign(&good))],
            "other-digest" => {
                let p = payload(&id, &Digest::of(b"another image"));
                vec![(p.clone(), key.sign(&p))]
            }
            "other-identity" => {
                let p = payload(&format!("{}/other", env.fake.login_host()), &digest);
                vec![(p.clone(), key.sign(&p))]
            }
            "tampered-payload" => {
                let sig = key.sign(&good);
                let tampered = String::from_utf8(good.clone())
                    .expect("utf8")
                    .replace("\"optional\":null", "\"optional\":{}");
                vec![(tampered.into_bytes(), sig)]
            }
            "tampered-annotation" => {
                let sig = key.sign(&good);
                let mut raw = base64::engine::general_purpose::STANDARD
                    .decode(&sig)
                    .expect("b64");
                let last = raw.len() - 1;
                raw[last] ^= 1;
                vec![(
                    good.clone(),
                    base64::engine::general_purpose::STANDARD.encode(raw),
                )]
            }
            "bad-then-good" => vec![
                (good.clone(), stranger.sign(&good)),
                (good.clone(), key.sign(&good)),
            ],
            _ => unreachable!(),
        };
        push_signatures(&env, "app", &digest, &layers);
        let got = pull(&env, &env.puller(), case);
        match want {
            None => {
                got.unwrap_or_else(|e| panic!("{case}: {}", edgepull::error_chain(&e)));
                assert!(recorded(&env).contains(&digest), "{case}");
            }
            Some(r) => {
                let err = got.expect_err(case);
                assert_eq!(err.category(), Category::Signature, "{case}");
                assert_eq!(refusal(&err), r, "{case}: {}", edgepull::error_chain(&err));
                assert!(!recorded(&env).contains(&digest), "{case}");
            }
        }
    }
}

#[test]
fn identity_override_is_what_signatures_must_name() {
    let key = Signer::new();
    let env = signed_env(&[&key]);
    let (digest, _) = env.fake.push_image("app", "1.0", vec![b"layer".to_vec()]);
    let signed_as = "release.example.com/products/app";
    let p = payload(&format!("{signed_as}:1.0"), &digest);
    push_signatures(&env, "app", &digest, &[(p.clone(), key.sign(&p))]);

    // Without the override the identity is the reference's own: mismatch.
    let err = pull_err(&env, &env.puller(), "1.0", Category::Signature);
    assert_eq!(refusal(&err), Refusal::Mismatch);
    assert!(edgepull::error_chain(&err).contains("images[].identity"));

    let reference = env.reference("1.0").to_string();
    env.edit_config(|v| v["images"] = serde_json::json!([{"ref": reference, "identity": signed_as}]));
    pull(&env, &env.puller(), "1.0").expect("the override names the signed identity");
    assert_eq!(recorded(&env), vec![digest]);
}

#[test]
fn more_than_sixteen_signatures_are_refused_before_any_payload_is_fetched() {
    let key = Signer::new();
    let env = signed_env(&[&key]);
    let (digest, _) = env.fake.push_image("app", "1.0", vec![b"layer".to_vec()]);
    let p = payload(&identity(&env), &digest);
    let layers: Vec<(Vec<u8>, String)> = (0..17)
        .map(|i| {
            let mut v: serde_json::Value = serde_json::from_slice(&p).expect("json");
            v["optional"] = serde_json::json!({ "n": i });
            let b = serde_json::to_vec(&v).expect("json");
            let s = key.sign(&b);
            (b, s)
        })
        .collect();
    push_signatures(&env, "app", &digest, &layers);
    let err = pull_err(&env, &env.puller(), "1.0", Category::Signature);
    assert_eq!(refusal(&err), Refusal::Invalid);
    assert!(edgepull::error_chain(&err).contains("17 signatures"));
    assert_eq!(env.eastus_bytes(), 0, "no payload was fetched");
}

#[test]
fn a_payload_that_fails_its_digest_is_never_trusted() {
    let key = Signer::new();
    let env = signed_env(&[&key]);
    let (digest, _) = env.fake.push_image("app", "1.0", vec![b"layer".to_vec()]);
    let p = payload(&identity(&env), &digest);
    push_signatures(&env, "app", &digest, &[(p.clone(), key.sign(&p))]);
    env.fake.set_corrupt_blob(Some(Digest::of(&p)));
    let err = pull_err(&env, &env.puller(), "1.0", Category::Integrity);
    assert!(edgepull::error_chain(&err).contains(&Digest::of(&p).to_string()));
    assert!(recorded(&env).is_empty());
}

#[test]
fn key_files_are_checked_when_the_config_loads() {
    let key = Signer::new();
    let env = Env::token();
    let good = key.write_public(env.dir.path(), "good.pub").display().to_string();
    let private = env.dir.path().join("cosign.key");
    std::fs::write(
        &private,
        "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\neyJr\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n",
    )
    .expect("write");
    let missing = env.dir.path().join("absent.pub").display().to_string();
    let cases: Vec<(serde_json::Value, &str, Vec<&str>)> = vec![
        (serde_json::json!({}), "signatures.public_keys", vec!["missing"]),
        (
            serde_json::json!({"public_keys": []}),
            "signatures.public_keys",
            vec!["1 to 16"],
        ),
        (
            serde_json::json!({"public_keys": ["keys/release.pub"]}),
            "signatures.public_keys[0]",
            vec!["absolute path"],
        ),
        (
            serde_json::json!({"public_keys": [good, missing]}),
            "signatures.public_keys[1]",
            vec!["absent.pub", "cannot read"],
        ),
        (
            serde_json::json!({"public_keys": [private.display().to_string()]}),
            "signatures.public_keys[0]",
            vec!["cosign.key", "private key"],
        ),
        (
            serde_json::json!({"public_keys": [good, good]}),
            "signatures.public_keys[1]",
            vec!["twice"],
        ),
        (
            serde_json::json!({"keys": [good]}),
            "signatures",
            vec!["unknown field"],
        ),
    ];
    for (section, field, words) in cases {
        env.edit_config(|v| v["signatures"] = section.clone());
        let e = edgepull::config::Config::load(&env.config_path).expect_err(field);
        let msg = e.to_string();
        assert!(
            msg.contains(field) && msg.contains("config.json"),
            "{field}: {msg}"
        );
        for w in words {
            assert!(msg.contains(w), "{field}: {w:?} not in {msg}");
        }
    }
    env.edit_config(|v| {
        v["signatures"] = serde_json::json!({"public_keys": [good]});
        v["images"] = serde_json::json!([{"ref": "app:1", "identity": "not a reference"}]);
    });
    let msg = edgepull::config::Config::load(&env.config_path)
        .expect_err("identity")
        .to_string();
    assert!(
        msg.contains("images[0].identity") && msg.contains("not a reference"),
        "{msg}"
    );
}

/// The signature manifest and payload are charged to the link like any download: the
/// day's count (saved when the pull ends) is every manifest and blob body received,
/// signature included.
#[test]
fn signature_bytes_are_charged_to_the_link() {
    let key = Signer::new();
    let env = signed_env(&[&key]);
    env.edit_config(|v| v["link"] = serde_json::json!({ "max_bytes_per_day": "1GiB" }));
    let (digest, _) = env.fake.push_image("app", "1.0", vec![b"layer one".to_vec()]);
    let p = payload(&format!("{}:1.0", identity(&env)), &digest);
    push_signatures(&env, "app", &digest, &[(p.clone(), key.sign(&p))]);

    pull(&env, &env.puller(), "1.0").expect("signed pull");
    let reqs = env.fake.requests();
    let received: u64 = reqs
        .iter()
        .filter(|r| {
            r.method == "GET"
                && matches!(r.status, 200 | 206)
                && (r.server == ServerName::EastUs
                    || (r.server == ServerName::Login && r.path.contains("/manifests/")))
        })
        .map(|r| r.body_bytes_sent)
        .sum();
    let signature: u64 = reqs
        .iter()
        .filter(|r| r.path.contains(&signature_tag(&digest)) && r.method == "GET" && r.status == 200)
        .map(|r| r.body_bytes_sent)
        .sum::<u64>()
        + p.len() as u64;
    assert!(
        signature > p.len() as u64,
        "the signature manifest was fetched: {reqs:?}"
    );
    let saved: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.store_path().join("link-quota.json")).expect("the day's count is saved"),
    )
    .expect("json");
    assert_eq!(
        saved["bytes"], received,
        "{saved}; {signature} of them signature bytes"
    );
}
