//! Retrying plain async code: [`retry`], [`retry_tracked`] and the [`Retrying`] builder.
//!
//! These run an async closure again when its outcome is worth another try, with the same
//! [`Classify`] decisions, [`Budget`] and peer recording as [`RetryLayer`](super::RetryLayer),
//! for code that is not a tower service (a connect function, a client call, a query).
//!
//! How they differ from the layer: the number of attempts and the time spent retrying come
//! from the [`Backoff`] itself (`max_attempts`, `None` retrying until success, and
//! `max_elapsed`), and there is no request to replay: the closure is simply called again.

use std::fmt::{self, Display};
use std::future::Future;
use std::time::Duration;

use super::budget::Budget;
use super::classify::{Classify, Decision, DefaultClassifier};
use super::record;
use super::track::{NoPeer, TrackPeer};
use crate::backoff::{Backoff, Schedule};
use crate::event::NotRetriedReason;
use crate::peers::{PeerHandle, PeerKey};

/// Free transparent retries per run unless [`Retrying::max_transparent`] says otherwise; the
/// layer's default too.
const DEFAULT_MAX_TRANSPARENT: u32 = 5;
/// The most free transparent retries a run may be given, as in the layer.
const MAX_TRANSPARENT: u32 = 100;

/// Runs `op` until it succeeds or its failure should not be retried, waiting between attempts
/// as `backoff` says, and returns the last outcome.
///
/// Outcomes are classified by [`DefaultClassifier`], so `E` is [`BoxError`](tower::BoxError)
/// or [`std::io::Error`]: a refused connection is retried (transparently, see
/// [`Retrying::max_transparent`]), a reset one is retried, anything else is returned at once.
/// Use [`Retrying`] for another classifier, a budget or a peer to record into.
///
/// The backoff's `max_attempts` bounds the attempts (`None`: until success) and its
/// `max_elapsed` the time from the first failure; its jitter is seeded from its seed, if it has
/// one (every run of a seeded backoff then waits the same delays). Transparent retries come on
/// top of `max_attempts`, as in the layer: even `Backoff::disabled()` retries a refused connect
/// up to 5 times; use [`Retrying::max_transparent`]`(0)` for exactly one attempt.
///
/// ```
/// use std::io;
/// use std::time::Duration;
/// use redial::backoff::{Backoff, Jitter};
/// use redial::retry::retry;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let backoff = Backoff::builder()
///     .initial(Duration::from_millis(100))
///     .jitter(Jitter::None)
///     .max_attempts(5)
///     .build()?;
///
/// let mut calls = 0;
/// let answer = retry(&backoff, || {
///     calls += 1;
///     let n = calls;
///     async move {
///         if n < 3 {
///             Err(io::Error::from(io::ErrorKind::ConnectionReset))
///         } else {
///             Ok(n)
///         }
///     }
/// })
/// .await?;
/// assert_eq!(answer, 3);
/// # Ok(())
/// # }
/// ```
pub async fn retry<F, Fut, T, E>(backoff: &Backoff, op: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Display,
    DefaultClassifier: Classify<(), T, E>,
{
    Retrying::new(backoff).run(op).await
}

/// [`retry`], recording into `peer`'s tracker: a success on `Ok`, a failure for each failed
/// attempt, and for each retry a [`RetryScheduled`](crate::event::EventKind::RetryScheduled)
/// event with the retry's number, delay and reason (plus
/// [`NotRetried`](crate::event::EventKind::NotRetried) when a limit ends the run).
///
/// ```
/// use std::io;
/// use std::time::Duration;
/// use redial::backoff::{Backoff, Jitter};
/// use redial::peers::Peers;
/// use redial::retry::retry_tracked;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let peers: Peers<&'static str> = Peers::new();
/// let db = peers.peer("db")?;
/// let backoff = Backoff::builder().jitter(Jitter::None).max_attempts(3).build()?;
///
/// let mut calls = 0;
/// let rows = retry_tracked(&db, &backoff, || {
///     calls += 1;
///     let first = calls == 1;
///     async move {
///         if first {
///             Err(io::Error::from(io::ErrorKind::ConnectionReset))
///         } else {
///             Ok(vec!["row"])
///         }
///     }
/// })
/// .await?;
/// assert_eq!(rows, ["row"]);
///
/// let seen = db.snapshot();
/// assert_eq!((seen.failures, seen.retries, seen.successes), (1, 1, 1));
/// # Ok(())
/// # }
/// ```
pub async fn retry_tracked<K, F, Fut, T, E>(
    peer: &PeerHandle<K>,
    backoff: &Backoff,
    op: F,
) -> Result<T, E>
where
    K: PeerKey,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Display,
    DefaultClassifier: Classify<(), T, E>,
{
    Retrying::new(backoff).peer(peer.clone()).run(op).await
}

/// Retries plain async code with the layer's parts: a classifier, a [`Budget`], a peer to
/// record into, and a bound on transparent retries.
///
/// | setting | default |
/// |---|---|
/// | backoff | the one given to [`new`](Retrying::new): its delays, jitter, seed, `max_attempts` and `max_elapsed` |
/// | [`classifier`](Retrying::classifier) | [`DefaultClassifier`] |
/// | [`budget`](Retrying::budget) | none: only the backoff's limits apply |
/// | [`peer`](Retrying::peer) / [`track`](Retrying::track) | [`NoPeer`]: decisions go to `tracing` only |
/// | [`max_transparent`](Retrying::max_transparent) | 5 free transparent retries per run |
///
/// The classifier sees `()` as the request (there is none: the closure is called again), so a
/// custom one is a closure `Fn(&(), &Result<T, E>) -> Decision`, or any [`Classify<(), T, E>`].
///
/// ```
/// use std::time::Duration;
/// use redial::backoff::{Backoff, Jitter};
/// use redial::retry::{Budget, Decision, Retrying};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let backoff = Backoff::builder().jitter(Jitter::None).max_attempts(4).build()?;
/// // One budget shared by every run of this client.
/// let budget = Budget::default();
/// let busy = |_: &(), outcome: &Result<u32, String>| match outcome {
///     Err(e) if e == "busy" => Decision::retry("busy"),
///     _ => Decision::DontRetry,
/// };
/// let retrying = Retrying::new(&backoff).classifier(busy).budget(budget);
///
/// let mut calls = 0;
/// let result = retrying
///     .run(|| {
///         calls += 1;
///         let n = calls;
///         async move { if n < 2 { Err("busy".to_string()) } else { Ok(n) } }
///     })
///     .await;
/// assert_eq!(result, Ok(2));
/// # Ok(())
/// # }
/// ```
#[must_use = "a `Retrying` does nothing until `run` is called"]
pub struct Retrying<C = DefaultClassifier, P = NoPeer> {
    backoff: Backoff,
    classifier: C,
    tracking: P,
    budget: Option<Budget>,
    max_transparent: u32,
}

impl Retrying {
    /// Retries with `backoff`'s delays and limits, [`DefaultClassifier`], no budget and no peer.
    ///
    /// ```
    /// use redial::backoff::Backoff;
    /// use redial::retry::Retrying;
    ///
    /// let retrying = Retrying::new(&Backoff::aggressive());
    /// # let _ = retrying;
    /// ```
    pub fn new(backoff: &Backoff) -> Self {
        Self {
            backoff: *backoff,
            classifier: DefaultClassifier,
            tracking: NoPeer,
            budget: None,
            max_transparent: DEFAULT_MAX_TRANSPARENT,
        }
    }
}

impl<C, P> Retrying<C, P> {
    /// Decides which outcomes are retried: any [`Classify<(), T, E>`], such as a closure
    /// `Fn(&(), &Result<T, E>) -> Decision` or, with feature `tonic`, `GrpcClassifier` for
    /// `Result<T, tonic::Status>`.
    ///
    /// ```
    /// use redial::backoff::Backoff;
    /// use redial::retry::{Decision, Retrying};
    ///
    /// // Retries every error.
    /// let retrying = Retrying::new(&Backoff::default())
    ///     .classifier(|_: &(), outcome: &Result<(), String>| match outcome {
    ///         Ok(()) => Decision::DontRetry,
    ///         Err(_) => Decision::retry("error"),
    ///     });
    /// # let _ = retrying;
    /// ```
    pub fn classifier<C2>(self, classifier: C2) -> Retrying<C2, P> {
        Retrying {
            backoff: self.backoff,
            classifier,
            tracking: self.tracking,
            budget: self.budget,
            max_transparent: self.max_transparent,
        }
    }

    /// Records successes, failures, retries, refusals and budget exhaustion in `peer`'s
    /// tracker, and publishes them as its events.
    ///
    /// ```
    /// use redial::backoff::Backoff;
    /// use redial::peers::Peers;
    /// use redial::retry::Retrying;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let peers: Peers<&'static str> = Peers::new();
    /// let retrying = Retrying::new(&Backoff::default()).peer(peers.peer("cache")?);
    /// # let _ = retrying;
    /// # Ok(())
    /// # }
    /// ```
    pub fn peer<K: PeerKey>(self, peer: PeerHandle<K>) -> Retrying<C, PeerHandle<K>> {
        self.track(peer)
    }

    /// Records through any [`TrackPeer<()>`](TrackPeer), such as [`NoPeer`] or a
    /// [`PeerHandle`]. The peer is looked up once per run, when there is something to record.
    ///
    /// ```
    /// use redial::backoff::Backoff;
    /// use redial::retry::{NoPeer, Retrying};
    ///
    /// let retrying = Retrying::new(&Backoff::default()).track(NoPeer);
    /// # let _ = retrying;
    /// ```
    pub fn track<P2>(self, tracking: P2) -> Retrying<C, P2> {
        Retrying {
            backoff: self.backoff,
            classifier: self.classifier,
            tracking,
            budget: self.budget,
            max_transparent: self.max_transparent,
        }
    }

    /// Draws retries from `budget`: each run deposits one, each retry withdraws one, and a
    /// retry the budget refuses ends the run with the last outcome (and a
    /// [`BudgetExhausted`](crate::event::EventKind::BudgetExhausted) event with a peer). Pass
    /// clones of one budget to bound many runs, or a [`RetryLayer`](super::RetryLayer) and
    /// plain code, together.
    ///
    /// ```
    /// use redial::backoff::Backoff;
    /// use redial::retry::{Budget, Retrying};
    ///
    /// let retrying = Retrying::new(&Backoff::default()).budget(Budget::default());
    /// # let _ = retrying;
    /// ```
    pub fn budget(mut self, budget: Budget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Transparent retries a run may make without counting them against the backoff's
    /// `max_attempts` (default 5; values above 100 are taken as 100). These are retries of
    /// attempts that failed before anything was sent ([`Decision::Transparent`]), which are
    /// safe whatever the operation is.
    ///
    /// Once they are used up, further transparent failures are retried as ordinary ones: they
    /// count against `max_attempts`, so a helper retrying "forever" (`max_attempts` unset)
    /// keeps reconnecting to a peer that refuses connections, and a bounded one stops after
    /// `max_attempts - 1 + max_transparent` retries at most. (The layer, whose attempts are
    /// always bounded, stops instead.)
    ///
    /// ```
    /// use redial::backoff::Backoff;
    /// use redial::retry::Retrying;
    ///
    /// // Every transparent retry counts as an ordinary one.
    /// let retrying = Retrying::new(&Backoff::default()).max_transparent(0);
    /// # let _ = retrying;
    /// ```
    pub fn max_transparent(mut self, retries: u32) -> Self {
        self.max_transparent = retries.min(MAX_TRANSPARENT);
        self
    }

    /// Runs `op` until its outcome should not be retried or a limit is reached, and returns
    /// the last outcome.
    ///
    /// Between attempts it sleeps ([`tokio::time::sleep`]) for the backoff's next delay, or for
    /// the server's hint ([`Decision::Retry`]'s `after`) clamped into the backoff's
    /// `[initial, max]`; with `max_elapsed` the last delay is cut to end at the limit. Nothing
    /// is spawned: dropping the future stops the run.
    ///
    /// ```
    /// use std::io;
    /// use redial::backoff::{Backoff, Jitter};
    /// use redial::retry::Retrying;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), redial::ConfigError> {
    /// let backoff = Backoff::builder().jitter(Jitter::None).max_attempts(2).build()?;
    /// let retrying = Retrying::new(&backoff);
    /// let mut calls = 0;
    /// let result: Result<(), io::Error> = retrying
    ///     .run(|| {
    ///         calls += 1;
    ///         async { Err(io::Error::from(io::ErrorKind::TimedOut)) }
    ///     })
    ///     .await;
    /// // Two attempts, then the last error.
    /// assert_eq!(result.map_err(|e| e.kind()), Err(io::ErrorKind::TimedOut));
    /// assert_eq!(calls, 2);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn run<F, Fut, T, E>(&self, mut op: F) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Display,
        C: Classify<(), T, E>,
        P: TrackPeer<()>,
    {
        if let Some(budget) = &self.budget {
            budget.deposit();
        }
        let mut run = Run::new(self);
        loop {
            let outcome = op().await;
            let Some(delay) = run.next(&outcome) else {
                return outcome;
            };
            // Not kept while waiting: a failed outcome may be large, or not `Send`.
            drop(outcome);
            tokio::time::sleep(delay).await;
        }
    }
}

impl<C: fmt::Debug, P: fmt::Debug> fmt::Debug for Retrying<C, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retrying")
            .field("backoff", &self.backoff)
            .field("classifier", &self.classifier)
            .field("tracking", &self.tracking)
            .field("budget", &self.budget)
            .field("max_transparent", &self.max_transparent)
            .finish()
    }
}

