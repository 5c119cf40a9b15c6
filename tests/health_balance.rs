//! Balancing over real sockets: three loopback HTTP/1 servers behind tower's p2c, each peer's
//! stack `PenalizedPending ─ HealthLayer (Backpressure) ─ timeout ─ ReconnectLayer
//! (fail_fast(None)) ─ connector`, the peers given to p2c by `HealthDiscover`, the whole under
//! `FailFast`.
//!
//! One server is black-holed mid-run (it accepts and reads requests, and never answers): it is
//! ejected after exactly `FAILURES` timed-out requests, then receives only probes, at most one
//! per ejection and none before the ejection's time is over; at least 99 % of 2 000 requests
//! succeed; when it answers again a probe restores it and it gets traffic again. Then all three
//! stop: calls fail with `NoHealthyPeers` once the fail-fast wait is over, and succeed again
//! after a restart.
//!
//! Real time (never `start_paused` with sockets), 127.0.0.1 only, every loop bounded in count
//! and time (`TEST_CAP`).

#[path = "support/http_server.rs"]
mod http_server;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use redial::backoff::{Backoff, Jitter};
use redial::event::{Event, EventKind};
use redial::health::balance::{
    FailFastLayer, HealthDiscover, NoHealthyPeers, PenalizedPendingLayer,
};
use redial::health::{HealthLayer, HealthPolicy, Mode};
use redial::peers::{PeerHandle, PeerState, Peers};
use redial::reconnect::ReconnectLayer;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, sleep, timeout};
use tower::balance::p2c::Balance;
use tower::timeout::TimeoutLayer;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt, service_fn};

const MS: Duration = Duration::from_millis(1);
/// No step of the test may take longer than this, whatever goes wrong.
const TEST_CAP: Duration = Duration::from_secs(15);
/// Each request's timeout, inside the health layer: a black-holed request fails after it.
const TIMEOUT: Duration = Duration::from_millis(200);
/// Failures in a row that eject a peer.
const FAILURES: u32 = 3;
/// The first ejection; later ones grow by this much, up to `MAX_EJECTION`.
const BASE_EJECTION: Duration = Duration::from_millis(300);
const MAX_EJECTION: Duration = Duration::from_millis(1200);
/// How long the balancer may have no ready peer before calls fail with `NoHealthyPeers`.
const WAIT: Duration = Duration::from_millis(500);
/// Requests in flight at once: more than the peers can take (one HTTP/1 connection each), so
/// the balancer is always short of a ready peer and sends to whichever becomes ready.
const CONCURRENCY: usize = 6;
/// How long a server takes to answer.
const SERVICE_TIME: Duration = Duration::from_millis(1);

// ---------------------------------------------------------------------------------------------
// The servers.

/// A hyper HTTP/1 server on 127.0.0.1 that counts what it receives and can switch to black-hole
/// mode (accept, read the request, never answer), stop, and start again on the same port.
struct Server {
    addr: SocketAddr,
    state: Arc<ServerState>,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
    /// Holds the port while stopped, so connections are refused and nobody takes it.
    reserved: Option<TcpSocket>,
}

#[derive(Default)]
struct ServerState {
    answered: AtomicUsize,
    black_hole: AtomicBool,
    /// When each request that reached the server in black-hole mode arrived.
    held: Mutex<Vec<Instant>>,
}

impl Server {
    async fn start() -> io::Result<Self> {
        let listener = http_server::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let mut server = Self {
            addr: listener.local_addr()?,
            state: Arc::default(),
            running: None,
            reserved: None,
        };
        server.run(listener);
        Ok(server)
    }

    fn run(&mut self, listener: TcpListener) {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(serve(listener, stopped, Arc::clone(&self.state)));
        self.running = Some((stop, task));
    }

    fn answered(&self) -> usize {
        self.state.answered.load(Ordering::SeqCst)
    }

    fn held(&self) -> Vec<Instant> {
        self.state.held.lock().unwrap().clone()
    }

    fn black_hole(&self, on: bool) {
        self.state.black_hole.store(on, Ordering::SeqCst);
    }

