//! Scenario 2: a black hole in one of three peers.
//!
//! Six clients of one process send GETs back to back through the balanced stack
//! (`balanced.rs`) to three servers, `a`, `b` and `c`. Peer `b` turns into a black hole three
//! times, each a different way:
//!
//! 1. **the server** (1 s to 3 s): it accepts connections and reads requests, and never
//!    answers. Connects succeed, so requests keep reaching it until health ejects it;
//! 2. **a partition after connect** (4 s to 5.5 s): the open connection goes silent, and
//!    turmoil refuses new connects;
//! 3. **a hold** (7 s to 8.5 s): the open connection goes silent, and a new connect hangs.
//!
//! Asserted, per seed:
//! - `b` leaves the rotation within `attempt timeout × failures` of each fault (plus, between
//!   failures, a reconnect: see `out_of_rotation_within`). With the server black hole, health
//!   ejects it (the `Ejected` event). With a partition or a hold, HTTP/1
//!   cannot cancel a request, so the first timed-out request costs the connection, no new one
//!   gets through, and reconnect's backoff keeps `b` unready: no request is sent to it after
//!   that bound until the fault ends;
//! - afterwards only probes reach it: each request the black-holed server receives after the
//!   first ejection arrives after an ejection is over, one per ejection at most; during the
//!   partition and the hold, the connect attempts follow the peer's one backoff schedule;
//! - each time, `b` comes back: restored by a successful probe after the server black hole;
//!   serving again within `backoff max + connect timeout` of the repair and of the release
//!   (the peer's next attempt is at most one capped delay away);
//! - at least 99 % of all requests succeed; every request ends with a response or a typed
//!   error before its deadline.

use std::rc::Rc;
use std::time::Duration;

use redial::event::EventKind;

use crate::balanced::{self, HOSTS, Knobs};
use crate::harness::record::Recorded;
use crate::harness::server::Server;
use crate::harness::sweep::Run;
use crate::harness::{Fault, Settings, World, now};
use crate::stack::{assert_accounted, tally};

const SILENT: Duration = Duration::from_millis(1000);
const ANSWERS: Duration = Duration::from_millis(3000);
const PARTITION: Duration = Duration::from_millis(4000);
const REPAIR: Duration = Duration::from_millis(5500);
const HOLD: Duration = Duration::from_millis(7000);
const RELEASE: Duration = Duration::from_millis(8500);
const LOAD_END: Duration = Duration::from_millis(10_000);

