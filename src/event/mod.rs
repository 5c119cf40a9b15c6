//! The typed event stream: everything that happens to a peer, as it happens.
//!
//! Every state change and every decision (an attempt starts, a delay is chosen, a peer is
//! ejected, a retry budget runs dry) is published once, from the place where it happens, to two
//! sinks: a [`tracing`] event with structured fields, and the [`Subscription`]s handed out by
//! [`Peers::subscribe`](crate::peers::Peers::subscribe).
//!
//! ```
//! use redial::event::EventKind;
//! use redial::peers::Peers;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let peers: Peers<&'static str> = Peers::new();
//! let mut events = peers.subscribe();
//!
//! let db = peers.peer("db")?;
//! let attempt = db.try_begin_attempt().expect("a new peer may be tried at once");
//! attempt.succeeded();
//!
//! let first = events.recv().await?;
//! assert_eq!(first.peer, "db");
//! assert!(matches!(first.kind, EventKind::AttemptStarted { attempt: 1, .. }));
//! # Ok(())
//! # }
//! ```
//!
//! A subscriber that falls behind loses the oldest events and is told how many
//! ([`RecvError::Lagged`]); it never slows down or blocks the code that records them.
//!
//! Levels of the tracing events: `debug` for attempts, waits and scheduled retries, `info` for
//! transitions (connected, disconnected, ejected, restored, state changed), `warn` for exhaustion
//! of attempts or of a retry budget.

mod kind;
mod publish;
mod subscription;

use tokio::time::Instant;

pub use kind::{EventKind, NotRetriedReason, SkipReason, WaitReason};
pub(crate) use publish::Publisher;
pub use subscription::{RecvError, Subscription};

/// One thing that happened to one peer.
#[derive(Debug, Clone, PartialEq)]
pub struct Event<K> {
    /// The peer it happened to.
    pub peer: K,
    /// When it happened (tokio time, so paused tests see virtual instants).
    pub at: Instant,
    /// What happened.
    pub kind: EventKind,
}
