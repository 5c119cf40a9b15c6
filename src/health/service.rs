//! [`Health`]: the service that asks its peer's health before every request.

use std::fmt;
use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep, sleep_until};
use tower::{BoxError, Service};

use super::error::HealthError;
use super::future::ResponseFuture;
use super::layer::Shared;
use super::policy::Mode;
use crate::classify::Classify;
use crate::peers::{Admission, EjectionCause, GateWaiter, PeerKey, ProbePermit};

/// Times `poll_ready` asks again when a timer for the end of an ejection is already due,
/// before it yields to the scheduler instead.
const MAX_ADMISSIONS_PER_POLL: usize = 3;

/// Guards the service it wraps with its peer's health, as its
/// [`HealthLayer`](super::HealthLayer) was configured.
///
/// `poll_ready` asks the peer first and polls the inner service only if a request may go:
///
/// - the peer is in use: the inner service is polled;
/// - the peer is ejected and its time is over: this service takes one of the probe slots
///   (reserved across every clone and layer of the peer) and keeps it until `call`, then the
///   inner service is polled; dropping the service, or an error from the inner `poll_ready`,
///   frees the slot;
/// - the peer is ejected: in [`Mode::Reject`], ready, and the next call fails at once with
///   [`HealthError::Ejected`] without touching the inner service; in [`Mode::Backpressure`],
///   `Pending` until the ejection's time is over (a timer is armed), the peer is restored, or
///   a probe slot frees up.
///
/// An admission lasts until `call`: a probe slot, once taken, is kept while the inner service
/// is pending. A clone starts with no admission, as the tower contract wants.
pub struct Health<S, K: PeerKey, C> {
    inner: S,
    shared: Arc<Shared<K, C>>,
    admitted: Admitted<K>,
    /// The timer for the end of an ejection, in [`Mode::Backpressure`]; made on first need.
    timer: Option<Pin<Box<Sleep>>>,
    /// Where the peer wakes this service when an ejection changes, in [`Mode::Backpressure`];
    /// made on first need (a clone starts without, so cloning allocates nothing).
    waiter: Option<Arc<GateWaiter>>,
}

/// What the last `poll_ready` decided for the next call.
enum Admitted<K: PeerKey> {
    /// Nothing yet: `poll_ready` has not returned ready since the last call.
    No,
    /// The peer is in use.
    Open,
    /// The call is a probe of an ejected peer.
    Probe(ProbePermit<K>),
    /// The call is refused ([`Mode::Reject`]).
    Rejected {
        retry_at: Option<Instant>,
        cause: EjectionCause,
    },
}

impl<S, K: PeerKey, C> Health<S, K, C> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<K, C>>) -> Self {
        Self {
            inner,
            shared,
            admitted: Admitted::No,
            timer: None,
            waiter: None,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service, unwrapped (a probe slot this service held is freed).
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The peer this service guards.
    pub fn peer(&self) -> &crate::peers::PeerHandle<K> {
        &self.shared.peer
    }

    /// Asks the peer whether a request may go, until an answer that does not wait.
    fn admit(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let (mode, probes) = (self.shared.policy.mode(), self.shared.policy.probes());
        for _ in 0..MAX_ADMISSIONS_PER_POLL {
            let mut admission = self.shared.peer.admit(probes, None);
            if let (Admission::Rejected { .. }, Mode::Backpressure) = (&admission, mode) {
                // Asked again with somewhere to be woken: the answer and the registration are
                // made under the peer's lock, so a change between the two asks is not missed.
                // Only refusals get here: the happy path neither locks nor allocates.
                let waiter = self.waiter.get_or_insert_with(Default::default);
                waiter.set(cx.waker());
                admission = self.shared.peer.admit(probes, Some(waiter));
            }
            match admission {
                Admission::Open => self.admitted = Admitted::Open,
                Admission::Probe(permit) => self.admitted = Admitted::Probe(permit),
                Admission::Rejected { retry_at, cause } => match mode {
                    Mode::Reject => self.admitted = Admitted::Rejected { retry_at, cause },
                    Mode::Backpressure => {
                        // Woken by the peer on a restore, a new ejection or a freed probe slot
                        // (`admit` registered the waker); by the timer at the end of the time.
                        let Some(at) = retry_at else {
                            return Poll::Pending;
                        };
                        if self.arm(cx, at).is_pending() {
                            return Poll::Pending;
                        }
                        // The time is over already: ask again.
                        continue;
                    }
                },
            }
            return Poll::Ready(());
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Arms the one timer for `at` and polls it.
    fn arm(&mut self, cx: &mut Context<'_>, at: Instant) -> Poll<()> {
        let timer = self.timer.get_or_insert_with(|| Box::pin(sleep_until(at)));
        if timer.deadline() != at {
            timer.as_mut().reset(at);
        }
        timer.as_mut().poll(cx)
    }
}

impl<S, K, C, Req> Service<Req> for Health<S, K, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: PeerKey,
    C: Classify<Req, S::Response, BoxError>,
{
    type Response = S::Response;
    type Error = HealthError;
    type Future = ResponseFuture<S::Future, K, C, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HealthError>> {
        // A probe slot is kept across polls while its ejection lasts (a slot of an ejection
        // that ended, by a restore or a new ejection, would let a request past the gate);
        // anything else is asked again (for a peer in use that is one atomic load), so a peer
        // ejected meanwhile is seen.
        let current_probe =
            matches!(&self.admitted, Admitted::Probe(permit) if permit.is_current());
        if !current_probe {
            self.admitted = Admitted::No;
            if self.admit(cx).is_pending() {
                return Poll::Pending;
            }
            if let Admitted::Rejected { .. } = self.admitted {
                return Poll::Ready(Ok(()));
            }
        }
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(error)) => {
                // Frees a probe slot: this service will not make the call.
                self.admitted = Admitted::No;
                Poll::Ready(Err(HealthError::Inner(error.into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let admitted = match mem::replace(&mut self.admitted, Admitted::No) {
            // Called without a ready `poll_ready`, against the tower contract: the peer's gate
            // still holds (the inner service's readiness is the caller's to answer for).
            Admitted::No => match self.shared.peer.admit(self.shared.policy.probes(), None) {
                Admission::Open => Admitted::Open,
                Admission::Probe(permit) => Admitted::Probe(permit),
                Admission::Rejected { retry_at, cause } => Admitted::Rejected { retry_at, cause },
            },
            admitted => admitted,
        };
        let probe = match admitted {
            Admitted::Rejected { retry_at, cause } => {
                return ResponseFuture::ejected(self.shared.ejected(retry_at, cause));
            }
            Admitted::Probe(permit) => Some(permit),
            Admitted::Open | Admitted::No => None,
        };
        ResponseFuture::called(self.inner.call(request), Arc::clone(&self.shared), probe)
    }
}

impl<S: Clone, K: PeerKey, C> Clone for Health<S, K, C> {
    fn clone(&self) -> Self {
        Self::new(self.inner.clone(), Arc::clone(&self.shared))
    }
}

impl<S: fmt::Debug, K: PeerKey, C> fmt::Debug for Health<S, K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let admitted = match self.admitted {
            Admitted::No => "no",
            Admitted::Open => "open",
            Admitted::Probe(_) => "probe",
            Admitted::Rejected { .. } => "rejected",
        };
        f.debug_struct("Health")
            .field("inner", &self.inner)
            .field("peer", self.shared.peer.key())
            .field("admitted", &admitted)
            .finish()
    }
}
