//! `hooks.on_update`: a command run after an image switched to a new digest.
//!
//! Owns: starting it (argv, no shell; stdin from /dev/null; stdout and stderr inherited,
//! so its output lands in the journal next to the daemon's), its environment, its process
//! group, its timeout and the record of how it ended. The pulled content is already
//! recorded when the hook runs: a failing hook is logged and recorded, and changes nothing
//! in the store. Never blocks the runtime (the child is awaited; its output goes to the
//! inherited stderr, no file is written here) and never runs through a shell.
//!
//! Environment: a minimal one built from scratch ([`hook_env`]), never the daemon's:
//! `EDGEPULL_REF`, `EDGEPULL_DIGEST` (the platform manifest now current),
//! `EDGEPULL_PREVIOUS_DIGEST` (empty on the first pull), `EDGEPULL_LAYOUT` (the OCI layout
//! directory), `PATH` (the daemon's, else [`DEFAULT_PATH`]) and `LANG` when the daemon has
//! one. Nothing else: not `CREDENTIALS_DIRECTORY`, `NOTIFY_SOCKET` or the watchdog
//! variables (the hook must never speak for the daemon or read its credentials), nor any
//! other variable of the daemon's.
//!
//! Process group: the hook leads a process group of its own. On timeout, on shutdown, and
//! when the job running it is dropped, the whole group is killed (SIGKILL), so a hook that
//! started background processes (`sleep 1d &`) leaves none behind. A hook that exits by
//! itself is not followed: what it deliberately left running is its business (under
//! systemd, the service's control group ends it at stop).

use std::ffi::OsString;
use std::io;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process_group};
use tokio_util::sync::CancellationToken;

/// `PATH` for the hook when the daemon has none.
pub(crate) const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

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
    /// `on_update` after a failed health check rolled the image back
    /// (`EDGEPULL_ROLLBACK=1`; `digest` is then the restored version and `previous` the
    /// failed one).
    pub(crate) rollback: bool,
}

/// The hook's whole environment: the `EDGEPULL_*` variables of `env`, `PATH` (from
/// `daemon_var`, else [`DEFAULT_PATH`]) and `LANG` (when `daemon_var` has it).
/// `daemon_var` looks a variable up in the daemon's environment.
pub(crate) fn hook_env(
    env: &HookEnv<'_>,
    daemon_var: impl Fn(&str) -> Option<OsString>,
) -> Vec<(&'static str, OsString)> {
    let mut vars = vec![
        ("EDGEPULL_REF", env.reference.into()),
        ("EDGEPULL_DIGEST", env.digest.into()),
        ("EDGEPULL_PREVIOUS_DIGEST", env.previous.into()),
        ("EDGEPULL_LAYOUT", env.layout.as_os_str().to_owned()),
    ];
    if env.rollback {
        vars.push(("EDGEPULL_ROLLBACK", "1".into()));
    }
    vars.push((
        "PATH",
        daemon_var("PATH")
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| DEFAULT_PATH.into()),
    ));
    if let Some(lang) = daemon_var("LANG") {
        vars.push(("LANG", lang));
    }
    vars
}

/// The hook's process group: killed when this is dropped, unless [`Group::release`]d.
/// Kept alive only while the leader is not reaped, so its id cannot have been reused.
struct Group(Option<Pid>);

impl Group {
    /// SIGKILL to every process of the group (the leader included).
    fn kill(&mut self) {
        if let Some(pgid) = self.0.take()
            && let Err(e) = kill_process_group(pgid, Signal::KILL)
            && e != rustix::io::Errno::SRCH
        {
            tracing::warn!(pgid = pgid.as_raw_nonzero().get(), error = %e, "cannot kill the update hook's process group");
        }
    }

