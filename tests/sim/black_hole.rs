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

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use redial::backoff::{Backoff, Jitter};
use redial::event::EventKind;

use crate::balanced::{self, Knobs};
use crate::harness::record::{Recorded, Recorder, trace};
use crate::harness::server::Server;
use crate::harness::sweep::{Run, show_trace};
use crate::harness::{Fault, Settings, World, now};
use crate::stack::{self, Outcome, assert_accounted, tally};

const MS: Duration = Duration::from_millis(1);
const HOSTS: [&str; 3] = ["a", "b", "c"];
const CLIENTS: u64 = 6;
const THINK: Duration = Duration::from_millis(10);
const SILENT: Duration = Duration::from_millis(1000);
const ANSWERS: Duration = Duration::from_millis(3000);
const PARTITION: Duration = Duration::from_millis(4000);
const REPAIR: Duration = Duration::from_millis(5500);
const HOLD: Duration = Duration::from_millis(7000);
const RELEASE: Duration = Duration::from_millis(8500);
const LOAD_END: Duration = Duration::from_millis(10_000);

fn knobs() -> Knobs {
    Knobs {
        // Equal jitter: every delay is at least half its step, so the number of connect
        // attempts a fault allows has an upper bound to assert.
        backoff: Backoff::builder()
            .initial(50 * MS)
            .multiplier(2.0)
            .max(1000 * MS)
            .jitter(Jitter::Equal)
            .unlimited_attempts()
            .build()
            .expect("a valid backoff"),
        connect_timeout: 300 * MS,
        attempt_timeout: 200 * MS,
        failures: 3,
        base_ejection: 500 * MS,
        max_ejection: 2000 * MS,
        wait: 1000 * MS,
        max_attempts: 3,
        timeout: 2000 * MS,
    }
}

#[derive(Debug, Default)]
struct Seen {
    outcomes: Vec<Outcome>,
    events: Vec<Recorded>,
    dispatched_to_b: Vec<Duration>,
    dials_to_b: Vec<Duration>,
    run: Run,
    lagged: u64,
}

pub fn run(seed: u64) -> Run {
    let knobs = knobs();
    let mut world = World::new(&Settings::new(seed, Duration::from_secs(30)));
    let servers = balanced::servers(&mut world, &HOSTS);
    let b = servers[1].clone();
    world
        .at(PARTITION, Fault::Partition("client", "b"))
        .at(REPAIR, Fault::Repair("client", "b"))
        .at(HOLD, Fault::Hold("client", "b"))
        .at(RELEASE, Fault::Release("client", "b"));

    let seen = Rc::new(RefCell::new(Seen::default()));
    let out = Rc::clone(&seen);
    let client_knobs = knobs.clone();
    let switch = Rc::clone(&b.black_hole);
    world.client("client", async move {
        let knobs = client_knobs;
        let peers = stack::peers(seed, knobs.backoff);
        let recorder = Recorder::start(&peers);
        let (service, dispatches, connector) = balanced::stack(&peers, &HOSTS, &knobs, seed);
        // The server's black hole is not a network fault: the test flips it from here.
        tokio::task::spawn_local(async move {
            tokio::time::sleep(SILENT.saturating_sub(now())).await;
            switch.set(true);
            tokio::time::sleep(ANSWERS.saturating_sub(now())).await;
            switch.set(false);
        });
        let watchdog = knobs.timeout + Duration::from_secs(1);
        let outcomes = stack::gets(&service, CLIENTS, THINK, LOAD_END, watchdog).await;
        let mut out = out.borrow_mut();
        out.outcomes = outcomes;
        out.events = recorder.events();
        out.run = Run {
            coverage: recorder.coverage(),
            trace: trace(&out.events),
        };
        out.lagged = recorder.lagged();
        out.dispatched_to_b = dispatches.to("b");
        out.dials_to_b = connector
            .dials()
            .iter()
            .filter(|d| d.host == "b")
            .map(|d| d.at)
            .collect();
        Ok(())
    });

    world
        .run()
        .unwrap_or_else(|e| panic!("the simulation failed: {e}"));
    let seen = seen.take();
    show_trace(&seen.run.trace);
    let outcomes = &seen.outcomes;
    let summary = tally(outcomes);
    assert_eq!(seen.lagged, 0, "the recorder lost events");
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
        let sent: Vec<&Duration> = seen
            .dispatched_to_b
            .iter()
            .filter(|at| **at > from + bound && **at < to)
            .collect();
        assert!(
            sent.is_empty(),
            "during the {what} ({from:?} to {to:?}), requests were sent to b at {sent:?}"
        );
        let dials = seen
            .dials_to_b
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
