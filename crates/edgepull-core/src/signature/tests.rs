//! Table tests for key parsing and payload verification. Fixed vectors were made with
//! OpenSSL (independent of ring); the rest are signed with freshly generated ring keys.

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};

use super::*;

/// `openssl ecparam -name prime256v1 -genkey | openssl ec -pubout`
const P256_PEM: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAETgosRCX6cLFi5r17NZTSJn8miSeq
QFBIi8f4QQxSe72hMAYTrL3Y+axLX+GECWZCVUFVi7SHu+Jdmco5zDu0OA==
-----END PUBLIC KEY-----
";
/// `openssl genpkey -algorithm ed25519 | openssl pkey -pubout`
const ED25519_PEM: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAipS9N0kq2zRW5RNjM+pKbd7/3DFpB4mjQEot5cjExnw=
-----END PUBLIC KEY-----
";
/// The P-256 key above, compressed (`-conv_form compressed`).
const P256_COMPRESSED_PEM: &str = "-----BEGIN PUBLIC KEY-----
MDkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDIgACTgosRCX6cLFi5r17NZTSJn8miSeq
QFBIi8f4QQxSe70=
-----END PUBLIC KEY-----
";
const P384_PEM: &str = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEBVvoI+jUOcTQSyr58MEI0tE973Q4zSXF
hPibaWdEOFiWdHwpQmaDMtHAje/7rNmdhPsiP+t1/2yq6EFm8X30/3znTRwDcJ+K
Cal1mVB+/qjAAUsiyls0Wo6fqFiE3mfX
-----END PUBLIC KEY-----
";
const RSA_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDWOWeafsYOx2cOXCrTxIBDNxpx
WC3t45mwf59mSzvslbEOn8y3y8ATLo/RuAFTqjy4vIUjaWT78xEHamO8iYMWWaNm
2M0JeQAiy/wrF8acbesJzsMMC4b4GeR+1QZryi585LxGENo6TOtf8Mn4Cs/1m1ku
fyNKuTu8QEElnQCZcwIDAQAB
-----END PUBLIC KEY-----
";
/// The payload `openssl dgst -sha256 -sign` and `openssl pkeyutl -sign -rawin` signed.
const OPENSSL_PAYLOAD: &str = r#"{"critical":{"identity":{"docker-reference":"contoso.azurecr.io/app"},"image":{"docker-manifest-digest":"sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},"type":"cosign container image signature"},"optional":null}"#;
const OPENSSL_P256_SIG: &str =
    "MEYCIQDuPmjhO8MQHIdrUEAgM4mW3541F+GFHfy1Ztz3/tF13gIhALm77SuNwJ/zDp13f6WKTWDTv7fbNXzwxwabSBzfr/bS";
const OPENSSL_ED25519_SIG: &str =
    "SZSZ0cvDNNRWqzQPJUFK4sNs3g33vl9T2NI7U0eGTJP2KKvVF1LpuNN73l8Wm0LecIyb1w7ibuvY8iIbRceoBA==";

/// A key text and the refusal it must get.
type KeyCase = (&'static str, fn(&KeyError) -> bool);
/// Name, payload, signature (empty: sign the payload with `key`), keys, verdict.
type PayloadCase = (
    &'static str,
    Vec<u8>,
    String,
    Vec<PublicKey>,
    Result<usize, Refusal>,
);

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn abc() -> Digest {
    Digest::of(b"abc")
}

fn identity() -> Identity {
    Identity::parse("contoso.azurecr.io/app").unwrap()
}

/// A signature manifest with one simple-signing layer per `(payload, signature)`.
fn manifest(layers: &[(&[u8], &str)]) -> Vec<u8> {
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|(p, s)| {
            serde_json::json!({
                "mediaType": SIMPLESIGNING,
                "digest": Digest::of(p).to_string(),
                "size": p.len(),
                "annotations": {SIGNATURE_ANNOTATION: s},
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": Digest::of(b"{}").to_string(), "size": 2},
        "layers": layers,
    }))
    .unwrap()
}

fn payload(reference: &str, digest: &str, kind: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "critical": {
            "identity": {"docker-reference": reference},
            "image": {"docker-manifest-digest": digest},
            "type": kind,
        },
        "optional": null,
    }))
    .unwrap()
}

struct Signer(EcdsaKeyPair);

impl Signer {
    fn new() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        Self(EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap())
    }
    fn public(&self) -> PublicKey {
        let mut der = hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200").unwrap();
        der.extend_from_slice(self.0.public_key().as_ref());
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            b64(&der)
        );
        PublicKey::from_pem(pem.as_bytes()).unwrap()
    }
    fn sign(&self, msg: &[u8]) -> String {
        b64(self.0.sign(&SystemRandom::new(), msg).unwrap().as_ref())
    }
}

