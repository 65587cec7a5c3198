//! fleet-sim: hundreds of edgepull daemons in one process against one fake ACR, through
//! simulated hours, to measure what a fleet costs the registry (docs/fleet.md).
//!
//! `cargo run --release --example fleet-sim -- --devices 500 --out docs/fleet`
//!
//! Each device is a real supervisor (`edgepull::daemon::run`) with its own store, config
//! and device-id file; all of them poll one `edgepull_testkit::FakeRegistry`. Time is
//! simulated: Tokio's clock is paused and the wall clock is virtual (`clock`), so an hour
//! takes seconds. It measures the steady state (requests per device per poll), two
//! rollouts (`window_secs` 0 and `--window`: the registry's request rate, and each device's
//! adoption time against `first_seen + slot` from `edgepull_core::rollout`), and an outage
//! (503, then 429 with `Retry-After`, then recovery). It prints a summary, and with `--out`
//! writes `fleet-sim.json` and SVG charts.
//!
//! Modules: `clock` (the virtual wall clock), `fleet` (the devices and the stepping),
//! `measure` (request kinds, series, adoption checks), `scenario` (the phases and the
//! report), `summary` (the printed summary), `charts` and `svg` (the charts).

mod charts;
mod clock;
mod fleet;
mod measure;
mod scenario;
mod summary;
mod svg;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use scenario::{OutagePlan, Plan, RunPlan};

/// Simulate a fleet of edgepull daemons against one fake registry.
#[derive(Debug, Parser)]
#[command(name = "fleet-sim")]
struct Args {
    /// Devices in the fleet.
    #[arg(long, default_value_t = 500)]
    devices: usize,
    /// Write fleet-sim.json and the charts (SVG) into this directory.
    #[arg(long)]
    out: Option<PathBuf>,
    /// `sync.interval_secs` of every device.
    #[arg(long, default_value_t = 300)]
    interval: u64,
    /// `sync.jitter` of every device.
    #[arg(long, default_value_t = 0.2)]
    jitter: f64,
    /// `sync.backoff_max_secs` of every device.
    #[arg(long, default_value_t = 900)]
    backoff_max: u64,
    /// `rollout.window_secs` of the staged rollout (the first rollout uses 0).
    #[arg(long, default_value_t = 3600)]
    window: u64,
    /// Simulated seconds of steady state before the first rollout.
    #[arg(long, default_value_t = 3600)]
    steady: u64,
    /// Seconds the registry answers 503 in the outage.
    #[arg(long, default_value_t = 600)]
    outage_503: u64,
    /// Seconds it then answers 429 with `Retry-After`.
    #[arg(long, default_value_t = 1200)]
    outage_429: u64,
    /// The `Retry-After` of those 429s, seconds.
    #[arg(long, default_value_t = 600)]
    retry_after: u64,
    /// Devices start spread uniformly over this many seconds, as a fleet switched on at
    /// different times (default: one interval; 0: all at once).
    #[arg(long)]
    stagger: Option<u64>,
    /// Where the device directories go (default: a temporary directory, on /dev/shm when
    /// it exists). Emptied between runs and removed at the end.
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EDGEPULL_LOG").unwrap_or_else(|_| "error".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let args = Args::parse();
    clock::start();
    let tmp = match &args.dir {
        Some(_) => None,
        None => {
            let shm = std::path::Path::new("/dev/shm");
            let mut b = tempfile::Builder::new();
            b.prefix("fleet-sim-");
            Some(
                if shm.is_dir() {
                    b.tempdir_in(shm)
                } else {
                    b.tempdir()
                }
                .expect("temporary directory"),
            )
        }
    };
    let root = args
        .dir
        .clone()
        .unwrap_or_else(|| tmp.as_ref().map(|t| t.path().join("devices")).unwrap_or_default());
    let plan = Plan {
        devices: args.devices,
        interval_secs: args.interval,
        jitter: args.jitter,
        backoff_max_secs: args.backoff_max,
        stagger_secs: args.stagger.unwrap_or(args.interval),
        layers: vec![16 * 1024, 4 * 1024],
        tail_secs: 600,
        runs: vec![
            RunPlan {
                window_secs: 0,
                steady_secs: args.steady,
                rollout: true,
                outage: Some(OutagePlan {
                    unavailable_secs: args.outage_503,
                    throttled_secs: args.outage_429,
                    retry_after_secs: args.retry_after,
                }),
            },
            RunPlan {
                window_secs: args.window,
                steady_secs: 0,
                rollout: true,
                outage: None,
            },
        ],
        root,
    };
    let began = std::time::Instant::now();
    let report = scenario::run(&plan);
    let run = summary::RunInfo::measure(began.elapsed(), std::env::args().collect());
    let text = summary::render(&report, &run);
    print!("{text}");
    if let Some(out) = &args.out {
        if let Err(e) = summary::write(out, &report, &run).and_then(|()| charts::write(out, &report)) {
            eprintln!("fleet-sim: cannot write {}: {e}", out.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", out.display());
    }
    if summary::sound(&report) {
        ExitCode::SUCCESS
    } else {
        eprintln!("fleet-sim: a check failed (see the summary)");
        ExitCode::FAILURE
    }
}
