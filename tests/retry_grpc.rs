//! `GrpcClassifier`: trailers-only statuses, `grpc-retry-pushback-ms`, the configurable code
//! set, committed responses, transport failures and what may be sent again, under tokio's
//! paused clock with a mock server; `Result<T, Status>` with the helpers; and one loopback
//! test with a real tonic server and client.
#![cfg(feature = "tonic")]

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use redial::backoff::{Backoff, Jitter};
use redial::event::{EventKind, NotRetriedReason, Subscription};
use redial::peers::Peers;
use redial::retry::grpc::GrpcClassifier;
use redial::retry::http::{ReplayBody, ReplayBodyLayer, RetryNonIdempotent};
use redial::retry::{RetryLayer, Retrying};
use tokio::time::Instant;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};
use tower::{BoxError, Layer, Service, ServiceExt, service_fn};

const MS: Duration = Duration::from_millis(1);

type Key = &'static str;
type Reply = Result<Response<String>, BoxError>;

/// 100 ms doubling to 5 s, no jitter.
fn backoff() -> Backoff {
    Backoff::builder()
        .initial(100 * MS)
        .multiplier(2.0)
        .max(5000 * MS)
        .jitter(Jitter::None)
        .build()
        .expect("a valid backoff")
}

/// The instants (ms since the start) at which the mock server was called.
#[derive(Clone)]
struct Calls {
    start: Instant,
    at: Arc<Mutex<Vec<u64>>>,
}

impl Calls {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            at: Arc::default(),
        }
    }

    /// Records a call; returns its 0-based number.
    fn record(&self) -> usize {
        let mut at = self.at.lock().expect("not poisoned");
        at.push(self.start.elapsed().as_millis() as u64);
        at.len() - 1
    }

    fn get(&self) -> Vec<u64> {
        self.at.lock().expect("not poisoned").clone()
    }
}

/// A gRPC call, as a tonic client sends it (its body is already the encoded message).
fn call() -> Request<String> {
    Request::post("http://api.test/pkg.Service/Method")
        .header("content-type", "application/grpc")
        .body("message".to_string())
        .expect("a valid request")
}

/// A trailers-only response: the call ended with `grpc-status: code`.
fn status(code: &str, pushback: Option<&str>) -> Reply {
    let mut response = Response::builder()
        .header("content-type", "application/grpc")
        .header("grpc-status", code);
    if let Some(ms) = pushback {
        response = response.header("grpc-retry-pushback-ms", ms);
    }
    Ok(response.body(String::new())?)
}

/// A response that started a message stream: headers without `grpc-status`.
fn answer() -> Reply {
    Ok(Response::builder()
        .header("content-type", "application/grpc")
        .body("answer".to_string())?)
}

fn io_error(kind: io::ErrorKind) -> Reply {
    Err(Box::new(io::Error::from(kind)))
}

/// A retry stack with `classifier` over a mock server that answers call `n` with `plan(n)`,
/// recording into the peer `"api"` of `peers`; at most 4 attempts.
fn stack(
    classifier: GrpcClassifier,
    peers: &Peers<Key>,
    plan: impl Fn(usize) -> Reply + Clone + Send + 'static,
) -> (
    impl Service<Request<String>, Response = Response<String>, Error = BoxError>,
    Calls,
) {
    let calls = Calls::new();
    let seen = calls.clone();
    let server = service_fn(move |_: Request<String>| {
        let reply = plan(seen.record());
        async move { reply }
    });
    let layer = RetryLayer::builder()
        .classifier(classifier)
        .backoff(backoff())
        .max_attempts(4)
        .peer(peers.peer("api").expect("a new peer"))
        .build()
        .expect("a valid layer");
    (layer.layer(server), calls)
}

fn retry_events(events: &mut Subscription<Key>) -> Vec<EventKind> {
    let mut out = Vec::new();
    while let Ok(Some(event)) = events.try_recv() {
        if matches!(
            event.kind,
            EventKind::RetryScheduled { .. } | EventKind::NotRetried { .. }
        ) {
            out.push(event.kind);
        }
    }
    out
}

fn scheduled(attempt: u32, delay_ms: u64, reason: &'static str) -> EventKind {
    EventKind::RetryScheduled {
        attempt,
        delay: Duration::from_millis(delay_ms),
        reason,
    }
}

fn grpc_status(response: &Response<String>) -> Option<&str> {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
}

