//! HTTP retries (`redial::retry::http`): the classifier's decisions, `Retry-After` honoured and
//! clamped under virtual time, and, over real loopback sockets with hyper-util's legacy
//! `Client`, what a server actually receives: one retry after `Retry-After: 1`, a POST never
//! sent twice once it reached the server, a POST that failed to connect sent once it can be,
//! a body past the replay cap sent once and whole, a streaming body replayed byte for byte.
//!
//! Real-socket tests run in real time (never `start_paused` with sockets), on 127.0.0.1 only,
//! each bounded by `TEST_CAP`.

#![cfg(feature = "hyper")]

#[path = "support/bounded.rs"]
mod bounded;
#[path = "support/http_script.rs"]
mod http_script;
#[path = "support/http_server.rs"]
mod http_server;

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use redial::backoff::{Backoff, Jitter};
use redial::event::{EventKind, NotRetriedReason};
use redial::peers::{PeerHandle, Peers};
use redial::retry::http::{
    HttpClassifier, ReplayBody, ReplayBodyLayer, ReplayBodyService, RetryNonIdempotent,
};
use redial::retry::{Classify, Decision, Replay, Retry, RetryLayer};
use tokio::time::Instant;
use tower::{BoxError, ServiceBuilder, ServiceExt, service_fn};

use bounded::within;
use http_script::{Chunks, Received, Reply, ScriptedServer, pattern};

const MS: Duration = Duration::from_millis(1);
const KIB: usize = 1024;
/// No real-socket test may take longer than this, whatever goes wrong.
const TEST_CAP: Duration = Duration::from_secs(15);

/// The backoff of the socket tests: 10 ms doubling, full jitter, and a 5 s `max` so that
/// `Retry-After: 1` is honoured as is.
fn backoff() -> Backoff {
    Backoff::builder()
        .initial(10 * MS)
        .max(Duration::from_secs(5))
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// The classifier, without a network.

const IDEMPOTENT: [Method; 6] = [
    Method::GET,
    Method::HEAD,
    Method::OPTIONS,
    Method::PUT,
    Method::DELETE,
    Method::TRACE,
];

fn methods() -> Vec<Method> {
    let mut methods = IDEMPOTENT.to_vec();
    methods.extend([
        Method::POST,
        Method::PATCH,
        Method::CONNECT,
        Method::from_bytes(b"PURGE").unwrap(),
    ]);
    methods
}

fn request(method: &Method, opt_in: bool) -> Request<()> {
    let mut request = Request::builder()
        .method(method.clone())
        .uri("http://api.test/x")
        .body(())
        .unwrap();
    if opt_in {
        request.extensions_mut().insert(RetryNonIdempotent);
    }
    request
}

fn response(status: u16) -> Result<Response<()>, BoxError> {
    let mut response = Response::new(());
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    Ok(response)
}

#[test]
fn statuses_are_retried_for_idempotent_or_opted_in_requests_only() {
    let classifier = HttpClassifier::new();
    for method in methods() {
        for opt_in in [false, true] {
            let request = request(&method, opt_in);
            let repeatable = opt_in || IDEMPOTENT.contains(&method);
            for status in [200, 201, 301, 400, 404, 409, 500, 501, 505] {
                let decision = classifier.classify(&request, &response(status));
                assert_eq!(decision, Decision::DontRetry, "{method} {status} {opt_in}");
            }
            for (status, reason) in [
                (408, "408"),
                (429, "429"),
                (502, "502"),
                (503, "503"),
                (504, "504"),
            ] {
                let decision = classifier.classify(&request, &response(status));
                let expected = if repeatable {
                    Decision::retry(reason)
                } else {
                    Decision::DontRetry
                };
                assert_eq!(decision, expected, "{method} {status} opt-in: {opt_in}");
            }
        }
    }
}

#[test]
fn errors_are_transparent_for_any_method_and_retried_only_when_repeatable() {
    let classifier = HttpClassifier::new();
    let io = |kind| -> Result<Response<()>, BoxError> { Err(io::Error::from(kind).into()) };
    for method in methods() {
        for opt_in in [false, true] {
            let request = request(&method, opt_in);
            let repeatable = opt_in || IDEMPOTENT.contains(&method);
            let case = format!("{method} opt-in: {opt_in}");

            // Nothing was sent: safe whatever the request.
            assert_eq!(
                classifier.classify(&request, &io(io::ErrorKind::ConnectionRefused)),
                Decision::transparent("connection refused"),
                "{case}"
            );
            // It may have reached the server.
            for (kind, reason) in [
                (io::ErrorKind::ConnectionReset, "connection reset"),
                (io::ErrorKind::TimedOut, "timed out"),
            ] {
                let expected = if repeatable {
                    Decision::retry(reason)
                } else {
                    Decision::DontRetry
                };
                assert_eq!(classifier.classify(&request, &io(kind)), expected, "{case}");
            }
            // Not a network failure at all.
            assert_eq!(
                classifier.classify(&request, &Err::<Response<()>, _>("bad request body".into())),
                Decision::DontRetry,
                "{case}"
            );
        }
    }
}

#[test]
fn retry_after_rides_along_with_a_retried_status() {
    let classifier = HttpClassifier::new();
    let get = request(&Method::GET, false);
    let with = |value: &'static str| -> Result<Response<()>, BoxError> {
        let mut response = response(503)?;
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from_static(value));
        Ok(response)
    };
    let after = |value| match classifier.classify(&get, &with(value)) {
        Decision::Retry { reason, after } => {
            assert_eq!(reason, "503");
            after
        }
        other => panic!("{value}: {other:?}"),
    };
    assert_eq!(after("7"), Some(Duration::from_secs(7)));
    assert_eq!(after("Thu, 01 Jan 1970 00:00:00 GMT"), Some(Duration::ZERO));
    assert_eq!(after("soon"), None);
    assert_eq!(after("-3"), None);
    assert_eq!(after("99999999999999999999999"), None);
}

