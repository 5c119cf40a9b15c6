//! Scenario 2 of the simulation over real sockets: a black hole in 1 of 3 peers.
//!
//! Three servers on 127.0.0.1 (hyper HTTP/1, or tonic gRPC health over HTTP/2), each behind its
//! own fault proxy (`support/fault_proxy.rs`), under the stack the README recommends:
//!
//! ```text
//! TimeoutLayer (DEADLINE) ─ RetryLayer (HttpClassifier, or GrpcClassifier) ─ Buffer
//!   ─ FailFast (WAIT) ─ p2c Balance over HealthDiscover
//!     per peer: PenalizedPending ─ HealthLayer (Backpressure) ─ TimeoutLayer (TIMEOUT)
//!               ─ ReconnectLayer (fail_fast(None)) ─ TCP + hyper HTTP/1 or HTTP/2 handshake
//! ```
//!
//! (For gRPC, tonic's generated client sits on top, and the retry layer keeps each request's
//! body to replay it.)
//!
//! One proxy turns into a black hole (it accepts, and never answers: what clients send
//! vanishes), either once its connections are up or before the client ever connected (then a
//! connect succeeds and nothing after it is ever answered: that is what the proxy's black hole
//! does to a fresh connection). Asserted, for each protocol and onset:
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
//! HTTP/1 carries one request at a time on the peer's one connection, so the count before the
//! ejection is exact. HTTP/2 carries several: more may go into the hole before the ejection,
//! and one the balancer sent just before it may reach the proxy a moment after
//! (`IN_FLIGHT_GRACE`). A timed-out HTTP/2 request resets its stream only, so the connection
//! into the hole would stay forever; keep-alive pings (`KEEP_ALIVE`) find it dead.
//!
//! Real time (never `start_paused` with sockets), 127.0.0.1 only, every loop bounded in count
//! and in time, each test under `CAP`.

#![cfg(feature = "http")]

#[path = "support/balanced.rs"]
mod balanced;
#[path = "support/bounded.rs"]
mod bounded;
#[path = "support/fault_proxy.rs"]
mod fault_proxy;
#[path = "support/http_server.rs"]
mod http_server;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
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

use balanced::{EventLog, PeerStack};
use bounded::within;
use fault_proxy::{Count, FaultProxy};
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
/// Requests in flight at once: more than the HTTP/1 peers can take (one connection each), so
/// the balancer is always short of a ready peer and sends to whichever becomes ready.
const CONCURRENCY: usize = 6;
/// Real scheduling on 2 shared cores: added to every upper bound on time.
const SLACK: Duration = Duration::from_millis(1000);
/// Requests in all, at least; at least 99 % of them must succeed.
const REQUESTS: usize = 2_000;
/// HTTP/2 keep-alive: a ping this often, answered within as long.
#[cfg(feature = "tonic")]
const KEEP_ALIVE: Duration = Duration::from_millis(100);
/// HTTP/2: how long after an ejection a request the balancer sent before it may still reach
/// the proxy (it is written by the connection's task, read by the proxy's).
const IN_FLIGHT_GRACE: Duration = Duration::from_millis(50);

// ---------------------------------------------------------------------------------------------
// What differs between the protocols: the servers, and how a request goes through the stack.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    /// hyper servers, hyper HTTP/1 connections.
    Http1,
    /// tonic servers (grpc.health.v1), tonic's client over hyper HTTP/2 connections.
    #[cfg(feature = "tonic")]
    Grpc,
}

impl Proto {
    /// Whether one connection carries several requests at once.
    fn multiplexed(self) -> bool {
        match self {
            Proto::Http1 => false,
            #[cfg(feature = "tonic")]
            Proto::Grpc => true,
        }
    }

    /// How the proxy tells requests apart.
    fn count(self) -> Count {
        match self {
            Proto::Http1 => Count::Chunks,
            #[cfg(feature = "tonic")]
            Proto::Grpc => Count::Http2Requests,
        }
    }

