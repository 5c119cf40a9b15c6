//! [`PenalizedPending`]: a balancer load that counts requests in flight and recent failures.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::load::Load;
use tower::{Layer, Service};

use crate::classify::{Classify, ErrorsFail};
use crate::error::{ConfigError, ConfigErrorKind};

/// The load of a [`PenalizedPending`] service: requests in flight plus the failure penalty
/// still owed. Lower is better; the balancer sends to the lower of two.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Cost(f64);

impl Cost {
    /// The cost in requests-in-flight equivalents.
    pub fn value(self) -> f64 {
        self.0
    }
}

/// A [`Load`] for tower's balancers that counts the requests in flight, as tower's
/// `PendingRequests` does, plus a penalty for recent failures.
///
/// A peer that fails fast (refuses, resets, answers 503 at once) has almost nothing in flight,
/// so by requests in flight alone it looks like the least loaded peer and a balancer sends it
/// more and more. Here every failure (as the [`Classify::is_failure`] of the classifier says;
/// by default every error: [`ErrorsFail`]) adds `penalty` requests-in-flight
/// equivalents, and what is owed halves every `decay`: a peer failing steadily carries about
/// `rate × penalty × decay / ln 2`, a peer that stops failing is back to its bare count within
/// a few `decay`s.
///
/// Between idle peers (nothing in flight anywhere) any penalty loses the comparison, so a peer
/// that failed recently is passed over until what it owes falls under a hundredth of a request
/// (about `log2(100 × penalty)` decays after one failure); under load it competes again as
/// soon as its penalty is below the others' requests in flight.
///
/// Counting takes no lock and no allocation per call: two atomics shared by the service and
/// its clones (a clone counts as the same peer) and the response futures. The penalty is kept
/// as one number from which the current value follows by the time alone, so that reading the
/// load is a subtraction and an `exp2`, and nothing at all for a peer with no failure owed.
///
/// Made by [`PenalizedPendingLayer`].
pub struct PenalizedPending<S, C = ErrorsFail> {
    inner: S,
    shared: Arc<Shared<C>>,
}

struct Shared<C> {
    classifier: C,
    pending: AtomicUsize,
    /// `log2` of the penalty as it would stand at `epoch`: the penalty now is
    /// `2^(log_penalty − halvings since epoch)`. `−∞` when nothing is owed. `f64` bits.
    log_penalty: AtomicU64,
    penalty: f64,
    /// Halvings per second: `1 / decay`.
    rate: f64,
    epoch: Instant,
}

/// Below this (a hundredth of a request) a penalty is forgotten, which restores the fast path
/// of `load` and ends the ties an idle peer that failed a while ago would lose.
const NEGLIGIBLE: f64 = 0.01;

impl<C> Shared<C> {
    fn halvings(&self, now: Instant) -> f64 {
        now.saturating_duration_since(self.epoch).as_secs_f64() * self.rate
    }

    fn penalty_now(&self) -> f64 {
        let bits = self.log_penalty.load(Ordering::Relaxed);
        if bits == f64::NEG_INFINITY.to_bits() {
            return 0.0;
        }
        let owed = (f64::from_bits(bits) - self.halvings(Instant::now())).exp2();
        if owed < NEGLIGIBLE {
            // Another failure may have just been added: forget only the value read.
            let _ = self.log_penalty.compare_exchange(
                bits,
                f64::NEG_INFINITY.to_bits(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            return 0.0;
        }
        owed
    }

    fn add_failure(&self) {
        if self.penalty == 0.0 {
            return;
        }
        let at = self.halvings(Instant::now());
        let mut current = self.log_penalty.load(Ordering::Relaxed);
        loop {
            let owed = (f64::from_bits(current) - at).exp2() + self.penalty;
            let next = (owed.log2() + at).to_bits();
            match self.log_penalty.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }
}

impl<S, C> PenalizedPending<S, C> {
    /// Requests in flight now.
    pub fn pending(&self) -> usize {
        self.shared.pending.load(Ordering::Relaxed)
    }

    /// The failure penalty still owed now, in requests-in-flight equivalents.
    pub fn penalty(&self) -> f64 {
        self.shared.penalty_now()
    }

    /// The service inside.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The service inside.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S, C> Load for PenalizedPending<S, C> {
    type Metric = Cost;

    fn load(&self) -> Cost {
        Cost(self.pending() as f64 + self.shared.penalty_now())
    }
}

impl<S, C, Req> Service<Req> for PenalizedPending<S, C>
where
    S: Service<Req>,
    C: Classify<Req, S::Response, S::Error>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = PenalizedFuture<S::Future, C, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        self.shared.pending.fetch_add(1, Ordering::Relaxed);
        PenalizedFuture {
            future: self.inner.call(request),
            guard: Some(InFlight(Arc::clone(&self.shared))),
            _request: PhantomData,
        }
    }
}

impl<S: Clone, C> Clone for PenalizedPending<S, C> {
    /// A clone of the inner service that counts into the same load: both talk to one peer.
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for PenalizedPending<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PenalizedPending")
            .field("inner", &self.inner)
            .field("pending", &self.pending())
            .field("penalty", &self.penalty())
            .finish()
    }
}

/// One request in flight; counted off when dropped, however the future ends.
struct InFlight<C>(Arc<Shared<C>>);

