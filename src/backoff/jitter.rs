//! The menu of jitter kinds and the arithmetic of each.

use std::time::Duration;

use rand::rngs::Xoshiro256PlusPlus;

use crate::rng::unit;

/// How a backoff delay is randomised.
///
/// Jitter spreads retries of many clients over time so that they do not hit a recovering peer in
/// the same instant. AWS measured full jitter doing about half the work of un-jittered exponential
/// backoff; it is redial's default.
///
/// With `d` the un-jittered delay of the current step (never above the schedule's `max`):
///
/// | kind | delay | bound |
/// |---|---|---|
/// | [`None`](Jitter::None) | `d` | `max` |
/// | [`Full`](Jitter::Full) | uniform in `[0, d]` | `max` |
/// | [`Equal`](Jitter::Equal) | `d/2` + uniform in `[0, d/2]` | `max` |
/// | [`Decorrelated`](Jitter::Decorrelated) | uniform in `[initial, 3 × previous]`, capped at `max` | `max` |
/// | [`Proportional(r)`](Jitter::Proportional) | `d` × uniform in `[1 − r, 1 + r]` | `max × (1 + r)` |
///
/// `Proportional` is the only kind that may exceed `max`, by at most the ratio: it is gRPC's
/// connection backoff, which applies ±20 % after capping. `Decorrelated` ignores the multiplier:
/// its growth comes from the previous delay.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub enum Jitter {
    /// No randomness: the exact exponential schedule.
    None,
    /// Uniform in `[0, d]`.
    #[default]
    Full,
    /// Half fixed, half random: `d/2 + U(0, d/2)`.
    Equal,
    /// AWS's decorrelated jitter: `min(max, U(initial, 3 × previous))`.
    Decorrelated,
    /// `d × U(1 − r, 1 + r)` for a ratio `r` in `[0, 1]`.
    Proportional(f64),
}

impl Jitter {
    /// Applies this jitter to the un-jittered delay `base`.
    ///
    /// `previous` is the delay handed out last (for [`Decorrelated`](Jitter::Decorrelated)),
    /// `initial` and `max` are the schedule's bounds.
    pub(crate) fn apply(
        self,
        base: Duration,
        previous: Duration,
        initial: Duration,
        max: Duration,
        rng: &mut Xoshiro256PlusPlus,
    ) -> Duration {
        let base_s = base.as_secs_f64();
        // `ceiling` is the kind's documented bound: the float arithmetic below can round a few
        // nanoseconds past it (a `Duration` has more precision than an `f64` of seconds), so the
        // result is clamped to it.
        let (secs, ceiling) = match self {
            Jitter::None => return base,
            Jitter::Full => (base_s * unit(rng), base),
            Jitter::Equal => (base_s / 2.0 + base_s / 2.0 * unit(rng), base),
            Jitter::Decorrelated => {
                let low = initial.as_secs_f64();
                let high = (previous.as_secs_f64() * 3.0).max(low);
                ((low + (high - low) * unit(rng)).min(max.as_secs_f64()), max)
            }
            Jitter::Proportional(ratio) => (
                base_s * (1.0 - ratio + 2.0 * ratio * unit(rng)),
                proportional_bound(max, ratio),
            ),
        };
        secs_saturating(secs, ceiling).min(ceiling)
    }
}

/// `max × (1 + ratio)`, the bound of [`Jitter::Proportional`], saturating at `Duration::MAX`.
pub(crate) fn proportional_bound(max: Duration, ratio: f64) -> Duration {
    secs_saturating(max.as_secs_f64() * (1.0 + ratio), Duration::MAX)
}

/// Converts seconds to a `Duration`, mapping anything unrepresentable (NaN, negative, too large)
/// to the nearest sensible value instead of panicking as `Duration::from_secs_f64` would.
pub(crate) fn secs_saturating(secs: f64, fallback_max: Duration) -> Duration {
    if secs.is_nan() || secs <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(secs).unwrap_or(fallback_max)
}
