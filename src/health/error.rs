//! The errors of a [`Health`](super::Health) service: a call refused because its peer is
//! ejected, or the inner service's own error.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use tokio::time::Instant;
use tower::BoxError;

use crate::peers::EjectionCause;

/// The peer is out of use, so the call failed at once without reaching the inner service.
/// Nothing was sent: the request is safe to send again, to another peer now or to this one
/// once it is back (redial's retry classifiers treat it as a transparent retry).
///
/// Made without allocating: the peer's name is shared with the layer that made the error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ejected {
    pub(crate) peer: Arc<str>,
    pub(crate) cause: EjectionCause,
    pub(crate) retry_at: Option<Instant>,
}

impl Ejected {
    /// The peer, as its key prints with `{:?}`.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Who ejected the peer: passive health (an outlier), an active check, or a manual
    /// override.
    pub fn cause(&self) -> EjectionCause {
        self.cause
    }

    /// When the ejection's time is over and a probe request may test the peer again, for an
    /// outlier ejection still running. `None` when that time is not known: a probe is testing
    /// the peer right now, or the ejection lasts until an active check or a manual override
    /// ends it.
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }
}

impl fmt::Display for Ejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let peer = &self.peer;
        match (self.cause, self.retry_at) {
            (EjectionCause::Outlier, Some(at)) => write!(
                f,
                "peer {peer} is ejected after too many failures and was not called; it may be \
                 probed again in {:?}: send the request to another peer, or retry after that",
                at.saturating_duration_since(Instant::now())
            ),
            (EjectionCause::Outlier, None) => write!(
                f,
                "peer {peer} is ejected after too many failures and was not called; a probe \
                 request is testing it now: send the request to another peer, or retry shortly"
            ),
            (EjectionCause::Check, _) => write!(
                f,
                "peer {peer} is ejected by its active health check and was not called; send the \
                 request to another peer, or retry once the check passes"
            ),
            (EjectionCause::Manual, _) => write!(
                f,
                "peer {peer} is forced out of use by hand (Override::Open) and was not called; \
                 send the request to another peer, or set its override back to Automatic"
            ),
        }
    }
}

impl Error for Ejected {}

/// The error of a [`Health`](super::Health) service.
///
/// A concrete type rather than a [`BoxError`], so that refusing a call to an ejected peer
/// allocates nothing. It is `Send + Sync + 'static`, so layers above box it as they box any
/// error. A refusal displays as the [`Ejected`] it carries and has no source. An inner failure
/// displays as "the peer's service failed" with the inner error as its
/// [`source`](Error::source) (said once, so that printing the chain does not repeat it), so
/// classifiers that walk the `source()` chain (as redial's retry classifiers do) find the inner
/// error one step down.
///
/// ```
/// use redial::health::HealthError;
/// use tower::BoxError;
///
/// fn explain(error: &BoxError) -> &'static str {
///     match error.downcast_ref::<HealthError>() {
///         Some(HealthError::Ejected(_)) => "not sent: the peer is ejected",
///         Some(HealthError::Inner(_)) => "the peer failed",
///         _ => "something else",
///     }
/// }
/// # let _ = explain;
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum HealthError {
    /// The peer is ejected; the inner service was neither polled nor called.
    Ejected(Ejected),
    /// The inner service failed, in `poll_ready` or in the call.
    Inner(BoxError),
}

impl HealthError {
    /// The refusal, if the call was refused because the peer is ejected.
    pub fn ejected(&self) -> Option<&Ejected> {
        match self {
            HealthError::Ejected(ejected) => Some(ejected),
            HealthError::Inner(_) => None,
        }
    }

    /// Whether the call was refused because the peer is ejected (nothing was sent).
    pub fn is_ejected(&self) -> bool {
        matches!(self, HealthError::Ejected(_))
    }

    /// The inner service's error, boxed; the [`Ejected`] refusal, boxed, otherwise.
    pub fn into_inner(self) -> BoxError {
        match self {
            HealthError::Ejected(ejected) => Box::new(ejected),
            HealthError::Inner(error) => error,
        }
    }
}

impl fmt::Display for HealthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HealthError::Ejected(ejected) => ejected.fmt(f),
            HealthError::Inner(_) => f.write_str("the peer's service failed"),
        }
    }
}

impl Error for HealthError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            HealthError::Ejected(_) => None,
            HealthError::Inner(error) => Some(&**error),
        }
    }
}

/// Whether `error` is a health layer's refusal, bare or in its [`HealthError`]: the call was
/// not sent.
pub(crate) fn is_refusal(error: &(dyn Error + 'static)) -> bool {
    error.is::<Ejected>()
        || error
            .downcast_ref::<HealthError>()
            .is_some_and(HealthError::is_ejected)
}

impl From<Ejected> for HealthError {
    fn from(ejected: Ejected) -> Self {
        HealthError::Ejected(ejected)
    }
}
