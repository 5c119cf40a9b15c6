//! What a run of check results says about a peer: the thresholds, and what is reported.

use std::error::Error;
use std::sync::Arc;

use tokio::time::Instant;

/// What the checks say about a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckStatus {
    /// Not (or no longer) marked down: checks have not failed `unhealthy_threshold` times in a
    /// row since the peer was added or last came back. Every peer starts here.
    Up,
    /// Marked down after `unhealthy_threshold` failures in a row, until `healthy_threshold`
    /// successes in a row.
    Down,
}

/// The checks' record of one peer, from [`CheckerHandle::status`](super::CheckerHandle::status).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CheckReport {
    /// Up or down, as the thresholds judge the checks.
    pub status: CheckStatus,
    /// Checks that passed in a row, up to now.
    pub consecutive_successes: u32,
    /// Checks that failed in a row, up to now.
    pub consecutive_failures: u32,
    /// Checks finished since the peer was added.
    pub checks: u64,
    /// Of those, the failed ones (timeouts included).
    pub failures: u64,
    /// When the last check finished.
    pub last_check: Option<Instant>,
    /// Why the last failed check failed: the check's error, or a
    /// [`CheckTimedOut`](super::CheckTimedOut); find a type with `downcast_ref`.
    pub last_error: Option<Arc<dyn Error + Send + Sync>>,
}

impl CheckReport {
    pub(super) fn new() -> Self {
        Self {
            status: CheckStatus::Up,
            consecutive_successes: 0,
            consecutive_failures: 0,
            checks: 0,
            failures: 0,
            last_check: None,
            last_error: None,
        }
    }

    /// Counts one result and says whether the status changed: `unhealthy` failures in a row
    /// take an up peer down, `healthy` successes in a row bring a down peer back. Results that
    /// confirm the status change nothing, so the peer's shared state is touched only on a
    /// transition.
    pub(super) fn record(
        &mut self,
        outcome: Result<(), Arc<dyn Error + Send + Sync>>,
        now: Instant,
        unhealthy: u32,
        healthy: u32,
    ) -> Option<CheckStatus> {
        self.checks = self.checks.saturating_add(1);
        self.last_check = Some(now);
        let next = match outcome {
            Ok(()) => {
                self.consecutive_failures = 0;
                self.consecutive_successes = self.consecutive_successes.saturating_add(1);
                (self.status == CheckStatus::Down && self.consecutive_successes >= healthy)
                    .then_some(CheckStatus::Up)
            }
            Err(error) => {
                self.failures = self.failures.saturating_add(1);
                self.last_error = Some(error);
                self.consecutive_successes = 0;
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                (self.status == CheckStatus::Up && self.consecutive_failures >= unhealthy)
                    .then_some(CheckStatus::Down)
            }
        };
        if let Some(status) = next {
            self.status = status;
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(report: &mut CheckReport, results: &str) -> Vec<Option<CheckStatus>> {
        let now = Instant::now();
        results
            .chars()
            .map(|c| {
                let outcome = if c == '+' {
                    Ok(())
                } else {
                    Err(Arc::from(Box::<dyn Error + Send + Sync>::from("down")))
                };
                report.record(outcome, now, 3, 2)
            })
            .collect()
    }

    #[test]
    fn thresholds_count_results_in_a_row_and_report_only_transitions() {
        use CheckStatus::{Down, Up};
        let mut report = CheckReport::new();
        // Two failures, a success breaks the run; then three in a row take it down; more
        // failures change nothing; a success and a failure break the run of successes; two
        // in a row bring it back.
        let transitions = run(&mut report, "--+----+-++-");
        assert_eq!(
            transitions,
            [
                None,
                None,
                None,
                None,
                None,
                Some(Down),
                None,
                None,
                None,
                None,
                Some(Up),
                None
            ]
        );
        assert_eq!(report.status, Up);
        assert_eq!(report.consecutive_failures, 1);
        assert_eq!((report.checks, report.failures), (12, 8));
        assert!(report.last_error.is_some());
    }

    #[test]
    fn an_up_peer_stays_up_on_successes() {
        let mut report = CheckReport::new();
        assert!(run(&mut report, "+++++").iter().all(Option::is_none));
        assert_eq!(report.consecutive_successes, 5);
    }
}
