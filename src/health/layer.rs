//! [`HealthLayer`]: guards a service with its peer's health, and the state the layer's
//! services share.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;
use tower::Layer;

use super::error::Ejected;
use super::policy::HealthPolicy;
use super::service::Health;
use super::window::Window;
use crate::classify::ErrorsFail;
use crate::event::SkipReason;
use crate::peers::{
    EjectionCause, EjectionHistory, EjectionPlan, PeerHandle, PeerKey, ProbePermit,
};
use crate::rng;

/// Wraps a service into a [`Health`] service that guards one peer: it counts the outcomes its
/// [`HealthPolicy`]'s classifier calls failures, ejects the peer when they trip the policy,
/// refuses or holds requests while the peer is ejected, and lets the probes through that bring
/// it back.
///
/// The peer's state (ejection, failure run, probe slots) lives in its
/// [`Peers`](crate::peers::Peers) table, so every layer and clone that guards the same peer
/// agrees on it; the success-rate window, when configured, is the layer's own, shared by the
/// services it makes and their clones. Cloning the layer is cheap (an `Arc`).
///
/// See the [module documentation](super) for an example and where the layer goes in a stack.
pub struct HealthLayer<K: PeerKey, C = ErrorsFail> {
    shared: Arc<Shared<K, C>>,
}

impl<K: PeerKey, C> HealthLayer<K, C> {
    /// A layer that guards `peer` as `policy` says.
    pub fn new(peer: PeerHandle<K>, policy: HealthPolicy<C>) -> Self {
        let now = Instant::now();
        let values = policy.values();
        let seed = values.seed.unwrap_or_else(|| peer.derive_seed());
        Self {
            shared: Arc::new(Shared {
                // The key's text, once: every refusal shares it instead of formatting it.
                label: Arc::from(format!("{:?}", peer.key())),
                window: values.success_rate.map(|rate| Window::new(rate, now)),
                fraction: policy.max_ejected_fraction(),
                peer,
                policy,
                seed,
                draws: AtomicU64::new(0),
            }),
        }
    }

    /// The peer the layer guards.
    pub fn peer(&self) -> &PeerHandle<K> {
        &self.shared.peer
    }

    /// The layer's policy.
    pub fn policy(&self) -> &HealthPolicy<C> {
        &self.shared.policy
    }
}

impl<K: PeerKey, C> Clone for HealthLayer<K, C> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<K: PeerKey, C: fmt::Debug> fmt::Debug for HealthLayer<K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthLayer")
            .field("peer", self.shared.peer.key())
            .field("policy", &self.shared.policy)
            .finish()
    }
}

impl<S, K: PeerKey, C> Layer<S> for HealthLayer<K, C> {
    type Service = Health<S, K, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Health::new(inner, Arc::clone(&self.shared))
    }
}

/// What a layer's services and their response futures share: one `Arc` per call.
pub(crate) struct Shared<K: PeerKey, C> {
    pub(crate) peer: PeerHandle<K>,
    pub(crate) label: Arc<str>,
    pub(crate) policy: HealthPolicy<C>,
    window: Option<Window>,
    fraction: Option<f64>,
    /// The jitter of ejection `n` is drawn from the `n`-th stream of this seed: repeatable,
    /// and no generator behind a lock.
    seed: u64,
    draws: AtomicU64,
}

impl<K: PeerKey, C> Shared<K, C> {
    /// The refusal of a call while the peer is ejected. Allocates nothing.
    pub(crate) fn ejected(&self, retry_at: Option<Instant>, cause: EjectionCause) -> Ejected {
        Ejected {
            peer: Arc::clone(&self.label),
            cause,
            retry_at,
        }
    }

    /// Records the outcome of a call that was let through: into the probe's permit for a
    /// probe, into the peer's failure run and the window otherwise, ejecting the peer when
    /// the policy trips.
    pub(crate) fn record(&self, probe: Option<ProbePermit<K>>, failed: bool) {
        match (probe, failed) {
            (Some(permit), false) => {
                if permit.succeeded() {
                    // The peer is back: what the window saw before is about the peer it was.
                    if let Some(window) = &self.window {
                        window.clear();
                    }
                } else {
                    // The ejection it probed was decided without it: the window's outcomes
                    // are about the peer as it is, and this is one more of them.
                    self.record_success();
                }
            }
            (Some(permit), true) => {
                if !permit.failed(|history| self.plan(history, false)) {
                    // As for a stale success: one more failure of the peer as it is.
                    self.record_failure();
                }
            }
            (None, false) => self.record_success(),
            (None, true) => self.record_failure(),
        }
    }

    /// A failure outside a deciding probe: into the run and the window, ejecting the peer
    /// when either trips.
    fn record_failure(&self) {
        let run = self.peer.health_failure();
        let by_count = self
            .policy
            .consecutive_failures()
            .is_some_and(|limit| run >= limit);
        // The window counts the failure whatever the run says.
        let by_rate = self
            .window
            .as_ref()
            .is_some_and(|window| window.failure(Instant::now()));
        if by_count || by_rate {
            self.trip();
        }
    }

    /// A success outside a deciding probe. Lock-free and, without a window, free of clock
    /// reads: the happy path.
    fn record_success(&self) {
        self.peer.health_success();
        if let Some(window) = &self.window {
            window.success(Instant::now());
        }
    }

    /// The policy tripped: eject the peer, or in shadow mode only say so.
    fn trip(&self) {
        if let Some(window) = &self.window {
            window.clear();
        }
        if self.policy.is_shadow() {
            self.peer.skip_ejection(SkipReason::Shadow);
            return;
        }
        // A refusal needs nothing more from us: the panic guard and a forced-closed peer
        // emitted `EjectionSkipped`; an ejected or exhausted peer gets no requests anyway.
        let _ = self
            .peer
            .eject_outlier(self.fraction, |history| self.plan(history, true));
    }

    fn plan(&self, history: EjectionHistory, fresh: bool) -> EjectionPlan {
        self.policy.plan(history, fresh, Instant::now(), || {
            let draw = self.draws.fetch_add(1, Ordering::Relaxed);
            rng::unit(&mut rng::generator(rng::derive_seed(self.seed, draw)))
        })
    }
}
