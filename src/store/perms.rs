//! Who may touch the store: file modes, link-safe opens, and the start-up check of the root.
//!
//! Owns: the modes of everything the store creates (directories 0750, files 0640, committed
//! blobs 0440), set explicitly with `fchmod`/`chmod` after creation so the process umask
//! never decides them; creating files exclusively (`O_CREAT|O_EXCL|O_NOFOLLOW`) and opening
//! existing ones without following a symbolic link (`O_NOFOLLOW`); creating the store's
//! directories; and the start-up check that no other user can write the root or replace it
//! through a parent (the decision is `edgepull_core::store::dir_safety`).
//!
//! Must never: follow a symbolic link planted in the store, truncate or chmod a file the
//! store did not create (every chmod here is an `fchmod` on a descriptor opened without
//! following links, or a `chmod` of a directory just checked with `lstat`), or leave a mode
//! to the umask. Blocking file IO: called on the blocking pool only.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use super::StoreError;
use super::error::io_err;
use edgepull_core::store::{DirRole, dir_safety};

/// Mode of every directory the store creates.
pub(crate) const DIR_MODE: u32 = 0o750;
/// Mode of every file the store writes (index, meta, checkpoint, partial data, lock).
pub(crate) const FILE_MODE: u32 = 0o640;
/// Mode of a committed blob: read-only.
pub(crate) const BLOB_MODE: u32 = 0o440;

fn mode(bits: u32) -> Mode {
    Mode::from_bits_truncate(bits as _)
}

/// Create `path` exclusively (never through a link, never an existing file) for reading and
/// writing, with exactly [`FILE_MODE`]. An entry already at `path` is removed first (a temp
/// file left by a crash, or a link planted there: unlinking a link never touches its
/// target), then creation is tried once more; a second `EEXIST` is an error.
pub(crate) fn create_exclusive(path: &Path) -> Result<File, StoreError> {
    match open_new(path) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            tracing::debug!(path = %path.display(), "replacing a leftover entry at a temp path");
            fs::remove_file(path).map_err(io_err("remove the leftover", path))?;
            open_new(path).map_err(io_err("create", path))
        }
        r => r.map_err(io_err("create", path)),
    }
}

fn open_new(path: &Path) -> io::Result<File> {
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let file = File::from(rustix::fs::open(path, flags, mode(FILE_MODE))?);
    rustix::fs::fchmod(&file, mode(FILE_MODE))?;
    Ok(file)
}

/// Open an existing file read-only without following a link (`ELOOP` for a link).
pub(crate) fn open_read(path: &Path) -> io::Result<File> {
    open_existing(path, OFlags::RDONLY)
}

/// Open an existing regular file for reading and writing without following a link;
/// anything but a regular file is refused (`ELOOP` for a link, `EINVAL` otherwise).
pub(crate) fn open_rw(path: &Path) -> io::Result<File> {
    let file = open_existing(path, OFlags::RDWR)?;
    if !file.metadata()?.is_file() {
        return Err(rustix::io::Errno::INVAL.into());
    }
    Ok(file)
}

fn open_existing(path: &Path, access: OFlags) -> io::Result<File> {
    let flags = access | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    Ok(File::from(rustix::fs::open(path, flags, Mode::empty())?))
}

/// `fchmod` an open file to `bits`.
pub(crate) fn set_mode(file: &File, bits: u32, path: &Path) -> Result<(), StoreError> {
    rustix::fs::fchmod(file, mode(bits)).map_err(|e| io_err("set the permissions of", path)(e.into()))
}

/// Give a read-only partial file (a commit that crashed after making `data` read-only)
/// the owner's write permission again, through a descriptor opened without following links.
pub(crate) fn make_writable(path: &Path) -> Result<(), StoreError> {
    let file = open_read(path).map_err(io_err("open", path))?;
    set_mode(&file, FILE_MODE, path)
}

/// Whether `path` is a symbolic link (false when absent or unreadable).
pub(crate) fn is_symlink(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// Make sure the store-owned directory `path` exists as a real directory with exactly
/// [`DIR_MODE`]: create it (its parent must exist), or fix the mode of one left by an older
/// version. A link or a file in its place is refused.
pub(crate) fn ensure_dir(path: &Path) -> Result<(), StoreError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            if m.mode() & 0o7777 != DIR_MODE {
                fs::set_permissions(path, fs::Permissions::from_mode(DIR_MODE))
                    .map_err(io_err("set the permissions of", path))?;
            }
            Ok(())
        }
        Ok(m) => Err(StoreError::NotADirectory {
            path: path.to_path_buf(),
            found: kind_of(&m),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => create_dir(path),
        Err(e) => Err(io_err("stat", path)(e)),
    }
}

/// Create one directory with exactly [`DIR_MODE`] (its parent must exist).
pub(crate) fn create_dir(path: &Path) -> Result<(), StoreError> {
    match fs::create_dir(path) {
        Ok(()) => {}
        // Created meanwhile (by this process): `ensure_dir` checks what it is.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return ensure_dir(path),
        Err(e) => return Err(io_err("create directory", path)(e)),
    }
    fs::set_permissions(path, fs::Permissions::from_mode(DIR_MODE))
        .map_err(io_err("set the permissions of", path))
}

/// What a non-directory entry is, for messages.
fn kind_of(m: &fs::Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_file() {
        "a regular file"
    } else {
        "a special file"
    }
}

/// Create the store root if needed (each missing directory with [`DIR_MODE`]), then check
/// that no other user can write it or replace it: the resolved root must belong to this
/// process's user and be writable by no one else, and every directory above it, both on
/// the path as configured and after links are resolved, must belong to root or to this
/// user and be writable by no one else unless sticky (`/tmp`).
pub(crate) fn prepare_root(root: &Path) -> Result<(), StoreError> {
    create_missing(root)?;
    let real = fs::canonicalize(root).map_err(io_err("resolve", root))?;
    let me = rustix::process::geteuid().as_raw();
    check_dir(&real, DirRole::Root, me)?;
    let mut seen = std::collections::BTreeSet::new();
    for parent in root.ancestors().skip(1).chain(real.ancestors().skip(1)) {
        if !parent.as_os_str().is_empty() && seen.insert(parent.to_path_buf()) {
            check_dir(parent, DirRole::Parent, me)?;
        }
    }
    Ok(())
}

/// Create `root` and its missing ancestors, each with [`DIR_MODE`] whatever the umask.
fn create_missing(root: &Path) -> Result<(), StoreError> {
    let mut missing: Vec<PathBuf> = Vec::new();
    for p in root.ancestors() {
        if p.as_os_str().is_empty() || fs::metadata(p).is_ok() {
            break;
        }
        missing.push(p.to_path_buf());
    }
    for dir in missing.iter().rev() {
        create_dir(dir)?;
    }
    Ok(())
}

fn check_dir(path: &Path, role: DirRole, me: u32) -> Result<(), StoreError> {
    let m = fs::metadata(path).map_err(io_err("stat", path))?;
    if role == DirRole::Root && !m.is_dir() {
        return Err(StoreError::NotADirectory {
            path: path.to_path_buf(),
            found: kind_of(&m),
        });
    }
    dir_safety(role, m.mode(), m.uid(), me).map_err(|problem| StoreError::UnsafeDirectory {
        path: path.to_path_buf(),
        role,
        problem,
        mode: m.mode() & 0o7777,
        owner: m.uid(),
        me,
    })
}