#[test]
fn the_status_set_is_configurable() {
    let get = request(&Method::GET, false);
    let only_500 = HttpClassifier::new().statuses([StatusCode::INTERNAL_SERVER_ERROR]);
    assert_eq!(
        only_500.classify(&get, &response(500)),
        Decision::retry("500")
    );
    assert_eq!(only_500.classify(&get, &response(503)), Decision::DontRetry);

    let teapot = HttpClassifier::new()
        .with_status(StatusCode::IM_A_TEAPOT)
        .without_status(StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        teapot.classify(&get, &response(418)),
        Decision::retry("4xx status")
    );
    assert_eq!(teapot.classify(&get, &response(429)), Decision::DontRetry);
    assert_eq!(
        teapot.classify(&get, &response(503)),
        Decision::retry("503")
    );
    assert!(format!("{teapot:?}").contains("418"));

    let none = HttpClassifier::new().statuses([]);
    assert_eq!(none.classify(&get, &response(503)), Decision::DontRetry);
    assert_eq!(HttpClassifier::default(), HttpClassifier::new());
}

#[tokio::test]
async fn a_replay_keeps_every_part_of_the_request() {
    #[derive(Debug, Clone, PartialEq)]
    struct Tag(u32);

    let mut original = Request::builder()
        .method(Method::PATCH)
        .uri("http://api.test/items/7?x=1")
        .version(Version::HTTP_2)
        .header("x-one", "1")
        .header("x-many", "a")
        .header("x-many", "b")
        .body(ReplayBody::new(Full::new(Bytes::from("patch"))))
        .unwrap();
    original.extensions_mut().insert(Tag(7));
    original.extensions_mut().insert(RetryNonIdempotent);

    let copy = HttpClassifier::new().replay(&original).unwrap();
    assert_eq!(copy.method(), original.method());
    assert_eq!(copy.uri(), original.uri());
    assert_eq!(copy.version(), Version::HTTP_2);
    assert_eq!(copy.headers(), original.headers());
    assert_eq!(copy.extensions().get::<Tag>(), Some(&Tag(7)));
    assert!(HttpClassifier::is_repeatable(&copy));
    assert_eq!(
        copy.into_body().collect().await.unwrap().to_bytes(),
        "patch"
    );

    // Any `Clone` body is replayed by cloning it.
    let plain = Request::put("http://api.test/")
        .body(String::from("s"))
        .unwrap();
    let copy = HttpClassifier::new().replay(&plain).unwrap();
    assert_eq!(copy.body(), "s");
}

