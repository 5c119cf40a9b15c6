//! Scenario 3: the thundering herd after a partition heals.
//!
//! A hundred clients of one process (one `Peers` table, one retry budget: the shape DESIGN
//! §3.10 promises to protect) send GETs to a server that serves ten requests at a time and
//! sheds the rest with `503`, as an overloaded server does. At 3 s the network between them
//! partitions; at 8 s it heals. While it is down every client keeps trying; when it heals they
//! all come back at once: the herd.
//!
//! Asserted, per seed:
//! - **amplification**: the herd's requests (each client's requests that ended after the heal,
//!   up to its first success) reached the server at most 1.2 times each on average. The shed
//!   requests are retried (503 is retryable for a GET) only as far as the retry budget allows,
//!   20 % of the traffic; without the budget each would be sent up to three times;
//! - **spread**: the reconnects of the recovery window (from the first reconnect after the heal
//!   until every client has its own connection back) are spread over it: no 10 ms bucket holds
//!   more than 3× the window's mean. One probe finds the peer back, and the others follow over
//!   the reconnect `stagger` instead of all in the same instant;
//! - **no storm while down**: the whole process made at most 30 connect attempts during the
//!   5 s partition. The peer's one backoff schedule (100 ms doubling to 2 s, full jitter) makes
//!   about nine in expectation; 30 would need 25 delays averaging under 200 ms while the cap
//!   is 2 s. Without backoff, the process would dial on every tick;
//! - every request ended with a response or a typed error before its deadline.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use http::Method;
use redial::retry::Budget;

use crate::harness::net::{Connector, Target};
use crate::harness::record::{Recorder, trace};
use crate::harness::server::{Behaviour, Server};
use crate::harness::sweep::{Run, show_trace};
use crate::harness::{Fault, Settings, World, now, when};
use crate::stack::{self, Knobs, Layers, Lcg, Outcome, assert_accounted, tally};

const MS: Duration = Duration::from_millis(1);
const CLIENTS: u64 = 100;
const PARTITION: Duration = Duration::from_millis(3000);
const REPAIR: Duration = Duration::from_millis(8000);
const LOAD_END: Duration = Duration::from_millis(11_000);
const BUCKET: Duration = Duration::from_millis(10);

fn knobs() -> Knobs {
    Knobs {
        backoff: stack::backoff(100 * MS, 2000 * MS),
        // The default ratio (20 %), with a reserve of 1 retry per second instead of 10: the
        // reserve lets a quiet client retry, and a process of a hundred clients is not quiet.
        budget: Budget::builder()
            .ratio(0.2)
            .min_per_second(1)
            .build()
            .expect("a valid budget"),
        ..Knobs::default()
    }
}

#[derive(Debug, Default)]
struct Seen {
    outcomes: Vec<Outcome>,
    run: Run,
    lagged: u64,
}

