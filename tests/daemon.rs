//! `edgepull run` as a subprocess against the in-process fake registry: systemd
//! notifications (READY, STATUS, WATCHDOG, RELOADING, STOPPING) on a datagram socket the
//! test binds, signals, status.json, hooks, rollback versions, garbage collection, the
//! request cost of an unchanged tag, and the disk budget.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use edgepull_core::oci::{Digest, Platform};
use edgepull_testkit::{AuthMode, FakeOptions, FakeRegistry, ServerName, random_bytes};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_edgepull");

struct Harness {
    fake: FakeRegistry,
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Harness {
    /// A fake registry, a config for it following `app:stable` every second, and `edit`.
    fn new(edit: impl FnOnce(&mut Value, &Path)) -> Self {
        let fake = FakeRegistry::start_blocking(FakeOptions {
            auth: AuthMode::Token {
                user: "device-42".into(),
                pass: "s3cret-device-password".into(),
            },
            ..Default::default()
        });
        let dir = tempfile::tempdir().expect("temp dir");
        let config = fake.write_client_files(dir.path());
        let mut v: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
        v["images"] = json!([{ "ref": "app:stable", "interval_secs": 1 }]);
        v["sync"] = json!({ "jitter": 0.0, "backoff_max_secs": 2 });
        v["store"]["min_free_bytes"] = json!(0);
        edit(&mut v, dir.path());
        std::fs::write(&config, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
        Self { fake, dir, config }
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn name(&self, tag: &str) -> String {
        format!("{}/app:{tag}", self.fake.login_host())
    }

    /// Push a single-arch image with `layers` under `tag`; its manifest digest and blobs.
    fn push(&self, tag: &str, layers: Vec<Vec<u8>>) -> (Digest, Vec<Digest>) {
        let (d, blobs) =
            self.fake
                .push_image_for("app", tag, &Platform::parse("linux/arm64").unwrap(), layers);
        (d, blobs.iter().map(|b| b.digest).collect())
    }

    fn start(&self) -> Daemon {
        let notify_path = self.dir.path().join(format!("notify-{}", rand::random::<u32>()));
        let socket = UnixDatagram::bind(&notify_path).expect("bind notify socket");
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let messages: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let messages = messages.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 8192];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = socket.recv(&mut buf) {
                        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                        messages.lock().unwrap().push((Instant::now(), msg));
                    }
                }
            })
        };
        let log = self.dir.path().join("daemon.log");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&self.config)
            .args(["--log-format", "text"])
            .env("NOTIFY_SOCKET", &notify_path)
            .env("WATCHDOG_USEC", "400000")
            .env_remove("WATCHDOG_PID")
            .env("EDGEPULL_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start edgepull run");
        Daemon {
            child,
            messages,
            stop,
            reader: Some(reader),
            log,
        }
    }

    fn status(&self) -> Option<Value> {
        let bytes = std::fs::read(self.store().join("status.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The first image's entry in status.json.
    fn image_status(&self) -> Value {
        self.status()
            .map(|s| s["images"][0].clone())
            .unwrap_or(Value::Null)
    }

    fn current(&self) -> Option<String> {
        self.image_status()["current_digest"].as_str().map(str::to_string)
    }

    fn blob_exists(&self, d: &Digest) -> bool {
        self.store().join("oci/blobs/sha256").join(d.hex()).exists()
    }

    fn index(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.store().join("oci/index.json")).unwrap()).unwrap()
    }

    fn cli(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .expect("run edgepull");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    }
}

struct Daemon {
    child: Child,
    messages: Arc<Mutex<Vec<(Instant, String)>>>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
    log: PathBuf,
}

impl Daemon {
    fn pid(&self) -> rustix::process::Pid {
        rustix::process::Pid::from_raw(self.child.id() as i32).expect("pid")
    }

    fn signal(&self, sig: rustix::process::Signal) {
        rustix::process::kill_process(self.pid(), sig).expect("send signal");
    }

    fn messages(&self) -> Vec<(Instant, String)> {
        self.messages.lock().unwrap().clone()
    }

