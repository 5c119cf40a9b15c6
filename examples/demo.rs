//! redial's demo: three local HTTP replicas go down, black-hole and come back on a schedule,
//! and a client behind the whole redial stack rides through.
//!
//! - Three hyper servers on 127.0.0.1 (A, B, C). The schedule: at 2 s B is killed (its
//!   connections drop, its port refuses); at 4.5 s B comes back; at 6 s C turns into a black
//!   hole (it accepts requests and never answers); at 9 s C answers again; at 13 s all three are
//!   killed; at 15.5 s all three come back; the load stops at 18 s.
//! - The client sends `GET /` every 10 ms through the stack of `examples/stack.rs`: a 1.5 s
//!   deadline, retries (transparent when nothing was sent), a fail-fast of 1 s with
//!   `NoHealthyPeers`, p2c over a `HealthDiscover`, and per replica a failure-aware load,
//!   `HealthLayer`, a 200 ms attempt timeout and `ReconnectLayer`.
//! - While it runs, one status line updates in place (a line a second when the output is not a
//!   terminal). At the end: a summary table and the timeline of redial's events.
//!
//! Run it with `cargo run --example demo`. It takes about 19 seconds and needs no features.

#[path = "support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use redial::backoff::{Backoff, Jitter};
use redial::classify::{Classify, Decision};
use redial::event::{Event, EventKind, RecvError};
use redial::health::balance::{
    FailFastLayer, HealthDiscover, NoHealthyPeers, PenalizedPendingLayer,
};
use redial::health::{HealthPolicy, Mode};
use redial::peers::{PeerHandle, PeerState, Peers};
use redial::reconnect::ReconnectLayer;
use redial::retry::{DefaultClassifier, RetryLayer};
use support::{Get, Server, http1_connector};
use tokio::time::{Instant, MissedTickBehavior, interval, sleep_until};
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::timeout::TimeoutLayer;
use tower::timeout::error::Elapsed;
use tower::{BoxError, Layer, Service, ServiceBuilder, ServiceExt};

const REQUEST_EVERY: Duration = Duration::from_millis(10);
const LOAD_FOR: Duration = Duration::from_secs(18);
const NAMES: [&str; 3] = ["A", "B", "C"];

/// What happens to the replicas, and when.
#[derive(Debug, Clone, Copy)]
enum Action {
    Kill(usize),
    Restart(usize),
    BlackHole(usize, bool),
}

const SCHEDULE: [(u64, Action); 9] = [
    (2000, Action::Kill(1)),
    (4500, Action::Restart(1)),
    (6000, Action::BlackHole(2, true)),
    (9000, Action::BlackHole(2, false)),
    (13000, Action::Kill(0)),
    (13000, Action::Kill(1)),
    (13000, Action::Kill(2)),
    (15500, Action::Restart(0)),
    (15500, Action::Restart(1)),
];
const ALSO_RESTART: (u64, Action) = (15500, Action::Restart(2));

