//! What can happen to a peer.

use std::sync::Arc;
use std::time::Duration;

use crate::peers::{EjectionCause, PeerState};

/// What happened. New kinds may be added in minor releases.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EventKind {
    /// A connect attempt started.
    AttemptStarted {
        /// 1-based number of this attempt in the current outage.
        attempt: u32,
        /// The policy's attempt limit, if any.
        max_attempts: Option<u32>,
    },
    /// The next attempt must wait.
    Waiting {
        /// How long until the next attempt is allowed.
        delay: Duration,
        /// Why there is a wait.
        reason: WaitReason,
    },
    /// A connect attempt succeeded.
    Connected {
        /// Attempts it took, this one included.
        attempts: u32,
        /// Time from the first attempt of this outage to now.
        total: Duration,
    },
    /// A connection that was up went away.
    Disconnected {
        /// Why, if known (bounded in length).
        error: Option<Arc<str>>,
    },
    /// The policy's attempt or time limit was reached; no more attempts until a reset.
    Exhausted {
        /// Attempts made in this outage.
        attempts: u32,
        /// The last error (bounded in length).
        error: Option<Arc<str>>,
    },
    /// A request will be retried.
    RetryScheduled {
        /// 1-based number of the retry about to happen.
        attempt: u32,
        /// The delay before it.
        delay: Duration,
        /// Why it is retried, as named by the classifier.
        reason: &'static str,
    },
    /// A retry was refused because the retry budget is empty.
    BudgetExhausted,
    /// The classifier wanted a retry but something else ruled it out; the caller got the
    /// last outcome.
    NotRetried {
        /// What ruled it out.
        reason: NotRetriedReason,
    },
    /// Health took the peer out of use. Also published when an active check or a manual
    /// override takes over an ejection in effect: the same ejection (same `times`), now with
    /// the new cause and no end of its own.
    Ejected {
        /// For how long before probes may test it; `None` for an ejection that lasts until
        /// whoever made it says otherwise (an active check, a manual override).
        duration: Option<Duration>,
        /// Who ejected it.
        cause: EjectionCause,
        /// How many times it has been ejected since it was first tracked, this time included.
        times: u32,
    },
    /// The peer is back in use after an ejection.
    Restored,
    /// Health would have ejected the peer but did not.
    EjectionSkipped {
        /// What held it back.
        reason: SkipReason,
    },
    /// The peer's state changed.
    StateChanged {
        /// The state it left.
        from: PeerState,
        /// The state it entered.
        to: PeerState,
    },
}

/// Why a peer that tripped its health thresholds was not ejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SkipReason {
    /// Shadow mode: ejections are reported, never enforced.
    Shadow,
    /// The panic guard: as many peers as `max_ejection_percent` allows are ejected already.
    PanicGuard,
    /// The peer is forced closed ([`Override::Closed`](crate::peers::Override::Closed)).
    ForcedClosed,
}

impl SkipReason {
    /// A short lowercase name, e.g. `"panic_guard"`.
    pub fn name(self) -> &'static str {
        match self {
            SkipReason::Shadow => "shadow",
            SkipReason::PanicGuard => "panic_guard",
            SkipReason::ForcedClosed => "forced_closed",
        }
    }
}

/// Why a retry the classifier asked for did not happen (an empty budget has its own event,
/// [`EventKind::BudgetExhausted`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NotRetriedReason {
    /// `max_attempts` attempts were made (transparent retries past `max_transparent`
    /// included).
    AttemptsExhausted,
    /// The next attempt would start after the call's deadline.
    Deadline,
    /// The request cannot be sent again, e.g. its body streamed past the replay cap.
    NotReplayable,
}

impl NotRetriedReason {
    /// A short stable name, as used in tracing events.
    pub fn name(&self) -> &'static str {
        match self {
            NotRetriedReason::AttemptsExhausted => "attempts_exhausted",
            NotRetriedReason::Deadline => "deadline",
            NotRetriedReason::NotReplayable => "not_replayable",
        }
    }
}

/// Why an attempt has to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WaitReason {
    /// The backoff schedule after a failure.
    Backoff,
    /// A connection was accepted but did not stay up long enough to prove the peer healthy.
    Flapping,
}

impl EventKind {
    /// A short stable name for the kind, as used in the `kind` field of tracing events.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::AttemptStarted { .. } => "attempt_started",
            EventKind::Waiting { .. } => "waiting",
            EventKind::Connected { .. } => "connected",
            EventKind::Disconnected { .. } => "disconnected",
            EventKind::Exhausted { .. } => "exhausted",
            EventKind::RetryScheduled { .. } => "retry_scheduled",
            EventKind::BudgetExhausted => "budget_exhausted",
            EventKind::NotRetried { .. } => "not_retried",
            EventKind::Ejected { .. } => "ejected",
            EventKind::Restored => "restored",
            EventKind::EjectionSkipped { .. } => "ejection_skipped",
            EventKind::StateChanged { .. } => "state_changed",
        }
    }
}
