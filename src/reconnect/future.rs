//! The response future of a [`Reconnect`](super::Reconnect) service.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::BoxError;

use super::BrokenConnection;
use crate::error::Chain;
use crate::peers::{PeerHandle, PeerKey};

/// What the calls on one connection report back to the service that owns it: outcomes go to
/// the peer's tracker, and the first error that means the connection is gone is kept here for
/// the next `poll_ready` to act on.
#[derive(Debug)]
pub(crate) struct CallReport<K: PeerKey> {
    peer: PeerHandle<K>,
    classifier: BrokenConnection,
    /// Why and when a call found the connection broken.
    broken: OnceLock<(String, Instant)>,
}

impl<K: PeerKey> CallReport<K> {
    pub(crate) fn new(peer: PeerHandle<K>, classifier: BrokenConnection) -> Self {
        Self {
            peer,
            classifier,
            broken: OnceLock::new(),
        }
    }

    /// Why the connection broke and when the call found it so, if one did.
    pub(crate) fn broken(&self) -> Option<(&str, Instant)> {
        self.broken.get().map(|(reason, at)| (reason.as_str(), *at))
    }

    fn failed(&self, error: &BoxError) {
        let error: &(dyn std::error::Error + 'static) = &**error;
        if self.classifier.is_broken(error) {
            // The failure is counted once, when the owner closes the connection with it.
            let _ = self.broken.set((Chain(error).to_string(), Instant::now()));
        } else {
            self.peer.record_failure(&Chain(error));
        }
    }
}

pin_project! {
    /// The response future of [`Reconnect`](super::Reconnect): either the inner service's call,
    /// whose outcome is recorded for the peer, or an error decided when the call was made
    /// ([`Unavailable`](super::Unavailable), [`Exhausted`](super::Exhausted),
    /// [`NotReady`](super::NotReady)).
    pub struct ResponseFuture<F, K: PeerKey> {
        #[pin]
        kind: Kind<F, K>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, K: PeerKey> {
        Called {
            #[pin]
            future: F,
            report: Arc<CallReport<K>>,
        },
        Failed {
            error: Option<BoxError>,
        },
    }
}

impl<F, K: PeerKey> ResponseFuture<F, K> {
    pub(crate) fn called(future: F, report: Arc<CallReport<K>>) -> Self {
        Self {
            kind: Kind::Called { future, report },
        }
    }

    pub(crate) fn failed(error: BoxError) -> Self {
        Self {
            kind: Kind::Failed { error: Some(error) },
        }
    }
}

impl<F, K: PeerKey> std::fmt::Debug for ResponseFuture<F, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, R, E, K> Future for ResponseFuture<F, K>
where
    F: Future<Output = Result<R, E>>,
    E: Into<BoxError>,
    K: PeerKey,
{
    type Output = Result<R, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called { future, report } => match ready!(future.poll(cx)) {
                Ok(response) => {
                    report.peer.record_success();
                    Poll::Ready(Ok(response))
                }
                Err(error) => {
                    let error = error.into();
                    report.failed(&error);
                    Poll::Ready(Err(error))
                }
            },
            KindProj::Failed { error } => match error.take() {
                Some(error) => Poll::Ready(Err(error)),
                None => Poll::Ready(Err(Box::new(super::NotReady))),
            },
        }
    }
}
