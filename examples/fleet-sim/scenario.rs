//! The simulation's phases and what each one measures.
//!
//! Owns: the [`Plan`] (fleet size, schedule, which phases run), the images pushed, the
//! fault injection of the outage, and the [`Report`]. A run starts a fleet (every device's
//! first install), then, as planned: a steady state (nothing changes; every poll must cost
//! exactly one `HEAD`), a rollout (the tag moves; each device must adopt at `first_seen +
//! slot`), and an outage (503, then 429 with `Retry-After`, then recovery, with the tag
//! moved at its start). Never reads a real clock for a figure: every time is simulated.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use edgepull_core::oci::{Digest, Platform};
use edgepull_testkit::{AuthMode, FakeOptions, FakeRegistry, Knobs, random_bytes};
use serde::Serialize;

use crate::fleet::{Fleet, FleetConfig, Step};
use crate::measure::{Adoption, Canaries, DeviceAdoption, Kind, Series, Spread, Version, by_kind, merge};

const SECOND: Duration = Duration::from_secs(1);
/// The repository every device follows (see [`crate::fleet::IMAGE`]).
const REPO: &str = "app";

/// What to simulate.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub devices: usize,
    pub interval_secs: u64,
    pub jitter: f64,
    pub backoff_max_secs: u64,
    /// Devices start spread uniformly over this many seconds (0: all at once).
    pub stagger_secs: u64,
    /// Sizes of the arm64 image's layers, in bytes.
    pub layers: Vec<usize>,
    /// Simulated seconds recorded after a rollout's last adoption (the rate settling).
    pub tail_secs: u64,
    /// One fleet per run, started fresh, in order.
    pub runs: Vec<RunPlan>,
    /// Where the device directories go (emptied between runs).
    pub root: PathBuf,
}

/// One fleet's life.
#[derive(Debug, Clone)]
pub(crate) struct RunPlan {
    pub window_secs: u64,
    /// Simulated seconds of unchanged tag after the first install (0: none).
    pub steady_secs: u64,
    /// Move the tag once and follow the rollout.
    pub rollout: bool,
    /// Then an outage.
    pub outage: Option<OutagePlan>,
}

/// The registry's outage: 503 for a while, then 429 with `Retry-After`, then recovery.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct OutagePlan {
    pub unavailable_secs: u64,
    pub throttled_secs: u64,
    pub retry_after_secs: u64,
}

/// Everything measured.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub devices: usize,
    pub interval_secs: u64,
    pub jitter: f64,
    pub backoff_max_secs: u64,
    pub image: ImageInfo,
    pub runs: Vec<RunReport>,
    /// Simulated seconds stepped, over all runs.
    pub simulated_secs: u64,
    /// Steps that moved on with a device still busy (0 in a sound run).
    pub stalled_steps: u64,
    /// Notify datagrams lost and made up for from `status.json`.
    pub lost_notifications: u64,
}

/// The images pushed: a multi-arch index per version.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ImageInfo {
    pub platforms: Vec<String>,
    pub arm64_layer_bytes: Vec<usize>,
}

#[derive(Debug, Serialize)]
pub(crate) struct RunReport {
    pub window_secs: u64,
    /// Simulated seconds over which the devices started.
    pub install_secs: u64,
    /// Requests of every device's start and first install.
    pub install: BTreeMap<String, u64>,
    pub steady: Option<Steady>,
    pub rollout: Option<Rollout>,
    pub outage: Option<Outage>,
    /// How the daemons ended when stopped.
    pub stopped: BTreeMap<String, usize>,
}

/// Polling while nothing changes.
#[derive(Debug, Serialize)]
pub(crate) struct Steady {
    pub secs: u64,
    /// Sync jobs (polls) that ended, all devices.
    pub polls: u64,
    pub polls_per_device: Spread,
    pub requests: BTreeMap<String, u64>,
    pub heads_per_poll: f64,
    pub readops_per_poll: f64,
    /// New TCP (TLS) connections per poll (the client's idle connections expire between
    /// polls).
    pub connections_per_poll: f64,
    /// Steps in which any device polled.
    pub steps_with_polls: u64,
    /// Steps whose requests were not exactly one `HEAD` per poll that ended in them.
    pub steps_not_one_head_per_poll: u64,
    pub readops_per_min_mean: f64,
    pub readops_per_min_peak: u64,
    pub series: Series,
}