/// Counters shared by the request tasks and the attempt counter under the retry layer.
#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    ok: AtomicU64,
    no_healthy_peers: AtomicU64,
    timed_out: AtomicU64,
    other: AtomicU64,
    attempts: AtomicU64,
    transparent: AtomicU64,
    failed_after_send: AtomicU64,
    /// Successes and requests in the last second of load, for the recovery check.
    late_ok: AtomicU64,
    late_sent: AtomicU64,
    /// The first few "other" errors, whole chains, for the summary.
    samples: std::sync::Mutex<Vec<String>>,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let start = Instant::now();
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(Server::start(Duration::from_millis(20)).await?);
    }
    let names: HashMap<SocketAddr, &str> = servers
        .iter()
        .zip(NAMES)
        .map(|(s, n)| (s.addr, n))
        .collect();

    let backoff = Backoff::builder()
        .initial(Duration::from_millis(100))
        .max(Duration::from_secs(1))
        .jitter(Jitter::Equal)
        .build()?;
    let peers: Peers<SocketAddr> = Peers::builder().backoff(backoff).seed(7).build()?;
    let mut events = peers.subscribe();
    let replicas = servers
        .iter()
        .map(|s| peers.add_static(s.addr))
        .collect::<Result<Vec<_>, _>>()?;
    let counts = Arc::new(Counts::default());
    let client = stack(&peers, replicas, Arc::clone(&counts))?;

    println!("redial demo: 3 replicas on 127.0.0.1, GET / every 10 ms for 18 s");
    for (at, action) in SCHEDULE.iter().chain([&ALSO_RESTART]) {
        println!("  at {:>5.1}s  {}", *at as f64 / 1000.0, describe(*action));
    }
    println!();

    let load = tokio::spawn(load(client, Arc::clone(&counts), start));
    let faults = tokio::spawn(faults(servers.clone(), start));

    // Events are collected for the timeline; the status line is redrawn every 100 ms.
    let terminal = std::io::stdout().is_terminal();
    let mut timeline: Vec<Event<SocketAddr>> = Vec::new();
    let mut backoff_of: HashMap<SocketAddr, Duration> = HashMap::new();
    let mut redraw = interval(Duration::from_millis(if terminal { 100 } else { 1000 }));
    tokio::pin!(load);
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(event) => {
                    if let EventKind::Waiting { delay, .. } = event.kind {
                        backoff_of.insert(event.peer, delay);
                    }
                    timeline.push(event);
                }
                Err(RecvError::Lagged(n)) => println!("({n} events lost: the demo fell behind)"),
                Err(RecvError::Closed) => {}
            },
            _ = redraw.tick() => {
                let line = status(&peers, &servers, &names, &backoff_of, &counts, start);
                if terminal {
                    print!("\r\x1b[2K{line}");
                    let _ = std::io::stdout().flush();
                } else {
                    println!("{line}");
                }
            }
            done = &mut load => { done??; break; }
        }
    }
    while let Ok(Some(event)) = events.try_recv() {
        timeline.push(event);
    }
    faults.await??;
    if terminal {
        println!();
    }

    summary(&counts, &servers, &names, &timeline, start);
    print_timeline(&timeline, &names, start);

    let (late_ok, late_sent) = (counts.late_ok.load(Relaxed), counts.late_sent.load(Relaxed));
    if late_ok * 100 < late_sent * 95 {
        return Err(
            format!("not recovered: {late_ok} of {late_sent} ok in the last second").into(),
        );
    }
    println!("\nrecovered: {late_ok} of {late_sent} requests ok in the last second");
    Ok(())
}

/// The stack of `examples/stack.rs`, with requests that are plain paths (so no feature is
/// needed) and shorter timings, plus a counter of attempts under the retry layer.
fn stack(
    peers: &Peers<SocketAddr>,
    replicas: Vec<PeerHandle<SocketAddr>>,
    counts: Arc<Counts>,
) -> Result<
    impl Service<Get, Response = hyper::Response<String>, Error = BoxError, Future: Send>
    + Clone
    + Send
    + 'static,
    BoxError,
> {
    let connector = http1_connector();
    let health = HealthPolicy::builder()
        .consecutive_failures(Some(5))
        .base_ejection(Duration::from_secs(1))
        .max_ejection(Duration::from_secs(4))
        .mode(Mode::Backpressure)
        .seed(7)
        .build()?;
    // A failure weighs one request in flight, halving every 200 ms: enough to steer traffic
    // off a failing replica for a moment, not so long that it never fails often enough to be
    // ejected (the default, 5 halving every second, would starve a black hole at this load).
    let load = PenalizedPendingLayer::builder()
        .penalty(1.0)
        .decay(Duration::from_millis(200))
        .build()?;
    let per_peer = move |peer: &PeerHandle<SocketAddr>| {
        let reconnect = ReconnectLayer::builder(peer.clone(), *peer.key())
            .connect_timeout(Duration::from_millis(200))
            .fail_fast(None)
            .build()
            .expect("a valid reconnect configuration");
        ServiceBuilder::new()
            .layer(load.clone())
            .layer(health.layer(peer.clone()))
            .layer(TimeoutLayer::new(Duration::from_millis(200)))
            .layer(reconnect)
            .service(connector.clone())
    };
    let balanced = FailFastLayer::new(Duration::from_secs(1))
        .health(peers)
        .layer(Balance::new(HealthDiscover::new(peers, replicas, per_peer)));

    let retry = RetryLayer::builder()
        .backoff(
            Backoff::builder()
                .initial(Duration::from_millis(20))
                .seed(7)
                .build()?,
        )
        .max_attempts(3)
        .seed(7)
        .build()?;
    Ok(ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_millis(1500)))
        .layer(retry)
        // Counts each attempt the retry layer makes, and why failed ones failed.
        .map_future(move |attempt| {
            let counts = Arc::clone(&counts);
            counts.attempts.fetch_add(1, Relaxed);
            async move {
                let outcome: Result<_, BoxError> = attempt.await;
                match DefaultClassifier.classify(&Get("/"), &outcome) {
                    Decision::Transparent { .. } => counts.transparent.fetch_add(1, Relaxed),
                    Decision::Retry { .. } => counts.failed_after_send.fetch_add(1, Relaxed),
                    Decision::DontRetry => 0,
                };
                outcome
            }
        })
        .service(Buffer::new(balanced, 256)))
}

