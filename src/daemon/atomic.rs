//! Replacing the daemon's own output files (`status.json`, the metrics textfile) without
//! ever writing through a name someone else controls, and checking the metrics directory.
//!
//! Owns: the temp-file recipe ([`replace`]): a fresh name in the target's directory,
//! created exclusively (`O_CREAT|O_EXCL|O_NOFOLLOW`, so a planted file or symlink is never
//! opened, let alone truncated), given its mode explicitly (whatever the umask), fsynced,
//! then renamed over the target (a rename replaces a planted symlink itself, never what it
//! points at). Also the removal of temp files a crash left ([`remove_stale_temps`]) and the
//! safety check of the metrics directory ([`check_dir`], the rule is
//! [`edgepull_core::perms::shared_dir`]). Blocking: callers run it in `spawn_blocking`.
//! Never follows a symlink it did not create and never truncates an existing file.

use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Write as _};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use edgepull_core::perms::{DirProblem, shared_dir};

/// Mode of `status.json`: the daemon's user and group (tools in group edgepull) read it.
pub(crate) const STATUS_MODE: u32 = 0o640;
/// Mode of the metrics textfile: node_exporter runs as another user and must read it.
pub(crate) const METRICS_MODE: u32 = 0o644;
/// Temp names tried before giving up (each is random; a clash means someone plants them).
const TEMP_TRIES: usize = 8;

/// The temp file name for `name` with a random `tag`: `.<name>.<16 hex>.tmp`.
fn temp_name(name: &str, tag: u64) -> String {
    format!(".{name}.{tag:016x}.tmp")
}

/// Whether `file` is a temp file [`replace`] makes for `name`.
fn is_temp_of(file: &str, name: &str) -> bool {
    file.strip_prefix('.')
        .and_then(|f| f.strip_prefix(name))
        .and_then(|f| f.strip_prefix('.'))
        .and_then(|f| f.strip_suffix(".tmp"))
        .is_some_and(|tag| tag.len() == 16 && tag.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Replace `path` with `bytes`, mode `mode` (see the module docs).
pub(crate) fn replace(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    replace_with(path, bytes, mode, std::iter::repeat_with(rand::random::<u64>))
}

/// [`replace`], drawing temp-name tags from `tags`.
fn replace_with(path: &Path, bytes: &[u8], mode: u32, tags: impl IntoIterator<Item = u64>) -> io::Result<()> {
    let (dir, name) = split(path)?;
    let mut tags = tags.into_iter();
    for _ in 0..TEMP_TRIES {
        let Some(tag) = tags.next() else { break };
        let tmp = dir.join(temp_name(name, tag));
        let file = match create_exclusive(&tmp) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        };
        let written = fill(file, bytes, mode).and_then(|()| std::fs::rename(&tmp, path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        return written;
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "{TEMP_TRIES} fresh temp names for {} in {} were all taken",
            name,
            dir.display()
        ),
    ))
}

/// The directory and file name of `path`.
fn split(path: &Path) -> io::Result<(&Path, &str)> {
    let name = path.file_name().and_then(|n| n.to_str());
    match (path.parent(), name) {
        (Some(dir), Some(name)) => Ok((
            if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            },
            name,
        )),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no UTF-8 file name", path.display()),
        )),
    }
}

/// A new file at `path`, never an existing one and never through a symlink.
fn create_exclusive(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .mode(0o600)
        .open(path)
}

/// Write, set the mode (the umask narrowed the one given at creation), fsync.
fn fill(mut file: File, bytes: &[u8], mode: u32) -> io::Result<()> {
    file.write_all(bytes)?;
    file.set_permissions(Permissions::from_mode(mode))?;
    file.sync_all()
}

/// Remove temp files [`replace`] left for `target` (a crash between create and rename):
/// regular files owned by this user, matching the temp-name pattern only. Failures are
/// ignored (the next start tries again).
pub(crate) fn remove_stale_temps(target: &Path) {
    let Ok((dir, name)) = split(target) else { return };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let euid = rustix::process::geteuid().as_raw();
    for entry in entries.flatten() {
        let file = entry.file_name();
        if !file.to_str().is_some_and(|f| is_temp_of(f, name)) {
            continue;
        }
        let path: PathBuf = entry.path();
        // symlink_metadata: a planted symlink is not ours to remove.
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file() && m.uid() == euid) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// The daemon's own JSON record at `path` (`rollout.json`, `health.json`), read whole up to
/// `max` bytes and parsed (blocking). `None` when it does not exist; also `None`, with a
/// warning that names `what` and `consequence`, when it cannot be read or parsed: these
/// records only ever make the daemon wait longer or retry, so a damaged one is dropped, not
/// fatal.
pub(crate) fn load_record<T: serde::de::DeserializeOwned>(
    path: &Path,
    max: u64,
    what: &str,
    consequence: &str,
) -> Option<T> {
    use std::io::Read;
    let mut bytes = Vec::new();
    match File::open(path).and_then(|f| f.take(max).read_to_end(&mut bytes)) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the {what}; {consequence}");
            return None;
        }
    }
    serde_json::from_slice(&bytes)
        .map_err(
            |e| tracing::warn!(path = %path.display(), error = %e, "the {what} is malformed; {consequence}"),
        )
        .ok()
}

/// Why the metrics textfile's directory was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", describe(dir, problem))]
pub(crate) struct UnsafeDir {
    /// The directory.
    pub(crate) dir: PathBuf,
    /// What is wrong with it.
    pub(crate) problem: DirProblem,
}

