//! The shell half of every retry loop (blob transfers and manifest requests alike).
//!
//! Owns: driving core's [`RetryState`] under a [`RetryPolicy`] for one object — drawing
//! the jitter sample — and the wait between attempts, cut short by cancellation. Must
//! never decide whether or how long to wait itself (that is the pure
//! [`RetryPolicy::decide`]), and never sleep past the cancellation token.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use edgepull_core::retry::{Action, Failure, RetryPolicy, RetryState};

/// The retries of one object: attempt counter, jitter and cancellable waits.
pub(crate) struct Retrier<'a> {
    policy: &'a RetryPolicy,
    state: RetryState,
    cancel: &'a CancellationToken,
}

impl<'a> Retrier<'a> {
    /// A fresh counter under `policy`; waits end early when `cancel` fires.
    pub(crate) fn new(policy: &'a RetryPolicy, cancel: &'a CancellationToken) -> Self {
        Self {
            policy,
            state: RetryState::new(),
            cancel,
        }
    }

    /// Record a failed attempt (`progressed`: it durably stored new bytes first).
    /// `Some(delay)`: try again after [`Retrier::wait`]ing it; `None`: give up.
    pub(crate) fn on_failure(&mut self, failure: &Failure, progressed: bool) -> Option<Duration> {
        match self
            .state
            .on_failure(self.policy, failure, progressed, rand::random())
        {
            Action::RetryAfter(delay) => Some(delay),
            Action::GiveUp => None,
        }
    }

    /// Sleep `delay`, or until cancellation (the caller checks the token next).
    pub(crate) async fn wait(&self, delay: Duration) {
        tokio::select! {
            () = self.cancel.cancelled() => {}
            () = tokio::time::sleep(delay) => {}
        }
    }
}
