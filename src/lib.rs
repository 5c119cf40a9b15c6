//! redial makes network clients survive the network.
//!
//! It is a set of [`tower`] building blocks that wrap any connector and add reconnection with
//! backoff, retries within budgets and per-peer health. All of them read and write one shared
//! per-peer state, [`Peers`](peers::Peers), so that what one layer learns about a peer (it
//! refused a connection, it answered, it was ejected) every other layer knows too, and so that a
//! whole process makes at most one connect attempt at a time to a peer that is down.
//!
//! - [`reconnect`]: [`ReconnectLayer`](reconnect::ReconnectLayer) keeps a connection up over any
//!   `MakeService`, following the peer's shared backoff, and
//!   [`ConnectLayer`](reconnect::connector::ConnectLayer) makes any connector (hyper-util,
//!   reqwest, tonic) reconnect the same way;
//! - [`retry`]: [`RetryLayer`](retry::RetryLayer) retries what is safe (transparently when
//!   nothing was sent), with backoff, server hints, a deadline and a retry budget shared by
//!   clones;
//! - [`backoff`]: validated backoff policies with a menu of jitter kinds, seedable, usable by
//!   tower's own retry middleware;
//! - [`peers`]: the shared per-peer state: a state machine per peer, counters, the single-flight
//!   connect gate, totals and a health report that never scan the table;
//! - [`event`]: a typed event stream, mirrored into `tracing`.
//!
//! The layers sit on the shared state; the state can also be driven by hand:
//!
//! ```
//! use std::time::Duration;
//! use redial::backoff::{Backoff, Jitter};
//! use redial::event::EventKind;
//! use redial::peers::{NextAttempt, PeerState, Peers};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let backoff = Backoff::builder()
//!     .initial(Duration::from_millis(100))
//!     .max(Duration::from_secs(2))
//!     .jitter(Jitter::None)
//!     .build()?;
//! let peers: Peers<&'static str> = Peers::builder().backoff(backoff).build()?;
//! let mut events = peers.subscribe();
//! let db = peers.add_static("db:5432")?;
//!
//! // The first probe fails: everyone connecting to db now waits 100 ms.
//! let probe = db.try_begin_attempt()?;
//! assert_eq!(probe.failed(&"connection refused"), NextAttempt::After(Duration::from_millis(100)));
//! assert_eq!(db.state(), PeerState::Backoff);
//!
//! tokio::time::sleep(Duration::from_millis(100)).await;
//! db.try_begin_attempt()?.succeeded();
//! assert_eq!(db.state(), PeerState::Connected);
//! assert!(peers.health().healthy);
//!
//! while let Some(event) = events.try_recv()? {
//!     if let EventKind::Connected { attempts, total } = event.kind {
//!         assert_eq!((attempts, total), (2, Duration::from_millis(100)));
//!     }
//! }
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod backoff;
pub mod classify;
mod error;
pub mod event;
pub mod health;
pub mod peers;
pub mod reconnect;
pub mod retry;
mod rng;
mod time;

pub use error::{CapacityError, ConfigError, ConfigErrorKind};

/// The README's quick start, compiled and run as a doctest so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
