//! Small durable-file helpers shared by the store: error mapping, directory fsync, the
//! "temp file + fsync + rename + fsync dir" sequence, and the write budget test seam.
//!
//! Owns: the only places where the store makes a rename durable (the mapping of OS errors,
//! [`io_err`], lives with the error type). Must never rename a file that has not been fsynced, never leave
//! a rename without an fsync of its directory, and never create a temp file but exclusively
//! (see `perms`).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::StoreError;
pub(crate) use super::error::{io_err, write_err};
use super::perms::{FILE_MODE, create_exclusive, open_read, set_mode};

/// Test seam: how many more bytes the store may write before every write fails like a
/// full disk (`ENOSPC`). Unlimited unless a test sets a budget
/// (`Store::set_write_budget_for_tests`); production code never does. Shared by every
/// clone of one store, and by nothing else.
#[derive(Debug)]
pub(crate) struct WriteBudget {
    left: AtomicU64,
}

impl Default for WriteBudget {
    fn default() -> Self {
        Self {
            left: AtomicU64::new(u64::MAX),
        }
    }
}

impl WriteBudget {
    /// Set the budget (`None`: unlimited).
    pub(crate) fn set(&self, bytes: Option<u64>) {
        self.left.store(bytes.unwrap_or(u64::MAX), Ordering::SeqCst);
    }

    /// Take up to `want` bytes from the budget; returns how many may be written.
    fn take(&self, want: usize) -> usize {
        let want64 = want as u64;
        let before = self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                (left != u64::MAX).then(|| left.saturating_sub(want64))
            })
            .unwrap_or(u64::MAX);
        usize::try_from(before.min(want64)).unwrap_or(want)
    }

    /// `file.write(buf)` within the budget: fewer bytes when it runs short, and `ENOSPC`
    /// when it is used up, as a full filesystem answers.
    pub(crate) fn write(&self, file: &mut File, buf: &[u8]) -> io::Result<usize> {
        let allowed = self.take(buf.len());
        if allowed == 0 && !buf.is_empty() {
            return Err(rustix::io::Errno::NOSPC.into());
        }
        let n = file.write(&buf[..allowed])?;
        if n < allowed {
            // Give back what the OS did not take.
            self.left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                    (left != u64::MAX).then(|| left.saturating_add((allowed - n) as u64))
                })
                .ok();
        }
        Ok(n)
    }

    /// Write all of `buf` within the budget.
    pub(crate) fn write_all(&self, file: &mut File, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match self.write(file, buf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// fsync a directory so that renames and creations inside it survive a power cut.
#[cfg(unix)]
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    let d = File::open(dir).map_err(io_err("open directory", dir))?;
    d.sync_all().map_err(io_err("fsync directory", dir))
}

/// Group commit of one directory's fsync: many threads that each renamed a file into `dir`
/// need the rename durable, and one fsync of the directory covers every rename made before
/// it started. A caller takes a ticket after its rename and returns once a sync that began
/// after that ticket has finished: it runs one itself, or finds that one already did. So
/// concurrent commits of small blobs share directory fsyncs instead of queueing one each.
#[derive(Debug)]
pub(crate) struct GroupSync {
    dir: PathBuf,
    /// Tickets handed out (each after a completed rename into `dir`).
    issued: std::sync::Mutex<u64>,
    /// Held while a sync runs: the highest ticket the last successful sync covered.
    synced: std::sync::Mutex<u64>,
    /// Directory fsyncs actually run (what the grouping saves is visible in tests).
    runs: AtomicU64,
}

impl GroupSync {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            issued: std::sync::Mutex::new(0),
            synced: std::sync::Mutex::new(0),
            runs: AtomicU64::new(0),
        }
    }

    /// Make every rename into the directory that completed before this call durable.
    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        let ticket = {
            let mut issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
            *issued += 1;
            *issued
        };
        let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        if *synced >= ticket {
            return Ok(());
        }
        // Every ticket issued by now belongs to a rename that completed before it was taken.
        let covers = *self.issued.lock().unwrap_or_else(|p| p.into_inner());
        self.runs.fetch_add(1, Ordering::Relaxed);
        sync_dir(&self.dir)?;
        *synced = covers;
        Ok(())
    }

    /// How many directory fsyncs ran.
    #[cfg(test)]
    pub(crate) fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }
}

/// Directories cannot be fsynced through `File` on this platform.
#[cfg(not(unix))]
pub(crate) fn sync_dir(_dir: &Path) -> Result<(), StoreError> {
    Ok(())
}

/// Write `bytes` to a new file at `tmp` (created exclusively, see
/// `perms::create_exclusive`), give it exactly `mode`, and fsync it.
pub(crate) fn write_synced(
    tmp: &Path,
    bytes: &[u8],
    mode: u32,
    budget: &WriteBudget,
) -> Result<(), StoreError> {
    let mut f = create_exclusive(tmp)?;
    budget
        .write_all(&mut f, bytes)
        .map_err(write_err("write", tmp, Some(bytes.len() as u64)))?;
    if mode != FILE_MODE {
        set_mode(&f, mode, tmp)?;
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
    budget: &WriteBudget,
) -> Result<PathBuf, StoreError> {
    let tmp = dir.join(tmp_name);
    let target = dir.join(name);
    if let Err(e) = write_synced(&tmp, bytes, FILE_MODE, budget) {
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

/// Read at most `max` bytes of `path` (never through a link): `Ok(None)` when the file is
/// longer.
pub(crate) fn read_capped(path: &Path, max: u64) -> io::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::new();
    open_read(path)?
        .take(max.saturating_add(1))
        .read_to_end(&mut bytes)?;
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
        let budget = WriteBudget::default();
        write_atomic(dir.path(), "f", "f.tmp", b"one", &budget).unwrap();
        write_atomic(dir.path(), "f", "f.tmp", b"two", &budget).unwrap();
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

    #[test]
    fn group_sync_runs_one_fsync_per_caller_alone_and_one_for_all_who_waited() {
        let dir = tempfile::tempdir().unwrap();
        let g = GroupSync::new(dir.path().to_path_buf());
        // Alone, every call runs its own sync: nothing ran after its ticket was taken.
        for _ in 0..3 {
            g.sync().unwrap();
        }
        assert_eq!(g.runs(), 3);

        // Eight callers arrive while a sync is in progress (the test holds its lock): when it
        // ends, the first of them runs one sync that covers all eight; the rest return.
        let g = std::sync::Arc::new(GroupSync::new(dir.path().to_path_buf()));
        let in_progress = g.synced.lock().unwrap();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let g = g.clone();
                std::thread::spawn(move || g.sync().unwrap())
            })
            .collect();
        while *g.issued.lock().unwrap() < 8 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        drop(in_progress);
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(g.runs(), 1, "one sync for the eight");
        assert_eq!(*g.synced.lock().unwrap(), 8, "and it covered every ticket");
    }

    #[test]
    fn group_sync_reports_a_failed_sync_and_a_later_caller_retries() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        fs::create_dir(&gone).unwrap();
        let g = GroupSync::new(gone.clone());
        fs::remove_dir(&gone).unwrap();
        let e = g.sync().unwrap_err();
        assert!(e.to_string().contains("gone"), "{e}");
        fs::create_dir(&gone).unwrap();
        g.sync().unwrap();
        assert_eq!(
            g.runs(),
            2,
            "the failure advanced nothing: the next caller synced again"
        );
    }
}
