//! The reconnecting connector over real loopback sockets (DESIGN §6.4), plugged into the clients
//! it is made for: hyper-util's legacy `Client`, reqwest's `connector_layer` and tonic's
//! `connect_with_connector`. Servers stop and restart on the same port; the tests check that
//! the client recovers within one backoff step of the restart, that the process made no more
//! connect attempts than the peer's schedule allows (DESIGN §3.10: one process, one probe), that
//! flapping never resets the backoff (§3.3), and that a hanging connect times out, at the latest
//! at the call's deadline.
//!
//! Real time throughout (never `start_paused` with sockets); every wait is bounded; nothing
//! leaves 127.0.0.1. The backoff is small (50 ms doubling to 400 ms, no jitter) so the whole file
//! runs in a few seconds.

#![cfg(feature = "hyper")]

#[path = "support/bounded.rs"]
mod bounded;
#[path = "support/http_server.rs"]
mod http_server;

use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use redial::backoff::{Backoff, Jitter};
use redial::peers::{PeerKey, PeerSnapshot, PeerState, Peers};
use redial::reconnect::ConnectTimeout;
use redial::reconnect::connector::{ConnectLayer, FixedKey, TargetKey, UriKey};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};
use tower::{BoxError, Layer, Service, ServiceExt};

use bounded::{eventually, within};
use http_server::{HELLO, HttpServer};

const MS: Duration = Duration::from_millis(1);
/// The schedule: 50, 100, 200, 400, 400, ... ms.
const INITIAL: Duration = Duration::from_millis(50);
const MAX: Duration = Duration::from_millis(400);
/// How long a server stays down in the restart tests.
const DOWN_FOR: Duration = Duration::from_millis(1500);
/// The first success must come within this long of a restart: one backoff step at most, plus
/// the connect and the request.
const RECOVERY: Duration = Duration::from_millis(400 + 1000);
/// Attempts a test may see beyond what the schedule allows (the attempt in flight at each end
/// of the window).
const SLACK: usize = 2;
/// No test may take longer than this, whatever goes wrong.
const TEST_CAP: Duration = Duration::from_secs(15);
/// How long a connection's end may take to be seen.
const SETTLE: Duration = Duration::from_secs(3);

fn backoff() -> Backoff {
    Backoff::builder()
        .initial(INITIAL)
        .multiplier(2.0)
        .max(MAX)
        .jitter(Jitter::None)
        .build()
        .unwrap()
}

fn peers<K: PeerKey>() -> Peers<K> {
    Peers::builder().backoff(backoff()).build().unwrap()
}

/// The schedule's delay after the `i`-th failure in a row (0-based).
fn delay(i: usize) -> Duration {
    INITIAL.saturating_mul(1u32 << i.min(16)).min(MAX)
}

/// How many attempts the schedule lets start within `window` of the first one.
fn allowed_attempts(window: Duration) -> usize {
    let mut attempts = 1;
    let mut at = Duration::ZERO;
    loop {
        at += delay(attempts - 1);
        if at > window {
            return attempts;
        }
        attempts += 1;
    }
}

/// Consecutive attempts of one outage run are at least one schedule step apart, each step
/// longer than the last.
fn assert_spaced_by_schedule(times: &[Instant], what: &str) {
    for (i, pair) in times.windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= delay(i),
            "{what}: attempts {i} and {} are {gap:?} apart, the schedule says at least {:?}; gaps: {:?}",
            i + 1,
            delay(i),
            gaps(times)
        );
    }
}

/// The first gaps between consecutive attempts, for messages.
fn gaps(times: &[Instant]) -> Vec<Duration> {
    times.windows(2).take(12).map(|p| p[1] - p[0]).collect()
}

/// The first error of type `E` in `error`'s source chain.
fn find_in_chain<'a, E: StdError + 'static>(
    mut error: &'a (dyn StdError + 'static),
) -> Option<&'a E> {
    loop {
        if let Some(found) = error.downcast_ref::<E>() {
            return Some(found);
        }
        error = error.source()?;
    }
}

fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        text.push_str(": ");
        text.push_str(&e.to_string());
        next = e.source();
    }
    text
}

