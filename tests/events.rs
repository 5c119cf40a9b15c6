//! The typed event stream: a lagging subscriber never slows the code that records, every kind
//! carries the right payload at the right virtual instant, and the stream closes with the table.

use std::time::Duration;

use redial::backoff::{Backoff, Jitter};
use redial::event::{Event, EventKind, RecvError, Subscription, WaitReason};
use redial::peers::{EjectionCause, NextAttempt, PeerState, Peers};
use tokio::time::{Instant, advance};

type Key = &'static str;

const MS: Duration = Duration::from_millis(1);

fn exact(attempts: Option<u32>) -> Backoff {
    let b = Backoff::builder()
        .initial(100 * MS)
        .multiplier(2.0)
        .max(Duration::from_secs(10))
        .jitter(Jitter::None);
    match attempts {
        Some(n) => b.max_attempts(n),
        None => b,
    }
    .build()
    .unwrap()
}

fn table(attempts: Option<u32>) -> Peers<Key> {
    Peers::builder()
        .backoff(exact(attempts))
        .seed(1)
        .build()
        .unwrap()
}

fn all(events: &mut Subscription<Key>) -> Vec<Event<Key>> {
    let mut out = Vec::new();
    while let Some(e) = events.try_recv().unwrap() {
        out.push(e);
    }
    out
}

fn kinds(events: &mut Subscription<Key>) -> Vec<EventKind> {
    all(events).into_iter().map(|e| e.kind).collect()
}

fn changed(from: PeerState, to: PeerState) -> EventKind {
    EventKind::StateChanged { from, to }
}

// ---------------------------------------------------------------------------------------------
// Lagging subscribers
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_lagging_subscriber_blocks_nobody_and_learns_what_it_missed() {
    const CYCLES: usize = 10_000;
    let peers: Peers<Key> = Peers::builder()
        .backoff(exact(None))
        .seed(1)
        .event_capacity(4)
        .build()
        .unwrap();
    // Subscribed, never read while the peer churns.
    let mut sleeper = peers.subscribe();
    // Subscribed and keeping up: it sees everything, whatever the sleeper does.
    let mut reader = peers.subscribe();
    let p = peers.peer("a").unwrap();

    let mut seen = 0usize;
    for _ in 0..CYCLES {
        // The reader reads after each step: the buffer of 4 holds less than a whole cycle.
        let attempt = p
            .try_begin_attempt()
            .expect("reset makes the peer free at once");
        seen += kinds(&mut reader).len();
        assert_eq!(attempt.failed(&"refused"), NextAttempt::After(100 * MS));
        seen += kinds(&mut reader).len();
        p.reset();
        seen += kinds(&mut reader).len();
    }
    // Per cycle: AttemptStarted, Idle -> Connecting, Waiting, Connecting -> Backoff,
    // Backoff -> Idle.
    let published = 5 * CYCLES;
    assert_eq!(seen, published);
    assert_eq!(peers.stats().attempts, CYCLES as u64);

    // The sleeper is told how many it lost, then gets the newest events still held.
    assert_eq!(
        sleeper.try_recv().unwrap_err(),
        RecvError::Lagged((published - 4) as u64)
    );
    assert_eq!(
        kinds(&mut sleeper),
        [
            changed(PeerState::Idle, PeerState::Connecting),
            EventKind::Waiting {
                delay: 100 * MS,
                reason: WaitReason::Backoff
            },
            changed(PeerState::Connecting, PeerState::Backoff),
            changed(PeerState::Backoff, PeerState::Idle),
        ]
    );

    // Recording outcomes goes on with a subscriber that is full and behind again.
    let mut full = peers.subscribe();
    for i in 0..1_000 {
        p.record_failure(&"500");
        if i % 2 == 0 {
            let _ = p.try_begin_attempt().unwrap().failed(&"refused");
        }
        p.record_success();
    }
    let snap = p.snapshot();
    assert_eq!(snap.successes, 1_000);
    assert_eq!(snap.failures, (CYCLES + 1_000 + 500) as u64);
    assert_eq!(snap.consecutive_failures, 0);
    assert!(matches!(full.try_recv(), Err(RecvError::Lagged(n)) if n > 0));
    // After the lag, the stream carries on in order: the last thing was a success proving the
    // peer after a failed probe, so the newest event is Backoff -> Idle.
    let rest = kinds(&mut full);
    assert_eq!(rest.len(), 4);
    assert_eq!(rest[3], changed(PeerState::Backoff, PeerState::Idle));
}

