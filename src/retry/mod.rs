//! Retrying requests safely: [`RetryLayer`] tries a failed request again when its classifier
//! says another attempt may help and is safe, within limits and a shared budget.
//!
//! - A [`Classify`] decides per outcome: [`Decision::DontRetry`], [`Decision::Retry`] (it
//!   may have reached the server; counts against `max_attempts`) or [`Decision::Transparent`]
//!   (it failed before any byte left, so it is safe for any request; the first
//!   `max_transparent` are free of `max_attempts`).
//! - Delays come from a [`Backoff`](crate::backoff::Backoff) schedule, or from the server's
//!   hint (`Retry-After`, `grpc-retry-pushback-ms`) clamped into the schedule's
//!   `[initial, max]`.
//! - The inner service is polled ready again before every retry.
//! - An optional overall `deadline` and per-attempt `attempt_timeout` bound the call.
//! - A [`Budget`] shared by every service of the layer keeps retries to a share of the traffic
//!   (20 % plus 10 per second by default), so a failing backend sees at most that much extra
//!   load.
//! - With a peer attached, every failed attempt, retry, refusal and budget exhaustion is
//!   counted in the peer's tracker and published as an [event](crate::event).
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::time::Duration;
//! use redial::peers::Peers;
//! use redial::retry::RetryLayer;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let peers: Peers<&'static str> = Peers::new();
//! let calls = Arc::new(AtomicU32::new(0));
//! let seen = calls.clone();
//! // Resets the connection twice, then answers.
//! let flaky = service_fn(move |request: &'static str| {
//!     let n = seen.fetch_add(1, Ordering::SeqCst);
//!     async move {
//!         if n < 2 {
//!             Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset))
//!         } else {
//!             Ok(format!("{request}: ok"))
//!         }
//!     }
//! });
//!
//! let client = ServiceBuilder::new()
//!     .layer(
//!         RetryLayer::builder()
//!             .max_attempts(3)
//!             .deadline(Duration::from_secs(1))
//!             .peer(peers.peer("api")?)
//!             .build()?,
//!     )
//!     .service(flaky);
//!
//! assert_eq!(client.oneshot("GET /").await?, "GET /: ok");
//! assert_eq!(calls.load(Ordering::SeqCst), 3);
//! assert_eq!(peers.get("api").map(|p| p.snapshot().retries), Some(2));
//! # Ok(())
//! # }
//! ```
//!
//! Errors are [`BoxError`](tower::BoxError)s: the inner service's, or redial's
//! [`AttemptTimedOut`] and [`DeadlineExceeded`], found with `downcast_ref`.
//!
//! The layer records failures and retries in the peer, not successes: a `ReconnectLayer`
//! below it records those per response. When such a layer records for the same peer, build
//! with [`record_errors(false)`](RetryBuilder::record_errors) so that an error is not counted
//! twice. Plain async code gets the same classifiers, budgets
//! and events through [`retry`], [`retry_tracked`] and [`Retrying`], which also record the
//! final success, since nothing else would.
//!
//! With feature `http`, [`http::HttpClassifier`] classifies by status and method and
//! [`http::ReplayBody`] makes streaming request bodies replayable; with feature `tonic`,
//! [`grpc::GrpcClassifier`] classifies by gRPC status code with `grpc-retry-pushback-ms`.

mod attempts;
mod budget;
mod builder;
mod classify;
mod error;
mod future;
mod helpers;
mod layer;
mod record;
mod service;
mod track;

pub use budget::{Budget, BudgetBuilder};
pub use builder::RetryBuilder;
pub use classify::{
    Classify, ClassifyFn, Decision, DefaultClassifier, Replay, classify_error, classify_fn,
};
pub use error::{AttemptTimedOut, DeadlineExceeded};
pub use future::ResponseFuture;
pub use helpers::{Retrying, retry, retry_tracked};
pub use layer::RetryLayer;
pub use service::Retry;
pub use track::{ByRequest, NoPeer, TrackPeer};

#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
pub mod grpc;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