/// A port on 127.0.0.1 where nothing listens: bound without listening, so connections to it
/// are refused and no other test can take it while the socket is kept.
fn dead_port() -> (SocketAddr, TcpSocket) {
    let socket = http_server::reserve(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    (socket.local_addr().unwrap(), socket)
}

// ---------------------------------------------------------------------------------------------
// Counting the connect attempts that reach the real connector.

/// Every call into the real connector, in order: placed *inside* the redial layer, it sees each
/// connect attempt redial makes.
#[derive(Debug, Clone, Default)]
struct AttemptLog(Arc<Mutex<Vec<Instant>>>);

impl AttemptLog {
    fn wrap<C>(&self, inner: C) -> Counting<C> {
        Counting {
            inner,
            log: self.clone(),
        }
    }

    fn times(&self) -> Vec<Instant> {
        self.0.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// Attempts started in `[from, to)`.
    fn between(&self, from: Instant, to: Instant) -> Vec<Instant> {
        self.times()
            .into_iter()
            .filter(|t| (from..to).contains(t))
            .collect()
    }
}

#[derive(Debug, Clone)]
struct Counting<C> {
    inner: C,
    log: AttemptLog,
}

impl<C: Service<T>, T> Service<T> for Counting<C> {
    type Response = C::Response;
    type Error = C::Error;
    type Future = C::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), C::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, target: T) -> C::Future {
        self.log.0.lock().unwrap().push(Instant::now());
        self.inner.call(target)
    }
}

// ---------------------------------------------------------------------------------------------
// Driving a client through an outage.

/// One request of the driver: when it started and ended, and whether it succeeded.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    ended: Instant,
    ok: bool,
}

/// Sends requests one after another (10 ms apart) until one succeeds: at most 300 of them, each
/// capped at 5 s, so the driver always ends.
fn drive<F, Fut>(mut request: F) -> JoinHandle<Vec<Outcome>>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    tokio::spawn(async move {
        let mut outcomes = Vec::new();
        for _ in 0..300 {
            let ok = timeout(Duration::from_secs(5), request())
                .await
                .unwrap_or(false);
            outcomes.push(Outcome {
                ended: Instant::now(),
                ok,
            });
            if ok {
                break;
            }
            sleep(10 * MS).await;
        }
        outcomes
    })
}

/// What an outage looked like from the client: checked against the schedule.
struct Outage {
    /// The server stopped (its port closed) here.
    stopped: Instant,
    /// The server was restarted just after this.
    down_until: Instant,
    /// The server was listening again here.
    restarted: Instant,
}

impl Outage {
    /// Checks the driver's outcomes and the attempts the connector made; returns the attempts
    /// that failed while the server was down.
    fn check(&self, what: &str, outcomes: &[Outcome], log: &AttemptLog) -> Vec<Instant> {
        let (last, failed) = outcomes.split_last().expect("the driver sent requests");
        assert!(last.ok, "{what}: no request succeeded after the restart");
        assert!(
            failed.iter().all(|o| !o.ok),
            "{what}: the driver stops at its first success"
        );
        assert!(
            failed.iter().any(|o| o.ended < self.down_until),
            "{what}: requests failed while the server was down"
        );
        let recovered_after = last.ended.saturating_duration_since(self.restarted);
        assert!(
            recovered_after <= RECOVERY,
            "{what}: first success {recovered_after:?} after the restart, expected within {RECOVERY:?}"
        );

        let down = log.between(self.stopped, self.down_until);
        let run = log.between(self.stopped, last.ended);
        assert!(
            !down.is_empty(),
            "{what}: the client tried to connect while the server was down"
        );
        let window = last.ended - run[0];
        let allowed = allowed_attempts(window) + SLACK;
        assert!(
            run.len() <= allowed,
            "{what}: {} connect attempts in {window:?} of outage, the schedule allows {} (+{SLACK}); gaps: {:?}",
            run.len(),
            allowed - SLACK,
            gaps(&run)
        );
        assert_spaced_by_schedule(&run, what);
        eprintln!(
            "{what}: down {:?}, {} requests failed, {} attempts while down ({} in all, gaps {:?}), recovered {recovered_after:?} after the restart",
            self.down_until - self.stopped,
            failed.len(),
            down.len(),
            run.len(),
            gaps(&run),
        );
        down
    }
}

async fn get_hello<C>(client: &Client<C, Empty<Bytes>>, uri: &Uri) -> Result<(), BoxError>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let response = client.get(uri.clone()).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, HELLO.as_bytes());
    Ok(())
}

