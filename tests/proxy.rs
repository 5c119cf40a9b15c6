//! Real sockets through the fault proxy (`support/fault_proxy.rs`): the proxy's own faults,
//! then scenario 1 of the simulation (a crash and restart under load) against a real hyper
//! server and a real tonic server, and the stack riding through resets, a black hole, latency
//! and a slow link.
//!
//! Everything binds 127.0.0.1; every loop is bounded in count and in time; each test runs under
//! a cap. The clock is real here (never paused), so nothing asserts how fast things go: the
//! timing bounds of scenario 1 are asserted in virtual time, in `tests/sim`.

#![cfg(feature = "hyper")]

#[path = "support/bounded.rs"]
mod bounded;
#[path = "support/fault_proxy.rs"]
mod fault_proxy;
#[path = "support/http_server.rs"]
mod http_server;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use redial::backoff::{Backoff, Jitter};
use redial::peers::{PeerHandle, Peers};
use redial::reconnect::connector::{Connect, ConnectLayer, TargetKey, UriKey};
use redial::retry::http::HttpClassifier;
use redial::retry::{AttemptTimedOut, DeadlineExceeded, Retry, RetryLayer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};
use tower::{BoxError, Layer, Service, ServiceExt};

use bounded::{eventually, within};
use fault_proxy::FaultProxy;
use http_server::{HELLO, HttpServer};

const MS: Duration = Duration::from_millis(1);
/// No test here may take longer, whatever happens.
const CAP: Duration = Duration::from_secs(60);
/// How long the proxy may take to see a connection open or close.
const SETTLE: Duration = Duration::from_secs(5);

const GET: &[u8] = b"GET / HTTP/1.1\r\nhost: test\r\n\r\n";

/// Reads until the reply ends with the server's body (at most 200 reads), or the stream ends.
async fn reply(stream: &mut TcpStream) -> String {
    let mut text = String::new();
    let mut buf = [0u8; 1024];
    for _ in 0..200 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
        if text.ends_with(HELLO) {
            break;
        }
    }
    text
}

// ---------------------------------------------------------------------------------------------
// The proxy's own faults
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_proxy_forwards_refuses_and_accepts_again() {
    within(CAP, "the test", async {
        let server = HttpServer::start().await.unwrap();
        let mut proxy = FaultProxy::start(server.addr()).await.unwrap();
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        stream.write_all(GET).await.unwrap();
        assert!(reply(&mut stream).await.ends_with(HELLO));
        let mut buf = vec![0u8; 1024];

        proxy.down().await.unwrap();
        let refused = TcpStream::connect(proxy.addr()).await.unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
        // Open connections go down with it.
        let closed = stream.read(&mut buf).await;
        assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");

        proxy.up().await.unwrap();
        let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
        again.write_all(GET).await.unwrap();
        assert!(reply(&mut again).await.ends_with(HELLO));
        assert_eq!(proxy.accepted(), 2);
    })
    .await;
}

#[tokio::test]
async fn the_proxy_resets_open_connections() {
    within(CAP, "the test", async {
        let server = HttpServer::start().await.unwrap();
        let proxy = FaultProxy::start(server.addr()).await.unwrap();
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        eventually(SETTLE, "the proxy holds the connection", || {
            proxy.open() == 1
        })
        .await;
        proxy.reset();
        let mut buf = [0u8; 64];
        let error = stream.read(&mut buf).await.unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset);
        eventually(SETTLE, "the connection is gone", || proxy.open() == 0).await;
    })
    .await;
}

#[tokio::test]
async fn a_black_hole_accepts_and_never_answers() {
    within(CAP, "the test", async {
        let server = HttpServer::start().await.unwrap();
        let proxy = FaultProxy::start(server.addr()).await.unwrap();
        proxy.black_hole(true);
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        stream.write_all(GET).await.unwrap();
        let mut buf = [0u8; 64];
        assert!(timeout(300 * MS, stream.read(&mut buf)).await.is_err());
        assert_eq!(server.served(), 0, "nothing reached the server");

        // A new connection after the hole is closed works; the swallowed one stays dead.
        proxy.black_hole(false);
        let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
        fresh.write_all(GET).await.unwrap();
        assert!(reply(&mut fresh).await.ends_with(HELLO));
    })
    .await;
}

