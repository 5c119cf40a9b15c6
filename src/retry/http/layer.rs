//! [`ReplayBodyLayer`]: wraps every request's body in a [`ReplayBody`].

use std::task::{Context, Poll};

use http::Request;
use http_body::Body;
use tower::{Layer, Service};

use super::body::{DEFAULT_REPLAY_CAP, ReplayBody};

/// Wraps each request's body in a [`ReplayBody`], so that a
/// [`RetryLayer`](crate::retry::RetryLayer) under it, with an
/// [`HttpClassifier`](super::HttpClassifier), can send it again.
///
/// Put it outside the retry layer: `Request<B>` comes in, the retry layer and the client under
/// it see `Request<ReplayBody<B>>`. See the [module documentation](super) for a whole stack.
#[derive(Debug, Clone, Copy)]
pub struct ReplayBodyLayer {
    cap: usize,
}

impl ReplayBodyLayer {
    /// Keeps up to [`DEFAULT_REPLAY_CAP`] (64 KiB) of each body.
    pub const fn new() -> Self {
        Self {
            cap: DEFAULT_REPLAY_CAP,
        }
    }

    /// Keeps up to `cap` bytes of each body; a longer body is sent once and never retried.
    pub const fn cap(mut self, cap: usize) -> Self {
        self.cap = cap;
        self
    }
}

impl Default for ReplayBodyLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for ReplayBodyLayer {
    type Service = ReplayBodyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ReplayBodyService {
            inner,
            cap: self.cap,
        }
    }
}

/// The service of a [`ReplayBodyLayer`]: passes each request on with its body wrapped in a
/// [`ReplayBody`].
#[derive(Debug, Clone)]
pub struct ReplayBodyService<S> {
    inner: S,
    cap: usize,
}

impl<S> ReplayBodyService<S> {
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
}

impl<S, B> Service<Request<B>> for ReplayBodyService<S>
where
    S: Service<Request<ReplayBody<B>>>,
    B: Body,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let cap = self.cap;
        self.inner
            .call(request.map(|body| ReplayBody::with_cap(body, cap)))
    }
}
