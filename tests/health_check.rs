//! Active health checks: the thresholds and the schedule under paused time with scripted checks
//! (exact virtual times of every check, ejection and restore), concurrency between peers, the
//! task's life, peers added and removed at run time, and how checks meet passive ejections;
//! then, on real loopback sockets, the TCP check across a listener closed and reopened on the
//! same port and (feature `tonic`) the gRPC check across a `tonic-health` status flip.
//!
//! Paused time and real sockets are never mixed; every wait is bounded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redial::event::{EventKind, Subscription};
use redial::health::check::{
    CheckStatus, CheckTimedOut, Checker, CheckerBuilder, HealthCheck, check_fn,
};
use redial::peers::{EjectionCause, HealthReport, PeerState, Peers};
use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until, timeout};

type Key = &'static str;

const SECOND: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------------
// A scripted check.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Up,
    Down,
    /// Never answers.
    Hang,
}

/// What each peer's check answers (up unless told otherwise), and when each check started.
#[derive(Clone, Default)]
struct Script {
    modes: Arc<Mutex<HashMap<Key, Mode>>>,
    calls: Arc<Mutex<Vec<(Key, Instant)>>>,
}

impl Script {
    fn set(&self, peer: Key, mode: Mode) {
        self.modes.lock().unwrap().insert(peer, mode);
    }

    fn check(&self) -> impl HealthCheck<Key> + Send + Sync + 'static {
        let script = self.clone();
        check_fn(move |peer: Key| {
            script.calls.lock().unwrap().push((peer, Instant::now()));
            let mode = script
                .modes
                .lock()
                .unwrap()
                .get(peer)
                .copied()
                .unwrap_or(Mode::Up);
            async move {
                match mode {
                    Mode::Up => Ok(()),
                    Mode::Down => Err("scripted failure"),
                    Mode::Hang => std::future::pending().await,
                }
            }
        })
    }

    /// When `peer`'s checks started, as offsets from `start`.
    fn calls(&self, peer: Key, start: Instant) -> Vec<Duration> {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .filter(|(p, _)| *p == peer)
            .map(|(_, at)| *at - start)
            .collect()
    }
}

/// Every 5 s exactly, 1 s timeout, 3 failures down, 2 successes up.
fn exact<C>(check: C) -> CheckerBuilder<C> {
    Checker::builder(check)
        .interval(5 * SECOND)
        .jitter(0.0)
        .timeout(SECOND)
}

fn table() -> Peers<Key> {
    Peers::builder().seed(1).build().unwrap()
}

/// The ejections and restores waiting in `events`, as (peer, offset from `start`, what).
fn transitions(
    events: &mut Subscription<Key>,
    start: Instant,
) -> Vec<(Key, Duration, &'static str)> {
    let mut out = Vec::new();
    while let Some(event) = events.try_recv().unwrap() {
        let what = match event.kind {
            EventKind::Ejected {
                duration: None,
                cause: EjectionCause::Check,
                ..
            } => "down",
            EventKind::Ejected { .. } => "ejected",
            EventKind::Restored => "up",
            _ => continue,
        };
        out.push((event.peer, event.at - start, what));
    }
    out
}

/// Waits (virtual time, bounded) until the health report satisfies `pred`.
async fn health_until(
    health: &mut watch::Receiver<HealthReport>,
    pred: impl FnMut(&HealthReport) -> bool,
) -> HealthReport {
    *timeout(Duration::from_secs(600), health.wait_for(pred))
        .await
        .expect("the health report changes within 10 virtual minutes")
        .expect("the table is alive")
}

// ---------------------------------------------------------------------------------------------
// Thresholds and schedule, paused time.

