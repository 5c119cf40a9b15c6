//! Balancing under virtual time (`redial::health::balance`): the discover inserts, removes and
//! re-inserts the same service as peers are ejected, restored, probed, exhausted and reset,
//! and converges when a health change is missed; the load wrapper ranks a fast-failing peer
//! above an idle one and forgets with time; the fail-fast wrapper fails at exactly its wait and
//! recovers at once; the tower contract probes of DESIGN §4.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::hash::{BuildHasherDefault, DefaultHasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures_core::Stream;
use redial::backoff::{Backoff, Jitter};
use redial::classify::{Classify, Decision};
use redial::health::balance::{
    Endpoint, FailFastLayer, HealthDiscover, NoHealthyPeers, PenalizedPendingLayer,
};
use redial::peers::{Override, PeerHandle, PeerState, Peers};
use redial::reconnect::NotReady;
use tokio::time::{Instant, advance};
use tower::balance::p2c::Balance;
use tower::discover::Change;
use tower::load::Load;
use tower::util::rng::HasherRng;
use tower::{BoxError, Layer, Service, ServiceExt, service_fn};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

type Key = &'static str;

fn peers() -> Peers<Key> {
    let backoff = Backoff::builder()
        .initial(100 * MS)
        .jitter(Jitter::None)
        .max_attempts(1)
        .build()
        .unwrap();
    Peers::builder().backoff(backoff).build().unwrap()
}

/// A peer's service in the discover tests: which peer, and which of the services made.
#[derive(Debug)]
struct Made {
    key: Key,
    serial: usize,
}

type Make = Box<dyn FnMut(&PeerHandle<Key>) -> Made + Send>;

/// Counts wake-ups, to prove the discover asks to be polled again (timer, watch, return).
#[derive(Default)]
struct Wakes(AtomicUsize);

impl Wake for Wakes {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Insert(Key, usize),
    Remove(Key),
}

/// The discover with a stand-in balancer: it keeps what is inserted and drops what is removed,
/// as tower's p2c does.
struct Sim {
    discover: HealthDiscover<Key, Made, Make>,
    balancer: HashMap<Key, Endpoint<Made>>,
    wakes: Arc<Wakes>,
    made: Arc<AtomicUsize>,
}

impl Sim {
    fn new(peers: &Peers<Key>, handles: &[PeerHandle<Key>]) -> Self {
        let discover = HealthDiscover::builder(peers)
            .exhausted_cooldown(Some(5 * SEC))
            .recheck(SEC);
        Self::with(discover, handles)
    }

    fn with(
        builder: redial::health::balance::HealthDiscoverBuilder<Key>,
        handles: &[PeerHandle<Key>],
    ) -> Self {
        let made = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&made);
        let make: Make = Box::new(move |peer| Made {
            key: peer.key(),
            serial: counter.fetch_add(1, Ordering::SeqCst) + 1,
        });
        Self {
            discover: builder.build(handles.iter().cloned(), make).unwrap(),
            balancer: HashMap::new(),
            wakes: Arc::default(),
            made,
        }
    }

    /// Every change the discover has now, applied to the stand-in balancer.
    fn poll(&mut self) -> Vec<Seen> {
        let waker = Waker::from(Arc::clone(&self.wakes));
        let mut cx = Context::from_waker(&waker);
        let mut seen = Vec::new();
        for _ in 0..100 {
            match Pin::new(&mut self.discover).poll_next(&mut cx) {
                Poll::Ready(Some(Ok(Change::Insert(key, endpoint)))) => {
                    let serial = endpoint.get_ref().map_or(0, |m| m.serial);
                    assert_eq!(endpoint.get_ref().map(|m| m.key), Some(key));
                    assert!(self.balancer.insert(key, endpoint).is_none(), "{key} twice");
                    seen.push(Seen::Insert(key, serial));
                }
                Poll::Ready(Some(Ok(Change::Remove(key)))) => {
                    assert!(self.balancer.remove(&key).is_some(), "{key} not inserted");
                    seen.push(Seen::Remove(key));
                }
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => panic!("the discover ended"),
                Poll::Pending => return seen,
            }
        }
        panic!("the discover never pends: {seen:?}");
    }

    fn woken(&self) -> usize {
        self.wakes.0.swap(0, Ordering::SeqCst)
    }

    fn inserted(&self) -> Vec<Key> {
        let mut keys: Vec<Key> = self.balancer.keys().copied().collect();
        keys.sort();
        keys
    }
}

fn three(peers: &Peers<Key>) -> Vec<PeerHandle<Key>> {
    ["a", "b", "c"]
        .into_iter()
        .map(|k| peers.add_static(k).unwrap())
        .collect()
}

/// Fails the peer's one connect attempt: with `max_attempts(1)` it is exhausted.
fn exhaust(peer: &PeerHandle<Key>) {
    peer.try_begin_attempt().unwrap().failed(&"refused");
}

/// p2c's random choices, the same on every run.
fn seeded() -> HasherRng<BuildHasherDefault<DefaultHasher>> {
    HasherRng::with_hasher(BuildHasherDefault::default())
}

