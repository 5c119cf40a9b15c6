//! Scenario 2 of the simulation over real sockets: a black hole in 1 of 3 peers.
//!
//! Three hyper servers on 127.0.0.1, each behind its own fault proxy
//! (`support/fault_proxy.rs`), under the stack the README recommends:
//!
//! ```text
//! TimeoutLayer (DEADLINE) ─ RetryLayer (HttpClassifier) ─ Buffer ─ FailFast (WAIT)
//!   ─ p2c Balance over HealthDiscover
//!     per peer: PenalizedPending ─ HealthLayer (Backpressure) ─ TimeoutLayer (TIMEOUT)
//!               ─ ReconnectLayer (fail_fast(None)) ─ TCP + hyper HTTP/1 handshake
//! ```
//!
//! One proxy turns into a black hole (it accepts, and never answers: what clients send
//! vanishes), either once its connections are up or before the client ever connected (then a
//! connect succeeds and nothing after it is ever answered: that is what the proxy's black hole
//! does to a fresh connection). Asserted, in both cases:
//!
//! - the peer is ejected after `FAILURES` requests into the hole, each failing after
//!   `TIMEOUT`: within `TIMEOUT × FAILURES` (plus a backoff step per reconnect and a slack for
//!   real scheduling) of the hole's start, and not before the timeouts could have run;
//! - while ejected only probes reach it, counted where they arrive (at the proxy, since nothing
//!   gets through to the server): at most one per ejection, none before the ejection's time is
//!   over; the healthy peers are never ejected;
//! - at least 99 % of at least 2 000 requests succeed;
//! - once the hole is gone, a probe restores the peer and it gets traffic again.
//!
//! Real time (never `start_paused` with sockets), 127.0.0.1 only, every loop bounded in count
//! and in time, each test under `CAP`.

#![cfg(feature = "http")]

#[path = "support/balanced_http1.rs"]
mod balanced_http1;
#[path = "support/fault_proxy.rs"]
mod fault_proxy;
#[path = "support/http_server.rs"]
mod http_server;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use redial::backoff::{Backoff, Jitter};
use redial::health::balance::FailFastLayer;
use redial::health::{HealthPolicy, Mode};
use redial::peers::{PeerHandle, PeerState, Peers};
use redial::retry::RetryLayer;
use redial::retry::http::HttpClassifier;
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};
use tower::buffer::Buffer;
use tower::timeout::TimeoutLayer;
use tower::{BoxError, Layer, Service, ServiceBuilder, ServiceExt};

use balanced_http1::{EventLog, PeerStack};
use fault_proxy::FaultProxy;
use http_server::{HELLO, HttpServer};

const MS: Duration = Duration::from_millis(1);
/// No test here may take longer, whatever goes wrong.
const CAP: Duration = Duration::from_secs(30);
/// The caller's deadline for a whole request, retries included.
const DEADLINE: Duration = Duration::from_secs(2);
/// Each attempt's timeout, inside the health layer: a request into the hole fails after it.
const TIMEOUT: Duration = Duration::from_millis(200);
/// Failures in a row that eject a peer.
const FAILURES: u32 = 3;
/// The first ejection; later ones grow by this much, up to `MAX_EJECTION`.
const BASE_EJECTION: Duration = Duration::from_millis(300);
const MAX_EJECTION: Duration = Duration::from_millis(1200);
/// The reconnect backoff's largest step: a connection that never answered is no proof, so
/// each reconnect into the hole waits a step, at most this long.
const BACKOFF_MAX: Duration = Duration::from_millis(100);
/// How long the balancer may have no ready peer before calls fail with `NoHealthyPeers`.
const WAIT: Duration = Duration::from_millis(500);
/// Requests in flight at once: more than the peers can take (one HTTP/1 connection each), so
/// the balancer is always short of a ready peer and sends to whichever becomes ready.
const CONCURRENCY: usize = 6;
/// Real scheduling on 2 shared cores: added to every upper bound on time.
const SLACK: Duration = Duration::from_millis(1000);
/// Requests in all, at least; at least 99 % of them must succeed.
const REQUESTS: usize = 2_000;

async fn capped<F: Future<Output = ()>>(body: F) {
    timeout(CAP, body)
        .await
        .expect("the test finished within its cap");
}

type Req = Request<Full<Bytes>>;

fn get() -> Req {
    Request::get("/")
        .body(Full::new(Bytes::new()))
        .expect("a valid request")
}

