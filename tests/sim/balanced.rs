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
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use redial::backoff::{Backoff, Jitter};
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
use crate::harness::net::{Connector, Dial, Target};
use crate::harness::record::{Recorded, Recorder, trace};
use crate::harness::server::{Behaviour, Server};
use crate::harness::sweep::{Run, show_trace};
use crate::harness::{World, now};
use crate::stack::{self, Key, Outcome};

/// The peers of the health scenarios: three servers.
pub const HOSTS: [Key; 3] = ["a", "b", "c"];
/// Client loops of one process, each sending GETs back to back.
pub const CLIENTS: u64 = 6;
/// Each client's pause after a request.
pub const THINK: Duration = Duration::from_millis(10);

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

impl Default for Knobs {
    /// The health scenarios' knobs; each states what it changes.
    fn default() -> Self {
        let ms = Duration::from_millis(1);
        Self {
            // Equal jitter: every delay is at least half its step, so the number of connect
            // attempts a fault allows has an upper bound to assert.
            backoff: Backoff::builder()
                .initial(50 * ms)
                .multiplier(2.0)
                .max(1000 * ms)
                .jitter(Jitter::Equal)
                .unlimited_attempts()
                .build()
                .expect("a valid backoff"),
            connect_timeout: 300 * ms,
            attempt_timeout: 200 * ms,
            failures: 3,
            base_ejection: 500 * ms,
            max_ejection: 2000 * ms,
            wait: 1000 * ms,
            max_attempts: 3,
            timeout: 2000 * ms,
        }
    }
}

/// What one run of the balanced stack under load saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub outcomes: Vec<Outcome>,
    pub events: Vec<Recorded>,
    pub dispatches: Dispatches,
    pub dials: Vec<Dial>,
    pub run: Run,
    /// Events the recorder lost (asserted zero by [`run`]).
    pub lagged: u64,
}

/// Runs `world` with one client process: [`CLIENTS`] GET loops through the balanced stack over
/// [`HOSTS`] until `until`, and beside them `operator`, given the peers' table (to flip a switch
/// or override a peer at scheduled instants). Returns what the process saw, its trace shown.
pub fn run<F, Fut>(mut world: World, seed: u64, knobs: &Knobs, until: Duration, operator: F) -> Seen
where
    F: FnOnce(Peers<Key>) -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let seen = Rc::new(RefCell::new(Seen::default()));
    let out = Rc::clone(&seen);
    let knobs = knobs.clone();
    world.client("client", async move {
        let peers = stack::peers(seed, knobs.backoff);
        let recorder = Recorder::start(&peers);
        let (service, dispatches, connector) = stack(&peers, &HOSTS, &knobs, seed);
        tokio::task::spawn_local(operator(peers.clone()));
        let watchdog = knobs.timeout + Duration::from_secs(1);
        let outcomes = stack::gets(service, CLIENTS, THINK, until, watchdog).await;
        let events = recorder.events();
        *out.borrow_mut() = Seen {
            outcomes,
            run: Run {
                coverage: recorder.coverage(),
                trace: trace(&events),
            },
            events,
            dispatches,
            dials: connector.dials(),
            lagged: recorder.lagged(),
        };
        Ok(())
    });
    world
        .run()
        .unwrap_or_else(|e| panic!("the simulation failed: {e}"));
    let seen = seen.take();
    show_trace(&seen.run.trace);
    assert_eq!(seen.lagged, 0, "the recorder lost events");
    seen
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
