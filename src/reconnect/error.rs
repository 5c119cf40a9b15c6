//! The typed errors a reconnecting service or connector fails calls with.
//!
//! Every error here travels as a [`BoxError`](tower::BoxError) and can be told apart with
//! `downcast_ref`, so callers (and redial's retry layer) can see that no byte left the process.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::peers::{PeerHandle, PeerKey};

/// The peer has been unreachable for longer than the fail-fast window, so the call failed at
/// once instead of waiting. Nothing was sent: the call is safe to retry, on this peer later or
/// on another one now.
///
/// Reconnection goes on meanwhile; the service turns back to normal as soon as a connection is
/// up. Raise `fail_fast` (or set it to `None`) to wait longer instead.
#[derive(Debug, Clone)]
pub struct Unavailable {
    pub(crate) peer: Arc<str>,
    pub(crate) down_for: Duration,
    pub(crate) last_error: Option<Arc<str>>,
    pub(crate) next_attempt_in: Option<Duration>,
}

impl Unavailable {
    /// The error for `peer` (printed as `label`), unreachable since `since`.
    pub(crate) fn of<K: PeerKey>(peer: &PeerHandle<K>, label: Arc<str>, since: Instant) -> Self {
        let now = Instant::now();
        Self {
            peer: label,
            down_for: now.saturating_duration_since(since),
            last_error: peer.last_error(),
            next_attempt_in: peer
                .next_attempt_at()
                .map(|at| at.saturating_duration_since(now))
                .filter(|d| !d.is_zero()),
        }
    }

    /// The peer, as its key prints with `{:?}`.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// How long this service or call has been without a connection.
    pub fn down_for(&self) -> Duration {
        self.down_for
    }

    /// The last connect error recorded for the peer, if any.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// How long until the peer's backoff allows the next connect attempt; `None` when an
    /// attempt may start now or is under way.
    pub fn next_attempt_in(&self) -> Option<Duration> {
        self.next_attempt_in
    }
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "peer {} unavailable for {:?}, failing fast",
            self.peer, self.down_for
        )?;
        if let Some(error) = &self.last_error {
            write!(f, "; last error: {error}")?;
        }
        if let Some(next) = self.next_attempt_in {
            write!(f, "; next connect attempt in {next:?}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Unavailable {}

/// The backoff policy's attempt or time limit for the peer is used up: no more connect attempts
/// until the peer is reset (by [`PeerHandle::reset`](crate::peers::PeerHandle::reset), the
/// service's `reset`, or a configured cool-down). Nothing was sent.
#[derive(Debug, Clone)]
pub struct Exhausted {
    pub(crate) peer: Arc<str>,
    pub(crate) last_error: Option<Arc<str>>,
}

impl Exhausted {
    /// The error for `peer` (printed as `label`).
    pub(crate) fn of<K: PeerKey>(peer: &PeerHandle<K>, label: Arc<str>) -> Self {
        Self {
            peer: label,
            last_error: peer.last_error(),
        }
    }

    /// The peer, as its key prints with `{:?}`.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// The last connect error recorded for the peer, if any.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }
}

impl fmt::Display for Exhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "connect attempts to peer {} are exhausted", self.peer)?;
        if let Some(error) = &self.last_error {
            write!(f, " (last error: {error})")?;
        }
        f.write_str("; reset the peer or configure a cool-down to try again")
    }
}

impl std::error::Error for Exhausted {}

/// A connect attempt took longer than the configured connect timeout. It counts as a failed
/// attempt, so the peer backs off like after any other failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectTimeout {
    pub(crate) after: Duration,
}

impl ConnectTimeout {
    /// The timeout that was reached.
    pub fn after(&self) -> Duration {
        self.after
    }
}

impl fmt::Display for ConnectTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "connect attempt timed out after {:?}", self.after)
    }
}

impl std::error::Error for ConnectTimeout {}

/// `call` came without a `poll_ready` that returned `Ready(Ok(()))` just before it, which the
/// tower contract forbids. Poll the service ready first (for example with
/// `tower::ServiceExt::ready`) before each call; a clone is never ready until polled itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NotReady;

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "service called before poll_ready returned Ready(Ok); poll it ready before each call",
        )
    }
}

impl std::error::Error for NotReady {}
