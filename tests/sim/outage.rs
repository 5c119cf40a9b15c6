//! Scenario 1b: an outage longer than the peer's backoff policy allows.
//!
//! The server is down from the start (a dead host: connects hang until their timeout) and
//! comes up at 6 s. The peer's policy allows five
//! connect attempts (100 ms doubling to 400 ms); then the peer is exhausted, calls fail at once
//! with `Exhausted`, and the reconnect layer's one-second cool-down starts the attempts over.
//!
//! Asserted, per seed:
//! - while the server is down, requests fail with `Exhausted` (and `Unavailable`), never hang;
//! - after the server is up, the first success comes within `cool-down + backoff max +
//!   connect timeout`;
//! - no connection is left open once the clients are gone.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use redial::backoff::{Backoff, Jitter};

use crate::harness::net::Target;
use crate::harness::record::{Recorder, trace};
use crate::harness::server::{Behaviour, Server};
use crate::harness::sweep::{Run, show_trace};
use crate::harness::{Fault, Settings, World, when};
use crate::stack::{self, Ended, Knobs, Outcome, assert_accounted, tally};

const MS: Duration = Duration::from_millis(1);
const CLIENTS: u64 = 2;
const UP: Duration = Duration::from_millis(6000);
const LOAD_END: Duration = Duration::from_millis(8500);
const THINK: Duration = Duration::from_millis(50);

fn knobs() -> Knobs {
    Knobs {
        backoff: Backoff::builder()
            .initial(100 * MS)
            .multiplier(2.0)
            .max(400 * MS)
            .jitter(Jitter::Full)
            .max_attempts(5)
            .build()
            .expect("a valid backoff"),
        stagger: 50 * MS,
        exhausted_cooldown: Some(1000 * MS),
        ..Knobs::default()
    }
}

#[derive(Debug, Default)]
struct Seen {
    outcomes: Vec<Outcome>,
    open_at_end: Option<u32>,
    run: Run,
    lagged: u64,
}

pub fn run(seed: u64) -> Run {
    let knobs = knobs();
    let mut world = World::new(&Settings::new(seed, Duration::from_secs(30)));
    let server = Server::new(Behaviour::default());
    world.host("server", move || server.clone().serve());
    world
        .at(Duration::ZERO, Fault::Crash("server"))
        .at(UP, Fault::Restart("server"));

    let seen = Rc::new(RefCell::new(Seen::default()));
    let out = Rc::clone(&seen);
    let client_knobs = knobs.clone();
    world.client("client", async move {
        let knobs = client_knobs;
        let peers = stack::peers(seed, knobs.backoff);
        let recorder = Recorder::start(&peers);
        let (proto, _connector) = stack::redial(&peers, Target::new("server"), &knobs, seed);
        let watchdog = knobs.deadline() + Duration::from_secs(1);
        let outcomes = stack::gets(proto, CLIENTS, THINK, LOAD_END, watchdog).await;
        let handle = peers.get("server").expect("tracked");
        let events = recorder.events();
        let mut out = out.borrow_mut();
        out.outcomes = outcomes;
        out.open_at_end = Some(handle.snapshot().open_connections);
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
    show_trace(&seen.borrow().run.trace);
    let seen = seen.take();
    let outcomes = &seen.outcomes;
    let summary = tally(outcomes);
    assert_eq!(seen.lagged, 0, "the recorder lost events");
    assert_accounted(outcomes, knobs.deadline());
    let up = when(&applied, |f| matches!(f, Fault::Restart(_))).expect("restarted");
    let exhausted = outcomes
        .iter()
        .filter(|o| o.how == Ended::Error("exhausted") && o.ended < up)
        .count();
    assert!(
        exhausted > 0,
        "the peer never ran out of attempts: {summary:?}"
    );
    assert!(
        outcomes.iter().all(|o| o.ended >= up || !o.ok()),
        "a success while the server was down"
    );
    let bound =
        knobs.exhausted_cooldown.unwrap_or_default() + knobs.backoff.max() + knobs.connect_timeout;
    let first = outcomes
        .iter()
        .filter(|o| o.ok())
        .map(|o| o.ended)
        .min()
        .unwrap_or_else(|| panic!("no success after the server came up: {summary:?}"));
    assert!(
        first - up <= bound,
        "first success {:?} after the server came up, above {bound:?}",
        first - up
    );
    assert_eq!(
        seen.open_at_end,
        Some(0),
        "connections leaked after the clients left"
    );
    eprintln!(
        "  {} requests {summary:?}; first success {:?} after the server came up",
        outcomes.len(),
        first - up
    );
    seen.run
}
