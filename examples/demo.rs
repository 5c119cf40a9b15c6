//! redial's demo: a real HTTP server on 127.0.0.1 goes down and comes back, and a client rides
//! through.
//!
//! - The server is hyper on a free local port. At 1 s it is killed, with a request on the wire:
//!   its accept loop and every open connection are aborted, so the client really sees its
//!   connection drop. At 2.5 s it comes back on the same port.
//! - The client is a `ReconnectLayer` over a connector that dials TCP through redial's
//!   `ConnectLayer` and does an HTTP/1 handshake on the connection. It sends `GET /` every
//!   50 ms. While the server is down, calls fail at once with a typed `Unavailable` error (after a
//!   300 ms fail-fast window), and each poll of the client keeps reconnecting with backoff.
//! - Every redial event is printed as it happens, with a status line each second and totals at
//!   the end.
//!
//! Run it with `cargo run --example demo`. It takes about 4.5 seconds and needs no features.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use redial::backoff::{Backoff, Jitter};
use redial::event::{Event, EventKind, RecvError};
use redial::peers::{PeerState, Peers};
use redial::reconnect::connector::ConnectLayer;
use redial::reconnect::{Exhausted, ReconnectLayer, Unavailable};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior, interval, interval_at, sleep, sleep_until};
use tower::{BoxError, Layer, Service, ServiceExt, service_fn};

/// 15 ms after a request went out: the server dies with that request on the wire.
const DOWN_AT: Duration = Duration::from_millis(1015);
const UP_AT: Duration = Duration::from_millis(2500);
const RUN_FOR: Duration = Duration::from_millis(4500);
const REQUEST_EVERY: Duration = Duration::from_millis(50);
const HANDLER_TAKES: Duration = Duration::from_millis(30);

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let start = Instant::now();
    let server = HttpServer::start("127.0.0.1:0".parse()?).await?;
    let addr = server.addr;

    // One shared schedule for the server: 100 ms doubling to 800 ms, equal jitter, no limit.
    let backoff = Backoff::builder()
        .initial(Duration::from_millis(100))
        .multiplier(2.0)
        .max(Duration::from_millis(800))
        .jitter(Jitter::Equal)
        .seed(7)
        .build()?;
    let peers: Peers<SocketAddr> = Peers::builder().backoff(backoff).seed(7).build()?;
    let mut events = peers.subscribe();

    // The connector: a TCP dial through redial's `ConnectLayer` (keyed by address), then an
    // HTTP/1 handshake. The dialer keeps its own table: the service below already holds the
    // peer's gate while it connects, and a second gate for the same key in the same table
    // would wait for the first forever. One dial per attempt; the service's schedule decides.
    let dials: Peers<SocketAddr> = Peers::builder().backoff(backoff).build()?;
    let dial = ConnectLayer::builder(dials.clone(), |addr: &SocketAddr| *addr)
        .attempts_per_call(1)
        .build()?
        .layer(service_fn(TcpStream::connect));
    let connect = service_fn(move |addr: SocketAddr| {
        let dial = dial.clone();
        async move {
            let io = dial.oneshot(addr).await?; // a `TrackedIo<TcpStream, SocketAddr>`
            let (sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
            tokio::spawn(connection); // drives the connection; ends when it drops
            Ok::<_, BoxError>(Http1(sender))
        }
    });

    // The client: keeps one connection up, reconnects with the peer's backoff, and fails calls
    // at once once the server has been gone for 300 ms.
    let client = ReconnectLayer::builder(peers.add_static(addr)?, addr)
        .connect_timeout(Duration::from_secs(1))
        .fail_fast(Some(Duration::from_millis(300)))
        .build()?
        .layer(connect);

    println!("== server on http://{addr}: down from {DOWN_AT:?} to {UP_AT:?}");
    println!(
        "== client: GET / every {REQUEST_EVERY:?} for {RUN_FOR:?}; backoff 100ms x2 up to 800ms \
         (equal jitter); fail fast after 300ms\n"
    );

    let tally = Arc::new(Mutex::new(Tally::default()));
    let requests = tokio::spawn(request_loop(client, Arc::clone(&tally), start + RUN_FOR));
    let outage = tokio::spawn(outage(server, start));

    // Print events as they come and a status line every second until the requests are done.
    let mut status = interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    let mut events_open = true;
    tokio::pin!(requests);
    loop {
        tokio::select! {
            event = events.recv(), if events_open => match event {
                Ok(event) => print_event(&event, start),
                Err(RecvError::Lagged(n)) => println!("  ({n} events skipped)"),
                Err(RecvError::Closed) => events_open = false,
            },
            _ = status.tick() => {
                let t = tally.lock().unwrap().clone();
                let state = peers.get(&addr).map_or(PeerState::Idle, |p| p.state());
                println!(
                    "  +{:.3}s  status: ok {:>3}, failed {:>3}, peer {}",
                    start.elapsed().as_secs_f64(), t.ok, t.failed(), state.name()
                );
            }
            done = &mut requests => { done?; break; }
        }
    }
    while let Ok(Some(event)) = events.try_recv() {
        print_event(&event, start);
    }
    let (server, restarted) = outage.await??;
    server.stop().await;

    let t = tally.lock().unwrap().clone();
    let stats = peers.stats();
    println!("\n== summary after {:.2}s", start.elapsed().as_secs_f64());
    println!("  requests ok           {}", t.ok);
    println!("  failed: Unavailable   {}", t.unavailable);
    println!("  failed: Exhausted     {}", t.exhausted);
    println!("  failed: other         {}", t.other);
    for error in &t.samples {
        println!("    e.g. {error}");
    }
    println!(
        "  connect attempts      {} (TCP dials: {})",
        stats.attempts,
        dials.stats().attempts
    );
    let recovered = t.recovered.filter(|at| *at >= restarted);
    match recovered {
        Some(at) => println!(
            "  server restart -> first success: {} ms",
            at.duration_since(restarted).as_millis()
        ),
        None => return Err("the client did not recover after the server came back".into()),
    }
    Ok(())
}

