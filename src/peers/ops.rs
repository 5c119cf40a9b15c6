//! Everything that changes a peer's connection state (attempts, connections, resets,
//! ejections), and the bookkeeping that follows a change of state: the registry's index, the
//! health report, and the events. What requests report is in `requests.rs`.

use std::fmt::Display;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::Instant;

use super::attempt::{AttemptDenied, NextAttempt};
use super::outcomes::unstamp;
use super::registry::Registry;
use super::report::{HealthReport, PeerSnapshot};
use super::state::PeerState;
use super::tracker::{Tracker, TrackerState};
use super::{PeerKey, Shared};
use crate::event::{EventKind, WaitReason};
use crate::time::deadline;

/// What an attempt holds of the gate: whether it was granted as the probe, and which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket {
    pub(crate) probe: bool,
    generation: u64,
}

impl Ticket {
    /// Whether this attempt is the probe in flight now; a probe taken over after its deadline
    /// reports its outcome like any other attempt.
    fn owns_probe(self, st: &TrackerState) -> bool {
        self.probe && st.probe_generation == self.generation
    }
}

/// What the peer's schedule says now, for an attempt whose failure does not step it.
fn scheduled(st: &TrackerState, now: Instant) -> NextAttempt {
    match st.next_attempt_at {
        _ if st.exhausted => NextAttempt::Exhausted,
        Some(at) => NextAttempt::After(at.saturating_duration_since(now)),
        None => NextAttempt::After(Duration::ZERO),
    }
}

/// Wakes tasks taken from a tracker, after its lock was released.
pub(super) fn wake(waiters: Vec<Waker>) {
    for waker in waiters {
        waker.wake();
    }
}

impl<K: PeerKey> Shared<K> {
    /// Publishes the health report if its counts changed. Called with the registry locked, so
    /// reports go out in the order the changes were made.
    pub(super) fn publish_health(&self, registry: &Registry<K>, now: Instant) {
        let report = HealthReport::from_counts(registry.counts(), self.min_peers, now);
        self.health.send_if_modified(|current| {
            let changed = !current.same_counts(&report);
            if changed {
                *current = report;
            }
            changed
        });
    }

    /// Follows up a change made under the tracker's lock: validates the transition, moves the
    /// peer in the index, republishes health and announces the new state.
    pub(super) fn settle(
        &self,
        t: &Tracker<K>,
        st: &TrackerState,
        before: PeerState,
        now: Instant,
    ) {
        if st.public_state() == before {
            return;
        }
        if t.outcomes.is_detached() {
            self.announce(t, st, before, now);
        } else {
            let mut registry = self.registry_write();
            self.settle_locked(t, st, before, now, &mut registry);
        }
    }

    /// [`settle`](Self::settle) for a caller that holds the registry's lock already.
    pub(super) fn settle_locked(
        &self,
        t: &Tracker<K>,
        st: &TrackerState,
        before: PeerState,
        now: Instant,
        registry: &mut Registry<K>,
    ) {
        let after = st.public_state();
        if after == before {
            return;
        }
        // Keep the index true to the tracker first, whatever follows.
        if !t.outcomes.is_detached() {
            registry.move_state(&t.key, before, after);
            self.publish_health(registry, now);
        }
        self.announce(t, st, before, now);
    }

    fn announce(&self, t: &Tracker<K>, st: &TrackerState, before: PeerState, now: Instant) {
        let after = st.public_state();
        if !before.can_become(after) {
            tracing::error!(peer = ?t.key, from = ?before, to = ?after, "redial bug: invalid peer state transition");
            debug_assert!(
                false,
                "invalid peer state transition {before:?} -> {after:?}"
            );
        }
        self.events.publish(
            &t.key,
            now,
            EventKind::StateChanged {
                from: before,
                to: after,
            },
        );
    }

