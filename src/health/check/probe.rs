//! What a check is: the [`HealthCheck`] trait, closures as checks, and the timeout error.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use tower::BoxError;

/// An active probe of one peer: `Ok(())` means the peer is up, any error that it is down.
///
/// A [`Checker`](super::Checker) calls it every `interval` for each peer it watches, under its
/// own timeout, so a check need not bound its own time. Implement it for a protocol of your
/// own, or use [`check_fn`] for a closure, [`TcpCheck`](super::TcpCheck) for a TCP connect, or
/// (feature `tonic`) `GrpcCheck` for the gRPC health protocol.
///
/// ```
/// use std::future::Future;
/// use redial::health::check::HealthCheck;
/// use tower::BoxError;
///
/// /// Up when the peer's name is in the service registry.
/// struct Registered(std::collections::HashSet<&'static str>);
///
/// impl HealthCheck<&'static str> for Registered {
///     fn check(&self, peer: &&'static str) -> impl Future<Output = Result<(), BoxError>> + Send {
///         let found = self.0.contains(peer);
///         async move { if found { Ok(()) } else { Err("not registered".into()) } }
///     }
/// }
/// ```
pub trait HealthCheck<K> {
    /// Probes `peer` once.
    fn check(&self, peer: &K) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// A [`HealthCheck`] made of a closure; see [`check_fn`].
#[derive(Clone, Copy)]
pub struct CheckFn<F> {
    f: F,
}

/// A [`HealthCheck`] that calls `f` with (a clone of) the peer's key and awaits the future it
/// returns: `Ok(())` is up, an error is down.
///
/// ```
/// use std::net::SocketAddr;
/// use redial::health::check::{HealthCheck, check_fn};
///
/// let ping = check_fn(|addr: SocketAddr| async move {
///     // Send a ping of your own protocol to `addr` here.
///     Ok::<(), std::io::Error>(())
/// });
/// # let _ = ping;
/// ```
pub fn check_fn<F>(f: F) -> CheckFn<F> {
    CheckFn { f }
}

impl<K, F, Fut, E> HealthCheck<K> for CheckFn<F>
where
    K: Clone,
    F: Fn(K) -> Fut,
    Fut: Future<Output = Result<(), E>> + Send,
    E: Into<BoxError>,
{
    fn check(&self, peer: &K) -> impl Future<Output = Result<(), BoxError>> + Send {
        let check = (self.f)(peer.clone());
        async move { check.await.map_err(Into::into) }
    }
}

impl<F> fmt::Debug for CheckFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckFn").finish_non_exhaustive()
    }
}

/// A check took longer than the checker's `timeout` and was abandoned; it counts as a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckTimedOut {
    pub(crate) after: Duration,
}

impl CheckTimedOut {
    /// The timeout that elapsed.
    pub fn after(&self) -> Duration {
        self.after
    }
}

impl fmt::Display for CheckTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "health check timed out after {:?}; raise the checker's `timeout` if the peer is \
             only slow to answer",
            self.after
        )
    }
}

impl std::error::Error for CheckTimedOut {}
