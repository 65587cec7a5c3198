//! A fleet of real daemon supervisors in one process, against one fake registry, stepped
//! through simulated time.
//!
//! Owns: the devices (each its own directory, config JSON, device-id file, store and
//! notify socket, and one `edgepull::daemon::run` task), the clock hold, and [`Fleet::step`]:
//! advance simulated time, then wait in real time until every daemon is idle again, then
//! hand over the requests the fake registry answered in that step. Never decides what a
//! scenario measures (`scenario` does).
//!
//! How a step ends: a daemon sends `STATUS=` on every state change, before and after each
//! sync job, so "no device shows `checking` or `downloading`" means no job is running and
//! no request is in flight. While any job runs, simulated time does not move (the clock is
//! held, as in `tests/supervisor.rs`), so HTTP timeouts never fire by accident. A notify
//! datagram can be dropped (the kernel queues 10 per socket), so a device that shows busy
//! for long without news is looked up in its `status.json`.

use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Duration;

use edgepull::daemon::DaemonError;
use edgepull::daemon::status::{self, ImageStatus, State, Status};
use edgepull::systemd::Notifier;
use edgepull_core::oci::Digest;
use edgepull_testkit::{FakeRegistry, RequestRecord, ServerName};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, spawn_blocking};
use tokio_util::sync::CancellationToken;

use crate::clock;

const SECOND: Duration = Duration::from_secs(1);
/// Real time a step waits without any news before it looks at `status.json`.
const QUIET: Duration = Duration::from_millis(500);
/// Real time a step waits for busy daemons before it gives up and moves on (counted).
const STALL: Duration = Duration::from_secs(20);
/// Real time the start waits for every daemon's first sync.
const START_LIMIT: Duration = Duration::from_secs(600);

/// How every device of a fleet is configured.
#[derive(Debug, Clone)]
pub(crate) struct FleetConfig {
    /// Number of devices.
    pub devices: usize,
    /// `sync.interval_secs`.
    pub interval_secs: u64,
    /// `sync.jitter`.
    pub jitter: f64,
    /// `sync.backoff_max_secs`.
    pub backoff_max_secs: u64,
    /// `rollout.window_secs`.
    pub window_secs: u64,
    /// Devices start spread over this many seconds (0: all at once).
    pub stagger_secs: u64,
    /// Where the device directories go.
    pub root: PathBuf,
}

/// The image every device follows.
pub(crate) const IMAGE: &str = "app:stable";

/// Keeps the paused clock from auto-advancing while alive (a blocking task that waits for
/// it to be dropped; Tokio never auto-advances while one runs), as in `tests/supervisor.rs`.
struct Held {
    _release: std::sync::mpsc::Sender<()>,
}

fn hold_clock() -> Held {
    let (release, released) = std::sync::mpsc::channel::<()>();
    spawn_blocking(move || {
        let _ = released.recv();
    });
    Held { _release: release }
}

/// Wait `d` of real time without blocking the runtime (simulated time does not move).
pub(crate) async fn real_pause(d: Duration) {
    let _ = spawn_blocking(move || std::thread::sleep(d)).await;
}

/// Let every task that is ready run until it waits again.
async fn settle() {
    for _ in 0..32 {
        tokio::task::yield_now().await;
    }
}

/// Device `i`'s start offset in `0..stagger_secs` (uniform, fixed per index).
fn start_offset(i: usize, stagger_secs: u64) -> u64 {
    if stagger_secs == 0 {
        return 0;
    }
    let hex = Digest::of(format!("fleet-sim start {i}").as_bytes()).hex();
    u64::from_str_radix(&hex[..16], 16).unwrap_or(0) % stagger_secs
}

/// A stable id that looks like `/etc/machine-id` (32 hex digits), distinct per index.
pub(crate) fn device_id(i: usize) -> String {
    Digest::of(format!("fleet-sim device {i}").as_bytes()).hex()[..32].to_string()
}

