//! `Platform` (`os/arch[/variant]`) and the choice of one manifest from an index.
//!
//! Owns: parsing platform strings, the default platform of this build, the variant
//! fallback table (containerd's: arm/v7 accepts v6 and v5, arm64 treats "" and v8 alike)
//! and `select`, a pure function over index entries, and [`describe_offered`], the list of
//! an index's platforms for an error message. Never does IO, and never shows a platform
//! string from an index unescaped (it is registry text).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::text::{SHORT, sanitize};

/// Most platforms [`describe_offered`] lists by name.
pub const OFFERED_SHOWN: usize = 16;

/// Why a platform string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("platform \"{value}\" is not os/arch[/variant] (e.g. linux/arm64, linux/arm/v7)")]
pub struct PlatformError {
    /// The refused value, escaped and capped ([`sanitize`]): it may come from a registry's
    /// index (the fuzzer found a 4,272-character message from an unbounded echo).
    pub value: String,
}

/// A normalized platform.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// Architecture in GOARCH terms, e.g. `arm64`, `arm`, `amd64`.
    pub architecture: String,
    /// Variant, e.g. `v7`; empty when none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
}

impl Platform {
    /// Parse `os/arch[/variant]`, normalizing aliases (aarch64 → arm64, x86_64 → amd64,
    /// armhf → arm/v7, armel → arm/v6) and arm64's variant (`v8` is the default).
    pub fn parse(value: &str) -> Result<Self, PlatformError> {
        let err = || PlatformError {
            value: sanitize(value, SHORT),
        };
        let parts: Vec<&str> = value.trim().split('/').collect();
        if parts.len() < 2 || parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
            return Err(err());
        }
        let ok = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        };
        if !parts.iter().all(|p| ok(p)) {
            return Err(err());
        }
        Ok(Self::normalized(
            parts[0],
            parts[1],
            parts.get(2).copied().unwrap_or(""),
        ))
    }

    /// Build a normalized platform from parts as found in an index.
    pub fn normalized(os: &str, arch: &str, variant: &str) -> Self {
        let os = os.to_ascii_lowercase();
        let (arch, variant) = match (arch.to_ascii_lowercase().as_str(), variant.to_ascii_lowercase()) {
            ("aarch64" | "arm64", v) if v.is_empty() || v == "v8" || v == "8" => {
                ("arm64".to_string(), "v8".to_string())
            }
            ("aarch64" | "arm64", v) => ("arm64".to_string(), v),
            ("x86_64" | "x86-64" | "amd64", v) => ("amd64".to_string(), v),
            ("armhf", _) => ("arm".to_string(), "v7".to_string()),
            ("armel", _) => ("arm".to_string(), "v6".to_string()),
            ("arm", v) if v.is_empty() => ("arm".to_string(), "v7".to_string()),
            ("arm", v) => (
                "arm".to_string(),
                if v.starts_with('v') { v } else { format!("v{v}") },
            ),
            (a, v) => (a.to_string(), v),
        };
        Self {
            os,
            architecture: arch,
            variant,
        }
    }

    /// The platform this binary was built for (arm64 → linux/arm64/v8, armv7 → linux/arm/v7,
    /// armv6 → linux/arm/v6, x86_64 → linux/amd64).
    pub fn host() -> Self {
        let arch = std::env::consts::ARCH;
        match arch {
            "aarch64" => Self::normalized("linux", "arm64", "v8"),
            "arm" if cfg!(target_feature = "v7") => Self::normalized("linux", "arm", "v7"),
            "arm" => Self::normalized("linux", "arm", "v6"),
            "x86_64" => Self::normalized("linux", "amd64", ""),
            other => Self::normalized("linux", other, ""),
        }
    }

    /// The variants acceptable in order of preference (containerd's arm fallback).
    pub fn acceptable_variants(&self) -> Vec<String> {
        if self.architecture == "arm" {
            let order = ["v8", "v7", "v6", "v5"];
            if let Some(pos) = order.iter().position(|v| *v == self.variant) {
                // arm/v8 (32-bit on ARMv8) can run v7, v6, v5 too.
                return order[pos..].iter().map(|s| s.to_string()).collect();
            }
        }
        vec![self.variant.clone()]
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.variant.is_empty() {
            write!(f, "{}/{}", self.os, self.architecture)
        } else {
            write!(f, "{}/{}/{}", self.os, self.architecture, self.variant)
        }
    }
}

