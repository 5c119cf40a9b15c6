//! The retry helpers for plain async code (`retry`, `retry_tracked`, `Retrying`) under tokio's
//! paused clock: the exact instant of every attempt, unlimited and bounded attempts, the time
//! limit, transparent retries, the budget, server hints, and what a tracked run records.

use std::cell::RefCell;
use std::io;
use std::time::Duration;

use redial::backoff::{Backoff, Jitter};
use redial::event::{Event, EventKind, NotRetriedReason, Subscription};
use redial::peers::Peers;
use redial::retry::{Budget, Decision, Retrying, retry, retry_tracked};
use tokio::time::Instant;
use tower::BoxError;

const MS: Duration = Duration::from_millis(1);

type Key = &'static str;

/// 100 ms doubling to `max`, no jitter, `attempts` attempts (`None`: unlimited).
fn backoff(attempts: Option<u32>, max: Duration) -> Backoff {
    let builder = Backoff::builder()
        .initial(100 * MS)
        .multiplier(2.0)
        .max(max)
        .jitter(Jitter::None);
    let builder = match attempts {
        Some(n) => builder.max_attempts(n),
        None => builder.unlimited_attempts(),
    };
    match builder.build() {
        Ok(backoff) => backoff,
        Err(error) => panic!("test backoff: {error}"),
    }
}

/// Records the virtual instant (in ms since the test's start) of every attempt, and answers
/// attempt `n` (0-based) as `plan(n)` says.
struct Op<F> {
    start: Instant,
    calls: RefCell<Vec<u64>>,
    plan: F,
}

impl<F> Op<F> {
    fn new(plan: F) -> Self {
        Self {
            start: Instant::now(),
            calls: RefCell::new(Vec::new()),
            plan,
        }
    }

    fn calls(&self) -> Vec<u64> {
        self.calls.borrow().clone()
    }

    /// The closure a helper calls: one attempt per call.
    fn attempt<T, E>(&self) -> impl Future<Output = Result<T, E>> + use<'_, F, T, E>
    where
        F: Fn(usize) -> Result<T, E>,
    {
        let mut calls = self.calls.borrow_mut();
        let n = calls.len();
        calls.push(self.start.elapsed().as_millis() as u64);
        let outcome = (self.plan)(n);
        async move { outcome }
    }
}

fn io_err(kind: io::ErrorKind, text: &str) -> io::Error {
    io::Error::new(kind, text.to_string())
}

fn drain(events: &mut Subscription<Key>) -> Vec<Event<Key>> {
    let mut out = Vec::new();
    while let Ok(Some(event)) = events.try_recv() {
        out.push(event);
    }
    out
}

/// The retry-related events, as `(ms since start, kind)`.
fn retry_events(events: &mut Subscription<Key>, start: Instant) -> Vec<(u64, EventKind)> {
    drain(events)
        .into_iter()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::RetryScheduled { .. }
                    | EventKind::NotRetried { .. }
                    | EventKind::BudgetExhausted
            )
        })
        .map(|e| (e.at.duration_since(start).as_millis() as u64, e.kind))
        .collect()
}

fn scheduled(attempt: u32, delay_ms: u64, reason: &'static str) -> EventKind {
    EventKind::RetryScheduled {
        attempt,
        delay: Duration::from_millis(delay_ms),
        reason,
    }
}

#[tokio::test(start_paused = true)]
async fn attempts_happen_at_the_scheduled_instants() {
    let op = Op::new(|_| Err::<(), _>(io_err(io::ErrorKind::ConnectionReset, "reset")));
    let result = retry(&backoff(Some(4), 10 * MS * 1000), || op.attempt()).await;

    assert_eq!(
        result.map_err(|e| e.kind()),
        Err(io::ErrorKind::ConnectionReset)
    );
    // 100, 200, 400 ms apart.
    assert_eq!(op.calls(), [0, 100, 300, 700]);
    assert_eq!(
        op.start.elapsed(),
        700 * MS,
        "no wait after the last attempt"
    );
}