    fn count(&self, msg: &str) -> usize {
        self.messages().iter().filter(|(_, m)| m == msg).count()
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait for `cond`, failing with the daemon's log after `timeout`.
    #[track_caller]
    fn wait(&self, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if cond() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "timed out after {timeout:?} waiting for {what}\n--- daemon log ---\n{}",
            self.logs()
        );
    }

    /// SIGTERM and the exit status, which must come within 5 s.
    fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal(rustix::process::Signal::TERM);
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "no exit within 5 s of SIGTERM\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stop.store(true, Ordering::Relaxed);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

#[test]
fn notifies_ready_status_watchdog_and_stops_on_sigterm() {
    let h = Harness::new(|_, _| {});
    let (v1, _) = h.push("stable", vec![random_bytes(2000)]);
    let mut d = h.start();
    d.wait("READY=1", Duration::from_secs(10), || d.count("READY=1") == 1);
    let ready_at = d.messages().iter().find(|(_, m)| m == "READY=1").unwrap().0;
    d.wait("the first pull", Duration::from_secs(10), || {
        h.current() == Some(v1.to_string())
    });
    // WATCHDOG_USEC=400000: a ping every 200 ms from the working loop.
    d.wait("watchdog pings", Duration::from_secs(5), || {
        d.messages()
            .iter()
            .filter(|(t, m)| m == "WATCHDOG=1" && *t > ready_at)
            .count()
            >= 4
    });
    let msgs = d.messages();
    let status: Vec<&String> = msgs
        .iter()
        .map(|(_, m)| m)
        .filter(|m| m.starts_with("STATUS="))
        .collect();
    assert!(
        status
            .iter()
            .any(|m| m.starts_with("STATUS=1 image(s): ") && m.contains("idle")),
        "{status:?}"
    );
    assert!(!msgs.iter().any(|(_, m)| m.starts_with("STOPPING")));
    let exit = d.terminate();
    assert!(exit.success(), "exit status {exit:?}\n{}", d.logs());
    d.wait("STOPPING=1", Duration::from_secs(2), || {
        d.count("STOPPING=1") == 1
    });
    let last_state = h.image_status()["state"].clone();
    assert_eq!(last_state, "idle");
}

#[test]
fn moved_tag_is_pulled_hook_runs_previous_kept_and_old_blobs_collected() {
    let h = Harness::new(|v, dir| {
        let script = dir.join("hook.sh");
        let out = dir.join("hook.log");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nenv | grep -E '^EDGEPULL_(REF|DIGEST|PREVIOUS_DIGEST|LAYOUT)=' | sort >> '{}'\necho --- >> '{}'\nexit 3\n",
                out.display(),
                out.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        v["hooks"] = json!({ "on_update": [script], "timeout_secs": 5 });
        v["store"]["keep_previous"] = json!(1);
        v["metrics"] = json!({ "textfile": dir.join("edgepull.prom") });
    });
    let base = random_bytes(3000);
    let (v1, b1) = h.push("stable", vec![base.clone(), random_bytes(1000)]);
    let d = h.start();
    d.wait("v1 current", Duration::from_secs(10), || {
        h.current() == Some(v1.to_string())
    });

    let (v2, b2) = h.push("v2", vec![base.clone(), random_bytes(1001)]);
    let moved = Instant::now();
    h.fake.move_tag("app", "stable", v2);
    d.wait("v2 current", Duration::from_secs(5), || {
        h.current() == Some(v2.to_string())
    });
    assert!(
        moved.elapsed() < Duration::from_secs(3),
        "pulled within one interval: {:?}",
        moved.elapsed()
    );
    let st = h.image_status();
    assert_eq!(st["previous_digest"], v1.to_string());
    assert_eq!(st["state"], "idle");
    assert!(st["last_success"]["unix"].as_u64().unwrap() > 0);
    d.wait("hook recorded", Duration::from_secs(5), || {
        h.image_status()["last_hook"]["digest"] == v2.to_string()
    });
    assert_eq!(h.image_status()["last_hook"]["exit_code"], 3);
    assert_eq!(h.image_status()["last_hook"]["ok"], false);

    let hook_log = std::fs::read_to_string(h.dir.path().join("hook.log")).unwrap();
    let runs: Vec<&str> = hook_log.split("---\n").filter(|s| !s.is_empty()).collect();
    assert_eq!(runs.len(), 2, "{hook_log}");
    let layout = h.store().join("oci");
    assert_eq!(
        runs[1],
        format!(
            "EDGEPULL_DIGEST={v2}\nEDGEPULL_LAYOUT={}\nEDGEPULL_PREVIOUS_DIGEST={v1}\nEDGEPULL_REF={}\n",
            layout.display(),
            h.name("stable")
        )
    );
    assert!(runs[0].contains("EDGEPULL_PREVIOUS_DIGEST=\n"), "{}", runs[0]);
    // A failing hook loses nothing.
    for b in &b2 {
        assert!(h.blob_exists(b));
    }

    let (v3, b3) = h.push("v3", vec![base.clone(), random_bytes(1002)]);
    h.fake.move_tag("app", "stable", v3);
    d.wait("v3 current", Duration::from_secs(5), || {
        h.current() == Some(v3.to_string())
    });
    assert_eq!(h.image_status()["previous_digest"], v2.to_string());
    // keep_previous 1: v2 is kept, v1's own blobs and manifest are collected, the shared
    // base layer stays.
    for b in b3.iter().chain(&b2).chain([&v3, &v2]) {
        assert!(h.blob_exists(b), "{b} collected");
    }
    assert!(!h.blob_exists(&v1), "v1 manifest kept");
    assert!(!h.blob_exists(&b1[2]), "v1 layer kept");
    assert!(!h.blob_exists(&b1[0]), "v1 config kept");
    let index = h.index();
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{index}");
    assert_eq!(entries[0]["digest"], v3.to_string());
    assert_eq!(
        entries[0]["annotations"]["org.opencontainers.image.ref.name"],
        h.name("stable")
    );
    assert_eq!(entries[1]["digest"], v2.to_string());
    assert_eq!(
        entries[1]["annotations"]["io.edgepull.previous-of"],
        h.name("stable")
    );
    assert_eq!(entries[1]["annotations"]["io.edgepull.previous-rank"], "1");

    // edgepull status, for humans and as JSON, while the daemon runs (no store lock needed).
    let (ok, text) = h.cli(&["status"]);
    assert!(ok, "{text}");
    assert!(text.contains(&h.name("stable")), "{text}");
    assert!(text.contains(&format!("current:   {v3}")), "{text}");
    assert!(text.contains(&format!("previous:  {v2}")), "{text}");
    assert!(text.contains("last hook: exit 3"), "{text}");
    let (ok, json) = h.cli(&["status", "--json"]);
    assert!(ok, "{json}");
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["images"][0]["current_digest"], v3.to_string());

