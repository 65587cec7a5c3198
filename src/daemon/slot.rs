//! One configured image as the supervisor tracks it ([`Slot`]), and how the slots are shown:
//! their `status.json` entries and the one-line `STATUS=` summary.
//!
//! Owns: the per-image state and its rendering. Errors and notes stay typed here and become
//! text only when rendered for `status.json` or systemd. Never does IO and never decides
//! when to check: the supervisor changes the state, this module only shows it.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use super::hook::HookEnd;
use super::job::{Deferral, JobError};
use super::status::{self, HookStatus, ImageStatus, LastError, Stamp, State};
use crate::config::ImageConfig;
use edgepull_core::oci::Digest;
use edgepull_core::rollout::Pending;
use edgepull_core::schedule::Backoff;
use edgepull_core::signature::Refusal;

/// Why an image is deferred or in error, shown as its `message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Note {
    /// The download does not fit the disk budget.
    Deferred(Deferral),
    /// The last attempt failed; the next one is after this wait.
    Retrying(Duration),
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::Deferred(d) => fmt::Display::fmt(d, f),
            Note::Retrying(wait) => write!(f, "retrying in {}", status::human_duration(*wait)),
        }
    }
}

/// One configured image, as the supervisor tracks it.
pub(super) struct Slot {
    pub(super) image: ImageConfig,
    pub(super) name: String,
    pub(super) state: State,
    pub(super) current: Option<Digest>,
    pub(super) previous: Option<Digest>,
    pub(super) bytes_done: u64,
    pub(super) bytes_total: u64,
    pub(super) note: Option<Note>,
    pub(super) last_success: Option<SystemTime>,
    pub(super) last_error: Option<(SystemTime, JobError)>,
    /// The digest refused for its signature, and why; not fetched again until the tag moves.
    pub(super) refused: Option<(Digest, Refusal)>,
    pub(super) last_hook: Option<HookStatus>,
    pub(super) last_health: Option<HookStatus>,
    /// The digest (what the tag points at) that failed its health check and was rolled
    /// back; not adopted again until the tag moves (the job decides, from `health.json`).
    pub(super) failed: Option<Digest>,
    /// A new digest waiting for this device's rollout slot, and when it will be adopted
    /// (unix seconds).
    pub(super) pending: Option<(Pending, u64)>,
    /// An operator asked to adopt the pending digest now (SIGUSR2).
    pub(super) adopt_now: bool,
    /// The pending digest's blobs are downloaded (`rollout.prefetch`).
    pub(super) prefetched: bool,
    pub(super) checks: u64,
    pub(super) backoff: Backoff,
    pub(super) next_due: Instant,
}

impl Slot {
    pub(super) fn new(image: ImageConfig, now: Instant) -> Self {
        Self {
            name: image.reference.to_string(),
            image,
            state: State::Idle,
            current: None,
            previous: None,
            bytes_done: 0,
            bytes_total: 0,
            note: None,
            last_success: None,
            last_error: None,
            refused: None,
            last_hook: None,
            last_health: None,
            failed: None,
            pending: None,
            adopt_now: false,
            prefetched: false,
            checks: 0,
            backoff: Backoff::default(),
            next_due: now,
        }
    }

    /// This image's entry in `status.json`, at `now`.
    /// A check that succeeded (up to date, or updated): clear what the last failure, refusal
    /// or pending adoption left, and schedule the next poll.
    pub(super) fn succeeded(&mut self, now: SystemTime, next_poll: Instant) {
        self.adopt_now = false;
        self.prefetched = false;
        self.refused = None;
        self.failed = None;
        self.state = State::Idle;
        self.note = None;
        self.last_success = Some(now);
        self.backoff.reset();
        self.next_due = next_poll;
    }

    pub(super) fn status(&self, now: Instant) -> ImageStatus {
        ImageStatus {
            reference: self.name.clone(),
            state: self.state,
            current_digest: self.current.map(|d| d.to_string()),
            previous_digest: self.previous.map(|d| d.to_string()),
            bytes_done: self.bytes_done,
            bytes_total: self.bytes_total,
            message: self.note.as_ref().map(Note::to_string),
            last_success: self.last_success.map(Stamp::of),
            last_error: self.last_error.as_ref().map(|(t, e)| LastError {
                when: Stamp::of(*t),
                message: crate::error_chain(e),
            }),
            signature: self.refused.map(|(_, r)| r.as_str().to_string()),
            pending_digest: self.pending.map(|(p, _)| p.digest.to_string()),
            // `checked_add`: a far-future time (saturated) must not panic.
            adopt_at: self
                .pending
                .and_then(|(_, at)| UNIX_EPOCH.checked_add(Duration::from_secs(at)))
                .map(Stamp::of),
            last_hook: self.last_hook.clone(),
            last_health_check: self.last_health.clone(),
            failed_digest: self.failed.map(|d| d.to_string()),
            checks: self.checks,
            consecutive_failures: self.backoff.failures(),
            next_check_in_secs: matches!(self.state, State::Idle | State::Deferred | State::Error)
                .then(|| self.next_due.saturating_duration_since(now).as_secs()),
        }
    }
}

/// One line for `systemctl status`.
pub(super) fn summary(slots: &[Slot]) -> String {
    if slots.is_empty() {
        return "no images configured".to_string();
    }
    let mut parts = Vec::new();
    for state in [
        State::Downloading,
        State::Checking,
        State::Deferred,
        State::Error,
        State::Idle,
    ] {
        let n = slots.iter().filter(|s| s.state == state).count();
        if n > 0 {
            parts.push(format!("{n} {}", state.as_str()));
        }
    }
    let mut line = format!("{} image(s): {}", slots.len(), parts.join(", "));
    if let Some(s) = slots.iter().find(|s| s.state == State::Downloading) {
        line.push_str(&format!(
            "; downloading {} {} of {}",
            s.name,
            status::human_bytes(s.bytes_done),
            status::human_bytes(s.bytes_total)
        ));
    } else if let Some((name, (_, e))) = slots
        .iter()
        .find(|s| s.state == State::Error)
        .and_then(|s| Some((&s.name, s.last_error.as_ref()?)))
    {
        let short: String = crate::error_chain(e).chars().take(200).collect();
        line.push_str(&format!("; {name}: {short}"));
    }
    line
}

/// The record of a hook run for `status.json`.
pub(super) fn hook_status(end: &HookEnd, at: SystemTime, digest: &Digest) -> HookStatus {
    let (exit_code, signal, timed_out, error) = match end {
        HookEnd::Exited(c) => (Some(*c), None, false, None),
        HookEnd::Signalled(s) => (None, Some(*s), false, None),
        HookEnd::TimedOut => (None, None, true, None),
        HookEnd::Cancelled => (None, None, false, Some("killed for shutdown".to_string())),
        HookEnd::SpawnFailed(e) => (None, None, false, Some(crate::error_chain(e))),
    };
    HookStatus {
        when: Stamp::of(at),
        digest: digest.to_string(),
        exit_code,
        signal,
        timed_out,
        error,
        ok: end.ok(),
    }
}
