//! Scenario 1: the server crashes under load, comes back, and later bounces (restarts at once).
//!
//! Eight clients of one process send GETs back to back through the full stack. The server
//! crashes at 2 s, starts again at 4.5 s and bounces at 6.5 s; the load stops at 9 s.
//!
//! Asserted, per seed:
//! - after each restart, the first success comes within `backoff max + connect timeout`: the
//!   peer's next attempt is at most one (capped) backoff delay away, and it connects well
//!   within its timeout;
//! - every request ended with a response or a typed error before its deadline (none hung,
//!   none untyped), and every success was really served (its id is in the server's log);
//! - established connections return to baseline: one per client before the crash and after
//!   recovery, none once the clients are gone (the `Peers` snapshot's `open_connections`).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use crate::harness::net::Target;
use crate::harness::record::{Recorder, trace};
use crate::harness::server::{Behaviour, Server};
use crate::harness::sweep::{Run, show_trace};
use crate::harness::{Fault, Settings, World, now, when};
use crate::stack::{self, Knobs, Outcome, assert_accounted, tally};

const CLIENTS: u64 = 8;
const THINK: Duration = Duration::from_millis(20);
const CRASH: Duration = Duration::from_millis(2000);
const RESTART: Duration = Duration::from_millis(4500);
const BOUNCE: Duration = Duration::from_millis(6500);
const LOAD_END: Duration = Duration::from_millis(9000);
/// Before the crash, all clients connected: the baseline.
const BASELINE_AT: Duration = Duration::from_millis(1900);
/// Well after the bounce: every client reconnected.
const RECOVERED_AT: Duration = Duration::from_millis(8900);

fn knobs() -> Knobs {
    Knobs::default()
}

#[derive(Debug, Default)]
struct Seen {
    outcomes: Vec<Outcome>,
    open: Vec<(Duration, u32)>,
    open_at_end: Option<u32>,
    run: Run,
    lagged: u64,
}

pub fn run(seed: u64) -> Run {
    let knobs = knobs();
    let mut world = World::new(&Settings::new(seed, Duration::from_secs(30)));
    let server = Server::new(Behaviour::default());
    let counters = server.counters.clone();
    world.host("server", move || server.clone().serve());
    world
        .at(CRASH, Fault::Crash("server"))
        .at(RESTART, Fault::Restart("server"))
        .at(BOUNCE, Fault::Restart("server"));

    let seen = Rc::new(RefCell::new(Seen::default()));
    let out = Rc::clone(&seen);
    let client_knobs = knobs.clone();
    world.client("client", async move {
        let knobs = client_knobs;
        let peers = stack::peers(seed, knobs.backoff);
        let recorder = Recorder::start(&peers);
        let (proto, _connector) = stack::redial(&peers, Target::new("server"), &knobs, seed);
        let watchdog = knobs.deadline() + Duration::from_secs(1);
        let handle = peers.get("server").expect("tracked");
        let samples = async {
            for at in [BASELINE_AT, RECOVERED_AT] {
                tokio::time::sleep(at.saturating_sub(now())).await;
                out.borrow_mut()
                    .open
                    .push((now(), handle.snapshot().open_connections));
            }
        };
        let load = stack::gets(proto, CLIENTS, THINK, LOAD_END, watchdog);
        let (outcomes, ()) = tokio::join!(load, samples);
        let mut out = out.borrow_mut();
        out.outcomes = outcomes;
        out.open_at_end = Some(handle.snapshot().open_connections);
        let events = recorder.events();
        out.run = Run {
            coverage: recorder.coverage(),
            trace: trace(&events),
        };
        out.lagged = recorder.lagged();
        Ok(())
    });

    let applied = world
        .run()
        .unwrap_or_else(|e| panic!("the simulation failed: {e}"));
    let seen = seen.take();
    show_trace(&seen.run.trace);
    let outcomes = &seen.outcomes;
    let summary = tally(outcomes);
    assert_eq!(seen.lagged, 0, "the recorder lost events");

    // Every request accounted for, before its deadline.
    assert!(outcomes.len() > 100, "too little load: {summary:?}");
    assert_accounted(outcomes, knobs.deadline());

    // Every success was served: no response without a request behind it.
    let executed = counters.executions();
    for ok in outcomes.iter().filter(|o| o.ok()) {
        assert!(
            executed.contains_key(&ok.id),
            "request {} answered but never served",
            ok.id
        );
    }

    // The first success after each restart, within backoff max + connect timeout.
    let bound = knobs.backoff.max() + knobs.connect_timeout;
    let restarts: Vec<Duration> = applied
        .iter()
        .filter(|(_, f)| matches!(f, Fault::Restart(_)))
        .map(|(at, _)| *at)
        .collect();
    assert_eq!(restarts.len(), 2);
    let crashed = when(&applied, |f| matches!(f, Fault::Crash(_))).expect("crashed");
    assert!(
        outcomes
            .iter()
            .any(|o| !o.ok() && o.ended > crashed && o.ended < restarts[0]),
        "the crash went unnoticed: {summary:?}"
    );
    let mut recoveries = Vec::new();
    for restart in restarts {
        let first = outcomes
            .iter()
            .filter(|o| o.ok() && o.ended >= restart)
            .map(|o| o.ended)
            .min()
            .unwrap_or_else(|| panic!("no success after the restart at {restart:?}: {summary:?}"));
        assert!(
            first - restart <= bound,
            "first success {:?} after the restart at {restart:?}, above {bound:?}",
            first - restart
        );
        recoveries.push(first - restart);
    }

    // Connections back to baseline: one per client, then none.
    let expected: Vec<u32> = vec![CLIENTS as u32; 2];
    let open: Vec<u32> = seen.open.iter().map(|(_, n)| *n).collect();
    assert_eq!(open, expected, "open connections at {:?}", seen.open);
    assert_eq!(
        seen.open_at_end,
        Some(0),
        "connections leaked after the clients left"
    );
    eprintln!(
        "  {} requests {summary:?}; first success after restarts {recoveries:?}; open {open:?}",
        outcomes.len()
    );
    seen.run
}
