//! The health check after an update (`hooks.health_check`) and automatic rollback: what a
//! check's end means, and what a sync does with a version on trial or one that failed.
//!
//! A new version is *on trial* from just before `index.json` switches to it until its
//! health check ends. A check that fails (non-zero exit, killed, timed out, or a program
//! that cannot run: nothing proved the release healthy) rolls the image back to the
//! previous version kept in the store; that digest is then *failed* and not adopted again
//! until the tag points elsewhere. A trial cut short by shutdown or a crash is finished at
//! the next start, before anything else.
//!
//! Owns: those decisions, as pure functions with table tests. Never runs a program, reads a
//! file or looks at a clock.

use crate::oci::Digest;

/// How a health check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckEnd {
    /// Exit status 0.
    Passed,
    /// A non-zero exit status, or killed by a signal.
    Failed,
    /// Still running at `hooks.health_timeout_secs`: killed.
    TimedOut,
    /// The program could not be started or waited for.
    CouldNotRun,
    /// The daemon is stopping: the check was killed before it could say anything.
    Cancelled,
}

impl CheckEnd {
    /// The word shown in `status.json` and the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckEnd::Passed => "passed",
            CheckEnd::Failed => "failed",
            CheckEnd::TimedOut => "timed_out",
            CheckEnd::CouldNotRun => "could_not_run",
            CheckEnd::Cancelled => "cancelled",
        }
    }
}

/// What to do with the version on trial once its check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Healthy: the trial ends, the version stays.
    Keep,
    /// Unhealthy: switch back to this previous version and mark the trial's digest failed.
    RollBack(Digest),
    /// Unhealthy, but no previous version is kept (the first install): the version stays,
    /// marked failed, and the operator is told.
    NoPrevious,
    /// No answer (shutdown): the trial stays recorded and is checked again at the next start.
    Unfinished,
}

/// The verdict on a trial whose check ended with `end`, when `previous` is the version
/// kept for rollback.
pub fn verdict(end: CheckEnd, previous: Option<Digest>) -> Verdict {
    match (end, previous) {
        (CheckEnd::Passed, _) => Verdict::Keep,
        (CheckEnd::Cancelled, _) => Verdict::Unfinished,
        (CheckEnd::Failed | CheckEnd::TimedOut | CheckEnd::CouldNotRun, Some(p)) => Verdict::RollBack(p),
        (CheckEnd::Failed | CheckEnd::TimedOut | CheckEnd::CouldNotRun, None) => Verdict::NoPrevious,
    }
}

/// What this device remembers about an image's health (`<store>/health.json`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// The version whose check has not ended yet.
    pub trial: Option<Digest>,
    /// The version that failed its check: not adopted again while the tag points at it.
    pub failed: Option<Digest>,
}

/// What a sync does after the `HEAD` said the tag points at `remote` and the store's
/// current version is `current`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Go on as usual; `forget_failed` when the failed digest is no longer what the tag
    /// points at (the tag moved on, or back to the current version), so it can be
    /// forgotten.
    Proceed { forget_failed: bool },
    /// The tag still points at the failed digest: nothing to do until it moves.
    StillFailed(Digest),
    /// The current version's trial never ended (a restart cut it short): run its health
    /// check (and `on_update`) now.
    FinishTrial(Digest),
}

/// [`start`]'s answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub start: Start,
    /// The recorded trial is stale (its version never became current: a crash before the
    /// switch; or health checks are no longer configured): forget it.
    pub forget_trial: bool,
}

/// The decision for one sync ([`Decision`]). `checking` is whether a health check is
/// configured: without one, a trial left by an earlier config is forgotten.
pub fn start(memory: &Memory, current: Option<&Digest>, remote: &Digest, checking: bool) -> Decision {
    if let Some(trial) = memory.trial
        && checking
        && current == Some(&trial)
    {
        return Decision {
            start: Start::FinishTrial(trial),
            forget_trial: false,
        };
    }
    let start = match memory.failed {
        Some(f) if f == *remote && current != Some(remote) => Start::StillFailed(f),
        failed => Start::Proceed {
            forget_failed: failed.is_some_and(|f| f != *remote),
        },
    };
    Decision {
        start,
        forget_trial: memory.trial.is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Digest {
        Digest::of(s.as_bytes())
    }

    #[test]
    fn verdicts() {
        let p = d("previous");
        let table = [
            (CheckEnd::Passed, Some(p), Verdict::Keep),
            (CheckEnd::Passed, None, Verdict::Keep),
            (CheckEnd::Failed, Some(p), Verdict::RollBack(p)),
            (CheckEnd::TimedOut, Some(p), Verdict::RollBack(p)),
            (CheckEnd::CouldNotRun, Some(p), Verdict::RollBack(p)),
            (CheckEnd::Failed, None, Verdict::NoPrevious),
            (CheckEnd::TimedOut, None, Verdict::NoPrevious),
            (CheckEnd::CouldNotRun, None, Verdict::NoPrevious),
            (CheckEnd::Cancelled, Some(p), Verdict::Unfinished),
            (CheckEnd::Cancelled, None, Verdict::Unfinished),
        ];
        for (end, previous, want) in table {
            assert_eq!(verdict(end, previous), want, "{end:?} with {previous:?}");
        }
    }

    #[test]
    fn starts() {
        let (a, b, bad) = (d("a"), d("b"), d("bad"));
        let none = Memory::default();
        let failed = Memory {
            trial: None,
            failed: Some(bad),
        };
        let trial_b = Memory {
            trial: Some(b),
            failed: None,
        };
        let trial_b_failed = Memory {
            trial: Some(b),
            failed: Some(bad),
        };
        let go = Start::Proceed { forget_failed: false };
        let go_forget = Start::Proceed { forget_failed: true };
        let still = Start::StillFailed(bad);
        // (memory, current, remote, checking, start, forget_trial)
        let table = [
            (none, Some(a), a, true, go, false),
            (none, Some(a), b, true, go, false),
            (none, None, a, true, go, false),
            // The tag still points at the failed digest, which was rolled back.
            (failed, Some(a), bad, true, still, false),
            (failed, None, bad, true, still, false),
            // Also when health checks were since removed from the config.
            (failed, Some(a), bad, false, still, false),
            // No previous version: the failed digest stayed current; nothing to skip.
            (failed, Some(bad), bad, true, go, false),
            // The tag moved on, or back: the failure is forgotten.
            (failed, Some(a), b, true, go_forget, false),
            (failed, Some(a), a, true, go_forget, false),
            // A restart cut the trial of the current version short.
            (trial_b, Some(b), b, true, Start::FinishTrial(b), false),
            (trial_b, Some(b), a, true, Start::FinishTrial(b), false),
            (trial_b_failed, Some(b), b, true, Start::FinishTrial(b), false),
            // ... but health checks are no longer configured.
            (trial_b, Some(b), b, false, go, true),
            // A crash before the switch: b never became current.
            (trial_b, Some(a), b, true, go, true),
            (trial_b_failed, Some(a), b, true, go_forget, true),
            (trial_b_failed, Some(a), bad, true, still, true),
        ];
        for (i, (memory, current, remote, checking, start_, forget_trial)) in table.into_iter().enumerate() {
            assert_eq!(
                start(&memory, current.as_ref(), &remote, checking),
                Decision {
                    start: start_,
                    forget_trial
                },
                "row {i}"
            );
        }
    }
}
