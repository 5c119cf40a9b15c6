//! What redial knows about one peer.

use std::fmt::{self, Display, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, Weak};
use std::task::Waker;

use tokio::time::Instant;

use super::admission::GateWaiter;
use super::outcomes::Outcomes;
use super::state::{EjectionCause, Origin, Override, PeerState};
use crate::backoff::Schedule;

/// One peer's record. Shared by every handle to the peer; the map in the registry holds one
/// more reference, which is how eviction tells an unused peer from one a layer still holds.
///
/// `repr(C)` keeps the outcome counters first, alone in their cache line (their alignment
/// places them on a line of their own inside the `Arc`), so that recording an outcome touches
/// one line of the tracker and no lock.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Tracker<K> {
    pub(crate) outcomes: Outcomes,
    state: Mutex<TrackerState>,
    pub(crate) key: K,
    /// Read by eviction under the registry lock, where taking this tracker's lock could deadlock.
    is_static: AtomicBool,
}

/// A peer out of use, and until when.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ejection {
    /// When probes may start (outlier ejections); `None` lasts until its maker ends it.
    pub(crate) until: Option<Instant>,
    pub(crate) cause: EjectionCause,
}

/// The mutable part of a tracker, behind one per-peer lock.
#[derive(Debug)]
pub(crate) struct TrackerState {
    /// The schedule's attempt or time limit was reached; cleared only by proof or a reset.
    pub(crate) exhausted: bool,
    /// When the schedule ran out, for cool-downs that every service of the peer agrees on.
    pub(crate) exhausted_at: Option<Instant>,
    /// A connection broke or a connect attempt failed since the last successful probe: the peer
    /// may be down, so new attempts go through the single-flight gate even while some
    /// connections are still up.
    pub(crate) suspect: bool,
    /// Health took the peer out of use; see `ejection.rs`.
    pub(crate) ejection: Option<Ejection>,
    pub(crate) times_ejected: u32,
    /// How many steps of `base` the next outlier ejection lasts: grows with each ejection,
    /// shrinks with each restore by probe. Its arithmetic is the health policy's.
    pub(crate) ejection_multiplier: u32,
    pub(crate) restored_at: Option<Instant>,
    /// Probe requests admitted and not yet finished, in the ejection `ejection_generation`.
    pub(crate) probes_out: u32,
    /// Changes with every ejection and restore, so a probe from an earlier ejection that
    /// finishes late cannot decide the current one.
    pub(crate) ejection_generation: u64,
    pub(crate) health_override: Override,
    pub(crate) skipped_ejections: u64,
    /// Tasks waiting for the ejection to end or a probe slot to free up.
    pub(crate) admission_waiters: Vec<Weak<GateWaiter>>,

    pub(crate) attempts: u64,
    pub(crate) retries: u64,
    pub(crate) open_connections: u32,
    pub(crate) last_attempt: Option<Instant>,
    pub(crate) last_error: LastError,

    /// The process-wide schedule for this peer (one process, one probe).
    pub(crate) schedule: Schedule,
    pub(crate) next_attempt_at: Option<Instant>,
    /// A probe (an attempt made while no connection is up) is under way.
    pub(crate) probe_in_flight: bool,
    /// Which probe is in flight: a probe taken over after its deadline no longer owns the gate
    /// when its outcome finally arrives.
    pub(crate) probe_generation: u64,
    /// When the probe in flight must have ended, if its owner said so; past it, the next
    /// attempt takes the gate over (the owner may have stopped polling it).
    pub(crate) probe_deadline: Option<Instant>,
    /// First attempt since the peer was last proven healthy, for `Connected { total }`.
    pub(crate) run_started: Option<Instant>,
    /// Whether the peer proved itself (a success, or a connection that stayed up) since its
    /// last connection came up; a connection that closes unproven is flapping.
    pub(crate) proven: bool,
    /// Tasks waiting for the probe in flight to finish.
    pub(crate) waiters: Vec<Waker>,
}

