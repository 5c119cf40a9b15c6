//! Handing a connect attempt over within a family: a service and its clones.
//!
//! A service past its fail-fast window turns ready to fail calls at once, yet it may hold the
//! peer's probe, the one attempt the process makes while the peer is down. Once its caller has
//! the `Unavailable` error, nothing says that service will be polled again soon: tower's `Retry`,
//! for one, retries on a *clone*, and the clone would wait at the peer's gate for a probe that
//! nobody drives, until the probe's deadline. So the service leaves the attempt here, and the
//! next member of the family to poll (the clone, or the service itself) takes it and drives it.
//!
//! Services made separately by the layer are separate families: they meet only at the peer's
//! gate, which hands an undriven probe to them at its deadline.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::time::Instant;

use crate::peers::{Attempt, PeerKey};

/// A connect attempt under way: the gate's grant, the connector's future, and its deadline.
pub(super) struct ConnectAttempt<F, K: PeerKey> {
    pub(super) attempt: Attempt<K>,
    /// `None` until the connector is ready to be called.
    pub(super) future: Option<Pin<Box<F>>>,
    pub(super) deadline: Instant,
}

/// The one place a family keeps an attempt that its owner stopped driving.
pub(super) struct Handover<F, K: PeerKey> {
    left: Arc<Mutex<Option<ConnectAttempt<F, K>>>>,
}

impl<F, K: PeerKey> Handover<F, K> {
    pub(super) fn new() -> Self {
        Self {
            left: Arc::new(Mutex::new(None)),
        }
    }

    /// The same place, for a clone.
    pub(super) fn share(&self) -> Self {
        Self {
            left: Arc::clone(&self.left),
        }
    }

    /// Leaves an attempt for the next member of the family that polls, and wakes the tasks
    /// waiting at the peer's gate so that one of them can take it. Gives the attempt back if
    /// another one is waiting here already.
    pub(super) fn leave(&self, attempt: ConnectAttempt<F, K>) -> Result<(), ConnectAttempt<F, K>> {
        let peer = attempt.attempt.peer().clone();
        {
            let mut left = self.left.lock().unwrap_or_else(PoisonError::into_inner);
            if left.is_some() {
                return Err(attempt);
            }
            *left = Some(attempt);
        }
        peer.wake_attempt_waiters();
        Ok(())
    }

    /// Whether another member of the family shares this place.
    pub(super) fn is_shared(&self) -> bool {
        Arc::strong_count(&self.left) > 1
    }

    /// Takes the attempt left here, if any.
    pub(super) fn take(&self) -> Option<ConnectAttempt<F, K>> {
        self.left
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}