pub fn run(seed: u64) -> Run {
    let knobs = Knobs::default();
    let mut world = World::new(&Settings::new(seed, Duration::from_secs(30)));
    let servers = balanced::servers(&mut world, &HOSTS);
    let b = servers[1].clone();
    world
        .at(PARTITION, Fault::Partition("client", "b"))
        .at(REPAIR, Fault::Repair("client", "b"))
        .at(HOLD, Fault::Hold("client", "b"))
        .at(RELEASE, Fault::Release("client", "b"));
    let switch = Rc::clone(&b.black_hole);
    // The server's black hole is not a network fault: the test flips it from the client.
    let seen = balanced::run(world, seed, &knobs, LOAD_END, |_| async move {
        tokio::time::sleep(SILENT.saturating_sub(now())).await;
        switch.set(true);
        tokio::time::sleep(ANSWERS.saturating_sub(now())).await;
        switch.set(false);
    });
    let dispatched_to_b = seen.dispatches.to("b");
    let dials_to_b: Vec<Duration> = seen
        .dials
        .iter()
        .filter(|d| d.host == "b")
        .map(|d| d.at)
        .collect();
    let outcomes = &seen.outcomes;
    let summary = tally(outcomes);
    assert!(outcomes.len() > 1000, "too little load: {summary:?}");
    assert_accounted(outcomes, knobs.timeout);

    let bound = out_of_rotation_within(&knobs);
    let of_b = |e: &&Recorded| e.peer == "\"b\"";

    // 1. The server black hole: ejected by health within the bound, then only probes.
    let ejections: Vec<(Duration, Duration)> = seen
        .events
        .iter()
        .filter(of_b)
        .filter_map(|e| match e.kind {
            EventKind::Ejected {
                duration: Some(d), ..
            } if e.at >= SILENT && e.at < ANSWERS + knobs.max_ejection => Some((e.at, d)),
            _ => None,
        })
        .collect();
    let first = ejections
        .first()
        .map(|(at, _)| *at)
        .unwrap_or_else(|| panic!("b was never ejected: {summary:?}"));
    assert!(
        first - SILENT <= bound,
        "b ejected {:?} after it went silent, above {bound:?}",
        first - SILENT
    );
    let held: Vec<Duration> = b
        .counters
        .requests
        .borrow()
        .iter()
        .filter(|s| s.status == 0 && s.at > first)
        .map(|s| s.at)
        .collect();
    assert!(
        held.len() <= ejections.len(),
        "{} requests reached the black hole after it was ejected, for {} ejections: {held:?}",
        held.len(),
        ejections.len()
    );
    for at in &held {
        assert!(
            ejections.iter().any(|(e, d)| *e + *d <= *at),
            "a request reached the black hole at {at:?}, inside an ejection: {ejections:?}"
        );
    }
    let restored = seen
        .events
        .iter()
        .filter(of_b)
        .find(|e| e.at >= ANSWERS && matches!(e.kind, EventKind::Restored))
        .map(|e| e.at)
        .unwrap_or_else(|| panic!("b was never restored after the black hole: {summary:?}"));
    assert_serves_again(&b, restored, PARTITION - restored, PARTITION, "restore");

    // 2 and 3. Partition and hold: out of the rotation within the bound, back when it ends.
    for (what, from, to) in [("partition", PARTITION, REPAIR), ("hold", HOLD, RELEASE)] {
        let sent: Vec<&Duration> = dispatched_to_b
            .iter()
            .filter(|at| **at > from + bound && **at < to)
            .collect();
        assert!(
            sent.is_empty(),
            "during the {what} ({from:?} to {to:?}), requests were sent to b at {sent:?}"
        );
        let dials = dials_to_b
            .iter()
            .filter(|at| **at >= from && **at < to)
            .count();
        let allowed = attempts_within(&knobs, to - from);
        assert!(
            dials <= allowed,
            "{dials} connect attempts to b during the {what}; its backoff allows {allowed}"
        );
        let next = if to == REPAIR { HOLD } else { LOAD_END };
        let back_within = knobs.backoff.max() + knobs.connect_timeout + ROUND_TRIP;
        assert_serves_again(&b, to, back_within, next, what);
    }

    let ok = outcomes.iter().filter(|o| o.ok()).count();
    let rate = ok as f64 / outcomes.len() as f64;
    assert!(rate >= 0.99, "success {rate:.4}: {summary:?}");
    eprintln!(
        "  {} requests, {:.2} % ok {summary:?}; b ejected {:?} after the black hole began, \
         {} ejections, {} probes held",
        outcomes.len(),
        rate * 100.0,
        first - SILENT,
        ejections.len(),
        held.len()
    );
    seen.run
}

/// How soon after a fault the peer must be out of the rotation: `attempt timeout × failures`,
/// plus what separates one failure from the next. HTTP/1 cannot cancel a request, so each
/// timed-out request costs its connection, and the reconnect before the next request waits
/// out a backoff step (the connection was dropped before it proved anything: flapping) and a
/// connect round trip; then the balancer has to pick the peer again.
fn out_of_rotation_within(knobs: &Knobs) -> Duration {
    let mut between = Duration::ZERO;
    let mut step = knobs.backoff.initial();
    for _ in 1..knobs.failures {
        between += step + ROUND_TRIP;
        step = (step * 2).min(knobs.backoff.max());
    }
    knobs.attempt_timeout * knobs.failures + between + ROUND_TRIP
}

/// A connect or a request and its answer over one simulated link (at most 5 ms each way),
/// with a tick of slack each way.
const ROUND_TRIP: Duration = Duration::from_millis(12);

/// `server` answers requests again after `from`: the first within `within`, and at least ten
/// by `until`.
fn assert_serves_again(
    server: &Server,
    from: Duration,
    within: Duration,
    until: Duration,
    after: &str,
) {
    let served: Vec<Duration> = server
        .counters
        .requests
        .borrow()
        .iter()
        .filter(|s| s.status == 200 && s.at >= from && s.at < until)
        .map(|s| s.at)
        .collect();
    let first = served
        .first()
        .unwrap_or_else(|| panic!("b served nothing after the {after} at {from:?}"));
    assert!(
        *first - from <= within,
        "b served again {:?} after the {after}, above {within:?}",
        *first - from
    );
    assert!(
        served.len() >= 10,
        "b served only {} requests between {from:?} and {until:?}, after the {after}",
        served.len()
    );
}

/// The most connect attempts the peer's schedule allows in `span` after a failure: with equal
/// jitter each delay is at least half its step, and a hanging attempt also takes its timeout.
fn attempts_within(knobs: &Knobs, span: Duration) -> usize {
    let (mut step, mut spent, mut attempts) = (knobs.backoff.initial(), Duration::ZERO, 1);
    while spent < span {
        spent += step / 2;
        step = (step * 2).min(knobs.backoff.max());
        attempts += 1;
    }
    attempts
}
