//! Exit codes: one per failure category, documented in the README.
//!
//! Owns: the mapping from an error's category to the process exit status. Modules classify
//! their own errors with a `category()` method; nothing here inspects error strings.

/// What kind of failure ended a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// Bad command line (clap uses 2 itself).
    Usage,
    /// Bad configuration or credential files: fix the config; restarting will not help.
    Config,
    /// The registry or token server refused the credentials.
    Auth,
    /// A host, redirect or realm outside the egress allowlist was refused.
    Policy,
    /// Content failed size or digest verification, or a manifest was refused.
    Integrity,
    /// Network trouble that may pass: connect, reset, stall, 5xx, 429.
    Transient,
    /// The registry answered something unusable (404, other 4xx, bad headers).
    Registry,
    /// The local store failed (disk, permissions, lock held).
    Store,
    /// No valid signature by a configured key covers the image (`signatures`): missing,
    /// invalid, unknown key, or signed for another digest or identity.
    Signature,
}

impl Category {
    /// The process exit status for this category.
    pub fn code(self) -> u8 {
        match self {
            Category::Usage => 2,
            Category::Config => 78, // EX_CONFIG
            Category::Auth => 77,   // EX_NOPERM
            Category::Policy => 10,
            Category::Integrity => 65, // EX_DATAERR
            Category::Transient => 75, // EX_TEMPFAIL
            Category::Registry => 76,  // EX_PROTOCOL
            Category::Store => 74,     // EX_IOERR
            // Like 10, a refusal by policy, not a failure; no sysexits code means "untrusted".
            Category::Signature => 11,
        }
    }

    /// Worst-first order, for a command that had several failures.
    pub fn severity(self) -> u8 {
        match self {
            Category::Usage | Category::Config => 7,
            Category::Policy | Category::Signature => 6,
            Category::Auth => 5,
            Category::Integrity => 4,
            Category::Store => 3,
            Category::Registry => 2,
            Category::Transient => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct() {
        let all = [
            Category::Usage,
            Category::Config,
            Category::Auth,
            Category::Policy,
            Category::Integrity,
            Category::Transient,
            Category::Registry,
            Category::Store,
            Category::Signature,
        ];
        let mut codes: Vec<u8> = all.iter().map(|c| c.code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
        assert!(!codes.contains(&0) && !codes.contains(&1));
    }
}
