//! The retry budget: how many retries the recent traffic pays for.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{ConfigError, ConfigErrorKind};

/// The window is kept as this many slots, each one tenth of it, rotated as time passes.
const SLOTS: usize = 10;
/// Below this the slots would be shorter than a timer tick.
const MIN_WINDOW: Duration = Duration::from_millis(10);
/// tower's `TpsBudget` allows up to 1000 %; more is a typo, not a policy.
const MAX_RATIO: f64 = 10.0;

/// Bounds retries to a share of recent requests, so that when everything fails the clients
/// add at most that share of load instead of multiplying it by `max_attempts`.
///
/// Every request deposits one; every retry withdraws one and is refused when the retries made
/// in the last `window` would exceed `ratio` × the requests of that window plus
/// `min_per_second` × the window's seconds (the reserve that lets a quiet client still retry).
/// The default is the one Finagle, linkerd and tower's `TpsBudget` share: 20 % over 10 s,
/// plus 10 per second.
///
/// A `Budget` is a handle: clones share the same account, so one budget can bound several
/// layers. It also implements tower's [`retry::budget::Budget`](tower::retry::budget::Budget).
///
/// ```
/// use std::time::Duration;
/// use redial::retry::Budget;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), redial::ConfigError> {
/// let budget = Budget::builder().ratio(0.5).min_per_second(0).build()?;
/// for _ in 0..4 {
///     budget.deposit();
/// }
/// assert!(budget.withdraw());
/// assert!(budget.withdraw());
/// assert!(!budget.withdraw(), "2 retries for 4 requests is 50 %");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Budget {
    inner: Arc<Inner>,
}

struct Inner {
    slot: Duration,
    ratio: f64,
    reserve: f64,
    window: Duration,
    min_per_second: u32,
    account: Mutex<Account>,
}

struct Account {
    /// Start of the newest slot; `None` until first used, so a budget built outside a runtime
    /// reads the clock only when it is used.
    head_started: Option<Instant>,
    head: usize,
    slots: [Slot; SLOTS],
}

#[derive(Clone, Copy, Default)]
struct Slot {
    deposits: u64,
    withdrawals: u64,
}

impl Budget {
    /// A builder starting from the defaults (20 %, 10 per second, 10 s).
    pub fn builder() -> BudgetBuilder {
        BudgetBuilder::default()
    }

    /// A budget that never refuses a retry (other limits such as `max_attempts` still hold).
    pub fn unlimited() -> Self {
        BudgetBuilder {
            ratio: f64::INFINITY,
            ..BudgetBuilder::default()
        }
        .assemble()
    }

    /// Counts one request.
    pub fn deposit(&self) {
        let mut account = self.lock();
        let head = account.rotate(self.inner.slot, Instant::now());
        account.slots[head].deposits += 1;
    }

    /// Takes one retry out of the budget; `false` when the budget is spent (nothing taken).
    pub fn withdraw(&self) -> bool {
        if self.inner.ratio.is_infinite() {
            return true;
        }
        let mut account = self.lock();
        let head = account.rotate(self.inner.slot, Instant::now());
        if self.left(&account) < 1.0 {
            return false;
        }
        account.slots[head].withdrawals += 1;
        true
    }

    /// Retries the budget would allow right now, rounded down.
    pub fn remaining(&self) -> u64 {
        if self.inner.ratio.is_infinite() {
            return u64::MAX;
        }
        let mut account = self.lock();
        account.rotate(self.inner.slot, Instant::now());
        self.left(&account).max(0.0) as u64
    }

    /// Retries the window's traffic pays for, minus those made (fractional: 20 % of 3).
    fn left(&self, account: &Account) -> f64 {
        let (deposits, withdrawals) = account.totals();
        self.inner.reserve + self.inner.ratio * deposits as f64 - withdrawals as f64
    }

    /// The share of requests that may be retried.
    pub fn ratio(&self) -> f64 {
        self.inner.ratio
    }

    /// Retries allowed per second whatever the traffic.
    pub fn min_per_second(&self) -> u32 {
        self.inner.min_per_second
    }

    /// How far back requests and retries are counted.
    pub fn window(&self) -> Duration {
        self.inner.window
    }

