//! Child processes that never outlive the test: daemons are killed in `Drop`, one-shot
//! commands have a timeout, and every child gets `PR_SET_PDEATHSIG = SIGKILL`, so even a
//! test binary killed from outside (CI timeout, `kill -9`) takes its children with it.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A `Command` for `program` whose process dies with the thread that spawns it.
///
/// The death signal is tied to the spawning *thread*: spawn from the test's own thread.
pub(crate) fn command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(std::io::Error::from)
        });
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// A long-running child, killed (SIGKILL) and reaped on drop.
pub(crate) struct Daemon {
    pub name: String,
    child: Child,
}

impl Daemon {
    /// Spawn `cmd` with stdout and stderr appended to the given files.
    pub(crate) fn spawn(name: &str, mut cmd: Command, stdout: &Path, stderr: &Path) -> std::io::Result<Self> {
        let open = |p: &Path| std::fs::OpenOptions::new().create(true).append(true).open(p);
        cmd.stdout(open(stdout)?).stderr(open(stderr)?);
        let child = cmd.spawn()?;
        Ok(Self {
            name: name.to_string(),
            child,
        })
    }

    /// `Some(status)` once the process has exited.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send `signal` (the process must still run: panics otherwise).
    pub(crate) fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("pid");
        rustix::process::kill_process(pid, signal).expect("send signal");
    }

    /// SIGTERM, then wait up to `timeout` for the exit (`None`: still running).
    pub(crate) fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.signal(rustix::process::Signal::TERM);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGKILL and reap; returns the exit status.
    pub(crate) fn kill(&mut self) -> ExitStatus {
        let _ = self.child.kill();
        self.child.wait().expect("reap child")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// What a finished command printed.
#[derive(Debug)]
pub(crate) struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// The exit code (-1 when killed by a signal).
    pub(crate) fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }

    /// Panic with everything it printed unless it exited 0.
    #[track_caller]
    pub(crate) fn expect_success(self, what: &str) -> Self {
        assert!(
            self.status.success(),
            "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Run `cmd` to completion, capturing its output; kill it and panic after `timeout`.
pub(crate) fn run(mut cmd: Command, timeout: Duration) -> Finished {
    let shown = format!("{cmd:?}");
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {shown}: {e}"));
    let mut out = child.stdout.take().expect("stdout pipe");
    let mut err = child.stderr.take().expect("stderr pipe");
    let out_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
            panic!("{shown} did not finish within {timeout:?}; killed. stderr:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Finished {
        status,
        stdout: String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned(),
        stderr: String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned(),
    }
}
