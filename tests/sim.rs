//! The deterministic network simulation (issue #6, DESIGN §6.3): the redial stack under
//! crashes, partitions, loss and latency, swept over seeds.
//!
//! `cargo test --all-features --test sim` runs every scenario over `REDIAL_SIM_SEEDS` seeds
//! (default 8); a failure names its seed, and `REDIAL_SIM_SEED=N` replays that seed alone,
//! event for event. turmoil is named only in `sim/harness`.

#[path = "sim/crash_restart.rs"]
mod crash_restart;
#[path = "sim/harness/mod.rs"]
mod harness;
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

fn check(result: &Result<Coverage, String>) {
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

#[test]
fn crash_restart() {
    check(crash_restart_sweep());
}
