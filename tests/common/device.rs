//! `edgepull run` as a subprocess on its own store, for the end-to-end daemon tests
//! (staged rollouts, health checks): start, SIGKILL, signals, and what it wrote
//! (`status.json`, `rollout.json`, blobs), with its log shown when a test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use edgepull_core::oci::Digest;
use edgepull_testkit::{AuthMode, FakeOptions, FakeRegistry};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_edgepull");

/// A fake registry with the Docker token flow, as devices meet ACR.
pub(crate) fn token_registry() -> FakeRegistry {
    FakeRegistry::start_blocking(FakeOptions {
        auth: AuthMode::Token {
            user: "device".into(),
            pass: "device-password".into(),
        },
        ..Default::default()
    })
}

pub(crate) struct Device {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) config: PathBuf,
    child: Option<Child>,
}

impl Device {
    /// A device following `app:stable` every second, its config changed by `patch` (given
    /// the device's directory), started.
    pub(crate) fn new(fake: &FakeRegistry, patch: impl FnOnce(&mut Value, &Path)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = fake.write_client_files(dir.path());
        let mut v: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
        v["images"] = json!([{ "ref": "app:stable", "interval_secs": 1 }]);
        v["sync"] = json!({ "jitter": 0.0, "backoff_max_secs": 2 });
        v["store"]["min_free_bytes"] = json!(0);
        patch(&mut v, dir.path());
        std::fs::write(&config, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
        let mut d = Self {
            dir,
            config,
            child: None,
        };
        d.start();
        d
    }

    pub(crate) fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub(crate) fn log(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }

    pub(crate) fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .unwrap();
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&self.config)
            .args(["--log-format", "text"])
            .env_remove("NOTIFY_SOCKET")
            .env("EDGEPULL_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start edgepull run");
        self.child = Some(child);
    }

    /// SIGKILL: no chance to write anything more.
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub(crate) fn signal(&self, sig: rustix::process::Signal) {
        let pid = self.child.as_ref().unwrap().id() as i32;
        rustix::process::kill_process(rustix::process::Pid::from_raw(pid).unwrap(), sig).unwrap();
    }

    /// Whether the running process wrote `status.json` (it is ready, its signal handlers
    /// installed).
    pub(crate) fn ready(&self) -> bool {
        let pid = self.child.as_ref().map(|c| u64::from(c.id()));
        std::fs::read(self.store().join("status.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some_and(|s| s["pid"].as_u64() == pid)
    }

    pub(crate) fn image(&self) -> Value {
        std::fs::read(self.store().join("status.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .map_or(Value::Null, |s| s["images"][0].clone())
    }

    pub(crate) fn current(&self) -> Option<String> {
        self.image()["current_digest"].as_str().map(str::to_string)
    }

    pub(crate) fn pending(&self) -> Option<(String, u64)> {
        let i = self.image();
        Some((
            i["pending_digest"].as_str()?.to_string(),
            i["adopt_at"]["unix"].as_u64()?,
        ))
    }

    /// `first_seen` of the pending digest in `rollout.json`.
    pub(crate) fn first_seen(&self) -> Option<(String, u64)> {
        let v: Value =
            serde_json::from_slice(&std::fs::read(self.store().join("rollout.json")).ok()?).ok()?;
        let (_, e) = v["pending"].as_object()?.iter().next()?;
        Some((e["digest"].as_str()?.to_string(), e["first_seen"].as_u64()?))
    }

    pub(crate) fn has_blob(&self, d: &Digest) -> bool {
        self.store().join("oci/blobs/sha256").join(d.hex()).exists()
    }

    #[track_caller]
    pub(crate) fn fail(&self, what: &str) -> ! {
        panic!(
            "{what}\n--- daemon log ---\n{}",
            std::fs::read_to_string(self.log()).unwrap_or_default()
        );
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.kill();
    }
}
