//! The printed summary, the JSON file, and the checks a run must pass.
//!
//! Owns: how a [`Report`] reads on stdout (every figure docs/fleet.md quotes comes from
//! here), `fleet-sim.json`, and [`sound`]. Never measures anything itself.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::scenario::{Outage, Report, Rollout, Steady};

/// About this run of the program (real time, memory, host).
#[derive(Debug, Serialize)]
pub(crate) struct RunInfo {
    pub command: Vec<String>,
    pub real_secs: f64,
    /// `VmHWM` of this process, KiB.
    pub peak_rss_kib: Option<u64>,
    pub cpu: Option<String>,
    pub cores: usize,
}

impl RunInfo {
    pub(crate) fn measure(real: Duration, command: Vec<String>) -> Self {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let peak_rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok());
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string());
        Self {
            command,
            real_secs: real.as_secs_f64(),
            peak_rss_kib,
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

fn kinds(out: &mut String, indent: &str, m: &BTreeMap<String, u64>) {
    for (k, v) in m {
        let _ = writeln!(out, "{indent}{k}: {v}");
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or("-".to_string(), |v| v.to_string())
}

fn steady(out: &mut String, s: &Steady, devices: usize, interval_secs: u64) {
    let p = &s.polls_per_device;
    let _ = writeln!(
        out,
        "  steady state, {} s simulated, tag unchanged: {} polls (per device min {} / median {} / max {})",
        s.secs, s.polls, p.min, p.median, p.max
    );
    let _ = writeln!(out, "    requests by kind and status:");
    kinds(out, "      ", &s.requests);
    let _ = writeln!(
        out,
        "    HEAD per poll {:.3}; ReadOps per poll {:.3}; new TLS connections per poll {:.3}; steps with polls {}, of which not exactly one HEAD per poll: {}",
        s.heads_per_poll,
        s.readops_per_poll,
        s.connections_per_poll,
        s.steps_with_polls,
        s.steps_not_one_head_per_poll
    );
    let _ = writeln!(
        out,
        "    ReadOps/min: mean {:.1}, peak {} (60 x {devices} devices / {interval_secs} s = {:.1})",
        s.readops_per_min_mean,
        s.readops_per_min_peak,
        60.0 * devices as f64 / interval_secs.max(1) as f64
    );
}

fn rollout(out: &mut String, r: &Rollout, devices: usize) {
    let _ = writeln!(
        out,
        "  rollout, window_secs {}, tag moved to {}:",
        r.window_secs,
        &r.digest[..19]
    );
    let _ = writeln!(
        out,
        "    adopted {}/{devices}; last first_seen {} s and last adoption {} s after the move",
        r.adopted,
        opt(r.last_first_seen),
        opt(r.last_adoption)
    );
    let _ = writeln!(
        out,
        "    max |adopted - (first_seen + slot)| = {} s; adoption-order inversions {}; announced adopt_at != first_seen + slot: {}",
        opt(r.max_deviation_secs),
        r.order_inversions,
        r.announced_adopt_at_mismatches
    );
    let c = &r.canaries;
    if r.window_secs > 0 {
        let _ = writeln!(
            out,
            "    canaries ({:.0} % smallest slots: {} devices, slots <= {} s): last canary adopted {} s; first other device {} s, median other {} s; {} of the first {} adopters are canaries; Spearman(slot, adoption time) {:.3}",
            c.share * 100.0,
            c.count,
            c.max_slot,
            opt(c.last_canary_adopted),
            opt(c.first_other_adopted),
            c.median_other_adopted,
            c.first_adopters_that_are_canaries,
            c.count,
            c.slot_adoption_rank_correlation
        );
    }
    let _ = writeln!(
        out,
        "    polls {}, HEAD per poll {:.3}; ReadOps/min peak {}, mean {:.1} over the whole minutes from the first adoption to the last",
        r.polls, r.heads_per_poll, r.readops_per_min_peak, r.readops_per_min_mean_while_adopting
    );
    let _ = writeln!(out, "    per adopting device, besides the poll's HEAD:");
    for (k, v) in &r.update_cost_per_device {
        let _ = writeln!(out, "      {k}: {v:.3}");
    }
    let _ = writeln!(
        out,
        "    update ReadOps per device (manifest GETs + blob GETs): {:.3}",
        r.update_readops_per_device
    );
}

fn outage(out: &mut String, o: &Outage, devices: usize) {
    let p = &o.plan;
    let _ = writeln!(
        out,
        "  outage: 503 for {} s, then 429 (Retry-After: {}) for {} s, then recovery; the tag moved at its start",
        p.unavailable_secs, p.retry_after_secs, p.throttled_secs
    );
    let _ = writeln!(out, "    requests during the outage:");
    kinds(out, "      ", &o.requests);
    let s = |x: &crate::measure::Spread| format!("min {} / median {} / max {}", x.min, x.median, x.max);
    let _ = writeln!(
        out,
        "    requests per device during the outage {:.2}; polls per device {} (503 part {}; 429 part {})",
        o.requests_per_device,
        s(&o.polls_per_device),
        s(&o.polls_per_device_unavailable),
        s(&o.polls_per_device_throttled)
    );
    let _ = writeln!(
        out,
        "    ReadOps/min: busiest minute of the outage {} (minute {}), busiest after recovery {} (minute {})",
        o.peak_during.1, o.peak_during.0, o.peak_after_recovery.1, o.peak_after_recovery.0
    );
    let _ = writeln!(
        out,
        "    after recovery: {}/{devices} adopted; all converged {} s after recovery (p50 {} s, p90 {} s); failure answers left queued {:?}",
        o.adopted,
        opt(o.converged_after_recovery),
        opt(o.adoption_after_recovery_p50),
        opt(o.adoption_after_recovery_p90),
        o.injections_left
    );
}

/// The summary text.
pub(crate) fn render(r: &Report, run: &RunInfo) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "fleet-sim: {} devices, sync.interval_secs {}, jitter {}, backoff_max_secs {}; image: index of {} platforms, arm64 layers {:?} bytes",
        r.devices,
        r.interval_secs,
        r.jitter,
        r.backoff_max_secs,
        r.image.platforms.len(),
        r.image.arm64_layer_bytes
    );
    let _ = writeln!(
        out,
        "simulated {} s in {:.1} s real on {} cores ({}); peak RSS {} KiB; stalled steps {}; lost notify datagrams {}",
        r.simulated_secs,
        run.real_secs,
        run.cores,
        run.cpu.as_deref().unwrap_or("unknown CPU"),
        opt(run.peak_rss_kib),
        r.stalled_steps,
        r.lost_notifications
    );
    for (i, run) in r.runs.iter().enumerate() {
        let _ = writeln!(out, "run {}: rollout.window_secs {}", i + 1, run.window_secs);
        let _ = writeln!(
            out,
            "  start: devices switched on over {} s, first install; requests:",
            run.install_secs
        );
        kinds(&mut out, "    ", &run.install);
        if let Some(s) = &run.steady {
            steady(&mut out, s, r.devices, r.interval_secs);
        }
        if let Some(ro) = &run.rollout {
            rollout(&mut out, ro, r.devices);
        }
        if let Some(o) = &run.outage {
            outage(&mut out, o, r.devices);
        }
        let _ = writeln!(out, "  daemons stopped: {:?}", run.stopped);
    }
    let _ = writeln!(out, "checks: {}", if sound(r) { "all passed" } else { "FAILED" });
    out
}

