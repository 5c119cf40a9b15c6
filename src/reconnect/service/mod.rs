//! [`Reconnect`]: a service that holds one connection to a peer and replaces it when it breaks.

use std::fmt;
use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rand::rngs::Xoshiro256PlusPlus;
use tokio::time::{Instant, Sleep, sleep_until};
use tower::{BoxError, Service};

mod connect;
mod handover;

use connect::{MAX_STEPS_PER_POLL, Step};
use handover::{ConnectAttempt, Handover};

use super::builder::Settings;
use super::connection::OpenConnection;
use super::future::{CallReport, ResponseFuture};
use super::{Exhausted, NotReady, Unavailable};
use crate::error::Chain;
use crate::peers::{PeerHandle, PeerKey};
use crate::rng;
use crate::time::deadline;

/// A service that connects to one target through a connector, keeps the connection, and
/// reconnects with the peer's backoff when it breaks. Made by [`ReconnectLayer`](super::ReconnectLayer).
///
/// `poll_ready` drives everything; no task is spawned. While no connection is up it is
/// `Pending`, with a timer armed for the end of the backoff delay (or the connect timeout),
/// until the `fail_fast` window has passed: then it turns ready and calls fail at once with
/// [`Unavailable`], while each `poll_ready` keeps reconnecting. When the peer's attempts are
/// exhausted, calls fail with [`Exhausted`].
///
/// Fail-fast is about an unreachable peer. While the peer is known to be up, the short waits
/// stay pending however long the service has been without a connection: the stagger after
/// another service's successful probe, and a connect attempt made beside working connections
/// (bounded by the connect timeout). In fail-fast mode an attempt advances only when
/// `poll_ready` is called: a caller that polls rarely may see one more `Unavailable` after the
/// peer is back, while its connection completes.
///
/// # Clones
///
/// A clone shares the [`Peers`](crate::peers::Peers) table, and so the peer's tracker, its one
/// backoff schedule and its single-flight gate, with the original. It owns its own connector,
/// connection, timers and fail-fast clock. A clone starts without a connection and is not ready
/// until polled: calling it first fails with [`NotReady`].
///
/// A service that turns ready to fail fast while its connect attempt is still under way leaves
/// the attempt to its family (itself and its clones): whichever polls next drives it on. A
/// retry made on a clone (as tower's `Retry` does) therefore finishes the connect its original
/// started, rather than waiting at the peer's gate for an attempt nobody drives. A service
/// dropped while its probe is under way leaves it to the family the same way, if any member is
/// left.
pub struct Reconnect<M, T, K>
where
    M: Service<T>,
    K: PeerKey,
{
    connector: M,
    target: T,
    peer: PeerHandle<K>,
    label: Arc<str>,
    settings: Arc<Settings>,
    state: State<M::Future, M::Response, K>,
    /// Where an attempt this service stopped driving waits for the next member of its family.
    handover: Handover<M::Future, K>,
    ready: Readiness,
    timer: Option<Pin<Box<Sleep>>>,
    /// Since when this service has had no usable connection; the fail-fast clock.
    down_since: Option<Instant>,
    /// Set while waiting for another task's probe, so that its end spreads the followers.
    following: bool,
    stagger_until: Option<Instant>,
    rng: Xoshiro256PlusPlus,
}

enum State<F, S, K: PeerKey> {
    Idle,
    Connecting(ConnectAttempt<F, K>),
    Connected {
        service: S,
        connection: OpenConnection<K>,
        report: Arc<CallReport<K>>,
    },
}

/// What the last `Ready(Ok(()))` of `poll_ready` promised the next `call`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Readiness {
    NotPolled,
    Call,
    Unavailable,
    Exhausted,
}