/// The verdict on one signature layer, as the shell reaches it.
fn verdict(
    keys: &[PublicKey],
    identity: &Identity,
    signed: &Digest,
    manifest: &[u8],
    payload: &[u8],
) -> Result<usize, Refusal> {
    let layers = signature_layers(manifest, signed).map_err(|e| e.refusal())?;
    let layer = layers.into_iter().next().unwrap().map_err(|e| e.refusal())?;
    verify_payload(keys, identity, signed, &layer, payload).map_err(|e| e.refusal())
}

#[test]
fn keys_parse_or_are_refused_with_the_reason() {
    let ok: &[(&str, Algorithm)] = &[
        (P256_PEM, Algorithm::EcdsaP256),
        (ED25519_PEM, Algorithm::Ed25519),
    ];
    for (pem, alg) in ok {
        assert_eq!(PublicKey::from_pem(pem.as_bytes()).unwrap().algorithm(), *alg);
        // CRLF line ends and surrounding text are accepted.
        let crlf = format!("comment\r\n{}", pem.replace('\n', "\r\n"));
        assert_eq!(PublicKey::from_pem(crlf.as_bytes()).unwrap().algorithm(), *alg);
    }
    let private = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----\n";
    let cosign_private = "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\neyJr\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n";
    let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let bad: &[KeyCase] = &[
        ("", |e| *e == KeyError::NotPem),
        ("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE", |e| *e == KeyError::NotPem),
        (private, |e| matches!(e, KeyError::PrivateKey { .. })),
        (cosign_private, |e| matches!(e, KeyError::PrivateKey { .. })),
        (cert, |e| matches!(e, KeyError::WrongLabel { .. })),
        ("-----BEGIN PUBLIC KEY-----\nMFkw\n", |e| {
            matches!(e, KeyError::Unterminated { .. })
        }),
        (
            "-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n",
            |e| *e == KeyError::Base64,
        ),
        (
            "-----BEGIN PUBLIC KEY-----\nMAA=\n-----END PUBLIC KEY-----\n",
            |e| matches!(e, KeyError::Der { .. }),
        ),
        (P256_COMPRESSED_PEM, |e| {
            matches!(e, KeyError::KeyBytes { len: 33, .. })
        }),
        (P384_PEM, |e| *e == KeyError::Curve),
        (
            RSA_PEM,
            |e| matches!(e, KeyError::Algorithm { oid } if oid == "2a864886f70d010101"),
        ),
    ];
    for (pem, want) in bad {
        let e = PublicKey::from_pem(pem.as_bytes()).unwrap_err();
        assert!(want(&e), "{pem:?}: {e:?}");
    }
    let two = format!("{P256_PEM}{ED25519_PEM}");
    assert_eq!(
        PublicKey::from_pem(two.as_bytes()).unwrap_err(),
        KeyError::Several { count: 2 }
    );
    let huge = vec![b'a'; key::MAX_KEY_BYTES + 1];
    assert!(matches!(
        PublicKey::from_pem(&huge),
        Err(KeyError::TooLarge { .. })
    ));
}

#[test]
fn der_walk_refuses_every_truncation_and_trailing_bytes() {
    let pem = P256_PEM
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<String>();
    let der = base64::engine::general_purpose::STANDARD.decode(pem).unwrap();
    assert!(PublicKey::from_spki_der(&der).is_ok());
    for n in 0..der.len() {
        assert!(
            PublicKey::from_spki_der(&der[..n]).is_err(),
            "prefix of {n} bytes"
        );
    }
    let mut longer = der.clone();
    longer.push(0);
    assert!(PublicKey::from_spki_der(&longer).is_err());
}

#[test]
fn openssl_signatures_verify() {
    let p256 = PublicKey::from_pem(P256_PEM.as_bytes()).unwrap();
    let ed = PublicKey::from_pem(ED25519_PEM.as_bytes()).unwrap();
    let sig = |s: &str| base64::engine::general_purpose::STANDARD.decode(s).unwrap();
    let msg = OPENSSL_PAYLOAD.as_bytes();
    assert!(p256.verify(msg, &sig(OPENSSL_P256_SIG)));
    assert!(ed.verify(msg, &sig(OPENSSL_ED25519_SIG)));
    assert!(!p256.verify(msg, &sig(OPENSSL_ED25519_SIG)));
    assert!(!ed.verify(msg, &sig(OPENSSL_P256_SIG)));
    let mut tampered = msg.to_vec();
    tampered[10] ^= 1;
    assert!(!p256.verify(&tampered, &sig(OPENSSL_P256_SIG)));
    assert!(!ed.verify(&tampered, &sig(OPENSSL_ED25519_SIG)));

    let m = manifest(&[(msg, OPENSSL_P256_SIG)]);
    assert_eq!(
        verdict(&[ed.clone(), p256.clone()], &identity(), &abc(), &m, msg),
        Ok(1)
    );
    let m = manifest(&[(msg, OPENSSL_ED25519_SIG)]);
    assert_eq!(verdict(&[p256, ed], &identity(), &abc(), &m, msg), Ok(1));
}

