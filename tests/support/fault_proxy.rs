//! An in-process TCP proxy on 127.0.0.1 that injects faults at run time, for real-socket tests:
//!
//! - [`down`](FaultProxy::down) / [`up`](FaultProxy::up): refuse new connections (the port
//!   stays bound without listening, as a stopped server's would) and reset the open ones;
//! - [`latency`](FaultProxy::latency): delay every chunk forwarded, both ways;
//! - [`reset`](FaultProxy::reset): reset every open connection now (RST, not FIN);
//! - [`black_hole`](FaultProxy::black_hole): accept, and never answer; bytes sent vanish, on
//!   new and open connections alike;
//! - [`bandwidth`](FaultProxy::bandwidth): forward at most this many bytes per second.
//!
//! With [`record_arrivals`](FaultProxy::record_arrivals) on, it notes when each request (each
//! chunk, or each HTTP/2 request) a client sent reached it, forwarded or swallowed: requests
//! that reach a black hole are counted here, since none reaches the server.
//!
//! Nothing leaves 127.0.0.1: it listens there and forwards to an upstream there. Its tasks end
//! with the proxy: dropping it aborts the accept loop and every connection.
//!
//! Include it with `#[path = "support/fault_proxy.rs"] mod fault_proxy;`.

#![allow(dead_code)]

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// What the proxy does now; connections read it as they forward.
#[derive(Debug, Default)]
struct Control {
    black_hole: AtomicBool,
    latency_ms: AtomicU64,
    /// Bytes per second; 0: unlimited.
    bandwidth: AtomicU64,
    accepted: AtomicUsize,
    open: AtomicUsize,
    /// What is recorded: 0 nothing, else a `Count` as `u8`.
    counting: AtomicU8,
    /// When each arrival from a client came, while counting.
    arrivals: Mutex<Vec<Instant>>,
}

impl Control {
    /// Notes what a chunk from a client holds, if recording. `frames` is the connection's
    /// HTTP/2 reader: it is fed every chunk, recording or not, to stay in step.
    fn arrived(&self, chunk: &[u8], frames: &mut Http2Frames) {
        let requests = frames.feed(chunk);
        let arrivals = match self.counting.load(Ordering::SeqCst) {
            c if c == Count::Chunks as u8 => 1,
            c if c == Count::Http2Requests as u8 => requests,
            _ => 0,
        };
        if arrivals > 0 {
            let now = Instant::now();
            let mut log = self.arrivals.lock().unwrap_or_else(|e| e.into_inner());
            log.extend(std::iter::repeat_n(now, arrivals));
        }
    }
}

/// What the proxy counts as one arrival from a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Count {
    /// Each chunk one read returned: on loopback, a small request written at once (an HTTP/1
    /// request without a body) arrives as one.
    Chunks = 1,
    /// Each HTTP/2 HEADERS frame: the start of a request (of a gRPC call among them). Pings,
    /// settings, window updates and stream resets are not counted.
    Http2Requests = 2,
}

/// A fault-injecting proxy from a port of 127.0.0.1 to `upstream`.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    control: Arc<Control>,
    /// Bumped by every reset; each connection resets itself when it changes.
    resets: watch::Sender<u64>,
    accepting: Option<JoinHandle<()>>,
    /// Holds the port while down: bound, not listening, so connects are refused.
    reserved: Option<TcpSocket>,
    connections: Arc<Mutex<JoinSet<()>>>,
}