impl<M, T, K> Reconnect<M, T, K>
where
    M: Service<T>,
    K: PeerKey,
{
    pub(crate) fn new(
        connector: M,
        target: T,
        peer: PeerHandle<K>,
        settings: Arc<Settings>,
    ) -> Self {
        let label: Arc<str> = Arc::from(format!("{:?}", peer.key()));
        Self::member(connector, target, peer, settings, label, Handover::new())
    }

    /// A service of a family: the first, or a clone sharing its label and handover.
    fn member(
        connector: M,
        target: T,
        peer: PeerHandle<K>,
        settings: Arc<Settings>,
        label: Arc<str>,
        handover: Handover<M::Future, K>,
    ) -> Self {
        let rng = rng::generator(peer.derive_seed());
        Self {
            connector,
            target,
            peer,
            label,
            settings,
            state: State::Idle,
            handover,
            ready: Readiness::NotPolled,
            timer: None,
            down_since: None,
            following: false,
            stagger_until: None,
            rng,
        }
    }

    /// The peer this service connects to.
    pub fn peer(&self) -> &PeerHandle<K> {
        &self.peer
    }

    /// Whether this service holds a connection now.
    pub fn is_connected(&self) -> bool {
        matches!(self.state, State::Connected { .. })
    }

    /// Starts the peer's backoff over, ending an exhausted state for every service of the
    /// peer. The next `poll_ready` may connect at once.
    pub fn reset(&mut self) {
        self.peer.reset();
    }

    fn unavailable(&self) -> BoxError {
        let since = self.down_since.unwrap_or_else(Instant::now);
        Box::new(Unavailable::of(&self.peer, Arc::clone(&self.label), since))
    }

    fn exhausted(&self) -> BoxError {
        Box::new(Exhausted::of(&self.peer, Arc::clone(&self.label)))
    }

    /// No connection to call: pending with a timer for `wake_at`, unless the fail-fast window
    /// is over, in which case the service is ready to fail calls.
    fn not_ready(
        &mut self,
        cx: &mut Context<'_>,
        wake_at: Option<Instant>,
    ) -> Poll<Result<(), BoxError>> {
        let now = Instant::now();
        let since = *self.down_since.get_or_insert(now);
        let mut wake_at = wake_at;
        if let Some(window) = self.settings.fail_fast {
            let at = deadline(since, window);
            if now >= at {
                self.leave_attempt();
                self.ready = Readiness::Unavailable;
                return Poll::Ready(Ok(()));
            }
            wake_at = Some(wake_at.map_or(at, |w| w.min(at)));
        }
        if let Some(at) = wake_at {
            self.arm(cx, at);
        }
        Poll::Pending
    }

    /// This service is about to fail its caller fast and may not be polled again for a while:
    /// an attempt under way goes to the family, so that the next member to poll drives it.
    fn leave_attempt(&mut self) {
        if let State::Connecting(attempt) = mem::replace(&mut self.state, State::Idle) {
            if let Err(attempt) = self.handover.leave(attempt) {
                self.state = State::Connecting(attempt);
            }
        }
    }

    /// Arms the one timer for `at` and registers the task with it.
    fn arm(&mut self, cx: &mut Context<'_>, at: Instant) {
        let timer = self.timer.get_or_insert_with(|| Box::pin(sleep_until(at)));
        if timer.deadline() != at {
            timer.as_mut().reset(at);
        }
        if timer.as_mut().poll(cx).is_ready() {
            // Already due: have the task polled again rather than sleep without a wake-up.
            cx.waker().wake_by_ref();
        }
    }

    /// Random delay in `[0, stagger)` for a service following another's successful probe.
    fn stagger(&mut self) -> Duration {
        self.settings.stagger.mul_f64(rng::unit(&mut self.rng))
    }
}