/// Sends `GET /` every 10 ms, each on its own task, and waits for the last one.
async fn load<S>(client: S, counts: Arc<Counts>, start: Instant) -> Result<(), BoxError>
where
    S: Service<Get, Response = hyper::Response<String>, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    let mut tick = interval(REQUEST_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut tasks = tokio::task::JoinSet::new();
    while start.elapsed() < LOAD_FOR {
        tick.tick().await;
        let late = start.elapsed() >= LOAD_FOR - Duration::from_secs(1);
        let (client, counts) = (client.clone(), Arc::clone(&counts));
        counts.sent.fetch_add(1, Relaxed);
        tasks.spawn(async move {
            let outcome = client.oneshot(Get("/")).await;
            let counter = match &outcome {
                Ok(_) => &counts.ok,
                Err(e) if e.downcast_ref::<NoHealthyPeers>().is_some() => &counts.no_healthy_peers,
                Err(e) if e.downcast_ref::<Elapsed>().is_some() => &counts.timed_out,
                Err(_) => &counts.other,
            };
            counter.fetch_add(1, Relaxed);
            if let (Err(error), true) = (&outcome, std::ptr::eq(counter, &counts.other)) {
                let mut samples = counts.samples.lock().unwrap_or_else(|e| e.into_inner());
                if samples.len() < 3 {
                    samples.push(redial_chain(error.as_ref()));
                }
            }
            if late {
                counts.late_sent.fetch_add(1, Relaxed);
                counts
                    .late_ok
                    .fetch_add(u64::from(outcome.is_ok()), Relaxed);
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

async fn faults(servers: Vec<Server>, start: Instant) -> Result<(), BoxError> {
    for (at, action) in SCHEDULE.iter().chain([&ALSO_RESTART]) {
        sleep_until(start + Duration::from_millis(*at)).await;
        match *action {
            Action::Kill(i) => servers[i].stop().await,
            Action::Restart(i) => servers[i].restart().await?,
            Action::BlackHole(i, on) => servers[i].black_hole(on),
        }
    }
    Ok(())
}

/// An error and its sources, `: `-separated.
fn redial_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

fn describe(action: Action) -> String {
    match action {
        Action::Kill(i) => format!("{} is killed", NAMES[i]),
        Action::Restart(i) => format!("{} comes back", NAMES[i]),
        Action::BlackHole(i, true) => format!("{} turns into a black hole", NAMES[i]),
        Action::BlackHole(i, false) => format!("{} answers again", NAMES[i]),
    }
}

fn status(
    peers: &Peers<SocketAddr>,
    servers: &[Server],
    names: &HashMap<SocketAddr, &str>,
    backoff_of: &HashMap<SocketAddr, Duration>,
    counts: &Counts,
    start: Instant,
) -> String {
    let states: Vec<String> = servers
        .iter()
        .map(|server| {
            let state = peers
                .get(&server.addr)
                .map_or(PeerState::Idle, |p| p.state());
            match (state, backoff_of.get(&server.addr)) {
                (PeerState::Backoff, Some(delay)) => {
                    format!("{} backoff {}ms", names[&server.addr], delay.as_millis())
                }
                _ => format!("{} {state}", names[&server.addr]),
            }
        })
        .collect();
    let ok = counts.ok.load(Relaxed);
    let failed = counts.no_healthy_peers.load(Relaxed)
        + counts.timed_out.load(Relaxed)
        + counts.other.load(Relaxed);
    format!(
        "{:>5.1}s  ok {ok:>5}  failed {failed:>4}  |  {}",
        start.elapsed().as_secs_f64(),
        states.join(", ")
    )
}

fn summary(
    counts: &Counts,
    servers: &[Server],
    names: &HashMap<SocketAddr, &str>,
    timeline: &[Event<SocketAddr>],
    start: Instant,
) {
    let n = |c: &AtomicU64| c.load(Relaxed);
    let sent = n(&counts.sent);
    let count = |f: fn(&EventKind) -> bool| timeline.iter().filter(|e| f(&e.kind)).count();
    let connects = count(|k| matches!(k, EventKind::Connected { .. }));
    println!("\n== summary after {:.1}s", start.elapsed().as_secs_f64());
    println!("  requests                 {sent}");
    println!("    ok                     {}", n(&counts.ok));
    println!("    failed: NoHealthyPeers {}", n(&counts.no_healthy_peers));
    println!("    failed: deadline       {}", n(&counts.timed_out));
    println!("    failed: other          {}", n(&counts.other));
    for sample in counts
        .samples
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
    {
        println!("      e.g. {sample}");
    }
    println!(
        "  retries                  {}  (attempts beyond the first)",
        n(&counts.attempts).saturating_sub(sent)
    );
    println!(
        "    retryable failures: transparent (nothing sent) {}, after sending {}",
        n(&counts.transparent),
        n(&counts.failed_after_send)
    );
    println!(
        "  reconnects               {}  ({connects} connections opened)",
        connects.saturating_sub(servers.len())
    );
    println!(
        "  ejections                {}  (restored {})",
        count(|k| matches!(k, EventKind::Ejected { .. })),
        count(|k| matches!(k, EventKind::Restored))
    );

    // Time in each state, per replica, from the state changes.
    let end = Instant::now();
    println!("\n  time per state (s)   {}", header());
    for server in servers {
        let mut spent = [Duration::ZERO; 6];
        let (mut state, mut since) = (PeerState::Idle, start);
        for event in timeline.iter().filter(|e| e.peer == server.addr) {
            if let EventKind::StateChanged { to, .. } = event.kind {
                spent[index(state)] += event.at.saturating_duration_since(since);
                (state, since) = (to, event.at);
            }
        }
        spent[index(state)] += end.saturating_duration_since(since);
        let cells: Vec<String> = spent
            .iter()
            .map(|d| format!("{:>11.2}", d.as_secs_f64()))
            .collect();
        println!(
            "  {} (received {:>4})   {}",
            names[&server.addr],
            server.received(),
            cells.join("")
        );
    }
}

fn header() -> String {
    PeerState::ALL
        .iter()
        .map(|s| format!("{:>11}", s.name()))
        .collect()
}

fn index(state: PeerState) -> usize {
    PeerState::ALL.iter().position(|s| *s == state).unwrap_or(0)
}

fn print_timeline(
    timeline: &[Event<SocketAddr>],
    names: &HashMap<SocketAddr, &str>,
    start: Instant,
) {
    println!("\n== timeline (connect attempts and backoff delays left out)");
    for event in timeline {
        let what = match &event.kind {
            EventKind::AttemptStarted { .. } | EventKind::Waiting { .. } => continue,
            EventKind::StateChanged { from, to } => format!("{from} -> {to}"),
            EventKind::Connected { attempts, total } => format!(
                "connected after {attempts} attempt(s), {} ms",
                total.as_millis()
            ),
            EventKind::Disconnected { error } => {
                format!("disconnected: {}", error.as_deref().unwrap_or("closed"))
            }
            EventKind::Ejected {
                duration, times, ..
            } => match duration {
                Some(d) => format!("ejected for {} ms (time {times})", d.as_millis()),
                None => format!("ejected (time {times})"),
            },
            EventKind::Restored => "restored".to_string(),
            EventKind::EjectionSkipped { reason } => {
                format!("not ejected: {}", reason.name())
            }
            other => format!("{other:?}"),
        };
        let at = event.at.saturating_duration_since(start).as_secs_f64();
        println!(
            "  {at:>6.3}s  {}  {what}",
            names.get(&event.peer).unwrap_or(&"?")
        );
    }
}
