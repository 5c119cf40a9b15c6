//! Backoff schedules: how long to wait before the next attempt.
//!
//! A [`Backoff`] is a validated, immutable policy (initial delay, multiplier, cap, [`Jitter`],
//! attempt and time limits). A [`Schedule`] is one run of it: it counts attempts, remembers the
//! previous delay and owns its random number generator. Every layer of redial takes a `Backoff`,
//! and [`Peers`](crate::peers::Peers) keeps one `Schedule` per peer, so all connections of a
//! process to a peer follow the same schedule.
//!
//! ```
//! use std::time::Duration;
//! use redial::backoff::{Backoff, Jitter};
//!
//! # fn main() -> Result<(), redial::ConfigError> {
//! let backoff = Backoff::builder()
//!     .initial(Duration::from_millis(100))
//!     .multiplier(2.0)
//!     .max(Duration::from_secs(5))
//!     .jitter(Jitter::None)
//!     .max_attempts(4)
//!     .build()?;
//!
//! let mut schedule = backoff.schedule();
//! assert_eq!(schedule.next_delay(), Some(Duration::from_millis(100)));
//! assert_eq!(schedule.next_delay(), Some(Duration::from_millis(200)));
//! assert_eq!(schedule.next_delay(), Some(Duration::from_millis(400)));
//! // Four attempts in all: the first one plus three retries.
//! assert_eq!(schedule.next_delay(), None);
//!
//! schedule.reset();
//! assert_eq!(schedule.next_delay(), Some(Duration::from_millis(100)));
//! # Ok(())
//! # }
//! ```
//!
//! Bad input never panics: the builder returns a [`ConfigError`](crate::ConfigError) naming the
//! field, and attempt numbers far past the point where the delay reaches `max` saturate there.
//!
//! `Backoff` also implements tower's [`MakeBackoff`](tower::retry::backoff::MakeBackoff) and
//! `Schedule` its [`Backoff`](tower::retry::backoff::Backoff) trait, so a tower `retry::Policy`
//! can use a redial schedule as is.

mod builder;
mod jitter;
mod schedule;
mod tower_impl;

use std::time::Duration;

pub use builder::BackoffBuilder;
pub use jitter::Jitter;
pub use schedule::Schedule;

use crate::rng;

/// A validated backoff policy. Build one with [`Backoff::builder`] or take a preset.
///
/// The un-jittered delay before retry `n` (counting from 0) is
/// `min(max, initial × multiplier^n)`; [`Jitter`] then randomises it. `max_attempts` counts every
/// attempt, the first included, so `max_attempts(1)` means "never retry".
///
/// | preset | initial | multiplier | max | jitter | attempts |
/// |---|---|---|---|---|---|
/// | [`default`](Backoff::default) | 100 ms | 2 | 30 s | full | unlimited |
/// | [`grpc`](Backoff::grpc) | 1 s | 1.6 | 120 s | ±20 % | unlimited |
/// | [`aggressive`](Backoff::aggressive) | 50 ms | 1.5 | 10 s | full | 20 |
/// | [`conservative`](Backoff::conservative) | 5 s | 2 | 300 s | full | 5 |
/// | [`disabled`](Backoff::disabled) | – | – | – | – | 1 (no retry) |
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    initial: Duration,
    multiplier: f64,
    max: Duration,
    jitter: Jitter,
    max_attempts: Option<u32>,
    max_elapsed: Option<Duration>,
    seed: Option<u64>,
}

impl Default for Backoff {
    /// 100 ms doubling to 30 s with full jitter, retrying forever.
    ///
    /// A reconnecting client should not give up on its own by default; callers are protected
    /// from waiting forever by fail-fast, not by a retry cap.
    fn default() -> Self {
        Self::from_parts(
            Duration::from_millis(100),
            2.0,
            Duration::from_secs(30),
            Jitter::Full,
            None,
        )
    }
}

impl Backoff {
    /// Starts a builder from the [default](Backoff::default) policy.
    pub fn builder() -> BackoffBuilder {
        BackoffBuilder::from(Self::default())
    }

    /// gRPC's connection backoff: 1 s growing ×1.6 to 120 s, ±20 % jitter, unlimited attempts.
    pub fn grpc() -> Self {
        Self::from_parts(
            Duration::from_secs(1),
            1.6,
            Duration::from_secs(120),
            Jitter::Proportional(0.2),
            None,
        )
    }

    /// For fast local networks: 50 ms growing ×1.5 to 10 s, full jitter, 20 attempts.
    pub fn aggressive() -> Self {
        Self::from_parts(
            Duration::from_millis(50),
            1.5,
            Duration::from_secs(10),
            Jitter::Full,
            Some(20),
        )
    }

    /// For unreliable or expensive peers: 5 s doubling to 300 s, full jitter, 5 attempts.
    pub fn conservative() -> Self {
        Self::from_parts(
            Duration::from_secs(5),
            2.0,
            Duration::from_secs(300),
            Jitter::Full,
            Some(5),
        )
    }

    /// One attempt and no retry.
    pub fn disabled() -> Self {
        Self {
            max_attempts: Some(1),
            ..Self::default()
        }
    }

    const fn from_parts(
        initial: Duration,
        multiplier: f64,
        max: Duration,
        jitter: Jitter,
        max_attempts: Option<u32>,
    ) -> Self {
        Self {
            initial,
            multiplier,
            max,
            jitter,
            max_attempts,
            max_elapsed: None,
            seed: None,
        }
    }

    /// A builder holding this policy's values, to change some of them.
    pub fn to_builder(&self) -> BackoffBuilder {
        BackoffBuilder::from(*self)
    }

    /// The first delay, before jitter.
    pub fn initial(&self) -> Duration {
        self.initial
    }

    /// How much each delay grows over the previous one, before jitter.
    pub fn multiplier(&self) -> f64 {
        self.multiplier
    }

    /// The cap on un-jittered delays.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The jitter kind.
    pub fn jitter(&self) -> Jitter {
        self.jitter
    }

    /// The limit on attempts, the first included; `None` retries forever.
    pub fn max_attempts(&self) -> Option<u32> {
        self.max_attempts
    }

    /// The limit on time spent retrying, counted from the first delay of a schedule.
    pub fn max_elapsed(&self) -> Option<Duration> {
        self.max_elapsed
    }

    /// The seed of the jitter generator, if one was fixed.
    pub fn seed(&self) -> Option<u64> {
        self.seed
    }

    /// The largest delay this policy can hand out, jitter included.
    pub fn upper_bound(&self) -> Duration {
        match self.jitter {
            Jitter::Proportional(ratio) => jitter::proportional_bound(self.max, ratio),
            _ => self.max,
        }
    }

    /// The un-jittered delay before retry `retry` (0 is the first retry), capped at `max`.
    ///
    /// Monotone in `retry` and saturating: any `u32`, however large, is fine.
    pub fn delay(&self, retry: u32) -> Duration {
        let growth = self.multiplier.powf(f64::from(retry));
        let secs = self.initial.as_secs_f64() * growth;
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            return self.max;
        }
        jitter::secs_saturating(secs, self.max).min(self.max)
    }

    /// A fresh schedule. Seeded from [`seed`](Backoff::seed) if set, else at random.
    pub fn schedule(&self) -> Schedule {
        Schedule::new(*self, self.seed.unwrap_or_else(rng::random_seed))
    }

    /// A fresh schedule whose jitter comes from `seed`: the same seed gives the same delays.
    pub fn schedule_seeded(&self, seed: u64) -> Schedule {
        Schedule::new(*self, seed)
    }
}