// ---------------------------------------------------------------------------------------------
// Through the layer, with a stand-in server, in virtual time.

/// What the stand-in received: method, body, and when.
type Log = Vec<(Method, Bytes, Instant)>;

/// Sends `method` (marked [`RetryNonIdempotent`] if `opt_in`) with a small body through the
/// replay and retry layers to a stand-in server that answers from `script` (the last answer
/// repeats); returns the status and what the stand-in received.
async fn through_layers(
    method: Method,
    opt_in: bool,
    script: Vec<Result<Reply, io::ErrorKind>>,
) -> (Result<StatusCode, BoxError>, Log) {
    let log = Arc::new(Mutex::new(Log::new()));
    let seen = Arc::clone(&log);
    let script = Arc::new(Mutex::new(script));
    let stand_in = service_fn(move |request: Request<ReplayBody<Full<Bytes>>>| {
        let seen = Arc::clone(&seen);
        let script = Arc::clone(&script);
        async move {
            let method = request.method().clone();
            let body = request.into_body().collect().await?.to_bytes();
            seen.lock().unwrap().push((method, body, Instant::now()));
            let next = {
                let mut script = script.lock().unwrap();
                if script.len() > 1 {
                    script.remove(0)
                } else {
                    script[0].clone()
                }
            };
            let reply = next.map_err(io::Error::from)?;
            let mut response = response(reply.status.as_u16())?;
            for (name, value) in reply.headers {
                response
                    .headers_mut()
                    .insert(name, HeaderValue::from_static(value));
            }
            Ok::<_, BoxError>(response)
        }
    });
    let retry = RetryLayer::builder()
        .classifier(HttpClassifier::new())
        .backoff(
            Backoff::builder()
                .initial(100 * MS)
                .max(Duration::from_secs(5))
                .jitter(Jitter::None)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let client = ServiceBuilder::new()
        .layer(ReplayBodyLayer::new())
        .layer(retry)
        .service(stand_in);
    let mut request = Request::builder()
        .method(method)
        .uri("http://api.test/items/7")
        .body(Full::new(Bytes::from("payload")))
        .unwrap();
    if opt_in {
        request.extensions_mut().insert(RetryNonIdempotent);
    }
    let status = client.oneshot(request).await.map(|r| r.status());
    let log = log.lock().unwrap().clone();
    (status, log)
}

/// The delays between the logged attempts.
fn gaps(log: &[(Method, Bytes, Instant)]) -> Vec<Duration> {
    log.windows(2).map(|w| w[1].2 - w[0].2).collect()
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_within_the_backoff_window() {
    let retry_then_ok = |value| {
        vec![
            Ok(Reply::status(503).header("retry-after", value)),
            Ok(Reply::status(200)),
        ]
    };
    for (value, expected) in [
        ("2", Duration::from_secs(2)),
        // Clamped up to `initial`, down to `max`.
        ("0", 100 * MS),
        ("Thu, 01 Jan 1970 00:00:00 GMT", 100 * MS),
        ("86400", Duration::from_secs(5)),
        ("18446744073709551615", Duration::from_secs(5)),
        // Ignored: the schedule's first delay.
        ("soon", 100 * MS),
    ] {
        let (status, log) = through_layers(Method::GET, false, retry_then_ok(value)).await;
        assert_eq!(status.unwrap(), StatusCode::OK, "{value}");
        assert_eq!(gaps(&log), [expected], "{value}");
        assert!(log.iter().all(|(_, body, _)| body == "payload"));
    }
}

#[tokio::test(start_paused = true)]
async fn a_post_is_retried_only_when_nothing_was_sent_or_it_opted_in() {
    let unavailable = || vec![Ok(Reply::status(503)), Ok(Reply::status(200))];
    let (status, log) = through_layers(Method::POST, false, unavailable()).await;
    assert_eq!(status.unwrap(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(log.len(), 1);

    let (status, log) = through_layers(Method::POST, true, unavailable()).await;
    assert_eq!(status.unwrap(), StatusCode::OK);
    assert_eq!(log.len(), 2);

    let reset = vec![Err(io::ErrorKind::ConnectionReset), Ok(Reply::status(200))];
    let (status, log) = through_layers(Method::POST, false, reset.clone()).await;
    assert!(status.is_err());
    assert_eq!(log.len(), 1);
    let (status, log) = through_layers(Method::DELETE, false, reset).await;
    assert_eq!(status.unwrap(), StatusCode::OK);
    assert_eq!(log.len(), 2);

    // A refused connect sent nothing: retried whatever the method (the stand-in logs the
    // request anyway; a real refused connect never reaches a server).
    let refused = vec![
        Err(io::ErrorKind::ConnectionRefused),
        Ok(Reply::status(200)),
    ];
    let (status, log) = through_layers(Method::POST, false, refused).await;
    assert_eq!(status.unwrap(), StatusCode::OK);
    assert_eq!(log.len(), 2);
    assert_eq!(log[1].1, "payload");
}

#[tokio::test(start_paused = true)]
async fn a_large_body_whose_connect_failed_is_sent_whole_on_the_retry() {
    let received = Arc::new(Mutex::new(Vec::<usize>::new()));
    let log = Arc::clone(&received);
    // The first call fails before reading anything (a refused connect); the second reads all.
    let backend = service_fn(move |request: Request<ReplayBody<Full<Bytes>>>| {
        let log = Arc::clone(&log);
        async move {
            if log.lock().unwrap().is_empty() {
                log.lock().unwrap().push(0);
                return Err(BoxError::from(io::Error::from(
                    io::ErrorKind::ConnectionRefused,
                )));
            }
            let body = request.into_body().collect().await?.to_bytes();
            log.lock().unwrap().push(body.len());
            response(200)
        }
    });
    let client = ServiceBuilder::new()
        .layer(ReplayBodyLayer::new())
        .layer(
            RetryLayer::builder()
                .classifier(HttpClassifier::new())
                .backoff(backoff())
                .build()
                .unwrap(),
        )
        .service(backend);
    let request = Request::post("http://api/upload")
        .body(Full::new(Bytes::from(vec![7u8; 100 * KIB])))
        .unwrap();
    let response = client.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(*received.lock().unwrap(), [0, 100 * KIB]);
}

#[tokio::test(start_paused = true)]
async fn a_body_known_to_be_past_the_cap_is_still_classified_and_reported() {
    let calls = Arc::new(Mutex::new(0u32));
    let seen = Arc::clone(&calls);
    // Reads the body, then answers 503.
    let backend = service_fn(move |request: Request<ReplayBody<Full<Bytes>>>| {
        *seen.lock().unwrap() += 1;
        async move {
            request.into_body().collect().await?;
            response(503)
        }
    });
    let peers: Peers<&'static str> = Peers::new();
    let mut events = peers.subscribe();
    let client = ServiceBuilder::new()
        .layer(ReplayBodyLayer::new())
        .layer(
            RetryLayer::builder()
                .classifier(HttpClassifier::new())
                .backoff(backoff())
                .peer(peers.peer("api").unwrap())
                .build()
                .unwrap(),
        )
        .service(backend);
    // 100 KiB, and the body says so up front: never buffered, never replayable.
    let request = Request::put("http://api/")
        .body(Full::new(Bytes::from(vec![7u8; 100 * 1024])))
        .unwrap();
    let response = client.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(*calls.lock().unwrap(), 1);
    assert_eq!(peers.snapshot("api").unwrap().failures, 1);
    let kinds: Vec<_> = std::iter::from_fn(|| events.try_recv().unwrap())
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [EventKind::NotRetried {
            reason: NotRetriedReason::NotReplayable
        }]
    );
}

// ---------------------------------------------------------------------------------------------
// Real sockets: hyper-util's legacy client under the replay and retry layers.

type HttpClient = Client<HttpConnector, ReplayBody<Chunks>>;
type Stack = ReplayBodyService<Retry<HttpClient, HttpClassifier, PeerHandle<&'static str>>>;

/// The stack the module documents, recording into peer `"api"` of the returned `Peers`.
fn stack(backoff: Backoff) -> (Stack, Peers<&'static str>) {
    let peers = Peers::new();
    let client = Client::builder(TokioExecutor::new()).build_http();
    let retry = RetryLayer::builder()
        .classifier(HttpClassifier::new())
        .backoff(backoff)
        .peer(peers.peer("api").unwrap())
        .build()
        .unwrap();
    let stack = ServiceBuilder::new()
        .layer(ReplayBodyLayer::new())
        .layer(retry)
        .service(client);
    (stack, peers)
}

/// What one call through the stack came to.
struct Exchange {
    status: StatusCode,
    elapsed: Duration,
    /// What the server received.
    received: Vec<Received>,
    /// The events of the peer.
    events: Vec<EventKind>,
}

/// Serves `script` on a free port and sends it `method` with `body` through the stack once.
async fn exchange(script: Vec<Reply>, method: Method, body: Chunks) -> Exchange {
    within(TEST_CAP, "the test", async {
        let server = ScriptedServer::bind(script).await;
        let (client, peers) = stack(backoff());
        let mut subscription = peers.subscribe();
        let request = Request::builder()
            .method(method)
            .uri(server.uri())
            .body(body)
            .unwrap();
        let start = Instant::now();
        let response = client.oneshot(request).await.unwrap();
        let elapsed = start.elapsed();
        let mut events = Vec::new();
        while let Ok(Some(event)) = subscription.try_recv() {
            events.push(event.kind);
        }
        Exchange {
            status: response.status(),
            elapsed,
            received: server.received(),
            events,
        }
    })
    .await
}

/// The body of a request the server read to its end.
fn whole(received: &Received) -> &[u8] {
    received.body.as_deref().expect("a whole body")
}

#[tokio::test]
async fn retry_after_one_second_is_honoured_once() {
    let script = vec![
        Reply::status(503).header("retry-after", "1"),
        Reply::status(200),
    ];
    let done = exchange(script, Method::GET, Chunks::empty()).await;
    assert_eq!(done.status, StatusCode::OK);
    assert_eq!(done.received.len(), 2, "exactly one retry");
    assert!(done.elapsed >= Duration::from_secs(1), "{:?}", done.elapsed);
    assert!(done.elapsed < Duration::from_secs(3), "{:?}", done.elapsed);
    let scheduled: Vec<_> = done
        .events
        .iter()
        .filter(|kind| matches!(kind, EventKind::RetryScheduled { .. }))
        .collect();
    assert_eq!(
        scheduled,
        [&EventKind::RetryScheduled {
            attempt: 1,
            delay: Duration::from_secs(1),
            reason: "503"
        }]
    );
}

#[tokio::test]
async fn a_post_that_reached_the_server_is_never_sent_twice() {
    let script = vec![Reply::status(503).header("retry-after", "0")];
    let done = exchange(script, Method::POST, Chunks::new(pattern(100), 10)).await;
    assert_eq!(done.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(done.received.len(), 1);
    assert_eq!(done.received[0].method, Method::POST);
    assert_eq!(whole(&done.received[0]), pattern(100));
}

#[tokio::test]
async fn a_post_that_failed_to_connect_is_sent_once_the_server_is_up() {
    within(TEST_CAP, "the test", async {
        // A port nobody listens on, for now.
        let addr: SocketAddr = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap()
        };
        // No jitter and a first delay long enough for the server to be started in it.
        let slow = Backoff::builder()
            .initial(200 * MS)
            .max(Duration::from_secs(5))
            .jitter(Jitter::None)
            .build()
            .unwrap();
        let (client, peers) = stack(slow);
        let mut subscription = peers.subscribe();
        let uri: hyper::Uri = format!("http://{addr}/orders").parse().unwrap();
        let call = tokio::spawn(
            client.oneshot(
                Request::post(uri)
                    .body(Chunks::new(pattern(64), 16))
                    .unwrap(),
            ),
        );

        // The first attempt fails to connect and a transparent retry is scheduled.
        let mut scheduled = None;
        for _ in 0..100 {
            let event = subscription.recv().await.unwrap();
            if let EventKind::RetryScheduled { reason, .. } = event.kind {
                scheduled = Some(reason);
                break;
            }
        }
        assert_eq!(scheduled, Some("connect error"));
        let listener = http_server::bind(addr).await.unwrap();
        let server = ScriptedServer::start(listener, vec![Reply::status(201)]);

        let response = call.await.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let received = server.received();
        assert_eq!(received.len(), 1, "sent once it could be, and only once");
        assert_eq!(whole(&received[0]), pattern(64));
    })
    .await;
}

#[tokio::test]
async fn a_body_past_the_cap_is_sent_once_and_whole() {
    let script = vec![Reply::status(503), Reply::status(200)];
    let body = Chunks::new(pattern(100 * KIB), KIB);
    let done = exchange(script, Method::PUT, body).await;
    assert_eq!(done.status, StatusCode::SERVICE_UNAVAILABLE, "not retried");
    assert_eq!(done.received.len(), 1);
    for request in &done.received {
        assert_eq!(whole(request), pattern(100 * KIB), "never truncated");
    }
    let not_replayable = EventKind::NotRetried {
        reason: NotRetriedReason::NotReplayable,
    };
    assert!(done.events.contains(&not_replayable), "{:?}", done.events);
}

#[tokio::test]
async fn a_streaming_body_is_replayed_byte_for_byte() {
    let script = vec![Reply::status(503), Reply::status(200)];
    let body = Chunks::new(pattern(10 * KIB), 700);
    let done = exchange(script, Method::PUT, body).await;
    assert_eq!(done.status, StatusCode::OK);
    assert_eq!(done.received.len(), 2);
    let (first, second) = (whole(&done.received[0]), whole(&done.received[1]));
    assert_eq!(first, pattern(10 * KIB));
    assert!(first == second, "the retry sent the same bytes");
}

#[tokio::test]
async fn a_body_the_server_did_not_read_is_replayed_whole() {
    // The first answer comes before the body was read: the retry's copy sends what was
    // buffered, then reads on from the original body.
    let script = vec![Reply::status(503).early(), Reply::status(200)];
    let body = Chunks::new(pattern(40 * KIB), KIB);
    let done = exchange(script, Method::PUT, body).await;
    assert_eq!(done.status, StatusCode::OK);
    assert_eq!(done.received.len(), 2);
    assert_eq!(whole(&done.received[1]), pattern(40 * KIB));
}

/// A server that closes its first connection as soon as the request head arrived, without a
/// word (a pooled keep-alive connection closed under the client), then answers 200 on the
/// next. Returns its address and the number of connections it accepted.
async fn closes_first_connection() -> (SocketAddr, Arc<Mutex<usize>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(Mutex::new(0usize));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        // Bounded: two connections are all any test here makes.
        for n in 0..2 {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            *count.lock().unwrap() += 1;
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(read) => head.extend_from_slice(&buf[..read]),
                }
            }
            if n > 0 {
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            }
            drop(socket);
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn a_get_cut_off_by_a_closed_connection_is_retried_and_a_post_is_not() {
    within(TEST_CAP, "the test", async {
        for (method, expected) in [(Method::GET, Some(StatusCode::OK)), (Method::POST, None)] {
            let (addr, accepted) = closes_first_connection().await;
            let client: Client<HttpConnector, Full<Bytes>> =
                Client::builder(TokioExecutor::new()).build_http();
            let svc = ServiceBuilder::new()
                .layer(
                    RetryLayer::builder()
                        .classifier(HttpClassifier::new())
                        .backoff(backoff())
                        .build()
                        .unwrap(),
                )
                .service(client);
            let request = Request::builder()
                .method(method.clone())
                .uri(format!("http://{addr}/"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            let outcome = svc.oneshot(request).await;
            assert_eq!(
                outcome.as_ref().ok().map(|r| r.status()),
                expected,
                "{method}"
            );
            let connections = *accepted.lock().unwrap();
            assert_eq!(
                connections,
                if expected.is_some() { 2 } else { 1 },
                "{method}"
            );
        }
    })
    .await;
}
