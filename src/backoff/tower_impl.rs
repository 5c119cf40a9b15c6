//! tower's `retry::backoff` traits, so tower users can plug a redial policy in as is.

use tower::retry::backoff::{Backoff as TowerBackoff, MakeBackoff};

use super::{Backoff, Schedule};

/// Makes a fresh [`Schedule`] per retried request.
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
        self.schedule()
    }
}

/// Sleeps for the next delay. tower's trait has no way to say "stop", so the attempt and time
/// limits are left to the tower retry policy and the delay saturates at the policy's bound.
impl TowerBackoff for Schedule {
    type Future = tokio::time::Sleep;

    fn next_backoff(&mut self) -> Self::Future {
        tokio::time::sleep(self.next_delay_unbounded())
    }
}
