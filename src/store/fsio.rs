//! Small durable-file helpers shared by the store: error mapping, directory fsync, and the
//! "temp file + fsync + rename + fsync dir" sequence.
//!
//! Owns: the only places where the store makes a rename durable. Must never rename a file
//! that has not been fsynced, and never leave a rename without an fsync of its directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::StoreError;

/// Map an `io::Error` from operation `op` on `path` into a `StoreError::Io`.
pub(crate) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError + use<> {
    let path = path.to_path_buf();
    move |source| StoreError::Io { op, path, source }
}

/// fsync a directory so that renames and creations inside it survive a power cut.
#[cfg(unix)]
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    let d = File::open(dir).map_err(io_err("open directory", dir))?;
    d.sync_all().map_err(io_err("fsync directory", dir))
}

/// Directories cannot be fsynced through `File` on this platform.
#[cfg(not(unix))]
pub(crate) fn sync_dir(_dir: &Path) -> Result<(), StoreError> {
    Ok(())
}

/// Set a file read-only for everyone (0444).
pub(crate) fn make_read_only(file: &File, path: &Path) -> Result<(), StoreError> {
    let perms = read_only_permissions(file.metadata().map_err(io_err("stat", path))?.permissions());
    file.set_permissions(perms)
        .map_err(io_err("set read-only permissions on", path))
}

/// Give the owner write permission again, for a partial file left read-only.
pub(crate) fn make_writable(path: &Path) -> Result<(), StoreError> {
    let mut perms = fs::metadata(path).map_err(io_err("stat", path))?.permissions();
    owner_writable(&mut perms);
    fs::set_permissions(path, perms).map_err(io_err("set write permission on", path))
}

#[cfg(unix)]
fn owner_writable(perms: &mut fs::Permissions) {
    use std::os::unix::fs::PermissionsExt as _;
    perms.set_mode(perms.mode() | 0o200);
}

#[cfg(not(unix))]
fn owner_writable(perms: &mut fs::Permissions) {
    perms.set_readonly(false);
}

#[cfg(unix)]
fn read_only_permissions(_current: fs::Permissions) -> fs::Permissions {
    use std::os::unix::fs::PermissionsExt as _;
    fs::Permissions::from_mode(0o444)
}

#[cfg(not(unix))]
fn read_only_permissions(mut current: fs::Permissions) -> fs::Permissions {
    current.set_readonly(true);
    current
}

/// Write `bytes` to a fresh file at `tmp` and fsync it; optionally make it read-only first.
pub(crate) fn write_synced(tmp: &Path, bytes: &[u8], read_only: bool) -> Result<(), StoreError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)
        .map_err(io_err("create", tmp))?;
    f.write_all(bytes).map_err(io_err("write", tmp))?;
    if read_only {
        make_read_only(&f, tmp)?;
    }
    f.sync_all().map_err(io_err("fsync", tmp))
}

/// Rename `from` to `to` and fsync the directory of `to`.
pub(crate) fn rename_durable(from: &Path, to: &Path) -> Result<(), StoreError> {
    fs::rename(from, to).map_err(io_err("rename into place", to))?;
    sync_dir(parent(to))
}

/// Atomically replace `dir/name` with `bytes`, using `dir/tmp_name` as the temp file.
pub(crate) fn write_atomic(
    dir: &Path,
    name: &str,
    tmp_name: &str,
    bytes: &[u8],
) -> Result<PathBuf, StoreError> {
    let tmp = dir.join(tmp_name);
    let target = dir.join(name);
    if let Err(e) = write_synced(&tmp, bytes, false) {
        discard_temp(&tmp);
        return Err(e);
    }
    if let Err(e) = rename_durable(&tmp, &target) {
        discard_temp(&tmp);
        return Err(e);
    }
    Ok(target)
}

/// Best-effort removal of the temp file of a write that already failed. Deliberately not
/// propagated: the caller returns the write's own error, which is what needs fixing, and
/// start-up recovery removes a temp file left here. Logged when it fails.
pub(crate) fn discard_temp(tmp: &Path) {
    if let Err(e) = remove_file_if_exists(tmp) {
        tracing::warn!(error = %crate::error_chain(&e), "could not remove the temp file of a failed write; the next start removes it");
    }
}

/// Read at most `max` bytes of `path`: `Ok(None)` when the file is longer.
pub(crate) fn read_capped(path: &Path, max: u64) -> io::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::new();
    File::open(path)?.take(max + 1).read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= max).then_some(bytes))
}

/// Remove a file, treating "already gone" as success.
pub(crate) fn remove_file_if_exists(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", path)(e)),
        _ => Ok(()),
    }
}

/// Remove a directory tree (or a stray file or symlink in its place), treating "already gone"
/// as success. Never follows a symlink.
pub(crate) fn remove_tree_if_exists(path: &Path) -> Result<(), StoreError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("stat", path)(e)),
    };
    let res = if meta.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    match res {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", path)(e)),
        _ => Ok(()),
    }
}

/// The directory holding `path` (the path itself when it has no parent).
pub(crate) fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(path)
}

/// Current time as unix seconds (0 if the clock is before 1970).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(dir.path(), "f", "f.tmp", b"one").unwrap();
        write_atomic(dir.path(), "f", "f.tmp", b"two").unwrap();
        assert_eq!(fs::read(dir.path().join("f")).unwrap(), b"two");
        assert!(!dir.path().join("f.tmp").exists());
    }

    #[test]
    fn remove_helpers_tolerate_missing() {
        let dir = tempfile::tempdir().unwrap();
        remove_file_if_exists(&dir.path().join("nope")).unwrap();
        remove_tree_if_exists(&dir.path().join("nope")).unwrap();
        fs::create_dir_all(dir.path().join("a/b")).unwrap();
        fs::write(dir.path().join("a/b/c"), b"x").unwrap();
        remove_tree_if_exists(&dir.path().join("a")).unwrap();
        assert!(!dir.path().join("a").exists());
    }
}