#[tokio::test(start_paused = true)]
async fn recv_waits_for_the_next_event() {
    let peers = table(None);
    let mut events = peers.subscribe();
    let p = peers.peer("a").unwrap();
    let waiter = tokio::spawn(async move { events.recv().await });
    tokio::task::yield_now().await;
    advance(Duration::from_secs(1)).await;
    p.record_budget_exhausted();
    let event = waiter.await.unwrap().unwrap();
    assert_eq!(event.kind, EventKind::BudgetExhausted);
    assert_eq!(event.peer, "a");
}

#[tokio::test(start_paused = true)]
async fn subscribers_see_only_what_happens_after_they_subscribe() {
    let peers = table(None);
    let p = peers.peer("a").unwrap();
    p.record_budget_exhausted();
    let mut events = peers.subscribe();
    assert!(events.try_recv().unwrap().is_none());
    p.record_retry(1, MS, "timeout");
    assert_eq!(kinds(&mut events).len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Payloads
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn an_outage_and_recovery_in_events() {
    let peers = table(Some(5));
    let mut events = peers.subscribe();
    let p = peers.peer("db").unwrap();
    let t0 = Instant::now();

    // Attempt 1 at t0 takes 20 ms to fail.
    let attempt = p.try_begin_attempt().unwrap();
    advance(20 * MS).await;
    let _ = attempt.failed(&"connection refused");
    // Attempt 2 after the 100 ms delay, connects 30 ms later.
    advance(100 * MS).await;
    let attempt = p.try_begin_attempt().unwrap();
    advance(30 * MS).await;
    attempt.succeeded();

    let seen = all(&mut events);
    assert!(seen.iter().all(|e| e.peer == "db"));
    let timeline: Vec<_> = seen.iter().map(|e| (e.at - t0, e.kind.clone())).collect();
    assert_eq!(
        timeline,
        [
            (
                Duration::ZERO,
                EventKind::AttemptStarted {
                    attempt: 1,
                    max_attempts: Some(5)
                }
            ),
            (
                Duration::ZERO,
                changed(PeerState::Idle, PeerState::Connecting)
            ),
            (
                20 * MS,
                EventKind::Waiting {
                    delay: 100 * MS,
                    reason: WaitReason::Backoff
                }
            ),
            (20 * MS, changed(PeerState::Connecting, PeerState::Backoff)),
            (
                120 * MS,
                EventKind::AttemptStarted {
                    attempt: 2,
                    max_attempts: Some(5)
                }
            ),
            (120 * MS, changed(PeerState::Backoff, PeerState::Connecting)),
            (
                150 * MS,
                EventKind::Connected {
                    attempts: 2,
                    total: 150 * MS
                }
            ),
            (
                150 * MS,
                changed(PeerState::Connecting, PeerState::Connected)
            ),
        ]
    );

    // The connection breaks.
    advance(MS).await;
    p.connection_closed(Some(&"reset by peer"));
    let seen = all(&mut events);
    assert_eq!(seen[0].at, t0 + 151 * MS);
    assert_eq!(
        seen[0].kind,
        EventKind::Disconnected {
            error: Some("reset by peer".into())
        }
    );
    // It never proved itself: flapping, and the schedule goes on from where it was.
    assert_eq!(
        seen[1].kind,
        EventKind::Waiting {
            delay: 200 * MS,
            reason: WaitReason::Flapping
        }
    );
    assert_eq!(
        seen[2].kind,
        changed(PeerState::Connected, PeerState::Backoff)
    );
    assert_eq!(seen.len(), 3);

    // After proof, a new outage counts its total from its own first attempt.
    advance(200 * MS).await;
    p.try_begin_attempt().unwrap().succeeded();
    p.record_success();
    p.connection_closed(None);
    all(&mut events);
    advance(Duration::from_secs(3600)).await;
    let attempt = p.try_begin_attempt().unwrap();
    advance(7 * MS).await;
    attempt.succeeded();
    let connected: Vec<_> = kinds(&mut events)
        .into_iter()
        .filter(|k| matches!(k, EventKind::Connected { .. }))
        .collect();
    assert_eq!(
        connected,
        [EventKind::Connected {
            attempts: 1,
            total: 7 * MS
        }]
    );

    // A clean close carries no error.
    p.record_success();
    p.connection_closed(None);
    assert_eq!(
        kinds(&mut events)[0],
        EventKind::Disconnected { error: None }
    );
}

#[tokio::test(start_paused = true)]
async fn attempt_started_without_a_limit() {
    let peers = table(None);
    let mut events = peers.subscribe();
    let p = peers.peer("a").unwrap();
    drop(p.try_begin_attempt().unwrap());
    assert_eq!(
        kinds(&mut events)[0],
        EventKind::AttemptStarted {
            attempt: 1,
            max_attempts: None
        }
    );
}

#[tokio::test(start_paused = true)]
async fn exhaustion_carries_the_attempts_and_the_last_error() {
    let peers = table(Some(2));
    let mut events = peers.subscribe();
    let p = peers.peer("a").unwrap();
    let _ = p.try_begin_attempt().unwrap().failed(&"refused");
    advance(100 * MS).await;
    let _ = p.try_begin_attempt().unwrap().failed(&"host unreachable");
    let exhausted: Vec<_> = all(&mut events)
        .into_iter()
        .filter(|e| matches!(e.kind, EventKind::Exhausted { .. }))
        .collect();
    assert_eq!(exhausted.len(), 1);
    assert_eq!(exhausted[0].at, Instant::now());
    assert_eq!(
        exhausted[0].kind,
        EventKind::Exhausted {
            attempts: 2,
            error: Some("host unreachable".into())
        }
    );

    // Flapping to the limit is announced the same way.
    let peers = table(Some(1));
    let mut events = peers.subscribe();
    let p = peers.peer("b").unwrap();
    p.try_begin_attempt().unwrap().succeeded();
    p.connection_closed(None);
    let kinds = kinds(&mut events);
    assert!(
        kinds.contains(&EventKind::Exhausted {
            attempts: 1,
            error: None
        }),
        "{kinds:?}"
    );
    assert_eq!(
        kinds.last(),
        Some(&changed(PeerState::Connected, PeerState::Exhausted))
    );
}

#[tokio::test(start_paused = true)]
async fn retries_budgets_and_ejections() {
    let peers = table(None);
    let mut events = peers.subscribe();
    let p = peers.peer("a").unwrap();
    let t0 = Instant::now();

    p.record_retry(1, 10 * MS, "timeout");
    advance(MS).await;
    p.record_budget_exhausted();
    advance(MS).await;
    assert!(p.eject(Duration::from_secs(30)));
    advance(MS).await;
    assert!(p.eject(Duration::from_secs(60)));
    advance(MS).await;
    assert!(p.restore());

    let timeline: Vec<_> = all(&mut events)
        .into_iter()
        .map(|e| (e.at - t0, e.kind))
        .collect();
    assert_eq!(
        timeline,
        [
            (
                Duration::ZERO,
                EventKind::RetryScheduled {
                    attempt: 1,
                    delay: 10 * MS,
                    reason: "timeout"
                }
            ),
            (MS, EventKind::BudgetExhausted),
            (
                2 * MS,
                EventKind::Ejected {
                    duration: Some(Duration::from_secs(30)),
                    cause: EjectionCause::Outlier,
                    times: 1
                }
            ),
            (2 * MS, changed(PeerState::Idle, PeerState::Ejected)),
            (
                3 * MS,
                EventKind::Ejected {
                    duration: Some(Duration::from_secs(60)),
                    cause: EjectionCause::Outlier,
                    times: 2
                }
            ),
            (4 * MS, EventKind::Restored),
            (4 * MS, changed(PeerState::Ejected, PeerState::Idle)),
        ]
    );

    // Refused ejections and restores announce nothing.
    assert!(!p.restore());
    let q = table(Some(1));
    let mut q_events = q.subscribe();
    let h = q.peer("q").unwrap();
    let _ = h.try_begin_attempt().unwrap().failed(&"no");
    all(&mut q_events);
    assert!(!h.eject(Duration::from_secs(1)));
    assert!(all(&mut events).is_empty());
    assert!(all(&mut q_events).is_empty());
}

#[test]
fn kind_names_are_stable() {
    let d = Duration::from_secs(1);
    let cases = [
        (
            EventKind::AttemptStarted {
                attempt: 1,
                max_attempts: None,
            },
            "attempt_started",
        ),
        (
            EventKind::Waiting {
                delay: d,
                reason: WaitReason::Backoff,
            },
            "waiting",
        ),
        (
            EventKind::Connected {
                attempts: 1,
                total: d,
            },
            "connected",
        ),
        (EventKind::Disconnected { error: None }, "disconnected"),
        (
            EventKind::Exhausted {
                attempts: 1,
                error: None,
            },
            "exhausted",
        ),
        (
            EventKind::RetryScheduled {
                attempt: 1,
                delay: d,
                reason: "x",
            },
            "retry_scheduled",
        ),
        (EventKind::BudgetExhausted, "budget_exhausted"),
        (
            EventKind::NotRetried {
                reason: redial::event::NotRetriedReason::Deadline,
            },
            "not_retried",
        ),
        (
            EventKind::Ejected {
                duration: Some(d),
                cause: EjectionCause::Outlier,
                times: 1,
            },
            "ejected",
        ),
        (EventKind::Restored, "restored"),
        (
            EventKind::EjectionSkipped {
                reason: redial::event::SkipReason::PanicGuard,
            },
            "ejection_skipped",
        ),
        (
            changed(PeerState::Idle, PeerState::Connecting),
            "state_changed",
        ),
    ];
    for (kind, name) in cases {
        assert_eq!(kind.name(), name);
    }
}

// ---------------------------------------------------------------------------------------------
// Closing
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn the_stream_closes_when_the_table_and_every_handle_are_gone() {
    let peers = table(None);
    let clone = peers.clone();
    let mut events = peers.subscribe();
    let p = peers.peer("a").unwrap();
    p.record_budget_exhausted();

    drop(peers);
    // A clone and a handle still hold the table: open, and still delivering.
    assert!(events.try_recv().unwrap().is_some());
    assert!(events.try_recv().unwrap().is_none());
    drop(clone);
    p.record_budget_exhausted();
    assert_eq!(
        events.try_recv().unwrap().unwrap().kind,
        EventKind::BudgetExhausted
    );
    assert!(events.try_recv().unwrap().is_none());

    drop(p);
    assert_eq!(events.try_recv().unwrap_err(), RecvError::Closed);
    assert_eq!(events.recv().await.unwrap_err(), RecvError::Closed);
}

#[tokio::test(start_paused = true)]
async fn an_in_flight_attempt_holds_the_stream_open() {
    let peers = table(None);
    let mut events = peers.subscribe();
    let attempt = peers.peer("a").unwrap().try_begin_attempt().unwrap();
    drop(peers);
    all(&mut events);
    // Dropping the attempt cancels it, announced on the still-open stream, then closes it.
    drop(attempt);
    assert_eq!(
        events.try_recv().unwrap().unwrap().kind,
        changed(PeerState::Connecting, PeerState::Idle)
    );
    assert_eq!(events.try_recv().unwrap_err(), RecvError::Closed);
}

#[test]
fn recv_errors_explain_themselves() {
    assert!(RecvError::Lagged(7).to_string().contains('7'));
    assert!(RecvError::Closed.to_string().contains("closed"));
    let e: &dyn std::error::Error = &RecvError::Closed;
    assert!(e.source().is_none());
}
