//! Edge cases of `ReconnectLayer` and the connector found in review: a service dropped after a
//! call broke its connection, the exhausted cool-down shared by several services, and stagger
//! bounds. Virtual time throughout.

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redial::ConfigErrorKind;
use redial::backoff::{Backoff, Jitter};
use redial::peers::{PeerSnapshot, PeerState, Peers};
use redial::reconnect::ReconnectLayer;
use redial::reconnect::connector::{ConnectLayer, FixedKey};
use tokio::time::advance;
use tower::{Layer, Service, ServiceExt, service_fn};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

type Key = &'static str;

fn exact(max_attempts: Option<u32>) -> Backoff {
    let b = Backoff::builder()
        .initial(100 * MS)
        .multiplier(2.0)
        .max(10 * SEC)
        .jitter(Jitter::None);
    match max_attempts {
        Some(n) => b.max_attempts(n),
        None => b,
    }
    .build()
    .unwrap()
}

/// Connects (the first attempt is refused), then the one call on the connection fails with a
/// reset; ten seconds later the service is either dropped or polled again.
async fn broken_then(poll_instead_of_drop: bool) -> PeerSnapshot<Key> {
    let peers: Peers<Key> = Peers::builder().backoff(exact(None)).build().unwrap();
    let dials = Arc::new(AtomicUsize::new(0));
    let connector = service_fn(move |_: ()| {
        let n = dials.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::ConnectionRefused));
            }
            Ok::<_, io::Error>(service_fn(|_: u32| async {
                Err::<u32, io::Error>(io::ErrorKind::ConnectionReset.into())
            }))
        }
    });
    let peer = peers.add_static("p").unwrap();
    let layer = ReconnectLayer::builder(peer.clone(), ())
        .fail_fast(None)
        .stable_after(5 * SEC)
        .build()
        .unwrap();
    let mut svc = layer.layer(connector);
    let reply = svc.ready().await.unwrap().call(1).await;
    assert!(reply.is_err());
    advance(10 * SEC).await;
    if poll_instead_of_drop {
        let _ = tokio::time::timeout(MS, svc.ready()).await;
        let snapshot = peer.snapshot();
        drop(svc);
        snapshot
    } else {
        drop(svc);
        peer.snapshot()
    }
}

/// Dropping the service must not turn a connection that a call found broken into a clean,
/// proven close: the failure counts and the flap steps the schedule, as a poll would.
#[tokio::test(start_paused = true)]
async fn dropping_a_service_after_a_call_broke_its_connection_counts_the_break() {
    let dropped = broken_then(false).await;
    let polled = broken_then(true).await;
    assert_eq!(
        (dropped.failures, dropped.backoff_step),
        (polled.failures, polled.backoff_step),
        "dropped: {dropped:?}\npolled: {polled:?}"
    );
    assert_eq!(dropped.failures, 2, "the refused connect and the reset");
    assert_eq!(dropped.state, PeerState::Backoff);
}

/// The cool-down runs from when the peer ran out of attempts, on the peer's clock: a service
/// that saw the peer exhausted long ago does not reset it again at once.
#[tokio::test(start_paused = true)]
async fn the_exhausted_cooldown_is_the_peers_not_each_services() {
    let peers: Peers<Key> = Peers::builder().backoff(exact(Some(1))).build().unwrap();
    let dials = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&dials);
    let connector = service_fn(move |_: ()| {
        counted.fetch_add(1, Ordering::SeqCst);
        async {
            Err::<tower::util::BoxService<u32, u32, Infallible>, _>(io::Error::from(
                io::ErrorKind::ConnectionRefused,
            ))
        }
    });
    let peer = peers.add_static("p").unwrap();
    let layer = ReconnectLayer::builder(peer.clone(), ())
        .fail_fast(Some(SEC))
        .exhausted_cooldown(Some(60 * SEC))
        .build()
        .unwrap();
    let mut a = layer.layer(connector.clone());
    let mut b = layer.layer(connector);
    let _ = a.ready().await;
    assert_eq!(peer.state(), PeerState::Exhausted);
    let _ = b.ready().await;
    // At 60 s the cool-down resets the peer; A tries once more and exhausts it again.
    advance(60 * SEC).await;
    let _ = a.ready().await;
    assert_eq!(dials.load(Ordering::SeqCst), 2);
    // At 61 s B must not reset it: the new cool-down runs until 120 s.
    advance(SEC).await;
    let _ = b.ready().await;
    assert_eq!(dials.load(Ordering::SeqCst), 2, "B skipped the cool-down");
    assert_eq!(peer.state(), PeerState::Exhausted);
    advance(59 * SEC).await;
    let _ = b.ready().await;
    assert_eq!(dials.load(Ordering::SeqCst), 3);
}

