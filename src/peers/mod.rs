//! `Peers`: the per-peer state every redial layer reads and writes.
//!
//! One `Peers` table is shared (it is an `Arc` inside) by the reconnect, retry and health layers
//! of a process. For each peer it keeps a tracker: the peer's [`PeerState`], counters, the last
//! error, and the peer's one backoff [`Schedule`](crate::backoff::Schedule). Because the schedule
//! lives here and not in each connection, every connection of the process to a peer follows the
//! same schedule, and while the peer is down at most one connect attempt (a *probe*) is under way
//! for the whole process (DESIGN §3.10).
//!
//! ```
//! use redial::peers::{NextAttempt, PeerState, Peers};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let peers: Peers<&'static str> = Peers::new();
//! let api = peers.peer("api.internal:443")?;
//!
//! // A connect attempt fails: the peer backs off, and nobody may try again before the delay.
//! let attempt = api.try_begin_attempt().expect("first attempt is allowed");
//! let NextAttempt::After(delay) = attempt.failed(&"connection refused") else { unreachable!() };
//! assert_eq!(api.state(), PeerState::Backoff);
//! assert!(api.try_begin_attempt().is_err());
//!
//! // Once the delay is over, the next attempt succeeds.
//! tokio::time::sleep(delay).await;
//! api.try_begin_attempt().expect("delay is over").succeeded();
//! assert_eq!(api.state(), PeerState::Connected);
//!
//! // A response proves the peer works: the backoff schedule starts over.
//! api.record_success();
//! let stats = peers.stats();
//! assert_eq!((stats.attempts, stats.failures, stats.successes), (2, 1, 1));
//! assert!(peers.health().healthy);
//! # Ok(())
//! # }
//! ```
//!
//! Hot-path updates ([`PeerHandle::record_success`], [`PeerHandle::record_failure`]) take one
//! uncontended lock, that of the peer, and do not allocate. Totals, the list of peers in a state
//! and the [`HealthReport`] are kept current as states change, so reading them never scans the
//! table.
//!
//! Events are published, and the `Display` of recorded errors runs, while the peer's record is
//! locked, so that each peer's events come out in the order things happened to it. A tracing
//! subscriber or an error type must therefore not call back into the same peer's handle (it
//! would deadlock); event subscribers are not affected, they receive events on their own tasks.
//! Wakers are always woken after the lock is released.

mod admission;
mod attempt;
mod builder;
mod ejection;
#[cfg(test)]
mod ejection_tests;
mod handle;
mod ops;
mod outcomes;
mod registry;
mod report;
mod requests;
mod state;
mod tracker;

use std::borrow::Borrow;
use std::fmt::{Debug, Display};
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::watch;
use tokio::time::Instant;

pub(crate) use admission::{Admission, EjectionHistory, EjectionPlan, GateWaiter, ProbePermit};
pub use attempt::{Attempt, AttemptDenied, NextAttempt};
pub use builder::PeersBuilder;
pub use handle::PeerHandle;
pub use report::{HealthReport, PeerSnapshot, Stats};
pub use state::{EjectionCause, Origin, Override, PeerState};

use crate::backoff::Backoff;
use crate::error::CapacityError;
use crate::event::{Publisher, Subscription};
use crate::rng;
use registry::Registry;
use tracker::Tracker;

/// What can identify a peer: a `SocketAddr`, a `Uri` authority, a name.
///
/// Keys are cloned into events and into the table's index, so prefer keys that clone without
/// allocating (`SocketAddr`, `&'static str`, `Arc<str>`, `http::uri::Authority`).
pub trait PeerKey: Hash + Eq + Clone + Debug + Send + Sync + 'static {}

impl<T: Hash + Eq + Clone + Debug + Send + Sync + 'static> PeerKey for T {}

/// The shared per-peer state. Cloning is cheap and every clone sees the same peers.
///
/// See the [module documentation](self) for an example.
#[derive(Debug)]
pub struct Peers<K> {
    shared: Arc<Shared<K>>,
}

