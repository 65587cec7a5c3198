//! Staged rollouts end to end: `edgepull run` subprocesses with different device ids against
//! one fake registry, in real time (a 20 s window). Each device adopts a moved tag at
//! `first_seen + slot` (the slot from `edgepull_core::rollout::slot`, the same formula the
//! test computes), never before; `first_seen` survives a SIGKILL; a tag moved back cancels
//! the pending digest; SIGUSR1 checks without skipping the wait and SIGUSR2 skips it.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use edgepull_core::oci::{Digest, Platform};
use edgepull_core::rollout::slot;
use edgepull_testkit::{FakeRegistry, random_bytes};
use serde_json::{Value, json};

use common::device::{Device, token_registry};

/// How late an adoption may be after its slot: the 1 s poll plus the pull.
const LATE: f64 = 2.5;

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn push(fake: &FakeRegistry, tag: &str) -> (Digest, Vec<Digest>) {
    let (d, blobs) = fake.push_image_for(
        "app",
        tag,
        &Platform::parse("linux/arm64").unwrap(),
        vec![random_bytes(4096)],
    );
    (d, blobs.iter().map(|b| b.digest).collect())
}

/// A device id `prefix-N` whose slots for each `(digest, range)` fall in the range.
fn device_id(prefix: &str, window: u64, want: &[(Digest, std::ops::RangeInclusive<u64>)]) -> String {
    (0..100_000)
        .map(|i| format!("{prefix}-{i}"))
        .find(|id| want.iter().all(|(d, r)| r.contains(&slot(id, d, window))))
        .expect("a device id with the wanted slots")
}

/// A device with id `id` and the `rollout` section (its `device_id_file` added).
fn device(fake: &FakeRegistry, id: &str, rollout: Value) -> Device {
    Device::new(fake, |v, dir| {
        let id_file = dir.join("machine-id");
        std::fs::write(&id_file, format!("{id}\n")).unwrap();
        let mut rollout = rollout;
        rollout["device_id_file"] = json!(id_file);
        v["rollout"] = rollout;
    })
}

