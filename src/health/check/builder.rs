//! Configuring a [`Checker`].

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::Xoshiro256PlusPlus;

use super::HealthCheck;
use super::task::{CheckerHandle, CheckerTask};
use crate::error::{ConfigError, ConfigErrorKind};
use crate::peers::{PeerHandle, PeerKey};
use crate::rng;

/// The shortest interval: below it a checker is a busy loop, not a health check.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// The widest jitter, as a fraction of the interval either way.
const MAX_JITTER: f64 = 0.5;

/// Runs a [`HealthCheck`] against a set of peers, and marks them down and up in their shared
/// state; see the [module documentation](super) for an example.
///
/// Nothing runs until the [`CheckerTask`] from [`CheckerBuilder::build`] is spawned.
#[derive(Debug)]
#[non_exhaustive]
pub struct Checker;

impl Checker {
    /// Configures a checker that runs `check`.
    pub fn builder<C>(check: C) -> CheckerBuilder<C> {
        CheckerBuilder {
            check,
            config: Config::default(),
            seed: None,
        }
    }
}

/// Configures a [`Checker`]; [`build`](CheckerBuilder::build) validates it.
///
/// | setting | default |
/// |---|---|
/// | [`interval`](CheckerBuilder::interval) | 5 s |
/// | [`jitter`](CheckerBuilder::jitter) | 0.1 (±10 %) |
/// | [`timeout`](CheckerBuilder::timeout) | 1 s |
/// | [`unhealthy_threshold`](CheckerBuilder::unhealthy_threshold) | 3 failures in a row |
/// | [`healthy_threshold`](CheckerBuilder::healthy_threshold) | 2 successes in a row |
/// | [`seed`](CheckerBuilder::seed) | random |
///
/// ```
/// use std::time::Duration;
/// use redial::health::check::{Checker, check_fn};
///
/// let err = Checker::builder(check_fn(|_: u16| async { Ok::<_, std::io::Error>(()) }))
///     .unhealthy_threshold(0)
///     .build::<u16>([])
///     .unwrap_err();
/// assert_eq!(err.field(), "unhealthy_threshold");
/// ```
#[derive(Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct CheckerBuilder<C> {
    check: C,
    config: Config,
    seed: Option<u64>,
}

impl<C> CheckerBuilder<C> {
    /// Time between the starts of two checks of a peer (default 5 s, at least 1 ms), jittered.
    /// A check that outlasts it is followed by the next one an interval after it ended.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.config.interval = interval;
        self
    }

    /// How much each interval varies, as a fraction either way (default 0.1: ±10 %, at most
    /// 0.5), so that checks of many peers, or of many processes, do not fall in step. 0
    /// makes the schedule exact.
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.config.jitter = fraction;
        self
    }

    /// The most time one check may take (default 1 s); a check still running then is
    /// abandoned and counts as a failure with a [`CheckTimedOut`](super::CheckTimedOut).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = timeout;
        self
    }

    /// Failures in a row that mark an up peer down and eject it (default 3, at least 1).
    pub fn unhealthy_threshold(mut self, failures: u32) -> Self {
        self.config.unhealthy = failures;
        self
    }

    /// Successes in a row that mark a down peer up and restore it (default 2, at least 1).
    pub fn healthy_threshold(mut self, successes: u32) -> Self {
        self.config.healthy = successes;
        self
    }

    /// Seeds the jitter, so that a test replays the same schedule (the `n`-th peer added gets
    /// the `n`-th derived stream).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Checks the values and builds the checker, watching `peers` to begin with.
    ///
    /// Returns the task that runs the checks, to be spawned (`tokio::spawn(task)`), and the
    /// handle that adds and removes peers and reads their status. The task ends when the last
    /// clone of the handle is dropped.
    pub fn build<K>(
        self,
        peers: impl IntoIterator<Item = PeerHandle<K>>,
    ) -> Result<(CheckerTask<K>, CheckerHandle<K>), ConfigError>
    where
        K: PeerKey,
        C: HealthCheck<K> + Send + Sync + 'static,
    {
        self.config.validate()?;
        let config = Config {
            seed: self.seed.unwrap_or_else(rng::random_seed),
            ..self.config
        };
        Ok(CheckerTask::new(Arc::new(self.check), config, peers))
    }
}

/// A checker's settings, shared by the loops of all its peers.
#[derive(Debug, Clone, Copy)]
pub(super) struct Config {
    pub(super) interval: Duration,
    pub(super) jitter: f64,
    pub(super) timeout: Duration,
    pub(super) unhealthy: u32,
    pub(super) healthy: u32,
    pub(super) seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            jitter: 0.1,
            timeout: Duration::from_secs(1),
            unhealthy: 3,
            healthy: 2,
            seed: 0,
        }
    }
}

