//! `link.max_bytes_per_sec` / `pull --max-rate` against the real registry and nginx: a
//! 64 MiB layer under a 4 MiB/s cap takes 16 s (± a noisy machine), and no second of
//! received bytes (sampled from the ingest file every 20 ms) carries more than the cap.

use std::time::{Duration, Instant};

use super::support::oci_image::*;
use super::support::world::*;

const MIB: u64 = 1 << 20;

#[test]
fn a_capped_pull_takes_size_over_rate_and_never_bursts_above_the_cap() {
    const CAP: u64 = 4 * MIB;
    const LAYER: usize = 64 * MIB as usize;
    let Some(w) = World::start(WorldOptions::default()) else {
        return;
    };
    let mut layout = Layout::create(&w.path().join("src"));
    let image = layout.image("capped", &LINUX_ARM64, vec![random_files("capped", 1, LAYER)]);
    w.push(&layout.dir, "capped", false);
    let layer = image.layers[0].clone();
    let reg = w.registry("login", AuthKind::Token, Some("eastus"));
    let store = w.path().join("store");
    let cfg = w.config(&reg, AuthKind::Token, &store, |_| {});
    let reference = w.reference(&reg, "capped");
    let data = store
        .join("ingest")
        .join(format!("sha256-{}", layer.digest.hex()))
        .join("data");
    let done = store.join("oci/blobs/sha256").join(layer.digest.hex());
    let log = w.path().join("edgepull-capped.log");

    let start = Instant::now();
    let mut run = w.spawn_edgepull(
        &cfg,
        &["pull", "--no-progress", "--max-rate", "4MiB", &reference],
        &log,
    );
    // (time since start, bytes of the layer received)
    let mut samples: Vec<(f64, u64)> = Vec::new();
    let status = loop {
        let t = start.elapsed().as_secs_f64();
        let got = if done.exists() {
            layer.size
        } else {
            std::fs::metadata(&data).map_or(0, |m| m.len())
        };
        samples.push((t, got));
        if let Some(status) = run.exited() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the capped pull took over 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = start.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.success(),
        "edgepull pull --max-rate failed ({status}):\n{text}"
    );
    assert!(done.exists(), "the layer is stored");

    // Time from the first to the last byte of the layer, and the whole command.
    let first = samples.iter().find(|s| s.1 > 0).map_or(0.0, |s| s.0);
    let last = samples
        .iter()
        .find(|s| s.1 == layer.size)
        .map_or(elapsed, |s| s.0);
    let at = |t: f64| -> u64 { samples.iter().take_while(|s| s.0 <= t).last().map_or(0, |s| s.1) };
    let ideal = layer.size as f64 / CAP as f64;
    let slice_max = |width: f64| -> (f64, f64) {
        // Every slice start on a 100 ms grid from the first byte.
        let mut max: f64 = 0.0;
        let mut min = f64::MAX;
        let mut s = first;
        while s + width <= last {
            let bytes = at(s + width).saturating_sub(at(s)) as f64 / width;
            max = max.max(bytes);
            min = min.min(bytes);
            s += 0.1;
        }
        (max / CAP as f64, min / CAP as f64)
    };
    let (max1, min1) = slice_max(1.0);
    let (max10, min10) = slice_max(10.0);
    eprintln!(
        "capped pull: {} bytes under {CAP} B/s: command {elapsed:.2} s, first→last byte {:.2} s \
         (ideal {ideal:.2} s, achieved {:.3} of the cap); 1 s slices {min1:.3}..{max1:.3} of the cap, \
         10 s slices {min10:.3}..{max10:.3}",
        layer.size,
        last - first,
        layer.size as f64 / (last - first) / CAP as f64,
    );
    assert!(
        (14.5..=20.0).contains(&elapsed),
        "64 MiB at 4 MiB/s took {elapsed:.2} s, expected about {ideal:.1} s:\n{text}"
    );
    // The file grows in the ingest's write batches (up to 256 KiB, 6 % of the cap) and is
    // sampled every 20 ms (2 %), at both ends of a slice: a 1 s slice reads up to ~±10 %
    // off even when the bytes arrive evenly; 10 s slices show the cap to within 1 %.
    assert!(max1 <= 1.15, "a 1 s slice carried {max1:.3} × the cap");
    assert!(max10 <= 1.05, "a 10 s slice carried {max10:.3} × the cap");
}
