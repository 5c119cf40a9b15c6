//! hyper-util's legacy `Client` riding through a server restart, with redial's reconnecting
//! connector in place of the plain `HttpConnector`.
//!
//! Connections come back wrapped in a `TrackedIo`, so the peer table sees every dial and every
//! connection's life. While the server is down, a request's connect retries with the peer's
//! backoff (one attempt at a time for the whole process), then fails with the connect error.
//!
//! Run it with `cargo run --features hyper --example hyper_client`.

use std::convert::Infallible;
use std::net::SocketAddr;

use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use redial::event::EventKind;
use redial::peers::Peers;
use redial::reconnect::connector::{ConnectLayer, UriKey};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tower::{BoxError, Layer};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let start = Instant::now();
    let server = start_server("127.0.0.1:0".parse()?).await?;
    let addr = server.0; // the server comes back on this same port
    let url: Uri = format!("http://{addr}/").parse()?;

    // The default backoff (100 ms doubling, full jitter), seeded; keys are "http://host:port".
    let peers: Peers<String> = Peers::builder().seed(7).build()?;
    let mut events = peers.subscribe();
    tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            let what = match event.kind {
                EventKind::AttemptStarted { attempt, .. } => format!("connect attempt {attempt}"),
                EventKind::Waiting { delay, .. } => format!("waiting {} ms", delay.as_millis()),
                EventKind::StateChanged { .. } => continue, // the other events say enough
                other => other.name().to_string(),
            };
            let at = event.at.saturating_duration_since(start).as_secs_f64();
            println!("    +{at:.3}s  {}  {what}", event.peer);
        }
    });

    // The only redial line: a layer over hyper-util's own connector.
    let connector = ConnectLayer::new(peers.clone(), UriKey).layer(HttpConnector::new());
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);

    println!("== GET {url} with the server up");
    get(&client, &url).await;

    stop_server(server).await;
    println!("== the server is down: this GET tries 3 connects with backoff, then fails");
    get(&client, &url).await;

    let _server = start_server(addr).await?;
    println!("== the server is back on the same port");
    get(&client, &url).await;
    get(&client, &url).await;

    let key = format!("http://{addr}");
    let peer = peers.snapshot(&key).ok_or("the peer should be tracked")?;
    let (state, attempts, last_error) = (peer.state, peer.attempts, &peer.last_error);
    println!(
        "\n== peer {key}: {state} after {attempts} connect attempts; last error {last_error:?}"
    );
    let (ok, failed, in_row) = (peer.successes, peer.failures, peer.consecutive_failures);
    println!("  outcomes recorded: successes {ok}, failures {failed} ({in_row} in a row)");
    Ok(())
}

async fn get<C>(client: &Client<C, Empty<Bytes>>, url: &Uri)
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let started = Instant::now();
    let result = async {
        let response = client.get(url.clone()).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok::<_, BoxError>(format!("{status} {:?}", String::from_utf8_lossy(&body)))
    }
    .await;
    let took = started.elapsed().as_millis();
    tokio::task::yield_now().await; // let the event printer catch up first
    match result {
        Ok(answer) => println!("  -> {answer} in {took} ms"),
        Err(error) => {
            let (mut text, mut source) = (error.to_string(), error.source());
            while let Some(cause) = source {
                (text, source) = (format!("{text}: {cause}"), cause.source());
            }
            println!("  -> failed after {took} ms: {text}");
        }
    }
}

/// A hyper HTTP/1 server answering "hello". Its accept task owns every connection task (in a
/// `JoinSet`), so aborting it closes the listener and every open connection.
async fn start_server(addr: SocketAddr) -> Result<(SocketAddr, JoinHandle<()>), BoxError> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            let hello = hyper::service::service_fn(|_: Request<Incoming>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("hello"))))
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), hello);
            connections.spawn(connection);
        }
    });
    Ok((addr, task))
}

async fn stop_server((_, task): (SocketAddr, JoinHandle<()>)) {
    task.abort();
    let _ = task.await;
}