/// One move of the tag.
#[derive(Debug, Serialize)]
pub(crate) struct Rollout {
    pub window_secs: u64,
    pub digest: String,
    pub adopted: usize,
    /// Seconds after the move when the last device adopted.
    pub last_adoption: Option<u64>,
    /// Largest `first_seen` (seconds after the move).
    pub last_first_seen: Option<u64>,
    /// Largest `|adopted − (first_seen + slot)|`, seconds.
    pub max_deviation_secs: Option<u64>,
    /// Devices whose announced `adopt_at` differs from `first_seen + slot`.
    pub announced_adopt_at_mismatches: usize,
    /// Device pairs adopted against the order of `first_seen + slot`.
    pub order_inversions: u64,
    pub canaries: Canaries,
    pub polls: u64,
    pub heads_per_poll: f64,
    pub requests: BTreeMap<String, u64>,
    /// Requests other than the poll's `HEAD`, per adopting device, by kind.
    pub update_cost_per_device: BTreeMap<String, f64>,
    /// The same, counting ACR ReadOps only.
    pub update_readops_per_device: f64,
    pub readops_per_min_peak: u64,
    /// Mean ReadOps per minute over the whole minutes from the first adoption to the last.
    pub readops_per_min_mean_while_adopting: f64,
    pub series: Series,
    pub devices: Vec<DeviceAdoption>,
}

/// The registry down, then throttling, then back.
#[derive(Debug, Serialize)]
pub(crate) struct Outage {
    pub plan: OutagePlan,
    /// Requests while it lasted (503 and 429 phases).
    pub requests: BTreeMap<String, u64>,
    pub requests_per_device: f64,
    pub polls_per_device: Spread,
    /// Of those, in the 503 part and in the 429 part.
    pub polls_per_device_unavailable: Spread,
    pub polls_per_device_throttled: Spread,
    /// Failure answers left queued when each part ended (must be more than 0: the
    /// registry failed every request of that part).
    pub injections_left: [usize; 2],
    /// Seconds after recovery until every device had adopted the version tagged at the
    /// outage's start; the median and 90th percentile device.
    pub converged_after_recovery: Option<u64>,
    pub adoption_after_recovery_p50: Option<u64>,
    pub adoption_after_recovery_p90: Option<u64>,
    pub adopted: usize,
    /// The busiest minute while the registry failed: `(minute since the outage began,
    /// ReadOps)`, and the busiest minute after recovery.
    pub peak_during: (u64, u64),
    pub peak_after_recovery: (u64, u64),
    pub series: Series,
}

fn platform(s: &str) -> Platform {
    Platform::parse(s).expect("valid platform")
}

