//! Staged rollouts decided on each device: when a followed tag's new digest is adopted.
//!
//! Owns: the slot formula ([`slot`]: `u64::from_be_bytes(SHA-256(device_id + "\n" +
//! digest)[..8]) % window_secs`, so devices spread uniformly over the window and the order
//! changes with every release) and the decision after a check ([`decide`]): adopt now, wait
//! (downloading first or not), cancel a pending digest the tag moved away from, or restart
//! the wait for a digest the tag moved on to. Times are unix seconds, passed in.
//!
//! Never reads a clock, a file or the device id itself, never lets a far-future time
//! overflow (sums saturate), and never keeps a `first_seen` later than now (the clock was
//! ahead, or the record is damaged: the wait starts again).

use crate::oci::Digest;

/// A digest the tag points at that is not adopted yet, and when this device first saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// The digest the tag points at (what a `HEAD` returns).
    pub digest: Digest,
    /// Unix seconds of the check that first saw it (stored durably by the caller).
    pub first_seen: u64,
}

/// The rollout settings of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy<'a> {
    /// The device's id (e.g. the contents of `/etc/machine-id`, trimmed).
    pub device_id: &'a str,
    /// The window a release spreads over; 0 adopts at once.
    pub window_secs: u64,
    /// Download on first sight, switch at the slot.
    pub prefetch: bool,
}

/// What a check learnt, as the decision needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen<'a> {
    /// The digest the store records as current (the index it came from, else the
    /// manifest); `None` before the first install.
    pub current: Option<&'a Digest>,
    /// The pending digest recorded so far.
    pub pending: Option<&'a Pending>,
    /// What the reference points at now.
    pub remote: &'a Digest,
    /// The reference names a digest (`@sha256:`): no tag to stage.
    pub pinned: bool,
    /// An operator asked to skip the wait.
    pub adopt_now: bool,
    /// Unix seconds now.
    pub now: u64,
}

/// What to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Pull (when needed) and make the remote digest current.
    Adopt,
    /// Keep the current version until `until` (unix seconds); download the new one first
    /// when `download` (`prefetch`).
    Wait {
        /// When the slot comes.
        until: u64,
        /// Download now, switch at the slot.
        download: bool,
    },
}

/// Why, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The tag points at the current version.
    Current,
    /// The tag moved back to the current version: this pending digest is cancelled.
    Cancelled(Digest),
    /// A pinned `@sha256:` reference.
    Pinned,
    /// `window_secs` is 0.
    NoWindow,
    /// Nothing installed yet: the first version is installed at once.
    FirstInstall,
    /// An operator skipped the wait.
    Operator,
    /// The slot has come.
    SlotReached,
    /// A new digest: the wait starts.
    Started,
    /// Still waiting for the slot.
    Waiting,
    /// The tag moved again before the slot: the wait for this earlier digest is dropped
    /// and a new one starts.
    Restarted(Digest),
}

impl Why {
    /// For logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Why::Current => "current",
            Why::Cancelled(_) => "cancelled",
            Why::Pinned => "pinned",
            Why::NoWindow => "no window",
            Why::FirstInstall => "first install",
            Why::Operator => "adopt-now",
            Why::SlotReached => "slot reached",
            Why::Started => "started",
            Why::Waiting => "waiting",
            Why::Restarted(_) => "restarted",
        }
    }
}

/// The decision: an action, the pending record to keep from now on, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// What to do.
    pub action: Action,
    /// The pending record to store (kept while adopting, so a failed download does not
    /// restart the wait; dropped once the digest is current).
    pub pending: Option<Pending>,
    /// Why.
    pub why: Why,
}

/// This device's offset into the window for `digest`, in seconds (`0..window_secs`; 0 when
/// the window is 0).
pub fn slot(device_id: &str, digest: &Digest, window_secs: u64) -> u64 {
    if window_secs == 0 {
        return 0;
    }
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    h.update(device_id.as_bytes());
    h.update(b"\n");
    h.update(digest.to_string().as_bytes());
    let sum = h.finish();
    let mut first = [0u8; 8];
    first.copy_from_slice(&sum.as_ref()[..8]);
    u64::from_be_bytes(first) % window_secs
}