// ---------------------------------------------------------------------------------------------
// The discover.

#[tokio::test(start_paused = true)]
async fn every_peer_is_inserted_once_then_nothing_changes() {
    let peers = peers();
    let handles = three(&peers);
    let mut sim = Sim::new(&peers, &handles);
    assert_eq!(
        sim.poll(),
        [
            Seen::Insert("a", 1),
            Seen::Insert("b", 2),
            Seen::Insert("c", 3)
        ]
    );
    assert_eq!(sim.poll(), []);
    advance(60 * SEC).await;
    assert_eq!(sim.poll(), []);
    assert_eq!(sim.woken(), 0, "nothing to wake for");
}

#[tokio::test(start_paused = true)]
async fn an_ejected_peer_is_removed_and_the_same_service_returns_on_restore() {
    let peers = peers();
    let handles = three(&peers);
    let mut sim = Sim::new(&peers, &handles);
    sim.poll();

    assert!(handles[1].eject(30 * SEC));
    assert!(sim.woken() > 0, "the health watch wakes the balancer");
    assert_eq!(sim.poll(), [Seen::Remove("b")]);
    assert_eq!(sim.inserted(), ["a", "c"]);

    assert!(handles[1].restore());
    assert!(sim.woken() > 0);
    assert_eq!(sim.poll(), [Seen::Insert("b", 2)], "the same service");
    assert_eq!(sim.made.load(Ordering::SeqCst), 3, "no service made anew");
}

#[tokio::test(start_paused = true)]
async fn an_outlier_is_inserted_for_its_probe_when_its_time_is_over_and_removed_if_it_fails() {
    let peers = peers();
    let handles = three(&peers);
    let mut sim = Sim::new(&peers, &handles);
    sim.poll();
    let start = Instant::now();

    handles[0].eject(10 * SEC);
    assert_eq!(sim.poll(), [Seen::Remove("a")]);
    sim.woken();

    advance(10 * SEC - MS).await;
    assert_eq!(sim.woken(), 0);
    assert_eq!(sim.poll(), []);
    advance(MS).await;
    assert!(
        sim.woken() > 0,
        "the timer wakes the balancer at the end of the ejection"
    );
    assert_eq!(sim.poll(), [Seen::Insert("a", 1)]);
    assert_eq!(start.elapsed(), 10 * SEC);
    assert_eq!(
        handles[0].state(),
        PeerState::Ejected,
        "still ejected: probing"
    );
    assert!(
        sim.balancer["a"].is_probing(),
        "its load says: probe here first"
    );
    assert!(!sim.balancer["b"].is_probing());

    // The probe fails: ejected again for longer. The counts by state do not change, so the
    // health report does not either; the discover notices on its next poll all the same.
    assert!(handles[0].eject(20 * SEC));
    assert_eq!(sim.poll(), [Seen::Remove("a")]);
    advance(20 * SEC).await;
    assert_eq!(sim.poll(), [Seen::Insert("a", 1)]);

    // This time the probe succeeds: restored, kept in, its own load again.
    handles[0].restore();
    assert_eq!(sim.poll(), []);
    assert!(!sim.balancer["a"].is_probing());
    assert_eq!(sim.inserted(), ["a", "b", "c"]);
    advance(60 * SEC).await;
    assert_eq!(sim.poll(), []);
}

#[tokio::test(start_paused = true)]
async fn an_exhausted_peer_is_reset_and_inserted_again_after_the_cooldown() {
    let peers = peers();
    let handles = three(&peers);
    let mut sim = Sim::new(&peers, &handles);
    sim.poll();

    exhaust(&handles[2]);
    assert_eq!(handles[2].state(), PeerState::Exhausted);
    assert_eq!(sim.poll(), [Seen::Remove("c")]);
    sim.woken();

    advance(5 * SEC - MS).await;
    assert_eq!(sim.poll(), []);
    assert_eq!(handles[2].state(), PeerState::Exhausted);
    advance(MS).await;
    assert!(sim.woken() > 0);
    assert_eq!(sim.poll(), [Seen::Insert("c", 3)]);
    assert_eq!(
        handles[2].state(),
        PeerState::Idle,
        "reset, so it may connect again"
    );
}

#[tokio::test(start_paused = true)]
async fn without_a_cooldown_an_exhausted_peer_waits_for_a_reset_by_someone_else() {
    let peers = peers();
    let handles = three(&peers);
    let builder = HealthDiscover::builder(&peers).exhausted_cooldown(None);
    let mut sim = Sim::with(builder, &handles);
    sim.poll();

    exhaust(&handles[0]);
    assert_eq!(sim.poll(), [Seen::Remove("a")]);
    advance(600 * SEC).await;
    assert_eq!(sim.poll(), []);
    assert_eq!(handles[0].state(), PeerState::Exhausted);

    handles[0].reset();
    assert_eq!(sim.poll(), [Seen::Insert("a", 1)]);
}

