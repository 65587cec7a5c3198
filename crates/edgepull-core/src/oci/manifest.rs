//! Manifest and index documents, their media types and the checks a puller owes them.
//!
//! Owns: `Descriptor`, `ImageManifest`, `ImageIndex`, and `Document::parse`, which turns the
//! exact bytes a registry sent plus its `Content-Type` into one typed document or a clear
//! refusal (schema1, mediaType ≠ Content-Type, index/manifest ambiguity — CVE-2021-41190 —,
//! zero, negative, fractional or out-of-range sizes, bad digests). Every piece of the
//! document or the header that reaches an error is escaped and capped
//! ([`crate::text::sanitize`]): a media type is registry text. Never does IO and never
//! follows descriptor `urls`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::digest::Digest;
use super::platform::Platform;
use crate::text::{MESSAGE, SHORT, sanitize};

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// The `Accept` header for manifest requests: the four types above, nothing else.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";
/// Largest manifest or index accepted (4 MiB, as containers/image).
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;
/// Largest image config accepted.
pub const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// Why a manifest document was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Docker schema 1 (signed or not): deprecated and unsafe.
    #[error(
        "manifest media type {media_type:?} is Docker schema 1, which edgepull refuses; push the image again with a current client (schema 2 or OCI)"
    )]
    Schema1 { media_type: String },
    /// A type that is not one of the four manifest types.
    #[error("manifest media type {media_type:?} is not supported; expected one of: {ACCEPT}")]
    UnsupportedType { media_type: String },
    /// The body's `mediaType` differs from `Content-Type`.
    #[error(
        "manifest body says mediaType {body:?} but the registry sent Content-Type {header:?}; refusing the ambiguous document"
    )]
    MediaTypeMismatch { body: String, header: String },
    /// The document has both `manifests` and `layers`/`config` (CVE-2021-41190).
    #[error(
        "manifest document has both \"manifests\" and \"{other}\" and could be read as an index or a manifest (CVE-2021-41190); refusing it"
    )]
    Ambiguous { other: &'static str },
    /// Not valid JSON for the declared type. `detail` names the field (`layers[0].size`),
    /// the value and the position, escaped and capped.
    #[error("manifest of type {media_type:?} is not valid JSON for that type: {detail}")]
    Json { media_type: String, detail: String },
    /// A descriptor with a zero size (where content is required).
    #[error("descriptor {digest} in the manifest has size 0; blobs must have a positive size")]
    ZeroSize { digest: Digest },
    /// Larger than the cap.
    #[error("manifest is {size} bytes, more than the {MAX_MANIFEST_BYTES}-byte limit")]
    TooLarge { size: u64 },
}

/// A content descriptor. `urls` is parsed only to be ignored: edgepull never fetches from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// Content digest (validated while parsing).
    pub digest: Digest,
    /// Size in bytes (u64: a negative size fails to parse).
    pub size: u64,
    /// Platform, on index entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<DescriptorPlatform>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Foreign URLs (never used).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
}

impl Descriptor {
    /// A descriptor with just type, digest and size.
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Self {
        Self {
            media_type: media_type.to_string(),
            digest,
            size,
            platform: None,
            annotations: BTreeMap::new(),
            urls: Vec::new(),
        }
    }
}

/// The `platform` object of an index entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescriptorPlatform {
    /// e.g. `arm64`.
    pub architecture: String,
    /// e.g. `linux`.
    pub os: String,
    /// e.g. `v7`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl DescriptorPlatform {
    /// The normalized platform.
    pub fn to_platform(&self) -> Platform {
        Platform::normalized(
            &self.os,
            &self.architecture,
            self.variant.as_deref().unwrap_or(""),
        )
    }
}

/// An image manifest (OCI or Docker schema 2).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// Always 2.
    pub schema_version: u32,
    /// Media type, when present in the body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// Layer blobs, in order.
    pub layers: Vec<Descriptor>,
}

impl ImageManifest {
    /// Config then layers: every blob this manifest needs.
    pub fn blobs(&self) -> impl Iterator<Item = &Descriptor> {
        std::iter::once(&self.config).chain(self.layers.iter())
    }
}

/// An image index / manifest list.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    /// Always 2.
    pub schema_version: u32,
    /// Media type, when present in the body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// One entry per platform manifest.
    pub manifests: Vec<Descriptor>,
}

/// A parsed manifest document.
#[derive(Debug, Clone)]
pub enum Document {
    /// A single-platform manifest.
    Manifest(ImageManifest),
    /// A multi-platform index.
    Index(ImageIndex),
}