    /// Stops listening and closes every connection, as a crash would; keeps the port.
    async fn stop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            let _ = stop.send(());
            timeout(TEST_CAP, task).await.unwrap().unwrap();
            self.reserved = Some(http_server::reserve(self.addr).unwrap());
        }
    }

    async fn restart(&mut self) {
        self.stop().await;
        let listener = http_server::bind(self.addr).await.unwrap();
        self.reserved = None;
        self.run(listener);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some((_, task)) = self.running.take() {
            task.abort();
        }
    }
}

async fn serve(listener: TcpListener, mut stop: oneshot::Receiver<()>, state: Arc<ServerState>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let state = Arc::clone(&state);
                connections.spawn(async move {
                    let answer = hyper::service::service_fn(move |_: Request<Incoming>| {
                        let state = Arc::clone(&state);
                        async move {
                            if state.black_hole.load(Ordering::SeqCst) {
                                state.held.lock().unwrap().push(Instant::now());
                                std::future::pending::<()>().await;
                            }
                            sleep(SERVICE_TIME).await;
                            state.answered.fetch_add(1, Ordering::SeqCst);
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("hello"))))
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), answer)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    // Dropping each connection's task closes its socket.
    connections.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// The client.

/// One HTTP/1 connection as a `tower::Service`: hyper's `SendRequest`, reading whole bodies.
/// Ready only while no request is in flight on it.
struct Http1(SendRequest<Empty<Bytes>>);

impl Service<Request<Empty<Bytes>>> for Http1 {
    type Response = Bytes;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Bytes, hyper::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Empty<Bytes>>) -> Self::Future {
        let response = self.0.send_request(request);
        Box::pin(async move { Ok(response.await?.into_body().collect().await?.to_bytes()) })
    }
}

fn request() -> Request<Empty<Bytes>> {
    Request::new(Empty::new())
}

/// The balanced client over `handles`, as the module documentation composes it.
fn client(
    peers: &Peers<SocketAddr>,
    handles: &[PeerHandle<SocketAddr>],
) -> impl Service<Request<Empty<Bytes>>, Response = Bytes, Error = BoxError, Future: Send + 'static>
+ use<> {
    let connector = service_fn(|addr: SocketAddr| async move {
        let io = TcpStream::connect(addr).await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
        tokio::spawn(connection);
        Ok::<_, BoxError>(Http1(sender))
    });
    let policy = HealthPolicy::builder()
        .consecutive_failures(Some(FAILURES))
        .base_ejection(BASE_EJECTION)
        .max_ejection(MAX_EJECTION)
        .jitter(0.0)
        .probes(1)
        .mode(Mode::Backpressure)
        .build()
        .unwrap();
    // Failures weigh on a peer's load for about a second: the time scale of this test.
    let load = PenalizedPendingLayer::builder()
        .decay(250 * MS)
        .build()
        .unwrap();
    let discover = HealthDiscover::new(peers, handles.iter().cloned(), move |peer| {
        let reconnect = ReconnectLayer::builder(peer.clone(), *peer.key())
            .connect_timeout(Duration::from_millis(500))
            .fail_fast(None)
            .build()
            .unwrap();
        ServiceBuilder::new()
            .layer(load.clone())
            .layer(HealthLayer::new(peer.clone(), policy.clone()))
            .layer(TimeoutLayer::new(TIMEOUT))
            .layer(reconnect)
            .service(connector)
    });
    ServiceBuilder::new()
        .layer(FailFastLayer::new(WAIT).health(peers))
        .service(Balance::new(discover))
}

#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    failed: usize,
}

impl Tally {
    fn total(&self) -> usize {
        self.ok + self.failed
    }
}

/// Sends requests, `CONCURRENCY` at a time, until `done` says so (checked between requests) or
/// `max` were sent; bounded by `TEST_CAP`.
async fn drive<S>(
    client: &mut S,
    tally: &mut Tally,
    max: usize,
    mut done: impl FnMut(&Tally) -> bool,
) where
    S: Service<Request<Empty<Bytes>>, Response = Bytes, Error = BoxError>,
    S::Future: Send + 'static,
{
    let cap = Instant::now() + TEST_CAP;
    let mut in_flight = JoinSet::new();
    let record = |tally: &mut Tally, outcome: Result<Result<Bytes, BoxError>, _>| match outcome {
        Ok(Ok(body)) if body == "hello" => tally.ok += 1,
        Ok(_) => tally.failed += 1,
        Err(join) => panic!("request task: {join}"),
    };
    for _ in 0..max {
        if done(tally) {
            break;
        }
        assert!(
            Instant::now() < cap,
            "driving took longer than {TEST_CAP:?}: {tally:?}"
        );
        while in_flight.len() >= CONCURRENCY {
            let outcome = timeout(TEST_CAP, in_flight.join_next())
                .await
                .unwrap()
                .unwrap();
            record(tally, outcome);
        }
        let ready = timeout(TEST_CAP, client.ready()).await.unwrap().unwrap();
        in_flight.spawn(ready.call(request()));
    }
    while let Some(outcome) = timeout(TEST_CAP, in_flight.join_next()).await.unwrap() {
        record(tally, outcome);
    }
}