impl Config {
    fn validate(&self) -> Result<(), ConfigError> {
        let bad =
            |field, kind, detail: String| Err(ConfigError::new("checker", field, kind, detail));
        if self.interval < MIN_INTERVAL {
            return bad(
                "interval",
                ConfigErrorKind::TooSmall,
                format!(
                    "{:?} is below the minimum of {MIN_INTERVAL:?}; checks that often would \
                     load the peer more than they tell",
                    self.interval
                ),
            );
        }
        if !self.jitter.is_finite() {
            return bad(
                "jitter",
                ConfigErrorKind::NotFinite,
                format!("{} is not a fraction; use 0 to 0.5", self.jitter),
            );
        }
        if !(0.0..=MAX_JITTER).contains(&self.jitter) {
            return bad(
                "jitter",
                ConfigErrorKind::outside(self.jitter, 0.0),
                format!("{} is outside 0 to {MAX_JITTER}", self.jitter),
            );
        }
        if self.timeout.is_zero() {
            return bad(
                "timeout",
                ConfigErrorKind::Zero,
                "a zero timeout would fail every check".into(),
            );
        }
        for (field, value) in [
            ("unhealthy_threshold", self.unhealthy),
            ("healthy_threshold", self.healthy),
        ] {
            if value == 0 {
                return bad(
                    field,
                    ConfigErrorKind::Zero,
                    "counts checks in a row and must be at least 1".into(),
                );
            }
        }
        Ok(())
    }

    /// One interval, jittered: `interval × (1 ± jitter)`, uniformly.
    pub(super) fn next_interval(&self, rng: &mut Xoshiro256PlusPlus) -> Duration {
        if self.jitter == 0.0 {
            return self.interval;
        }
        let factor = 1.0 + self.jitter * (2.0 * rng::unit(rng) - 1.0);
        // Saturates instead of panicking on an absurd interval.
        Duration::try_from_secs_f64(self.interval.as_secs_f64() * factor).unwrap_or(Duration::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(config: Config) -> (&'static str, ConfigErrorKind) {
        let err = config.validate().unwrap_err();
        (err.field(), err.kind())
    }

    #[test]
    fn bad_values_name_their_field() {
        let d = Config::default();
        assert!(d.validate().is_ok());
        let cases = [
            (
                Config {
                    interval: Duration::from_micros(999),
                    ..d
                },
                ("interval", ConfigErrorKind::TooSmall),
            ),
            (
                Config {
                    jitter: f64::NAN,
                    ..d
                },
                ("jitter", ConfigErrorKind::NotFinite),
            ),
            (
                Config { jitter: -0.1, ..d },
                ("jitter", ConfigErrorKind::TooSmall),
            ),
            (
                Config { jitter: 0.6, ..d },
                ("jitter", ConfigErrorKind::TooLarge),
            ),
            (
                Config {
                    timeout: Duration::ZERO,
                    ..d
                },
                ("timeout", ConfigErrorKind::Zero),
            ),
            (
                Config { unhealthy: 0, ..d },
                ("unhealthy_threshold", ConfigErrorKind::Zero),
            ),
            (
                Config { healthy: 0, ..d },
                ("healthy_threshold", ConfigErrorKind::Zero),
            ),
        ];
        for (config, expected) in cases {
            assert_eq!(rejected(config), expected, "{config:?}");
        }
    }

    #[test]
    fn intervals_stay_within_the_jitter() {
        let config = Config::default();
        let mut rng = rng::generator(7);
        let (lo, hi) = (Duration::from_millis(4500), Duration::from_millis(5500));
        let samples: Vec<_> = (0..1000).map(|_| config.next_interval(&mut rng)).collect();
        assert!(samples.iter().all(|d| (lo..hi).contains(d)), "{samples:?}");
        // Jittered indeed: both halves of the range are used.
        assert!(samples.iter().any(|d| *d < Duration::from_millis(4900)));
        assert!(samples.iter().any(|d| *d > Duration::from_millis(5100)));

        let huge = Config {
            interval: Duration::MAX,
            ..config
        };
        assert!(huge.next_interval(&mut rng) > Duration::from_secs(1 << 60));
        let exact = Config {
            jitter: 0.0,
            ..config
        };
        assert_eq!(exact.next_interval(&mut rng), Duration::from_secs(5));
    }
}
