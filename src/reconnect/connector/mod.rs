//! A reconnecting connector: wraps any connector (`Service<Target>` returning a connection) and
//! returns the same kind of connector, so it drops into hyper-util's `Client`, reqwest's
//! `connector_layer` and tonic's `Endpoint::connect_with_connector`.
//!
//! Each call:
//! - finds the target's peer through a [`TargetKey`] ([`UriKey`] for `http::Uri` targets with
//!   feature `http`, [`FixedKey`] for targets that cannot be looked into, or a closure);
//! - waits its turn at the peer's single-flight gate: while the peer is down, one connect
//!   attempt is made at a time for the whole process, once per backoff step, and the other
//!   calls wait for it (or fail at once with [`Unavailable`](super::Unavailable) if waiting
//!   would pass their deadline), so a pool of 100 idle requests does not hit a dead host 100
//!   times;
//! - retries a failed connect with the peer's backoff, up to `attempts_per_call` or the call's
//!   deadline, then returns the last connect error to the client.
//!
//! ```
//! use std::net::SocketAddr;
//! use redial::peers::Peers;
//! use redial::reconnect::connector::ConnectLayer;
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower::BoxError> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//!
//! let peers: Peers<SocketAddr> = Peers::new();
//! let dial = service_fn(|addr: SocketAddr| tokio::net::TcpStream::connect(addr));
//! let connector = ConnectLayer::new(peers.clone(), |addr: &SocketAddr| *addr).layer(dial);
//!
//! let stream = connector.oneshot(addr).await?;
//! assert_eq!(stream.get_ref().peer_addr()?, addr);
//! assert_eq!(peers.stats().attempts, 1);
//! # Ok(())
//! # }
//! ```

mod builder;
mod call;
mod handoff;
#[cfg(feature = "hyper")]
mod hyper;
mod io;
mod key;

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{BoxError, Layer, Service};

pub use builder::ConnectBuilder;
use builder::ConnectSettings;
pub use handoff::{Detached, Handoff, Tracked};
pub use io::TrackedIo;
#[cfg(feature = "http")]
pub use key::UriKey;
pub use key::{FixedKey, TargetKey};

use crate::peers::{PeerKey, Peers};

/// Wraps a connector into a [`Connect`] that retries with the peer's shared backoff. See the
/// [module documentation](self).
pub struct ConnectLayer<KF, K: PeerKey, H = Tracked> {
    peers: Peers<K>,
    keys: KF,
    settings: Arc<ConnectSettings>,
    handoff: PhantomData<fn() -> H>,
}

impl<KF, K: PeerKey> ConnectLayer<KF, K, Tracked> {
    /// A layer with the default settings (see [`ConnectBuilder`]) that tracks peers in `peers`,
    /// keyed by `keys`.
    pub fn new(peers: Peers<K>, keys: KF) -> Self {
        Self {
            peers,
            keys,
            settings: Arc::new(ConnectSettings::default()),
            handoff: PhantomData,
        }
    }

    /// Configures a layer.
    pub fn builder(peers: Peers<K>, keys: KF) -> ConnectBuilder<KF, K> {
        ConnectBuilder::new(peers, keys)
    }

    /// Hands connections back untouched instead of wrapped in a [`TrackedIo`]; see [`Detached`]
    /// for what that costs. This is what reqwest's `connector_layer` needs.
    pub fn detached(self) -> ConnectLayer<KF, K, Detached> {
        ConnectLayer {
            peers: self.peers,
            keys: self.keys,
            settings: self.settings,
            handoff: PhantomData,
        }
    }
}

impl<KF: Clone, K: PeerKey, H> Clone for ConnectLayer<KF, K, H> {
    fn clone(&self) -> Self {
        Self {
            peers: self.peers.clone(),
            keys: self.keys.clone(),
            settings: Arc::clone(&self.settings),
            handoff: PhantomData,
        }
    }
}

