//! The deterministic network simulation (issue #6, DESIGN §6.3): the redial stack under
//! crashes, partitions, loss and latency, swept over seeds.
//!
//! Scenarios (one module each): 1 `crash_restart`, 1b `outage`, 2 `black_hole`, 3 `herd`,
//! 4 `lossy`, 5 `slow_peer`. The stacks they drive are in `stack` (one peer) and `balanced`
//! (three peers behind p2c with health).
//!
//! `cargo test --all-features --test sim` runs every scenario over `REDIAL_SIM_SEEDS` seeds
//! (default 8); a failure names its seed, and `REDIAL_SIM_SEED=N` replays that seed alone,
//! event for event. turmoil is named only in `sim/harness`.

#![cfg(feature = "hyper")]

#[path = "sim/balanced.rs"]
mod balanced;
#[path = "sim/black_hole.rs"]
mod black_hole;
#[path = "sim/crash_restart.rs"]
mod crash_restart;
#[path = "sim/harness/mod.rs"]
mod harness;
#[path = "sim/herd.rs"]
mod herd;
#[path = "sim/lossy.rs"]
mod lossy;
#[path = "sim/outage.rs"]
mod outage;
#[path = "sim/slow_peer.rs"]
mod slow_peer;
#[path = "sim/stack.rs"]
mod stack;

use std::sync::OnceLock;

use harness::record::Coverage;
use harness::sweep::sweep;

/// Each scenario's sweep runs once per test process, whichever test needs it first; the
/// scenario's own test and the coverage test share the result.
fn crash_restart_sweep() -> &'static Result<Coverage, String> {
    static SWEEP: OnceLock<Result<Coverage, String>> = OnceLock::new();
    SWEEP.get_or_init(|| sweep("crash_restart", crash_restart::run))
}

fn black_hole_sweep() -> &'static Result<Coverage, String> {
    static SWEEP: OnceLock<Result<Coverage, String>> = OnceLock::new();
    SWEEP.get_or_init(|| sweep("black_hole", black_hole::run))
}

fn herd_sweep() -> &'static Result<Coverage, String> {
    static SWEEP: OnceLock<Result<Coverage, String>> = OnceLock::new();
    SWEEP.get_or_init(|| sweep("herd", herd::run))
}

fn lossy_sweep() -> &'static Result<Coverage, String> {
    static SWEEP: OnceLock<Result<Coverage, String>> = OnceLock::new();
    SWEEP.get_or_init(|| sweep("lossy", lossy::run))
}

fn outage_sweep() -> &'static Result<Coverage, String> {
    static SWEEP: OnceLock<Result<Coverage, String>> = OnceLock::new();
    SWEEP.get_or_init(|| sweep("outage", outage::run))
}

fn slow_peer_sweep() -> &'static Result<Coverage, String> {
    static SWEEP: OnceLock<Result<Coverage, String>> = OnceLock::new();
    SWEEP.get_or_init(|| sweep("slow_peer", slow_peer::run))
}

fn check(result: &Result<Coverage, String>) {
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

#[test]
fn crash_restart() {
    check(crash_restart_sweep());
}

#[test]
fn black_hole() {
    check(black_hole_sweep());
}

#[test]
fn herd() {
    check(herd_sweep());
}

#[test]
fn lossy() {
    check(lossy_sweep());
}

#[test]
fn outage() {
    check(outage_sweep());
}

#[test]
fn slow_peer() {
    check(slow_peer_sweep());
}

/// Every event kind redial publishes, by [`EventKind::name`](redial::event::EventKind::name).
/// `EventKind` is non-exhaustive: a new kind must be added here, and reached by a scenario.
const ALL_KINDS: [&str; 12] = [
    "attempt_started",
    "waiting",
    "connected",
    "disconnected",
    "exhausted",
    "retry_scheduled",
    "budget_exhausted",
    "not_retried",
    "ejected",
    "restored",
    "ejection_skipped",
    "state_changed",
];

/// "Sometimes" coverage: across the sweeps of all scenarios, every peer state and every event
/// kind is reached at least once.
#[test]
fn every_state_and_event_kind_is_reached() {
    let mut reached = Coverage::default();
    let mut failed = Vec::new();
    for (name, sweep) in [
        ("crash_restart", crash_restart_sweep()),
        ("black_hole", black_hole_sweep()),
        ("outage", outage_sweep()),
        ("herd", herd_sweep()),
        ("lossy", lossy_sweep()),
        ("slow_peer", slow_peer_sweep()),
    ] {
        match sweep {
            Ok(coverage) => reached.merge(coverage),
            Err(_) => failed.push(name),
        }
    }
    assert!(
        failed.is_empty(),
        "coverage is unknown while these sweeps fail: {failed:?}"
    );
    let states = redial::peers::PeerState::ALL.map(|s| s.name());
    let missing_states: Vec<&str> = states
        .iter()
        .copied()
        .filter(|s| !reached.states.contains(s))
        .collect();
    let missing_kinds: Vec<&str> = ALL_KINDS
        .iter()
        .copied()
        .filter(|k| !reached.kinds.contains(k))
        .collect();
    assert!(
        missing_states.is_empty() && missing_kinds.is_empty(),
        "never reached in any scenario: states {missing_states:?}, event kinds {missing_kinds:?}"
    );
}

/// A rerun of one seed repeats the run: the same event trace, event for event, instant for
/// instant.
#[test]
fn a_seed_replays_the_same_trace() {
    let seed = harness::sweep::seeds()[0];
    let first = crash_restart::run(seed);
    let second = crash_restart::run(seed);
    assert!(first.trace.len() > 100, "too short a trace to compare");
    if let Some(at) =
        (0..first.trace.len().min(second.trace.len())).find(|&i| first.trace[i] != second.trace[i])
    {
        panic!(
            "seed {seed} diverged at event {at}:\n  {}\n  {}",
            first.trace[at], second.trace[at]
        );
    }
    assert_eq!(
        first.trace.len(),
        second.trace.len(),
        "seed {seed}: trace lengths differ"
    );
}
