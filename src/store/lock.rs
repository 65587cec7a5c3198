//! Store locks: the OS lock on `root/lock` that keeps a second process out of the store, and
//! the in-process set of digests being ingested, which keeps a second writer off one ingest.
//!
//! Owns: acquiring and releasing both locks. Must never block the async runtime (the
//! process lock is taken in `Store::open`, which is synchronous) and never hold the busy
//! set's mutex across IO or an await.

use std::collections::HashSet;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::StoreError;
use super::fsio::io_err;
use edgepull_core::oci::Digest;

/// How often `StoreLock::acquire` retries while another process holds the lock.
const POLL: Duration = Duration::from_millis(100);

/// The exclusive lock on a store root. Released when dropped.
#[derive(Debug)]
pub(crate) struct StoreLock {
    file: File,
    path: PathBuf,
}

impl StoreLock {
    /// Take the exclusive lock on `path`, polling every 100 ms for up to `wait`. Logs once
    /// while waiting; fails with `StoreError::Locked` naming the holder's pid.
    pub(crate) fn acquire(path: &Path, wait: Duration) -> Result<Self, StoreError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io_err("open lock file", path))?;
        let start = Instant::now();
        let mut logged = false;
        loop {
            match file.try_lock() {
                Ok(()) => {
                    let lock = Self {
                        file,
                        path: path.to_path_buf(),
                    };
                    lock.write_pid()?;
                    return Ok(lock);
                }
                Err(TryLockError::WouldBlock) => {
                    let holder_pid = read_pid(&file);
                    let waited = start.elapsed();
                    if waited >= wait {
                        return Err(StoreError::Locked {
                            path: path.to_path_buf(),
                            holder_pid,
                            waited,
                        });
                    }
                    if !logged {
                        logged = true;
                        match holder_pid {
                            Some(pid) => tracing::warn!(
                                lock = %path.display(),
                                "waiting for store lock held by pid {pid}"
                            ),
                            None => tracing::warn!(
                                lock = %path.display(),
                                "waiting for store lock held by another process"
                            ),
                        }
                    }
                    std::thread::sleep(POLL.min(wait - waited));
                }
                Err(TryLockError::Error(e)) => return Err(io_err("lock", path)(e)),
            }
        }
    }

    fn write_pid(&self) -> Result<(), StoreError> {
        let mut f = &self.file;
        f.set_len(0).map_err(io_err("truncate lock file", &self.path))?;
        f.seek(SeekFrom::Start(0))
            .map_err(io_err("seek lock file", &self.path))?;
        f.write_all(format!("{}\n", std::process::id()).as_bytes())
            .map_err(io_err("write pid into lock file", &self.path))
    }
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        // Best effort: clear our pid, then unlock. Closing the file would unlock anyway.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

/// The pid written into the lock file by its holder, if readable.
fn read_pid(file: &File) -> Option<u32> {
    let mut f = file;
    f.seek(SeekFrom::Start(0)).ok()?;
    let mut s = String::new();
    f.take(32).read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}

/// Digests with a live `Ingest` in this process.
#[derive(Debug, Default, Clone)]
pub(crate) struct BusySet {
    inner: Arc<Mutex<HashSet<Digest>>>,
}

impl BusySet {
    /// Mark `digest` busy; `None` if it already is.
    pub(crate) fn try_acquire(&self, digest: Digest) -> Option<BusyGuard> {
        let mut set = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        set.insert(digest).then(|| BusyGuard {
            set: self.clone(),
            digest,
        })
    }

    /// Whether `digest` is busy now.
    pub(crate) fn contains(&self, digest: &Digest) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(digest)
    }
}

/// Marks one digest busy until dropped.
#[derive(Debug)]
pub(crate) struct BusyGuard {
    set: BusySet,
    digest: Digest,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.set
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.digest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_set_is_exclusive_until_drop() {
        let set = BusySet::default();
        let d = Digest::of(b"x");
        let g = set.try_acquire(d).unwrap();
        assert!(set.try_acquire(d).is_none());
        assert!(set.contains(&d));
        drop(g);
        assert!(!set.contains(&d));
        assert!(set.try_acquire(d).is_some());
    }

    #[test]
    fn second_lock_fails_with_pid_then_succeeds_after_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let first = StoreLock::acquire(&path, Duration::ZERO).unwrap();
        let err = StoreLock::acquire(&path, Duration::from_millis(150)).unwrap_err();
        match err {
            StoreError::Locked {
                holder_pid, waited, ..
            } => {
                assert_eq!(holder_pid, Some(std::process::id()));
                assert!(waited >= Duration::from_millis(150));
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(first);
        StoreLock::acquire(&path, Duration::ZERO).unwrap();
    }
}