/// Whether the run shows what it must: one HEAD per poll in the steady state, every device
/// adopting each rollout exactly at `first_seen + slot`, the outage injected throughout and
/// converged, and no step that moved on with a busy device.
pub(crate) fn sound(r: &Report) -> bool {
    let runs_ok = r.runs.iter().all(|run| {
        let steady = run
            .steady
            .as_ref()
            .is_none_or(|s| s.polls > 0 && s.steps_not_one_head_per_poll == 0 && s.heads_per_poll == 1.0);
        let rollout = run.rollout.as_ref().is_none_or(|ro| {
            ro.adopted == r.devices
                && ro.max_deviation_secs == Some(0)
                && ro.order_inversions == 0
                && ro.announced_adopt_at_mismatches == 0
        });
        let outage = run
            .outage
            .as_ref()
            .is_none_or(|o| o.adopted == r.devices && o.injections_left.iter().all(|n| *n > 0));
        steady && rollout && outage && run.stopped.keys().all(|k| k == "stopped")
    });
    runs_ok && r.stalled_steps == 0
}

/// Write `fleet-sim.json` into `dir`.
pub(crate) fn write(dir: &Path, r: &Report, run: &RunInfo) -> std::io::Result<()> {
    #[derive(Serialize)]
    struct File<'a> {
        run: &'a RunInfo,
        report: &'a Report,
    }
    std::fs::create_dir_all(dir)?;
    let mut body = serde_json::to_vec_pretty(&File { run, report: r }).map_err(std::io::Error::other)?;
    body.push(b'\n');
    std::fs::write(dir.join("fleet-sim.json"), body)
}
