//! Public keys for signature verification: PEM `PUBLIC KEY` (SubjectPublicKeyInfo) holding
//! an ECDSA P-256 or an Ed25519 key, and verifying one signature with it (ring).
//!
//! Owns: the PEM armour, a minimal DER walk of the SPKI for the two accepted algorithm
//! identifiers, and the verification call. Never reads a key file (the caller passes the
//! text) and never accepts a private key, another curve or another algorithm.

use std::fmt;

use base64::Engine as _;
use ring::signature::{ECDSA_P256_SHA256_ASN1, ED25519, UnparsedPublicKey};

/// Largest key text accepted (a PEM P-256 key is 178 bytes).
pub const MAX_KEY_BYTES: usize = 16 * 1024;

/// DER of the AlgorithmIdentifier contents for id-ecPublicKey with namedCurve prime256v1.
const ALG_EC_P256: &[u8] = &[
    0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, // 1.2.840.10045.2.1
    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, // 1.2.840.10045.3.1.7
];
/// DER of the id-ecPublicKey OID alone (another curve follows it).
const OID_EC: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// DER of the AlgorithmIdentifier contents for Ed25519 (1.3.101.112, no parameters).
const ALG_ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];

/// Why a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Larger than [`MAX_KEY_BYTES`].
    #[error("is {size} bytes, more than {MAX_KEY_BYTES}; a public key file holds one PEM PUBLIC KEY")]
    TooLarge { size: usize },
    /// No `-----BEGIN PUBLIC KEY-----` … `-----END PUBLIC KEY-----` block.
    #[error(
        "holds no PEM block; expected -----BEGIN PUBLIC KEY----- (e.g. cosign.pub from `cosign generate-key-pair`)"
    )]
    NotPem,
    /// A private key: it must never be on a device that only verifies.
    #[error(
        "holds a private key ({label}); give the public key (cosign.pub, or `openssl pkey -pubout`) and keep the private key off the device"
    )]
    PrivateKey { label: String },
    /// Some other PEM block.
    #[error("holds a PEM {label:?} block; expected PUBLIC KEY (SubjectPublicKeyInfo)")]
    WrongLabel { label: String },
    /// More than one PEM block.
    #[error("holds {count} PEM blocks; put one public key in each file")]
    Several { count: usize },
    /// No END line for the BEGIN line.
    #[error("has -----BEGIN {label}----- without its -----END {label}----- line")]
    Unterminated { label: String },
    /// The body is not base64.
    #[error("PEM body is not valid base64")]
    Base64,
    /// The DER structure is not a SubjectPublicKeyInfo.
    #[error("is not a DER SubjectPublicKeyInfo: {reason}")]
    Der { reason: &'static str },
    /// An EC key on a curve other than P-256.
    #[error(
        "is an EC key on a curve other than P-256 (prime256v1); only P-256 and Ed25519 keys are supported"
    )]
    Curve,
    /// Neither EC nor Ed25519.
    #[error(
        "uses an unsupported algorithm (OID bytes {oid}); only ECDSA P-256 and Ed25519 keys are supported"
    )]
    Algorithm { oid: String },
    /// The key bytes have the wrong shape for the algorithm.
    #[error("{algorithm} public key has {len} bytes; expected {expected}")]
    KeyBytes {
        algorithm: &'static str,
        len: usize,
        expected: &'static str,
    },
}

/// The algorithm of a [`PublicKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// ECDSA over P-256 with SHA-256; signatures are ASN.1 DER (what cosign writes).
    EcdsaP256,
    /// Ed25519; signatures are the 64 raw bytes.
    Ed25519,
}

impl Algorithm {
    /// `ecdsa-p256` or `ed25519`.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::EcdsaP256 => "ecdsa-p256",
            Algorithm::Ed25519 => "ed25519",
        }
    }
}

/// A verification key, parsed.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    algorithm: Algorithm,
    /// The uncompressed point (65 bytes) or the Ed25519 key (32 bytes).
    bytes: Vec<u8>,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PublicKey({}, {})",
            self.algorithm.as_str(),
            self.fingerprint()
        )
    }
}

impl PublicKey {
    /// Parse the text of a PEM `PUBLIC KEY` file.
    pub fn from_pem(text: &[u8]) -> Result<Self, KeyError> {
        if text.len() > MAX_KEY_BYTES {
            return Err(KeyError::TooLarge { size: text.len() });
        }
        let text = String::from_utf8_lossy(text);
        let der = pem_body(&text)?;
        Self::from_spki_der(&der)
    }

