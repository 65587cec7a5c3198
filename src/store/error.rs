//! The store's one error type, [`StoreError`], and its classification.
//!
//! Owns: the wording of every store failure (what failed, on which path or digest, and what
//! to do), the one mapping from an OS error to a store error ([`io_err`]: a full
//! filesystem is [`StoreError::NoSpace`], by `io::ErrorKind`), and the mapping to the process exit category ([`StoreError::category`]: the one
//! copy; the callers of the store call it instead of matching variants). Must never
//! classify by message text, and never repeat the OS error's text in its own message (it
//! is the `source`).

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::exit::Category;
use edgepull_core::oci::Digest;
use edgepull_core::store::{DirProblem, DirRole};

/// Why a store operation failed. Each variant names the path and/or digest involved and
/// says what to do; branch on the `is_*` methods, never on the message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process holds the store lock.
    #[error(
        "store lock {path} is held by {} (waited {waited:?}); stop that edgepull process, or give this one another store.path",
        holder(*.holder_pid)
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// The pid written in the lock file by its holder, if readable.
        holder_pid: Option<u32>,
        /// How long this process waited.
        waited: Duration,
    },
    /// A filesystem operation failed.
    #[error("could not {op} {path}; check that the store filesystem is mounted, writable and not full")]
    Io {
        /// What was being done ("fsync", "rename into place", ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The filesystem holding the store is full (`ENOSPC`) or the user's quota is used up.
    /// Nothing unverified became visible; a download resumes from its last checkpoint.
    #[error(
        "no space left on the store filesystem: could not {op} {path}{}; free space on that filesystem (`edgepull store gc` drops unused blobs) or give store.path a larger one, then pull again: the download resumes from its last checkpoint",
        needed_bytes(*.needed)
    )]
    NoSpace {
        /// What was being done ("write", "fsync", ...).
        op: &'static str,
        /// The file being written.
        path: PathBuf,
        /// Bytes that still had to be written when space ran out, when known.
        needed: Option<u64>,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A directory another user could write, or that another user owns (checked at open).
    #[error(
        "{} {path} (mode {mode:04o}, owner uid {owner}) {}; another user could replace the store's content: {}",
        role_name(*.role),
        problem_text(*.problem, *.role, *.me),
        unsafe_dir_fix(path, *.role, *.problem, *.owner, *.me)
    )]
    UnsafeDirectory {
        /// The directory.
        path: PathBuf,
        /// The store root, or a directory above it.
        role: DirRole,
        /// What is wrong.
        problem: DirProblem,
        /// Its permission bits.
        mode: u32,
        /// Its owner.
        owner: u32,
        /// This process's effective uid.
        me: u32,
    },
    /// Something other than a directory where the store needs one (a link, a file).
    #[error(
        "{path} is {found}, but the store needs a directory there (it never follows links in the store): remove it, or point store.path elsewhere"
    )]
    NotADirectory {
        /// The path.
        path: PathBuf,
        /// What is there.
        found: &'static str,
    },
    /// The store lock file is not a plain file of the store's own (a link, a hard link, a
    /// special file): it is never opened through a link nor written.
    #[error(
        "store lock file {path} is {found}; edgepull never follows or writes such a file: remove it (`rm {path}`) and start again"
    )]
    UnsafeLockFile {
        /// The lock file.
        path: PathBuf,
        /// What it is.
        found: String,
    },
    /// `oci-layout` declares a version this store does not handle.
    #[error(
        "{path} declares image layout version {found:?}; only 1.0.0 is supported: point store.path at an empty directory or remove the layout"
    )]
    UnsupportedLayout {
        /// The `oci-layout` file.
        path: PathBuf,
        /// What it declares.
        found: String,
    },
    /// `index.json` is not a valid OCI image index.
    #[error(
        "{path} is not a valid OCI image index; restore it from a backup, or delete it to start an empty index (images will be pulled again; blobs are kept)"
    )]
    CorruptIndex {
        /// The `index.json` file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A ref name that the OCI image-layout grammar does not allow.
    #[error(
        "{ref_name:?} is not a valid org.opencontainers.image.ref.name (components of [A-Za-z0-9] joined by one of -._:@+ or --, separated by /)"
    )]
    InvalidRefName {
        /// The refused name (truncated).
        ref_name: String,
    },
    /// The blob is not in the store.
    #[error("blob {digest} is not in the store ({path}); pull it first")]
    NotFound {
        /// The blob.
        digest: Digest,
        /// Where it would be.
        path: PathBuf,
    },
    /// A stored blob is larger than the caller's limit.
    #[error("blob {digest} at {path} is {size} bytes, more than the {max}-byte limit for this read")]
    TooLarge {
        /// The blob.
        digest: Digest,
        /// Its length on disk.
        size: u64,
        /// The limit.
        max: u64,
        /// Where it is.
        path: PathBuf,
    },
    /// A write would go past the descriptor size; nothing was written.
    #[error(
        "blob {digest} would grow to {attempted} bytes but its descriptor says {size}; nothing past {size} was written: the source is sending too much, so stop this transfer and fetch the blob again from zero"
    )]
    SizeExceeded {
        /// The blob.
        digest: Digest,
        /// The descriptor size.
        size: u64,
        /// Offset plus the refused chunk's length.
        attempted: u64,
    },
    /// Commit was called before all bytes were written; the ingest is kept.
    #[error(
        "ingest of {digest} has {offset} of {size} bytes; write the rest (resume from offset {offset}) before committing ({path})"
    )]
    Incomplete {
        /// The blob.
        digest: Digest,
        /// Bytes written.
        offset: u64,
        /// The descriptor size.
        size: u64,
        /// The ingest directory.
        path: PathBuf,
    },
    /// The ingested file's length differs from the descriptor size; the ingest was deleted.
    #[error(
        "ingest of {digest} is {actual} bytes on disk, expected {expected}; the partial download {path} was deleted, fetch the blob again"
    )]
    SizeMismatch {
        /// The blob.
        digest: Digest,
        /// The descriptor size.
        expected: u64,
        /// The length found.
        actual: u64,
        /// The file checked.
        path: PathBuf,
    },
    /// Content did not hash to its digest; it was not stored (an ingest is deleted).
    #[error(
        "content for {expected} hashed to {actual}; it was not stored and {path} was not kept: fetch it again, and if this repeats the source is serving wrong data"
    )]
    DigestMismatch {
        /// The digest that was asked for.
        expected: Digest,
        /// What the content hashed to.
        actual: Digest,
        /// The ingest file (deleted) or the blob path that was not written.
        path: PathBuf,
    },
    /// A committed blob no longer matches its digest (disk corruption or tampering).
    #[error(
        "stored blob {path} hashes to {actual}, not {digest}; the store is damaged: delete that file (or run verify) and pull the image again"
    )]
    CorruptBlob {
        /// The digest its name claims.
        digest: Digest,
        /// What it hashes to.
        actual: Digest,
        /// The blob file.
        path: PathBuf,
    },
    /// Another ingest of the same digest is open in this process.
    #[error("blob {digest} is already being ingested in this process; wait for that download to finish")]
    Busy {
        /// The blob.
        digest: Digest,
    },
    /// An earlier operation on this ingest was cancelled or failed mid-way; it is unusable.
    #[error(
        "ingest of {digest} ({path}) was interrupted by a cancelled or failed operation; drop it and call Store::ingest again to resume from the last checkpoint"
    )]
    Interrupted {
        /// The blob.
        digest: Digest,
        /// The ingest directory.
        path: PathBuf,
    },
    /// The blocking task that ran a store operation did not finish (the runtime is shutting
    /// down, or it panicked). Every write is crash-safe, so the store is consistent, but
    /// whether this operation took effect is unknown.
    #[error(
        "could not {op} {path}: its blocking task did not finish (is the process shutting down?); run the operation again"
    )]
    TaskLost {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why the task ended.
        #[source]
        source: tokio::task::JoinError,
    },
}

