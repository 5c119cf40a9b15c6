//! [`HealthPolicy`]: when a peer is ejected, for how long, and how it comes back.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::layer::HealthLayer;
use crate::classify::ErrorsFail;
use crate::error::{ConfigError, ConfigErrorKind};
use crate::peers::{EjectionHistory, EjectionPlan, PeerHandle, PeerKey};

/// What a [`Health`](super::Health) service does with a request while its peer is ejected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Mode {
    /// `poll_ready` is ready and the call fails at once with
    /// [`HealthError::Ejected`](super::HealthError::Ejected), naming the peer and when it may be
    /// tried again. For a client that talks to one peer and wants to know now.
    #[default]
    Reject,
    /// `poll_ready` is `Pending` until the peer may take a request again: the end of the
    /// ejection's time (a timer is armed for it), a restore, or a free probe slot. For a
    /// service behind a balancer, which then picks a ready peer instead.
    Backpressure,
}

/// A success-rate trigger: eject when fewer than `min_rate` of the requests over `window`
/// succeeded, counted once at least `min_requests` were made.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SuccessRate {
    pub(crate) min_rate: f64,
    pub(crate) window: Duration,
    pub(crate) min_requests: u32,
}

impl SuccessRate {
    /// The lowest acceptable share of successes, in `(0, 1]`.
    pub fn min_rate(&self) -> f64 {
        self.min_rate
    }

    /// How far back outcomes count.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Outcomes the window must hold before the rate is judged.
    pub fn min_requests(&self) -> u32 {
        self.min_requests
    }
}

/// When a peer is ejected, for how long, and how it comes back: the settings of a
/// [`HealthLayer`], validated by [`HealthPolicyBuilder::build`].
///
/// Cheap to clone (an `Arc` inside): one policy may serve the layers of many peers.
///
/// | setting | default |
/// |---|---|
/// | [`consecutive_failures`](HealthPolicyBuilder::consecutive_failures) | `Some(5)` |
/// | [`success_rate`](HealthPolicyBuilder::success_rate) | none (Finagle uses 0.8 over 30 s) |
/// | [`base_ejection`](HealthPolicyBuilder::base_ejection) | 30 s |
/// | [`max_ejection`](HealthPolicyBuilder::max_ejection) | 300 s |
/// | [`jitter`](HealthPolicyBuilder::jitter) | 0.1 (± 10 %) |
/// | [`probes`](HealthPolicyBuilder::probes) | 1 |
/// | [`mode`](HealthPolicyBuilder::mode) | [`Mode::Reject`] |
/// | [`max_ejection_percent`](HealthPolicyBuilder::max_ejection_percent) | 50 |
/// | [`shadow`](HealthPolicyBuilder::shadow) | `false` |
/// | [`seed`](HealthPolicyBuilder::seed) | derived from the peer table's seed |
/// | [`classifier`](HealthPolicyBuilder::classifier) | [`ErrorsFail`]: every error is a failure |
///
/// # How long an ejection lasts
///
/// Each peer keeps an ejection *multiplier* `n` in the shared [`Peers`](crate::peers::Peers)
/// table. An ejection sets `n` to one more than it was, except that a peer that stayed in use
/// for at least `max_ejection` since its last restore is forgiven and starts again at `n = 1`.
/// The ejection lasts `min(base_ejection × n, max_ejection)`, jittered by `± jitter` and never
/// more than `max_ejection`. A successful probe restores the peer and lowers `n` by one, so
/// that the next ejection is no longer than the one the probe ended; a failed probe ejects it
/// again with `n + 1` (a failed probe is never forgiven).
///
/// ```
/// use std::time::Duration;
/// use redial::health::{HealthPolicy, Mode};
///
/// # fn main() -> Result<(), redial::ConfigError> {
/// let policy = HealthPolicy::builder()
///     .consecutive_failures(Some(7))
///     .success_rate(0.8, Duration::from_secs(30), 20)
///     .base_ejection(Duration::from_secs(1))
///     .max_ejection(Duration::from_secs(60))
///     .mode(Mode::Backpressure)
///     .build()?;
/// assert_eq!(policy.consecutive_failures(), Some(7));
///
/// let bad = HealthPolicy::builder().max_ejection(Duration::from_millis(10)).build();
/// assert_eq!(bad.unwrap_err().field(), "max_ejection");
/// # Ok(())
/// # }
/// ```
pub struct HealthPolicy<C = ErrorsFail> {
    inner: Arc<Settings<C>>,
}