fn snapshot<K: PeerKey>(peers: &Peers<K>, key: &K) -> PeerSnapshot<K> {
    peers.snapshot(key).expect("the peer is tracked")
}

// ---------------------------------------------------------------------------------------------
// 1. hyper-util's legacy Client.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_client_recovers_within_one_step_of_a_restart() {
    within(TEST_CAP, "the test", async {
        let mut server = HttpServer::start().await.unwrap();
        let uri = server.uri();
        let peers: Peers<String> = peers();
        let key = UriKey.key(&uri);
        let log = AttemptLog::default();
        let connector =
            ConnectLayer::new(peers.clone(), UriKey).layer(log.wrap(HttpConnector::new()));
        let client: Client<_, Empty<Bytes>> =
            Client::builder(TokioExecutor::new()).build(connector);

        get_hello(&client, &uri).await.expect("server is up");
        let up = snapshot(&peers, &key);
        assert_eq!(up.state, PeerState::Connected);
        assert_eq!(up.backoff_step, 0);
        assert_eq!((up.attempts, up.open_connections), (1, 1));

        server.stop().await;
        let stopped = Instant::now();
        // The pooled connection ends; it had answered, so the peer is idle, not backing off.
        eventually(SETTLE, "the pooled connection's end is seen", || {
            snapshot(&peers, &key).open_connections == 0
        })
        .await;
        let idle = snapshot(&peers, &key);
        assert_eq!(idle.state, PeerState::Idle, "{idle:?}");
        assert_eq!(idle.backoff_step, 0);

        let driver = {
            let (client, uri) = (client.clone(), uri.clone());
            drive(move || {
                let (client, uri) = (client.clone(), uri.clone());
                async move { get_hello(&client, &uri).await.is_ok() }
            })
        };
        sleep(DOWN_FOR).await;
        let down_until = Instant::now();
        server.restart().await.unwrap();
        let restarted = Instant::now();
        let outcomes = timeout(Duration::from_secs(10), driver)
            .await
            .expect("the driver ends")
            .unwrap();

        let outage = Outage {
            stopped,
            down_until,
            restarted,
        };
        let failed_attempts = outage.check("hyper-util", &outcomes, &log);

        // The peer's tracker saw all of it.
        let stats = peers.stats();
        assert_eq!(stats.attempts, log.count() as u64, "{stats:?}");
        assert!(
            stats.failures >= failed_attempts.len() as u64,
            "{stats:?}: {} failed attempts",
            failed_attempts.len()
        );
        let end = snapshot(&peers, &key);
        assert_eq!(end.state, PeerState::Connected, "{end:?}");
        assert_eq!(end.backoff_step, 0, "the response reset the schedule");
        // The answer on the new connection counted as a success and ended the run of failures.
        assert_eq!(end.consecutive_failures, 0, "{end:?}");
        assert!(
            end.successes >= 2,
            "one success per answered connection: {end:?}"
        );
        get_hello(&client, &uri).await.expect("still up");
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 2. reqwest's connector_layer, detached.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reqwest_recovers_within_one_step_of_a_restart() {
    within(TEST_CAP, "the test", async {
        let mut server = HttpServer::start().await.unwrap();
        let url = server.uri().to_string();
        let peers: Peers<&'static str> = peers();
        let log = AttemptLog::default();
        let counting = {
            let log = log.clone();
            tower::layer::layer_fn(move |inner| log.wrap(inner))
        };
        // Layers are applied in order: the counter sits inside redial's layer.
        let client = reqwest::Client::builder()
            .no_proxy()
            .connector_layer(counting)
            .connector_layer(ConnectLayer::new(peers.clone(), FixedKey("server")).detached())
            .build()
            .unwrap();
        let get = |client: reqwest::Client, url: String| async move {
            let response = client.get(url).send().await?;
            let status = response.status();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>(status == reqwest::StatusCode::OK && body == HELLO.as_bytes())
        };

        for _ in 0..3 {
            assert!(
                get(client.clone(), url.clone())
                    .await
                    .expect("server is up")
            );
        }
        // redial cannot watch reqwest's connections: the connect was the proof, the peer idles.
        let up = snapshot(&peers, &"server");
        assert_eq!(up.state, PeerState::Idle, "{up:?}");
        assert_eq!(up.backoff_step, 0);
        assert!(up.attempts >= 1);

        server.stop().await;
        let stopped = Instant::now();
        let requests_while_down = Arc::new(Mutex::new(0usize));
        let driver = {
            let (client, url, requests) =
                (client.clone(), url.clone(), requests_while_down.clone());
            drive(move || {
                *requests.lock().unwrap() += 1;
                let fut = get(client.clone(), url.clone());
                async move { fut.await.unwrap_or(false) }
            })
        };
        sleep(DOWN_FOR).await;
        let down_until = Instant::now();
        server.restart().await.unwrap();
        let restarted = Instant::now();
        let outcomes = timeout(Duration::from_secs(10), driver)
            .await
            .expect("the driver ends")
            .unwrap();

        let outage = Outage {
            stopped,
            down_until,
            restarted,
        };
        outage.check("reqwest", &outcomes, &log);
        // Detached: each connector call makes one attempt at most.
        let attempts = log.between(stopped, Instant::now()).len();
        let requests = *requests_while_down.lock().unwrap();
        assert!(
            attempts <= requests,
            "{attempts} attempts for {requests} requests"
        );

        let stats = peers.stats();
        assert_eq!(stats.attempts, log.count() as u64, "{stats:?}");
        assert!(stats.failures >= 1, "{stats:?}");
        let end = snapshot(&peers, &"server");
        assert_eq!(end.state, PeerState::Idle, "{end:?}");
        assert_eq!(end.backoff_step, 0);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 3. tonic, with tonic-health.

mod grpc {
    use super::*;
    use tokio::sync::oneshot;
    use tonic::transport::Server;
    use tonic::transport::server::TcpIncoming;
    use tonic_health::pb::health_server::{Health, HealthServer};

    /// A tonic server serving `grpc.health.v1.Health`, restartable on the same port.
    pub(super) struct GrpcServer<T: Health> {
        pub(super) addr: SocketAddr,
        service: HealthServer<T>,
        running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
        reserved: Option<TcpSocket>,
    }

    impl<T: Health> GrpcServer<T> {
        pub(super) async fn start(service: HealthServer<T>) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let mut server = Self {
                addr,
                service,
                running: None,
                reserved: None,
            };
            server.run(listener);
            server
        }

        fn run(&mut self, listener: TcpListener) {
            let (stop, stopped) = oneshot::channel::<()>();
            let service = self.service.clone();
            let task = tokio::spawn(async move {
                Server::builder()
                    .serve_with_incoming_shutdown(
                        service,
                        TcpIncoming::from(listener),
                        async move {
                            let _ = stopped.await;
                        },
                    )
                    .await
                    .expect("the server runs");
            });
            self.running = Some((stop, task));
        }

        /// Graceful stop: listener closed, GOAWAY sent, returns once every connection is gone.
        /// The port stays held (bound, not listening) until the restart.
        pub(super) async fn stop(&mut self) {
            if let Some((stop, task)) = self.running.take() {
                let _ = stop.send(());
                timeout(Duration::from_secs(5), task)
                    .await
                    .expect("the server stops within 5 s")
                    .unwrap();
                self.reserved = Some(http_server::reserve(self.addr).unwrap());
            }
        }

        pub(super) async fn restart(&mut self) {
            self.stop().await;
            let listener = http_server::bind(self.addr).await.unwrap();
            self.reserved = None;
            self.run(listener);
        }
    }

    impl<T: Health> Drop for GrpcServer<T> {
        fn drop(&mut self) {
            if let Some((_, task)) = self.running.take() {
                task.abort();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_channel_recovers_through_the_connector() {
    use tonic::transport::Endpoint;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus as Status;
    use tonic_health::pb::health_client::HealthClient;

    const SERVICE: &str = "redial.test.Echo";

    within(TEST_CAP, "the test", async {
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status(SERVICE, tonic_health::ServingStatus::Serving)
            .await;
        let mut server = grpc::GrpcServer::start(health).await;
        let addr = server.addr;

        let peers: Peers<String> = peers();
        let log = AttemptLog::default();
        let endpoint = Endpoint::from_shared(format!("http://{addr}")).unwrap();
        let key = UriKey.key(endpoint.uri());
        let channel = endpoint
            .connect_with_connector(
                ConnectLayer::new(peers.clone(), UriKey).layer(log.wrap(HttpConnector::new())),
            )
            .await
            .expect("connects");
        let client = HealthClient::new(channel);
        let check = |mut client: HealthClient<tonic::transport::Channel>| async move {
            let request = HealthCheckRequest {
                service: SERVICE.into(),
            };
            client
                .check(request)
                .await
                .map(|response| response.into_inner().status())
        };

        assert_eq!(
            check(client.clone()).await.expect("serving"),
            Status::Serving
        );
        let up = snapshot(&peers, &key);
        assert_eq!(up.state, PeerState::Connected, "{up:?}");
        assert_eq!(up.backoff_step, 0);
        assert_eq!(log.count(), 1, "one HTTP/2 connection");

        server.stop().await;
        let stopped = Instant::now();
        eventually(SETTLE, "the channel's connection ends", || {
            snapshot(&peers, &key).open_connections == 0
        })
        .await;

        let driver = {
            let client = client.clone();
            drive(move || {
                let fut = check(client.clone());
                async move { matches!(fut.await, Ok(Status::Serving)) }
            })
        };
        sleep(DOWN_FOR).await;
        let down_until = Instant::now();
        server.restart().await;
        let restarted = Instant::now();
        let outcomes = timeout(Duration::from_secs(10), driver)
            .await
            .expect("the driver ends")
            .unwrap();

        let outage = Outage {
            stopped,
            down_until,
            restarted,
        };
        let failed_attempts = outage.check("tonic", &outcomes, &log);

        let stats = peers.stats();
        assert_eq!(stats.attempts, log.count() as u64, "{stats:?}");
        assert!(stats.failures >= failed_attempts.len() as u64, "{stats:?}");
        let end = snapshot(&peers, &key);
        assert_eq!(end.state, PeerState::Connected, "{end:?}");
        assert_eq!(end.backoff_step, 0);
        assert_eq!(check(client).await.expect("serving"), Status::Serving);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 4. Single flight: one process, one probe.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_to_a_dead_peer_share_one_probe_per_step() {
    const CALLS: usize = 50;
    const DEADLINE: Duration = Duration::from_secs(1);

    within(TEST_CAP, "the test", async {
        let (addr, _held) = dead_port();
        let uri: Uri = format!("http://{addr}/").parse().unwrap();
        let peers: Peers<String> = peers();
        let log = AttemptLog::default();
        let connector = ConnectLayer::builder(peers.clone(), UriKey)
            .connect_timeout(DEADLINE)
            .call_deadline(Some(DEADLINE))
            .build()
            .unwrap()
            .layer(log.wrap(HttpConnector::new()));

        let started = Instant::now();
        let calls: Vec<_> = (0..CALLS)
            .map(|_| {
                let (connector, uri) = (connector.clone(), uri.clone());
                tokio::spawn(async move {
                    let result = timeout(Duration::from_secs(5), connector.oneshot(uri)).await;
                    (result, Instant::now())
                })
            })
            .collect();
        let mut unavailable = 0;
        let mut last_end = started;
        for call in calls {
            let (result, ended) = call.await.unwrap();
            let result = result.expect("no call hangs");
            let error = result.expect_err("a dead peer fails every call");
            if find_in_chain::<redial::reconnect::Unavailable>(&*error).is_some() {
                unavailable += 1;
            }
            let took = ended - started;
            assert!(
                took <= DEADLINE + 300 * MS,
                "a call took {took:?}, its deadline is {DEADLINE:?}: {}",
                chain(&*error)
            );
            last_end = last_end.max(ended);
        }

        let times = log.times();
        let window = last_end - times[0];
        let allowed = allowed_attempts(window);
        eprintln!(
            "single flight: {CALLS} calls, {} attempts in {window:?} (gaps {:?}), {unavailable} failed fast",
            times.len(),
            gaps(&times)
        );
        assert!(
            times.len() <= allowed + 1,
            "{CALLS} concurrent calls made {} connect attempts in {window:?}; one per step allows {allowed}",
            times.len()
        );
        assert!(times.len() >= 2, "the calls retried within their deadline");
        assert_spaced_by_schedule(&times, "single flight");
        assert!(
            unavailable > 0,
            "calls that would wait past their deadline fail fast"
        );

        let stats = peers.stats();
        assert_eq!(stats.attempts, times.len() as u64);
        assert_eq!(stats.failures, times.len() as u64);
        let end = snapshot(&peers, &UriKey.key(&uri));
        assert_eq!(end.state, PeerState::Backoff, "{end:?}");
        assert!(!end.attempt_in_flight);
        assert_eq!(end.backoff_step as usize, times.len());
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 5. Flapping: accepted and dropped is not proof.

/// Accepts every connection and drops it at once, without a byte.
struct Flapper {
    task: JoinHandle<()>,
}

impl Flapper {
    async fn start(addr: SocketAddr) -> (Self, SocketAddr) {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                if let Ok((stream, _)) = listener.accept().await {
                    drop(stream);
                }
            }
        });
        (Self { task }, addr)
    }

    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_keeps_the_backoff_growing_until_a_response() {
    const FLAPS: usize = 5;

    within(TEST_CAP, "the test", async {
        let (flapper, addr) = Flapper::start(SocketAddr::from(([127, 0, 0, 1], 0))).await;
        let uri: Uri = format!("http://{addr}/").parse().unwrap();
        let peers: Peers<String> = peers();
        let key = UriKey.key(&uri);
        let log = AttemptLog::default();
        let connector =
            ConnectLayer::new(peers.clone(), UriKey).layer(log.wrap(HttpConnector::new()));
        let client: Client<_, Empty<Bytes>> =
            Client::builder(TokioExecutor::new()).build(connector.clone());

        let mut steps = Vec::new();
        for flap in 0..FLAPS {
            let error = timeout(Duration::from_secs(5), get_hello(&client, &uri))
                .await
                .expect("the request ends")
                .expect_err("the flapper never answers");
            // The connection's end reaches the tracker from hyper's connection task.
            eventually(SETTLE, "the flapped connection's end is seen", || {
                snapshot(&peers, &key).open_connections == 0
            })
            .await;
            let s = snapshot(&peers, &key);
            assert_eq!(s.state, PeerState::Backoff, "flap {flap}: {s:?}");
            assert_eq!(s.attempts as usize, flap + 1, "one connect per request");
            assert!(
                steps.last().is_none_or(|&last| s.backoff_step > last),
                "flap {flap}: backoff step {} after {steps:?} ({})",
                s.backoff_step,
                chain(&*error)
            );
            steps.push(s.backoff_step);
        }
        let times = log.times();
        eprintln!("flapping: steps {steps:?}, attempt gaps {:?}", gaps(&times));
        assert_eq!(times.len(), FLAPS);
        // Each connect waited out a longer delay than the one before.
        assert_spaced_by_schedule(&times, "flapping");
        let flapped = snapshot(&peers, &key);

        // Same port, a real server now. The connect alone proves nothing; the response does.
        flapper.stop().await;
        let server = HttpServer::start_on(addr).await.unwrap();
        let io = timeout(
            Duration::from_secs(5),
            connector.clone().oneshot(uri.clone()),
        )
        .await
        .expect("the connect ends")
        .expect("the server accepts");
        let connected = snapshot(&peers, &key);
        assert_eq!(connected.state, PeerState::Connected);
        assert_eq!(
            connected.backoff_step, flapped.backoff_step,
            "a connect is not proof"
        );

        let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
        let connection = tokio::spawn(connection);
        let request = Request::get(uri.clone())
            .header(hyper::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.expect("an answer");
        assert_eq!(response.status(), StatusCode::OK);
        let answered = snapshot(&peers, &key);
        assert_eq!(answered.state, PeerState::Connected);
        assert_eq!(
            answered.backoff_step, 0,
            "the first bytes reset the schedule"
        );

        // A proven connection that closes leaves the peer idle, free to connect at once.
        drop(sender);
        timeout(Duration::from_secs(5), connection)
            .await
            .expect("the connection closes")
            .unwrap()
            .unwrap();
        let closed = snapshot(&peers, &key);
        assert_eq!(closed.state, PeerState::Idle, "{closed:?}");
        assert_eq!(closed.backoff_step, 0);
        drop(server);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 6. Connect timeout.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_connect_times_out_and_backs_off() {
    const LIMIT: Duration = Duration::from_millis(100);

    within(TEST_CAP, "the test", async {
        let uri: Uri = "http://127.0.0.1:9/".parse().unwrap();
        let peers: Peers<String> = peers();
        let key = UriKey.key(&uri);
        let log = AttemptLog::default();
        let never = tower::service_fn(|_: Uri| {
            std::future::pending::<Result<TokioIo<TcpStream>, std::io::Error>>()
        });
        let connector = ConnectLayer::builder(peers.clone(), UriKey)
            .connect_timeout(LIMIT)
            .attempts_per_call(1)
            .build()
            .unwrap()
            .layer(log.wrap(never));

        // Straight from the connector.
        let error = timeout(
            Duration::from_secs(5),
            connector.clone().oneshot(uri.clone()),
        )
        .await
        .expect("the call ends")
        .expect_err("the connect never completes");
        let timed_out = find_in_chain::<ConnectTimeout>(&*error)
            .unwrap_or_else(|| panic!("not a ConnectTimeout: {}", chain(&*error)));
        assert_eq!(timed_out.after(), LIMIT);
        let s = snapshot(&peers, &key);
        assert_eq!(s.state, PeerState::Backoff, "{s:?}");
        assert_eq!((s.attempts, s.failures, s.backoff_step), (1, 1, 1));
        assert!(!s.attempt_in_flight);

        // Through hyper-util, which wraps the connector's error.
        let client: Client<_, Empty<Bytes>> =
            Client::builder(TokioExecutor::new()).build(connector);
        let error = timeout(Duration::from_secs(5), get_hello(&client, &uri))
            .await
            .expect("the request ends")
            .expect_err("the connect never completes");
        assert!(
            find_in_chain::<ConnectTimeout>(&*error).is_some(),
            "ConnectTimeout in the chain: {}",
            chain(&*error)
        );
        let s = snapshot(&peers, &key);
        assert_eq!(s.state, PeerState::Backoff, "{s:?}");
        assert_eq!((s.attempts, s.failures, s.backoff_step), (2, 2, 2));
        assert_eq!(log.count(), 2);
        let times = log.times();
        assert_spaced_by_schedule(&times, "timeouts");
    })
    .await;
}

/// `call_deadline` is "how long one call may take in all": an attempt under way when it passes
/// is cut there. A call whose budget was eaten by waiting cancels its cut attempt instead of
/// charging the peer with a timeout it never had the full connect timeout to meet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_call_deadline_cuts_an_attempt_without_charging_the_peer() {
    const TIMEOUT: Duration = Duration::from_millis(300);
    const DEADLINE: Duration = Duration::from_millis(400);

    within(TEST_CAP, "the test", async {
        let uri: Uri = "http://127.0.0.1:9/".parse().unwrap();
        let peers: Peers<String> = peers();
        let key = UriKey.key(&uri);
        let never = tower::service_fn(|_: Uri| {
            std::future::pending::<Result<TokioIo<TcpStream>, std::io::Error>>()
        });
        let connector = ConnectLayer::builder(peers.clone(), UriKey)
            .connect_timeout(TIMEOUT)
            .attempts_per_call(1)
            .call_deadline(Some(DEADLINE))
            .build()
            .unwrap()
            .layer(never);

        // A takes the probe, which times out at 300 ms: a failure, 50 ms of backoff.
        let first = tokio::spawn(connector.clone().oneshot(uri.clone()));
        sleep(200 * MS).await;
        // B waits for A's probe, then the backoff, then attempts with 150 ms of budget left.
        let started = Instant::now();
        let error = timeout(Duration::from_secs(10), connector.oneshot(uri.clone()))
            .await
            .expect("the call ends")
            .expect_err("the connect never completes");
        let took = started.elapsed();
        assert!(
            took <= DEADLINE + 200 * MS,
            "the call took {took:?} with a {DEADLINE:?} deadline: {}",
            chain(&*error)
        );
        assert!(
            find_in_chain::<redial::reconnect::Unavailable>(&*error).is_some(),
            "{}",
            chain(&*error)
        );
        let first = first
            .await
            .unwrap()
            .expect_err("A's connect never completes");
        assert!(
            find_in_chain::<ConnectTimeout>(&*first).is_some(),
            "{}",
            chain(&*first)
        );
        // Only A's full-length attempt counted against the peer.
        let s = snapshot(&peers, &key);
        assert_eq!((s.attempts, s.failures), (2, 1), "{s:?}");
        assert!(!s.attempt_in_flight);
    })
    .await;
}
