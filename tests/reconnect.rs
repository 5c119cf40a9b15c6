//! `ReconnectLayer` under tokio's paused clock: the exact instant of every connect attempt, no
//! attempt during backoff, connect timeouts, flapping, fail-fast, exhaustion, recovery, the
//! event stream, broken connections, single flight across services, clones, and the tower
//! contract probes of DESIGN §4.
//!
//! The mock connector ([`Dialer`]) and its connections ([`Conn`]) are strict: a clone is not
//! ready, and calling either without a `poll_ready` that returned `Ready(Ok)` on that very
//! instance panics. Every test is therefore also a probe of the tower contract.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use redial::backoff::{Backoff, Jitter};
use redial::event::{EventKind, Subscription, WaitReason};
use redial::peers::{PeerState, Peers};
use redial::reconnect::{
    BrokenConnection, Exhausted, NotReady, Reconnect, ReconnectBuilder, ReconnectLayer,
    Unavailable, is_connection_lost,
};
use redial::{ConfigError, ConfigErrorKind};
use tokio::time::{Instant, advance, sleep, sleep_until, timeout, timeout_at};
use tower::{BoxError, Layer, Service, ServiceExt};

use PeerState::*;

type Key = &'static str;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);
const PEER: Key = "db";

/// The connector's target. Not a `&'static str`: a service generic over a borrowed target
/// trips rustc's higher-ranked lifetime check when moved into `tokio::spawn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Addr;

type BoxFuture<T> = Pin<Box<dyn Future<Output = io::Result<T>> + Send>>;

// ---------------------------------------------------------------------------------------------
// The mock connector and its connections
// ---------------------------------------------------------------------------------------------

/// What the connector does with one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dial {
    /// Fails with `ConnectionRefused`.
    Refuse,
    /// Never resolves.
    Hang,
    /// Opens a connection that behaves so.
    Open(Health),
}

/// How a connection's `poll_ready` behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    /// Always ready.
    Good,
    /// Fails `poll_ready` with a reset: accepted, then dropped at once.
    ReadyErr,
    /// Never ready.
    ReadyPending,
    /// Pending (with a wake-up) on every other poll: backpressure.
    Busy,
}

use Dial::*;
use Health::*;

/// Decides attempt `n` (0-based) made at `t` since the test started.
type Plan = Box<dyn FnMut(usize, Duration) -> Dial + Send>;

struct Log {
    start: Instant,
    attempts: Mutex<Vec<Duration>>,
    plan: Mutex<Plan>,
    latency: Mutex<Duration>,
    /// The connector's own `poll_ready` pends forever while set.
    stalled: AtomicBool,
    opened: AtomicUsize,
    /// Calls that reached any connection.
    calls: AtomicUsize,
}

/// The mock connector: records the instant of every attempt and follows its plan.
struct Dialer {
    log: Arc<Log>,
    ready: bool,
}

impl Clone for Dialer {
    /// A clone is not ready, like any tower service's.
    fn clone(&self) -> Self {
        Self {
            log: Arc::clone(&self.log),
            ready: false,
        }
    }
}

impl Dialer {
    fn new(plan: impl FnMut(usize, Duration) -> Dial + Send + 'static) -> Self {
        Self {
            log: Arc::new(Log {
                start: Instant::now(),
                attempts: Mutex::new(Vec::new()),
                plan: Mutex::new(Box::new(plan)),
                latency: Mutex::new(Duration::ZERO),
                stalled: AtomicBool::new(false),
                opened: AtomicUsize::new(0),
                calls: AtomicUsize::new(0),
            }),
            ready: false,
        }
    }

    fn always(dial: Dial) -> Self {
        Self::new(move |_, _| dial)
    }

    fn plan(&self, plan: impl FnMut(usize, Duration) -> Dial + Send + 'static) {
        *self.log.plan.lock().unwrap() = Box::new(plan);
    }

    fn latency(&self, latency: Duration) {
        *self.log.latency.lock().unwrap() = latency;
    }

    fn stall(&self, stalled: bool) {
        self.log.stalled.store(stalled, Ordering::SeqCst);
    }

    /// Milliseconds since the start of every attempt so far.
    fn attempts(&self) -> Vec<u64> {
        self.log
            .attempts
            .lock()
            .unwrap()
            .iter()
            .map(|d| as_ms(*d))
            .collect()
    }

    fn calls(&self) -> usize {
        self.log.calls.load(Ordering::SeqCst)
    }

    /// Milliseconds since the test started.
    fn now(&self) -> u64 {
        as_ms(Instant::now() - self.log.start)
    }
}

fn millis(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[track_caller]
fn as_ms(d: Duration) -> u64 {
    assert_eq!(d.subsec_nanos() % 1_000_000, 0, "{d:?} is not whole ms");
    d.as_millis() as u64
}

impl Service<Addr> for Dialer {
    type Response = Conn;
    type Error = io::Error;
    type Future = BoxFuture<Conn>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.log.stalled.load(Ordering::SeqCst) {
            return Poll::Pending;
        }
        self.ready = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _target: Addr) -> Self::Future {
        assert!(self.ready, "connector called while not ready");
        self.ready = false;
        let at = Instant::now() - self.log.start;
        let n = {
            let mut attempts = self.log.attempts.lock().unwrap();
            attempts.push(at);
            attempts.len() - 1
        };
        let dial = (self.log.plan.lock().unwrap())(n, at);
        let latency = *self.log.latency.lock().unwrap();
        let log = Arc::clone(&self.log);
        Box::pin(async move {
            if !latency.is_zero() {
                sleep(latency).await;
            }
            match dial {
                Refuse => Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    "connection refused",
                )),
                Hang => std::future::pending().await,
                Open(health) => Ok(Conn {
                    id: log.opened.fetch_add(1, Ordering::SeqCst) + 1,
                    health,
                    ready: false,
                    polls: 0,
                    log,
                }),
            }
        })
    }
}

/// A mock connection. Answers `"<id>:<request>"`, except for these requests:
/// `"reset"` fails with `ConnectionReset`, `"other"` with an unclassified error, `"goaway"`
/// with an error naming GOAWAY, `"slow"` answers after one second, `"slow-reset"` fails with
/// `ConnectionReset` after two.
struct Conn {
    id: usize,
    health: Health,
    ready: bool,
    polls: usize,
    log: Arc<Log>,
}

impl Clone for Conn {
    /// A clone is not ready.
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            health: self.health,
            ready: false,
            polls: 0,
            log: Arc::clone(&self.log),
        }
    }
}

