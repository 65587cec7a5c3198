//! The `signatures` section: the public keys an image must be signed with.
//!
//! Owns: [`SignaturesConfig`] — each `public_keys[]` entry an absolute path to a PEM
//! `PUBLIC KEY` (ECDSA P-256 or Ed25519), read and parsed here, at load, so a wrong or
//! unreadable key file is a config error naming the field and the file, never a refusal
//! at pull time. Blocking: reads the key files (like `endpoints_file`). Must never accept
//! a private key, and never keep a path whose key did not parse.

use std::io::Read;
use std::path::PathBuf;

use edgepull_core::signature::{PublicKey, key::MAX_KEY_BYTES};

use super::ctx::{Ctx, q};
use super::error::ConfigError;
use super::path::FieldPath;
use super::raw::RawSignatures;

/// Most keys in `signatures.public_keys`.
const MAX_KEYS: usize = 16;

/// `signatures`: when present, nothing becomes current unless signed by one of `keys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SignaturesConfig {
    /// The key files and their keys, in config order.
    pub(crate) keys: Vec<(PathBuf, PublicKey)>,
}

impl Ctx {
    /// The `signatures` section, its key files read and parsed.
    pub(super) fn signatures(&self, raw: RawSignatures) -> Result<SignaturesConfig, ConfigError> {
        let at = FieldPath::root().key("signatures").key("public_keys");
        let example = "e.g. \"signatures\": {\"public_keys\": [\"/etc/edgepull/keys/release.pub\"]}";
        let paths = raw.public_keys.ok_or_else(|| {
            self.missing(
                &at,
                format!("list the PEM public key files images must be signed with, {example}"),
            )
        })?;
        if paths.is_empty() || paths.len() > MAX_KEYS {
            return Err(self.invalid(
                &at,
                format!("a list of {} paths", paths.len()),
                format!(
                    "allowed: 1 to {MAX_KEYS} key files ({example}); remove the signatures section to accept unsigned images"
                ),
            ));
        }
        let mut keys: Vec<(PathBuf, PublicKey)> = Vec::new();
        for (i, value) in paths.iter().enumerate() {
            let field = at.index(i);
            let path = self.abs_path(&field, value)?;
            if keys.iter().any(|(p, _)| *p == path) {
                return Err(self.invalid(&field, q(value), "listed twice; remove the duplicate"));
            }
            let bytes = read_key(&path).map_err(|e| {
                self.invalid(
                    &field,
                    q(value),
                    format!(
                        "cannot read the key file: {e}; install the release public key there or fix the path"
                    ),
                )
            })?;
            let key = PublicKey::from_pem(&bytes)
                .map_err(|e| self.invalid(&field, q(value), format!("the key file {e}")))?;
            keys.push((path, key));
        }
        Ok(SignaturesConfig { keys })
    }
}

/// The bytes of a key file, refused above [`MAX_KEY_BYTES`] (blocking).
fn read_key(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_KEY_BYTES as u64 + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}
