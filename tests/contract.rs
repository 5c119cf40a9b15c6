//! The tower contract (DESIGN §4), checked against every layer redial exports, alone and
//! stacked, with the three probe services of the design:
//!
//! - [`Mode::Strict`]: ready when polled, but a clone is not ready, and a call without a
//!   `poll_ready` that returned `Ready(Ok)` on that very instance panics;
//! - [`Mode::ErrReady`]: `poll_ready` fails;
//! - [`Mode::Pending`]: `poll_ready` pends forever (and never wakes anyone).
//!
//! Each check runs over every row of [`ROWS`]; a new layer is covered by adding one row. What
//! each check demands:
//!
//! 1. legal callers never make a layer call its inner service unready: ready-then-call in a
//!    loop, clones readied and called in any order, retries of failed calls, many clones at
//!    once (the strict probe panics otherwise);
//! 2. an inner that errs in `poll_ready` is never called, and the layer neither panics nor
//!    spins: it fails (the error, or its own typed error) or waits on a timer;
//! 3. an inner that pends forever is never called, and is not polled in a loop;
//! 4. a call dropped mid-flight releases the inner's call (no future leaks), and so does the
//!    layer's service when dropped.
//!
//! Time is paused: the checks' minutes are virtual.

#![cfg(feature = "http")]

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use redial::backoff::{Backoff, Jitter};
use redial::health::balance::FailFastLayer;
use redial::health::{HealthLayer, HealthPolicy, Mode as HealthMode};
use redial::peers::Peers;
use redial::reconnect::ReconnectLayer;
use redial::reconnect::connector::ConnectLayer;
use redial::retry::RetryLayer;
use redial::retry::http::{ReplayBody, ReplayBodyLayer};
use tokio::time::timeout;
use tower::util::BoxCloneService;
use tower::{BoxError, Layer, Service, ServiceExt};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);
/// Polls of one probe past which a layer is taken to spin.
const SPIN_LIMIT: usize = 10_000;
/// How long the checks let a layer wait, in virtual time.
const PATIENCE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// The probes
// ---------------------------------------------------------------------------------------------

/// How a probe's `poll_ready` behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Strict,
    ErrReady,
    Pending,
}

#[derive(Debug, Default)]
struct Counts {
    polls: AtomicUsize,
    calls: AtomicUsize,
    in_flight: AtomicUsize,
    /// Calls still to fail with a reset (so that retry layers retry).
    fail_next: AtomicUsize,
    /// Calls answer only after this many milliseconds (0: at once).
    slow_ms: AtomicUsize,
}

/// The inner service under every row: for a connector row it is the connector, for a
/// reconnecting row the connections the connector makes.
#[derive(Debug)]
struct Probe {
    mode: Mode,
    counts: Arc<Counts>,
    ready: bool,
}

impl Probe {
    fn new(mode: Mode) -> Self {
        Self {
            mode,
            counts: Arc::default(),
            ready: false,
        }
    }

    fn count(&self, which: fn(&Counts) -> &AtomicUsize) -> usize {
        which(&self.counts).load(Ordering::SeqCst)
    }
}

impl Clone for Probe {
    /// A clone is not ready, like any tower service's.
    fn clone(&self) -> Self {
        Self {
            mode: self.mode,
            counts: Arc::clone(&self.counts),
            ready: false,
        }
    }
}

