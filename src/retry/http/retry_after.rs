//! The `Retry-After` response header: how long the server asks the client to wait.

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use http::header::RETRY_AFTER;

/// The delay a response's `Retry-After` header asks for, if it has a valid one.
///
/// Both forms of [RFC 9110 §10.2.3](https://www.rfc-editor.org/rfc/rfc9110#section-10.2.3) are
/// read: delta-seconds (`Retry-After: 120`) and an HTTP date
/// (`Retry-After: Fri, 31 Dec 1999 23:59:59 GMT`), the latter relative to the system clock
/// (a date already past is [`Duration::ZERO`]: retry now). A value that is neither (empty,
/// negative, fractional, too large for a `u64` of seconds, a malformed date) is ignored:
/// `None`, so the backoff schedule decides. Of several `Retry-After` headers the first counts.
///
/// The value is a hint, not an order: [`RetryLayer`](crate::retry::RetryLayer) clamps it into
/// its backoff's `[initial, max]`, so `Retry-After: 0` still waits `initial` and an absurd
/// `Retry-After: 86400` waits the backoff's `max`.
///
/// ```
/// use std::time::Duration;
/// use http::HeaderMap;
/// use http::header::{HeaderValue, RETRY_AFTER};
/// use redial::retry::http::retry_after;
///
/// let mut headers = HeaderMap::new();
/// assert_eq!(retry_after(&headers), None);
///
/// headers.insert(RETRY_AFTER, HeaderValue::from_static("3"));
/// assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
///
/// headers.insert(RETRY_AFTER, HeaderValue::from_static("Fri, 31 Dec 1999 23:59:59 GMT"));
/// assert_eq!(retry_after(&headers), Some(Duration::ZERO));
///
/// headers.insert(RETRY_AFTER, HeaderValue::from_static("-1"));
/// assert_eq!(retry_after(&headers), None);
/// ```
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    parse(value, SystemTime::now())
}

/// `value` read as delta-seconds or as an HTTP date seen at `now`.
fn parse(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits for a u64 fails here: ignored rather than trusted.
        return value.parse::<u64>().ok().map(Duration::from_secs);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(now: SystemTime, value: &str) -> Option<Duration> {
        parse(value, now)
    }

    #[test]
    fn seconds() {
        let now = SystemTime::now();
        assert_eq!(at(now, "0"), Some(Duration::ZERO));
        assert_eq!(at(now, "1"), Some(Duration::from_secs(1)));
        assert_eq!(at(now, " 120 "), Some(Duration::from_secs(120)));
        assert_eq!(at(now, "007"), Some(Duration::from_secs(7)));
    }

    #[test]
    fn huge_seconds_are_kept_for_the_layer_to_clamp() {
        let now = SystemTime::now();
        let max = u64::MAX.to_string();
        assert_eq!(at(now, &max), Some(Duration::from_secs(u64::MAX)));
    }

    #[test]
    fn malformed_negative_and_overflowing_values_are_ignored() {
        let now = SystemTime::now();
        for value in [
            "",
            "   ",
            "-1",
            "+1",
            "1.5",
            "1e3",
            "soon",
            "3 seconds",
            "18446744073709551616",
            "99999999999999999999999999",
            "Fri, 31 Dec 1999 25:59:59 GMT",
            "Friday, 31-Dec-99",
        ] {
            assert_eq!(at(now, value), None, "{value:?}");
        }
    }

    #[test]
    fn dates_are_relative_to_now() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            at(now, "Sun, 06 Nov 1994 08:50:07 GMT"),
            Some(Duration::from_secs(30))
        );
        // The two obsolete forms RFC 9110 still asks recipients to accept.
        assert_eq!(
            at(now, "Sunday, 06-Nov-94 08:49:47 GMT"),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            at(now, "Sun Nov  6 08:49:57 1994"),
            Some(Duration::from_secs(20))
        );
    }

    #[test]
    fn past_dates_mean_now() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            at(now, "Sun, 06 Nov 1994 08:49:36 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(
            at(now, "Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(
            at(now, "Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn reads_the_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.append(RETRY_AFTER, "5".parse().unwrap());
        headers.append(RETRY_AFTER, "9".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(5)));
        // Not visible ASCII: ignored.
        headers.insert(
            RETRY_AFTER,
            http::HeaderValue::from_bytes(b"\xff1").unwrap(),
        );
        assert_eq!(retry_after(&headers), None);
        // A future date, to the second.
        let later = SystemTime::now() + Duration::from_secs(30);
        headers.insert(RETRY_AFTER, httpdate::fmt_http_date(later).parse().unwrap());
        let delay = retry_after(&headers).unwrap();
        assert!(delay > Duration::from_secs(28) && delay <= Duration::from_secs(30));
    }
}
