//! Backoff policies and schedules: validation, bounds, monotonicity, seeding, limits, presets,
//! and tower's `MakeBackoff`.

use std::time::Duration;

use proptest::prelude::*;
use redial::backoff::{Backoff, BackoffBuilder, Jitter};
use redial::{ConfigError, ConfigErrorKind};

const MS: Duration = Duration::from_millis(1);

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

/// Any `f64` at all, with the awkward values made likely.
fn any_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(f64::NAN),
        Just(-f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(0.0),
        Just(-0.0),
        Just(1.0),
        Just(-1.0),
        Just(f64::MAX),
        Just(f64::MIN),
        Just(f64::MIN_POSITIVE),
        Just(f64::EPSILON),
        Just(1.0 + f64::EPSILON),
        Just(1.0 - f64::EPSILON / 2.0),
        -10.0..10.0f64,
        any::<f64>(),
        proptest::num::f64::ANY | proptest::num::f64::SIGNALING_NAN,
    ]
}

/// Any `Duration` at all, with zero, one nanosecond and `Duration::MAX` made likely.
fn any_duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::MAX),
        Just(Duration::from_nanos(1)),
        Just(Duration::new(u64::MAX, 0)),
        (0u64..100_000).prop_map(Duration::from_millis),
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        any::<u64>().prop_map(Duration::from_nanos),
    ]
}

fn any_jitter() -> impl Strategy<Value = Jitter> {
    prop_oneof![
        Just(Jitter::None),
        Just(Jitter::Full),
        Just(Jitter::Equal),
        Just(Jitter::Decorrelated),
        any_f64().prop_map(Jitter::Proportional),
    ]
}

fn valid_jitter() -> impl Strategy<Value = Jitter> {
    prop_oneof![
        Just(Jitter::None),
        Just(Jitter::Full),
        Just(Jitter::Equal),
        Just(Jitter::Decorrelated),
        Just(Jitter::Proportional(0.0)),
        Just(Jitter::Proportional(1.0)),
        Just(Jitter::Proportional(0.2)),
        (0.0..=1.0f64).prop_map(Jitter::Proportional),
    ]
}

/// A duration greater than zero, sometimes huge.
fn positive_duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        4 => (1u64..60_000).prop_map(Duration::from_millis),
        2 => (1u64..1_000_000).prop_map(Duration::from_nanos),
        1 => Just(Duration::MAX),
        1 => (1u64..u64::MAX).prop_map(Duration::from_secs),
        1 => (any::<u64>(), 0u32..1_000_000_000)
            .prop_filter("non-zero", |(s, n)| *s > 0 || *n > 0)
            .prop_map(|(s, n)| Duration::new(s, n)),
    ]
}

fn valid_multiplier() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(1.0),
        Just(1.6),
        Just(2.0),
        Just(f64::MAX),
        1.0..10.0f64,
        1.0..1e300f64,
    ]
}

/// Any valid policy (without a seed: schedules are seeded explicitly).
fn valid_policy() -> impl Strategy<Value = Backoff> {
    (
        positive_duration(),
        positive_duration(),
        valid_multiplier(),
        valid_jitter(),
        prop::option::of(1u32..50),
        prop::option::of(positive_duration()),
    )
        .prop_map(|(a, b, multiplier, jitter, attempts, elapsed)| {
            let (initial, max) = if a <= b { (a, b) } else { (b, a) };
            let mut builder = Backoff::builder()
                .initial(initial)
                .max(max)
                .multiplier(multiplier)
                .jitter(jitter);
            if let Some(n) = attempts {
                builder = builder.max_attempts(n);
            }
            if let Some(limit) = elapsed {
                builder = builder.max_elapsed(limit);
            }
            builder
                .build()
                .expect("the strategy only makes valid policies")
        })
}

