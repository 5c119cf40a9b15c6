//! Which peer a connect target belongs to.

use crate::peers::PeerKey;

/// Maps a connect target to the key of its peer in [`Peers`](crate::peers::Peers), so that every
/// connection to the same peer shares one tracker and one backoff schedule.
///
/// Implemented by [`FixedKey`] (every target is the same peer: the fallback for targets that
/// cannot be looked into, such as reqwest's `Unnameable`), by [`UriKey`] with feature `http`,
/// and by any `Fn(&T) -> K` closure:
///
/// ```
/// use std::net::SocketAddr;
/// use redial::reconnect::connector::TargetKey;
///
/// let by_address = |addr: &SocketAddr| *addr;
/// let addr: SocketAddr = "127.0.0.1:80".parse().unwrap();
/// assert_eq!(by_address.key(&addr), addr);
/// ```
pub trait TargetKey<T> {
    /// The peer key.
    type Key: PeerKey;

    /// The key of the peer `target` connects to.
    fn key(&self, target: &T) -> Self::Key;
}

impl<T, K, F> TargetKey<T> for F
where
    F: Fn(&T) -> K,
    K: PeerKey,
{
    type Key = K;

    fn key(&self, target: &T) -> K {
        self(target)
    }
}

/// Every target is the same peer, `K`. Use it when the target cannot be looked into.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FixedKey<K>(pub K);

impl<T, K: PeerKey> TargetKey<T> for FixedKey<K> {
    type Key = K;

    fn key(&self, _: &T) -> K {
        self.0.clone()
    }
}

/// Keys an `http::Uri` target by its scheme and authority, e.g. `"http://example.com:8080"`: two
/// URIs that differ only in path or query reach the same peer. A URI without a scheme is taken
/// as `http`; one without an authority keys as the empty authority.
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct UriKey;

#[cfg(feature = "http")]
impl TargetKey<http::Uri> for UriKey {
    type Key = String;

    fn key(&self, uri: &http::Uri) -> String {
        let scheme = uri.scheme_str().unwrap_or("http");
        let authority = uri.authority().map_or("", |a| a.as_str());
        let mut key = String::with_capacity(scheme.len() + 3 + authority.len());
        key.push_str(scheme);
        key.push_str("://");
        key.push_str(authority);
        key
    }
}

#[cfg(all(test, feature = "http"))]
mod tests {
    use super::*;

    #[test]
    fn uri_keys_by_scheme_and_authority_only() {
        let a: http::Uri = "http://example.com:8080/a?x=1".parse().unwrap();
        let b: http::Uri = "http://example.com:8080/b".parse().unwrap();
        let c: http::Uri = "https://example.com:8080/a".parse().unwrap();
        assert_eq!(UriKey.key(&a), "http://example.com:8080");
        assert_eq!(UriKey.key(&a), UriKey.key(&b));
        assert_ne!(UriKey.key(&a), UriKey.key(&c));
    }
}