/// Everything but the classifier, so that changing the classifier's type moves the rest whole.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Values {
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) success_rate: Option<SuccessRate>,
    pub(crate) base_ejection: Duration,
    pub(crate) max_ejection: Duration,
    pub(crate) jitter: f64,
    pub(crate) probes: u32,
    pub(crate) mode: Mode,
    pub(crate) max_ejection_percent: u32,
    pub(crate) shadow: bool,
    pub(crate) seed: Option<u64>,
}

impl Default for Values {
    fn default() -> Self {
        Self {
            consecutive_failures: Some(5),
            success_rate: None,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            jitter: 0.1,
            probes: 1,
            mode: Mode::Reject,
            max_ejection_percent: 50,
            shadow: false,
            seed: None,
        }
    }
}

pub(crate) struct Settings<C> {
    pub(crate) classifier: C,
    pub(crate) values: Values,
}

impl HealthPolicy {
    /// Configures a policy.
    pub fn builder() -> HealthPolicyBuilder {
        HealthPolicyBuilder::default()
    }
}

impl Default for HealthPolicy {
    fn default() -> Self {
        // The defaults pass `build`'s checks (a test makes sure).
        HealthPolicyBuilder::default().assemble()
    }
}

impl<C> Clone for HealthPolicy<C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<C: fmt::Debug> fmt::Debug for HealthPolicy<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthPolicy")
            .field("classifier", &self.inner.classifier)
            .field("values", &self.inner.values)
            .finish()
    }
}

impl<C> HealthPolicy<C> {
    /// A [`HealthLayer`] that guards `peer` with this policy.
    pub fn layer<K: PeerKey>(&self, peer: PeerHandle<K>) -> HealthLayer<K, C> {
        HealthLayer::new(peer, self.clone())
    }

    /// Failures in a row that eject the peer, if that trigger is on.
    pub fn consecutive_failures(&self) -> Option<u32> {
        self.inner.values.consecutive_failures
    }

    /// The success-rate trigger, if on.
    pub fn success_rate(&self) -> Option<SuccessRate> {
        self.inner.values.success_rate
    }

    /// The first ejection's length, before jitter.
    pub fn base_ejection(&self) -> Duration {
        self.inner.values.base_ejection
    }

    /// The longest an ejection lasts.
    pub fn max_ejection(&self) -> Duration {
        self.inner.values.max_ejection
    }

    /// The jitter ratio: an ejection of `d` lasts `d × U(1 − r, 1 + r)`, capped at the max.
    pub fn jitter(&self) -> f64 {
        self.inner.values.jitter
    }

    /// Probe requests an ejected peer admits at once when its time is over.
    pub fn probes(&self) -> u32 {
        self.inner.values.probes
    }

    /// What a request meets while its peer is ejected.
    pub fn mode(&self) -> Mode {
        self.inner.values.mode
    }

    /// The most peers of the table, in percent, that may be ejected at once.
    pub fn max_ejection_percent(&self) -> u32 {
        self.inner.values.max_ejection_percent
    }

    /// Whether ejections are only reported, never made.
    pub fn is_shadow(&self) -> bool {
        self.inner.values.shadow
    }

    /// The classifier that decides what is a failure.
    pub fn classifier(&self) -> &C {
        &self.inner.classifier
    }

    pub(crate) fn values(&self) -> &Values {
        &self.inner.values
    }

    /// The fraction handed to the panic guard; `None` at 100 %, which is no guard.
    pub(crate) fn max_ejected_fraction(&self) -> Option<f64> {
        let percent = self.inner.values.max_ejection_percent;
        (percent < 100).then(|| f64::from(percent) / 100.0)
    }

