//! The external programs the suite starts, found on disk. `scripts/real-registry-deps`
//! installs them. With `CI` set a missing one fails the test; otherwise the test prints
//! `skipped: <tool> missing` and returns.

use std::path::{Path, PathBuf};

/// Paths of the programs the suite runs.
#[derive(Debug, Clone)]
pub(crate) struct Tools {
    /// distribution 2.8 (Debian package docker-registry).
    pub registry: PathBuf,
    /// nginx (nginx-light or nginx).
    pub nginx: PathBuf,
    /// skopeo.
    pub skopeo: PathBuf,
    /// umoci.
    pub umoci: PathBuf,
    /// htpasswd (apache2-utils), for bcrypt.
    pub htpasswd: PathBuf,
    /// tinyproxy, the HTTP CONNECT proxy.
    pub tinyproxy: PathBuf,
    /// unshare (util-linux): tinyproxy runs in a mount namespace with its own /etc/hosts.
    pub unshare: PathBuf,
}

/// (program, Debian package) in the order they are looked for.
const WANTED: [(&str, &str); 7] = [
    ("docker-registry", "docker-registry"),
    ("nginx", "nginx-light"),
    ("skopeo", "skopeo"),
    ("umoci", "umoci"),
    ("htpasswd", "apache2-utils"),
    ("tinyproxy", "tinyproxy"),
    ("unshare", "util-linux"),
];

fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether a missing tool must fail the test (CI) instead of skipping it.
pub(crate) fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// All tools, or `None` (after printing `skipped: <tool> missing`) when one is missing
/// outside CI. Panics in CI.
pub(crate) fn tools() -> Option<Tools> {
    let mut found = Vec::new();
    for (program, package) in WANTED {
        match find(program) {
            Some(p) => found.push(p),
            None if in_ci() => panic!(
                "{program} missing (Debian package {package}); CI is set, so this is a failure: \
                 run scripts/real-registry-deps"
            ),
            None => {
                eprintln!(
                    "skipped: {program} missing (Debian package {package}; run scripts/real-registry-deps)"
                );
                return None;
            }
        }
    }
    let mut it = found.into_iter();
    let mut next = || it.next().expect("one path per tool");
    Some(Tools {
        registry: next(),
        nginx: next(),
        skopeo: next(),
        umoci: next(),
        htpasswd: next(),
        tinyproxy: next(),
        unshare: next(),
    })
}
