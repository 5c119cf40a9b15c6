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
use redial::reconnect::connector::{ConnectLayer, FixedKey};
use redial::reconnect::{ReconnectLayer, Unavailable};
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

/// A service past its fail-fast window that starts the probe turns ready to fail its caller at
/// once, and its caller may not poll it again soon: tower's `Retry` retries on a clone. The clone
/// must drive the probe its original left, not wait at the gate for the probe's deadline (found
/// by the simulation: under retry, every probe ran out its connect timeout).
#[tokio::test(start_paused = true)]
async fn a_probe_left_by_a_service_failing_fast_is_driven_by_its_clone() {
    let peers: Peers<Key> = Peers::builder().backoff(exact(None)).build().unwrap();
    let dials = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&dials);
    // Refused at 0, 100 and 300 ms; the attempt at 700 ms takes 200 ms to connect.
    let connector = service_fn(move |_: ()| {
        let n = counted.fetch_add(1, Ordering::SeqCst);
        async move {
            match n {
                0..3 => return Err(io::Error::from(io::ErrorKind::ConnectionRefused)),
                3 => tokio::time::sleep(200 * MS).await,
                _ => {}
            }
            Ok::<_, io::Error>(service_fn(|r: u32| async move { Ok::<_, Infallible>(r) }))
        }
    });
    let peer = peers.add_static("p").unwrap();
    let layer = ReconnectLayer::builder(peer.clone(), ())
        .connect_timeout(SEC)
        .fail_fast(Some(300 * MS))
        .stagger(Duration::ZERO)
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    let mut original = layer.layer(connector);
    original.ready().await.unwrap();
    assert_eq!(start.elapsed(), 300 * MS);
    let error = original.call(1).await.unwrap_err();
    assert!(error.is::<Unavailable>(), "{error}");

    tokio::time::sleep_until(start + 700 * MS).await;
    original.ready().await.unwrap();
    assert_eq!(start.elapsed(), 700 * MS, "fails fast while the probe runs");
    assert_eq!(dials.load(Ordering::SeqCst), 4);
    assert_eq!(peer.state(), PeerState::Connecting);
    assert!(original.call(1).await.unwrap_err().is::<Unavailable>());

    let mut retry = original.clone();
    let reply = tokio::time::timeout(10 * SEC, async { retry.ready().await?.call(7).await })
        .await
        .expect("the clone gets ready")
        .unwrap();
    assert_eq!(reply, 7);
    assert_eq!(start.elapsed(), 900 * MS, "ready when the probe connects");
    assert_eq!(
        dials.load(Ordering::SeqCst),
        4,
        "the clone made no dial of its own"
    );
    let snapshot = peer.snapshot();
    assert_eq!(snapshot.failures, 3, "no abandoned probe: {snapshot:?}");
    assert_eq!(peer.state(), PeerState::Connected);

    // The original finds nothing left to take and connects beside its clone.
    drop(retry);
    original.ready().await.unwrap();
    assert_eq!(original.call(8).await.unwrap(), 8);
    assert_eq!(dials.load(Ordering::SeqCst), 5);
}

/// A clone already waiting at the gate is woken when its original leaves the probe, and takes
/// it on at once: it is ready when the connect completes, not at its own next timer.
#[tokio::test(start_paused = true)]
async fn a_clone_waiting_at_the_gate_takes_over_the_probe_its_original_leaves() {
    let peers: Peers<Key> = Peers::builder().backoff(exact(None)).build().unwrap();
    // The first attempt takes 305 ms to connect.
    let connector = service_fn(move |_: ()| async move {
        tokio::time::sleep(305 * MS).await;
        Ok::<_, io::Error>(service_fn(|r: u32| async move { Ok::<_, Infallible>(r) }))
    });
    let peer = peers.add_static("p").unwrap();
    let layer = ReconnectLayer::builder(peer.clone(), ())
        .connect_timeout(SEC)
        .fail_fast(Some(300 * MS))
        .stagger(Duration::ZERO)
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    let mut original = layer.layer(connector);
    let mut clone = original.clone();
    // The original takes the probe; the clone, 10 ms later, waits for it (its window ends at
    // 310 ms).
    let _ = tokio::time::timeout(MS, original.ready()).await;
    tokio::time::sleep(9 * MS).await;
    let waiting = tokio::spawn(async move {
        clone.ready().await?;
        let at = tokio::time::Instant::now();
        clone.call(7).await.map(|r| (r, at))
    });
    // At 300 ms the original fails fast and leaves the probe to the family.
    tokio::time::sleep_until(start + 300 * MS).await;
    original.ready().await.unwrap();
    assert!(original.call(1).await.unwrap_err().is::<Unavailable>());
    let (reply, at) = waiting.await.unwrap().unwrap();
    assert_eq!(reply, 7);
    assert_eq!(
        at - start,
        305 * MS,
        "the clone drove the probe from 300 ms"
    );
}