/// Push a new version (random layers, so every version differs) as a multi-arch index
/// under `tag`.
fn push_version(fake: &FakeRegistry, tag: &str, layers: &[usize]) -> Version {
    let arm64 = layers.iter().map(|n| random_bytes(*n)).collect();
    let index = fake.push_index(
        REPO,
        tag,
        vec![
            (platform("linux/amd64"), vec![random_bytes(4096)]),
            (platform("linux/arm64"), arm64),
            (platform("linux/arm/v7"), vec![random_bytes(4096)]),
        ],
    );
    let body = fake.manifest(REPO, &index).expect("the index just pushed");
    let doc: serde_json::Value = serde_json::from_slice(&body).expect("index JSON");
    let arm64 = doc["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["platform"]["architecture"] == "arm64")
        .and_then(|m| m["digest"].as_str())
        .and_then(|d| Digest::parse(d).ok())
        .expect("an arm64 manifest in the index");
    Version { index, arm64 }
}

/// Run the whole plan on a current-thread runtime with paused time.
pub(crate) fn run(plan: &Plan) -> Report {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .max_blocking_threads(64)
        .build()
        .expect("runtime");
    rt.block_on(run_async(plan))
}

async fn run_async(plan: &Plan) -> Report {
    let fake = FakeRegistry::start_blocking(FakeOptions {
        auth: AuthMode::Token {
            user: "fleet-device".into(),
            pass: "fleet-device-password".into(),
        },
        knobs: Knobs {
            // Tokens and links age on the real clock; a long lifetime keeps renewals out
            // of the counts (docs/fleet.md adds them per token lifetime).
            token_ttl: Duration::from_secs(24 * 3600),
            ..Knobs::default()
        },
    });
    let mut report = Report {
        devices: plan.devices,
        interval_secs: plan.interval_secs,
        jitter: plan.jitter,
        backoff_max_secs: plan.backoff_max_secs,
        image: ImageInfo {
            platforms: vec!["linux/amd64".into(), "linux/arm64".into(), "linux/arm/v7".into()],
            arm64_layer_bytes: plan.layers.clone(),
        },
        runs: Vec::new(),
        simulated_secs: 0,
        stalled_steps: 0,
        lost_notifications: 0,
    };
    let mut version = 0;
    for run in &plan.runs {
        version += 1;
        let first = push_version(&fake, &format!("v{version}"), &plan.layers);
        fake.move_tag(REPO, "stable", first.index);
        let _ = std::fs::remove_dir_all(&plan.root);
        let cfg = FleetConfig {
            devices: plan.devices,
            interval_secs: plan.interval_secs,
            jitter: plan.jitter,
            backoff_max_secs: plan.backoff_max_secs,
            window_secs: run.window_secs,
            stagger_secs: plan.stagger_secs,
            root: plan.root.clone(),
        };
        let (mut fleet, install) = Fleet::start(&fake, &cfg).await;
        let mut install_requests = BTreeMap::new();
        for step in &install {
            merge(&mut install_requests, by_kind(&step.requests));
        }
        let mut out = RunReport {
            window_secs: run.window_secs,
            install_secs: fleet.now(),
            install: install_requests,
            steady: None,
            rollout: None,
            outage: None,
            stopped: BTreeMap::new(),
        };
        if run.steady_secs > 0 {
            out.steady = Some(steady(&mut fleet, run.steady_secs).await);
        }
        if run.rollout {
            version += 1;
            let next = push_version(&fake, &format!("v{version}"), &plan.layers);
            fake.move_tag(REPO, "stable", next.index);
            out.rollout = Some(rollout(&mut fleet, plan, run.window_secs, next).await);
        }
        if let Some(o) = &run.outage {
            version += 1;
            let next = push_version(&fake, &format!("v{version}"), &plan.layers);
            out.outage = Some(outage(&mut fleet, plan, o, next).await);
        }
        report.simulated_secs += fleet.now();
        report.stalled_steps += fleet.stalled_steps;
        report.lost_notifications += fleet.lost_notifications;
        out.stopped = fleet.stop().await;
        report.runs.push(out);
    }
    let _ = std::fs::remove_dir_all(&plan.root);
    report
}

/// Whether `step`'s requests are exactly one `HEAD` per job that ended in it.
fn one_head_per_poll(step: &Step) -> bool {
    step.requests.len() == step.jobs && step.requests.iter().all(|r| Kind::of(r) == Kind::Head)
}

async fn steady(fleet: &mut Fleet<'_>, secs: u64) -> Steady {
    let before: Vec<u64> = fleet.devices.iter().map(|d| d.jobs).collect();
    let t0 = fleet.now();
    let mut series = Series::new(t0);
    let mut requests = BTreeMap::new();
    let (mut polls, mut steps_with_polls, mut bad_steps) = (0u64, 0u64, 0u64);
    let mut connections = 0u64;
    while fleet.now() < t0 + secs {
        let step = fleet.step(SECOND).await;
        series.add(&step);
        if step.jobs > 0 || !step.requests.is_empty() {
            steps_with_polls += 1;
            if !one_head_per_poll(&step) {
                bad_steps += 1;
            }
        }
        polls += step.jobs as u64;
        connections += step.connections;
        merge(&mut requests, by_kind(&step.requests));
    }
    let per_device: Vec<u64> = fleet
        .devices
        .iter()
        .zip(&before)
        .map(|(d, b)| d.jobs - b)
        .collect();
    let count = |pred: &dyn Fn(&str) -> bool| -> u64 {
        requests.iter().filter(|(k, _)| pred(k)).map(|(_, v)| v).sum()
    };
    let heads = count(&|k| k.starts_with(Kind::Head.label()));
    let readops = count(&|k| {
        [Kind::Head, Kind::ManifestGet, Kind::BlobGet]
            .iter()
            .any(|kind| k.starts_with(kind.label()))
    });
    let per_poll = |n: u64| if polls == 0 { 0.0 } else { n as f64 / polls as f64 };
    Steady {
        secs,
        polls,
        polls_per_device: Spread::of(&per_device),
        heads_per_poll: per_poll(heads),
        readops_per_poll: per_poll(readops),
        connections_per_poll: per_poll(connections),
        requests,
        steps_with_polls,
        steps_not_one_head_per_poll: bad_steps,
        readops_per_min_mean: series.mean_readops(),
        readops_per_min_peak: series.peak_readops(),
        series,
    }
}

/// The latest a rollout may take: one poll to see the move, the window, one more poll.
fn rollout_limit(plan: &Plan, window_secs: u64) -> u64 {
    let poll = (plan.interval_secs as f64 * (1.0 + plan.jitter)).ceil() as u64;
    2 * poll + window_secs + 60
}

async fn rollout(fleet: &mut Fleet<'_>, plan: &Plan, window_secs: u64, target: Version) -> Rollout {
    let mut adoption = Adoption::new(fleet, target, window_secs);
    let t0 = fleet.now();
    let mut series = Series::new(t0);
    let mut requests = BTreeMap::new();
    let mut polls = 0u64;
    let limit = rollout_limit(plan, window_secs);
    loop {
        let step = fleet.step(SECOND).await;
        adoption.observe(fleet, &step).await;
        series.add(&step);
        polls += step.jobs as u64;
        merge(&mut requests, by_kind(&step.requests));
        let elapsed = fleet.now() - t0;
        if adoption.settled(elapsed, plan.tail_secs) || elapsed > limit + plan.tail_secs {
            break;
        }
    }
    let adopted = adoption.adopted_count();
    let mut cost: BTreeMap<String, f64> = BTreeMap::new();
    let (mut heads, mut update_readops) = (0u64, 0u64);
    for (k, v) in &requests {
        if k.starts_with(Kind::Head.label()) {
            heads += v;
            continue;
        }
        if [Kind::ManifestGet, Kind::BlobGet]
            .iter()
            .any(|kind| k.starts_with(kind.label()))
        {
            update_readops += v;
        }
        *cost.entry(k.clone()).or_default() += *v as f64 / adopted.max(1) as f64;
    }
    let first = adoption
        .devices
        .iter()
        .filter_map(|d| d.adopted)
        .min()
        .unwrap_or(0);
    let last = adoption.last_adoption().unwrap_or(0);
    let whole: Vec<u64> = series
        .minutes
        .iter()
        .filter(|m| m.minute * 60 >= first && (m.minute + 1) * 60 <= last)
        .map(|m| m.readops)
        .collect();
    Rollout {
        window_secs,
        digest: adoption.target.index.to_string(),
        adopted,
        last_adoption: adoption.last_adoption(),
        last_first_seen: adoption.devices.iter().filter_map(|d| d.first_seen).max(),
        max_deviation_secs: adoption.max_deviation(),
        announced_adopt_at_mismatches: adoption.announced_mismatches(),
        order_inversions: adoption.order_inversions(),
        canaries: adoption.canaries(0.05),
        polls,
        heads_per_poll: if polls == 0 {
            0.0
        } else {
            heads as f64 / polls as f64
        },
        requests,
        update_cost_per_device: cost,
        update_readops_per_device: update_readops as f64 / adopted.max(1) as f64,
        readops_per_min_peak: series.peak_readops(),
        readops_per_min_mean_while_adopting: whole.iter().sum::<u64>() as f64 / whole.len().max(1) as f64,
        series,
        devices: adoption.devices,
    }
}

/// Queue `status` answers (with `retry_after`), 64 per device, replacing what was queued.
/// Backoff keeps a device far below 64 requests in any outage planned here; what is left
/// when the part ends is reported (`injections_left`, which must not be 0).
fn inject(fleet: &Fleet<'_>, status: u16, retry_after: Option<u64>) {
    let n = fleet.devices.len() * 64;
    let ra = retry_after.map(|s| s.to_string());
    fleet.fake.update_knobs(|k| {
        k.fail_next.clear();
        k.fail_next.extend(std::iter::repeat_n((status, ra), n));
    });
}

async fn outage(fleet: &mut Fleet<'_>, plan: &Plan, o: &OutagePlan, target: Version) -> Outage {
    inject(fleet, 503, None);
    fleet.fake.move_tag(REPO, "stable", target.index);
    let mut adoption = Adoption::new(fleet, target, 0);
    let t0 = fleet.now();
    let mut series = Series::new(t0);
    let mut requests = BTreeMap::new();
    let jobs = |f: &Fleet<'_>| -> Vec<u64> { f.devices.iter().map(|d| d.jobs).collect() };
    let start_jobs = jobs(fleet);
    let mut left = [0usize; 2];
    let mut mid_jobs = Vec::new();
    let parts = [
        (o.unavailable_secs, None),
        (o.throttled_secs, Some(o.retry_after_secs)),
    ];
    for (part, (secs, retry_after)) in parts.into_iter().enumerate() {
        if part == 1 {
            mid_jobs = jobs(fleet);
            inject(fleet, 429, retry_after);
        }
        let until = fleet.now() + secs;
        while fleet.now() < until {
            let step = fleet.step(SECOND).await;
            adoption.observe(fleet, &step).await;
            series.add(&step);
            merge(&mut requests, by_kind(&step.requests));
        }
        left[part] = fleet.fake.knobs().fail_next.len();
    }
    fleet.fake.update_knobs(|k| k.fail_next.clear());
    let end_jobs = jobs(fleet);
    let recovered = fleet.now() - t0;
    let limit = recovered + 2 * plan.backoff_max_secs.max(o.retry_after_secs) + rollout_limit(plan, 0);
    let total: u64 = requests.values().sum();
    loop {
        let step = fleet.step(SECOND).await;
        adoption.observe(fleet, &step).await;
        series.add(&step);
        let elapsed = fleet.now() - t0;
        if adoption.settled(elapsed, plan.tail_secs) || elapsed > limit + plan.tail_secs {
            break;
        }
    }
    let diff = |a: &[u64], b: &[u64]| -> Vec<u64> { a.iter().zip(b).map(|(x, y)| x - y).collect() };
    let mut after: Vec<u64> = adoption
        .devices
        .iter()
        .filter_map(|d| d.adopted.map(|a| a.saturating_sub(recovered)))
        .collect();
    after.sort_unstable();
    let split = (recovered / 60) as usize;
    let peak = |ms: &[crate::measure::Minute]| {
        ms.iter()
            .map(|m| (m.minute, m.readops))
            .max_by_key(|(minute, n)| (*n, std::cmp::Reverse(*minute)))
            .unwrap_or((0, 0))
    };
    let minutes = &series.minutes;
    let (during, later) = minutes.split_at(split.min(minutes.len()));
    let pct = |p: f64| {
        after
            .get(((after.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
    };
    Outage {
        plan: o.clone(),
        requests,
        requests_per_device: total as f64 / fleet.devices.len().max(1) as f64,
        polls_per_device: Spread::of(&diff(&end_jobs, &start_jobs)),
        polls_per_device_unavailable: Spread::of(&diff(&mid_jobs, &start_jobs)),
        polls_per_device_throttled: Spread::of(&diff(&end_jobs, &mid_jobs)),
        injections_left: left,
        converged_after_recovery: adoption.all_adopted().then(|| after.last().copied()).flatten(),
        adoption_after_recovery_p50: pct(0.5),
        adoption_after_recovery_p90: pct(0.9),
        adopted: adoption.adopted_count(),
        peak_during: peak(during),
        peak_after_recovery: peak(later),
        series,
    }
}
