//! What the balanced real-socket tests share: one hyper HTTP/1 or HTTP/2 connection as a
//! `tower::Service` with its connector (what each peer's `ReconnectLayer` keeps up), tower's p2c
//! over a `HealthDiscover` of such peers (the balanced part of the stack the README
//! recommends), and a log of a `Peers` table's events with the ejections and restores read
//! from it.
//!
//! Include it with `#[path = "support/balanced.rs"] mod balanced;`.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::{Body, Bytes, Incoming};
use hyper::client::conn::{http1, http2};
use hyper::http::uri::{Authority, Scheme};
use hyper::{Request, Response, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use redial::classify::Classify;
use redial::event::{Event, EventKind, RecvError};
use redial::health::HealthPolicy;
use redial::health::balance::{HealthDiscover, PenalizedPendingLayer};
use redial::peers::{PeerHandle, PeerKey, Peers};
use redial::reconnect::ReconnectLayer;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tower::balance::p2c::Balance;
use tower::timeout::TimeoutLayer;
use tower::{BoxError, Service, ServiceBuilder, service_fn};

/// One HTTP/1 connection as a `tower::Service`, reading each response's whole body. Ready only
/// while no request is in flight on it.
///
/// A caller that gives up on a request (a timeout drops its future) closes the connection:
/// hyper's dispatcher sees the dropped receiver and ends. The next `poll_ready` then fails and
/// the reconnect layer above connects again.
pub struct Http1<B>(http1::SendRequest<B>);

impl<B> Service<Request<B>> for Http1<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<Bytes>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Bytes>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let response = self.0.send_request(request);
        Box::pin(async move {
            let (parts, body) = response.await?.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok(Response::from_parts(parts, body))
        })
    }
}

/// A TCP connect and an HTTP/1 handshake (which sends nothing): a connector for redial's
/// reconnect layer, with no schedule of its own.
pub fn http1_connector<B>()
-> impl Service<SocketAddr, Response = Http1<B>, Error = BoxError, Future: Send> + Clone + Send + 'static
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    service_fn(|addr: SocketAddr| async move {
        let io = TcpStream::connect(addr).await?;
        io.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(io)).await?;
        // Drives the connection; ends when it closes.
        tokio::spawn(connection);
        Ok::<_, BoxError>(Http1(sender))
    })
}

/// One HTTP/2 connection as a `tower::Service`; responses stream (gRPC's status comes in the
/// trailers). Ready while the connection is up, for many requests at once.
///
/// HTTP/2 wants a scheme and an authority in each request: a request with a path alone (as
/// tonic's generated clients send them) gets `http://` and the peer's address.
///
/// A caller that gives up on a request resets its stream only: the connection stays, and so
/// does one into a black hole, unless keep-alive pings find it dead (see [`http2_connector`]).
pub struct Http2<B> {
    sender: http2::SendRequest<B>,
    authority: Authority,
}

impl<B> Service<Request<B>> for Http2<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Incoming>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.sender.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if request.uri().authority().is_none() {
            let mut parts = request.uri().clone().into_parts();
            parts.scheme = Some(Scheme::HTTP);
            parts.authority = Some(self.authority.clone());
            match Uri::from_parts(parts) {
                Ok(uri) => *request.uri_mut() = uri,
                Err(error) => return Box::pin(std::future::ready(Err(error.into()))),
            }
        }
        let response = self.sender.send_request(request);
        Box::pin(async move { Ok(response.await?) })
    }
}

/// A TCP connect and an HTTP/2 handshake (which waits for nothing from the server), with
/// keep-alive pings every `keep_alive` when `Some`, answered within as long, idle or not: a
/// connection whose pings go unanswered is closed, its `poll_ready` fails and the reconnect
/// layer connects again.
pub fn http2_connector<B>(
    keep_alive: Option<Duration>,
) -> impl Service<SocketAddr, Response = Http2<B>, Error = BoxError, Future: Send> + Clone + Send + 'static
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    service_fn(move |addr: SocketAddr| async move {
        let io = TcpStream::connect(addr).await?;
        io.set_nodelay(true)?;
        let mut builder = http2::Builder::new(TokioExecutor::new());
        if let Some(every) = keep_alive {
            builder
                .timer(TokioTimer::new())
                .keep_alive_interval(every)
                .keep_alive_timeout(every)
                .keep_alive_while_idle(true);
        }
        let (sender, connection) = builder.handshake(TokioIo::new(io)).await?;
        tokio::spawn(connection);
        let authority = Authority::try_from(addr.to_string())?;
        Ok::<_, BoxError>(Http2 { sender, authority })
    })
}

