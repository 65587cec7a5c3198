//! The store's one error type, [`StoreError`], and its classification.
//!
//! Owns: the wording of every store failure (what failed, on which path or digest, and what
//! to do) and the mapping to the process exit category ([`StoreError::category`]: the one
//! copy; the callers of the store call it instead of matching variants). Must never
//! classify by message text, and never repeat the OS error's text in its own message (it
//! is the `source`).

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::exit::Category;
use edgepull_core::oci::Digest;

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