#[test]
fn a_stagger_over_a_minute_is_rejected_by_both_builders() {
    let peers: Peers<Key> = Peers::new();
    let peer = peers.add_static("p").unwrap();
    let error = ReconnectLayer::builder(peer, ())
        .stagger(61 * SEC)
        .build()
        .unwrap_err();
    assert_eq!(
        (error.field(), error.kind()),
        ("stagger", ConfigErrorKind::TooLarge)
    );
    let error = ConnectLayer::builder(peers, FixedKey("p"))
        .stagger(Duration::MAX)
        .build()
        .unwrap_err();
    assert_eq!(
        (error.field(), error.kind()),
        ("stagger", ConfigErrorKind::TooLarge)
    );
}

#[test]
fn a_call_deadline_shorter_than_the_connect_timeout_is_rejected() {
    let peers: Peers<Key> = Peers::new();
    let error = ConnectLayer::builder(peers, FixedKey("p"))
        .connect_timeout(5 * SEC)
        .call_deadline(Some(SEC))
        .build()
        .unwrap_err();
    assert_eq!(
        (error.field(), error.kind()),
        ("call_deadline", ConfigErrorKind::Inconsistent)
    );
}

/// A service that takes the probe and is then never polled again (left behind in a `select!`,
/// or an endpoint a balancer stopped choosing) must not hold the peer's gate for the whole
/// process: past the probe's connect timeout, the next service takes the gate over and the
/// abandoned probe counts as a timed-out attempt.
#[tokio::test(start_paused = true)]
async fn a_probe_left_behind_by_an_unpolled_service_is_taken_over_after_its_timeout() {
    let peers: Peers<Key> = Peers::builder().backoff(exact(None)).build().unwrap();
    let dials = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&dials);
    let connector = service_fn(move |_: ()| {
        let n = counted.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                std::future::pending::<()>().await;
            }
            Ok::<_, io::Error>(service_fn(|r: u32| async move { Ok::<_, Infallible>(r) }))
        }
    });
    let peer = peers.add_static("p").unwrap();
    let layer = ReconnectLayer::builder(peer.clone(), ())
        .connect_timeout(SEC)
        .fail_fast(None)
        .build()
        .unwrap();
    let mut left_behind = layer.layer(connector.clone());
    let mut other = layer.layer(connector);
    let _ = tokio::time::timeout(10 * MS, left_behind.ready()).await;
    assert_eq!(peer.state(), PeerState::Connecting);

    let started = tokio::time::Instant::now();
    let reply = tokio::time::timeout(60 * SEC, async { other.ready().await?.call(7).await })
        .await
        .expect("the other service connects")
        .unwrap();
    assert_eq!(reply, 7);
    // Taken over at the probe's deadline (1 s after it started), then one backoff step.
    assert_eq!(started.elapsed(), SEC - 10 * MS + 100 * MS);
    assert_eq!(dials.load(Ordering::SeqCst), 2);
    let snapshot = peer.snapshot();
    assert_eq!(snapshot.failures, 1, "{snapshot:?}");
    assert!(snapshot.last_error.unwrap().contains("abandoned"));
    assert_eq!(peer.state(), PeerState::Connected);
    drop(left_behind);
    assert_eq!(
        peer.state(),
        PeerState::Connected,
        "the stale attempt's drop changes nothing"
    );
}
