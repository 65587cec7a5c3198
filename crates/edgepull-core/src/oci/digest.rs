//! `Digest`: a validated content address (`sha256:<64 lowercase hex>`).
//!
//! Owns: parsing digest strings from any untrusted source (manifests, headers, config,
//! file names) and the incremental hasher that produces them. It is the only way a digest
//! becomes a path segment (`Digest::hex`). Must never accept another algorithm, upper-case
//! hex or any other character: a digest that passes here is safe inside a URL and a path.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a digest string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// No `algorithm:` prefix.
    #[error("digest {value:?} has no algorithm prefix; expected sha256:<64 lowercase hex>")]
    MissingAlgorithm { value: String },
    /// An algorithm other than sha256.
    #[error(
        "digest {value:?} uses algorithm {algorithm:?}; only sha256 is supported (expected sha256:<64 lowercase hex>)"
    )]
    UnsupportedAlgorithm { value: String, algorithm: String },
    /// The encoded part is not 64 lowercase hex characters.
    #[error("digest {value:?} is malformed: the sha256 part must be exactly 64 lowercase hex characters")]
    BadEncoding { value: String },
}

/// A validated sha256 digest. Displays as `sha256:<hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    bytes: [u8; 32],
}

impl Digest {
    /// Parse and validate `sha256:<64 lowercase hex>`.
    pub fn parse(value: &str) -> Result<Self, DigestError> {
        // Truncate what we echo back so a hostile header cannot flood a log line.
        let shown = || value.chars().take(100).collect::<String>();
        let Some((algorithm, encoded)) = value.split_once(':') else {
            return Err(DigestError::MissingAlgorithm { value: shown() });
        };
        if algorithm != "sha256" {
            return Err(DigestError::UnsupportedAlgorithm {
                value: shown(),
                algorithm: algorithm.chars().take(32).collect(),
            });
        }
        if encoded.len() != 64 || !encoded.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(DigestError::BadEncoding { value: shown() });
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(encoded, &mut bytes).map_err(|_| DigestError::BadEncoding { value: shown() })?;
        Ok(Self { bytes })
    }

    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        let mut h = Hasher::new();
        h.update(data);
        h.finish()
    }

    /// The 64-character lowercase hex part: safe as a single path segment.
    pub fn hex(&self) -> String {
        hex::encode(self.bytes)
    }

    /// The algorithm name, always `sha256`.
    pub fn algorithm(&self) -> &'static str {
        "sha256"
    }

    /// A short form for humans (`sha256:0123456789ab`).
    pub fn short(&self) -> String {
        format!("sha256:{}", &self.hex()[..12])
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Incremental sha256 over a byte stream. ring's SHA-256: its assembly uses the CPU's SHA
/// instructions where there are some (x86-64 SHA-NI, ARMv8 crypto extensions) and hand-written
/// ARMv7/NEON code where there are none, where the portable `sha2` crate ran 36 guest
/// instructions per byte on a Cortex-A7 (44 % of an armv7 pull, docs/benchmarks.md).
#[derive(Clone)]
pub struct Hasher {
    inner: ring::digest::Context,
}

impl Default for Hasher {
    fn default() -> Self {
        Self {
            inner: ring::digest::Context::new(&ring::digest::SHA256),
        }
    }
}

impl Hasher {
    /// A fresh hasher.
    pub fn new() -> Self {
        Self::default()
    }
    /// Feed bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.inner.update(data);
    }
    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        let out = self.inner.finish();
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(out.as_ref());
        Digest { bytes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_displays_round_trip() {
        let d = Digest::parse(EMPTY).unwrap();
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(Digest::of(b""), d);
        assert_eq!(d.short(), "sha256:e3b0c44298fc");
    }

    #[test]
    fn refuses_bad_digests() {
        type Check = fn(&DigestError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("e3b0c44298fc", |e| {
                matches!(e, DigestError::MissingAlgorithm { .. })
            }),
            ("sha512:abcd", |e| {
                matches!(e, DigestError::UnsupportedAlgorithm { .. })
            }),
            (
                "SHA256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                |e| matches!(e, DigestError::UnsupportedAlgorithm { .. }),
            ),
            (
                "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
                |e| matches!(e, DigestError::BadEncoding { .. }),
            ),
            ("sha256:../../../../etc/passwd", |e| {
                matches!(e, DigestError::BadEncoding { .. })
            }),
            (
                "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
                |e| matches!(e, DigestError::BadEncoding { .. }),
            ),
            (
                "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/",
                |e| matches!(e, DigestError::BadEncoding { .. }),
            ),
            ("", |e| matches!(e, DigestError::MissingAlgorithm { .. })),
        ];
        for (input, check) in cases {
            let err = Digest::parse(input).unwrap_err();
            assert!(check(&err), "{input:?} gave {err:?}");
        }
    }

    #[test]
    fn serde_validates() {
        let ok: Digest = serde_json::from_str(&format!("\"{EMPTY}\"")).unwrap();
        assert_eq!(ok.to_string(), EMPTY);
        assert!(serde_json::from_str::<Digest>("\"sha256:..\"").is_err());
    }
}
