//! An HTTP/2 keep-alive ping that goes unanswered ends the connection under the requests in
//! flight: hyper fails them with a `hyper::Error` whose `is_timeout()` is true. That is a lost
//! connection (the reconnect layer must dial again) and a retryable failure (the request may
//! have been executed, so `Retry`, not `Transparent`).
//!
//! A hyper HTTP/2 server on 127.0.0.1 that can be told to never answer its next request, behind
//! the fault proxy (`support/fault_proxy.rs`); the client pings every `KEEP_ALIVE` and waits as
//! long for the answer. A request is sent, reaches the server and hangs there; then the proxy
//! turns into a black hole, so the next ping is swallowed and hyper gives up on the connection
//! while the request is in flight. The order is forced (the request is seen at the server
//! before the hole opens), so the request cannot instead meet a connection already closed.
//!
//! Asserted: the error itself, as the classifiers see it (the default, `is_connection_lost`,
//! `HttpClassifier`); a whole `RetryLayer ─ ReconnectLayer ─ HTTP/2 connector` stack where the
//! caller sees success, from a retry on a fresh connection; and (feature `tonic`) the `Status`
//! a tonic channel makes of it, as `GrpcClassifier` sees it.
//!
//! Real time (never `start_paused` with sockets), 127.0.0.1 only, every wait bounded.

#![cfg(feature = "hyper")]

#[path = "support/balanced.rs"]
mod balanced;
#[path = "support/bounded.rs"]
mod bounded;
#[path = "support/fault_proxy.rs"]
mod fault_proxy;
#[path = "support/http_server.rs"]
mod http_server;

use std::convert::Infallible;
use std::error::Error;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use redial::backoff::Backoff;
use redial::event::EventKind;
use redial::peers::Peers;
use redial::reconnect::{ReconnectLayer, is_connection_lost};
use redial::retry::http::HttpClassifier;
use redial::retry::{Classify, Decision, RetryLayer, classify_error};
use tokio::task::{JoinHandle, JoinSet};
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

use bounded::{eventually, within};
use fault_proxy::FaultProxy;
use http_server::HELLO;

const MS: Duration = Duration::from_millis(1);
/// The client's keep-alive: a ping this often, answered within as long.
const KEEP_ALIVE: Duration = Duration::from_millis(100);
/// The bound on every wait: a keep-alive timeout comes within about `2 × KEEP_ALIVE`.
const WAIT: Duration = Duration::from_secs(5);
/// What the retry layer says for a keep-alive timeout.
const REASON: &str = "keep-alive timeout";

/// A hyper HTTP/2 (prior knowledge) server on 127.0.0.1 that answers `hello`, except that
/// after [`hang_next`](Self::hang_next) it never answers the next request it gets.
struct HangingServer {
    addr: SocketAddr,
    state: Arc<ServerState>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct ServerState {
    hang_next: AtomicBool,
    /// Requests answered.
    served: AtomicUsize,
    /// Requests held unanswered.
    hanging: AtomicUsize,
}

impl HangingServer {
    async fn start() -> Self {
        let listener = http_server::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("a port of 127.0.0.1");
        let addr = listener.local_addr().expect("a bound listener");
        let state = Arc::new(ServerState::default());
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            // Dropped with the accept task, which closes every connection.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = Arc::clone(&shared);
                let answer = service_fn(move |_: Request<Incoming>| {
                    let state = Arc::clone(&state);
                    async move {
                        if state.hang_next.swap(false, Ordering::SeqCst) {
                            state.hanging.fetch_add(1, Ordering::SeqCst);
                            std::future::pending::<()>().await;
                        }
                        state.served.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(HELLO))))
                    }
                });
                connections.spawn(
                    http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), answer),
                );
                while connections.try_join_next().is_some() {}
            }
        });
        Self { addr, state, task }
    }

    /// The next request that arrives is held and never answered.
    fn hang_next(&self) {
        self.state.hang_next.store(true, Ordering::SeqCst);
    }

    fn served(&self) -> usize {
        self.state.served.load(Ordering::SeqCst)
    }

    fn hanging(&self) -> usize {
        self.state.hanging.load(Ordering::SeqCst)
    }
}

impl Drop for HangingServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn get() -> Request<Full<Bytes>> {
    Request::new(Full::new(Bytes::new()))
}

/// The response's status and body, read whole.
async fn answer(response: Response<Incoming>) -> (StatusCode, Bytes) {
    let status = response.status();
    let body = within(WAIT, "the body", response.into_body().collect()).await;
    (status, body.expect("a whole body").to_bytes())
}