/// How each peer's stack under the balancer is set up.
pub struct PeerStack<C> {
    /// When the peer is ejected and probed; give it `Mode::Backpressure` under a balancer.
    pub policy: HealthPolicy<C>,
    /// Each attempt's timeout, inside the health layer, so that a black hole counts.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// The half-life of a failure's weight on the peer's load.
    pub penalty_decay: Duration,
}

/// tower's p2c over a `HealthDiscover` of `handles` (keyed by the address to connect to), each
/// peer's service `PenalizedPending ─ HealthLayer ─ TimeoutLayer ─ ReconnectLayer
/// (fail_fast(None)) ─ connector`.
pub fn balance<Req, C, M, S>(
    peers: &Peers<SocketAddr>,
    handles: &[PeerHandle<SocketAddr>],
    stack: PeerStack<C>,
    connector: M,
) -> impl Service<Req, Response = S::Response, Error = BoxError, Future: Send> + Send + 'static
where
    Req: Send + 'static,
    M: Service<SocketAddr, Response = S> + Clone + Send + Sync + 'static,
    M::Error: Into<BoxError>,
    M::Future: Send,
    S: Service<Req> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    S::Response: Send + 'static,
    C: Classify<Req, S::Response, BoxError> + Clone + Send + Sync + 'static,
{
    let load = PenalizedPendingLayer::builder()
        .decay(stack.penalty_decay)
        .build()
        .expect("a valid penalty");
    let discover = HealthDiscover::new(peers, handles.iter().cloned(), move |peer| {
        let reconnect = ReconnectLayer::builder(peer.clone(), *peer.key())
            .connect_timeout(stack.connect_timeout)
            .fail_fast(None)
            .build()
            .expect("a valid reconnect configuration");
        ServiceBuilder::new()
            .layer(load.clone())
            .layer(stack.policy.layer(peer.clone()))
            .layer(TimeoutLayer::new(stack.timeout))
            .layer(reconnect)
            .service(connector.clone())
    });
    Balance::new(discover)
}

/// Every event of a `Peers` table, kept as it happens by a task of the test's runtime.
#[derive(Clone)]
pub struct EventLog<K> {
    events: Arc<Mutex<Vec<Event<K>>>>,
    lagged: Arc<AtomicBool>,
}

impl<K: PeerKey> EventLog<K> {
    /// Starts recording `peers`' events. Give the table an `event_capacity` large enough for
    /// the test: [`lagged`](Self::lagged) says whether events were lost.
    pub fn record(peers: &Peers<K>) -> Self {
        let log = Self {
            events: Arc::default(),
            lagged: Arc::default(),
        };
        let mut events = peers.subscribe();
        let sink = log.clone();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(event) => sink.events.lock().unwrap().push(event),
                    Err(RecvError::Closed) => break,
                    Err(RecvError::Lagged(_)) => sink.lagged.store(true, Ordering::SeqCst),
                }
            }
        });
        log
    }

    /// Whether events were dropped because the log fell behind.
    pub fn lagged(&self) -> bool {
        self.lagged.load(Ordering::SeqCst)
    }

    /// When `peer` was ejected for a known time, and until when, in order.
    pub fn ejections(&self, peer: &K) -> Vec<(Instant, Instant)> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.peer == *peer)
            .filter_map(|e| match e.kind {
                EventKind::Ejected {
                    duration: Some(d), ..
                } => Some((e.at, e.at + d)),
                _ => None,
            })
            .collect()
    }

    /// When `peer` was first restored after `after`.
    pub fn restored_after(&self, peer: &K, after: Instant) -> Option<Instant> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .find(|e| e.peer == *peer && e.at >= after && matches!(e.kind, EventKind::Restored))
            .map(|e| e.at)
    }
}
