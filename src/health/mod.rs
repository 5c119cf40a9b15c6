//! Per-peer health: outlier ejection and circuit breaking, active checks, and balancing that
//! never loses a peer.
//!
//! [`HealthLayer`] is passive health for one peer: it watches the outcomes of the requests it
//! lets through, ejects the peer when too many fail, and then lets exactly as many *probe*
//! requests through as the policy says once the ejection's time is over. A successful probe
//! restores the peer; a failed one ejects it again, for longer.
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicBool, Ordering};
//! use std::time::Duration;
//! use redial::health::{HealthError, HealthLayer, HealthPolicy};
//! use redial::peers::{PeerState, Peers};
//! use tower::{Layer, Service, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let peers: Peers<&'static str> = Peers::new();
//! let policy = HealthPolicy::builder()
//!     .consecutive_failures(Some(3))
//!     .base_ejection(Duration::from_secs(10))
//!     .jitter(0.0)
//!     .build()?;
//! let api = peers.peer("api")?;
//!
//! // A backend that resets every connection until it is `up`.
//! let up = Arc::new(AtomicBool::new(false));
//! let switch = up.clone();
//! let backend = service_fn(move |request: u32| {
//!     let up = switch.load(Ordering::SeqCst);
//!     async move {
//!         match up {
//!             true => Ok(request),
//!             false => Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
//!         }
//!     }
//! });
//! let mut client = HealthLayer::new(api.clone(), policy).layer(backend);
//!
//! // Three failures in a row eject the peer, for 10 s.
//! for _ in 0..3 {
//!     let error = client.ready().await?.call(1).await.unwrap_err();
//!     assert!(matches!(error, HealthError::Inner(_)));
//! }
//! assert_eq!(api.state(), PeerState::Ejected);
//!
//! // Meanwhile calls fail at once, without reaching the backend, and say why.
//! let error = client.ready().await?.call(2).await.unwrap_err();
//! let refused = error.ejected().expect("the peer is ejected");
//! assert_eq!(refused.peer(), "\"api\"");
//! println!("{refused}"); // ... may be probed again in 10s: send the request to another peer ...
//!
//! // Once the 10 s are over one probe goes through; it succeeds and the peer is back.
//! up.store(true, Ordering::SeqCst);
//! tokio::time::sleep(Duration::from_secs(10)).await;
//! assert_eq!(client.ready().await?.call(3).await?, 3);
//! assert_ne!(api.state(), PeerState::Ejected);
//! # Ok(())
//! # }
//! ```
//!
//! # What the layer does
//!
//! - **Trips** after [`consecutive_failures`](HealthPolicyBuilder::consecutive_failures)
//!   failures in a row (default 5), or, when [`success_rate`](HealthPolicyBuilder::success_rate)
//!   is set, when the share of successes over a window falls under a threshold with enough
//!   requests in it. What counts as a failure is the policy's classifier
//!   ([`Classify::is_failure`](crate::classify::Classify::is_failure), the trait retry's
//!   classifiers implement); by default every error is one.
//! - **Ejects** the peer for `base × n`, jittered and capped (see [`HealthPolicy`] for the rule),
//!   in the shared [`Peers`](crate::peers::Peers) table: the peer's state becomes
//!   [`Ejected`](crate::peers::PeerState::Ejected) and an
//!   [`Ejected`](crate::event::EventKind::Ejected) event is emitted; its restore emits
//!   [`Restored`](crate::event::EventKind::Restored).
//! - **Checks before polling**: `poll_ready` asks the peer first and polls the inner service
//!   only if the request may go. [`Mode::Reject`] (the default) makes calls to an ejected peer
//!   fail at once with [`HealthError::Ejected`]; [`Mode::Backpressure`] holds `poll_ready`
//!   pending until the peer may take a request again.
//! - **Probes**: once an ejection's time is over, [`probes`](HealthPolicyBuilder::probes)
//!   requests (default 1) are let through, reserved atomically across every service, clone and
//!   layer of the peer; the others keep being refused or held. A probe slot is freed if its
//!   call never comes or its future is dropped.
//! - **Panic guard**: never more than
//!   [`max_ejection_percent`](HealthPolicyBuilder::max_ejection_percent) of the table's peers
//!   ejected at once (default 50 %); an ejection held back emits
//!   [`EjectionSkipped`](crate::event::EventKind::EjectionSkipped).
//!   [`shadow`](HealthPolicyBuilder::shadow) mode ejects nothing and reports every would-be
//!   ejection the same way.
//! - **By hand**: [`PeerHandle::set_override`](crate::peers::PeerHandle::set_override) forces a
//!   peer open (out of use), closed (in use whatever health says), or back to automatic.
//!
//! The layer keeps its own count of failures, in the peer (its run of failures in a row,
//! shared by every layer and clone that guards the peer) and in the layer (the success-rate
//! window). It does not add to the peer's general success and failure counters: the reconnect
//! and retry layers record those, and counting them again would count each outcome twice.
//!
//! # Where it goes in a stack
//!
//! Below retry and the balancer, above the per-attempt timeout and reconnect:
//!
//! ```text
//! RetryLayer            retries a refused call elsewhere: `Ejected` is a transparent retry
//!   balance (p2c)       picks among peers; with Mode::Backpressure an ejected peer is not ready
//!     HealthLayer       one per peer
//!       TimeoutLayer    so a black-holed peer times out, and the layer sees it as a failure
//!         ReconnectLayer
//! ```
//!
//! Above a timeout, a peer that accepts requests and never answers (a black hole) fails each
//! request after the timeout, and `consecutive_failures` of those eject it. Under a balancer,
//! use [`Mode::Backpressure`]: the balancer then sees an ejected peer as not ready and sends
//! requests to the others, while a probe still reaches the ejected one when its time is over.
//! In front of a single peer, [`Mode::Reject`] tells the caller at once.
//!
//! # Cost
//!
//! On the happy path (the peer is in use, the call succeeds) a call allocates nothing and takes
//! no lock: admission reads one atomic, and a success clears the failure run only if there is
//! one. The success-rate window, when configured, adds a clock read and a compare-and-swap per
//! call; it is a ring of ten time buckets updated without a lock. Refusing a call in
//! [`Mode::Reject`] allocates nothing either (the peer's name is formatted once, when the layer
//! is made). `BENCHMARKS.md` has the figures.

mod error;
mod future;
mod layer;
mod policy;
mod service;
mod window;

pub mod balance;
pub mod check;

pub(crate) use error::is_refusal;
pub use error::{Ejected, HealthError};
pub use future::ResponseFuture;
pub use layer::HealthLayer;
pub use policy::{HealthPolicy, HealthPolicyBuilder, Mode, SuccessRate};
pub use service::Health;
