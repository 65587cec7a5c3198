//! The `images` list: what to keep in sync.
//!
//! Owns: [`ImageConfig`], parsing each reference against the login server (an image on
//! another registry is refused: edgepull pulls only from the login server) and the
//! interval limits the daemon's `sync.interval_secs` shares, and the signature
//! `identity` each image's signatures must name. Pure.

use std::time::Duration;

use edgepull_core::hostport::HostPort;
use edgepull_core::oci::Reference;
use edgepull_core::signature::Identity;

use super::ctx::{Ctx, Limits, q};
use super::error::ConfigError;
use super::path::FieldPath;
use super::raw::RawImage;

/// Shortest `images[].interval_secs` and `sync.interval_secs` (1 s: tests and lab set-ups;
/// a fleet should poll every few minutes).
pub(super) const MIN_INTERVAL_SECS: u64 = 1;
/// Longest `images[].interval_secs` and `sync.interval_secs`: 30 days.
pub(super) const MAX_INTERVAL_SECS: u64 = 30 * 24 * 3600;
/// `images[].interval_secs`.
const INTERVAL_SECS: Limits = Limits {
    min: MIN_INTERVAL_SECS,
    max: MAX_INTERVAL_SECS,
    unit: " seconds",
};

/// One entry of `images`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageConfig {
    /// The image, on the login server.
    pub reference: Reference,
    /// How often to check it, when set.
    pub(crate) interval: Option<Duration>,
    /// The `docker-reference` its signatures must name (`identity`; default: the
    /// reference's registry and repository).
    pub(crate) identity: Identity,
}

impl Ctx {
    /// The `images` list; every reference is on the login server `login`.
    pub(super) fn images(
        &self,
        raw: Vec<RawImage>,
        login: &HostPort,
    ) -> Result<Vec<ImageConfig>, ConfigError> {
        let at = FieldPath::root().key("images");
        let mut out: Vec<ImageConfig> = Vec::new();
        for (i, img) in raw.into_iter().enumerate() {
            let field = at.index(i);
            let ref_field = field.key("ref");
            let value = img.reference.ok_or_else(|| {
                self.missing(
                    &ref_field,
                    format!("give the image as <repository>[:tag][@digest], e.g. \"{login}/app:stable\" or \"app:stable\""),
                )
            })?;
            let reference = Reference::parse_with_default(&value, login)
                .map_err(|e| self.invalid(&ref_field, q(&value), e.to_string()))?;
            if reference.registry() != login {
                let shown = reference.to_string();
                let rest = shown.split_once('/').map_or(shown.as_str(), |(_, r)| r);
                return Err(self.invalid(
                    &ref_field,
                    q(&value),
                    format!(
                        "names registry {}, but registry.login_server is {login}; edgepull pulls only from \
                         the login server: write {login}/{rest} or just {rest}",
                        reference.registry(),
                    ),
                ));
            }
            if out.iter().any(|o| o.reference == reference) {
                return Err(self.invalid(&ref_field, q(&value), "listed twice; remove the duplicate"));
            }
            let interval = self.secs(&field.key("interval_secs"), img.interval_secs, INTERVAL_SECS)?;
            let identity = match img.identity {
                None => Identity::of(&reference),
                Some(v) => Identity::parse(&v).map_err(|e| {
                    self.invalid(
                        &field.key("identity"),
                        q(&v),
                        format!(
                            "{e}; give the registry/repository the image was signed as (a tag or digest is ignored), \
                             e.g. \"{login}/app\""
                        ),
                    )
                })?,
            };
            out.push(ImageConfig {
                reference,
                interval,
                identity,
            });
        }
        Ok(out)
    }
}