    /// Sizes an ejection (see the type's docs). `fresh` is an ejection of a peer in use, which
    /// may be forgiven; a failed probe's is not. `unit` draws the jitter, in `[0, 1)`.
    pub(crate) fn plan(
        &self,
        history: EjectionHistory,
        fresh: bool,
        now: Instant,
        unit: impl FnOnce() -> f64,
    ) -> EjectionPlan {
        let v = &self.inner.values;
        let forgiven = fresh
            && history
                .restored_at
                .is_some_and(|at| now.saturating_duration_since(at) >= v.max_ejection);
        let multiplier = if forgiven {
            1
        } else {
            history.multiplier.saturating_add(1)
        };
        let plain = v
            .base_ejection
            .saturating_mul(multiplier)
            .min(v.max_ejection);
        let duration = if v.jitter > 0.0 {
            let factor = 1.0 - v.jitter + 2.0 * v.jitter * unit();
            Duration::try_from_secs_f64(plain.as_secs_f64() * factor)
                .unwrap_or(v.max_ejection)
                .min(v.max_ejection)
        } else {
            plain
        };
        EjectionPlan {
            multiplier,
            duration,
        }
    }
}

/// Configures a [`HealthPolicy`]; [`build`](HealthPolicyBuilder::build) checks every value.
/// See [`HealthPolicy`] for the defaults and an example.
#[must_use = "a builder does nothing until `build` is called"]
pub struct HealthPolicyBuilder<C = ErrorsFail> {
    classifier: C,
    values: Values,
}

impl Default for HealthPolicyBuilder {
    fn default() -> Self {
        Self {
            classifier: ErrorsFail,
            values: Values::default(),
        }
    }
}

impl<C: fmt::Debug> fmt::Debug for HealthPolicyBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthPolicyBuilder")
            .field("classifier", &self.classifier)
            .field("values", &self.values)
            .finish()
    }
}

impl<C> HealthPolicyBuilder<C> {
    /// Decides which outcomes are failures, through
    /// [`Classify::is_failure`](crate::classify::Classify::is_failure): the same type that
    /// decides retries, so that a retry layer and a health layer agree (say
    /// [`HttpClassifier`](crate::retry::http::HttpClassifier), which makes a 503 a failure).
    /// Errors reach it as [`BoxError`](tower::BoxError)s. It is shared, never cloned per call.
    pub fn classifier<C2>(self, classifier: C2) -> HealthPolicyBuilder<C2> {
        HealthPolicyBuilder {
            classifier,
            values: self.values,
        }
    }

    /// Ejects the peer after this many failures in a row (default `Some(5)`); `None` turns the
    /// trigger off. The run is the peer's, shared by every layer and clone that guards it, and
    /// starts over on every success, ejection and restore.
    pub fn consecutive_failures(mut self, failures: Option<u32>) -> Self {
        self.values.consecutive_failures = failures;
        self
    }

    /// Also ejects the peer when fewer than `min_rate` (in `(0, 1]`) of the requests that
    /// ended over the last `window` succeeded, once at least `min_requests` did.
    /// Finagle's failure accrual uses 0.8 over 30 s. The window belongs to the layer, shared
    /// by its services and their clones, and slides by a tenth of its length.
    ///
    /// A window counts up to 10 485 750 of each outcome, so `min_requests` must be at least 1
    /// and at most what a window can hold while still under `min_rate`: 20 971 500 for a rate
    /// above 0.5, 20 971 499 at 0.5, 11 650 833 at 0.1. [`build`](Self::build) refuses more.
    pub fn success_rate(mut self, min_rate: f64, window: Duration, min_requests: u32) -> Self {
        self.values.success_rate = Some(SuccessRate {
            min_rate,
            window,
            min_requests,
        });
        self
    }

    /// Turns the success-rate trigger off (the default).
    pub fn no_success_rate(mut self) -> Self {
        self.values.success_rate = None;
        self
    }

    /// The first ejection's length (default 30 s, as Envoy); later ones are multiples of it.
    pub fn base_ejection(mut self, base: Duration) -> Self {
        self.values.base_ejection = base;
        self
    }

    /// The longest an ejection lasts, jitter included (default 300 s, as Envoy).
    pub fn max_ejection(mut self, max: Duration) -> Self {
        self.values.max_ejection = max;
        self
    }

    /// Spreads ejection lengths by `± ratio` (default 0.1, in `[0, 1)`), so that peers ejected
    /// together are not probed together.
    pub fn jitter(mut self, ratio: f64) -> Self {
        self.values.jitter = ratio;
        self
    }