#[tokio::test(start_paused = true)]
async fn success_at_once_does_not_wait() {
    let op = Op::new(|_| Ok::<_, io::Error>("hello"));
    let result = retry(&backoff(Some(4), 1000 * MS), || op.attempt()).await;
    assert_eq!(result.ok(), Some("hello"));
    assert_eq!(op.calls(), [0]);
}

#[tokio::test(start_paused = true)]
async fn unlimited_attempts_keep_going_until_success() {
    // Resets and refusals alike: with no attempt limit neither kind ends the run.
    let op = Op::new(|n| match n {
        0..=29 => Err(io_err(io::ErrorKind::ConnectionRefused, "refused")),
        30..=59 => Err(io_err(io::ErrorKind::ConnectionReset, "reset")),
        _ => Ok(n),
    });
    let result = retry(&backoff(None, 1000 * MS), || op.attempt()).await;

    assert_eq!(result.ok(), Some(60));
    let calls = op.calls();
    assert_eq!(calls.len(), 61);
    // 100, 200, 400, 800 ms, then the 1 s cap for every delay after.
    assert_eq!(calls[..6], [0, 100, 300, 700, 1500, 2500]);
    assert!(calls.windows(2).skip(4).all(|w| w[1] - w[0] == 1000));
}

#[tokio::test(start_paused = true)]
async fn max_attempts_stops_with_the_last_error() {
    let op = Op::new(|n| Err::<(), _>(io_err(io::ErrorKind::TimedOut, &format!("attempt {n}"))));
    let result = retry(&backoff(Some(3), 1000 * MS), || op.attempt()).await;

    assert_eq!(result.map_err(|e| e.to_string()), Err("attempt 2".into()));
    assert_eq!(op.calls(), [0, 100, 300]);
}

#[tokio::test(start_paused = true)]
async fn one_attempt_never_retries() {
    let op = Op::new(|_| Err::<(), _>(io_err(io::ErrorKind::ConnectionReset, "reset")));
    let result = retry(&Backoff::disabled(), || op.attempt()).await;
    assert!(result.is_err());
    assert_eq!(op.calls(), [0]);
}

#[tokio::test(start_paused = true)]
async fn dont_retry_stops_at_once() {
    let op = Op::new(|_| Err::<(), _>(io_err(io::ErrorKind::PermissionDenied, "denied")));
    let result = retry(&backoff(None, 1000 * MS), || op.attempt()).await;

    assert_eq!(
        result.map_err(|e| e.kind()),
        Err(io::ErrorKind::PermissionDenied)
    );
    assert_eq!(op.calls(), [0]);
    assert_eq!(op.start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn box_errors_are_classified_through_their_source_chain() {
    #[derive(Debug)]
    struct Wrapped(io::Error);
    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("query failed")
        }
    }
    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    let op = Op::new(|n| {
        if n < 2 {
            let error: BoxError = Box::new(Wrapped(io::ErrorKind::BrokenPipe.into()));
            Err(error)
        } else {
            Ok(n)
        }
    });
    let result = retry(&backoff(Some(5), 1000 * MS), || op.attempt()).await;
    assert_eq!(result.ok(), Some(2));
    assert_eq!(op.calls(), [0, 100, 300]);
}

#[tokio::test(start_paused = true)]
async fn transparent_retries_do_not_consume_attempts() {
    // Two attempts allowed: the three refusals are free, then one reset is retried.
    let op = Op::new(|n| match n {
        0..=2 => Err::<(), _>(io_err(io::ErrorKind::ConnectionRefused, "refused")),
        _ => Err(io_err(io::ErrorKind::ConnectionReset, "reset")),
    });
    let retrying = Retrying::new(&backoff(Some(2), 1000 * MS)).max_transparent(3);
    let result = retrying.run(|| op.attempt()).await;

    assert_eq!(
        result.map_err(|e| e.kind()),
        Err(io::ErrorKind::ConnectionReset)
    );
    // Transparent retries draw their delays from the same schedule.
    assert_eq!(op.calls(), [0, 100, 300, 700, 1500]);
}