impl<KF, K: PeerKey, H> fmt::Debug for ConnectLayer<KF, K, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectLayer")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<C, KF: Clone, K: PeerKey, H> Layer<C> for ConnectLayer<KF, K, H> {
    type Service = Connect<C, KF, K, H>;

    fn layer(&self, inner: C) -> Self::Service {
        Connect {
            inner,
            peers: self.peers.clone(),
            keys: self.keys.clone(),
            settings: Arc::clone(&self.settings),
            handoff: PhantomData,
        }
    }
}

/// A connector that retries with the peer's shared backoff; made by [`ConnectLayer`].
///
/// It is always ready: readiness of the connector inside is polled before each attempt, within
/// the call. Clones share the [`Peers`] table, so all of them, and any other layer on the same
/// table, follow one schedule per peer.
pub struct Connect<C, KF, K: PeerKey, H = Tracked> {
    inner: C,
    peers: Peers<K>,
    keys: KF,
    settings: Arc<ConnectSettings>,
    handoff: PhantomData<fn() -> H>,
}

impl<C: Clone, KF: Clone, K: PeerKey, H> Clone for Connect<C, KF, K, H> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            peers: self.peers.clone(),
            keys: self.keys.clone(),
            settings: Arc::clone(&self.settings),
            handoff: PhantomData,
        }
    }
}

impl<C: fmt::Debug, KF, K: PeerKey, H> fmt::Debug for Connect<C, KF, K, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connect")
            .field("inner", &self.inner)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The future of one [`Connect`] call: `Send` and `Unpin`, as hyper-util and tonic require.
///
/// It is boxed: a connect is rare next to the requests on the connection, and the call's
/// retry loop reads best as one `async` function.
pub struct ConnectFuture<O> {
    inner: Pin<Box<dyn Future<Output = Result<O, BoxError>> + Send>>,
}

impl<O> fmt::Debug for ConnectFuture<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectFuture").finish_non_exhaustive()
    }
}

impl<O> Future for ConnectFuture<O> {
    type Output = Result<O, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<C, KF, K: PeerKey, H: 'static> Connect<C, KF, K, H> {
    fn start<T>(&mut self, target: T, replay: fn(&T) -> Option<T>) -> ConnectFuture<H::Output>
    where
        C: Service<T> + Clone + Send + 'static,
        C::Future: Send,
        C::Error: Into<BoxError>,
        C::Response: Send,
        T: Send + 'static,
        KF: TargetKey<T, Key = K>,
        H: Handoff<K, C::Response>,
        H::Output: Send + 'static,
    {
        let peer = match self.peers.peer(self.keys.key(&target)) {
            Ok(peer) => peer,
            Err(full) => {
                return ConnectFuture {
                    inner: Box::pin(std::future::ready(Err(full.into()))),
                };
            }
        };
        let future = call::connect::<C, T, K, H>(
            self.inner.clone(),
            target,
            replay,
            peer,
            Arc::clone(&self.settings),
        );
        ConnectFuture {
            inner: Box::pin(future),
        }
    }
}

fn replay_clone<T: Clone>(target: &T) -> Option<T> {
    Some(target.clone())
}

fn replay_none<T>(_: &T) -> Option<T> {
    None
}

impl<C, T, KF, K> Service<T> for Connect<C, KF, K, Tracked>
where
    C: Service<T> + Clone + Send + 'static,
    C::Future: Send,
    C::Error: Into<BoxError>,
    C::Response: Send + 'static,
    T: Clone + Send + 'static,
    KF: TargetKey<T, Key = K>,
    K: PeerKey,
{
    type Response = TrackedIo<C::Response, K>;
    type Error = BoxError;
    type Future = ConnectFuture<Self::Response>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, target: T) -> Self::Future {
        self.start(target, replay_clone::<T>)
    }
}

impl<C, T, KF, K> Service<T> for Connect<C, KF, K, Detached>
where
    C: Service<T> + Clone + Send + 'static,
    C::Future: Send,
    C::Error: Into<BoxError>,
    C::Response: Send + 'static,
    T: Send + 'static,
    KF: TargetKey<T, Key = K>,
    K: PeerKey,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = ConnectFuture<C::Response>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, target: T) -> Self::Future {
        self.start(target, replay_none::<T>)
    }
}
