//! The client side every scenario shares: the redial stack over the simulated connector, the
//! baseline without redial, and a load loop that accounts for every request.
//!
//! Stack, outermost first (DESIGN §2 for one peer; the stack over several peers, with balance
//! and health, is in `balanced.rs`):
//! `tower::timeout` → `RetryLayer` (HttpClassifier) → `ReconnectLayer` → `HttpConnect` (hyper
//! HTTP/1) → the simulated TCP connector.

use std::cell::RefCell;
use std::error::Error as StdError;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use http::Method;
use redial::backoff::{Backoff, Jitter};
use redial::health::HealthError;
use redial::health::balance::NoHealthyPeers;
use redial::peers::{PeerHandle, Peers};
use redial::reconnect::{
    ConnectTimeout, Exhausted, NotReady, Reconnect, ReconnectLayer, Unavailable,
};
use redial::retry::http::HttpClassifier;
use redial::retry::{AttemptTimedOut, Budget, DeadlineExceeded, Retry, RetryLayer};
use tower::timeout::Timeout;
use tower::timeout::error::Elapsed;
use tower::{BoxError, Layer, Service, ServiceExt};

use crate::harness::http::{HttpConnect, Req, request};
use crate::harness::net::{Connector, Target};
use crate::harness::now;

pub type Key = &'static str;

/// The full redial stack over the simulated network.
pub type Stack =
    Timeout<Retry<Reconnect<HttpConnect<Connector>, Target, Key>, HttpClassifier, PeerHandle<Key>>>;

/// The knobs of the stack; every scenario states its own.
#[derive(Debug, Clone)]
pub struct Knobs {
    /// The peer's connect backoff.
    pub backoff: Backoff,
    pub connect_timeout: Duration,
    pub fail_fast: Duration,
    pub stagger: Duration,
    /// When an exhausted peer is reset (`None`: never).
    pub exhausted_cooldown: Option<Duration>,
    pub max_attempts: u32,
    pub retry_deadline: Duration,
    pub attempt_timeout: Duration,
    pub budget: Budget,
    /// The outermost `tower::timeout`.
    pub timeout: Duration,
}

/// The knobs of scenario 1 (crash and restart), which the other single-peer scenarios change
/// only where their fault needs it.
impl Default for Knobs {
    fn default() -> Self {
        let ms = Duration::from_millis(1);
        Self {
            backoff: backoff(50 * ms, 1000 * ms),
            connect_timeout: 500 * ms,
            fail_fast: 1000 * ms,
            stagger: 100 * ms,
            exhausted_cooldown: None,
            max_attempts: 3,
            retry_deadline: 1500 * ms,
            attempt_timeout: 500 * ms,
            budget: Budget::default(),
            timeout: 2000 * ms,
        }
    }
}

impl Knobs {
    /// The longest a request may take, readiness included: a peer that cannot be reached
    /// turns the service ready (failing fast) after `fail_fast`; a peer that is up may keep it
    /// waiting for one connect attempt and the stagger; then the call has `timeout`.
    pub fn deadline(&self) -> Duration {
        self.fail_fast.max(self.connect_timeout + self.stagger) + self.timeout
    }
}

/// A connect backoff from `initial` doubling to `max`, full jitter, no attempt limit.
pub fn backoff(initial: Duration, max: Duration) -> Backoff {
    Backoff::builder()
        .initial(initial)
        .multiplier(2.0)
        .max(max)
        .jitter(Jitter::Full)
        .unlimited_attempts()
        .build()
        .expect("a valid backoff")
}

/// A seeded table with room for every event a scenario publishes between two drains.
pub fn peers(seed: u64, backoff: Backoff) -> Peers<Key> {
    Peers::builder()
        .backoff(backoff)
        .seed(seed)
        .event_capacity(1 << 16)
        .build()
        .expect("a valid table")
}

/// The layers of the redial stack to one target, built once: every service they make shares
/// the peer, the retry budget and the seed, and keeps its own connection.
#[derive(Debug, Clone)]
pub struct Layers {
    reconnect: ReconnectLayer<Target, Key>,
    retry: RetryLayer<HttpClassifier, PeerHandle<Key>>,
    timeout: Duration,
}

impl Layers {
    pub fn new(peers: &Peers<Key>, target: Target, knobs: &Knobs, seed: u64) -> Self {
        let peer = peers.add_static(target.host).expect("room for the peer");
        let reconnect = ReconnectLayer::builder(peer.clone(), target)
            .connect_timeout(knobs.connect_timeout)
            .fail_fast(Some(knobs.fail_fast))
            .stagger(knobs.stagger)
            .exhausted_cooldown(knobs.exhausted_cooldown)
            .build()
            .expect("valid reconnect settings");
        let retry = RetryLayer::builder()
            .classifier(HttpClassifier::new())
            .max_attempts(knobs.max_attempts)
            .deadline(knobs.retry_deadline)
            .attempt_timeout(knobs.attempt_timeout)
            .budget(knobs.budget.clone())
            .peer(peer)
            // The reconnect layer below records the connection's errors for the same peer.
            .record_errors(false)
            .seed(seed)
            .build()
            .expect("valid retry settings");
        Self {
            reconnect,
            retry,
            timeout: knobs.timeout,
        }
    }

    /// A service of the stack over `connector`.
    pub fn service(&self, connector: Connector) -> Stack {
        Timeout::new(
            self.retry
                .layer(self.reconnect.layer(HttpConnect::new(connector))),
            self.timeout,
        )
    }
}

