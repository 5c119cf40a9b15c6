//! Publishing an event to tracing and to subscribers.

use std::fmt::Debug;

use tokio::sync::broadcast;
use tokio::time::Instant;

use super::{Event, EventKind, Subscription};

/// The sending side of the event stream, one per [`Peers`](crate::peers::Peers).
#[derive(Debug)]
pub(crate) struct Publisher<K> {
    tx: broadcast::Sender<Event<K>>,
}

impl<K: Clone + Debug> Publisher<K> {
    /// `capacity` is validated by the caller: broadcast channels reject zero.
    pub(crate) fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity);
        Self { tx }
    }

    pub(crate) fn subscribe(&self) -> Subscription<K> {
        Subscription::new(self.tx.subscribe())
    }

    /// Traces the event and hands it to subscribers, if there are any.
    ///
    /// Never blocks: the broadcast ring overwrites the oldest event for a lagging receiver.
    pub(crate) fn publish(&self, peer: &K, at: Instant, kind: EventKind) {
        trace(peer, &kind);
        if self.tx.receiver_count() > 0 {
            // An error only means every receiver went away in the meantime.
            let _ = self.tx.send(Event {
                peer: peer.clone(),
                at,
                kind,
            });
        }
    }
}

fn trace<K: Debug>(peer: &K, kind: &EventKind) {
    let name = kind.name();
    match kind {
        EventKind::AttemptStarted {
            attempt,
            max_attempts,
        } => tracing::debug!(
            peer = ?peer, kind = name, attempt, max_attempts = ?max_attempts,
            "connect attempt started"
        ),
        EventKind::Waiting { delay, reason } => tracing::debug!(
            peer = ?peer, kind = name, delay = ?delay, reason = ?reason,
            "waiting before the next attempt"
        ),
        EventKind::Connected { attempts, total } => tracing::info!(
            peer = ?peer, kind = name, attempts, total = ?total, "connected"
        ),
        EventKind::Disconnected { error } => tracing::info!(
            peer = ?peer, kind = name, error = error.as_deref(), "disconnected"
        ),
        EventKind::Exhausted { attempts, error } => tracing::warn!(
            peer = ?peer, kind = name, attempts, error = error.as_deref(),
            "connect attempts exhausted"
        ),
        EventKind::RetryScheduled {
            attempt,
            delay,
            reason,
        } => tracing::debug!(
            peer = ?peer, kind = name, attempt, delay = ?delay, reason = *reason,
            "retry scheduled"
        ),
        EventKind::BudgetExhausted => {
            tracing::warn!(peer = ?peer, kind = name, "retry budget exhausted")
        }
        EventKind::NotRetried { reason } => tracing::debug!(
            peer = ?peer, kind = name, reason = reason.name(), "retry wanted but not made"
        ),
        EventKind::Ejected {
            duration,
            cause,
            times,
        } => tracing::info!(
            peer = ?peer, kind = name, duration = ?duration, cause = cause.name(), times,
            "peer ejected"
        ),
        EventKind::Restored => tracing::info!(peer = ?peer, kind = name, "peer restored"),
        EventKind::EjectionSkipped { reason } => tracing::warn!(
            peer = ?peer, kind = name, reason = reason.name(), "ejection skipped"
        ),
        EventKind::StateChanged { from, to } => tracing::info!(
            peer = ?peer, kind = name, from = ?from, to = ?to, "peer state changed"
        ),
    }
}