/// One run's spending: what it has used of its limits.
struct Run<'a, C, P: TrackPeer<()>> {
    config: &'a Retrying<C, P>,
    /// Retries made, transparent ones included (the number in `RetryScheduled`).
    retries: u32,
    /// Retries that counted against `max_attempts`.
    counted: u32,
    /// Free transparent retries used.
    transparent: u32,
    /// Made at the first retry, so that a run that succeeds at once reads no clock and draws
    /// no seed. Its policy has no attempt limit (attempts are counted here, transparent ones
    /// apart) and keeps `max_elapsed`.
    schedule: Option<Schedule>,
    /// Looked up on first need.
    peer: Option<Option<PeerHandle<P::Key>>>,
}

impl<'a, C, P: TrackPeer<()>> Run<'a, C, P> {
    fn new(config: &'a Retrying<C, P>) -> Self {
        Self {
            config,
            retries: 0,
            counted: 0,
            transparent: 0,
            schedule: None,
            peer: None,
        }
    }

    fn peer(&mut self) -> Option<&PeerHandle<P::Key>> {
        let tracking = &self.config.tracking;
        self.peer
            .get_or_insert_with(|| tracking.peer_of(&()))
            .as_ref()
    }

    /// Classifies `outcome`, records it, and returns the delay before the next attempt if one
    /// is to be made (spending a retry), or `None` to return `outcome`.
    fn next<T, E>(&mut self, outcome: &Result<T, E>) -> Option<Duration>
    where
        E: Display,
        C: Classify<(), T, E>,
    {
        let decision = self.config.classifier.classify(&(), outcome);
        let (reason, hint, transparent) = match decision {
            Decision::DontRetry => {
                if let Some(peer) = self.peer() {
                    match outcome {
                        Ok(_) => peer.record_success(),
                        Err(error) => peer.record_failure(error),
                    }
                }
                return None;
            }
            Decision::Retry { reason, after } => (reason, after, false),
            Decision::Transparent { reason } => (reason, None, true),
        };
        if let Some(peer) = self.peer() {
            match outcome {
                Err(error) => peer.record_failure(error),
                Ok(_) => peer.record_failure(&reason),
            }
        }

        // A transparent failure past the free ones is retried as an ordinary one.
        let free = transparent && self.transparent < self.config.max_transparent;
        let backoff = &self.config.backoff;
        if !free {
            let attempts_left = backoff
                .max_attempts()
                .is_none_or(|max| self.counted.saturating_add(1) < max);
            if !attempts_left {
                return self.not_retried(NotRetriedReason::AttemptsExhausted, reason);
            }
        }

        let schedule = self.schedule.get_or_insert_with(|| {
            // Attempts are counted above; the schedule keeps the time limit only. Rebuilding
            // a valid policy cannot fail; should it, the policy's own limit still bounds the run.
            let policy = backoff
                .to_builder()
                .unlimited_attempts()
                .build()
                .unwrap_or(*backoff);
            policy.schedule()
        });
        // Drawn even when the server gave a hint, so that the schedule keeps growing.
        let Some(drawn) = schedule.next_delay() else {
            return self.not_retried(NotRetriedReason::Deadline, reason);
        };
        let delay = match hint {
            // Cut, like the drawn delay, to end at the time limit.
            Some(hint) => {
                let hint = record::clamp_hint(hint, backoff);
                match (backoff.max_elapsed(), schedule.elapsed()) {
                    (Some(limit), Some(elapsed)) => hint.min(limit.saturating_sub(elapsed)),
                    _ => hint,
                }
            }
            None => drawn,
        };

        if let Some(budget) = &self.config.budget {
            if !record::withdraw(budget, self.peer(), reason) {
                return None;
            }
        }

        self.retries = self.retries.saturating_add(1);
        if free {
            self.transparent += 1;
        } else {
            self.counted = self.counted.saturating_add(1);
        }
        let attempt = self.retries;
        record::retry_scheduled(self.peer(), attempt, delay, reason);
        Some(delay)
    }

    fn not_retried(&mut self, why: NotRetriedReason, reason: &'static str) -> Option<Duration> {
        record::not_retried(self.peer(), why, reason);
        None
    }
}