#[tokio::test(start_paused = true)]
async fn a_peer_forced_open_stays_out_until_the_override_is_lifted() {
    let peers = peers();
    let handles = three(&peers);
    let mut sim = Sim::new(&peers, &handles);
    sim.poll();

    handles[1].set_override(Override::Open);
    assert_eq!(sim.poll(), [Seen::Remove("b")]);
    for _ in 0..5 {
        advance(10 * SEC).await;
        assert_eq!(sim.poll(), []);
    }
    handles[1].set_override(Override::Automatic);
    assert_eq!(sim.poll(), [Seen::Insert("b", 2)]);
}

#[tokio::test(start_paused = true)]
async fn changes_made_between_polls_converge() {
    let peers = peers();
    let handles = three(&peers);
    let mut sim = Sim::new(&peers, &handles);
    sim.poll();

    // Ejected and restored, several times, before the balancer polls again: the watch shows
    // only the last report; the peer ends where it should, with its first service.
    for _ in 0..3 {
        handles[0].eject(SEC);
        handles[1].eject(SEC);
        handles[0].restore();
    }
    sim.poll();
    assert_eq!(sim.inserted(), ["a", "c"]);
    handles[1].restore();
    sim.poll();
    assert_eq!(sim.inserted(), ["a", "b", "c"]);
    assert_eq!(sim.made.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn a_peer_restored_straight_into_exhaustion_is_not_lost() {
    let peers = peers();
    let handles = three(&peers);
    let mut sim = Sim::new(&peers, &handles);
    sim.poll();

    // Forced out (no end time), and its connect attempts run out meanwhile.
    handles[0].set_override(Override::Open);
    assert_eq!(sim.poll(), [Seen::Remove("a")]);
    exhaust(&handles[0]);
    let report = peers.health();
    let mut watch = peers.watch_health();
    watch.mark_unchanged();
    // Restored into exhaustion: ejected and exhausted count alike, so the health report does
    // not change and the watch stays silent.
    handles[0].restore();
    assert_eq!(handles[0].state(), PeerState::Exhausted);
    assert!(!watch.has_changed().unwrap());
    assert_eq!(peers.health().failed, report.failed);

    // The recheck finds it exhausted; the cool-down (from when it ran out) brings it back.
    advance(SEC).await;
    assert_eq!(sim.poll(), []);
    advance(4 * SEC).await;
    assert_eq!(sim.poll(), [Seen::Insert("a", 1)]);
    assert_eq!(handles[0].state(), PeerState::Idle);
}

#[tokio::test(start_paused = true)]
async fn a_service_the_balancer_dropped_on_its_own_is_replaced_after_the_recheck() {
    let peers = peers();
    let handles = three(&peers);
    let mut sim = Sim::new(&peers, &handles);
    sim.poll();

    // As p2c does with an endpoint whose poll_ready failed: dropped, no Remove asked.
    drop(sim.balancer.remove("b"));
    assert!(sim.woken() > 0, "the returned service wakes the discover");
    assert_eq!(
        sim.poll(),
        [],
        "not at once: a service failing at once must not loop"
    );
    advance(SEC - MS).await;
    assert_eq!(sim.poll(), []);
    advance(MS).await;
    assert_eq!(sim.poll(), [Seen::Insert("b", 4)], "a new service");
}

#[tokio::test(start_paused = true)]
async fn peers_are_added_and_removed_through_the_handle() {
    let peers = peers();
    let handles = three(&peers);
    let mut sim = Sim::new(&peers, &handles);
    let handle = sim.discover.handle();
    sim.poll();

    assert!(handle.add(peers.add_static("d").unwrap()));
    assert!(handle.add(handles[0].clone()), "already there: no change");
    assert!(sim.woken() > 0);
    assert_eq!(sim.poll(), [Seen::Insert("d", 4)]);

    assert!(handle.remove(&"a"));
    assert_eq!(sim.poll(), [Seen::Remove("a")]);
    assert_eq!(sim.discover.len(), 3);
    // Ejections of a removed peer no longer matter.
    handles[0].eject(SEC);
    advance(2 * SEC).await;
    assert_eq!(sim.poll(), []);

    // Added again: a new service.
    handles[0].restore();
    assert!(handle.add(handles[0].clone()));
    assert_eq!(sim.poll(), [Seen::Insert("a", 5)]);

    // A removed peer that is out already is just forgotten.
    handles[1].set_override(Override::Open);
    assert_eq!(sim.poll(), [Seen::Remove("b")]);
    handle.remove(&"b");
    assert_eq!(sim.poll(), []);
    assert_eq!(sim.inserted(), ["a", "c", "d"]);
    drop(sim);
    assert!(!handle.add(handles[1].clone()), "the discover is gone");
}

#[test]
fn the_builder_rejects_zero_durations() {
    let peers = peers();
    let make = |_: &PeerHandle<Key>| ();
    let error = HealthDiscover::builder(&peers)
        .recheck(Duration::ZERO)
        .build(None, make)
        .unwrap_err();
    assert_eq!(error.field(), "recheck");
    let error = HealthDiscover::builder(&peers)
        .exhausted_cooldown(Some(Duration::ZERO))
        .build(None, make)
        .unwrap_err();
    assert_eq!(error.field(), "exhausted_cooldown");
}

// ---------------------------------------------------------------------------------------------
// The load.

/// A service that answers at once, with an error when `fail`.
fn instant(
    fail: bool,
) -> impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone {
    service_fn(move |n: u32| async move {
        if fail {
            Err::<u32, BoxError>("refused".into())
        } else {
            Ok(n)
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_fast_failing_peer_costs_more_than_an_idle_one_and_the_penalty_halves_each_decay() {
    let layer = PenalizedPendingLayer::builder()
        .penalty(4.0)
        .decay(SEC)
        .build()
        .unwrap();
    let mut failing = layer.layer(instant(true));
    let idle = layer.layer(instant(false));
    for n in 0..3 {
        assert!(failing.ready().await.unwrap().call(n).await.is_err());
    }
    assert_eq!(failing.pending(), 0);
    assert!((failing.penalty() - 12.0).abs() < 1e-9);
    assert!(failing.load() > idle.load());
    assert_eq!(idle.load().value(), 0.0);

    advance(SEC).await;
    assert!(
        (failing.penalty() - 6.0).abs() < 1e-9,
        "{}",
        failing.penalty()
    );
    advance(SEC).await;
    assert!((failing.penalty() - 3.0).abs() < 1e-9);
    // A new failure adds to what is still owed.
    assert!(failing.ready().await.unwrap().call(0).await.is_err());
    assert!((failing.penalty() - 7.0).abs() < 1e-9);
    advance(60 * SEC).await;
    assert_eq!(failing.penalty(), 0.0, "forgotten");
    assert_eq!(failing.load(), idle.load());
}

#[tokio::test(start_paused = true)]
async fn requests_in_flight_count_until_they_end_or_are_dropped() {
    let slow = service_fn(|_: u32| async {
        tokio::time::sleep(SEC).await;
        Ok::<_, Infallible>(())
    });
    let mut svc = PenalizedPendingLayer::new().layer(slow);
    let first = svc.ready().await.unwrap().call(1);
    let second = svc.ready().await.unwrap().call(2);
    assert_eq!(svc.pending(), 2);
    assert_eq!(svc.load().value(), 2.0);
    drop(second);
    assert_eq!(svc.pending(), 1);
    first.await.unwrap();
    assert_eq!(svc.pending(), 0);
    assert_eq!(svc.penalty(), 0.0, "successes cost nothing");
}

#[tokio::test(start_paused = true)]
async fn the_classifier_decides_what_is_a_failure() {
    #[derive(Clone)]
    struct Busy;
    impl Classify<u32, &'static str, Infallible> for Busy {
        fn classify(&self, _: &u32, _: &Result<&'static str, Infallible>) -> Decision {
            Decision::DontRetry
        }
        fn is_failure(&self, outcome: &Result<&'static str, Infallible>) -> bool {
            matches!(outcome, Ok("503"))
        }
    }
    let layer = PenalizedPendingLayer::builder()
        .classifier(Busy)
        .build()
        .unwrap();
    let mut svc = layer.layer(service_fn(|n: u32| async move {
        Ok::<_, Infallible>(if n == 0 { "503" } else { "200" })
    }));
    svc.ready().await.unwrap().call(1).await.unwrap();
    assert_eq!(svc.penalty(), 0.0);
    svc.ready().await.unwrap().call(0).await.unwrap();
    assert!((svc.penalty() - 5.0).abs() < 1e-9, "the default penalty");
}

#[test]
fn the_load_builder_rejects_bad_values() {
    for (penalty, field) in [
        (f64::NAN, "penalty"),
        (f64::INFINITY, "penalty"),
        (-1.0, "penalty"),
    ] {
        let error = PenalizedPendingLayer::builder()
            .penalty(penalty)
            .build()
            .unwrap_err();
        assert_eq!(error.field(), field);
    }
    let error = PenalizedPendingLayer::builder()
        .decay(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(error.field(), "decay");
    assert!(
        PenalizedPendingLayer::builder()
            .penalty(0.0)
            .build()
            .is_ok()
    );
}

/// Share of 200 sequential requests p2c sends to a peer that fails at once, beside one that
/// answers after 10 ms, with the given failure penalty.
async fn share_to_the_failing_peer(penalty: f64) -> f64 {
    let peers = peers();
    let handles = vec![
        peers.add_static("fails").unwrap(),
        peers.add_static("works").unwrap(),
    ];
    let layer = PenalizedPendingLayer::builder()
        .penalty(penalty)
        .build()
        .unwrap();
    let discover = HealthDiscover::new(&peers, handles, move |peer| {
        let fails = *peer.key() == "fails";
        layer.layer(service_fn(move |_: ()| async move {
            if fails {
                Err::<(), BoxError>("refused".into())
            } else {
                tokio::time::sleep(10 * MS).await;
                Ok(())
            }
        }))
    });
    let mut balance = Balance::from_rng(discover, seeded());
    let mut failed = 0;
    for _ in 0..200 {
        failed += usize::from(balance.ready().await.unwrap().call(()).await.is_err());
    }
    failed as f64 / 200.0
}

#[tokio::test(start_paused = true)]
async fn p2c_sends_little_to_a_fast_failing_peer() {
    // Without a penalty both peers show nothing in flight between sequential requests: the
    // failing one gets about half. With it, a failure makes it the costlier of the two.
    let bare = share_to_the_failing_peer(0.0).await;
    let penalized = share_to_the_failing_peer(5.0).await;
    assert!(bare > 0.3, "{bare}");
    assert!(penalized < 0.1, "{penalized}");
}

// ---------------------------------------------------------------------------------------------
// Fail fast.

/// An inner service whose readiness is switched from outside; counts its `poll_ready`s, and
/// panics if called when not ready (a clone is not ready).
#[derive(Clone, Default)]
struct Switch {
    up: Arc<AtomicBool>,
    waker: Arc<Mutex<Option<Waker>>>,
    polls: Arc<AtomicUsize>,
    readied: bool,
}

impl Switch {
    fn set(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        if let Some(waker) = self.waker.lock().unwrap().take() {
            waker.wake();
        }
    }
}

impl Service<u32> for Switch {
    type Response = u32;
    type Error = BoxError;
    type Future = std::future::Ready<Result<u32, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        if self.up.load(Ordering::SeqCst) {
            self.readied = true;
            return Poll::Ready(Ok(()));
        }
        *self.waker.lock().unwrap() = Some(cx.waker().clone());
        Poll::Pending
    }

    fn call(&mut self, n: u32) -> Self::Future {
        assert!(std::mem::take(&mut self.readied), "called unready");
        std::future::ready(Ok(n))
    }
}

fn poll_ready<S: Service<u32>>(svc: &mut S, wakes: &Arc<Wakes>) -> Poll<Result<(), S::Error>> {
    let waker = Waker::from(Arc::clone(wakes));
    svc.poll_ready(&mut Context::from_waker(&waker))
}

#[tokio::test(start_paused = true)]
async fn fails_with_no_healthy_peers_at_exactly_the_wait_and_recovers_at_once() {
    let inner = Switch::default();
    let mut svc = FailFastLayer::new(3 * SEC).layer(inner.clone());
    let wakes = Arc::new(Wakes::default());
    let start = Instant::now();

    assert!(poll_ready(&mut svc, &wakes).is_pending());
    advance(3 * SEC - MS).await;
    assert_eq!(
        wakes.0.load(Ordering::SeqCst),
        0,
        "no spinning while waiting"
    );
    assert!(poll_ready(&mut svc, &wakes).is_pending());
    advance(MS).await;
    assert!(
        wakes.0.load(Ordering::SeqCst) > 0,
        "the timer wakes the task at the wait's end"
    );
    assert!(matches!(poll_ready(&mut svc, &wakes), Poll::Ready(Ok(()))));
    assert!(svc.is_failing());
    let error = svc.call(1).await.unwrap_err();
    let error = error.downcast_ref::<NoHealthyPeers>().unwrap();
    assert_eq!(error.unready_for(), start.elapsed());
    assert_eq!(error.unready_for(), 3 * SEC);
    assert!(error.to_string().contains("retry later"), "{error}");

    // Still failing at once, and the inner service is polled every time.
    let polls = inner.polls.load(Ordering::SeqCst);
    for _ in 0..3 {
        let error = svc.ready().await.unwrap().call(1).await.unwrap_err();
        assert!(error.is::<NoHealthyPeers>());
    }
    assert_eq!(inner.polls.load(Ordering::SeqCst), polls + 3);

    // A peer is back: the inner service's wake-up reaches the task, and the next call goes
    // through, without waiting.
    wakes.0.store(0, Ordering::SeqCst);
    assert!(matches!(poll_ready(&mut svc, &wakes), Poll::Ready(Ok(()))));
    inner.set(true);
    assert!(wakes.0.load(Ordering::SeqCst) > 0);
    let before = Instant::now();
    assert!(matches!(poll_ready(&mut svc, &wakes), Poll::Ready(Ok(()))));
    assert_eq!(svc.call(7).await.unwrap(), 7);
    assert_eq!(before.elapsed(), Duration::ZERO);
    assert!(!svc.is_failing());

    // Down again: a new wait, measured from now.
    inner.set(false);
    assert!(poll_ready(&mut svc, &wakes).is_pending());
    advance(3 * SEC - MS).await;
    assert!(poll_ready(&mut svc, &wakes).is_pending());
}

/// A caller that stopped waiting (its `ready()` dropped by a `select!`) leaves no debt: whoever
/// comes back long after waits a whole wait of its own before failing, rather than failing at
/// once on an unreadiness nobody watched. A caller still waiting, woken late, does fail.
#[tokio::test(start_paused = true)]
async fn a_wait_abandoned_long_ago_starts_over_but_a_late_wake_up_still_fails() {
    let inner = Switch::default();
    let mut svc = FailFastLayer::new(3 * SEC).layer(inner.clone());
    let wakes = Arc::new(Wakes::default());

    assert!(poll_ready(&mut svc, &wakes).is_pending());
    // Abandoned; an hour later another caller looks.
    advance(3_600 * SEC).await;
    assert!(
        poll_ready(&mut svc, &wakes).is_pending(),
        "an hour-old wait nobody watched fails the new caller at once"
    );
    assert!(!svc.is_failing());
    advance(3 * SEC - MS).await;
    assert!(poll_ready(&mut svc, &wakes).is_pending());
    // This caller's wake-up comes late (a busy runtime), yet within a wait of the deadline:
    // it has waited long enough and fails.
    advance(SEC).await;
    assert!(matches!(poll_ready(&mut svc, &wakes), Poll::Ready(Ok(()))));
    let error = svc.call(1).await.unwrap_err();
    assert_eq!(
        error
            .downcast_ref::<NoHealthyPeers>()
            .unwrap()
            .unready_for(),
        3 * SEC - MS + SEC
    );

    // Once failing, calls keep failing at once however long the gaps, until it is ready.
    advance(3_600 * SEC).await;
    assert!(matches!(poll_ready(&mut svc, &wakes), Poll::Ready(Ok(()))));
    assert!(svc.is_failing());
}

/// A short wait still ends in failing: its caller is woken on the timer's millisecond tick, or
/// later on a busy runtime, well past the wait's end, and that must not pass for a caller who
/// gave up (which would start the wait over at every wake-up, for ever).
#[tokio::test(start_paused = true)]
async fn a_short_wait_woken_late_fails_instead_of_starting_over() {
    let tiny = Duration::from_micros(100);
    let mut svc = FailFastLayer::new(tiny).layer(Switch::default());
    let ready = tokio::time::timeout(SEC, svc.ready()).await;
    let ready = ready.expect("a 100 µs wait never ended");
    assert!(ready.unwrap().is_failing());

    // A 10 ms wait whose caller's wake-up comes 15 ms late (a stalled runtime).
    let wakes = Arc::new(Wakes::default());
    let mut svc = FailFastLayer::new(10 * MS).layer(Switch::default());
    assert!(poll_ready(&mut svc, &wakes).is_pending());
    advance(25 * MS).await;
    assert!(matches!(poll_ready(&mut svc, &wakes), Poll::Ready(Ok(()))));
    assert!(svc.is_failing());
}

#[tokio::test(start_paused = true)]
async fn the_error_carries_the_health_report() {
    let peers = peers();
    let handles = three(&peers);
    handles[0].set_override(Override::Open);
    let mut svc = FailFastLayer::new(SEC)
        .health(&peers)
        .layer(Switch::default());
    let error = svc.ready().await.unwrap().call(1).await.unwrap_err();
    let error = error.downcast_ref::<NoHealthyPeers>().unwrap();
    let report = error.report().unwrap();
    assert_eq!((report.total, report.failed), (3, 1));
    assert!(error.to_string().contains("of 3 peers"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn tower_contract_fail_fast() {
    // A call without poll_ready, or on an unpolled clone, is refused, never passed on.
    let inner = Switch::default();
    inner.set(true);
    let mut svc = FailFastLayer::new(SEC).layer(inner.clone());
    let error = svc.call(1).await.unwrap_err();
    assert!(error.is::<NotReady>());
    svc.ready().await.unwrap();
    let mut clone = svc.clone();
    assert!(clone.call(1).await.unwrap_err().is::<NotReady>());
    assert_eq!(svc.call(2).await.unwrap(), 2);
    assert!(
        svc.call(3).await.unwrap_err().is::<NotReady>(),
        "one call per ready"
    );

    // An error from the inner poll_ready is passed on, not turned into fail-fast.
    struct Broken;
    impl Service<u32> for Broken {
        type Response = u32;
        type Error = BoxError;
        type Future = std::future::Ready<Result<u32, BoxError>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Err("closed".into()))
        }
        fn call(&mut self, _: u32) -> Self::Future {
            unreachable!("never ready")
        }
    }
    let mut broken = FailFastLayer::new(SEC).layer(Broken);
    let Err(error) = broken.ready().await else {
        panic!("a broken service is never ready");
    };
    assert_eq!(error.to_string(), "closed");

    // One that pends forever fails fast after the wait.
    let mut forever = FailFastLayer::new(SEC).layer(Switch::default());
    let error = forever.ready().await.unwrap().call(1).await.unwrap_err();
    assert!(error.is::<NoHealthyPeers>());
}

// ---------------------------------------------------------------------------------------------
// All together, in a tower balancer.

#[tokio::test(start_paused = true)]
async fn balanced_endpoints_keep_the_tower_contract() {
    // Each peer's service is a `Switch`: it panics if the balancer ever calls it unready.
    let peers = peers();
    let handles = three(&peers);
    let switches: Vec<Switch> = (0..3).map(|_| Switch::default()).collect();
    for s in &switches[..2] {
        s.set(true);
    }
    let by_key: HashMap<Key, Switch> = ["a", "b", "c"].into_iter().zip(switches.clone()).collect();
    let layer = PenalizedPendingLayer::new();
    let discover = HealthDiscover::new(&peers, handles.clone(), move |peer| {
        layer.layer(by_key[peer.key()].clone())
    });
    let mut client = FailFastLayer::new(SEC).layer(Balance::from_rng(discover, seeded()));
    for n in 0..20 {
        assert_eq!(client.ready().await.unwrap().call(n).await.unwrap(), n);
    }

    // Every peer down (not ready, as a reconnecting peer is): NoHealthyPeers after the wait,
    // then the first peer back ends it.
    let start = Instant::now();
    for s in &switches {
        s.set(false);
    }
    let error = client.ready().await.unwrap().call(0).await.unwrap_err();
    assert!(error.is::<NoHealthyPeers>());
    assert_eq!(start.elapsed(), SEC);
    switches[2].set(true);
    assert_eq!(client.ready().await.unwrap().call(5).await.unwrap(), 5);
    assert_eq!(start.elapsed(), SEC);

    // An ejected peer is out even though it is ready; restored, it is back with its service.
    for s in &switches {
        s.set(true);
    }
    handles[0].eject(10 * SEC);
    let polls = switches[0].polls.load(Ordering::SeqCst);
    for n in 0..20 {
        client.ready().await.unwrap().call(n).await.unwrap();
    }
    assert_eq!(
        switches[0].polls.load(Ordering::SeqCst),
        polls,
        "not polled while out"
    );
    handles[0].restore();
    for n in 0..30 {
        client.ready().await.unwrap().call(n).await.unwrap();
    }
    assert!(switches[0].polls.load(Ordering::SeqCst) > polls);
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_p2c_evicts_for_a_poll_ready_error_comes_back_as_a_new_service() {
    let peers = peers();
    let handle = peers.add_static("a").unwrap();
    let made = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&made);
    let discover = HealthDiscover::new(&peers, [handle], move |_| {
        // The first service is broken for good; the next ones work.
        let broken = counter.fetch_add(1, Ordering::SeqCst) == 0;
        PenalizedPendingLayer::new().layer(BrokenOnce { broken })
    });
    let mut client = FailFastLayer::new(10 * SEC).layer(Balance::from_rng(discover, seeded()));
    let start = Instant::now();
    assert_eq!(client.ready().await.unwrap().call(3).await.unwrap(), 3);
    assert_eq!(made.load(Ordering::SeqCst), 2);
    assert_eq!(start.elapsed(), SEC, "replaced after the recheck");
}

struct BrokenOnce {
    broken: bool,
}

impl Service<u32> for BrokenOnce {
    type Response = u32;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<u32, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self.broken {
            true => Poll::Ready(Err("connection closed by the user".into())),
            false => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, n: u32) -> Self::Future {
        Box::pin(async move { Ok(n) })
    }
}

// ---------------------------------------------------------------------------------------------
// With the health layer: a failing peer gets only probes, and comes back.

/// Sends `requests` calls through `client`, `concurrency` at a time; returns how many failed.
async fn drive<S>(client: &mut S, requests: usize, concurrency: usize) -> usize
where
    S: Service<(), Response = (), Error = BoxError>,
    S::Future: Send + 'static,
    S::Error: std::fmt::Debug,
{
    let mut in_flight = tokio::task::JoinSet::<Result<(), BoxError>>::new();
    let mut failed = 0;
    for _ in 0..requests {
        while in_flight.len() >= concurrency {
            if let Some(outcome) = in_flight.join_next().await {
                failed += usize::from(outcome.unwrap().is_err());
            }
        }
        let call = client.ready().await.unwrap().call(());
        in_flight.spawn(call);
    }
    while let Some(outcome) = in_flight.join_next().await {
        failed += usize::from(outcome.unwrap().is_err());
    }
    failed
}

#[tokio::test(start_paused = true)]
async fn with_health_layers_a_failing_peer_gets_only_probes_then_traffic_again() {
    use redial::event::EventKind;
    use redial::health::{HealthLayer, HealthPolicy, Mode};

    let peers = peers();
    let handles = three(&peers);
    let mut events = peers.subscribe();
    let policy = HealthPolicy::builder()
        .consecutive_failures(Some(3))
        .base_ejection(SEC)
        .max_ejection(4 * SEC)
        .jitter(0.0)
        .mode(Mode::Backpressure)
        .build()
        .unwrap();
    let down = Arc::new(AtomicBool::new(false));
    let calls_to_b: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let (flag, log) = (Arc::clone(&down), Arc::clone(&calls_to_b));
    let load = PenalizedPendingLayer::new();
    let discover = HealthDiscover::new(&peers, handles.clone(), move |peer| {
        let is_b = *peer.key() == "b";
        let (down, log) = (Arc::clone(&flag), Arc::clone(&log));
        let backend = service_fn(move |_: ()| {
            let failing = is_b && down.load(Ordering::SeqCst);
            if is_b {
                log.lock().unwrap().push(Instant::now());
            }
            async move {
                tokio::time::sleep(10 * MS).await;
                match failing {
                    true => Err::<(), BoxError>("timed out".into()),
                    false => Ok(()),
                }
            }
        });
        load.layer(HealthLayer::new(peer.clone(), policy.clone()).layer(backend))
    });
    let mut client = FailFastLayer::new(5 * SEC)
        .layer(Balance::from_rng(discover, seeded()))
        .map_err(BoxError::from);

    assert_eq!(drive(&mut client, 300, 6).await, 0);
    let down_at = Instant::now();
    down.store(true, Ordering::SeqCst);
    let failed = drive(&mut client, 6000, 6).await;
    let up_at = Instant::now();
    down.store(false, Ordering::SeqCst);
    assert!(up_at - down_at > 8 * SEC, "long enough for a few ejections");

    // Ejections of b while it was down, each with its end.
    let mut ejections = Vec::new();
    while let Some(event) = events.try_recv().expect("no event missed") {
        if let ("b", EventKind::Ejected { duration, .. }) = (event.peer, event.kind) {
            ejections.push((event.at, event.at + duration.unwrap()));
        }
    }
    assert!(ejections.len() >= 3, "{ejections:?}");
    let calls: Vec<Instant> = calls_to_b
        .lock()
        .unwrap()
        .iter()
        .copied()
        .filter(|&at| at >= down_at)
        .collect();
    let first = ejections[0].0;
    assert!(calls.iter().filter(|&&at| at < first).count() >= 3);
    // After the first ejection: one probe per ejection, made once its time was over.
    for (i, &(ejected_at, until)) in ejections.iter().enumerate() {
        let next = ejections.get(i + 1).map_or(up_at, |e| e.0);
        let probes: Vec<&Instant> = calls
            .iter()
            .filter(|&&at| at >= ejected_at && at < next)
            .collect();
        assert!(probes.len() <= 1, "ejection {i}: {probes:?}");
        assert!(
            probes.iter().all(|&&at| at >= until),
            "probe before {until:?}"
        );
    }
    assert!(failed <= calls.len());

    // b answers again: its next probe restores it, and it gets its share again.
    let before = calls_to_b.lock().unwrap().len();
    assert_eq!(drive(&mut client, 6000, 6).await, 0);
    assert_ne!(handles[1].state(), PeerState::Ejected);
    assert!(calls_to_b.lock().unwrap().len() - before > 100);
}

#[tokio::test(start_paused = true)]
async fn the_probe_goes_out_when_the_ejection_ends_whatever_the_peers_penalty() {
    use redial::health::{HealthLayer, HealthPolicy, Mode};

    let peers = peers();
    let (a, b) = (
        peers.add_static("a").unwrap(),
        peers.add_static("b").unwrap(),
    );
    let policy = HealthPolicy::builder()
        .consecutive_failures(Some(3))
        .base_ejection(SEC)
        .jitter(0.0)
        .mode(Mode::Backpressure)
        .build()
        .unwrap();
    // A penalty that would keep `a` out of every comparison for hours.
    let load = PenalizedPendingLayer::builder()
        .penalty(100.0)
        .decay(Duration::from_secs(3600))
        .build()
        .unwrap();
    let up = Arc::new(AtomicBool::new(false));
    let calls_to_a: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let a_backend = backend(Arc::clone(&up), Arc::clone(&calls_to_a));
    let b_backend = backend(Arc::new(AtomicBool::new(true)), Arc::default());
    let mut a_service = load.layer(HealthLayer::new(a.clone(), policy.clone()).layer(a_backend));
    for _ in 0..3 {
        assert!(a_service.ready().await.unwrap().call(()).await.is_err());
    }
    assert_eq!(a.state(), PeerState::Ejected);
    assert!(a_service.load().value() >= 300.0);
    let b_service = load.layer(HealthLayer::new(b.clone(), policy).layer(b_backend));
    let mut services = HashMap::from([("a", a_service), ("b", b_service)]);
    let discover = HealthDiscover::new(&peers, [a.clone(), b], move |peer| {
        services
            .remove(peer.key())
            .expect("each service is made once")
    });
    let mut client = Balance::from_rng(discover, seeded());
    let ejected_at = Instant::now();
    up.store(true, Ordering::SeqCst);

    // While ejected: nothing to a. The first request once the time is over is its probe.
    while ejected_at.elapsed() < SEC {
        client.ready().await.unwrap().call(()).await.unwrap();
        tokio::time::sleep(100 * MS).await;
    }
    assert_eq!(calls_to_a.lock().unwrap().len(), 3);
    client.ready().await.unwrap().call(()).await.unwrap();
    assert_eq!(calls_to_a.lock().unwrap().len(), 4);
    assert_eq!(calls_to_a.lock().unwrap()[3], ejected_at + SEC);
    assert_ne!(a.state(), PeerState::Ejected, "restored by the probe");

    // Restored, its own load counts again: its penalty keeps it behind an idle `b`.
    for _ in 0..20 {
        client.ready().await.unwrap().call(()).await.unwrap();
    }
    assert_eq!(calls_to_a.lock().unwrap().len(), 4);
}

/// Answers while `up`, refuses otherwise; logs when each call came.
fn backend(
    up: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Instant>>>,
) -> impl Service<(), Response = (), Error = BoxError, Future: Send> {
    service_fn(move |_: ()| {
        log.lock().unwrap().push(Instant::now());
        let up = up.load(Ordering::SeqCst);
        async move {
            match up {
                true => Ok(()),
                false => Err("refused".into()),
            }
        }
    })
}
