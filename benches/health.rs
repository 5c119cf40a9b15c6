//! Cost of a call through `Health`: on the happy path (the peer is in use, the call succeeds)
//! and when the peer is ejected and the call is refused at once (`Mode::Reject`), against the
//! bare service it wraps, in one run, with allocations counted.
//!
//! Run with `cargo bench --bench health`; BENCHMARKS.md holds the figures and how to read them.
//!
//! - One call is `poll_ready`, `call`, and polling the response future to completion, by hand
//!   with a no-op waker (a `block_on` per iteration would cost more than what is measured).
//! - The inner service answers a `u64` with itself through `std::future::Ready`.
//! - The layer uses the default policy (5 failures in a row, no success-rate window) unless
//!   the benchmark's name says otherwise.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use divan::{Bencher, black_box};
use redial::health::{HealthError, HealthLayer, HealthPolicy};
use redial::peers::Peers;
use tower::{Layer, Service};

#[global_allocator]
static ALLOC: divan::AllocProfiler = divan::AllocProfiler::system();

mod common;

use common::{Echo, bench_calls};

fn main() {
    divan::main();
}

fn peers() -> Peers<&'static str> {
    Peers::builder().seed(9).build().expect("valid config")
}

/// The inner service alone: the floor.
#[divan::bench]
fn bare(bencher: Bencher) {
    bench_calls(bencher, Echo);
}

/// The happy path with the default policy: admission (one atomic load), the inner call, and
/// the success recorded (one more load; nothing to clear).
#[divan::bench]
fn health(bencher: Bencher) {
    let peers = peers();
    let layer = HealthLayer::new(peers.peer("echo").expect("room"), HealthPolicy::default());
    bench_calls(bencher, layer.layer(Echo));
}

/// The happy path with a success-rate window (0.8 over 30 s): a clock read and a
/// compare-and-swap more per call.
#[divan::bench]
fn health_with_window(bencher: Bencher) {
    let peers = peers();
    let policy = HealthPolicy::builder()
        .success_rate(0.8, Duration::from_secs(30), 10)
        .build()
        .expect("valid config");
    bench_calls(
        bencher,
        policy.layer(peers.peer("echo").expect("room")).layer(Echo),
    );
}

/// The peer is ejected: `poll_ready` is ready at once without polling the inner service, and
/// the call fails at once with `HealthError::Ejected`, dropped unread.
#[divan::bench]
fn rejected(bencher: Bencher) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let peers = peers();
    let peer = peers.peer("echo").expect("room");
    let mut service = HealthLayer::new(peer.clone(), HealthPolicy::default()).layer(Echo);
    assert!(peer.eject(Duration::from_secs(3600)));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(reject_once(&mut service, &mut cx, 1));
    bencher.bench_local(|| reject_once(&mut service, &mut cx, black_box(2)));
}

/// One refused call; `true` if it was refused as ejected.
fn reject_once<S>(service: &mut S, cx: &mut Context<'_>, request: u64) -> bool
where
    S: Service<u64, Response = u64, Error = HealthError>,
{
    match service.poll_ready(cx) {
        Poll::Ready(Ok(())) => {}
        other => panic!("an ejected peer in Reject mode is ready at once, got {other:?}"),
    }
    match pin!(service.call(request)).poll(cx) {
        Poll::Ready(Err(error)) => error.is_ejected(),
        _ => panic!("a call to an ejected peer is refused at once"),
    }
}

/// The parts, for comparison.
mod baseline {
    use super::*;

    /// An `Arc` cloned and dropped: what the response future's handle on the layer costs.
    #[divan::bench]
    fn arc_clone_drop(bencher: Bencher) {
        let shared = std::sync::Arc::new(0u64);
        bencher.bench_local(|| drop(black_box(std::sync::Arc::clone(&shared))));
    }

    /// `tokio::time::Instant::now()`: what the window and a refusal each read once.
    #[divan::bench]
    fn clock(bencher: Bencher) {
        bencher.bench_local(tokio::time::Instant::now);
    }

    /// `tower::util::BoxService` around the inner service: one boxed future per call, here so
    /// that the run shows the profiler counting (the services above count none).
    #[divan::bench]
    fn boxed(bencher: Bencher) {
        bench_calls(bencher, tower::util::BoxService::new(Echo));
    }
}
