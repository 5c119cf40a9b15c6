//! [`HttpClassifier`]: which HTTP outcomes are retried, by status, method and error.

use std::fmt;

use http::{Method, Request, Response, StatusCode};
use tower::BoxError;

use super::retry_after::retry_after;
use crate::retry::{Classify, Decision, classify_error};

/// The statuses retried by default: 408 Request Timeout, 429 Too Many Requests, 502 Bad
/// Gateway, 503 Service Unavailable, 504 Gateway Timeout.
const DEFAULT_STATUSES: [u16; 5] = [408, 429, 502, 503, 504];

/// Marks a request whose method is not idempotent (POST, PATCH, ...) as safe to send again
/// after it may have reached the server: put it in the request's extensions.
///
/// Without it, [`HttpClassifier`] retries such a request only when nothing of it was sent
/// (a failed connect). Use it for requests the server deduplicates, e.g. by an idempotency key.
///
/// ```
/// use redial::retry::http::RetryNonIdempotent;
///
/// let mut request = http::Request::post("http://example.com/orders").body(()).unwrap();
/// request.extensions_mut().insert(RetryNonIdempotent);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RetryNonIdempotent;

/// Classifies HTTP outcomes and replays HTTP requests, for
/// [`RetryBuilder::classifier`](crate::retry::RetryBuilder::classifier).
///
/// | outcome | idempotent request¹ | other request |
/// |---|---|---|
/// | a response whose status is in the set² | `Retry`, with `Retry-After` as the hint | `DontRetry` |
/// | any other response | `DontRetry` | `DontRetry` |
/// | an error sent nothing (a failed connect, the peer in backoff, [`classify_error`] says `Transparent`) | `Transparent` | `Transparent` |
/// | an error after the request may have been sent ([`classify_error`] says `Retry`: a reset, a timeout) | `Retry` | `DontRetry` |
/// | any other error | `DontRetry` | `DontRetry` |
///
/// ¹ GET, HEAD, OPTIONS, PUT, DELETE, TRACE (RFC 9110 §9.2.2), or any request carrying
/// [`RetryNonIdempotent`] in its extensions.
/// ² By default 408, 429, 502, 503 and 504; see [`statuses`](HttpClassifier::statuses).
///
/// The reason of a retried status is its code (`"503"`). The `Retry-After` value is read by
/// [`retry_after`](super::retry_after) and clamped by the layer into its backoff's
/// `[initial, max]`.
///
/// It replays requests whose body is a [`ReplayBody`](super::ReplayBody), or any `Clone`
/// body: see the [module documentation](super).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HttpClassifier {
    statuses: StatusSet,
}

impl HttpClassifier {
    /// Retries 408, 429, 502, 503 and 504 for idempotent requests.
    pub const fn new() -> Self {
        let mut statuses = StatusSet::EMPTY;
        let mut i = 0;
        while i < DEFAULT_STATUSES.len() {
            statuses = statuses.with(DEFAULT_STATUSES[i]);
            i += 1;
        }
        Self { statuses }
    }

    /// Retries exactly these statuses (replacing the set; an empty set retries on errors
    /// only).
    ///
    /// ```
    /// use http::StatusCode;
    /// use redial::retry::http::HttpClassifier;
    ///
    /// let classifier = HttpClassifier::new().statuses([StatusCode::SERVICE_UNAVAILABLE]);
    /// assert!(classifier.retries_status(StatusCode::SERVICE_UNAVAILABLE));
    /// assert!(!classifier.retries_status(StatusCode::TOO_MANY_REQUESTS));
    /// ```
    pub fn statuses(mut self, statuses: impl IntoIterator<Item = StatusCode>) -> Self {
        self.statuses = StatusSet::EMPTY;
        for status in statuses {
            self.statuses = self.statuses.with(status.as_u16());
        }
        self
    }