    /// Requests admitted at once to test an ejected peer whose time is over (default 1, at
    /// least 1). The slots are reserved atomically across every layer and clone of the peer.
    pub fn probes(mut self, probes: u32) -> Self {
        self.values.probes = probes;
        self
    }

    /// Reject calls while the peer is ejected, or hold `poll_ready` pending (default
    /// [`Mode::Reject`]; use [`Mode::Backpressure`] under a balancer).
    pub fn mode(mut self, mode: Mode) -> Self {
        self.values.mode = mode;
        self
    }

    /// The panic guard: at most this share of the table's peers, in percent, may be ejected at
    /// once (default 50, as the issue asks; Envoy uses 10). Rounded down, but one peer may
    /// always be ejected, so a lone peer still has a breaker. 100 turns the guard off. An
    /// ejection the guard holds back is reported as
    /// [`EjectionSkipped`](crate::event::EventKind::EjectionSkipped).
    pub fn max_ejection_percent(mut self, percent: u32) -> Self {
        self.values.max_ejection_percent = percent;
        self
    }

    /// Shadow mode: decide as usual but eject nothing; every would-be ejection is counted in
    /// the peer's `skipped_ejections` and emitted as
    /// [`EjectionSkipped`](crate::event::EventKind::EjectionSkipped) with reason `Shadow`. For
    /// trying a policy on live traffic.
    pub fn shadow(mut self, shadow: bool) -> Self {
        self.values.shadow = shadow;
        self
    }

    /// Seeds the jitter of ejection lengths, so that a test replays them. By default each layer
    /// takes a seed from its peer table, which is repeatable when the table is seeded.
    pub fn seed(mut self, seed: u64) -> Self {
        self.values.seed = Some(seed);
        self
    }

    /// Checks the values and builds the policy.
    pub fn build(self) -> Result<HealthPolicy<C>, ConfigError> {
        let bad =
            |field, kind, detail: String| Err(ConfigError::new("health", field, kind, detail));
        let v = &self.values;
        if v.consecutive_failures == Some(0) {
            return bad(
                "consecutive_failures",
                ConfigErrorKind::Zero,
                "0 failures would eject a peer that never failed; use None to turn the \
                 trigger off"
                    .into(),
            );
        }
        if let Some(rate) = v.success_rate {
            if !rate.min_rate.is_finite() {
                return bad(
                    "success_rate",
                    ConfigErrorKind::NotFinite,
                    format!(
                        "min_rate is {}; use a share in (0, 1] such as 0.8",
                        rate.min_rate
                    ),
                );
            }
            if rate.min_rate <= 0.0 || rate.min_rate > 1.0 {
                return bad(
                    "success_rate",
                    ConfigErrorKind::outside(rate.min_rate, 0.0),
                    format!(
                        "min_rate {} is outside (0, 1]; use a share such as 0.8",
                        rate.min_rate
                    ),
                );
            }
            if rate.window.is_zero() {
                return bad(
                    "success_rate",
                    ConfigErrorKind::Zero,
                    "a zero window holds no outcomes; use a window such as 30 s".into(),
                );
            }
            if rate.min_requests == 0 {
                return bad(
                    "success_rate",
                    ConfigErrorKind::Zero,
                    "min_requests of 0 would judge a rate from no requests; use 1 or more".into(),
                );
            }
            let most = super::window::max_trippable(rate.min_rate);
            if u64::from(rate.min_requests) > most {
                return bad(
                    "success_rate",
                    ConfigErrorKind::TooLarge,
                    format!(
                        "min_requests of {} can never be reached: a window holds at most {most} \
                         outcomes that could still fall under a rate of {}; use a smaller minimum",
                        rate.min_requests, rate.min_rate
                    ),
                );
            }
        }
        if v.base_ejection.is_zero() {
            return bad(
                "base_ejection",
                ConfigErrorKind::Zero,
                "a zero ejection would probe the peer at once; use a duration such as 30 s".into(),
            );
        }
        if v.max_ejection < v.base_ejection {
            return bad(
                "max_ejection",
                ConfigErrorKind::Inconsistent,
                format!(
                    "max_ejection {:?} is below base_ejection {:?}",
                    v.max_ejection, v.base_ejection
                ),
            );
        }
        if !v.jitter.is_finite() {
            return bad(
                "jitter",
                ConfigErrorKind::NotFinite,
                format!(
                    "{} is not a ratio; use a value in [0, 1) such as 0.1",
                    v.jitter
                ),
            );
        }
        if !(0.0..1.0).contains(&v.jitter) {
            return bad(
                "jitter",
                ConfigErrorKind::outside(v.jitter, 0.0),
                format!(
                    "{} is outside [0, 1); use 0 for none or a ratio such as 0.1",
                    v.jitter
                ),
            );
        }
        if v.probes == 0 {
            return bad(
                "probes",
                ConfigErrorKind::Zero,
                "an ejected peer that admits no probe never comes back; use 1 or more".into(),
            );
        }
        if v.max_ejection_percent > 100 {
            return bad(
                "max_ejection_percent",
                ConfigErrorKind::TooLarge,
                format!(
                    "{} is above 100; use 100 to turn the guard off",
                    v.max_ejection_percent
                ),
            );
        }
        Ok(self.assemble())
    }