impl FaultProxy {
    /// Starts forwarding from a free port of 127.0.0.1 to `upstream` (which must be on
    /// 127.0.0.1 too).
    pub async fn start(upstream: SocketAddr) -> io::Result<Self> {
        assert!(
            upstream.ip().is_loopback(),
            "the proxy only forwards on 127.0.0.1"
        );
        let listener = listen(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let (resets, _) = watch::channel(0);
        let mut proxy = Self {
            addr: listener.local_addr()?,
            upstream,
            control: Arc::default(),
            resets,
            accepting: None,
            reserved: None,
            connections: Arc::default(),
        };
        proxy.accept(listener);
        Ok(proxy)
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/`.
    pub fn uri(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Connections accepted since the start.
    pub fn accepted(&self) -> usize {
        self.control.accepted.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.control.open.load(Ordering::SeqCst)
    }

    /// Refuses new connections and resets the open ones, as a crashed server would.
    pub async fn down(&mut self) -> io::Result<()> {
        if let Some(accepting) = self.accepting.take() {
            accepting.abort();
            // The listener closes when the task is dropped: wait for it, so the port is free.
            let _ = accepting.await;
            self.reset();
            let socket = TcpSocket::new_v4()?;
            socket.set_reuseaddr(true)?;
            socket.bind(self.addr)?;
            self.reserved = Some(socket);
        }
        Ok(())
    }

    /// Accepts connections again, on the same port.
    pub async fn up(&mut self) -> io::Result<()> {
        if self.accepting.is_none() {
            self.reserved = None;
            let listener = listen(self.addr).await?;
            self.accept(listener);
        }
        Ok(())
    }

    /// Resets every open connection now.
    pub fn reset(&self) {
        self.resets.send_modify(|n| *n += 1);
    }

    /// Delays every chunk forwarded by `latency` (zero: none).
    pub fn latency(&self, latency: Duration) {
        let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        self.control.latency_ms.store(ms, Ordering::SeqCst);
    }

    /// While on, connections are accepted and nothing is forwarded either way.
    pub fn black_hole(&self, on: bool) {
        self.control.black_hole.store(on, Ordering::SeqCst);
    }

    /// Forwards at most `bytes_per_second` each way per connection; `None`: unlimited.
    pub fn bandwidth(&self, bytes_per_second: Option<u64>) {
        let rate = bytes_per_second.map_or(0, |r| r.max(1));
        self.control.bandwidth.store(rate, Ordering::SeqCst);
    }

    /// While `Some`, notes when each request a client sends (as `count` counts them) reaches
    /// the proxy, forwarded or swallowed by a black hole.
    pub fn record_arrivals(&self, count: Option<Count>) {
        let count = count.map_or(0, |c| c as u8);
        self.control.counting.store(count, Ordering::SeqCst);
    }

    /// When each request from a client arrived while recording, in order.
    pub fn arrivals(&self) -> Vec<Instant> {
        let arrivals = self.control.arrivals.lock();
        arrivals.unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn accept(&mut self, listener: TcpListener) {
        let control = Arc::clone(&self.control);
        let resets = self.resets.clone();
        let upstream = self.upstream;
        let connections = Arc::clone(&self.connections);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                control.accepted.fetch_add(1, Ordering::SeqCst);
                let control = Arc::clone(&control);
                let resets = resets.subscribe();
                let mut connections = connections.lock().unwrap_or_else(|e| e.into_inner());
                // Reap the finished ones so the set stays small.
                while connections.try_join_next().is_some() {}
                connections.spawn(connection(client, upstream, control, resets));
            }
        });
        self.accepting = Some(task);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(accepting) = self.accepting.take() {
            accepting.abort();
        }
        if let Ok(mut connections) = self.connections.lock() {
            connections.abort_all();
        }
    }
}

async fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let mut last = None;
    // The port may still be held for a moment after a restart: a bounded number of tries.
    for _ in 0..50 {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        match socket.bind(addr).and_then(|()| socket.listen(1024)) {
            Ok(listener) => return Ok(listener),
            Err(error) if error.kind() == io::ErrorKind::AddrInUse => {
                last = Some(error);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => return Err(error),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("could not listen")))
}

/// Counts an open connection until dropped.
struct Open(Arc<Control>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn connection(
    mut client: TcpStream,
    upstream: SocketAddr,
    control: Arc<Control>,
    mut resets: watch::Receiver<u64>,
) {
    control.open.fetch_add(1, Ordering::SeqCst);
    let _open = Open(Arc::clone(&control));
    resets.mark_unchanged();
    if control.black_hole.load(Ordering::SeqCst) {
        // Accepted, never answered: read and drop until reset or closed.
        let mut sink = [0u8; 4096];
        let swallow = async {
            let mut frames = Http2Frames::default();
            while let Ok(n @ 1..) = client.read(&mut sink).await {
                control.arrived(&sink[..n], &mut frames);
            }
        };
        tokio::select! {
            _ = swallow => {}
            _ = resets.changed() => rst(&client),
        }
        return;
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        // The upstream refused: so does the proxy, by resetting.
        rst(&client);
        return;
    };
    {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        let forward = async {
            let _ = tokio::join!(
                pump(client_read, server_write, &control, Way::In),
                pump(server_read, client_write, &control, Way::Out),
            );
        };
        tokio::select! {
            _ = forward => return,
            _ = resets.changed() => {}
        }
    }
    rst(&client);
    rst(&server);
}

/// Makes the socket's close a reset.
///
/// tokio deprecates `set_linger` because a non-zero linger blocks the thread on drop; a zero
/// linger never blocks: the close sends RST at once, which is the point here.
#[allow(deprecated)]
fn rst(stream: &TcpStream) {
    let _ = stream.set_linger(Some(Duration::ZERO));
}

/// Which way a pump forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    /// From the client to the upstream.
    In,
    /// From the upstream back to the client.
    Out,
}

/// Forwards one way until the reader ends, applying the faults to each chunk.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    control: &Control,
    way: Way,
) -> io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut frames = Http2Frames::default();
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        if way == Way::In {
            control.arrived(&buf[..n], &mut frames);
        }
        if control.black_hole.load(Ordering::SeqCst) {
            continue;
        }
        let latency = control.latency_ms.load(Ordering::SeqCst);
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        let rate = control.bandwidth.load(Ordering::SeqCst);
        if rate == 0 {
            to.write_all(&buf[..n]).await?;
            continue;
        }
        // In slices of a tenth of a second's worth, each followed by its share of time.
        let slice = usize::try_from(rate / 10).unwrap_or(usize::MAX).max(1);
        for chunk in buf[..n].chunks(slice) {
            to.write_all(chunk).await?;
            to.flush().await?;
            let secs = chunk.len() as f64 / rate as f64;
            tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        }
    }
}

/// Finds the HEADERS frames in what a client sends over HTTP/2, fed in chunks as they come.
/// Fed anything else (HTTP/1), it finds nonsense, harmlessly.
#[derive(Debug, Default)]
struct Http2Frames {
    /// Bytes of the connection preface passed so far.
    preface: usize,
    /// The frame header being read, and how much of it is here.
    header: [u8; 9],
    have: usize,
    /// Bytes of the current frame's payload still to pass.
    skip: usize,
}

impl Http2Frames {
    /// `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n` (RFC 9113 §3.4).
    const PREFACE: usize = 24;
    /// The frame type that opens a request (RFC 9113 §6.2).
    const HEADERS: u8 = 0x1;

    /// Passes `chunk`; returns how many HEADERS frames began in it.
    fn feed(&mut self, mut chunk: &[u8]) -> usize {
        let mut headers = 0;
        while !chunk.is_empty() {
            let n = if self.preface < Self::PREFACE {
                let n = (Self::PREFACE - self.preface).min(chunk.len());
                self.preface += n;
                n
            } else if self.skip > 0 {
                let n = self.skip.min(chunk.len());
                self.skip -= n;
                n
            } else {
                let n = (self.header.len() - self.have).min(chunk.len());
                self.header[self.have..self.have + n].copy_from_slice(&chunk[..n]);
                self.have += n;
                if self.have == self.header.len() {
                    self.have = 0;
                    let [a, b, c, kind, ..] = self.header;
                    self.skip = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
                    headers += usize::from(kind == Self::HEADERS);
                }
                n
            };
            chunk = &chunk[n..];
        }
        headers
    }
}