impl<K> Clone for Peers<K> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Shared<K> {
    registry: RwLock<Registry<K>>,
    totals: Totals,
    events: Publisher<K>,
    health: watch::Sender<HealthReport>,
    backoff: Backoff,
    min_peers: usize,
    seed: u64,
    next_stream: AtomicU64,
    /// Time stamps in the lock-free outcome counters count from here.
    epoch: Instant,
    error_text_limit: usize,
}

#[derive(Debug, Default)]
struct Totals {
    attempts: AtomicU64,
    successes: AtomicU64,
    failures: AtomicU64,
    retries: AtomicU64,
    budget_exhausted: AtomicU64,
}

impl<K: PeerKey> Default for Peers<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: PeerKey> Peers<K> {
    /// A table with the default configuration (see [`PeersBuilder`]).
    pub fn new() -> Self {
        Self::from_builder(PeersBuilder::default())
    }

    /// Configures a table.
    pub fn builder() -> PeersBuilder<K> {
        PeersBuilder::default()
    }

    fn from_builder(b: PeersBuilder<K>) -> Self {
        let seed = b.seed.or(b.backoff.seed()).unwrap_or_else(rng::random_seed);
        let report = HealthReport::from_counts([0; 6], b.min_peers, Instant::now());
        let (health, _) = watch::channel(report);
        Self {
            shared: Arc::new(Shared {
                registry: RwLock::new(Registry::new(b.capacity)),
                totals: Totals::default(),
                events: Publisher::new(b.event_capacity),
                health,
                backoff: b.backoff,
                min_peers: b.min_peers,
                seed,
                next_stream: AtomicU64::new(0),
                epoch: Instant::now(),
                error_text_limit: b.error_text_limit,
            }),
        }
    }

    /// The handle to `key`, tracking it as a [`Discovered`](Origin::Discovered) peer if new.
    pub fn peer(&self, key: K) -> Result<PeerHandle<K>, CapacityError> {
        self.get_or_insert(key, Origin::Discovered)
    }

    /// The handle to `key`, tracked as a [`Static`](Origin::Static) (configured) peer: never
    /// evicted. A discovered peer of that key becomes static.
    pub fn add_static(&self, key: K) -> Result<PeerHandle<K>, CapacityError> {
        self.get_or_insert(key, Origin::Static)
    }

    fn get_or_insert(&self, key: K, origin: Origin) -> Result<PeerHandle<K>, CapacityError> {
        if let Some(handle) = self.get(&key) {
            if origin == Origin::Static {
                handle.tracker.make_static();
            }
            return Ok(handle);
        }
        let mut registry = self.shared.registry_write();
        // Someone may have inserted it between the two locks.
        if let Some(tracker) = registry.get(&key) {
            let tracker = Arc::clone(tracker);
            if origin == Origin::Static {
                tracker.make_static();
            }
            return Ok(PeerHandle::new(Arc::clone(&self.shared), tracker));
        }
        let schedule = self
            .shared
            .backoff
            .schedule_seeded(self.shared.derive_seed());
        let tracker = Arc::new(Tracker::new(
            key,
            origin,
            schedule,
            self.shared.error_text_limit,
        ));
        registry.insert(Arc::clone(&tracker))?;
        self.shared.publish_health(&registry, Instant::now());
        Ok(PeerHandle::new(Arc::clone(&self.shared), tracker))
    }

