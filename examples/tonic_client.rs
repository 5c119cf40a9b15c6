//! A tonic channel riding through a gRPC server restart, connecting through redial.
//!
//! The server is tonic with `tonic-health`, on a free local port. The client's channel is made
//! with `Endpoint::connect_with_connector` over redial's connector, so every (re)connect of the
//! channel goes through the peer's backoff and single-flight gate. The server is stopped
//! (gracefully: HTTP/2 GOAWAY, connections closed) and started again on the same port; a health
//! check during the outage fails, the ones after it succeed on a new connection.
//!
//! Run it with `cargo run --features hyper --example tonic_client`.

use std::net::SocketAddr;
use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use redial::event::EventKind;
use redial::peers::Peers;
use redial::reconnect::connector::{ConnectLayer, UriKey};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::{BoxError, Layer};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let start = Instant::now();
    let server = GrpcServer::start("127.0.0.1:0".parse()?).await?;
    let addr = server.addr;

    let peers: Peers<String> = Peers::builder().seed(7).build()?;
    let mut events = peers.subscribe();
    tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            let what = match event.kind {
                EventKind::AttemptStarted { attempt, .. } => format!("connect attempt {attempt}"),
                EventKind::Waiting { delay, .. } => format!("waiting {} ms", delay.as_millis()),
                EventKind::StateChanged { .. } => continue,
                other => other.name().to_string(),
            };
            let at = event.at.saturating_duration_since(start).as_secs_f64();
            println!("    +{at:.3}s  {}  {what}", event.peer);
        }
    });

    // The redial part: the channel dials through the reconnecting connector. (tonic's own
    // connector turns Nagle's algorithm off; with our own `HttpConnector` we do it ourselves.)
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let connector = ConnectLayer::new(peers.clone(), UriKey).layer(http);
    println!("== connect, then a health check with the server up");
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_with_connector(connector)
        .await?;
    let mut health = HealthClient::new(channel);
    check(&mut health).await;

    server.stop().await;
    println!("== the server is down");
    check(&mut health).await;

    let _server = GrpcServer::start(addr).await?;
    println!("== the server is back on the same port");
    for _ in 0..3 {
        check(&mut health).await;
        sleep(Duration::from_millis(50)).await;
    }

    let key = format!("http://{addr}");
    let peer = peers.snapshot(&key).ok_or("the peer should be tracked")?;
    let (state, attempts, open) = (peer.state, peer.attempts, peer.open_connections);
    println!("\n== peer {key}: {state}, {attempts} connect attempts, {open} open connection(s)");
    println!("  last error {:?}", peer.last_error);
    Ok(())
}

async fn check(health: &mut HealthClient<Channel>) {
    let started = Instant::now();
    let request = HealthCheckRequest {
        service: String::new(), // "": the server as a whole
    };
    let result = health.check(request).await;
    let took = started.elapsed().as_millis();
    tokio::task::yield_now().await; // let the event printer catch up first
    match result {
        Ok(response) => println!("  -> {:?} in {took} ms", response.get_ref().status()),
        Err(status) => println!("  -> {:?}: {} ({took} ms)", status.code(), status.message()),
    }
}

/// tonic with the health service, stopped gracefully through a shutdown signal.
struct GrpcServer {
    addr: SocketAddr,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl GrpcServer {
    async fn start(addr: SocketAddr) -> Result<Self, BoxError> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (_reporter, health) = tonic_health::server::health_reporter(); // "" is serving
        let (shutdown, signal) = oneshot::channel::<()>();
        let task = tokio::spawn(Server::builder().serve_with_incoming_shutdown(
            health,
            TcpIncoming::from(listener),
            async {
                let _ = signal.await;
            },
        ));
        Ok(Self {
            addr,
            shutdown,
            task,
        })
    }

    async fn stop(self) {
        let _ = self.shutdown.send(());
        let _ = self.task.await;
    }
}
