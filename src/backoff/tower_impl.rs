//! tower's `retry::backoff` traits, so tower users can plug a redial policy in as is.

use tower::retry::backoff::{Backoff as TowerBackoff, MakeBackoff};

use super::{Backoff, Schedule};
use crate::rng;

/// Makes a fresh [`Schedule`] per retried request.
///
/// With a fixed [`seed`](Backoff::seed), each schedule made here gets the next seed of a
/// sequence derived from it: runs repeat exactly, yet concurrent retries do not draw the same
/// jitter and fire in lockstep.
///
/// ```
/// use tower::retry::backoff::{Backoff as _, MakeBackoff};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut policy = redial::backoff::Backoff::aggressive();
/// let mut schedule = policy.make_backoff();
/// schedule.next_backoff().await; // sleeps up to 50 ms
/// # }
/// ```
impl MakeBackoff for Backoff {
    type Backoff = Schedule;

    fn make_backoff(&mut self) -> Schedule {
        let schedule = self.schedule();
        if let Some(seed) = self.seed {
            self.seed = Some(rng::derive_seed(seed, 0));
        }
        schedule
    }
}

/// Sleeps for the next delay. tower's trait has no way to say "stop", so `max_attempts` and
/// `max_elapsed` are not applied here (even [`Backoff::disabled`] keeps sleeping): stopping is
/// the tower retry policy's decision. The delay saturates at the policy's bound.
impl TowerBackoff for Schedule {
    type Future = tokio::time::Sleep;

    fn next_backoff(&mut self) -> Self::Future {
        tokio::time::sleep(self.next_delay_unbounded())
    }
}