/// Map an `io::Error` from operation `op` on `path` into a store error: a full filesystem
/// or quota ([`StoreError::NoSpace`]), or [`StoreError::Io`]. The one such mapping.
pub(crate) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError + use<> {
    write_err(op, path, None)
}

/// [`io_err`] for a write that still needed `needed` bytes (named by a "no space" error).
pub(crate) fn write_err(
    op: &'static str,
    path: &Path,
    needed: Option<u64>,
) -> impl FnOnce(io::Error) -> StoreError + use<> {
    let path = path.to_path_buf();
    move |source| {
        if is_no_space(&source) {
            StoreError::NoSpace {
                op,
                path,
                needed,
                source,
            }
        } else {
            StoreError::Io { op, path, source }
        }
    }
}

/// `ENOSPC` or `EDQUOT`.
fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// The fix for an unsafe directory, for [`StoreError::UnsafeDirectory`]'s message.
fn unsafe_dir_fix(path: &Path, role: DirRole, problem: DirProblem, owner: u32, me: u32) -> String {
    let p = path.display();
    match (role, problem) {
        (DirRole::Root, DirProblem::WritableByOthers) => format!("run `chmod 0750 {p}`"),
        (DirRole::Root, DirProblem::OwnedByOther) => format!(
            "run edgepull as the store's owner (uid {owner}), or give it to this user: `chown -R {me} {p} && chmod 0750 {p}`"
        ),
        (DirRole::Parent, DirProblem::WritableByOthers) => format!(
            "run `chmod go-w {p}` (or set its sticky bit), or move store.path under a directory only root or uid {me} can write"
        ),
        (DirRole::Parent, DirProblem::OwnedByOther) => {
            format!("move store.path under directories owned by root or by uid {me} (e.g. /var/lib/edgepull)")
        }
    }
}