fn none(policy: Backoff) -> Backoff {
    policy.to_builder().jitter(Jitter::None).build().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever goes into the builder, `build` answers with `Ok` or a `ConfigError`, and a policy
    /// it accepts never panics when used.
    #[test]
    fn any_input_builds_or_is_rejected_and_never_panics(
        initial in any_duration(),
        max in any_duration(),
        multiplier in any_f64(),
        jitter in any_jitter(),
        attempts in prop::option::of(any::<u32>()),
        elapsed in prop::option::of(any_duration()),
        seed in any::<u64>(),
        retries in prop::collection::vec(any::<u32>(), 8),
    ) {
        let mut builder = Backoff::builder()
            .initial(initial)
            .max(max)
            .multiplier(multiplier)
            .jitter(jitter)
            .seed(seed);
        if let Some(n) = attempts {
            builder = builder.max_attempts(n);
        }
        if let Some(limit) = elapsed {
            builder = builder.max_elapsed(limit);
        }
        match builder.build() {
            Err(e) => {
                prop_assert!(!e.field().is_empty());
                prop_assert_eq!(e.component(), "backoff");
                prop_assert!(e.to_string().contains(e.field()));
            }
            Ok(policy) => {
                // Accepted values are the ones the documentation promises.
                prop_assert!(!policy.initial().is_zero() && policy.initial() <= policy.max());
                prop_assert!(policy.multiplier().is_finite() && policy.multiplier() >= 1.0);
                if let Jitter::Proportional(r) = policy.jitter() {
                    prop_assert!((0.0..=1.0).contains(&r));
                }
                prop_assert_ne!(policy.max_attempts(), Some(0));
                prop_assert_ne!(policy.max_elapsed(), Some(Duration::ZERO));

                let bound = policy.upper_bound();
                let mut schedule = policy.schedule();
                for _ in 0..200 {
                    if let Some(d) = schedule.next_delay() {
                        prop_assert!(d <= bound);
                    }
                }
                let mut unbounded = policy.schedule_seeded(seed);
                for _ in 0..200 {
                    prop_assert!(unbounded.next_delay_unbounded() <= bound);
                }
                for n in retries.into_iter().chain([0, 1, 63, 64, 1074, u32::MAX]) {
                    prop_assert!(policy.delay(n) <= policy.max());
                }
            }
        }
    }

    /// Every delay of every schedule is within `[0, upper_bound]`.
    #[test]
    fn delays_stay_within_the_upper_bound(policy in valid_policy(), seed in any::<u64>()) {
        let bound = policy.upper_bound();
        match policy.jitter() {
            Jitter::Proportional(r) => {
                let expected = policy.max().as_secs_f64() * (1.0 + r);
                // `upper_bound` is `max × (1 + r)`, saturating where a Duration cannot hold it.
                match Duration::try_from_secs_f64(expected) {
                    Ok(d) => prop_assert_eq!(bound, d),
                    Err(_) => prop_assert_eq!(bound, Duration::MAX),
                }
            }
            _ => prop_assert_eq!(bound, policy.max()),
        }
        let mut schedule = policy.schedule_seeded(seed);
        for _ in 0..200 {
            match schedule.next_delay() {
                Some(d) => prop_assert!(d <= bound, "{:?} above {:?}", d, bound),
                None => break,
            }
        }
        let mut schedule = policy.schedule_seeded(seed);
        for _ in 0..200 {
            let d = schedule.next_delay_unbounded();
            prop_assert!(d <= bound, "{:?} above {:?}", d, bound);
        }
    }

    /// Each kind of jitter keeps to its documented range around the un-jittered delay `d`.
    #[test]
    fn each_jitter_keeps_to_its_range(policy in valid_policy(), seed in any::<u64>()) {
        let policy = policy.to_builder().unlimited_attempts().build().unwrap();
        let mut schedule = policy.schedule_seeded(seed);
        for n in 0..100 {
            let d = policy.delay(n);
            let got = schedule.next_delay_unbounded();
            match policy.jitter() {
                Jitter::None => prop_assert_eq!(got, d),
                Jitter::Full => prop_assert!(got <= d, "{:?} above {:?}", got, d),
                Jitter::Equal => prop_assert!(got <= d, "{:?} above {:?}", got, d),
                Jitter::Decorrelated => prop_assert!(
                    got <= policy.max(),
                    "{:?} above max {:?}", got, policy.max()
                ),
                Jitter::Proportional(_) => prop_assert!(got <= policy.upper_bound()),
                _ => unreachable!(),
            }
        }
    }

    /// The un-jittered delay never shrinks as the retry number grows and never passes `max`.
    #[test]
    fn unjittered_delay_is_monotone_and_capped(
        policy in valid_policy(),
        a in any::<u32>(),
        b in any::<u32>(),
    ) {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        prop_assert!(policy.delay(lo) <= policy.delay(hi));
        prop_assert!(policy.delay(hi) <= policy.max());
        let mut previous = Duration::ZERO;
        for n in (0..80).chain([1000, 1_000_000, u32::MAX - 1, u32::MAX]) {
            let d = policy.delay(n);
            prop_assert!(d >= previous, "delay({}) = {:?} below {:?}", n, d, previous);
            prop_assert!(d <= policy.max());
            previous = d;
        }
        if policy.multiplier() >= 1.01 {
            // Far past the point where the delay reaches `max`, it saturates there.
            prop_assert_eq!(policy.delay(u32::MAX), policy.max());
        }
    }

    /// Without jitter a schedule hands out exactly `delay(0), delay(1), ...`.
    #[test]
    fn unjittered_schedule_is_the_delay_sequence(policy in valid_policy(), seed in any::<u64>()) {
        let policy = none(policy)
            .to_builder()
            .unlimited_attempts()
            .unlimited_elapsed()
            .build()
            .unwrap();
        let mut schedule = policy.schedule_seeded(seed);
        for n in 0..100 {
            prop_assert_eq!(schedule.next_delay_unbounded(), policy.delay(n));
            prop_assert_eq!(schedule.retries(), n + 1);
        }
        // Time limits aside (the clock does not move here far enough to matter for the
        // attempt count), `next_delay` follows the same sequence from a reset.
        let mut schedule = policy.schedule_seeded(seed);
        let mut n = 0;
        while let Some(d) = schedule.next_delay() {
            prop_assert_eq!(d, policy.delay(n));
            n += 1;
            if n == 100 {
                break;
            }
        }
    }

    /// A seed fixes the jitter: equal seeds give equal delays, through either way of seeding.
    #[test]
    fn same_seed_same_delays(policy in valid_policy(), seed in any::<u64>()) {
        let take = |mut s: redial::backoff::Schedule| {
            (0..64).map(|_| s.next_delay_unbounded()).collect::<Vec<_>>()
        };
        prop_assert_eq!(take(policy.schedule_seeded(seed)), take(policy.schedule_seeded(seed)));
        let seeded = policy.to_builder().seed(seed).build().unwrap();
        prop_assert_eq!(seeded.seed(), Some(seed));
        prop_assert_eq!(take(seeded.schedule()), take(seeded.schedule()));
        prop_assert_eq!(take(seeded.schedule()), take(policy.schedule_seeded(seed)));
    }
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

fn rejected(builder: BackoffBuilder) -> ConfigError {
    builder
        .build()
        .expect_err("this configuration must be rejected")
}

#[track_caller]
fn assert_rejects(builder: BackoffBuilder, field: &str, kind: ConfigErrorKind) {
    let e = rejected(builder);
    assert_eq!((e.field(), e.kind()), (field, kind), "{e}");
    assert_eq!(e.component(), "backoff");
    let text = e.to_string();
    assert!(text.contains(&format!("`{field}`")), "{text}");
    assert!(text.contains("backoff"), "{text}");
}

#[test]
fn config_errors_name_the_field_and_the_rule() {
    use ConfigErrorKind::*;
    let b = Backoff::builder;
    assert_rejects(b().initial(Duration::ZERO), "initial", Zero);
    assert_rejects(b().max(Duration::ZERO), "max", Zero);
    assert_rejects(
        b().initial(Duration::from_secs(2))
            .max(Duration::from_secs(1)),
        "initial",
        Inconsistent,
    );
    assert_rejects(b().multiplier(f64::NAN), "multiplier", NotFinite);
    assert_rejects(b().multiplier(f64::INFINITY), "multiplier", NotFinite);
    assert_rejects(b().multiplier(f64::NEG_INFINITY), "multiplier", NotFinite);
    assert_rejects(b().multiplier(0.5), "multiplier", TooSmall);
    assert_rejects(b().multiplier(-2.0), "multiplier", TooSmall);
    assert_rejects(
        b().jitter(Jitter::Proportional(f64::NAN)),
        "jitter",
        NotFinite,
    );
    assert_rejects(
        b().jitter(Jitter::Proportional(f64::INFINITY)),
        "jitter",
        NotFinite,
    );
    assert_rejects(b().jitter(Jitter::Proportional(-0.1)), "jitter", TooSmall);
    assert_rejects(b().jitter(Jitter::Proportional(1.5)), "jitter", TooLarge);
    assert_rejects(b().max_attempts(0), "max_attempts", Zero);
    assert_rejects(b().max_elapsed(Duration::ZERO), "max_elapsed", Zero);
}

#[test]
fn config_error_messages_say_what_is_wrong() {
    let e = rejected(Backoff::builder().multiplier(f64::NAN));
    assert!(e.to_string().contains("NaN"), "{e}");
    let e = rejected(Backoff::builder().multiplier(0.5));
    assert!(e.to_string().contains("0.5"), "{e}");
    let e = rejected(Backoff::builder().jitter(Jitter::Proportional(1.5)));
    assert!(e.to_string().contains("1.5"), "{e}");
    let e = rejected(
        Backoff::builder()
            .initial(Duration::from_secs(2))
            .max(Duration::from_secs(1)),
    );
    assert!(e.to_string().contains("max"), "{e}");
}

#[test]
fn limits_of_the_valid_range_are_accepted() {
    let ok = |b: BackoffBuilder| b.build().unwrap();
    ok(Backoff::builder().multiplier(1.0));
    ok(Backoff::builder().jitter(Jitter::Proportional(0.0)));
    ok(Backoff::builder().jitter(Jitter::Proportional(1.0)));
    ok(Backoff::builder().max_attempts(1));
    ok(Backoff::builder().max_elapsed(Duration::from_nanos(1)));
    ok(Backoff::builder()
        .initial(Duration::from_nanos(1))
        .max(Duration::from_nanos(1)));
    ok(Backoff::builder().initial(Duration::MAX).max(Duration::MAX));
}

#[test]
fn unlimited_attempts_clears_a_limit() {
    let b = Backoff::builder()
        .max_attempts(3)
        .unlimited_attempts()
        .build()
        .unwrap();
    assert_eq!(b.max_attempts(), None);
}

// ---------------------------------------------------------------------------------------------
// Presets
// ---------------------------------------------------------------------------------------------

#[test]
fn presets_pass_their_own_validation() {
    for preset in [
        Backoff::default(),
        Backoff::grpc(),
        Backoff::aggressive(),
        Backoff::conservative(),
        Backoff::disabled(),
    ] {
        let rebuilt = preset.to_builder().build().unwrap();
        assert_eq!(rebuilt, preset);
        assert_eq!(preset.seed(), None);
        assert_eq!(preset.max_elapsed(), None);
    }
}

#[test]
fn preset_values_match_the_documented_table() {
    let g = Backoff::grpc();
    assert_eq!(g.initial(), Duration::from_secs(1));
    assert_eq!(g.multiplier(), 1.6);
    assert_eq!(g.max(), Duration::from_secs(120));
    assert_eq!(g.jitter(), Jitter::Proportional(0.2));
    assert_eq!(g.max_attempts(), None);
    assert_eq!(g.upper_bound(), Duration::from_secs(144));

    let d = Backoff::default();
    assert_eq!(
        (
            d.initial(),
            d.multiplier(),
            d.max(),
            d.jitter(),
            d.max_attempts()
        ),
        (100 * MS, 2.0, Duration::from_secs(30), Jitter::Full, None)
    );
    assert_eq!(Backoff::builder().build().unwrap(), d);

    let a = Backoff::aggressive();
    assert_eq!(
        (
            a.initial(),
            a.multiplier(),
            a.max(),
            a.jitter(),
            a.max_attempts()
        ),
        (
            50 * MS,
            1.5,
            Duration::from_secs(10),
            Jitter::Full,
            Some(20)
        )
    );

    let c = Backoff::conservative();
    assert_eq!(
        (
            c.initial(),
            c.multiplier(),
            c.max(),
            c.jitter(),
            c.max_attempts()
        ),
        (
            Duration::from_secs(5),
            2.0,
            Duration::from_secs(300),
            Jitter::Full,
            Some(5)
        )
    );

    let off = Backoff::disabled();
    assert_eq!(off.max_attempts(), Some(1));
    assert_eq!(off.schedule_seeded(0).next_delay(), None);
}

// ---------------------------------------------------------------------------------------------
// Schedules
// ---------------------------------------------------------------------------------------------

fn exact(initial_ms: u32, multiplier: f64, max_ms: u32) -> BackoffBuilder {
    Backoff::builder()
        .initial(initial_ms * MS)
        .multiplier(multiplier)
        .max(max_ms * MS)
        .jitter(Jitter::None)
}

#[test]
fn max_attempts_counts_the_first_attempt() {
    let policy = exact(100, 2.0, 10_000).max_attempts(4).build().unwrap();
    let mut s = policy.schedule_seeded(1);
    assert_eq!(s.next_attempt(), 1);
    assert!(s.has_attempts_left());
    assert_eq!(s.next_delay(), Some(100 * MS));
    assert_eq!(s.next_delay(), Some(200 * MS));
    assert_eq!(s.next_delay(), Some(400 * MS));
    assert!(!s.has_attempts_left());
    assert_eq!(s.next_attempt(), 4);
    assert_eq!(s.next_delay(), None);
    assert_eq!(s.next_delay(), None);
    assert_eq!(s.retries(), 3);

    let once = exact(100, 2.0, 10_000).max_attempts(1).build().unwrap();
    assert_eq!(once.schedule_seeded(1).next_delay(), None);
}

#[test]
fn reset_restarts_at_the_first_delay() {
    let policy = exact(100, 2.0, 10_000).max_attempts(3).build().unwrap();
    let mut s = policy.schedule_seeded(1);
    assert_eq!(s.next_delay(), Some(100 * MS));
    assert_eq!(s.next_delay(), Some(200 * MS));
    assert_eq!(s.next_delay(), None);
    s.reset();
    assert_eq!(s.retries(), 0);
    assert_eq!(s.next_attempt(), 1);
    assert_eq!(s.elapsed(), None);
    assert_eq!(s.next_delay(), Some(100 * MS));
    assert_eq!(s.next_delay(), Some(200 * MS));
}

#[test]
fn delays_grow_then_saturate_at_max() {
    let policy = exact(100, 2.0, 1_000).build().unwrap();
    let delays: Vec<_> = (0..7).map(|n| policy.delay(n)).collect();
    assert_eq!(
        delays,
        [100, 200, 400, 800, 1000, 1000, 1000].map(|ms| ms * MS)
    );
    assert_eq!(policy.delay(u32::MAX), 1000 * MS);
    assert_eq!(policy.delay(u32::MAX - 1), 1000 * MS);

    let constant = exact(250, 1.0, 1_000).build().unwrap();
    assert_eq!(constant.delay(0), 250 * MS);
    assert_eq!(constant.delay(u32::MAX), 250 * MS);

    let grpc = Backoff::grpc();
    assert_eq!(grpc.delay(u32::MAX), grpc.max());
    assert_eq!(grpc.delay(1), Duration::from_millis(1600));

    let huge = exact(1, f64::MAX, 1_000).build().unwrap();
    assert_eq!(huge.delay(0), MS);
    assert_eq!(huge.delay(1), 1000 * MS);
    assert_eq!(huge.delay(u32::MAX), 1000 * MS);
}

#[test]
fn a_schedule_saturates_instead_of_overflowing() {
    let policy = Backoff::builder()
        .initial(Duration::from_secs(1))
        .multiplier(10.0)
        .max(Duration::MAX)
        .jitter(Jitter::None)
        .build()
        .unwrap();
    let mut s = policy.schedule_seeded(0);
    let mut last = Duration::ZERO;
    for _ in 0..500 {
        let d = s.next_delay_unbounded();
        assert!(d >= last);
        last = d;
    }
    assert_eq!(last, Duration::MAX);
}

#[tokio::test(start_paused = true)]
async fn max_elapsed_stops_the_schedule() {
    let policy = exact(100, 2.0, 10_000)
        .max_elapsed(Duration::from_secs(1))
        .build()
        .unwrap();
    let mut s = policy.schedule_seeded(1);
    assert_eq!(s.elapsed(), None);
    // 0 + 100 ms fits in 1 s.
    assert_eq!(s.next_delay(), Some(100 * MS));
    tokio::time::advance(100 * MS).await;
    assert_eq!(s.elapsed(), Some(100 * MS));
    // 100 + 200 ms fits.
    assert_eq!(s.next_delay(), Some(200 * MS));
    tokio::time::advance(200 * MS).await;
    // 300 + 400 ms fits.
    assert_eq!(s.next_delay(), Some(400 * MS));
    tokio::time::advance(400 * MS).await;
    // 700 + 800 ms does not fit: the last delay is cut to end at the limit...
    assert_eq!(s.next_delay(), Some(300 * MS));
    tokio::time::advance(300 * MS).await;
    // ...and then the schedule is spent, and stays spent, whatever jitter would draw.
    assert_eq!(s.next_delay(), None);
    assert_eq!(s.next_delay(), None);

    // The limit counts time since the first delay, even with no calls in between.
    s.reset();
    assert_eq!(s.next_delay(), Some(100 * MS));
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(s.next_delay(), None);

    // Exactly on the limit is still allowed.
    let policy = exact(500, 1.0, 500)
        .max_elapsed(Duration::from_secs(1))
        .build()
        .unwrap();
    let mut s = policy.schedule_seeded(1);
    assert_eq!(s.next_delay(), Some(500 * MS));
    tokio::time::advance(500 * MS).await;
    assert_eq!(s.next_delay(), Some(500 * MS));
    // Called a little late, the delay shrinks so the attempt still lands on the limit.
    tokio::time::advance(MS).await;
    assert_eq!(s.next_delay(), Some(499 * MS));
    tokio::time::advance(499 * MS).await;
    assert_eq!(s.next_delay(), None);
}

/// The un-jittered delays of a schedule's first 40 steps, for the jitter bounds tests.
fn steps(policy: &Backoff) -> impl Iterator<Item = Duration> + '_ {
    (0..40).map(|n| policy.delay(n))
}