    async fn server(self) -> Upstream {
        match self {
            Proto::Http1 => {
                let server = HttpServer::start().await.unwrap();
                Upstream {
                    addr: server.addr(),
                    served: Box::new(move || server.served()),
                }
            }
            #[cfg(feature = "tonic")]
            Proto::Grpc => grpc::server().await,
        }
    }

    fn sender(self, peers: &Peers<SocketAddr>, handles: &[PeerHandle<SocketAddr>]) -> Sender {
        match self {
            Proto::Http1 => http1_sender(peers, handles),
            #[cfg(feature = "tonic")]
            Proto::Grpc => grpc::sender(peers, handles),
        }
    }
}

/// A server on 127.0.0.1, and how many requests reached it.
struct Upstream {
    addr: SocketAddr,
    served: Box<dyn Fn() -> usize + Send + Sync>,
}

/// One request through (a clone of) the whole stack: `Ok` if it was answered as expected.
type Sender =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// Each peer's stack, for the balancer: ejected after `FAILURES` in a row as `classifier` counts
/// them, held back (not refused) while ejected, one probe at a time.
fn peer_stack<C>(classifier: C) -> PeerStack<C> {
    let policy = HealthPolicy::builder()
        .classifier(classifier)
        .consecutive_failures(Some(FAILURES))
        .base_ejection(BASE_EJECTION)
        .max_ejection(MAX_EJECTION)
        .jitter(0.0)
        .probes(1)
        .mode(Mode::Backpressure)
        .build()
        .unwrap();
    PeerStack {
        policy,
        timeout: TIMEOUT,
        connect_timeout: 500 * MS,
        // Failures weigh on a peer's load for about a second: the time scale of this test.
        penalty_decay: 250 * MS,
    }
}

/// Retries at most twice, soon: a request that timed out in the hole goes to another peer.
fn retry<C>(classifier: C) -> RetryLayer<C> {
    let backoff = Backoff::builder().initial(10 * MS).max(50 * MS).seed(7);
    RetryLayer::builder()
        .classifier(classifier)
        .backoff(backoff.build().unwrap())
        .max_attempts(3)
        .seed(7)
        .build()
        .unwrap()
}

/// What sits between the retry layer and the balancer: a buffer (retry clones its service per
/// attempt) over the fail-fast layer.
fn buffered<Req, S>(
    peers: &Peers<SocketAddr>,
    balanced: S,
) -> impl Service<Req, Response = S::Response, Error = BoxError, Future: Send> + Clone + Send + 'static
where
    Req: Send + 'static,
    S: Service<Req, Error = BoxError> + Send + 'static,
    S::Future: Send,
    S::Response: Send + 'static,
{
    Buffer::new(FailFastLayer::new(WAIT).health(peers).layer(balanced), 64)
}

fn http1_sender(peers: &Peers<SocketAddr>, handles: &[PeerHandle<SocketAddr>]) -> Sender {
    let connector = balanced::http1_connector::<Full<Bytes>>();
    let balanced = balanced::balance(peers, handles, peer_stack(HttpClassifier::new()), connector);
    let client = ServiceBuilder::new()
        .layer(TimeoutLayer::new(DEADLINE))
        .layer(retry(HttpClassifier::new()))
        .service(buffered(peers, balanced));
    Arc::new(move || {
        let request = Request::get("/").body(Full::new(Bytes::new())).unwrap();
        let exchange = client.clone().oneshot(request);
        Box::pin(async move {
            match exchange.await {
                Ok(response) if response.status() == StatusCode::OK && response.body() == HELLO => {
                    Ok(())
                }
                other => Err(format!("{other:?}")),
            }
        })
    })
}

#[cfg(feature = "tonic")]
mod grpc {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use redial::retry::grpc::GrpcClassifier;
    use redial::retry::http::{ReplayBody, ReplayBodyLayer};
    use tonic::body::Body;
    use tonic::transport::Server;
    use tonic::transport::server::TcpIncoming;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tower::util::MapRequestLayer;

    use super::*;