/// The whole stack over `handles` (keyed by their proxies' addresses).
fn client(
    peers: &Peers<SocketAddr>,
    handles: &[PeerHandle<SocketAddr>],
) -> impl Service<Req, Response = Response<Bytes>, Error = BoxError, Future: Send> + Clone + Send + 'static
{
    let policy = HealthPolicy::builder()
        .classifier(HttpClassifier::new())
        .consecutive_failures(Some(FAILURES))
        .base_ejection(BASE_EJECTION)
        .max_ejection(MAX_EJECTION)
        .jitter(0.0)
        .probes(1)
        .mode(Mode::Backpressure)
        .build()
        .unwrap();
    let balanced = balanced_http1::balance(
        peers,
        handles,
        PeerStack {
            policy,
            timeout: TIMEOUT,
            connect_timeout: 500 * MS,
            // Failures weigh on a peer's load for about a second: the time scale of this test.
            penalty_decay: 250 * MS,
        },
    );
    let retry = RetryLayer::builder()
        .classifier(HttpClassifier::new())
        .backoff(
            Backoff::builder()
                .initial(10 * MS)
                .max(50 * MS)
                .seed(7)
                .build()
                .unwrap(),
        )
        .max_attempts(3)
        .seed(7)
        .build()
        .unwrap();
    let balanced = FailFastLayer::new(WAIT).health(peers).layer(balanced);
    ServiceBuilder::new()
        .layer(TimeoutLayer::new(DEADLINE))
        .layer(retry)
        .service(Buffer::new(balanced, 64))
}

#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    failed: usize,
    /// The first few failures, for the report.
    errors: Vec<String>,
}

impl Tally {
    fn total(&self) -> usize {
        self.ok + self.failed
    }

    fn record(&mut self, outcome: Result<Response<Bytes>, BoxError>) {
        match outcome {
            Ok(response) if response.status() == StatusCode::OK && response.body() == HELLO => {
                self.ok += 1;
            }
            other => {
                self.failed += 1;
                if self.errors.len() < 10 {
                    self.errors.push(format!("{other:?}"));
                }
            }
        }
    }
}

