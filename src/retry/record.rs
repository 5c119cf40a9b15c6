//! What the layer and the helpers both do once an outcome is classified: clamp a server's hint,
//! draw on the budget, and record the retry, or why there is none, in the peer or in traces.

use std::time::Duration;

use super::budget::Budget;
use crate::backoff::Backoff;
use crate::event::NotRetriedReason;
use crate::peers::{PeerHandle, PeerKey};

/// A server's delay hint, clamped into the schedule's `[initial, max]`: a server can neither
/// make us hammer it nor park us for a day.
pub(crate) fn clamp_hint(hint: Duration, backoff: &Backoff) -> Duration {
    hint.clamp(backoff.initial(), backoff.max())
}

/// Takes a retry out of `budget`; when it is empty, records that and returns `false`.
pub(crate) fn withdraw<K: PeerKey>(
    budget: &Budget,
    peer: Option<&PeerHandle<K>>,
    reason: &'static str,
) -> bool {
    if budget.withdraw() {
        return true;
    }
    match peer {
        Some(peer) => peer.record_budget_exhausted(),
        None => tracing::warn!(reason, "retry budget exhausted"),
    }
    false
}

/// Records retry number `attempt`, `delay` from now, for `reason`.
pub(crate) fn retry_scheduled<K: PeerKey>(
    peer: Option<&PeerHandle<K>>,
    attempt: u32,
    delay: Duration,
    reason: &'static str,
) {
    match peer {
        Some(peer) => peer.record_retry(attempt, delay, reason),
        None => tracing::debug!(attempt, ?delay, reason, "retry scheduled"),
    }
}

/// Records that the retry the classifier wanted for `reason` is not made, because of `why`.
pub(crate) fn not_retried<K: PeerKey>(
    peer: Option<&PeerHandle<K>>,
    why: NotRetriedReason,
    reason: &'static str,
) {
    match peer {
        Some(peer) => peer.record_not_retried(why),
        None => tracing::debug!(reason, why = why.name(), "retry wanted but not made"),
    }
}
