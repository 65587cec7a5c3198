//! Cosign key-based image signatures ("simple signing", as `cosign sign --key` and
//! `skopeo copy --sign-by-sigstore-private-key` write them), decided without IO.
//!
//! Owns: the signature tag of a digest (`sha256-<hex>.sig`), which layers of a signature
//! manifest are signatures (and the caps: [`MAX_SIGNATURES`], [`MAX_PAYLOAD_BYTES`]), the
//! verification of one payload (the key's signature over the exact payload bytes first,
//! then `critical.type`, `critical.image.docker-manifest-digest` and
//! `critical.identity.docker-reference` compared by repository as skopeo's
//! `matchRepository` does), and the verdict's class: [`Refusal`] `missing`, `invalid` or
//! `mismatch`. Keys are parsed in [`key`].
//!
//! Never fetches a manifest or a payload (the shell does, under the usual allowlist and
//! digest checks), never reads a key file, never trusts a payload before its signature
//! verifies.

pub mod key;

use std::fmt;

use base64::Engine as _;
use serde::Deserialize;

use crate::hostport::HostPort;
use crate::oci::{Descriptor, Digest, Reference, reference::ReferenceError};
pub use key::{Algorithm, KeyError, PublicKey};

/// The media type of a signature payload layer.
pub const SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding the base64 signature of the payload.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// `critical.type` of a cosign image signature.
pub const COSIGN_TYPE: &str = "cosign container image signature";
/// Largest payload fetched.
pub const MAX_PAYLOAD_BYTES: u64 = 64 * 1024;
/// Most signature layers in one signature manifest.
pub const MAX_SIGNATURES: usize = 16;
/// Longest signature annotation (a P-256 ASN.1 signature is 96 base64 characters).
const MAX_SIGNATURE_CHARS: usize = 1024;

/// The tag cosign stores the signatures of `digest` under: `sha256-<hex>.sig`.
pub fn signature_tag(digest: &Digest) -> String {
    format!("{}-{}.sig", digest.algorithm(), digest.hex())
}

/// The class of a refusal, as `status.json` shows it (`signature: <class>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refusal {
    /// No signature at all.
    Missing,
    /// Signatures exist but none verifies with a configured key, or one is malformed.
    Invalid,
    /// A valid signature by a configured key, but for another digest or identity.
    Mismatch,
}

impl Refusal {
    /// `missing`, `invalid` or `mismatch`.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Invalid => "invalid",
            Refusal::Mismatch => "mismatch",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The identity a signature must name: a registry and repository (tag and digest ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    registry: HostPort,
    repository: String,
}

impl Identity {
    /// The identity of `reference`: its registry and repository as written.
    pub fn of(reference: &Reference) -> Self {
        Self {
            registry: reference.registry().clone(),
            repository: reference.repository().to_string(),
        }
    }

    /// Parse `registry/repository[:tag][@digest]` (tag and digest are dropped).
    pub fn parse(value: &str) -> Result<Self, ReferenceError> {
        Reference::parse(value).map(|r| Self::of(&r))
    }

    /// Whether a payload's `docker-reference` names this repository, ignoring a tag or
    /// digest in it (skopeo writes `registry/repo:tag`, cosign `registry/repo`).
    pub fn matches(&self, docker_reference: &str) -> bool {
        Identity::parse(docker_reference).is_ok_and(|other| other == *self)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)
    }
}

/// Why signatures were refused. Every variant names the signed digest it was about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No signature manifest, or one without signature layers.
    #[error(
        "no signature for {signed}: the tag {tag} is absent or has no {SIMPLESIGNING} layer; \
         sign the release with a key in signatures.public_keys (cosign sign --key)",
        tag = signature_tag(signed)
    )]
    Missing { signed: Digest },
    /// The signature manifest is not a manifest.
    #[error("signature manifest for {signed} is unreadable: {reason}")]
    Manifest { signed: Digest, reason: String },
    /// Too many signature layers.
    #[error("signature manifest for {signed} has {count} signatures, more than {MAX_SIGNATURES}")]
    TooMany { signed: Digest, count: usize },
    /// A payload larger than the cap.
    #[error("signature payload {layer} for {signed} is {size} bytes, more than {MAX_PAYLOAD_BYTES}")]
    PayloadTooLarge {
        signed: Digest,
        layer: Digest,
        size: u64,
    },
    /// No signature annotation, or not base64.
    #[error(
        "signature payload {layer} for {signed} has no valid {SIGNATURE_ANNOTATION} annotation ({reason})"
    )]
    Annotation {
        signed: Digest,
        layer: Digest,
        reason: &'static str,
    },
    /// No configured key verifies the signature (unknown key, tampered payload or signature).
    #[error("signature {layer} for {signed} is not valid for any of the {keys} configured key(s)")]
    NoKeyVerifies {
        signed: Digest,
        layer: Digest,
        keys: usize,
    },
    /// A verified payload that is not a cosign simple-signing document.
    #[error("signed payload {layer} for {signed} is not a cosign image signature: {reason}")]
    Payload {
        signed: Digest,
        layer: Digest,
        reason: String,
    },
    /// A verified payload for another manifest digest.
    #[error("signature {layer} is valid but signs manifest {found:?}, not {signed}")]
    DigestMismatch {
        signed: Digest,
        layer: Digest,
        found: String,
    },
    /// A verified payload for another repository.
    #[error(
        "signature {layer} for {signed} is valid but names {found:?}, not {expected}; set images[].identity if the image was signed under another name"
    )]
    IdentityMismatch {
        signed: Digest,
        layer: Digest,
        found: String,
        expected: String,
    },
}