#[tokio::test(start_paused = true)]
async fn transparent_retries_are_bounded() {
    let peers: Peers<Key> = Peers::new();
    let peer = peers.peer("db").expect("a new peer");
    let mut events = peers.subscribe();

    let op = Op::new(|_| Err::<(), _>(io_err(io::ErrorKind::ConnectionRefused, "refused")));
    let retrying = Retrying::new(&backoff(Some(2), 1000 * MS))
        .max_transparent(2)
        .peer(peer.clone());
    let result = retrying.run(|| op.attempt()).await;

    assert!(result.is_err());
    // 2 free transparent retries, then one counted as an ordinary retry (2 attempts allowed).
    assert_eq!(op.calls(), [0, 100, 300, 700]);
    let reason = "connection refused";
    assert_eq!(
        retry_events(&mut events, op.start),
        [
            (0, scheduled(1, 100, reason)),
            (100, scheduled(2, 200, reason)),
            (300, scheduled(3, 400, reason)),
            (
                700,
                EventKind::NotRetried {
                    reason: NotRetriedReason::AttemptsExhausted
                }
            ),
        ]
    );
    let seen = peer.snapshot();
    assert_eq!((seen.failures, seen.retries, seen.successes), (4, 3, 0));
}

#[tokio::test(start_paused = true)]
async fn no_free_transparent_retries_counts_them_all() {
    let op = Op::new(|_| Err::<(), _>(io_err(io::ErrorKind::ConnectionRefused, "refused")));
    let retrying = Retrying::new(&backoff(Some(3), 1000 * MS)).max_transparent(0);
    assert!(retrying.run(|| op.attempt()).await.is_err());
    assert_eq!(op.calls(), [0, 100, 300]);
}