    /// Also retries `status`.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.statuses = self.statuses.with(status.as_u16());
        self
    }

    /// No longer retries `status`.
    pub fn without_status(mut self, status: StatusCode) -> Self {
        self.statuses = self.statuses.without(status.as_u16());
        self
    }

    /// Whether a response with `status` is retried (for an idempotent request).
    pub fn retries_status(&self, status: StatusCode) -> bool {
        self.statuses.contains(status.as_u16())
    }

    /// Whether `request` may be sent again after it may have reached the server: its method is
    /// idempotent or it carries [`RetryNonIdempotent`].
    pub fn is_repeatable<B>(request: &Request<B>) -> bool {
        is_idempotent(request.method())
            || request.extensions().get::<RetryNonIdempotent>().is_some()
    }
}

impl Default for HttpClassifier {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for HttpClassifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClassifier")
            .field("statuses", &self.statuses)
            .finish()
    }
}

impl<B, RB> Classify<Request<B>, Response<RB>, BoxError> for HttpClassifier {
    fn classify(&self, request: &Request<B>, outcome: &Result<Response<RB>, BoxError>) -> Decision {
        match outcome {
            Ok(response) => {
                let status = response.status();
                if self.retries_status(status) && Self::is_repeatable(request) {
                    Decision::Retry {
                        reason: status_reason(status),
                        after: retry_after(response.headers()),
                    }
                } else {
                    Decision::DontRetry
                }
            }
            Err(error) => match classify_error(error.as_ref()) {
                transparent @ Decision::Transparent { .. } => transparent,
                retry @ Decision::Retry { .. } if Self::is_repeatable(request) => retry,
                _ => Decision::DontRetry,
            },
        }
    }

    /// Errors and `5xx` responses count against the peer, whatever the method.
    fn is_failure(&self, outcome: &Result<Response<RB>, BoxError>) -> bool {
        outcome
            .as_ref()
            .map_or(true, |response| response.status().is_server_error())
    }
}

/// RFC 9110 §9.2.2.
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// The code as a static name, for events and traces: its digits for the 4xx and 5xx codes in
/// use, its class for others.
fn status_reason(status: StatusCode) -> &'static str {
    #[rustfmt::skip]
    const NAMED: [(u16, &str); 36] = [
        (400, "400"), (401, "401"), (403, "403"), (404, "404"), (408, "408"), (409, "409"),
        (410, "410"), (412, "412"), (421, "421"), (423, "423"), (424, "424"), (425, "425"),
        (429, "429"), (500, "500"), (501, "501"), (502, "502"), (503, "503"), (504, "504"),
        (505, "505"), (507, "507"), (508, "508"), (509, "509"), (510, "510"), (511, "511"),
        (520, "520"), (521, "521"), (522, "522"), (523, "523"), (524, "524"), (525, "525"),
        (526, "526"), (527, "527"), (529, "529"), (530, "530"), (598, "598"), (599, "599"),
    ];
    let code = status.as_u16();
    if let Some((_, name)) = NAMED.iter().find(|(named, _)| *named == code) {
        return name;
    }
    match code / 100 {
        1 => "1xx status",
        2 => "2xx status",
        3 => "3xx status",
        4 => "4xx status",
        5 => "5xx status",
        _ => "retryable status",
    }
}

/// A set of status codes (100 to 999, as [`StatusCode`] allows), one bit each.
#[derive(Clone, Copy, PartialEq, Eq)]
struct StatusSet([u64; 16]);

impl StatusSet {
    const EMPTY: Self = Self([0; 16]);

    const fn with(mut self, code: u16) -> Self {
        let (word, bit) = Self::slot(code);
        self.0[word] |= bit;
        self
    }

    const fn without(mut self, code: u16) -> Self {
        let (word, bit) = Self::slot(code);
        self.0[word] &= !bit;
        self
    }

    const fn contains(&self, code: u16) -> bool {
        let (word, bit) = Self::slot(code);
        self.0[word] & bit != 0
    }

    /// The word and bit of `code`; codes are below 1024, so the word is below 16.
    const fn slot(code: u16) -> (usize, u64) {
        let code = code & 1023;
        ((code / 64) as usize, 1 << (code % 64))
    }

    fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (100..1000).filter(|&code| self.contains(code))
    }
}

impl fmt::Debug for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}