#[test]
fn payload_verdicts() {
    let key = Signer::new();
    let other = Signer::new();
    let d = abc();
    let ds = d.to_string();
    let id = identity();
    let good = payload("contoso.azurecr.io/app", &ds, COSIGN_TYPE);
    let cases: Vec<PayloadCase> = vec![
        ("signed", good.clone(), key.sign(&good), vec![key.public()], Ok(0)),
        (
            "second key matches",
            good.clone(),
            key.sign(&good),
            vec![other.public(), key.public()],
            Ok(1),
        ),
        (
            "another key",
            good.clone(),
            other.sign(&good),
            vec![key.public()],
            Err(Refusal::Invalid),
        ),
        (
            "no keys",
            good.clone(),
            key.sign(&good),
            vec![],
            Err(Refusal::Invalid),
        ),
        (
            "tag in reference (skopeo)",
            payload("contoso.azurecr.io/app:1.2", &ds, COSIGN_TYPE),
            String::new(),
            vec![key.public()],
            Ok(0),
        ),
        (
            "digest in reference",
            payload(&format!("contoso.azurecr.io/app@{ds}"), &ds, COSIGN_TYPE),
            String::new(),
            vec![key.public()],
            Ok(0),
        ),
        (
            "host case",
            payload("Contoso.AzureCR.io/app", &ds, COSIGN_TYPE),
            String::new(),
            vec![key.public()],
            Ok(0),
        ),
        (
            "port 443 written",
            payload("contoso.azurecr.io:443/app", &ds, COSIGN_TYPE),
            String::new(),
            vec![key.public()],
            Ok(0),
        ),
        (
            "another repository",
            payload("contoso.azurecr.io/app2", &ds, COSIGN_TYPE),
            String::new(),
            vec![key.public()],
            Err(Refusal::Mismatch),
        ),
        (
            "repository prefix",
            payload("contoso.azurecr.io/app/sub", &ds, COSIGN_TYPE),
            String::new(),
            vec![key.public()],
            Err(Refusal::Mismatch),
        ),
        (
            "another registry",
            payload("fabrikam.azurecr.io/app", &ds, COSIGN_TYPE),
            String::new(),
            vec![key.public()],
            Err(Refusal::Mismatch),
        ),
        (
            "no registry",
            payload("app", &ds, COSIGN_TYPE),
            String::new(),
            vec![key.public()],
            Err(Refusal::Mismatch),
        ),
        (
            "another digest",
            payload(
                "contoso.azurecr.io/app",
                &Digest::of(b"x").to_string(),
                COSIGN_TYPE,
            ),
            String::new(),
            vec![key.public()],
            Err(Refusal::Mismatch),
        ),
        (
            "bad digest",
            payload("contoso.azurecr.io/app", "sha256:zz", COSIGN_TYPE),
            String::new(),
            vec![key.public()],
            Err(Refusal::Mismatch),
        ),
        (
            "another type",
            payload("contoso.azurecr.io/app", &ds, "atomic container signature"),
            String::new(),
            vec![key.public()],
            Err(Refusal::Invalid),
        ),
        (
            "not json",
            b"hello".to_vec(),
            String::new(),
            vec![key.public()],
            Err(Refusal::Invalid),
        ),
        (
            "no critical",
            br#"{"optional":{}}"#.to_vec(),
            String::new(),
            vec![key.public()],
            Err(Refusal::Invalid),
        ),
        (
            "signature not base64",
            good.clone(),
            "%%%".to_string(),
            vec![key.public()],
            Err(Refusal::Invalid),
        ),
        (
            "empty signature",
            good.clone(),
            "AAAA".to_string(),
            vec![key.public()],
            Err(Refusal::Invalid),
        ),
    ];
    for (name, p, sig, keys, want) in cases {
        let sig = if sig.is_empty() { key.sign(&p) } else { sig };
        let m = manifest(&[(&p, &sig)]);
        assert_eq!(verdict(&keys, &id, &d, &m, &p), want, "{name}");
        if want.is_ok() {
            // The signature covers the exact bytes: one flipped bit anywhere is invalid.
            for i in [0, p.len() / 2, p.len() - 1] {
                let mut t = p.clone();
                t[i] ^= 0x20;
                assert_eq!(
                    verdict(&keys, &id, &d, &m, &t),
                    Err(Refusal::Invalid),
                    "{name}: byte {i}"
                );
            }
        }
    }
    // An override identity accepts what the reference's own does not, and only that.
    let other_id = Identity::parse("contoso.azurecr.io/signed/elsewhere:tag").unwrap();
    let p = payload("contoso.azurecr.io/signed/elsewhere:v1", &ds, COSIGN_TYPE);
    let m = manifest(&[(&p, &key.sign(&p))]);
    assert_eq!(verdict(&[key.public()], &other_id, &d, &m, &p), Ok(0));
    assert_eq!(verdict(&[key.public()], &id, &d, &m, &p), Err(Refusal::Mismatch));
}