/// Counts a call in flight until dropped.
struct InFlight(Arc<Counts>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<R> Service<R> for Probe {
    type Response = u32;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<u32>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polls = self.counts.polls.fetch_add(1, Ordering::SeqCst) + 1;
        // A layer that spins on a failing or pending probe keeps virtual time from advancing,
        // so no timeout would ever end the check: the probe ends it.
        assert!(
            polls <= SPIN_LIMIT,
            "contract broken: a {:?} probe was polled {polls} times, the layer spins",
            self.mode
        );
        match self.mode {
            Mode::Strict => {
                self.ready = true;
                Poll::Ready(Ok(()))
            }
            Mode::ErrReady => Poll::Ready(Err(io::Error::other("probe: poll_ready failed"))),
            Mode::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, _: R) -> Self::Future {
        assert!(
            self.ready,
            "contract broken: a {:?} probe was called without poll_ready returning Ready(Ok) \
             on that instance",
            self.mode
        );
        self.ready = false;
        let counts = Arc::clone(&self.counts);
        counts.calls.fetch_add(1, Ordering::SeqCst);
        counts.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight(Arc::clone(&counts));
        let fail = counts
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let slow = counts.slow_ms.load(Ordering::SeqCst) as u64;
        Box::pin(async move {
            let _guard = guard;
            if slow > 0 {
                tokio::time::sleep(Duration::from_millis(slow)).await;
            }
            if fail {
                Err(io::Error::from(io::ErrorKind::ConnectionReset))
            } else {
                Ok(7)
            }
        })
    }
}

/// A connector of probe connections, itself strict: ready when polled, a clone not ready, and
/// a call without readiness panics. Each connection is a clone of `connection` (not ready).
#[derive(Debug)]
struct ProbeConnector {
    connection: Probe,
    ready: bool,
}

impl Clone for ProbeConnector {
    fn clone(&self) -> Self {
        Self {
            connection: self.connection.clone(),
            ready: false,
        }
    }
}

impl Service<Target> for ProbeConnector {
    type Response = Probe;
    type Error = io::Error;
    type Future = std::future::Ready<io::Result<Probe>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.ready = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Target) -> Self::Future {
        assert!(
            self.ready,
            "contract broken: the connector was called unready"
        );
        self.ready = false;
        std::future::ready(Ok(self.connection.clone()))
    }
}

#[derive(Debug, Clone, Copy)]
struct Target;

// ---------------------------------------------------------------------------------------------
// The rows: every layer redial exports, alone and stacked
// ---------------------------------------------------------------------------------------------

/// What every row makes: a service of `u32` requests over the probe.
type Svc = BoxCloneService<u32, u32, BoxError>;

fn backoff() -> Backoff {
    Backoff::builder()
        .initial(100 * MS)
        .multiplier(2.0)
        .max(2 * SEC)
        .jitter(Jitter::None)
        .build()
        .unwrap()
}

fn peers() -> Peers<&'static str> {
    Peers::builder().backoff(backoff()).seed(1).build().unwrap()
}

fn retry<S>(
    inner: S,
) -> redial::retry::Retry<S, redial::retry::DefaultClassifier, redial::retry::NoPeer> {
    RetryLayer::builder()
        .max_attempts(3)
        .deadline(5 * SEC)
        .seed(1)
        .build()
        .unwrap()
        .layer(inner)
}

fn reconnect(
    probe: Probe,
    peers: &Peers<&'static str>,
) -> redial::reconnect::Reconnect<ProbeConnector, Target, &'static str> {
    let connector = ProbeConnector {
        connection: probe,
        ready: false,
    };
    ReconnectLayer::builder(peers.add_static("reconnect").unwrap(), Target)
        .fail_fast(Some(3 * SEC))
        .build()
        .unwrap()
        .layer(connector)
}

/// The connector layer over the probe as a connector: each call is a connect; the
/// connection's value is the probe's answer.
fn connect(
    probe: Probe,
    peers: &Peers<&'static str>,
) -> impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone + Send + 'static {
    ConnectLayer::builder(peers.clone(), |_: &u32| "connect")
        .connect_timeout(SEC)
        .call_deadline(Some(5 * SEC))
        .build()
        .unwrap()
        .layer(probe)
        .map_response(|io| *io.get_ref())
}

/// `ReplayBodyLayer` sees HTTP requests: the row makes one per `u32`.
fn replay_body(
    probe: Probe,
) -> impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone + Send + 'static {
    ReplayBodyLayer::new()
        .layer(ProbeOf::<Request<ReplayBody<Full<Bytes>>>>::new(probe))
        .map_request(|n: u32| Request::new(Full::new(Bytes::from(n.to_string()))))
        .map_err(|e: io::Error| BoxError::from(e))
}

/// The probe, typed for one request type (tower's `BoxCloneService` needs the types fixed).
struct ProbeOf<R> {
    probe: Probe,
    request: std::marker::PhantomData<fn(R)>,
}

impl<R> ProbeOf<R> {
    fn new(probe: Probe) -> Self {
        Self {
            probe,
            request: std::marker::PhantomData,
        }
    }
}

impl<R> Clone for ProbeOf<R> {
    fn clone(&self) -> Self {
        Self::new(self.probe.clone())
    }
}

impl<R> Service<R> for ProbeOf<R> {
    type Response = u32;
    type Error = io::Error;
    type Future = <Probe as Service<R>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Service::<R>::poll_ready(&mut self.probe, cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        self.probe.call(request)
    }
}

