//! The fleet simulation's core measurement, small and cheap: 20 real daemon supervisors in
//! this process against one fake registry, on simulated time (the modules of
//! `examples/fleet-sim`, included here). While the tag does not move, every poll of every
//! device costs exactly one `HEAD` and nothing else. After the tag moves with a staged
//! rollout window, every device adopts at `first_seen + slot`, with the slot recomputed
//! here from the documented formula (SHA-256 by hand, not the core's function), and the
//! order of adoption follows those times.

#[path = "../examples/fleet-sim/clock.rs"]
mod clock;
#[allow(dead_code)]
#[path = "../examples/fleet-sim/fleet.rs"]
mod fleet;
#[allow(dead_code)]
#[path = "../examples/fleet-sim/measure.rs"]
mod measure;
#[allow(dead_code)]
#[path = "../examples/fleet-sim/scenario.rs"]
mod scenario;

use std::collections::BTreeMap;

use scenario::{Plan, RunPlan};
use sha2::{Digest as _, Sha256};

const DEVICES: usize = 20;
const WINDOW: u64 = 600;

/// `u64::from_be_bytes(SHA-256(device_id + "\n" + digest)[0..8]) % window` (README).
fn slot_by_hand(device_id: &str, digest: &str, window: u64) -> u64 {
    let sum = Sha256::digest(format!("{device_id}\n{digest}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&sum[..8]);
    u64::from_be_bytes(first) % window
}

#[test]
fn every_poll_is_one_head_and_every_device_adopts_at_first_seen_plus_slot() {
    clock::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let plan = Plan {
        devices: DEVICES,
        interval_secs: 60,
        jitter: 0.2,
        backoff_max_secs: 60,
        stagger_secs: 60,
        layers: vec![2048],
        tail_secs: 0,
        runs: vec![RunPlan {
            window_secs: WINDOW,
            steady_secs: 300,
            rollout: true,
            outage: None,
        }],
        root: dir.path().join("devices"),
    };
    let report = scenario::run(&plan);
    assert_eq!(report.stalled_steps, 0, "a step moved on with a busy device");
    let run = &report.runs[0];

    // Steady state: about 5 polls per device (300 s / 60 s ± 20 %), each one HEAD.
    let steady = run.steady.as_ref().expect("steady state measured");
    assert!(steady.polls_per_device.min >= 3, "{:?}", steady.polls_per_device);
    let want = BTreeMap::from([("HEAD manifest (login) 200".to_string(), steady.polls)]);
    assert_eq!(steady.requests, want, "requests while the tag did not move");
    assert_eq!(
        steady.steps_not_one_head_per_poll, 0,
        "every step: one HEAD per poll that ended in it"
    );

    // The rollout: each device adopts exactly at first_seen + slot.
    let ro = run.rollout.as_ref().expect("rollout measured");
    assert_eq!(ro.adopted, DEVICES, "every device adopted");
    let mut times = Vec::new();
    for d in &ro.devices {
        let slot = slot_by_hand(&d.device_id, &ro.digest, WINDOW);
        assert_eq!(d.slot, slot, "{}: the slot formula", d.device_id);
        let first_seen = d.first_seen.expect("first seen");
        let adopted = d.adopted.expect("adopted");
        assert_eq!(
            adopted,
            first_seen + slot,
            "{}: adopted {adopted} s after the move, first seen {first_seen} s, slot {slot} s",
            d.device_id
        );
        times.push((first_seen + slot, adopted, &d.device_id));
    }
    // Adoption order follows first_seen + slot, and the window spreads it out.
    times.sort_by_key(|t| (t.1, t.0));
    assert!(times.windows(2).all(|w| w[0].0 <= w[1].0), "{times:?}");
    assert!(
        times[DEVICES - 1].1 - times[0].1 > WINDOW / 2,
        "adoptions not spread over the window: {times:?}"
    );
    assert!(ro.heads_per_poll == 1.0, "{}", ro.heads_per_poll);
    assert_eq!(run.stopped.get("stopped"), Some(&DEVICES));
}
