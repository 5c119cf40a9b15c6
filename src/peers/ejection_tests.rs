//! The ejection primitives' own rules, below any health policy: the panic guard, probe slots
//! and their generations, and how checks, overrides and outlier ejections interact.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Wake, Waker};
use std::time::Duration;

use tokio::time::{Instant, advance};

use super::admission::{Admission, EjectRefused, EjectionPlan, GateWaiter, register};
use super::state::{EjectionCause, Override, PeerState};
use super::{PeerHandle, Peers};
use crate::event::{EventKind, SkipReason};

const SECOND: Duration = Duration::from_secs(1);

fn fixed(duration: Duration) -> impl FnOnce(super::EjectionHistory) -> EjectionPlan {
    move |history| EjectionPlan {
        multiplier: history.multiplier + 1,
        duration,
    }
}

fn table(n: usize) -> (Peers<usize>, Vec<PeerHandle<usize>>) {
    let peers = Peers::new();
    let handles = (0..n).map(|i| peers.add_static(i).unwrap()).collect();
    (peers, handles)
}

#[derive(Default)]
struct CountWakes(AtomicUsize);

impl Wake for CountWakes {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn the_panic_guard_counts_ejected_peers_against_the_table() {
    let (peers, p) = table(5);
    let mut events = peers.subscribe();
    // Half of five, rounded down: two.
    assert_eq!(p[0].eject_outlier(Some(0.5), fixed(SECOND)), Ok(SECOND));
    assert_eq!(p[1].eject_outlier(Some(0.5), fixed(SECOND)), Ok(SECOND));
    assert_eq!(
        p[2].eject_outlier(Some(0.5), fixed(SECOND)),
        Err(EjectRefused::PanicGuard)
    );
    assert_eq!(p[2].state(), PeerState::Idle);
    assert_eq!(p[2].snapshot().skipped_ejections, 1);
    let skipped = std::iter::from_fn(|| events.try_recv().ok().flatten())
        .filter(|e| {
            e.kind
                == EventKind::EjectionSkipped {
                    reason: SkipReason::PanicGuard,
                }
        })
        .count();
    assert_eq!(skipped, 1);
    // Once one is back, another may go.
    assert!(p[0].restore());
    assert!(p[2].eject_outlier(Some(0.5), fixed(SECOND)).is_ok());
    // A lone peer can always be taken out: the layer is its circuit breaker.
    let (_, lone) = table(1);
    assert!(lone[0].eject_outlier(Some(0.1), fixed(SECOND)).is_ok());
}

#[tokio::test(start_paused = true)]
async fn probe_slots_open_when_the_time_is_over_and_are_counted() {
    let (_peers, p) = table(1);
    let peer = &p[0];
    assert!(matches!(peer.admit(2, None), Admission::Open));
    peer.eject_outlier(None, fixed(SECOND)).unwrap();
    let until = Instant::now() + SECOND;
    assert!(matches!(
        peer.admit(2, None),
        Admission::Rejected { retry_at: Some(at), cause: EjectionCause::Outlier } if at == until
    ));
    advance(SECOND).await;
    let Admission::Probe(first) = peer.admit(2, None) else {
        panic!("first probe")
    };
    let Admission::Probe(second) = peer.admit(2, None) else {
        panic!("second probe")
    };
    assert!(matches!(
        peer.admit(2, None),
        Admission::Rejected { retry_at: None, .. }
    ));
    // A released slot is free again, and the waiting task hears of it.
    let wakes = Arc::new(CountWakes::default());
    let waker = Waker::from(Arc::clone(&wakes));
    let waiter = Arc::new(GateWaiter::default());
    waiter.set(&waker);
    assert!(matches!(
        peer.admit(2, Some(&waiter)),
        Admission::Rejected { .. }
    ));
    drop(second);
    assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
    assert!(matches!(peer.admit(2, None), Admission::Probe(_)));
    // The first success restores the peer.
    assert!(first.succeeded());
    assert_eq!(peer.state(), PeerState::Idle);
    assert!(matches!(peer.admit(2, None), Admission::Open));
}

#[tokio::test(start_paused = true)]
async fn a_probe_of_an_earlier_ejection_decides_nothing() {
    let (_peers, p) = table(1);
    let peer = &p[0];
    peer.eject_outlier(None, fixed(SECOND)).unwrap();
    advance(SECOND).await;
    let Admission::Probe(stale) = peer.admit(1, None) else {
        panic!("probe")
    };
    // Restored by hand and ejected again while the probe was out.
    assert!(peer.restore());
    peer.eject_outlier(None, fixed(10 * SECOND)).unwrap();
    assert!(!stale.succeeded(), "it restored nothing");
    assert_eq!(peer.state(), PeerState::Ejected);
    let times = peer.snapshot().times_ejected;
    advance(10 * SECOND).await;
    let Admission::Probe(current) = peer.admit(1, None) else {
        panic!("the stale probe must not hold the slot")
    };
    assert!(current.failed(fixed(20 * SECOND)));
    let snap = peer.snapshot();
    assert_eq!(snap.times_ejected, times + 1);
    assert_eq!(snap.ejected_until, Some(Instant::now() + 20 * SECOND));
}

#[tokio::test(start_paused = true)]
async fn the_multiplier_grows_with_failed_probes_and_decays_with_restores() {
    let (_peers, p) = table(1);
    let peer = &p[0];
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let plan = |seen: &Arc<std::sync::Mutex<Vec<u32>>>| {
        let seen = Arc::clone(seen);
        move |h: super::EjectionHistory| {
            seen.lock().unwrap().push(h.multiplier);
            EjectionPlan {
                multiplier: h.multiplier + 1,
                duration: SECOND,
            }
        }
    };
    peer.eject_outlier(None, plan(&seen)).unwrap();
    advance(SECOND).await;
    let Admission::Probe(probe) = peer.admit(1, None) else {
        panic!()
    };
    assert!(probe.failed(plan(&seen)));
    advance(SECOND).await;
    let Admission::Probe(probe) = peer.admit(1, None) else {
        panic!()
    };
    probe.succeeded();
    peer.eject_outlier(None, plan(&seen)).unwrap();
    // 0 → 1 (ejected), 1 → 2 (probe failed), restore decays 2 → 1, next ejection sees 1.
    assert_eq!(*seen.lock().unwrap(), [0, 1, 1]);
}

#[tokio::test(start_paused = true)]
async fn checks_overrides_and_outliers_each_end_only_their_own_ejections() {
    let (_peers, p) = table(1);
    let peer = &p[0];
    // A check takes over an outlier ejection: its probes no longer decide.
    peer.eject_outlier(None, fixed(SECOND)).unwrap();
    assert!(peer.eject_by_check());
    advance(SECOND).await;
    assert!(matches!(
        peer.admit(1, None),
        Admission::Rejected {
            retry_at: None,
            cause: EjectionCause::Check
        }
    ));
    assert!(peer.restore_by_check());
    assert_eq!(peer.state(), PeerState::Idle);

    // Forced open: neither a check nor an outlier ejection changes it, only another override.
    peer.set_override(Override::Open);
    assert_eq!(peer.ejection().map(|e| e.1), Some(EjectionCause::Manual));
    assert!(!peer.eject_by_check());
    assert!(!peer.restore_by_check());
    assert_eq!(
        peer.eject_outlier(None, fixed(SECOND)),
        Err(EjectRefused::AlreadyEjected)
    );
    peer.set_override(Override::Automatic);
    assert_eq!(peer.state(), PeerState::Idle);

    // Forced closed: restored at once, and nothing ejects it.
    peer.eject_outlier(None, fixed(SECOND)).unwrap();
    peer.set_override(Override::Closed);
    assert_eq!(peer.state(), PeerState::Idle);
    assert_eq!(
        peer.eject_outlier(None, fixed(SECOND)),
        Err(EjectRefused::ForcedClosed)
    );
    assert!(!peer.eject_by_check());
    assert_eq!(peer.snapshot().skipped_ejections, 2);
    assert!(matches!(peer.admit(1, None), Admission::Open));
}

/// Watchers learn when an ejection changes hands: it is the same ejection (same count), with
/// a new cause and no end of its own.
#[tokio::test(start_paused = true)]
async fn a_check_or_an_override_taking_over_an_ejection_is_published() {
    let (peers, p) = table(1);
    let peer = &p[0];
    let mut events = peers.subscribe();
    let mut ejections = move || {
        let mut seen = Vec::new();
        while let Some(event) = events.try_recv().unwrap() {
            if let EventKind::Ejected {
                duration,
                cause,
                times,
            } = event.kind
            {
                seen.push((duration, cause, times));
            }
        }
        seen
    };
    peer.eject_outlier(None, fixed(SECOND)).unwrap();
    assert!(peer.eject_by_check());
    assert_eq!(
        ejections(),
        [
            (Some(SECOND), EjectionCause::Outlier, 1),
            (None, EjectionCause::Check, 1)
        ]
    );
    // A check's own ejection is not taken over by another check.
    assert!(!peer.eject_by_check());
    peer.set_override(Override::Open);
    peer.set_override(Override::Open);
    assert_eq!(ejections(), [(None, EjectionCause::Manual, 1)], "once");
    peer.set_override(Override::Automatic);
    peer.eject_outlier(None, fixed(SECOND)).unwrap();
    peer.set_override(Override::Open);
    assert_eq!(
        ejections(),
        [
            (Some(SECOND), EjectionCause::Outlier, 2),
            (None, EjectionCause::Manual, 2)
        ]
    );
    assert_eq!(peer.snapshot().times_ejected, 2);
}

#[tokio::test(start_paused = true)]
async fn an_exhausted_peer_is_left_to_reconnect_but_can_be_forced_open() {
    let peers: Peers<&str> = Peers::builder()
        .backoff(
            crate::backoff::Backoff::builder()
                .max_attempts(1)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let peer = peers.add_static("a").unwrap();
    let _ = peer.try_begin_attempt().unwrap().failed(&"refused");
    assert_eq!(peer.state(), PeerState::Exhausted);
    assert_eq!(
        peer.eject_outlier(Some(1.0), fixed(SECOND)),
        Err(EjectRefused::Exhausted)
    );
    assert!(!peer.eject_by_check());
    peer.set_override(Override::Open);
    assert_eq!(peer.state(), PeerState::Ejected);
    peer.set_override(Override::Automatic);
    assert_eq!(peer.state(), PeerState::Exhausted);
}

#[test]
fn the_waiter_list_keeps_live_services_not_every_task_that_ever_waited() {
    let mut list = Vec::new();
    let live: Vec<Arc<GateWaiter>> = (0..4).map(|_| Arc::default()).collect();
    for waiter in &live {
        register(&mut list, waiter);
        register(&mut list, waiter); // once each
    }
    assert_eq!(list.len(), 4);
    // Ten thousand services that waited and were dropped (their callers gave up).
    for _ in 0..10_000 {
        let gone = Arc::new(GateWaiter::default());
        register(&mut list, &gone);
    }
    assert!(
        list.len() <= 2 * (live.len() + 1) + 8,
        "{} entries",
        list.len()
    );
    assert_eq!(list.iter().filter(|w| w.strong_count() > 0).count(), 4);
}
