//! [`FailFast`]: a balanced stack with no ready peer fails calls instead of pending forever.

use std::fmt;
use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep, sleep_until};
use tower::{BoxError, Layer, Service};

use crate::peers::{HealthReport, PeerKey, Peers};
use crate::reconnect::NotReady;
use crate::time::deadline;

/// No peer was ready for the whole fail-fast wait, so the call failed at once instead of
/// waiting. From [`FailFast`], as a [`BoxError`] to `downcast_ref`.
///
/// Calls keep failing at once until a peer is ready again, which the service notices on the
/// next `poll_ready`. It is safe to retry (nothing was sent), after a delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoHealthyPeers {
    waited: Duration,
    wait: Duration,
    report: Option<HealthReport>,
}

impl NoHealthyPeers {
    /// How long the service had watched its inner service stay unready, at the time of the
    /// call: since the start of the wait that ended in failing. A wait whose caller gave up
    /// and that started over counts from the new start.
    pub fn unready_for(&self) -> Duration {
        self.waited
    }

    /// The configured wait.
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// The peers' health at the time of the call, if the layer was given the table with
    /// [`FailFastLayer::health`].
    pub fn report(&self) -> Option<&HealthReport> {
        self.report.as_ref()
    }
}

impl fmt::Display for NoHealthyPeers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no healthy peer: none has been ready for {:?} (fail-fast wait {:?})",
            self.waited, self.wait
        )?;
        if let Some(r) = &self.report {
            write!(
                f,
                "; of {} peers {} connected, {} reconnecting, {} ejected or exhausted",
                r.total, r.usable, r.recovering, r.failed
            )?;
        }
        f.write_str(
            "; calls fail at once until a peer is ready again: retry later, and see the \
             peers' health report and events for why they are out",
        )
    }
}

impl std::error::Error for NoHealthyPeers {}

/// Wraps a balancer (or any service) in a [`FailFast`].
///
/// ```
/// use std::time::Duration;
/// use redial::health::balance::FailFastLayer;
/// use redial::peers::Peers;
///
/// let peers: Peers<&'static str> = Peers::new();
/// let layer = FailFastLayer::new(Duration::from_secs(3)).health(&peers);
/// # let _ = layer;
/// ```
#[derive(Debug, Clone)]
pub struct FailFastLayer {
    wait: Duration,
    health: Option<watch::Receiver<HealthReport>>,
}

impl FailFastLayer {
    /// Fails calls once the inner service has not been ready for `wait` (linkerd uses 3 s).
    /// Zero fails every call the inner service is not ready for at once.
    pub fn new(wait: Duration) -> Self {
        Self { wait, health: None }
    }

    /// Puts the peers' [`HealthReport`] in every [`NoHealthyPeers`], so the error says how
    /// many are connected, reconnecting and out.
    pub fn health<K: PeerKey>(mut self, peers: &Peers<K>) -> Self {
        self.health = Some(peers.watch_health());
        self
    }
}

impl<S> Layer<S> for FailFastLayer {
    type Service = FailFast<S>;

    fn layer(&self, inner: S) -> FailFast<S> {
        FailFast {
            inner,
            wait: self.wait,
            health: self.health.clone(),
            down: Down::No,
            timer: None,
            ready: Readiness::NotPolled,
        }
    }
}

/// A service that stops waiting for its inner service after a while: once the inner service
/// (typically tower's p2c balancer over a [`HealthDiscover`](super::HealthDiscover)) has not
/// been ready for the `wait`, `poll_ready` returns ready and each call fails at once with
/// [`NoHealthyPeers`].
///
/// tower's balancers pend for as long as no endpoint is ready, which is forever when every
/// peer is down; a caller would hang. This is the one place of a balanced stack that should
/// fail fast: give each peer's [`ReconnectLayer`](crate::reconnect::ReconnectLayer)
/// `fail_fast(None)`, so a peer that is down is simply not ready (the balancer then sends to the
/// others) rather than ready to fail calls, which would draw traffic to it.
///
/// Every `poll_ready` polls the inner service first, in fail-fast mode too, so that the
/// balancer keeps following discovery and the first ready peer ends the failing at once. While
/// waiting, one timer is armed for the end of the wait; nothing spins.
///
/// The wait is counted while somebody waits. A caller that stops polling (a `ready()` dropped
/// by a `select!`, say) and comes back more than a whole wait (and at least a second) after the
/// wait would have ended starts a new wait: nobody saw the inner service in between, so its old
/// unreadiness is no reason to fail the new caller at once. Once calls fail fast, they keep
/// failing until the inner service is ready.
///
/// A clone has its own clock and is not ready until polled.
pub struct FailFast<S> {
    inner: S,
    wait: Duration,
    health: Option<watch::Receiver<HealthReport>>,
    down: Down,
    timer: Option<Pin<Box<Sleep>>>,
    ready: Readiness,
}

