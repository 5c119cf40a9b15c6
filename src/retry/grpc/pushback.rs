//! The `grpc-retry-pushback-ms` header: how long the server asks the client to wait.

use std::time::Duration;

use http::HeaderMap;

/// The name of gRPC's pushback header (gRFC A6): the server's delay before a retry, in
/// milliseconds.
pub const PUSHBACK_HEADER: &str = "grpc-retry-pushback-ms";

/// The delay a response's (or a [`Status`](tonic::Status)'s metadata's)
/// `grpc-retry-pushback-ms` asks for, if it has a valid one.
///
/// The value is a non-negative decimal number of milliseconds. Anything else (empty, negative,
/// fractional, signed, not ASCII, too large for a `u64` of milliseconds) is ignored: `None`,
/// and the backoff schedule decides. Of several such headers the first counts.
///
/// gRFC A6 reads a negative or malformed pushback as the server asking the client not to retry
/// at all; redial does not trust a value it cannot read, in either direction, and falls back
/// to its own schedule, as it does for `Retry-After`. A valid value is a hint that the retry
/// layer and helpers clamp into their backoff's `[initial, max]`: `0` still waits `initial`,
/// a day waits `max`.
///
/// ```
/// use std::time::Duration;
/// use http::HeaderMap;
/// use http::header::HeaderValue;
/// use redial::retry::grpc::{PUSHBACK_HEADER, pushback};
///
/// let mut headers = HeaderMap::new();
/// assert_eq!(pushback(&headers), None);
///
/// headers.insert(PUSHBACK_HEADER, HeaderValue::from_static("250"));
/// assert_eq!(pushback(&headers), Some(Duration::from_millis(250)));
///
/// headers.insert(PUSHBACK_HEADER, HeaderValue::from_static("-1"));
/// assert_eq!(pushback(&headers), None);
/// ```
pub fn pushback(headers: &HeaderMap) -> Option<Duration> {
    parse(headers.get(PUSHBACK_HEADER)?.to_str().ok()?)
}

fn parse(value: &str) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Too many digits for a u64 fails here: ignored rather than trusted.
    value.parse::<u64>().ok().map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values() {
        assert_eq!(parse("0"), Some(Duration::ZERO));
        assert_eq!(parse(" 1500 "), Some(Duration::from_millis(1500)));
        assert_eq!(parse("007"), Some(Duration::from_millis(7)));
        assert_eq!(
            parse(&u64::MAX.to_string()),
            Some(Duration::from_millis(u64::MAX))
        );
    }

    #[test]
    fn malformed_values_are_ignored() {
        for value in ["", " ", "-1", "+5", "1.5", "1e3", "10ms", "0x10", "١٢"] {
            assert_eq!(parse(value), None, "{value:?}");
        }
        assert_eq!(parse("18446744073709551616"), None, "u64::MAX + 1");
    }
}
