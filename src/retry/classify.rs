//! Retry's classifiers: replay, the default classifier, and closures as classifiers.

use std::error::Error;
use std::io;

use tower::BoxError;

pub use crate::classify::{Classify, Decision};
use crate::health::is_refusal;
use crate::reconnect::{ConnectTimeout, Unavailable};

/// A classifier from a closure, for requests that are replayed by cloning them: what
/// [`RetryBuilder::classifier`](super::RetryBuilder::classifier) needs when the decision is
/// yours but the request is a plain `Clone` value. (A bare closure only classifies; the layer
/// also needs to [`Replay`] the request.)
///
/// ```
/// use redial::retry::{Decision, DefaultClassifier, Classify, RetryLayer, classify_fn};
/// use tower::BoxError;
///
/// # fn main() -> Result<(), redial::ConfigError> {
/// let layer = RetryLayer::builder()
///     .classifier(classify_fn(|request: &u32, outcome: &Result<String, BoxError>| {
///         match outcome {
///             Ok(body) if body == "busy" => Decision::retry("busy"),
///             _ => DefaultClassifier.classify(request, outcome),
///         }
///     }))
///     .build()?;
/// # let _ = layer;
/// # Ok(())
/// # }
/// ```
pub fn classify_fn<F>(classify: F) -> ClassifyFn<F> {
    ClassifyFn(classify)
}

/// A closure as a classifier of `Clone` requests; see [`classify_fn`].
#[derive(Clone, Copy)]
pub struct ClassifyFn<F>(F);

impl<F> std::fmt::Debug for ClassifyFn<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClassifyFn(..)")
    }
}

impl<F, Req, Res, E> Classify<Req, Res, E> for ClassifyFn<F>
where
    F: Fn(&Req, &Result<Res, E>) -> Decision,
{
    fn classify(&self, request: &Req, outcome: &Result<Res, E>) -> Decision {
        (self.0)(request, outcome)
    }
}

impl<F, Req: Clone> Replay<Req> for ClassifyFn<F> {
    fn replay(&self, request: &Req) -> Option<Req> {
        Some(request.clone())
    }
}

/// Makes the copy of a request that the next attempt sends.
///
/// `None` means this request cannot be sent again (its body was streamed past the replay cap,
/// say): the layer then returns the outcome it has, and emits
/// [`NotRetried`](crate::event::EventKind::NotRetried) if a retry was wanted.
pub trait Replay<Req> {
    /// A copy of `request` for another attempt, if it can be sent again.
    fn replay(&self, request: &Req) -> Option<Req>;

    /// The copy the layer keeps of each request before sending it: outcomes are classified
    /// against it and retries are [`replay`](Replay::replay)ed from it; it is never sent
    /// itself. `None` means the outcome cannot even be classified (nor recorded in the peer),
    /// so override this when a request that can never be sent again can still be looked at,
    /// as the HTTP classifier does for a body known to be larger than its replay cap.
    fn template(&self, request: &Req) -> Option<Req> {
        self.replay(request)
    }
}

/// The classifier for requests that are plain values: any `Clone` request is replayed by
/// cloning it, and errors are classified by what they say about the network.
///
/// On `Ok` it never retries. On an error it walks the `source()` chain:
///
/// | found | decision |
/// |---|---|
/// | redial's [`Unavailable`] (failing fast, peer down) or [`ConnectTimeout`] | `Transparent` |
/// | redial's [`Ejected`](crate::health::Ejected) (the health layer refused the call: the peer is ejected) | `Transparent` |
/// | redial's [`NoHealthyPeers`](crate::health::balance::NoHealthyPeers) (a balanced stack failed fast) | `Transparent` |
/// | `io::Error` `ConnectionRefused`, `AddrNotAvailable` | `Transparent` |
/// | (feature `hyper`) a hyper-util client error whose `is_connect()` is true | `Transparent` |
/// | `io::Error` `NotConnected`, `ConnectionReset`, `ConnectionAborted`, `BrokenPipe`, `UnexpectedEof`, `TimedOut` | `Retry` |
/// | (feature `hyper`) a `hyper::Error` for an incomplete message (the connection closed mid-request) | `Retry` |
/// | (feature `hyper`) a `hyper::Error` whose `is_timeout()` is true (an HTTP/2 keep-alive ping went unanswered and the connection was closed mid-request) | `Retry` |
/// | redial's [`AttemptTimedOut`](super::AttemptTimedOut), tower's timeout `Elapsed` (a `TimeoutLayer` below the retry) | `Retry` |
/// | anything else, redial's `Exhausted` included (the peer's policy gave up) | `DontRetry` |
///
/// `Retry` repeats a request that may have been executed: use this classifier for requests
/// that are safe to repeat, or write one that looks at the request (the `http` feature's
/// [`HttpClassifier`](super::http::HttpClassifier) does, by method).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DefaultClassifier;