/// One simulated device.
pub(crate) struct Device {
    /// Its rollout id (the contents of its device-id file).
    pub id: String,
    /// Simulated seconds after the fleet's start when its daemon starts.
    pub start_at: u64,
    config: PathBuf,
    dir: PathBuf,
    notify: UnixDatagram,
    daemon: Option<JoinHandle<Result<(), DaemonError>>>,
    ready: bool,
    busy: bool,
    /// Sync jobs that ended (the daemon's `checks`).
    pub jobs: u64,
}

impl Device {
    fn store(&self) -> PathBuf {
        self.dir.join("store")
    }

    /// `status.json` of this device's only image.
    pub(crate) fn image(&self) -> Option<ImageStatus> {
        status::read(&self.store())
            .ok()
            .and_then(|s: Status| s.images.into_iter().next())
    }
}

/// What one step saw.
pub(crate) struct Step {
    /// Simulated seconds since the fleet started, at this step.
    pub t: u64,
    /// Every request the fake registry answered during the step.
    pub requests: Vec<RequestRecord>,
    /// The devices whose sync job ended during the step.
    pub ended: Vec<usize>,
    /// Sync jobs that ended during the step (a device may end more than one).
    pub jobs: usize,
    /// TCP (TLS) connections the fake's servers accepted during the step.
    pub connections: u64,
}

/// A running fleet.
pub(crate) struct Fleet<'a> {
    pub fake: &'a FakeRegistry,
    pub devices: Vec<Device>,
    stop: CancellationToken,
    /// Unix seconds (virtual) when the fleet started.
    pub started: u64,
    /// Steps that moved on with a device still busy after [`STALL`] (should be 0).
    pub stalled_steps: u64,
    /// Times a device's `status.json` had to stand in for a lost notify datagram.
    pub lost_notifications: u64,
    _held: Held,
}

/// Write device `i`'s files under `dir`; returns its config path.
fn write_device(fake: &FakeRegistry, cfg: &FleetConfig, dir: &Path, id: &str) -> PathBuf {
    let config = fake.write_client_files(dir);
    let id_file = dir.join("machine-id");
    std::fs::write(&id_file, format!("{id}\n")).expect("write the device id");
    let text = std::fs::read(&config).expect("read the device config");
    let mut v: serde_json::Value = serde_json::from_slice(&text).expect("config JSON");
    v["images"] = json!([{ "ref": IMAGE }]);
    v["sync"] = json!({
        "interval_secs": cfg.interval_secs,
        "jitter": cfg.jitter,
        "backoff_max_secs": cfg.backoff_max_secs,
    });
    v["store"]["min_free_bytes"] = json!(0);
    v["rollout"] = json!({ "window_secs": cfg.window_secs, "device_id_file": id_file });
    std::fs::write(&config, serde_json::to_vec_pretty(&v).expect("JSON")).expect("write config");
    config
}

