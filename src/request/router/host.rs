//! The host a request is for: every HTTP/1.1 request names it in exactly one valid `Host`
//! line (RFC 9112 §3.2), an HTTP/2 one in `:authority` or `Host`, which then agree (RFC 9113
//! §8.3.1). Hyper accepts a request that breaks these rules, and the fast path parses heads
//! with the same `httparse`, so both reach this one check through [`super::Router::route`].
//!
//! A request that gets past it names one host; [`target_host`] says which, with the request
//! target's authority (absolute form, `:authority`) winning over `Host` (RFC 9112 §3.2.2).

use std::net::Ipv6Addr;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Uri, Version};

/// Why a request's host is unacceptable; each is a 400.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// An HTTP/1.1 request without `Host`, or an HTTP/2 one without `:authority` or `Host`.
    #[error("the request has no Host header (RFC 9112 §3.2)")]
    Missing,
    /// More than one `Host` line: which one the origin would see is anyone's guess.
    #[error("the request has more than one Host header (RFC 9112 §3.2)")]
    Repeated,
    /// A `Host` or target authority that is not `host[:port]` (RFC 9110 §7.2, RFC 3986 §3.2).
    #[error("the request's Host is not a valid host[:port] (RFC 9112 §3.2)")]
    Invalid,
    /// An HTTP/2 request whose `Host` names another host than its `:authority`.
    #[error("the request's Host differs from its :authority (RFC 9113 §8.3.1)")]
    Mismatch,
}

/// Checks the host rules for a request of `version` with this target and these headers.
pub(super) fn check(version: Version, uri: &Uri, headers: &HeaderMap) -> Result<(), HostError> {
    let mut lines = headers.get_all(header::HOST).iter();
    let host = lines.next();
    if lines.next().is_some() {
        return Err(HostError::Repeated);
    }
    if host.is_some_and(|value| !valid(value.as_bytes())) {
        return Err(HostError::Invalid);
    }
    let authority = uri.authority();
    if authority.is_some_and(|a| !valid(a.as_str().as_bytes())) {
        return Err(HostError::Invalid);
    }
    match (version, host, authority) {
        // HTTP/1.1 needs `Host` even with an absolute-form target, whose authority then wins.
        (Version::HTTP_11, None, _) => Err(HostError::Missing),
        (Version::HTTP_2, None, None) => Err(HostError::Missing),
        (Version::HTTP_2, Some(host), Some(authority))
            if !host
                .as_bytes()
                .eq_ignore_ascii_case(authority.as_str().as_bytes()) =>
        {
            Err(HostError::Mismatch)
        }
        _ => Ok(()),
    }
}

/// The host a checked request is for: its target's authority when it has one (absolute
/// form, HTTP/2 `:authority`), which wins over `Host` (RFC 9112 §3.2.2), else `Host`.
pub fn target_host(uri: &Uri, headers: &HeaderMap) -> Option<HeaderValue> {
    match uri.authority() {
        Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
        None => headers.get(header::HOST).cloned(),
    }
}

/// Whether `value` is `uri-host [ ":" port ]` (RFC 9110 §7.2) with a non-empty host (RFC 9110
/// §4.2.1: an `http` URI's host is never empty): a bracketed IPv6 literal, or a reg-name or
/// IPv4 address of unreserved, sub-delim and percent-encoded characters; no user info.
fn valid(value: &[u8]) -> bool {
    let (host_ok, rest) = match value.strip_prefix(b"[") {
        Some(literal) => match literal.iter().position(|&b| b == b']') {
            Some(end) => (
                std::str::from_utf8(&literal[..end]).is_ok_and(|s| s.parse::<Ipv6Addr>().is_ok()),
                &literal[end + 1..],
            ),
            None => return false,
        },
        None => {
            let end = value.iter().position(|&b| b == b':').unwrap_or(value.len());
            (end > 0 && reg_name(&value[..end]), &value[end..])
        }
    };
    host_ok
        && match rest.split_first() {
            None => true,
            Some((b':', port)) => {
                port.len() <= 5
                    && port.iter().all(u8::is_ascii_digit)
                    && port.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')) <= 65_535
            }
            Some(_) => false,
        }
}