#[test]
fn ed25519_payloads_verify() {
    let rng = SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let mut der = hex::decode("302a300506032b6570032100").unwrap();
    der.extend_from_slice(pair.public_key().as_ref());
    let key = PublicKey::from_spki_der(&der).unwrap();
    let p = payload("contoso.azurecr.io/app", &abc().to_string(), COSIGN_TYPE);
    let m = manifest(&[(&p, &b64(pair.sign(&p).as_ref()))]);
    assert_eq!(verdict(&[key], &identity(), &abc(), &m, &p), Ok(0));
}

#[test]
fn manifest_layers_and_caps() {
    let d = abc();
    let p = b"{}".as_slice();
    // No signature layers at all, or only other media types: missing.
    let empty = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "layers": []})).unwrap();
    assert_eq!(
        signature_layers(&empty, &d).unwrap_err().refusal(),
        Refusal::Missing
    );
    let mut other: serde_json::Value = serde_json::from_slice(&manifest(&[(p, "AAAA")])).unwrap();
    other["layers"][0]["mediaType"] = "application/vnd.oci.image.layer.v1.tar".into();
    let other = serde_json::to_vec(&other).unwrap();
    assert_eq!(
        signature_layers(&other, &d).unwrap_err().refusal(),
        Refusal::Missing
    );
    // Unreadable manifests are invalid.
    for bad in [
        b"".as_slice(),
        b"\"text\"",
        b"{\"layers\": 1}",
        b"{\"layers\":[{\"digest\":\"x\"}]}",
    ] {
        assert_eq!(
            signature_layers(bad, &d).unwrap_err().refusal(),
            Refusal::Invalid,
            "{bad:?}"
        );
    }
    // 16 layers are read; 17 are refused before anything is fetched.
    let sixteen: Vec<(&[u8], &str)> = vec![(p, "AAAA"); MAX_SIGNATURES];
    assert_eq!(
        signature_layers(&manifest(&sixteen), &d).unwrap().len(),
        MAX_SIGNATURES
    );
    let seventeen: Vec<(&[u8], &str)> = vec![(p, "AAAA"); MAX_SIGNATURES + 1];
    assert!(matches!(
        signature_layers(&manifest(&seventeen), &d),
        Err(SignatureError::TooMany { count: 17, .. })
    ));
    // A payload over the cap, or a missing annotation, fails that layer only.
    let mut v: serde_json::Value =
        serde_json::from_slice(&manifest(&[(p, "AAAA"), (p, "AAAA"), (p, "AAAA")])).unwrap();
    v["layers"][0]["size"] = (MAX_PAYLOAD_BYTES + 1).into();
    v["layers"][1]["annotations"] = serde_json::json!({});
    let layers = signature_layers(&serde_json::to_vec(&v).unwrap(), &d).unwrap();
    assert!(matches!(layers[0], Err(SignatureError::PayloadTooLarge { .. })));
    assert!(matches!(
        layers[1],
        Err(SignatureError::Annotation {
            reason: "missing",
            ..
        })
    ));
    assert!(layers[2].is_ok());
    v["layers"][2]["size"] = MAX_PAYLOAD_BYTES.into();
    let layers = signature_layers(&serde_json::to_vec(&v).unwrap(), &d).unwrap();
    assert!(layers[2].is_ok());
}

#[test]
fn the_stronger_refusal_is_reported() {
    let d = abc();
    let missing = SignatureError::Missing { signed: d };
    let invalid = SignatureError::NoKeyVerifies {
        signed: d,
        layer: d,
        keys: 1,
    };
    let mismatch = SignatureError::DigestMismatch {
        signed: d,
        layer: d,
        found: String::new(),
    };
    let table = [
        (&missing, &invalid, Refusal::Invalid),
        (&invalid, &missing, Refusal::Invalid),
        (&invalid, &mismatch, Refusal::Mismatch),
        (&mismatch, &missing, Refusal::Mismatch),
        (&missing, &missing, Refusal::Missing),
    ];
    for (a, b, want) in table {
        assert_eq!(a.clone().stronger(b.clone()).refusal(), want);
    }
    assert_eq!(signature_tag(&d), format!("sha256-{}.sig", d.hex()));
}