    /// The leader exited by itself: leave the group alone.
    fn release(&mut self) {
        self.0 = None;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Run `argv` with `env`, killing its process group after `timeout` or when `cancel` fires.
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
        .process_group(0)
        .env_clear()
        .envs(hook_env(env, |name| std::env::var_os(name)));
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return HookEnd::SpawnFailed(HookError::Spawn {
                program: program.clone(),
                source: Arc::new(e),
            });
        }
    };
    // Declared after `child`, so dropped before it: the group dies while its leader is
    // still unreaped (a dropped `Child` is killed and reaped in the background).
    let mut group = Group(
        child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(Pid::from_raw),
    );
    let end = tokio::select! {
        status = child.wait() => {
            group.release();
            match status {
                Ok(s) => exit_of(program, s),
                Err(e) => HookEnd::SpawnFailed(HookError::Wait { program: program.clone(), source: Arc::new(e) }),
            }
        }
        () = tokio::time::sleep(timeout) => HookEnd::TimedOut,
        () = cancel.cancelled() => HookEnd::Cancelled,
    };
    if matches!(end, HookEnd::TimedOut | HookEnd::Cancelled) {
        group.kill();
        // SIGKILL cannot be caught: this reaps the leader at once.
        if let Err(e) = child.kill().await {
            tracing::warn!(program = %program, error = %e, "cannot reap the update hook");
        }
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
            rollback: false,
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

    #[test]
    fn the_hook_environment_is_built_from_scratch() {
        let layout = Path::new("/var/lib/edgepull/oci");
        let e = HookEnv {
            reference: "h/app:1",
            digest: "sha256:new",
            previous: "sha256:old",
            layout,
            rollback: false,
        };
        let daemon = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let secrets: &[(&str, &str)] = &[
            ("CREDENTIALS_DIRECTORY", "/run/credentials/edgepull.service"),
            ("NOTIFY_SOCKET", "/run/systemd/notify"),
            ("WATCHDOG_USEC", "60000000"),
            ("EDGEPULL_PASSWORD", "hunter2"),
            ("EDGEPULL_LOG", "debug"),
            ("HOME", "/root"),
            ("PATH", "/opt/bin:/usr/bin"),
            ("LANG", "C.UTF-8"),
        ];
        let want = |path: &str, lang: Option<&str>| {
            let mut v: Vec<(&str, OsString)> = vec![
                ("EDGEPULL_REF", "h/app:1".into()),
                ("EDGEPULL_DIGEST", "sha256:new".into()),
                ("EDGEPULL_PREVIOUS_DIGEST", "sha256:old".into()),
                ("EDGEPULL_LAYOUT", "/var/lib/edgepull/oci".into()),
                ("PATH", path.into()),
            ];
            v.extend(lang.map(|l| ("LANG", l.into())));
            v
        };
        assert_eq!(
            hook_env(&e, daemon(secrets)),
            want("/opt/bin:/usr/bin", Some("C.UTF-8"))
        );
        // No PATH (or an empty one): the safe default; no LANG: none.
        assert_eq!(hook_env(&e, daemon(&[])), want(DEFAULT_PATH, None));
        assert_eq!(hook_env(&e, daemon(&[("PATH", "")])), want(DEFAULT_PATH, None));
        // After a rollback: EDGEPULL_ROLLBACK=1, before PATH.
        let back = HookEnv { rollback: true, ..e };
        let mut with_rollback = want(DEFAULT_PATH, None);
        with_rollback.insert(4, ("EDGEPULL_ROLLBACK", "1".into()));
        assert_eq!(hook_env(&back, daemon(&[])), with_rollback);
    }

    /// Whether `pid` runs (a zombie waiting for init to reap it does not).
    fn running(pid: &str) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
            .ok()
            .and_then(|stat| {
                let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
                Some(!matches!(state, 'Z' | 'X'))
            })
            .unwrap_or(false)
    }

    /// A hook whose shell started a background process: the timeout and the shutdown
    /// kill both (the whole process group), not only the shell.
    #[tokio::test]
    async fn the_whole_process_group_dies_on_timeout_and_on_shutdown() {
        for shutdown in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let (leader, bg) = (dir.path().join("leader"), dir.path().join("bg"));
            let script = format!(
                "echo $$ > {0}.tmp; sleep 1000 & echo $! > {1}; mv {0}.tmp {0}; sleep 1000",
                leader.display(),
                bg.display()
            );
            let cancel = CancellationToken::new();
            let timeout = if shutdown {
                Duration::from_secs(3600)
            } else {
                Duration::from_secs(3)
            };
            let (argv, hook_env) = (sh(&script), env(dir.path()));
            let hook = run(&argv, &hook_env, timeout, &cancel);
            let fire = async {
                if shutdown {
                    // Shut down once both pids are written (the leader's file last).
                    while !leader.exists() {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    cancel.cancel();
                }
                std::future::pending::<()>().await
            };
            let end = tokio::time::timeout(Duration::from_secs(60), async {
                tokio::select! {
                    end = hook => end,
                    () = fire => unreachable!(),
                }
            })
            .await
            .expect("the hook ended within a minute");
            let want = if shutdown {
                HookEnd::Cancelled
            } else {
                HookEnd::TimedOut
            };
            assert_eq!(end, want);
            let (leader, bg) = (
                std::fs::read_to_string(&leader).expect("the hook wrote its pid"),
                std::fs::read_to_string(&bg).expect("the hook wrote its child's pid"),
            );
            for (what, pid) in [("the hook", &leader), ("its background child", &bg)] {
                // SIGKILL is delivered asynchronously: a killed process may still show as
                // running for a moment (seen once under load). A survivor stays running.
                let deadline = std::time::Instant::now() + Duration::from_secs(2);
                while running(pid) && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let alive = running(pid);
                if alive {
                    let _ = std::process::Command::new("kill")
                        .arg("-9")
                        .arg(pid.trim())
                        .status();
                }
                assert!(
                    !alive,
                    "{what} (pid {}) survived (shutdown: {shutdown})",
                    pid.trim()
                );
            }
        }
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