/// Sends requests through clones of `client`, `CONCURRENCY` at a time, until `done` says so
/// (asked before each request) or `max` were sent. Every request must end within `DEADLINE`
/// and a slack; the whole run within `CAP`.
async fn drive<S>(client: &S, tally: &mut Tally, max: usize, mut done: impl FnMut() -> bool)
where
    S: Service<Req, Response = Response<Bytes>, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    let cap = Instant::now() + CAP;
    let mut in_flight = JoinSet::new();
    let next = async |in_flight: &mut JoinSet<_>| {
        let joined = timeout(DEADLINE + SLACK, in_flight.join_next()).await;
        let outcome = joined.expect("a request outlived its deadline");
        outcome.expect("a request in flight").expect("request task")
    };
    for _ in 0..max {
        if done() {
            break;
        }
        assert!(Instant::now() < cap, "driving took longer than {CAP:?}");
        while in_flight.len() >= CONCURRENCY {
            tally.record(next(&mut in_flight).await);
        }
        in_flight.spawn(client.clone().oneshot(get()));
    }
    while !in_flight.is_empty() {
        tally.record(next(&mut in_flight).await);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Onset {
    /// The hole opens under load, once every peer's connection is up.
    AfterConnect,
    /// The hole is there before the client first connects.
    BeforeConnect,
}

async fn black_hole_in_one_of_three(onset: Onset) {
    let mut servers = Vec::new();
    let mut proxies = Vec::new();
    for _ in 0..3 {
        let server = HttpServer::start().await.unwrap();
        proxies.push(FaultProxy::start(server.addr()).await.unwrap());
        servers.push(server);
    }
    let backoff = Backoff::builder()
        .initial(20 * MS)
        .max(BACKOFF_MAX)
        .jitter(Jitter::Full)
        .unlimited_attempts()
        .seed(7)
        .build()
        .unwrap();
    let peers: Peers<SocketAddr> = Peers::builder()
        .backoff(backoff)
        .event_capacity(1 << 16)
        .seed(7)
        .build()
        .unwrap();
    let log = EventLog::record(&peers);
    let handles: Vec<_> = proxies
        .iter()
        .map(|p| peers.add_static(p.addr()).unwrap())
        .collect();
    let (dark, dark_server) = (&proxies[1], &servers[1]);
    let key = dark.addr();
    dark.record_arrivals(true);
    let mut tally = Tally::default();

    let client = client(&peers, &handles);
    let blackholed_at = Instant::now();
    if onset == Onset::BeforeConnect {
        dark.black_hole(true);
    }
    let served_before = dark_server.served();
    if onset == Onset::AfterConnect {
        // Warm up: every peer connected and answering.
        drive(&client, &mut tally, 300, || false).await;
        assert_eq!(tally.failed, 0, "{tally:?}");
        assert!(servers.iter().all(|s| s.served() > 20), "{tally:?}");
    }
    let (blackholed_at, served_before) = match onset {
        Onset::BeforeConnect => (blackholed_at, served_before),
        Onset::AfterConnect => {
            let at = Instant::now();
            dark.black_hole(true);
            (at, dark_server.served())
        }
    };

    // Through a few ejections: ejected after FAILURES timeouts, then only probes.
    drive(&client, &mut tally, 20_000, || {
        log.ejections(&key).len() >= 3 && blackholed_at.elapsed() >= 2000 * MS
    })
    .await;
    let lit_at = Instant::now();
    dark.black_hole(false);

    let arrived: Vec<Instant> = dark
        .arrivals()
        .into_iter()
        .filter(|&at| at >= blackholed_at)
        .collect();
    let ejected = log.ejections(&key);
    eprintln!(
        "{onset:?}: requests into the hole at {:?}; ejections (from, until) {:?}; {tally:?}",
        arrived
            .iter()
            .map(|&at| at - blackholed_at)
            .collect::<Vec<_>>(),
        ejected
            .iter()
            .map(|&(at, until)| (at - blackholed_at, until - blackholed_at))
            .collect::<Vec<_>>(),
    );
    assert!(ejected.len() >= 3, "{ejected:?}");
    let (first, _) = ejected[0];

    // Ejected by FAILURES requests into the hole, one at a time on the peer's one connection.
    // After the connect, the first of them may have left before the hole opened (its answer
    // is what vanished); then it is not counted here.
    let before = arrived.iter().filter(|&&at| at < first).count();
    let (fewest, least) = match onset {
        Onset::BeforeConnect => (FAILURES as usize, TIMEOUT * FAILURES),
        Onset::AfterConnect => (FAILURES as usize - 1, TIMEOUT * (FAILURES - 1)),
    };
    assert!(
        (fewest..=FAILURES as usize).contains(&before),
        "{before} requests into the hole before the ejection"
    );
    let took = first - blackholed_at;
    assert!(took >= least, "ejected before the timeouts ran: {took:?}");
    assert!(
        took <= TIMEOUT * FAILURES + BACKOFF_MAX * FAILURES + SLACK,
        "ejected {took:?} after the hole opened"
    );
    // Nothing got through to the server, but the one request that may have left before.
    let reached = dark_server.served() - served_before;
    assert!(
        reached <= FAILURES as usize - fewest,
        "{reached} requests reached the server"
    );

    // While ejected: at most one probe per ejection, none before the ejection's time is over.
    for (i, &(at, until)) in ejected.iter().enumerate() {
        let next = ejected.get(i + 1).map_or(lit_at, |e| e.0);
        let probes: Vec<Instant> = arrived
            .iter()
            .copied()
            .filter(|&h| h >= at && h < next)
            .collect();
        assert!(
            probes.len() <= 1,
            "ejection {i} let {} requests through",
            probes.len()
        );
        assert!(
            probes.iter().all(|&h| h >= until),
            "a probe {:?} before ejection {i} ended",
            until - probes[0]
        );
    }
    assert!(arrived.len() <= FAILURES as usize + ejected.len());
    for proxy in &proxies {
        if proxy.addr() != key {
            assert!(
                log.ejections(&proxy.addr()).is_empty(),
                "a healthy peer was ejected"
            );
        }
    }

    // The hole is gone: a probe restores the peer, and it gets traffic again.
    let answered = dark_server.served();
    drive(&client, &mut tally, 20_000, || {
        log.restored_after(&key, lit_at).is_some() && dark_server.served() >= answered + 100
    })
    .await;
    let restored = log.restored_after(&key, lit_at).expect("restored");
    assert!(dark_server.served() >= answered + 100);
    assert_ne!(handles[1].state(), PeerState::Ejected);
    // By the first probe on a connection made after the hole: at the latest, the one after
    // the ejection running when the hole closed, and the one after that if that probe went
    // out on a connection the hole had swallowed.
    let last_until = ejected.last().map_or(lit_at, |e| e.1);
    assert!(
        restored <= last_until.max(lit_at) + MAX_EJECTION + TIMEOUT + SLACK,
        "restored {:?} after the hole closed",
        restored - lit_at
    );

    // At least REQUESTS in all, at least 99 % of them answered.
    let more = REQUESTS.saturating_sub(tally.total());
    drive(&client, &mut tally, more, || false).await;
    assert!(tally.total() >= REQUESTS);
    assert!(
        tally.failed * 100 <= tally.total(),
        "{} of {} failed: {:?}",
        tally.failed,
        tally.total(),
        tally.errors
    );
    assert!(!log.lagged(), "the event log lost events");
}

#[tokio::test]
async fn a_peer_that_black_holes_after_connecting_is_ejected_probed_and_restored() {
    capped(black_hole_in_one_of_three(Onset::AfterConnect)).await;
}

#[tokio::test]
async fn a_peer_black_holed_before_the_first_connect_is_ejected_probed_and_restored() {
    capped(black_hole_in_one_of_three(Onset::BeforeConnect)).await;
}