impl<'a> Fleet<'a> {
    /// Prepare every device, start each at its offset (spread uniformly over
    /// `stagger_secs`, as a fleet switched on at different times; all at once for 0) and
    /// wait, after each start, until that daemon has finished its first sync. Returns the
    /// fleet and the steps of that start-up. Must run on a current-thread runtime with
    /// paused time.
    pub(crate) async fn start(fake: &'a FakeRegistry, cfg: &FleetConfig) -> (Fleet<'a>, Vec<Step>) {
        let held = hold_clock();
        let started = clock::start();
        let mut devices = Vec::with_capacity(cfg.devices);
        for i in 0..cfg.devices {
            let dir = cfg.root.join(format!("d{i:05}"));
            std::fs::create_dir_all(&dir).expect("device dir");
            let id = device_id(i);
            let config = write_device(fake, cfg, &dir, &id);
            let notify = UnixDatagram::bind(dir.join("notify")).expect("bind the notify socket");
            notify.set_nonblocking(true).expect("non-blocking socket");
            devices.push(Device {
                id,
                start_at: start_offset(i, cfg.stagger_secs),
                config,
                dir,
                notify,
                daemon: None,
                ready: false,
                busy: false,
                jobs: 0,
            });
        }
        let mut fleet = Fleet {
            fake,
            devices,
            stop: CancellationToken::new(),
            started,
            stalled_steps: 0,
            lost_notifications: 0,
            _held: held,
        };
        let mut steps = Vec::new();
        let last = fleet.devices.iter().map(|d| d.start_at).max().unwrap_or(0);
        loop {
            let mut step = if steps.is_empty() {
                Step {
                    t: 0,
                    requests: Vec::new(),
                    ended: Vec::new(),
                    jobs: 0,
                    connections: 0,
                }
            } else {
                fleet.step(SECOND).await
            };
            let now = fleet.now();
            let due: Vec<usize> = (0..fleet.devices.len())
                .filter(|&i| fleet.devices[i].daemon.is_none() && fleet.devices[i].start_at <= now)
                .collect();
            for &i in &due {
                fleet.spawn(i);
            }
            fleet.first_syncs(&due, &mut step).await;
            steps.push(step);
            if now >= last {
                return (fleet, steps);
            }
        }
    }

    /// Start device `i`'s daemon.
    fn spawn(&mut self, i: usize) {
        let d = &mut self.devices[i];
        let socket = d.dir.join("notify");
        let notifier = Notifier::new(Some(socket.as_os_str()), None, None);
        // No requests: a closed channel is no error for the daemon.
        let (_, requests) = mpsc::unbounded_channel();
        d.daemon = Some(tokio::spawn(edgepull::daemon::run_with_clock(
            d.config.clone(),
            notifier,
            requests,
            self.stop.clone().cancelled_owned(),
            clock::wall_clock(),
        )));
    }

    /// Wait (simulated time held) until each of `started` is ready and has finished its
    /// first sync; what they did is added to `step`.
    async fn first_syncs(&mut self, started: &[usize], step: &mut Step) {
        if started.is_empty() {
            return;
        }
        let begun = std::time::Instant::now();
        loop {
            settle().await;
            let ended = self.drain();
            step.jobs += ended.len();
            step.ended.extend(ended);
            let done = started.iter().all(|&i| {
                let d = &self.devices[i];
                d.ready && d.jobs > 0 && !d.busy
            });
            if done && self.devices.iter().all(|d| !d.busy) {
                break;
            }
            if let Some(d) = self
                .devices
                .iter_mut()
                .find(|d| d.daemon.as_ref().is_some_and(|h| h.is_finished()))
            {
                let h = d.daemon.take().expect("finished daemon");
                let end = h.await;
                panic!("device {} stopped during start-up: {end:?}", d.id);
            }
            assert!(
                begun.elapsed() < START_LIMIT,
                "the fleet did not finish its first syncs within {START_LIMIT:?}"
            );
            real_pause(Duration::from_millis(1)).await;
        }
        step.connections += self.connections();
        step.requests.extend(self.take_requests());
        step.ended.sort_unstable();
        step.ended.dedup();
    }

    /// Simulated seconds since the start.
    pub(crate) fn now(&self) -> u64 {
        clock::now_unix() - self.started
    }

