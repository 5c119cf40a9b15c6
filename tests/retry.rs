//! `RetryLayer` under tokio's paused clock: the exact instant of every attempt, readiness
//! before each retry, the deadline and per-attempt timeout, transparent retries, server hints,
//! the shared budget over 10 000 requests, tracking and events, and the tower contract probes
//! of DESIGN §4.
//!
//! The mock backend ([`Backend`]) is strict: a clone is not ready, and calling it without a
//! `poll_ready` that returned `Ready(Ok)` on that very instance panics, so every test here is
//! also a probe of the tower contract.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use redial::backoff::{Backoff, Jitter};
use redial::event::{EventKind, NotRetriedReason, Subscription};
use redial::peers::Peers;
use redial::retry::{
    AttemptTimedOut, Budget, Classify, DeadlineExceeded, Decision, DefaultClassifier, Replay,
    RetryLayer,
};
use redial::{ConfigError, ConfigErrorKind};
use tokio::time::{Instant, Sleep, sleep, timeout};
use tower::{BoxError, Layer, Service, ServiceExt};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

type Key = &'static str;

// ---------------------------------------------------------------------------------------------
// The mock backend
// ---------------------------------------------------------------------------------------------

/// What the backend does with call `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    Answer,
    Fail(io::ErrorKind),
    /// Never answers.
    Hang,
    /// Answers after this many milliseconds.
    Slow(u64),
}

use Reply::*;

type Plan = Box<dyn FnMut(usize) -> Reply + Send>;

struct Shared {
    start: Instant,
    plan: Mutex<Plan>,
    calls: Mutex<Vec<u64>>,
    /// Not ready before this instant.
    ready_at: Mutex<Option<Instant>>,
    ready_err: AtomicBool,
    polls: AtomicUsize,
    /// Futures alive right now: a dropped call must not leak its attempt.
    in_flight: Arc<AtomicUsize>,
}

struct Backend {
    shared: Arc<Shared>,
    ready: bool,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Clone for Backend {
    /// A clone is not ready until polled itself.
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            ready: false,
            sleep: None,
        }
    }
}

impl Backend {
    fn new(plan: impl FnMut(usize) -> Reply + Send + 'static) -> Self {
        Self {
            shared: Arc::new(Shared {
                start: Instant::now(),
                plan: Mutex::new(Box::new(plan)),
                calls: Mutex::new(Vec::new()),
                ready_at: Mutex::new(None),
                ready_err: AtomicBool::new(false),
                polls: AtomicUsize::new(0),
                in_flight: Arc::new(AtomicUsize::new(0)),
            }),
            ready: false,
            sleep: None,
        }
    }

    fn always(reply: Reply) -> Self {
        Self::new(move |_| reply)
    }

    /// Milliseconds since the start at which each call came.
    fn calls(&self) -> Vec<u64> {
        self.shared.calls.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.shared.calls.lock().unwrap().len()
    }

    fn not_ready_until(&self, at: Instant) {
        *self.shared.ready_at.lock().unwrap() = Some(at);
    }

    fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }
}

/// Counts a live call future.
struct Guard(Arc<AtomicUsize>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Service<u32> for Backend {
    type Response = String;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<String>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shared.polls.fetch_add(1, Ordering::SeqCst);
        if self.shared.ready_err.load(Ordering::SeqCst) {
            return Poll::Ready(Err(io::Error::other("backend closed")));
        }
        let ready_at = *self.shared.ready_at.lock().unwrap();
        if let Some(at) = ready_at {
            if Instant::now() < at {
                let sleep = self
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                sleep.as_mut().reset(at);
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
        }
        self.ready = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: u32) -> Self::Future {
        assert!(
            self.ready,
            "called without poll_ready returning Ready(Ok) first"
        );
        self.ready = false;
        let n = {
            let mut calls = self.shared.calls.lock().unwrap();
            calls.push(as_ms(Instant::now() - self.shared.start));
            calls.len() - 1
        };
        let reply = (self.shared.plan.lock().unwrap())(n);
        self.shared.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = Guard(Arc::clone(&self.shared.in_flight));
        Box::pin(async move {
            let _guard = guard;
            match reply {
                Answer => Ok(format!("reply to {request}")),
                Fail(kind) => Err(io::Error::from(kind)),
                Hang => std::future::pending().await,
                Slow(ms) => {
                    sleep(Duration::from_millis(ms)).await;
                    Ok(format!("slow reply to {request}"))
                }
            }
        })
    }
}

fn as_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap()
}

/// 100 ms doubling, no jitter.
fn exact() -> Backoff {
    Backoff::builder()
        .initial(100 * MS)
        .multiplier(2.0)
        .max(10 * SEC)
        .jitter(Jitter::None)
        .build()
        .unwrap()
}

/// 1 ms between attempts, always.
fn one_ms() -> Backoff {
    Backoff::builder()
        .initial(MS)
        .multiplier(1.0)
        .max(MS)
        .jitter(Jitter::None)
        .build()
        .unwrap()
}

