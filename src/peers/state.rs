//! The per-peer state machine.

use std::fmt;

/// Where a peer stands, as every layer sees it.
///
/// ```text
///            ┌──────────── reset ─────────────┐
///            ▼                                │
///   Idle ──► Connecting ──► Connected ──► Idle / Backoff / Exhausted (connection lost)
///    ▲          │  │  ▲                                   │
///    │ cancel   │  │  └── attempt succeeded ──────────────┘
///    └──────────┘  ├──► Backoff ──► Connecting (delay over)
///                  └──► Exhausted ──► Idle (reset)
///
///   any state ──► Ejected ──► the state underneath (restored)   (an exhausted peer: by hand only)
///
///   a broken connection or a failed attempt makes the peer *suspect*: until a probe succeeds,
///   new attempts are probes, one at a time, even while other connections are still up
/// ```
///
/// [`PeerState::can_become`] is the whole table; the tracker refuses anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PeerState {
    /// Not connected and free to connect: never tried, or closed cleanly after proving healthy.
    Idle,
    /// A connect attempt is under way.
    Connecting,
    /// At least one connection is up.
    Connected,
    /// A connect attempt failed (or a connection flapped): the next one waits for the backoff
    /// delay. The state lasts until that next attempt starts, even once the delay is over.
    Backoff,
    /// Health checks took the peer out of use; it stays ejected until the health layer
    /// restores it.
    Ejected,
    /// The backoff policy's attempt or time limit is used up; no attempt until a reset.
    Exhausted,
}

impl PeerState {
    /// Every state, in declaration order.
    pub const ALL: [PeerState; 6] = [
        PeerState::Idle,
        PeerState::Connecting,
        PeerState::Connected,
        PeerState::Backoff,
        PeerState::Ejected,
        PeerState::Exhausted,
    ];

    /// Whether a peer may move from `self` to `to` in one step. Staying put is not a step.
    ///
    /// Besides the diagram's arrows, a connection opened while others were up may complete
    /// after they closed, taking an idle, backing-off or exhausted peer straight to `Connected`,
    /// and the last connection may close while a probe is under way (`Connected` to
    /// `Connecting`). What never happens: backoff or exhaustion without a failed attempt or a
    /// lost connection, and a probe of an exhausted peer.
    pub fn can_become(self, to: PeerState) -> bool {
        use PeerState::*;
        matches!(
            (self, to),
            (Idle, Connecting | Connected | Ejected)
                | (Connecting, Connected | Backoff | Exhausted | Idle | Ejected)
                | (Connected, Idle | Connecting | Backoff | Exhausted | Ejected)
                | (Backoff, Connecting | Connected | Idle | Ejected)
                | (Ejected, Idle | Connecting | Connected | Backoff | Exhausted)
                | (Exhausted, Idle | Connected | Ejected)
        )
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// A short lowercase name, e.g. `"backoff"`.
    pub fn name(self) -> &'static str {
        match self {
            PeerState::Idle => "idle",
            PeerState::Connecting => "connecting",
            PeerState::Connected => "connected",
            PeerState::Backoff => "backoff",
            PeerState::Ejected => "ejected",
            PeerState::Exhausted => "exhausted",
        }
    }
}

impl fmt::Display for PeerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether a peer was configured or found, which decides what happens when it goes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// Configured by the user: kept and reconnected to for as long as the process runs.
    Static,
    /// Learnt at run time (from a request, from discovery): may be evicted when idle and the
    /// table is full, or forgotten when discovery no longer lists it.
    Discovered,
}

/// Who took a peer out of use, which decides who brings it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EjectionCause {
    /// Passive health (an outlier: too many failures). Once the ejection's time is over, probe
    /// requests decide: a success restores the peer, a failure ejects it again for longer.
    Outlier,
    /// An active health check found the peer down; the check's next success restores it.
    Check,
    /// Forced out by hand ([`Override::Open`]); only a new override brings it back.
    Manual,
}

impl EjectionCause {
    /// A short lowercase name, e.g. `"outlier"`.
    pub fn name(self) -> &'static str {
        match self {
            EjectionCause::Outlier => "outlier",
            EjectionCause::Check => "check",
            EjectionCause::Manual => "manual",
        }
    }
}

/// A manual override of a peer's health, in circuit-breaker terms: an *open* circuit lets
/// nothing through, a *closed* one lets everything through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Override {
    /// Health decides (the default).
    #[default]
    Automatic,
    /// The peer is ejected until the override changes, whatever health says.
    Open,
    /// The peer is never ejected, whatever health says; would-be ejections are reported as
    /// [`EjectionSkipped`](crate::event::EventKind::EjectionSkipped).
    Closed,
}
