//! The stack over several peers that the health scenarios share: the recommended order of the
//! README's composition guide and `examples/stack.rs`, over the simulated network.
//!
//! Outermost first:
//!
//! ```text
//! tower::timeout             the caller's deadline, retries included
//! RetryLayer (HttpClassifier) a retry goes to another peer (the balancer chooses again)
//! LocalBuffer                lets the retry clone the balanced service (harness::local_buffer)
//! FailFast                   NoHealthyPeers once no peer has been ready for `wait`
//! p2c Balance over HealthDiscover
//!   per peer:
//!     PenalizedPending       in-flight requests plus a decaying failure penalty
//!     HealthLayer            consecutive failures eject; one probe when the ejection is over
//!     tower::timeout         per attempt, inside health: a black hole becomes a failure
//!     Dispatched             counts what is sent to the peer (the scenarios' "what reached it")
//!     ReconnectLayer         fail_fast(None): under a balancer a down peer is simply not ready
//!     HttpConnect            hyper HTTP/1 over the simulated TCP connector
//! ```

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use redial::backoff::Backoff;
use redial::health::balance::{FailFastLayer, HealthDiscover, PenalizedPendingLayer};
use redial::health::{HealthPolicy, Mode};
use redial::peers::{PeerHandle, Peers};
use redial::reconnect::ReconnectLayer;
use redial::retry::http::HttpClassifier;
use redial::retry::{Budget, RetryLayer};
use tower::balance::p2c::Balance;
use tower::timeout::TimeoutLayer;
use tower::{BoxError, Layer, Service, ServiceBuilder};

use crate::harness::http::{HttpConnect, Req, Res};
use crate::harness::local_buffer::LocalBuffer;
use crate::harness::net::{Connector, Target};
use crate::harness::server::{Behaviour, Server};
use crate::harness::{World, now};
use crate::stack::Key;

/// The knobs of the balanced stack; every scenario states its own.
#[derive(Debug, Clone)]
pub struct Knobs {
    /// Each peer's connect backoff.
    pub backoff: Backoff,
    pub connect_timeout: Duration,
    /// Each attempt's timeout, inside the health layer.
    pub attempt_timeout: Duration,
    /// Failures in a row that eject a peer.
    pub failures: u32,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    /// How long the balancer may have no ready peer before calls fail with `NoHealthyPeers`.
    pub wait: Duration,
    pub max_attempts: u32,
    /// The outermost `tower::timeout`.
    pub timeout: Duration,
}

/// A server host for each of `hosts`, with the default behaviour; their counters and switches.
pub fn servers(world: &mut World, hosts: &[Key]) -> Vec<Server> {
    hosts
        .iter()
        .map(|host| {
            let server = Server::new(Behaviour::default());
            let software = server.clone();
            world.host(host, move || software.clone().serve());
            server
        })
        .collect()
}

/// Every request sent down to a peer's connection: which peer, and when.
#[derive(Debug, Clone, Default)]
pub struct Dispatches(Rc<RefCell<Vec<(Key, Duration)>>>);

impl Dispatches {
    /// When requests were sent to `host`.
    pub fn to(&self, host: Key) -> Vec<Duration> {
        self.0
            .borrow()
            .iter()
            .filter(|(h, _)| *h == host)
            .map(|(_, at)| *at)
            .collect()
    }
}

/// Counts every call into [`Dispatches`], then passes it on.
struct Dispatched<S> {
    inner: S,
    host: Key,
    log: Dispatches,
}

impl<S: Service<Req>> Service<Req> for Dispatched<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> S::Future {
        self.log.0.borrow_mut().push((self.host, now()));
        self.inner.call(request)
    }
}

/// The balanced stack over `hosts` (added to `peers` as static peers), the log of what it sent
/// to each, and its connector (whose log has every connect attempt). Clones share everything.
pub fn stack(
    peers: &Peers<Key>,
    hosts: &[Key],
    knobs: &Knobs,
    seed: u64,
) -> (
    impl Service<Req, Response = Res, Error = BoxError> + Clone + use<>,
    Dispatches,
    Connector,
) {
    let handles: Vec<PeerHandle<Key>> = hosts
        .iter()
        .map(|host| peers.add_static(host).expect("room for the peer"))
        .collect();
    let health = HealthPolicy::builder()
        .classifier(HttpClassifier::new())
        .consecutive_failures(Some(knobs.failures))
        .no_success_rate()
        .base_ejection(knobs.base_ejection)
        .max_ejection(knobs.max_ejection)
        .mode(Mode::Backpressure)
        .seed(seed)
        .build()
        .expect("a valid health policy");
    // One failure costs one request's worth of load, forgotten within a few hundred ms: enough
    // to steer p2c away from a failing peer without keeping a restored one out for seconds.
    let load = PenalizedPendingLayer::builder()
        .penalty(1.0)
        .decay(Duration::from_millis(200))
        .build()
        .expect("a valid load");
    let connector = Connector::new();
    let connector_log = connector.clone();
    let dispatches = Dispatches::default();
    let log = dispatches.clone();
    let attempt_timeout = knobs.attempt_timeout;
    let reconnect_knobs = knobs.clone();
    let per_peer = move |peer: &PeerHandle<Key>| {
        let host = *peer.key();
        let reconnect = ReconnectLayer::builder(peer.clone(), Target::new(host))
            .connect_timeout(reconnect_knobs.connect_timeout)
            .fail_fast(None)
            .build()
            .expect("valid reconnect settings");
        let connection = reconnect.layer(HttpConnect::new(connector.clone()));
        ServiceBuilder::new()
            .layer(load.clone())
            .layer(health.layer(peer.clone()))
            .layer(TimeoutLayer::new(attempt_timeout))
            .service(Dispatched {
                inner: connection,
                host,
                log: log.clone(),
            })
    };
    let balanced = Balance::new(HealthDiscover::new(peers, handles, per_peer));
    let buffered = LocalBuffer::new(FailFastLayer::new(knobs.wait).health(peers).layer(balanced));
    let retry = RetryLayer::builder()
        .classifier(HttpClassifier::new())
        .backoff(
            Backoff::builder()
                .initial(Duration::from_millis(10))
                .max(Duration::from_millis(100))
                .build()
                .expect("a valid retry backoff"),
        )
        .max_attempts(knobs.max_attempts)
        .budget(Budget::default())
        .seed(seed)
        .build()
        .expect("valid retry settings");
    let service = ServiceBuilder::new()
        .layer(TimeoutLayer::new(knobs.timeout))
        .layer(retry)
        .service(buffered);
    (service, dispatches, connector_log)
}