/// Polls ready, then calls; a minute of patience so a broken layer fails instead of hanging.
async fn send<S>(svc: &mut S, request: u32) -> Result<String, BoxError>
where
    S: Service<u32, Response = String, Error = BoxError>,
{
    timeout(60 * SEC, async { svc.ready().await?.call(request).await })
        .await
        .expect("no outcome within a minute")
}

fn kinds(events: &mut Subscription<Key>) -> Vec<EventKind> {
    let mut out = Vec::new();
    while let Some(e) = events.try_recv().unwrap() {
        out.push(e.kind);
    }
    out
}

fn scheduled(attempt: u32, delay_ms: u64, reason: &'static str) -> EventKind {
    EventKind::RetryScheduled {
        attempt,
        delay: Duration::from_millis(delay_ms),
        reason,
    }
}

fn io_kind(error: &BoxError) -> Option<io::ErrorKind> {
    error.downcast_ref::<io::Error>().map(io::Error::kind)
}

// ---------------------------------------------------------------------------------------------
// 1. The schedule
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn attempts_happen_at_the_scheduled_instants() {
    let backend = Backend::always(Fail(io::ErrorKind::ConnectionReset));
    let peers: Peers<Key> = Peers::new();
    let mut events = peers.subscribe();
    let layer = RetryLayer::builder()
        .backoff(exact())
        .max_attempts(4)
        .peer(peers.peer("api").unwrap())
        .build()
        .unwrap();
    let mut svc = layer.layer(backend.clone());

    let error = send(&mut svc, 1).await.unwrap_err();
    assert_eq!(io_kind(&error), Some(io::ErrorKind::ConnectionReset));
    assert_eq!(backend.calls(), [0, 100, 300, 700]);
    assert_eq!(
        kinds(&mut events),
        [
            scheduled(1, 100, "connection reset"),
            scheduled(2, 200, "connection reset"),
            scheduled(3, 400, "connection reset"),
            EventKind::NotRetried {
                reason: NotRetriedReason::AttemptsExhausted
            },
        ]
    );
    let snapshot = peers.snapshot("api").unwrap();
    assert_eq!((snapshot.retries, snapshot.failures), (3, 4));
}

#[tokio::test(start_paused = true)]
async fn a_success_after_failures_is_returned_and_nothing_more_is_sent() {
    let backend = Backend::new(|n| {
        if n < 2 {
            Fail(io::ErrorKind::BrokenPipe)
        } else {
            Answer
        }
    });
    let mut svc = RetryLayer::builder()
        .backoff(exact())
        .max_attempts(5)
        .build()
        .unwrap()
        .layer(backend.clone());

    assert_eq!(send(&mut svc, 7).await.unwrap(), "reply to 7");
    assert_eq!(backend.calls(), [0, 100, 300]);
}

#[tokio::test(start_paused = true)]
async fn errors_the_classifier_refuses_are_not_retried_but_counted() {
    let backend = Backend::always(Fail(io::ErrorKind::PermissionDenied));
    let peers: Peers<Key> = Peers::new();
    let mut svc = RetryLayer::builder()
        .peer(peers.peer("api").unwrap())
        .build()
        .unwrap()
        .layer(backend.clone());
    let error = send(&mut svc, 1).await.unwrap_err();
    assert_eq!(io_kind(&error), Some(io::ErrorKind::PermissionDenied));
    assert_eq!(backend.count(), 1);
    let snapshot = peers.snapshot("api").unwrap();
    assert_eq!((snapshot.failures, snapshot.retries), (1, 0));
    assert_eq!(snapshot.last_error.as_deref(), Some("permission denied"));
}

#[tokio::test(start_paused = true)]
async fn the_same_seed_gives_the_same_jittered_instants() {
    async fn run(seed: u64) -> Vec<u64> {
        let backend = Backend::always(Fail(io::ErrorKind::ConnectionReset));
        let backoff = Backoff::builder()
            .initial(100 * MS)
            .max(10 * SEC)
            .jitter(Jitter::Full)
            .build()
            .unwrap();
        let mut svc = RetryLayer::builder()
            .backoff(backoff)
            .max_attempts(6)
            .seed(seed)
            .build()
            .unwrap()
            .layer(backend.clone());
        let _ = send(&mut svc, 1).await;
        backend.calls()
    }
    let first = run(42).await;
    assert_eq!(first.len(), 6);
    assert_eq!(first, run(42).await);
    assert_ne!(first, run(43).await);
}

// ---------------------------------------------------------------------------------------------
// 2. Readiness before every attempt
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn every_retry_waits_for_the_service_to_be_ready_again() {
    let backend = Backend::new(|n| {
        if n == 0 {
            Fail(io::ErrorKind::ConnectionReset)
        } else {
            Answer
        }
    });
    let mut svc = RetryLayer::builder()
        .backoff(exact())
        .build()
        .unwrap()
        .layer(backend.clone());
    // Ready for the first attempt; then busy until 500 ms, past the 100 ms delay.
    svc.ready().await.unwrap();
    backend.not_ready_until(Instant::now() + 500 * MS);
    let polls_before = backend.shared.polls.load(Ordering::SeqCst);

    assert_eq!(svc.call(3).await.unwrap(), "reply to 3");
    assert_eq!(backend.calls(), [0, 500], "the retry waited for readiness");
    assert!(
        backend.shared.polls.load(Ordering::SeqCst) > polls_before,
        "the clone was polled before the retry"
    );
}

