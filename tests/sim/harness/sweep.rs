//! The seed sweep: every scenario runs once per seed; a failing seed is named so that it can be
//! replayed alone.
//!
//! - `REDIAL_SIM_SEEDS=N` runs seeds `0..N` (default 8, what CI runs);
//! - `REDIAL_SIM_SEED=S` runs seed `S` only (a replay);
//! - `REDIAL_SIM_TRACE=1` prints each run's event trace before its assertions (with
//!   `--nocapture`), to see what a failing seed did.
//!
//! The seed goes to turmoil's network randomness and to redial's (`Peers::builder().seed`,
//! `RetryLayer::builder().seed`), so a rerun of one seed repeats the run event for event.

use std::panic::{AssertUnwindSafe, catch_unwind};

use super::record::Coverage;

/// Seeds run when `REDIAL_SIM_SEEDS` is not set.
pub const DEFAULT_SEEDS: u64 = 8;

/// The seeds to run.
pub fn seeds() -> Vec<u64> {
    if let Some(seed) = env_u64("REDIAL_SIM_SEED") {
        return vec![seed];
    }
    (0..env_u64("REDIAL_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS)).collect()
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    match value.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name}={value:?} is not a number"),
    }
}

/// What one run hands back to the sweep.
#[derive(Debug, Clone, Default)]
pub struct Run {
    pub coverage: Coverage,
    /// The recorded event trace (what a replay must repeat).
    pub trace: Vec<String>,
}

/// Runs `scenario` once per seed, printing each seed; stops at the first failure and returns
/// `"seed N failed: ..."` with the command that replays it. On success, the coverage of every
/// run merged.
pub fn sweep(name: &str, scenario: fn(u64) -> Run) -> Result<Coverage, String> {
    let mut coverage = Coverage::default();
    for seed in seeds() {
        eprintln!("sim {name}: seed {seed}");
        match catch_unwind(AssertUnwindSafe(|| scenario(seed))) {
            Ok(run) => coverage.merge(&run.coverage),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)");
                return Err(format!(
                    "seed {seed} failed: {message}\n  replay: REDIAL_SIM_SEED={seed} cargo test \
                     --all-features --test sim {name}"
                ));
            }
        }
    }
    Ok(coverage)
}

/// Prints `trace` when `REDIAL_SIM_TRACE` is set; scenarios call it before they assert.
pub fn show_trace(trace: &[String]) {
    if std::env::var_os("REDIAL_SIM_TRACE").is_some() {
        for line in trace {
            eprintln!("{line}");
        }
    }
}