    /// A tonic server of `grpc.health.v1` (every service serving), counting the requests that
    /// reach it.
    pub async fn server() -> Upstream {
        let (_, health) = tonic_health::server::health_reporter();
        let served = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&served);
        let count = MapRequestLayer::new(move |request: Request<Body>| {
            counter.fetch_add(1, Ordering::SeqCst);
            request
        });
        let listener = http_server::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        // Ends with the test's runtime.
        tokio::spawn(
            Server::builder()
                .layer(count)
                .serve_with_incoming(health, TcpIncoming::from(listener)),
        );
        Upstream {
            addr,
            served: Box::new(move || served.load(Ordering::SeqCst)),
        }
    }

    pub fn sender(peers: &Peers<SocketAddr>, handles: &[PeerHandle<SocketAddr>]) -> Sender {
        let connector = balanced::http2_connector::<Body>(Some(KEEP_ALIVE));
        let balanced =
            balanced::balance(peers, handles, peer_stack(GrpcClassifier::new()), connector);
        // A health check may be sent again. The body layer keeps each request's encoded
        // message for a retry; the connections take tonic's body, so the replayable one is
        // boxed back into one under the retry.
        let stack = ServiceBuilder::new()
            .layer(TimeoutLayer::new(DEADLINE))
            .layer(ReplayBodyLayer::new())
            .layer(retry(GrpcClassifier::new().idempotent(true)))
            .map_request(|request: Request<ReplayBody<Body>>| request.map(Body::new))
            .service(buffered(peers, balanced));
        let client = HealthClient::new(stack);
        Arc::new(move || {
            let mut client = client.clone();
            Box::pin(async move {
                let request = HealthCheckRequest {
                    service: String::new(),
                };
                match client.check(request).await {
                    Ok(response) if response.get_ref().status() == ServingStatus::Serving => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            })
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The load and its accounting.

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

    fn record(&mut self, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => self.ok += 1,
            Err(error) => {
                self.failed += 1;
                if self.errors.len() < 10 {
                    self.errors.push(error);
                }
            }
        }
    }
}

/// Sends requests, `CONCURRENCY` at a time, until `done` says so (asked before each request) or
/// `max` were sent. Every request must end within `DEADLINE` and a slack; the whole run within
/// `CAP`.
async fn drive(send: &Sender, tally: &mut Tally, max: usize, mut done: impl FnMut() -> bool) {
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
        in_flight.spawn(send());
    }
    while !in_flight.is_empty() {
        tally.record(next(&mut in_flight).await);
    }
}

// ---------------------------------------------------------------------------------------------
// The scenario.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Onset {
    /// The hole opens under load, once every peer's connection is up.
    AfterConnect,
    /// The hole is there before the client first connects.
    BeforeConnect,
}

