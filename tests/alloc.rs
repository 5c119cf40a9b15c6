//! The hot path allocates nothing: recording outcomes on a peer, by handle or by key, once the
//! peer is warm (its last-error buffer is reserved on the first failure, by design), and a call
//! through a connected `Reconnect` service, a call through `Retry` that succeeds at once, and a
//! call through `Health`, let through or refused, and a call through a balanced stack's
//! per-peer `PenalizedPending` and its `FailFast` while a peer is ready.
//!
//! Counts allocations with a counting global allocator, on this test's thread only, so the test
//! harness's own threads cannot disturb the count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use redial::health::balance::{FailFastLayer, PenalizedPendingLayer};
use redial::health::{HealthLayer, HealthPolicy};
use redial::peers::{PeerState, Peers};
use redial::reconnect::ReconnectLayer;
use redial::retry::RetryLayer;
use std::time::Duration;
use tower::{Layer, Service};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: delegates every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // `try_with`: thread-local storage may already be gone while a thread shuts down.
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn recording_outcomes_does_not_allocate() {
    let peers: Peers<u64> = Peers::builder().seed(1).build().expect("valid config");
    let handles: Vec<_> = (0..64).map(|k| peers.peer(k).expect("room")).collect();
    let error = "connection reset by peer";
    // Warm up: the first failure reserves each peer's bounded error buffer.
    for h in &handles {
        h.record_failure(&error);
        h.record_success();
    }

    let n = allocations_during(|| {
        for _ in 0..100 {
            for h in &handles {
                h.record_success();
                h.record_failure(&error);
            }
        }
    });
    assert_eq!(n, 0, "record_success / record_failure by handle allocated");

    let n = allocations_during(|| {
        for _ in 0..100 {
            for k in 0..64u64 {
                assert!(peers.record_success(&k));
                assert!(peers.record_failure(&k, &error));
            }
        }
    });
    assert_eq!(n, 0, "record_success / record_failure by key allocated");
}

#[test]
fn a_connected_peer_serving_requests_does_not_allocate_even_with_a_subscriber() {
    let peers: Peers<u64> = Peers::builder().seed(2).build().expect("valid config");
    let mut events = peers.subscribe();
    let peer = peers.peer(7).expect("room");
    peer.try_begin_attempt().expect("first attempt").succeeded();
    peer.record_success(); // the proof: resets the schedule once
    assert_eq!(peer.state(), PeerState::Connected);
    while events.try_recv().expect("not lagging").is_some() {}

    let n = allocations_during(|| {
        for _ in 0..1_000 {
            peer.record_success();
        }
    });
    assert_eq!(n, 0, "the connected happy path allocated");
    assert_eq!(
        events.try_recv(),
        Ok(None),
        "no event is published per success"
    );
}

/// A connection that answers each request with itself, at once, without allocating.
#[derive(Clone, Copy)]
struct Echo;

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

/// A connector whose connections are made at once.
struct Connect;

impl Service<&'static str> for Connect {
    type Response = Echo;
    type Error = Infallible;
    type Future = Ready<Result<Echo, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: &'static str) -> Self::Future {
        ready(Ok(Echo))
    }
}

/// A runtime to enter, for the timers layers create (never per call on these paths).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
}

/// `poll_ready`, `call`, and the response polled to completion, all expected ready at once.
fn call_once<S>(service: &mut S, cx: &mut Context<'_>, request: u64) -> u64
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    match service.poll_ready(cx) {
        Poll::Ready(result) => result.expect("poll_ready"),
        Poll::Pending => panic!("poll_ready pending with a connector that is ready at once"),
    }
    match pin!(service.call(request)).poll(cx) {
        Poll::Ready(result) => result.expect("call"),
        Poll::Pending => panic!("response pending from a service that answers at once"),
    }
}

#[test]
fn a_connected_reconnect_service_does_not_allocate_per_call() {
    // Timers are only used while not connected; a runtime is entered in case.
    let rt = runtime();
    let _guard = rt.enter();
    let peers: Peers<&'static str> = Peers::builder().seed(3).build().expect("valid config");
    let mut events = peers.subscribe();
    let peer = peers.add_static("echo").expect("room");
    let mut service = ReconnectLayer::new(peer.clone(), "127.0.0.1:7").layer(Connect);
    let mut cx = Context::from_waker(Waker::noop());

    // Connects on the first `poll_ready`; the first response is the proof that resets the
    // schedule. Both happen once, outside the count.
    assert_eq!(call_once(&mut service, &mut cx, 0), 0);
    assert!(service.is_connected());
    assert_eq!(peer.state(), PeerState::Connected);
    while events.try_recv().expect("not lagging").is_some() {}

    let n = allocations_during(|| {
        for i in 1..=1_000 {
            assert_eq!(call_once(&mut service, &mut cx, i), i);
        }
    });
    assert_eq!(n, 0, "a call through a connected Reconnect allocated");
    assert!(service.is_connected());
    assert_eq!(
        events.try_recv(),
        Ok(None),
        "no event is published per call"
    );
}