/// The `hyper::Error` in `error`'s source chain, if any.
fn find_hyper<'a>(error: &'a (dyn Error + 'static)) -> Option<&'a hyper::Error> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(hyper) = error.downcast_ref::<hyper::Error>() {
            return Some(hyper);
        }
        next = error.source();
    }
    None
}

/// Sends a request over a connection (through `proxy`) that has already answered one, holds it
/// at the server, opens the black hole, and returns the error hyper fails the request with.
async fn cut_off_by_keep_alive(server: &HangingServer, proxy: &FaultProxy) -> BoxError {
    let connector = balanced::http2_connector::<Full<Bytes>>(Some(KEEP_ALIVE));
    let mut connection = within(WAIT, "the connect", connector.oneshot(proxy.addr()))
        .await
        .expect("connected");
    let ready = within(WAIT, "ready", connection.ready())
        .await
        .expect("ready");
    let response = within(WAIT, "the first answer", ready.call(get())).await;
    let (status, body) = answer(response.expect("answered")).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, HELLO.as_bytes()));

    server.hang_next();
    let ready = within(WAIT, "ready", connection.ready())
        .await
        .expect("ready");
    let cut_off = ready.call(get());
    let (outcome, ()) = tokio::join!(within(WAIT, "the keep-alive timeout", cut_off), async {
        eventually(WAIT, "the request reached the server", || {
            server.hanging() == 1
        })
        .await;
        proxy.black_hole(true);
    });
    match outcome {
        Ok(response) => panic!("answered through a black hole: {response:?}"),
        Err(error) => error,
    }
}

#[tokio::test]
async fn a_keep_alive_timeout_is_a_lost_connection_and_retryable() {
    let server = HangingServer::start().await;
    let proxy = FaultProxy::start(server.addr).await.expect("a proxy");
    let error = cut_off_by_keep_alive(&server, &proxy).await;

    let hyper = find_hyper(error.as_ref()).expect("a hyper::Error in the chain");
    assert!(hyper.is_timeout(), "not a timeout: {error:?}");
    assert_eq!(classify_error(error.as_ref()), Decision::retry(REASON));
    assert!(is_connection_lost(error.as_ref()), "{error:?}");

    // The HTTP classifier builds on the default: retried for an idempotent method only, since
    // the request may have run.
    let outcome: Result<Response<()>, BoxError> = Err(error);
    let classifier = HttpClassifier::new();
    assert_eq!(
        classifier.classify(&get(), &outcome),
        Decision::retry(REASON)
    );
    let mut post = get();
    *post.method_mut() = Method::POST;
    assert_eq!(classifier.classify(&post, &outcome), Decision::DontRetry);
    assert_eq!(server.served(), 1, "the cut-off request was never answered");
}

