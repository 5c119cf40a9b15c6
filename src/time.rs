//! Instants computed from user-supplied durations.

use std::time::Duration;

use tokio::time::Instant;

/// `now + delay`, saturating at a far future instead of overflowing `Instant` (which panics):
/// delays come from configuration and server hints, and may be absurd.
pub(crate) fn deadline(now: Instant, delay: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(60 * 60 * 24 * 365 * 30);
    now.checked_add(delay).unwrap_or_else(|| now + FAR)
}
