//! [`Endpoint`]: a peer's service on loan to the balancer, handed back when the balancer drops it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::sync::mpsc::UnboundedSender;
use tower::BoxError;
use tower::Service;
use tower::load::Load;

use crate::reconnect::NotReady;

/// A peer's service as [`HealthDiscover`](super::HealthDiscover) hands it to the balancer.
///
/// The balancer drops a service when it is told to remove it (and when its `poll_ready` fails).
/// Dropping an `Endpoint` does not drop the service inside: it goes back to the discover, which
/// keeps it parked and inserts the same one again when the peer is usable, so its connection
/// and its layers' state outlive the removal. Readiness and calls are forwarded as they are.
///
/// # Load
///
/// The service's own [`Load`], except while the peer is in the balancer for the probe that
/// decides an outlier ejection: then `None`, which is less than any load. A peer that was
/// ejected for failing carries a failure penalty (see [`PenalizedPending`](super::PenalizedPending))
/// that would keep a balancer from choosing it, and so from sending the probe, until the
/// penalty had decayed; the probe goes out as soon as the ejection's time is over instead. Only
/// as many requests as the health layer has probe slots can follow: in
/// [`Mode::Backpressure`](crate::health::Mode::Backpressure), the mode for a balancer, the
/// peer's service is not ready to the others. Once the probe has restored the peer, its own
/// load (and penalty) counts again.
pub struct Endpoint<S> {
    /// `None` only while dropping, when the service is on its way back.
    service: Option<S>,
    id: u64,
    home: UnboundedSender<(u64, S)>,
    probing: Arc<AtomicBool>,
}

impl<S> Endpoint<S> {
    pub(super) fn new(
        service: S,
        id: u64,
        home: UnboundedSender<(u64, S)>,
        probing: Arc<AtomicBool>,
    ) -> Self {
        Self {
            service: Some(service),
            id,
            home,
            probing,
        }
    }

    /// Whether the peer is in the balancer for the probe of an outlier ejection.
    pub fn is_probing(&self) -> bool {
        self.probing.load(Ordering::Relaxed)
    }

    /// The service inside.
    pub fn get_ref(&self) -> Option<&S> {
        self.service.as_ref()
    }
}

impl<S> Drop for Endpoint<S> {
    fn drop(&mut self) {
        if let Some(service) = self.service.take() {
            // Fails only when the discover is gone; the service is dropped then, as it should.
            let _ = self.home.send((self.id, service));
        }
    }
}

impl<S, Req> Service<Req> for Endpoint<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = EndpointFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match &mut self.service {
            Some(service) => service.poll_ready(cx).map_err(Into::into),
            // Unreachable (the service leaves only in `drop`); never ready rather than a panic.
            None => Poll::Pending,
        }
    }

    fn call(&mut self, request: Req) -> Self::Future {
        match &mut self.service {
            Some(service) => EndpointFuture::called(service.call(request)),
            None => EndpointFuture::gone(),
        }
    }
}

impl<S: Load> Load for Endpoint<S> {
    type Metric = Option<S::Metric>;

    /// `None` (less than any load) while probing; the service's own load otherwise.
    fn load(&self) -> Self::Metric {
        if self.is_probing() {
            return None;
        }
        self.service.as_ref().map(Load::load)
    }
}

impl<S: fmt::Debug> fmt::Debug for Endpoint<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("service", &self.service)
            .field("id", &self.id)
            .field("probing", &self.is_probing())
            .finish_non_exhaustive()
    }
}

pin_project! {
    /// The response future of an [`Endpoint`]: the service's own, its error boxed.
    pub struct EndpointFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Called { #[pin] future: F },
        // Called after the service left: cannot happen; an error rather than a panic.
        Gone,
    }
}

impl<F> EndpointFuture<F> {
    fn called(future: F) -> Self {
        Self {
            state: State::Called { future },
        }
    }

    fn gone() -> Self {
        Self { state: State::Gone }
    }
}

impl<F, T, E> Future for EndpointFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Called { future } => future.poll(cx).map_err(Into::into),
            StateProj::Gone => Poll::Ready(Err(Box::new(NotReady))),
        }
    }
}

impl<F> fmt::Debug for EndpointFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointFuture").finish_non_exhaustive()
    }
}
