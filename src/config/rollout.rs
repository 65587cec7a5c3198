//! The `rollout` section: staged rollouts decided on each device.
//!
//! Owns: [`RolloutConfig`] — `window_secs` (0, the default: adopt at once), `device_id_file`
//! (default `/etc/machine-id`, read here at load when the window is not 0: trimmed,
//! non-empty, at most 256 bytes) and `prefetch`. Blocking: reads the device id file. Must
//! never decide when a digest is adopted (`edgepull_core::rollout` does).

use std::io::Read;
use std::path::{Path, PathBuf};

use super::ctx::{Ctx, Limits, q};
use super::error::ConfigError;
use super::path::FieldPath;
use super::raw::RawRollout;

/// Where the device id is read from when `rollout.device_id_file` is absent.
const DEFAULT_DEVICE_ID_FILE: &str = "/etc/machine-id";
/// Longest device id accepted.
const MAX_DEVICE_ID_BYTES: usize = 256;
/// `rollout.window_secs`: up to 30 days.
const WINDOW: Limits = Limits {
    min: 0,
    max: 30 * 86_400,
    unit: " seconds (30 days)",
};

/// `rollout`: when a new digest of a followed tag is adopted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct RolloutConfig {
    /// The window a release spreads over; 0 adopts at once.
    pub(crate) window_secs: u64,
    /// The device id (empty when the window is 0).
    pub(crate) device_id: String,
    /// Download on first sight, switch at the slot.
    pub(crate) prefetch: bool,
}

impl Ctx {
    /// The `rollout` section, its device id read when the window is not 0.
    pub(super) fn rollout(&self, raw: Option<RawRollout>) -> Result<RolloutConfig, ConfigError> {
        let Some(raw) = raw else {
            return Ok(RolloutConfig::default());
        };
        let at = FieldPath::root().key("rollout");
        let window_secs = self
            .number(&at.key("window_secs"), raw.window_secs, WINDOW)?
            .unwrap_or(0);
        let field = at.key("device_id_file");
        let path = match &raw.device_id_file {
            Some(v) => self.abs_path(&field, v)?,
            None => PathBuf::from(DEFAULT_DEVICE_ID_FILE),
        };
        let device_id = if window_secs == 0 {
            String::new()
        } else {
            read_device_id(&path).map_err(|why| {
                self.invalid(
                    &field,
                    q(&path.display().to_string()),
                    format!(
                        "{why}; the device id spreads this device's updates over rollout.window_secs: \
                         point device_id_file at a file holding a stable id unique to the device \
                         (e.g. /etc/machine-id, created by systemd-machine-id-setup)"
                    ),
                )
            })?
        };
        Ok(RolloutConfig {
            window_secs,
            device_id,
            prefetch: raw.prefetch.unwrap_or(false),
        })
    }
}

/// The trimmed device id in `path` (blocking), or why it is unusable.
fn read_device_id(path: &Path) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read the device id file: {e}"))?;
    let mut bytes = Vec::new();
    file.take(4096)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read the device id file: {e}"))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| "the device id file is not UTF-8 text".to_string())?;
    let id = text.trim();
    if id.is_empty() {
        return Err("the device id file is empty".into());
    }
    if id.len() > MAX_DEVICE_ID_BYTES || bytes.len() >= 4096 {
        return Err(format!(
            "the device id is longer than {MAX_DEVICE_ID_BYTES} bytes"
        ));
    }
    Ok(id.to_string())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::{assert_invalid, err, ok, with};
    use super::*;

    #[test]
    fn rollout_defaults_to_no_window_and_reads_nothing() {
        let c = ok(&with(|_| {}));
        assert_eq!(c.rollout, RolloutConfig::default());
        // Window 0: the device id file is not needed, even when it does not exist.
        let c =
            ok(&with(
                |v| v["rollout"] = json!({ "window_secs": 0, "device_id_file": "/nonexistent/machine-id" }),
            ));
        assert_eq!(c.rollout.window_secs, 0);
    }

    #[test]
    fn rollout_reads_and_trims_the_device_id() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("machine-id");
        std::fs::write(&f, "  0123abcd\n").unwrap();
        let c =
            ok(&with(
                |v| v["rollout"] = json!({ "window_secs": 86400, "device_id_file": f, "prefetch": true }),
            ));
        assert_eq!(
            c.rollout,
            RolloutConfig {
                window_secs: 86_400,
                device_id: "0123abcd".into(),
                prefetch: true
            }
        );
    }

    #[test]
    fn rollout_errors_name_the_field_the_file_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, " \n").unwrap();
        let long = dir.path().join("long");
        std::fs::write(&long, "x".repeat(257)).unwrap();
        for (file, why) in [
            (&missing, "cannot read the device id file"),
            (&empty, "is empty"),
            (&long, "longer than 256 bytes"),
        ] {
            let e = err(&with(|v| {
                v["rollout"] = json!({ "window_secs": 60, "device_id_file": file })
            }));
            let name = file.display().to_string();
            assert_invalid(&e, "rollout.device_id_file", &[why, &name, "/etc/machine-id"]);
        }
        let e = err(&with(|v| {
            v["rollout"] = json!({ "window_secs": 60, "device_id_file": "machine-id" })
        }));
        assert_invalid(&e, "rollout.device_id_file", &["absolute path"]);
        let e = err(&with(|v| v["rollout"] = json!({ "window_secs": 2_592_001 })));
        assert_invalid(&e, "rollout.window_secs", &["2592001", "0 to 2592000"]);
    }
}
