//! A scripted HTTP/1.1 server on 127.0.0.1 that records what it received, and a request body
//! that streams its bytes in chunks, for the HTTP retry tests.
//!
//! The server reads each request's body to its end before answering, then answers with the
//! next reply of its script (the last one repeats). It records every request: its method and
//! either its whole body or, when the body could not be read to a proper end (a truncated
//! upload), the error.
//!
//! Include it with `#[path = "support/http_script.rs"] mod http_script;`.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// One answer of the script.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: Vec<(&'static str, &'static str)>,
    /// Answer at once, without reading the request body (recorded as `Err("unread")`).
    pub early: bool,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status: StatusCode::from_u16(status).expect("a valid status"),
            headers: Vec::new(),
            early: false,
        }
    }

    /// Answers before reading the request body, as a server that rejects a request by its
    /// head does.
    pub fn early(mut self) -> Self {
        self.early = true;
        self
    }

    pub fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.push((name, value));
        self
    }
}

/// What the server received in one request.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    /// The whole body, or why it could not be read to its end.
    pub body: Result<Bytes, String>,
}

/// A running scripted server; stops when dropped.
#[derive(Debug)]
pub struct ScriptedServer {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    task: JoinHandle<()>,
}

impl ScriptedServer {
    /// Serves `script` on `listener`.
    pub fn start(listener: TcpListener, script: Vec<Reply>) -> Self {
        let addr = listener.local_addr().expect("a bound listener");
        let received = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let task = tokio::spawn(serve(listener, script, Arc::clone(&received)));
        Self {
            addr,
            received,
            task,
        }
    }

    /// Binds a free port of 127.0.0.1 and serves `script` there.
    pub async fn bind(script: Vec<Reply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::start(listener, script)
    }

    pub fn uri(&self) -> hyper::Uri {
        format!("http://{}/items/7", self.addr)
            .parse()
            .expect("valid uri")
    }

    /// Every request received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("not poisoned").clone()
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    listener: TcpListener,
    script: Arc<Mutex<VecDeque<Reply>>>,
    received: Arc<Mutex<Vec<Received>>>,
) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let script = Arc::clone(&script);
        let received = Arc::clone(&received);
        connections.spawn(async move {
            let answer = service_fn(move |request: Request<Incoming>| {
                let script = Arc::clone(&script);
                let received = Arc::clone(&received);
                async move {
                    let method = request.method().clone();
                    let reply = next_reply(&script);
                    let body = if reply.early {
                        Err("unread".to_owned())
                    } else {
                        match request.into_body().collect().await {
                            Ok(collected) => Ok(collected.to_bytes()),
                            Err(error) => Err(error.to_string()),
                        }
                    };
                    received
                        .lock()
                        .expect("not poisoned")
                        .push(Received { method, body });
                    let mut response = Response::new(Full::new(Bytes::from_static(b"done")));
                    *response.status_mut() = reply.status;
                    for (name, value) in reply.headers {
                        response
                            .headers_mut()
                            .insert(name, value.parse().expect("a valid header value"));
                    }
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), answer)
                .await;
        });
    }
}

/// The next reply; the last one repeats.
fn next_reply(script: &Mutex<VecDeque<Reply>>) -> Reply {
    let mut script = script.lock().expect("not poisoned");
    if script.len() > 1 {
        script.pop_front().expect("not empty")
    } else {
        script
            .front()
            .cloned()
            .unwrap_or_else(|| Reply::status(200))
    }
}

/// `len` bytes of a pattern that shows any reordering or loss.
pub fn pattern(len: usize) -> Bytes {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// A request body that streams `bytes` in chunks, pending once before each chunk (so that it
/// really streams), with no size known in advance (sent chunked).
#[derive(Debug)]
pub struct Chunks {
    chunks: VecDeque<Bytes>,
    ready: bool,
}

impl Chunks {
    pub fn new(bytes: Bytes, chunk: usize) -> Self {
        let mut chunks = VecDeque::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            chunks.push_back(rest.split_to(chunk.min(rest.len())));
        }
        Self {
            chunks,
            ready: false,
        }
    }

    pub fn empty() -> Self {
        Self::new(Bytes::new(), 1)
    }
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.chunks.is_empty() {
            return Poll::Ready(None);
        }
        if !self.ready {
            self.ready = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.ready = false;
        Poll::Ready(self.chunks.pop_front().map(|chunk| Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        if self.chunks.is_empty() {
            SizeHint::with_exact(0)
        } else {
            SizeHint::default()
        }
    }
}