type Row = (&'static str, fn(Probe) -> Svc);

/// Every layer, alone and stacked. Add a layer here and every check covers it.
const ROWS: &[Row] = &[
    ("retry", |p| Svc::new(retry(ProbeOf::<u32>::new(p)))),
    ("reconnect", |p| Svc::new(reconnect(p, &peers()))),
    ("connect", |p| Svc::new(connect(p, &peers()))),
    ("replay_body", |p| Svc::new(replay_body(p))),
    ("retry > reconnect", |p| {
        Svc::new(retry(reconnect(p, &peers())))
    }),
    ("retry > connect", |p| Svc::new(retry(connect(p, &peers())))),
    // A reconnect over a connect layer keyed to the same peer of the same table would
    // deadlock by design (see `ReconnectLayer`): the inner connector gets its own table.
    ("retry > reconnect > connect", |p| {
        let outer = peers();
        let connector = ConnectorOf(connect(p, &peers()));
        Svc::new(retry(
            ReconnectLayer::builder(outer.add_static("outer").unwrap(), Target)
                .fail_fast(Some(3 * SEC))
                .build()
                .unwrap()
                .layer(connector),
        ))
    }),
    ("health", |p| Svc::new(health(ProbeOf::<u32>::new(p)))),
    ("retry > health > reconnect", |p| {
        Svc::new(retry(health(reconnect(p, &peers()))))
    }),
    ("fail_fast > health", |p| {
        Svc::new(FailFastLayer::new(SEC).layer(health(ProbeOf::<u32>::new(p))))
    }),
    // Not here: tower's p2c `Balance` over the health `Discover`, which is not `Clone`; the
    // balance suites (tests/health_discover.rs) run the same probes against it.
];

/// The health layer over `inner`, in backpressure mode (the mode that pends).
fn health<S>(
    inner: S,
) -> impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone + Send + 'static
where
    S: Service<u32, Response = u32> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
    let policy = HealthPolicy::builder()
        .mode(HealthMode::Backpressure)
        .build()
        .unwrap();
    HealthLayer::new(peers().add_static("health").unwrap(), policy)
        .layer(inner)
        .map_err(BoxError::from)
}

/// A connector whose connections are services built by connecting through `S` once per
/// request: adapts a connector row (`u32 -> u32`) into a `MakeService` for a reconnect row.
#[derive(Clone)]
struct ConnectorOf<S>(S);

impl<S> Service<Target> for ConnectorOf<S>
where
    S: Service<u32, Response = u32, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = ConnectionOf<S>;
    type Error = BoxError;
    type Future = std::future::Ready<Result<ConnectionOf<S>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, _: Target) -> Self::Future {
        // The readied service becomes the connection; the connector keeps an unready clone.
        let clone = self.0.clone();
        let ready = std::mem::replace(&mut self.0, clone);
        std::future::ready(Ok(ConnectionOf {
            inner: ready,
            ready: true,
        }))
    }
}

/// A connection of [`ConnectorOf`]: answers its first call with the readied service, then
/// polls before each next one.
struct ConnectionOf<S> {
    inner: S,
    ready: bool,
}

impl<S> Service<u32> for ConnectionOf<S>
where
    S: Service<u32, Response = u32, Error = BoxError>,
{
    type Response = u32;
    type Error = BoxError;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.ready {
            return Poll::Ready(Ok(()));
        }
        let poll = self.inner.poll_ready(cx);
        self.ready = matches!(poll, Poll::Ready(Ok(())));
        poll
    }

    fn call(&mut self, request: u32) -> Self::Future {
        self.ready = false;
        self.inner.call(request)
    }
}

// ---------------------------------------------------------------------------------------------
// The checks
// ---------------------------------------------------------------------------------------------

/// Counts wake-ups.
#[derive(Debug, Default)]
struct Wakes(AtomicUsize);