fn needed_bytes(needed: Option<u64>) -> String {
    needed.map_or_else(String::new, |n| format!(" ({n} more bytes needed)"))
}

fn role_name(role: DirRole) -> &'static str {
    match role {
        DirRole::Root => "store directory",
        DirRole::Parent => "directory above the store,",
    }
}

fn problem_text(problem: DirProblem, role: DirRole, me: u32) -> String {
    match (problem, role) {
        (DirProblem::WritableByOthers, _) => "can be written by its group or by others".to_string(),
        (DirProblem::OwnedByOther, DirRole::Root) => {
            format!("belongs to another user than this process's (uid {me})")
        }
        (DirProblem::OwnedByOther, DirRole::Parent) => {
            format!("belongs to a user other than root and this process's (uid {me})")
        }
    }
}

fn holder(pid: Option<u32>) -> String {
    pid.map_or_else(|| "another process".to_string(), |p| format!("pid {p}"))
}

impl StoreError {
    /// Content failed a size or digest check (the source sent wrong bytes, or a stored
    /// blob is damaged). Retrying the same source blindly will not help.
    pub fn is_integrity(&self) -> bool {
        matches!(
            self,
            StoreError::SizeExceeded { .. }
                | StoreError::SizeMismatch { .. }
                | StoreError::DigestMismatch { .. }
                | StoreError::CorruptBlob { .. }
        )
    }

    /// Another process holds the store.
    pub fn is_locked(&self) -> bool {
        matches!(self, StoreError::Locked { .. })
    }

    /// Another ingest of the same digest is open in this process.
    pub fn is_busy(&self) -> bool {
        matches!(self, StoreError::Busy { .. })
    }

    /// The blob is not stored.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }

    /// The store filesystem is full (or the quota used up).
    pub fn is_no_space(&self) -> bool {
        matches!(self, StoreError::NoSpace { .. })
    }

    /// Commit came before all bytes were written; the ingest can be resumed.
    pub fn is_incomplete(&self) -> bool {
        matches!(self, StoreError::Incomplete { .. })
    }

