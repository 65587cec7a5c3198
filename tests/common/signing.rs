//! Test signer for signed updates: P-256 keys (ring), cosign simple-signing payloads and
//! signature manifests pushed to the fake registry as tag `sha256-<hex>.sig`.
#![allow(dead_code)]

use std::path::PathBuf;

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};

use edgepull_core::oci::Digest;
use edgepull_core::oci::manifest::OCI_MANIFEST;
use edgepull_core::signature::{COSIGN_TYPE, SIGNATURE_ANNOTATION, SIMPLESIGNING, signature_tag};
use edgepull_testkit::FakeRegistry;

pub(crate) struct Signer(EcdsaKeyPair);

impl Signer {
    pub(crate) fn new() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).expect("key");
        Self(EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).expect("key"))
    }

    /// The public key as PEM, written to `dir/name`.
    pub(crate) fn write_public(&self, dir: &std::path::Path, name: &str) -> PathBuf {
        let mut der = hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200").expect("hex");
        der.extend_from_slice(self.0.public_key().as_ref());
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n"),
        )
        .expect("write key");
        path
    }

    pub(crate) fn sign(&self, msg: &[u8]) -> String {
        let sig = self.0.sign(&SystemRandom::new(), msg).expect("sign");
        base64::engine::general_purpose::STANDARD.encode(sig.as_ref())
    }
}

pub(crate) fn payload(reference: &str, digest: &Digest) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "critical": {
            "identity": {"docker-reference": reference},
            "image": {"docker-manifest-digest": digest.to_string()},
            "type": COSIGN_TYPE,
        },
        "optional": null,
    }))
    .expect("json")
}

/// Push a signature manifest for `signed` in `repo` with one layer per `(payload, signature)`.
pub(crate) fn push_signatures(
    fake: &FakeRegistry,
    repo: &str,
    signed: &Digest,
    layers: &[(Vec<u8>, String)],
) {
    let config = fake.add_blob_typed(repo, b"{}".to_vec(), "application/vnd.oci.image.config.v1+json");
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|(p, s)| {
            let d = fake.add_blob_typed(repo, p.clone(), SIMPLESIGNING);
            serde_json::json!({
                "mediaType": SIMPLESIGNING,
                "digest": d.digest.to_string(),
                "size": d.size,
                "annotations": {SIGNATURE_ANNOTATION: s},
            })
        })
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": config.media_type, "digest": config.digest.to_string(), "size": config.size},
        "layers": layers,
    });
    fake.put_manifest(
        repo,
        &signature_tag(signed),
        serde_json::to_vec(&manifest).expect("json"),
        OCI_MANIFEST,
    );
}
