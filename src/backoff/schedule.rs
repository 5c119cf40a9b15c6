//! One run of a backoff policy.

use std::time::Duration;

use rand::rngs::Xoshiro256PlusPlus;
use tokio::time::Instant;

use super::Backoff;
use crate::rng;

/// The state of one run through a [`Backoff`] policy: how many retries it has handed out, the
/// previous delay (for decorrelated jitter), when the run started, and its random generator.
///
/// Call [`next_delay`](Schedule::next_delay) after each failure; `None` means the policy's
/// attempt or time limit is reached. Call [`reset`](Schedule::reset) once the operation has
/// proven to work again.
///
/// Time is read from [`tokio::time::Instant`], so `tokio::time::pause` controls `max_elapsed`.
#[derive(Debug, Clone)]
pub struct Schedule {
    policy: Backoff,
    retries: u32,
    previous: Duration,
    started: Option<Instant>,
    /// A limit was reached: no more delays until `reset`, whatever the jitter would draw.
    done: bool,
    rng: Xoshiro256PlusPlus,
}

impl Schedule {
    pub(crate) fn new(policy: Backoff, seed: u64) -> Self {
        Self {
            policy,
            retries: 0,
            previous: policy.initial,
            started: None,
            done: false,
            rng: rng::generator(seed),
        }
    }

    /// The policy this schedule runs.
    pub fn policy(&self) -> &Backoff {
        &self.policy
    }

    /// How many delays this run has handed out since the last reset.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// The 1-based number of the attempt that comes next (1 right after a reset).
    pub fn next_attempt(&self) -> u32 {
        self.retries.saturating_add(1)
    }

    /// Time since the first delay of this run, if one was handed out.
    pub fn elapsed(&self) -> Option<Duration> {
        self.started.map(|s| s.elapsed())
    }

    /// Whether another attempt is allowed by `max_attempts` (time is checked by `next_delay`).
    pub fn has_attempts_left(&self) -> bool {
        match self.policy.max_attempts {
            // `retries` delays handed out mean `retries + 1` attempts made or granted.
            Some(max) => self.retries.saturating_add(1) < max,
            None => true,
        }
    }

    /// The delay before the next attempt, or `None` when the attempt or time limit is reached.
    ///
    /// With `max_elapsed`, the last delay is cut so that the final attempt happens at the limit,
    /// not after it; once the limit is reached the schedule stays spent until
    /// [`reset`](Schedule::reset).
    pub fn next_delay(&mut self) -> Option<Duration> {
        if self.done || !self.has_attempts_left() {
            self.done = true;
            return None;
        }
        let now = Instant::now();
        let started = *self.started.get_or_insert(now);
        let left = match self.policy.max_elapsed {
            Some(limit) => match limit.checked_sub(now.saturating_duration_since(started)) {
                Some(left) if !left.is_zero() => Some(left),
                _ => {
                    self.done = true;
                    return None;
                }
            },
            None => None,
        };
        let delay = self.peek_and_advance();
        Some(left.map_or(delay, |left| delay.min(left)))
    }

    /// The next delay ignoring attempt and time limits (saturating at the policy's bound).
    ///
    /// Used where something else decides when to stop, such as tower's retry policies.
    pub fn next_delay_unbounded(&mut self) -> Duration {
        self.started.get_or_insert_with(Instant::now);
        self.peek_and_advance()
    }

    fn peek_and_advance(&mut self) -> Duration {
        let p = &self.policy;
        let base = p.delay(self.retries);
        let delay = p
            .jitter
            .apply(base, self.previous, p.initial, p.max, &mut self.rng);
        self.previous = delay;
        self.retries = self.retries.saturating_add(1);
        delay
    }

    /// Starts the run over: the next delay is the first one again. The generator keeps going,
    /// so a reset schedule does not replay the jitter it already used. (A *clone* of a schedule
    /// copies its generator, and so draws the same jitter as the original.)
    pub fn reset(&mut self) {
        self.retries = 0;
        self.previous = self.policy.initial;
        self.started = None;
        self.done = false;
    }
}