    /// Read every notify socket; returns the devices whose job ended (busy → not busy).
    fn drain(&mut self) -> Vec<usize> {
        let mut ended = Vec::new();
        let mut buf = [0u8; 2048];
        for (i, d) in self.devices.iter_mut().enumerate() {
            while let Ok(n) = d.notify.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]);
                for line in msg.lines() {
                    if line == "READY=1" {
                        d.ready = true;
                    } else if let Some(text) = line.strip_prefix("STATUS=") {
                        let busy = shows_busy(text);
                        if d.busy && !busy {
                            d.jobs += 1;
                            ended.push(i);
                        }
                        d.busy = busy;
                    }
                }
            }
        }
        ended
    }

    /// TCP connections the fake's servers accepted since the last [`Fleet::take_requests`].
    fn connections(&self) -> u64 {
        ServerName::ALL.iter().map(|s| self.fake.connections(*s)).sum()
    }

    /// Requests answered since the last call (the connection counts restart too).
    fn take_requests(&self) -> Vec<RequestRecord> {
        let r = self.fake.requests();
        self.fake.clear_log();
        r
    }

    /// Advance simulated time by `by`, then wait until every device is idle again.
    pub(crate) async fn step(&mut self, by: Duration) -> Step {
        clock::advance(by).await;
        let mut ended = Vec::new();
        let begun = std::time::Instant::now();
        let mut news = std::time::Instant::now();
        loop {
            settle().await;
            let now_ended = self.drain();
            if !now_ended.is_empty() {
                news = std::time::Instant::now();
            }
            ended.extend(now_ended);
            if self.devices.iter().all(|d| !d.busy) {
                settle().await;
                let late = self.drain();
                let busy = self.devices.iter().any(|d| d.busy);
                let quiet = late.is_empty() && !busy;
                ended.extend(late);
                if quiet {
                    break;
                }
                continue;
            }
            if news.elapsed() > QUIET {
                ended.extend(self.recover_lost());
                news = std::time::Instant::now();
            }
            if begun.elapsed() > STALL {
                self.stalled_steps += 1;
                break;
            }
            real_pause(Duration::from_micros(300)).await;
        }
        let connections = self.connections();
        let requests = self.take_requests();
        let jobs = ended.len();
        ended.sort_unstable();
        ended.dedup();
        Step {
            t: self.now(),
            requests,
            ended,
            jobs,
            connections,
        }
    }

    /// Busy devices whose `status.json` shows a finished job: their last datagram was lost.
    fn recover_lost(&mut self) -> Vec<usize> {
        let mut ended = Vec::new();
        for (i, d) in self.devices.iter_mut().enumerate() {
            if !d.busy {
                continue;
            }
            let Some(img) = d.image() else { continue };
            if !matches!(img.state, State::Checking | State::Downloading) && img.checks > d.jobs {
                d.busy = false;
                d.jobs = img.checks;
                ended.push(i);
                self.lost_notifications += 1;
            }
        }
        ended
    }

    /// Device `i`'s image status once its `status.json` records every job that ended
    /// (the file is written right after `STATUS=`, off the runtime).
    pub(crate) async fn image_after_jobs(&self, i: usize) -> ImageStatus {
        let d = &self.devices[i];
        let begun = std::time::Instant::now();
        loop {
            if let Some(img) = d.image()
                && img.checks >= d.jobs
                && !matches!(img.state, State::Checking | State::Downloading)
            {
                return img;
            }
            assert!(
                begun.elapsed() < STALL,
                "device {}: status.json never showed {} checks",
                d.id,
                d.jobs
            );
            real_pause(Duration::from_micros(200)).await;
        }
    }

    /// Stop every daemon (the shutdown future completes) and wait for each to return.
    pub(crate) async fn stop(mut self) -> BTreeMap<String, usize> {
        self.stop.cancel();
        let mut ends = BTreeMap::new();
        for d in &mut self.devices {
            let end = match d.daemon.take() {
                Some(h) => match h.await {
                    Ok(Ok(())) => "stopped".to_string(),
                    Ok(Err(e)) => format!("error: {}", edgepull::error_chain(&e)),
                    Err(e) => format!("task: {e}"),
                },
                None => "stopped before".to_string(),
            };
            *ends.entry(end).or_default() += 1;
        }
        ends
    }
}

/// Whether a `STATUS=` text shows a running job (`1 image(s): 1 checking`, `… downloading`).
fn shows_busy(text: &str) -> bool {
    let head = text.split(';').next().unwrap_or("");
    let states = head.split_once(": ").map_or("", |(_, s)| s);
    states
        .split(", ")
        .any(|part| part.ends_with(" checking") || part.ends_with(" downloading"))
}
