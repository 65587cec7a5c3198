//! Store locks: the OS lock on `root/lock` that keeps a second process out of the store, and
//! the in-process set of digests being ingested, which keeps a second writer off one ingest.
//!
//! Owns: acquiring and releasing both locks. Must never block an async worker: the wait for
//! the process lock sleeps on tokio's timer between non-blocking attempts (`flock` with
//! `LOCK_NB`), and each attempt's file IO runs on the blocking pool. Must never hold the
//! busy set's mutex across IO or an await.

use std::collections::HashSet;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::fsio::io_err;
use super::{StoreError, run_blocking};
use edgepull_core::oci::Digest;

/// How often `StoreLock::acquire` retries while another process holds the lock.
const POLL: Duration = Duration::from_millis(100);

/// The exclusive lock on a store root. Released when dropped.
#[derive(Debug)]
pub(crate) struct StoreLock {
    file: File,
    path: PathBuf,
}

/// The outcome of one attempt at the lock.
enum Attempt {
    Acquired(StoreLock),
    /// Another process holds it; the pid it wrote, if readable.
    Held(Option<u32>),
}

impl StoreLock {
    /// Take the exclusive lock on `path`, retrying every 100 ms for up to `wait` (the wait
    /// sleeps on tokio's timer). Logs once while waiting; fails with `StoreError::Locked`
    /// naming the holder's pid.
    pub(crate) async fn acquire(path: &Path, wait: Duration) -> Result<Self, StoreError> {
        let start = Instant::now();
        let mut logged = false;
        loop {
            let attempt_path = path.to_path_buf();
            let attempt = run_blocking("lock", path.to_path_buf(), move || {
                Self::try_acquire(&attempt_path)
            })
            .await?;
            let holder_pid = match attempt {
                Attempt::Acquired(lock) => return Ok(lock),
                Attempt::Held(pid) => pid,
            };
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
            tokio::time::sleep(POLL.min(wait - waited)).await;
        }
    }

    /// One attempt, never waiting for the lock: open (creating) the lock file and try the
    /// exclusive lock. Blocking file IO: on the blocking pool only.
    fn try_acquire(path: &Path) -> Result<Attempt, StoreError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io_err("open lock file", path))?;
        match file.try_lock() {
            Ok(()) => {
                let lock = Self {
                    file,
                    path: path.to_path_buf(),
                };
                lock.write_pid()?;
                Ok(Attempt::Acquired(lock))
            }
            Err(TryLockError::WouldBlock) => Ok(Attempt::Held(read_pid(&file))),
            Err(TryLockError::Error(e)) => Err(io_err("lock", path)(e)),
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
    /// Clear our pid, then unlock. Best effort, deliberately not propagated (a drop cannot
    /// fail): closing the file releases the lock anyway, and the next holder rewrites the
    /// pid. Two small syscalls on the lock file, no fsync.
    fn drop(&mut self) {
        if let Err(e) = self.file.set_len(0) {
            let e = io_err("clear the pid in", &self.path)(e);
            tracing::debug!(error = %crate::error_chain(&e), "store lock release");
        }
        if let Err(e) = self.file.unlock() {
            let e = io_err("unlock", &self.path)(e);
            tracing::debug!(error = %crate::error_chain(&e), "store lock release; closing the file unlocks it");
        }
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

    #[tokio::test]
    async fn second_lock_fails_with_pid_then_succeeds_after_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let first = StoreLock::acquire(&path, Duration::ZERO).await.unwrap();
        let err = StoreLock::acquire(&path, Duration::from_millis(150))
            .await
            .unwrap_err();
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
        StoreLock::acquire(&path, Duration::ZERO).await.unwrap();
    }

    /// The wait must leave the runtime free: on a single-threaded runtime, a task ticking
    /// every 10 ms keeps ticking while `acquire` waits 300 ms for a held lock.
    #[tokio::test(flavor = "current_thread")]
    async fn waiting_for_the_lock_does_not_block_the_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let _held = StoreLock::acquire(&path, Duration::ZERO).await.unwrap();
        let ticks = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counter = ticks.clone();
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        let err = StoreLock::acquire(&path, Duration::from_millis(300))
            .await
            .unwrap_err();
        ticker.abort();
        assert!(err.is_locked(), "{err:?}");
        let n = ticks.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            n >= 10,
            "the runtime ran only {n} ticks while waiting for the lock"
        );
    }
}
