//! gRPC retries: which statuses are retried, `grpc-retry-pushback-ms`, and when a call that
//! may have reached the server is sent again.
//!
//! [`GrpcClassifier`] classifies the outcomes of gRPC calls two ways:
//!
//! - as `http::Request` / `http::Response` / [`BoxError`], for a
//!   [`RetryLayer`](super::RetryLayer) around a tonic `Channel` or any gRPC HTTP/2 service;
//! - as `Result<T, tonic::Status>`, for the [helpers](super::Retrying) around a generated
//!   client's call.
//!
//! By default it retries `UNAVAILABLE` only (the code gRPC reserves for "try again"; set others
//! with [`codes`](GrpcClassifier::codes)), honours the server's [`pushback`], and retries any
//! call that failed before it was sent (a refused connect, the peer in backoff).
//!
//! A retry layer over a stand-in for a gRPC server that answers `UNAVAILABLE` once, with a
//! pushback of 300 ms, then succeeds:
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::time::Duration;
//!
//! use http::{Request, Response};
//! use redial::retry::RetryLayer;
//! use redial::retry::grpc::GrpcClassifier;
//! use tower::{BoxError, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let calls = Arc::new(AtomicU32::new(0));
//! let seen = calls.clone();
//! let server = service_fn(move |_: Request<String>| {
//!     let first = seen.fetch_add(1, Ordering::SeqCst) == 0;
//!     async move {
//!         // A trailers-only response: the status is in the headers.
//!         let response = if first {
//!             Response::builder()
//!                 .header("grpc-status", "14")
//!                 .header("grpc-retry-pushback-ms", "300")
//!                 .body(String::new())?
//!         } else {
//!             Response::new("answer".to_string())
//!         };
//!         Ok::<_, BoxError>(response)
//!     }
//! });
//! let client = ServiceBuilder::new()
//!     .layer(RetryLayer::builder().classifier(GrpcClassifier::new()).build()?)
//!     .service(server);
//!
//! let start = tokio::time::Instant::now();
//! let request = Request::post("http://api.test/pkg.Service/Method").body("call".to_string())?;
//! let response = client.oneshot(request).await?;
//! assert_eq!(response.into_body(), "answer");
//! assert_eq!(calls.load(Ordering::SeqCst), 2);
//! assert_eq!(start.elapsed(), Duration::from_millis(300), "as the pushback asked");
//! # Ok(())
//! # }
//! ```
//!
//! # What is safe to send again
//!
//! Every gRPC call is an HTTP POST, so the HTTP rule (retry only idempotent methods) would
//! never retry anything. gRPC's own rules decide instead:
//!
//! - **A status the server sent** (a trailers-only response, or a [`Status`] without a
//!   source) whose code is in the set is retried whatever the method does: gRPC's retry policy
//!   (gRFC A6) retries the codes a service lists regardless of idempotency, and `UNAVAILABLE`,
//!   the only default, is the server saying it did not process the call. Once response
//!   headers without `grpc-status` have arrived, the call is committed and never retried (A6).
//! - **A call that failed before it was sent** ([`classify_error`] says
//!   `Transparent`) is retried, counted apart, like any request.
//! - **A call cut off after it was sent** (a reset connection, a broken pipe, a per-attempt
//!   timeout, or a status the client made up for such a failure: one whose source is a
//!   transport error, which tonic reports as `UNAVAILABLE` or `UNKNOWN`) may have run on the
//!   server: it is **not** retried, unless the call is marked safe to repeat, by
//!   [`RetryNonIdempotent`] in the request's extensions or by
//!   [`idempotent`](GrpcClassifier::idempotent) for every call of the classifier. A client
//!   status of a code in the set is then retried too.
//! - A response that is not gRPC (no `grpc-status`, an HTTP error status from a proxy) stands
//!   for the code gRPC maps it to (503 → `UNAVAILABLE`, ...) and is retried only if that code
//!   is in the set and the call is marked safe to repeat: a proxy's 502 or 504 does not say
//!   whether the server ran the call.
//!
//! Requests are replayed by [`HttpClassifier`]'s rules: a body
//! that is a [`ReplayBody`](super::http::ReplayBody) or is `Clone`.

mod codes;
mod pushback;

use std::error::Error;
use std::fmt;

use http::{Request, Response, StatusCode};
use tonic::{Code, Status};
use tower::BoxError;

use self::codes::CodeSet;
pub use self::pushback::{PUSHBACK_HEADER, pushback};
use super::http::{HttpClassifier, RetryNonIdempotent};
use super::{Classify, Decision, Replay, classify_error};