/// Poll `devices` every 20 ms until `done` holds for all, or fail after `limit`.
#[track_caller]
fn wait_all(devices: &[&Device], what: &str, limit: Duration, mut done: impl FnMut(&Device) -> bool) {
    let start = Instant::now();
    loop {
        if devices.iter().all(|d| done(d)) {
            return;
        }
        if start.elapsed() > limit {
            let d = devices.iter().find(|d| !done(d)).unwrap();
            d.fail(&format!("timed out after {limit:?} waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Poll until `d`'s current digest is `want`; the wall-clock time it was first seen so.
#[track_caller]
fn adopted_at(d: &Device, want: &Digest, limit: Duration) -> f64 {
    let start = Instant::now();
    while start.elapsed() < limit {
        if d.current().as_deref() == Some(&want.to_string()) {
            return unix_now();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    d.fail(&format!("{want} not adopted within {limit:?}"))
}

#[test]
fn two_devices_adopt_at_their_own_slots_across_a_restart_and_a_tag_moved_back_cancels() {
    let window = 20;
    let fake = token_registry();
    let (v1, _) = push(&fake, "stable");
    let (v2, v2_blobs) = push(&fake, "candidate-2");
    let (v3, _) = push(&fake, "candidate-3");
    // A early, B late for v2 (so B can be killed well before its slot); both late enough
    // for v3 that the tag is moved back first.
    let a_id = device_id("device-a", window, &[(v2, 2..=5), (v3, 7..=10)]);
    let b_id = device_id("device-b", window, &[(v2, 12..=16), (v3, 7..=10)]);
    let (sa, sb) = (slot(&a_id, &v2, window), slot(&b_id, &v2, window));
    let rollout = json!({ "window_secs": window });
    let a = device(&fake, &a_id, rollout.clone());
    let mut b = device(&fake, &b_id, rollout);

    // Nothing installed yet: the first version is installed at once, whatever the slot.
    wait_all(&[&a, &b], "the first install", Duration::from_secs(10), |d| {
        d.current() == Some(v1.to_string())
    });

    // The tag moves: both see it, each waits for its own slot, without downloading.
    fake.move_tag("app", "stable", v2);
    wait_all(&[&a, &b], "v2 pending", Duration::from_secs(5), |d| {
        d.first_seen().is_some_and(|(dg, _)| dg == v2.to_string())
    });
    let (_, fa) = a.first_seen().unwrap();
    let (_, fb) = b.first_seen().unwrap();
    for (d, first, s) in [(&a, fa, sa), (&b, fb, sb)] {
        wait_all(
            &[d],
            "status.json to show the pending digest",
            Duration::from_secs(3),
            |d| d.pending().is_some(),
        );
        assert_eq!(
            d.pending(),
            Some((v2.to_string(), first + s)),
            "status.json: pending digest and adopt_at"
        );
        assert_eq!(d.current(), Some(v1.to_string()));
    }
    assert!(
        !b.has_blob(&v2_blobs[0]),
        "without prefetch the download waits for the slot"
    );

    // SIGUSR1 checks now but does not skip the wait.
    let checks = b.image()["checks"].as_u64().unwrap();
    b.signal(rustix::process::Signal::USR1);
    wait_all(&[&b], "the SIGUSR1 check", Duration::from_secs(3), |d| {
        d.image()["checks"].as_u64().unwrap_or(0) > checks
    });
    assert_eq!(b.current(), Some(v1.to_string()), "SIGUSR1 skipped the wait");

    // A adopts at its slot, never before.
    let ta = adopted_at(&a, &v2, Duration::from_secs(window + 5));
    let due_a = (fa + sa) as f64;
    assert!(
        ta >= due_a && ta <= due_a + LATE,
        "A adopted at {ta}, slot at {due_a}"
    );
    assert_eq!(b.current(), Some(v1.to_string()), "B adopted with A");

    // B is killed mid-wait (SIGKILL) and restarted: it keeps its first_seen and adopts at
    // its original slot, not `restart + slot`.
    let due_b = (fb + sb) as f64;
    while unix_now() < fb as f64 + 5.0 {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(b.current(), Some(v1.to_string()));
    b.kill();
    b.start();
    let tb = adopted_at(&b, &v2, Duration::from_secs(window + 5));
    assert!(
        tb >= due_b && tb <= due_b + LATE,
        "B adopted at {tb}, slot at {due_b} (first seen {fb}, slot {sb})"
    );
    assert!(ta < tb);
    for d in [&a, &b] {
        wait_all(&[d], "the pending record cleared", Duration::from_secs(3), |d| {
            d.first_seen().is_none() && d.pending().is_none()
        });
    }

    // The tag moves to v3, then back to v2 before either slot: the pending v3 is cancelled.
    fake.move_tag("app", "stable", v3);
    wait_all(&[&a, &b], "v3 pending", Duration::from_secs(5), |d| {
        d.pending().is_some_and(|(dg, _)| dg == v3.to_string())
    });
    let last_due = [&a, &b].iter().map(|d| d.pending().unwrap().1).max().unwrap();
    fake.move_tag("app", "stable", v2);
    wait_all(
        &[&a, &b],
        "the pending v3 cancelled",
        Duration::from_secs(5),
        |d| d.pending().is_none() && d.first_seen().is_none(),
    );
    assert!(
        unix_now() < last_due as f64,
        "cancelled too late to prove anything"
    );
    while unix_now() < last_due as f64 + 1.5 {
        std::thread::sleep(Duration::from_millis(50));
    }
    for d in [&a, &b] {
        assert_eq!(d.current(), Some(v2.to_string()));
        assert!(d.pending().is_none());
    }
}

#[test]
fn prefetch_downloads_at_once_and_sigusr2_adopts_before_the_slot() {
    let window = 3600;
    let fake = token_registry();
    let (v1, _) = push(&fake, "stable");
    let (v2, v2_blobs) = push(&fake, "candidate");
    let id = device_id("device-p", window, &[(v2, 1800..=3599)]);
    let mut d = device(&fake, &id, json!({ "window_secs": window, "prefetch": true }));
    wait_all(&[&d], "the first install", Duration::from_secs(10), |d| {
        d.current() == Some(v1.to_string())
    });
    fake.move_tag("app", "stable", v2);
    // prefetch: the blobs are downloaded on first sight, the switch waits.
    wait_all(&[&d], "v2 prefetched", Duration::from_secs(10), |d| {
        d.pending().is_some() && v2_blobs.iter().all(|b| d.has_blob(b))
    });
    assert_eq!(d.current(), Some(v1.to_string()));
    // The prefetched version is recorded in index.json without a name, so the garbage
    // collection at start-up keeps its blobs.
    assert_eq!(pending_entries(&d), vec![v2.to_string()]);
    d.kill();
    d.start();
    wait_all(&[&d], "the restart", Duration::from_secs(10), |d| {
        d.ready() && d.image()["checks"].as_u64() >= Some(1)
    });
    for b in &v2_blobs {
        assert!(d.has_blob(b), "prefetched blob {b} collected at the restart");
    }
    // SIGUSR2: the operator adopts it now.
    d.signal(rustix::process::Signal::USR2);
    adopted_at(&d, &v2, Duration::from_secs(5));
    wait_all(&[&d], "the pending record cleared", Duration::from_secs(3), |d| {
        d.pending().is_none() && d.first_seen().is_none()
    });
    assert!(
        pending_entries(&d).is_empty(),
        "the switch drops the pending entry"
    );
}

/// The digests of `index.json` entries pending a switch (`io.edgepull.pending-of`).
fn pending_entries(d: &Device) -> Vec<String> {
    let v: Value = serde_json::from_slice(&std::fs::read(d.store().join("oci/index.json")).unwrap()).unwrap();
    v["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["annotations"]["io.edgepull.pending-of"].is_string())
        .map(|m| m["digest"].as_str().unwrap().to_string())
        .collect()
}
