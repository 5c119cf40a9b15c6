//! Configuring a [`RetryLayer`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::budget::Budget;
use super::classify::DefaultClassifier;
use super::layer::RetryLayer;
use super::track::{ByRequest, NoPeer};
use crate::backoff::{Backoff, Jitter};
use crate::error::{ConfigError, ConfigErrorKind};
use crate::peers::{PeerHandle, PeerKey, Peers};
use crate::rng;

/// The most attempts a request may get; more is a loop, not a policy.
const MAX_ATTEMPTS: u32 = 100;

/// The default delays between attempts: Envoy's 25 ms base, doubling, full jitter. The 10 s
/// cap is there for server hints (`Retry-After: 5` is honoured); with three attempts the
/// exponential part never reaches it.
pub(crate) fn default_backoff() -> Backoff {
    Backoff::builder()
        .initial(Duration::from_millis(25))
        .multiplier(2.0)
        .max(Duration::from_secs(10))
        .jitter(Jitter::Full)
        .unlimited_attempts()
        .build()
        .unwrap_or_default()
}

/// Configures a [`RetryLayer`]: the classifier, where retries are recorded, the limits, and
/// the budget. [`build`](RetryBuilder::build) validates it.
///
/// | setting | default |
/// |---|---|
/// | [`classifier`](RetryBuilder::classifier) | [`DefaultClassifier`] |
/// | [`backoff`](RetryBuilder::backoff) | 25 ms doubling to 10 s, full jitter |
/// | [`max_attempts`](RetryBuilder::max_attempts) | 3 (the first and two retries) |
/// | [`max_transparent`](RetryBuilder::max_transparent) | 5 |
/// | [`deadline`](RetryBuilder::deadline) | none |
/// | [`attempt_timeout`](RetryBuilder::attempt_timeout) | none |
/// | [`budget`](RetryBuilder::budget) | a new [`Budget::default`] (20 % + 10/s over 10 s) |
/// | [`record_errors`](RetryBuilder::record_errors) | `true` |
///
/// ```
/// use std::time::Duration;
/// use redial::retry::{Budget, RetryLayer};
///
/// # fn main() -> Result<(), redial::ConfigError> {
/// let layer = RetryLayer::builder()
///     .max_attempts(4)
///     .deadline(Duration::from_secs(2))
///     .attempt_timeout(Duration::from_millis(500))
///     .budget(Budget::builder().ratio(0.1).build()?)
///     .build()?;
/// # let _ = layer;
/// # Ok(())
/// # }
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct RetryBuilder<P = DefaultClassifier, T = NoPeer> {
    policy: P,
    tracking: T,
    settings: Settings,
}

/// Everything but the two type parameters, so that changing one of those moves the rest as
/// a whole.
#[derive(Debug, Clone)]
struct Settings {
    backoff: Backoff,
    max_attempts: u32,
    max_transparent: u32,
    deadline: Option<Duration>,
    attempt_timeout: Option<Duration>,
    record_errors: bool,
    budget: Option<Budget>,
    seed: Option<u64>,
}

impl Default for RetryBuilder {
    fn default() -> Self {
        Self {
            policy: DefaultClassifier,
            tracking: NoPeer,
            settings: Settings {
                backoff: default_backoff(),
                max_attempts: 3,
                max_transparent: 5,
                deadline: None,
                attempt_timeout: None,
                record_errors: true,
                budget: None,
                seed: None,
            },
        }
    }
}

impl<P, T> RetryBuilder<P, T> {
    /// Decides which outcomes are retried and how requests are replayed: any type that
    /// implements both [`Classify`](super::Classify) and [`Replay`](super::Replay) for the
    /// request, such as [`DefaultClassifier`] for `Clone` requests or, with feature `http`,
    /// [`HttpClassifier`](super::http::HttpClassifier).
    pub fn classifier<P2>(self, classifier: P2) -> RetryBuilder<P2, T> {
        RetryBuilder {
            policy: classifier,
            tracking: self.tracking,
            settings: self.settings,
        }
    }

    /// Records failures, retries and budget refusals in `peer`'s tracker, and publishes them
    /// as its events.
    pub fn peer<K: PeerKey>(self, peer: PeerHandle<K>) -> RetryBuilder<P, PeerHandle<K>> {
        self.track(peer)
    }

    /// Records into the peer of `peers` whose key `key` finds in each request (`None`: not
    /// recorded).
    pub fn peers<K, F>(self, peers: Peers<K>, key: F) -> RetryBuilder<P, ByRequest<K, F>> {
        self.track(ByRequest::new(peers, key))
    }

    /// Records retries through any [`TrackPeer`](super::TrackPeer).
    pub fn track<T2>(self, tracking: T2) -> RetryBuilder<P, T2> {
        RetryBuilder {
            policy: self.policy,
            tracking,
            settings: self.settings,
        }
    }

