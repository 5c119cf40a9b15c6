//! One request's retries: what has been spent, and whether another attempt may be made.

use std::error::Error;
use std::time::Duration;

use tokio::time::Instant;
use tower::BoxError;

use super::budget::Budget;
use super::builder::Config;
use super::classify::{Classify, Decision, Replay};
use super::error::AttemptTimedOut;
use super::record;
use super::track::TrackPeer;
use crate::backoff::Schedule;
use crate::error::Chain;
use crate::event::NotRetriedReason;
use crate::health::is_refusal;
use crate::peers::{PeerHandle, PeerKey};
use crate::reconnect::{ConnectTimeout, Exhausted, Unavailable};
use crate::time::deadline;

/// What one request has spent of its limits.
#[derive(Debug)]
pub(crate) struct Attempts {
    /// Retries made so far, transparent ones included.
    retries: u32,
    /// Free transparent retries made (those past `max_transparent` count as ordinary ones).
    transparent: u32,
    /// When the call's deadline passes, if it has one.
    pub(crate) deadline: Option<Instant>,
    /// Created at the first retry, so that a request that succeeds reads no clock and draws no
    /// seed.
    schedule: Option<Schedule>,
    /// The request's peer's own budget, when budgets are per peer; else the layer's.
    budget: Option<Budget>,
}

/// Where a request goes after an attempt.
pub(crate) enum Next<Req> {
    /// Hand this outcome to the caller.
    Done,
    /// Send `request` once `at` has come.
    Retry { request: Req, at: Instant },
}

impl Attempts {
    pub(crate) fn new(deadline: Option<Instant>, budget: Option<Budget>) -> Self {
        Self {
            retries: 0,
            transparent: 0,
            deadline,
            schedule: None,
            budget,
        }
    }

    /// Attempts started so far.
    pub(crate) fn started(&self) -> u32 {
        self.retries.saturating_add(1)
    }

    /// Classifies `outcome` of sending `request` and, if it should be retried and every limit
    /// allows it, spends a retry and returns the copy to send next. Records the failure, the
    /// retry or the reason there is none in the request's peer.
    pub(crate) fn next<Req, Res, P, T>(
        &mut self,
        config: &Config<P, T>,
        request: &Req,
        outcome: &Result<Res, BoxError>,
    ) -> Next<Req>
    where
        P: Classify<Req, Res, BoxError> + Replay<Req>,
        T: TrackPeer<Req>,
    {
        let decision = config.policy.classify(request, outcome);
        // Every error is a failure of the peer; a response only when the classifier says so
        // (a 503 is, a 404 is not).
        let peer = match (&decision, outcome) {
            (Decision::DontRetry, Ok(_)) => return Next::Done,
            _ => config.tracking.peer_of(request),
        };
        if let (Some(peer), Err(error)) = (&peer, outcome) {
            let error: &(dyn Error + 'static) = error.as_ref();
            if is_own_timeout(error) || (config.record_errors && !recorded_below(error)) {
                peer.record_failure(&Chain(error));
            }
        }
        let (reason, hint, transparent) = match decision {
            Decision::DontRetry => return Next::Done,
            Decision::Retry { reason, after } => (reason, after, false),
            Decision::Transparent { reason } => (reason, None, true),
        };
        if let (Some(peer), Ok(_)) = (&peer, outcome) {
            peer.record_failure(&reason);
        }

        // A transparent failure past the free ones is retried as an ordinary one.
        let free = transparent && self.transparent < config.max_transparent;
        if !free && self.retries - self.transparent >= config.max_retries {
            return not_retried(peer.as_ref(), NotRetriedReason::AttemptsExhausted, reason);
        }
        let Some(replay) = config.policy.replay(request) else {
            return not_retried(peer.as_ref(), NotRetriedReason::NotReplayable, reason);
        };

        let backoff = config.backoff;
        let schedule = self
            .schedule
            .get_or_insert_with(|| backoff.schedule_seeded(config.next_seed()));
        // Drawn even when the server gave a hint, so that the schedule keeps growing.
        let drawn = schedule.next_delay_unbounded();
        let delay = hint.map_or(drawn, |hint| record::clamp_hint(hint, &backoff));
        let at = deadline(Instant::now(), delay);
        if self.deadline.is_some_and(|d| at >= d) {
            return not_retried(peer.as_ref(), NotRetriedReason::Deadline, reason);
        }
        let budget = self.budget.as_ref().unwrap_or(&config.budget);
        if !record::withdraw(budget, peer.as_ref(), reason) {
            return Next::Done;
        }

        self.retries = self.retries.saturating_add(1);
        if free {
            self.transparent += 1;
        }
        record::retry_scheduled(peer.as_ref(), self.retries, delay, reason);
        Next::Retry {
            request: replay,
            at,
        }
    }
}

fn not_retried<K: PeerKey, Req>(
    peer: Option<&PeerHandle<K>>,
    why: NotRetriedReason,
    reason: &'static str,
) -> Next<Req> {
    record::not_retried(peer, why, reason);
    Next::Done
}

/// The layer's own attempt timeout: only it knows of it.
fn is_own_timeout(error: &(dyn Error + 'static)) -> bool {
    error.is::<AttemptTimedOut>()
}

/// redial's reconnect and health errors: the layer that made them recorded them (or, failing fast
/// or refusing, decided that nothing happened to record).
fn recorded_below(error: &(dyn Error + 'static)) -> bool {
    // Walk the chain: a health layer in between wraps the reconnect layer's errors.
    let mut next = Some(error);
    while let Some(error) = next {
        // A refusal by the health layer sent nothing: not the peer's failure to count again.
        if error.is::<Unavailable>()
            || error.is::<Exhausted>()
            || error.is::<ConnectTimeout>()
            || is_refusal(error)
        {
            return true;
        }
        next = error.source();
    }
    false
}

/// When an attempt started now must end: its own timeout or the call's deadline, whichever
/// comes first.
pub(crate) fn attempt_deadline(
    now: Instant,
    timeout: Option<Duration>,
    call_deadline: Option<Instant>,
) -> Option<Instant> {
    let own = timeout.map(|t| deadline(now, t));
    match (own, call_deadline) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
