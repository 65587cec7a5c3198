//! Build-time facts for `edgepull --version`:
//! - `EDGEPULL_TARGET`: the target triple this binary is built for (cargo's `TARGET`).
//! - `EDGEPULL_GIT_COMMIT`: `git rev-parse --short=12 HEAD`, or `unknown` outside a git
//!   checkout (e.g. a source tarball) or without git.
//!
//! Rebuilds when HEAD moves: watches the HEAD file, the ref it points to and packed-refs.
//! Paths come from `git rev-parse --git-path`, which resolves them in linked worktrees too
//! (there `.git` is a file and HEAD lives under `<main>/.git/worktrees/<name>/` while the
//! refs live in the main repository).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".to_string());
    println!("cargo::rustc-env=EDGEPULL_TARGET={target}");

    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| ".".into()));
    let commit = git(&dir, &["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_string());
    println!("cargo::rustc-env=EDGEPULL_GIT_COMMIT={commit}");

    println!("cargo::rerun-if-changed=scripts/build.rs");
    if commit == "unknown" {
        return;
    }
    // Watch only paths that exist: a missing one would make cargo rerun this script on every
    // build.
    for item in ["HEAD", "packed-refs"] {
        if let Some(path) = git_path(&dir, item).filter(|p| p.is_file()) {
            println!("cargo::rerun-if-changed={}", path.display());
        }
    }
    // On a branch, HEAD holds `ref: refs/heads/<branch>` and a commit rewrites only that ref
    // (detached, HEAD holds the hash itself). A ref that exists only in packed-refs gets a loose
    // file again at the next commit, so then watch the folder it will appear in (cargo scans a
    // folder for newer files).
    if let Some(name) = git(&dir, &["symbolic-ref", "-q", "HEAD"])
        && let Some(path) = git_path(&dir, &name)
    {
        let watched = if path.is_file() {
            Some(path.as_path())
        } else {
            path.parent().filter(|p| p.is_dir())
        };
        if let Some(p) = watched {
            println!("cargo::rerun-if-changed={}", p.display());
        }
    }
}

/// Where `item` (e.g. `HEAD`, `refs/heads/main`) lives; `.git` may be a file (linked worktree).
fn git_path(dir: &Path, item: &str) -> Option<PathBuf> {
    git(dir, &["rev-parse", "--git-path", item]).map(|p| dir.join(p))
}

/// Runs git in `dir`; its trimmed stdout when it succeeds with some output.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}