    /// The delays between attempts. Only its delays are used (`initial`, `multiplier`, `max`,
    /// jitter); how many attempts are made is [`max_attempts`](RetryBuilder::max_attempts) and
    /// [`deadline`](RetryBuilder::deadline). Server hints are clamped into its
    /// `[initial, max]`. A seed set on it seeds the layer, as [`seed`](RetryBuilder::seed).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.settings.backoff = backoff;
        self
    }

    /// Attempts per request, the first included (default 3, between 1 and 100). Transparent
    /// retries are not counted here.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.settings.max_attempts = attempts;
        self
    }

    /// Free transparent retries per request (default 5, at most 100): retries of attempts
    /// that failed before anything was sent, not counted in `max_attempts`. Past them, a
    /// transparent failure is retried as an ordinary one; 0 makes every retry count.
    pub fn max_transparent(mut self, retries: u32) -> Self {
        self.settings.max_transparent = retries;
        self
    }

    /// The most time a call may take, all attempts and delays included. When it passes during
    /// an attempt, the call fails with [`DeadlineExceeded`](super::DeadlineExceeded); a retry
    /// that would start after it is not made and the last outcome is returned.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.settings.deadline = Some(deadline);
        self
    }

    /// The most time one attempt may take; a slower attempt fails with
    /// [`AttemptTimedOut`](super::AttemptTimedOut), which the classifier may retry.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.settings.attempt_timeout = Some(timeout);
        self
    }

    /// Whether the inner service's errors are counted as failures in the peer (default
    /// `true`). Turn it off when a redial layer below records them for the same peer (a
    /// [`ReconnectLayer`](crate::reconnect::ReconnectLayer) or a
    /// [`ConnectLayer`](crate::reconnect::connector::ConnectLayer) on the same
    /// [`Peers`](crate::peers::Peers) table), so that one error is not counted twice. Retries,
    /// responses the classifier calls failures (a 503) and the layer's own attempt timeouts
    /// are recorded either way; redial's `Unavailable`, `Exhausted` and `ConnectTimeout` never
    /// are, since the layer that made them already did.
    pub fn record_errors(mut self, record: bool) -> Self {
        self.settings.record_errors = record;
        self
    }

    /// The retry budget. Pass clones of one [`Budget`] to several layers to bound them
    /// together; by default each layer has its own, shared by all its services and clones.
    pub fn budget(mut self, budget: Budget) -> Self {
        self.settings.budget = Some(budget);
        self
    }

    /// Seeds the jitter, so that a test replays the same delays (request `n` of the layer gets
    /// the `n`-th derived stream).
    pub fn seed(mut self, seed: u64) -> Self {
        self.settings.seed = Some(seed);
        self
    }

    /// Checks the values and builds the layer.
    pub fn build(self) -> Result<RetryLayer<P, T>, ConfigError> {
        let bad = |field, kind, detail: String| Err(ConfigError::new("retry", field, kind, detail));
        if self.settings.max_attempts == 0 {
            return bad(
                "max_attempts",
                ConfigErrorKind::Zero,
                "0 attempts would never send the request; use 1 for no retries".into(),
            );
        }
        for (field, value) in [
            ("max_attempts", self.settings.max_attempts),
            ("max_transparent", self.settings.max_transparent),
        ] {
            if value > MAX_ATTEMPTS {
                return bad(
                    field,
                    ConfigErrorKind::TooLarge,
                    format!("{value} is above the limit of {MAX_ATTEMPTS}"),
                );
            }
        }
        for (field, value) in [
            ("deadline", self.settings.deadline),
            ("attempt_timeout", self.settings.attempt_timeout),
        ] {
            if value == Some(Duration::ZERO) {
                return bad(
                    field,
                    ConfigErrorKind::Zero,
                    "a zero duration would fail every call; leave it unset for no limit".into(),
                );
            }
        }
        Ok(self.assemble())
    }

    /// Builds the layer from values already checked.
    pub(crate) fn assemble(self) -> RetryLayer<P, T> {
        let Settings {
            backoff,
            max_attempts,
            max_transparent,
            deadline,
            attempt_timeout,
            record_errors,
            budget,
            seed,
        } = self.settings;
        RetryLayer::from_config(Arc::new(Config {
            policy: self.policy,
            tracking: self.tracking,
            backoff,
            max_retries: max_attempts - 1,
            max_transparent,
            deadline,
            attempt_timeout,
            record_errors,
            budget: budget.unwrap_or_default(),
            seed: seed.or(backoff.seed()).unwrap_or_else(rng::random_seed),
            calls: AtomicU64::new(0),
        }))
    }
}

impl<P: fmt::Debug, T: fmt::Debug> fmt::Debug for RetryBuilder<P, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBuilder")
            .field("classifier", &self.policy)
            .field("tracking", &self.tracking)
            .field("settings", &self.settings)
            .finish()
    }
}

/// A built layer's settings, shared by every service it makes and by their futures.
pub(crate) struct Config<P, T> {
    pub(crate) policy: P,
    pub(crate) tracking: T,
    pub(crate) backoff: Backoff,
    /// `max_attempts - 1`.
    pub(crate) max_retries: u32,
    pub(crate) max_transparent: u32,
    pub(crate) deadline: Option<Duration>,
    pub(crate) attempt_timeout: Option<Duration>,
    pub(crate) record_errors: bool,
    pub(crate) budget: Budget,
    seed: u64,
    /// Requests that needed a backoff schedule, numbering their jitter streams.
    calls: AtomicU64,
}

impl<P, T> Config<P, T> {
    /// The jitter seed of the next request that retries.
    pub(crate) fn next_seed(&self) -> u64 {
        rng::derive_seed(self.seed, self.calls.fetch_add(1, Ordering::Relaxed))
    }
}

impl<P: fmt::Debug, T: fmt::Debug> fmt::Debug for Config<P, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("classifier", &self.policy)
            .field("tracking", &self.tracking)
            .field("backoff", &self.backoff)
            .field("max_attempts", &(self.max_retries + 1))
            .field("max_transparent", &self.max_transparent)
            .field("deadline", &self.deadline)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}