#[tokio::test(start_paused = true)]
async fn down_after_exactly_unhealthy_threshold_failures_and_up_after_healthy_threshold() {
    let peers = table();
    let mut events = peers.subscribe();
    let mut health = peers.watch_health();
    let script = Script::default();
    script.set("db", Mode::Down);
    let start = Instant::now();
    let (task, checker) = exact(script.check())
        .build([peers.peer("db").unwrap()])
        .unwrap();
    let running = tokio::spawn(task);

    health_until(&mut health, |h| h.failed == 1).await;
    assert_eq!(
        start.elapsed(),
        15 * SECOND,
        "interval × unhealthy_threshold"
    );
    let snapshot = peers.snapshot(&"db").unwrap();
    assert_eq!(snapshot.state, PeerState::Ejected);
    assert_eq!(snapshot.ejection_cause, Some(EjectionCause::Check));
    let report = checker.status(&"db").unwrap();
    assert_eq!(report.status, CheckStatus::Down);
    assert_eq!(
        (report.checks, report.failures, report.consecutive_failures),
        (3, 3, 3)
    );
    assert_eq!(report.last_check, Some(start + 15 * SECOND));
    let error = report.last_error.expect("the failure is kept");
    assert_eq!(error.to_string(), "scripted failure");

    // More failures change nothing in the shared state: only transitions do.
    sleep_until(start + 32 * SECOND).await;
    script.set("db", Mode::Up);
    health_until(&mut health, |h| h.failed == 0).await;
    // Failed checks at 5..=30 s, then successes at 35 and 40 s.
    assert_eq!(
        start.elapsed(),
        40 * SECOND,
        "healthy_threshold successes after the fix"
    );
    assert_eq!(peers.snapshot(&"db").unwrap().state, PeerState::Idle);
    assert_eq!(checker.status(&"db").unwrap().status, CheckStatus::Up);
    assert_eq!(
        transitions(&mut events, start),
        [("db", 15 * SECOND, "down"), ("db", 40 * SECOND, "up")]
    );
    let calls: Vec<u64> = script
        .calls("db", start)
        .iter()
        .map(Duration::as_secs)
        .collect();
    assert_eq!(calls, [5, 10, 15, 20, 25, 30, 35, 40]);

    drop(checker);
    running.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_jittered_schedule_stays_within_the_jitter_and_a_seed_replays_it() {
    async fn checks_with_seed(seed: u64) -> Vec<Duration> {
        let peers = table();
        let script = Script::default();
        script.set("db", Mode::Down);
        let start = Instant::now();
        let (task, checker) = Checker::builder(script.check())
            .interval(5 * SECOND)
            .jitter(0.1)
            .seed(seed)
            .build([peers.peer("db").unwrap()])
            .unwrap();
        let running = tokio::spawn(task);
        let mut health = peers.watch_health();
        health_until(&mut health, |h| h.failed == 1).await;
        let marked = start.elapsed();
        drop(checker);
        running.await.unwrap();
        let calls = script.calls("db", start);
        assert_eq!(calls.len(), 3);
        assert_eq!(calls[2], marked, "marked down at the third check");
        calls
    }

    let calls = checks_with_seed(42).await;
    let mut previous = Duration::ZERO;
    for at in &calls {
        let gap = *at - previous;
        assert!(
            (4500..=5500).contains(&gap.as_millis()),
            "{gap:?} between checks is outside 5 s ± 10 %: {calls:?}"
        );
        previous = *at;
    }
    assert!(
        calls.iter().any(|at| at.subsec_nanos() != 0),
        "jittered: {calls:?}"
    );
    assert_eq!(
        checks_with_seed(42).await,
        calls,
        "same seed, same schedule"
    );
    assert_ne!(
        checks_with_seed(43).await,
        calls,
        "another seed, another schedule"
    );
}

#[tokio::test(start_paused = true)]
async fn a_check_that_hangs_fails_at_the_timeout() {
    let peers = table();
    let mut events = peers.subscribe();
    let script = Script::default();
    script.set("db", Mode::Hang);
    let start = Instant::now();
    let (task, checker) = exact(script.check())
        .build([peers.peer("db").unwrap()])
        .unwrap();
    let running = tokio::spawn(task);

    health_until(&mut peers.watch_health(), |h| h.failed == 1).await;
    // Checks start at 5, 10 and 15 s; each is abandoned after the 1 s timeout.
    assert_eq!(start.elapsed(), 16 * SECOND);
    assert_eq!(
        transitions(&mut events, start),
        [("db", 16 * SECOND, "down")]
    );
    let error = checker.status(&"db").unwrap().last_error.unwrap();
    let timed_out = error
        .downcast_ref::<CheckTimedOut>()
        .expect("a CheckTimedOut");
    assert_eq!(timed_out.after(), SECOND);

    drop(checker);
    running.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_check_that_outlasts_its_interval_is_followed_an_interval_after_it_ended() {
    let peers = table();
    let mut events = peers.subscribe();
    let script = Script::default();
    script.set("db", Mode::Hang);
    let start = Instant::now();
    let (task, checker) = exact(script.check())
        .timeout(7 * SECOND)
        .build([peers.peer("db").unwrap()])
        .unwrap();
    let running = tokio::spawn(task);

    health_until(&mut peers.watch_health(), |h| h.failed == 1).await;
    // 5 s → 12 s, then 17 s → 24 s, then 29 s → 36 s: never two checks at once, never back
    // to back.
    let calls: Vec<u64> = script
        .calls("db", start)
        .iter()
        .map(Duration::as_secs)
        .collect();
    assert_eq!(calls, [5, 17, 29]);
    assert_eq!(
        transitions(&mut events, start),
        [("db", 36 * SECOND, "down")]
    );

    drop(checker);
    running.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_slow_peer_does_not_delay_another_peers_checks() {
    let peers = table();
    let mut events = peers.subscribe();
    let script = Script::default();
    script.set("slow", Mode::Hang);
    script.set("fast", Mode::Down);
    let start = Instant::now();
    let (task, checker) = exact(script.check())
        .timeout(4 * SECOND)
        .build([peers.peer("slow").unwrap(), peers.peer("fast").unwrap()])
        .unwrap();
    let running = tokio::spawn(task);

    health_until(&mut peers.watch_health(), |h| h.failed == 2).await;
    let secs = |peer| -> Vec<u64> {
        script
            .calls(peer, start)
            .iter()
            .map(Duration::as_secs)
            .collect()
    };
    assert_eq!(secs("fast"), [5, 10, 15]);
    assert_eq!(secs("slow"), [5, 10, 15]);
    let mut seen = transitions(&mut events, start);
    seen.sort_by_key(|&(_, at, _)| at);
    assert_eq!(
        seen,
        [("fast", 15 * SECOND, "down"), ("slow", 19 * SECOND, "down")]
    );

    drop(checker);
    running.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn dropping_the_last_handle_ends_the_task_and_hands_the_peers_back() {
    let peers = table();
    let script = Script::default();
    script.set("db", Mode::Down);
    let start = Instant::now();
    let (task, checker) = exact(script.check())
        .build([peers.peer("db").unwrap()])
        .unwrap();
    let running = tokio::spawn(task);
    let clone = checker.clone();
    health_until(&mut peers.watch_health(), |h| h.failed == 1).await;

    // One handle gone, one left: still checking.
    drop(checker);
    sleep_until(start + 33 * SECOND).await;
    assert!(!running.is_finished());
    assert!(clone.is_running());
    assert_eq!(clone.status(&"db").unwrap().checks, 6, "5 s, 10 s, … 30 s");

    // The last one gone: the task ends, and the ejection it made with it.
    drop(clone);
    timeout(SECOND, running)
        .await
        .expect("the task ends once the handle is dropped")
        .unwrap();
    assert_eq!(peers.snapshot(&"db").unwrap().state, PeerState::Idle);
    let calls = script.calls.lock().unwrap().len();
    sleep(60 * SECOND).await;
    assert_eq!(
        script.calls.lock().unwrap().len(),
        calls,
        "no check after the end"
    );
}

#[tokio::test(start_paused = true)]
async fn dropping_the_task_stops_the_checks_and_the_handle_notices() {
    let peers = table();
    let script = Script::default();
    let (task, checker) = exact(script.check())
        .build([peers.peer("db").unwrap()])
        .unwrap();
    let running = tokio::spawn(task);
    sleep(6 * SECOND).await;
    assert_eq!(checker.status(&"db").unwrap().checks, 1);
    running.abort();
    let _ = running.await;
    assert!(!checker.is_running());
    assert!(
        !checker.add(peers.peer("other").unwrap()),
        "nothing would check it"
    );
    assert!(checker.status(&"other").is_none());
    sleep(20 * SECOND).await;
    assert_eq!(script.calls("db", Instant::now()).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn peers_are_added_and_removed_at_run_time() {
    let peers = table();
    let mut events = peers.subscribe();
    let script = Script::default();
    script.set("a", Mode::Down);
    script.set("b", Mode::Down);
    let start = Instant::now();
    let (task, checker) = exact(script.check()).build([]).unwrap();
    let running = tokio::spawn(task);
    assert!(checker.statuses().is_empty());

    assert!(checker.add(peers.peer("a").unwrap()));
    assert!(!checker.add(peers.peer("a").unwrap()), "checked already");
    sleep_until(start + 7 * SECOND).await;
    assert!(checker.add(peers.peer("b").unwrap()));

    // `a` goes down at 15 s, `b` (first check 5 s after it was added) at 22 s.
    sleep_until(start + 23 * SECOND).await;
    assert_eq!(
        transitions(&mut events, start),
        [("a", 15 * SECOND, "down"), ("b", 22 * SECOND, "down")]
    );
    let mut checked: Vec<Key> = checker.statuses().into_iter().map(|(k, _)| k).collect();
    checked.sort();
    assert_eq!(checked, ["a", "b"]);

    // Removing `a` stops its checks and ends the ejection they made.
    assert!(checker.remove(&"a"));
    assert!(!checker.remove(&"a"));
    assert!(checker.status(&"a").is_none());
    sleep(SECOND).await;
    assert_eq!(transitions(&mut events, start), [("a", 23 * SECOND, "up")]);
    assert_eq!(peers.snapshot(&"a").unwrap().state, PeerState::Idle);
    let a_checks = script.calls("a", start).len();
    sleep_until(start + 40 * SECOND).await;
    assert_eq!(
        script.calls("a", start).len(),
        a_checks,
        "no more checks of a"
    );
    assert_eq!(
        checker.status(&"b").unwrap().checks,
        6,
        "b goes on: 12 s, 17 s, … 37 s"
    );

    // Added again, `a` starts over.
    assert!(checker.add(peers.peer("a").unwrap()));
    let fresh = checker.status(&"a").unwrap();
    assert_eq!((fresh.status, fresh.checks), (CheckStatus::Up, 0));
    sleep_until(start + 56 * SECOND).await;
    assert_eq!(
        transitions(&mut events, start),
        [("a", 55 * SECOND, "down")]
    );

    drop(checker);
    running.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn watch_health_fires_on_down_and_on_up() {
    let peers = table();
    let script = Script::default();
    let (task, checker) = exact(script.check())
        .build([peers.peer("a").unwrap(), peers.peer("b").unwrap()])
        .unwrap();
    let running = tokio::spawn(task);
    let mut health = peers.watch_health();
    health.borrow_and_update();

    // Checks that pass change nothing (5 s, … 20 s; set between two checks).
    sleep(21 * SECOND).await;
    assert!(!health.has_changed().unwrap());

    script.set("a", Mode::Down);
    timeout(60 * SECOND, health.changed())
        .await
        .unwrap()
        .unwrap();
    let down = *health.borrow_and_update();
    assert_eq!((down.failed, down.total), (1, 2));

    script.set("a", Mode::Up);
    timeout(60 * SECOND, health.changed())
        .await
        .unwrap()
        .unwrap();
    let up = *health.borrow_and_update();
    assert_eq!((up.failed, up.total), (0, 2));

    sleep(30 * SECOND).await;
    assert!(!health.has_changed().unwrap(), "no change, no notification");
    drop(checker);
    running.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn passing_checks_leave_a_passive_ejection_alone_but_a_recovery_ends_it() {
    let peers = table();
    let mut events = peers.subscribe();
    let script = Script::default();
    let db = peers.peer("db").unwrap();
    let start = Instant::now();
    let (task, checker) = exact(script.check()).build([db.clone()]).unwrap();
    let running = tokio::spawn(task);

    // Passive health ejects it for a minute; the checks keep passing: it stays out.
    assert!(db.eject(60 * SECOND));
    sleep_until(start + 31 * SECOND).await;
    assert_eq!(db.state(), PeerState::Ejected);
    assert_eq!(
        peers.snapshot(&"db").unwrap().ejection_cause,
        Some(EjectionCause::Outlier)
    );

    // The checks fail: the ejection becomes the check's, and ends when they pass again.
    script.set("db", Mode::Down);
    sleep_until(start + 46 * SECOND).await; // failures at 35, 40 and 45 s
    assert_eq!(checker.status(&"db").unwrap().status, CheckStatus::Down);
    assert_eq!(
        peers.snapshot(&"db").unwrap().ejection_cause,
        Some(EjectionCause::Check)
    );
    script.set("db", Mode::Up);
    sleep_until(start + 56 * SECOND).await; // successes at 50 and 55 s
    assert_eq!(db.state(), PeerState::Idle);
    // The take-over at 45 s is published: the check has it down now.
    assert_eq!(
        transitions(&mut events, start),
        [
            ("db", Duration::ZERO, "ejected"),
            ("db", 45 * SECOND, "down"),
            ("db", 55 * SECOND, "up")
        ]
    );

    drop(checker);
    running.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_manual_ejection_outlives_the_checks() {
    use redial::peers::Override;

    let peers = table();
    let script = Script::default();
    script.set("db", Mode::Down);
    let db = peers.peer("db").unwrap();
    let (task, checker) = exact(script.check()).build([db.clone()]).unwrap();
    let running = tokio::spawn(task);
    db.set_override(Override::Open);

    sleep(16 * SECOND).await;
    assert_eq!(checker.status(&"db").unwrap().status, CheckStatus::Down);
    script.set("db", Mode::Up);
    sleep(10 * SECOND).await;
    assert_eq!(checker.status(&"db").unwrap().status, CheckStatus::Up);
    let snapshot = peers.snapshot(&"db").unwrap();
    assert_eq!(snapshot.state, PeerState::Ejected);
    assert_eq!(snapshot.ejection_cause, Some(EjectionCause::Manual));

    drop(checker);
    running.await.unwrap();
    assert_eq!(
        db.state(),
        PeerState::Ejected,
        "stopping the checks leaves it too"
    );
}

#[tokio::test]
async fn bad_settings_are_rejected_naming_the_field() {
    let script = Script::default();
    let err = Checker::builder(script.check())
        .interval(Duration::ZERO)
        .build::<Key>([])
        .unwrap_err();
    assert_eq!(err.field(), "interval");
    let err = Checker::builder(script.check())
        .healthy_threshold(0)
        .build::<Key>([])
        .unwrap_err();
    assert_eq!(err.field(), "healthy_threshold");
    let err = Checker::builder(script.check())
        .jitter(f64::INFINITY)
        .build::<Key>([])
        .unwrap_err();
    assert_eq!(err.field(), "jitter");
}

// ---------------------------------------------------------------------------------------------
// Real sockets: real time, 127.0.0.1 only, every wait bounded.

mod real {
    use std::io;
    use std::net::SocketAddr;

    use redial::health::check::TcpCheck;
    use tokio::net::{TcpListener, TcpSocket};
    use tokio::task::JoinHandle;

    use super::*;

    pub(super) const INTERVAL: Duration = Duration::from_millis(50);

    /// Waits for the peer to be marked down (or up); past the interval × threshold the schedule
    /// allows (with one interval for a check just missed and the timeout of one in flight) plus
    /// a margin for a loaded machine, fails.
    pub(super) async fn marked(
        health: &mut watch::Receiver<HealthReport>,
        down: bool,
        threshold: u32,
    ) -> Duration {
        let started = std::time::Instant::now();
        let bound = INTERVAL * (threshold + 1) + INTERVAL + Duration::from_secs(1);
        let want = usize::from(down);
        timeout(bound, health.wait_for(|h| h.failed == want))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "marked {} within {bound:?}",
                    if down { "down" } else { "up" }
                )
            })
            .unwrap();
        started.elapsed()
    }

    pub(super) fn fast<C>(check: C) -> CheckerBuilder<C> {
        Checker::builder(check)
            .interval(INTERVAL)
            .jitter(0.0)
            .timeout(INTERVAL)
            .unhealthy_threshold(3)
            .healthy_threshold(2)
    }

    /// A listener with `SO_REUSEADDR`, so it can take the port back from [`reserve`]; retries
    /// for up to a second while the port is still in use.
    async fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
        let mut last = None;
        for _ in 0..50 {
            let socket = TcpSocket::new_v4()?;
            socket.set_reuseaddr(true)?;
            match socket.bind(addr).and_then(|()| socket.listen(64)) {
                Ok(listener) => return Ok(listener),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
                Err(e) => return Err(e),
            }
            sleep(Duration::from_millis(20)).await;
        }
        Err(last.unwrap_or_else(|| io::Error::other("no bind attempt")))
    }

    /// Holds the port (bound, not listening): connects are refused, nobody else takes it.
    fn reserve(addr: SocketAddr) -> io::Result<TcpSocket> {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        Ok(socket)
    }

    /// Accepts and drops connections until aborted.
    fn serve(listener: TcpListener) -> JoinHandle<()> {
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                drop(stream);
            }
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tcp_check_follows_a_listener_closed_and_reopened_on_the_same_port() {
        let listener = listen(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut server = serve(listener);

        let peers: Peers<SocketAddr> = Peers::new();
        let mut health = peers.watch_health();
        let (task, checker) = fast(TcpCheck::new(|addr: &SocketAddr| *addr))
            .build([peers.peer(addr).unwrap()])
            .unwrap();
        let running = tokio::spawn(task);

        // Up, with a few checks passed.
        timeout(Duration::from_secs(5), async {
            while checker.status(&addr).unwrap().checks < 3 {
                sleep(INTERVAL).await;
            }
        })
        .await
        .expect("three checks within 5 s");
        let report = checker.status(&addr).unwrap();
        assert_eq!((report.status, report.failures), (CheckStatus::Up, 0));

        // Closed: connects are refused.
        server.abort();
        let _ = (&mut server).await;
        let reserved = reserve(addr).unwrap();
        marked(&mut health, true, 3).await;
        let report = checker.status(&addr).unwrap();
        assert_eq!(report.status, CheckStatus::Down);
        assert!(report.consecutive_failures >= 3, "{report:?}");
        let error = report.last_error.unwrap();
        let io = error
            .downcast_ref::<io::Error>()
            .expect("the connect error");
        assert_eq!(io.kind(), io::ErrorKind::ConnectionRefused);

        // Reopened on the same port.
        let listener = listen(addr).await.unwrap();
        drop(reserved);
        let server = serve(listener);
        marked(&mut health, false, 2).await;
        assert_eq!(checker.status(&addr).unwrap().status, CheckStatus::Up);
        assert_eq!(peers.snapshot(&addr).unwrap().state, PeerState::Idle);

        drop(checker);
        timeout(Duration::from_secs(5), running)
            .await
            .expect("the task ends with its handle")
            .unwrap();
        server.abort();
    }
}

#[cfg(feature = "tonic")]
mod grpc {
    use std::net::SocketAddr;

    use redial::health::check::{GrpcCheck, NotServing};
    use tokio::net::TcpListener;
    use tonic::transport::server::TcpIncoming;
    use tonic::transport::{Endpoint, Server};
    use tonic_health::ServingStatus;
    use tonic_health::pb::health_check_response::ServingStatus as Reported;

    use super::real::{INTERVAL, fast, marked};
    use super::*;

    const SERVICE: &str = "redial.test.Echo";

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn grpc_check_follows_the_serving_status() {
        let (reporter, health_service) = tonic_health::server::health_reporter();
        reporter
            .set_service_status(SERVICE, ServingStatus::Serving)
            .await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(
            Server::builder().serve_with_incoming(health_service, TcpIncoming::from(listener)),
        );
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();

        let peers: Peers<SocketAddr> = Peers::new();
        let mut health = peers.watch_health();
        let check = {
            let channel = channel.clone();
            GrpcCheck::new(move |_: &SocketAddr| channel.clone()).service(SERVICE)
        };
        let (task, checker) = fast(check).build([peers.peer(addr).unwrap()]).unwrap();
        let running = tokio::spawn(task);

        timeout(Duration::from_secs(5), async {
            while checker.status(&addr).unwrap().checks < 3 {
                sleep(INTERVAL).await;
            }
        })
        .await
        .expect("three checks within 5 s");
        let report = checker.status(&addr).unwrap();
        assert_eq!(
            (report.status, report.failures),
            (CheckStatus::Up, 0),
            "{report:?}"
        );

        reporter
            .set_service_status(SERVICE, ServingStatus::NotServing)
            .await;
        marked(&mut health, true, 3).await;
        let error = checker.status(&addr).unwrap().last_error.unwrap();
        let not_serving = error.downcast_ref::<NotServing>().expect("a NotServing");
        assert_eq!(
            (not_serving.service(), not_serving.status()),
            (SERVICE, Reported::NotServing)
        );

        reporter
            .set_service_status(SERVICE, ServingStatus::Serving)
            .await;
        marked(&mut health, false, 2).await;
        assert_eq!(checker.status(&addr).unwrap().status, CheckStatus::Up);

        drop(checker);
        timeout(Duration::from_secs(5), running)
            .await
            .expect("the task ends with its handle")
            .unwrap();

        // A service the server does not know is down (the server answers NOT_FOUND).
        let unknown: Peers<SocketAddr> = Peers::new();
        let mut health = unknown.watch_health();
        let check =
            GrpcCheck::new(move |_: &SocketAddr| channel.clone()).service("no.such.Service");
        let (task, checker) = fast(check).build([unknown.peer(addr).unwrap()]).unwrap();
        let running = tokio::spawn(task);
        marked(&mut health, true, 3).await;
        let error = checker.status(&addr).unwrap().last_error.unwrap();
        let status = error
            .downcast_ref::<tonic::Status>()
            .expect("a tonic Status");
        assert_eq!(status.code(), tonic::Code::NotFound);
        drop(checker);
        running.await.unwrap();
        server.abort();
    }
}