/// Keeps every event of the table, as it happens.
fn record_events(peers: &Peers<SocketAddr>) -> Arc<Mutex<Vec<Event<SocketAddr>>>> {
    let log: Arc<Mutex<Vec<Event<SocketAddr>>>> = Arc::default();
    let mut events = peers.subscribe();
    let sink = Arc::clone(&log);
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) => sink.lock().unwrap().push(event),
                Err(redial::event::RecvError::Closed) => break,
                Err(lagged) => panic!("event log: {lagged}"),
            }
        }
    });
    log
}

/// When `peer` was ejected, and until when, in order.
fn ejections(log: &Mutex<Vec<Event<SocketAddr>>>, peer: SocketAddr) -> Vec<(Instant, Instant)> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|e| e.peer == peer)
        .filter_map(|e| match e.kind {
            EventKind::Ejected {
                duration: Some(d), ..
            } => Some((e.at, e.at + d)),
            _ => None,
        })
        .collect()
}

fn restored(log: &Mutex<Vec<Event<SocketAddr>>>, peer: SocketAddr) -> Option<Instant> {
    log.lock()
        .unwrap()
        .iter()
        .find(|e| e.peer == peer && matches!(e.kind, EventKind::Restored))
        .map(|e| e.at)
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_black_holed_peer_is_ejected_probed_and_restored_and_no_peer_fails_fast() {
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(Server::start().await.unwrap());
    }
    let backoff = Backoff::builder()
        .initial(20 * MS)
        .max(200 * MS)
        .jitter(Jitter::Full)
        .unlimited_attempts()
        .build()
        .unwrap();
    let peers: Peers<SocketAddr> = Peers::builder()
        .backoff(backoff)
        .event_capacity(1 << 16)
        .build()
        .unwrap();
    let log = record_events(&peers);
    let handles: Vec<_> = servers
        .iter()
        .map(|s| peers.add_static(s.addr).unwrap())
        .collect();
    let mut client = client(&peers, &handles);
    let mut tally = Tally::default();

    // Warm up: every peer connected and answering.
    drive(&mut client, &mut tally, 400, |_| false).await;
    assert_eq!(tally.failed, 0, "{tally:?}");
    assert!(servers.iter().all(|s| s.answered() > 20));

    // Black hole: ejected after FAILURES timeouts in a row; then only probes. Run through a
    // few ejections.
    let dark = &servers[1];
    let key = dark.addr;
    let blackholed_at = Instant::now();
    dark.black_hole(true);
    drive(&mut client, &mut tally, 20_000, |_| {
        ejections(&log, key).len() >= 3 && blackholed_at.elapsed() >= Duration::from_secs(2)
    })
    .await;
    let lit_at = Instant::now();
    dark.black_hole(false);

    let held = dark.held();
    let ejected = ejections(&log, key);
    eprintln!(
        "black hole: requests held at {:?}; ejections (from, until) {:?}; {tally:?}",
        held.iter().map(|h| *h - blackholed_at).collect::<Vec<_>>(),
        ejected
            .iter()
            .map(|e| (e.0 - blackholed_at, e.1 - blackholed_at))
            .collect::<Vec<_>>()
    );
    assert!(ejected.len() >= 3, "{ejected:?}");
    let (first, _) = ejected[0];
    let before: Vec<&Instant> = held.iter().filter(|&&at| at < first).collect();
    assert_eq!(
        before.len(),
        FAILURES as usize,
        "ejected after exactly {FAILURES} timeouts"
    );
    // The ejection came with the last of those timeouts, within timeout × N of the first
    // (plus the reconnects between them: a connection that never answered is not proof, so
    // each reconnect waits a backoff step of at most 200 ms).
    let last = *before[before.len() - 1];
    // (That request left the client a little before it reached the server.)
    assert!(
        first - last >= TIMEOUT - 50 * MS,
        "ejected by a timeout: {:?}",
        first - last
    );
    let span = first - *before[0];
    assert!(span <= TIMEOUT * FAILURES + 2 * 200 * MS, "{span:?}");
    assert!(first - blackholed_at <= TIMEOUT * FAILURES + 3 * 200 * MS + 500 * MS);
    // After it: at most one probe per ejection, never before the ejection's time was over.
    for (i, &(at, until)) in ejected.iter().enumerate() {
        let next = ejected.get(i + 1).map_or(lit_at, |e| e.0);
        let probes: Vec<&Instant> = held.iter().filter(|&&h| h >= at && h < next).collect();
        assert!(
            probes.len() <= 1,
            "ejection {i} let {} requests through",
            probes.len()
        );
        assert!(
            probes.iter().all(|&&h| h >= until),
            "probe before the ejection ended"
        );
    }
    assert!(held.len() < FAILURES as usize + ejected.len() + 1);
    for (i, s) in servers.iter().enumerate() {
        if i != 1 {
            assert!(
                ejections(&log, s.addr).is_empty(),
                "a healthy peer was ejected"
            );
        }
    }

    // It answers again: the next probe restores it, and it gets traffic again.
    let answered = dark.answered();
    drive(&mut client, &mut tally, 20_000, |_| {
        restored(&log, key).is_some() && dark.answered() >= answered + 100
    })
    .await;
    assert!(restored(&log, key).is_some());
    assert!(dark.answered() >= answered + 100);
    assert_ne!(handles[1].state(), PeerState::Ejected);

    // At least 2 000 requests in all, at least 99 % of them answered.
    let more = 2_000usize.saturating_sub(tally.total());
    drive(&mut client, &mut tally, more, |_| false).await;
    assert!(tally.total() >= 2_000);
    assert!(
        tally.failed * 100 <= tally.total(),
        "{} of {} failed",
        tally.failed,
        tally.total()
    );

    // Every server down: calls fail with NoHealthyPeers once the wait is over, and from then
    // on at once.
    for server in &mut servers {
        server.stop().await;
    }
    let stopped_at = Instant::now();
    let mut first_refusal = None;
    let mut other_errors = 0;
    for _ in 0..20 {
        let started = Instant::now();
        let ready = timeout(TEST_CAP, client.ready()).await.unwrap().unwrap();
        let error = timeout(TEST_CAP, ready.call(request()))
            .await
            .unwrap()
            .unwrap_err();
        if error.is::<NoHealthyPeers>() {
            match first_refusal {
                None => first_refusal = Some(Instant::now()),
                // Already failing: no new wait.
                Some(_) => assert!(started.elapsed() < WAIT, "{:?}", started.elapsed()),
            }
        } else {
            // A request already on a connection the server just closed.
            other_errors += 1;
            assert!(other_errors <= 3, "{error}");
        }
        if first_refusal.is_some_and(|at| at.elapsed() > 100 * MS) {
            break;
        }
        sleep(20 * MS).await;
    }
    let refused_at = first_refusal.expect("NoHealthyPeers");
    assert!(
        refused_at - stopped_at >= WAIT,
        "failed before the wait was over"
    );
    assert!(
        refused_at - stopped_at <= WAIT + 500 * MS,
        "{:?}",
        refused_at - stopped_at
    );

    // Back: calls succeed again, as soon as a peer has reconnected (one backoff step).
    for server in &mut servers {
        server.restart().await;
    }
    let restarted_at = Instant::now();
    let mut recovered = false;
    while restarted_at.elapsed() < Duration::from_secs(5) {
        let ready = timeout(TEST_CAP, client.ready()).await.unwrap().unwrap();
        if timeout(TEST_CAP, ready.call(request()))
            .await
            .unwrap()
            .is_ok()
        {
            recovered = true;
            break;
        }
        sleep(20 * MS).await;
    }
    assert!(recovered, "no success within 5 s of the restart");
    let mut after = Tally::default();
    drive(&mut client, &mut after, 200, |_| false).await;
    assert_eq!(after.failed, 0, "{after:?}");
}