/// What the request loop saw.
#[derive(Debug, Default, Clone)]
struct Tally {
    ok: u32,
    unavailable: u32,
    exhausted: u32,
    other: u32,
    /// The first error of each kind, for the summary.
    samples: Vec<String>,
    /// The first success after a failure.
    recovered: Option<Instant>,
}

impl Tally {
    fn failed(&self) -> u32 {
        self.unavailable + self.exhausted + self.other
    }

    fn record(&mut self, result: Result<String, BoxError>) {
        let error = match result {
            Ok(_) => {
                if self.failed() > 0 && self.recovered.is_none() {
                    self.recovered = Some(Instant::now());
                }
                self.ok += 1;
                return;
            }
            Err(error) => error,
        };
        let (count, kind) = if error.downcast_ref::<Unavailable>().is_some() {
            (&mut self.unavailable, "Unavailable")
        } else if error.downcast_ref::<Exhausted>().is_some() {
            (&mut self.exhausted, "Exhausted")
        } else {
            (&mut self.other, "other")
        };
        *count += 1;
        if *count == 1 {
            // The whole chain: hyper's "connection error" says more with its io::Error source.
            let mut text = format!("{kind}: {error}");
            let mut source = error.source();
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            self.samples.push(text);
        }
    }
}

/// Sends `GET /` every 50 ms until `until`, waiting for the client to be ready each time.
async fn request_loop<S>(mut client: S, tally: Arc<Mutex<Tally>>, until: Instant)
where
    S: Service<Request<Empty<Bytes>>, Response = String, Error = BoxError>,
{
    let mut tick = interval(REQUEST_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    while Instant::now() < until {
        tick.tick().await;
        let request = Request::get("/")
            .body(Empty::new())
            .expect("a valid request");
        let result = match client.ready().await {
            Ok(client) => client.call(request).await,
            Err(error) => Err(error),
        };
        tally.lock().unwrap().record(result);
    }
}

/// Takes the server down at `DOWN_AT` and brings it back at `UP_AT`; returns it and the
/// instant it came back.
async fn outage(server: HttpServer, start: Instant) -> Result<(HttpServer, Instant), BoxError> {
    sleep_until(start + DOWN_AT).await;
    let addr = server.addr;
    server.stop().await;
    println!("  +{:.3}s  ** server down", start.elapsed().as_secs_f64());
    sleep_until(start + UP_AT).await;
    let server = HttpServer::start(addr).await?;
    let restarted = Instant::now();
    println!(
        "  +{:.3}s  ** server up again",
        start.elapsed().as_secs_f64()
    );
    Ok((server, restarted))
}

fn print_event(event: &Event<SocketAddr>, start: Instant) {
    let what = match &event.kind {
        EventKind::AttemptStarted { attempt, .. } => format!("connect attempt {attempt}"),
        EventKind::Waiting { delay, reason } => {
            let reason = format!("{reason:?}").to_lowercase();
            format!("waiting {} ms ({reason})", delay.as_millis())
        }
        EventKind::Connected { attempts, total } => format!(
            "connected after {attempts} attempt(s), {} ms",
            total.as_millis()
        ),
        EventKind::Disconnected { error } => {
            format!("disconnected: {}", error.as_deref().unwrap_or("closed"))
        }
        EventKind::StateChanged { from, to } => format!("{from} -> {to}"),
        other => format!("{other:?}"),
    };
    let at = event.at.saturating_duration_since(start).as_secs_f64();
    println!("  +{at:.3}s  peer {}  {what}", event.peer);
}

/// The per-connection service: hyper's `SendRequest` as a `tower::Service`, reading the whole
/// body of each response.
struct Http1(SendRequest<Empty<Bytes>>);

impl Service<Request<Empty<Bytes>>> for Http1 {
    type Response = String;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<String, hyper::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Empty<Bytes>>) -> Self::Future {
        let response = self.0.send_request(request);
        Box::pin(async move {
            let body = response.await?.into_body().collect().await?.to_bytes();
            Ok(String::from_utf8_lossy(&body).into_owned())
        })
    }
}

/// A hyper HTTP/1 server that answers "hello" after 30 ms and can be killed: its accept task
/// owns every connection task, so aborting it drops them all.
struct HttpServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl HttpServer {
    async fn start(addr: SocketAddr) -> Result<Self, BoxError> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let hello = hyper::service::service_fn(|_: Request<Incoming>| async {
                    sleep(HANDLER_TAKES).await;
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("hello"))))
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), hello);
                connections.spawn(connection);
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(Self { addr, task })
    }

    /// Aborts the accept loop, which drops the listener and, with the `JoinSet`, aborts every
    /// connection task.
    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}