    /// The exit-code category: [`Category::Integrity`] for content that failed a size or
    /// digest check ([`StoreError::is_integrity`]), [`Category::Store`] for everything else.
    /// The one mapping from a store error to an exit code: wrap, never re-derive.
    pub fn category(&self) -> Category {
        if self.is_integrity() {
            Category::Integrity
        } else {
            Category::Store
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_object_and_the_fix_without_repeating_the_cause() {
        let d = Digest::of(b"x");
        let p = PathBuf::from("/var/lib/edgepull/oci/blobs/sha256/abc");
        let ds = d.to_string();
        let cases = [
            (
                StoreError::Locked {
                    path: PathBuf::from("/var/lib/edgepull/lock"),
                    holder_pid: Some(42),
                    waited: Duration::from_secs(1),
                },
                vec!["/var/lib/edgepull/lock", "pid 42", "stop that edgepull process"],
            ),
            (
                StoreError::Locked {
                    path: PathBuf::from("/l"),
                    holder_pid: None,
                    waited: Duration::ZERO,
                },
                vec!["another process"],
            ),
            (
                StoreError::Io {
                    op: "fsync",
                    path: p.clone(),
                    source: io::Error::other("disk on fire"),
                },
                vec!["fsync", "/var/lib/edgepull/oci/blobs/sha256/abc", "not full"],
            ),
            (
                StoreError::DigestMismatch {
                    expected: d,
                    actual: Digest::of(b"y"),
                    path: p.clone(),
                },
                vec![ds.as_str(), "fetch it again"],
            ),
            (
                StoreError::SizeExceeded {
                    digest: d,
                    size: 10,
                    attempted: 11,
                },
                vec![ds.as_str(), "11", "10"],
            ),
            (StoreError::Busy { digest: d }, vec![ds.as_str(), "wait"]),
        ];
        for (err, wants) in cases {
            let msg = err.to_string();
            for w in wants {
                assert!(msg.contains(w), "{msg:?} lacks {w:?}");
            }
            assert!(!msg.contains("disk on fire"), "cause repeated in {msg:?}");
        }
    }

    #[test]
    fn a_full_filesystem_or_quota_is_no_space_by_error_kind() {
        let p = Path::new("/var/lib/edgepull/ingest/sha256-ab/data");
        for errno in [rustix::io::Errno::NOSPC, rustix::io::Errno::DQUOT] {
            let e = write_err("write", p, Some(4096))(errno.into());
            assert!(e.is_no_space(), "{e:?}");
            assert_eq!(e.category(), Category::Store);
            let msg = e.to_string();
            for want in [
                p.to_str().unwrap(),
                "no space left",
                "4096 more bytes needed",
                "resumes",
            ] {
                assert!(msg.contains(want), "{want:?} missing from {msg:?}");
            }
        }
        let e = io_err("fsync", p)(rustix::io::Errno::NOSPC.into());
        assert!(
            e.is_no_space() && !e.to_string().contains("more bytes needed"),
            "{e}"
        );
        let e = io_err("write", p)(rustix::io::Errno::IO.into());
        assert!(matches!(e, StoreError::Io { .. }), "{e:?}");
    }

    #[test]
    fn an_unsafe_directory_names_its_mode_owner_and_fix() {
        let root = PathBuf::from("/srv/store");
        let cases = [
            (
                DirRole::Root,
                DirProblem::WritableByOthers,
                0o777,
                1000,
                vec![
                    "/srv/store",
                    "mode 0777",
                    "owner uid 1000",
                    "chmod 0750 /srv/store",
                ],
            ),
            (
                DirRole::Root,
                DirProblem::OwnedByOther,
                0o750,
                4242,
                vec!["uid 4242", "chown -R 1000 /srv/store"],
            ),
            (
                DirRole::Parent,
                DirProblem::WritableByOthers,
                0o777,
                0,
                vec!["above the store", "chmod go-w /srv/store"],
            ),
            (
                DirRole::Parent,
                DirProblem::OwnedByOther,
                0o755,
                4242,
                vec!["owned by root or by uid 1000"],
            ),
        ];
        for (role, problem, mode, owner, wants) in cases {
            let msg = StoreError::UnsafeDirectory {
                path: root.clone(),
                role,
                problem,
                mode,
                owner,
                me: 1000,
            }
            .to_string();
            for w in wants {
                assert!(msg.contains(w), "{w:?} missing from {msg:?}");
            }
        }
    }

    #[test]
    fn classification() {
        let d = Digest::of(b"x");
        let integrity = StoreError::CorruptBlob {
            digest: d,
            actual: d,
            path: PathBuf::new(),
        };
        assert!(integrity.is_integrity() && integrity.category() == Category::Integrity);
        let locked = StoreError::Locked {
            path: PathBuf::new(),
            holder_pid: None,
            waited: Duration::ZERO,
        };
        assert!(locked.is_locked() && !locked.is_integrity());
        assert!(StoreError::Busy { digest: d }.is_busy());
    }

    #[test]
    fn category_is_integrity_only_for_integrity_errors() {
        let d = Digest::of(b"x");
        let cases = [
            (
                StoreError::DigestMismatch {
                    expected: d,
                    actual: d,
                    path: PathBuf::new(),
                },
                Category::Integrity,
            ),
            (
                StoreError::SizeExceeded {
                    digest: d,
                    size: 1,
                    attempted: 2,
                },
                Category::Integrity,
            ),
            (
                StoreError::Locked {
                    path: PathBuf::new(),
                    holder_pid: None,
                    waited: Duration::ZERO,
                },
                Category::Store,
            ),
            (
                StoreError::Io {
                    op: "fsync",
                    path: PathBuf::new(),
                    source: io::Error::other("x"),
                },
                Category::Store,
            ),
            (
                StoreError::NotFound {
                    digest: d,
                    path: PathBuf::new(),
                },
                Category::Store,
            ),
        ];
        for (err, want) in cases {
            assert_eq!(err.category(), want, "{err:?}");
        }
    }
}
