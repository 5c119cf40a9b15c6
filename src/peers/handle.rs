//! A handle to one peer: how layers record what they see.

use std::fmt::{self, Display};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use super::admission::{Admission, EjectRefused, EjectionHistory, EjectionPlan, GateWaiter};
use super::attempt::{Attempt, AttemptDenied};
use super::report::PeerSnapshot;
use super::state::{EjectionCause, Origin, Override, PeerState};
use super::tracker::Tracker;
use super::{PeerKey, Shared};
use crate::event::{NotRetriedReason, SkipReason};

/// A cheap, clonable handle to one tracked peer, from [`Peers::peer`](super::Peers::peer).
///
/// Layers keep one per peer they talk to, so that recording an outcome skips the table lookup.
/// A peer is never evicted while a handle to it exists.
pub struct PeerHandle<K> {
    pub(super) shared: Arc<Shared<K>>,
    pub(super) tracker: Arc<Tracker<K>>,
}

impl<K> Clone for PeerHandle<K> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            tracker: Arc::clone(&self.tracker),
        }
    }
}

impl<K: fmt::Debug> fmt::Debug for PeerHandle<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PeerHandle")
            .field(&self.tracker.key)
            .finish()
    }
}

impl<K: PeerKey> PeerHandle<K> {
    pub(super) fn new(shared: Arc<Shared<K>>, tracker: Arc<Tracker<K>>) -> Self {
        Self { shared, tracker }
    }

    /// The peer's key.
    pub fn key(&self) -> &K {
        &self.tracker.key
    }

    /// Configured or discovered.
    pub fn origin(&self) -> Origin {
        self.tracker.origin()
    }

    /// The peer's state now.
    pub fn state(&self) -> PeerState {
        self.tracker.lock().public_state()
    }

    /// A copy of the peer's whole record.
    pub fn snapshot(&self) -> PeerSnapshot<K> {
        self.shared.snapshot(&self.tracker)
    }

    /// The peer answered: counts a success, clears the run of consecutive failures, and, as
    /// proof that the peer works, resets its backoff schedule. Does not allocate.
    pub fn record_success(&self) {
        self.shared.record_success(&self.tracker);
    }

    /// A request to the peer failed: counts a failure and keeps `error`'s text (cut to the
    /// configured length, in a buffer reused from one failure to the next). Does not change the
    /// connect schedule; a failed connect attempt is reported through [`Attempt::failed`].
    pub fn record_failure(&self, error: &dyn Display) {
        self.shared.record_failure(&self.tracker, error);
    }

    /// The connection stayed up long enough to count as proof (`stable_after`): resets the
    /// backoff schedule without counting a success.
    pub fn mark_proven(&self) {
        self.shared.mark_proven(&self.tracker);
    }

    /// Asks to start a connect attempt now, through the peer's single-flight gate.
    ///
    /// While no connection to the peer is up, one attempt (the *probe*) may run at a time for
    /// the whole process, and only once the backoff delay of the last failure has passed. With a
    /// connection up, more attempts are let through at once.
    pub fn try_begin_attempt(&self) -> Result<Attempt<K>, AttemptDenied> {
        let (number, ticket) = self.shared.begin_attempt(&self.tracker, None)?;
        Ok(Attempt::new(self.clone(), number, ticket))
    }

    /// Like [`try_begin_attempt`](Self::try_begin_attempt), for an attempt that will have an
    /// outcome by `deadline` (its connect timeout). Should its owner stop driving it, the next
    /// task to ask after the deadline counts it as timed out and takes the gate over, so a probe
    /// left behind by a service nobody polls cannot hold the peer for the whole process.
    pub fn try_begin_attempt_until(&self, deadline: Instant) -> Result<Attempt<K>, AttemptDenied> {
        let (number, ticket) = self.shared.begin_attempt(&self.tracker, Some(deadline))?;
        Ok(Attempt::new(self.clone(), number, ticket))
    }

    /// When the probe in flight must have ended, if one is under way with a deadline: the
    /// instant for a waiting task to arm a timer for.
    pub(crate) fn probe_deadline(&self) -> Option<Instant> {
        let st = self.tracker.lock();
        st.probe_deadline.filter(|_| st.probe_in_flight)
    }

    /// Wakes the tasks waiting for the probe in flight, without ending it: its owner stopped
    /// driving it and left it for one of them to take over.
    pub(crate) fn wake_attempt_waiters(&self) {
        self.shared.wake_probe_waiters(&self.tracker);
    }

    /// `Ready` once no probe of this peer is under way; otherwise arranges for the task to be
    /// woken when the probe in flight ends, however it ends.
    pub fn poll_attempt_finished(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.shared.poll_probe_done(&self.tracker, cx)
    }

    /// A connection that [`Attempt::succeeded`] has gone away, with the error if it broke.
    ///
    /// When the last connection closes, a peer that proved itself since connecting becomes idle
    /// and may be reconnected at once; one that did not (accepted, then dropped) is flapping and
    /// waits for its schedule's next delay.
    pub fn connection_closed(&self, error: Option<&dyn Display>) {
        self.shared.connection_closed(&self.tracker, error);
    }

    /// Whether the peer still has to prove itself: true after a failure or a new connection,
    /// until a success or [`mark_proven`](PeerHandle::mark_proven). Lock-free.
    pub(crate) fn needs_proof(&self) -> bool {
        self.tracker.outcomes.is_unsettled()
    }

