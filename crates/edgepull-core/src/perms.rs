//! Who may write a directory the daemon publishes a file into (the metrics textfile's
//! directory, shared with node_exporter). The caller reads the directory's mode and owner;
//! this only decides.
//!
//! Owns: the rule [`shared_dir`] (the store applies it to the directories above its root,
//! `crate::store::dir_safety`). Never reads a file system.

/// The permission bits that let a user other than the owner create, rename or delete
/// entries in a directory.
pub(crate) const GROUP_OR_OTHER_WRITE: u32 = 0o022;
/// The sticky bit: only an entry's owner may rename or delete it (as in `/tmp`).
pub(crate) const STICKY: u32 = 0o1000;

/// Why another user could replace or redirect a file the daemon writes into a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirProblem {
    /// Group- or world-writable without the sticky bit: another user can rename or delete
    /// the daemon's file and put their own (or a symlink) in its place.
    WritableByOthers {
        /// The directory's permission bits (with the sticky bit).
        mode: u32,
    },
    /// Owned by another user who is not root: that user can change its mode at any time.
    ForeignOwner {
        /// The owner's uid.
        owner: u32,
    },
}

/// Whether a directory with permission bits `mode`, owned by `owner`, is safe for a
/// process running as `euid` to publish files in: owned by that user or by root, and
/// writable by nobody else unless sticky (`/tmp`-like: others cannot touch what they do
/// not own).
pub fn shared_dir(mode: u32, owner: u32, euid: u32) -> Result<(), DirProblem> {
    if owner != euid && owner != 0 {
        return Err(DirProblem::ForeignOwner { owner });
    }
    if mode & GROUP_OR_OTHER_WRITE != 0 && mode & STICKY == 0 {
        return Err(DirProblem::WritableByOthers { mode: mode & 0o7777 });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_dir_table() {
        let me = 998;
        let writable = |mode| Err(DirProblem::WritableByOthers { mode });
        let cases = [
            // (mode, owner, want)
            (0o755, me, Ok(())),
            (0o700, me, Ok(())),
            (0o755, 0, Ok(())),
            (0o750, 0, Ok(())),
            (0o40755, me, Ok(())), // file-type bits are ignored
            (0o1777, 0, Ok(())),   // /tmp-like: sticky
            (0o1770, me, Ok(())),
            (0o775, me, writable(0o775)),
            (0o757, me, writable(0o757)),
            (0o777, 0, writable(0o777)),
            (0o40777, me, writable(0o777)),
            (0o2775, me, writable(0o2775)), // setgid is not sticky
            (0o755, 1000, Err(DirProblem::ForeignOwner { owner: 1000 })),
            (0o1777, 1000, Err(DirProblem::ForeignOwner { owner: 1000 })),
        ];
        for (mode, owner, want) in cases {
            assert_eq!(shared_dir(mode, owner, me), want, "{mode:o} {owner}");
        }
        // Running as root: a directory of another user is still foreign.
        assert_eq!(
            shared_dir(0o755, 1000, 0),
            Err(DirProblem::ForeignOwner { owner: 1000 })
        );
        assert_eq!(shared_dir(0o755, 0, 0), Ok(()));
    }
}