/// The least time past a wait's end after which its caller is taken to have given up.
const ABANDONED_AFTER: Duration = Duration::from_secs(1);

/// What the service last saw of its inner service's readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Down {
    /// Ready at the last look (or not looked at yet).
    No,
    /// Not ready since `since`; callers wait for the end of the wait.
    Waiting { since: Instant },
    /// Not ready since `since`, longer than the wait: calls fail at once.
    Failing { since: Instant },
}

/// What the last `Ready(Ok(()))` promised the next call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Readiness {
    NotPolled,
    Call,
    Fail,
}

impl<S> FailFast<S> {
    /// The service inside.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The service inside.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Whether calls fail at once now (as of the last `poll_ready`).
    pub fn is_failing(&self) -> bool {
        self.ready == Readiness::Fail
    }

    /// When a wait that began at `since` counts as given up: a whole wait after its end, and
    /// never sooner than [`ABANDONED_AFTER`] after it, so that a short wait's late wake-up
    /// (timers fire on a millisecond tick) still fails rather than starting over for ever.
    fn abandoned_at(&self, since: Instant) -> Instant {
        deadline(deadline(since, self.wait), self.wait.max(ABANDONED_AFTER))
    }

    fn no_healthy_peers(&self) -> NoHealthyPeers {
        let now = Instant::now();
        let since = match self.down {
            Down::Waiting { since } | Down::Failing { since } => since,
            Down::No => now,
        };
        NoHealthyPeers {
            waited: now.saturating_duration_since(since),
            wait: self.wait,
            report: self.health.as_ref().map(|rx| *rx.borrow()),
        }
    }
}

impl<S, Req> Service<Req> for FailFast<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = FailFastFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.ready = Readiness::NotPolled;
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => {
                self.down = Down::No;
                self.ready = Readiness::Call;
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error.into())),
            Poll::Pending => {}
        }
        let now = Instant::now();
        let since = match self.down {
            Down::Failing { since } => since,
            // A caller still waiting is woken at the wait's end, give or take the timer's
            // tick and a busy runtime; a look much later than that comes from a caller that
            // had stopped waiting.
            Down::Waiting { since } if now < self.abandoned_at(since) => since,
            Down::Waiting { .. } | Down::No => now,
        };
        let at = deadline(since, self.wait);
        if now >= at {
            // The inner service's own wake-up stays registered: its readiness ends this.
            self.down = Down::Failing { since };
            self.ready = Readiness::Fail;
            return Poll::Ready(Ok(()));
        }
        self.down = Down::Waiting { since };
        let timer = self.timer.get_or_insert_with(|| Box::pin(sleep_until(at)));
        if timer.deadline() != at {
            timer.as_mut().reset(at);
        }
        if timer.as_mut().poll(cx).is_ready() {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }

    fn call(&mut self, request: Req) -> Self::Future {
        match mem::replace(&mut self.ready, Readiness::NotPolled) {
            Readiness::Call => FailFastFuture::called(self.inner.call(request)),
            Readiness::Fail => FailFastFuture::failed(Box::new(self.no_healthy_peers())),
            Readiness::NotPolled => FailFastFuture::failed(Box::new(NotReady)),
        }
    }
}

impl<S: Clone> Clone for FailFast<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            wait: self.wait,
            health: self.health.clone(),
            down: Down::No,
            timer: None,
            ready: Readiness::NotPolled,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for FailFast<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailFast")
            .field("inner", &self.inner)
            .field("wait", &self.wait)
            .field("down", &self.down)
            .field("ready", &self.ready)
            .finish_non_exhaustive()
    }
}

pin_project! {
    /// The response future of [`FailFast`]: the inner call, or the error of a call failed at
    /// once.
    pub struct FailFastFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Called { #[pin] future: F },
        Failed { error: Option<BoxError> },
    }
}

impl<F> FailFastFuture<F> {
    fn called(future: F) -> Self {
        Self {
            state: State::Called { future },
        }
    }

    fn failed(error: BoxError) -> Self {
        Self {
            state: State::Failed { error: Some(error) },
        }
    }
}

impl<F, T, E> Future for FailFastFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Called { future } => future.poll(cx).map_err(Into::into),
            StateProj::Failed { error } => match error.take() {
                Some(error) => Poll::Ready(Err(error)),
                // Polled after completion.
                None => Poll::Pending,
            },
        }
    }
}

impl<F> fmt::Debug for FailFastFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailFastFuture").finish_non_exhaustive()
    }
}
