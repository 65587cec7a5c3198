//! The validation context every section shares.
//!
//! Owns: [`Ctx`] (the file being validated), the constructors that put its name, the
//! field path and the value into every [`ConfigError`], and the checks several sections
//! use: numbers within [`Limits`], absolute paths and `host[:port]` values. Pure; must
//! never read files (the sections that do say so).

use std::path::{Path, PathBuf};
use std::time::Duration;

use edgepull_core::hostport::{HostPort, HostPortError};

use super::error::ConfigError;
use super::path::{FieldPath, Located};

/// A JSON string, for showing a value in a message.
pub(super) fn q(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// What a number field allows: `min..=max`; `unit` follows the range in the message.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) min: u64,
    pub(super) max: u64,
    pub(super) unit: &'static str,
}

/// The config file being validated; every error names it.
pub(super) struct Ctx {
    pub(super) file: PathBuf,
}

impl Ctx {
    /// A serde_json error in the config text, with the field it happened in.
    pub(super) fn json(&self, e: Located) -> ConfigError {
        let (line, column) = (e.error.line(), e.error.column());
        let full = e.error.to_string();
        // serde_json appends the position; the message shows it once, in front.
        let suffix = format!(" at line {line} column {column}");
        let message = full.strip_suffix(&suffix).unwrap_or(&full).to_string();
        ConfigError::Json {
            file: self.file.clone(),
            field: e.field.to_string(),
            line,
            column,
            message,
        }
    }

    pub(super) fn invalid(
        &self,
        field: &FieldPath,
        value: String,
        allowed: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.clone(),
            field: field.to_string(),
            value,
            allowed: allowed.into(),
        }
    }

    pub(super) fn missing(&self, field: &FieldPath, allowed: impl Into<String>) -> ConfigError {
        ConfigError::Missing {
            file: self.file.clone(),
            field: field.to_string(),
            allowed: allowed.into(),
        }
    }

    /// `raw` if it is within `limits`; `None` when the field is absent.
    pub(super) fn number(
        &self,
        field: &FieldPath,
        raw: Option<u64>,
        limits: Limits,
    ) -> Result<Option<u64>, ConfigError> {
        let Some(n) = raw else { return Ok(None) };
        let Limits { min, max, unit } = limits;
        if (min..=max).contains(&n) {
            Ok(Some(n))
        } else {
            Err(self.invalid(field, n.to_string(), format!("allowed: {min} to {max}{unit}")))
        }
    }

    /// [`Ctx::number`] as a number of seconds.
    pub(super) fn secs(
        &self,
        field: &FieldPath,
        raw: Option<u64>,
        limits: Limits,
    ) -> Result<Option<Duration>, ConfigError> {
        Ok(self.number(field, raw, limits)?.map(Duration::from_secs))
    }

    /// `value` as an absolute path (relative paths would depend on the working directory).
    pub(super) fn abs_path(&self, field: &FieldPath, value: &str) -> Result<PathBuf, ConfigError> {
        let p = Path::new(value);
        if value.trim().is_empty() || !p.is_absolute() || value.contains('\0') {
            return Err(self.invalid(
                field,
                q(value),
                "expected an absolute path, e.g. /etc/edgepull/...: relative paths would depend \
                 on the directory the service starts in",
            ));
        }
        Ok(p.to_path_buf())
    }

    /// `value` as a plain `host[:port]`; `example` is suggested in the message.
    pub(super) fn host_port(
        &self,
        field: &FieldPath,
        value: &str,
        example: &str,
    ) -> Result<HostPort, ConfigError> {
        HostPort::parse(value).map_err(|e| {
            let why = match e {
                HostPortError::Empty => "empty",
                HostPortError::NotPlain { .. } => {
                    "not a plain host[:port] (no scheme, path, userinfo, '*' or spaces)"
                }
                HostPortError::BadPort { .. } => "the port must be a number from 1 to 65535",
            };
            self.invalid(
                field,
                q(value),
                format!("{why}; expected host[:port], e.g. {example}"),
            )
        })
    }
}