    pub(super) fn begin_attempt(
        &self,
        t: &Tracker<K>,
        deadline: Option<Instant>,
    ) -> Result<(u32, Ticket), AttemptDenied> {
        let now = Instant::now();
        let mut st = t.lock();
        if st.exhausted {
            return Err(AttemptDenied::Exhausted);
        }
        // A connection known to work lets more connections through at once; otherwise the
        // peer may be down and one attempt (the probe) speaks for the whole process.
        let probe = st.open_connections == 0 || st.suspect;
        if probe && st.probe_in_flight {
            if st.probe_deadline.is_none_or(|at| now < at) {
                return Err(AttemptDenied::InFlight);
            }
            // The probe's owner let its deadline pass without an outcome (it stopped polling,
            // or forgot the attempt): count it as a timed-out attempt and take the gate back.
            let before = st.public_state();
            st.probe_in_flight = false;
            st.probe_deadline = None;
            st.probe_generation = st.probe_generation.wrapping_add(1);
            self.count_failure(
                t,
                &mut st,
                &"connect attempt abandoned: no outcome by its deadline",
                now,
            );
            st.suspect = true;
            let attempts = st.schedule.retries().saturating_add(1);
            let next = self.schedule_next(t, &mut st, now, WaitReason::Backoff, attempts);
            self.settle(t, &st, before, now);
            let until = st.next_attempt_at;
            let waiters = st.take_waiters();
            drop(st);
            wake(waiters);
            return Err(match (next, until) {
                (NextAttempt::After(_), Some(until)) => AttemptDenied::Backoff { until },
                (NextAttempt::After(_), None) => AttemptDenied::Backoff { until: now },
                (NextAttempt::Exhausted, _) => AttemptDenied::Exhausted,
            });
        }
        if let Some(until) = st.next_attempt_at.filter(|at| now < *at) {
            return Err(AttemptDenied::Backoff { until });
        }
        let before = st.public_state();
        let number = st.schedule.next_attempt();
        st.attempts += 1;
        st.last_attempt = Some(now);
        st.run_started.get_or_insert(now);
        self.count(t, &self.totals.attempts);
        if probe {
            st.probe_in_flight = true;
            st.probe_deadline = deadline;
            st.next_attempt_at = None;
        }
        let ticket = Ticket {
            probe,
            generation: st.probe_generation,
        };
        self.events.publish(
            &t.key,
            now,
            EventKind::AttemptStarted {
                attempt: number,
                max_attempts: self.backoff.max_attempts(),
            },
        );
        self.settle(t, &st, before, now);
        Ok((number, ticket))
    }

    /// A connect attempt got through. A `tracked` connection counts as open until
    /// [`connection_closed`](Self::connection_closed); an untracked one was handed off to code
    /// that will not report its end, so the connect itself is taken as the proof.
    pub(super) fn attempt_connected(
        &self,
        t: &Tracker<K>,
        number: u32,
        ticket: Ticket,
        tracked: bool,
    ) {
        let now = Instant::now();
        let mut st = t.lock();
        let probe = ticket.owns_probe(&st);
        let before = st.public_state();
        let total = st.run_started.map_or(Duration::ZERO, |s| now - s);
        if probe {
            st.probe_in_flight = false;
            st.probe_deadline = None;
        }
        if !tracked {
            st.prove();
            t.outcomes.set_unsettled(false);
        } else {
            st.open_connections = st.open_connections.saturating_add(1);
            if probe {
                // The connection that ends a round of failures (or the first one) proves
                // nothing until it answers or stays up (DESIGN §3.3). A further connection
                // opened beside a working one leaves the peer's proof alone: a spare connection
                // closed before it carried a request is not flapping.
                st.proven = false;
                t.outcomes.set_unsettled(true);
                st.suspect = false;
                st.next_attempt_at = None;
            }
        }
        self.events.publish(
            &t.key,
            now,
            EventKind::Connected {
                attempts: number,
                total,
            },
        );
        self.settle(t, &st, before, now);
        if probe {
            let waiters = st.take_waiters();
            drop(st);
            wake(waiters);
        }
    }

    pub(super) fn attempt_failed(
        &self,
        t: &Tracker<K>,
        number: u32,
        ticket: Ticket,
        error: &dyn Display,
    ) -> NextAttempt {
        let now = Instant::now();
        let mut st = t.lock();
        let probe = ticket.owns_probe(&st);
        if ticket.probe && !probe {
            // A probe taken over at its deadline was counted then, as abandoned, and the gate
            // has moved on: its late outcome is no news about the peer.
            return scheduled(&st, now);
        }
        let before = st.public_state();
        if probe {
            // First, before any user code (the error's `Display`, a tracing subscriber) runs: if
            // that code panics, the gate is open and the attempt's drop wakes the waiters.
            st.probe_in_flight = false;
            st.probe_deadline = None;
        }
        self.count_failure(t, &mut st, error, now);
        st.suspect = true;
        t.outcomes.set_unsettled(true);
        if !probe {
            // Only the probe steps the schedule: one step per outage round, however many
            // connections were being opened when the peer went down. Later attempts are probes.
            return scheduled(&st, now);
        }
        let next = self.schedule_next(t, &mut st, now, WaitReason::Backoff, number);
        self.settle(t, &st, before, now);
        let waiters = st.take_waiters();
        drop(st);
        wake(waiters);
        next
    }

