//! `hooks.on_update`: a command run after an image switched to a new digest.
//!
//! Owns: starting it (argv, no shell; stdin from /dev/null; stdout and stderr inherited,
//! so its output lands in the journal next to the daemon's), its environment, its timeout
//! and the record of how it ended. The pulled content is already recorded when the hook
//! runs: a failing hook is logged and recorded, and changes nothing in the store. Never
//! blocks the runtime (the child is awaited; its output goes to the inherited stderr, no
//! file is written here) and never runs through a shell.
//!
//! Environment: the daemon's, minus the systemd notify and watchdog variables (the hook
//! must never speak for the daemon), plus `EDGEPULL_REF`, `EDGEPULL_DIGEST` (the platform
//! manifest now current), `EDGEPULL_PREVIOUS_DIGEST` (empty on the first pull) and
//! `EDGEPULL_LAYOUT` (the OCI layout directory).

use std::io;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Variables the hook must not inherit.
const REMOVED_ENV: [&str; 5] = [
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
];

/// How a hook run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HookEnd {
    /// It exited with this code.
    Exited(i32),
    /// A signal ended it.
    Signalled(i32),
    /// It ran past the timeout and was killed.
    TimedOut,
    /// It was killed because the daemon is stopping.
    Cancelled,
    /// It could not be started (or waited for).
    SpawnFailed(HookError),
}

impl HookEnd {
    /// Exit code 0.
    pub(crate) fn ok(&self) -> bool {
        matches!(self, HookEnd::Exited(0))
    }
}

/// Why a hook could not be run to its end. Equal when the variant, the program and the
/// kind of the OS error are (the OS error itself is shared, not compared).
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum HookError {
    /// `hooks.on_update` is an empty list.
    #[error("empty command")]
    EmptyCommand,
    /// The program could not be started.
    #[error("cannot start {program}")]
    Spawn {
        program: String,
        #[source]
        source: Arc<io::Error>,
    },
    /// Waiting for the program failed.
    #[error("cannot wait for {program}")]
    Wait {
        program: String,
        #[source]
        source: Arc<io::Error>,
    },
    /// The program ended with neither an exit code nor a signal.
    #[error("{program} ended without exit code or signal")]
    NoExitStatus { program: String },
}

impl HookError {
    /// What equality compares: the variant, the program and the kind of OS error.
    fn key(&self) -> (&'static str, &str, Option<io::ErrorKind>) {
        match self {
            HookError::EmptyCommand => ("empty", "", None),
            HookError::Spawn { program, source } => ("spawn", program, Some(source.kind())),
            HookError::Wait { program, source } => ("wait", program, Some(source.kind())),
            HookError::NoExitStatus { program } => ("status", program, None),
        }
    }
}

impl PartialEq for HookError {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for HookError {}

/// What the hook is told.
#[derive(Debug, Clone)]
pub(crate) struct HookEnv<'a> {
    /// The image reference.
    pub(crate) reference: &'a str,
    /// The manifest digest now current.
    pub(crate) digest: &'a str,
    /// The digest it replaced ("" on the first pull).
    pub(crate) previous: &'a str,
    /// The OCI layout directory.
    pub(crate) layout: &'a Path,
}

/// Run `argv` with `env`, killing it after `timeout` or when `cancel` fires.
pub(crate) async fn run(
    argv: &[String],
    env: &HookEnv<'_>,
    timeout: Duration,
    cancel: &CancellationToken,
) -> HookEnd {
    let Some((program, args)) = argv.split_first() else {
        return HookEnd::SpawnFailed(HookError::EmptyCommand);
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .env("EDGEPULL_REF", env.reference)
        .env("EDGEPULL_DIGEST", env.digest)
        .env("EDGEPULL_PREVIOUS_DIGEST", env.previous)
        .env("EDGEPULL_LAYOUT", env.layout);
    for var in REMOVED_ENV {
        cmd.env_remove(var);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return HookEnd::SpawnFailed(HookError::Spawn {
                program: program.clone(),
                source: Arc::new(e),
            });
        }
    };
    let end = tokio::select! {
        status = child.wait() => match status {
            Ok(s) => exit_of(program, s),
            Err(e) => HookEnd::SpawnFailed(HookError::Wait { program: program.clone(), source: Arc::new(e) }),
        },
        () = tokio::time::sleep(timeout) => HookEnd::TimedOut,
        () = cancel.cancelled() => HookEnd::Cancelled,
    };
    if matches!(end, HookEnd::TimedOut | HookEnd::Cancelled) {
        let _ = child.kill().await;
    }
    end
}

fn exit_of(program: &str, status: std::process::ExitStatus) -> HookEnd {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => HookEnd::Exited(c),
        (None, Some(s)) => HookEnd::Signalled(s),
        (None, None) => HookEnd::SpawnFailed(HookError::NoExitStatus {
            program: program.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(layout: &Path) -> HookEnv<'_> {
        HookEnv {
            reference: "h/app:1",
            digest: "sha256:new",
            previous: "",
            layout,
        }
    }

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    #[tokio::test]
    async fn exit_codes_timeouts_and_environment() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env");
        let never = CancellationToken::new();
        let script = format!(
            "printf '%s|%s|%s|%s|%s' \"$EDGEPULL_REF\" \"$EDGEPULL_DIGEST\" \"$EDGEPULL_PREVIOUS_DIGEST\" \"$EDGEPULL_LAYOUT\" \"${{NOTIFY_SOCKET-unset}}\" > {}",
            out.display()
        );
        let end = run(&sh(&script), &env(dir.path()), Duration::from_secs(5), &never).await;
        assert_eq!(end, HookEnd::Exited(0));
        assert!(end.ok());
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            format!("h/app:1|sha256:new||{}|unset", dir.path().display())
        );
        assert_eq!(
            run(&sh("exit 3"), &env(dir.path()), Duration::from_secs(5), &never).await,
            HookEnd::Exited(3)
        );
        assert_eq!(
            run(
                &sh("kill -TERM $$"),
                &env(dir.path()),
                Duration::from_secs(5),
                &never
            )
            .await,
            HookEnd::Signalled(15)
        );
        let cancel = CancellationToken::new();
        cancel.cancel();
        assert_eq!(
            run(
                &sh("sleep 30"),
                &env(dir.path()),
                Duration::from_secs(30),
                &cancel
            )
            .await,
            HookEnd::Cancelled
        );
        let missing = vec![dir.path().join("nope").display().to_string()];
        assert!(matches!(
            run(&missing, &env(dir.path()), Duration::from_secs(1), &never).await,
            HookEnd::SpawnFailed(m @ HookError::Spawn { .. }) if crate::error_chain(&m).contains("cannot start")
        ));
    }

    /// Paused time: the hour-long timeout passes at once (the clock jumps to it while the
    /// runtime only waits for the child), so this proves the kill without a real wait.
    #[tokio::test(start_paused = true)]
    async fn a_hook_past_its_timeout_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let started = std::time::Instant::now();
        let virtual_start = tokio::time::Instant::now();
        assert_eq!(
            run(
                &sh("sleep 30"),
                &env(dir.path()),
                Duration::from_secs(3600),
                &CancellationToken::new()
            )
            .await,
            HookEnd::TimedOut
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        // The clock moved to the deadline (timers have millisecond resolution).
        let waited = virtual_start.elapsed();
        assert!(
            waited >= Duration::from_secs(3600) && waited < Duration::from_secs(3601),
            "{waited:?}"
        );
    }
}
