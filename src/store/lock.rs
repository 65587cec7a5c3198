//! Store locks: the OS lock on `root/lock` that keeps a second process out of the store, and
//! the in-process set of digests being ingested, which keeps a second writer off one ingest.
//!
//! The lock file also records whether the store was left clean. Its holder writes its pid
//! into it (fsynced) right after taking the lock, and empties it at an orderly release,
//! but only when nothing is left to re-hash (the store was clean when it was opened, or a
//! start-up scrub has run since: [`StoreLock::mark_clean`]). So a process that is killed,
//! crashes or loses power leaves its pid behind, and so does every later process until a
//! scrub has run; the next holder reads that before writing its own pid
//! ([`StoreLock::unclean`]). The pid is written over the old content and then the file is
//! cut to its length, so the file is never empty in between.
//!
//! Owns: acquiring and releasing both locks. Must never block an async worker: the wait for
//! the process lock sleeps on tokio's timer between non-blocking attempts (`flock` with
//! `LOCK_NB`), and each attempt's file IO runs on the blocking pool. Must never hold the
//! busy set's mutex across IO or an await. Must never open the lock file through a link,
//! truncate it before holding the lock, or write a file with another name for it (a hard
//! link) or one that is not a regular file.

use std::collections::HashSet;
use std::fs::{File, TryLockError};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags};

use super::fsio::io_err;
use super::perms::FILE_MODE;
use super::{StoreError, run_blocking};
use edgepull_core::oci::Digest;
use edgepull_core::store::lock_left_unclean;

/// How often `StoreLock::acquire` retries while another process holds the lock.
const POLL: Duration = Duration::from_millis(100);

/// The exclusive lock on a store root. Released when dropped.
#[derive(Debug)]
pub(crate) struct StoreLock {
    file: File,
    path: PathBuf,
    /// The previous holder left the store unclean (see the module docs).
    unclean: bool,
    /// Empty the file at release: nothing is left to re-hash.
    clear_on_drop: AtomicBool,
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

    /// One attempt, never waiting for the lock: open (creating) the lock file without
    /// following a link, check that it is a plain file with one name, and try the exclusive
    /// lock. Blocking file IO: on the blocking pool only.
    fn try_acquire(path: &Path) -> Result<Attempt, StoreError> {
        let file = open_lock_file(path)?;
        match file.try_lock() {
            Ok(()) => {
                let previous = file.metadata().map_err(io_err("stat", path))?.len();
                let unclean = lock_left_unclean(previous);
                let lock = Self {
                    file,
                    path: path.to_path_buf(),
                    unclean,
                    clear_on_drop: AtomicBool::new(!unclean),
                };
                lock.write_pid()?;
                Ok(Attempt::Acquired(lock))
            }
            Err(TryLockError::WouldBlock) => Ok(Attempt::Held(read_pid(&file))),
            Err(TryLockError::Error(e)) => Err(io_err("lock", path)(e)),
        }
    }

    /// Whether the previous holder left the store unclean (killed, crashed, power cut, or
    /// a start-up scrub still pending).
    pub(crate) fn unclean(&self) -> bool {
        self.unclean
    }

    /// Nothing is left to re-hash: release the lock as clean.
    pub(crate) fn mark_clean(&self) {
        self.clear_on_drop.store(true, Ordering::SeqCst);
    }

    /// Write our pid over the old content, cut the file to it, and fsync, so the pid
    /// survives a power cut and the file is never empty in between.
    fn write_pid(&self) -> Result<(), StoreError> {
        let pid = format!("{}\n", std::process::id());
        self.file
            .write_all_at(pid.as_bytes(), 0)
            .map_err(io_err("write pid into lock file", &self.path))?;
        self.file
            .set_len(pid.len() as u64)
            .map_err(io_err("truncate lock file", &self.path))?;
        self.file
            .sync_data()
            .map_err(io_err("fsync lock file", &self.path))
    }
}

/// Open the lock file at `path` for reading and writing, creating it (mode 0640) if absent;
/// never through a link, and only a regular file with a single name.
fn open_lock_file(path: &Path) -> Result<File, StoreError> {
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let mode = Mode::from_bits_truncate(FILE_MODE as _);
    let file = match rustix::fs::open(path, flags, mode) {
        Ok(fd) => File::from(fd),
        Err(rustix::io::Errno::LOOP) => {
            return Err(StoreError::UnsafeLockFile {
                path: path.to_path_buf(),
                found: "a symbolic link".into(),
            });
        }
        Err(e) => return Err(io_err("open lock file", path)(io::Error::from(e))),
    };
    let meta = file.metadata().map_err(io_err("stat", path))?;
    let found = if !meta.is_file() {
        Some("not a regular file".to_string())
    } else if meta.nlink() > 1 {
        Some(format!(
            "a file with {} names (hard links); another name may point at a file outside the store",
            meta.nlink()
        ))
    } else {
        None
    };
    if let Some(found) = found {
        return Err(StoreError::UnsafeLockFile {
            path: path.to_path_buf(),
            found,
        });
    }
    if meta.mode() & 0o7777 != FILE_MODE {
        rustix::fs::fchmod(&file, mode).map_err(|e| io_err("set the permissions of", path)(e.into()))?;
    }
    Ok(file)
}

impl Drop for StoreLock {
    /// Clear our pid if nothing is left to re-hash, then unlock. Best effort, deliberately
    /// not propagated (a drop cannot fail): closing the file releases the lock anyway, and
    /// a pid left behind only means the next start re-hashes. No fsync: a lost clear is
    /// the safe direction.
    fn drop(&mut self) {
        if self.clear_on_drop.load(Ordering::SeqCst)
            && let Err(e) = self.file.set_len(0)
        {
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

    #[tokio::test]
    async fn a_pid_left_behind_marks_the_store_unclean_until_a_holder_marks_it_clean() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let read = || std::fs::read_to_string(&path).unwrap();

        let first = StoreLock::acquire(&path, Duration::ZERO).await.unwrap();
        assert!(!first.unclean(), "a new lock file is clean");
        assert_eq!(read(), format!("{}\n", std::process::id()));
        drop(first);
        assert_eq!(read(), "", "an orderly release of a clean store empties the file");
        assert!(!StoreLock::acquire(&path, Duration::ZERO).await.unwrap().unclean());

        // What a killed holder leaves: its pid (here longer than ours, to see it replaced).
        std::fs::write(&path, "4294967295\n").unwrap();
        let second = StoreLock::acquire(&path, Duration::ZERO).await.unwrap();
        assert!(second.unclean());
        assert_eq!(
            read(),
            format!("{}\n", std::process::id()),
            "pid written over the old one"
        );
        drop(second);
        assert_ne!(read(), "", "not marked clean: the pid stays");
        let third = StoreLock::acquire(&path, Duration::ZERO).await.unwrap();
        assert!(third.unclean(), "still unclean for the next holder");
        third.mark_clean();
        drop(third);
        assert_eq!(read(), "");
        assert!(!StoreLock::acquire(&path, Duration::ZERO).await.unwrap().unclean());
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
