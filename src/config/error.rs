//! Why a config was refused ([`ConfigError`]) and what deserves a warning ([`ConfigNote`]).
//!
//! Owns: the error and note types and their messages. Every error names the file; those
//! about a field carry its JSON path, the value found and what is allowed instead. Must
//! never carry a secret's value (inline secrets are shown as `(not shown)`).

use std::fmt;
use std::path::PathBuf;

use super::CONFIG_ENV;

/// Why the config was refused. Each variant names the file; those about a field carry
/// its JSON path, the value found (never a secret) and what is allowed instead.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error(
        "cannot read config file {}: {error}; create it, or point --config or {CONFIG_ENV} at the right file",
        file.display()
    )]
    Read {
        /// The config file.
        file: PathBuf,
        /// What went wrong.
        error: std::io::Error,
    },
    /// Not JSON, or a field of the wrong type or unknown.
    #[error("{}: line {line}, column {column}, at {}: {message}", file.display(), show_field(field))]
    Json {
        /// The config file.
        file: PathBuf,
        /// JSON path of the field serde stopped at; empty for the top level.
        field: String,
        /// 1-based line.
        line: usize,
        /// 1-based column (bytes).
        column: usize,
        /// serde_json's message, which says what was expected.
        message: String,
    },
    /// A required field is absent.
    #[error("{}: {field} is missing: {allowed}", file.display())]
    Missing {
        /// The config file.
        file: PathBuf,
        /// JSON path of the missing field.
        field: String,
        /// What to write there.
        allowed: String,
    },
    /// A field has a value that is not allowed.
    #[error("{}: {field} = {value}: {allowed}", file.display())]
    Invalid {
        /// The config file.
        file: PathBuf,
        /// JSON path of the field.
        field: String,
        /// The value found, as JSON (never a secret).
        value: String,
        /// Why it is refused and what is allowed instead.
        allowed: String,
    },
    /// A secret file could not be used (`load_secret`).
    #[error("secret file {}: {problem}", file.display())]
    Secret {
        /// The secret file.
        file: PathBuf,
        /// What is wrong and how to fix it.
        problem: String,
    },
}

/// A field path for a message: the path, or "the top level" for the empty one.
pub(super) fn show_field(field: &str) -> &str {
    if field.is_empty() { "the top level" } else { field }
}

/// Something in the config that works but deserves a warning (log it at warn level).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigNote {
    /// JSON path of the field concerned.
    pub(crate) field: String,
    /// What to do about it.
    pub(crate) message: String,
}

impl fmt::Display for ConfigNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}
