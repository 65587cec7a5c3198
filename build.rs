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

    println!("cargo::rerun-if-changed=build.rs");
    if commit == "unknown" {
        return;
    }
    let mut watch = vec!["HEAD".to_string(), "packed-refs".to_string()];
    // HEAD is `ref: refs/heads/<branch>` on a branch; detached, it holds the hash itself.
    if let Some(name) = git(&dir, &["symbolic-ref", "-q", "HEAD"]) {
        watch.push(name);
    }
    for item in watch {
        if let Some(path) = git(&dir, &["rev-parse", "--git-path", &item]) {
            let path = dir.join(path);
            // A missing file would make cargo rerun this script on every build.
            if path.is_file() {
                println!("cargo::rerun-if-changed={}", path.display());
            }
        }
    }
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