#[tokio::test(start_paused = true)]
async fn a_poll_ready_error_during_a_retry_ends_the_call_with_it() {
    let backend = Backend::always(Fail(io::ErrorKind::ConnectionReset));
    let mut svc = RetryLayer::builder()
        .backoff(exact())
        .build()
        .unwrap()
        .layer(backend.clone());
    svc.ready().await.unwrap();
    backend.shared.ready_err.store(true, Ordering::SeqCst);
    let error = svc.call(1).await.unwrap_err();
    assert_eq!(error.to_string(), "backend closed");
    assert_eq!(backend.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn poll_ready_is_the_inner_services() {
    let backend = Backend::always(Answer);
    let mut svc = RetryLayer::new().layer(backend.clone());
    backend.not_ready_until(Instant::now() + SEC);
    let start = Instant::now();
    svc.ready().await.unwrap();
    assert_eq!(Instant::now() - start, SEC);

    backend.shared.ready_err.store(true, Ordering::SeqCst);
    let error = svc
        .ready()
        .await
        .err()
        .expect("the inner error comes through");
    assert_eq!(error.to_string(), "backend closed");
}

#[tokio::test(start_paused = true)]
async fn a_pending_inner_service_keeps_the_retry_pending_until_the_deadline() {
    let backend = Backend::always(Fail(io::ErrorKind::ConnectionReset));
    let mut svc = RetryLayer::builder()
        .backoff(exact())
        .deadline(SEC)
        .build()
        .unwrap()
        .layer(backend.clone());
    svc.ready().await.unwrap();
    backend.not_ready_until(Instant::now() + 3600 * SEC);
    let start = Instant::now();
    let error = svc.call(1).await.unwrap_err();
    let passed = error.downcast_ref::<DeadlineExceeded>().expect("deadline");
    assert_eq!((passed.deadline(), passed.attempts()), (SEC, 1));
    assert_eq!(Instant::now() - start, SEC);
    assert_eq!(backend.count(), 1);
}

// ---------------------------------------------------------------------------------------------
// 3. Deadline and attempt timeout
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_retry_that_would_start_after_the_deadline_is_not_made() {
    let backend = Backend::always(Fail(io::ErrorKind::ConnectionReset));
    let peers: Peers<Key> = Peers::new();
    let mut events = peers.subscribe();
    let mut svc = RetryLayer::builder()
        .backoff(exact())
        .max_attempts(10)
        .deadline(250 * MS)
        .peer(peers.peer("api").unwrap())
        .build()
        .unwrap()
        .layer(backend.clone());

    let start = Instant::now();
    let error = send(&mut svc, 1).await.unwrap_err();
    // 0, 100; the next would start at 300, past 250: the last error comes back at 100.
    assert_eq!(io_kind(&error), Some(io::ErrorKind::ConnectionReset));
    assert_eq!(backend.calls(), [0, 100]);
    assert_eq!(Instant::now() - start, 100 * MS);
    assert_eq!(
        kinds(&mut events).last(),
        Some(&EventKind::NotRetried {
            reason: NotRetriedReason::Deadline
        })
    );
}

#[tokio::test(start_paused = true)]
async fn the_deadline_cuts_an_attempt_in_flight() {
    let backend = Backend::new(|n| {
        if n == 0 {
            Fail(io::ErrorKind::ConnectionReset)
        } else {
            Hang
        }
    });
    let mut svc = RetryLayer::builder()
        .backoff(exact())
        .deadline(250 * MS)
        .build()
        .unwrap()
        .layer(backend.clone());

    let start = Instant::now();
    let error = send(&mut svc, 1).await.unwrap_err();
    let passed = error.downcast_ref::<DeadlineExceeded>().expect("deadline");
    assert_eq!(passed.attempts(), 2);
    assert_eq!(Instant::now() - start, 250 * MS);
    assert_eq!(backend.in_flight(), 0, "the hanging attempt was dropped");
}

#[tokio::test(start_paused = true)]
async fn a_retry_whose_service_turns_ready_at_the_deadline_is_not_sent() {
    let backend = Backend::always(Fail(io::ErrorKind::ConnectionRefused));
    let mut svc = RetryLayer::builder()
        .backoff(exact())
        .deadline(1500 * MS)
        .build()
        .unwrap()
        .layer(backend.clone());
    svc.ready().await.unwrap();
    backend.not_ready_until(Instant::now() + 1500 * MS);
    let error = svc.call(1).await.unwrap_err();
    let passed = error.downcast_ref::<DeadlineExceeded>().expect("deadline");
    assert_eq!(passed.attempts(), 1);
    assert_eq!(backend.calls(), [0], "nothing was sent at the deadline");
}

#[tokio::test(start_paused = true)]
async fn a_slow_attempt_times_out_and_is_retried() {
    let backend = Backend::new(|n| if n == 0 { Hang } else { Slow(50) });
    let mut svc = RetryLayer::builder()
        .backoff(exact())
        .attempt_timeout(200 * MS)
        .build()
        .unwrap()
        .layer(backend.clone());

    let start = Instant::now();
    assert_eq!(send(&mut svc, 1).await.unwrap(), "slow reply to 1");
    // Timed out at 200, retried 100 ms later, answered 50 ms after that.
    assert_eq!(backend.calls(), [0, 300]);
    assert_eq!(Instant::now() - start, 350 * MS);
    assert_eq!(backend.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_last_attempt_timeout_is_returned_typed() {
    let backend = Backend::always(Hang);
    let mut svc = RetryLayer::builder()
        .backoff(exact())
        .max_attempts(2)
        .attempt_timeout(200 * MS)
        .build()
        .unwrap()
        .layer(backend.clone());
    let error = send(&mut svc, 1).await.unwrap_err();
    let timed_out = error.downcast_ref::<AttemptTimedOut>().expect("typed");
    assert_eq!(timed_out.after(), 200 * MS);
    assert_eq!(backend.calls(), [0, 300]);
}

// ---------------------------------------------------------------------------------------------
// 4. Transparent retries
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn transparent_retries_do_not_use_up_max_attempts() {
    // Three refusals (nothing sent), one reset (maybe sent), then an answer.
    let backend = Backend::new(|n| match n {
        0..=2 => Fail(io::ErrorKind::ConnectionRefused),
        3 => Fail(io::ErrorKind::ConnectionReset),
        _ => Answer,
    });
    let peers: Peers<Key> = Peers::new();
    let mut events = peers.subscribe();
    let mut svc = RetryLayer::builder()
        .backoff(exact())
        .max_attempts(2)
        .peer(peers.peer("api").unwrap())
        .build()
        .unwrap()
        .layer(backend.clone());

    assert_eq!(send(&mut svc, 1).await.unwrap(), "reply to 1");
    assert_eq!(backend.count(), 5);
    let reasons: Vec<_> = kinds(&mut events)
        .into_iter()
        .filter_map(|k| match k {
            EventKind::RetryScheduled { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons,
        [
            "connection refused",
            "connection refused",
            "connection refused",
            "connection reset"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn transparent_retries_are_bounded() {
    let backend = Backend::always(Fail(io::ErrorKind::ConnectionRefused));
    let peers: Peers<Key> = Peers::new();
    let mut events = peers.subscribe();
    let mut svc = RetryLayer::builder()
        .backoff(exact())
        .max_attempts(2)
        .max_transparent(4)
        .peer(peers.peer("api").unwrap())
        .build()
        .unwrap()
        .layer(backend.clone());

    let error = send(&mut svc, 1).await.unwrap_err();
    assert_eq!(io_kind(&error), Some(io::ErrorKind::ConnectionRefused));
    // Past the 4 free ones, a transparent failure is retried as an ordinary one.
    assert_eq!(
        backend.count(),
        1 + 4 + 1,
        "the first attempt, 4 free transparent retries, 1 ordinary retry"
    );
    assert_eq!(
        kinds(&mut events).last(),
        Some(&EventKind::NotRetried {
            reason: NotRetriedReason::AttemptsExhausted
        })
    );

    // With no ordinary retries either, transparent ones are all there is.
    let backend = Backend::always(Fail(io::ErrorKind::ConnectionRefused));
    let mut svc = RetryLayer::builder()
        .backoff(exact())
        .max_attempts(1)
        .max_transparent(0)
        .build()
        .unwrap()
        .layer(backend.clone());
    let _ = send(&mut svc, 1).await;
    assert_eq!(backend.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn redial_unavailable_is_retried_transparently() {
    use redial::reconnect::ReconnectLayer;
    use tower::service_fn;

    // A reconnecting service that fails fast at once, over a connector that always refuses.
    let peers: Peers<Key> = Peers::new();
    let connector = service_fn(|_: ()| async {
        Err::<tower::util::BoxService<u32, String, BoxError>, _>(io::Error::from(
            io::ErrorKind::ConnectionRefused,
        ))
    });
    let reconnect = ReconnectLayer::builder(peers.peer("db").unwrap(), ())
        .fail_fast(Some(Duration::ZERO))
        .build()
        .unwrap()
        .layer(connector);
    let mut svc = RetryLayer::builder()
        .max_transparent(2)
        .build()
        .unwrap()
        .layer(tower::util::BoxCloneService::new(
            reconnect.map_err(BoxError::from),
        ));
    let error = send(&mut svc, 1).await.unwrap_err();
    assert!(error.is::<redial::reconnect::Unavailable>(), "got {error}");
}

/// Retry over a `ReconnectLayer` recording into the same peer, every call failing: with
/// `record_errors(false)` each failed attempt is one failure, not two; redial's own fail-fast
/// errors are never counted by the retry layer.
#[tokio::test(start_paused = true)]
async fn over_a_reconnect_layer_on_the_same_peer_errors_are_counted_once() {
    use redial::reconnect::ReconnectLayer;
    use redial::retry::classify_fn;
    use tower::service_fn;

    let peers: Peers<Key> = Peers::new();
    let peer = peers.peer("db").unwrap();
    let connector = service_fn(|_: ()| async {
        let connection =
            service_fn(|_: u32| async { Err::<String, _>(io::Error::other("internal error")) });
        Ok::<_, io::Error>(connection)
    });
    let reconnect = ReconnectLayer::builder(peer.clone(), ())
        .build()
        .unwrap()
        .layer(connector);
    let retry_everything = classify_fn(
        |_: &u32, outcome: &Result<String, BoxError>| match outcome {
            Ok(_) => Decision::DontRetry,
            Err(_) => Decision::retry("error"),
        },
    );
    let mut svc = RetryLayer::builder()
        .classifier(retry_everything)
        .backoff(exact())
        .max_attempts(3)
        .record_errors(false)
        .peer(peer.clone())
        .build()
        .unwrap()
        .layer(reconnect);
    let _ = send(&mut svc, 1).await.unwrap_err();
    let snapshot = peers.snapshot("db").unwrap();
    assert_eq!((snapshot.failures, snapshot.retries), (3, 2));
}

#[tokio::test(start_paused = true)]
async fn redial_fail_fast_errors_are_not_counted_as_failures_by_the_retry_layer() {
    let peers: Peers<Key> = Peers::new();
    // A reconnect service that fails fast at once on a refusing connector.
    use redial::reconnect::ReconnectLayer;
    let connector = tower::service_fn(|_: ()| async {
        Err::<tower::util::BoxService<u32, String, BoxError>, _>(io::Error::from(
            io::ErrorKind::ConnectionRefused,
        ))
    });
    let peer = peers.peer("db").unwrap();
    let reconnect = ReconnectLayer::builder(peer.clone(), ())
        .fail_fast(Some(Duration::ZERO))
        .build()
        .unwrap()
        .layer(connector);
    let mut svc = RetryLayer::builder()
        .backoff(exact())
        .max_transparent(3)
        .max_attempts(1)
        .peer(peer)
        .build()
        .unwrap()
        .layer(tower::util::BoxCloneService::new(
            reconnect.map_err(BoxError::from),
        ));
    let error = send(&mut svc, 1).await.unwrap_err();
    assert!(error.is::<redial::reconnect::Unavailable>(), "got {error}");
    let snapshot = peers.snapshot("db").unwrap();
    assert_eq!(snapshot.retries, 3);
    assert_eq!(
        snapshot.failures, snapshot.attempts,
        "only the connect attempts failed; the fail-fast calls are not failures"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Server hints
// ---------------------------------------------------------------------------------------------

/// Retries `busy` replies with the server's hint, taken from the reply: "busy <ms>".
fn hinting(_: &u32, outcome: &Result<String, BoxError>) -> Decision {
    match outcome {
        Ok(reply) => match reply.strip_prefix("busy ") {
            Some(ms) => Decision::Retry {
                reason: "busy",
                after: ms.parse().ok().map(Duration::from_millis),
            },
            None => Decision::DontRetry,
        },
        Err(_) => Decision::DontRetry,
    }
}

struct Hinting;

impl Classify<u32, String, BoxError> for Hinting {
    fn classify(&self, request: &u32, outcome: &Result<String, BoxError>) -> Decision {
        hinting(request, outcome)
    }
}

impl Replay<u32> for Hinting {
    fn replay(&self, request: &u32) -> Option<u32> {
        Some(*request)
    }
}

/// A backend that answers "busy <hint>" once, then "done"; and the instants of its calls.
#[allow(clippy::type_complexity)]
fn busy_once(
    hint: &'static str,
) -> (
    impl Service<u32, Response = String, Error = io::Error, Future: Send> + Clone,
    Arc<Mutex<Vec<Instant>>>,
) {
    let calls = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let log = Arc::clone(&calls);
    let svc = tower::service_fn(move |_: u32| {
        let mut log = log.lock().unwrap();
        log.push(Instant::now());
        let first = log.len() == 1;
        async move {
            Ok::<_, io::Error>(if first {
                format!("busy {hint}")
            } else {
                "done".into()
            })
        }
    });
    (svc, calls)
}

/// The delay between the two calls of `busy_once(hint)` through a layer with a 100 ms..2 s
/// schedule.
async fn hinted_delay(hint: &'static str) -> Duration {
    let backoff = Backoff::builder()
        .initial(100 * MS)
        .max(2 * SEC)
        .jitter(Jitter::None)
        .build()
        .unwrap();
    let (backend, log) = busy_once(hint);
    let mut svc = RetryLayer::builder()
        .classifier(Hinting)
        .backoff(backoff)
        .build()
        .unwrap()
        .layer(backend);
    assert_eq!(
        timeout(60 * SEC, async { svc.ready().await?.call(1).await })
            .await
            .unwrap()
            .unwrap(),
        "done"
    );
    let calls = log.lock().unwrap();
    assert_eq!(calls.len(), 2);
    calls[1] - calls[0]
}

#[tokio::test(start_paused = true)]
async fn a_server_hint_replaces_the_backoff_delay() {
    assert_eq!(hinted_delay("1000").await, SEC);
}

#[tokio::test(start_paused = true)]
async fn a_huge_hint_is_clamped_to_the_maximum() {
    assert_eq!(hinted_delay("86400000").await, 2 * SEC);
}

#[tokio::test(start_paused = true)]
async fn a_tiny_hint_is_raised_to_the_initial_delay() {
    assert_eq!(hinted_delay("0").await, 100 * MS);
}

#[tokio::test(start_paused = true)]
async fn a_malformed_hint_leaves_the_backoff_delay() {
    assert_eq!(hinted_delay("soon").await, 100 * MS);
}

// ---------------------------------------------------------------------------------------------
// 6. The budget
// ---------------------------------------------------------------------------------------------

/// Requests sent one after the other through fresh clones of one service, each failing
/// every attempt. Returns (attempts seen by the backend, virtual seconds it took).
async fn always_failing_load(requests: u32) -> (usize, f64, u64) {
    let backend = Backend::always(Fail(io::ErrorKind::ConnectionReset));
    let peers: Peers<Key> = Peers::new();
    let peer = peers.peer("api").unwrap();
    let layer = RetryLayer::builder()
        .backoff(one_ms())
        .max_attempts(3)
        .peer(peer)
        .build()
        .unwrap();
    let svc = layer.layer(backend.clone());
    let start = Instant::now();
    for n in 0..requests {
        // A fresh clone per request: the budget must be shared by clones.
        let mut clone = svc.clone();
        let error = send(&mut clone, n).await.unwrap_err();
        assert_eq!(io_kind(&error), Some(io::ErrorKind::ConnectionReset));
    }
    let refused = peers.stats().budget_exhausted;
    (
        backend.count(),
        (Instant::now() - start).as_secs_f64(),
        refused,
    )
}

#[tokio::test(start_paused = true)]
async fn the_budget_bounds_retries_to_a_fifth_of_requests_plus_the_reserve() {
    const REQUESTS: u32 = 10_000;
    let (attempts, secs, refused) = always_failing_load(REQUESTS).await;
    // 10 per second of reserve, over a 10 s window that slides along the run.
    let allowance = 10.0 * (secs + 10.0);
    let bound = 1.2 * f64::from(REQUESTS) + allowance;
    println!("attempts {attempts} in {secs:.2} s (bound {bound:.0}), refused {refused}");
    assert!(
        (attempts as f64) <= bound,
        "{attempts} attempts for {REQUESTS} requests exceeds {bound}"
    );
    assert!(
        attempts > REQUESTS as usize + 1_000,
        "retries were made while the budget lasted ({attempts})"
    );
    assert!(refused > 0, "the refusals were counted");
}

#[tokio::test(start_paused = true)]
async fn services_of_one_layer_share_its_budget() {
    let budget = Budget::builder()
        .ratio(0.0)
        .min_per_second(1)
        .build()
        .unwrap();
    let layer = RetryLayer::builder()
        .backoff(one_ms())
        .max_attempts(10)
        .budget(budget.clone())
        .build()
        .unwrap();
    let a = Backend::always(Fail(io::ErrorKind::ConnectionReset));
    let b = Backend::always(Fail(io::ErrorKind::ConnectionReset));
    let mut first = layer.layer(a.clone());
    let mut second = layer.layer(b.clone());
    // A reserve of 1/s over 10 s: 10 retries in all, whoever takes them.
    let _ = send(&mut first, 1).await;
    let _ = send(&mut second, 2).await;
    assert_eq!(a.count() + b.count(), 2 + 10);
    assert_eq!(budget.remaining(), 0);
}

/// A request to a named peer, for per-peer budgets.
#[derive(Clone, Debug)]
struct To(&'static str);

#[tokio::test(start_paused = true)]
async fn per_peer_budgets_keep_a_failing_peer_from_spending_the_others_retries() {
    use redial::retry::ByRequest;
    use tower::service_fn;

    let peers: Peers<Key> = Peers::new();
    let calls = Arc::new(Mutex::new(Vec::<Key>::new()));
    let log = Arc::clone(&calls);
    // "bad" always resets; "good" resets its first attempt of every request, then answers.
    let backend = service_fn(move |To(peer): To| {
        let mut log = log.lock().unwrap();
        log.push(peer);
        let good_retry = peer == "good" && log.iter().filter(|p| **p == "good").count() % 2 == 0;
        async move {
            if good_retry {
                Ok(peer.to_string())
            } else {
                Err(io::Error::from(io::ErrorKind::ConnectionReset))
            }
        }
    });
    let by_peer = ByRequest::new(peers.clone(), |r: &To| Some(r.0))
        .budget_per_peer(Budget::builder().ratio(0.0).min_per_second(1))
        .unwrap();
    let svc = RetryLayer::builder()
        .backoff(one_ms())
        .max_attempts(100)
        .track(by_peer)
        .build()
        .unwrap()
        .layer(backend);

    // "bad" spends its own 10 retries...
    let _ = svc.clone().oneshot(To("bad")).await;
    // ...and "good" still has all of its own.
    for _ in 0..5 {
        assert_eq!(svc.clone().oneshot(To("good")).await.unwrap(), "good");
    }
    let calls = calls.lock().unwrap();
    assert_eq!(calls.iter().filter(|p| **p == "bad").count(), 11);
    assert_eq!(calls.iter().filter(|p| **p == "good").count(), 10);
    assert_eq!(peers.snapshot("bad").unwrap().retries, 10);
    assert_eq!(peers.snapshot("good").unwrap().retries, 5);
}

#[test]
fn a_bad_per_peer_budget_is_refused_at_construction() {
    let peers: Peers<Key> = Peers::new();
    let error = redial::retry::ByRequest::new(peers, |r: &To| Some(r.0))
        .budget_per_peer(Budget::builder().ratio(f64::NAN))
        .err()
        .unwrap();
    assert_eq!(error.field(), "ratio");
}

#[tokio::test(start_paused = true)]
async fn an_empty_budget_emits_an_event_and_returns_the_last_error() {
    let budget = Budget::builder()
        .ratio(0.0)
        .min_per_second(0)
        .build()
        .unwrap();
    let peers: Peers<Key> = Peers::new();
    let mut events = peers.subscribe();
    let backend = Backend::always(Fail(io::ErrorKind::ConnectionReset));
    let mut svc = RetryLayer::builder()
        .budget(budget)
        .peer(peers.peer("api").unwrap())
        .build()
        .unwrap()
        .layer(backend.clone());
    let error = send(&mut svc, 1).await.unwrap_err();
    assert_eq!(io_kind(&error), Some(io::ErrorKind::ConnectionReset));
    assert_eq!(backend.count(), 1);
    assert_eq!(kinds(&mut events), [EventKind::BudgetExhausted]);
    assert_eq!(peers.stats().budget_exhausted, 1);
}

#[tokio::test(start_paused = true)]
async fn the_budget_refills_as_the_window_slides() {
    let budget = Budget::builder()
        .ratio(0.0)
        .min_per_second(1)
        .window(10 * SEC)
        .build()
        .unwrap();
    // A reserve of 10 in any 10 s: 5 at 0 s, 5 at 5 s, none left until the first 5 age out.
    for _ in 0..5 {
        assert!(budget.withdraw());
    }
    sleep(5 * SEC).await;
    for _ in 0..5 {
        assert!(budget.withdraw());
    }
    assert!(!budget.withdraw());
    sleep(4 * SEC).await;
    assert_eq!(budget.remaining(), 0, "at 9 s the first five still count");
    sleep(SEC).await;
    assert_eq!(budget.remaining(), 5, "at 10 s they fell out of the window");
    sleep(10 * SEC).await;
    assert_eq!(budget.remaining(), 10);
}

#[test]
fn budget_settings_are_validated() {
    let field = |e: ConfigError| (e.field(), e.kind());
    assert_eq!(
        field(Budget::builder().ratio(f64::NAN).build().unwrap_err()),
        ("ratio", ConfigErrorKind::NotFinite)
    );
    assert_eq!(
        field(Budget::builder().ratio(-0.1).build().unwrap_err()),
        ("ratio", ConfigErrorKind::TooSmall)
    );
    assert_eq!(
        field(Budget::builder().ratio(11.0).build().unwrap_err()),
        ("ratio", ConfigErrorKind::TooLarge)
    );
    assert_eq!(
        field(Budget::builder().window(MS).build().unwrap_err()),
        ("window", ConfigErrorKind::TooSmall)
    );
}

// ---------------------------------------------------------------------------------------------
// 7. Configuration
// ---------------------------------------------------------------------------------------------

#[test]
fn retry_settings_are_validated() {
    use redial::retry::RetryBuilder;
    type Change = fn(RetryBuilder) -> RetryBuilder;
    let cases: [(Change, &str, ConfigErrorKind); 5] = [
        (|b| b.max_attempts(0), "max_attempts", ConfigErrorKind::Zero),
        (
            |b| b.max_attempts(101),
            "max_attempts",
            ConfigErrorKind::TooLarge,
        ),
        (
            |b| b.max_transparent(101),
            "max_transparent",
            ConfigErrorKind::TooLarge,
        ),
        (
            |b| b.deadline(Duration::ZERO),
            "deadline",
            ConfigErrorKind::Zero,
        ),
        (
            |b| b.attempt_timeout(Duration::ZERO),
            "attempt_timeout",
            ConfigErrorKind::Zero,
        ),
    ];
    for (change, field, kind) in cases {
        let error: ConfigError = change(RetryLayer::builder()).build().unwrap_err();
        assert_eq!((error.field(), error.kind()), (field, kind), "{error}");
    }
    let e = RetryLayer::builder().max_attempts(0).build().unwrap_err();
    assert!(e.to_string().contains("use 1 for no retries"), "{e}");
    RetryLayer::builder()
        .build()
        .expect("the defaults are valid");
}

#[tokio::test(start_paused = true)]
async fn max_attempts_of_one_sends_once() {
    let backend = Backend::always(Fail(io::ErrorKind::ConnectionReset));
    let mut svc = RetryLayer::builder()
        .max_attempts(1)
        .build()
        .unwrap()
        .layer(backend.clone());
    let _ = send(&mut svc, 1).await;
    assert_eq!(backend.count(), 1);
}

// ---------------------------------------------------------------------------------------------
// 8. Requests that cannot be replayed
// ---------------------------------------------------------------------------------------------

/// Replays a request only while it is below 10.
struct SmallOnly;

impl Classify<u32, String, BoxError> for SmallOnly {
    fn classify(&self, request: &u32, outcome: &Result<String, BoxError>) -> Decision {
        DefaultClassifier.classify(request, outcome)
    }
}

impl Replay<u32> for SmallOnly {
    fn replay(&self, request: &u32) -> Option<u32> {
        (*request < 10).then_some(*request)
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_that_cannot_be_copied_is_sent_once() {
    let backend = Backend::always(Fail(io::ErrorKind::ConnectionReset));
    let mut svc = RetryLayer::builder()
        .classifier(SmallOnly)
        .build()
        .unwrap()
        .layer(backend.clone());
    let _ = send(&mut svc, 12).await;
    assert_eq!(backend.count(), 1);
    let _ = send(&mut svc, 3).await;
    assert_eq!(backend.count(), 1 + 3);
}

// ---------------------------------------------------------------------------------------------
// 9. Dropping and the tower contract
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn dropping_the_future_drops_the_attempt_in_flight() {
    let backend = Backend::always(Hang);
    let mut svc = RetryLayer::new().layer(backend.clone());
    svc.ready().await.unwrap();
    let mut call = Box::pin(svc.call(1));
    assert!(poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx).is_pending())).await);
    assert_eq!(backend.in_flight(), 1);
    drop(call);
    assert_eq!(backend.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_clone_of_a_ready_service_is_not_ready() {
    let backend = Backend::always(Answer);
    let mut svc = RetryLayer::new().layer(backend.clone());
    svc.ready().await.unwrap();
    let mut clone = svc.clone();
    // The clone must be polled itself: the strict backend would panic otherwise.
    assert_eq!(send(&mut clone, 1).await.unwrap(), "reply to 1");
    assert_eq!(svc.call(2).await.unwrap(), "reply to 2");
}

#[tokio::test(start_paused = true)]
async fn many_concurrent_requests_through_clones_all_finish() {
    let backend = Backend::new(|n| {
        if n < 10 {
            Fail(io::ErrorKind::ConnectionReset)
        } else {
            Answer
        }
    });
    let svc = RetryLayer::builder()
        .backoff(exact())
        .build()
        .unwrap()
        .layer(backend.clone());
    let mut tasks = Vec::new();
    for n in 0..50 {
        let mut clone = svc.clone();
        tasks.push(tokio::spawn(async move { send(&mut clone, n).await }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert!(backend.count() >= 50);
    assert_eq!(backend.in_flight(), 0);
}

#[test]
fn timeouts_below_the_retry_layer_are_retried() {
    // A per-attempt `tower::timeout::TimeoutLayer` under the retry layer, or under a health
    // layer whose `HealthError` carries it as its source.
    let elapsed: BoxError = Box::new(tower::timeout::error::Elapsed::new());
    assert_eq!(
        DefaultClassifier.classify(&(), &Err::<(), _>(elapsed)),
        Decision::retry("attempt timeout")
    );
}

/// A health layer's refusals sent nothing: the retry layer above, recording errors into the
/// same peer, must not count them as the peer's failures.
#[tokio::test(start_paused = true)]
async fn refusals_of_a_health_layer_below_are_not_recorded_again() {
    use redial::health::{HealthLayer, HealthPolicy};

    let peers: Peers<&'static str> = Peers::new();
    let peer = peers.peer("a").unwrap();
    let health = HealthLayer::new(peer.clone(), HealthPolicy::default());
    let inner = health.layer(tower::service_fn(|_: u32| async {
        Ok::<_, io::Error>("never".to_string())
    }));
    let mut svc = RetryLayer::builder()
        .backoff(one_ms())
        .peer(peer.clone())
        .build()
        .unwrap()
        .layer(inner);
    assert!(peer.eject(Duration::from_secs(30)));
    let error = send(&mut svc, 1).await.unwrap_err();
    assert!(error.to_string().contains("ejected"), "{error}");
    assert_eq!(peer.snapshot().failures, 0);
}

/// A balanced stack that failed fast sent nothing: retrying it is transparent.
#[tokio::test(start_paused = true)]
async fn no_healthy_peers_is_a_transparent_failure() {
    use redial::health::balance::FailFastLayer;

    let never_ready = tower::service_fn(|_: u32| async { Ok::<_, io::Error>(()) });
    let never_ready = PendingForever(never_ready);
    let mut svc = FailFastLayer::new(Duration::ZERO).layer(never_ready);
    let error = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert_eq!(
        redial::retry::classify_error(error.as_ref()),
        Decision::transparent("no healthy peers")
    );
}

/// Never ready.
struct PendingForever<S>(S);

impl<S: Service<u32>> Service<u32> for PendingForever<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        Poll::Pending
    }

    fn call(&mut self, request: u32) -> S::Future {
        self.0.call(request)
    }
}
