//! redial's demo: three peers, one of which goes down for a while and comes back.
//!
//! What it shows, in about three seconds of real time:
//! - a backoff schedule, jittered and seeded;
//! - `Peers` taking every peer through its states as a simulated network fails and heals;
//! - one process, one probe: two connection loops share peer `beta`, yet while it is down only
//!   one connect attempt at a time reaches it, on one schedule;
//! - the event stream, the health report and its watch, and the final totals.
//!
//! Run it with `cargo run --example demo`. Later releases grow it into the full stack over real
//! sockets; this one simulates the network so that it needs nothing but itself.

use std::error::Error;
use std::fmt::Write as _;
use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use redial::backoff::{Backoff, Jitter};
use redial::event::{EventKind, RecvError};
use redial::peers::{AttemptDenied, PeerHandle, PeerState, Peers};
use tokio::time::{Instant, sleep, sleep_until};

const PEERS: [&str; 3] = ["alpha:7000", "beta:7000", "gamma:7000"];
/// `beta` refuses connections from OUTAGE.0 to OUTAGE.1 after the start.
const OUTAGE: (Duration, Duration) = (Duration::from_millis(400), Duration::from_millis(2000));
const RUN_FOR: Duration = Duration::from_millis(3000);
const REQUEST_EVERY: Duration = Duration::from_millis(100);

/// A pretend network: whether a peer accepts connections and answers requests right now.
#[derive(Clone, Copy)]
struct Network {
    start: Instant,
}

impl Network {
    fn is_up(&self, peer: &str) -> bool {
        let t = self.start.elapsed();
        !(peer == "beta:7000" && t >= OUTAGE.0 && t < OUTAGE.1)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    let backoff = Backoff::builder()
        .initial(Duration::from_millis(50))
        .multiplier(2.0)
        .max(Duration::from_millis(800))
        .jitter(Jitter::Equal)
        .seed(7)
        .build()?;
    show_schedule(&backoff);

    let peers: Peers<&'static str> = Peers::builder()
        .backoff(backoff)
        .min_peers(3)
        .seed(7)
        .build()?;
    let network = Network {
        start: Instant::now(),
    };
    println!(
        "\n== a simulated outage: {} is down from {:?} to {:?}\n",
        PEERS[1], OUTAGE.0, OUTAGE.1
    );

    let printer = tokio::spawn(print_events(peers.clone(), network.start));
    let health = tokio::spawn(print_health(peers.clone(), network.start));

    let beta_connects = Arc::new(AtomicU32::new(0));
    let mut loops = Vec::new();
    for (i, name) in PEERS.iter().enumerate() {
        let handle = peers.add_static(*name)?;
        // Two independent connection loops to beta, to show they share one schedule.
        let copies = if i == 1 { 2 } else { 1 };
        for _ in 0..copies {
            let counter = (i == 1).then(|| Arc::clone(&beta_connects));
            loops.push(tokio::spawn(connection_loop(
                handle.clone(),
                network,
                counter,
            )));
        }
    }
    for task in loops {
        task.await?;
    }

    let stats = peers.stats();
    let report = peers.health();
    health.abort();
    drop(peers);
    printer.await?;

    println!("\n== totals");
    for state in PeerState::ALL {
        println!("  {:<11} {}", state.name(), stats.in_state(state));
    }
    println!(
        "  attempts {}, successes {}, failures {}, success rate {:.1} %",
        stats.attempts,
        stats.successes,
        stats.failures,
        stats.success_rate().unwrap_or(0.0) * 100.0
    );
    println!(
        "  connect attempts to beta from its two loops together: {}",
        beta_connects.load(Ordering::Relaxed)
    );
    println!(
        "\n== health: healthy {}, usable {}/{} (min {}), recovering {}, failed {}",
        report.healthy,
        report.usable,
        report.total,
        report.min_peers,
        report.recovering,
        report.failed
    );
    Ok(())
}

fn show_schedule(backoff: &Backoff) {
    println!("== backoff: {backoff:?}\n");
    println!("  retry  un-jittered  with equal jitter (seed 7)");
    let mut schedule = backoff.schedule();
    for retry in 0..7 {
        let jittered = schedule.next_delay().unwrap_or_default();
        println!(
            "  {retry:>5}  {:>11?}  {jittered:>9?}",
            backoff.delay(retry)
        );
    }
}

/// Keeps one connection to `peer` up for the length of the demo, sending a request every
/// 100 ms; reconnects through the peer's shared gate when the connection breaks.
async fn connection_loop(
    peer: PeerHandle<&'static str>,
    net: Network,
    counter: Option<Arc<AtomicU32>>,
) {
    let deadline = net.start + RUN_FOR;
    while Instant::now() < deadline {
        let attempt = match peer.try_begin_attempt() {
            Ok(attempt) => attempt,
            Err(AttemptDenied::Backoff { until }) => {
                sleep_until(until.min(deadline)).await;
                continue;
            }
            Err(AttemptDenied::InFlight) => {
                // Someone else's probe decides for us: wait for it instead of dialing too.
                poll_fn(|cx| peer.poll_attempt_finished(cx)).await;
                continue;
            }
            // Exhausted (or a reason a later release adds): this loop gives up.
            Err(_) => return,
        };
        if let Some(counter) = &counter {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        sleep(Duration::from_millis(10)).await; // the handshake
        if !net.is_up(peer.key()) {
            attempt.failed(&"connection refused");
            continue;
        }
        attempt.succeeded();
        while Instant::now() < deadline {
            sleep(REQUEST_EVERY).await;
            if net.is_up(peer.key()) {
                peer.record_success();
            } else {
                peer.connection_closed(Some(&"connection reset by peer"));
                break;
            }
        }
    }
}

async fn print_events(peers: Peers<&'static str>, start: Instant) {
    let mut events = peers.subscribe();
    drop(peers);
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            Err(RecvError::Lagged(n)) => {
                println!("  ({n} events skipped)");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let mut line = String::new();
        let _ = match &event.kind {
            EventKind::AttemptStarted { attempt, .. } => write!(line, "connect attempt {attempt}"),
            EventKind::Waiting { delay, reason } => write!(line, "waiting {delay:?} ({reason:?})"),
            EventKind::Connected { attempts, total } => {
                write!(line, "connected after {attempts} attempt(s), {total:?}")
            }
            EventKind::Disconnected { error } => {
                write!(
                    line,
                    "disconnected: {}",
                    error.as_deref().unwrap_or("closed")
                )
            }
            EventKind::StateChanged { from, to } => write!(line, "{from} -> {to}"),
            other => write!(line, "{other:?}"),
        };
        let at = event.at.duration_since(start).as_secs_f64();
        println!("  [{at:6.3}s] {:<11} {line}", event.peer);
    }
}

async fn print_health(peers: Peers<&'static str>, start: Instant) {
    let mut health = peers.watch_health();
    drop(peers);
    while health.changed().await.is_ok() {
        let report = *health.borrow_and_update();
        let at = start.elapsed().as_secs_f64();
        println!(
            "  [{at:6.3}s] health      {} ({} of {} connected, {} recovering)",
            if report.healthy {
                "HEALTHY"
            } else {
                "degraded"
            },
            report.usable,
            report.total,
            report.recovering
        );
    }
}