impl std::task::Wake for Wakes {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Runs `check` for every row on its own task; a panic (the strict probe's, or an assertion)
/// is reported with the row's name, and every failing row is listed.
async fn for_every_row<F, Fut>(mode: Mode, check: F)
where
    F: Fn(&'static str, Svc, Probe) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut failed = Vec::new();
    for (name, make) in ROWS {
        let probe = Probe::new(mode);
        let service = make(probe.clone());
        if let Err(panic) = tokio::spawn(check(name, service, probe)).await {
            let message = panic
                .try_into_panic()
                .ok()
                .and_then(|p| {
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                })
                .unwrap_or_default();
            failed.push(format!("{name}: {message}"));
        }
    }
    assert!(
        failed.is_empty(),
        "rows broke the contract:\n{}",
        failed.join("\n")
    );
}

async fn send(service: &mut Svc, request: u32) -> Result<u32, BoxError> {
    timeout(PATIENCE, async {
        service.ready().await?.call(request).await
    })
    .await
    .unwrap_or_else(|_| Err("no outcome within the patience".into()))
}

#[tokio::test(start_paused = true)]
async fn legal_callers_never_make_a_layer_call_its_inner_unready() {
    for_every_row(Mode::Strict, |name, mut service, probe| async move {
        // Ready, then call, again and again.
        for n in 0..5 {
            assert_eq!(send(&mut service, n).await.unwrap(), 7, "{name}");
        }
        // The original readied, a clone readied and called first, then the original.
        service.ready().await.unwrap();
        let mut clone = service.clone();
        clone.ready().await.unwrap();
        assert_eq!(clone.call(1).await.unwrap(), 7);
        assert_eq!(service.call(2).await.unwrap(), 7);
        // Failed calls: the layers that retry poll readiness again first.
        probe.counts.fail_next.store(2, Ordering::SeqCst);
        let _ = send(&mut service, 3).await;
        // Many clones at once.
        let tasks: Vec<_> = (0..10)
            .map(|n| {
                let mut clone = service.clone();
                tokio::spawn(async move { send(&mut clone, n).await })
            })
            .collect();
        // Each ends (an answer, or a typed error such as a connector failing fast while the
        // peer backs off); what matters is that none reached the probe unready.
        for task in tasks {
            let _ = task.await.unwrap();
        }
        assert!(probe.count(|c| &c.calls) >= 9, "{name}: calls went missing");
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn an_inner_failing_poll_ready_is_never_called_and_never_spun() {
    for_every_row(Mode::ErrReady, |name, mut service, probe| async move {
        // Whatever the layer makes of it (the error, its own typed error, a wait on a
        // timer), the probe is never called: it would panic.
        for n in 0..3 {
            let _ = send(&mut service, n).await;
        }
        assert_eq!(probe.count(|c| &c.calls), 0, "{name}");
        // Three sends in up to three virtual minutes: polls come from timers, not a loop.
        let polls = probe.count(|c| &c.polls);
        assert!(
            polls <= 500,
            "{name}: the failing probe was polled {polls} times"
        );
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn an_inner_pending_forever_is_never_called_and_never_spun() {
    for_every_row(Mode::Pending, |name, mut service, probe| async move {
        for n in 0..3 {
            let _ = send(&mut service, n).await;
        }
        assert_eq!(probe.count(|c| &c.calls), 0, "{name}");
        let polls = probe.count(|c| &c.polls);
        assert!(
            polls <= 500,
            "{name}: the pending probe was polled {polls} times"
        );
        // Settled on a pending inner, the layer waits to be woken (by a timer at most): polled
        // by hand, it does not wake itself, which under a real clock would be a busy loop.
        let wakes = Arc::new(Wakes::default());
        let waker = std::task::Waker::from(Arc::clone(&wakes));
        let mut cx = Context::from_waker(&waker);
        // (A layer that is always ready, or ready to fail fast, is left alone: its calls were
        // checked above never to reach the probe.)
        let mut pending = 0;
        for _ in 0..10 {
            pending += usize::from(service.poll_ready(&mut cx).is_pending());
        }
        let woken = if pending == 10 {
            wakes.0.load(Ordering::SeqCst)
        } else {
            0
        };
        assert!(woken <= 1, "{name}: woke itself {woken} times in 10 polls");
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_call_dropped_mid_flight_releases_the_inner_call() {
    for_every_row(Mode::Strict, |name, mut service, probe| async move {
        probe.counts.slow_ms.store(10_000, Ordering::SeqCst);
        service.ready().await.unwrap();
        let mut call = Box::pin(service.call(1));
        // Let it reach the probe.
        for _ in 0..50 {
            if probe.count(|c| &c.in_flight) > 0 {
                break;
            }
            let _ = timeout(10 * MS, call.as_mut()).await;
        }
        assert_eq!(
            probe.count(|c| &c.in_flight),
            1,
            "{name}: the call never reached the probe"
        );
        drop(call);
        assert_eq!(
            probe.count(|c| &c.in_flight),
            0,
            "{name}: a dropped call leaked its inner call"
        );
        drop(service);
        assert_eq!(probe.count(|c| &c.in_flight), 0, "{name}");
    })
    .await;
}