/// When `pending` is adopted under `policy` (unix seconds, saturating).
pub fn adopt_at(policy: &Policy<'_>, pending: &Pending) -> u64 {
    pending
        .first_seen
        .saturating_add(slot(policy.device_id, &pending.digest, policy.window_secs))
}

/// Decide what a check that saw `seen` leads to.
pub fn decide(policy: &Policy<'_>, seen: &Seen<'_>) -> Verdict {
    let adopt = |pending, why| Verdict {
        action: Action::Adopt,
        pending,
        why,
    };
    if seen.current == Some(seen.remote) {
        return match seen.pending {
            Some(p) if p.digest != *seen.remote => adopt(None, Why::Cancelled(p.digest)),
            _ => adopt(None, Why::Current),
        };
    }
    if seen.pinned {
        return adopt(None, Why::Pinned);
    }
    if policy.window_secs == 0 {
        return adopt(None, Why::NoWindow);
    }
    if seen.current.is_none() {
        return adopt(None, Why::FirstInstall);
    }
    let (pending, why) = match seen.pending {
        // A first sight "in the future" (the clock was ahead then, or the record is
        // damaged) would hold the update back by that much: the wait starts again now.
        Some(p) if p.digest == *seen.remote && p.first_seen <= seen.now => (*p, Why::Waiting),
        earlier => {
            let p = Pending {
                digest: *seen.remote,
                first_seen: seen.now,
            };
            (p, earlier.map_or(Why::Started, |e| Why::Restarted(e.digest)))
        }
    };
    if seen.adopt_now {
        return adopt(Some(pending), Why::Operator);
    }
    let until = adopt_at(policy, &pending);
    if seen.now >= until {
        return adopt(Some(pending), Why::SlotReached);
    }
    Verdict {
        action: Action::Wait {
            until,
            download: policy.prefetch,
        },
        pending: Some(pending),
        why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(hex_char: char) -> Digest {
        Digest::parse(&format!("sha256:{}", hex_char.to_string().repeat(64))).unwrap()
    }

    /// Known vectors, computed independently with Python's hashlib:
    /// ```text
    /// h = hashlib.sha256(("device-a\n" + "sha256:" + "a"*64).encode()).digest()
    /// int.from_bytes(h[:8], "big")  # 0xfcaaedc3cc5e925f = 18206625868801806943
    /// # % 86400 = 30943, % 20 = 3
    /// h = hashlib.sha256(("device-b\n" + "sha256:" + "a"*64).encode()).digest()
    /// int.from_bytes(h[:8], "big")  # 0x3df0b340e9b9e063 = 4463264322104713315
    /// # % 86400 = 82915, % 20 = 15
    /// ```
    #[test]
    fn slot_formula_known_vectors() {
        let a = d('a');
        let cases = [
            ("device-a", 86_400, 30_943),
            ("device-a", 20, 3),
            ("device-a", u64::MAX, 18_206_625_868_801_806_943),
            ("device-b", 86_400, 82_915),
            ("device-b", 20, 15),
            ("device-b", u64::MAX, 4_463_264_322_104_713_315),
            ("device-a", 1, 0),
            ("device-a", 0, 0),
        ];
        for (dev, window, want) in cases {
            assert_eq!(slot(dev, &a, window), want, "{dev} {window}");
        }
        // Another release, another order.
        assert_ne!(slot("device-a", &d('b'), 86_400), 30_943);
    }

    #[test]
    fn slots_spread_over_the_window() {
        let window = 100;
        let mut buckets = [0u32; 10];
        for i in 0..10_000 {
            let s = slot(&format!("dev-{i}"), &d('c'), window);
            assert!(s < window);
            buckets[(s / 10) as usize] += 1;
        }
        for b in buckets {
            assert!((800..1200).contains(&b), "{buckets:?}");
        }
    }

    type Case<'a> = (
        &'static str,
        Policy<'a>,
        Option<Digest>,
        Option<Pending>,
        Digest,
        (bool, bool),
        u64,
        Verdict,
    );

    #[test]
    fn decision_table() {
        let (cur, new, newer) = (d('1'), d('2'), d('3'));
        let dev = "device-a";
        let window = 1000;
        let s_new = slot(dev, &new, window);
        let s_newer = slot(dev, &newer, window);
        assert!(s_new > 0 && s_newer > 0, "pick a window with nonzero slots");
        let policy = |window_secs, prefetch| Policy {
            device_id: dev,
            window_secs,
            prefetch,
        };
        let p = |digest, first_seen| Pending { digest, first_seen };
        let wait = |until, download| Action::Wait { until, download };
        let v = |action, pending, why| Verdict { action, pending, why };
        let adopt = Action::Adopt;
        let t0 = 1_000_000u64;
        // (name, policy, current, pending, remote, (pinned, adopt_now), now, want)
        let cases: Vec<Case<'_>> = vec![
            (
                "unchanged",
                policy(window, false),
                Some(cur),
                None,
                cur,
                (false, false),
                t0,
                v(adopt, None, Why::Current),
            ),
            (
                "moved back cancels",
                policy(window, false),
                Some(cur),
                Some(p(new, t0)),
                cur,
                (false, false),
                t0 + 5,
                v(adopt, None, Why::Cancelled(new)),
            ),
            (
                "first sight waits",
                policy(window, false),
                Some(cur),
                None,
                new,
                (false, false),
                t0,
                v(wait(t0 + s_new, false), Some(p(new, t0)), Why::Started),
            ),
            (
                "prefetch downloads while waiting",
                policy(window, true),
                Some(cur),
                None,
                new,
                (false, false),
                t0,
                v(wait(t0 + s_new, true), Some(p(new, t0)), Why::Started),
            ),
            (
                "still waiting: first_seen kept",
                policy(window, false),
                Some(cur),
                Some(p(new, t0)),
                new,
                (false, false),
                t0 + s_new - 1,
                v(wait(t0 + s_new, false), Some(p(new, t0)), Why::Waiting),
            ),
            (
                "slot reached",
                policy(window, false),
                Some(cur),
                Some(p(new, t0)),
                new,
                (false, false),
                t0 + s_new,
                v(adopt, Some(p(new, t0)), Why::SlotReached),
            ),
            (
                "moved again restarts",
                policy(window, false),
                Some(cur),
                Some(p(new, t0)),
                newer,
                (false, false),
                t0 + 7,
                v(
                    wait(t0 + 7 + s_newer, false),
                    Some(p(newer, t0 + 7)),
                    Why::Restarted(new),
                ),
            ),
            (
                "operator skips the wait",
                policy(window, false),
                Some(cur),
                Some(p(new, t0)),
                new,
                (false, true),
                t0,
                v(adopt, Some(p(new, t0)), Why::Operator),
            ),
            (
                "pinned at once",
                policy(window, false),
                Some(cur),
                Some(p(new, t0)),
                new,
                (true, false),
                t0,
                v(adopt, None, Why::Pinned),
            ),
            (
                "window 0 at once",
                policy(0, false),
                Some(cur),
                None,
                new,
                (false, false),
                t0,
                v(adopt, None, Why::NoWindow),
            ),
            (
                "first install at once",
                policy(window, false),
                None,
                None,
                new,
                (false, false),
                t0,
                v(adopt, None, Why::FirstInstall),
            ),
            (
                "a first_seen in the future starts the wait again now",
                policy(window, false),
                Some(cur),
                Some(p(new, u64::MAX)),
                new,
                (false, false),
                t0,
                v(wait(t0 + s_new, false), Some(p(new, t0)), Why::Restarted(new)),
            ),
            (
                "the end of time saturates",
                policy(window, false),
                Some(cur),
                Some(p(new, u64::MAX - 1)),
                new,
                (false, false),
                u64::MAX - 1,
                v(wait(u64::MAX, false), Some(p(new, u64::MAX - 1)), Why::Waiting),
            ),
        ];
        for (name, policy, current, pending, remote, (pinned, adopt_now), now, want) in cases {
            let seen = Seen {
                current: current.as_ref(),
                pending: pending.as_ref(),
                remote: &remote,
                pinned,
                adopt_now,
                now,
            };
            assert_eq!(decide(&policy, &seen), want, "{name}");
        }
    }
}
