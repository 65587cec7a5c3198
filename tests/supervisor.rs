//! The daemon's supervisor in process, on a paused Tokio clock, against the fake registry:
//! the poll schedule (one `HEAD` per interval, never sooner; jitter bounds), the backoff
//! after failures (growth, cap, reset, `Retry-After` floor) and shutdown through the
//! future, all without waiting for them in real time.
//!
//! How time moves here: only by `tokio::time::advance`. Each test holds the clock for its
//! whole run ([`Held`]: a blocking task, which keeps a paused runtime from auto-advancing),
//! because the daemon does real network IO against the fake registry: with auto-advance,
//! every wait for a socket would let the clock jump to the next timer, the HTTP client's
//! connect and read timeouts included. Waits for the daemon read its notify socket in a
//! blocking task (bounded in real time), never on the runtime's clock.
//!
//! What the daemon says is read from that socket: `STATUS=` goes out as soon as the state
//! changes, in the same poll of the supervisor, so after [`Supervisor::settle`] "no
//! `checking` yet" is exact, not a guess.

mod common;

use std::collections::VecDeque;
use std::future::Future;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Env;
use edgepull::daemon::status::{self, Status};
use edgepull::daemon::{DaemonError, Request};
use edgepull::systemd::Notifier;
use edgepull_core::oci::{Digest, Platform};
use edgepull_testkit::{AuthMode, RequestRecord, ServerName, random_bytes};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, spawn_blocking};
use tokio::time::advance;
use tokio_util::sync::CancellationToken;

const SECOND: Duration = Duration::from_secs(1);
/// Real time a test waits for the daemon to say something before it fails.
const REAL_LIMIT: Duration = Duration::from_secs(30);
/// `STATUS=` of one image that is up to date.
const IDLE: &str = "STATUS=1 image(s): 1 idle";

/// Keeps the paused clock from auto-advancing while alive: Tokio does not auto-advance a
/// paused clock while a blocking task runs, and this one runs until `Held` is dropped.
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

/// Datagrams already queued on `socket`, without waiting.
fn drain(socket: &UnixDatagram) -> Vec<String> {
    socket.set_nonblocking(true).unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 8192];
    while let Ok(n) = socket.recv(&mut buf) {
        out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    socket.set_nonblocking(false).unwrap();
    out
}

/// `f`, failing if it takes more than [`REAL_LIMIT`] of real time (the clock stays held).
async fn within_real_limit<T>(what: &str, f: impl Future<Output = T>) -> T {
    let (done, done_rx) = std::sync::mpsc::channel::<()>();
    let timer = spawn_blocking(move || {
        matches!(
            done_rx.recv_timeout(REAL_LIMIT),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout)
        )
    });
    tokio::select! {
        out = f => {
            drop(done);
            out
        }
        timed_out = timer => {
            assert!(!timed_out.unwrap_or(false), "{what}: nothing within {REAL_LIMIT:?}");
            panic!("{what}: the real-time guard ended early");
        }
    }
}

/// The daemon running in this test's runtime.
struct Supervisor {
    env: Env,
    notify: Arc<UnixDatagram>,
    /// Datagrams read off the socket and not yet consumed by [`Supervisor::until`].
    inbox: Mutex<VecDeque<String>>,
    requests: mpsc::UnboundedSender<Request>,
    stop: CancellationToken,
    daemon: JoinHandle<Result<(), DaemonError>>,
    _held: Held,
}

/// A fake registry (anonymous, so one check is one request), a config following
/// `app:stable` and `edit`ed, and `app:stable` pushed with one layer.
fn setup(edit: impl FnOnce(&mut serde_json::Value)) -> (Env, Digest) {
    let env = Env::new(AuthMode::Anonymous);
    env.edit_config(|v| {
        v["images"] = json!([{ "ref": "app:stable", "interval_secs": 100 }]);
        v["sync"] = json!({ "jitter": 0.0, "backoff_max_secs": 60 });
        v["store"]["min_free_bytes"] = json!(0);
        edit(v);
    });
    let platform = Platform::parse("linux/arm64").unwrap();
    let (v1, _) = env
        .fake
        .push_image_for("app", "stable", &platform, vec![random_bytes(1500)]);
    (env, v1)
}