#[test]
fn full_jitter_stays_within_zero_and_d() {
    let policy = exact(10, 2.0, 5_000).jitter(Jitter::Full).build().unwrap();
    let plain = none(policy);
    for seed in 0..50 {
        let mut s = policy.schedule_seeded(seed);
        for d in steps(&plain) {
            let got = s.next_delay().unwrap();
            assert!(got <= d, "{got:?} above {d:?}");
        }
    }
    // It really is random: not every delay is the un-jittered one.
    let mut s = policy.schedule_seeded(7);
    assert!(steps(&plain).any(|d| s.next_delay().unwrap() != d));
}

#[test]
fn equal_jitter_stays_within_half_d_and_d() {
    let policy = exact(10, 2.0, 5_000).jitter(Jitter::Equal).build().unwrap();
    let plain = none(policy);
    let mut below_d = false;
    for seed in 0..50 {
        let mut s = policy.schedule_seeded(seed);
        for d in steps(&plain) {
            let got = s.next_delay().unwrap();
            assert!(
                got >= d / 2 && got <= d,
                "{got:?} outside [{:?}, {d:?}]",
                d / 2
            );
            below_d |= got < d;
        }
    }
    assert!(below_d);
}

#[test]
fn decorrelated_jitter_stays_within_initial_and_max() {
    let initial = 10 * MS;
    let max = 5_000 * MS;
    // Decorrelated jitter ignores the multiplier.
    for multiplier in [1.0, 2.0, 100.0] {
        let policy = Backoff::builder()
            .initial(initial)
            .max(max)
            .multiplier(multiplier)
            .jitter(Jitter::Decorrelated)
            .build()
            .unwrap();
        for seed in 0..50 {
            let mut s = policy.schedule_seeded(seed);
            let mut previous = initial;
            for _ in 0..60 {
                let got = s.next_delay().unwrap();
                assert!(got >= initial && got <= max, "{got:?}");
                // U(initial, 3 × previous), capped.
                assert!(
                    got <= (previous * 3).max(initial),
                    "{got:?} after {previous:?}"
                );
                previous = got;
            }
        }
    }
}

