//! `registry.auth`: which credentials, by the files that hold them.
//!
//! Owns: [`AuthConfig`] and its validation, the permission note for secret files, and
//! refusing secrets written inline in the config. Must never read a secret (only the
//! metadata of its file: [`super::load_secret`] reads it when a credential is needed) and
//! never echo one in an error.

use std::path::{Path, PathBuf};

use super::ctx::{Ctx, q};
use super::error::{ConfigError, ConfigNote};
use super::path::FieldPath;
use super::raw::RawAuth;
use super::secret;

/// The username that goes with an ACR refresh token (the null GUID).
pub(super) const REFRESH_TOKEN_USERNAME: &str = "00000000-0000-0000-0000-000000000000";

/// Keys that would hold a secret inline, and the file key to use instead.
const INLINE_SECRETS: [(&str, &str); 4] = [
    ("password", "password_file"),
    ("token", "refresh_token_file"),
    ("refresh_token", "refresh_token_file"),
    ("access_token", "refresh_token_file"),
];

/// How to authenticate. Only file paths: the secrets are read with [`super::load_secret`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum AuthConfig {
    /// No credentials (ACR anonymous pull).
    #[default]
    Anonymous,
    /// Username and a password file (repository-scoped token, service principal, admin).
    Basic {
        /// Username.
        username: String,
        /// File holding the password.
        password_file: PathBuf,
    },
    /// An ACR refresh token file; the username is [`REFRESH_TOKEN_USERNAME`].
    RefreshToken {
        /// File holding the refresh token.
        refresh_token_file: PathBuf,
    },
}

impl AuthConfig {
    /// The file holding the password or refresh token, if any.
    pub(crate) fn secret_file(&self) -> Option<&Path> {
        match self {
            Self::Anonymous => None,
            Self::Basic { password_file, .. } => Some(password_file),
            Self::RefreshToken { refresh_token_file } => Some(refresh_token_file),
        }
    }
}

/// Refuse a secret written in `registry` or `registry.auth` (checked on the untyped JSON,
/// before serde would only say "unknown field"), without showing it.
pub(super) fn refuse_inline_secrets(ctx: &Ctx, value: &serde_json::Value) -> Result<(), ConfigError> {
    let registry = FieldPath::root().key("registry");
    let Some(reg) = value.get("registry") else {
        return Ok(());
    };
    let places = [
        (registry.clone(), Some(reg)),
        (registry.key("auth"), reg.get("auth")),
    ];
    for (at, obj) in places {
        let Some(obj) = obj.and_then(|o| o.as_object()) else {
            continue;
        };
        for (key, file_key) in INLINE_SECRETS {
            if obj.contains_key(key) {
                return Err(ctx.invalid(
                    &at.key(key),
                    "(not shown)".to_string(),
                    format!(
                        "secrets are never written in the config; put it in a file only edgepull can read \
                         and name that file in registry.auth.{file_key} (with systemd, \
                         LoadCredential=registry-secret:/path/to/file and \
                         /run/credentials/edgepull.service/registry-secret as the file)"
                    ),
                ));
            }
        }
    }
    Ok(())
}

impl Ctx {
    /// `registry.auth`; a note when a secret file can be read by others.
    pub(super) fn auth(
        &self,
        at: &FieldPath,
        raw: RawAuth,
        notes: &mut Vec<ConfigNote>,
    ) -> Result<AuthConfig, ConfigError> {
        let forms = "use {\"username\": ..., \"password_file\": ...} or {\"refresh_token_file\": ...}, \
                     or remove registry.auth for anonymous pull";
        let auth = match (raw.username, raw.password_file, raw.refresh_token_file) {
            (None, None, None) => {
                return Err(self.invalid(at, "{}".to_string(), forms));
            }
            (Some(username), Some(password_file), None) => {
                let field = at.key("username");
                if username.is_empty() || username.contains(':') || username.chars().any(char::is_control) {
                    return Err(self.invalid(
                        &field,
                        q(&username),
                        "expected a non-empty username without ':' or control characters \
                         (the token name or service principal id)",
                    ));
                }
                AuthConfig::Basic {
                    username,
                    password_file: self.abs_path(&at.key("password_file"), &password_file)?,
                }
            }
            (Some(_), None, None) => {
                return Err(self.missing(
                    &at.key("password_file"),
                    "name the file holding the password, e.g. \
                     /run/credentials/edgepull.service/registry-password (systemd LoadCredential=)",
                ));
            }
            (None, Some(_), None) => {
                return Err(self.missing(
                    &at.key("username"),
                    "give the username that goes with password_file (e.g. the repository-scoped token's name)",
                ));
            }
            (None, None, Some(file)) => AuthConfig::RefreshToken {
                refresh_token_file: self.abs_path(&at.key("refresh_token_file"), &file)?,
            },
            (username, _, Some(_)) => {
                let other = if username.is_some() {
                    "username"
                } else {
                    "password_file"
                };
                return Err(self.invalid(
                    &at.key(other),
                    "(set)".to_string(),
                    format!(
                        "not allowed together with refresh_token_file: a refresh token always uses the \
                         username {REFRESH_TOKEN_USERNAME}; {forms}"
                    ),
                ));
            }
        };
        if let Some(file) = auth.secret_file() {
            let key = if matches!(auth, AuthConfig::Basic { .. }) {
                "password_file"
            } else {
                "refresh_token_file"
            };
            notes.extend(secret::permission_note(at.key(key).as_str(), file));
        }
        Ok(auth)
    }
}