    let prom = std::fs::read_to_string(h.dir.path().join("edgepull.prom")).unwrap();
    let label = format!("{{image=\"{}\"}}", h.name("stable"));
    assert!(
        prom.contains(&format!("edgepull_pulls_ok_total{label} 3")),
        "{prom}"
    );
    assert!(prom.contains("edgepull_egress_refusals_total 0"), "{prom}");
    assert!(
        prom.contains(&format!("edgepull_last_success_timestamp_seconds{label} ")),
        "{prom}"
    );
}

#[test]
fn an_unchanged_tag_costs_exactly_one_head_per_poll() {
    let h = Harness::new(|_, _| {});
    let (v1, _) = h.push("stable", vec![random_bytes(5000)]);
    let d = h.start();
    d.wait("v1 current", Duration::from_secs(10), || {
        h.current() == Some(v1.to_string())
    });
    d.wait("a second, unchanged check", Duration::from_secs(5), || {
        h.image_status()["checks"].as_u64() >= Some(2)
    });
    let checks_before = h.image_status()["checks"].as_u64().unwrap();
    h.fake.clear_log();
    std::thread::sleep(Duration::from_millis(3300));
    let checks_after = h.image_status()["checks"].as_u64().unwrap();
    let requests = h.fake.requests();
    let polls = checks_after - checks_before;
    assert!(polls >= 2, "{polls} polls in 3.3 s with a 1 s interval");
    for r in &requests {
        assert_eq!(
            (r.server, r.method.as_str(), r.path.as_str()),
            (ServerName::Login, "HEAD", "/v2/app/manifests/stable"),
            "only manifest HEADs for an unchanged tag: {requests:?}"
        );
    }
    // One HEAD per poll (a poll may straddle either end of the window).
    let heads = requests.len() as u64;
    assert!(
        heads.abs_diff(polls) <= 1,
        "{heads} HEADs for {polls} polls: {requests:?}"
    );
    assert_eq!(h.fake.connections(ServerName::EastUs), 0);
}

