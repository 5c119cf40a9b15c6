//! The future of a [`Retry`](super::Retry) call: attempts, delays and readiness in turn.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};
use tower::{BoxError, Service};

use super::attempts::{Attempts, Next, attempt_deadline};
use super::builder::Config;
use super::classify::{Classify, Replay};
use super::error::{AttemptTimedOut, DeadlineExceeded};
use super::track::TrackPeer;

pin_project! {
    /// Resolves to the response of the last attempt made, or to its error as a
    /// [`BoxError`]. Dropping it drops the attempt in flight.
    pub struct ResponseFuture<S, Req, P, T>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S::Future>,
        // One timer for whatever bounds the current state: the attempt's timeout or the call's
        // deadline while calling, the end of the delay while waiting, the deadline while
        // polling readiness. Made on first need: a call without limits never touches a timer.
        #[pin]
        timer: Option<Sleep>,
        timer_at: Option<Instant>,
        // The clone that makes the retries; polled ready before each.
        service: S,
        // What the last attempt sent, for the classifier and the next copy.
        request: Option<Req>,
        // The copy the next attempt sends, while waiting and polling.
        next: Option<Req>,
        attempts: Attempts,
        config: Arc<Config<P, T>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Calling { #[pin] future: F },
        Waiting,
        Polling,
    }
}

impl<S, Req, P, T> ResponseFuture<S, Req, P, T>
where
    S: Service<Req>,
{
    pub(crate) fn new(
        future: S::Future,
        service: S,
        request: Option<Req>,
        config: Arc<Config<P, T>>,
        attempts: Attempts,
        attempt_ends: Option<Instant>,
    ) -> Self {
        Self {
            state: State::Calling { future },
            timer: None,
            timer_at: attempt_ends,
            service,
            request,
            next: None,
            attempts,
            config,
        }
    }
}

impl<S, Req, P, T> Future for ResponseFuture<S, Req, P, T>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    P: Classify<Req, S::Response, BoxError> + Replay<Req>,
    T: TrackPeer<Req>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { future } => {
                    let outcome = match future.poll(cx) {
                        Poll::Ready(outcome) => outcome.map_err(Into::into),
                        Poll::Pending => {
                            ready!(poll_timer(this.timer.as_mut(), *this.timer_at, cx));
                            if is_past_deadline(this.attempts) {
                                let passed = deadline_passed(this.attempts, this.config);
                                return Poll::Ready(Err(passed.into()));
                            }
                            let after = this.config.attempt_timeout.unwrap_or_default();
                            Err(AttemptTimedOut { after }.into())
                        }
                    };
                    let Some(request) = this.request.as_ref() else {
                        return Poll::Ready(outcome);
                    };
                    match this.attempts.next(this.config, request, &outcome) {
                        Next::Done => return Poll::Ready(outcome),
                        Next::Retry { request, at } => {
                            *this.next = Some(request);
                            *this.timer_at = Some(at);
                            this.state.set(State::Waiting);
                        }
                    }
                }
                StateProj::Waiting => {
                    ready!(poll_timer(this.timer.as_mut(), *this.timer_at, cx));
                    *this.timer_at = this.attempts.deadline;
                    this.state.set(State::Polling);
                }
                StateProj::Polling => {
                    let ready = match this.service.poll_ready(cx) {
                        Poll::Ready(Ok(())) => true,
                        Poll::Ready(Err(error)) => return Poll::Ready(Err(error.into())),
                        Poll::Pending => false,
                    };
                    // Ready or not, a retry never starts past the deadline: the caller would
                    // see a failure while the server may act on the request. (Dropping the
                    // readied clone releases whatever its `poll_ready` reserved.)
                    let past = is_past_deadline(this.attempts);
                    if !ready || past {
                        if !past {
                            // Only the deadline's timer is armed here.
                            ready!(poll_timer(this.timer.as_mut(), *this.timer_at, cx));
                        }
                        let mut passed = deadline_passed(this.attempts, this.config);
                        // The retry that was waiting for readiness never started.
                        passed.attempts = passed.attempts.saturating_sub(1);
                        return Poll::Ready(Err(passed.into()));
                    }
                    let Some(request) = this.next.take() else {
                        // `Waiting` is entered only with the next request set.
                        return Poll::Ready(Err("redial bug: a retry lost its request".into()));
                    };
                    let future = this.service.call(request);
                    *this.timer_at = attempt_deadline(
                        Instant::now(),
                        this.config.attempt_timeout,
                        this.attempts.deadline,
                    );
                    this.state.set(State::Calling { future });
                }
            }
        }
    }
}

/// Polls the timer for `at`, making or moving it first; `Pending` forever when nothing is due.
fn poll_timer(
    mut timer: Pin<&mut Option<Sleep>>,
    at: Option<Instant>,
    cx: &mut Context<'_>,
) -> Poll<()> {
    let Some(at) = at else {
        return Poll::Pending;
    };
    match timer.as_mut().as_pin_mut() {
        Some(sleep) if sleep.deadline() == at => {}
        Some(sleep) => sleep.reset(at),
        None => timer.set(Some(sleep_until(at))),
    }
    match timer.as_pin_mut() {
        Some(sleep) => sleep.poll(cx),
        None => Poll::Pending,
    }
}

/// The call's deadline error.
fn deadline_passed<P, T>(attempts: &Attempts, config: &Config<P, T>) -> DeadlineExceeded {
    DeadlineExceeded {
        deadline: config.deadline.unwrap_or_default(),
        attempts: attempts.started(),
    }
}

/// Whether the timer that fired while an attempt was in flight was the call's deadline (else
/// it was the attempt's own timeout).
fn is_past_deadline(attempts: &Attempts) -> bool {
    attempts.deadline.is_some_and(|d| Instant::now() >= d)
}

impl<S, Req, P, T> fmt::Debug for ResponseFuture<S, Req, P, T>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Calling { .. } => "calling",
            State::Waiting => "waiting",
            State::Polling => "polling",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}