impl<Req, Res> Classify<Req, Res, BoxError> for DefaultClassifier {
    fn classify(&self, _request: &Req, outcome: &Result<Res, BoxError>) -> Decision {
        match outcome {
            Ok(_) => Decision::DontRetry,
            Err(error) => classify_error(error.as_ref()),
        }
    }
}

impl<Req, Res> Classify<Req, Res, io::Error> for DefaultClassifier {
    fn classify(&self, _request: &Req, outcome: &Result<Res, io::Error>) -> Decision {
        match outcome {
            Ok(_) => Decision::DontRetry,
            Err(error) => classify_error(error),
        }
    }
}

impl<Req: Clone> Replay<Req> for DefaultClassifier {
    fn replay(&self, request: &Req) -> Option<Req> {
        Some(request.clone())
    }
}

/// The default classification of an error, for classifiers that add their own cases first.
pub fn classify_error(error: &(dyn Error + 'static)) -> Decision {
    let mut next = Some(error);
    while let Some(error) = next {
        if error.is::<Unavailable>() {
            return Decision::transparent("unavailable");
        }
        if error.is::<ConnectTimeout>() {
            return Decision::transparent("connect timeout");
        }
        if is_refusal(error) {
            // The health layer refused the call: nothing was sent. Under a balancer the retry
            // goes to another peer.
            return Decision::transparent("ejected");
        }
        if error.is::<crate::health::balance::NoHealthyPeers>() {
            // The balanced stack failed fast: nothing was sent; a retry after the backoff may
            // find a peer back.
            return Decision::transparent("no healthy peers");
        }
        if error.is::<super::AttemptTimedOut>() || error.is::<tower::timeout::error::Elapsed>() {
            return Decision::retry("attempt timeout");
        }
        if let Some(io) = error.downcast_ref::<io::Error>() {
            if let Some(decision) = classify_io(io.kind()) {
                return decision;
            }
        }
        #[cfg(feature = "hyper")]
        if let Some(client) = error.downcast_ref::<hyper_util::client::legacy::Error>() {
            // The legacy client knows when its connector failed: nothing was written.
            if client.is_connect() {
                return Decision::transparent("connect error");
            }
        }
        #[cfg(feature = "hyper")]
        if let Some(hyper) = error.downcast_ref::<hyper::Error>() {
            // A pooled connection the server closed just as the request went out: the commonest
            // safe HTTP/1 retry, and hyper reports it without an io error underneath.
            if hyper.is_incomplete_message() {
                return Decision::retry("incomplete message");
            }
            // A client's only timeout in hyper is HTTP/2's keep-alive: a ping went unanswered
            // and the connection was closed under the request, which may have been executed.
            // An `io::Error` of kind `TimedOut` is retried the same way.
            if hyper.is_timeout() {
                return Decision::retry("keep-alive timeout");
            }
        }
        next = error.source();
    }
    Decision::DontRetry
}

fn classify_io(kind: io::ErrorKind) -> Option<Decision> {
    use io::ErrorKind::*;
    Some(match kind {
        ConnectionRefused => Decision::transparent("connection refused"),
        AddrNotAvailable => Decision::transparent("address not available"),
        // Not connected may come from a write after bytes left: only maybe sent.
        NotConnected => Decision::retry("not connected"),
        ConnectionReset => Decision::retry("connection reset"),
        ConnectionAborted => Decision::retry("connection aborted"),
        BrokenPipe => Decision::retry("broken pipe"),
        UnexpectedEof => Decision::retry("unexpected eof"),
        TimedOut => Decision::retry("timed out"),
        _ => return None,
    })
}
