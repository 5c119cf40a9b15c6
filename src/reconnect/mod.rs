//! Reconnecting with backoff: [`ReconnectLayer`] keeps a connection up over any connector.
//!
//! tower's own `Reconnect` reconnects at once, in a loop. [`Reconnect`] instead follows the
//! peer's backoff schedule from [`Peers`](crate::peers::Peers), shared by every service of the
//! process that talks to the peer:
//!
//! - while no connection is up, `poll_ready` is `Pending` with a timer armed for the end of the
//!   delay: no busy loop, no spawned task;
//! - each attempt has a connect timeout; a timed-out attempt is a failure like any other;
//! - a connection breaks when its `poll_ready` fails or a call fails with an error the
//!   [`BrokenConnection`] classifier recognises; the next `poll_ready` reconnects;
//! - the backoff resets only on proof: a successful response, or `stable_after` of uptime; a
//!   connection accepted and dropped at once keeps the schedule growing;
//! - after `fail_fast` without a connection, calls fail at once with [`Unavailable`]; once the
//!   policy's attempts are used up, with [`Exhausted`];
//! - while the peer is down, one connect attempt per backoff step is made for the whole process;
//!   when it succeeds the other services follow, spread over a short `stagger`.
//!
//! ```
//! use std::convert::Infallible;
//! use redial::peers::{PeerState, Peers};
//! use redial::reconnect::ReconnectLayer;
//! use tower::{Layer, Service, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), tower::BoxError> {
//! let peers: Peers<&'static str> = Peers::new();
//!
//! // A connector makes one service (a "connection") per target.
//! let connector = service_fn(|addr: &'static str| async move {
//!     let connection = service_fn(move |request: String| async move {
//!         Ok::<_, Infallible>(format!("{addr} says {request}"))
//!     });
//!     Ok::<_, std::io::Error>(connection)
//! });
//!
//! let layer = ReconnectLayer::new(peers.add_static("echo")?, "127.0.0.1:7");
//! let mut client = layer.layer(connector);
//!
//! let reply = client.ready().await?.call("hi".to_string()).await?;
//! assert_eq!(reply, "127.0.0.1:7 says hi");
//! assert_eq!(peers.get("echo").map(|p| p.state()), Some(PeerState::Connected));
//! # Ok(())
//! # }
//! ```
//!
//! Errors are [`BoxError`](tower::BoxError)s; redial's own ([`Unavailable`], [`Exhausted`],
//! [`ConnectTimeout`], [`NotReady`]) can be found with `downcast_ref`.

mod builder;
mod classify;
mod connection;
pub(crate) mod error;
mod future;
mod layer;
mod service;

pub mod connector;

pub use builder::ReconnectBuilder;
pub use classify::{BrokenConnection, is_connection_lost};
pub use error::{ConnectTimeout, Exhausted, NotReady, Unavailable};
pub use future::ResponseFuture;
pub use layer::ReconnectLayer;
pub use service::Reconnect;
