//! One call of the connector: wait for the peer's gate, attempt, retry with backoff.

use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, sleep_until, timeout, timeout_at};
use tower::{BoxError, Service};

use super::builder::ConnectSettings;
use super::handoff::Handoff;
use crate::error::Chain;
use crate::peers::{AttemptDenied, NextAttempt, PeerHandle, PeerKey, PeerState};
use crate::reconnect::{ConnectTimeout, Exhausted, Unavailable};
use crate::rng;
use crate::time;

fn deadline_after(delay: Duration) -> Instant {
    time::deadline(Instant::now(), delay)
}

/// Connects to `target` through `inner`, following the peer's schedule. `replay` makes the
/// target for a further attempt, or says there can be none (targets that cannot be cloned).
pub(super) async fn connect<C, T, K, H>(
    mut inner: C,
    target: T,
    replay: fn(&T) -> Option<T>,
    peer: PeerHandle<K>,
    settings: Arc<ConnectSettings>,
) -> Result<H::Output, BoxError>
where
    C: Service<T>,
    C::Error: Into<BoxError>,
    K: PeerKey,
    H: Handoff<K, C::Response>,
{
    let started = Instant::now();
    let deadline = settings.call_deadline.and_then(|d| started.checked_add(d));
    let mut target = target;
    let mut tries = 0u32;
    loop {
        if deadline.is_some_and(|at| Instant::now() >= at) {
            return Err(unavailable(&peer, started));
        }
        let denied = match peer.try_begin_attempt_until(deadline_after(settings.connect_timeout)) {
            Ok(attempt) => {
                tries += 1;
                let again = match tries < settings.attempts_per_call {
                    true => replay(&target),
                    false => None,
                };
                let attempt_ends = deadline_after(settings.connect_timeout);
                let connect = attempt_once(&mut inner, target, settings.connect_timeout);
                let outcome = match deadline.filter(|at| *at < attempt_ends) {
                    // The call's deadline comes first: it bounds the attempt too, but cutting
                    // an attempt short is the caller's impatience, not the peer's failure, so
                    // the attempt is cancelled rather than counted as failed.
                    Some(at) => match timeout_at(at, connect).await {
                        Ok(outcome) => outcome,
                        Err(_) => {
                            drop(attempt);
                            return Err(unavailable(&peer, started));
                        }
                    },
                    None => connect.await,
                };
                let error = match outcome {
                    Ok(io) => return Ok(H::hand_over(attempt, io, settings.stable_after)),
                    Err(error) => error,
                };
                match (attempt.failed(&Chain(&*error)), again) {
                    (NextAttempt::After(_), Some(next)) => {
                        target = next;
                        continue;
                    }
                    _ => return Err(error),
                }
            }
            Err(denied) => denied,
        };
        match denied {
            AttemptDenied::Backoff { until } => {
                if deadline.is_some_and(|d| until >= d) {
                    return Err(unavailable(&peer, started));
                }
                sleep_until(until).await;
            }
            AttemptDenied::InFlight => {
                let finished = poll_fn(|cx| peer.poll_attempt_finished(cx));
                // Wait for the probe, but no later than its own deadline (then the gate is
                // taken over, should its owner have stopped driving it) or the call's.
                let until = match (deadline, peer.probe_deadline()) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                match until {
                    Some(at) => {
                        if timeout_at(at, finished).await.is_err()
                            && deadline.is_some_and(|d| Instant::now() >= d)
                        {
                            return Err(unavailable(&peer, started));
                        }
                    }
                    None => finished.await,
                }
                // Only a peer with connections up lets followers connect side by side; after a
                // detached hand-off they go one at a time through the gate anyway.
                if peer.state() == PeerState::Connected {
                    // The probe got through: follow it, but not all in the same instant.
                    let mut rng = rng::generator(peer.derive_seed());
                    let stagger = settings.stagger.mul_f64(rng::unit(&mut rng));
                    let until = deadline_after(stagger);
                    sleep_until(deadline.map_or(until, |at| at.min(until))).await;
                }
            }
            AttemptDenied::Exhausted => {
                return Err(Box::new(Exhausted::of(&peer, label(&peer))));
            }
        }
    }
}

async fn attempt_once<C, T>(
    inner: &mut C,
    target: T,
    limit: Duration,
) -> Result<C::Response, BoxError>
where
    C: Service<T>,
    C::Error: Into<BoxError>,
{
    let connect = async {
        poll_fn(|cx| inner.poll_ready(cx))
            .await
            .map_err(Into::into)?;
        inner.call(target).await.map_err(Into::into)
    };
    match timeout(limit, connect).await {
        Ok(result) => result,
        Err(_) => Err(Box::new(ConnectTimeout { after: limit })),
    }
}

fn label<K: PeerKey>(peer: &PeerHandle<K>) -> Arc<str> {
    Arc::from(format!("{:?}", peer.key()))
}

fn unavailable<K: PeerKey>(peer: &PeerHandle<K>, started: Instant) -> BoxError {
    Box::new(Unavailable::of(peer, label(peer), started))
}