#[tokio::test]
async fn latency_and_bandwidth_slow_the_exchange_down() {
    within(CAP, "the test", async {
        let server = HttpServer::start().await.unwrap();
        let proxy = FaultProxy::start(server.addr()).await.unwrap();
        proxy.latency(100 * MS);
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        let start = Instant::now();
        stream.write_all(GET).await.unwrap();
        assert!(reply(&mut stream).await.ends_with(HELLO));
        // A lower bound only: the request and the response each waited 100 ms.
        assert!(start.elapsed() >= 200 * MS, "{:?}", start.elapsed());

        proxy.latency(Duration::ZERO);
        // 200 bytes per second: the request and the reply each take their length's share.
        proxy.bandwidth(Some(200));
        let start = Instant::now();
        stream.write_all(GET).await.unwrap();
        let text = reply(&mut stream).await;
        assert!(text.ends_with(HELLO), "{text:?}");
        // Each direction sends its last slice (a tenth of a second's worth) without waiting.
        let nominal = (GET.len() + text.len()) as f64 / 200.0;
        let least = Duration::from_secs_f64(nominal - 0.2);
        assert!(
            start.elapsed() >= least,
            "{:?} < {least:?}",
            start.elapsed()
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Scenario 1 over real sockets: hyper
// ---------------------------------------------------------------------------------------------

fn backoff() -> Backoff {
    Backoff::builder()
        .initial(20 * MS)
        .multiplier(2.0)
        .max(300 * MS)
        .jitter(Jitter::Full)
        .seed(7)
        .build()
        .unwrap()
}

/// How one request ended, by type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Ok,
    Status(u16),
    Error(&'static str),
    Untyped,
    Hung,
}

fn error_type(error: &BoxError) -> Ended {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error.as_ref());
    while let Some(e) = next {
        if e.is::<DeadlineExceeded>() {
            return Ended::Error("deadline");
        }
        if e.is::<AttemptTimedOut>() {
            return Ended::Error("attempt_timeout");
        }
        if e.is::<hyper_util::client::legacy::Error>() {
            return Ended::Error("client");
        }
        if e.is::<std::io::Error>() {
            return Ended::Error("io");
        }
        next = e.source();
    }
    Ended::Untyped
}

/// The outcome log of a load run: (ended at, how).
type Log = Arc<Mutex<Vec<(Instant, Ended)>>>;

/// The stack the README recommends for hyper-util without health: retry (HTTP classifier,
/// deadline, attempt timeout) over hyper-util's pooled client on the reconnecting connector.
type HyperStack = Retry<
    Client<Connect<HttpConnector, UriKey, String>, Full<Bytes>>,
    HttpClassifier,
    PeerHandle<String>,
>;

/// Retries are recorded in the peer of `uri`; the connector records the connection's errors.
fn hyper_stack(peers: &Peers<String>, uri: &Uri) -> HyperStack {
    let connector = ConnectLayer::builder(peers.clone(), UriKey)
        .connect_timeout(300 * MS)
        .call_deadline(Some(1000 * MS))
        .stagger(20 * MS)
        .build()
        .unwrap()
        .layer(HttpConnector::new());
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    RetryLayer::builder()
        .classifier(HttpClassifier::new())
        .max_attempts(3)
        .deadline(2000 * MS)
        .attempt_timeout(500 * MS)
        .peer(peers.peer(UriKey.key(uri)).unwrap())
        .record_errors(false)
        .seed(7)
        .build()
        .unwrap()
        .layer(client)
}

/// `tasks` loops of GETs through clones of `service` until `stop` (at most 1000 requests
/// each), every outcome logged; each request has a watchdog of `watchdog`.
fn load<S>(
    service: S,
    uri: Uri,
    tasks: usize,
    stop: Instant,
    watchdog: Duration,
) -> (Log, Vec<tokio::task::JoinHandle<()>>)
where
    S: Service<
            Request<Full<Bytes>>,
            Response = http::Response<hyper::body::Incoming>,
            Error = BoxError,
        > + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let log: Log = Arc::default();
    let handles = (0..tasks)
        .map(|_| {
            let mut service = service.clone();
            let log = Arc::clone(&log);
            let uri = uri.clone();
            tokio::spawn(async move {
                for _ in 0..1000 {
                    if Instant::now() >= stop {
                        break;
                    }
                    let request = Request::builder()
                        .method(Method::GET)
                        .uri(uri.clone())
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    let exchange = async {
                        let response = service.ready().await?.call(request).await?;
                        let status = response.status();
                        let _ = response.into_body().collect().await?;
                        Ok::<_, BoxError>(status)
                    };
                    let how = match timeout(watchdog, exchange).await {
                        Err(_) => Ended::Hung,
                        Ok(Ok(StatusCode::OK)) => Ended::Ok,
                        Ok(Ok(status)) => Ended::Status(status.as_u16()),
                        Ok(Err(error)) => error_type(&error),
                    };
                    log.lock().unwrap().push((Instant::now(), how));
                    sleep(10 * MS).await;
                }
            })
        })
        .collect();
    (log, handles)
}

fn assert_accounted(log: &[(Instant, Ended)]) {
    let bad: Vec<_> = log
        .iter()
        .filter(|(_, how)| matches!(how, Ended::Hung | Ended::Untyped))
        .collect();
    assert!(
        bad.is_empty(),
        "{} requests hung or failed untyped: {bad:?}",
        bad.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_rides_through_a_crash_and_restart_behind_the_proxy() {
    within(CAP, "the test", async {
        let server = HttpServer::start().await.unwrap();
        let mut proxy = FaultProxy::start(server.addr()).await.unwrap();
        let peers: Peers<String> = Peers::builder().backoff(backoff()).seed(7).build().unwrap();
        let uri: Uri = proxy.uri().parse().unwrap();
        let key = UriKey.key(&uri);
        let start = Instant::now();
        let (log, tasks) = load(
            hyper_stack(&peers, &uri),
            uri,
            4,
            start + 3000 * MS,
            5 * CAP / 60,
        );

        sleep(500 * MS).await;
        // hyper-util's pool opens a connection per concurrent request, and may race one more
        // while another goes back to idle: a handful, never a storm.
        let baseline = peers.snapshot(&key).map_or(0, |s| s.open_connections);
        assert!(
            (1..=8).contains(&baseline),
            "open before the crash: {baseline}"
        );
        let failures = peers.stats().failures;
        proxy.down().await.unwrap();
        sleep(1000 * MS).await;
        proxy.up().await.unwrap();
        let up_at = Instant::now();
        sleep(1000 * MS).await;
        let recovered = peers.snapshot(&key).map_or(0, |s| s.open_connections);
        for task in tasks {
            task.await.unwrap();
        }

        let log = log.lock().unwrap().clone();
        assert_accounted(&log);
        // Callers may not see the second of downtime at all (connects wait out the peer's
        // backoff within their deadline), but the peer did.
        assert!(
            peers.stats().failures > failures,
            "the crash went unnoticed"
        );
        let after: Vec<Ended> = log
            .iter()
            .filter(|(at, _)| *at > up_at)
            .map(|(_, how)| *how)
            .collect();
        assert!(
            after.contains(&Ended::Ok),
            "no success after the restart: {after:?}"
        );
        // Recovered: the last requests of the run all succeeded.
        assert!(
            after.iter().rev().take(8).all(|how| *how == Ended::Ok),
            "{after:?}"
        );
        assert!(
            (1..=8).contains(&recovered),
            "open after recovery: {recovered}"
        );
        // The load's services (and the pool inside) are gone: so are the connections.
        eventually(SETTLE, "every connection closed", || {
            peers
                .snapshot(&key)
                .is_some_and(|s| s.open_connections == 0)
        })
        .await;
        eventually(SETTLE, "the proxy holds no connection", || {
            proxy.open() == 0
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_rides_through_resets_a_black_hole_latency_and_a_slow_link() {
    within(CAP, "the test", async {
        let server = HttpServer::start().await.unwrap();
        let proxy = FaultProxy::start(server.addr()).await.unwrap();
        let peers: Peers<String> = Peers::builder().backoff(backoff()).seed(7).build().unwrap();
        let uri: Uri = proxy.uri().parse().unwrap();
        let start = Instant::now();
        let (log, tasks) = load(
            hyper_stack(&peers, &uri),
            uri,
            4,
            start + 4000 * MS,
            5 * CAP / 60,
        );

        sleep(300 * MS).await;
        proxy.reset();
        sleep(300 * MS).await;
        proxy.reset();
        sleep(300 * MS).await;
        let before = peers.stats().retries;
        proxy.black_hole(true);
        sleep(700 * MS).await;
        proxy.black_hole(false);
        // The swallowed connections stay dead: the pool must notice and replace them.
        sleep(600 * MS).await;
        let after = peers.stats().retries;
        proxy.latency(30 * MS);
        sleep(500 * MS).await;
        proxy.latency(Duration::ZERO);
        proxy.bandwidth(Some(16 * 1024));
        sleep(500 * MS).await;
        proxy.bandwidth(None);
        for task in tasks {
            task.await.unwrap();
        }

        let log = log.lock().unwrap().clone();
        assert_accounted(&log);
        // The hole was noticed: attempts into it timed out and were retried.
        assert!(
            after > before,
            "no retry while the black hole swallowed requests"
        );
        let last: Vec<Ended> = log.iter().rev().take(8).map(|(_, how)| *how).collect();
        assert!(
            last.iter().all(|how| *how == Ended::Ok),
            "not recovered: {last:?}"
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Scenario 1 over real sockets: tonic
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_rides_through_a_crash_and_restart_behind_the_proxy() {
    use tonic::transport::server::TcpIncoming;
    use tonic::transport::{Endpoint, Server};
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    const SERVICE: &str = "redial.test.Echo";

    within(CAP, "the test", async {
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status(SERVICE, tonic_health::ServingStatus::Serving)
            .await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server_addr = listener.local_addr().unwrap();
        let server = tokio::spawn(
            Server::builder().serve_with_incoming(health, TcpIncoming::from(listener)),
        );
        let mut proxy = FaultProxy::start(server_addr).await.unwrap();

        let peers: Peers<String> = Peers::builder().backoff(backoff()).seed(7).build().unwrap();
        let endpoint = Endpoint::from_shared(format!("http://{}", proxy.addr()))
            .unwrap()
            .timeout(Duration::from_millis(500));
        let key = UriKey.key(endpoint.uri());
        let connector = ConnectLayer::builder(peers.clone(), UriKey)
            .connect_timeout(300 * MS)
            .call_deadline(Some(1000 * MS))
            .build()
            .unwrap()
            .layer(HttpConnector::new());
        let channel = endpoint.connect_with_connector(connector).await.unwrap();

        let stop = Instant::now() + 3000 * MS;
        let log: Log = Arc::default();
        let tasks: Vec<_> = (0..2)
            .map(|_| {
                let mut client = HealthClient::new(channel.clone());
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    for _ in 0..1000 {
                        if Instant::now() >= stop {
                            break;
                        }
                        let request = HealthCheckRequest {
                            service: SERVICE.into(),
                        };
                        // Every outcome is a typed `Status`; the watchdog catches a hang.
                        let how = match timeout(5 * MS * 1000, client.check(request)).await {
                            Err(_) => Ended::Hung,
                            Ok(Ok(_)) => Ended::Ok,
                            Ok(Err(_status)) => Ended::Error("status"),
                        };
                        log.lock().unwrap().push((Instant::now(), how));
                        sleep(10 * MS).await;
                    }
                })
            })
            .collect();

        sleep(500 * MS).await;
        proxy.down().await.unwrap();
        let down_at = Instant::now();
        sleep(1000 * MS).await;
        proxy.up().await.unwrap();
        let up_at = Instant::now();
        for task in tasks {
            task.await.unwrap();
        }
        let log = log.lock().unwrap().clone();
        assert_accounted(&log);
        assert!(
            log.iter()
                .any(|(at, how)| *at > down_at && *at < up_at && *how != Ended::Ok),
            "the crash went unnoticed"
        );
        let last: Vec<Ended> = log.iter().rev().take(6).map(|(_, how)| *how).collect();
        assert!(
            last.iter().all(|how| *how == Ended::Ok),
            "not recovered: {last:?}"
        );
        assert!(peers.stats().attempts >= 2, "it never reconnected");
        drop(channel);
        eventually(SETTLE, "every connection closed", || {
            peers
                .snapshot(&key)
                .is_some_and(|s| s.open_connections == 0)
        })
        .await;
        server.abort();
    })
    .await;
}
