//! [`DiscoverHandle`]: adding and removing peers of a running [`HealthDiscover`](super::HealthDiscover).

use std::fmt;

use tokio::sync::mpsc::UnboundedSender;

use crate::peers::{PeerHandle, PeerKey};

/// A change of the peer set asked through a handle.
pub(super) enum Control<K> {
    Add(PeerHandle<K>),
    Remove(K),
}

/// Adds peers to and removes peers from a [`HealthDiscover`](super::HealthDiscover) that the
/// balancer owns, from [`HealthDiscover::handle`](super::HealthDiscover::handle). Cheap to
/// clone.
///
/// A change takes effect the next time the balancer polls the discover (on its next
/// `poll_ready`); the balancer's task is woken for it.
pub struct DiscoverHandle<K> {
    tx: UnboundedSender<Control<K>>,
}

impl<K: PeerKey> DiscoverHandle<K> {
    pub(super) fn new(tx: UnboundedSender<Control<K>>) -> Self {
        Self { tx }
    }

    /// Balances over `peer` too: its service is made and it is inserted when usable. A peer
    /// the discover has already is left as it is. Returns `false` if the discover is gone.
    pub fn add(&self, peer: PeerHandle<K>) -> bool {
        self.tx.send(Control::Add(peer)).is_ok()
    }

    /// Stops balancing over the peer of `key`: it is removed from the balancer and its service
    /// dropped once the balancer lets go of it. The peer stays tracked in
    /// [`Peers`](crate::peers::Peers) (use [`Peers::forget`](crate::peers::Peers::forget) for
    /// that). Returns `false` if the discover is gone.
    pub fn remove(&self, key: &K) -> bool {
        self.tx.send(Control::Remove(key.clone())).is_ok()
    }
}

impl<K> Clone for DiscoverHandle<K> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<K> fmt::Debug for DiscoverHandle<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiscoverHandle")
            .field("closed", &self.tx.is_closed())
            .finish()
    }
}