/// Classifies gRPC outcomes by status code, honouring `grpc-retry-pushback-ms`, and replays gRPC
/// requests; see the [module documentation](self) for what it retries and why.
///
/// | outcome | any call | call marked safe to repeat¹ |
/// |---|---|---|
/// | `grpc-status` from the server, code in the set² | `Retry`, with [`pushback`] as the hint | `Retry` |
/// | `grpc-status` from the server, other code | `DontRetry` | `DontRetry` |
/// | response headers without `grpc-status`, HTTP 200 | `DontRetry` (committed) | `DontRetry` |
/// | response without `grpc-status`, HTTP error mapped to a code in the set | `DontRetry` | `Retry` |
/// | an error that sent nothing ([`classify_error`] says `Transparent`) | `Transparent` | `Transparent` |
/// | an error after sending ([`classify_error`] says `Retry`), or a client-made status in the set | `DontRetry` | `Retry` |
/// | any other error | `DontRetry` | `DontRetry` |
///
/// ¹ A request carrying [`RetryNonIdempotent`] in its extensions, or every call when
/// [`idempotent`](GrpcClassifier::idempotent) is set (the only way for `Result<T, Status>`,
/// which has no request to look at).
/// ² `UNAVAILABLE` by default; see [`codes`](GrpcClassifier::codes).
///
/// The reason of a retry is the code's canonical name (`"UNAVAILABLE"`), or
/// [`classify_error`]'s for a transport error.
///
/// ```
/// use redial::retry::grpc::GrpcClassifier;
/// use redial::retry::{Classify, Decision};
/// use tonic::{Code, Status};
///
/// let classifier = GrpcClassifier::new();
/// let unavailable: Result<(), Status> = Err(Status::unavailable("draining"));
/// assert_eq!(classifier.classify(&(), &unavailable), Decision::retry("UNAVAILABLE"));
/// let not_found: Result<(), Status> = Err(Status::not_found("no such row"));
/// assert_eq!(classifier.classify(&(), &not_found), Decision::DontRetry);
///
/// let busy = classifier.with_code(Code::ResourceExhausted);
/// let exhausted: Result<(), Status> = Err(Status::resource_exhausted("slow down"));
/// assert_eq!(busy.classify(&(), &exhausted), Decision::retry("RESOURCE_EXHAUSTED"));
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct GrpcClassifier {
    codes: CodeSet,
    idempotent: bool,
}

impl GrpcClassifier {
    /// Retries `UNAVAILABLE` statuses, and calls that failed before they were sent.
    ///
    /// ```
    /// use redial::retry::grpc::GrpcClassifier;
    /// use tonic::Code;
    ///
    /// let classifier = GrpcClassifier::new();
    /// assert!(classifier.retries_code(Code::Unavailable));
    /// assert!(!classifier.retries_code(Code::Internal));
    /// ```
    pub const fn new() -> Self {
        Self {
            codes: CodeSet::EMPTY.with(Code::Unavailable),
            idempotent: false,
        }
    }

    /// Retries exactly these codes (replacing the set; an empty set retries only calls that
    /// failed before they were sent, and, if marked safe to repeat, transport failures).
    /// `Ok` is never retried, even if listed.
    ///
    /// ```
    /// use redial::retry::grpc::GrpcClassifier;
    /// use tonic::Code;
    ///
    /// let classifier = GrpcClassifier::new().codes([Code::Unavailable, Code::ResourceExhausted]);
    /// assert!(classifier.retries_code(Code::ResourceExhausted));
    /// ```
    pub fn codes(mut self, codes: impl IntoIterator<Item = Code>) -> Self {
        self.codes = codes.into_iter().fold(CodeSet::EMPTY, CodeSet::with);
        self
    }

    /// Also retries `code`.
    ///
    /// ```
    /// use redial::retry::grpc::GrpcClassifier;
    /// use tonic::Code;
    ///
    /// let classifier = GrpcClassifier::new().with_code(Code::Aborted);
    /// assert!(classifier.retries_code(Code::Aborted) && classifier.retries_code(Code::Unavailable));
    /// ```
    pub const fn with_code(mut self, code: Code) -> Self {
        self.codes = self.codes.with(code);
        self
    }

    /// No longer retries `code`.
    ///
    /// ```
    /// use redial::retry::grpc::GrpcClassifier;
    /// use tonic::Code;
    ///
    /// let classifier = GrpcClassifier::new().without_code(Code::Unavailable);
    /// assert!(!classifier.retries_code(Code::Unavailable));
    /// ```
    pub const fn without_code(mut self, code: Code) -> Self {
        self.codes = self.codes.without(code);
        self
    }