impl SignatureError {
    /// Its class.
    pub fn refusal(&self) -> Refusal {
        match self {
            SignatureError::Missing { .. } => Refusal::Missing,
            SignatureError::Manifest { .. }
            | SignatureError::TooMany { .. }
            | SignatureError::PayloadTooLarge { .. }
            | SignatureError::Annotation { .. }
            | SignatureError::NoKeyVerifies { .. }
            | SignatureError::Payload { .. } => Refusal::Invalid,
            SignatureError::DigestMismatch { .. } | SignatureError::IdentityMismatch { .. } => {
                Refusal::Mismatch
            }
        }
    }

    /// Of two refusals, the one to report: the more specific class (a valid signature for
    /// something else says more than a broken one, which says more than none); the first
    /// on a tie.
    pub fn stronger(self, other: SignatureError) -> SignatureError {
        if other.refusal() > self.refusal() {
            other
        } else {
            self
        }
    }
}

/// One signature layer: the payload to fetch and its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureLayer {
    /// The payload blob (size at most [`MAX_PAYLOAD_BYTES`]).
    pub payload: Descriptor,
    signature: Vec<u8>,
}

#[derive(Deserialize)]
struct SignatureManifest {
    #[serde(default)]
    layers: Vec<Descriptor>,
}

/// The signature layers of the manifest stored under [`signature_tag`]`(signed)`. Every
/// layer's cap and annotation is checked before anything is fetched; a layer that fails
/// is returned as its error so that another layer may still be accepted.
pub fn signature_layers(
    manifest: &[u8],
    signed: &Digest,
) -> Result<Vec<Result<SignatureLayer, SignatureError>>, SignatureError> {
    let doc: SignatureManifest = serde_json::from_slice(manifest).map_err(|e| SignatureError::Manifest {
        signed: *signed,
        reason: e.to_string(),
    })?;
    let layers: Vec<Descriptor> = doc
        .layers
        .into_iter()
        .filter(|l| l.media_type == SIMPLESIGNING)
        .collect();
    if layers.is_empty() {
        return Err(SignatureError::Missing { signed: *signed });
    }
    if layers.len() > MAX_SIGNATURES {
        return Err(SignatureError::TooMany {
            signed: *signed,
            count: layers.len(),
        });
    }
    Ok(layers.into_iter().map(|l| layer(l, signed)).collect())
}

fn layer(payload: Descriptor, signed: &Digest) -> Result<SignatureLayer, SignatureError> {
    if payload.size > MAX_PAYLOAD_BYTES {
        return Err(SignatureError::PayloadTooLarge {
            signed: *signed,
            layer: payload.digest,
            size: payload.size,
        });
    }
    let annotation = |reason| SignatureError::Annotation {
        signed: *signed,
        layer: payload.digest,
        reason,
    };
    let text = payload
        .annotations
        .get(SIGNATURE_ANNOTATION)
        .ok_or_else(|| annotation("missing"))?;
    if text.len() > MAX_SIGNATURE_CHARS {
        return Err(annotation("too long"));
    }
    let signature = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| annotation("not base64"))?;
    Ok(SignatureLayer { payload, signature })
}

#[derive(Deserialize)]
struct Payload {
    critical: Critical,
}

#[derive(Deserialize)]
struct Critical {
    identity: PayloadIdentity,
    image: PayloadImage,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct PayloadIdentity {
    #[serde(rename = "docker-reference")]
    docker_reference: String,
}

#[derive(Deserialize)]
struct PayloadImage {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

/// Check one fetched payload (its bytes already verified against `layer.payload`):
/// the signature by one of `keys` over the exact bytes, then the type, the digest
/// (`signed`) and the identity. Returns the index of the key that verified.
pub fn verify_payload(
    keys: &[PublicKey],
    identity: &Identity,
    signed: &Digest,
    layer: &SignatureLayer,
    payload: &[u8],
) -> Result<usize, SignatureError> {
    let at = layer.payload.digest;
    let Some(key) = keys.iter().position(|k| k.verify(payload, &layer.signature)) else {
        return Err(SignatureError::NoKeyVerifies {
            signed: *signed,
            layer: at,
            keys: keys.len(),
        });
    };
    let doc: Payload = serde_json::from_slice(payload).map_err(|e| SignatureError::Payload {
        signed: *signed,
        layer: at,
        reason: e.to_string(),
    })?;
    let c = doc.critical;
    if c.kind != COSIGN_TYPE {
        return Err(SignatureError::Payload {
            signed: *signed,
            layer: at,
            reason: format!("critical.type is {:?}, not {COSIGN_TYPE:?}", c.kind),
        });
    }
    if Digest::parse(&c.image.docker_manifest_digest).ok().as_ref() != Some(signed) {
        return Err(SignatureError::DigestMismatch {
            signed: *signed,
            layer: at,
            found: c.image.docker_manifest_digest,
        });
    }
    if !identity.matches(&c.identity.docker_reference) {
        return Err(SignatureError::IdentityMismatch {
            signed: *signed,
            layer: at,
            found: c.identity.docker_reference,
            expected: identity.to_string(),
        });
    }
    Ok(key)
}

#[cfg(test)]
mod tests;
