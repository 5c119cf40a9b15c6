//! Which peer's tracker a request's retries are recorded in, and which budget they draw on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::budget::{Budget, BudgetBuilder};
use crate::error::ConfigError;
use crate::peers::{PeerHandle, PeerKey, Peers};

/// Finds the peer a request goes to, so that its failures, retries and budget refusals are
/// counted in that peer's tracker and published as its events.
///
/// Implemented by [`NoPeer`] (record nothing), [`PeerHandle`] (every request goes to one
/// peer) and [`ByRequest`] (a key computed from the request, looked up in a [`Peers`] table).
/// The peer is looked up only when an attempt fails, never on the happy path; only per-peer
/// budgets ([`ByRequest::budget_per_peer`]) look the request's budget up on every call.
pub trait TrackPeer<Req> {
    /// The key type of the peers table.
    type Key: PeerKey;

    /// The peer `request` goes to, if it is tracked.
    fn peer_of(&self, request: &Req) -> Option<PeerHandle<Self::Key>>;

    /// The budget of `request`'s peer, when budgets are kept per peer; `None` (the default)
    /// means the layer's shared budget. Called once per request.
    fn budget_of(&self, request: &Req) -> Option<Budget> {
        let _ = request;
        None
    }
}

/// Records retries nowhere but in `tracing`.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPeer;

impl<Req> TrackPeer<Req> for NoPeer {
    type Key = ();

    fn peer_of(&self, _request: &Req) -> Option<PeerHandle<()>> {
        None
    }
}

impl<Req, K: PeerKey> TrackPeer<Req> for PeerHandle<K> {
    type Key = K;

    fn peer_of(&self, _request: &Req) -> Option<PeerHandle<K>> {
        Some(self.clone())
    }
}

/// Looks the peer up in a [`Peers`] table by a key taken from the request (a `Uri`'s
/// authority, a header, a field). A request whose key function returns `None`, or whose peer
/// cannot be added because the table is full, is retried without being recorded.
///
/// With [`budget_per_peer`](ByRequest::budget_per_peer) each peer also gets a retry budget of
/// its own, so that one failing peer cannot spend the retries every other peer's requests pay
/// for.
///
/// ```
/// use redial::peers::Peers;
/// use redial::retry::{Budget, ByRequest, RetryLayer};
///
/// # fn main() -> Result<(), redial::ConfigError> {
/// let peers: Peers<String> = Peers::new();
/// let by_host = ByRequest::new(peers, |request: &(String, u32)| Some(request.0.clone()))
///     .budget_per_peer(Budget::builder().ratio(0.1))?;
/// let layer = RetryLayer::builder().track(by_host).build()?;
/// # let _ = layer;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ByRequest<K, F> {
    peers: Peers<K>,
    key: F,
    budgets: Option<Arc<PerPeer<K>>>,
}

/// One budget per peer key, made from one template. Bounded: when it holds more budgets than
/// the table can hold peers, those of peers the table no longer knows are dropped.
struct PerPeer<K> {
    template: BudgetBuilder,
    budgets: Mutex<HashMap<K, Budget>>,
}

impl<K, F> ByRequest<K, F> {
    /// Records into `peers`, under the key `key` returns for each request.
    pub fn new(peers: Peers<K>, key: F) -> Self {
        Self {
            peers,
            key,
            budgets: None,
        }
    }

    /// Gives every peer its own budget built from `budget` (validated here), instead of the
    /// layer's shared one. Requests whose key function returns `None` use the shared budget.
    pub fn budget_per_peer(mut self, budget: BudgetBuilder) -> Result<Self, ConfigError> {
        budget.build()?;
        self.budgets = Some(Arc::new(PerPeer {
            template: budget,
            budgets: Mutex::new(HashMap::new()),
        }));
        Ok(self)
    }
}

impl<K: PeerKey> PerPeer<K> {
    fn budget(&self, key: K, peers: &Peers<K>) -> Budget {
        let mut budgets = self.budgets.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(budget) = budgets.get(&key) {
            return budget.clone();
        }
        if budgets.len() >= peers.capacity() {
            budgets.retain(|k, _| peers.get(k).is_some());
        }
        // The template was validated by `budget_per_peer`.
        let budget = self.template.assemble();
        budgets.insert(key, budget.clone());
        budget
    }
}

impl<K: PeerKey, F> std::fmt::Debug for ByRequest<K, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ByRequest")
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

impl<Req, K, F> TrackPeer<Req> for ByRequest<K, F>
where
    K: PeerKey,
    F: Fn(&Req) -> Option<K>,
{
    type Key = K;

    fn peer_of(&self, request: &Req) -> Option<PeerHandle<K>> {
        let key = (self.key)(request)?;
        self.peers.peer(key).ok()
    }

    fn budget_of(&self, request: &Req) -> Option<Budget> {
        let budgets = self.budgets.as_ref()?;
        Some(budgets.budget((self.key)(request)?, &self.peers))
    }
}