#[test]
fn proportional_jitter_stays_within_its_ratio() {
    let policy = exact(1_000, 1.6, 120_000)
        .jitter(Jitter::Proportional(0.2))
        .build()
        .unwrap();
    let plain = none(policy);
    let mut above_max = false;
    for seed in 0..50 {
        let mut s = policy.schedule_seeded(seed);
        for d in steps(&plain) {
            let got = s.next_delay().unwrap();
            let (lo, hi) = (d.mul_f64(0.8), d.mul_f64(1.2));
            assert!(
                got >= lo - MS && got <= hi + MS,
                "{got:?} not within 20% of {d:?}"
            );
            assert!(got <= policy.upper_bound());
            above_max |= got > policy.max();
        }
    }
    // The only kind documented to pass `max`, and it does.
    assert!(above_max);
}

// ---------------------------------------------------------------------------------------------
// tower
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn tower_make_backoff_sleeps_for_the_schedule() {
    use tokio::time::Instant;
    use tower::retry::backoff::{Backoff as _, MakeBackoff};

    let mut policy = exact(100, 2.0, 300).max_attempts(2).build().unwrap();
    let mut schedule = policy.make_backoff();
    for expected in [100, 200, 300, 300] {
        let start = Instant::now();
        let sleep = schedule.next_backoff();
        assert_eq!(sleep.deadline(), start + expected * MS);
        tokio::pin!(sleep);
        // Not a moment early.
        tokio::time::advance((expected - 1) * MS).await;
        assert!(
            futures_poll(sleep.as_mut()).is_pending(),
            "woke before {expected} ms"
        );
        tokio::time::advance(MS).await;
        sleep.await;
        assert_eq!(start.elapsed(), expected * MS);
    }
    // tower leaves the limits to its retry policy: the schedule keeps going past
    // `max_attempts`, saturated at `max`.
    assert_eq!(schedule.retries(), 4);

    // Each call makes a fresh schedule.
    let mut again = policy.make_backoff();
    let start = Instant::now();
    again.next_backoff().await;
    assert_eq!(start.elapsed(), 100 * MS);
}

