//! Cost of a call through a connected `Reconnect`: time and allocations per call, against the
//! bare service it wraps and against tower's own `tower::reconnect::Reconnect`, in one run.
//!
//! Run with `cargo bench --bench reconnect`; BENCHMARKS.md holds the figures and how to read them.
//!
//! - One call is what a caller does on the happy path: `poll_ready`, `call`, and polling the
//!   response future to completion. Futures are polled by hand with a no-op waker: a `block_on`
//!   per iteration would cost more than what is measured.
//! - The inner service is trivial (it answers its request at once with `std::future::Ready`), so
//!   what remains is the wrapper's own cost.
//! - Every wrapper is connected, and has served one call, before the measurement starts: the
//!   connect path is not measured here.
//! - `baseline::*` shows, from the same run, what the parts cost: the peer's `record_success`
//!   alone (what redial adds per response), the clock read inside it, and a boxed service, whose
//!   one allocation per call shows that the allocation profiler counts (the others count none).

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::task::{Context, Poll, Waker};

use divan::Bencher;
use redial::peers::Peers;
use redial::reconnect::ReconnectLayer;
use tower::{Layer, Service};

#[global_allocator]
static ALLOC: divan::AllocProfiler = divan::AllocProfiler::system();

/// The target every connector is asked to connect to.
const TARGET: &str = "127.0.0.1:7";

mod common;

use common::{Echo, bench_calls, call_once};

fn main() {
    divan::main();
}

/// The connector (a `MakeService`): every connection is an `Echo`, made at once.
#[derive(Clone, Copy, Debug)]
struct Connect;

impl Service<&'static str> for Connect {
    type Response = Echo;
    type Error = Infallible;
    type Future = Ready<Result<Echo, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _target: &'static str) -> Self::Future {
        ready(Ok(Echo))
    }
}

/// The inner service alone: the floor.
#[divan::bench]
fn bare(bencher: Bencher) {
    bench_calls(bencher, Echo);
}

/// tower's `Reconnect`: reconnects at once in a loop, records nothing.
#[divan::bench]
fn tower_reconnect(bencher: Bencher) {
    bench_calls(bencher, tower::reconnect::Reconnect::new(Connect, TARGET));
}

/// redial's `Reconnect`, with the default settings: records each response's outcome in the
/// peer's shared tracker.
#[divan::bench]
fn redial_reconnect(bencher: Bencher) {
    // Only the connect path uses timers; a connected service should not touch them, but a
    // runtime is entered so that the comparison holds even if it did.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let peers: Peers<&'static str> = Peers::builder().seed(3).build().expect("valid config");
    let peer = peers.add_static("echo").expect("room");
    let service = ReconnectLayer::new(peer, TARGET).layer(Connect);
    bench_calls(bencher, service);
}

/// The parts, for comparison.
mod baseline {
    use super::*;

    /// What redial's `Reconnect` records per successful response, alone: a connected, proven
    /// peer's `record_success` through its handle (a clock read and a few atomics, no lock).
    #[divan::bench]
    fn record_success(bencher: Bencher) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let _guard = rt.enter();
        let peers: Peers<&'static str> = Peers::builder().seed(3).build().expect("valid config");
        let peer = peers.add_static("echo").expect("room");
        // Connect it through the service, as `redial_reconnect` does, so the peer is in the
        // same state (connected, proven), then record without the service.
        let mut service = ReconnectLayer::new(peer.clone(), TARGET).layer(Connect);
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(call_once(&mut service, &mut cx, 1), 1);
        bencher.bench_local(|| peer.record_success());
    }

    /// The clock read `record_success` makes to stamp the peer's last success: tokio's, so that
    /// a paused test clock applies. Nothing here pauses it, so it is std's clock plus one
    /// atomic load.
    #[divan::bench]
    fn tokio_instant_now() -> tokio::time::Instant {
        tokio::time::Instant::now()
    }

    /// `tower::util::BoxService` around the inner service: one boxed future per call. Here so
    /// that the run shows the profiler counting an allocation per call.
    #[divan::bench]
    fn boxed(bencher: Bencher) {
        bench_calls(bencher, tower::util::BoxService::new(Echo));
    }
}
