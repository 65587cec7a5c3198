//! `<store>/health.json`: this device's memory of the trial of a new version and of the
//! digests that failed their health check (`hooks.health_check`).
//!
//! A new version is on trial from just before `index.json` switches to it until its health
//! check ends: `health.json` records the trial first, so a crash or a shutdown in between
//! leaves a trial that the next start finishes ([`edgepull_core::health::start`]). A check
//! that fails rolls the image back in one atomic replace of `index.json`
//! ([`Store::roll_back`](crate::store::Store::roll_back)), runs `on_update` again with
//! `EDGEPULL_ROLLBACK=1`, and records the digest as failed: it is not adopted again until
//! the tag points elsewhere.
//!
//! Owns: the file's format, its reads and writes, and how a hook's end reads as a check's
//! end. Only jobs write the file (the steps are in `job::trial`), and one job runs at a
//! time, so its read-modify-write needs no lock; every write is atomic and durable
//! ([`super::atomic::replace`]) and, from a job, runs in `spawn_blocking`. Never decides
//! (the core's [`edgepull_core::health`] does) and never runs a hook.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::hook::HookEnd;
use edgepull_core::health::{CheckEnd, Memory};
use edgepull_core::oci::Digest;

/// Name of the file in the store root.
pub(super) const HEALTH_FILE: &str = "health.json";
/// The format version written.
const VERSION: u32 = 1;
/// Largest file read (two digests per configured image).
const MAX_BYTES: u64 = 1024 * 1024;

#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    /// Image reference → what this device remembers of its health.
    images: BTreeMap<String, Entry>,
}

#[derive(Serialize, Deserialize, Default)]
struct Entry {
    /// The digest (what the tag pointed at) whose health check has not ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trial: Option<String>,
    /// The digest that failed its health check and was rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failed: Option<String>,
}

/// What `root/health.json` records, by image reference (blocking). A missing file is no
/// memory; an unreadable or malformed one is logged and ignored.
pub(super) fn load(root: &Path) -> BTreeMap<String, Memory> {
    let Some(file) = super::atomic::load_record::<File>(
        &root.join(HEALTH_FILE),
        MAX_BYTES,
        "health record",
        "digests that failed their health check may be tried again",
    ) else {
        return BTreeMap::new();
    };
    let parse = |s: Option<String>| s.and_then(|s| Digest::parse(&s).ok());
    file.images
        .into_iter()
        .map(|(name, e)| {
            let memory = Memory {
                trial: parse(e.trial),
                failed: parse(e.failed),
            };
            (name, memory)
        })
        .filter(|(_, m)| *m != Memory::default())
        .collect()
}

/// Record `memory` for the image `name` in `root/health.json` (blocking). Writes nothing
/// when it is already recorded.
pub(super) fn remember(root: &Path, name: &str, memory: Memory) -> io::Result<()> {
    let mut all = load(root);
    let before = all.get(name).copied().unwrap_or_default();
    if before == memory {
        return Ok(());
    }
    if memory == Memory::default() {
        all.remove(name);
    } else {
        all.insert(name.to_string(), memory);
    }
    let file = File {
        version: VERSION,
        images: all
            .into_iter()
            .map(|(name, m)| {
                let entry = Entry {
                    trial: m.trial.map(|d| d.to_string()),
                    failed: m.failed.map(|d| d.to_string()),
                };
                (name, entry)
            })
            .collect(),
    };
    let mut body = serde_json::to_vec_pretty(&file).map_err(io::Error::other)?;
    body.push(b'\n');
    super::atomic::replace(&root.join(HEALTH_FILE), &body, super::atomic::STATUS_MODE)
}

/// How the check ended, in the core's terms.
pub(super) fn check_end(end: &HookEnd) -> CheckEnd {
    match end {
        HookEnd::Exited(0) => CheckEnd::Passed,
        HookEnd::Exited(_) | HookEnd::Signalled(_) => CheckEnd::Failed,
        HookEnd::TimedOut => CheckEnd::TimedOut,
        HookEnd::Cancelled => CheckEnd::Cancelled,
        HookEnd::SpawnFailed(_) => CheckEnd::CouldNotRun,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_round_trips_and_tolerates_a_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert!(load(root).is_empty());
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        let trial = Memory {
            trial: Some(a),
            failed: None,
        };
        let failed = Memory {
            trial: None,
            failed: Some(b),
        };
        remember(root, "h/app:1", trial).unwrap();
        remember(root, "h/other:1", failed).unwrap();
        let got = load(root);
        assert_eq!(got.get("h/app:1"), Some(&trial));
        assert_eq!(got.get("h/other:1"), Some(&failed));
        // Forgetting removes the entry; the other image is kept.
        remember(root, "h/app:1", Memory::default()).unwrap();
        let got = load(root);
        assert_eq!((got.len(), got.get("h/other:1")), (1, Some(&failed)));
        std::fs::write(root.join(HEALTH_FILE), "{not json").unwrap();
        assert!(load(root).is_empty());
    }

    #[test]
    fn check_ends_map_to_the_core() {
        let table = [
            (HookEnd::Exited(0), CheckEnd::Passed),
            (HookEnd::Exited(1), CheckEnd::Failed),
            (HookEnd::Signalled(9), CheckEnd::Failed),
            (HookEnd::TimedOut, CheckEnd::TimedOut),
            (HookEnd::Cancelled, CheckEnd::Cancelled),
            (
                HookEnd::SpawnFailed(super::super::hook::HookError::EmptyCommand),
                CheckEnd::CouldNotRun,
            ),
        ];
        for (end, want) in table {
            assert_eq!(check_end(&end), want, "{end:?}");
        }
    }
}
