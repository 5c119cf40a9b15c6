//! Which peer's tracker a request's retries are recorded in.

use crate::peers::{PeerHandle, PeerKey, Peers};

/// Finds the peer a request goes to, so that its failures, retries and budget refusals are
/// counted in that peer's tracker and published as its events.
///
/// Implemented by [`NoPeer`] (record nothing), [`PeerHandle`] (every request goes to one
/// peer) and [`ByRequest`] (a key computed from the request, looked up in a [`Peers`] table).
/// The peer is looked up only when an attempt fails, never on the happy path.
pub trait TrackPeer<Req> {
    /// The key type of the peers table.
    type Key: PeerKey;

    /// The peer `request` goes to, if it is tracked.
    fn peer_of(&self, request: &Req) -> Option<PeerHandle<Self::Key>>;
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
#[derive(Clone)]
pub struct ByRequest<K, F> {
    peers: Peers<K>,
    key: F,
}

impl<K, F> ByRequest<K, F> {
    /// Records into `peers`, under the key `key` returns for each request.
    pub fn new(peers: Peers<K>, key: F) -> Self {
        Self { peers, key }
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
}
