//! A connect attempt, reserved through the peer's single-flight gate.

use std::fmt::{self, Display};
use std::time::Duration;

use tokio::time::Instant;

use super::ops::Ticket;
use super::{PeerHandle, PeerKey};

/// A connect attempt granted by [`PeerHandle::try_begin_attempt`].
///
/// Report how it went with [`succeeded`](Attempt::succeeded) or [`failed`](Attempt::failed).
/// Dropping it without either gives the slot back at once: the peer returns to where it was and
/// tasks waiting on the attempt are woken, so a cancelled probe never blocks the peer.
///
/// A drop means "the caller lost interest", not "the peer failed": it neither counts a failure
/// nor steps the backoff schedule. A connect that timed out is a failure; report it with
/// [`failed`](Attempt::failed), or an outer timeout that drops the attempt will re-probe a
/// black-holed peer at every timeout, without backing off.
#[must_use = "dropping an attempt without reporting its outcome cancels it"]
#[derive(Debug)]
pub struct Attempt<K: PeerKey> {
    handle: PeerHandle<K>,
    number: u32,
    ticket: Ticket,
    finished: bool,
}

/// What the peer's schedule says after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextAttempt {
    /// The next attempt is allowed after this delay.
    After(Duration),
    /// The policy's attempt or time limit is used up; no attempt until a reset.
    Exhausted,
}

/// Why [`PeerHandle::try_begin_attempt`] did not grant an attempt now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttemptDenied {
    /// Another task's probe of this peer is under way; wait for it with
    /// [`PeerHandle::poll_attempt_finished`].
    InFlight,
    /// The peer is in backoff; the next attempt is allowed at `until`. Nothing wakes a task
    /// at that instant: arm a timer (a proof or a reset may open the gate earlier).
    Backoff {
        /// When the next attempt is allowed.
        until: Instant,
    },
    /// The attempt limit is used up; [`PeerHandle::reset`] allows attempts again.
    Exhausted,
}

impl Display for AttemptDenied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttemptDenied::InFlight => {
                f.write_str("another connect attempt to this peer is under way")
            }
            AttemptDenied::Backoff { until } => write!(
                f,
                "peer is in backoff for another {:?}",
                until.saturating_duration_since(Instant::now())
            ),
            AttemptDenied::Exhausted => f.write_str("connect attempts to this peer are exhausted"),
        }
    }
}

impl std::error::Error for AttemptDenied {}

impl<K: PeerKey> Attempt<K> {
    pub(crate) fn new(handle: PeerHandle<K>, number: u32, ticket: Ticket) -> Self {
        Self {
            handle,
            number,
            ticket,
            finished: false,
        }
    }

    /// 1-based number of this attempt since the peer last proved healthy.
    pub fn number(&self) -> u32 {
        self.number
    }

    /// Whether this is the probe: the one attempt allowed while no connection to the peer is up.
    pub fn is_probe(&self) -> bool {
        self.ticket.probe
    }

    /// The peer this attempt is for.
    pub fn peer(&self) -> &PeerHandle<K> {
        &self.handle
    }

    /// The connection is up. The peer becomes connected; its backoff schedule is *not* reset
    /// until the peer proves itself ([`PeerHandle::record_success`] or
    /// [`PeerHandle::mark_proven`]), so a peer that accepts and drops keeps backing off.
    /// Report the connection's end with [`PeerHandle::connection_closed`].
    pub fn succeeded(mut self) {
        self.handle
            .shared
            .attempt_connected(&self.handle.tracker, self.number, self.ticket, true);
        // Only now: should the bookkeeping above unwind, `Drop` still releases the gate.
        self.finished = true;
    }

    /// The connection is up and is being handed to code that will not report its end (a pool
    /// redial cannot see into, such as reqwest's). With no way to tell a flapping connection
    /// from a good one, the connect itself is taken as proof: the schedule is reset and the peer
    /// returns to `Idle` rather than staying `Connected`, since no open connection is counted.
    ///
    /// Prefer [`succeeded`](Attempt::succeeded) with [`PeerHandle::connection_closed`] wherever
    /// the connection's life can be watched.
    pub fn handed_off(mut self) {
        self.handle
            .shared
            .attempt_connected(&self.handle.tracker, self.number, self.ticket, false);
        self.finished = true;
    }

    /// The attempt failed with `error`. Counts a failure and marks the peer suspect, so that
    /// attempts go one at a time until a probe succeeds.
    ///
    /// A probe's failure steps the peer's schedule and returns its delay. Any other attempt
    /// (one granted while connections were up) does not step it: the returned delay is what is
    /// left of the current backoff, often zero, and the next attempt will be a probe.
    pub fn failed(mut self, error: &dyn Display) -> NextAttempt {
        let next = self.handle.shared.attempt_failed(
            &self.handle.tracker,
            self.number,
            self.ticket,
            error,
        );
        // Only now: should the error's `Display` panic, `Drop` still releases the gate.
        self.finished = true;
        next
    }
}

impl<K: PeerKey> Drop for Attempt<K> {
    fn drop(&mut self) {
        if !self.finished {
            self.handle
                .shared
                .attempt_cancelled(&self.handle.tracker, self.ticket);
        }
    }
}
