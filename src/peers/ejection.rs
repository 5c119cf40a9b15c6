//! Ejections: health taking a peer out of use, the probes that bring it back, the panic guard,
//! and manual overrides. The policy (how long, after how many failures) is the health layer's;
//! this file keeps the facts every layer and clone must agree on.

use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::admission::{
    Admission, EjectRefused, EjectionHistory, EjectionPlan, GateWaiter, ProbeOutcome, ProbePermit,
    register, wake_all,
};
use super::state::{EjectionCause, Override, PeerState};
use super::tracker::{Ejection, Tracker, TrackerState};
use super::{PeerHandle, PeerKey, Shared};
use crate::event::{EventKind, SkipReason};
use crate::time::deadline;

impl<K: PeerKey> Shared<K> {
    /// An outlier ejection, sized by `plan`, unless the panic guard says `max_ejected` (a
    /// fraction of the tracked peers) are out already. The guard's count and the ejection are
    /// made under the registry's lock, so two peers tripping at once cannot both slip past it.
    /// With `extend`, an outlier ejection in effect is made again (longer, counted once more).
    pub(super) fn eject_outlier(
        &self,
        t: &Tracker<K>,
        max_ejected: Option<f64>,
        extend: bool,
        plan: impl FnOnce(EjectionHistory) -> EjectionPlan,
    ) -> Result<Duration, EjectRefused> {
        let now = Instant::now();
        let mut st = t.lock();
        let before = st.public_state();
        match st.ejection {
            Some(e) if extend && e.cause == EjectionCause::Outlier => {
                let duration = self.eject_as_planned(t, &mut st, plan, now);
                // Waiters for a probe slot of the old ejection have no timer: they must learn
                // the new ejection's end (the old probe's outcome will wake nobody).
                unlock_and_wake(st);
                return Ok(duration);
            }
            Some(_) => return Err(EjectRefused::AlreadyEjected),
            None => {}
        }
        if before == PeerState::Exhausted {
            return Err(EjectRefused::Exhausted);
        }
        if st.health_override == Override::Closed {
            self.skip(t, &mut st, SkipReason::ForcedClosed, now);
            return Err(EjectRefused::ForcedClosed);
        }
        let mut registry = self.registry_write();
        if let Some(fraction) = max_ejected.filter(|_| !t.outcomes.is_detached()) {
            let ejected = registry.counts()[PeerState::Ejected.index()];
            if ejected >= allowed_ejections(fraction, registry.len()) {
                drop(registry);
                self.skip(t, &mut st, SkipReason::PanicGuard, now);
                return Err(EjectRefused::PanicGuard);
            }
        }
        let duration = self.eject_as_planned(t, &mut st, plan, now);
        self.settle_locked(t, &st, before, now, &mut registry);
        Ok(duration)
    }

    /// An active check found the peer down: ejected until the check says otherwise. An outlier
    /// ejection in effect becomes the check's (its probes no longer decide).
    pub(super) fn eject_by_check(&self, t: &Tracker<K>) -> bool {
        let now = Instant::now();
        let mut st = t.lock();
        let before = st.public_state();
        match (st.health_override, st.ejection) {
            (Override::Closed, _) => {
                self.skip(t, &mut st, SkipReason::ForcedClosed, now);
                false
            }
            (_, Some(Ejection { cause, .. })) if cause != EjectionCause::Outlier => false,
            (_, Some(_)) => {
                self.take_over_ejection(t, &mut st, EjectionCause::Check, now);
                true
            }
            _ if before == PeerState::Exhausted => false,
            _ => {
                self.begin_ejection(t, &mut st, None, EjectionCause::Check, now);
                self.settle(t, &st, before, now);
                true
            }
        }
    }

    /// An active check found the peer up again: ends any ejection but a manual one.
    pub(super) fn restore_by_check(&self, t: &Tracker<K>) -> bool {
        let st = t.lock();
        match st.ejection {
            Some(e) if e.cause != EjectionCause::Manual => {
                self.end_ejection(t, st, Instant::now());
                true
            }
            _ => false,
        }
    }

    /// Ends any ejection. A manual [`Override::Open`] is lifted with it.
    pub(super) fn restore(&self, t: &Tracker<K>) -> bool {
        let mut st = t.lock();
        if st.health_override == Override::Open {
            st.health_override = Override::Automatic;
        }
        if st.ejection.is_none() {
            return false;
        }
        self.end_ejection(t, st, Instant::now());
        true
    }

    pub(super) fn set_override(&self, t: &Tracker<K>, to: Override) {
        let now = Instant::now();
        let mut st = t.lock();
        let before = st.public_state();
        st.health_override = to;
        match (to, st.ejection) {
            (Override::Open, None) => {
                self.begin_ejection(t, &mut st, None, EjectionCause::Manual, now);
                self.settle(t, &st, before, now);
            }
            (Override::Open, Some(e)) if e.cause != EjectionCause::Manual => {
                self.take_over_ejection(t, &mut st, EjectionCause::Manual, now);
                unlock_and_wake(st);
            }
            (Override::Closed, Some(_)) => self.end_ejection(t, st, now),
            (Override::Automatic, Some(e)) if e.cause == EjectionCause::Manual => {
                self.end_ejection(t, st, now)
            }
            _ => {}
        }
    }

