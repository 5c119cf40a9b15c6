//! `HealthLayer` under tokio's paused clock: the exact failure that ejects a peer, ejection
//! lengths, the one probe across racing clones, restore and decay, the panic guard, shadow
//! mode, both modes (with the virtual instant a held `poll_ready` wakes at), manual overrides,
//! the success-rate trigger, and the tower contract probes of DESIGN §4.
//!
//! The mock backend is strict: a clone is not ready, and calling it without a `poll_ready` that
//! returned `Ready(Ok)` on that very instance panics, so every test is also a contract probe.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use redial::classify::{Classify, Decision};
use redial::event::{EventKind, SkipReason, Subscription};
use redial::health::{Health, HealthError, HealthLayer, HealthPolicy, HealthPolicyBuilder, Mode};
use redial::peers::{EjectionCause, Override, PeerHandle, PeerState, Peers};
use redial::retry::{DefaultClassifier, classify_error};
use tokio::time::{Instant, timeout};
use tower::{BoxError, Layer, Service, ServiceExt};

const SEC: Duration = Duration::from_secs(1);

type Key = &'static str;

// ---------------------------------------------------------------------------------------------
// The mock backend
// ---------------------------------------------------------------------------------------------

/// What the backend does with a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    Answer,
    Fail,
    /// Never answers.
    Hang,
    /// Answers after this long.
    Slow(Duration),
    /// Fails after this long.
    SlowFail(Duration),
}

/// What the backend's `poll_ready` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Readiness {
    Ready,
    Err,
    /// Pending, forever.
    Never,
}

struct State {
    reply: Mutex<Reply>,
    readiness: Mutex<Readiness>,
    calls: AtomicUsize,
    polls: AtomicUsize,
}

struct Backend {
    state: Arc<State>,
    ready: bool,
}

impl Clone for Backend {
    /// A clone is not ready until polled itself.
    fn clone(&self) -> Self {
        Self {
            state: Arc::clone(&self.state),
            ready: false,
        }
    }
}

impl Backend {
    fn new(reply: Reply) -> Self {
        Self {
            state: Arc::new(State {
                reply: Mutex::new(reply),
                readiness: Mutex::new(Readiness::Ready),
                calls: AtomicUsize::new(0),
                polls: AtomicUsize::new(0),
            }),
            ready: false,
        }
    }

    fn reply(&self, reply: Reply) {
        *self.state.reply.lock().unwrap() = reply;
    }

    fn readiness(&self, readiness: Readiness) {
        *self.state.readiness.lock().unwrap() = readiness;
    }

    fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    fn polls(&self) -> usize {
        self.state.polls.load(Ordering::SeqCst)
    }
}

