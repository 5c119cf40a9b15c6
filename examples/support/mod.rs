//! What the examples share: local HTTP servers that can be stopped, black-holed and restarted,
//! and an HTTP/1 connector for redial's layers to reconnect.

#![allow(dead_code)] // each example uses part of it

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::{JoinHandle, JoinSet};
use tower::{BoxError, Service, service_fn};

/// The request the examples send: a body that clones, so that retries can replay it.
pub type HttpRequest = Request<Full<Bytes>>;

/// A local hyper HTTP/1 server that answers "hello from <port>" after `latency`, counts the
/// requests it receives, and can be stopped (every connection dropped, port refused),
/// black-holed (requests accepted, never answered) and started again on the same port.
#[derive(Clone)]
pub struct Server {
    pub addr: SocketAddr,
    inner: Arc<ServerState>,
}

struct ServerState {
    received: AtomicU64,
    black_hole: AtomicBool,
    latency: Duration,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Server {
    /// Binds a free port on 127.0.0.1 and serves.
    pub async fn start(latency: Duration) -> Result<Self, BoxError> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let server = Self {
            addr: listener.local_addr()?,
            inner: Arc::new(ServerState {
                received: AtomicU64::new(0),
                black_hole: AtomicBool::new(false),
                latency,
                task: Mutex::new(None),
            }),
        };
        server.serve(listener).await;
        Ok(server)
    }

    /// Requests received, answered or not.
    pub fn received(&self) -> u64 {
        self.inner.received.load(Ordering::Relaxed)
    }

    /// Accept requests and never answer them (`true`), or answer again (`false`).
    pub fn black_hole(&self, on: bool) {
        self.inner.black_hole.store(on, Ordering::Relaxed);
    }

    /// Kills the server: the listener and every connection go; connects are refused.
    pub async fn stop(&self) {
        if let Some(task) = self.inner.task.lock().await.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Serves again on the same port.
    pub async fn restart(&self) -> Result<(), BoxError> {
        self.stop().await;
        let listener = TcpListener::bind(self.addr).await?;
        self.serve(listener).await;
        Ok(())
    }

    async fn serve(&self, listener: TcpListener) {
        let state = Arc::clone(&self.inner);
        let port = self.addr.port();
        let task = tokio::spawn(async move {
            // Owning the connections in a `JoinSet` means aborting this task drops them all.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = Arc::clone(&state);
                let hello = hyper::service::service_fn(move |_: Request<Incoming>| {
                    let state = Arc::clone(&state);
                    async move {
                        state.received.fetch_add(1, Ordering::Relaxed);
                        if state.black_hole.load(Ordering::Relaxed) {
                            std::future::pending::<()>().await;
                        }
                        tokio::time::sleep(state.latency).await;
                        let body = Full::new(Bytes::from(format!("hello from {port}")));
                        Ok::<_, Infallible>(Response::new(body))
                    }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), hello);
                connections.spawn(connection);
                while connections.try_join_next().is_some() {}
            }
        });
        *self.inner.task.lock().await = Some(task);
    }
}

/// A connector for redial's layers: a TCP connect and an HTTP/1 handshake; each connection is
/// an [`Http1`] service. No backoff of its own: the reconnect layer above decides when to
/// connect (a connector with a schedule of its own under it would make the two wait for each
/// other).
pub fn http1_connector()
-> impl Service<SocketAddr, Response = Http1, Error = BoxError, Future: Send> + Clone + Send + 'static
{
    service_fn(move |addr: SocketAddr| async move {
        let io = TcpStream::connect(addr).await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
        tokio::spawn(connection); // drives the connection; ends when it drops
        Ok::<_, BoxError>(Http1 {
            sender,
            abandoned: Arc::new(AtomicBool::new(false)),
        })
    })
}

/// One HTTP/1 connection as a `tower::Service`, reading each response's whole body.
///
/// HTTP/1 cannot cancel a request: once a caller gives up on one (a timeout drops its future)
/// the connection stays busy until the server answers, which may be never. Like a pool that
/// discards such connections, the service then reports itself broken from `poll_ready`, and
/// the reconnect layer above replaces it.
pub struct Http1 {
    sender: SendRequest<Full<Bytes>>,
    abandoned: Arc<AtomicBool>,
}

impl Service<HttpRequest> for Http1 {
    type Response = Response<String>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<String>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.abandoned.load(Ordering::Relaxed) {
            let reason = "a request on this HTTP/1 connection was abandoned mid-flight";
            return Poll::Ready(Err(std::io::Error::other(reason).into()));
        }
        self.sender.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: HttpRequest) -> Self::Future {
        let response = self.sender.send_request(request);
        let abandoned = Abandoned(Some(Arc::clone(&self.abandoned)));
        Box::pin(async move {
            let (parts, body) = response.await?.into_parts();
            let body = body.collect().await?.to_bytes();
            abandoned.defuse();
            let text = String::from_utf8_lossy(&body).into_owned();
            Ok(Response::from_parts(parts, text))
        })
    }
}

/// Marks the connection abandoned if the response future is dropped before it completed.
struct Abandoned(Option<Arc<AtomicBool>>);

impl Abandoned {
    fn defuse(mut self) {
        self.0 = None;
    }
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        if let Some(flag) = self.0.take() {
            flag.store(true, Ordering::Relaxed);
        }
    }
}

/// A request that is a path alone: `GET` it. Requests that are plain `Clone` values can be
/// retried by the default classifier, without the `http` feature's replayable bodies.
#[derive(Debug, Clone, Copy)]
pub struct Get(pub &'static str);

impl Service<Get> for Http1 {
    type Response = Response<String>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<String>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Service::<HttpRequest>::poll_ready(self, cx)
    }

    fn call(&mut self, Get(path): Get) -> Self::Future {
        Service::<HttpRequest>::call(self, get(path))
    }
}

/// `GET path` with an empty body.
pub fn get(path: &str) -> HttpRequest {
    Request::get(path)
        .body(Full::new(Bytes::new()))
        .expect("a valid request")
}
