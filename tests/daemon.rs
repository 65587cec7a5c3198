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
        self.start_with(Start::default())
    }

    fn start_with(&self, opts: Start) -> Daemon {
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
        let stdout = match &opts.stdout {
            Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
            None => Stdio::null(),
        };
        // `umask N; exec edgepull …` through the shell: the daemon starts with that umask.
        let mut cmd = match opts.umask {
            Some(mask) => {
                let mut c = Command::new("/bin/sh");
                c.arg("-c")
                    .arg(format!("umask {mask:03o}; exec \"$0\" \"$@\""))
                    .arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        cmd.args(["run", "--config"])
            .arg(&self.config)
            .args(["--log-format", "text"])
            .env("NOTIFY_SOCKET", &notify_path)
            .env("WATCHDOG_USEC", "400000")
            .env_remove("WATCHDOG_PID")
            .env("EDGEPULL_LOG", "info")
            // Absent unless a test creates it: see `watchdog_pings_stop_while_…`.
            .env("EDGEPULL_TEST_HANG_FILE", self.dir.path().join("hang"))
            .envs(opts.env)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let child = cmd.spawn().expect("start edgepull run");
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

/// How [`Harness::start_with`] starts the daemon.
#[derive(Default)]
struct Start {
    /// Extra environment variables.
    env: Vec<(String, String)>,
    /// The umask the daemon starts with (else the test's).
    umask: Option<u32>,
    /// Where the daemon's stdout (and a hook's) goes (else nowhere).
    stdout: Option<PathBuf>,
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

    // The textfile is written just after status.json: wait for the third pull in it.
    let label = format!("{{image=\"{}\"}}", h.name("stable"));
    let prom_path = h.dir.path().join("edgepull.prom");
    d.wait(
        "three pulls in the metrics textfile",
        Duration::from_secs(5),
        || {
            std::fs::read_to_string(&prom_path)
                .is_ok_and(|t| t.contains(&format!("edgepull_pulls_ok_total{label} 3")))
        },
    );
    let prom = std::fs::read_to_string(&prom_path).unwrap();
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

/// A hook that prints its environment (`/usr/bin/env -0`, no shell that would add its
/// own variables) gets the `EDGEPULL_*` variables, `PATH` and `LANG`, and nothing of the
/// daemon's: no credentials directory, no notify socket, no watchdog, no secret.
#[test]
fn the_hook_gets_only_its_own_variables() {
    let h = Harness::new(|v, _| {
        v["hooks"] = json!({ "on_update": ["/usr/bin/env", "-0"], "timeout_secs": 5 });
    });
    let (v1, _) = h.push("stable", vec![random_bytes(900)]);
    let out = h.dir.path().join("hook-env");
    let secrets = [
        ("CREDENTIALS_DIRECTORY", "/run/credentials/edgepull.service"),
        ("EDGEPULL_PASSWORD", "hunter2-daemon-secret"),
        ("EDGEPULL_REGISTRY_TOKEN", "token-daemon-secret"),
        ("INVOCATION_ID", "0123456789abcdef"),
        ("JOURNAL_STREAM", "8:1234"),
    ];
    let mut env: Vec<(String, String)> = secrets
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.push(("PATH".into(), "/usr/bin:/bin".into()));
    env.push(("LANG".into(), "C.UTF-8".into()));
    let mut d = h.start_with(Start {
        env,
        stdout: Some(out.clone()),
        ..Start::default()
    });
    d.wait("the hook recorded", Duration::from_secs(10), || {
        h.image_status()["last_hook"]["digest"] == v1.to_string()
    });
    assert_eq!(h.image_status()["last_hook"]["exit_code"], 0);
    assert!(d.terminate().success());
    let dumped = std::fs::read(&out).unwrap();
    let mut got: Vec<String> = dumped
        .split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    got.sort();
    let mut want = vec![
        format!("EDGEPULL_DIGEST={v1}"),
        format!("EDGEPULL_LAYOUT={}", h.store().join("oci").display()),
        "EDGEPULL_PREVIOUS_DIGEST=".to_string(),
        format!("EDGEPULL_REF={}", h.name("stable")),
        "LANG=C.UTF-8".to_string(),
        "PATH=/usr/bin:/bin".to_string(),
    ];
    want.sort();
    assert_eq!(got, want);
    let text = String::from_utf8_lossy(&dumped);
    for (name, value) in secrets {
        assert!(!text.contains(value), "{name}'s value reached the hook: {text}");
    }
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

/// A hook past `hooks.timeout_secs` dies with every process it started (its process
/// group), not only the direct child.
#[test]
fn a_hook_past_its_timeout_dies_with_its_background_processes() {
    let h = Harness::new(|v, dir| {
        let script = format!(
            "sleep 1000 & echo $! > {bg}; echo $$ > {leader}; sleep 1000",
            bg = dir.join("bg").display(),
            leader = dir.join("leader").display()
        );
        v["hooks"] = json!({ "on_update": ["/bin/sh", "-c", script], "timeout_secs": 1 });
    });
    let (v1, _) = h.push("stable", vec![random_bytes(900)]);
    let mut d = h.start();
    d.wait("the hook timed out", Duration::from_secs(15), || {
        h.image_status()["last_hook"]["timed_out"] == true
    });
    assert_eq!(h.current(), Some(v1.to_string()), "a failed hook undoes nothing");
    for name in ["leader", "bg"] {
        let pid = std::fs::read_to_string(h.dir.path().join(name)).expect("pid written");
        let alive = running(&pid);
        if alive {
            let _ = Command::new("kill").arg("-9").arg(pid.trim()).status();
        }
        assert!(
            !alive,
            "the hook's {name} process (pid {}) survived its timeout",
            pid.trim()
        );
    }
    assert!(d.terminate().success());
}

/// `WATCHDOG=1` times from `after` on.
fn pings(d: &Daemon, after: Instant) -> Vec<Instant> {
    d.messages()
        .into_iter()
        .filter(|(t, m)| m == "WATCHDOG=1" && *t >= after)
        .map(|(t, _)| t)
        .collect()
}

/// The longest time without a ping in `[from, to]`.
fn longest_gap(d: &Daemon, from: Instant, to: Instant) -> Duration {
    let mut last = from;
    let mut gap = Duration::ZERO;
    for t in pings(d, from).into_iter().filter(|t| *t <= to).chain([to]) {
        gap = gap.max(t - last);
        last = t;
    }
    gap
}

/// A sync job stuck in a blocking call (here: its first store step, held by the debug
/// build's test seam as a hung disk would hold it) stops the watchdog pings
/// within two intervals although the supervisor loop keeps turning; once the call
/// returns, the pings resume.
#[test]
fn watchdog_pings_stop_while_a_job_is_stuck_in_a_blocking_call() {
    let h = Harness::new(|_, _| {});
    let (v1, _) = h.push("stable", vec![random_bytes(1200)]);
    let mut d = h.start();
    d.wait("v1 current", Duration::from_secs(10), || {
        h.current() == Some(v1.to_string())
    });
    // A debug build's job blocks in its first store step while this file exists (a hung
    // disk; see `hang_while_test_file_exists` in src/daemon/job.rs).
    let hang = h.dir.path().join("hang");
    std::fs::write(&hang, b"").unwrap();
    let stalled = Instant::now();
    // The next check (interval 1 s) starts and blocks in `open(index.json)`.
    d.wait("the next check", Duration::from_secs(5), || {
        d.messages()
            .iter()
            .any(|(t, m)| *t > stalled && m == "STATUS=1 image(s): 1 checking")
    });
    let checking = Instant::now();
    // WATCHDOG_USEC=400000: one interval is 200 ms.
    std::thread::sleep(Duration::from_millis(2500));
    let late: Vec<Duration> = pings(&d, checking + Duration::from_millis(500))
        .into_iter()
        .map(|t| t - checking)
        .collect();
    assert!(
        late.is_empty(),
        "pings went on while the job was stuck: {late:?}\n{}",
        d.logs()
    );
    assert!(d.alive(), "{}", d.logs());
    assert!(d.logs().contains("withholding the watchdog ping"), "{}", d.logs());

    // The blocking call returns.
    std::fs::remove_file(&hang).unwrap();
    let released = Instant::now();
    d.wait("pings again", Duration::from_secs(5), || {
        pings(&d, released).len() >= 3
    });
    assert!(d.terminate().success());
}

/// A server that stalls is the HTTP client's business (`timeouts.idle_read_secs`, then a
/// ranged retry), never the watchdog's: the pings go on through every stall (each one
/// longer than ten watchdog intervals), and through the slow download that follows, so
/// a stalling server cannot put the daemon into a restart loop.
#[test]
fn watchdog_pings_go_on_through_a_stalled_server_and_a_slow_download() {
    let h = Harness::new(|v, _| {
        v["images"] = json!([{ "ref": "app:stable", "interval_secs": 3600 }]);
        v["timeouts"] = json!({ "connect_secs": 2, "idle_read_secs": 3 });
    });
    let (v1, _) = h.push("stable", vec![random_bytes(400_000)]);
    // One byte a second: a first chunk, then silence until the read times out.
    h.fake.set_rate_limit(Some(1));
    let mut d = h.start();
    d.wait("downloading", Duration::from_secs(10), || {
        h.image_status()["state"] == "downloading"
    });
    let stalling = Instant::now();
    d.wait(
        "two stalls answered by ranged retries",
        Duration::from_secs(20),
        || {
            h.fake
                .requests_to(ServerName::EastUs)
                .iter()
                .filter(|r| r.range.is_some())
                .count()
                >= 2
        },
    );
    let slow = Instant::now();
    assert!(slow - stalling >= Duration::from_secs(5), "{:?}", slow - stalling);
    // Now a slow but steady download: 100 kB/s, about 4 s.
    h.fake.set_rate_limit(Some(100_000));
    d.wait("v1 current", Duration::from_secs(30), || {
        h.current() == Some(v1.to_string())
    });
    let done = Instant::now();
    let gap = longest_gap(&d, stalling, done);
    assert!(
        gap < Duration::from_millis(1500),
        "no ping for {gap:?} during the download\n{}",
        d.logs()
    );
    assert!(!d.logs().contains("withholding"), "{}", d.logs());
    assert!(d.terminate().success());
}

/// The mode of `path` (permission bits).
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

/// `status.json` (0640) and the metrics textfile (0644) have their modes whatever the
/// umask, and a symlink planted at the temp names an older edgepull used never makes
/// the daemon write through it.
#[test]
fn status_and_metrics_files_keep_their_modes_and_ignore_planted_symlinks() {
    let h = Harness::new(|v, dir| {
        let metrics = dir.join("metrics");
        std::fs::create_dir(&metrics).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&metrics, std::fs::Permissions::from_mode(0o755)).unwrap();
        v["metrics"] = json!({ "textfile": metrics.join("edgepull.prom") });
    });
    let (v1, _) = h.push("stable", vec![random_bytes(700)]);
    let status = h.store().join("status.json");
    let prom = h.dir.path().join("metrics/edgepull.prom");
    let victims = [h.dir.path().join("victim-1"), h.dir.path().join("victim-2")];
    for (i, umask) in [0o000, 0o077].into_iter().enumerate() {
        let mut d = h.start_with(Start {
            umask: Some(umask),
            ..Start::default()
        });
        let pid = d.child.id();
        d.wait("v1 current, written by this run", Duration::from_secs(10), || {
            h.status()
                .is_some_and(|s| s["pid"] == pid && s["images"][0]["current_digest"] == v1.to_string())
        });
        d.wait("the metrics textfile", Duration::from_secs(5), || {
            std::fs::read_to_string(&prom).is_ok_and(|t| t.contains("edgepull_pulls_ok_total"))
        });
        let exit = d.terminate();
        assert!(exit.success(), "{exit:?}\n{}", d.logs());
        assert_eq!(mode(&status), 0o640, "status.json under umask {umask:03o}");
        assert_eq!(mode(&prom), 0o644, "the metrics textfile under umask {umask:03o}");
        if i == 0 {
            // The second run must write the textfile anew.
            std::fs::remove_file(&prom).unwrap();
            // Plant symlinks at the old fixed temp names for the second run.
            for (victim, tmp) in victims.iter().zip([
                h.store().join(".status.json.tmp"),
                h.dir.path().join("metrics/.edgepull.prom.tmp"),
            ]) {
                std::fs::write(victim, "precious").unwrap();
                std::os::unix::fs::symlink(victim, tmp).unwrap();
            }
        }
    }
    for victim in &victims {
        assert_eq!(std::fs::read_to_string(victim).unwrap(), "precious");
    }
    assert!(!std::fs::symlink_metadata(&status).unwrap().is_symlink());
    assert!(
        h.status()
            .is_some_and(|s| s["images"][0]["current_digest"] == v1.to_string())
    );
}

/// A metrics directory other users can write (or that another user owns) is refused at
/// start-up with exit 78 and a message naming the directory, its mode and the fix.
#[test]
fn a_metrics_directory_other_users_can_write_is_refused_at_start_up() {
    use std::os::unix::fs::PermissionsExt;
    let h = Harness::new(|v, dir| {
        v["metrics"] = json!({ "textfile": dir.join("metrics/edgepull.prom") });
    });
    let metrics = h.dir.path().join("metrics");
    std::fs::create_dir(&metrics).unwrap();
    std::fs::set_permissions(&metrics, std::fs::Permissions::from_mode(0o777)).unwrap();
    // The daemon must exit by itself; one still running after 10 s is killed (and fails).
    let run = || {
        let mut child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&h.config)
            .env_remove("NOTIFY_SOCKET")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run edgepull");
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait_with_output().expect("edgepull's output")
    };
    let out = run();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    for needle in [
        metrics.display().to_string(),
        "mode 0777".to_string(),
        "metrics.textfile".to_string(),
        "chmod 0755".to_string(),
    ] {
        assert!(stderr.contains(&needle), "{needle:?} not in {stderr}");
    }
    assert!(
        !h.store().join("status.json").exists(),
        "refused before it started"
    );
    // Owned by another user (needs root to arrange): refused as well.
    if rustix::process::geteuid().is_root() {
        std::fs::set_permissions(&metrics, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(&metrics, Some(65534), None).unwrap();
        let out = run();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{stderr}");
        assert!(stderr.contains("owned by uid 65534"), "{stderr}");
    }
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

    // The operator signs v2 with a second key and adds that key: after SIGHUP the refused
    // digest is verified again, at once, and adopted.
    let second = signing::Signer::new();
    let p = signing::payload(&identity, &v2);
    signing::push_signatures(&h.fake, "app", &v2, &[(p.clone(), second.sign(&p))]);
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(&h.config).unwrap()).unwrap();
    let dir = h.config.parent().unwrap();
    let second_key = second.write_public(dir, "second.pub");
    cfg["signatures"]["public_keys"]
        .as_array_mut()
        .unwrap()
        .push(json!(second_key));
    std::fs::write(&h.config, serde_json::to_vec(&cfg).unwrap()).unwrap();
    d.signal(rustix::process::Signal::HUP);
    d.wait("v2 adopted after the new key", Duration::from_secs(10), || {
        h.current() == Some(v2.to_string())
    });
    assert!(h.image_status().get("signature").is_none());

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

/// 2030-01-01T00:00:00Z: the simulated day of the link tests.
const DAY0: i64 = 1_893_456_000;

/// Move the daemon's wall clock (`EDGEPULL_TEST_CLOCK_FILE`, whole seconds) so that it
/// reads `target` now; the instant at which it reads `target + ahead` seconds.
fn set_clock(file: &Path, target: i64, ahead: u64) -> Instant {
    let real = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let offset = target - real.as_secs() as i64;
    std::fs::write(file, offset.to_string()).unwrap();
    // The daemon counts whole seconds: `target + ahead` begins when the real clock next
    // turns over `ahead` times.
    Instant::now() + Duration::from_secs(ahead) - Duration::from_nanos(u64::from(real.subsec_nanos()))
}

fn link_status(h: &Harness) -> Value {
    h.status().map(|s| s["link"].clone()).unwrap_or(Value::Null)
}

fn checkpoint_of(h: &Harness, blob: &Digest) -> Option<u64> {
    let file = h
        .store()
        .join("ingest")
        .join(format!("sha256-{}", blob.hex()))
        .join("checkpoint");
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// The GETs the data endpoint has answered so far.
fn data_gets(h: &Harness) -> Vec<edgepull_testkit::RequestRecord> {
    h.fake
        .requests_to(ServerName::EastUs)
        .into_iter()
        .filter(|r| r.method == "GET")
        .collect()
}

/// Body bytes the data endpoint has sent so far.
fn data_bytes_sent(h: &Harness) -> u64 {
    h.fake
        .requests_to(ServerName::EastUs)
        .iter()
        .map(|r| r.body_bytes_sent)
        .sum()
}

/// `gets` (the data endpoint's GETs after the link opened) resume the partial layer with
/// exactly one `Range: bytes=<checkpoint>-` request, and fetch nothing else of size (the
/// small config blob may still be missing: it was fetched alongside the layer).
#[track_caller]
fn assert_one_resume(gets: &[edgepull_testkit::RequestRecord], checkpoint: u64) {
    let ranged: Vec<_> = gets.iter().filter(|r| r.range.is_some()).collect();
    assert_eq!(ranged.len(), 1, "{gets:?}");
    assert_eq!(ranged[0].range, Some(format!("bytes={checkpoint}-")));
    assert!(
        gets.iter().all(|r| r.range.is_some() || r.body_bytes_sent < 1000),
        "only the config blob besides the resumed layer: {gets:?}"
    );
}

#[test]
fn a_window_closing_mid_download_checkpoints_and_the_next_window_resumes_with_one_range() {
    let clock = Arc::new(Mutex::new(PathBuf::new()));
    let c = clock.clone();
    let h = Harness::new(move |v, dir| {
        v["link"] = json!({ "windows": ["00:00-12:00"] });
        *c.lock().unwrap() = dir.join("clock");
    });
    let clock = clock.lock().unwrap().clone();
    let size = 4 << 20;
    let (v1, blobs) = h.push("stable", vec![random_bytes(size)]);
    h.fake.set_rate_limit(Some(256 * 1024));
    set_clock(&clock, DAY0 + 6 * 3600, 0);
    let d = h.start_with(Start {
        env: vec![("EDGEPULL_TEST_CLOCK_FILE".into(), clock.display().to_string())],
        ..Default::default()
    });
    d.wait("downloading", Duration::from_secs(10), || {
        let st = h.image_status();
        st["state"] == "downloading" && st["bytes_done"].as_u64() > Some(100_000)
    });
    // The window ends 3 s from now (12:00:00 on the daemon's clock).
    let window_end = set_clock(&clock, DAY0 + 12 * 3600 - 3, 3);
    let mut stopped = None;
    d.wait("the download to pause", Duration::from_secs(12), || {
        let paused = link_status(&h)["paused"].is_string() && h.image_status()["state"] != "downloading";
        if paused {
            stopped = Some(Instant::now());
        }
        paused
    });
    let stopped = stopped.unwrap();
    assert!(
        stopped + Duration::from_millis(50) >= window_end,
        "paused {:?} before the window ended\n{}",
        window_end - stopped,
        d.logs()
    );
    let late = stopped.saturating_duration_since(window_end);
    eprintln!("window close: download stopped {late:?} after the window ended");
    assert!(
        late < Duration::from_secs(5),
        "stopped {late:?} after the window end"
    );
    let link = link_status(&h);
    assert_eq!(link["next_window_start"], "2030-01-02T00:00:00Z", "{link}");
    assert!(link["paused"].as_str().unwrap().contains("window"), "{link}");
    let checkpoint = checkpoint_of(&h, &blobs[1]).expect("the partial blob is checkpointed");
    assert!(
        checkpoint > 100_000 && checkpoint < size as u64,
        "checkpoint {checkpoint}"
    );
    assert!(!h.blob_exists(&blobs[1]));

    // Outside the window: polls go on (HEAD), nothing is downloaded.
    let sent = data_bytes_sent(&h);
    let quiet_from = Instant::now();
    std::thread::sleep(Duration::from_millis(2500));
    let requests: Vec<_> = h
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.at >= quiet_from)
        .collect();
    assert!(
        requests
            .iter()
            .all(|r| r.server == ServerName::Login && r.method == "HEAD"),
        "only HEADs while the window is closed: {requests:?}"
    );
    assert!(!requests.is_empty(), "the daemon still polls");
    assert_eq!(
        data_bytes_sent(&h),
        sent,
        "the data endpoint sent more after the pause"
    );
    assert_eq!(checkpoint_of(&h, &blobs[1]), Some(checkpoint));

    // The next window: one Range request from the checkpoint, then the verified image.
    h.fake.set_rate_limit(None);
    h.fake.clear_log();
    set_clock(&clock, DAY0 + 86_400 + 5, 0);
    let resumed = Instant::now();
    d.signal(rustix::process::Signal::USR1);
    d.wait("v1 current", Duration::from_secs(10), || {
        h.current() == Some(v1.to_string())
    });
    eprintln!(
        "window open: image current {:?} after the clock moved",
        resumed.elapsed()
    );
    let gets = data_gets(&h);
    assert_one_resume(&gets, checkpoint);
    assert!(h.blob_exists(&blobs[1]));
    assert!(link_status(&h)["paused"].is_null(), "{}", link_status(&h));
}

#[test]
fn a_quota_used_up_mid_blob_pauses_at_the_quota_survives_a_restart_and_resumes_the_next_day() {
    const QUOTA: u64 = 600_000;
    // The fake registry sends paced bodies in chunks of at most 64 KiB: no read is larger.
    const READ_CHUNK: u64 = 64 * 1024;
    let clock = Arc::new(Mutex::new(PathBuf::new()));
    let c = clock.clone();
    let h = Harness::new(move |v, dir| {
        v["link"] = json!({ "max_bytes_per_day": QUOTA });
        *c.lock().unwrap() = dir.join("clock");
    });
    let clock = clock.lock().unwrap().clone();
    let env = || Start {
        env: vec![("EDGEPULL_TEST_CLOCK_FILE".into(), clock.display().to_string())],
        ..Default::default()
    };
    let size = 1 << 20;
    let (v1, blobs) = h.push("stable", vec![random_bytes(size)]);
    h.fake.set_rate_limit(Some(256 * 1024));
    set_clock(&clock, DAY0 + 6 * 3600, 0);
    let mut d = h.start_with(env());
    d.wait("the quota to pause the download", Duration::from_secs(15), || {
        link_status(&h)["paused"].is_string()
    });
    d.wait("the job to end", Duration::from_secs(5), || {
        h.image_status()["state"] != "downloading"
    });
    let link = link_status(&h);
    assert!(link["paused"].as_str().unwrap().contains("quota"), "{link}");
    assert_eq!(link["next_window_start"], "2030-01-02T00:00:00Z", "{link}");
    assert_eq!(link["quota_bytes_per_day"], QUOTA, "{link}");
    let today = link["bytes_today"].as_u64().unwrap();
    eprintln!("quota: {QUOTA} bytes a day, paused after {today} bytes received");
    assert!(
        (QUOTA..=QUOTA + READ_CHUNK).contains(&today),
        "paused after {today} bytes, quota {QUOTA}"
    );
    let checkpoint = checkpoint_of(&h, &blobs[1]).expect("the partial blob is checkpointed");
    assert!(
        checkpoint > 0 && checkpoint <= today,
        "checkpoint {checkpoint}, today {today}"
    );
    assert!(!h.blob_exists(&blobs[1]));
    assert!(d.terminate().success());
    drop(d);
    let saved: Value =
        serde_json::from_slice(&std::fs::read(h.store().join("link-quota.json")).unwrap()).unwrap();
    assert_eq!(saved["bytes"], today, "{saved}");

    // Same day after a restart: the saved count still holds the downloads back.
    h.fake.set_rate_limit(None);
    h.fake.clear_log();
    let d = h.start_with(env());
    let pid = d.child.id();
    d.wait("a check after the restart", Duration::from_secs(10), || {
        h.status().is_some_and(|s| {
            s["pid"] == pid && s["images"][0]["checks"].as_u64() >= Some(2) && s["link"]["paused"].is_string()
        })
    });
    assert_eq!(link_status(&h)["bytes_today"], today);
    let requests = h.fake.requests_to(ServerName::EastUs);
    assert!(requests.is_empty(), "nothing downloaded over quota: {requests:?}");
    assert_eq!(checkpoint_of(&h, &blobs[1]), Some(checkpoint));

    // The next UTC day: one Range request from the checkpoint, then the verified image.
    set_clock(&clock, DAY0 + 86_400 + 6 * 3600, 0);
    d.signal(rustix::process::Signal::USR1);
    d.wait("v1 current", Duration::from_secs(10), || {
        h.current() == Some(v1.to_string())
    });
    let gets = data_gets(&h);
    assert_one_resume(&gets, checkpoint);
    let link = link_status(&h);
    assert!(link["paused"].is_null(), "{link}");
    // The new day counts only what it received: the rest of the blob (and the manifest).
    let rest = size as u64 - checkpoint;
    let new_day = link["bytes_today"].as_u64().unwrap();
    assert!(
        new_day >= rest && new_day < rest + 10_000,
        "{new_day} bytes today, {rest} left of the blob"
    );
}

/// A SIGHUP that raises `link.max_bytes_per_sec` applies to the download in flight: the
/// rate (measured from the ingest file) rises, and the same response goes on (one blob
/// request at the login server, one body from the data endpoint, no Range).
#[test]
fn a_sighup_raises_the_cap_of_a_running_download_without_restarting_it() {
    const LOW: u64 = 512 * 1024;
    const HIGH: u64 = 2048 * 1024;
    let h = Harness::new(|v, _| v["link"] = json!({ "max_bytes_per_sec": LOW }));
    let size = 12u64 << 20;
    let (v1, blobs) = h.push("stable", vec![random_bytes(size as usize)]);
    let layer = blobs[1];
    let data = h
        .store()
        .join("ingest")
        .join(format!("sha256-{}", layer.hex()))
        .join("data");
    // Bytes of the layer received: the ingest file grows by each chunk as it arrives.
    let received = || {
        if h.blob_exists(&layer) {
            size
        } else {
            std::fs::metadata(&data).map_or(0, |m| m.len())
        }
    };
    let d = h.start();
    let mut samples: Vec<(Instant, u64)> = Vec::new();
    let sample_for = |samples: &mut Vec<(Instant, u64)>, span: Duration| {
        let until = Instant::now() + span;
        while Instant::now() < until {
            samples.push((Instant::now(), received()));
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    d.wait("the layer downloading", Duration::from_secs(10), || {
        received() > 0
    });
    let first = Instant::now();
    sample_for(&mut samples, Duration::from_secs(5));

    // The same config with a higher cap; SIGHUP.
    let mut v: Value = serde_json::from_slice(&std::fs::read(&h.config).unwrap()).unwrap();
    v["link"]["max_bytes_per_sec"] = json!(HIGH);
    std::fs::write(&h.config, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    assert_eq!(
        h.image_status()["state"],
        "downloading",
        "still the first download"
    );
    d.signal(rustix::process::Signal::HUP);
    let reload = Instant::now();
    d.wait("the new cap in status.json", Duration::from_secs(5), || {
        link_status(&h)["cap_bytes_per_sec"] == HIGH
    });
    assert_eq!(
        h.image_status()["state"],
        "downloading",
        "the download goes on through the reload\n{}",
        d.logs()
    );
    while h.current() != Some(v1.to_string()) {
        sample_for(&mut samples, Duration::from_millis(100));
        assert!(
            reload.elapsed() < Duration::from_secs(30),
            "no completion 30 s after the reload\n{}",
            d.logs()
        );
    }
    assert!(d.logs().contains("config reloaded"), "{}", d.logs());

    // The file grows by whole read chunks (up to ~400 KiB, most of a second at the low
    // cap), each written before the wait that pays for it: from one chunk's arrival to a
    // later one's, the time is the wait for every chunk before the later one.
    // (when, bytes before the chunk, bytes after it)
    let mut steps: Vec<(Instant, u64, u64)> = Vec::new();
    let mut last = 0;
    for (t, b) in &samples {
        if *b != last {
            steps.push((*t, last, *b));
            last = *b;
        }
    }
    let rate = |from: Instant, to: Instant| -> f64 {
        let a = steps.iter().find(|s| s.0 >= from);
        let b = steps.iter().rev().find(|s| s.0 <= to);
        match (a, b) {
            (Some(a), Some(b)) if b.0 > a.0 => (b.1 - a.1) as f64 / (b.0 - a.0).as_secs_f64(),
            _ => 0.0,
        }
    };
    let complete = steps.iter().find(|s| s.2 >= size).map_or(Instant::now(), |s| s.0);
    let before = rate(first + Duration::from_millis(1500), reload);
    let after_to = (reload + Duration::from_secs(4)).min(complete);
    let after = rate(reload + Duration::from_secs(1), after_to);
    let login_gets = h
        .fake
        .requests_to(ServerName::Login)
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.ends_with(&layer.to_string()))
        .count();
    let data_gets = data_gets(&h);
    let ranged = data_gets.iter().filter(|r| r.range.is_some()).count();
    let big: Vec<_> = data_gets.iter().filter(|r| r.body_bytes_sent >= 1000).collect();
    eprintln!(
        "sighup: cap {LOW} -> {HIGH} B/s mid-download: {before:.0} B/s before ({:.3} of the old \
         cap), {after:.0} B/s from 1 s after the reload ({:.3} of the new cap); layer complete \
         {:?} after the reload; layer GETs at the login server: {login_gets}, bodies from the \
         data endpoint: {}, Range requests: {ranged}",
        before / LOW as f64,
        after / HIGH as f64,
        complete - reload,
        big.len()
    );
    assert!(
        after_to >= reload + Duration::from_secs(3),
        "too little of the layer left after the reload to measure: complete {:?} after it",
        complete - reload
    );
    // Sampled every 20 ms over seconds: a few % off; the new cap is four times the old.
    assert!(
        before <= LOW as f64 * 1.1 && before >= LOW as f64 * 0.6,
        "{before:.0} B/s under a cap of {LOW}"
    );
    assert!(
        after >= LOW as f64 * 2.5 && after <= HIGH as f64 * 1.1,
        "{after:.0} B/s after raising the cap to {HIGH} (from {LOW})"
    );
    // The same transfer went on: one blob request, one body, no Range.
    assert_eq!(login_gets, 1, "{:?}", h.fake.requests_to(ServerName::Login));
    assert_eq!(ranged, 0, "{data_gets:?}");
    assert_eq!(big.len(), 1, "{data_gets:?}");
    assert_eq!(big[0].body_bytes_sent, size, "{data_gets:?}");
    assert!(h.blob_exists(&layer));
}

/// The README's metered cellular example, read from README.md as it stands, is a valid
/// `link` section: the daemon reports its cap and quota, and at noon device time it polls
/// but downloads nothing until 01:00 device time (`/etc/localtime`).
#[test]
fn the_readme_metered_cellular_example_is_a_valid_link_section() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("```json\n\"link\": {")
        .expect("the README's link example");
    let block = &readme[start + "```json\n".len()..];
    let block = &block[..block.find("```").unwrap()];
    let example: Value = serde_json::from_str(&format!("{{{block}}}")).expect("the example is JSON");
    let link = example["link"].clone();
    assert_eq!(link["timezone"], "local", "{link}");

    let offset = |t: i64| -> i64 {
        tz::TimeZone::local()
            .ok()
            .and_then(|z| z.find_local_time_type(t).ok().map(|l| i64::from(l.ut_offset())))
            .unwrap_or(0)
    };
    // Noon device time on the test day, and 01:00 device time the next day.
    let noon = DAY0 + 12 * 3600 - offset(DAY0 + 12 * 3600);
    let opens = DAY0 + 86_400 + 3600 - offset(DAY0 + 86_400 + 3600);
    let clock = Arc::new(Mutex::new(PathBuf::new()));
    let c = clock.clone();
    let h = Harness::new(move |v, dir| {
        v["link"] = link;
        *c.lock().unwrap() = dir.join("clock");
    });
    let clock = clock.lock().unwrap().clone();
    h.push("stable", vec![random_bytes(3000)]);
    set_clock(&clock, noon, 0);
    let d = h.start_with(Start {
        env: vec![("EDGEPULL_TEST_CLOCK_FILE".into(), clock.display().to_string())],
        ..Default::default()
    });
    d.wait("two checks", Duration::from_secs(10), || {
        h.image_status()["checks"].as_u64() >= Some(2)
    });
    let link = link_status(&h);
    assert_eq!(link["cap_bytes_per_sec"], 256 * 1024, "{link}");
    assert_eq!(link["quota_bytes_per_day"], 200_000_000, "{link}");
    assert!(
        link["paused"]
            .as_str()
            .is_some_and(|p| p.contains("outside download windows")),
        "{link}"
    );
    assert_eq!(
        link["next_window_start"],
        edgepull_core::link::rfc3339(opens),
        "{link}"
    );
    assert_eq!(h.fake.connections(ServerName::EastUs), 0, "nothing downloaded");
    assert_eq!(h.current(), None);
}