impl Service<Key> for Conn {
    type Response = String;
    type Error = io::Error;
    type Future = BoxFuture<String>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.polls += 1;
        match self.health {
            Good => {}
            ReadyErr => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "reset while idle",
                )));
            }
            ReadyPending => return Poll::Pending,
            Busy if self.polls % 2 == 1 => {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Busy => {}
        }
        self.ready = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Key) -> Self::Future {
        assert!(self.ready, "connection {} called while not ready", self.id);
        self.ready = false;
        self.log.calls.fetch_add(1, Ordering::SeqCst);
        let id = self.id;
        Box::pin(async move {
            match request {
                "reset" => Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "connection reset by peer",
                )),
                "other" => Err(io::Error::other("bad request")),
                "goaway" => Err(io::Error::other("GOAWAY received")),
                "slow-reset" => {
                    sleep(2 * SEC).await;
                    Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        "connection reset by peer",
                    ))
                }
                "slow" => {
                    sleep(SEC).await;
                    Ok(format!("{id}:slow"))
                }
                _ => Ok(format!("{id}:{request}")),
            }
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Tables, layers, driving helpers
// ---------------------------------------------------------------------------------------------

type Svc = Reconnect<Dialer, Addr, Key>;

/// 100 ms doubling to 10 s, no jitter.
fn exact() -> Backoff {
    Backoff::builder()
        .initial(100 * MS)
        .multiplier(2.0)
        .max(10 * SEC)
        .jitter(Jitter::None)
        .build()
        .unwrap()
}

fn table(backoff: Backoff) -> Peers<Key> {
    Peers::builder().backoff(backoff).seed(7).build().unwrap()
}

/// A layer for `PEER` that waits as long as it takes (no fail-fast) and does not stagger;
/// tests set what they exercise.
fn builder(peers: &Peers<Key>) -> ReconnectBuilder<Addr, Key> {
    ReconnectLayer::builder(peers.add_static(PEER).unwrap(), Addr)
        .fail_fast(None)
        .stagger(Duration::ZERO)
}

fn service(peers: &Peers<Key>, dialer: &Dialer) -> Svc {
    builder(peers).build().unwrap().layer(dialer.clone())
}

/// One `poll_ready`, with the test task's waker.
async fn poll_once(svc: &mut Svc) -> Poll<Result<(), BoxError>> {
    poll_fn(|cx| Poll::Ready(Service::<Key>::poll_ready(svc, cx))).await
}

/// Waits for `svc` to turn ready until `ms` after `start`; `None` if it did not.
async fn ready_by(svc: &mut Svc, start: Instant, ms: u64) -> Option<Result<(), BoxError>> {
    timeout_at(start + millis(ms), ServiceExt::<Key>::ready(svc))
        .await
        .ok()
        .map(|r| r.map(drop))
}

/// Longer than any scenario here needs: a broken service fails a test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(60);

async fn ready(svc: &mut Svc) {
    timeout(PATIENCE, ServiceExt::<Key>::ready(svc))
        .await
        .expect("not ready within a minute")
        .expect("Reconnect::poll_ready never fails");
}

/// Polls ready, then calls.
async fn request(svc: &mut Svc, request: Key) -> Result<String, BoxError> {
    timeout(PATIENCE, ServiceExt::<Key>::ready(svc))
        .await
        .expect("not ready within a minute")?
        .call(request)
        .await
}

/// What a caller saw at one poll.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Pending,
    Reply(String),
    Unavailable,
    Exhausted,
    Error(String),
}

/// Every `step_ms` until `until_ms` after `start`: one `poll_ready`, and a call if ready.
/// Returns the milliseconds and what was seen.
async fn poll_every(
    svc: &mut Svc,
    start: Instant,
    step_ms: u64,
    until_ms: u64,
) -> Vec<(u64, Seen)> {
    let mut seen = Vec::new();
    loop {
        let now = as_ms(Instant::now() - start);
        let outcome = match poll_once(svc).await {
            Poll::Pending => Seen::Pending,
            Poll::Ready(Err(e)) => Seen::Error(format!("poll_ready: {e}")),
            Poll::Ready(Ok(())) => match svc.call("hi").await {
                Ok(reply) => Seen::Reply(reply),
                Err(e) if e.is::<Unavailable>() => Seen::Unavailable,
                Err(e) if e.is::<Exhausted>() => Seen::Exhausted,
                Err(e) => Seen::Error(e.to_string()),
            },
        };
        seen.push((now, outcome));
        if now + step_ms > until_ms {
            return seen;
        }
        sleep_until(start + millis(now + step_ms)).await;
    }
}

/// Every event waiting in `events`, as (ms since `start`, kind).
fn timeline(events: &mut Subscription<Key>, start: Instant) -> Vec<(u64, EventKind)> {
    let mut out = Vec::new();
    while let Some(e) = events.try_recv().unwrap() {
        out.push((as_ms(e.at - start), e.kind));
    }
    out
}

fn kinds(events: &mut Subscription<Key>) -> Vec<EventKind> {
    let mut out = Vec::new();
    while let Some(e) = events.try_recv().unwrap() {
        out.push(e.kind);
    }
    out
}

fn changed(from: PeerState, to: PeerState) -> EventKind {
    EventKind::StateChanged { from, to }
}

fn started(attempt: u32) -> EventKind {
    EventKind::AttemptStarted {
        attempt,
        max_attempts: None,
    }
}

fn waiting(ms: u64, reason: WaitReason) -> EventKind {
    EventKind::Waiting {
        delay: millis(ms),
        reason,
    }
}

/// The delays (ms) and reasons of every `Waiting` event waiting in `events`.
fn waits(events: &mut Subscription<Key>) -> Vec<(u64, WaitReason)> {
    kinds(events)
        .into_iter()
        .filter_map(|k| match k {
            EventKind::Waiting { delay, reason } => Some((as_ms(delay), reason)),
            _ => None,
        })
        .collect()
}