impl Service<u32> for Backend {
    type Response = u32;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<u32>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.state.polls.fetch_add(1, Ordering::SeqCst);
        match *self.state.readiness.lock().unwrap() {
            Readiness::Ready => {
                self.ready = true;
                Poll::Ready(Ok(()))
            }
            Readiness::Err => Poll::Ready(Err(io::Error::other("backend closed"))),
            Readiness::Never => Poll::Pending,
        }
    }

    fn call(&mut self, request: u32) -> Self::Future {
        assert!(
            self.ready,
            "called without poll_ready returning Ready(Ok) first"
        );
        self.ready = false;
        self.state.calls.fetch_add(1, Ordering::SeqCst);
        let reply = *self.state.reply.lock().unwrap();
        Box::pin(async move {
            match reply {
                Reply::Answer => Ok(request),
                Reply::Fail => Err(io::Error::from(io::ErrorKind::ConnectionReset)),
                Reply::Hang => std::future::pending().await,
                Reply::Slow(after) => {
                    tokio::time::sleep(after).await;
                    Ok(request)
                }
                Reply::SlowFail(after) => {
                    tokio::time::sleep(after).await;
                    Err(io::Error::from(io::ErrorKind::ConnectionReset))
                }
            }
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

type Svc = Health<Backend, Key, redial::classify::ErrorsFail>;

/// No jitter, so every length is exact; the rest as given.
fn policy() -> HealthPolicyBuilder {
    HealthPolicy::builder().jitter(0.0)
}

struct Setup {
    peer: PeerHandle<Key>,
    events: Subscription<Key>,
    backend: Backend,
    service: Svc,
}

fn setup(policy: HealthPolicyBuilder) -> Setup {
    let peers: Peers<Key> = Peers::builder().seed(7).build().unwrap();
    let events = peers.subscribe();
    let peer = peers.peer("api").unwrap();
    let backend = Backend::new(Reply::Answer);
    let layer = HealthLayer::new(peer.clone(), policy.build().unwrap());
    let service = layer.layer(backend.clone());
    Setup {
        peer,
        events,
        backend,
        service,
    }
}

/// One call, readiness first. Panics after an hour of virtual time, so that a test whose
/// service never wakes fails instead of hanging.
async fn call<S: Service<u32, Response = u32, Error = HealthError>>(
    service: &mut S,
    request: u32,
) -> Result<u32, HealthError> {
    let call = async { service.ready().await?.call(request).await };
    timeout(3600 * SEC, call).await.expect("the call hung")
}

/// `poll_ready` once, with the test task's waker.
async fn poll_ready_once<S: Service<u32>>(service: &mut S) -> Poll<Result<(), S::Error>> {
    poll_fn(|cx| Poll::Ready(service.poll_ready(cx))).await
}

/// `count` failing calls; each must reach the backend.
async fn fail(s: &mut Setup, count: usize) {
    s.backend.reply(Reply::Fail);
    for _ in 0..count {
        let before = s.backend.calls();
        let error = call(&mut s.service, 0).await.unwrap_err();
        assert!(matches!(error, HealthError::Inner(_)), "{error}");
        assert_eq!(s.backend.calls(), before + 1);
    }
}

/// The health events published so far (ejections, restores, skips), in order.
fn health_events(events: &mut Subscription<Key>) -> Vec<EventKind> {
    let mut kinds = Vec::new();
    while let Some(event) = events.try_recv().unwrap() {
        if matches!(
            event.kind,
            EventKind::Ejected { .. } | EventKind::Restored | EventKind::EjectionSkipped { .. }
        ) {
            kinds.push(event.kind);
        }
    }
    kinds
}

fn ejected(secs: u64, times: u32) -> EventKind {
    EventKind::Ejected {
        duration: Some(Duration::from_secs(secs)),
        cause: EjectionCause::Outlier,
        times,
    }
}

fn skipped(reason: SkipReason) -> EventKind {
    EventKind::EjectionSkipped { reason }
}

fn rejection(result: Result<u32, HealthError>) -> redial::health::Ejected {
    match result {
        Err(HealthError::Ejected(refused)) => refused,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Tripping and ejection lengths
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn the_nth_failure_in_a_row_ejects_not_the_one_before() {
    let mut s = setup(policy().consecutive_failures(Some(5)));
    fail(&mut s, 4).await;
    assert_eq!(s.peer.state(), PeerState::Idle);
    // A success ends the run: four more failures still do not eject.
    s.backend.reply(Reply::Answer);
    assert_eq!(call(&mut s.service, 9).await.unwrap(), 9);
    fail(&mut s, 4).await;
    assert_eq!(s.peer.state(), PeerState::Idle);
    assert_eq!(health_events(&mut s.events), []);

    fail(&mut s, 1).await;
    assert_eq!(s.peer.state(), PeerState::Ejected);
    assert_eq!(health_events(&mut s.events), [ejected(30, 1)]);
    // The layer keeps its own count: the peer's general counters are the other layers'.
    let snapshot = s.peer.snapshot();
    assert_eq!((snapshot.failures, snapshot.successes), (0, 0));
    assert_eq!(snapshot.ejected_until, Some(Instant::now() + 30 * SEC));
}

#[tokio::test(start_paused = true)]
async fn ejection_lengths_follow_base_times_n_up_to_the_cap() {
    let mut s = setup(
        policy()
            .consecutive_failures(Some(1))
            .base_ejection(10 * SEC)
            .max_ejection(35 * SEC),
    );
    fail(&mut s, 1).await;
    // Every probe fails: each ejection is one base longer, until the cap.
    let mut lengths = Vec::new();
    for _ in 0..4 {
        let until = s.peer.snapshot().ejected_until.unwrap();
        tokio::time::sleep_until(until).await;
        let before = s.backend.calls();
        assert!(call(&mut s.service, 0).await.is_err());
        assert_eq!(
            s.backend.calls(),
            before + 1,
            "the probe reached the backend"
        );
        let until = s.peer.snapshot().ejected_until.unwrap();
        lengths.push((until - Instant::now()).as_secs());
    }
    assert_eq!(lengths, [20, 30, 35, 35]);
    assert_eq!(
        health_events(&mut s.events),
        [
            ejected(10, 1),
            ejected(20, 2),
            ejected(30, 3),
            ejected(35, 4),
            ejected(35, 5)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn jittered_lengths_stay_within_the_ratio_and_the_cap() {
    let peers: Peers<u64> = Peers::builder().seed(1).build().unwrap();
    let backend = Backend::new(Reply::Fail);
    let mut seen = Vec::new();
    for seed in 0..20 {
        let peer = peers.peer(seed).unwrap();
        let policy = HealthPolicy::builder()
            .consecutive_failures(Some(1))
            .base_ejection(100 * SEC)
            .max_ejection(110 * SEC)
            .jitter(0.2)
            .max_ejection_percent(100)
            .seed(seed)
            .build()
            .unwrap();
        let mut service = HealthLayer::new(peer.clone(), policy).layer(backend.clone());
        assert!(call(&mut service, 0).await.is_err());
        let length = peer.snapshot().ejected_until.unwrap() - Instant::now();
        assert!(length >= 80 * SEC && length <= 110 * SEC, "{length:?}");
        seen.push(length);
    }
    assert_eq!(peers.stats().in_state(PeerState::Ejected), 20);
    seen.sort();
    seen.dedup();
    assert!(seen.len() > 10, "the jitter varies with the seed: {seen:?}");
}

// ---------------------------------------------------------------------------------------------
// Probes, restore and decay
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn one_probe_is_admitted_across_ten_racing_clones() {
    let mut s = setup(
        policy()
            .consecutive_failures(Some(1))
            .base_ejection(10 * SEC),
    );
    fail(&mut s, 1).await;
    tokio::time::sleep(10 * SEC).await;
    s.backend.reply(Reply::Slow(SEC));
    let calls = s.backend.calls();

    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let mut clone = s.service.clone();
            // Inline, not through `call`: a generic helper over a service keyed by a
            // `&'static str` trips rustc's higher-ranked lifetime check inside `spawn`.
            tokio::spawn(async move {
                let answer = async { clone.ready().await?.call(i).await };
                timeout(3600 * SEC, answer).await.expect("the call hung")
            })
        })
        .collect();
    let mut answered = 0;
    let mut refused = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => answered += 1,
            Err(HealthError::Ejected(e)) => {
                // The time is over and the probe is out: no retry time to give.
                assert_eq!((e.cause(), e.retry_at()), (EjectionCause::Outlier, None));
                refused += 1;
            }
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!((answered, refused), (1, 9));
    assert_eq!(
        s.backend.calls(),
        calls + 1,
        "only the probe reached the backend"
    );
    assert_eq!(s.peer.state(), PeerState::Idle);
    assert_eq!(
        health_events(&mut s.events),
        [ejected(10, 1), EventKind::Restored]
    );
}

#[tokio::test(start_paused = true)]
async fn with_backpressure_the_other_clones_wait_for_the_probe_and_then_go() {
    let mut s = setup(
        policy()
            .consecutive_failures(Some(1))
            .base_ejection(10 * SEC)
            .mode(Mode::Backpressure),
    );
    fail(&mut s, 1).await;
    tokio::time::sleep(10 * SEC).await;
    s.backend.reply(Reply::Slow(SEC));
    let calls = s.backend.calls();
    let start = Instant::now();

    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let mut clone = s.service.clone();
            tokio::spawn(async move {
                let answer = async { clone.ready().await?.call(i).await };
                let answer = timeout(60 * SEC, answer).await.expect("woken");
                (answer, Instant::now())
            })
        })
        .collect();
    let mut finished = Vec::new();
    for task in tasks {
        let (answer, at) = task.await.unwrap();
        assert!(answer.is_ok());
        finished.push(at - start);
    }
    finished.sort();
    // The probe answers after 1 s and restores the peer; only then do the nine go, and answer
    // a second later.
    assert_eq!(finished[0], SEC);
    assert!(finished[1..].iter().all(|d| *d == 2 * SEC), "{finished:?}");
    assert_eq!(s.backend.calls(), calls + 10);
}

#[tokio::test(start_paused = true)]
async fn a_successful_probe_restores_and_decays_the_multiplier() {
    let mut s = setup(
        policy()
            .consecutive_failures(Some(1))
            .base_ejection(10 * SEC)
            .max_ejection(100 * SEC),
    );
    fail(&mut s, 1).await; // n = 1: 10 s
    tokio::time::sleep(10 * SEC).await;
    fail(&mut s, 1).await; // the probe fails, n = 2: 20 s
    tokio::time::sleep(20 * SEC).await;
    s.backend.reply(Reply::Answer);
    assert_eq!(call(&mut s.service, 5).await.unwrap(), 5); // the probe succeeds, n = 1
    assert_eq!(s.peer.state(), PeerState::Idle);
    fail(&mut s, 1).await; // n = 2: 20 s, where 30 s without the decay
    assert_eq!(
        health_events(&mut s.events),
        [
            ejected(10, 1),
            ejected(20, 2),
            EventKind::Restored,
            ejected(20, 3)
        ]
    );

    // The same history restored by hand, which does not decay: 30 s.
    let mut t = setup(
        policy()
            .consecutive_failures(Some(1))
            .base_ejection(10 * SEC)
            .max_ejection(100 * SEC),
    );
    fail(&mut t, 1).await;
    tokio::time::sleep(10 * SEC).await;
    fail(&mut t, 1).await;
    assert!(t.peer.restore());
    fail(&mut t, 1).await;
    assert_eq!(
        health_events(&mut t.events),
        [
            ejected(10, 1),
            ejected(20, 2),
            EventKind::Restored,
            ejected(30, 3)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_ejects_again_for_longer() {
    let mut s = setup(
        policy()
            .consecutive_failures(Some(3))
            .base_ejection(10 * SEC),
    );
    fail(&mut s, 3).await;
    tokio::time::sleep(10 * SEC).await;
    // One failure, the probe's, is enough: the run of three does not apply to it.
    fail(&mut s, 1).await;
    assert_eq!(s.peer.state(), PeerState::Ejected);
    let refused = rejection(call(&mut s.service, 0).await);
    assert_eq!(refused.retry_at(), Some(Instant::now() + 20 * SEC));
    assert_eq!(
        health_events(&mut s.events),
        [ejected(10, 1), ejected(20, 2)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_peer_in_use_for_max_ejection_starts_over_at_base() {
    let mut s = setup(
        policy()
            .consecutive_failures(Some(1))
            .base_ejection(10 * SEC)
            .max_ejection(60 * SEC),
    );
    fail(&mut s, 1).await; // 10 s
    tokio::time::sleep(10 * SEC).await;
    fail(&mut s, 1).await; // 20 s
    tokio::time::sleep(20 * SEC).await;
    s.backend.reply(Reply::Answer);
    call(&mut s.service, 0).await.unwrap(); // restored, n = 1
    tokio::time::sleep(60 * SEC).await;
    fail(&mut s, 1).await; // forgiven: n = 1 again
    tokio::time::sleep(10 * SEC).await;
    fail(&mut s, 1).await; // a failed probe is not forgiven, however long ago the restore
    assert_eq!(
        health_events(&mut s.events),
        [
            ejected(10, 1),
            ejected(20, 2),
            EventKind::Restored,
            ejected(10, 3),
            ejected(20, 4)
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Panic guard and shadow mode
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn the_panic_guard_keeps_half_the_peers_in_use() {
    let peers: Peers<Key> = Peers::builder().seed(3).build().unwrap();
    let mut events = peers.subscribe();
    let policy = policy().consecutive_failures(Some(2)).build().unwrap();
    let backend = Backend::new(Reply::Fail);
    let keys = ["a", "b", "c", "d", "e"];
    let mut services: Vec<_> = keys
        .iter()
        .map(|k| policy.layer(peers.peer(k).unwrap()).layer(backend.clone()))
        .collect();
    // Four of the five fail, each twice.
    for service in &mut services[..4] {
        for _ in 0..2 {
            assert!(matches!(call(service, 0).await, Err(HealthError::Inner(_))));
        }
    }
    assert_eq!(peers.peers_in(PeerState::Ejected).len(), 2);
    assert_eq!(peers.stats().in_state(PeerState::Ejected), 2);
    let mut by_peer = Vec::new();
    while let Some(event) = events.try_recv().unwrap() {
        match event.kind {
            EventKind::Ejected { .. } => by_peer.push((event.peer, "ejected")),
            EventKind::EjectionSkipped {
                reason: SkipReason::PanicGuard,
            } => by_peer.push((event.peer, "guarded")),
            _ => {}
        }
    }
    assert_eq!(
        by_peer,
        [
            ("a", "ejected"),
            ("b", "ejected"),
            ("c", "guarded"),
            ("d", "guarded")
        ]
    );
    // The guarded peers stay in use: their calls still reach the backend.
    let calls = backend.calls();
    assert!(matches!(
        call(&mut services[2], 0).await,
        Err(HealthError::Inner(_))
    ));
    assert_eq!(backend.calls(), calls + 1);
    assert_eq!(peers.snapshot("c").unwrap().skipped_ejections, 1);
}

#[tokio::test(start_paused = true)]
async fn shadow_mode_ejects_nothing_but_reports_every_would_be_ejection() {
    let mut s = setup(policy().consecutive_failures(Some(3)).shadow(true));
    fail(&mut s, 3).await;
    assert_eq!(s.peer.state(), PeerState::Idle);
    assert_eq!(health_events(&mut s.events), [skipped(SkipReason::Shadow)]);
    // The run starts over after a report: three more make the second.
    fail(&mut s, 2).await;
    assert_eq!(health_events(&mut s.events), []);
    fail(&mut s, 1).await;
    assert_eq!(health_events(&mut s.events), [skipped(SkipReason::Shadow)]);
    let snapshot = s.peer.snapshot();
    assert_eq!((snapshot.skipped_ejections, snapshot.times_ejected), (2, 0));
    assert_eq!(s.backend.calls(), 6, "every call reached the backend");
}

// ---------------------------------------------------------------------------------------------
// Modes
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn reject_mode_fails_at_once_naming_the_peer_and_the_retry_time() {
    let mut s = setup(policy().consecutive_failures(Some(2)));
    fail(&mut s, 2).await;
    let ejected_at = Instant::now();
    tokio::time::sleep(5 * SEC).await;
    let (polls, calls) = (s.backend.polls(), s.backend.calls());

    let error = call(&mut s.service, 0).await.unwrap_err();
    assert!(error.is_ejected());
    let refused = error.ejected().unwrap().clone();
    assert_eq!(refused.peer(), "\"api\"");
    assert_eq!(refused.cause(), EjectionCause::Outlier);
    assert_eq!(refused.retry_at(), Some(ejected_at + 30 * SEC));
    let text = error.to_string();
    assert!(text.contains("\"api\"") && text.contains("25s"), "{text}");
    assert!(text.contains("another peer"), "{text}");
    assert_eq!(
        (s.backend.polls(), s.backend.calls()),
        (polls, calls),
        "the inner service was neither polled nor called"
    );

    // Boxed by a layer above, it is found through `source()` and is safe to retry.
    let boxed: BoxError = Box::new(error);
    assert_eq!(
        classify_error(boxed.as_ref()),
        Decision::Transparent { reason: "ejected" }
    );
    let outcome: Result<u32, BoxError> = Err(boxed);
    assert_eq!(
        DefaultClassifier.classify(&0u32, &outcome),
        Decision::transparent("ejected")
    );
    // An inner error is walked into.
    let inner: BoxError = Box::new(HealthError::Inner(Box::new(io::Error::from(
        io::ErrorKind::ConnectionRefused,
    ))));
    assert_eq!(
        classify_error(inner.as_ref()),
        Decision::transparent("connection refused")
    );
}

#[tokio::test(start_paused = true)]
async fn backpressure_mode_pends_and_wakes_exactly_at_the_end_of_the_ejection() {
    let mut s = setup(
        policy()
            .consecutive_failures(Some(1))
            .base_ejection(10 * SEC)
            .mode(Mode::Backpressure),
    );
    fail(&mut s, 1).await;
    let ejected_at = Instant::now();
    tokio::time::sleep(3 * SEC).await;
    let polls = s.backend.polls();
    assert!(poll_ready_once(&mut s.service).await.is_pending());
    assert_eq!(s.backend.polls(), polls, "the inner service is not polled");

    s.backend.reply(Reply::Answer);
    timeout(60 * SEC, s.service.ready()).await.unwrap().unwrap();
    assert_eq!(Instant::now() - ejected_at, 10 * SEC);
    assert_eq!(s.service.call(4).await.unwrap(), 4);
    assert_eq!(s.peer.state(), PeerState::Idle);
}

// ---------------------------------------------------------------------------------------------
// Manual overrides
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn forced_open_closed_and_back_to_automatic() {
    let mut s = setup(policy().consecutive_failures(Some(2)));

    // Open: out of use until the override changes, with no time to retry at.
    s.peer.set_override(Override::Open);
    let refused = rejection(call(&mut s.service, 0).await);
    assert_eq!(
        (refused.cause(), refused.retry_at()),
        (EjectionCause::Manual, None)
    );
    assert!(refused.to_string().contains("Automatic"), "{refused}");
    tokio::time::sleep(3600 * SEC).await;
    assert!(call(&mut s.service, 0).await.unwrap_err().is_ejected());
    assert_eq!(s.backend.calls(), 0);

    // Closed: back in use, and failures never eject it.
    s.peer.set_override(Override::Closed);
    assert_eq!(call(&mut s.service, 1).await.unwrap(), 1);
    fail(&mut s, 4).await;
    assert_eq!(s.peer.state(), PeerState::Idle);

    // Automatic: health decides again.
    s.peer.set_override(Override::Automatic);
    fail(&mut s, 2).await;
    assert_eq!(s.peer.state(), PeerState::Ejected);
    assert_eq!(
        health_events(&mut s.events),
        [
            EventKind::Ejected {
                duration: None,
                cause: EjectionCause::Manual,
                times: 1
            },
            EventKind::Restored,
            skipped(SkipReason::ForcedClosed),
            skipped(SkipReason::ForcedClosed),
            ejected(30, 2),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_held_poll_ready_wakes_when_a_forced_open_peer_is_set_back() {
    let mut s = setup(policy().mode(Mode::Backpressure));
    s.peer.set_override(Override::Open);
    let peer = s.peer.clone();
    let release = tokio::spawn(async move {
        tokio::time::sleep(7 * SEC).await;
        peer.set_override(Override::Automatic);
    });
    let start = Instant::now();
    assert_eq!(call(&mut s.service, 3).await.unwrap(), 3);
    assert_eq!(Instant::now() - start, 7 * SEC);
    release.await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// The success-rate trigger and classifiers
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_low_success_rate_ejects_once_the_window_holds_enough_requests() {
    let mut s = setup(
        policy()
            .consecutive_failures(None)
            .success_rate(0.8, 30 * SEC, 10),
    );
    // 6 successes and 3 failures: a rate of 0.67, but only 9 requests.
    s.backend.reply(Reply::Answer);
    for _ in 0..6 {
        call(&mut s.service, 0).await.unwrap();
    }
    fail(&mut s, 3).await;
    assert_eq!(s.peer.state(), PeerState::Idle);
    // The tenth makes the volume: 0.6 is under 0.8.
    fail(&mut s, 1).await;
    assert_eq!(s.peer.state(), PeerState::Ejected);
    assert_eq!(health_events(&mut s.events), [ejected(30, 1)]);
}

#[tokio::test(start_paused = true)]
async fn outcomes_older_than_the_window_do_not_count() {
    let mut s = setup(
        policy()
            .consecutive_failures(None)
            .success_rate(0.5, 10 * SEC, 4),
    );
    fail(&mut s, 3).await;
    tokio::time::sleep(10 * SEC).await;
    // The three failures left the window: one more is under the volume.
    fail(&mut s, 1).await;
    assert_eq!(s.peer.state(), PeerState::Idle);
    fail(&mut s, 3).await;
    assert_eq!(s.peer.state(), PeerState::Ejected);
}

#[tokio::test(start_paused = true)]
async fn a_window_that_tripped_starts_over() {
    // In shadow mode the peer stays in use, so the window keeps counting after a trip.
    let mut s = setup(
        policy()
            .consecutive_failures(None)
            .success_rate(0.8, 30 * SEC, 4)
            .shadow(true),
    );
    fail(&mut s, 4).await;
    assert_eq!(health_events(&mut s.events), [skipped(SkipReason::Shadow)]);
    // The four failures that tripped it are forgotten: one more is under the volume.
    fail(&mut s, 1).await;
    assert_eq!(health_events(&mut s.events), []);
    fail(&mut s, 3).await;
    assert_eq!(health_events(&mut s.events), [skipped(SkipReason::Shadow)]);
}

/// A probe whose ejection ended without it (restored by hand while it was out) restores
/// nothing, so it must not wipe what the window saw since: its success is one more outcome.
#[tokio::test(start_paused = true)]
async fn a_stale_probes_success_counts_in_the_window_and_clears_nothing() {
    let mut s = setup(
        policy()
            .consecutive_failures(None)
            .success_rate(0.2, 10 * SEC, 4),
    );
    let probe = stale_probe(&mut s, Reply::Slow(5 * SEC)).await;
    fail(&mut s, 3).await; // under the volume of 4
    assert_eq!(probe.await.unwrap(), 1);
    // 1 success in 5 is not under 0.2; had the success not been counted, 0 in 4 would be.
    fail(&mut s, 1).await;
    assert_eq!(
        s.peer.state(),
        PeerState::Idle,
        "the success was not counted"
    );
    // 1 in 6 is: had the window been wiped, 2 failures would be under the volume.
    fail(&mut s, 1).await;
    assert_eq!(s.peer.state(), PeerState::Ejected, "the window was wiped");
}

/// The same for a stale probe that fails: one more failure in a row.
#[tokio::test(start_paused = true)]
async fn a_stale_probes_failure_counts_as_an_ordinary_one() {
    let mut s = setup(policy().consecutive_failures(Some(2)));
    let probe = stale_probe(&mut s, Reply::SlowFail(5 * SEC)).await;
    fail(&mut s, 1).await;
    assert_eq!(s.peer.state(), PeerState::Idle);
    assert!(matches!(probe.await, Err(HealthError::Inner(_))));
    assert_eq!(
        s.peer.state(),
        PeerState::Ejected,
        "the probe's failure was dropped"
    );
}

/// A probe sent with `reply`, whose ejection is then ended by hand while it is out.
async fn stale_probe(
    s: &mut Setup,
    reply: Reply,
) -> impl Future<Output = Result<u32, HealthError>> + use<> {
    assert!(s.peer.eject(SEC));
    tokio::time::sleep(SEC).await;
    s.backend.reply(reply);
    assert!(poll_ready_once(&mut s.service).await.is_ready());
    let probe = s.service.call(1);
    assert!(s.peer.restore());
    probe
}

/// A response of 0 is a failure, as a 503 is to the HTTP classifier.
#[derive(Clone, Copy)]
struct ZeroIsFailure;

impl Classify<u32, u32, BoxError> for ZeroIsFailure {
    fn classify(&self, _: &u32, _: &Result<u32, BoxError>) -> Decision {
        Decision::DontRetry
    }

    fn is_failure(&self, outcome: &Result<u32, BoxError>) -> bool {
        !matches!(outcome, Ok(n) if *n != 0)
    }
}

#[tokio::test(start_paused = true)]
async fn the_classifier_decides_what_a_failure_is() {
    let peers: Peers<Key> = Peers::new();
    let peer = peers.peer("api").unwrap();
    let policy = policy()
        .consecutive_failures(Some(2))
        .classifier(ZeroIsFailure)
        .build()
        .unwrap();
    let mut service = HealthLayer::new(peer.clone(), policy).layer(Backend::new(Reply::Answer));
    assert_eq!(call(&mut service, 0).await.unwrap(), 0);
    assert_eq!(call(&mut service, 0).await.unwrap(), 0);
    assert_eq!(peer.state(), PeerState::Ejected);
}

// ---------------------------------------------------------------------------------------------
// The tower contract (DESIGN §4)
// ---------------------------------------------------------------------------------------------

/// Ejected, its time over: the next admission is the probe.
async fn probe_due(s: &mut Setup) {
    fail(s, 1).await;
    tokio::time::sleep(30 * SEC).await;
    assert_eq!(s.peer.state(), PeerState::Ejected);
}

#[tokio::test(start_paused = true)]
async fn a_clone_of_a_ready_service_is_not_ready_and_has_no_probe() {
    let mut s = setup(
        policy()
            .consecutive_failures(Some(1))
            .mode(Mode::Backpressure),
    );
    probe_due(&mut s).await;
    s.backend.reply(Reply::Answer);
    assert!(poll_ready_once(&mut s.service).await.is_ready());
    let mut clone = s.service.clone();
    // The probe is the original's: the clone waits, and never calls its backend unready.
    assert!(poll_ready_once(&mut clone).await.is_pending());
    assert_eq!(s.service.call(1).await.unwrap(), 1);
    // The probe restored the peer: the clone polls its own backend ready, then calls.
    assert_eq!(call(&mut clone, 2).await.unwrap(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_probe_slot_is_kept_while_the_inner_service_is_pending() {
    let mut s = setup(policy().consecutive_failures(Some(1)));
    probe_due(&mut s).await;
    s.backend.reply(Reply::Answer);
    s.backend.readiness(Readiness::Never);
    assert!(poll_ready_once(&mut s.service).await.is_pending());
    assert!(poll_ready_once(&mut s.service).await.is_pending());
    // Another service meanwhile is refused: the slot is taken, once.
    let mut other = s.service.clone();
    assert!(rejection(call(&mut other, 0).await).retry_at().is_none());
    s.backend.readiness(Readiness::Ready);
    // The same service, polled again, is still the probe: its call goes through.
    assert_eq!(call(&mut s.service, 8).await.unwrap(), 8);
    assert_eq!(s.peer.state(), PeerState::Idle);
}

#[tokio::test(start_paused = true)]
async fn an_inner_poll_ready_error_frees_the_probe_slot() {
    let mut s = setup(policy().consecutive_failures(Some(1)));
    probe_due(&mut s).await;
    s.backend.readiness(Readiness::Err);
    let error = call(&mut s.service, 0).await.unwrap_err();
    assert!(matches!(error, HealthError::Inner(_)), "{error}");
    assert_eq!(
        s.peer.state(),
        PeerState::Ejected,
        "an unready inner decides nothing"
    );

    // The slot is free again: another service gets the probe, which restores the peer.
    s.backend.readiness(Readiness::Ready);
    s.backend.reply(Reply::Answer);
    let mut other = s.service.clone();
    assert_eq!(call(&mut other, 1).await.unwrap(), 1);
    assert_eq!(s.peer.state(), PeerState::Idle);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_service_holding_a_probe_slot_frees_it() {
    let mut s = setup(policy().consecutive_failures(Some(1)));
    probe_due(&mut s).await;
    s.backend.readiness(Readiness::Never);
    let mut holder = s.service.clone();
    assert!(poll_ready_once(&mut holder).await.is_pending());
    assert!(
        rejection(call(&mut s.service, 0).await)
            .retry_at()
            .is_none()
    );

    drop(holder);
    s.backend.readiness(Readiness::Ready);
    s.backend.reply(Reply::Answer);
    assert_eq!(call(&mut s.service, 2).await.unwrap(), 2);
    assert_eq!(s.peer.state(), PeerState::Idle);
}

#[tokio::test(start_paused = true)]
async fn a_probe_future_dropped_mid_flight_frees_the_slot_and_decides_nothing() {
    let mut s = setup(policy().consecutive_failures(Some(1)));
    probe_due(&mut s).await;
    assert_eq!(health_events(&mut s.events), [ejected(30, 1)]);
    s.backend.reply(Reply::Hang);
    s.service.ready().await.unwrap();
    {
        let mut probe = pin!(s.service.call(0));
        assert!(
            poll_fn(|cx| Poll::Ready(probe.as_mut().poll(cx)))
                .await
                .is_pending()
        );
        let mut other = s.service.clone();
        assert!(call(&mut other, 0).await.unwrap_err().is_ejected());
    }
    // Dropped: nothing was decided, and the next request is the probe.
    assert_eq!(s.peer.state(), PeerState::Ejected);
    assert_eq!(health_events(&mut s.events), []);
    s.backend.reply(Reply::Answer);
    assert_eq!(call(&mut s.service, 3).await.unwrap(), 3);
    assert_eq!(health_events(&mut s.events), [EventKind::Restored]);
}

#[tokio::test(start_paused = true)]
async fn a_call_without_poll_ready_still_meets_the_gate() {
    let mut s = setup(policy().consecutive_failures(Some(1)));
    fail(&mut s, 1).await;
    // Against the contract, but the peer is still protected: the backend is not called.
    let calls = s.backend.calls();
    assert!(s.service.call(0).await.unwrap_err().is_ejected());
    assert_eq!(s.backend.calls(), calls);
}

/// Printing an error with its sources (as anyhow and tracing do) says each thing once, and a
/// refusal is still found by the retry classifier once boxed.
#[test]
fn errors_say_each_thing_once_along_their_chain() {
    use std::error::Error as _;

    let chain = |error: &(dyn std::error::Error + 'static)| {
        let mut parts = vec![error.to_string()];
        let mut next = error.source();
        while let Some(e) = next {
            parts.push(e.to_string());
            next = e.source();
        }
        parts
    };
    let inner = HealthError::Inner(Box::new(io::Error::new(
        io::ErrorKind::ConnectionReset,
        "reset by peer",
    )));
    assert_eq!(
        chain(&inner),
        ["the peer's service failed", "reset by peer"]
    );
    assert_eq!(
        classify_error(&inner),
        Decision::retry("connection reset"),
        "the inner io::Error is one step down"
    );

    let peers: Peers<&'static str> = Peers::new();
    let peer = peers.peer("api").unwrap();
    peer.eject(Duration::from_secs(5));
    let mut svc = HealthLayer::new(peer, HealthPolicy::default())
        .layer(tower::service_fn(|_: ()| async { Ok::<_, io::Error>(()) }));
    let refused = futures_ready_call(&mut svc);
    assert_eq!(chain(&refused).len(), 1, "{:?}", chain(&refused));
    assert!(refused.source().is_none());
    let boxed: BoxError = Box::new(refused);
    assert_eq!(
        classify_error(boxed.as_ref()),
        Decision::transparent("ejected")
    );
}

/// Polls ready and calls once, outside any runtime: a refusal needs neither.
fn futures_ready_call<S>(svc: &mut S) -> HealthError
where
    S: Service<(), Error = HealthError>,
{
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    let mut future = pin!(svc.call(()));
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(Err(error)) => error,
        _ => panic!("a refusal is immediate"),
    }
}

/// A probe slot held across polls (by a service a balancer parked, say) does not outlive its
/// ejection: after a restore and a new ejection, the service asks the gate again.
#[tokio::test(start_paused = true)]
async fn a_probe_slot_of_an_ended_ejection_lets_nothing_through() {
    let peers: Peers<&'static str> = Peers::new();
    let peer = peers.peer("api").unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let mut svc = HealthLayer::new(peer.clone(), HealthPolicy::default()).layer(tower::service_fn(
        move |_: ()| {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, io::Error>(()) }
        },
    ));
    peer.eject(Duration::from_secs(1));
    tokio::time::advance(Duration::from_secs(1)).await;
    // Takes the probe slot, then is left uncalled.
    poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
    assert!(peer.restore());
    assert!(peer.eject(Duration::from_secs(30)));

    poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
    let error = svc.call(()).await.unwrap_err();
    assert!(error.is_ejected(), "{error}");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

/// A waiter held for a probe slot is woken when the outlier is ejected again by hand: the new
/// ejection has a time of its own to wait for, and the old probe's outcome will decide nothing
/// (found in review: nothing woke it, and it pended past the new ejection's end).
#[tokio::test(start_paused = true)]
async fn a_waiter_for_a_probe_slot_wakes_for_a_new_ejection_by_hand() {
    let mut s = setup(policy().mode(Mode::Backpressure));
    assert!(s.peer.eject(SEC));
    tokio::time::sleep(SEC).await;
    // The probe goes out and hangs.
    s.backend.reply(Reply::Hang);
    s.service.ready().await.unwrap();
    let mut probe = Box::pin(s.service.call(0));
    assert!(
        poll_fn(|cx| Poll::Ready(probe.as_mut().poll(cx)))
            .await
            .is_pending()
    );
    // Another service waits for the slot.
    let mut waiter = s.service.clone();
    let start = Instant::now();
    let waiting = tokio::spawn(async move {
        timeout(60 * SEC, waiter.ready())
            .await
            .map(|ready| ready.map(drop))
    });
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished());

    // Ejected again for 5 s: the waiter takes the new ejection's probe once that is over.
    assert!(s.peer.eject(5 * SEC));
    let ready = waiting.await.unwrap();
    assert!(matches!(ready, Ok(Ok(()))), "the waiter was never woken");
    assert_eq!(Instant::now() - start, 5 * SEC);
    drop(probe);
}
