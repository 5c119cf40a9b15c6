//! A simulated HTTP/1 server host that counts what it receives.
//!
//! Every request is recorded with its instant, method and id (the [`ID`](super::http::ID)
//! header); every accepted connection with its instant. The counters live outside the host's
//! software, so they survive crashes and restarts of the host, and the test reads them after
//! the run. An optional capacity sheds load as an overloaded server does: past `capacity`
//! requests at once, the next ones are answered `503` at once.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use turmoil::net::TcpListener;

use super::http::ID;

/// How the server behaves.
#[derive(Debug, Clone, Copy)]
pub struct Behaviour {
    /// How long each request takes to serve.
    pub work: Duration,
    /// Requests served at once; past it, `503` at once. `None`: no limit.
    pub capacity: Option<usize>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            work: Duration::from_millis(2),
            capacity: None,
        }
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Duration,
    pub method: Method,
    pub id: Option<u64>,
    /// The status it was answered with (`503` when shed, `0` when held by a black hole).
    pub status: u16,
}

/// What a server host saw, over all its lives.
#[derive(Debug, Default)]
pub struct Counters {
    pub requests: RefCell<Vec<Seen>>,
    pub accepts: RefCell<Vec<Duration>>,
    in_flight: Cell<usize>,
}

impl Counters {
    /// Executions per request id (shed requests were not executed).
    pub fn executions(&self) -> BTreeMap<u64, usize> {
        let mut by_id = BTreeMap::new();
        for seen in self.requests.borrow().iter() {
            if let (Some(id), 200) = (seen.id, seen.status) {
                *by_id.entry(id).or_insert(0) += 1;
            }
        }
        by_id
    }
}

/// A server's software and the counters it fills.
#[derive(Debug, Clone)]
pub struct Server {
    pub behaviour: Behaviour,
    pub counters: Rc<Counters>,
    /// While set, the server is a black hole: it accepts connections and reads requests, and
    /// never answers. Shared with the test, which flips it at scheduled instants.
    pub black_hole: Rc<Cell<bool>>,
}

impl Server {
    pub fn new(behaviour: Behaviour) -> Self {
        Self {
            behaviour,
            counters: Rc::default(),
            black_hole: Rc::default(),
        }
    }

    /// The host software: listens on [`PORT`](super::PORT) and serves until crashed.
    pub async fn serve(self) -> Result<(), Box<dyn std::error::Error>> {
        let listener = TcpListener::bind(("0.0.0.0", super::PORT)).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            self.counters.accepts.borrow_mut().push(super::now());
            let server = self.clone();
            tokio::task::spawn_local(async move {
                let service = service_fn(move |request| server.clone().handle(request));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    async fn handle(self, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
        let at = super::now();
        let method = request.method().clone();
        let id = request
            .headers()
            .get(ID)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let counters = &self.counters;
        let full = self
            .behaviour
            .capacity
            .is_some_and(|capacity| counters.in_flight.get() >= capacity);
        let held = self.black_hole.get();
        let status = if full {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        };
        counters.requests.borrow_mut().push(Seen {
            at,
            method,
            id,
            status: if held { 0 } else { status.as_u16() },
        });
        if held {
            std::future::pending::<()>().await;
        }
        if full {
            return Ok(reply(status));
        }
        counters.in_flight.set(counters.in_flight.get() + 1);
        let _guard = InFlight(Rc::clone(&self.counters));
        let _ = request.into_body().collect().await;
        tokio::time::sleep(self.behaviour.work).await;
        Ok(reply(status))
    }
}

fn reply(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(b"hello")));
    *response.status_mut() = status;
    response
}

/// Counts a request being served until dropped (served, or cancelled by a crash).
struct InFlight(Rc<Counters>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .in_flight
            .set(self.0.in_flight.get().saturating_sub(1));
    }
}
