//! [`ReconnectLayer`]: wraps a connector into a service that keeps a connection up.

use std::fmt;
use std::sync::Arc;

use tower::{Layer, Service};

use super::builder::{ReconnectBuilder, Settings};
use super::service::Reconnect;
use crate::peers::{PeerHandle, PeerKey};

/// Wraps a connector (a [`MakeService`](https://docs.rs/tower/0.5/tower/trait.MakeService.html): a `Service<T>` whose responses are
/// services) into a [`Reconnect`] service that connects to `target`, keeps the connection, and
/// replaces it with backoff when it breaks.
///
/// All the services a layer makes, their clones, and services of other layers built on the same
/// [`Peers`](crate::peers::Peers) table follow the peer's one backoff schedule: while the peer is
/// down the whole process makes one connect attempt per backoff step.
///
/// Use it over a connector that connects once per call. Stacked over a
/// [`ConnectLayer`](super::connector::ConnectLayer) keyed to the same peer of the same table, the
/// two would share one single-flight gate: the outer attempt holds the peer's probe and the inner
/// call waits for it, so nothing ever connects. Give the inner connector its own table, or use
/// one of the two.
///
/// See the [module documentation](super) for an example.
pub struct ReconnectLayer<T, K: PeerKey> {
    peer: PeerHandle<K>,
    target: T,
    settings: Arc<Settings>,
}

impl<T, K: PeerKey> ReconnectLayer<T, K> {
    /// A layer with the default settings (see [`ReconnectBuilder`]) that connects to `target`
    /// and records into `peer`'s tracker.
    pub fn new(peer: PeerHandle<K>, target: T) -> Self {
        Self::from_parts(peer, target, Arc::new(Settings::default()))
    }

    /// Configures a layer.
    pub fn builder(peer: PeerHandle<K>, target: T) -> ReconnectBuilder<T, K> {
        ReconnectBuilder::new(peer, target)
    }

    pub(crate) fn from_parts(peer: PeerHandle<K>, target: T, settings: Arc<Settings>) -> Self {
        Self {
            peer,
            target,
            settings,
        }
    }

    /// The peer the services connect to.
    pub fn peer(&self) -> &PeerHandle<K> {
        &self.peer
    }
}

impl<T: Clone, K: PeerKey> Clone for ReconnectLayer<T, K> {
    fn clone(&self) -> Self {
        Self {
            peer: self.peer.clone(),
            target: self.target.clone(),
            settings: Arc::clone(&self.settings),
        }
    }
}

impl<T: fmt::Debug, K: PeerKey> fmt::Debug for ReconnectLayer<T, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReconnectLayer")
            .field("peer", self.peer.key())
            .field("target", &self.target)
            .field("settings", &self.settings)
            .finish()
    }
}

impl<M, T, K> Layer<M> for ReconnectLayer<T, K>
where
    M: Service<T>,
    T: Clone,
    K: PeerKey,
{
    type Service = Reconnect<M, T, K>;

    fn layer(&self, connector: M) -> Self::Service {
        Reconnect::new(
            connector,
            self.target.clone(),
            self.peer.clone(),
            Arc::clone(&self.settings),
        )
    }
}