    /// Parse a DER SubjectPublicKeyInfo.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        let (spki, rest) = tlv(der, 0x30)?;
        if !rest.is_empty() {
            return Err(KeyError::Der {
                reason: "bytes after the SubjectPublicKeyInfo",
            });
        }
        let (alg, rest) = tlv(spki, 0x30)?;
        let (bits, rest) = tlv(rest, 0x03)?;
        if !rest.is_empty() {
            return Err(KeyError::Der {
                reason: "bytes after the subjectPublicKey",
            });
        }
        let Some((&0, key)) = bits.split_first() else {
            return Err(KeyError::Der {
                reason: "subjectPublicKey BIT STRING has unused bits",
            });
        };
        let algorithm = if alg == ALG_EC_P256 {
            Algorithm::EcdsaP256
        } else if alg == ALG_ED25519 {
            Algorithm::Ed25519
        } else if alg.starts_with(OID_EC) {
            return Err(KeyError::Curve);
        } else {
            let oid = tlv(alg, 0x06).map_or(alg, |(o, _)| o);
            return Err(KeyError::Algorithm {
                oid: hex::encode(oid),
            });
        };
        let ok = match algorithm {
            Algorithm::EcdsaP256 => key.len() == 65 && key[0] == 0x04,
            Algorithm::Ed25519 => key.len() == 32,
        };
        if !ok {
            return Err(KeyError::KeyBytes {
                algorithm: algorithm.as_str(),
                len: key.len(),
                expected: match algorithm {
                    Algorithm::EcdsaP256 => "65 (an uncompressed point, 0x04 first)",
                    Algorithm::Ed25519 => "32",
                },
            });
        }
        Ok(Self {
            algorithm,
            bytes: key.to_vec(),
        })
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// `sha256:` and the first 16 hex digits of the key bytes' SHA-256, for logs.
    pub fn fingerprint(&self) -> String {
        let d = crate::oci::Digest::of(&self.bytes).hex();
        format!("sha256:{}", &d[..16])
    }

    /// Whether `signature` is this key's signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let alg: &dyn ring::signature::VerificationAlgorithm = match self.algorithm {
            Algorithm::EcdsaP256 => &ECDSA_P256_SHA256_ASN1,
            Algorithm::Ed25519 => &ED25519,
        };
        UnparsedPublicKey::new(alg, &self.bytes)
            .verify(message, signature)
            .is_ok()
    }
}

/// The DER bytes of the single PEM `PUBLIC KEY` block in `text`.
fn pem_body(text: &str) -> Result<Vec<u8>, KeyError> {
    let mut blocks: Vec<(String, String)> = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in text.lines().map(str::trim) {
        if let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            if let Some((label, _)) = open {
                return Err(KeyError::Unterminated { label });
            }
            open = Some((label.to_string(), String::new()));
        } else if let Some(label) = line
            .strip_prefix("-----END ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            match open.take() {
                Some((begun, body)) if begun == label => blocks.push((begun, body)),
                Some((begun, _)) => return Err(KeyError::Unterminated { label: begun }),
                None => return Err(KeyError::NotPem),
            }
        } else if let Some((_, body)) = &mut open {
            // RFC 7468 headers (`Proc-Type: …`) mark an encrypted legacy key.
            if line.contains(':') {
                return Err(KeyError::Base64);
            }
            body.push_str(line);
        }
    }
    if let Some((label, _)) = open {
        return Err(KeyError::Unterminated { label });
    }
    let (label, body) = match blocks.len() {
        0 => return Err(KeyError::NotPem),
        1 => blocks.remove(0),
        count => return Err(KeyError::Several { count }),
    };
    if label.contains("PRIVATE") {
        return Err(KeyError::PrivateKey { label });
    }
    if label != "PUBLIC KEY" {
        return Err(KeyError::WrongLabel { label });
    }
    base64::engine::general_purpose::STANDARD
        .decode(body.as_bytes())
        .map_err(|_| KeyError::Base64)
}

/// One DER element with tag `tag` at the start of `input`: its contents and what follows.
/// Definite lengths only, at most 2 length bytes (a key is far smaller than 64 KiB).
fn tlv(input: &[u8], tag: u8) -> Result<(&[u8], &[u8]), KeyError> {
    let der = |reason| KeyError::Der { reason };
    let (&t, rest) = input.split_first().ok_or(der("truncated"))?;
    if t != tag {
        return Err(der("unexpected element"));
    }
    let (&first, rest) = rest.split_first().ok_or(der("truncated"))?;
    let (len, rest) = match first {
        0..=0x7f => (usize::from(first), rest),
        0x81 => {
            let (&b, rest) = rest.split_first().ok_or(der("truncated"))?;
            if b < 0x80 {
                return Err(der("non-minimal length"));
            }
            (usize::from(b), rest)
        }
        0x82 => {
            let [hi, lo, ..] = rest else {
                return Err(der("truncated"));
            };
            let len = usize::from(*hi) << 8 | usize::from(*lo);
            if len < 0x100 {
                return Err(der("non-minimal length"));
            }
            (len, &rest[2..])
        }
        _ => return Err(der("unsupported length form")),
    };
    if rest.len() < len {
        return Err(der("truncated"));
    }
    Ok(rest.split_at(len))
}