#[derive(Default)]
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl CountingWaker {
    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// One `poll_ready` with a waker that counts its wake-ups.
fn poll_counted(svc: &mut Svc, waker: &Arc<CountingWaker>) -> Poll<Result<(), BoxError>> {
    let waker = Waker::from(Arc::clone(waker));
    Service::<Key>::poll_ready(svc, &mut Context::from_waker(&waker))
}

/// Lets spawned tasks and fired timers run without moving the clock.
async fn settle() {
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
}

// ---------------------------------------------------------------------------------------------
// 1. The schedule
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn attempts_follow_the_schedule_to_the_millisecond() {
    let peers = table(exact());
    let dialer = Dialer::always(Refuse);
    let start = Instant::now();
    let mut svc = service(&peers, &dialer);

    assert!(ready_by(&mut svc, start, 3150).await.is_none());
    // Delays 100, 200, 400, 800, 1600 ms after each refusal.
    assert_eq!(dialer.attempts(), [0, 100, 300, 700, 1500, 3100]);
    let snap = peers.snapshot(PEER).unwrap();
    assert_eq!(snap.state, Backoff);
    assert_eq!((snap.attempts, snap.failures, snap.successes), (6, 6, 0));
    assert_eq!(snap.next_attempt_at, Some(start + 6300 * MS));
    assert_eq!(snap.last_error.as_deref(), Some("connection refused"));
    assert!(!svc.is_connected());
}

#[tokio::test(start_paused = true)]
async fn delays_stop_growing_at_the_cap() {
    let backoff = exact().to_builder().max(400 * MS).build().unwrap();
    let peers = table(backoff);
    let dialer = Dialer::always(Refuse);
    let start = Instant::now();
    let mut svc = service(&peers, &dialer);

    assert!(ready_by(&mut svc, start, 2000).await.is_none());
    assert_eq!(dialer.attempts(), [0, 100, 300, 700, 1100, 1500, 1900]);
}

// ---------------------------------------------------------------------------------------------
// 2. No attempt during backoff; pending with a timer, never a busy loop
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn no_attempt_while_in_backoff_and_the_timer_wakes_the_task() {
    let peers = table(exact());
    let dialer = Dialer::new(|n, _| if n == 0 { Refuse } else { Open(Good) });
    let mut svc = service(&peers, &dialer);
    let waker = Arc::new(CountingWaker::default());

    // The first poll makes the first attempt, which is refused: pending for 100 ms.
    assert!(poll_counted(&mut svc, &waker).is_pending());
    assert_eq!(dialer.attempts(), [0]);
    assert_eq!(peers.get(PEER).unwrap().state(), Backoff);

    // Polled again and again during the delay: no attempt, no wake-up.
    for _ in 0..9 {
        advance(11 * MS).await;
        assert!(poll_counted(&mut svc, &waker).is_pending());
    }
    assert_eq!(dialer.now(), 99);
    assert_eq!(dialer.attempts(), [0]);
    assert_eq!(waker.count(), 0, "woken before the delay was over");

    // The delay ends: the task is woken by the armed timer, and the next poll connects.
    advance(MS).await;
    assert_eq!(waker.count(), 1, "not woken at the end of the delay");
    assert!(matches!(
        poll_counted(&mut svc, &waker),
        Poll::Ready(Ok(()))
    ));
    assert_eq!(dialer.attempts(), [0, 100]);
    assert!(svc.is_connected());
}

#[tokio::test(start_paused = true)]
async fn a_task_waiting_for_readiness_sleeps_through_the_backoff() {
    let peers = table(exact());
    let dialer = Dialer::new(|n, _| if n < 2 { Refuse } else { Open(Good) });
    let mut svc = service(&peers, &dialer);
    let polls = Arc::new(AtomicUsize::new(0));

    let task = tokio::spawn({
        let polls = Arc::clone(&polls);
        async move {
            poll_fn(|cx| {
                polls.fetch_add(1, Ordering::SeqCst);
                Service::<Key>::poll_ready(&mut svc, cx)
            })
            .await
            .unwrap();
            svc
        }
    });
    settle().await;
    assert_eq!(polls.load(Ordering::SeqCst), 1);

    advance(99 * MS).await;
    settle().await;
    assert!(!task.is_finished());
    assert_eq!(dialer.attempts(), [0]);
    assert_eq!(polls.load(Ordering::SeqCst), 1, "polled during the delay");

    // Woken once at 100 ms: refused again, asleep for 200 ms more.
    advance(MS).await;
    settle().await;
    assert_eq!(dialer.attempts(), [0, 100]);
    assert_eq!(polls.load(Ordering::SeqCst), 2);
    advance(199 * MS).await;
    settle().await;
    assert!(!task.is_finished());
    assert_eq!(polls.load(Ordering::SeqCst), 2);

    advance(MS).await;
    settle().await;
    assert!(task.is_finished());
    assert_eq!(polls.load(Ordering::SeqCst), 3);
    assert_eq!(dialer.attempts(), [0, 100, 300]);
    let mut svc = task.await.unwrap();
    assert_eq!(svc.call("hi").await.unwrap(), "1:hi");
}

// ---------------------------------------------------------------------------------------------
// 3. Connect timeout
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_connect_timeout_is_a_failed_attempt() {
    let peers = table(exact());
    let mut events = peers.subscribe();
    let dialer = Dialer::always(Hang);
    let start = Instant::now();
    let mut svc = builder(&peers)
        .connect_timeout(SEC)
        .build()
        .unwrap()
        .layer(dialer.clone());

    // Under way until the timeout.
    assert!(ready_by(&mut svc, start, 999).await.is_none());
    assert_eq!(peers.get(PEER).unwrap().state(), Connecting);
    assert_eq!(peers.snapshot(PEER).unwrap().failures, 0);

    // Timed out at 1 s: a failure, and the peer backs off for the first delay.
    assert!(ready_by(&mut svc, start, 1050).await.is_none());
    let snap = peers.snapshot(PEER).unwrap();
    assert_eq!(snap.state, Backoff);
    assert_eq!(snap.failures, 1);
    assert_eq!(snap.next_attempt_at, Some(start + 1100 * MS));
    let error = snap.last_error.unwrap();
    assert!(error.contains("timed out after 1s"), "{error}");
    assert_eq!(
        timeline(&mut events, start),
        [
            (0, started(1)),
            (0, changed(Idle, Connecting)),
            (1000, waiting(100, WaitReason::Backoff)),
            (1000, changed(Connecting, Backoff)),
        ]
    );

    // Each attempt takes the whole timeout, then waits the growing delay.
    assert!(ready_by(&mut svc, start, 4000).await.is_none());
    assert_eq!(dialer.attempts(), [0, 1100, 2300, 3700]);
    assert_eq!(peers.snapshot(PEER).unwrap().failures, 3);
}

// ---------------------------------------------------------------------------------------------
// 4. Flapping does not reset the backoff; proof does
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn connections_dropped_at_once_keep_the_schedule_growing() {
    let peers = table(exact());
    let mut events = peers.subscribe();
    let dialer = Dialer::always(Open(ReadyErr));
    let start = Instant::now();
    let mut svc = service(&peers, &dialer);

    assert!(ready_by(&mut svc, start, 2000).await.is_none());
    // Every attempt connects, and every connection is gone at its first poll.
    assert_eq!(dialer.attempts(), [0, 100, 300, 700, 1500]);
    assert_eq!(dialer.calls(), 0);
    assert_eq!(
        waits(&mut events),
        [100, 200, 400, 800, 1600].map(|ms| (ms, WaitReason::Flapping))
    );
    let snap = peers.snapshot(PEER).unwrap();
    assert_eq!(snap.state, Backoff);
    assert_eq!(snap.open_connections, 0);
    assert_eq!(snap.last_error.as_deref(), Some("reset while idle"));
}

#[tokio::test(start_paused = true)]
async fn a_call_error_that_breaks_an_unproven_connection_is_flapping_too() {
    let peers = table(exact());
    let mut events = peers.subscribe();
    let dialer = Dialer::always(Open(Good));
    let start = Instant::now();
    let mut svc = service(&peers, &dialer);

    // Connect, call, reset, four times: no response ever proves the peer.
    for expected in [0, 100, 300, 700] {
        ready(&mut svc).await;
        assert_eq!(dialer.now(), expected);
        let error = svc.call("reset").await.unwrap_err();
        assert!(is_connection_lost(&*error));
    }
    assert!(ready_by(&mut svc, start, 1400).await.is_none());
    assert_eq!(dialer.attempts(), [0, 100, 300, 700]);
    assert_eq!(
        waits(&mut events),
        [100, 200, 400, 800].map(|ms| (ms, WaitReason::Flapping))
    );
}

#[tokio::test(start_paused = true)]
async fn a_successful_response_resets_the_schedule() {
    let peers = table(exact());
    let mut events = peers.subscribe();
    // Four flapping connections, a good one, then refusals.
    let dialer = Dialer::new(|n, _| match n {
        0..=3 => Open(ReadyErr),
        4 => Open(Good),
        _ => Refuse,
    });
    let start = Instant::now();
    let mut svc = service(&peers, &dialer);

    assert_eq!(request(&mut svc, "hi").await.unwrap(), "5:hi");
    assert_eq!(dialer.now(), 1500);
    assert_eq!(peers.snapshot(PEER).unwrap().backoff_step, 0);
    // The connection breaks after having answered: reconnect at once, and the next refusal
    // waits the first delay again, not 1600 ms.
    assert!(request(&mut svc, "reset").await.is_err());
    assert!(ready_by(&mut svc, start, 1700).await.is_none());
    assert_eq!(dialer.attempts(), [0, 100, 300, 700, 1500, 1500, 1600]);
    assert_eq!(
        waits(&mut events),
        [
            (100, WaitReason::Flapping),
            (200, WaitReason::Flapping),
            (400, WaitReason::Flapping),
            (800, WaitReason::Flapping),
            (100, WaitReason::Backoff),
            (200, WaitReason::Backoff),
        ]
    );
}

/// Two flapping connections (delays 100, 200), a good one at 300 ms polled ready until
/// `break_at`, broken there by a call error; then refusals. Returns the attempt instants by
/// 1450 ms and the wait events.
async fn stable_after_run(break_at: u64) -> (Vec<u64>, Vec<(u64, WaitReason)>) {
    let peers = table(exact());
    let mut events = peers.subscribe();
    let dialer = Dialer::new(|n, _| match n {
        0 | 1 => Open(ReadyErr),
        2 => Open(Good),
        _ => Refuse,
    });
    let start = Instant::now();
    let mut svc = builder(&peers)
        .stable_after(SEC)
        .build()
        .unwrap()
        .layer(dialer.clone());

    ready(&mut svc).await;
    assert_eq!(dialer.now(), 300);
    sleep_until(start + millis(break_at)).await;
    assert_eq!(
        request(&mut svc, "reset").await.unwrap_err().to_string(),
        "connection reset by peer"
    );
    assert!(ready_by(&mut svc, start, 1450).await.is_none());
    (dialer.attempts(), waits(&mut events))
}

#[tokio::test(start_paused = true)]
async fn a_connection_up_for_stable_after_resets_the_schedule() {
    // Up from 300 to 1300 ms: stable, so the schedule starts over.
    let (attempts, waits) = stable_after_run(1300).await;
    assert_eq!(attempts, [0, 100, 300, 1300, 1400]);
    assert_eq!(
        waits,
        [
            (100, WaitReason::Flapping),
            (200, WaitReason::Flapping),
            (100, WaitReason::Backoff),
            (200, WaitReason::Backoff),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_breaks_before_stable_after_is_flapping() {
    // Up from 300 to 800 ms: not long enough; the schedule goes on growing.
    let (attempts, waits) = stable_after_run(800).await;
    assert_eq!(attempts, [0, 100, 300, 1200]);
    assert_eq!(
        waits,
        [
            (100, WaitReason::Flapping),
            (200, WaitReason::Flapping),
            (400, WaitReason::Flapping),
            (800, WaitReason::Backoff),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn uptime_counts_until_the_call_that_found_the_connection_broken() {
    let peers = table(exact());
    let mut events = peers.subscribe();
    let dialer = Dialer::new(|n, _| match n {
        0 | 1 => Open(ReadyErr),
        2 => Open(Good),
        _ => Refuse,
    });
    let start = Instant::now();
    let mut svc = builder(&peers)
        .stable_after(SEC)
        .build()
        .unwrap()
        .layer(dialer.clone());

    // Connected at 300 ms and polled once; the only request on it fails with a reset at
    // 2300 ms: the connection stayed up 2 s, past stable_after, though nobody polled meanwhile.
    assert!(request(&mut svc, "slow-reset").await.is_err());
    assert_eq!(dialer.now(), 2300);
    assert!(ready_by(&mut svc, start, 2450).await.is_none());
    assert_eq!(dialer.attempts(), [0, 100, 300, 2300, 2400]);
    assert_eq!(
        waits(&mut events),
        [
            (100, WaitReason::Flapping),
            (200, WaitReason::Flapping),
            (100, WaitReason::Backoff),
            (200, WaitReason::Backoff),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Fail fast
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn after_the_fail_fast_window_calls_fail_at_once_while_reconnecting_goes_on() {
    let peers = table(exact());
    let dialer = Dialer::always(Refuse);
    let start = Instant::now();
    let mut svc = builder(&peers)
        .fail_fast(Some(3 * SEC))
        .build()
        .unwrap()
        .layer(dialer.clone());

    assert!(ready_by(&mut svc, start, 2999).await.is_none());
    // Ready at exactly 3 s of unavailability.
    ready(&mut svc).await;
    assert_eq!(dialer.now(), 3000);

    let before = Instant::now();
    let error = svc.call("hi").await.unwrap_err();
    assert_eq!(Instant::now(), before, "a fail-fast call must not wait");
    let unavailable = error
        .downcast_ref::<Unavailable>()
        .expect("fails with Unavailable");
    assert_eq!(unavailable.peer(), "\"db\"");
    assert_eq!(unavailable.down_for(), 3 * SEC);
    assert_eq!(unavailable.last_error(), Some("connection refused"));
    assert_eq!(unavailable.next_attempt_in(), Some(100 * MS));
    let text = unavailable.to_string();
    assert!(
        text.contains("failing fast")
            && text.contains("connection refused")
            && text.contains("100ms"),
        "{text}"
    );
    assert_eq!(dialer.calls(), 0);

    // A caller that keeps polling keeps the schedule going; every call fails at once.
    let seen = poll_every(&mut svc, start, 100, 6200).await;
    assert!(
        seen.iter().all(|(_, s)| *s == Seen::Unavailable),
        "{seen:?}"
    );
    assert_eq!(dialer.attempts(), [0, 100, 300, 700, 1500, 3100]);

    // The peer comes back: the next attempt on the schedule connects and calls go through.
    dialer.plan(|_, _| Open(Good));
    let seen = poll_every(&mut svc, start, 100, 6400).await;
    assert_eq!(
        seen,
        [
            (6200, Seen::Unavailable),
            (6300, Seen::Reply("1:hi".into())),
            (6400, Seen::Reply("1:hi".into())),
        ]
    );
    assert_eq!(dialer.attempts(), [0, 100, 300, 700, 1500, 3100, 6300]);

    // The fail-fast clock starts over with the next outage.
    dialer.plan(|_, _| Refuse);
    assert!(request(&mut svc, "reset").await.is_err());
    let t = dialer.now();
    let seen = poll_every(&mut svc, start, 100, t + 3000).await;
    let first_unavailable = seen
        .iter()
        .find(|(_, s)| *s == Seen::Unavailable)
        .unwrap()
        .0;
    assert_eq!(first_unavailable, t + 3000);
}

#[tokio::test(start_paused = true)]
async fn without_fail_fast_the_service_stays_pending() {
    let peers = table(exact());
    let dialer = Dialer::always(Refuse);
    let start = Instant::now();
    let mut svc = service(&peers, &dialer);

    assert!(timeout(10 * SEC, ready(&mut svc)).await.is_err());
    assert_eq!(dialer.attempts(), [0, 100, 300, 700, 1500, 3100, 6300]);
    assert!(Instant::now() - start >= 10 * SEC);
}

#[tokio::test(start_paused = true)]
async fn fail_fast_during_a_hanging_attempt_has_no_next_attempt_time() {
    let peers = table(exact());
    let dialer = Dialer::always(Hang);
    let mut svc = builder(&peers)
        .fail_fast(Some(3 * SEC))
        .connect_timeout(10 * SEC)
        .build()
        .unwrap()
        .layer(dialer.clone());

    ready(&mut svc).await;
    assert_eq!(dialer.now(), 3000);
    let error = svc.call("hi").await.unwrap_err();
    let unavailable = error.downcast_ref::<Unavailable>().unwrap();
    assert_eq!(unavailable.next_attempt_in(), None);
    assert_eq!(unavailable.last_error(), None);
    assert_eq!(peers.get(PEER).unwrap().state(), Connecting);
}

// ---------------------------------------------------------------------------------------------
// 6. Exhaustion
// ---------------------------------------------------------------------------------------------

fn limited(attempts: u32) -> Backoff {
    exact().to_builder().max_attempts(attempts).build().unwrap()
}

#[tokio::test(start_paused = true)]
async fn exhausted_attempts_fail_calls_until_the_service_resets() {
    let peers = table(limited(3));
    let mut events = peers.subscribe();
    let dialer = Dialer::always(Refuse);
    let start = Instant::now();
    let mut svc = service(&peers, &dialer);

    // The third refusal exhausts the policy: ready at once to fail calls, even without
    // fail-fast.
    ready(&mut svc).await;
    assert_eq!(dialer.now(), 300);
    let error = svc.call("hi").await.unwrap_err();
    let exhausted = error
        .downcast_ref::<Exhausted>()
        .expect("fails with Exhausted");
    assert_eq!(exhausted.peer(), "\"db\"");
    assert_eq!(exhausted.last_error(), Some("connection refused"));
    assert_eq!(peers.get(PEER).unwrap().state(), PeerState::Exhausted);
    let last = kinds(&mut events);
    assert_eq!(
        &last[last.len() - 2..],
        [
            EventKind::Exhausted {
                attempts: 3,
                error: Some("connection refused".into())
            },
            changed(Connecting, PeerState::Exhausted),
        ]
    );

    // No more attempts, however long and often it is polled.
    let seen = poll_every(&mut svc, start, 500, 10_300).await;
    assert!(seen.iter().all(|(_, s)| *s == Seen::Exhausted), "{seen:?}");
    assert_eq!(dialer.attempts(), [0, 100, 300]);

    // A reset allows attempts again; the peer is back.
    dialer.plan(|_, _| Open(Good));
    svc.reset();
    assert_eq!(peers.get(PEER).unwrap().state(), Idle);
    assert_eq!(request(&mut svc, "hi").await.unwrap(), "1:hi");
    assert_eq!(dialer.attempts(), [0, 100, 300, 10_300]);
    assert_eq!(peers.get(PEER).unwrap().state(), Connected);
}

#[tokio::test(start_paused = true)]
async fn the_peer_handle_reset_ends_exhaustion_for_every_service() {
    let peers = table(limited(2));
    let dialer = Dialer::always(Refuse);
    let mut first = service(&peers, &dialer);
    let mut second = service(&peers, &dialer);

    ready(&mut first).await;
    assert!(first.call("hi").await.unwrap_err().is::<Exhausted>());
    // A service that never made an attempt finds the peer exhausted too.
    assert!(
        request(&mut second, "hi")
            .await
            .unwrap_err()
            .is::<Exhausted>()
    );
    assert_eq!(dialer.attempts(), [0, 100]);

    dialer.plan(|_, _| Open(Good));
    peers.get(PEER).unwrap().reset();
    assert_eq!(request(&mut second, "hi").await.unwrap(), "1:hi");
    assert_eq!(request(&mut first, "hi").await.unwrap(), "2:hi");
    assert_eq!(dialer.attempts(), [0, 100, 100, 100]);
}

#[tokio::test(start_paused = true)]
async fn an_exhausted_peer_resets_itself_after_the_cooldown() {
    let peers = table(limited(3));
    let dialer = Dialer::always(Refuse);
    let start = Instant::now();
    let mut svc = builder(&peers)
        .exhausted_cooldown(Some(SEC))
        .build()
        .unwrap()
        .layer(dialer.clone());

    let seen = poll_every(&mut svc, start, 50, 2000).await;
    // Exhausted at 300 ms, reset at 1300 ms, exhausted again at 1600 ms.
    assert_eq!(dialer.attempts(), [0, 100, 300, 1300, 1400, 1600]);
    let exhausted: Vec<u64> = seen
        .iter()
        .filter(|(_, s)| *s == Seen::Exhausted)
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(exhausted.first(), Some(&300));
    assert!(exhausted.contains(&1250) && !exhausted.contains(&1300));
    assert!(exhausted.contains(&1600) && exhausted.contains(&2000));
    assert!(
        seen.iter()
            .all(|(_, s)| matches!(s, Seen::Pending | Seen::Exhausted))
    );
    assert_eq!(peers.get(PEER).unwrap().state(), PeerState::Exhausted);

    // The peer comes back: the next cool-down connects.
    dialer.plan(|_, _| Open(Good));
    let seen = poll_every(&mut svc, start, 50, 2600).await;
    assert_eq!(seen.last(), Some(&(2600, Seen::Reply("1:hi".into()))));
    assert_eq!(dialer.attempts().last(), Some(&2600));
}

// ---------------------------------------------------------------------------------------------
// 7. Recovery
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn the_service_recovers_when_the_peer_comes_back() {
    let peers = table(exact());
    let mut events = peers.subscribe();
    let dialer = Dialer::new(|n, _| if n < 3 { Refuse } else { Open(Good) });
    let start = Instant::now();
    let mut svc = service(&peers, &dialer);

    ready(&mut svc).await;
    assert_eq!(dialer.now(), 700);
    assert!(svc.is_connected());
    assert_eq!(peers.get(PEER).unwrap().state(), Connected);
    let connected: Vec<_> = timeline(&mut events, start)
        .into_iter()
        .filter(|(_, k)| matches!(k, EventKind::Connected { .. }))
        .collect();
    assert_eq!(
        connected,
        [(
            700,
            EventKind::Connected {
                attempts: 4,
                total: 700 * MS
            }
        )]
    );

    assert_eq!(svc.call("hi").await.unwrap(), "1:hi");
    assert_eq!(request(&mut svc, "again").await.unwrap(), "1:again");
    assert_eq!(dialer.calls(), 2);
    let snap = peers.snapshot(PEER).unwrap();
    assert_eq!(snap.state, Connected);
    assert_eq!((snap.attempts, snap.failures, snap.successes), (4, 3, 2));
    assert_eq!(snap.open_connections, 1);
    // The answer proved the peer: the schedule starts over.
    assert_eq!(snap.backoff_step, 0);
    assert!(peers.health().healthy);
}

// ---------------------------------------------------------------------------------------------
// 8. States and events, one for one
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn events_match_the_transitions_one_for_one() {
    let peers = table(exact());
    let peer = peers.add_static(PEER).unwrap();
    let mut events = peers.subscribe();
    let dialer = Dialer::new(|n, _| if n < 2 { Refuse } else { Open(Good) });
    let start = Instant::now();
    let mut svc = service(&peers, &dialer);
    use WaitReason::{Backoff as B, Flapping as F};

    // Fail, fail, succeed.
    assert!(ready_by(&mut svc, start, 50).await.is_none());
    assert_eq!(peer.state(), Backoff);
    assert_eq!(
        timeline(&mut events, start),
        [
            (0, started(1)),
            (0, changed(Idle, Connecting)),
            (0, waiting(100, B)),
            (0, changed(Connecting, Backoff)),
        ]
    );
    ready(&mut svc).await;
    assert_eq!(peer.state(), Connected);
    assert_eq!(
        timeline(&mut events, start),
        [
            (100, started(2)),
            (100, changed(Backoff, Connecting)),
            (100, waiting(200, B)),
            (100, changed(Connecting, Backoff)),
            (300, started(3)),
            (300, changed(Backoff, Connecting)),
            (
                300,
                EventKind::Connected {
                    attempts: 3,
                    total: 300 * MS
                }
            ),
            (300, changed(Connecting, Connected)),
        ]
    );

    // Break before any answer: flapping, the schedule's next step.
    assert!(svc.call("reset").await.is_err());
    assert!(
        timeline(&mut events, start).is_empty(),
        "the owner reports the break"
    );
    assert!(ready_by(&mut svc, start, 350).await.is_none());
    assert_eq!(peer.state(), Backoff);
    assert_eq!(
        timeline(&mut events, start),
        [
            (
                300,
                EventKind::Disconnected {
                    error: Some("connection reset by peer".into())
                }
            ),
            (300, waiting(400, F)),
            (300, changed(Connected, Backoff)),
        ]
    );

    // Reconnect on schedule, get an answer, then close the service cleanly.
    assert_eq!(request(&mut svc, "hi").await.unwrap(), "2:hi");
    assert_eq!(peer.state(), Connected);
    drop(svc);
    assert_eq!(peer.state(), Idle);
    assert_eq!(
        timeline(&mut events, start),
        [
            (700, started(4)),
            (700, changed(Backoff, Connecting)),
            (
                700,
                EventKind::Connected {
                    attempts: 4,
                    total: 700 * MS
                }
            ),
            (700, changed(Connecting, Connected)),
            (700, EventKind::Disconnected { error: None }),
            (700, changed(Connected, Idle)),
        ]
    );
    let snap = peer.snapshot();
    assert_eq!((snap.attempts, snap.failures, snap.successes), (4, 3, 1));
    assert_eq!(snap.open_connections, 0);
}

// ---------------------------------------------------------------------------------------------
// 9. Broken connections, by the classifier
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_lost_connection_error_drops_the_connection_and_the_next_poll_reconnects() {
    let peers = table(exact());
    let dialer = Dialer::always(Open(Good));
    let mut svc = service(&peers, &dialer);

    assert_eq!(request(&mut svc, "hi").await.unwrap(), "1:hi");
    let error = request(&mut svc, "reset").await.unwrap_err();
    assert!(is_connection_lost(&*error));
    // The connection is dropped at the next poll_ready, which reconnects at once (the peer
    // had answered, so this is no flapping).
    assert!(svc.is_connected());
    assert_eq!(request(&mut svc, "hi").await.unwrap(), "2:hi");
    assert_eq!(dialer.attempts(), [0, 0]);
    let snap = peers.snapshot(PEER).unwrap();
    assert_eq!(snap.open_connections, 1);
    assert_eq!((snap.successes, snap.failures), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn other_call_errors_keep_the_connection() {
    let peers = table(exact());
    let dialer = Dialer::always(Open(Good));
    let mut svc = service(&peers, &dialer);

    assert_eq!(request(&mut svc, "hi").await.unwrap(), "1:hi");
    for _ in 0..3 {
        let error = request(&mut svc, "other").await.unwrap_err();
        assert_eq!(error.to_string(), "bad request");
    }
    assert_eq!(request(&mut svc, "hi").await.unwrap(), "1:hi");
    assert_eq!(dialer.attempts(), [0]);
    let snap = peers.snapshot(PEER).unwrap();
    assert_eq!((snap.successes, snap.failures), (2, 3));
    assert_eq!(snap.last_error.as_deref(), Some("bad request"));
    assert_eq!(snap.state, Connected);
}

#[tokio::test(start_paused = true)]
async fn a_custom_classifier_decides_what_is_broken() {
    let peers = table(exact());
    let dialer = Dialer::always(Open(Good));
    let mut svc = builder(&peers)
        .broken_connection(BrokenConnection::new(|e| e.to_string().contains("GOAWAY")))
        .build()
        .unwrap()
        .layer(dialer.clone());

    assert_eq!(request(&mut svc, "hi").await.unwrap(), "1:hi");
    // A reset is not broken to this classifier: the connection is kept.
    assert!(request(&mut svc, "reset").await.is_err());
    assert_eq!(request(&mut svc, "hi").await.unwrap(), "1:hi");
    // GOAWAY is.
    assert!(request(&mut svc, "goaway").await.is_err());
    assert_eq!(request(&mut svc, "hi").await.unwrap(), "2:hi");
    assert_eq!(dialer.attempts(), [0, 0]);
}

#[tokio::test(start_paused = true)]
async fn requests_in_flight_on_a_broken_connection_still_complete() {
    let peers = table(exact());
    let dialer = Dialer::always(Open(Good));
    let mut svc = service(&peers, &dialer);

    assert_eq!(request(&mut svc, "hi").await.unwrap(), "1:hi");
    ready(&mut svc).await;
    let slow = tokio::spawn(svc.call("slow"));
    settle().await;
    assert!(request(&mut svc, "reset").await.is_err());
    // Replaced under the slow request, at once since the peer had answered.
    assert_eq!(request(&mut svc, "hi").await.unwrap(), "2:hi");
    assert_eq!(dialer.attempts(), [0, 0]);
    assert_eq!(peers.snapshot(PEER).unwrap().open_connections, 1);
    assert_eq!(slow.await.unwrap().unwrap(), "1:slow");
    assert_eq!(dialer.now(), 1000);
}

// ---------------------------------------------------------------------------------------------
// 10. One process, one probe
// ---------------------------------------------------------------------------------------------

/// A service past its fail-fast window that follows another's successful probe waits out its
/// stagger pending: the peer is up, so failing calls with `Unavailable` meanwhile would be wrong.
#[tokio::test(start_paused = true)]
async fn a_follower_waits_out_its_stagger_instead_of_failing_fast() {
    let peers = table(exact());
    // Down until 1 s; each attempt takes 10 ms.
    let dialer = Dialer::new(|_, t| if t < SEC { Refuse } else { Open(Good) });
    dialer.latency(10 * MS);
    let layer = builder(&peers)
        .fail_fast(Some(300 * MS))
        .stagger(100 * MS)
        .build()
        .unwrap();
    let mut prober = layer.layer(dialer.clone());
    let mut follower = layer.layer(dialer.clone());
    let start = Instant::now();
    // The prober takes the first probe; the follower starts its fail-fast clock waiting on it.
    assert!(poll_once(&mut prober).await.is_pending());
    assert!(poll_once(&mut follower).await.is_pending());
    // Only the prober is driven through the outage: 0, 110, 320, 730, then 1540 connects.
    while !prober.is_connected() {
        let _ = poll_once(&mut prober).await;
        sleep(5 * MS).await;
        assert!(
            Instant::now() - start < 5 * SEC,
            "the prober never connected"
        );
    }
    assert_eq!(dialer.attempts(), [0, 110, 320, 730, 1540]);
    let connected_at = as_ms(Instant::now() - start);
    let seen = poll_every(&mut follower, start, 5, connected_at + 150).await;
    assert_eq!(seen[0].1, Seen::Pending, "the follower staggers: {seen:?}");
    assert!(
        !seen.iter().any(|(_, s)| *s == Seen::Unavailable),
        "the follower failed fast while the peer was up: {seen:?}"
    );
    assert!(follower.is_connected(), "{seen:?}");
}

#[tokio::test(start_paused = true)]
async fn twenty_services_make_one_attempt_per_step_and_follow_the_probe() {
    let peers = table(exact());
    // Each attempt takes 10 ms; the peer is down until 2 s.
    let dialer = Dialer::new(|_, t| if t < 2 * SEC { Refuse } else { Open(Good) });
    dialer.latency(10 * MS);
    let start = Instant::now();
    let stagger = 100 * MS;
    let one = builder(&peers).stagger(stagger).build().unwrap();
    let other = builder(&peers).stagger(stagger).build().unwrap();

    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let layer = if i % 2 == 0 { &one } else { &other };
            let mut svc = layer.layer(dialer.clone());
            tokio::spawn(async move {
                ready(&mut svc).await;
                let at = as_ms(Instant::now() - start);
                let reply = svc.call("hi").await.unwrap();
                // Handed back, so that the connection stays open until every task is done.
                (at, reply, svc)
            })
        })
        .collect();
    let mut connected_at = Vec::new();
    let mut replies = Vec::new();
    let mut services = Vec::new();
    for task in tasks {
        let (at, reply, svc) = task.await.unwrap();
        connected_at.push(at);
        replies.push(reply);
        services.push(svc);
    }

    let attempts = dialer.attempts();
    // One attempt per backoff step while the peer is down (each fails after 10 ms): 0, 110,
    // 320, 730, 1540; the probe at 3150 connects at 3160.
    assert_eq!(attempts[..6], [0, 110, 320, 730, 1540, 3150]);
    // Then every other service, once each, spread over the stagger.
    assert_eq!(attempts.len(), 25);
    assert!(
        attempts[6..].iter().all(|t| (3160..3260).contains(t)),
        "{attempts:?}"
    );
    let spread = attempts[6..].iter().max().unwrap() - attempts[6..].iter().min().unwrap();
    assert!(spread >= 20, "followers were not spread: {attempts:?}");
    // All 20 connected within one backoff step plus the stagger (and one connect latency).
    assert!(
        connected_at.iter().all(|t| (3160..=3270).contains(t)),
        "{connected_at:?}"
    );
    replies.sort();
    replies.dedup();
    assert_eq!(replies.len(), 20, "each service has its own connection");
    assert_eq!(peers.snapshot(PEER).unwrap().open_connections, 20);
    drop(services);
    assert_eq!(peers.get(PEER).unwrap().state(), Idle);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_service_mid_connect_releases_the_gate() {
    let peers = table(exact());
    let dialer = Dialer::new(|n, _| if n == 0 { Hang } else { Open(Good) });
    let mut first = service(&peers, &dialer);
    let mut second = service(&peers, &dialer);
    let waker = Arc::new(CountingWaker::default());

    assert!(poll_once(&mut first).await.is_pending());
    assert_eq!(peers.get(PEER).unwrap().state(), Connecting);
    // The probe is under way: the second service waits for it.
    assert!(poll_counted(&mut second, &waker).is_pending());
    assert_eq!(dialer.attempts(), [0]);

    advance(50 * MS).await;
    drop(first);
    assert_eq!(waker.count(), 1, "the waiting service was not woken");
    // Cancelled, not failed: no backoff, and the second service connects at once.
    assert_eq!(peers.get(PEER).unwrap().state(), Idle);
    assert!(matches!(
        poll_counted(&mut second, &waker),
        Poll::Ready(Ok(()))
    ));
    assert_eq!(dialer.attempts(), [0, 50]);
    assert_eq!(peers.snapshot(PEER).unwrap().failures, 0);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_connected_service_closes_its_connection() {
    let peers = table(exact());
    let dialer = Dialer::always(Open(Good));
    let mut first = service(&peers, &dialer);
    let mut second = service(&peers, &dialer);

    assert_eq!(request(&mut first, "hi").await.unwrap(), "1:hi");
    assert_eq!(request(&mut second, "hi").await.unwrap(), "2:hi");
    assert_eq!(peers.snapshot(PEER).unwrap().open_connections, 2);
    drop(first);
    let snap = peers.snapshot(PEER).unwrap();
    assert_eq!((snap.open_connections, snap.state), (1, Connected));
    drop(second);
    let snap = peers.snapshot(PEER).unwrap();
    assert_eq!((snap.open_connections, snap.state), (0, Idle));
    assert_eq!(snap.next_attempt_at, None);
}

// ---------------------------------------------------------------------------------------------
// 11. Clones
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_clone_is_not_ready_until_polled() {
    let peers = table(exact());
    let dialer = Dialer::always(Open(Good));
    let mut svc = service(&peers, &dialer);

    ready(&mut svc).await;
    let mut clone = svc.clone();
    assert!(!clone.is_connected());
    let error = clone.call("hi").await.unwrap_err();
    assert!(error.is::<NotReady>(), "{error}");
    assert_eq!(
        dialer.calls(),
        0,
        "a call on an unready clone reached a connection"
    );

    // The original's readiness is its own, and is used up by one call.
    assert_eq!(svc.call("hi").await.unwrap(), "1:hi");
    assert!(svc.call("hi").await.unwrap_err().is::<NotReady>());
    assert_eq!(dialer.calls(), 1);

    // Polled, the clone opens its own connection.
    assert_eq!(request(&mut clone, "hi").await.unwrap(), "2:hi");
    assert_eq!(dialer.attempts(), [0, 0]);
}

#[tokio::test(start_paused = true)]
async fn a_clone_shares_the_peers_schedule() {
    let peers = table(exact());
    let dialer = Dialer::new(|n, _| if n == 0 { Refuse } else { Open(Good) });
    let start = Instant::now();
    let mut svc = service(&peers, &dialer);

    assert!(ready_by(&mut svc, start, 50).await.is_none());
    let mut clone = svc.clone();
    // The clone's first poll, in the middle of the backoff: no attempt, waits until 100 ms.
    assert!(poll_once(&mut clone).await.is_pending());
    assert_eq!(dialer.attempts(), [0]);
    ready(&mut clone).await;
    assert_eq!(dialer.now(), 100);
    assert_eq!(clone.call("hi").await.unwrap(), "1:hi");
    assert_eq!(dialer.attempts(), [0, 100]);
}

// ---------------------------------------------------------------------------------------------
// 12. The tower contract (DESIGN §4)
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_strict_connection_under_backpressure_is_never_called_unready() {
    let peers = table(exact());
    let dialer = Dialer::always(Open(Busy));
    let mut svc = service(&peers, &dialer);

    for _ in 0..20 {
        assert_eq!(request(&mut svc, "hi").await.unwrap(), "1:hi");
    }
    // The connection says pending: the service is pending, and a call made anyway (breaking
    // the contract) fails instead of reaching the connection.
    assert!(poll_once(&mut svc).await.is_pending());
    assert!(svc.call("hi").await.unwrap_err().is::<NotReady>());
    let mut clone = svc.clone();
    assert!(clone.call("hi").await.unwrap_err().is::<NotReady>());
    assert_eq!(dialer.calls(), 20);
    assert_eq!(dialer.attempts(), [0]);
}

#[tokio::test(start_paused = true)]
async fn a_connection_failing_poll_ready_is_replaced_and_never_fails_the_layer() {
    let peers = table(exact());
    let dialer = Dialer::always(Open(ReadyErr));
    let start = Instant::now();
    let mut svc = service(&peers, &dialer);

    let seen = poll_every(&mut svc, start, 10, 2000).await;
    assert!(seen.iter().all(|(_, s)| *s == Seen::Pending), "{seen:?}");
    assert_eq!(dialer.attempts(), [0, 100, 300, 700, 1500]);

    dialer.plan(|_, _| Open(Good));
    assert_eq!(request(&mut svc, "hi").await.unwrap(), "6:hi");
    assert_eq!(dialer.now(), 3100);
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_never_turns_ready_is_backpressure_not_an_outage() {
    let peers = table(exact());
    let dialer = Dialer::always(Open(ReadyPending));
    let mut svc = builder(&peers)
        .fail_fast(Some(3 * SEC))
        .build()
        .unwrap()
        .layer(dialer.clone());

    assert!(timeout(10 * SEC, ready(&mut svc)).await.is_err());
    assert!(svc.is_connected());
    assert_eq!(dialer.attempts(), [0]);
    assert_eq!(peers.get(PEER).unwrap().state(), Connected);
    assert!(svc.call("hi").await.unwrap_err().is::<NotReady>());
    assert_eq!(dialer.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_connector_that_never_turns_ready_fails_fast_then_times_out() {
    let peers = table(exact());
    let dialer = Dialer::always(Open(Good));
    dialer.stall(true);
    let mut svc = builder(&peers)
        .fail_fast(Some(3 * SEC))
        .connect_timeout(10 * SEC)
        .build()
        .unwrap()
        .layer(dialer.clone());

    ready(&mut svc).await;
    assert_eq!(dialer.now(), 3000);
    assert!(svc.call("hi").await.unwrap_err().is::<Unavailable>());
    assert_eq!(peers.get(PEER).unwrap().state(), Connecting);
    assert!(dialer.attempts().is_empty());

    // At the connect timeout the attempt fails like any other.
    sleep(7 * SEC).await;
    ready(&mut svc).await;
    let error = svc.call("hi").await.unwrap_err();
    let unavailable = error.downcast_ref::<Unavailable>().unwrap();
    assert_eq!(
        unavailable.last_error(),
        Some("connect attempt timed out after 10s")
    );
    assert_eq!(unavailable.next_attempt_in(), Some(100 * MS));
    assert_eq!(peers.get(PEER).unwrap().state(), Backoff);

    // The connector unblocks: the next attempt connects.
    dialer.stall(false);
    sleep(100 * MS).await;
    assert_eq!(request(&mut svc, "hi").await.unwrap(), "1:hi");
    assert_eq!(dialer.attempts(), [10_100]);
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn the_builder_rejects_values_that_cannot_work() {
    let peers = table(exact());
    let field = |e: ConfigError| (e.field(), e.kind());
    let e = builder(&peers)
        .connect_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(field(e), ("connect_timeout", ConfigErrorKind::Zero));
    let e = builder(&peers)
        .exhausted_cooldown(Some(Duration::ZERO))
        .build()
        .unwrap_err();
    assert_eq!(field(e), ("exhausted_cooldown", ConfigErrorKind::Zero));
    // Zero is fine where it means "at once".
    assert!(
        builder(&peers)
            .stable_after(Duration::ZERO)
            .stagger(Duration::ZERO)
            .build()
            .is_ok()
    );
}
