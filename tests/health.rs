//! Health checks and automatic rollback end to end: `edgepull run` subprocesses against the
//! fake registry, with `hooks.on_update` and `hooks.health_check` as shell scripts that log
//! what they were told. A failing check (non-zero exit, or past `health_timeout_secs`)
//! switches `index.json` back to the previous version, runs `on_update` again with
//! `EDGEPULL_ROLLBACK=1`, shows the failure in `status.json` and the metrics, and the failed
//! digest is not fetched again (not even after a SIGKILL and a restart) until the tag
//! points elsewhere. A trial cut short by SIGKILL during the check is finished at the next
//! start.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::device::{Device, token_registry};
use edgepull_core::oci::{Digest, Platform};
use edgepull_testkit::{FakeRegistry, random_bytes};
use serde_json::{Value, json};

/// Push a one-layer arm64 image under `tag`: its manifest digest and its layer's.
fn push(fake: &FakeRegistry, tag: &str) -> (Digest, Digest) {
    let (d, blobs) = fake.push_image_for(
        "app",
        tag,
        &Platform::parse("linux/arm64").unwrap(),
        vec![random_bytes(4096)],
    );
    let layer = blobs.iter().find(|b| b.size == 4096).unwrap().digest;
    (d, layer)
}

/// The files the hook scripts share with the test, in the device's directory.
struct Hooks {
    /// One line per `on_update` run: `digest previous rollback`.
    updates: PathBuf,
    /// One line per health check run: the digest.
    checks: PathBuf,
    /// The health check's exit code.
    exit: PathBuf,
    /// While it exists, the health check waits.
    block: PathBuf,
}