#[test]
fn sigusr1_syncs_now_and_sighup_with_a_bad_config_keeps_running() {
    let h = Harness::new(|v, _| v["images"] = json!([{ "ref": "app:stable", "interval_secs": 3600 }]));
    let (v1, _) = h.push("stable", vec![random_bytes(1500)]);
    let mut d = h.start();
    d.wait("v1 current", Duration::from_secs(10), || {
        h.current() == Some(v1.to_string())
    });

    let (v2, _) = h.push("v2", vec![random_bytes(1501)]);
    h.fake.move_tag("app", "stable", v2);
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(
        h.current(),
        Some(v1.to_string()),
        "no check before the hour is up"
    );
    d.signal(rustix::process::Signal::USR1);
    d.wait("v2 after SIGUSR1", Duration::from_secs(5), || {
        h.current() == Some(v2.to_string())
    });

    // An invalid config is refused; the daemon keeps running with the old one.
    let good = std::fs::read(&h.config).unwrap();
    std::fs::write(&h.config, b"{ \"registry\": { \"login_server\": ").unwrap();
    let before = d.messages().len();
    d.signal(rustix::process::Signal::HUP);
    d.wait("RELOADING then READY", Duration::from_secs(5), || {
        let msgs = d.messages();
        let after = &msgs[before..];
        let reloading = after
            .iter()
            .position(|(_, m)| m.starts_with("RELOADING=1\nMONOTONIC_USEC="));
        let ready = after.iter().rposition(|(_, m)| m == "READY=1");
        matches!((reloading, ready), (Some(a), Some(b)) if a < b)
    });
    assert!(d.alive(), "daemon died on a bad reload\n{}", d.logs());
    assert!(d.logs().contains("config reload refused"), "{}", d.logs());
    let (v3, _) = h.push("v3", vec![random_bytes(1502)]);
    h.fake.move_tag("app", "stable", v3);
    d.signal(rustix::process::Signal::USR1);
    d.wait("v3 after SIGUSR1", Duration::from_secs(5), || {
        h.current() == Some(v3.to_string())
    });

    // A valid reload applies: a second image appears and is pulled.
    let (w1, _) = h.push("other", vec![random_bytes(700)]);
    let mut v: Value = serde_json::from_slice(&good).unwrap();
    v["images"] = json!([
        { "ref": "app:stable", "interval_secs": 3600 },
        { "ref": "app:other", "interval_secs": 3600 }
    ]);
    std::fs::write(&h.config, serde_json::to_vec(&v).unwrap()).unwrap();
    d.signal(rustix::process::Signal::HUP);
    d.wait("second image pulled after reload", Duration::from_secs(5), || {
        h.status()
            .is_some_and(|s| s["images"][1]["current_digest"] == w1.to_string())
    });
    assert!(d.terminate().success());
}

/// Whether `pid` has a handler for SIGHUP (its `SigCgt` mask in /proc).
fn catches_sighup(pid: rustix::process::Pid) -> bool {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", pid.as_raw_nonzero())).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (rustix::process::Signal::HUP.as_raw() - 1)) != 0)
}

