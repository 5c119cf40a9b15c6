//! Cost of a call through `Retry` on the happy path (the first attempt succeeds): time and
//! allocations per call, against the bare service it wraps and against tower's own
//! `tower::retry::Retry`, in one run.
//!
//! Run with `cargo bench --bench retry`; BENCHMARKS.md holds the figures and how to read them.
//!
//! - One call is `poll_ready`, `call`, and polling the response future to completion, by hand
//!   with a no-op waker (a `block_on` per iteration would cost more than what is measured).
//! - The inner service answers at once with `std::future::Ready`; requests are `u64`s, which
//!   clone without allocating.
//! - tower's `Retry` gets the policy a tower user would write to match redial's default: clone
//!   the request, retry errors, draw on a `TpsBudget` (20 %, 10/s over 10 s). Without the budget
//!   it is shown too, as its floor.

use std::future::{Ready, ready};
use std::sync::Arc;
use std::time::Duration;

use divan::Bencher;
use redial::peers::Peers;
use redial::retry::RetryLayer;
use tower::Layer;
use tower::retry::budget::{Budget, TpsBudget};

#[global_allocator]
static ALLOC: divan::AllocProfiler = divan::AllocProfiler::system();

mod common;

use common::{Echo, bench_calls};

fn main() {
    divan::main();
}

/// The inner service alone: the floor.
#[divan::bench]
fn bare(bencher: Bencher) {
    bench_calls(bencher, Echo);
}

/// What a tower user writes: clone the request, retry any error once, within a budget.
#[derive(Clone)]
struct TowerPolicy {
    budget: Option<Arc<TpsBudget>>,
}

impl<E> tower::retry::Policy<u64, u64, E> for TowerPolicy {
    type Future = Ready<()>;

    fn retry(&mut self, _: &mut u64, result: &mut Result<u64, E>) -> Option<Self::Future> {
        match result {
            Ok(_) => {
                if let Some(budget) = &self.budget {
                    budget.deposit();
                }
                None
            }
            Err(_) => match &self.budget {
                Some(budget) if !budget.withdraw() => None,
                _ => Some(ready(())),
            },
        }
    }

    fn clone_request(&mut self, request: &u64) -> Option<u64> {
        Some(*request)
    }
}

/// tower's `Retry` with a `TpsBudget`, as redial's default has a budget.
#[divan::bench]
fn tower_retry(bencher: Bencher) {
    let budget = Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2));
    let policy = TowerPolicy {
        budget: Some(budget),
    };
    bench_calls(bencher, tower::retry::Retry::new(policy, Echo));
}

/// tower's `Retry` with no budget at all: its floor.
#[divan::bench]
fn tower_retry_no_budget(bencher: Bencher) {
    bench_calls(
        bencher,
        tower::retry::Retry::new(TowerPolicy { budget: None }, Echo),
    );
}

/// redial's `Retry` with the defaults: classifier, budget (one clock read and one uncontended
/// lock per request), no peer.
#[divan::bench]
fn redial_retry(bencher: Bencher) {
    bench_calls(bencher, RetryLayer::new().layer(Echo));
}

/// redial's `Retry` with a deadline, an attempt timeout and a peer: what is added when every
/// limit is on and the first attempt succeeds.
#[divan::bench]
fn redial_retry_bounded(bencher: Bencher) {
    let peers: Peers<&'static str> = Peers::builder().seed(3).build().expect("valid config");
    let layer = RetryLayer::builder()
        .deadline(Duration::from_secs(5))
        .attempt_timeout(Duration::from_secs(1))
        .peer(peers.peer("echo").expect("room"))
        .build()
        .expect("valid config");
    bench_calls(bencher, layer.layer(Echo));
}

/// The parts, for comparison.
mod baseline {
    use super::*;

    /// redial's budget deposit alone: what every request pays.
    #[divan::bench]
    fn budget_deposit(bencher: Bencher) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let _guard = rt.enter();
        let budget = redial::retry::Budget::default();
        bencher.bench_local(|| budget.deposit());
    }

    /// `tower::util::BoxService` around the inner service: one boxed future per call, here so
    /// that the run shows the profiler counting (the services above count none).
    #[divan::bench]
    fn boxed(bencher: Bencher) {
        bench_calls(bencher, tower::util::BoxService::new(Echo));
    }

    /// tower's `TpsBudget::deposit` alone.
    #[divan::bench]
    fn tower_budget_deposit(bencher: Bencher) {
        let budget = TpsBudget::new(Duration::from_secs(10), 10, 0.2);
        bencher.bench_local(|| budget.deposit());
    }
}