    fn lock(&self) -> MutexGuard<'_, Account> {
        // The account is plain counters, valid after any panic elsewhere.
        self.inner
            .account
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for Budget {
    fn default() -> Self {
        BudgetBuilder::default().assemble()
    }
}

impl fmt::Debug for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Budget")
            .field("ratio", &self.inner.ratio)
            .field("min_per_second", &self.inner.min_per_second)
            .field("window", &self.inner.window)
            .finish_non_exhaustive()
    }
}

impl tower::retry::budget::Budget for Budget {
    fn deposit(&self) {
        Budget::deposit(self);
    }

    fn withdraw(&self) -> bool {
        Budget::withdraw(self)
    }
}

impl Account {
    /// Moves the head to the slot covering `now`, clearing the slots that fell out of the
    /// window, and returns its index.
    fn rotate(&mut self, slot: Duration, now: Instant) -> usize {
        let started = *self.head_started.get_or_insert(now);
        let elapsed = now.saturating_duration_since(started);
        let steps = elapsed.as_nanos() / slot.as_nanos().max(1);
        if steps > 0 {
            for _ in 0..steps.min(SLOTS as u128) {
                self.head = (self.head + 1) % SLOTS;
                self.slots[self.head] = Slot::default();
            }
            // `steps` slots of `slot` each fit in `elapsed`, so this cannot overflow.
            let advanced = slot.saturating_mul(u32::try_from(steps).unwrap_or(u32::MAX));
            self.head_started = Some(if steps > SLOTS as u128 {
                now
            } else {
                started + advanced
            });
        }
        self.head
    }

    fn totals(&self) -> (u64, u64) {
        self.slots.iter().fold((0, 0), |(d, w), s| {
            (
                d.saturating_add(s.deposits),
                w.saturating_add(s.withdrawals),
            )
        })
    }
}

/// Configures a [`Budget`]; [`build`](BudgetBuilder::build) validates it.
#[derive(Debug, Clone, Copy)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct BudgetBuilder {
    ratio: f64,
    min_per_second: u32,
    window: Duration,
}

impl Default for BudgetBuilder {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_per_second: 10,
            window: Duration::from_secs(10),
        }
    }
}

impl BudgetBuilder {
    /// Retries allowed per request of the window (default 0.2: 20 %). Between 0 and 10.
    pub fn ratio(mut self, ratio: f64) -> Self {
        self.ratio = ratio;
        self
    }

    /// Retries allowed per second of the window whatever the traffic (default 10), so that a
    /// client sending little can still retry.
    pub fn min_per_second(mut self, per_second: u32) -> Self {
        self.min_per_second = per_second;
        self
    }

    /// How far back requests and retries count (default 10 s, at least 10 ms).
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Checks the values and builds the budget.
    pub fn build(self) -> Result<Budget, ConfigError> {
        let bad =
            |field, kind, detail: String| Err(ConfigError::new("budget", field, kind, detail));
        if !self.ratio.is_finite() {
            return bad(
                "ratio",
                ConfigErrorKind::NotFinite,
                format!(
                    "{} is not a finite number; use e.g. 0.2 for 20 %",
                    self.ratio
                ),
            );
        }
        if self.ratio < 0.0 {
            return bad(
                "ratio",
                ConfigErrorKind::TooSmall,
                format!(
                    "{} is negative; use 0 to allow only the per-second reserve",
                    self.ratio
                ),
            );
        }
        if self.ratio > MAX_RATIO {
            return bad(
                "ratio",
                ConfigErrorKind::TooLarge,
                format!(
                    "{} allows {}x the traffic in retries; the most accepted is {MAX_RATIO} \
                     (use Budget::unlimited() for no budget)",
                    self.ratio, self.ratio
                ),
            );
        }
        if self.window < MIN_WINDOW {
            return bad(
                "window",
                ConfigErrorKind::TooSmall,
                format!(
                    "{:?} is shorter than the minimum {MIN_WINDOW:?}",
                    self.window
                ),
            );
        }
        Ok(self.assemble())
    }

    pub(super) fn assemble(self) -> Budget {
        let window = self.window.max(MIN_WINDOW);
        Budget {
            inner: Arc::new(Inner {
                slot: window / SLOTS as u32,
                ratio: self.ratio,
                reserve: f64::from(self.min_per_second) * window.as_secs_f64(),
                window,
                min_per_second: self.min_per_second,
                account: Mutex::new(Account {
                    head_started: None,
                    head: 0,
                    slots: [Slot::default(); SLOTS],
                }),
            }),
        }
    }
}