    /// The handle to a peer already tracked.
    pub fn get<Q>(&self, key: &Q) -> Option<PeerHandle<K>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let tracker = self.shared.registry_read().get(key).cloned()?;
        Some(PeerHandle::new(Arc::clone(&self.shared), tracker))
    }

    /// Stops tracking a peer (one that discovery no longer lists). Returns whether it was
    /// tracked.
    ///
    /// Handles to it keep working but are detached: they no longer count in totals or reports,
    /// and a later [`peer`](Peers::peer) with the same key starts a new record with its own
    /// gate and schedule. Drop the old handles (close their connections) when you forget a peer,
    /// or the two records may probe it at the same time.
    pub fn forget<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let Some(tracker) = self.shared.registry_read().get(key).cloned() else {
            return false;
        };
        let st = tracker.lock();
        let mut registry = self.shared.registry_write();
        let removed = registry.remove(&tracker, st.public_state());
        if removed {
            // Under the peer's lock, so no transition of it can slip between the removal and
            // the flag and put it back in the index.
            tracker.outcomes.detach();
            self.shared.publish_health(&registry, Instant::now());
        }
        removed
    }

    /// Records a success for a tracked peer (see [`PeerHandle::record_success`]). Returns
    /// `false` if the peer is not tracked. Layers hold a [`PeerHandle`] instead, which skips the
    /// lookup.
    pub fn record_success<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let registry = self.shared.registry_read();
        let Some(tracker) = registry.get(key) else {
            return false;
        };
        // Counting takes no lock, so it may run under the registry's read lock, which spares
        // the `Arc` clone (another cache line); the proof locks the peer, so it may not.
        if self.shared.count_success(tracker) {
            let tracker = Arc::clone(tracker);
            drop(registry);
            self.shared.mark_proven(&tracker);
        }
        true
    }

    /// Records a failure for a tracked peer (see [`PeerHandle::record_failure`]). Returns
    /// `false` if the peer is not tracked.
    pub fn record_failure<Q>(&self, key: &Q, error: &dyn Display) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        // Clone out of the map: recording a failure locks the peer, which must not happen
        // under the registry's lock.
        let Some(tracker) = self.shared.registry_read().get(key).cloned() else {
            return false;
        };
        self.shared.record_failure(&tracker, error);
        true
    }

    /// A copy of one peer's record.
    pub fn snapshot<Q>(&self, key: &Q) -> Option<PeerSnapshot<K>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get(key).map(|h| h.snapshot())
    }

    /// The peers now in `state`, in no particular order.
    pub fn peers_in(&self, state: PeerState) -> Vec<K> {
        self.shared.registry_read().keys_in(state)
    }

    /// Totals over all peers.
    pub fn stats(&self) -> Stats {
        let registry = self.shared.registry_read();
        let t = &self.shared.totals;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            peers: registry.len(),
            by_state: registry.counts(),
            attempts: load(&t.attempts),
            successes: load(&t.successes),
            failures: load(&t.failures),
            retries: load(&t.retries),
            budget_exhausted: load(&t.budget_exhausted),
        }
    }

    /// The current health report.
    pub fn health(&self) -> HealthReport {
        *self.shared.health.borrow()
    }

    /// A receiver that sees every change of the health report, e.g. to await recovery:
    ///
    /// ```
    /// # use redial::peers::Peers;
    /// # async fn f(peers: Peers<String>) {
    /// let mut health = peers.watch_health();
    /// let _ = health.wait_for(|report| report.healthy).await;
    /// # }
    /// ```
    pub fn watch_health(&self) -> watch::Receiver<HealthReport> {
        self.shared.health.subscribe()
    }

    /// Subscribes to the [event stream](crate::event).
    pub fn subscribe(&self) -> Subscription<K> {
        self.shared.events.subscribe()
    }

    /// Peers tracked.
    pub fn len(&self) -> usize {
        self.shared.registry_read().len()
    }

    /// Whether no peer is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most peers tracked at once.
    pub fn capacity(&self) -> usize {
        self.shared.registry_read().capacity()
    }

    /// The backoff policy of every peer's schedule.
    pub fn backoff(&self) -> Backoff {
        self.shared.backoff
    }
}

impl<K> Shared<K> {
    fn registry_read(&self) -> RwLockReadGuard<'_, Registry<K>> {
        self.registry.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// A seed for one more generator: each call gets its own stream of the table's seed.
    pub(crate) fn derive_seed(&self) -> u64 {
        let stream = self.next_stream.fetch_add(1, Ordering::Relaxed);
        rng::derive_seed(self.seed, stream)
    }

    fn registry_write(&self) -> RwLockWriteGuard<'_, Registry<K>> {
        self.registry
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
