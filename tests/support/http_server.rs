//! A hyper server on 127.0.0.1 for real-socket tests: it answers every request with `200 hello`
//! over HTTP/1.1 or HTTP/2 (prior knowledge), and it can be stopped and started again on the
//! same port. Stopping closes the listener *and* every open connection, as a crashed or
//! restarted server would.
//!
//! Include it with `#[path = "support/http_server.rs"] mod http_server;`.

#![allow(dead_code)]

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

/// The body every request gets.
pub const HELLO: &str = "hello";

/// A stoppable, restartable HTTP server on a fixed loopback port.
#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
    served: Arc<AtomicUsize>,
    running: Option<Running>,
    /// While stopped, the port stays bound without listening: connections are refused, and no
    /// other test's `bind(0)` can take the port before the restart.
    reserved: Option<TcpSocket>,
}

#[derive(Debug)]
struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl HttpServer {
    /// Starts on a free port of 127.0.0.1.
    pub async fn start() -> io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts on `addr` (port 0 picks a free one), retrying the bind briefly while the port is
    /// still held.
    pub async fn start_on(addr: SocketAddr) -> io::Result<Self> {
        let listener = bind(addr).await?;
        let addr = listener.local_addr()?;
        let mut server = Self {
            addr,
            served: Arc::new(AtomicUsize::new(0)),
            running: None,
            reserved: None,
        };
        server.run(listener);
        Ok(server)
    }

    /// The address it listens on, the same across restarts.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/`.
    pub fn uri(&self) -> hyper::Uri {
        format!("http://{}/", self.addr).parse().expect("valid uri")
    }

    /// Requests answered since the server was first started.
    pub fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Stops listening and closes every open connection; returns once the port is free.
    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.stop.send(());
            tokio::time::timeout(Duration::from_secs(5), running.task)
                .await
                .expect("server stops within 5 s")
                .expect("server task ends cleanly");
            self.reserved = Some(reserve(self.addr).expect("the port can be held"));
        }
    }

    /// Starts again on the same port.
    pub async fn restart(&mut self) -> io::Result<()> {
        self.stop().await;
        let listener = bind(self.addr).await?;
        self.reserved = None;
        self.run(listener);
        Ok(())
    }

    fn run(&mut self, listener: TcpListener) {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(serve(listener, stopped, Arc::clone(&self.served)));
        self.running = Some(Running { stop, task });
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.task.abort();
        }
    }
}

/// Binds `addr` without listening, with `SO_REUSEADDR`: the port is held, connections to it are
/// refused, and [`bind`] can still take it for a listener.
pub fn reserve(addr: SocketAddr) -> io::Result<TcpSocket> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

/// A listener on `addr` (port 0 picks a free one), with `SO_REUSEADDR` so that it can take a
/// port held by [`reserve`]; retries for up to a second while the port is still in use.
pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let listen = || {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(1024)
    };
    let mut last = None;
    for _ in 0..50 {
        match listen() {
            Ok(listener) => return Ok(listener),
            Err(error) if error.kind() == io::ErrorKind::AddrInUse => {
                last = Some(error);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => return Err(error),
        }
    }
    Err(last.expect("at least one bind attempt"))
}

async fn serve(listener: TcpListener, mut stop: oneshot::Receiver<()>, served: Arc<AtomicUsize>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let served = Arc::clone(&served);
                connections.spawn(async move {
                    let hello = service_fn(move |_: Request<Incoming>| {
                        served.fetch_add(1, Ordering::SeqCst);
                        async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(HELLO)))) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), hello)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    // Dropping each connection's task closes its socket, as a crash would.
    connections.shutdown().await;
}