/// The refusal of `dir`, naming it, its mode or owner, and the fix.
pub(super) fn describe(dir: &Path, problem: &DirProblem) -> String {
    let d = dir.display();
    match problem {
        DirProblem::WritableByOthers { mode } => format!(
            "the directory of metrics.textfile, {d}, has mode {mode:04o}: other users can write \
             to it and replace or redirect edgepull's metrics file; make it writable only by \
             the user edgepull runs as (e.g. `chown edgepull {d} && chmod 0755 {d}`), or set \
             the sticky bit (`chmod +t {d}`)"
        ),
        DirProblem::ForeignOwner { owner } => format!(
            "the directory of metrics.textfile, {d}, is owned by uid {owner}, another user who \
             can change its permissions at any time; use a directory owned by the user \
             edgepull runs as or by root (e.g. `chown edgepull {d} && chmod 0755 {d}`)"
        ),
    }
}

/// What [`check_dir`] found.
#[derive(Debug)]
pub(crate) enum DirCheck {
    /// Safe to publish in.
    Safe,
    /// Cannot be inspected (missing, no permission): writes will fail and say so.
    Unknown(io::Error),
}

/// Check the directory of the file `target` (its mode and owner, following symlinks to the
/// directory itself).
pub(crate) fn check_dir(target: &Path) -> Result<DirCheck, UnsafeDir> {
    let dir = match split(target) {
        Ok((dir, _)) => dir,
        Err(e) => return Ok(DirCheck::Unknown(e)),
    };
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) => return Ok(DirCheck::Unknown(e)),
    };
    shared_dir(meta.mode(), meta.uid(), rustix::process::geteuid().as_raw())
        .map(|()| DirCheck::Safe)
        .map_err(|problem| UnsafeDir {
            dir: dir.to_path_buf(),
            problem,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn mode_of(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn temp_names_round_trip() {
        let n = temp_name("status.json", 0xab);
        assert_eq!(n, ".status.json.00000000000000ab.tmp");
        assert!(is_temp_of(&n, "status.json"));
        for other in [
            ".status.json.tmp",
            "status.json",
            ".status.json.00000000000000ag.tmp",
            ".status.json.0000000000000000a.tmp",
            ".edgepull.prom.00000000000000ab.tmp",
        ] {
            assert!(!is_temp_of(other, "status.json"), "{other}");
        }
    }

    /// A symlink planted at the first temp name is skipped, never written through; the
    /// next fresh name is used, the mode is exact and no temp file is left.
    #[test]
    fn a_planted_temp_name_is_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let target = dir.path().join("status.json");
        let planted = dir.path().join(temp_name("status.json", 1));
        symlink(&victim, &planted).unwrap();
        replace_with(&target, b"{}\n", STATUS_MODE, [1, 2]).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "{}\n");
        assert_eq!(mode_of(&target), STATUS_MODE);
        assert!(std::fs::symlink_metadata(&planted).unwrap().is_symlink());
        assert!(!dir.path().join(temp_name("status.json", 2)).exists());
        // Every name taken: an error naming the file, nothing written.
        let e = replace_with(&target, b"x", STATUS_MODE, [1, 1, 1]).unwrap_err();
        assert!(e.to_string().contains("status.json"), "{e}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "{}\n");
    }

    /// A symlink planted at the target itself is replaced, not followed.
    #[test]
    fn a_symlink_at_the_target_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let target = dir.path().join("edgepull.prom");
        symlink(&victim, &target).unwrap();
        replace(&target, b"m 1\n", METRICS_MODE).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(!std::fs::symlink_metadata(&target).unwrap().is_symlink());
        assert_eq!(mode_of(&target), METRICS_MODE);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn stale_temps_are_removed_but_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("edgepull.prom");
        let stale = dir.path().join(temp_name("edgepull.prom", 7));
        std::fs::write(&stale, "half").unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let planted = dir.path().join(temp_name("edgepull.prom", 8));
        symlink(&victim, &planted).unwrap();
        let keep = [
            dir.path().join("other.prom"),
            dir.path().join(".other.prom.0000000000000007.tmp"),
        ];
        for k in &keep {
            std::fs::write(k, "x").unwrap();
        }
        remove_stale_temps(&target);
        assert!(!stale.exists());
        assert!(
            std::fs::symlink_metadata(&planted).is_ok(),
            "a symlink is not ours"
        );
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        for k in &keep {
            assert!(k.exists(), "{}", k.display());
        }
    }

    #[test]
    fn check_dir_reads_mode_and_owner() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("m").join("edgepull.prom");
        assert!(matches!(check_dir(&target), Ok(DirCheck::Unknown(_))));
        std::fs::create_dir(dir.path().join("m")).unwrap();
        let set =
            |mode| std::fs::set_permissions(dir.path().join("m"), Permissions::from_mode(mode)).unwrap();
        set(0o755);
        assert!(matches!(check_dir(&target), Ok(DirCheck::Safe)));
        set(0o1777);
        assert!(matches!(check_dir(&target), Ok(DirCheck::Safe)));
        set(0o777);
        let e = check_dir(&target).unwrap_err();
        assert_eq!(e.problem, DirProblem::WritableByOthers { mode: 0o777 });
        let msg = e.to_string();
        for needle in [
            "metrics.textfile",
            "0777",
            &dir.path().join("m").display().to_string(),
            "chmod 0755",
        ] {
            assert!(msg.contains(needle), "{needle:?} not in {msg}");
        }
    }
}