impl fmt::Debug for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Platform({self})")
    }
}

impl FromStr for Platform {
    type Err = PlatformError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Pick the best entry for `want` among `candidates` (as found in an index, in index order).
/// Returns the position of the chosen candidate. Exact variant first, then the fallbacks in
/// order; among equals, the first in the index wins. Entries with another OS or architecture
/// never match.
pub fn select(want: &Platform, candidates: &[Platform]) -> Option<usize> {
    let variants = want.acceptable_variants();
    variants.iter().find_map(|variant| {
        candidates
            .iter()
            .position(|c| c.os == want.os && c.architecture == want.architecture && &c.variant == variant)
    })
}

/// The platforms an index offers, for a message: the distinct ones in index order, each
/// escaped and capped ([`sanitize`]), at most [`OFFERED_SHOWN`] of them and then how many
/// more; `(none)` for an empty index.
pub fn describe_offered(candidates: &[Platform]) -> String {
    let mut shown: Vec<String> = Vec::new();
    let mut more = 0usize;
    for c in candidates {
        let text = sanitize(&c.to_string(), SHORT);
        if shown.contains(&text) {
            continue;
        }
        if shown.len() < OFFERED_SHOWN {
            shown.push(text);
        } else {
            more += 1;
        }
    }
    if shown.is_empty() {
        return "(none)".to_string();
    }
    let mut out = shown.join(", ");
    if more > 0 {
        out.push_str(&format!(" and {more} more"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        Platform::parse(s).unwrap()
    }

    #[test]
    fn parse_normalizes() {
        assert_eq!(p("linux/aarch64").to_string(), "linux/arm64/v8");
        assert_eq!(p("linux/arm64").to_string(), "linux/arm64/v8");
        assert_eq!(p("linux/arm").to_string(), "linux/arm/v7");
        assert_eq!(p("linux/armhf").to_string(), "linux/arm/v7");
        assert_eq!(p("linux/x86_64").to_string(), "linux/amd64");
        for bad in ["linux", "linux/", "/arm64", "linux/arm/v7/x", "linux/ar m"] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn selection_table() {
        let index = [
            p("linux/amd64"),
            p("linux/arm64/v8"),
            p("linux/arm/v7"),
            p("linux/arm/v6"),
        ];
        let cases = [
            ("linux/arm64", Some(1)),
            ("linux/arm/v7", Some(2)),
            ("linux/arm/v6", Some(3)),
            ("linux/arm/v5", None),
            ("linux/amd64", Some(0)),
            ("linux/riscv64", None),
            ("windows/amd64", None),
        ];
        for (want, expect) in cases {
            assert_eq!(select(&p(want), &index), expect, "{want}");
        }
        // armv7 falls back to v6 then v5 when there is no v7 entry.
        let only_v6 = [p("linux/amd64"), p("linux/arm/v6"), p("linux/arm/v5")];
        assert_eq!(select(&p("linux/arm/v7"), &only_v6), Some(1));
        let only_v5 = [p("linux/arm/v5")];
        assert_eq!(select(&p("linux/arm/v7"), &only_v5), Some(0));
        // a v6 device never takes v7.
        assert_eq!(select(&p("linux/arm/v6"), &[p("linux/arm/v7")]), None);
        // arm64 entries without a variant count as v8.
        let no_variant = [Platform::normalized("linux", "arm64", "")];
        assert_eq!(select(&p("linux/arm64/v8"), &no_variant), Some(0));
    }

    #[test]
    fn offered_platforms_are_listed_escaped_and_bounded() {
        assert_eq!(describe_offered(&[]), "(none)");
        assert_eq!(
            describe_offered(&[p("linux/amd64"), p("linux/arm/v7"), p("linux/amd64")]),
            "linux/amd64, linux/arm/v7"
        );
        let hostile = Platform::normalized("linux", &format!("\x1b[2J\r\0{}", "x".repeat(100_000)), "v7");
        let got = describe_offered(&[hostile]);
        assert!(got.starts_with("linux/\\u{1b}[2j\\r\\u{0}xxx"), "{got}");
        assert_eq!(got.chars().count(), SHORT);
        let many: Vec<Platform> = (0..1000)
            .map(|i| Platform::normalized("linux", &format!("arch{i}"), ""))
            .collect();
        let got = describe_offered(&many);
        assert!(got.ends_with("linux/arch15 and 984 more"), "{got}");
    }
}