impl Supervisor {
    /// Start the daemon in process and wait for its first check to end `idle`.
    async fn start(env: Env) -> Self {
        let held = hold_clock();
        let path = env.dir.path().join(format!("notify-{}", rand::random::<u32>()));
        let socket = UnixDatagram::bind(&path).expect("bind notify socket");
        socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let (requests, requests_rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let notifier = Notifier::new(Some(path.as_os_str()), None, None);
        let daemon = tokio::spawn(edgepull::daemon::run(
            env.config_path.clone(),
            notifier,
            requests_rx,
            stop.clone().cancelled_owned(),
        ));
        let s = Self {
            env,
            notify: Arc::new(socket),
            inbox: Mutex::default(),
            requests,
            stop,
            daemon,
            _held: held,
        };
        s.until("READY=1", |m| m == "READY=1").await;
        s.until("the first check", |m| m == IDLE).await;
        s
    }

    fn store(&self) -> PathBuf {
        self.env.store_path()
    }

    /// Datagrams from the daemon up to the first that `done` accepts.
    async fn until(&self, what: &str, done: impl Fn(&str) -> bool + Send + 'static) -> Vec<String> {
        let mut seen = Vec::new();
        while let Some(msg) = self.inbox.lock().unwrap().pop_front() {
            let last = done(&msg);
            seen.push(msg);
            if last {
                return seen;
            }
        }
        let socket = self.notify.clone();
        let got = spawn_blocking(move || {
            let deadline = std::time::Instant::now() + REAL_LIMIT;
            let mut seen = Vec::new();
            let mut buf = vec![0u8; 8192];
            while std::time::Instant::now() < deadline {
                if let Ok(n) = socket.recv(&mut buf) {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let last = done(&msg);
                    seen.push(msg);
                    if last {
                        return Ok(seen);
                    }
                }
            }
            Err(seen)
        })
        .await
        .expect("notify reader");
        seen.extend(got.unwrap_or_else(|more| {
            panic!("no {what} within {REAL_LIMIT:?}; the daemon said {seen:?} then {more:?}")
        }));
        seen
    }

    /// Datagrams sent since the last look, without waiting; they stay for [`Supervisor::until`].
    fn sent(&self) -> Vec<String> {
        let new = drain(&self.notify);
        self.inbox.lock().unwrap().extend(new.iter().cloned());
        new
    }

    /// Let every task that the last `advance` woke run until it waits again.
    async fn settle(&self) {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    /// Advance the clock by `by`; whether a check started by then.
    async fn advance_and_see(&self, by: Duration) -> bool {
        advance(by).await;
        self.settle().await;
        let sent = self.sent();
        let started = sent.iter().any(|m| m == "STATUS=1 image(s): 1 checking");
        assert!(started || sent.is_empty(), "unexpected {sent:?}");
        started
    }

    /// `status.json` once `cond` holds (it is written right after `STATUS=`).
    async fn status_when(&self, what: &str, cond: impl Fn(&Status) -> bool + Send + 'static) -> Status {
        let root = self.store();
        let found = spawn_blocking(move || {
            let deadline = std::time::Instant::now() + REAL_LIMIT;
            let mut last = None;
            while std::time::Instant::now() < deadline {
                match status::read(&root) {
                    Ok(s) if cond(&s) => return Ok(s),
                    Ok(s) => last = Some(s),
                    Err(_) => {}
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(last)
        })
        .await
        .expect("status reader");
        found.unwrap_or_else(|last| panic!("status.json never showed {what}; last {last:?}"))
    }

    /// The requests the fake registry saw since the last call.
    fn take_requests(&self) -> Vec<RequestRecord> {
        let r = self.env.fake.requests();
        self.env.fake.clear_log();
        r
    }

    #[track_caller]
    fn assert_one_head(&self) {
        let requests = self.take_requests();
        let seen: Vec<_> = requests
            .iter()
            .map(|r| (r.server, r.method.as_str(), r.path.as_str()))
            .collect();
        assert_eq!(
            seen,
            vec![(ServerName::Login, "HEAD", "/v2/app/manifests/stable")],
            "one check, one HEAD"
        );
    }

    /// Complete the shutdown future; the daemon must stop at once, `STOPPING=1`.
    async fn stop(self) {
        self.stop.cancel();
        let ended = within_real_limit("the daemon's return", self.daemon).await;
        ended.expect("daemon task").expect("daemon run");
        assert!(drain(&self.notify).iter().any(|m| m == "STOPPING=1"));
        let st = status::read(&self.env.store_path()).unwrap();
        assert!(st.images.iter().all(|i| i.state == status::State::Idle), "{st:?}");
    }
}

/// Runs `rounds` polls; each must start after exactly its scheduled wait (whole seconds
/// are stepped: a check starts at the first step at or past its due time, never before)
/// and cost one `HEAD`. Returns the waits as `status.json` announced them.
async fn poll_rounds(s: &Supervisor, rounds: u64) -> Vec<u64> {
    s.take_requests();
    let mut announced = Vec::new();
    for round in 1..=rounds {
        let checks = round; // the first check at start-up, then one per round
        let st = s
            .status_when("the check recorded", move |st| st.images[0].checks == checks)
            .await;
        let next = st.images[0].next_check_in_secs.expect("next check announced");
        announced.push(next);
        // The wait is `next` s plus a fraction (a whole second only with jitter 0).
        if next > 0 {
            assert!(!s.advance_and_see(Duration::from_secs(next - 1)).await);
        }
        let at_next = s.advance_and_see(SECOND).await;
        let started = at_next || s.advance_and_see(SECOND).await;
        assert!(started, "round {round}: no check within a second of its due time");
        s.until("the check's end", |m| m == IDLE).await;
        s.assert_one_head();
    }
    announced
}

#[tokio::test(start_paused = true)]
async fn an_unchanged_tag_is_checked_once_per_interval_and_never_sooner() {
    let (env, v1) = setup(|_| {});
    let s = Supervisor::start(env).await;
    let st = s.status_when("v1", |st| st.images[0].checks == 1).await;
    assert_eq!(st.images[0].current_digest, Some(v1.to_string()));

    // Jitter 0: each check exactly 100 s after the last, not a second earlier.
    for _ in 0..3 {
        s.take_requests();
        assert!(!s.advance_and_see(Duration::from_secs(99)).await);
        assert!(s.take_requests().is_empty());
        assert!(s.advance_and_see(SECOND).await);
        s.until("the check's end", |m| m == IDLE).await;
        s.assert_one_head();
        let st = s
            .status_when("idle", |st| st.images[0].state == status::State::Idle)
            .await;
        assert_eq!(st.images[0].next_check_in_secs, Some(100));
        assert_eq!(st.images[0].consecutive_failures, 0);
    }
    s.stop().await;
}

#[tokio::test(start_paused = true)]
async fn jitter_spreads_each_wait_within_interval_times_one_plus_or_minus_jitter() {
    let (env, _) = setup(|v| v["sync"]["jitter"] = json!(0.5));
    let s = Supervisor::start(env).await;
    let waits = poll_rounds(&s, 8).await;
    // interval 100 s × (1 ± 0.5): every wait within [50 s, 150 s], and they differ.
    assert!(waits.iter().all(|w| (50..=150).contains(w)), "{waits:?}");
    assert!(waits.iter().any(|w| *w != waits[0]), "no jitter: {waits:?}");
    s.stop().await;
}

/// Steps the clock by 100 ms until a check starts; the wait it took.
async fn wait_for_next_check(s: &Supervisor, limit: Duration) -> Duration {
    let step = Duration::from_millis(100);
    let mut waited = Duration::ZERO;
    while waited <= limit {
        waited += step;
        if s.advance_and_see(step).await {
            return waited;
        }
    }
    panic!("no check within {limit:?}");
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_exponentially_to_the_cap_and_a_success_resets_it() {
    let (env, _) = setup(|v| v["sync"]["backoff_max_secs"] = json!(5));
    let s = Supervisor::start(env).await;
    for _ in 0..5 {
        s.env.fake.fail_next(503, None);
    }
    s.take_requests();
    s.requests.send(Request::CheckNow).unwrap();
    s.settle().await;
    assert!(s.sent().iter().any(|m| m == "STATUS=1 image(s): 1 checking"));

    // Failure n waits within [step/2, step], step = 1 s · 2^(n−1) capped at 5 s.
    let steps = [1000, 2000, 4000, 5000, 5000];
    for (n, step_ms) in steps.into_iter().enumerate() {
        let failures = n as u32 + 1;
        s.until("the failure", |m| m.starts_with("STATUS=1 image(s): 1 error"))
            .await;
        s.assert_one_head();
        let st = s
            .status_when("the failure", move |st| {
                st.images[0].consecutive_failures == failures
            })
            .await;
        assert_eq!(st.images[0].state, status::State::Error);
        assert!(
            st.images[0]
                .message
                .as_deref()
                .unwrap_or("")
                .starts_with("retrying in "),
            "{st:?}"
        );
        assert!(st.images[0].last_error.is_some());
        let step = Duration::from_millis(step_ms);
        let waited = wait_for_next_check(&s, step + SECOND).await;
        assert!(
            waited >= step / 2 && waited <= step,
            "failure {failures}: next check after {waited:?}, step {step:?}"
        );
    }

    // The sixth check succeeds: the backoff resets and the interval applies again.
    s.until("the recovery", |m| m == IDLE).await;
    s.assert_one_head();
    let st = s
        .status_when("the recovery", |st| st.images[0].consecutive_failures == 0)
        .await;
    assert_eq!(st.images[0].next_check_in_secs, Some(100));
    assert!(!s.advance_and_see(Duration::from_secs(99)).await);
    s.stop().await;
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_a_floor_for_the_backoff() {
    let (env, _) = setup(|_| {});
    let s = Supervisor::start(env).await;
    s.env.fake.fail_next(429, Some("30"));
    s.take_requests();
    s.requests.send(Request::CheckNow).unwrap();
    s.until("the refusal", |m| m.starts_with("STATUS=1 image(s): 1 error"))
        .await;
    s.assert_one_head();
    // The first backoff step is at most 1 s; the registry asked for 30.
    assert!(!s.advance_and_see(Duration::from_secs(29)).await);
    assert!(s.advance_and_see(SECOND).await);
    s.until("the retry", |m| m == IDLE).await;
    s.assert_one_head();
    s.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_shutdown_future_stops_a_download_that_the_next_run_resumes() {
    let env = Env::new(AuthMode::Anonymous);
    env.edit_config(|v| {
        v["images"] = json!([{ "ref": "app:stable", "interval_secs": 100 }]);
        v["store"]["min_free_bytes"] = json!(0);
    });
    let platform = Platform::parse("linux/arm64").unwrap();
    let (v1, blobs) = env
        .fake
        .push_image_for("app", "stable", &platform, vec![random_bytes(1 << 20)]);
    env.fake.set_rate_limit(Some(256 * 1024));

    // Not `Supervisor::start`: this run must be stopped before its first check ends.
    let _held = hold_clock();
    let (_requests, requests_rx) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let daemon = tokio::spawn(edgepull::daemon::run(
        env.config_path.clone(),
        Notifier::new(None, None, None),
        requests_rx,
        stop.clone().cancelled_owned(),
    ));
    within_real_limit("a partial download", async {
        while env.eastus_bytes() < 100_000 {
            spawn_blocking(|| std::thread::sleep(Duration::from_millis(20)))
                .await
                .unwrap();
        }
    })
    .await;
    stop.cancel();
    within_real_limit("the daemon's return", daemon)
        .await
        .expect("daemon task")
        .expect("daemon run");
    let st = status::read(&env.store_path()).unwrap();
    assert_eq!(st.images[0].state, status::State::Idle);
    assert_eq!(st.images[0].current_digest, None);
    let checkpoint_file = env
        .store_path()
        .join("ingest")
        .join(format!("sha256-{}", blobs[1].digest.hex()))
        .join("checkpoint");
    let checkpoint: u64 = std::fs::read_to_string(&checkpoint_file)
        .expect("the partial download is kept")
        .trim()
        .parse()
        .unwrap();
    assert!(checkpoint > 0 && checkpoint < 1 << 20, "checkpoint {checkpoint}");

    env.fake.set_rate_limit(None);
    env.fake.clear_log();
    let s = Supervisor::start(env).await;
    let st = s
        .status_when("v1", |st| st.images[0].current_digest.is_some())
        .await;
    assert_eq!(st.images[0].current_digest, Some(v1.to_string()));
    let ranges: Vec<String> = s
        .env
        .fake
        .requests_to(ServerName::EastUs)
        .into_iter()
        .filter_map(|r| r.range)
        .collect();
    assert_eq!(ranges, vec![format!("bytes={checkpoint}-")]);
    s.stop().await;
}
