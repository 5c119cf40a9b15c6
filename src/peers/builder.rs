//! Configuring a [`Peers`] table.

use std::fmt;
use std::marker::PhantomData;

use super::{PeerKey, Peers};
use crate::backoff::Backoff;
use crate::error::{ConfigError, ConfigErrorKind};

/// The largest event buffer accepted; tokio's broadcast channel rejects absurd sizes.
const MAX_EVENT_CAPACITY: usize = 1 << 20;
/// The longest last-error text kept per peer. The buffer is reserved on a peer's first failure,
/// so this bounds what a table of failing peers can hold.
const MAX_ERROR_TEXT: usize = 4096;

/// Configures a [`Peers`] table; [`build`](PeersBuilder::build) validates it.
///
/// ```
/// use redial::backoff::Backoff;
/// use redial::peers::Peers;
///
/// # fn main() -> Result<(), redial::ConfigError> {
/// let peers: Peers<String> = Peers::builder()
///     .capacity(1_000)
///     .min_peers(2)
///     .backoff(Backoff::grpc())
///     .seed(7)
///     .build()?;
/// assert_eq!(peers.capacity(), 1_000);
/// # Ok(())
/// # }
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct PeersBuilder<K> {
    pub(crate) capacity: usize,
    pub(crate) min_peers: usize,
    pub(crate) backoff: Backoff,
    pub(crate) seed: Option<u64>,
    pub(crate) event_capacity: usize,
    pub(crate) error_text_limit: usize,
    key: PhantomData<fn() -> K>,
}

impl<K> Clone for PeersBuilder<K> {
    fn clone(&self) -> Self {
        Self { ..*self }
    }
}

impl<K> fmt::Debug for PeersBuilder<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeersBuilder")
            .field("capacity", &self.capacity)
            .field("min_peers", &self.min_peers)
            .field("backoff", &self.backoff)
            .field("seed", &self.seed)
            .field("event_capacity", &self.event_capacity)
            .field("error_text_limit", &self.error_text_limit)
            .finish()
    }
}

impl<K> Default for PeersBuilder<K> {
    fn default() -> Self {
        Self {
            capacity: 10_000,
            min_peers: 1,
            backoff: Backoff::default(),
            seed: None,
            event_capacity: 1024,
            error_text_limit: 256,
            key: PhantomData,
        }
    }
}

impl<K: PeerKey> PeersBuilder<K> {
    /// The most peers tracked at once (default 10 000). When full, an idle discovered peer that
    /// no layer holds is evicted to make room; if there is none, the new peer is refused with a
    /// [`CapacityError`](crate::CapacityError).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// How many connected peers make the table healthy (default 1); see
    /// [`HealthReport`](super::HealthReport). Zero means always healthy.
    pub fn min_peers(mut self, min_peers: usize) -> Self {
        self.min_peers = min_peers;
        self
    }

    /// The backoff policy every peer's connect schedule follows (default [`Backoff::default`]).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Seeds jitter: peer `n` (in order of first use) gets a schedule seeded from this seed and
    /// `n`, so a run with the same seed and the same order of events repeats its delays exactly.
    /// Without it, seeds are random. Overrides any seed set on the backoff policy.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// How many events the stream holds for a subscriber that falls behind (default 1024, at
    /// most 2^20). Older events are dropped for that subscriber, who is told how many.
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity;
        self
    }

    /// How many bytes of a peer's last error are kept (default 256, at most 4096).
    pub fn error_text_limit(mut self, bytes: usize) -> Self {
        self.error_text_limit = bytes;
        self
    }

    /// Checks the configuration and creates the table.
    pub fn build(self) -> Result<Peers<K>, ConfigError> {
        let err = |field, kind, detail: &str| Err(ConfigError::new("peers", field, kind, detail));
        if self.capacity == 0 {
            return err("capacity", ConfigErrorKind::Zero, "must be at least 1");
        }
        if self.min_peers > self.capacity {
            return err(
                "min_peers",
                ConfigErrorKind::Inconsistent,
                "is above `capacity`, so the table could never be healthy",
            );
        }
        if self.event_capacity == 0 {
            return err(
                "event_capacity",
                ConfigErrorKind::Zero,
                "must be at least 1",
            );
        }
        if self.event_capacity > MAX_EVENT_CAPACITY {
            return err(
                "event_capacity",
                ConfigErrorKind::TooLarge,
                "must be at most 1048576 events",
            );
        }
        if self.error_text_limit == 0 {
            return err(
                "error_text_limit",
                ConfigErrorKind::Zero,
                "must be at least 1 byte",
            );
        }
        if self.error_text_limit > MAX_ERROR_TEXT {
            return err(
                "error_text_limit",
                ConfigErrorKind::TooLarge,
                "must be at most 4096 bytes (each failing peer reserves that much)",
            );
        }
        Ok(Peers::from_builder(self))
    }
}
