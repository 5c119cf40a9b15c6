//! The recommended redial stack for a client of several peers, layer by layer.
//!
//! Three local HTTP servers stand for three replicas of a service. The client sends requests
//! through the whole stack; after one second replica 2 starts black-holing (it accepts
//! requests and never answers), and the stack routes around it. At the end it prints who
//! served what and what the shared peer state saw.
//!
//! The order, outermost first, and what each layer adds:
//!
//! ```text
//! TimeoutLayer (2 s)          the caller's deadline for the whole request, retries included
//! RetryLayer                  retries what is safe: transparently what never left (ejected,
//!                             unavailable), idempotent requests that failed after; within a
//!                             budget shared by every clone, so retries cannot multiply load
//! Buffer                      lets RetryLayer clone the balanced service for each attempt
//! FailFastLayer (3 s)         the one place that fails fast: NoHealthyPeers when no peer has
//!                             been ready for 3 s, instead of p2c pending forever
//! p2c Balance                 picks the less loaded of two ready peers
//!   HealthDiscover            takes ejected and exhausted peers out, puts them back when they
//!                             recover (and for their probe): no peer lost for good
//!   per peer:
//!     PenalizedPendingLayer   load = requests in flight + a decaying failure penalty, so a
//!                             peer that fails fast does not look cheap
//!     HealthLayer             ejects a failing peer (5 failures in a row), one probe when its
//!                             ejection is over; Backpressure: an ejected peer is not ready
//!     TimeoutLayer (250 ms)   per attempt, inside health: a black hole becomes a failure
//!                             health can see
//!     ReconnectLayer          keeps a connection up, backs off when the peer is down (shared
//!                             schedule, one probe per process); fail_fast(None): under a
//!                             balancer a down peer is simply not ready
//!       connector             anything that connects: here TCP + an HTTP/1 handshake
//! ```
//!
//! Why in that order: retry must sit above the balancer so that a retry can go to another
//! peer; health must sit below it, one per peer, so that each peer is judged alone; the
//! per-attempt timeout must sit below health so that a peer that never answers counts as
//! failing; reconnect sits at the bottom because a connection belongs to one peer.
//!
//! Run it with `cargo run --example stack --features http` (about 3 seconds).

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use hyper::Response;
use redial::backoff::Backoff;
use redial::health::balance::{FailFastLayer, HealthDiscover, PenalizedPendingLayer};
use redial::health::{HealthPolicy, Mode};
use redial::peers::{PeerHandle, PeerState, Peers};
use redial::reconnect::ReconnectLayer;
use redial::retry::RetryLayer;
use redial::retry::http::HttpClassifier;
use support::{HttpRequest, Server, get, http1_connector};
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::timeout::TimeoutLayer;
use tower::{BoxError, Layer, Service, ServiceBuilder, ServiceExt};

/// The whole stack over `replicas`, recording into `peers`.
pub fn client(
    peers: &Peers<SocketAddr>,
    replicas: Vec<PeerHandle<SocketAddr>>,
) -> Result<
    impl Service<HttpRequest, Response = Response<String>, Error = BoxError, Future: Send>
    + Clone
    + Send
    + 'static,
    BoxError,
> {
    let connector = http1_connector();
    let health = HealthPolicy::builder()
        .classifier(HttpClassifier::new()) // errors and 5xx count against a peer
        .consecutive_failures(Some(5))
        .base_ejection(Duration::from_millis(500))
        .mode(Mode::Backpressure)
        .build()?;
    let load = PenalizedPendingLayer::new();

    // Each peer's own stack, made by the discover when it first inserts the peer.
    let per_peer = move |peer: &PeerHandle<SocketAddr>| {
        let reconnect = ReconnectLayer::builder(peer.clone(), *peer.key())
            .connect_timeout(Duration::from_millis(250))
            .fail_fast(None)
            .build()
            .expect("a valid reconnect configuration");
        ServiceBuilder::new()
            .layer(load.clone())
            .layer(health.layer(peer.clone()))
            .layer(TimeoutLayer::new(Duration::from_millis(250)))
            .layer(reconnect)
            .service(connector.clone())
    };
    let balanced = Balance::new(HealthDiscover::new(peers, replicas, per_peer));

    let retry = RetryLayer::builder()
        .classifier(HttpClassifier::new())
        .backoff(
            Backoff::builder()
                .initial(Duration::from_millis(10))
                .build()?,
        )
        .max_attempts(3)
        .build()?;
    Ok(ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_secs(2)))
        .layer(retry)
        .service(Buffer::new(
            FailFastLayer::new(Duration::from_secs(3))
                .health(peers)
                .layer(balanced),
            64,
        )))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(Server::start(Duration::from_millis(5)).await?);
    }
    let peers: Peers<SocketAddr> = Peers::builder().seed(7).build()?;
    let replicas = servers
        .iter()
        .map(|s| peers.add_static(s.addr))
        .collect::<Result<Vec<_>, _>>()?;
    let client = client(&peers, replicas)?;

    // 600 requests, 8 at a time; replica 2 black-holes after the first 200.
    let (mut ok, mut failed) = (0, 0);
    for round in 0..75 {
        if round == 25 {
            println!("replica 2 ({}) starts black-holing", servers[1].addr);
            servers[1].black_hole(true);
        }
        let mut batch = tokio::task::JoinSet::new();
        for _ in 0..8 {
            batch.spawn(client.clone().oneshot(get("/")));
        }
        while let Some(result) = batch.join_next().await {
            match result? {
                Ok(_) => ok += 1,
                Err(error) => {
                    failed += 1;
                    println!("  failed: {error}");
                }
            }
        }
    }

    println!("\n{ok} ok, {failed} failed");
    for (i, server) in servers.iter().enumerate() {
        let state = peers
            .get(&server.addr)
            .map_or(PeerState::Idle, |p| p.state());
        println!(
            "replica {} {}: received {:>3}, now {state}",
            i + 1,
            server.addr,
            server.received()
        );
    }
    // The retry layer sits above the balancer and does not know which peer a request went
    // to, so it records no peer; the servers' counts show its work.
    let received: u64 = servers.iter().map(Server::received).sum();
    println!(
        "{received} requests reached a replica for {} sent: {} retried elsewhere; {} connect attempts",
        ok + failed,
        received - (ok + failed),
        peers.stats().attempts
    );
    if failed > 0 {
        return Err(format!("{failed} requests failed").into());
    }
    Ok(())
}
