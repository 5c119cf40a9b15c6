//! The health gate's vocabulary: whether a request may go to a peer, the probe slots of an
//! ejected one, and why an ejection did not happen.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::Waker;
use std::time::Duration;

use tokio::time::Instant;

use super::state::EjectionCause;
use super::{PeerHandle, PeerKey};

/// What the health gate says about one request to a peer.
#[derive(Debug)]
pub(crate) enum Admission<K: PeerKey> {
    /// Not ejected: go ahead.
    Open,
    /// Ejected, its time is over, and this request is one of the probes that decide whether
    /// the peer comes back.
    Probe(ProbePermit<K>),
    /// Ejected: no request now. The caller's waker, if it gave one, is woken when that changes
    /// (restore, re-ejection, a freed probe slot); a `retry_at` needs a timer besides.
    Rejected {
        /// When the ejection's time is over, if it is an outlier ejection still running.
        retry_at: Option<Instant>,
        /// Who ejected the peer.
        cause: EjectionCause,
    },
}

/// What the peer's ejection history looks like to the policy that sizes the next ejection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EjectionHistory {
    /// The multiplier the last ejection left (0 for a peer never ejected or fully forgiven).
    pub(crate) multiplier: u32,
    /// When the peer was last restored.
    pub(crate) restored_at: Option<Instant>,
}

/// The policy's answer: the new multiplier and the ejection's length.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EjectionPlan {
    pub(crate) multiplier: u32,
    pub(crate) duration: Duration,
}

/// Why an outlier ejection was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EjectRefused {
    /// The peer is ejected already.
    AlreadyEjected,
    /// The peer's connect attempts are used up; no request reaches it anyway.
    Exhausted,
    /// The panic guard: enough peers are ejected already (an `EjectionSkipped` was emitted).
    PanicGuard,
    /// The peer is forced closed (an `EjectionSkipped` was emitted).
    ForcedClosed,
}

/// One of the probe requests an ejected peer admits once its ejection's time is over.
///
/// Report its outcome with [`succeeded`](Self::succeeded) or [`failed`](Self::failed);
/// dropping it without either (the call never came, the future was dropped) frees the slot for
/// another request and decides nothing.
pub(crate) struct ProbePermit<K: PeerKey> {
    handle: PeerHandle<K>,
    generation: u64,
    finished: bool,
}

impl<K: PeerKey> fmt::Debug for ProbePermit<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProbePermit")
            .field("peer", self.handle.key())
            .field("generation", &self.generation)
            .finish()
    }
}

/// How a probe ended.
pub(crate) enum ProbeOutcome<P> {
    Succeeded,
    Failed(P),
    Released,
}

impl<K: PeerKey> ProbePermit<K> {
    pub(crate) fn new(handle: PeerHandle<K>, generation: u64) -> Self {
        Self {
            handle,
            generation,
            finished: false,
        }
    }

    /// Whether the ejection this slot was taken in is still the peer's current one: a slot
    /// kept across polls (by a service a balancer parked, say) goes stale when the peer is
    /// restored or ejected again meanwhile, and must not let a request through.
    pub(crate) fn is_current(&self) -> bool {
        self.handle.tracker.lock().ejection_generation == self.generation
    }

    /// The probe succeeded: the peer is restored and its multiplier decays by one step.
    ///
    /// Returns false if the ejection it probed is over (a restore, another probe's outcome)
    /// or is no longer the one it probed (taken over by a check or an override, or made again
    /// by another probe's failure): then it decided nothing, and its outcome is an ordinary
    /// one, for the caller to count as such.
    pub(crate) fn succeeded(mut self) -> bool {
        self.finished = true;
        self.handle.shared.probe_finished(
            &self.handle.tracker,
            self.generation,
            ProbeOutcome::<fn(EjectionHistory) -> EjectionPlan>::Succeeded,
        )
    }

    /// The probe failed: the peer is ejected again, as `plan` says. Returns false, as
    /// [`succeeded`](Self::succeeded) does, if the probe decided nothing.
    pub(crate) fn failed(mut self, plan: impl FnOnce(EjectionHistory) -> EjectionPlan) -> bool {
        self.finished = true;
        self.handle.shared.probe_finished(
            &self.handle.tracker,
            self.generation,
            ProbeOutcome::Failed(plan),
        )
    }
}

impl<K: PeerKey> Drop for ProbePermit<K> {
    fn drop(&mut self) {
        if !self.finished {
            self.handle.shared.probe_finished(
                &self.handle.tracker,
                self.generation,
                ProbeOutcome::<fn(EjectionHistory) -> EjectionPlan>::Released,
            );
        }
    }
}

/// Where a service waiting at the health gate leaves its waker.
///
/// The peer keeps a weak reference per waiting service, not a waker per wait: a service that is
/// dropped while it waits (its caller gave up) leaves a dead entry that is pruned as the list
/// grows, so a long ejection cannot pile up the wakers of every task that ever waited.
#[derive(Debug, Default)]
pub(crate) struct GateWaiter(Mutex<Option<Waker>>);

impl GateWaiter {
    /// The task to wake next; replaces the one before.
    pub(crate) fn set(&self, waker: &Waker) {
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match &*slot {
            Some(current) if current.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }

    fn wake(&self) {
        let waker = self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// Adds `waiter` to a peer's list unless it is there, pruning the dead entries whenever the
/// list would have to grow: the list stays within twice the live waiting services.
pub(crate) fn register(waiters: &mut Vec<Weak<GateWaiter>>, waiter: &Arc<GateWaiter>) {
    if waiters
        .iter()
        .any(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(waiter)))
    {
        return;
    }
    if waiters.len() == waiters.capacity() {
        waiters.retain(|w| w.strong_count() > 0);
    }
    waiters.push(Arc::downgrade(waiter));
}

/// Wakes the services that are still there. Call with no lock held.
pub(crate) fn wake_all(waiters: Vec<Weak<GateWaiter>>) {
    for waiter in waiters.iter().filter_map(Weak::upgrade) {
        waiter.wake();
    }
}