    /// Takes the next delay from the peer's schedule and announces it.
    fn schedule_next(
        &self,
        t: &Tracker<K>,
        st: &mut TrackerState,
        now: Instant,
        reason: WaitReason,
        attempts: u32,
    ) -> NextAttempt {
        // Whatever the schedule says, the peer now has a failure to prove wrong.
        t.outcomes.set_unsettled(true);
        match st.schedule.next_delay() {
            Some(delay) => {
                st.next_attempt_at = Some(deadline(now, delay));
                self.events
                    .publish(&t.key, now, EventKind::Waiting { delay, reason });
                NextAttempt::After(delay)
            }
            None => {
                st.next_attempt_at = None;
                st.exhausted = true;
                st.exhausted_at = Some(now);
                let error = st.last_error.get().map(Arc::from);
                self.events
                    .publish(&t.key, now, EventKind::Exhausted { attempts, error });
                NextAttempt::Exhausted
            }
        }
    }

    pub(super) fn attempt_cancelled(&self, t: &Tracker<K>, ticket: Ticket) {
        if !ticket.probe {
            return;
        }
        let now = Instant::now();
        let mut st = t.lock();
        if !ticket.owns_probe(&st) {
            return;
        }
        let before = st.public_state();
        st.probe_in_flight = false;
        st.probe_deadline = None;
        self.settle(t, &st, before, now);
        let waiters = st.take_waiters();
        drop(st);
        wake(waiters);
    }

    pub(super) fn connection_closed(&self, t: &Tracker<K>, error: Option<&dyn Display>) {
        let now = Instant::now();
        let mut st = t.lock();
        if st.open_connections == 0 {
            return;
        }
        let before = st.public_state();
        st.open_connections -= 1;
        if let Some(error) = error {
            self.count_failure(t, &mut st, error, now);
            st.suspect = true;
            t.outcomes.set_unsettled(true);
        }
        let error = error.and_then(|_| st.last_error.get().map(Arc::from));
        self.events
            .publish(&t.key, now, EventKind::Disconnected { error });
        let last = st.open_connections == 0;
        if last
            && !st.proven
            && st.next_attempt_at.is_none()
            && !st.exhausted
            && !st.probe_in_flight
        {
            // Up and down again without proof: flapping, so the schedule keeps growing. With a
            // probe under way the probe steps the schedule (one step per outage round); stepping
            // here too could exhaust the peer under a live probe, which a reset would then turn
            // into Exhausted -> Connecting.
            let attempts = st.schedule.next_attempt();
            self.schedule_next(t, &mut st, now, WaitReason::Flapping, attempts);
        }
        self.settle(t, &st, before, now);
    }

    pub(super) fn reset(&self, t: &Tracker<K>) {
        let now = Instant::now();
        let mut st = t.lock();
        let before = st.public_state();
        st.restart_schedule();
        self.settle(t, &st, before, now);
    }

    pub(super) fn wake_probe_waiters(&self, t: &Tracker<K>) {
        let waiters = t.lock().take_waiters();
        wake(waiters);
    }

    pub(super) fn poll_probe_done(&self, t: &Tracker<K>, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = t.lock();
        if !st.probe_in_flight {
            return Poll::Ready(());
        }
        let waker = cx.waker();
        if !st.waiters.iter().any(|w| w.will_wake(waker)) {
            st.waiters.push(waker.clone());
        }
        Poll::Pending
    }

    pub(super) fn snapshot(&self, t: &Tracker<K>) -> PeerSnapshot<K> {
        let st = t.lock();
        PeerSnapshot {
            key: t.key.clone(),
            origin: t.origin(),
            state: st.public_state(),
            attempts: st.attempts,
            successes: t.outcomes.successes(),
            failures: t.outcomes.failures(),
            consecutive_failures: t.outcomes.consecutive_failures(),
            retries: st.retries,
            open_connections: st.open_connections,
            last_attempt: st.last_attempt,
            last_success: unstamp(self.epoch, t.outcomes.last_success()),
            last_failure: unstamp(self.epoch, t.outcomes.last_failure()),
            last_error: st.last_error.get().map(str::to_owned),
            backoff_step: st.schedule.retries(),
            next_attempt_at: st.next_attempt_at,
            attempt_in_flight: st.probe_in_flight,
            times_ejected: st.times_ejected,
            ejected_until: st.ejection.and_then(|e| e.until),
            ejection_cause: st.ejection.map(|e| e.cause),
            health_override: st.health_override,
            skipped_ejections: st.skipped_ejections,
        }
    }
}