/// Whether `name` is a reg-name (RFC 3986 §3.2.2), which also covers IPv4 addresses.
fn reg_name(name: &[u8]) -> bool {
    let mut i = 0;
    while i < name.len() {
        match name[i] {
            b'%' => {
                let hex = name.get(i + 1..i + 3);
                if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                    return false;
                }
                i += 3;
            }
            // Matched, not searched for in a list: every request's host comes here.
            b'-' | b'.' | b'_' | b'~' | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+'
            | b',' | b';' | b'=' => i += 1,
            b if b.is_ascii_alphanumeric() => i += 1,
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(hosts: &[&'static str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for host in hosts {
            map.append(header::HOST, HeaderValue::from_static(host));
        }
        map
    }

    fn h1(target: &str, hosts: &[&'static str]) -> Result<(), HostError> {
        check(
            Version::HTTP_11,
            &target.parse().expect("uri"),
            &headers(hosts),
        )
    }

    #[test]
    fn host_values() {
        for good in [
            "example.com",
            "example.com:8443",
            "127.0.0.1",
            "127.0.0.1:80",
            "[::1]",
            "[2001:db8::1]:443",
            "xn--bcher-kva.example",
            "a%2Db",
            "host:",
        ] {
            assert!(valid(good.as_bytes()), "{good}");
        }
        for bad in [
            "",
            ":80",
            "user@example.com",
            "example.com:80:80",
            "example.com:99999",
            "example.com:8x",
            "exa mple.com",
            "example.com/",
            "[::1",
            "[not-v6]",
            "[::1]x",
            "a%2",
            "a%zz",
            "ex\u{e9}mple",
        ] {
            assert!(!valid(bad.as_bytes()), "{bad:?}");
        }
    }

    #[test]
    fn http_1_1_needs_exactly_one_valid_host() {
        assert_eq!(h1("/", &["x.example"]), Ok(()));
        assert_eq!(h1("/", &[]), Err(HostError::Missing));
        assert_eq!(h1("/", &["a", "b"]), Err(HostError::Repeated));
        assert_eq!(h1("/", &["a", "a"]), Err(HostError::Repeated));
        assert_eq!(h1("/", &["a b"]), Err(HostError::Invalid));
        // Absolute form: Host is still required, and the target's authority must be valid too.
        assert_eq!(h1("http://t.example/", &["x.example"]), Ok(()));
        assert_eq!(h1("http://t.example/", &[]), Err(HostError::Missing));
        assert_eq!(
            h1("http://u@t.example/", &["x.example"]),
            Err(HostError::Invalid)
        );
        // HTTP/1.0 predates Host.
        assert_eq!(
            check(Version::HTTP_10, &"/".parse().expect("uri"), &headers(&[])),
            Ok(())
        );
    }

    #[test]
    fn http_2_needs_an_authority_that_host_agrees_with() {
        let h2 = |target: &str, hosts: &[&'static str]| {
            check(
                Version::HTTP_2,
                &target.parse().expect("uri"),
                &headers(hosts),
            )
        };
        assert_eq!(h2("https://a.example/", &[]), Ok(()));
        assert_eq!(h2("/", &["a.example"]), Ok(()));
        assert_eq!(h2("/", &[]), Err(HostError::Missing));
        assert_eq!(h2("https://a.example/", &["A.example"]), Ok(()));
        assert_eq!(
            h2("https://a.example/", &["b.example"]),
            Err(HostError::Mismatch)
        );
    }

    #[test]
    fn the_target_authority_wins_over_host() {
        let map = headers(&["x.example"]);
        let absolute: Uri = "http://t.example:81/p".parse().expect("uri");
        assert_eq!(
            target_host(&absolute, &map),
            Some(HeaderValue::from_static("t.example:81"))
        );
        let origin_form: Uri = "/p".parse().expect("uri");
        assert_eq!(
            target_host(&origin_form, &map),
            Some(HeaderValue::from_static("x.example"))
        );
    }
}