    /// The gate every request passes before the inner service is polled.
    pub(super) fn admit(
        &self,
        t: &Tracker<K>,
        handle: &PeerHandle<K>,
        probes: u32,
        waiter: Option<&Arc<GateWaiter>>,
    ) -> Admission<K> {
        let now = Instant::now();
        let mut st = t.lock();
        let Some(ejection) = st.ejection else {
            return Admission::Open;
        };
        let time_is_over = ejection.until.is_some_and(|until| now >= until);
        if ejection.cause == EjectionCause::Outlier && time_is_over && st.probes_out < probes {
            st.probes_out += 1;
            return Admission::Probe(ProbePermit::new(handle.clone(), st.ejection_generation));
        }
        if let Some(waiter) = waiter {
            register(&mut st.admission_waiters, waiter);
        }
        Admission::Rejected {
            retry_at: ejection.until.filter(|_| !time_is_over),
            cause: ejection.cause,
        }
    }

    /// Ends a probe of the ejection of `generation`; false if that ejection had ended, and the
    /// probe decided nothing.
    pub(super) fn probe_finished<P>(
        &self,
        t: &Tracker<K>,
        generation: u64,
        outcome: ProbeOutcome<P>,
    ) -> bool
    where
        P: FnOnce(EjectionHistory) -> EjectionPlan,
    {
        let now = Instant::now();
        let mut st = t.lock();
        if st.ejection_generation != generation {
            // A probe of an ejection that already ended: it decides nothing.
            return false;
        }
        st.probes_out = st.probes_out.saturating_sub(1);
        match outcome {
            ProbeOutcome::Succeeded => {
                st.ejection_multiplier = st.ejection_multiplier.saturating_sub(1);
                self.end_ejection(t, st, now);
            }
            ProbeOutcome::Failed(plan) => {
                self.eject_as_planned(t, &mut st, plan, now);
                unlock_and_wake(st);
            }
            ProbeOutcome::Released => unlock_and_wake(st),
        }
        true
    }

    /// Health would have ejected the peer but `reason` held it back.
    pub(super) fn skip(
        &self,
        t: &Tracker<K>,
        st: &mut TrackerState,
        reason: SkipReason,
        now: Instant,
    ) {
        st.skipped_ejections += 1;
        t.outcomes.clear_health_failures();
        self.events
            .publish(&t.key, now, EventKind::EjectionSkipped { reason });
    }

    /// Marks the peer ejected (it may be already: a failed probe ejects it again).
    fn begin_ejection(
        &self,
        t: &Tracker<K>,
        st: &mut TrackerState,
        duration: Option<Duration>,
        cause: EjectionCause,
        now: Instant,
    ) {
        st.ejection = Some(Ejection {
            until: duration.map(|d| deadline(now, d)),
            cause,
        });
        st.times_ejected = st.times_ejected.saturating_add(1);
        self.new_generation(st);
        t.outcomes.set_ejected(true);
        t.outcomes.clear_health_failures();
        let times = st.times_ejected;
        self.events.publish(
            &t.key,
            now,
            EventKind::Ejected {
                duration,
                cause,
                times,
            },
        );
    }

    /// An ejection in effect becomes `cause`'s, lasting until it says otherwise: the same
    /// ejection (not counted again), but no longer ended by probes or its time, so watchers
    /// are told its new cause.
    fn take_over_ejection(
        &self,
        t: &Tracker<K>,
        st: &mut TrackerState,
        cause: EjectionCause,
        now: Instant,
    ) {
        st.ejection = Some(Ejection { until: None, cause });
        self.new_generation(st);
        self.events.publish(
            &t.key,
            now,
            EventKind::Ejected {
                duration: None,
                cause,
                times: st.times_ejected,
            },
        );
    }

    fn end_ejection(&self, t: &Tracker<K>, mut st: MutexGuard<'_, TrackerState>, now: Instant) {
        st.ejection = None;
        st.restored_at = Some(now);
        self.new_generation(&mut st);
        t.outcomes.set_ejected(false);
        t.outcomes.clear_health_failures();
        self.events.publish(&t.key, now, EventKind::Restored);
        self.settle(t, &st, PeerState::Ejected, now);
        unlock_and_wake(st);
    }

    /// An outlier ejection for as long as the health policy's `plan` says, from the peer's
    /// history; returns that length.
    fn eject_as_planned(
        &self,
        t: &Tracker<K>,
        st: &mut TrackerState,
        plan: impl FnOnce(EjectionHistory) -> EjectionPlan,
        now: Instant,
    ) -> Duration {
        let plan = plan(history(st));
        st.ejection_multiplier = plan.multiplier;
        self.begin_ejection(t, st, Some(plan.duration), EjectionCause::Outlier, now);
        plan.duration
    }

    /// A new ejection (or its end): probes admitted before no longer count nor decide.
    fn new_generation(&self, st: &mut TrackerState) {
        st.ejection_generation = st.ejection_generation.wrapping_add(1);
        st.probes_out = 0;
    }
}

/// Releases the peer's lock, then wakes the services waiting at its gate: the ejection they
/// waited on changed. Wakers run arbitrary code, which must not find the peer locked.
fn unlock_and_wake(mut st: MutexGuard<'_, TrackerState>) {
    let waiters = std::mem::take(&mut st.admission_waiters);
    drop(st);
    wake_all(waiters);
}

fn history(st: &TrackerState) -> EjectionHistory {
    EjectionHistory {
        multiplier: st.ejection_multiplier,
        restored_at: st.restored_at,
    }
}

/// How many of `total` peers may be ejected at once: `fraction` of them, rounded down, but
/// always one, so a lone peer can still be taken out (it is a circuit breaker then).
fn allowed_ejections(fraction: f64, total: usize) -> usize {
    ((fraction * total as f64).floor() as usize).max(1)
}
