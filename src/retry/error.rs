//! The errors the retry layer adds to those of the service it wraps.

use std::fmt;
use std::time::Duration;

/// One attempt took longer than the layer's `attempt_timeout` and was abandoned. The
/// [`DefaultClassifier`](super::DefaultClassifier) retries it; the HTTP classifier only for
/// idempotent requests, since the server may have acted on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptTimedOut {
    pub(crate) after: Duration,
}

impl AttemptTimedOut {
    /// The attempt timeout that elapsed.
    pub fn after(&self) -> Duration {
        self.after
    }
}

impl fmt::Display for AttemptTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "attempt timed out after {:?}; raise `attempt_timeout` if the server is just slow",
            self.after
        )
    }
}

impl std::error::Error for AttemptTimedOut {}

/// The call's overall `deadline` passed while an attempt was in flight or the service was not
/// ready; the attempt was abandoned. (A retry that would only start after the deadline is not
/// made: the caller gets the last outcome instead of this error.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadlineExceeded {
    pub(crate) deadline: Duration,
    pub(crate) attempts: u32,
}

impl DeadlineExceeded {
    /// The deadline that passed, measured from the call.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Attempts started before it passed, transparent ones included.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "retry deadline of {:?} passed after {} attempt(s)",
            self.deadline, self.attempts
        )
    }
}

impl std::error::Error for DeadlineExceeded {}