#[test]
fn a_sighup_during_start_up_does_not_kill_it_and_reloads_after_ready() {
    let h = Harness::new(|v, _| v["store"]["lock_wait_secs"] = json!(30));
    let (v1, _) = h.push("stable", vec![random_bytes(800)]);
    // This process holds the store lock: the daemon's start-up waits for it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let lock = rt
        .block_on(edgepull::store::Store::open(&h.store(), Duration::from_secs(5)))
        .unwrap();
    let mut d = h.start();
    d.wait("the signal handlers", Duration::from_secs(10), || {
        catches_sighup(d.pid())
    });
    d.signal(rustix::process::Signal::HUP);
    std::thread::sleep(Duration::from_millis(300));
    assert!(d.alive(), "killed by an early SIGHUP\n{}", d.logs());
    assert_eq!(d.count("READY=1"), 0, "ready while the store was locked");
    drop(lock);
    d.wait("READY, then the reload", Duration::from_secs(10), || {
        let msgs: Vec<String> = d.messages().into_iter().map(|(_, m)| m).collect();
        let ready = msgs.iter().position(|m| m == "READY=1");
        let reloading = msgs.iter().position(|m| m.starts_with("RELOADING=1"));
        let ready_again = msgs.iter().rposition(|m| m == "READY=1");
        matches!((ready, reloading, ready_again), (Some(a), Some(b), Some(c)) if a < b && b < c)
    });
    d.wait("v1 current", Duration::from_secs(10), || {
        h.current() == Some(v1.to_string())
    });
    assert!(d.terminate().success());
}

#[test]
fn a_download_that_does_not_fit_the_disk_budget_is_deferred() {
    let h = Harness::new(|v, _| v["store"]["min_free_bytes"] = json!(1u64 << 60));
    let (_, blobs) = h.push("stable", vec![random_bytes(4000)]);
    let d = h.start();
    d.wait("deferred", Duration::from_secs(10), || {
        h.image_status()["state"] == "deferred"
    });
    let st = h.image_status();
    let msg = st["message"].as_str().unwrap();
    assert!(
        msg.contains("store.min_free_bytes") && msg.contains("free"),
        "{msg}"
    );
    assert_eq!(st["current_digest"], Value::Null);
    // Nothing was downloaded: no blob request, no blob, no index entry.
    assert!(
        !h.fake.requests().iter().any(|r| r.path.contains("/blobs/")),
        "{:?}",
        h.fake.requests()
    );
    assert_eq!(h.fake.connections(ServerName::EastUs), 0);
    assert!(blobs.iter().all(|b| !h.blob_exists(b)));
    assert_eq!(h.index()["manifests"], json!([]));
    let (ok, text) = h.cli(&["status"]);
    assert!(ok && text.contains("state:     deferred: needs"), "{text}");
}

#[test]
fn start_up_repairs_a_blob_of_the_wrong_size_before_ready() {
    let h = Harness::new(|_, _| {});
    let (v1, blobs) = h.push("stable", vec![random_bytes(6000)]);
    let mut d = h.start();
    d.wait("v1 current", Duration::from_secs(10), || {
        h.current() == Some(v1.to_string())
    });
    assert!(d.terminate().success());
    drop(d);
    // A torn layer (as after a disk problem) and a stale index.json temp file.
    let layer = h.store().join("oci/blobs/sha256").join(blobs[1].hex());
    std::fs::remove_file(&layer).unwrap();
    std::fs::write(&layer, b"torn").unwrap();
    std::fs::write(h.store().join("oci/index.json.tmp"), b"{\"half").unwrap();
    h.fake.clear_log();

    let d = h.start();
    d.wait("READY=1", Duration::from_secs(10), || d.count("READY=1") == 1);
    d.wait("layer fetched again", Duration::from_secs(10), || {
        std::fs::metadata(&layer).is_ok_and(|m| m.len() == 6000)
    });
    assert!(!h.store().join("oci/index.json.tmp").exists());
    let fetched: Vec<String> = h
        .fake
        .requests_to(ServerName::Login)
        .into_iter()
        .filter(|r| r.path.contains("/blobs/"))
        .map(|r| r.path)
        .collect();
    assert_eq!(
        fetched,
        vec![format!("/v2/app/blobs/{}", blobs[1])],
        "only the torn blob"
    );
    assert!(d.logs().contains("start-up repair"), "{}", d.logs());
}