#[test]
fn a_retry_service_whose_call_succeeds_does_not_allocate() {
    let rt = runtime();
    let _guard = rt.enter();
    let peers: Peers<&'static str> = Peers::builder().seed(4).build().expect("valid config");
    let mut events = peers.subscribe();
    let plain = RetryLayer::new();
    // With every limit on: the deadline and attempt timer live inside the response future.
    let bounded = RetryLayer::builder()
        .deadline(Duration::from_secs(5))
        .attempt_timeout(Duration::from_secs(1))
        .peer(peers.peer("echo").expect("room"))
        .build()
        .expect("valid config");
    let mut cx = Context::from_waker(Waker::noop());
    let mut plain = plain.layer(Echo);
    let mut bounded = bounded.layer(Echo);
    // Warm up: the budget's first use reads the clock and starts its window.
    assert_eq!(call_once(&mut plain, &mut cx, 0), 0);
    assert_eq!(call_once(&mut bounded, &mut cx, 0), 0);

    let n = allocations_during(|| {
        for i in 1..=1_000 {
            assert_eq!(call_once(&mut plain, &mut cx, i), i);
        }
    });
    assert_eq!(n, 0, "a successful call through Retry allocated");
    let n = allocations_during(|| {
        for i in 1..=1_000 {
            assert_eq!(call_once(&mut bounded, &mut cx, i), i);
        }
    });
    assert_eq!(
        n, 0,
        "a successful call through Retry with a deadline allocated"
    );
    assert_eq!(events.try_recv(), Ok(None), "no event per successful call");
}

#[test]
fn a_health_service_does_not_allocate_per_call_let_through_or_refused() {
    let rt = runtime();
    let _guard = rt.enter();
    let peers: Peers<&'static str> = Peers::builder().seed(5).build().expect("valid config");
    let mut events = peers.subscribe();
    let peer = peers.peer("echo").expect("room");
    let plain = HealthLayer::new(peer.clone(), HealthPolicy::default());
    // The success-rate window is a fixed ring of atomics: no allocation either.
    let windowed = HealthPolicy::builder()
        .success_rate(0.8, Duration::from_secs(30), 10)
        .build()
        .expect("valid config")
        .layer(peer.clone());
    let mut cx = Context::from_waker(Waker::noop());
    let mut plain = plain.layer(Echo);
    let mut windowed = windowed.layer(Echo);
    assert_eq!(call_once(&mut plain, &mut cx, 0), 0);
    assert_eq!(call_once(&mut windowed, &mut cx, 0), 0);

    let n = allocations_during(|| {
        for i in 1..=1_000 {
            assert_eq!(call_once(&mut plain, &mut cx, i), i);
            assert_eq!(call_once(&mut windowed, &mut cx, i), i);
        }
    });
    assert_eq!(n, 0, "a call through Health to a peer in use allocated");
    assert_eq!(events.try_recv(), Ok(None), "no event per call");

    // Ejected: every call is refused at once, naming the peer, without allocating.
    assert!(peer.eject(Duration::from_secs(30)));
    while events.try_recv().expect("not lagging").is_some() {}
    let n = allocations_during(|| {
        for i in 1..=1_000 {
            assert!(matches!(plain.poll_ready(&mut cx), Poll::Ready(Ok(()))));
            let error = match pin!(plain.call(i)).poll(&mut cx) {
                Poll::Ready(Err(error)) => error,
                other => panic!("expected a refusal, got {other:?}"),
            };
            let refused = error.ejected().expect("refused as ejected");
            assert_eq!(refused.peer(), "\"echo\"");
        }
    });
    assert_eq!(n, 0, "refusing a call to an ejected peer allocated");
    assert_eq!(events.try_recv(), Ok(None), "no event per refusal");
}

#[test]
fn the_balanced_stacks_own_layers_do_not_allocate_per_call_while_a_peer_is_ready() {
    let rt = runtime();
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());
    // The load is an Arc shared with clones, taken once per service, never per call.
    let mut penalized = PenalizedPendingLayer::new().layer(Echo);
    // Its timer is armed only while the inner service is not ready.
    let mut fail_fast = FailFastLayer::new(Duration::from_secs(3)).layer(Echo);
    let mut both =
        FailFastLayer::new(Duration::from_secs(3)).layer(PenalizedPendingLayer::new().layer(Echo));
    assert_eq!(call_once(&mut penalized, &mut cx, 0), 0);
    assert_eq!(call_once(&mut fail_fast, &mut cx, 0), 0);
    assert_eq!(call_once(&mut both, &mut cx, 0), 0);

    let n = allocations_during(|| {
        for i in 1..=1_000 {
            assert_eq!(call_once(&mut penalized, &mut cx, i), i);
        }
    });
    assert_eq!(n, 0, "a call through PenalizedPending allocated");
    assert_eq!(penalized.pending(), 0, "every call was counted out again");
    let n = allocations_during(|| {
        for i in 1..=1_000 {
            assert_eq!(call_once(&mut fail_fast, &mut cx, i), i);
            assert_eq!(call_once(&mut both, &mut cx, i), i);
        }
    });
    assert_eq!(n, 0, "a call through FailFast to a ready service allocated");
}