/// Only the keys we need to detect ambiguity and the declared type.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    media_type: Option<String>,
    manifests: Option<serde_json::Value>,
    layers: Option<serde_json::Value>,
    config: Option<serde_json::Value>,
}

impl Document {
    /// Parse `body` served with `content_type` (parameters ignored).
    pub fn parse(body: &[u8], content_type: &str) -> Result<Self, ManifestError> {
        if body.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge {
                size: body.len() as u64,
            });
        }
        let header = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if header.starts_with("application/vnd.docker.distribution.manifest.v1") {
            return Err(ManifestError::Schema1 {
                media_type: sanitize(&header, SHORT),
            });
        }
        let probe: Probe = parse_json(body, &header)?;
        if let Some(body_type) = &probe.media_type {
            if body_type.starts_with("application/vnd.docker.distribution.manifest.v1") {
                return Err(ManifestError::Schema1 {
                    media_type: sanitize(body_type, SHORT),
                });
            }
            if !header.is_empty() && *body_type != header {
                return Err(ManifestError::MediaTypeMismatch {
                    body: sanitize(body_type, SHORT),
                    header: sanitize(&header, SHORT),
                });
            }
        }
        if probe.manifests.is_some() {
            if probe.layers.is_some() {
                return Err(ManifestError::Ambiguous { other: "layers" });
            }
            if probe.config.is_some() {
                return Err(ManifestError::Ambiguous { other: "config" });
            }
        }
        let effective = if header.is_empty() {
            probe.media_type.clone().unwrap_or_default()
        } else {
            header
        };
        match effective.as_str() {
            OCI_INDEX | DOCKER_LIST => {
                let index: ImageIndex = parse_json(body, &effective)?;
                Ok(Document::Index(index))
            }
            OCI_MANIFEST | DOCKER_MANIFEST => {
                let m: ImageManifest = parse_json(body, &effective)?;
                if let Some(zero) = m.blobs().find(|d| d.size == 0) {
                    return Err(ManifestError::ZeroSize { digest: zero.digest });
                }
                Ok(Document::Manifest(m))
            }
            other => Err(ManifestError::UnsupportedType {
                media_type: sanitize(other, SHORT),
            }),
        }
    }

    /// Whether this is an index (a multi-platform document).
    pub fn is_index(&self) -> bool {
        matches!(self, Document::Index(_))
    }
}

