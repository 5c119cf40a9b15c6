//! What requests tell about a peer: successes (one of which may be the proof that ends an
//! outage), failures, and the retry layer's retries and refusals. Counting is lock-free where
//! it can be: this is the hot path of every layer.

use std::fmt::Display;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::outcomes::stamp;
use super::tracker::{Tracker, TrackerState};
use super::{PeerKey, Shared};
use crate::event::{EventKind, NotRetriedReason};

impl<K: PeerKey> Shared<K> {
    /// The hot path: lock-free unless the success is the proof that resets a failed peer.
    pub(super) fn record_success(&self, t: &Tracker<K>) {
        if self.count_success(t) {
            self.mark_proven(t);
        }
    }

    /// Counts a success without any lock; returns whether it must also be taken as proof
    /// ([`mark_proven`](Self::mark_proven), which locks the peer).
    pub(super) fn count_success(&self, t: &Tracker<K>) -> bool {
        let unsettled = t.outcomes.success(stamp(self.epoch, Instant::now()));
        self.count(t, &self.totals.successes);
        unsettled
    }

    pub(super) fn mark_proven(&self, t: &Tracker<K>) {
        let now = Instant::now();
        let mut st = t.lock();
        let before = st.public_state();
        st.prove();
        t.outcomes.set_unsettled(false);
        self.settle(t, &st, before, now);
    }

    /// Counts a failure. The counters need no lock; the error's text goes into the peer's
    /// buffer, which does.
    pub(super) fn record_failure(&self, t: &Tracker<K>, error: &dyn Display) {
        let now = Instant::now();
        let mut st = t.lock();
        self.count_failure(t, &mut st, error, now);
    }

    pub(super) fn count_failure(
        &self,
        t: &Tracker<K>,
        st: &mut TrackerState,
        error: &dyn Display,
        now: Instant,
    ) {
        t.outcomes.failure(stamp(self.epoch, now));
        self.count(t, &self.totals.failures);
        st.last_error.set(error);
    }

    /// Adds one to a table-wide total, unless the peer was forgotten: a forgotten peer's
    /// handles keep working but no longer count in the table's totals.
    pub(super) fn count(&self, t: &Tracker<K>, total: &AtomicU64) {
        if !t.outcomes.is_detached() {
            total.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) fn record_retry(
        &self,
        t: &Tracker<K>,
        attempt: u32,
        delay: Duration,
        reason: &'static str,
    ) {
        let now = Instant::now();
        let mut st = t.lock();
        st.retries += 1;
        self.count(t, &self.totals.retries);
        self.events.publish(
            &t.key,
            now,
            EventKind::RetryScheduled {
                attempt,
                delay,
                reason,
            },
        );
    }

    pub(super) fn record_not_retried(&self, t: &Tracker<K>, reason: NotRetriedReason) {
        self.events
            .publish(&t.key, Instant::now(), EventKind::NotRetried { reason });
    }

    pub(super) fn record_budget_exhausted(&self, t: &Tracker<K>) {
        self.count(t, &self.totals.budget_exhausted);
        self.events
            .publish(&t.key, Instant::now(), EventKind::BudgetExhausted);
    }
}
