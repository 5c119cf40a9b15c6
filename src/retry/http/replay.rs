//! How [`HttpClassifier`] copies a request for another attempt.

use http::Request;

use super::body::ReplayBody;
use super::classify::HttpClassifier;
use crate::retry::Replay;

/// A request whose body is a [`ReplayBody`]: the copy has the same method, URI, version,
/// headers and extensions, and a [`replay`](ReplayBody::replay) of the body; `None` once the
/// body cannot be sent again.
impl<B> Replay<Request<ReplayBody<B>>> for HttpClassifier {
    fn replay(&self, request: &Request<ReplayBody<B>>) -> Option<Request<ReplayBody<B>>> {
        let body = request.body().replay()?;
        Some(rebuild(request, body))
    }

    /// Always a copy, even of a body known to be past the cap, so that the outcome is still
    /// classified, counted in the peer and reported as not replayable.
    fn template(&self, request: &Request<ReplayBody<B>>) -> Option<Request<ReplayBody<B>>> {
        Some(rebuild(request, request.body().for_inspection()))
    }
}

/// A request whose body is `Clone` (`Full<Bytes>`, `Empty`, `String`, `()`...): the copy has
/// the same parts and a clone of the body.
impl<B: Clone> Replay<Request<B>> for HttpClassifier {
    fn replay(&self, request: &Request<B>) -> Option<Request<B>> {
        Some(rebuild(request, request.body().clone()))
    }
}

/// `request`'s parts around `body`.
fn rebuild<B, B2>(request: &Request<B>, body: B2) -> Request<B2> {
    let mut copy = Request::new(body);
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    *copy.extensions_mut() = request.extensions().clone();
    copy
}