/// `body` as a `T`, or a [`ManifestError::Json`] naming the field that failed (via
/// `serde_path_to_error`: `layers[0].size: invalid value: integer \`-5\`, expected u64`).
fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8], media_type: &str) -> Result<T, ManifestError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let detail = match serde_path_to_error::deserialize::<_, T>(&mut de) {
        // Trailing characters after the document are refused too (as `from_slice` does).
        Ok(v) => match de.end() {
            Ok(()) => return Ok(v),
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    };
    Err(ManifestError::Json {
        media_type: sanitize(media_type, SHORT),
        detail: sanitize(&detail, MESSAGE),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> String {
        format!("sha256:{}", hex::encode([n; 32]))
    }

    fn manifest_json(media: Option<&str>) -> String {
        let mt = media
            .map(|m| format!("\"mediaType\":\"{m}\","))
            .unwrap_or_default();
        format!(
            r#"{{"schemaVersion":2,{mt}"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":10}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":20,"urls":["https://evil.example/x"]}}]}}"#,
            d(1),
            d(2)
        )
    }

    #[test]
    fn parses_manifest_and_keeps_urls_inert() {
        let doc = Document::parse(
            manifest_json(Some(OCI_MANIFEST)).as_bytes(),
            "application/vnd.oci.image.manifest.v1+json; charset=utf-8",
        )
        .unwrap();
        let Document::Manifest(m) = doc else {
            panic!("expected manifest")
        };
        assert_eq!(m.blobs().count(), 2);
        assert_eq!(m.layers[0].urls.len(), 1);
    }

    #[test]
    fn refusals() {
        let mismatch = Document::parse(manifest_json(Some(OCI_MANIFEST)).as_bytes(), OCI_INDEX).unwrap_err();
        assert!(
            matches!(mismatch, ManifestError::MediaTypeMismatch { .. }),
            "{mismatch}"
        );
        let schema1 =
            Document::parse(b"{}", "application/vnd.docker.distribution.manifest.v1+prettyjws").unwrap_err();
        assert!(matches!(schema1, ManifestError::Schema1 { .. }));
        let ambiguous = format!(
            r#"{{"schemaVersion":2,"manifests":[],"layers":[],"config":{{"mediaType":"x","digest":"{}","size":1}}}}"#,
            d(1)
        );
        let err = Document::parse(ambiguous.as_bytes(), OCI_INDEX).unwrap_err();
        assert!(matches!(err, ManifestError::Ambiguous { .. }), "{err}");
        let bad_digest = manifest_json(None).replace(&d(2), "sha256:../../etc/passwd");
        assert!(matches!(
            Document::parse(bad_digest.as_bytes(), OCI_MANIFEST).unwrap_err(),
            ManifestError::Json { .. }
        ));
        let zero = manifest_json(None).replace("\"size\":20", "\"size\":0");
        assert!(matches!(
            Document::parse(zero.as_bytes(), OCI_MANIFEST).unwrap_err(),
            ManifestError::ZeroSize { .. }
        ));
        let negative = manifest_json(None).replace("\"size\":20", "\"size\":-5");
        assert!(Document::parse(negative.as_bytes(), OCI_MANIFEST).is_err());
        let unknown = Document::parse(manifest_json(None).as_bytes(), "text/html").unwrap_err();
        assert!(matches!(unknown, ManifestError::UnsupportedType { .. }));
        let huge = vec![b' '; (MAX_MANIFEST_BYTES + 1) as usize];
        assert!(matches!(
            Document::parse(&huge, OCI_MANIFEST).unwrap_err(),
            ManifestError::TooLarge { .. }
        ));
    }

    #[test]
    fn bad_sizes_are_json_errors_naming_the_field_and_value() {
        // (replacement for the layer's size, text the message must show)
        let cases = [
            ("-5", "integer `-5`"),
            ("1.5", "floating point `1.5`"),
            ("18446744073709551616", "floating point"),
            ("\"20\"", "string \"20\""),
            ("null", "null"),
            ("1e3", "floating point `1000"),
        ];
        for (size, shown) in cases {
            let body = manifest_json(None).replace("\"size\":20", &format!("\"size\":{size}"));
            let err = Document::parse(body.as_bytes(), OCI_MANIFEST).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, ManifestError::Json { .. }), "{size}: {msg}");
            assert!(msg.contains("layers[0].size"), "{size}: {msg}");
            assert!(msg.contains(shown), "{size}: {msg}");
        }
        // The largest u64 parses (the size checks judge it later).
        let body = manifest_json(None).replace("\"size\":20", "\"size\":18446744073709551615");
        let Document::Manifest(m) = Document::parse(body.as_bytes(), OCI_MANIFEST).unwrap() else {
            panic!()
        };
        assert_eq!(m.layers[0].size, u64::MAX);
    }

    #[test]
    fn registry_text_in_errors_is_escaped_and_capped() {
        let hostile = format!("\x1b[2J\r\0{}", "A".repeat(100 * 1024));
        let escaped = serde_json::to_string(&hostile).unwrap();
        // Unsupported type from the body, a mismatch, a JSON error carrying the value.
        let unsupported = manifest_json(None).replacen("{", &format!("{{\"mediaType\":{escaped},"), 1);
        let mismatch = unsupported.clone();
        let bad_digest = manifest_json(None).replace(&format!("\"{}\"", d(2)), &escaped);
        // serde_path_to_error names a map key as it is: here, in the path to a bad value.
        let bad_annotation = manifest_json(None).replace(
            "\"size\":20",
            &format!("\"size\":20,\"annotations\":{{{escaped}:5}}"),
        );
        let errors = [
            Document::parse(unsupported.as_bytes(), "").unwrap_err(),
            Document::parse(mismatch.as_bytes(), OCI_MANIFEST).unwrap_err(),
            Document::parse(manifest_json(None).as_bytes(), &hostile).unwrap_err(),
            Document::parse(bad_digest.as_bytes(), OCI_MANIFEST).unwrap_err(),
            Document::parse(bad_annotation.as_bytes(), OCI_MANIFEST).unwrap_err(),
            Document::parse(
                b"{}",
                &format!("application/vnd.docker.distribution.manifest.v1+{hostile}"),
            )
            .unwrap_err(),
        ];
        for e in errors {
            let msg = e.to_string();
            assert!(msg.chars().count() < 1024, "{} chars: {e:?}", msg.len());
            assert!(
                !msg.chars().any(|c| c.is_control()),
                "control character in {msg:?}"
            );
        }
    }

    #[test]
    fn parses_index_platforms() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":5,"platform":{{"architecture":"arm","os":"linux","variant":"v7"}}}}]}}"#,
            d(3)
        );
        let Document::Index(i) = Document::parse(body.as_bytes(), OCI_INDEX).unwrap() else {
            panic!()
        };
        assert_eq!(
            i.manifests[0]
                .platform
                .as_ref()
                .unwrap()
                .to_platform()
                .to_string(),
            "linux/arm/v7"
        );
    }
}