    /// Builds the policy from values already checked.
    fn assemble(self) -> HealthPolicy<C> {
        HealthPolicy {
            inner: Arc::new(Settings {
                classifier: self.classifier,
                values: self.values,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn policy(base: u64, max: u64, jitter: f64) -> HealthPolicy {
        HealthPolicy::builder()
            .base_ejection(SEC * base as u32)
            .max_ejection(SEC * max as u32)
            .jitter(jitter)
            .build()
            .expect("valid config")
    }

    fn history(multiplier: u32, restored_at: Option<Instant>) -> EjectionHistory {
        EjectionHistory {
            multiplier,
            restored_at,
        }
    }

    #[test]
    fn the_defaults_pass_the_checks() {
        let built = HealthPolicy::builder().build().expect("defaults are valid");
        assert_eq!(built.values().consecutive_failures, Some(5));
        assert_eq!(HealthPolicy::default().max_ejection(), 300 * SEC);
        assert_eq!(HealthPolicy::default().max_ejected_fraction(), Some(0.5));
    }

    #[test]
    fn ejections_grow_by_base_and_stop_at_max() {
        let p = policy(30, 100, 0.0);
        let now = Instant::now();
        let lengths: Vec<_> = (0..6)
            .map(|n| {
                let plan = p.plan(history(n, None), true, now, || 0.5);
                (plan.multiplier, plan.duration.as_secs())
            })
            .collect();
        // 100 s is reached at n = 4 (120 s, capped).
        assert_eq!(
            lengths,
            [(1, 30), (2, 60), (3, 90), (4, 100), (5, 100), (6, 100)]
        );
    }

    #[test]
    fn a_peer_in_use_for_max_ejection_is_forgiven_but_a_failed_probe_is_not() {
        let p = policy(30, 300, 0.0);
        let now = Instant::now() + 1000 * SEC;
        let long_ago = Some(now - 300 * SEC);
        let recently = Some(now - 299 * SEC);
        assert_eq!(
            p.plan(history(3, long_ago), true, now, || 0.0).multiplier,
            1
        );
        assert_eq!(
            p.plan(history(3, recently), true, now, || 0.0).multiplier,
            4
        );
        assert_eq!(
            p.plan(history(3, long_ago), false, now, || 0.0).multiplier,
            4
        );
    }

    #[test]
    fn jitter_spreads_both_ways_and_never_passes_max() {
        let p = policy(10, 300, 0.1);
        let now = Instant::now();
        let at = |unit: f64| p.plan(history(0, None), true, now, || unit).duration;
        assert_eq!(at(0.0), 9 * SEC);
        assert_eq!(at(0.5), 10 * SEC);
        assert!(at(0.999_999) > 10 * SEC && at(0.999_999) < 11 * SEC);
        // At the cap, jitter only shortens.
        let capped = policy(10, 20, 0.5);
        let long = capped.plan(history(5, None), true, now, || 0.99).duration;
        assert_eq!(long, 20 * SEC);
        let short = capped.plan(history(5, None), true, now, || 0.0).duration;
        assert_eq!(short, 10 * SEC);
    }

    #[test]
    fn bad_values_name_their_field() {
        let field = |b: HealthPolicyBuilder| b.build().map(drop).unwrap_err().field();
        let b = HealthPolicy::builder;
        assert_eq!(
            field(b().consecutive_failures(Some(0))),
            "consecutive_failures"
        );
        for (rate, window, min) in [
            (f64::NAN, SEC, 1),
            (0.0, SEC, 1),
            (1.5, SEC, 1),
            (0.8, Duration::ZERO, 1),
            (0.8, SEC, 0),
            (0.8, SEC, u32::MAX),
        ] {
            assert_eq!(field(b().success_rate(rate, window, min)), "success_rate");
        }
        assert_eq!(field(b().base_ejection(Duration::ZERO)), "base_ejection");
        assert_eq!(
            field(b().base_ejection(10 * SEC).max_ejection(9 * SEC)),
            "max_ejection"
        );
        for jitter in [-0.1, 1.0, f64::INFINITY, f64::NAN] {
            assert_eq!(field(b().jitter(jitter)), "jitter");
        }
        assert_eq!(field(b().probes(0)), "probes");
        assert_eq!(field(b().max_ejection_percent(101)), "max_ejection_percent");
        // Which side of the range a rejected value is on; open ends reject their edge.
        let kind = |b: HealthPolicyBuilder| b.build().expect_err("rejected").kind();
        assert_eq!(kind(b().jitter(-0.1)), ConfigErrorKind::TooSmall);
        assert_eq!(kind(b().jitter(1.0)), ConfigErrorKind::TooLarge);
        assert_eq!(
            kind(b().success_rate(0.0, SEC, 1)),
            ConfigErrorKind::TooSmall
        );
        assert_eq!(
            kind(b().success_rate(1.5, SEC, 1)),
            ConfigErrorKind::TooLarge
        );
        assert_eq!(
            kind(b().success_rate(0.8, SEC, u32::MAX)),
            ConfigErrorKind::TooLarge
        );
        // The figures `success_rate`'s docs give.
        for (rate, most) in [(0.8, 20_971_500), (0.5, 20_971_499), (0.1, 11_650_833)] {
            assert!(b().success_rate(rate, SEC, most).build().is_ok(), "{rate}");
            assert_eq!(
                kind(b().success_rate(rate, SEC, most + 1)),
                ConfigErrorKind::TooLarge
            );
        }
        // The edges that are allowed.
        assert!(
            b().success_rate(1.0, Duration::from_nanos(1), 1)
                .build()
                .is_ok()
        );
        assert!(b().consecutive_failures(None).jitter(0.0).build().is_ok());
        let no_guard = b().max_ejection_percent(100).build().expect("valid");
        assert_eq!(no_guard.max_ejected_fraction(), None);
        let lone = b().max_ejection_percent(0).build().expect("valid");
        assert_eq!(lone.max_ejected_fraction(), Some(0.0));
    }

    proptest! {
        #[test]
        fn any_plan_is_positive_capped_and_bounded(
            base_ms in 1u64..10_000_000,
            extra_ms in 0u64..u64::MAX / 2_000_000,
            multiplier in any::<u32>(),
            restored_ago in proptest::option::of(0u64..1_000_000),
            fresh in any::<bool>(),
            jitter in 0.0f64..1.0,
            unit in 0.0f64..1.0,
        ) {
            let base = Duration::from_millis(base_ms);
            let max = base + Duration::from_millis(extra_ms);
            let p = HealthPolicy::builder()
                .base_ejection(base)
                .max_ejection(max)
                .jitter(jitter)
                .build()
                .expect("valid config");
            let now = Instant::now() + Duration::from_secs(2_000_000);
            let restored_at = restored_ago.map(|s| now - Duration::from_secs(s));
            let plan = p.plan(history(multiplier, restored_at), fresh, now, || unit);
            prop_assert!(plan.duration <= max);
            prop_assert!(!plan.duration.is_zero());
            prop_assert!(plan.multiplier >= 1);
            // Without jitter, never shorter than the base.
            let plain = HealthPolicy::builder()
                .base_ejection(base)
                .max_ejection(max)
                .jitter(0.0)
                .build()
                .expect("valid config");
            let plan = plain.plan(history(multiplier, restored_at), fresh, now, || unit);
            prop_assert!(plan.duration >= base && plan.duration <= max);
        }
    }
}
