//! Read-only views of the peer table: per-peer snapshots, totals, and the health report.

use std::time::Duration;

use tokio::time::Instant;

use super::state::{EjectionCause, Origin, Override, PeerState};

/// A copy of one peer's record at one instant. See [`Peers::snapshot`](super::Peers::snapshot).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PeerSnapshot<K> {
    /// The peer.
    pub key: K,
    /// Configured or discovered.
    pub origin: Origin,
    /// Its state.
    pub state: PeerState,
    /// Connect attempts started.
    pub attempts: u64,
    /// Successes recorded (responses that proved the peer works).
    pub successes: u64,
    /// Failures recorded (failed connect attempts, failed requests, connections lost to an error).
    pub failures: u64,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Retries recorded by retry layers.
    pub retries: u64,
    /// Connections to the peer that are up now.
    pub open_connections: u32,
    /// When the last connect attempt started.
    pub last_attempt: Option<Instant>,
    /// When the last success was recorded.
    pub last_success: Option<Instant>,
    /// When the last failure was recorded.
    pub last_failure: Option<Instant>,
    /// The last error, cut to the configured length.
    pub last_error: Option<String>,
    /// Delays the peer's backoff schedule has handed out since it was last reset.
    pub backoff_step: u32,
    /// When the next connect attempt is allowed, if the peer is in backoff.
    pub next_attempt_at: Option<Instant>,
    /// Whether a probe attempt (one made while no connection is up) is under way.
    pub attempt_in_flight: bool,
    /// How many times the peer was ejected since it was first tracked.
    pub times_ejected: u32,
    /// When the current ejection's time is over and probes may test the peer, if it is
    /// ejected as an outlier.
    pub ejected_until: Option<Instant>,
    /// Who ejected the peer, if it is ejected.
    pub ejection_cause: Option<EjectionCause>,
    /// The manual override in force.
    pub health_override: Override,
    /// Ejections health wanted but did not make (shadow mode, panic guard, forced closed).
    pub skipped_ejections: u64,
}

/// Totals over every tracked peer, in the spirit of a connection manager's stats.
///
/// Computed from counters kept up to date as things happen: taking it costs the same for ten
/// peers as for a hundred thousand.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Stats {
    /// Peers tracked.
    pub peers: usize,
    /// Peers in each state, indexed as [`PeerState::ALL`]; see [`Stats::in_state`].
    pub by_state: [usize; 6],
    /// Connect attempts started, over all peers, ever.
    pub attempts: u64,
    /// Successes recorded.
    pub successes: u64,
    /// Failures recorded.
    pub failures: u64,
    /// Retries recorded.
    pub retries: u64,
    /// Retries refused because a retry budget was empty.
    pub budget_exhausted: u64,
}

impl Stats {
    /// Peers in `state`.
    pub fn in_state(&self, state: PeerState) -> usize {
        self.by_state[state.index()]
    }

    /// `successes / (successes + failures)`, or `None` before anything was recorded.
    pub fn success_rate(&self) -> Option<f64> {
        let outcomes = self.successes + self.failures;
        (outcomes > 0).then(|| self.successes as f64 / outcomes as f64)
    }
}

/// Whether enough peers are usable, as a health monitor would report it.
///
/// `usable` counts connected peers; `recovering` those connecting or waiting out a backoff
/// delay; `failed` those ejected or out of attempts. Idle peers are in none of the three.
/// Subscribe to changes with [`Peers::watch_health`](super::Peers::watch_health); the report is
/// published again only when one of its counts changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HealthReport {
    /// `usable >= min_peers`.
    pub healthy: bool,
    /// Connected peers.
    pub usable: usize,
    /// The threshold configured with [`PeersBuilder::min_peers`](super::PeersBuilder::min_peers).
    pub min_peers: usize,
    /// Peers connecting or in backoff.
    pub recovering: usize,
    /// Peers ejected or exhausted.
    pub failed: usize,
    /// Peers tracked.
    pub total: usize,
    /// When the counts last changed.
    pub since: Instant,
}

impl HealthReport {
    pub(crate) fn from_counts(by_state: [usize; 6], min_peers: usize, now: Instant) -> Self {
        let n = |s: PeerState| by_state[s.index()];
        let usable = n(PeerState::Connected);
        Self {
            healthy: usable >= min_peers,
            usable,
            min_peers,
            recovering: n(PeerState::Connecting) + n(PeerState::Backoff),
            failed: n(PeerState::Ejected) + n(PeerState::Exhausted),
            total: by_state.iter().sum(),
            since: now,
        }
    }

    /// Same counts, whatever the time stamp.
    pub(crate) fn same_counts(&self, other: &Self) -> bool {
        (
            self.healthy,
            self.usable,
            self.recovering,
            self.failed,
            self.total,
        ) == (
            other.healthy,
            other.usable,
            other.recovering,
            other.failed,
            other.total,
        )
    }

    /// How long the report has been as it is.
    pub fn age(&self) -> Duration {
        self.since.elapsed()
    }
}