/// The redial stack to `target`, recording into `peers`; clones share the peer, the retry
/// budget and the seed, and each clone keeps its own connection.
pub fn redial(peers: &Peers<Key>, target: Target, knobs: &Knobs, seed: u64) -> (Stack, Connector) {
    let connector = Connector::new();
    let service = Layers::new(peers, target, knobs, seed).service(connector.clone());
    (service, connector)
}

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// A response with this status.
    Status(u16),
    /// A typed error, by type.
    Error(&'static str),
    /// An error of a type the stack should never surface.
    Untyped,
    /// No outcome within the watchdog: lost or hanging.
    Hung,
}

/// One request as the client saw it.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub id: u64,
    pub method: Method,
    pub started: Duration,
    pub ended: Duration,
    pub how: Ended,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.how == Ended::Status(200)
    }

    pub fn took(&self) -> Duration {
        self.ended.saturating_sub(self.started)
    }
}

/// Sends one request through `service` (readiness first), under a watchdog of `watchdog`.
pub async fn send<S>(service: &mut S, method: Method, id: u64, watchdog: Duration) -> Outcome
where
    S: Service<Req, Response = http::Response<bytes::Bytes>, Error = BoxError>,
{
    let started = now();
    let exchange = async {
        service.ready().await?;
        service.call(request(method.clone(), id)).await
    };
    let how = match tokio::time::timeout(watchdog, exchange).await {
        Err(_) => Ended::Hung,
        Ok(Ok(response)) => Ended::Status(response.status().as_u16()),
        Ok(Err(error)) => error_type(&*error).map_or(Ended::Untyped, Ended::Error),
    };
    Outcome {
        id,
        method,
        started,
        ended: now(),
        how,
    }
}

/// `clients` loops, each over its own clone of `service` (the last over `service` itself, so
/// that no unused member of the family is left idle), send GETs back to back (pausing `think`
/// after each) until `until`; returns every outcome once all have finished. Request ids are
/// `client × 1 000 000 + n`.
pub async fn gets<S>(
    service: S,
    clients: u64,
    think: Duration,
    until: Duration,
    watchdog: Duration,
) -> Vec<Outcome>
where
    S: Service<Req, Response = http::Response<bytes::Bytes>, Error = BoxError> + Clone + 'static,
{
    let outcomes = Rc::new(RefCell::new(Vec::new()));
    let mut services: Vec<S> = (1..clients).map(|_| service.clone()).collect();
    services.push(service);
    let mut tasks = Vec::new();
    for (client, mut service) in (0..clients).zip(services) {
        let outcomes = Rc::clone(&outcomes);
        tasks.push(tokio::task::spawn_local(async move {
            let mut n = 0;
            while now() < until {
                let id = client * 1_000_000 + n;
                n += 1;
                let outcome = send(&mut service, Method::GET, id, watchdog).await;
                outcomes.borrow_mut().push(outcome);
                tokio::time::sleep(think).await;
            }
        }));
    }
    for task in tasks {
        if let Err(error) = task.await {
            std::panic::resume_unwind(error.into_panic());
        }
    }
    outcomes.take()
}

/// The name of the first typed error in the chain that the stack may surface.
pub fn error_type(error: &(dyn StdError + 'static)) -> Option<&'static str> {
    let mut next = Some(error);
    while let Some(error) = next {
        let name = if error.is::<Elapsed>() {
            "timeout"
        } else if error.is::<DeadlineExceeded>() {
            "deadline"
        } else if error.is::<AttemptTimedOut>() {
            "attempt_timeout"
        } else if error.is::<Unavailable>() {
            "unavailable"
        } else if error.is::<Exhausted>() {
            "exhausted"
        } else if error.is::<ConnectTimeout>() {
            "connect_timeout"
        } else if error.is::<NotReady>() {
            "not_ready"
        } else if error.is::<NoHealthyPeers>() {
            "no_healthy_peers"
        } else if error.is::<HealthError>() {
            "ejected"
        } else if error.is::<hyper::Error>() {
            "hyper"
        } else if error.is::<io::Error>() {
            "io"
        } else {
            ""
        };
        if !name.is_empty() {
            return Some(name);
        }
        next = error.source();
    }
    None
}

/// A small deterministic generator for the load's own choices (think times, methods).
#[derive(Debug, Clone)]
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64, stream: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03))
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Asserts the accounting every scenario shares: each request ended, with a response or a
/// typed error, before its deadline.
pub fn assert_accounted(outcomes: &[Outcome], deadline: Duration) {
    let hung = outcomes.iter().filter(|o| o.how == Ended::Hung).count();
    let untyped = outcomes.iter().filter(|o| o.how == Ended::Untyped).count();
    let unready = outcomes
        .iter()
        .filter(|o| o.how == Ended::Error("not_ready"))
        .count();
    assert_eq!(hung, 0, "{hung} of {} requests hung", outcomes.len());
    assert_eq!(
        untyped, 0,
        "{untyped} requests failed with an untyped error"
    );
    assert_eq!(unready, 0, "{unready} calls broke the tower contract");
    // One tick of slack: the deadline's timer fires on the tick that passes it.
    let late: Vec<_> = outcomes
        .iter()
        .filter(|o| o.took() > deadline + Duration::from_millis(1))
        .collect();
    assert!(
        late.is_empty(),
        "{} requests ended after their {deadline:?} deadline, e.g. {:?}",
        late.len(),
        late.first()
    );
}

/// Counts outcomes by how they ended, for failure messages.
pub fn tally(outcomes: &[Outcome]) -> std::collections::BTreeMap<String, usize> {
    let mut by = std::collections::BTreeMap::new();
    for o in outcomes {
        *by.entry(format!("{:?}", o.how)).or_insert(0) += 1;
    }
    by
}
