//! One open connection's bookkeeping: closing it in the peer's tracker exactly once, however
//! it ends, and deciding whether its life was proof enough to reset the peer's backoff.

use std::fmt::Display;
use std::time::Duration;

use tokio::time::Instant;

use crate::peers::{PeerHandle, PeerKey};

/// Counts one open connection in the peer's tracker until [`close`](Self::close) or drop.
///
/// A connection that stayed up for `stable_after` is proof that the peer works (DESIGN §3.3),
/// even if no response said so; one that closes sooner without an answer is flapping, and the
/// tracker keeps the peer's schedule growing.
#[derive(Debug)]
pub(crate) struct OpenConnection<K: PeerKey> {
    peer: PeerHandle<K>,
    opened: Instant,
    stable_after: Duration,
    proven: bool,
    closed: bool,
}

impl<K: PeerKey> OpenConnection<K> {
    /// Call right after the attempt that opened the connection `succeeded`.
    pub(crate) fn new(peer: PeerHandle<K>, stable_after: Duration) -> Self {
        Self {
            peer,
            opened: Instant::now(),
            stable_after,
            proven: false,
            closed: false,
        }
    }

    pub(crate) fn peer(&self) -> &PeerHandle<K> {
        &self.peer
    }

    /// Marks the peer proven once the connection has been up for `stable_after`. Cheap once the
    /// peer is proven: no clock read, no lock.
    pub(crate) fn check_stable(&mut self) {
        self.check_uptime(|opened| opened.elapsed());
    }

    /// Like [`check_stable`](Self::check_stable), for a connection known to have been up until
    /// `until` (when a call on it found it broken): one that broke after `stable_after` of
    /// uptime proved the peer, even if nobody polled it meanwhile.
    pub(crate) fn check_stable_until(&mut self, until: Instant) {
        self.check_uptime(|opened| until.saturating_duration_since(opened));
    }

    fn check_uptime(&mut self, uptime: impl FnOnce(Instant) -> Duration) {
        if self.proven {
            return;
        }
        if !self.peer.needs_proof() {
            self.proven = true;
        } else if uptime(self.opened) >= self.stable_after {
            self.peer.mark_proven();
            self.proven = true;
        }
    }

    /// The peer answered on this connection: counts a success, which is also the proof that
    /// resets its backoff. Only the first answer counts: a connection cannot tell one response
    /// from the next.
    pub(crate) fn answered(&mut self) {
        if !self.proven {
            self.proven = true;
            self.peer.record_success();
        }
    }

    /// Reports the end of the connection, with the error if it broke. Later calls and the drop
    /// do nothing.
    pub(crate) fn close(&mut self, error: Option<&dyn Display>) {
        if self.closed {
            return;
        }
        self.closed = true;
        if error.is_none() {
            self.check_stable();
        }
        self.peer.connection_closed(error);
    }
}

impl<K: PeerKey> Drop for OpenConnection<K> {
    fn drop(&mut self) {
        self.close(None);
    }
}
