//! Active health checks: probe each peer on a schedule, and take it out of use while it fails.
//!
//! A [`Checker`] runs a [`HealthCheck`] against every peer it watches, every `interval`
//! (jittered), under a `timeout`. After `unhealthy_threshold` failures in a row (a timeout is
//! a failure) it ejects the peer in the shared [`Peers`](crate::peers::Peers) state, so every
//! layer and the balancer stop using it; after `healthy_threshold` successes in a row it
//! restores it. The checker runs as a future that you spawn, and stops when its handle is
//! dropped:
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicBool, Ordering};
//! use std::time::Duration;
//! use redial::health::check::{CheckStatus, Checker, check_fn};
//! use redial::peers::{PeerState, Peers};
//! use tokio::time::Instant;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let peers: Peers<&'static str> = Peers::new();
//! let serving = Arc::new(AtomicBool::new(true));
//! let answers = serving.clone();
//! // Any async probe: here, whether the peer "answers".
//! let check = check_fn(move |_peer: &'static str| {
//!     let up = answers.load(Ordering::SeqCst);
//!     async move { if up { Ok(()) } else { Err("no answer") } }
//! });
//!
//! let (task, checker) = Checker::builder(check)
//!     .interval(Duration::from_secs(1))
//!     .jitter(0.0) // an exact schedule, for the example
//!     .build([peers.peer("db")?])?;
//! let running = tokio::spawn(task);
//! let mut health = peers.watch_health();
//!
//! // The peer stops answering: three failed checks, one a second, and it is ejected.
//! let start = Instant::now();
//! serving.store(false, Ordering::SeqCst);
//! health.wait_for(|report| report.failed == 1).await?;
//! assert_eq!(start.elapsed(), Duration::from_secs(3));
//! assert_eq!(peers.peers_in(PeerState::Ejected), ["db"]);
//! assert_eq!(checker.status(&"db").map(|s| s.status), Some(CheckStatus::Down));
//!
//! // It answers again: two good checks bring it back.
//! serving.store(true, Ordering::SeqCst);
//! health.wait_for(|report| report.failed == 0).await?;
//! assert_eq!(start.elapsed(), Duration::from_secs(5));
//! assert_eq!(checker.status(&"db").map(|s| s.status), Some(CheckStatus::Up));
//!
//! // Dropping the (last) handle ends the task.
//! drop(checker);
//! running.await?;
//! # Ok(())
//! # }
//! ```
//!
//! - Checks: [`check_fn`] makes one of an async closure; [`TcpCheck`] connects and hangs up;
//!   with feature `tonic`, `GrpcCheck` asks the peer's `grpc.health.v1` service.
//! - All peers are checked concurrently inside the one task, each on its own schedule: a check
//!   that hangs delays no other peer's. Peers are added and removed at run time through the
//!   [`CheckerHandle`], which also [reports](CheckerHandle::status) each peer's checks.
//! - The shared state changes only on a transition, not on every check. A peer that passive
//!   health ejected (an outlier) stays ejected while its checks pass; when its checks go from
//!   down to up, it is restored (as Envoy does). A peer ejected or forced closed by hand is
//!   left as it is.
//! - An ejection by check ends only by check: when a peer is removed from the checker, or the
//!   checker stops, a peer its checks ejected is restored and handed back to passive health.
//! - Each failed check is logged at `debug`, each transition at `info` (with `tracing`); the
//!   peer's own [events](crate::event) report the ejection and the restore, and
//!   [`Peers::watch_health`](crate::peers::Peers::watch_health) fires as its counts change.

mod builder;
#[cfg(feature = "tonic")]
mod grpc;
mod probe;
mod run;
mod set;
mod task;
mod tcp;
mod verdict;

pub use builder::{Checker, CheckerBuilder};
#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
pub use grpc::{GrpcCheck, NotServing};
pub use probe::{CheckFn, CheckTimedOut, HealthCheck, check_fn};
pub use task::{CheckerHandle, CheckerTask};
pub use tcp::TcpCheck;
pub use verdict::{CheckReport, CheckStatus};
