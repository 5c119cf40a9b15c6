//! What the call benchmarks share: the trivial inner service and one happy-path call, polled
//! by hand with a no-op waker (a `block_on` per iteration would cost more than what is
//! measured).

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use divan::{Bencher, black_box};
use tower::{BoxError, Service};

/// The inner service: answers each request with itself, at once, without allocating.
#[derive(Clone, Copy, Debug)]
pub struct Echo;

impl Service<u64> for Echo {
    type Response = u64;
    type Error = Infallible;
    type Future = Ready<Result<u64, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: u64) -> Self::Future {
        ready(Ok(request))
    }
}

/// One happy-path call: `poll_ready`, `call`, then the response future polled to completion.
/// Panics if any step is not ready at once: every service here answers without waiting.
pub fn call_once<S>(service: &mut S, cx: &mut Context<'_>, request: u64) -> u64
where
    S: Service<u64, Response = u64>,
    S::Error: Into<BoxError>,
{
    match service.poll_ready(cx) {
        Poll::Ready(Ok(())) => {}
        Poll::Ready(Err(error)) => panic!("poll_ready failed: {}", error.into()),
        Poll::Pending => panic!("poll_ready pending on a service that is ready at once"),
    }
    let mut future = pin!(service.call(request));
    match future.as_mut().poll(cx) {
        Poll::Ready(Ok(response)) => response,
        Poll::Ready(Err(error)) => panic!("call failed: {}", error.into()),
        Poll::Pending => panic!("response pending from a trivial service"),
    }
}

/// Warms `service` up with one call (connecting it, for reconnecting wrappers), then measures
/// calls. A runtime with time is entered, in case a wrapper touches a timer.
pub fn bench_calls<S>(bencher: Bencher, mut service: S)
where
    S: Service<u64, Response = u64>,
    S::Error: Into<BoxError>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());
    assert_eq!(call_once(&mut service, &mut cx, 1), 1);
    bencher.bench_local(|| call_once(&mut service, &mut cx, black_box(2)));
}
