//! The simulated network, kept in one place: the only module of the suite that names turmoil
//! (pinned `=0.7.2`; its next version changes the API, DESIGN §6).
//!
//! - [`World`]: a turmoil simulation with a schedule of [`Fault`]s applied at virtual instants
//!   (crash, restart, bounce, partition, repair, hold, release, loss, latency), seeded;
//! - [`net`]: a turmoil TCP connector as a tower `Service<Target>`, so redial's layers run over
//!   it unchanged;
//! - [`http`]: hyper's HTTP/1 client over any such connector, and the request helpers;
//! - [`server`]: a simulated HTTP server host that counts what it receives, and can turn into a
//!   black hole;
//! - [`local_buffer`]: tower's `Buffer` for a single-threaded host;
//! - [`record`]: the event recorder behind trace comparison and "sometimes" coverage;
//! - [`sweep`]: the seed sweep (`REDIAL_SIM_SEEDS`, `REDIAL_SIM_SEED`).
//!
//! How turmoil's faults look to a client (which the scenarios' bounds rely on):
//! - a crashed host receives nothing: a connect to it hangs (its SYN waits undelivered) until
//!   the client's connect timeout, as with a dead machine; open connections get a FIN when the
//!   host's software is dropped;
//! - a partition drops every message, SYNs included, and turmoil then refuses the connect at
//!   once; data in flight is lost, and a TCP stream with a hole stalls for good (no
//!   retransmission), so only timeouts end it;
//! - a link's fail rate breaks the link on a message with that probability, dropping what is
//!   in flight on it, with the same stalls.
//!
//! Time inside the simulation is turmoil's: every host runs a paused tokio runtime that turmoil
//! advances one tick (1 ms) at a time, so tokio's timers (and redial's, which read only tokio's
//! clock) are virtual. Never combine it with `start_paused`.

#![allow(dead_code)]

pub mod http;
pub mod local_buffer;
pub mod net;
pub mod record;
pub mod server;
pub mod sweep;

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

/// The port every simulated server listens on.
pub const PORT: u16 = 80;

/// Time since the simulation started, on the calling host (call it from inside a host or
/// client). Every host of a [`World`] is registered at the start, so their clocks agree with
/// the instants of the fault schedule.
pub fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

/// Connections currently established on `host`, as turmoil's TCP table counts them (call it
/// from inside a host or client).
pub fn tcp_streams(host: &str) -> usize {
    turmoil::established_tcp_stream_count_on(host)
}

/// Something that happens to the network or to a host at a scheduled instant.
#[derive(Debug, Clone)]
pub enum Fault {
    /// The host's software stops: its listener and connections are gone.
    Crash(&'static str),
    /// The host's software starts again (after a crash), or restarts at once (a bounce).
    Restart(&'static str),
    /// Every message between the two is dropped, including those in flight.
    Partition(&'static str, &'static str),
    /// Messages flow again between the two.
    Repair(&'static str, &'static str),
    /// Messages between the two are held (a connect hangs) until released.
    Hold(&'static str, &'static str),
    /// Held messages are delivered and the link flows again.
    Release(&'static str, &'static str),
    /// Each message on the link breaks it with this probability (dropping what is in flight).
    FailRate(&'static str, &'static str, f64),
    /// Every message on the link takes this long.
    Latency(&'static str, &'static str, Duration),
}

/// Settings of one simulated world.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Seeds turmoil's network randomness (latency, loss).
    pub seed: u64,
    /// The virtual time after which the run fails as hung.
    pub limit: Duration,
    /// Message latency drawn between these bounds.
    pub latency: (Duration, Duration),
    /// Pending connections a listener may queue (turmoil panics past it).
    pub backlog: usize,
}

impl Settings {
    pub fn new(seed: u64, limit: Duration) -> Self {
        Self {
            seed,
            limit,
            latency: (Duration::from_millis(1), Duration::from_millis(5)),
            backlog: 1024,
        }
    }
}

/// A simulation with a fault schedule.
pub struct World {
    sim: turmoil::Sim<'static>,
    faults: Vec<(Duration, Fault)>,
    applied: Rc<RefCell<Vec<(Duration, Fault)>>>,
}

impl World {
    pub fn new(settings: &Settings) -> Self {
        let sim = turmoil::Builder::new()
            .rng_seed(settings.seed)
            .simulation_duration(settings.limit)
            .min_message_latency(settings.latency.0)
            .max_message_latency(settings.latency.1)
            .tcp_capacity(settings.backlog)
            .build();
        Self {
            sim,
            faults: Vec::new(),
            applied: Rc::default(),
        }
    }

    /// Registers a host whose software `software` makes (again after every restart).
    pub fn host<F, Fut>(&mut self, name: &'static str, software: F)
    where
        F: Fn() -> Fut + 'static,
        Fut: Future<Output = Result<(), Box<dyn std::error::Error>>> + 'static,
    {
        self.sim.host(name, software);
    }

    /// Registers a client: the run ends when every client has finished.
    pub fn client<Fut>(&mut self, name: &'static str, client: Fut)
    where
        Fut: Future<Output = Result<(), Box<dyn std::error::Error>>> + 'static,
    {
        self.sim.client(name, client);
    }

    /// Schedules `fault` at `at` (virtual time since the start).
    pub fn at(&mut self, at: Duration, fault: Fault) -> &mut Self {
        self.faults.push((at, fault));
        self
    }

    /// The faults applied so far with the instant each took effect, shared with the clients.
    pub fn applied(&self) -> Rc<RefCell<Vec<(Duration, Fault)>>> {
        Rc::clone(&self.applied)
    }

    /// Runs until every client has finished, applying each fault at the first step at or
    /// after its instant. Returns what the simulation failed with, if it did.
    pub fn run(mut self) -> Result<Vec<(Duration, Fault)>, String> {
        self.faults.sort_by_key(|(at, _)| *at);
        let mut faults = self.faults.into_iter().peekable();
        loop {
            while let Some((at, _)) = faults.peek() {
                if *at > self.sim.elapsed() {
                    break;
                }
                let Some((_, fault)) = faults.next() else {
                    break;
                };
                apply(&mut self.sim, &fault);
                self.applied.borrow_mut().push((self.sim.elapsed(), fault));
            }
            match self.sim.step() {
                Ok(true) => break,
                Ok(false) => {}
                Err(error) => return Err(error.to_string()),
            }
        }
        Ok(self.applied.borrow().clone())
    }
}

fn apply(sim: &mut turmoil::Sim<'static>, fault: &Fault) {
    match *fault {
        Fault::Crash(host) => sim.crash(host),
        Fault::Restart(host) => sim.bounce(host),
        Fault::Partition(a, b) => sim.partition(a, b),
        Fault::Repair(a, b) => sim.repair(a, b),
        Fault::Hold(a, b) => sim.hold(a, b),
        Fault::Release(a, b) => sim.release(a, b),
        Fault::FailRate(a, b, rate) => sim.set_link_fail_rate(a, b, rate),
        Fault::Latency(a, b, latency) => sim.set_link_latency(a, b, latency),
    }
}

/// When the fault matching `pick` took effect.
pub fn when(applied: &[(Duration, Fault)], pick: impl Fn(&Fault) -> bool) -> Option<Duration> {
    applied.iter().find(|(_, f)| pick(f)).map(|(at, _)| *at)
}