    /// The last error recorded for the peer, shared so that many errors can carry it.
    pub(crate) fn last_error(&self) -> Option<Arc<str>> {
        self.tracker.lock().last_error.get().map(Arc::from)
    }

    /// When the peer's schedule ran out, if it is exhausted.
    pub(crate) fn exhausted_at(&self) -> Option<Instant> {
        self.tracker.lock().exhausted_at
    }

    /// When the peer's backoff lets the next attempt start, if it is waiting.
    pub(crate) fn next_attempt_at(&self) -> Option<Instant> {
        self.tracker.lock().next_attempt_at
    }

    /// A seed for a generator of this peer's own, different for each call and repeatable when
    /// the table is seeded.
    pub(crate) fn derive_seed(&self) -> u64 {
        self.shared.derive_seed()
    }

    /// Starts the peer's backoff schedule over and leaves `Exhausted` or `Backoff` for `Idle`.
    pub fn reset(&self) {
        self.shared.reset(&self.tracker);
    }

    /// Takes the peer out of use for `duration`, as health does with an outlier: the
    /// [`Ejected`](crate::event::EventKind::Ejected) event and the snapshot's `ejected_until`
    /// say how long. The peer stays ejected until a probe request through a
    /// [`HealthLayer`](crate::health::HealthLayer) succeeds once the time is over, or until
    /// [`restore`](PeerHandle::restore). Ejecting an outlier again restarts its ejection with
    /// the new `duration`. Returns `false`, changing nothing, for a peer that is exhausted,
    /// forced closed, or ejected by an active check or by hand. Connect attempts are not
    /// blocked by an ejection, so a probe request can still reach the peer.
    pub fn eject(&self, duration: Duration) -> bool {
        self.shared
            .eject_outlier(&self.tracker, None, true, |history| EjectionPlan {
                multiplier: history.multiplier.saturating_add(1),
                duration,
            })
            .is_ok()
    }

    /// Ends any ejection: the peer returns to the state underneath. A manual
    /// [`Override::Open`] is lifted with it. Returns whether the peer was ejected.
    pub fn restore(&self) -> bool {
        self.shared.restore(&self.tracker)
    }

    /// Overrides health by hand: [`Override::Open`] ejects the peer until further notice,
    /// [`Override::Closed`] restores it and keeps it in use whatever health says, and
    /// [`Override::Automatic`] hands the decision back to health.
    pub fn set_override(&self, to: Override) {
        self.shared.set_override(&self.tracker, to);
    }

    /// The manual override in force.
    pub fn health_override(&self) -> Override {
        self.tracker.lock().health_override
    }

    /// Whether a request may go to the peer now; see [`Admission`]. Lock-free for a peer that
    /// is not ejected. A rejected caller's `waiter` is woken when that may change.
    pub(crate) fn admit(&self, probes: u32, waiter: Option<&Arc<GateWaiter>>) -> Admission<K> {
        if !self.tracker.outcomes.is_ejected() {
            return Admission::Open;
        }
        self.shared.admit(&self.tracker, self, probes, waiter)
    }

    /// An outlier ejection sized by `plan`, held back by the panic guard when `max_ejected`
    /// of the tracked peers are out already.
    pub(crate) fn eject_outlier(
        &self,
        max_ejected: Option<f64>,
        plan: impl FnOnce(EjectionHistory) -> EjectionPlan,
    ) -> Result<Duration, EjectRefused> {
        self.shared
            .eject_outlier(&self.tracker, max_ejected, false, plan)
    }

    /// Reports an ejection health wanted and did not make (shadow mode).
    pub(crate) fn skip_ejection(&self, reason: SkipReason) {
        let mut st = self.tracker.lock();
        self.shared
            .skip(&self.tracker, &mut st, reason, Instant::now());
    }

    /// The ejection in effect, if any: until when (for an outlier ejection) and by whom.
    pub(crate) fn ejection(&self) -> Option<(Option<Instant>, EjectionCause)> {
        self.tracker.lock().ejection.map(|e| (e.until, e.cause))
    }

    /// An active health check found the peer down.
    pub(crate) fn eject_by_check(&self) -> bool {
        self.shared.eject_by_check(&self.tracker)
    }

    /// An active health check found the peer up.
    pub(crate) fn restore_by_check(&self) -> bool {
        self.shared.restore_by_check(&self.tracker)
    }

    /// A success as the health layer judges it: ends its run of failures. Lock-free.
    pub(crate) fn health_success(&self) {
        self.tracker.outcomes.health_success();
    }

    /// A failure as the health layer judges it; returns the failures in a row. Lock-free.
    pub(crate) fn health_failure(&self) -> u32 {
        self.tracker.outcomes.health_failure()
    }

    /// A request to the peer will be retried: counts it and emits
    /// [`RetryScheduled`](crate::event::EventKind::RetryScheduled).
    pub fn record_retry(&self, attempt: u32, delay: Duration, reason: &'static str) {
        self.shared
            .record_retry(&self.tracker, attempt, delay, reason);
    }

    /// A retry the classifier asked for was ruled out for `reason`: emits
    /// [`NotRetried`](crate::event::EventKind::NotRetried).
    pub fn record_not_retried(&self, reason: NotRetriedReason) {
        self.shared.record_not_retried(&self.tracker, reason);
    }

    /// A retry was refused for want of budget: counts it and emits
    /// [`BudgetExhausted`](crate::event::EventKind::BudgetExhausted).
    pub fn record_budget_exhausted(&self) {
        self.shared.record_budget_exhausted(&self.tracker);
    }
}