impl<M, T, K, Req> Service<Req> for Reconnect<M, T, K>
where
    M: Service<T>,
    M::Error: Into<BoxError>,
    M::Response: Service<Req>,
    <M::Response as Service<Req>>::Error: Into<BoxError>,
    T: Clone,
    K: PeerKey,
{
    type Response = <M::Response as Service<Req>>::Response;
    type Error = BoxError;
    type Future = ResponseFuture<<M::Response as Service<Req>>::Future, K>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.ready = Readiness::NotPolled;
        for _ in 0..MAX_STEPS_PER_POLL {
            let step = match &mut self.state {
                State::Connected {
                    service,
                    connection,
                    report,
                } => {
                    if let Some((reason, at)) = report.broken() {
                        // Up until that call's answer, which may be past `stable_after`.
                        connection.check_stable_until(at);
                        connection.close(Some(&reason));
                        self.state = State::Idle;
                        continue;
                    }
                    match service.poll_ready(cx) {
                        Poll::Ready(Ok(())) => {
                            connection.check_stable();
                            self.down_since = None;
                            self.ready = Readiness::Call;
                            return Poll::Ready(Ok(()));
                        }
                        Poll::Ready(Err(error)) => {
                            let error: BoxError = error.into();
                            connection.close(Some(&Chain(&*error)));
                            self.state = State::Idle;
                            continue;
                        }
                        // The connection is up but busy: its own backpressure, not an outage.
                        Poll::Pending => return Poll::Pending,
                    }
                }
                State::Connecting { .. } => self.connect(cx),
                State::Idle => match self.start(cx) {
                    Ok(step) => step,
                    Err(poll) => return poll,
                },
            };
            match step {
                Step::Again => continue,
                Step::Yield => {
                    cx.waker().wake_by_ref();
                    return self.not_ready(cx, None);
                }
                Step::Wait(at) => return self.not_ready(cx, Some(at)),
                Step::Hold(at) => {
                    self.arm(cx, at);
                    return Poll::Pending;
                }
            }
        }
        cx.waker().wake_by_ref();
        self.not_ready(cx, None)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        match mem::replace(&mut self.ready, Readiness::NotPolled) {
            Readiness::Call => match &mut self.state {
                State::Connected {
                    service, report, ..
                } => ResponseFuture::called(service.call(request), Arc::clone(report)),
                _ => ResponseFuture::failed(Box::new(NotReady)),
            },
            Readiness::Unavailable => ResponseFuture::failed(self.unavailable()),
            Readiness::Exhausted => ResponseFuture::failed(self.exhausted()),
            Readiness::NotPolled => ResponseFuture::failed(Box::new(NotReady)),
        }
    }
}

impl<M, T, K> Drop for Reconnect<M, T, K>
where
    M: Service<T>,
    K: PeerKey,
{
    fn drop(&mut self) {
        // A call may have found the connection broken since the last `poll_ready`: close it
        // as broken, with its uptime up to then, rather than as a clean close now.
        if let State::Connected {
            connection, report, ..
        } = &mut self.state
        {
            if let Some((reason, at)) = report.broken() {
                connection.check_stable_until(at);
                connection.close(Some(&reason));
            }
        }
        // A probe under way goes to the family, if any member is left to drive it (a retry's
        // spare given up on at the call deadline may hold the probe its original left).
        // Dropped, it would be cancelled: neither counted nor backed off, so the family's next
        // poll would dial again at once, at every request to a black-holed peer.
        if matches!(&self.state, State::Connecting(left) if left.attempt.is_probe())
            && self.handover.is_shared()
        {
            self.leave_attempt();
        }
    }
}

impl<M, T, K> Clone for Reconnect<M, T, K>
where
    M: Service<T> + Clone,
    T: Clone,
    K: PeerKey,
{
    fn clone(&self) -> Self {
        Self::member(
            self.connector.clone(),
            self.target.clone(),
            self.peer.clone(),
            Arc::clone(&self.settings),
            Arc::clone(&self.label),
            self.handover.share(),
        )
    }
}

impl<M, T, K> fmt::Debug for Reconnect<M, T, K>
where
    M: Service<T>,
    K: PeerKey,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Idle => "Idle",
            State::Connecting { .. } => "Connecting",
            State::Connected { .. } => "Connected",
        };
        f.debug_struct("Reconnect")
            .field("peer", self.peer.key())
            .field("state", &state)
            .field("down_since", &self.down_since)
            .finish_non_exhaustive()
    }
}