#[test]
fn sigterm_during_a_download_checkpoints_and_the_next_start_resumes() {
    let h = Harness::new(|_, _| {});
    let (v1, blobs) = h.push("stable", vec![random_bytes(1 << 20)]);
    h.fake.set_rate_limit(Some(256 * 1024));
    let mut d = h.start();
    d.wait("downloading", Duration::from_secs(10), || {
        let st = h.image_status();
        st["state"] == "downloading" && st["bytes_done"].as_u64() > Some(100_000)
    });
    let exit = d.terminate();
    assert!(exit.success(), "{exit:?}\n{}", d.logs());
    drop(d);
    let checkpoint_file = h
        .store()
        .join("ingest")
        .join(format!("sha256-{}", blobs[1].hex()))
        .join("checkpoint");
    let checkpoint: u64 = std::fs::read_to_string(&checkpoint_file)
        .expect("the partial download is kept")
        .trim()
        .parse()
        .unwrap();
    assert!(
        checkpoint > 100_000 && checkpoint < 1 << 20,
        "checkpoint {checkpoint}"
    );

    h.fake.set_rate_limit(None);
    h.fake.clear_log();
    let d = h.start();
    d.wait("v1 current", Duration::from_secs(10), || {
        h.current() == Some(v1.to_string())
    });
    let ranges: Vec<String> = h
        .fake
        .requests_to(ServerName::EastUs)
        .into_iter()
        .filter_map(|r| r.range)
        .collect();
    assert_eq!(ranges, vec![format!("bytes={checkpoint}-")]);
    assert!(d.logs().contains("resuming"), "{}", d.logs());
}

#[path = "common/signing.rs"]
mod signing;

#[test]
fn an_unsigned_update_is_refused_the_current_version_stays_and_the_digest_is_not_retried() {
    let key = signing::Signer::new();
    let h = Harness::new(|v, dir| {
        let path = key.write_public(dir, "release.pub");
        v["signatures"] = json!({ "public_keys": [path] });
    });
    let identity = format!("{}/app", h.fake.login_host());
    let sign = |d: &Digest| {
        let p = signing::payload(&identity, d);
        signing::push_signatures(&h.fake, "app", d, &[(p.clone(), key.sign(&p))]);
    };
    let (v1, _) = h.push("stable", vec![random_bytes(1500)]);
    sign(&v1);
    let mut d = h.start();
    d.wait("signed v1 current", Duration::from_secs(10), || {
        h.current() == Some(v1.to_string())
    });

    // The tag moves to an unsigned digest: refused, v1 stays current everywhere.
    let (v2, v2_blobs) = h.push("v2", vec![random_bytes(1501)]);
    h.fake.move_tag("app", "stable", v2);
    d.wait(
        "signature: missing in status.json",
        Duration::from_secs(10),
        || h.image_status()["signature"] == "missing",
    );
    let s = h.image_status();
    assert_eq!(s["state"], "error", "{s}");
    assert_eq!(s["current_digest"], v1.to_string(), "{s}");
    assert!(
        s["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("signature missing"),
        "{s}"
    );
    assert!(h.index().to_string().contains(&v1.to_string()));
    assert!(
        !h.index().to_string().contains(&v2.to_string()),
        "nothing unsigned in index.json"
    );
    assert!(
        v2_blobs.iter().all(|b| !h.blob_exists(b)),
        "no blob of the refused image"
    );

    // Polls go on (one HEAD each) but the refused digest is not fetched or verified again.
    let checks = h.image_status()["checks"].as_u64().unwrap();
    h.fake.clear_log();
    d.wait("two more polls", Duration::from_secs(10), || {
        h.image_status()["checks"].as_u64() >= Some(checks + 2)
    });
    let requests = h.fake.requests();
    for r in &requests {
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("HEAD", "/v2/app/manifests/stable"),
            "only HEADs while the tag still points at the refused digest: {requests:?}"
        );
    }
    assert_eq!(h.image_status()["signature"], "missing");

    // The tag moves to a signed digest: adopted, the refusal cleared.
    let (v3, _) = h.push("v3", vec![random_bytes(1502)]);
    sign(&v3);
    h.fake.move_tag("app", "stable", v3);
    d.wait("signed v3 current", Duration::from_secs(10), || {
        h.current() == Some(v3.to_string())
    });
    assert!(
        h.image_status().get("signature").is_none(),
        "{}",
        h.image_status()
    );
    assert!(d.terminate().success());
}
