//! Scenario 5: a slow peer.
//!
//! Six clients of one process send GETs back to back through the balanced stack
//! (`balanced.rs`) to three servers. At 1 s the link to `c` slows to 500 ms each way, so no
//! request to it can finish within the 200 ms attempt timeout; at 6 s it is fast again.
//! For the first two seconds of the slowdown an operator holds `c` in the rotation
//! (`Override::Closed`), as one would while investigating; at 3 s the override is lifted.
//!
//! Asserted, per seed:
//! - while forced closed, `c` is never ejected, and health says what it skipped
//!   (`EjectionSkipped { ForcedClosed }`);
//! - once the override is lifted, `c` is ejected;
//! - the p99 of the stack's request latency stays under the per-request timeout: the attempt
//!   timeout and the retry take each request that went to `c` elsewhere;
//! - `c` is re-admitted once its link is fast again: a probe restores it, and it serves again;
//! - at least 99 % of all requests succeed; every request ends with a response or a typed
//!   error before its deadline.

use std::time::Duration;

use redial::event::{EventKind, SkipReason};
use redial::peers::Override;

use crate::balanced::{self, HOSTS, Knobs};
use crate::harness::record::Recorded;
use crate::harness::sweep::Run;
use crate::harness::{Fault, Settings, World, now};
use crate::stack::{Outcome, assert_accounted, tally};

const SLOW: Duration = Duration::from_millis(1000);
const AUTOMATIC: Duration = Duration::from_millis(3000);
const FAST: Duration = Duration::from_millis(6000);
const LOAD_END: Duration = Duration::from_millis(9000);
/// The slow link's latency, each way.
const SLOW_LATENCY: Duration = Duration::from_millis(500);
/// The link's latency once it is fast again (the default links draw theirs from 1 to 5 ms).
const FAST_LATENCY: Duration = Duration::from_millis(3);

fn knobs() -> Knobs {
    Knobs {
        // A connect over the slow link takes a second (SYN and SYN-ACK): it gets through, so
        // requests keep reaching the slow peer, and only health can take it out.
        connect_timeout: Duration::from_millis(1500),
        timeout: Duration::from_millis(1000),
        ..Knobs::default()
    }
}

pub fn run(seed: u64) -> Run {
    let knobs = knobs();
    let mut world = World::new(&Settings::new(seed, Duration::from_secs(30)));
    let servers = balanced::servers(&mut world, &HOSTS);
    let c = servers[2].clone();
    world
        .at(SLOW, Fault::Latency("client", "c", SLOW_LATENCY))
        .at(FAST, Fault::Latency("client", "c", FAST_LATENCY));
    // The operator: holds `c` in while it is slow, then lets health judge it.
    let seen = balanced::run(world, seed, &knobs, LOAD_END, |peers| async move {
        let slow = peers.get("c").expect("c is in the table");
        tokio::time::sleep(SLOW.saturating_sub(now())).await;
        slow.set_override(Override::Closed);
        tokio::time::sleep(AUTOMATIC.saturating_sub(now())).await;
        slow.set_override(Override::Automatic);
    });
    let outcomes = &seen.outcomes;
    let summary = tally(outcomes);
    assert!(outcomes.len() > 1000, "too little load: {summary:?}");
    assert_accounted(outcomes, knobs.timeout);

    let of_c: Vec<&Recorded> = seen.events.iter().filter(|e| e.peer == "\"c\"").collect();
    let in_span = |from: Duration, to: Duration| {
        of_c.iter()
            .copied()
            .filter(move |e| e.at >= from && e.at < to)
    };

    // Held in by the operator: not ejected, and health says it held back.
    let ejected_while_closed = in_span(SLOW, AUTOMATIC)
        .filter(|e| matches!(e.kind, EventKind::Ejected { .. }))
        .count();
    assert_eq!(ejected_while_closed, 0, "c ejected while forced closed");
    let skipped = in_span(SLOW, AUTOMATIC)
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::EjectionSkipped {
                    reason: SkipReason::ForcedClosed
                }
            )
        })
        .count();
    assert!(
        skipped > 0,
        "c failed while forced closed, yet no ejection was skipped: {summary:?}"
    );

    // Judged by health again: ejected while slow.
    let ejected = in_span(AUTOMATIC, FAST)
        .find(|e| matches!(e.kind, EventKind::Ejected { .. }))
        .map(|e| e.at)
        .unwrap_or_else(|| panic!("the slow peer was never ejected: {summary:?}"));

    // The stack's p99 stays under the per-request timeout.
    let mut took: Vec<Duration> = outcomes.iter().map(Outcome::took).collect();
    took.sort();
    let p99 = took[took.len() * 99 / 100];
    assert!(
        p99 < knobs.timeout,
        "p99 {p99:?}, not under the {:?} timeout",
        knobs.timeout
    );

    // Re-admitted once fast again: restored by a probe, then serving.
    let restored = in_span(FAST, LOAD_END)
        .find(|e| matches!(e.kind, EventKind::Restored))
        .map(|e| e.at)
        .unwrap_or_else(|| panic!("c was not restored once fast again: {summary:?}"));
    let served = c
        .counters
        .requests
        .borrow()
        .iter()
        .filter(|s| s.status == 200 && s.at >= restored)
        .count();
    assert!(served >= 10, "c served {served} requests after its restore");

    let ok = outcomes.iter().filter(|o| o.ok()).count();
    let rate = ok as f64 / outcomes.len() as f64;
    assert!(rate >= 0.99, "success {rate:.4}: {summary:?}");
    eprintln!(
        "  {} requests, {:.2} % ok, p99 {p99:?} {summary:?}; {skipped} ejections skipped while \
         forced closed; ejected at {ejected:?}, restored at {restored:?}, then served {served}",
        outcomes.len(),
        rate * 100.0,
    );
    seen.run
}
