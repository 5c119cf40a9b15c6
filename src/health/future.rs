//! The future of a [`Health`](super::Health) call: the inner call, whose outcome it records in
//! the peer's health, or a refusal.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower::BoxError;

use super::error::{Ejected, HealthError};
use super::layer::Shared;
use crate::classify::Classify;
use crate::peers::{PeerKey, ProbePermit};

pin_project! {
    /// Resolves to the inner service's response, or to a [`HealthError`]. Once the inner call
    /// ends, its outcome is classified and recorded in the peer's health (for a probe: it
    /// restores the peer or ejects it again). Dropped before that, it records nothing and frees
    /// the probe slot it held.
    pub struct ResponseFuture<F, K, C, Req>
    where
        K: PeerKey,
    {
        #[pin]
        state: State<F, K, C>,
        // The classifier answers for a request type; the future keeps none.
        _request: PhantomData<fn(Req)>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, K, C>
    where
        K: PeerKey,
    {
        Called {
            #[pin]
            future: F,
            shared: Arc<Shared<K, C>>,
            probe: Option<ProbePermit<K>>,
        },
        Ejected {
            error: Option<Ejected>,
        },
        Done,
    }
}

impl<F, K: PeerKey, C, Req> ResponseFuture<F, K, C, Req> {
    pub(crate) fn called(
        future: F,
        shared: Arc<Shared<K, C>>,
        probe: Option<ProbePermit<K>>,
    ) -> Self {
        Self {
            state: State::Called {
                future,
                shared,
                probe,
            },
            _request: PhantomData,
        }
    }

    pub(crate) fn ejected(error: Ejected) -> Self {
        Self {
            state: State::Ejected { error: Some(error) },
            _request: PhantomData,
        }
    }
}

impl<F, K, C, Req, Res, E> Future for ResponseFuture<F, K, C, Req>
where
    F: Future<Output = Result<Res, E>>,
    E: Into<BoxError>,
    K: PeerKey,
    C: Classify<Req, Res, BoxError>,
{
    type Output = Result<Res, HealthError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        match state.as_mut().project() {
            StateProj::Called {
                future,
                shared,
                probe,
            } => {
                let outcome = ready!(future.poll(cx)).map_err(Into::into);
                let failed = shared.policy.classifier().is_failure(&outcome);
                shared.record(probe.take(), failed);
                state.set(State::Done);
                Poll::Ready(outcome.map_err(HealthError::Inner))
            }
            StateProj::Ejected { error } => match error.take() {
                Some(error) => {
                    state.set(State::Done);
                    Poll::Ready(Err(HealthError::Ejected(error)))
                }
                None => Poll::Ready(Err(polled_after_completion())),
            },
            StateProj::Done => Poll::Ready(Err(polled_after_completion())),
        }
    }
}

/// A future polled again after it returned: a bug in the caller, answered with an error
/// rather than a panic.
fn polled_after_completion() -> HealthError {
    HealthError::Inner("health ResponseFuture polled after it completed".into())
}

impl<F, K: PeerKey, C, Req> fmt::Debug for ResponseFuture<F, K, C, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Called { probe: None, .. } => "called",
            State::Called { probe: Some(_), .. } => "probing",
            State::Ejected { .. } => "ejected",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