pub fn run(seed: u64) -> Run {
    let knobs = knobs();
    let mut world = World::new(&Settings::new(seed, Duration::from_secs(30)));
    let server = Server::new(Behaviour {
        work: 20 * MS,
        capacity: Some(10),
    });
    let counters = server.counters.clone();
    world.host("server", move || server.clone().serve());
    world
        .at(PARTITION, Fault::Partition("clients", "server"))
        .at(REPAIR, Fault::Repair("clients", "server"));

    let seen = Rc::new(RefCell::new(Seen::default()));
    let out = Rc::clone(&seen);
    let client_knobs = knobs.clone();
    let connector_log = Rc::new(RefCell::new(None));
    let dials = Rc::clone(&connector_log);
    world.client("clients", async move {
        let knobs = client_knobs;
        let peers = stack::peers(seed, knobs.backoff);
        let recorder = Recorder::start(&peers);
        let layers = Layers::new(&peers, Target::new("server"), &knobs, seed);
        let connector = Connector::new();
        let watchdog = knobs.deadline() + Duration::from_secs(1);
        let mut tasks = Vec::new();
        for client in 0..CLIENTS {
            // Each client's services dial through a connector tagged with the client.
            let mut service = layers.service(connector.tagged(client));
            let out = Rc::clone(&out);
            let mut rng = Lcg::new(seed, client);
            tasks.push(tokio::task::spawn_local(async move {
                // Clients start over the first second, not all in one instant.
                tokio::time::sleep(10 * MS * client as u32).await;
                let mut n = 0;
                while now() < LOAD_END {
                    let id = client * 1_000_000 + n;
                    n += 1;
                    let outcome = stack::send(&mut service, Method::GET, id, watchdog).await;
                    let ok = outcome.ok();
                    out.borrow_mut().outcomes.push(outcome);
                    // A working client pauses about half a second between requests; one that
                    // failed tries again soon.
                    let think = if ok { 400.0 + 200.0 * rng.unit() } else { 20.0 };
                    tokio::time::sleep(Duration::from_secs_f64(think / 1000.0)).await;
                }
            }));
        }
        for task in tasks {
            task.await?;
        }
        let events = recorder.events();
        let mut out = out.borrow_mut();
        out.run = Run {
            coverage: recorder.coverage(),
            trace: trace(&events),
        };
        out.lagged = recorder.lagged();
        *dials.borrow_mut() = Some(connector.dials());
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
    assert_accounted(outcomes, knobs.deadline());
    let partitioned = when(&applied, |f| matches!(f, Fault::Partition(..))).expect("partitioned");
    let repaired = when(&applied, |f| matches!(f, Fault::Repair(..))).expect("repaired");

    // No connect storm while the network is down.
    let dials = connector_log.take().expect("the client recorded its dials");
    let while_down = dials
        .iter()
        .filter(|d| d.at >= partitioned && d.at < repaired)
        .count();
    assert!(
        while_down <= 30,
        "{while_down} connect attempts during the 5 s partition"
    );

    // Amplification of the herd, as the server saw it.
    let mut first_success: BTreeMap<u64, Duration> = BTreeMap::new();
    for o in outcomes.iter().filter(|o| o.ok() && o.ended >= repaired) {
        let first = first_success.entry(o.id / 1_000_000).or_insert(o.ended);
        *first = (*first).min(o.ended);
    }
    assert_eq!(
        first_success.len() as u64,
        CLIENTS,
        "not every client recovered: {summary:?}"
    );
    let herd: Vec<u64> = outcomes
        .iter()
        .filter(|o| o.ended >= repaired && o.started <= first_success[&(o.id / 1_000_000)])
        .map(|o| o.id)
        .collect();
    let mut attempts_of: BTreeMap<u64, usize> = BTreeMap::new();
    for s in counters.requests.borrow().iter() {
        if let Some(id) = s.id {
            *attempts_of.entry(id).or_insert(0) += 1;
        }
    }
    // Of the herd's requests, those that reached the server, and how often they did.
    let reached: Vec<usize> = herd
        .iter()
        .filter_map(|id| attempts_of.get(id).copied())
        .collect();
    let attempts: usize = reached.iter().sum();
    let shed = counters
        .requests
        .borrow()
        .iter()
        .filter(|s| s.at >= repaired && s.status == 503)
        .count();
    let ratio = attempts as f64 / reached.len() as f64;
    assert!(
        shed > 0,
        "the herd never overloaded the server: the scenario tests nothing"
    );
    assert!(
        ratio <= 1.2,
        "the herd's {} requests that reached the server did so {attempts} times ({ratio:.2} \
         each; {shed} shed)",
        reached.len()
    );

    // Reconnects spread over the recovery window: from the first reconnect after the heal
    // until every client has a connection again (its first successful dial after the heal).
    let mut back: BTreeMap<u64, Duration> = BTreeMap::new();
    for d in dials.iter().filter(|d| d.ok && d.at >= repaired) {
        back.entry(d.tag).or_insert(d.at);
    }
    assert_eq!(back.len() as u64, CLIENTS, "not every client reconnected");
    let start = back.values().copied().min().expect("clients");
    let end = back.values().copied().max().expect("clients");
    let window: Vec<Duration> = dials
        .iter()
        .filter(|d| d.ok && d.at >= start && d.at <= end)
        .map(|d| d.at)
        .collect();
    let buckets = ((end - start).as_millis() / BUCKET.as_millis() + 1) as usize;
    let mut counts = vec![0usize; buckets];
    for at in &window {
        counts[((*at - start).as_millis() / BUCKET.as_millis()) as usize] += 1;
    }
    let mean = window.len() as f64 / buckets as f64;
    let max = counts.iter().copied().max().unwrap_or(0);
    assert!(
        max as f64 <= 3.0 * mean,
        "{max} reconnects in one 10 ms bucket, above 3 × the mean {mean:.1} of the {:?} \
         recovery window ({} reconnects): {counts:?}",
        end - start,
        window.len()
    );
    eprintln!(
        "  {} requests {summary:?}; herd {} requests, {attempts} server attempts ({ratio:.2}), \
         {shed} shed; {} reconnects over {:?}, max bucket {max} (mean {mean:.1}); {while_down} \
         dials while down",
        outcomes.len(),
        reached.len(),
        window.len(),
        end - start
    );
    seen.run
}
