//! A peer's outcome counters: what every request touches, kept in one cache line, lock-free.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::Instant;

/// Successes, failures and their time stamps, updated without the peer's lock.
///
/// Recording an outcome is the one thing every request does, so its cost must not grow with the
/// number of peers. With a hundred thousand peers almost every record meets a cold peer, and
/// the cost is the cache lines it touches; this struct is aligned to, and fits in, one line.
/// The rest of the tracker (state machine, schedule, last error) stays behind the lock.
#[derive(Debug, Default)]
#[repr(C, align(64))]
pub(crate) struct Outcomes {
    successes: AtomicU64,
    failures: AtomicU64,
    /// Nanoseconds since the table's epoch, plus one; zero for never.
    last_success: AtomicU64,
    last_failure: AtomicU64,
    consecutive_failures: AtomicU32,
    /// A success has work to do under the lock: the peer failed, is suspect or has an unproven
    /// connection, so the success is the proof that resets its schedule. Set, conservatively, by
    /// every locked operation that creates such work, cleared only by the proof itself.
    unsettled: AtomicBool,
    /// Failures in a row as the health layer judges them (its classifier, not every error the
    /// other layers count), for its consecutive-failure trigger.
    health_failures: AtomicU32,
    /// Mirrors "an ejection is in effect", so that admitting a request to a healthy peer reads
    /// one atomic and takes no lock.
    ejected: AtomicBool,
    /// The peer was forgotten: its handles no longer count in the table's totals nor touch its
    /// index. Set under the peer's lock, so locked code reads it consistently too.
    detached: AtomicBool,
}

/// A time stamp, as stored: nanoseconds since `epoch` plus one, so zero can mean "never".
pub(crate) fn stamp(epoch: Instant, at: Instant) -> u64 {
    let nanos = at.saturating_duration_since(epoch).as_nanos();
    u64::try_from(nanos)
        .unwrap_or(u64::MAX - 1)
        .saturating_add(1)
}

pub(crate) fn unstamp(epoch: Instant, stamp: u64) -> Option<Instant> {
    let nanos = stamp.checked_sub(1)?;
    epoch.checked_add(Duration::from_nanos(nanos))
}

impl Outcomes {
    /// Counts a success; returns whether the slow path (the proof) has work to do.
    pub(crate) fn success(&self, stamp: u64) -> bool {
        self.successes.fetch_add(1, Relaxed);
        self.consecutive_failures.store(0, Relaxed);
        self.last_success.store(stamp, Relaxed);
        self.unsettled.load(Relaxed)
    }

    pub(crate) fn failure(&self, stamp: u64) {
        self.failures.fetch_add(1, Relaxed);
        // `fetch_update` with a saturating add: a peer failing for years must not wrap to zero.
        let _ = self
            .consecutive_failures
            .fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_add(1)));
        self.last_failure.store(stamp, Relaxed);
    }

    pub(crate) fn set_unsettled(&self, unsettled: bool) {
        self.unsettled.store(unsettled, Relaxed);
    }

    /// Whether a success would be the proof that resets a failed or untried connection.
    pub(crate) fn is_unsettled(&self) -> bool {
        self.unsettled.load(Relaxed)
    }

    /// A success as health judges it; skips the store when there is nothing to clear, so the
    /// happy path does not dirty the line.
    pub(crate) fn health_success(&self) {
        if self.health_failures.load(Relaxed) != 0 {
            self.health_failures.store(0, Relaxed);
        }
    }

    /// A failure as health judges it; returns the failures in a row, this one included.
    pub(crate) fn health_failure(&self) -> u32 {
        self.health_failures
            .fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_add(1)))
            .unwrap_or(u32::MAX)
            .saturating_add(1)
    }

    pub(crate) fn clear_health_failures(&self) {
        self.health_failures.store(0, Relaxed);
    }

    pub(crate) fn set_ejected(&self, ejected: bool) {
        self.ejected.store(ejected, Relaxed);
    }

    pub(crate) fn is_ejected(&self) -> bool {
        self.ejected.load(Relaxed)
    }

    pub(crate) fn detach(&self) {
        self.detached.store(true, Relaxed);
    }

    pub(crate) fn is_detached(&self) -> bool {
        self.detached.load(Relaxed)
    }

    pub(crate) fn successes(&self) -> u64 {
        self.successes.load(Relaxed)
    }

    pub(crate) fn failures(&self) -> u64 {
        self.failures.load(Relaxed)
    }

    pub(crate) fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Relaxed)
    }

    pub(crate) fn last_success(&self) -> u64 {
        self.last_success.load(Relaxed)
    }

    pub(crate) fn last_failure(&self) -> u64 {
        self.last_failure.load(Relaxed)
    }
}
