//! Which call errors mean "this connection is gone".

use std::error::Error;
use std::fmt;
use std::io;
use std::sync::Arc;

/// Decides whether an error returned by a call means the connection is broken, so that the
/// next `poll_ready` drops it and reconnects. Errors it rejects are counted as request failures
/// and the connection is kept.
///
/// The default is [`is_connection_lost`]. Build your own from a closure with
/// [`BrokenConnection::new`], usually falling back to the default:
///
/// ```
/// use redial::reconnect::{BrokenConnection, is_connection_lost};
///
/// let classifier = BrokenConnection::new(|error| {
///     error.to_string().contains("GOAWAY") || is_connection_lost(error)
/// });
/// # let _ = classifier;
/// ```
#[derive(Clone)]
pub struct BrokenConnection(Arc<IsBroken>);

type IsBroken = dyn Fn(&(dyn Error + 'static)) -> bool + Send + Sync;

impl BrokenConnection {
    /// A classifier from a function of the error.
    pub fn new<F>(is_broken: F) -> Self
    where
        F: Fn(&(dyn Error + 'static)) -> bool + Send + Sync + 'static,
    {
        Self(Arc::new(is_broken))
    }

    /// Whether `error` means the connection is gone.
    pub fn is_broken(&self, error: &(dyn Error + 'static)) -> bool {
        (self.0)(error)
    }
}

impl Default for BrokenConnection {
    fn default() -> Self {
        Self::new(is_connection_lost)
    }
}

impl fmt::Debug for BrokenConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BrokenConnection(..)")
    }
}

/// The default classifier: true when `error`, or any error in its `source()` chain, is an
/// `io::Error` of a kind that ends a connection (reset, aborted, broken pipe, not connected,
/// unexpected end of file), or, with feature `hyper`, a `hyper::Error` saying the connection
/// closed, was canceled, cut a message short, or timed out (an HTTP/2 keep-alive ping that
/// went unanswered, after which hyper has closed the connection).
pub fn is_connection_lost(error: &(dyn Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(io) = error.downcast_ref::<io::Error>() {
            if matches!(
                io.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::NotConnected
                    | io::ErrorKind::UnexpectedEof
            ) {
                return true;
            }
        }
        #[cfg(feature = "hyper")]
        if let Some(hyper) = error.downcast_ref::<hyper::Error>() {
            // On a client, hyper's only timeout is HTTP/2's keep-alive: the ping went
            // unanswered and hyper has already closed the connection.
            if hyper.is_closed()
                || hyper.is_canceled()
                || hyper.is_incomplete_message()
                || hyper.is_timeout()
            {
                return true;
            }
        }
        next = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(io::Error);

    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("request failed")
        }
    }

    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn finds_a_lost_connection_anywhere_in_the_source_chain() {
        let reset = Wrapper(io::Error::from(io::ErrorKind::ConnectionReset));
        assert!(is_connection_lost(&reset));
        let denied = Wrapper(io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(!is_connection_lost(&denied));
        assert!(!is_connection_lost(&io::Error::other("bad request")));
    }
}
