//! What the connector gives back once a connection is up: the IO wrapped so that redial sees
//! the connection's life, or the IO untouched.

use std::time::Duration;

use super::io::TrackedIo;
use crate::peers::{Attempt, PeerKey};

mod sealed {
    pub trait Sealed {}
}

/// How a [`Connect`](super::Connect) service hands a new connection over. Implemented by
/// [`Tracked`] and [`Detached`] only.
pub trait Handoff<K: PeerKey, IO>: sealed::Sealed {
    /// What the connector returns.
    type Output;

    #[doc(hidden)]
    fn hand_over(attempt: Attempt<K>, io: IO, stable_after: Duration) -> Self::Output;
}

/// The default: the connection comes back wrapped in a [`TrackedIo`], which reports to the
/// peer's tracker when the connection first receives bytes (proof that the peer works) and when
/// it ends (flapping if it ends before any proof). Connect targets must be `Clone`, so that a
/// failed attempt can be retried within the same call.
#[derive(Debug, Clone, Copy)]
pub enum Tracked {}

/// The connection comes back untouched, for clients that need their own connection type back
/// (reqwest's `connector_layer` wants its `Conn`). redial cannot watch the connection, so the
/// connect itself is taken as proof ([`Attempt::handed_off`]); and since such targets usually
/// cannot be cloned either, each call makes at most one connect attempt (after waiting its turn
/// at the peer's single-flight gate). With no open connection to count, the gate lets one
/// connect through at a time even to a healthy peer: a burst of new connections is made one
/// after another.
#[derive(Debug, Clone, Copy)]
pub enum Detached {}

impl sealed::Sealed for Tracked {}
impl sealed::Sealed for Detached {}

impl<K: PeerKey, IO> Handoff<K, IO> for Tracked {
    type Output = TrackedIo<IO, K>;

    fn hand_over(attempt: Attempt<K>, io: IO, stable_after: Duration) -> Self::Output {
        let peer = attempt.peer().clone();
        attempt.succeeded();
        TrackedIo::new(io, peer, stable_after)
    }
}

impl<K: PeerKey, IO> Handoff<K, IO> for Detached {
    type Output = IO;

    fn hand_over(attempt: Attempt<K>, io: IO, _: Duration) -> IO {
        attempt.handed_off();
        io
    }
}