/// Polls a future once with a waker that does nothing.
fn futures_poll<F: std::future::Future>(f: std::pin::Pin<&mut F>) -> std::task::Poll<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    f.poll(&mut cx)
}

// ---------------------------------------------------------------------------------------------
// Regressions found by the properties above
// ---------------------------------------------------------------------------------------------

/// `f64` seconds hold fewer digits than a `Duration`: rounding `max` to an `f64` and back used to
/// hand out decorrelated delays a few nanoseconds above `max`.
#[test]
fn decorrelated_jitter_never_rounds_past_max() {
    let policy = Backoff::builder()
        .initial(Duration::new(36, 565_684_527))
        .max(Duration::new(8_436_023, 451_509_432))
        .multiplier(1.0)
        .jitter(Jitter::Decorrelated)
        .build()
        .unwrap();
    for seed in [17_094_597_549, 0, 1, 2, 3] {
        let mut s = policy.schedule_seeded(seed);
        for _ in 0..200 {
            let d = s.next_delay().unwrap();
            assert!(d <= policy.max(), "{d:?} above {:?}", policy.max());
        }
    }
}

/// When `max × (1 + r)` does not fit in a `Duration`, `upper_bound` used to fall back to `max`
/// while the schedule handed out delays between `max` and `Duration::MAX`.
#[test]
fn proportional_upper_bound_saturates_at_duration_max() {
    let policy = Backoff::builder()
        .initial(Duration::from_secs(1))
        .max(Duration::from_secs(1 << 63))
        .multiplier(1.0)
        .jitter(Jitter::Proportional(1.0))
        .build()
        .unwrap();
    assert_eq!(policy.upper_bound(), Duration::MAX);
    let policy = policy
        .to_builder()
        .initial(Duration::from_secs(1 << 63))
        .build()
        .unwrap();
    let mut s = policy.schedule_seeded(0);
    let mut above_max = false;
    for _ in 0..100 {
        let d = s.next_delay().unwrap();
        assert!(d <= policy.upper_bound());
        above_max |= d > policy.max();
    }
    assert!(above_max);
}

