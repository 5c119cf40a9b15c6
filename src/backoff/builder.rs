//! Building a [`Backoff`] and validating every field.

use std::time::Duration;

use super::{Backoff, Jitter};
use crate::error::{ConfigError, ConfigErrorKind};

/// Builds a [`Backoff`]; [`build`](BackoffBuilder::build) checks every field.
///
/// Starts from the values of the policy it was made from ([`Backoff::builder`] starts from the
/// default). Setters take any value; only `build` judges them, so a configuration read from a file
/// can be passed through unchecked and the error reported with the field's name.
#[derive(Debug, Clone, Copy, PartialEq)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct BackoffBuilder {
    draft: Backoff,
}

impl From<Backoff> for BackoffBuilder {
    fn from(draft: Backoff) -> Self {
        Self { draft }
    }
}

impl BackoffBuilder {
    /// The first delay, before jitter. Must be greater than zero and at most `max`.
    pub fn initial(mut self, initial: Duration) -> Self {
        self.draft.initial = initial;
        self
    }

    /// Growth per retry. Must be finite and at least 1.0 (1.0 gives a constant delay).
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.draft.multiplier = multiplier;
        self
    }

    /// The cap on un-jittered delays. Must be greater than zero.
    pub fn max(mut self, max: Duration) -> Self {
        self.draft.max = max;
        self
    }

    /// The jitter kind. A [`Jitter::Proportional`] ratio must be finite and within `[0, 1]`.
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.draft.jitter = jitter;
        self
    }

    /// At most this many attempts, the first included (so `1` never retries). Must be at least 1.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.draft.max_attempts = Some(attempts);
        self
    }

    /// Retry forever (the default).
    pub fn unlimited_attempts(mut self) -> Self {
        self.draft.max_attempts = None;
        self
    }

    /// Stop handing out delays once this much time has passed since the first one; the last
    /// delay is cut to end at the limit. Must be greater than zero.
    pub fn max_elapsed(mut self, limit: Duration) -> Self {
        self.draft.max_elapsed = Some(limit);
        self
    }

    /// No limit on time spent retrying (the default).
    pub fn unlimited_elapsed(mut self) -> Self {
        self.draft.max_elapsed = None;
        self
    }

    /// Fix the seed of the jitter generator: every schedule made from the policy then produces
    /// the same delays.
    pub fn seed(mut self, seed: u64) -> Self {
        self.draft.seed = Some(seed);
        self
    }

    /// Checks every field and returns the policy, or the first field that is wrong.
    pub fn build(self) -> Result<Backoff, ConfigError> {
        let b = self.draft;
        let err =
            |field, kind, detail: String| Err(ConfigError::new("backoff", field, kind, detail));

        if b.initial.is_zero() {
            return err(
                "initial",
                ConfigErrorKind::Zero,
                "must be greater than zero (a zero delay retries in a busy loop)".into(),
            );
        }
        if b.max.is_zero() {
            return err(
                "max",
                ConfigErrorKind::Zero,
                "must be greater than zero".into(),
            );
        }
        if b.initial > b.max {
            return err(
                "initial",
                ConfigErrorKind::Inconsistent,
                format!("{:?} is above `max` {:?}", b.initial, b.max),
            );
        }
        if !b.multiplier.is_finite() {
            return err(
                "multiplier",
                ConfigErrorKind::NotFinite,
                format!(
                    "must be a finite number of at least 1.0 (got {})",
                    b.multiplier
                ),
            );
        }
        if b.multiplier < 1.0 {
            return err(
                "multiplier",
                ConfigErrorKind::TooSmall,
                format!(
                    "must be at least 1.0 so delays never shrink (got {})",
                    b.multiplier
                ),
            );
        }
        if let Jitter::Proportional(ratio) = b.jitter {
            if !ratio.is_finite() {
                return err(
                    "jitter",
                    ConfigErrorKind::NotFinite,
                    format!("proportional ratio must be finite, within [0, 1] (got {ratio})"),
                );
            }
            if !(0.0..=1.0).contains(&ratio) {
                return err(
                    "jitter",
                    ConfigErrorKind::outside(ratio, 0.0),
                    format!("proportional ratio must be within [0, 1] (got {ratio})"),
                );
            }
        }
        if b.max_attempts == Some(0) {
            return err(
                "max_attempts",
                ConfigErrorKind::Zero,
                "must be at least 1, the first attempt (use `Backoff::disabled()` for no retries)"
                    .into(),
            );
        }
        if b.max_elapsed.is_some_and(|d| d.is_zero()) {
            return err(
                "max_elapsed",
                ConfigErrorKind::Zero,
                "must be greater than zero".into(),
            );
        }
        Ok(b)
    }
}
