//! hyper's HTTP/1 client over any connector of streams: [`HttpConnect`] makes one
//! [`HttpConn`] per connect, so it is the `MakeService` a `ReconnectLayer` (or tower's own
//! `Reconnect`) wraps.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tower::{BoxError, Service};

/// What the stacks send.
pub type Req = Request<Full<Bytes>>;
/// What the stacks get back: the head and the whole body.
pub type Res = Response<Bytes>;

/// The header that carries a request's id, so the server can count executions per request.
pub const ID: &str = "x-request-id";

/// A request with `method` and `id`.
pub fn request(method: Method, id: u64) -> Req {
    let body = if method == Method::POST {
        Full::new(Bytes::from_static(b"order"))
    } else {
        Full::new(Bytes::new())
    };
    Request::builder()
        .method(method)
        .uri("/")
        .header(ID, id)
        .body(body)
        .unwrap_or_else(|_| Request::new(Full::new(Bytes::new())))
}

/// Connects through `C`, then speaks HTTP/1 over the stream.
#[derive(Debug, Clone)]
pub struct HttpConnect<C> {
    inner: C,
}

impl<C> HttpConnect<C> {
    pub fn new(inner: C) -> Self {
        Self { inner }
    }
}

impl<C, T> Service<T> for HttpConnect<C>
where
    C: Service<T>,
    C::Response: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    C::Error: Into<BoxError>,
    C::Future: 'static,
{
    type Response = HttpConn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpConn, BoxError>>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, target: T) -> Self::Future {
        let connect = self.inner.call(target);
        Box::pin(async move {
            let stream = connect.await.map_err(Into::into)?;
            let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
            tokio::task::spawn_local(async move {
                let _ = connection.await;
            });
            Ok(HttpConn {
                sender,
                abandoned: Rc::default(),
            })
        })
    }
}

/// One HTTP/1 connection as a tower service: ready when hyper can take a request, failing
/// `poll_ready` once the connection is closed.
///
/// HTTP/1 cannot cancel a request: once a caller drops a response future (a timeout above),
/// the connection waits for that response before it takes another, and under a partition it
/// never comes. Like hyper-util's pool, the connection is then given up: `poll_ready` fails
/// with `ConnectionAborted`, which redial's reconnect layer takes as a broken connection.
#[derive(Debug)]
pub struct HttpConn {
    sender: SendRequest<Full<Bytes>>,
    abandoned: Rc<Cell<bool>>,
}

impl Service<Req> for HttpConn {
    type Response = Res;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Res, BoxError>>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.abandoned.get() {
            let abandoned = "a request on this HTTP/1 connection was abandoned mid-flight";
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                abandoned,
            )
            .into()));
        }
        self.sender.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let response = self.sender.send_request(request);
        let abandoned = Abandoned(Some(Rc::clone(&self.abandoned)));
        Box::pin(async move {
            let exchange = async {
                let (head, body) = response.await?.into_parts();
                let body = body.collect().await?.to_bytes();
                Ok::<_, hyper::Error>(Response::from_parts(head, body))
            };
            let result = exchange.await;
            abandoned.defuse();
            Ok(result?)
        })
    }
}

/// Marks its connection abandoned when dropped before [`defuse`](Abandoned::defuse): the
/// response future was dropped with the exchange under way. An exchange that failed leaves it
/// to hyper to report the connection's state.
struct Abandoned(Option<Rc<Cell<bool>>>);

impl Abandoned {
    fn defuse(mut self) {
        self.0 = None;
    }
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        if let Some(flag) = self.0.take() {
            flag.set(true);
        }
    }
}

/// The id a request carries.
pub fn id_of<B>(request: &Request<B>) -> Option<u64> {
    request.headers().get(ID)?.to_str().ok()?.parse().ok()
}

/// Whether `method` is one the server must never execute twice for one id.
pub fn is_post(method: &Method) -> bool {
    method == Method::POST
}