impl TrackerState {
    /// The state every layer sees. It is derived from the facts, never stored, so it cannot
    /// disagree with them: ejection overrides everything, an open connection beats a spent
    /// schedule, and a backoff lasts until the next probe starts.
    pub(crate) fn public_state(&self) -> PeerState {
        if self.ejection.is_some() {
            PeerState::Ejected
        } else if self.open_connections > 0 {
            PeerState::Connected
        } else if self.exhausted {
            PeerState::Exhausted
        } else if self.probe_in_flight {
            PeerState::Connecting
        } else if self.next_attempt_at.is_some() {
            PeerState::Backoff
        } else {
            PeerState::Idle
        }
    }

    /// Starts the schedule over: the next attempt is allowed at once.
    pub(crate) fn restart_schedule(&mut self) {
        self.schedule.reset();
        self.next_attempt_at = None;
        self.run_started = None;
        self.exhausted = false;
        self.exhausted_at = None;
    }

    /// Takes the tasks waiting on the probe, to be woken once the lock is released: a waker may
    /// run arbitrary code, which must not find this peer locked.
    pub(crate) fn take_waiters(&mut self) -> Vec<Waker> {
        std::mem::take(&mut self.waiters)
    }

    /// The backoff schedule is reset only on proof that the peer works (DESIGN §3.3).
    pub(crate) fn prove(&mut self) {
        self.restart_schedule();
        self.proven = true;
        self.suspect = false;
    }
}

impl<K> Tracker<K> {
    pub(crate) fn new(key: K, origin: Origin, schedule: Schedule, error_limit: usize) -> Self {
        Self {
            outcomes: Outcomes::default(),
            key,
            is_static: AtomicBool::new(origin == Origin::Static),
            state: Mutex::new(TrackerState {
                exhausted: false,
                exhausted_at: None,
                suspect: false,
                ejection: None,
                times_ejected: 0,
                ejection_multiplier: 0,
                restored_at: None,
                probes_out: 0,
                ejection_generation: 0,
                health_override: Override::Automatic,
                skipped_ejections: 0,
                admission_waiters: Vec::new(),
                attempts: 0,
                retries: 0,
                open_connections: 0,
                last_attempt: None,
                last_error: LastError::new(error_limit),
                schedule,
                next_attempt_at: None,
                probe_in_flight: false,
                probe_generation: 0,
                probe_deadline: None,
                run_started: None,
                proven: true,
                waiters: Vec::new(),
            }),
        }
    }

    /// Locks this peer's state. A panic while the lock was held leaves counters, not
    /// invariants of memory safety, half-updated; carrying on beats poisoning every layer.
    pub(crate) fn lock(&self) -> MutexGuard<'_, TrackerState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn origin(&self) -> Origin {
        if self.is_static.load(Ordering::Relaxed) {
            Origin::Static
        } else {
            Origin::Discovered
        }
    }

    pub(crate) fn make_static(&self) {
        self.is_static.store(true, Ordering::Relaxed);
    }
}

/// The last error seen, as text of bounded length.
///
/// The buffer is reserved on the first failure and reused after, so recording a failure does
/// not allocate in steady state; text past the limit is cut at a character boundary.
#[derive(Debug)]
pub(crate) struct LastError {
    text: String,
    limit: usize,
}

impl LastError {
    fn new(limit: usize) -> Self {
        Self {
            text: String::new(),
            limit,
        }
    }

    pub(crate) fn set(&mut self, error: &dyn Display) {
        if self.text.capacity() < self.limit {
            self.text.reserve_exact(self.limit - self.text.len());
        }
        self.text.clear();
        // `Bounded` stops the formatter with an error once full; what fitted is kept.
        let _ = write!(Bounded(&mut self.text, self.limit), "{error}");
    }

    pub(crate) fn get(&self) -> Option<&str> {
        (!self.text.is_empty()).then_some(self.text.as_str())
    }
}

struct Bounded<'a>(&'a mut String, usize);

impl fmt::Write for Bounded<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.1 - self.0.len();
        if s.len() <= room {
            self.0.push_str(s);
            return Ok(());
        }
        let mut cut = room;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        self.0.push_str(&s[..cut]);
        Err(fmt::Error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_error_is_cut_at_a_char_boundary_and_reuses_its_buffer() {
        let mut last = LastError::new(5);
        last.set(&"héllo world");
        assert_eq!(last.get(), Some("héll"));
        let capacity = last.text.capacity();
        last.set(&"ab");
        assert_eq!(last.get(), Some("ab"));
        assert_eq!(last.text.capacity(), capacity);
    }
}