#[tokio::test]
async fn a_request_cut_off_by_a_keep_alive_timeout_succeeds_on_a_fresh_connection() {
    let server = HangingServer::start().await;
    let proxy = FaultProxy::start(server.addr).await.expect("a proxy");
    // The first connection goes through the proxy, which will swallow it; later ones go to the
    // server directly, so the retry's connection is answered while the hole stays open.
    let dials = Arc::new(AtomicUsize::new(0));
    let (via_proxy, direct) = (proxy.addr(), server.addr);
    let counted = Arc::clone(&dials);
    let connector = balanced::http2_connector::<Full<Bytes>>(Some(KEEP_ALIVE)).map_request(
        move |_: SocketAddr| match counted.fetch_add(1, Ordering::SeqCst) {
            0 => via_proxy,
            _ => direct,
        },
    );
    let backoff = Backoff::builder().initial(10 * MS).max(50 * MS).seed(7);
    let peers: Peers<SocketAddr> = Peers::builder()
        .backoff(backoff.build().expect("a valid backoff"))
        .seed(7)
        .build()
        .expect("a valid table");
    let peer = peers.add_static(via_proxy).expect("room for the peer");
    let mut events = peers.subscribe();
    let reconnect = ReconnectLayer::builder(peer.clone(), via_proxy)
        .connect_timeout(WAIT)
        .build()
        .expect("a valid reconnect layer");
    // The default classifier replays `Clone` requests: the caller sends `()`, which becomes a
    // fresh `GET /` for each attempt.
    let retry = RetryLayer::builder()
        .backoff(backoff.build().expect("a valid backoff"))
        .max_attempts(2)
        .seed(7)
        .build()
        .expect("a valid retry layer");
    let mut client = ServiceBuilder::new()
        .layer(retry)
        .map_request(|()| get())
        .layer(reconnect)
        .service(connector);

    let ready = within(WAIT, "ready", client.ready()).await.expect("ready");
    let response = within(WAIT, "the first answer", ready.call(())).await;
    let (status, _) = answer(response.expect("answered")).await;
    assert_eq!(status, StatusCode::OK);

    server.hang_next();
    let ready = within(WAIT, "ready", client.ready()).await.expect("ready");
    let call = ready.call(());
    let (outcome, ()) = tokio::join!(within(WAIT, "the retried request", call), async {
        eventually(WAIT, "the request reached the server", || {
            server.hanging() == 1
        })
        .await;
        proxy.black_hole(true);
    });
    let response = outcome.unwrap_or_else(|error| panic!("the caller saw {error:?}"));
    let (status, body) = answer(response).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, HELLO.as_bytes()));
    assert_eq!(dials.load(Ordering::SeqCst), 2, "one fresh connection");
    assert_eq!(proxy.accepted(), 1, "the retry did not go into the hole");
    assert_eq!(server.served(), 2, "the first answer and the retry's");

    // The retry went through a clone of the service (each clone dials its own connection);
    // the service keeps the connection the keep-alive timeout ended, and drops it at its next
    // `poll_ready`, as broken by that timeout (not by the closed connection `poll_ready` would
    // find), then dials a fresh one.
    let ready = within(WAIT, "ready", client.ready()).await.expect("ready");
    let response = within(WAIT, "the next answer", ready.call(())).await;
    let (status, _) = answer(response.expect("answered")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        dials.load(Ordering::SeqCst),
        3,
        "the service's fresh connection"
    );
    let mut broken = Vec::new();
    while let Some(event) = events.try_recv().expect("no events lost") {
        if let EventKind::Disconnected { error: Some(why) } = event.kind {
            broken.push(why);
        }
    }
    assert!(
        matches!(&broken[..], [why] if why.contains("keep-alive")),
        "{broken:?}"
    );
    // Counted once, when the connection was closed for it: a call error that is not a lost
    // connection would have been counted as a request failure too.
    assert_eq!(peer.snapshot().failures, 1, "{:?}", peer.snapshot());
}

/// tonic turns a transport error into a `Status`, keeping the error as its source: the hyper
/// keep-alive timeout stays in the chain, so the gRPC classifier finds it through the default
/// classification. (Before the default classifier knew the timeout, a call marked safe to
/// repeat was retried already, by the status's code, `UNAVAILABLE`.)
#[cfg(feature = "tonic")]
#[tokio::test]
async fn a_grpc_call_cut_off_by_a_keep_alive_timeout_is_retried_if_repeatable() {
    use redial::retry::grpc::GrpcClassifier;
    use tonic::Code;
    use tonic::transport::Endpoint;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    let server = HangingServer::start().await;
    let proxy = FaultProxy::start(server.addr).await.expect("a proxy");
    let endpoint = Endpoint::from_shared(proxy.uri())
        .expect("a valid uri")
        .http2_keep_alive_interval(KEEP_ALIVE)
        .keep_alive_timeout(KEEP_ALIVE)
        .keep_alive_while_idle(true);
    let channel = within(WAIT, "the connect", endpoint.connect())
        .await
        .expect("connected");
    let mut client = HealthClient::new(channel);

    // The server speaks HTTP/2, not gRPC: only the call that hangs matters here.
    server.hang_next();
    let check = client.check(HealthCheckRequest::default());
    let (outcome, ()) = tokio::join!(within(WAIT, "the keep-alive timeout", check), async {
        eventually(WAIT, "the call reached the server", || {
            server.hanging() == 1
        })
        .await;
        proxy.black_hole(true);
    });
    let status = match outcome {
        Ok(response) => panic!("answered through a black hole: {response:?}"),
        Err(status) => status,
    };

    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let source = status
        .source()
        .expect("a client-made status keeps its cause");
    let hyper = find_hyper(source).expect("a hyper::Error in the chain");
    assert!(hyper.is_timeout(), "not a timeout: {status:?}");
    let classifier = GrpcClassifier::new();
    assert_eq!(
        classifier.classify_status(&status, true),
        Decision::retry(REASON)
    );
    assert_eq!(
        classifier.classify_status(&status, false),
        Decision::DontRetry
    );
}
