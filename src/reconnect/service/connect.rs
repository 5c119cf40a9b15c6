//! Connecting: asking the peer's gate for an attempt, driving it, and what to wait for next.

use std::future::Future;
use std::mem;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower::{BoxError, Service};

use super::handover::ConnectAttempt;
use super::{Readiness, Reconnect, State};
use crate::error::Chain;
use crate::peers::{AttemptDenied, NextAttempt, PeerKey, PeerState};
use crate::reconnect::ConnectTimeout;
use crate::reconnect::connection::OpenConnection;
use crate::reconnect::future::CallReport;
use crate::time::deadline;

/// How a connect step ended.
pub(super) enum Step {
    /// The state changed: look again.
    Again,
    /// A failed attempt allows the next one at once: yield before trying, so that a connector
    /// failing instantly with a zero delay cannot spin inside one `poll_ready`.
    Yield,
    /// Nothing to do until woken or until this instant.
    Wait(Instant),
    /// The peer is up (this service follows another's successful probe, or connects beside
    /// working connections): wait pending until this instant, even past the fail-fast window,
    /// which is about the peer being unreachable. Bounded by the stagger or the connect timeout.
    Hold(Instant),
}

/// State changes one `poll_ready` may go through before it yields. The shared peer state
/// never allows an endless run of immediate retries, but a bound here does not depend on it.
pub(super) const MAX_STEPS_PER_POLL: usize = 16;

impl<M, T, K> Reconnect<M, T, K>
where
    M: Service<T>,
    M::Error: Into<BoxError>,
    T: Clone,
    K: PeerKey,
{
    /// Asks the peer's gate for an attempt and starts it, or says how long to wait.
    pub(super) fn start(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Result<Step, Poll<Result<(), BoxError>>> {
        // Before anything else: the gate is held by this attempt, which only the family can
        // finish.
        if self.take_left() {
            return Ok(Step::Again);
        }
        let now = Instant::now();
        if self.following {
            self.following = false;
            if !self.settings.stagger.is_zero() && self.peer.state() == PeerState::Connected {
                let stagger = self.stagger();
                self.stagger_until = Some(deadline(now, stagger));
            }
        }
        if let Some(at) = self.stagger_until {
            if now < at {
                return Ok(Step::Hold(at));
            }
            self.stagger_until = None;
        }
        let attempt_deadline = deadline(now, self.settings.connect_timeout);
        match self.peer.try_begin_attempt_until(attempt_deadline) {
            Ok(attempt) => {
                self.state = State::Connecting(ConnectAttempt {
                    attempt,
                    future: None,
                    deadline: attempt_deadline,
                });
                Ok(Step::Again)
            }
            Err(AttemptDenied::Backoff { until }) => Ok(Step::Wait(until)),
            Err(AttemptDenied::InFlight) => match self.peer.poll_attempt_finished(cx) {
                Poll::Ready(()) => Ok(Step::Again),
                Poll::Pending => {
                    // A member may have left the attempt after the look above and woken the
                    // gate's waiters before this task was one of them: look again, now that
                    // it is.
                    if self.take_left() {
                        return Ok(Step::Again);
                    }
                    self.following = true;
                    // Woken when the probe ends, or at its deadline should its owner stop
                    // driving it: then this service takes the gate over.
                    let deadline = self.peer.probe_deadline();
                    Err(self.not_ready(cx, deadline))
                }
            },
            Err(AttemptDenied::Exhausted) => {
                if let Some(cooldown) = self.settings.exhausted_cooldown {
                    // The peer's clock, not this service's: every service of the peer agrees
                    // on when the cool-down ends, so the peer is reset once, not once each.
                    let since = self.peer.exhausted_at().unwrap_or(now);
                    let at = deadline(since, cooldown);
                    if now >= at {
                        self.peer.reset();
                        return Ok(Step::Again);
                    }
                    self.arm(cx, at);
                }
                self.ready = Readiness::Exhausted;
                Err(Poll::Ready(Ok(())))
            }
        }
    }

    /// Takes on the attempt another member of the family left, if any. This service drives
    /// it now: it follows nobody's probe, and holds for no stagger once it ends.
    fn take_left(&mut self) -> bool {
        let Some(left) = self.handover.take() else {
            return false;
        };
        self.following = false;
        self.stagger_until = None;
        self.state = State::Connecting(left);
        true
    }

    /// Drives the connect attempt under way.
    pub(super) fn connect(&mut self, cx: &mut Context<'_>) -> Step {
        let State::Connecting(ConnectAttempt {
            attempt,
            future,
            deadline,
        }) = &mut self.state
        else {
            return Step::Again;
        };
        let deadline = *deadline;
        // A probe may be hanging on an unreachable peer, so fail-fast applies while it runs;
        // any other attempt runs beside working connections to a peer known to be up.
        let wait = match attempt.is_probe() {
            true => Step::Wait(deadline),
            false => Step::Hold(deadline),
        };
        let outcome = if Instant::now() >= deadline {
            Err(Box::new(ConnectTimeout {
                after: self.settings.connect_timeout,
            }) as BoxError)
        } else {
            let future = match future {
                Some(future) => future,
                None => match self.connector.poll_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        future.insert(Box::pin(self.connector.call(self.target.clone())))
                    }
                    Poll::Ready(Err(error)) => return self.failed(error.into()),
                    Poll::Pending => return wait,
                },
            };
            match future.as_mut().poll(cx) {
                Poll::Ready(Ok(service)) => Ok(service),
                Poll::Ready(Err(error)) => Err(error.into()),
                Poll::Pending => return wait,
            }
        };
        match outcome {
            Ok(service) => {
                if let State::Connecting(ConnectAttempt { attempt, .. }) =
                    mem::replace(&mut self.state, State::Idle)
                {
                    attempt.succeeded();
                }
                let report = Arc::new(CallReport::new(
                    self.peer.clone(),
                    self.settings.broken.clone(),
                ));
                self.state = State::Connected {
                    service,
                    connection: OpenConnection::new(self.peer.clone(), self.settings.stable_after),
                    report,
                };
                Step::Again
            }
            Err(error) => self.failed(error),
        }
    }

    fn failed(&mut self, error: BoxError) -> Step {
        let State::Connecting(ConnectAttempt { attempt, .. }) =
            mem::replace(&mut self.state, State::Idle)
        else {
            return Step::Again;
        };
        match attempt.failed(&Chain(&*error)) {
            NextAttempt::After(delay) if delay.is_zero() => Step::Yield,
            _ => Step::Again,
        }
    }
}