/// With jitter, a time limit used to be judged against each random draw: a large draw ended the
/// schedule early, and a later small one could revive it. Now the run lasts exactly up to the
/// limit (the last delay is cut to end on it) and then stays spent.
#[tokio::test(start_paused = true)]
async fn max_elapsed_with_jitter_ends_on_the_limit_and_stays_spent() {
    let limit = Duration::from_secs(3);
    let policy = Backoff::builder()
        .initial(100 * MS)
        .max(Duration::from_secs(2))
        .jitter(Jitter::Full)
        .max_elapsed(limit)
        .build()
        .unwrap();
    for seed in 0..20 {
        let mut s = policy.schedule_seeded(seed);
        let start = tokio::time::Instant::now();
        let mut slept = Duration::ZERO;
        let mut delays = 0;
        while let Some(d) = s.next_delay() {
            delays += 1;
            assert!(delays < 10_000, "seed {seed}: the schedule never ended");
            if d.is_zero() {
                // A zero draw does not move time; it still counts as a delay handed out.
                continue;
            }
            slept += d;
            tokio::time::advance(d).await;
        }
        assert_eq!(
            slept, limit,
            "seed {seed}: retries must last until the limit"
        );
        assert_eq!(start.elapsed(), limit);
        for _ in 0..50 {
            assert_eq!(
                s.next_delay(),
                None,
                "seed {seed}: a spent schedule revived"
            );
        }
    }
}

/// tower makes one schedule per retried request. With a fixed seed they must not all draw the
/// same jitter (concurrent retries would fire in lockstep), yet a rerun must repeat them.
#[test]
fn make_backoff_gives_each_schedule_its_own_repeatable_jitter() {
    use tower::retry::backoff::MakeBackoff;
    let draws = || {
        let mut policy = Backoff::builder()
            .jitter(Jitter::Full)
            .seed(42)
            .build()
            .unwrap();
        (0..4)
            .map(|_| {
                let mut s = policy.make_backoff();
                (0..6).map(|_| s.next_delay_unbounded()).collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    let first = draws();
    assert_eq!(first, draws(), "the same seed repeats the same schedules");
    for (i, a) in first.iter().enumerate() {
        for b in &first[i + 1..] {
            assert_ne!(a, b, "two schedules drew the same jitter");
        }
    }
}
