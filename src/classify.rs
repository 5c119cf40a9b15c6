//! Classifying outcomes: the one question every layer asks of a response or an error.
//!
//! The retry layer asks whether to try again ([`Decision`]); the health layer asks whether the
//! peer failed ([`Classify::is_failure`]). Both are answered by one [`Classify`] type, so a
//! classifier written once (or one of redial's: the retry module's default, HTTP and gRPC
//! classifiers) serves the whole stack.

use std::time::Duration;

/// What to do after one attempt.
///
/// The reason is a short stable name (`"503"`, `"connection refused"`, `"unavailable"`): it is
/// what [`RetryScheduled`](crate::event::EventKind::RetryScheduled) events and traces carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Done: hand the outcome to the caller. Successes, and failures that another attempt
    /// would not fix or that would not be safe to repeat.
    DontRetry,
    /// The request may have reached the server and failed in a way another attempt may fix.
    /// Counts against `max_attempts` and the budget.
    Retry {
        /// Why, as a short stable name.
        reason: &'static str,
        /// The server's own delay hint (`Retry-After`, `grpc-retry-pushback-ms`), if it gave
        /// one. It replaces the backoff's next delay, clamped into the schedule's
        /// `[initial, max]`.
        after: Option<Duration>,
    },
    /// The request failed before any byte of it left the process (the connect failed, the
    /// peer is in backoff, redial failed fast), so repeating it is safe whatever it is. The
    /// first `max_transparent` are not counted in `max_attempts`; later ones are. All draw on
    /// the budget.
    Transparent {
        /// Why, as a short stable name.
        reason: &'static str,
    },
}

impl Decision {
    /// `Retry` with no server hint.
    pub const fn retry(reason: &'static str) -> Self {
        Decision::Retry {
            reason,
            after: None,
        }
    }

    /// `Transparent` for `reason`.
    pub const fn transparent(reason: &'static str) -> Self {
        Decision::Transparent { reason }
    }

    /// The reason, unless this is `DontRetry`.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            Decision::DontRetry => None,
            Decision::Retry { reason, .. } | Decision::Transparent { reason } => Some(reason),
        }
    }
}

/// Classifies the outcome of one attempt of `request`: for the retry layer, whether to try
/// again ([`classify`](Classify::classify)); for the health layer, whether the peer failed
/// ([`is_failure`](Classify::is_failure)). One type answers both, so the classifier that
/// decides retries (say [`HttpClassifier`](crate::retry::http::HttpClassifier)) also decides
/// what ejects a peer.
///
/// Errors arrive as [`BoxError`](tower::BoxError) in the retry layer (it adds its own, such as a per-attempt
/// timeout), so classifiers downcast. Any `Fn(&Req, &Result<Res, E>) -> Decision` is a
/// classifier, which makes a custom one a closure that falls back to a provided one (give it
/// to the layer through [`classify_fn`](crate::retry::classify_fn), which adds replay by cloning):
///
/// ```
/// use redial::classify::{Classify, Decision};
/// use redial::retry::DefaultClassifier;
/// use tower::BoxError;
///
/// let classifier = |request: &u32, outcome: &Result<String, BoxError>| match outcome {
///     Ok(body) if body == "busy" => Decision::retry("busy"),
///     _ => DefaultClassifier.classify(request, outcome),
/// };
/// assert_eq!(classifier.classify(&1, &Ok("busy".into())), Decision::retry("busy"));
/// ```
pub trait Classify<Req, Res, E> {
    /// The decision for `outcome`, the result of sending `request` once.
    fn classify(&self, request: &Req, outcome: &Result<Res, E>) -> Decision;

    /// Whether `outcome` counts against the peer's health. Unlike a retry decision it does not
    /// depend on the request (a failed POST is a failure even though it is not retried), so
    /// the health layer does not have to keep requests. By default every error is a failure
    /// and every response a success; classifiers that look at responses (status codes) say
    /// more.
    fn is_failure(&self, outcome: &Result<Res, E>) -> bool {
        outcome.is_err()
    }
}

impl<F, Req, Res, E> Classify<Req, Res, E> for F
where
    F: Fn(&Req, &Result<Res, E>) -> Decision,
{
    fn classify(&self, request: &Req, outcome: &Result<Res, E>) -> Decision {
        self(request, outcome)
    }
}

/// The plainest classifier: every error is a failure and every response a success, and
/// nothing is retried. The health layer's default; a layer that needs to look at responses (a
/// 503 as a failure) takes a richer classifier, such as the retry module's.
///
/// ```
/// use redial::classify::{Classify, Decision, ErrorsFail};
///
/// let outcome: Result<u32, &str> = Err("reset");
/// assert_eq!(ErrorsFail.classify(&"GET /", &outcome), Decision::DontRetry);
/// // `is_failure` does not look at the request, so name the request type to call it alone.
/// assert!(<ErrorsFail as Classify<&str, _, _>>::is_failure(&ErrorsFail, &outcome));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorsFail;

impl<Req, Res, E> Classify<Req, Res, E> for ErrorsFail {
    fn classify(&self, _request: &Req, _outcome: &Result<Res, E>) -> Decision {
        Decision::DontRetry
    }
}
