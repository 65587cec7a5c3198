//! The content store's start-up decisions, without the IO.
//!
//! Owns: whether start-up re-hashes the current images' blobs ([`VerifyOnStart`], also the
//! config's `store.verify_on_start`), and whether a directory is safe to keep the store in
//! or under ([`dir_safety`]: owner and mode bits, as the store's shell reads them with
//! `stat`). The shell stats the directories, reads the lock file and passes the numbers in.
//!
//! Must never: do IO; call a store root safe that a user other than the process's own (or
//! root) could replace or write.

use crate::perms::{self, GROUP_OR_OTHER_WRITE, shared_dir};

/// When start-up re-hashes the blobs of the current images (`store.verify_on_start`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VerifyOnStart {
    /// Only after a run that did not shut down cleanly (killed, crashed, power cut), and
    /// after any later run that skipped that re-hash. `"unclean"`, the default.
    #[default]
    Unclean,
    /// At every start. `"always"`.
    Always,
    /// Never (sizes are still checked). `"never"`.
    Never,
}

impl VerifyOnStart {
    /// Every value, in the order the config documents them.
    pub const ALL: [Self; 3] = [Self::Unclean, Self::Always, Self::Never];

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unclean => "unclean",
            Self::Always => "always",
            Self::Never => "never",
        }
    }

    /// The value spelled `value` in the config ([`VerifyOnStart::as_str`]); `None` for any
    /// other text.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == value)
    }

    /// Whether to re-hash now, given whether the store was left unclean (the previous
    /// holder of the store lock did not release it in order, or skipped a pending re-hash).
    pub fn should_scrub(self, unclean: bool) -> bool {
        match self {
            Self::Unclean => unclean,
            Self::Always => true,
            Self::Never => false,
        }
    }
}

/// Whether the lock file's previous content marks the store unclean: its holder writes its
/// pid there when it takes the lock and empties the file only at an orderly release with
/// nothing left to re-hash. Any byte left over (a pid, or a torn one) means unclean.
pub fn lock_left_unclean(previous_len: u64) -> bool {
    previous_len > 0
}

/// Which directory is being judged by [`dir_safety`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirRole {
    /// The store root itself.
    Root,
    /// A directory above the root (after symlinks are resolved).
    Parent,
}

/// Why a directory is not safe to hold the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirProblem {
    /// Group or others may write it (and, for a parent, no sticky bit protects entries).
    WritableByOthers,
    /// Another user owns it (for a parent: neither root nor this process's user).
    OwnedByOther,
}

/// Judge one directory of the store's path: the root must belong to `me` (the process's
/// effective uid) and be writable by no one else; a parent must belong to root or `me` and
/// be writable by no one else unless its sticky bit is set (so `/tmp` is fine, but a
/// store in it must still be the process's own). `mode` is `st_mode` (type bits ignored).
pub fn dir_safety(role: DirRole, mode: u32, owner: u32, me: u32) -> Result<(), DirProblem> {
    match role {
        // A parent is a shared directory: the one rule in `perms`.
        DirRole::Parent => shared_dir(mode, owner, me).map_err(|p| match p {
            perms::DirProblem::WritableByOthers { .. } => DirProblem::WritableByOthers,
            perms::DirProblem::ForeignOwner { .. } => DirProblem::OwnedByOther,
        }),
        // The root is the process's own, writable by no one else, sticky or not.
        DirRole::Root if owner != me => Err(DirProblem::OwnedByOther),
        DirRole::Root if mode & GROUP_OR_OTHER_WRITE != 0 => Err(DirProblem::WritableByOthers),
        DirRole::Root => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_on_start_spellings_round_trip_and_others_are_refused() {
        for v in VerifyOnStart::ALL {
            assert_eq!(VerifyOnStart::parse(v.as_str()), Some(v));
        }
        for bad in ["", "Unclean", "ALWAYS", "on-unclean", " never", "true"] {
            assert_eq!(VerifyOnStart::parse(bad), None, "{bad:?}");
        }
        assert_eq!(VerifyOnStart::default(), VerifyOnStart::Unclean);
    }

    #[test]
    fn should_scrub_table() {
        use VerifyOnStart::*;
        let table = [
            (Unclean, false, false),
            (Unclean, true, true),
            (Always, false, true),
            (Always, true, true),
            (Never, false, false),
            (Never, true, false),
        ];
        for (policy, unclean, want) in table {
            assert_eq!(policy.should_scrub(unclean), want, "{policy:?} unclean={unclean}");
        }
    }

    #[test]
    fn any_leftover_byte_in_the_lock_file_is_unclean() {
        assert!(!lock_left_unclean(0));
        assert!(lock_left_unclean(1));
        assert!(lock_left_unclean(6));
    }

    #[test]
    fn dir_safety_table() {
        use DirProblem::*;
        use DirRole::*;
        let me = 1000;
        let table: [(DirRole, u32, u32, Result<(), DirProblem>); 16] = [
            (Root, 0o40750, me, Ok(())),
            (Root, 0o40700, me, Ok(())),
            (Root, 0o40755, me, Ok(())),
            (Root, 0o40770, me, Err(WritableByOthers)),
            (Root, 0o40757, me, Err(WritableByOthers)),
            (Root, 0o40777, me, Err(WritableByOthers)),
            // The sticky bit does not make a shared store root safe.
            (Root, 0o41777, me, Err(WritableByOthers)),
            (Root, 0o40750, 0, Err(OwnedByOther)),
            (Root, 0o40750, 1001, Err(OwnedByOther)),
            (Parent, 0o40755, 0, Ok(())),
            (Parent, 0o40755, me, Ok(())),
            (Parent, 0o41777, 0, Ok(())),
            (Parent, 0o40777, 0, Err(WritableByOthers)),
            (Parent, 0o40775, me, Err(WritableByOthers)),
            (Parent, 0o40755, 1001, Err(OwnedByOther)),
            (Parent, 0o41777, 1001, Err(OwnedByOther)),
        ];
        for (role, mode, owner, want) in table {
            assert_eq!(
                dir_safety(role, mode, owner, me),
                want,
                "{role:?} {mode:o} uid {owner}"
            );
        }
        // Running as root: a root-owned root is the process's own.
        assert_eq!(dir_safety(Root, 0o40750, 0, 0), Ok(()));
    }
}
