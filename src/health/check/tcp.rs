//! The TCP connect check.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpStream;
use tower::BoxError;

use super::HealthCheck;

/// A [`HealthCheck`] that opens a TCP connection to the peer and hangs up at once: the peer is
/// up when the connection is accepted.
///
/// The address comes from the peer's key through a closure, so any key works:
///
/// ```
/// use std::net::SocketAddr;
/// use redial::health::check::TcpCheck;
///
/// // Keys that are addresses already.
/// let by_addr = TcpCheck::new(|addr: &SocketAddr| *addr);
/// // Keys that name a service; its admin port is checked.
/// let admin = TcpCheck::new(|name: &&'static str| match *name {
///     "db" => SocketAddr::from(([10, 0, 0, 7], 9000)),
///     _ => SocketAddr::from(([10, 0, 0, 8], 9000)),
/// });
/// # let _ = (by_addr, admin);
/// ```
///
/// It proves that something listens, not that it serves: a process that accepts and then
/// hangs passes. Prefer a check that speaks the peer's protocol where one exists.
#[derive(Clone, Copy)]
pub struct TcpCheck<F> {
    addr: F,
}

impl<F> TcpCheck<F> {
    /// A check that connects to `addr(key)`.
    pub fn new(addr: F) -> Self {
        Self { addr }
    }
}

impl<K, F> HealthCheck<K> for TcpCheck<F>
where
    F: Fn(&K) -> SocketAddr,
{
    fn check(&self, peer: &K) -> impl Future<Output = Result<(), BoxError>> + Send {
        let addr = (self.addr)(peer);
        async move {
            // Dropping the stream closes it: the check hangs up as soon as it is connected.
            TcpStream::connect(addr)
                .await
                .map(drop)
                .map_err(BoxError::from)
        }
    }
}

impl<F> fmt::Debug for TcpCheck<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpCheck").finish_non_exhaustive()
    }
}
