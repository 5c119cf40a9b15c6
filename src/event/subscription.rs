//! The receiving side of the event stream.

use std::fmt;

use tokio::sync::broadcast;

use super::Event;

/// A subscriber's view of the event stream, from [`Peers::subscribe`](crate::peers::Peers::subscribe).
///
/// Sees every event published after it was created, as long as it keeps up: the stream holds
/// the last `event_capacity` events (see
/// [`PeersBuilder::event_capacity`](crate::peers::PeersBuilder::event_capacity)), and a
/// subscriber further behind than that skips to the oldest one still held and is told how many it
/// missed. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription<K> {
    rx: broadcast::Receiver<Event<K>>,
}

/// Why [`Subscription::recv`] returned no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvError {
    /// The subscriber fell behind and this many events were dropped for it. The next call
    /// returns the oldest event still held.
    Lagged(u64),
    /// The [`Peers`](crate::peers::Peers) that published the stream is gone; no more events.
    Closed,
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvError::Lagged(n) => write!(f, "event subscriber fell behind and missed {n} events"),
            RecvError::Closed => f.write_str("event stream closed: the peer table was dropped"),
        }
    }
}

impl std::error::Error for RecvError {}

impl<K: Clone> Subscription<K> {
    pub(crate) fn new(rx: broadcast::Receiver<Event<K>>) -> Self {
        Self { rx }
    }

    /// Waits for the next event.
    pub async fn recv(&mut self) -> Result<Event<K>, RecvError> {
        self.rx.recv().await.map_err(|e| match e {
            broadcast::error::RecvError::Lagged(n) => RecvError::Lagged(n),
            broadcast::error::RecvError::Closed => RecvError::Closed,
        })
    }

    /// The next event if one is waiting, `Ok(None)` if none is.
    pub fn try_recv(&mut self) -> Result<Option<Event<K>>, RecvError> {
        match self.rx.try_recv() {
            Ok(event) => Ok(Some(event)),
            Err(broadcast::error::TryRecvError::Empty) => Ok(None),
            Err(broadcast::error::TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
            Err(broadcast::error::TryRecvError::Closed) => Err(RecvError::Closed),
        }
    }
}
