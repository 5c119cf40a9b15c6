//! Balancing that never loses a peer.
//!
//! tower's balancers (`tower::balance::p2c`) take their endpoints from a
//! [`Discover`](tower::discover::Discover), drop an endpoint for good when its `poll_ready`
//! fails, and pend forever when no endpoint is ready. This module fills the three gaps:
//!
//! - [`HealthDiscover`] inserts each usable peer, removes a peer when it is ejected or its
//!   connect attempts are exhausted, and inserts the same service again when the peer is
//!   restored, when an outlier ejection's time is over (so the balancer sends the probe that
//!   decides it), or after a cool-down once exhausted; a service the balancer dropped for a
//!   failed `poll_ready` is replaced by a new one;
//! - [`PenalizedPending`] is a [`Load`](tower::load::Load) that counts failures as well as
//!   requests in flight, so a peer that fails fast does not look like the least loaded;
//! - [`FailFast`] turns "no peer ready for `wait`" into calls failing at once with
//!   [`NoHealthyPeers`], while it keeps polling the balancer so the first peer back ends it.
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use redial::health::balance::{
//!     FailFastLayer, HealthDiscover, NoHealthyPeers, PenalizedPendingLayer,
//! };
//! use redial::peers::Peers;
//! use tower::balance::p2c::Balance;
//! use tower::{Layer, Service, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), tower::BoxError> {
//! let peers: Peers<&'static str> = Peers::new();
//! let handles = vec![peers.add_static("a")?, peers.add_static("b")?, peers.add_static("c")?];
//!
//! // Each peer's service: here a function that names the peer; in real life a HealthLayer over
//! // tower's timeout over a ReconnectLayer over a connector (see "Composition" below).
//! let load = PenalizedPendingLayer::new();
//! let discover = HealthDiscover::new(&peers, handles.clone(), move |peer| {
//!     let name = *peer.key();
//!     load.layer(service_fn(move |_: ()| async move { Ok::<_, Infallible>(name) }))
//! });
//! let mut client = FailFastLayer::new(Duration::from_secs(3))
//!     .health(&peers)
//!     .layer(Balance::new(discover));
//!
//! // Peer b is ejected (here by hand; HealthLayer does it after too many failures): the
//! // discover takes it out of the balancer and nothing is sent to it.
//! handles[1].eject(Duration::from_secs(30));
//! for _ in 0..50 {
//!     assert_ne!(client.ready().await?.call(()).await?, "b");
//! }
//!
//! // Restored: the same service is inserted again and gets its share.
//! handles[1].restore();
//! let mut to_b = 0;
//! for _ in 0..50 {
//!     to_b += usize::from(client.ready().await?.call(()).await? == "b");
//! }
//! assert!(to_b > 0);
//!
//! // With every peer out, the balancer has nothing ready: after the wait, calls fail at once.
//! for peer in &handles {
//!     peer.eject(Duration::from_secs(30));
//! }
//! let error = client.ready().await?.call(()).await.unwrap_err();
//! assert!(error.downcast_ref::<NoHealthyPeers>().is_some());
//! # Ok(())
//! # }
//! ```
//!
//! # Composition
//!
//! ```text
//! FailFast(wait)             the one place that fails fast: NoHealthyPeers
//!   p2c Balance
//!     HealthDiscover         wakes on Peers::watch_health and one timer
//!       per peer:
//!       PenalizedPending     requests in flight + decaying failure penalty
//!         HealthLayer        Mode::Backpressure: an ejected peer is not ready
//!           timeout          so a black hole fails, and counts
//!             ReconnectLayer fail_fast(None): a peer that is down is not ready
//!               connector
//! ```
//!
//! Under a balancer, readiness is the signal: a peer that is down, backing off or ejected
//! should have a `poll_ready` that pends, so that the balancer sends elsewhere, not one that is
//! ready and fails calls, which would draw traffic to it. So:
//!
//! - give each peer's [`ReconnectLayer`](crate::reconnect::ReconnectLayer) `fail_fast(None)`,
//!   and leave failing fast to [`FailFast`] above the balancer;
//! - give each peer's [`HealthLayer`](crate::health::HealthLayer)
//!   [`Mode::Backpressure`](crate::health::Mode::Backpressure);
//! - put the request timeout inside the health layer, so that a peer that accepts requests and
//!   never answers is counted as failing and ejected.
//!
//! When an outlier ejection's time is over the discover puts the peer back for its probe, and
//! while it is there its [`Endpoint`] reports the lowest load: the probe goes out at once rather
//! than after the failure penalty that got the peer ejected has decayed. The health layer lets
//! only its probe slots through; a failed probe ejects the peer again and the discover takes it
//! out again.
//!
//! A retry layer goes above [`FailFast`]: a call that failed with [`NoHealthyPeers`] was sent
//! nowhere, so repeating it is safe.

mod builder;
mod discover;
mod endpoint;
mod fail_fast;
mod handle;
mod load;

pub use builder::HealthDiscoverBuilder;
pub use discover::HealthDiscover;
pub use endpoint::{Endpoint, EndpointFuture};
pub use fail_fast::{FailFast, FailFastFuture, FailFastLayer, NoHealthyPeers};
pub use handle::DiscoverHandle;
pub use load::{
    Cost, PenalizedFuture, PenalizedPending, PenalizedPendingBuilder, PenalizedPendingLayer,
};