// ---------------------------------------------------------------------------------------------
// Responses

#[tokio::test(start_paused = true)]
async fn unavailable_is_retried_after_the_pushback() {
    let peers = Peers::new();
    let mut events = peers.subscribe();
    let (client, calls) = stack(GrpcClassifier::new(), &peers, |n| match n {
        0 => status("14", Some("300")),
        1 => status("14", Some("1000")),
        _ => answer(),
    });

    let response = client.oneshot(call()).await.expect("answered");
    assert_eq!(response.into_body(), "answer");
    assert_eq!(calls.get(), [0, 300, 1300]);
    assert_eq!(
        retry_events(&mut events),
        [
            scheduled(1, 300, "UNAVAILABLE"),
            scheduled(2, 1000, "UNAVAILABLE")
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn unavailable_without_pushback_follows_the_backoff() {
    let peers = Peers::new();
    let (client, calls) = stack(GrpcClassifier::new(), &peers, |_| status("14", None));

    let response = client.oneshot(call()).await.expect("a response");
    assert_eq!(grpc_status(&response), Some("14"), "the last status");
    assert_eq!(calls.get(), [0, 100, 300, 700]);
}

#[tokio::test(start_paused = true)]
async fn other_codes_are_not_retried() {
    // OK, CANCELLED, UNKNOWN, DEADLINE_EXCEEDED, NOT_FOUND, RESOURCE_EXHAUSTED, ABORTED,
    // INTERNAL, UNAUTHENTICATED, and values that are no code at all.
    for code in [
        "0", "1", "2", "4", "5", "8", "10", "13", "16", "99", "x", "",
    ] {
        let peers = Peers::new();
        let (client, calls) = stack(GrpcClassifier::new(), &peers, |_| status(code, Some("10")));
        let response = client.oneshot(call()).await.expect("a response");
        assert_eq!(grpc_status(&response), Some(code));
        assert_eq!(calls.get(), [0], "grpc-status {code:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_retried_codes_are_configurable() {
    let classifier = GrpcClassifier::new().codes([Code::ResourceExhausted, Code::Aborted]);
    let peers = Peers::new();
    let mut events = peers.subscribe();
    let (client, calls) = stack(classifier, &peers, |n| match n {
        0 => status("8", None),
        1 => status("10", Some("250")),
        2 => status("14", None),
        _ => answer(),
    });

    let response = client.oneshot(call()).await.expect("a response");
    assert_eq!(
        grpc_status(&response),
        Some("14"),
        "UNAVAILABLE is out of the set"
    );
    assert_eq!(calls.get(), [0, 100, 350]);
    assert_eq!(
        retry_events(&mut events),
        [
            scheduled(1, 100, "RESOURCE_EXHAUSTED"),
            scheduled(2, 250, "ABORTED")
        ]
    );

    let none = GrpcClassifier::new().without_code(Code::Unavailable);
    let (client, calls) = stack(none, &peers, |_| status("14", None));
    client.oneshot(call()).await.expect("a response");
    assert_eq!(calls.get(), [0]);
}

#[tokio::test(start_paused = true)]
async fn malformed_pushback_is_ignored() {
    for bad in [
        "-5",
        "abc",
        "1.5",
        "+200",
        "",
        "300ms",
        "99999999999999999999999",
    ] {
        let peers = Peers::new();
        let (client, calls) = stack(GrpcClassifier::new(), &peers, move |n| match n {
            0 => status("14", Some(bad)),
            _ => answer(),
        });
        client.oneshot(call()).await.expect("answered");
        assert_eq!(
            calls.get(),
            [0, 100],
            "pushback {bad:?}: the backoff's delay"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn pushback_is_clamped_into_the_backoff_window() {
    // 0 ms waits the initial 100 ms, a day waits the 5 s max.
    let peers = Peers::new();
    let (client, calls) = stack(GrpcClassifier::new(), &peers, |n| match n {
        0 => status("14", Some("0")),
        1 => status("14", Some("86400000")),
        _ => answer(),
    });
    client.oneshot(call()).await.expect("answered");
    assert_eq!(calls.get(), [0, 100, 5100]);
}

#[tokio::test(start_paused = true)]
async fn a_committed_response_is_never_retried() {
    // Headers without grpc-status: the call's messages are on their way (gRFC A6).
    let peers = Peers::new();
    let (client, calls) = stack(GrpcClassifier::new(), &peers, |_| answer());
    client.oneshot(call()).await.expect("answered");
    assert_eq!(calls.get(), [0]);
}

#[tokio::test(start_paused = true)]
async fn proxy_errors_are_retried_only_for_calls_marked_safe() {
    let proxy_503 = |n: usize| -> Reply {
        match n {
            0 => Ok(Response::builder()
                .status(StatusCode::SERVICE_UNAVAILABLE)
                .body("upstream down".to_string())?),
            _ => answer(),
        }
    };
    let peers = Peers::new();
    let (client, calls) = stack(GrpcClassifier::new(), &peers, proxy_503);
    let response = client.oneshot(call()).await.expect("a response");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(calls.get(), [0]);

    let (client, calls) = stack(GrpcClassifier::new(), &peers, proxy_503);
    let mut marked = call();
    marked.extensions_mut().insert(RetryNonIdempotent);
    let response = client.oneshot(marked).await.expect("a response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(calls.get(), [0, 100]);

    // A 404 maps to UNIMPLEMENTED: not retried even when marked.
    let (client, calls) = stack(GrpcClassifier::new().idempotent(true), &peers, |_| {
        Ok(Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(String::new())?)
    });
    client.oneshot(call()).await.expect("a response");
    assert_eq!(calls.get(), [0]);
}

// ---------------------------------------------------------------------------------------------
// Errors

#[tokio::test(start_paused = true)]
async fn a_call_that_was_never_sent_is_retried() {
    let peers = Peers::new();
    let mut events = peers.subscribe();
    let (client, calls) = stack(GrpcClassifier::new(), &peers, |n| match n {
        0 | 1 => io_error(io::ErrorKind::ConnectionRefused),
        _ => answer(),
    });
    client.oneshot(call()).await.expect("answered");
    assert_eq!(calls.get(), [0, 100, 300]);
    assert_eq!(
        retry_events(&mut events),
        [
            scheduled(1, 100, "connection refused"),
            scheduled(2, 200, "connection refused")
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_cut_off_after_it_was_sent_is_retried_only_if_marked_safe() {
    let reset_once = |n: usize| match n {
        0 => io_error(io::ErrorKind::ConnectionReset),
        _ => answer(),
    };

    let peers = Peers::new();
    let (client, calls) = stack(GrpcClassifier::new(), &peers, reset_once);
    let error = client.oneshot(call()).await.expect_err("not retried");
    assert_eq!(
        error.downcast_ref::<io::Error>().map(io::Error::kind),
        Some(io::ErrorKind::ConnectionReset)
    );
    assert_eq!(calls.get(), [0]);

    let (client, calls) = stack(GrpcClassifier::new(), &peers, reset_once);
    let mut marked = call();
    marked.extensions_mut().insert(RetryNonIdempotent);
    client.oneshot(marked).await.expect("retried");
    assert_eq!(calls.get(), [0, 100]);

    let (client, calls) = stack(GrpcClassifier::new().idempotent(true), &peers, reset_once);
    client.oneshot(call()).await.expect("retried");
    assert_eq!(calls.get(), [0, 100]);
}

#[tokio::test(start_paused = true)]
async fn statuses_in_an_error_chain_are_classified_by_code() {
    let peers = Peers::new();
    let mut events = peers.subscribe();
    // A status a tower layer returned, with the server's pushback in its metadata.
    let (client, calls) = stack(GrpcClassifier::new(), &peers, |n| -> Reply {
        match n {
            0 => {
                let mut status = Status::unavailable("overloaded");
                status
                    .metadata_mut()
                    .insert("grpc-retry-pushback-ms", MetadataValue::from_static("400"));
                Err(Box::new(status))
            }
            _ => answer(),
        }
    });
    client.oneshot(call()).await.expect("answered");
    assert_eq!(calls.get(), [0, 400]);
    assert_eq!(
        retry_events(&mut events),
        [scheduled(1, 400, "UNAVAILABLE")]
    );

    let (client, calls) = stack(GrpcClassifier::new(), &peers, |_| -> Reply {
        Err(Box::new(Status::internal("bug")))
    });
    let error = client.oneshot(call()).await.expect_err("not retried");
    assert_eq!(
        error.downcast_ref::<Status>().map(Status::code),
        Some(Code::Internal)
    );
    assert_eq!(calls.get(), [0]);

    // A status the client made for a failed connect: nothing was sent.
    let (client, calls) = stack(GrpcClassifier::new(), &peers, |n| -> Reply {
        match n {
            0 => Err(Box::new(Status::from_error(Box::new(io::Error::from(
                io::ErrorKind::ConnectionRefused,
            ))))),
            _ => answer(),
        }
    });
    client.oneshot(call()).await.expect("answered");
    assert_eq!(calls.get(), [0, 100]);
}

#[tokio::test(start_paused = true)]
async fn attempts_run_out_with_the_last_status() {
    let peers = Peers::new();
    let mut events = peers.subscribe();
    let (client, calls) = stack(GrpcClassifier::new(), &peers, |_| status("14", Some("50")));
    let response = client.oneshot(call()).await.expect("a response");
    assert_eq!(grpc_status(&response), Some("14"));
    assert_eq!(calls.get(), [0, 100, 200, 300], "50 ms raised to 100 ms");
    let events = retry_events(&mut events);
    assert_eq!(
        events.last(),
        Some(&EventKind::NotRetried {
            reason: NotRetriedReason::AttemptsExhausted
        })
    );
    let seen = peers.get("api").expect("tracked").snapshot();
    assert_eq!((seen.failures, seen.retries), (4, 3));
}

// ---------------------------------------------------------------------------------------------
// Replaying bodies

#[tokio::test(start_paused = true)]
async fn a_streamed_body_is_replayed_byte_for_byte() {
    let calls = Calls::new();
    let seen = calls.clone();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let received = bodies.clone();
    let server = service_fn(move |request: Request<ReplayBody<Full<Bytes>>>| {
        let n = seen.record();
        let received = received.clone();
        async move {
            let body = request.into_body().collect().await?.to_bytes();
            received.lock().expect("not poisoned").push(body);
            match n {
                0 => status("14", Some("200")),
                _ => answer(),
            }
        }
    });
    let client = tower::ServiceBuilder::new()
        .layer(ReplayBodyLayer::new())
        .layer(
            RetryLayer::builder()
                .classifier(GrpcClassifier::new())
                .backoff(backoff())
                .build()
                .expect("a valid layer"),
        )
        .service(server);

    let message = Bytes::from(vec![7u8; 10 * 1024]);
    let request = Request::post("http://api.test/pkg.Service/Method")
        .body(Full::new(message.clone()))
        .expect("a valid request");
    client.oneshot(request).await.expect("answered");
    assert_eq!(calls.get(), [0, 200]);
    assert_eq!(
        *bodies.lock().expect("not poisoned"),
        [message.clone(), message]
    );
}

#[tokio::test(start_paused = true)]
async fn a_body_past_the_cap_is_sent_once_and_reported() {
    let calls = Calls::new();
    let seen = calls.clone();
    // Reads the body (so it can no longer be handed over whole), then answers UNAVAILABLE.
    let server = service_fn(move |request: Request<ReplayBody<Full<Bytes>>>| {
        seen.record();
        async move {
            let _ = http_body_util::BodyExt::collect(request.into_body()).await;
            status("14", None)
        }
    });
    let peers: Peers<Key> = Peers::new();
    let mut events = peers.subscribe();
    let client = tower::ServiceBuilder::new()
        .layer(ReplayBodyLayer::new().cap(1024))
        .layer(
            RetryLayer::builder()
                .classifier(GrpcClassifier::new())
                .backoff(backoff())
                .peer(peers.peer("api").expect("a new peer"))
                .build()
                .expect("a valid layer"),
        )
        .service(server);

    let request = Request::post("http://api.test/pkg.Service/Method")
        .body(Full::new(Bytes::from(vec![1u8; 4096])))
        .expect("a valid request");
    let response = client.oneshot(request).await.expect("a response");
    assert_eq!(grpc_status(&response), Some("14"));
    assert_eq!(calls.get(), [0]);
    assert_eq!(
        retry_events(&mut events),
        [EventKind::NotRetried {
            reason: NotRetriedReason::NotReplayable
        }]
    );
}

// ---------------------------------------------------------------------------------------------
// `Result<T, Status>` with the helpers

#[tokio::test(start_paused = true)]
async fn status_results_are_retried_by_the_helpers() {
    let start = Instant::now();
    let at = Mutex::new(Vec::new());
    let attempt = |n: usize| -> Result<&'static str, Status> {
        match n {
            0 => {
                let mut status = Status::unavailable("restarting");
                status
                    .metadata_mut()
                    .insert("grpc-retry-pushback-ms", MetadataValue::from_static("750"));
                Err(status)
            }
            1 => Err(Status::unavailable("still restarting")),
            _ => Ok("reply"),
        }
    };
    let peers: Peers<Key> = Peers::new();
    let mut events = peers.subscribe();
    let backoff = backoff()
        .to_builder()
        .max_attempts(5)
        .build()
        .expect("valid");
    let retrying = Retrying::new(&backoff)
        .classifier(GrpcClassifier::new())
        .peer(peers.peer("api").expect("a new peer"));

    let reply = retrying
        .run(|| {
            let mut at = at.lock().expect("not poisoned");
            at.push(start.elapsed().as_millis() as u64);
            let outcome = attempt(at.len() - 1);
            async move { outcome }
        })
        .await;
    assert_eq!(reply.ok(), Some("reply"));
    assert_eq!(*at.lock().expect("not poisoned"), [0, 750, 950]);
    assert_eq!(
        retry_events(&mut events),
        [
            scheduled(1, 750, "UNAVAILABLE"),
            scheduled(2, 200, "UNAVAILABLE")
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn status_results_the_helpers_leave_alone() {
    let backoff = backoff()
        .to_builder()
        .max_attempts(5)
        .build()
        .expect("valid");
    let count = |classifier: GrpcClassifier, status: fn() -> Status| {
        let calls = Mutex::new(0);
        let retrying = Retrying::new(&backoff).classifier(classifier);
        async move {
            let outcome: Result<(), Status> = retrying
                .run(|| {
                    *calls.lock().expect("not poisoned") += 1;
                    let outcome = Err(status());
                    async move { outcome }
                })
                .await;
            assert!(outcome.is_err());
            *calls.lock().expect("not poisoned")
        }
    };
    let reset = || Status::from_error(Box::new(io::Error::from(io::ErrorKind::ConnectionReset)));

    assert_eq!(
        count(GrpcClassifier::new(), || Status::not_found("x")).await,
        1
    );
    assert_eq!(
        count(GrpcClassifier::new(), || Status::internal("x")).await,
        1
    );
    // A status the client made for a reset connection: the call may have run.
    assert_eq!(count(GrpcClassifier::new(), reset).await, 1);
    assert_eq!(
        count(GrpcClassifier::new().idempotent(true), reset).await,
        5
    );
    assert_eq!(
        count(GrpcClassifier::new().with_code(Code::NotFound), || {
            Status::not_found("x")
        })
        .await,
        5
    );
}

// ---------------------------------------------------------------------------------------------
// A real tonic server and client over loopback

mod loopback {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use std::net::SocketAddr;

    use redial::retry::TrackPeer;
    use tonic::transport::server::TcpIncoming;
    use tonic::transport::{Channel, Endpoint, Server};
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::health_server::{Health, HealthServer};
    use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

    use super::*;

    /// Answers its first check with `UNAVAILABLE` and a 200 ms pushback, then `SERVING`.
    #[derive(Default)]
    struct FlakyHealth {
        checks: Arc<AtomicUsize>,
    }

    #[tonic::async_trait]
    impl Health for FlakyHealth {
        async fn check(
            &self,
            _: tonic::Request<HealthCheckRequest>,
        ) -> Result<tonic::Response<HealthCheckResponse>, Status> {
            if self.checks.fetch_add(1, Ordering::SeqCst) == 0 {
                let mut status = Status::unavailable("warming up");
                status
                    .metadata_mut()
                    .insert("grpc-retry-pushback-ms", MetadataValue::from_static("200"));
                return Err(status);
            }
            Ok(tonic::Response::new(HealthCheckResponse {
                status: ServingStatus::Serving.into(),
            }))
        }

        type WatchStream = std::pin::Pin<
            Box<
                dyn tonic::codegen::tokio_stream::Stream<Item = Result<HealthCheckResponse, Status>>
                    + Send,
            >,
        >;

        async fn watch(
            &self,
            _: tonic::Request<HealthCheckRequest>,
        ) -> Result<tonic::Response<Self::WatchStream>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
    }

    /// Serves a fresh `FlakyHealth` on 127.0.0.1; returns a channel connected to it and its
    /// check counter.
    async fn serve() -> (Channel, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("an address");
        let health = FlakyHealth::default();
        let checks = health.checks.clone();
        tokio::spawn(
            Server::builder()
                .serve_with_incoming(HealthServer::new(health), TcpIncoming::from(listener)),
        );
        let channel = endpoint(addr).connect().await.expect("connects");
        (channel, checks)
    }

    fn endpoint(addr: SocketAddr) -> Endpoint {
        Endpoint::from_shared(format!("http://{addr}")).expect("a valid uri")
    }

    /// One health check through the helpers.
    async fn check<P: TrackPeer<()>>(
        retrying: &Retrying<GrpcClassifier, P>,
        client: &HealthClient<Channel>,
    ) -> Result<tonic::Response<HealthCheckResponse>, Status> {
        let request = || HealthCheckRequest {
            service: String::new(),
        };
        retrying
            .run(|| {
                let mut client = client.clone();
                async move { client.check(request()).await }
            })
            .await
    }

    /// Runs a loopback test, bounded in time.
    async fn within_10s(test: impl Future<Output = ()>) {
        tokio::time::timeout(Duration::from_secs(10), test)
            .await
            .expect("done within 10 s");
    }

    /// The check was served after one retry, which waited the server's 200 ms pushback.
    fn assert_served_after_one_retry(
        response: Result<tonic::Response<HealthCheckResponse>, Status>,
        checks: &AtomicUsize,
        events: &mut Subscription<Key>,
    ) {
        let response = response.expect("retried to success");
        assert_eq!(response.into_inner().status(), ServingStatus::Serving);
        assert_eq!(checks.load(Ordering::SeqCst), 2);
        assert_eq!(retry_events(events), [scheduled(1, 200, "UNAVAILABLE")]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tonic_channel_retries_unavailable_through_the_layer() {
        within_10s(async {
            let (channel, checks) = serve().await;
            let peers: Peers<Key> = Peers::new();
            let mut events = peers.subscribe();
            // The body layer keeps the encoded request for the retry; the channel takes
            // tonic's body type, so the replayable body is boxed back into one under the retry.
            let stack = tower::ServiceBuilder::new()
                .layer(ReplayBodyLayer::new())
                .layer(
                    RetryLayer::builder()
                        .classifier(GrpcClassifier::new())
                        .backoff(backoff())
                        .peer(peers.peer("health").expect("a new peer"))
                        .build()
                        .expect("a valid layer"),
                )
                .map_request(|request: Request<ReplayBody<tonic::body::Body>>| {
                    request.map(tonic::body::Body::new)
                })
                .service(channel);
            let mut client = HealthClient::new(stack);

            let request = HealthCheckRequest {
                service: String::new(),
            };
            let response = client.check(request).await;
            assert_served_after_one_retry(response, &checks, &mut events);
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_generated_client_retries_unavailable_through_the_helpers() {
        within_10s(async {
            let (channel, checks) = serve().await;
            let peers: Peers<Key> = Peers::new();
            let mut events = peers.subscribe();
            let retrying = Retrying::new(&backoff())
                .classifier(GrpcClassifier::new())
                .peer(peers.peer("health").expect("a new peer"));

            let response = check(&retrying, &HealthClient::new(channel)).await;
            assert_served_after_one_retry(response, &checks, &mut events);
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_connect_is_a_transparent_retry_for_the_helpers() {
        within_10s(async {
            // A port nobody listens on: bound, then closed.
            let addr = {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                listener.local_addr().expect("an address")
            };
            let client = HealthClient::new(endpoint(addr).connect_lazy());
            let peers: Peers<Key> = Peers::new();
            let mut events = peers.subscribe();
            let fast = Backoff::builder()
                .initial(MS)
                .max(10 * MS)
                .jitter(Jitter::None)
                .max_attempts(1)
                .build()
                .expect("a valid backoff");
            let retrying = Retrying::new(&fast)
                .classifier(GrpcClassifier::new())
                .max_transparent(2)
                .peer(peers.peer("down").expect("a new peer"));

            let status = check(&retrying, &client).await.expect_err("nobody listens");
            assert_eq!(status.code(), Code::Unavailable, "{status}");
            assert_eq!(
                retry_events(&mut events),
                [
                    scheduled(1, 1, "connection refused"),
                    scheduled(2, 2, "connection refused"),
                    EventKind::NotRetried {
                        reason: NotRetriedReason::AttemptsExhausted
                    }
                ],
                "two free transparent retries, no ordinary one"
            );
        })
        .await;
    }
}
