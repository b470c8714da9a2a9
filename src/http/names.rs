//! Names in a message's head: whether it carries a header, and whether a `Connection` line
//! lists an option (for both sides of the proxy: the edge's fast path and the origin client).
//!
//! Whether it carries a header is found by looking through its names rather than by a
//! lookup: a lookup hashes the name even when it finds nothing, and the names the proxy asks
//! about on every passthrough request (a request id, cookies, the server banner, an answer's
//! `Connection` and `Transfer-Encoding`) are usually absent. Looking through a head's names
//! compares a tag or a length each, which cost less than the hash: together 530 instructions
//! per request fewer (BENCHMARKS.md, issue 15.1).

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Whether `headers` has a line named `name`.
pub fn carries(headers: &HeaderMap, name: &HeaderName) -> bool {
    headers.keys().any(|carried| carried == name)
}

/// Whether a `Connection` line lists `option` (`close`, `keep-alive`; RFC 9112 §9.6), in any
/// case; read as bytes, so a line with other bytes than visible ASCII is read too.
pub fn lists_option(value: &HeaderValue, option: &str) -> bool {
    value
        .as_bytes()
        .split(|&b| b == b',')
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(option.as_bytes()))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use http::header;

    use super::*;

    #[test]
    fn names_are_found_standard_or_not() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1"));
        headers.append("x-request-id", HeaderValue::from_static("id"));
        headers.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert!(carries(&headers, &header::COOKIE));
        assert!(carries(&headers, &HeaderName::from_static("x-request-id")));
        assert!(!carries(&headers, &header::SERVER));
        assert!(!carries(&headers, &HeaderName::from_static("x-request-ip")));
        assert!(!carries(&HeaderMap::new(), &header::COOKIE));
    }

    #[test]
    fn options_are_found_in_any_case_among_others() {
        let line = |text: &'static [u8]| HeaderValue::from_bytes(text).expect("value");
        assert!(lists_option(&line(b"close"), "close"));
        assert!(lists_option(&line(b"te, Close "), "close"));
        assert!(lists_option(&line(b"\xff, keep-alive"), "keep-alive"));
        assert!(!lists_option(&line(b"closed, x-close"), "close"));
        assert!(!lists_option(&line(b""), "close"));
    }
}