#[tokio::test(start_paused = true)]
async fn max_elapsed_cuts_the_last_delay() {
    let limited = backoff(None, 1000 * MS)
        .to_builder()
        .max_elapsed(250 * MS)
        .build()
        .expect("a valid backoff");
    let peers: Peers<Key> = Peers::new();
    let peer = peers.peer("db").expect("a new peer");
    let mut events = peers.subscribe();

    let op = Op::new(|_| Err::<(), _>(io_err(io::ErrorKind::ConnectionReset, "reset")));
    let result = retry_tracked(&peer, &limited, || op.attempt()).await;

    assert!(result.is_err());
    // 100 ms, then 200 ms cut to the 150 ms left: the last attempt is at the limit.
    assert_eq!(op.calls(), [0, 100, 250]);
    let reason = "connection reset";
    assert_eq!(
        retry_events(&mut events, op.start),
        [
            (0, scheduled(1, 100, reason)),
            (100, scheduled(2, 150, reason)),
            (
                250,
                EventKind::NotRetried {
                    reason: NotRetriedReason::Deadline
                }
            ),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_refused_budget_ends_the_run() {
    let peers: Peers<Key> = Peers::new();
    let peer = peers.peer("db").expect("a new peer");
    let mut events = peers.subscribe();
    // One retry per request, no reserve.
    let budget = Budget::builder()
        .ratio(1.0)
        .min_per_second(0)
        .build()
        .expect("a valid budget");

    let op = Op::new(|_| Err::<(), _>(io_err(io::ErrorKind::ConnectionReset, "reset")));
    let retrying = Retrying::new(&backoff(None, 1000 * MS))
        .budget(budget.clone())
        .peer(peer.clone());
    let result = retrying.run(|| op.attempt()).await;

    assert!(result.is_err());
    assert_eq!(op.calls(), [0, 100], "the run's deposit paid for one retry");
    assert_eq!(
        retry_events(&mut events, op.start),
        [
            (0, scheduled(1, 100, "connection reset")),
            (100, EventKind::BudgetExhausted),
        ]
    );
    assert_eq!(peers.stats().budget_exhausted, 1);
    assert_eq!(budget.remaining(), 0);

    // The budget is shared: a second run deposits one more and may retry once again.
    let again = Op::new(|n| {
        if n == 0 {
            Err(io_err(io::ErrorKind::ConnectionReset, "reset"))
        } else {
            Ok(n)
        }
    });
    assert_eq!(retrying.run(|| again.attempt()).await.ok(), Some(1));
}

#[tokio::test(start_paused = true)]
async fn tracked_runs_update_the_snapshot_and_emit_events() {
    let peers: Peers<Key> = Peers::new();
    let peer = peers.peer("api").expect("a new peer");
    let mut events = peers.subscribe();

    let op = Op::new(|n| {
        if n < 2 {
            Err(io_err(io::ErrorKind::ConnectionReset, "reset by peer"))
        } else {
            Ok("rows")
        }
    });
    let result = retry_tracked(&peer, &backoff(Some(5), 1000 * MS), || op.attempt()).await;

    assert_eq!(result.ok(), Some("rows"));
    assert_eq!(op.calls(), [0, 100, 300]);
    let seen = peer.snapshot();
    assert_eq!(
        (seen.failures, seen.retries, seen.successes),
        (2, 2, 1),
        "{seen:?}"
    );
    assert_eq!(seen.consecutive_failures, 0);
    assert_eq!(seen.last_error.as_deref(), Some("reset by peer"));
    assert_eq!(
        retry_events(&mut events, op.start),
        [
            (0, scheduled(1, 100, "connection reset")),
            (100, scheduled(2, 200, "connection reset")),
        ]
    );
    assert_eq!(peers.stats().retries, 2);
}

#[tokio::test(start_paused = true)]
async fn tracked_runs_record_a_final_failure_and_why_it_was_not_retried() {
    let peers: Peers<Key> = Peers::new();
    let peer = peers.peer("api").expect("a new peer");
    let mut events = peers.subscribe();

    let op = Op::new(|_| Err::<(), _>(io_err(io::ErrorKind::ConnectionReset, "reset")));
    let result = retry_tracked(&peer, &backoff(Some(2), 1000 * MS), || op.attempt()).await;

    assert!(result.is_err());
    let seen = peer.snapshot();
    assert_eq!((seen.failures, seen.retries, seen.successes), (2, 1, 0));
    assert_eq!(seen.consecutive_failures, 2);
    assert_eq!(
        retry_events(&mut events, op.start),
        [
            (0, scheduled(1, 100, "connection reset")),
            (
                100,
                EventKind::NotRetried {
                    reason: NotRetriedReason::AttemptsExhausted
                }
            ),
        ]
    );

    // An error not worth retrying still counts as the peer's failure.
    let denied = Op::new(|_| Err::<(), _>(io_err(io::ErrorKind::PermissionDenied, "denied")));
    assert!(
        retry_tracked(&peer, &backoff(Some(2), 1000 * MS), || denied.attempt())
            .await
            .is_err()
    );
    assert_eq!(peer.snapshot().failures, 3);
    assert_eq!(retry_events(&mut events, op.start), []);
}

/// A classifier that retries `Err(n)` with a server hint of `n` ms.
fn hinted(_: &(), outcome: &Result<(), u64>) -> Decision {
    match outcome {
        Ok(()) => Decision::DontRetry,
        Err(ms) => Decision::Retry {
            reason: "pushback",
            after: Some(Duration::from_millis(*ms)),
        },
    }
}

#[tokio::test(start_paused = true)]
async fn hints_are_clamped_into_the_backoff_window() {
    // Hints of 5 ms (raised to the 100 ms initial), 300 ms (kept), one day (cut to the 2 s max).
    let hints = [5, 300, 24 * 60 * 60 * 1000];
    let op = Op::new(|n| hints.get(n).map_or(Ok(()), |ms| Err(*ms)));
    let retrying = Retrying::new(&backoff(None, 2000 * MS)).classifier(hinted);
    let result = retrying.run(|| op.attempt()).await;

    assert_eq!(result, Ok(()));
    assert_eq!(op.calls(), [0, 100, 400, 2400]);
}

#[tokio::test(start_paused = true)]
async fn a_hint_is_cut_to_the_time_limit() {
    let limited = backoff(None, 2000 * MS)
        .to_builder()
        .max_elapsed(500 * MS)
        .build()
        .expect("a valid backoff");
    let op = Op::new(|_| Err(1500));
    let result = Retrying::new(&limited)
        .classifier(hinted)
        .run(|| op.attempt())
        .await;

    assert_eq!(result, Err(1500));
    assert_eq!(op.calls(), [0, 500]);
}

#[tokio::test(start_paused = true)]
async fn an_ok_outcome_can_be_retried_and_is_returned_when_attempts_run_out() {
    let busy = |_: &(), outcome: &Result<&'static str, io::Error>| match outcome {
        Ok("busy") => Decision::retry("busy"),
        _ => Decision::DontRetry,
    };
    let peers: Peers<Key> = Peers::new();
    let peer = peers.peer("api").expect("a new peer");
    let op = Op::new(|_| Ok("busy"));
    let result = Retrying::new(&backoff(Some(3), 1000 * MS))
        .classifier(busy)
        .peer(peer.clone())
        .run(|| op.attempt())
        .await;

    assert_eq!(result.ok(), Some("busy"));
    assert_eq!(op.calls(), [0, 100, 300]);
    let seen = peer.snapshot();
    assert_eq!((seen.failures, seen.successes), (3, 0));
    assert_eq!(seen.last_error.as_deref(), Some("busy"));
}

#[tokio::test(start_paused = true)]
async fn a_seeded_backoff_replays_its_jitter() {
    let seeded = Backoff::builder()
        .initial(100 * MS)
        .max(10_000 * MS)
        .jitter(Jitter::Full)
        .max_attempts(6)
        .seed(7)
        .build()
        .expect("a valid backoff");
    let mut runs = Vec::new();
    for _ in 0..2 {
        let op = Op::new(|_| Err::<(), _>(io_err(io::ErrorKind::ConnectionReset, "reset")));
        assert!(retry(&seeded, || op.attempt()).await.is_err());
        runs.push(op.calls());
    }
    assert_eq!(runs[0].len(), 6);
    assert_eq!(runs[0], runs[1]);
    // Full jitter: each delay is at most the un-jittered one.
    let mut bound = 0;
    for (i, at) in runs[0].iter().enumerate().skip(1) {
        bound += 100 << (i - 1);
        assert!(*at <= bound, "{:?}", runs[0]);
    }
}

#[tokio::test(start_paused = true)]
async fn dropping_the_run_stops_it() {
    let op = Op::new(|_| Err::<(), _>(io_err(io::ErrorKind::ConnectionReset, "reset")));
    let forever = backoff(None, 1000 * MS);
    let run = retry(&forever, || op.attempt());
    let cut = tokio::time::timeout(1000 * MS, run).await;
    assert!(cut.is_err(), "still retrying at 1 s");
    let before = op.calls();
    tokio::time::sleep(10_000 * MS).await;
    assert_eq!(op.calls(), before, "no attempt after the drop");
    assert_eq!(before, [0, 100, 300, 700]);
}

#[tokio::test(start_paused = true)]
async fn one_attempt_exactly_without_free_transparent_retries() {
    let op = Op::new(|_| Err::<(), _>(io_err(io::ErrorKind::ConnectionRefused, "refused")));
    let result = retry(&Backoff::disabled(), || op.attempt()).await;
    assert!(result.is_err());
    assert_eq!(op.calls().len(), 6, "5 free transparent retries on top");

    let op = Op::new(|_| Err::<(), _>(io_err(io::ErrorKind::ConnectionRefused, "refused")));
    let once = Retrying::new(&Backoff::disabled()).max_transparent(0);
    assert!(once.run(|| op.attempt()).await.is_err());
    assert_eq!(op.calls(), [0]);
}

#[test]
fn runs_are_send_for_send_operations() {
    fn assert_send<T: Send>(_: T) {}
    let backoff = Backoff::default();
    assert_send(retry(&backoff, || async {
        Err::<(), BoxError>("no".into())
    }));
    let peers: Peers<Key> = Peers::new();
    let peer = peers.peer("db").expect("a new peer");
    assert_send(retry_tracked(&peer, &backoff, || async {
        Ok::<_, io::Error>(())
    }));
    let retrying = Retrying::new(&backoff)
        .budget(Budget::default())
        .peer(peer)
        .classifier(|_: &(), _: &Result<(), String>| Decision::DontRetry);
    assert_send(retrying.run(|| async { Ok(()) }));
}