impl Hooks {
    fn in_dir(dir: &Path) -> Self {
        Self {
            updates: dir.join("updates.log"),
            checks: dir.join("checks.log"),
            exit: dir.join("health-exit"),
            block: dir.join("block"),
        }
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn set_exit(&self, code: i32) {
        std::fs::write(&self.exit, code.to_string()).unwrap();
    }
}

/// A device whose health check exits with the code in `health-exit` (waiting first while
/// `block` exists), killed after `timeout_secs`.
fn device(fake: &FakeRegistry, timeout_secs: u64) -> (Device, Hooks) {
    let d = Device::new(fake, |v, dir| {
        let h = Hooks::in_dir(dir);
        h.set_exit(0);
        let update = format!(
            "echo \"$EDGEPULL_DIGEST ${{EDGEPULL_PREVIOUS_DIGEST:--}} ${{EDGEPULL_ROLLBACK:-0}}\" >> {}",
            h.updates.display()
        );
        let check = format!(
            "echo \"$EDGEPULL_DIGEST\" >> {}; while [ -e {} ]; do sleep 0.05; done; exit $(cat {})",
            h.checks.display(),
            h.block.display(),
            h.exit.display()
        );
        v["hooks"] = json!({
            "on_update": ["/bin/sh", "-c", update],
            "timeout_secs": 10,
            "health_check": ["/bin/sh", "-c", check],
            "health_timeout_secs": timeout_secs,
        });
        v["metrics"] = json!({ "textfile": dir.join("edgepull.prom") });
    });
    let h = Hooks::in_dir(d.dir.path());
    (d, h)
}

/// Poll every 20 ms until `done` holds, or fail after `limit` with the daemon's log.
#[track_caller]
fn wait(d: &Device, what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > limit {
            d.fail(&format!("timed out after {limit:?} waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The digest `index.json` names for `app:stable`, and every digest it references.
fn index(d: &Device) -> (Option<String>, Vec<String>) {
    let v: Value = serde_json::from_slice(&std::fs::read(d.store().join("oci/index.json")).unwrap()).unwrap();
    let all: Vec<&Value> = v["manifests"].as_array().unwrap().iter().collect();
    let current = all
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"].is_string())
        .and_then(|m| m["digest"].as_str())
        .map(str::to_string);
    let digests = all
        .iter()
        .filter_map(|m| m["digest"].as_str().map(str::to_string))
        .collect();
    (current, digests)
}

/// Requests that fetched `manifest` or `layer` (GETs of the manifest by digest, the blob).
fn fetches_of(fake: &FakeRegistry, manifest: &Digest, layer: &Digest) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r.method == "GET")
        .filter(|r| r.path.ends_with(&manifest.to_string()) || r.path.ends_with(&layer.to_string()))
        .count()
}

fn heads(fake: &FakeRegistry) -> usize {
    fake.requests().iter().filter(|r| r.method == "HEAD").count()
}

/// The one image's entry in `health.json` (`Null` when there is none).
fn health_record(d: &Device) -> Value {
    let v: Value = std::fs::read(d.store().join("health.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let entries = v["images"].as_object().cloned().unwrap_or_default();
    assert!(entries.len() <= 1, "{v}");
    entries.values().next().cloned().unwrap_or(Value::Null)
}

#[test]
fn a_failing_health_check_rolls_back_and_the_digest_is_not_fetched_again_until_the_tag_moves() {
    let fake = token_registry();
    let (v1, _) = push(&fake, "stable");
    let (v2, v2_layer) = push(&fake, "candidate-2");
    let (mut d, hooks) = device(&fake, 10);
    let (v1s, v2s) = (v1.to_string(), v2.to_string());

    // The first install is on trial too; its check passes.
    wait(&d, "v1 installed and checked", Duration::from_secs(15), || {
        d.current().as_deref() == Some(&v1s) && d.image()["last_health_check"]["ok"] == json!(true)
    });
    assert_eq!(Hooks::lines(&hooks.checks), vec![v1s.clone()]);
    assert_eq!(health_record(&d), Value::Null, "a passed check leaves no record");

    // v2 fails its check: rolled back to v1.
    hooks.set_exit(3);
    fake.move_tag("app", "stable", v2);
    wait(&d, "the rollback to v1", Duration::from_secs(15), || {
        d.image()["failed_digest"] == json!(v2s)
    });
    let image = d.image();
    assert_eq!(image["current_digest"], json!(v1s), "{image}");
    assert_eq!(image["state"], "error", "{image}");
    assert_eq!(image["last_health_check"]["exit_code"], 3, "{image}");
    assert_eq!(image["last_health_check"]["digest"], json!(v2s), "{image}");
    let message = image["last_error"]["message"].as_str().unwrap();
    for needle in ["health check", "rolled back to", &v1s, &v2s, "not adopted again"] {
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    }
    let (current, referenced) = index(&d);
    assert_eq!(current.as_deref(), Some(v1s.as_str()));
    assert!(
        !referenced.contains(&v2s),
        "the failed version left index.json: {referenced:?}"
    );
    assert!(!d.has_blob(&v2_layer), "the failed version's layer was collected");
    assert_eq!(
        Hooks::lines(&hooks.updates),
        vec![
            format!("{v1s} - 0"),
            format!("{v2s} {v1s} 0"),
            format!("{v1s} {v2s} 1")
        ],
        "on_update: the install, the switch to v2, and the rollback with EDGEPULL_ROLLBACK=1"
    );
    assert_eq!(Hooks::lines(&hooks.checks), vec![v1s.clone(), v2s.clone()]);
    assert_eq!(health_record(&d)["failed"], json!(v2s));
    // The textfile is written just after status.json: wait for it, then check both counters.
    let image_ref = d.image()["ref"].as_str().unwrap().to_string();
    let counted = |family: &str, metrics: &str| {
        let line = format!("{family}{{image=\"{image_ref}\"}} 1");
        metrics.lines().any(|l| l == line)
    };
    let prom = d.dir.path().join("edgepull.prom");
    let read_metrics = || std::fs::read_to_string(&prom).unwrap_or_default();
    wait(
        &d,
        "the rollback in the metrics textfile",
        Duration::from_secs(5),
        || counted("edgepull_rollbacks_total", &read_metrics()),
    );
    let metrics = read_metrics();
    assert!(
        counted("edgepull_health_check_failures_total", &metrics),
        "the failed check is not counted in:\n{metrics}"
    );
    assert!(
        std::fs::read_to_string(d.log())
            .unwrap()
            .contains("health check failed: rolled back"),
        "the log says so"
    );

    // Polled as usual, but v2 is never fetched again, not even after a SIGKILL.
    let fetched = fetches_of(&fake, &v2, &v2_layer);
    let h0 = heads(&fake);
    wait(&d, "three more polls", Duration::from_secs(10), || {
        heads(&fake) >= h0 + 3
    });
    d.kill();
    d.start();
    let h1 = heads(&fake);
    wait(&d, "two polls after the restart", Duration::from_secs(15), || {
        heads(&fake) >= h1 + 2
    });
    assert_eq!(fetches_of(&fake, &v2, &v2_layer), fetched, "v2 fetched again");
    assert_eq!(Hooks::lines(&hooks.checks).len(), 2, "no hook ran again");
    assert_eq!(d.current().as_deref(), Some(v1s.as_str()));
    assert_eq!(
        d.image()["failed_digest"],
        json!(v2s),
        "shown after the restart too"
    );

    // The tag moves on to a good version: adopted, and the failure is forgotten.
    hooks.set_exit(0);
    let (v3, _) = push(&fake, "candidate-3");
    fake.move_tag("app", "stable", v3);
    wait(&d, "v3 adopted", Duration::from_secs(15), || {
        d.current() == Some(v3.to_string()) && d.image()["last_health_check"]["ok"] == json!(true)
    });
    let image = d.image();
    assert!(image.get("failed_digest").is_none(), "{image}");
    assert_eq!(image["state"], "idle", "{image}");
    assert_eq!(health_record(&d), Value::Null);
}

#[test]
fn a_timed_out_check_rolls_back_and_a_check_cut_short_by_sigkill_runs_again_at_start() {
    let fake = token_registry();
    let (v1, _) = push(&fake, "stable");
    let (v2, _) = push(&fake, "candidate-2");
    let (v3, _) = push(&fake, "candidate-3");
    let (mut d, hooks) = device(&fake, 3);
    let (v1s, v2s, v3s) = (v1.to_string(), v2.to_string(), v3.to_string());
    wait(&d, "v1 installed and checked", Duration::from_secs(15), || {
        d.image()["last_health_check"]["ok"] == json!(true)
    });

    // A check that hangs past health_timeout_secs (3 s) is killed and counted as failed.
    std::fs::write(&hooks.block, "").unwrap();
    let moved = Instant::now();
    fake.move_tag("app", "stable", v2);
    wait(
        &d,
        "the rollback after the timeout",
        Duration::from_secs(15),
        || d.image()["failed_digest"] == json!(v2s),
    );
    let took = moved.elapsed();
    let image = d.image();
    assert_eq!(image["last_health_check"]["timed_out"], true, "{image}");
    assert_eq!(image["current_digest"], json!(v1s), "{image}");
    assert!(
        took >= Duration::from_secs(3),
        "rolled back before the timeout: {took:?}"
    );
    eprintln!("rolled back {took:?} after the tag moved (health_timeout_secs 3)");

    // v3's check is cut short by SIGKILL: the switch happened, the trial is recorded.
    fake.move_tag("app", "stable", v3);
    wait(&d, "v3's check running", Duration::from_secs(15), || {
        Hooks::lines(&hooks.checks).last() == Some(&v3s)
    });
    d.kill();
    assert_eq!(index(&d).0.as_deref(), Some(v3s.as_str()), "v3 is current");
    assert_eq!(
        health_record(&d)["trial"],
        json!(v3s),
        "{}",
        std::fs::read_to_string(d.log()).unwrap()
    );
    assert_eq!(
        health_record(&d)["failed"],
        Value::Null,
        "the tag moved on from v2"
    );

    // At the next start the trial is finished first: on_update again, then the check,
    // which fails now: rolled back to v1 (the version before v3).
    hooks.set_exit(1);
    std::fs::remove_file(&hooks.block).unwrap();
    d.start();
    wait(&d, "the rollback at start", Duration::from_secs(15), || {
        d.image()["failed_digest"] == json!(v3s)
    });
    assert_eq!(d.current().as_deref(), Some(v1s.as_str()));
    assert_eq!(index(&d).0.as_deref(), Some(v1s.as_str()));
    let updates = Hooks::lines(&hooks.updates);
    let want_tail = [
        format!("{v3s} {v1s} 0"),
        format!("{v3s} {v1s} 0"),
        format!("{v1s} {v3s} 1"),
    ];
    assert!(
        updates.ends_with(&want_tail),
        "on_update for v3, again at start, then the rollback: {updates:?}"
    );
    let checks = Hooks::lines(&hooks.checks);
    assert_eq!(
        checks[checks.len() - 2..],
        [v3s.clone(), v3s.clone()],
        "{checks:?}"
    );
    assert_eq!(health_record(&d)["trial"], Value::Null);
}