impl<C> Drop for InFlight<C> {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project! {
    /// The response future of a [`PenalizedPending`] service: counts the request in flight
    /// until it ends (or is dropped) and classifies its outcome.
    pub struct PenalizedFuture<F, C, Req> {
        #[pin]
        future: F,
        guard: Option<InFlight<C>>,
        _request: PhantomData<fn(Req)>,
    }
}

impl<F, C, Req, T, E> Future for PenalizedFuture<F, C, Req>
where
    F: Future<Output = Result<T, E>>,
    C: Classify<Req, T, E>,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let outcome = std::task::ready!(this.future.poll(cx));
        if let Some(InFlight(shared)) = this.guard.as_ref() {
            if shared.classifier.is_failure(&outcome) {
                shared.add_failure();
            }
        }
        // Counted off only now: the failure is owed before the request stops counting.
        this.guard.take();
        Poll::Ready(outcome)
    }
}

impl<F, C, Req> fmt::Debug for PenalizedFuture<F, C, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PenalizedFuture")
            .field("in_flight", &self.guard.is_some())
            .finish_non_exhaustive()
    }
}

/// Wraps each peer's service into a [`PenalizedPending`], each with its own count.
///
/// | setting | default | meaning |
/// |---|---|---|
/// | [`penalty`](PenalizedPendingBuilder::penalty) | 5 | requests-in-flight equivalents one failure adds |
/// | [`decay`](PenalizedPendingBuilder::decay) | 1 s | the penalty's half-life |
/// | [`classifier`](PenalizedPendingBuilder::classifier) | [`ErrorsFail`] | which outcomes are failures |
///
/// ```
/// use std::time::Duration;
/// use redial::health::balance::PenalizedPendingLayer;
///
/// # fn main() -> Result<(), redial::ConfigError> {
/// let load = PenalizedPendingLayer::builder()
///     .penalty(10.0)
///     .decay(Duration::from_millis(500))
///     .build()?;
/// # let _ = load;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PenalizedPendingLayer<C = ErrorsFail> {
    classifier: C,
    penalty: f64,
    decay: Duration,
}

impl PenalizedPendingLayer {
    /// The defaults: 5 per failure, halving every second, every error a failure.
    pub fn new() -> Self {
        Self::default()
    }

    /// Configures a layer.
    pub fn builder() -> PenalizedPendingBuilder {
        PenalizedPendingBuilder {
            layer: Self::default(),
        }
    }
}

impl Default for PenalizedPendingLayer {
    fn default() -> Self {
        Self {
            classifier: ErrorsFail,
            penalty: 5.0,
            decay: Duration::from_secs(1),
        }
    }
}

impl<S, C: Clone> Layer<S> for PenalizedPendingLayer<C> {
    type Service = PenalizedPending<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        PenalizedPending {
            inner,
            shared: Arc::new(Shared {
                classifier: self.classifier.clone(),
                pending: AtomicUsize::new(0),
                log_penalty: AtomicU64::new(f64::NEG_INFINITY.to_bits()),
                penalty: self.penalty,
                rate: 1.0 / self.decay.as_secs_f64(),
                epoch: Instant::now(),
            }),
        }
    }
}

/// Builds a [`PenalizedPendingLayer`]; [`build`](Self::build) checks every value.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct PenalizedPendingBuilder<C = ErrorsFail> {
    layer: PenalizedPendingLayer<C>,
}

impl<C> PenalizedPendingBuilder<C> {
    /// Requests-in-flight equivalents one failure adds (default 5). Finite and not negative;
    /// 0 counts requests in flight only.
    pub fn penalty(mut self, penalty: f64) -> Self {
        self.layer.penalty = penalty;
        self
    }

    /// The penalty's half-life (default 1 s). Greater than zero.
    pub fn decay(mut self, half_life: Duration) -> Self {
        self.layer.decay = half_life;
        self
    }

    /// Which outcomes are failures: any [`Classify`], through its
    /// [`is_failure`](Classify::is_failure) (an HTTP classifier makes a 503 one).
    pub fn classifier<C2>(self, classifier: C2) -> PenalizedPendingBuilder<C2> {
        PenalizedPendingBuilder {
            layer: PenalizedPendingLayer {
                classifier,
                penalty: self.layer.penalty,
                decay: self.layer.decay,
            },
        }
    }

    /// Checks the values and makes the layer.
    pub fn build(self) -> Result<PenalizedPendingLayer<C>, ConfigError> {
        const COMPONENT: &str = "penalized pending load";
        let penalty = self.layer.penalty;
        if !penalty.is_finite() {
            return Err(ConfigError::new(
                COMPONENT,
                "penalty",
                ConfigErrorKind::NotFinite,
                format!("{penalty} is not a number of requests; use e.g. 5.0"),
            ));
        }
        if penalty < 0.0 {
            return Err(ConfigError::new(
                COMPONENT,
                "penalty",
                ConfigErrorKind::TooSmall,
                format!("{penalty} is negative: a failure would make a peer look cheaper"),
            ));
        }
        if self.layer.decay.is_zero() {
            return Err(ConfigError::new(
                COMPONENT,
                "decay",
                ConfigErrorKind::Zero,
                "must be greater than zero, or failures would be forgotten at once",
            ));
        }
        Ok(self.layer)
    }
}
