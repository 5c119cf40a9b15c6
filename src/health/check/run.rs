//! The loop that checks one peer: wait, check under the timeout, count, and act on
//! transitions.

use std::error::Error;
use std::sync::Arc;

use tokio::time::{Instant, sleep_until, timeout};

use super::builder::Config;
use super::set::BoxFuture;
use super::task::Registry;
use super::verdict::{CheckReport, CheckStatus};
use super::{CheckTimedOut, HealthCheck};
use crate::error::Chain;
use crate::peers::{EjectionCause, PeerHandle, PeerKey};
use crate::rng;
use crate::time::deadline;

/// The loop for `peer`, never ending: the checker drops it to stop checking the peer.
pub(super) fn check_loop<K, C>(
    check: Arc<C>,
    config: Arc<Config>,
    registry: Arc<Registry<K>>,
    peer: PeerHandle<K>,
    generation: u64,
) -> BoxFuture
where
    K: PeerKey,
    C: HealthCheck<K> + Send + Sync + 'static,
{
    Box::pin(async move {
        let mut rng = rng::generator(rng::derive_seed(config.seed, generation));
        let mut run = Run {
            peer,
            report: CheckReport::new(),
            registry,
            generation,
        };
        let mut next = deadline(Instant::now(), config.next_interval(&mut rng));
        loop {
            sleep_until(next).await;
            let started = Instant::now();
            let outcome = match timeout(config.timeout, check.check(run.peer.key())).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(Arc::from(error)),
                Err(_) => Err(Arc::new(CheckTimedOut {
                    after: config.timeout,
                }) as Arc<dyn Error + Send + Sync>),
            };
            let now = Instant::now();
            run.record(outcome, now, &config);
            // Checks start an interval apart; one that outlasted its interval is followed by
            // the next an interval after it ended, rather than at once.
            let planned = deadline(started, config.next_interval(&mut rng));
            next = if planned > now {
                planned
            } else {
                deadline(now, config.next_interval(&mut rng))
            };
        }
    })
}

/// One peer's checks so far. Dropped with the loop, when the peer is removed or the checker
/// stops.
struct Run<K: PeerKey> {
    peer: PeerHandle<K>,
    report: CheckReport,
    registry: Arc<Registry<K>>,
    generation: u64,
}

impl<K: PeerKey> Run<K> {
    fn record(
        &mut self,
        outcome: Result<(), Arc<dyn Error + Send + Sync>>,
        now: Instant,
        config: &Config,
    ) {
        let key = self.peer.key();
        if let Err(error) = &outcome {
            tracing::debug!(
                peer = ?key,
                error = %Chain(&**error),
                failures = self.report.consecutive_failures.saturating_add(1),
                "health check failed"
            );
        }
        let transition = self
            .report
            .record(outcome, now, config.unhealthy, config.healthy);
        // Published before the peer's state changes, so that whoever sees the change (a
        // health watch, an event) finds the report that explains it.
        self.registry.publish(key, self.generation, &self.report);
        match transition {
            Some(CheckStatus::Down) => {
                // False when the peer cannot be ejected (forced closed, exhausted, or ejected
                // by hand); the peer's own events say why.
                let ejected = self.peer.eject_by_check();
                tracing::info!(
                    peer = ?key,
                    failures = self.report.consecutive_failures,
                    ejected,
                    "health check marked peer down"
                );
            }
            Some(CheckStatus::Up) => {
                // Ends an outlier ejection as well as the check's own: the peer answers again
                // (Envoy does the same). A manual ejection stays.
                let restored = self.peer.restore_by_check();
                tracing::info!(
                    peer = ?key,
                    successes = self.report.consecutive_successes,
                    restored,
                    "health check marked peer up"
                );
            }
            None => {}
        }
    }
}

impl<K: PeerKey> Drop for Run<K> {
    /// An ejection by check ends only by check: once nobody checks the peer any more, it is
    /// handed back to passive health rather than left out of use for good.
    fn drop(&mut self) {
        let ejected_by_check = matches!(self.peer.ejection(), Some((_, EjectionCause::Check)));
        if self.report.status == CheckStatus::Down && ejected_by_check {
            self.peer.restore_by_check();
            tracing::info!(peer = ?self.peer.key(), "health check stopped; peer restored");
        }
    }
}