    /// Whether a status with `code` from the server is retried.
    ///
    /// ```
    /// use redial::retry::grpc::GrpcClassifier;
    /// use tonic::Code;
    ///
    /// assert!(!GrpcClassifier::new().with_code(Code::Ok).retries_code(Code::Ok));
    /// ```
    pub const fn retries_code(&self, code: Code) -> bool {
        !matches!(code, Code::Ok) && self.codes.contains(code)
    }

    /// Marks every call classified by this classifier as safe to repeat (`false` by default):
    /// a call cut off after it was sent (a reset connection, a timeout) is then retried too.
    /// For a layer, [`RetryNonIdempotent`] in a request's extensions does the same for that
    /// request alone.
    ///
    /// ```
    /// use std::io;
    /// use redial::retry::grpc::GrpcClassifier;
    /// use redial::retry::{Classify, Decision};
    /// use tonic::Status;
    ///
    /// // What tonic reports for a connection reset mid-call: a status with the cause as source.
    /// let reset = || -> Result<(), Status> {
    ///     Err(Status::from_error(Box::new(io::Error::from(io::ErrorKind::ConnectionReset))))
    /// };
    /// assert_eq!(GrpcClassifier::new().classify(&(), &reset()), Decision::DontRetry);
    /// assert_eq!(
    ///     GrpcClassifier::new().idempotent(true).classify(&(), &reset()),
    ///     Decision::retry("connection reset")
    /// );
    /// ```
    pub const fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }

    /// Whether every call is taken as safe to repeat; see
    /// [`idempotent`](GrpcClassifier::idempotent).
    ///
    /// ```
    /// use redial::retry::grpc::GrpcClassifier;
    ///
    /// assert!(!GrpcClassifier::new().is_idempotent());
    /// ```
    pub const fn is_idempotent(&self) -> bool {
        self.idempotent
    }

    /// Whether `request` may be sent again after it may have reached the server: the
    /// classifier is [`idempotent`](GrpcClassifier::idempotent) or the request carries
    /// [`RetryNonIdempotent`].
    ///
    /// ```
    /// use redial::retry::grpc::GrpcClassifier;
    /// use redial::retry::http::RetryNonIdempotent;
    ///
    /// # fn main() -> Result<(), http::Error> {
    /// let mut request = http::Request::post("http://api.test/pkg.Svc/Get").body(())?;
    /// assert!(!GrpcClassifier::new().is_repeatable(&request));
    /// request.extensions_mut().insert(RetryNonIdempotent);
    /// assert!(GrpcClassifier::new().is_repeatable(&request));
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_repeatable<B>(&self, request: &Request<B>) -> bool {
        self.idempotent || request.extensions().get::<RetryNonIdempotent>().is_some()
    }

    /// The decision for `status`, for a call that is safe to repeat or not: the building block
    /// of the `Classify` impls, for a classifier of one's own that adds cases first.
    ///
    /// A status without a [`source`](Error::source) came from the server and is retried by
    /// its code, with its metadata's [`pushback`]. One with a source was made by the client for
    /// a transport failure: `Transparent` if [`classify_error`] finds that nothing was sent,
    /// else retried only if `repeatable`.
    ///
    /// ```
    /// use std::io;
    /// use redial::retry::Decision;
    /// use redial::retry::grpc::GrpcClassifier;
    /// use tonic::Status;
    ///
    /// let refused = Status::from_error(Box::new(io::Error::from(io::ErrorKind::ConnectionRefused)));
    /// assert_eq!(
    ///     GrpcClassifier::new().classify_status(&refused, false),
    ///     Decision::transparent("connection refused")
    /// );
    /// ```
    pub fn classify_status(&self, status: &Status, repeatable: bool) -> Decision {
        let Some(source) = status.source() else {
            return self.by_code(status.code(), status.metadata().as_ref());
        };
        match classify_error(source) {
            transparent @ Decision::Transparent { .. } => transparent,
            _ if !repeatable => Decision::DontRetry,
            retry @ Decision::Retry { .. } => retry,
            Decision::DontRetry if self.retries_code(status.code()) => {
                Decision::retry(codes::name(status.code()))
            }
            Decision::DontRetry => Decision::DontRetry,
        }
    }

    /// `Retry` for a code in the set, with the pushback in `headers`.
    fn by_code(&self, code: Code, headers: &http::HeaderMap) -> Decision {
        if self.retries_code(code) {
            Decision::Retry {
                reason: codes::name(code),
                after: pushback(headers),
            }
        } else {
            Decision::DontRetry
        }
    }

    /// An error of a layer's inner service (a tonic `Channel`'s transport error, a status a
    /// tower layer returned, redial's own errors).
    fn classify_box_error(&self, error: &(dyn Error + 'static), repeatable: bool) -> Decision {
        let decision = classify_error(error);
        if let Decision::Transparent { .. } = decision {
            return decision;
        }
        if let Some(status) = find_status(error) {
            return self.classify_status(status, repeatable);
        }
        match decision {
            Decision::Retry { .. } if repeatable => decision,
            _ => Decision::DontRetry,
        }
    }
}