async fn black_hole_in_one_of_three(proto: Proto, onset: Onset) {
    let mut servers = Vec::new();
    let mut proxies = Vec::new();
    for _ in 0..3 {
        let server = proto.server().await;
        proxies.push(FaultProxy::start(server.addr).await.unwrap());
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
    let (dark, served) = (&proxies[1], &servers[1].served);
    let key = dark.addr();
    dark.record_arrivals(Some(proto.count()));
    let mut tally = Tally::default();

    let send = proto.sender(&peers, &handles);
    let blackholed_at = Instant::now();
    if onset == Onset::BeforeConnect {
        dark.black_hole(true);
    }
    let served_before = served();
    if onset == Onset::AfterConnect {
        // Warm up: every peer connected and answering.
        drive(&send, &mut tally, 300, || false).await;
        assert_eq!(tally.failed, 0, "{tally:?}");
        assert!(servers.iter().all(|s| (s.served)() > 20), "{tally:?}");
        // What the proxy counts is what reached the server: each request once.
        let counted = dark.arrivals().len();
        assert_eq!(counted, served() - served_before, "requests counted");
    }
    let (blackholed_at, served_before) = match onset {
        Onset::BeforeConnect => (blackholed_at, served_before),
        Onset::AfterConnect => {
            let at = Instant::now();
            dark.black_hole(true);
            (at, served())
        }
    };

    // Through a few ejections: ejected after FAILURES timeouts, then only probes.
    drive(&send, &mut tally, 20_000, || {
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
        "{proto:?} {onset:?}: requests into the hole at {:?}; ejections (from, until) {:?}; \
         {tally:?}",
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

    // Ejected by FAILURES requests into the hole. After the connect, the first of them may
    // have left before the hole opened (its answer is what vanished; over HTTP/2, several may
    // have); such a request is not counted here, and may have reached the server.
    let failures = FAILURES as usize;
    let grace = if proto.multiplexed() {
        IN_FLIGHT_GRACE
    } else {
        Duration::ZERO
    };
    let (fewest, most, least, reached_at_most) = match (proto.multiplexed(), onset) {
        (false, Onset::BeforeConnect) => (failures, failures, TIMEOUT * FAILURES, 0),
        (false, Onset::AfterConnect) => (failures - 1, failures, TIMEOUT * (FAILURES - 1), 1),
        (true, Onset::BeforeConnect) => (failures, failures + CONCURRENCY, TIMEOUT, 0),
        (true, Onset::AfterConnect) => (1, failures + CONCURRENCY, TIMEOUT / 2, CONCURRENCY),
    };
    let before = arrived.iter().filter(|&&at| at < first + grace).count();
    assert!(
        (fewest..=most).contains(&before),
        "{before} requests into the hole before the ejection"
    );
    let took = first - blackholed_at;
    assert!(took >= least, "ejected before the timeouts ran: {took:?}");
    assert!(
        took <= TIMEOUT * FAILURES + BACKOFF_MAX * FAILURES + SLACK,
        "ejected {took:?} after the hole opened"
    );
    let reached = served() - served_before;
    assert!(
        reached <= reached_at_most,
        "{reached} requests reached the server"
    );

    // While ejected: at most one probe per ejection, none before the ejection's time is over.
    for (i, &(at, until)) in ejected.iter().enumerate() {
        let next = ejected.get(i + 1).map_or(lit_at, |e| e.0);
        let probes: Vec<Instant> = arrived
            .iter()
            .copied()
            .filter(|&h| h >= at + grace && h < next)
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
    for proxy in &proxies {
        if proxy.addr() != key {
            assert!(
                log.ejections(&proxy.addr()).is_empty(),
                "a healthy peer was ejected"
            );
        }
    }

    // The hole is gone: a probe restores the peer, and it gets traffic again.
    let answered = served();
    drive(&send, &mut tally, 20_000, || {
        log.restored_after(&key, lit_at).is_some() && served() >= answered + 100
    })
    .await;
    let restored = log.restored_after(&key, lit_at).expect("restored");
    assert!(served() >= answered + 100);
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
    drive(&send, &mut tally, more, || false).await;
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
async fn http1_a_peer_that_black_holes_after_connecting_is_ejected_probed_and_restored() {
    within(
        CAP,
        "the test",
        black_hole_in_one_of_three(Proto::Http1, Onset::AfterConnect),
    )
    .await;
}

#[tokio::test]
async fn http1_a_peer_black_holed_before_the_first_connect_is_ejected_probed_and_restored() {
    within(
        CAP,
        "the test",
        black_hole_in_one_of_three(Proto::Http1, Onset::BeforeConnect),
    )
    .await;
}

#[cfg(feature = "tonic")]
#[tokio::test]
async fn grpc_a_peer_that_black_holes_after_connecting_is_ejected_probed_and_restored() {
    within(
        CAP,
        "the test",
        black_hole_in_one_of_three(Proto::Grpc, Onset::AfterConnect),
    )
    .await;
}

#[cfg(feature = "tonic")]
#[tokio::test]
async fn grpc_a_peer_black_holed_before_the_first_connect_is_ejected_probed_and_restored() {
    within(
        CAP,
        "the test",
        black_hole_in_one_of_three(Proto::Grpc, Onset::BeforeConnect),
    )
    .await;
}
