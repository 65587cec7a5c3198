//! The charts written with `--out`: what each one plots from a [`Report`].
//!
//! Owns: the choice of series, axes and file names (`steady-rate.svg`, `rollout-rate.svg`,
//! `adoption.svg`, `slots.svg`, `outage-rate.svg`). Drawing is `svg`'s.

use std::path::Path;

use crate::measure::Series;
use crate::scenario::{Report, Rollout};
use crate::svg::{Band, Chart, Line};

const COLORS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

fn line(name: String, color: &'static str, points: Vec<(f64, f64)>) -> Line {
    Line {
        name,
        color,
        points,
        dots: false,
        dashed: false,
    }
}

/// ReadOps per simulated minute, plotted at the minute's start.
fn readops(series: &Series) -> Vec<(f64, f64)> {
    series
        .minutes
        .iter()
        .map(|m| (m.minute as f64, m.readops as f64))
        .collect()
}

fn rollouts(r: &Report) -> Vec<&Rollout> {
    r.runs.iter().filter_map(|run| run.rollout.as_ref()).collect()
}

fn steady_rate(r: &Report) -> Option<Chart> {
    let s = r.runs.iter().find_map(|run| run.steady.as_ref())?;
    let expected = 60.0 * r.devices as f64 / r.interval_secs as f64;
    let n = s.series.minutes.len() as f64;
    Some(Chart {
        title: format!(
            "Steady state: {} devices, interval {} s, tag unchanged",
            r.devices, r.interval_secs
        ),
        x_label: "simulated minutes".into(),
        y_label: "ReadOps per minute (all HEAD)".into(),
        lines: vec![
            line("ReadOps per minute".into(), COLORS[0], readops(&s.series)),
            Line {
                dashed: true,
                ..line(
                    format!("60 x devices / interval = {expected:.0}"),
                    "#555",
                    vec![(0.0, expected), (n, expected)],
                )
            },
        ],
        bands: Vec::new(),
    })
}

fn rollout_rate(r: &Report) -> Chart {
    let lines = rollouts(r)
        .iter()
        .zip(COLORS)
        .map(|(ro, c)| line(format!("window_secs {}", ro.window_secs), c, readops(&ro.series)))
        .collect();
    Chart {
        title: format!(
            "Registry ReadOps per minute after the tag moves ({} devices, interval {} s)",
            r.devices, r.interval_secs
        ),
        x_label: "minutes since the tag moved".into(),
        y_label: "ReadOps per minute".into(),
        lines,
        bands: Vec::new(),
    }
}

fn adoption(r: &Report) -> Chart {
    let lines = rollouts(r)
        .iter()
        .zip(COLORS)
        .map(|(ro, c)| {
            let mut times: Vec<u64> = ro.devices.iter().filter_map(|d| d.adopted).collect();
            times.sort_unstable();
            let n = ro.devices.len().max(1) as f64;
            let mut pts = vec![(0.0, 0.0)];
            for (i, t) in times.iter().enumerate() {
                let x = *t as f64 / 60.0;
                pts.push((x, 100.0 * i as f64 / n));
                pts.push((x, 100.0 * (i + 1) as f64 / n));
            }
            line(format!("window_secs {}", ro.window_secs), c, pts)
        })
        .collect();
    Chart {
        title: "Share of the fleet on the new version".into(),
        x_label: "minutes since the tag moved".into(),
        y_label: "% of devices adopted".into(),
        lines,
        bands: Vec::new(),
    }
}

fn slots(r: &Report) -> Option<Chart> {
    let ro = rollouts(r).into_iter().find(|ro| ro.window_secs > 0)?;
    let pts: Vec<(f64, f64)> = ro
        .devices
        .iter()
        .filter_map(|d| Some((d.expected? as f64 / 60.0, d.adopted? as f64 / 60.0)))
        .collect();
    let max = pts.iter().map(|p| p.0.max(p.1)).fold(1.0, f64::max);
    Some(Chart {
        title: format!(
            "Adoption time vs first_seen + slot (window_secs {}, max deviation {} s)",
            ro.window_secs,
            ro.max_deviation_secs.map_or("-".into(), |d| d.to_string())
        ),
        x_label: "first_seen + slot(device_id, digest, window), minutes after the move".into(),
        y_label: "adopted, minutes after the move".into(),
        lines: vec![
            Line {
                dashed: true,
                ..line(
                    "adopted = first_seen + slot".into(),
                    "#999",
                    vec![(0.0, 0.0), (max, max)],
                )
            },
            Line {
                dots: true,
                ..line("one device".into(), COLORS[0], pts)
            },
        ],
        bands: Vec::new(),
    })
}

fn outage_rate(r: &Report) -> Option<Chart> {
    let o = r.runs.iter().find_map(|run| run.outage.as_ref())?;
    let p = &o.plan;
    let a = p.unavailable_secs as f64 / 60.0;
    let b = a + p.throttled_secs as f64 / 60.0;
    let pick = |f: fn(&crate::measure::Minute) -> u64| -> Vec<(f64, f64)> {
        o.series
            .minutes
            .iter()
            .map(|m| (m.minute as f64, f(m) as f64))
            .collect()
    };
    Some(Chart {
        title: format!(
            "Outage: {} devices, tag moved at minute 0; backoff_max_secs {}",
            r.devices, r.backoff_max_secs
        ),
        x_label: "minutes since the outage began".into(),
        y_label: "ReadOps per minute".into(),
        lines: vec![
            line("ReadOps (all answers)".into(), COLORS[0], pick(|m| m.readops)),
            line("of which 4xx/5xx".into(), COLORS[1], pick(|m| m.failed)),
        ],
        bands: vec![
            Band {
                from: 0.0,
                to: a,
                label: "503".into(),
                color: "#d62728",
            },
            Band {
                from: a,
                to: b,
                label: format!("429, Retry-After {}", p.retry_after_secs),
                color: "#ff7f0e",
            },
        ],
    })
}

/// Write every chart into `dir`.
pub(crate) fn write(dir: &Path, r: &Report) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let charts = [
        ("steady-rate.svg", steady_rate(r)),
        ("rollout-rate.svg", Some(rollout_rate(r))),
        ("adoption.svg", Some(adoption(r))),
        ("slots.svg", slots(r)),
        ("outage-rate.svg", outage_rate(r)),
    ];
    for (name, chart) in charts {
        if let Some(c) = chart {
            std::fs::write(dir.join(name), c.render())?;
        }
    }
    Ok(())
}