impl Default for GrpcClassifier {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for GrpcClassifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcClassifier")
            .field("codes", &self.codes)
            .field("idempotent", &self.idempotent)
            .finish()
    }
}

impl<B, RB> Classify<Request<B>, Response<RB>, BoxError> for GrpcClassifier {
    fn classify(&self, request: &Request<B>, outcome: &Result<Response<RB>, BoxError>) -> Decision {
        match outcome {
            Ok(response) => {
                let headers = response.headers();
                if let Some(value) = headers.get(Status::GRPC_STATUS) {
                    // A trailers-only response: the call ended with this status.
                    return self.by_code(Code::from_bytes(value.as_bytes()), headers);
                }
                if response.status() == StatusCode::OK || !self.is_repeatable(request) {
                    // Response headers arrived: the call is committed (or it is not gRPC and
                    // says nothing of whether the server ran it).
                    return Decision::DontRetry;
                }
                self.by_code(codes::from_http(response.status()), headers)
            }
            Err(error) => self.classify_box_error(error.as_ref(), self.is_repeatable(request)),
        }
    }

    /// Errors count against the peer, and so do responses that end the call (trailers-only)
    /// or carry a non-`200` HTTP status with a code that blames the server: `UNAVAILABLE`,
    /// `INTERNAL`, `UNKNOWN`, `DATA_LOSS`, `DEADLINE_EXCEEDED`. A status sent in trailers after
    /// a streamed body is past the point where the layer sees the call.
    fn is_failure(&self, outcome: &Result<Response<RB>, BoxError>) -> bool {
        let Ok(response) = outcome else {
            return true;
        };
        let code = match response.headers().get(Status::GRPC_STATUS) {
            Some(value) => Code::from_bytes(value.as_bytes()),
            None if response.status() == StatusCode::OK => return false,
            None => codes::from_http(response.status()),
        };
        blames_server(code)
    }
}

/// Codes that say the server (not the request) failed, for health.
fn blames_server(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::Internal
            | Code::Unknown
            | Code::DataLoss
            | Code::DeadlineExceeded
    )
}

/// For `Result<T, Status>`, as generated clients return: with the
/// [helpers](super::Retrying), whose request is `()`. A call is safe to repeat only if the
/// classifier is [`idempotent`](GrpcClassifier::idempotent).
///
/// ```
/// use std::time::Duration;
/// use redial::backoff::{Backoff, Jitter};
/// use redial::retry::Retrying;
/// use redial::retry::grpc::GrpcClassifier;
/// use tonic::Status;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let backoff = Backoff::builder().jitter(Jitter::None).max_attempts(3).build()?;
/// let retrying = Retrying::new(&backoff).classifier(GrpcClassifier::new());
///
/// let mut calls = 0;
/// let reply = retrying
///     .run(|| {
///         calls += 1;
///         let first = calls == 1;
///         // Stands for `client.get(request).await`.
///         async move {
///             if first { Err(Status::unavailable("restarting")) } else { Ok("reply") }
///         }
///     })
///     .await?;
/// assert_eq!(reply, "reply");
/// # Ok(())
/// # }
/// ```
impl<Req, Res> Classify<Req, Res, Status> for GrpcClassifier {
    fn classify(&self, _request: &Req, outcome: &Result<Res, Status>) -> Decision {
        match outcome {
            Ok(_) => Decision::DontRetry,
            Err(status) => self.classify_status(status, self.idempotent),
        }
    }

    fn is_failure(&self, outcome: &Result<Res, Status>) -> bool {
        outcome
            .as_ref()
            .err()
            .is_some_and(|status| blames_server(status.code()))
    }
}

/// Copies requests as [`HttpClassifier`] does: a [`ReplayBody`](super::http::ReplayBody) body
/// by its replay (`None` past its cap, though the outcome is still classified and reported), a
/// `Clone` body by cloning.
impl<Req> Replay<Req> for GrpcClassifier
where
    HttpClassifier: Replay<Req>,
{
    fn replay(&self, request: &Req) -> Option<Req> {
        HttpClassifier::new().replay(request)
    }

    fn template(&self, request: &Req) -> Option<Req> {
        HttpClassifier::new().template(request)
    }
}

/// The first [`Status`] in `error`'s source chain.
fn find_status<'a>(error: &'a (dyn Error + 'static)) -> Option<&'a Status> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(status) = error.downcast_ref::<Status>() {
            return Some(status);
        }
        next = error.source();
    }
    None
}