/// A clone that took over the probe its original left and is then dropped mid-connect (a
/// retry's spare at the call deadline, or under an outer timeout) must hand the probe back to
/// the family, not cancel it: a cancelled probe is neither counted nor backed off, so the next
/// request dials a black-holed peer again at once, at every request.
#[tokio::test(start_paused = true)]
async fn a_clone_dropped_while_driving_the_left_probe_hands_it_back() {
    let peers: Peers<Key> = Peers::builder().backoff(exact(None)).build().unwrap();
    let dials = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&dials);
    // A black hole: every connect hangs.
    let connector = service_fn(move |_: ()| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move {
            std::future::pending::<()>().await;
            Ok::<_, io::Error>(service_fn(|r: u32| async move { Ok::<_, Infallible>(r) }))
        }
    });
    let peer = peers.add_static("p").unwrap();
    let layer = ReconnectLayer::builder(peer.clone(), ())
        .connect_timeout(SEC)
        .fail_fast(Some(300 * MS))
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    let mut original = layer.layer(connector);
    original.ready().await.unwrap();
    assert!(original.call(1).await.unwrap_err().is::<Unavailable>());
    for _ in 0..3 {
        // The retry's spare takes the probe on and is given up on before it is ready.
        let mut spare = original.clone();
        assert!(
            tokio::time::timeout(50 * MS, spare.ready()).await.is_err(),
            "the spare waits for the probe"
        );
        drop(spare);
        original.ready().await.unwrap();
        assert!(original.call(2).await.unwrap_err().is::<Unavailable>());
    }
    assert_eq!(start.elapsed(), 450 * MS);
    assert_eq!(
        dials.load(Ordering::SeqCst),
        1,
        "one probe, driven by the family"
    );
    assert!(peer.snapshot().attempt_in_flight);
    // It times out at 1 s and counts as one failure, stepping the schedule.
    tokio::time::sleep_until(start + SEC).await;
    original.ready().await.unwrap();
    let snapshot = peer.snapshot();
    assert_eq!(
        (snapshot.failures, snapshot.backoff_step),
        (1, 1),
        "{snapshot:?}"
    );
}

/// A service waiting at the gate that takes over the probe its original left drives it: it
/// no longer follows another's probe. When its connection later breaks beside a working one,
/// it reconnects at once rather than holding for a stagger meant for followers.
#[tokio::test(start_paused = true)]
async fn a_clone_that_took_the_left_probe_over_is_no_follower_afterwards() {
    let peers: Peers<Key> = Peers::builder()
        .backoff(exact(None))
        .seed(7)
        .build()
        .unwrap();
    let dials = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&dials);
    // The first connect takes 305 ms, and its connection resets on the first call.
    let connector = service_fn(move |_: ()| {
        let n = counted.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                tokio::time::sleep(305 * MS).await;
            }
            Ok::<_, io::Error>(service_fn(move |r: u32| async move {
                match n {
                    0 => Err(io::Error::from(io::ErrorKind::ConnectionReset)),
                    _ => Ok(r),
                }
            }))
        }
    });
    let peer = peers.add_static("p").unwrap();
    let layer = ReconnectLayer::builder(peer.clone(), ())
        .connect_timeout(SEC)
        .fail_fast(Some(300 * MS))
        .stagger(50 * MS)
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    let mut original = layer.layer(connector);
    let mut clone = original.clone();
    // The original takes the probe; the clone waits at the gate from 10 ms.
    let _ = tokio::time::timeout(10 * MS, original.ready()).await;
    let _ = tokio::time::timeout(MS, clone.ready()).await;
    // At 300 ms the original fails fast and leaves the probe; the clone drives it to 305 ms.
    tokio::time::sleep_until(start + 300 * MS).await;
    original.ready().await.unwrap();
    assert!(original.call(1).await.unwrap_err().is::<Unavailable>());
    clone.ready().await.unwrap();
    assert_eq!(start.elapsed(), 305 * MS);
    // The original connects beside it.
    assert_eq!(original.ready().await.unwrap().call(2).await.unwrap(), 2);
    assert_eq!(dials.load(Ordering::SeqCst), 2);
    // The clone's connection resets; it reconnects at once.
    assert!(clone.call(3).await.is_err());
    let reply = tokio::time::timeout(MS, async { clone.ready().await?.call(4).await })
        .await
        .expect("no stagger for a service that followed nobody")
        .unwrap();
    assert_eq!(reply, 4);
    assert_eq!(dials.load(Ordering::SeqCst), 3);
}

/// A probe left to the family and not driven past its deadline is taken over by another
/// service and counted there as abandoned. The family member that finds it later must not
/// count it again, nor mark the peer (connected by then) suspect.
#[tokio::test(start_paused = true)]
async fn a_left_probe_taken_over_at_its_deadline_is_not_counted_again_by_the_family() {
    let peers: Peers<Key> = Peers::builder().backoff(exact(None)).build().unwrap();
    let dials = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&dials);
    // The first connect hangs; the others connect at once.
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
        .fail_fast(Some(300 * MS))
        .stagger(Duration::ZERO)
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    let mut original = layer.layer(connector.clone());
    original.ready().await.unwrap();
    assert!(original.call(1).await.unwrap_err().is::<Unavailable>());
    // Another family takes the gate over at the probe's deadline and connects after one step.
    let patient = ReconnectLayer::builder(peer.clone(), ())
        .connect_timeout(SEC)
        .fail_fast(None)
        .build()
        .unwrap();
    let mut other = patient.layer(connector);
    assert_eq!(other.ready().await.unwrap().call(2).await.unwrap(), 2);
    assert_eq!(start.elapsed(), 1100 * MS);
    assert_eq!(peer.snapshot().failures, 1);
    // The family's next request finds the stale probe.
    let mut clone = original.clone();
    assert_eq!(clone.ready().await.unwrap().call(3).await.unwrap(), 3);
    let snapshot = peer.snapshot();
    assert_eq!(snapshot.failures, 1, "counted once: {snapshot:?}");
    assert_eq!(peer.state(), PeerState::Connected);
}
