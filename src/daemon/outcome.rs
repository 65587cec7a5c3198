//! Applying a finished job's [`JobOutcome`] to its image's [`Slot`]: the new state, the
//! next check (interval, backoff, link pause or rollout slot), the metrics and the pending
//! record.
//!
//! Owns: what each outcome changes in the supervisor's state. Never does IO itself (the
//! record and the files are handed to their writers) and never starts a job.

use std::time::Duration;

use tokio::time::Instant;

use super::Daemon;
use super::hook::HookEnd;
use super::job::{JobError, JobOutcome};
use super::slot::{self, Note, Slot};
use super::status::{Stamp, State};
use crate::exit::Category;
use edgepull_core::schedule::{BACKOFF_BASE, poll_delay};

impl Daemon {
    pub(super) fn interval_of(&self, slot: &Slot) -> Duration {
        slot.image.interval.unwrap_or(self.cfg.sync.interval)
    }

    pub(super) fn finish_job(&mut self, name: &str, outcome: JobOutcome) {
        let (downloaded, resumed) = self.tracker.take_counters();
        let now = self.clock.now();
        let sync = self.cfg.sync;
        let Some(i) = self.slots.iter().position(|s| s.name == name) else {
            return; // removed by a reload while it ran
        };
        let interval = self.interval_of(&self.slots[i]);
        let mut refusal = false;
        let m = self.metrics.image(name);
        m.bytes_downloaded += downloaded;
        m.bytes_resumed += resumed;
        let slot = &mut self.slots[i];
        let next_poll = Instant::now() + poll_delay(interval, sync.jitter.get(), rand::random());
        if !matches!(outcome, JobOutcome::Cancelled) {
            slot.checks += 1;
        }
        let pending_before = slot.pending.map(|(p, _)| p);
        match outcome {
            JobOutcome::Unchanged => {
                if let Some((p, _)) = slot.pending.take() {
                    tracing::info!(image_ref = %name, digest = %p.digest, "the tag moved back to the current version; the pending update is cancelled");
                }
                slot.succeeded(now, next_poll);
                m.last_success = Some(Stamp::of(now).unix);
            }
            JobOutcome::Updated(u) => {
                slot.pending = None;
                slot.succeeded(now, next_poll);
                slot.current = Some(u.manifest);
                if u.switched {
                    slot.previous = u.previous.or(slot.previous);
                }
                slot.bytes_total = u.total_bytes;
                slot.bytes_done = u.total_bytes;
                if let Some((end, at)) = u.hook {
                    slot.last_hook = Some(slot::hook_status(&end, at, &u.manifest));
                }
                if let Some((end, at)) = u.health {
                    // Passed, cut short by shutdown, or failed with nothing to roll back to.
                    if !end.ok() && end != HookEnd::Cancelled {
                        m.health_failures += 1;
                    }
                    slot.last_health = Some(slot::hook_status(&end, at, &u.manifest));
                }
                m.pulls_ok += 1;
                m.last_success = Some(Stamp::of(now).unix);
            }
            JobOutcome::Deferred(deferral) => {
                slot.state = State::Deferred;
                slot.note = Some(Note::Deferred(deferral));
                slot.backoff.reset();
                slot.next_due = next_poll;
                m.deferred += 1;
            }
            JobOutcome::Failed(error) => {
                let wait = slot.backoff.on_failure(
                    BACKOFF_BASE,
                    sync.backoff_max,
                    error.retry_after(),
                    rand::random(),
                );
                slot.state = State::Error;
                slot.note = Some(Note::Retrying(wait));
                refusal = error.category() == Category::Policy;
                slot.last_error = Some((now, error));
                slot.next_due = Instant::now() + wait;
                m.pulls_failed += 1;
            }
            JobOutcome::Paused(p) => {
                // Poll (HEAD) as usual; download again when the link opens.
                slot.state = State::Idle;
                slot.note = None;
                slot.next_due = next_poll.min(Instant::now() + self.link.until(&p));
                self.link.flush();
            }
            JobOutcome::Refused { digest, error } => {
                // The current version stays; the tag is polled as usual (no backoff).
                slot.state = State::Error;
                slot.note = None;
                slot.backoff.reset();
                slot.next_due = next_poll;
                slot.pending = None;
                slot.adopt_now = false;
                if let Some(error) = error {
                    let refusal = error.signature().map(|e| e.refusal());
                    slot.refused = refusal.map(|r| (digest, r));
                    slot.last_error = Some((now, error));
                    m.pulls_failed += 1;
                }
            }
            JobOutcome::Waiting {
                pending,
                until,
                prefetched,
            } => {
                // Checked as usual (a tag moved back cancels it), and at the slot.
                slot.refused = None;
                slot.failed = None;
                slot.state = State::Idle;
                slot.note = None;
                slot.pending = Some((pending, until));
                slot.prefetched = prefetched;
                slot.last_success = Some(now);
                slot.backoff.reset();
                let wait = Duration::from_secs(until.saturating_sub(Stamp::of(now).unix));
                slot.next_due = Instant::now()
                    .checked_add(wait)
                    .map_or(next_poll, |at| at.min(next_poll));
                m.last_success = Some(Stamp::of(now).unix);
            }
            JobOutcome::RolledBack(r) => {
                // The previous version is current again; the tag is polled as usual.
                slot.state = State::Error;
                slot.note = None;
                slot.current = Some(r.restored);
                slot.previous = r.previous;
                slot.failed = Some(r.failed);
                slot.pending = None;
                slot.adopt_now = false;
                slot.prefetched = false;
                slot.backoff.reset();
                slot.next_due = next_poll;
                if let Some((end, at)) = &r.update_hook {
                    slot.last_hook = Some(slot::hook_status(end, *at, &r.failed_manifest));
                }
                if let Some((end, at)) = &r.rollback_hook {
                    slot.last_hook = Some(slot::hook_status(end, *at, &r.restored));
                }
                let (end, at) = &r.check;
                slot.last_health = Some(slot::hook_status(end, *at, &r.failed_manifest));
                slot.last_error = Some((
                    now,
                    JobError::Unhealthy {
                        digest: r.failed,
                        restored: r.restored,
                        check: super::health::check_end(end),
                    },
                ));
                m.health_failures += 1;
                m.rollbacks += 1;
            }
            JobOutcome::StillFailed(digest) => {
                // Nothing was done; what the last rollback said stays shown.
                slot.state = State::Error;
                slot.failed = Some(digest);
                slot.pending = None;
                slot.adopt_now = false;
                slot.backoff.reset();
                slot.next_due = next_poll;
            }
            JobOutcome::Cancelled => {
                slot.state = State::Idle;
            }
        }
        if slot.pending.map(|(p, _)| p) != pending_before {
            self.save_pending();
        }
        if refusal {
            self.metrics.egress_refusals += 1;
        }
        self.publish();
    }
}
