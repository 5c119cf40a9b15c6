//! [`Retry`]: the service that sends a request again when its classifier says so.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower::{BoxError, Service};

use super::attempts::{Attempts, attempt_deadline};
use super::builder::Config;
use super::classify::{Classify, Replay};
use super::future::ResponseFuture;
use super::track::TrackPeer;
use crate::time::deadline;

/// Retries requests to the service it wraps, as its [`RetryLayer`](super::RetryLayer) was
/// configured.
///
/// `poll_ready` is the inner service's. `call` sends the first attempt at once, on the service
/// that was polled ready; the response future keeps a clone of the inner service and polls it
/// ready again before every retry, so that a retry respects backpressure (a rate limit, a
/// balancer, a reconnecting service) like a new request would.
pub struct Retry<S, P, T> {
    inner: S,
    config: Arc<Config<P, T>>,
}

impl<S, P, T> Retry<S, P, T> {
    pub(crate) fn new(inner: S, config: Arc<Config<P, T>>) -> Self {
        Self { inner, config }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The retry budget this service draws on (shared with its layer's other services).
    pub fn budget(&self) -> &super::Budget {
        &self.config.budget
    }
}

impl<S: Clone, P, T> Clone for Retry<S, P, T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
        }
    }
}

impl<S: fmt::Debug, P: fmt::Debug, T: fmt::Debug> fmt::Debug for Retry<S, P, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

impl<S, P, T, Req> Service<Req> for Retry<S, P, T>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    P: Classify<Req, S::Response, BoxError> + Replay<Req>,
    T: TrackPeer<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, P, T>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let config = &self.config;
        let own_budget = config.tracking.budget_of(&request);
        own_budget.as_ref().unwrap_or(&config.budget).deposit();
        // A request that cannot be copied is sent once: there is nothing to retry with.
        let copy = config.policy.template(&request);
        // The clock is read only when a limit needs it.
        let (call_deadline, attempt_ends) = match (config.deadline, config.attempt_timeout) {
            (None, None) => (None, None),
            (call, attempt) => {
                let now = Instant::now();
                let call_deadline = call.map(|d| deadline(now, d));
                (call_deadline, attempt_deadline(now, attempt, call_deadline))
            }
        };
        // Retries go through a clone, polled ready before each; the ready service takes the
        // first attempt now, as the tower contract wants.
        let spare = self.inner.clone();
        let future = self.inner.call(request);
        ResponseFuture::new(
            future,
            spare,
            copy,
            Arc::clone(config),
            Attempts::new(call_deadline, own_budget),
            attempt_ends,
        )
    }
}
