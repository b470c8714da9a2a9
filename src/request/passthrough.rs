//! Passthrough: every request that is not a stream route goes to the upstream as is.
//!
//! Method, path, query, headers and body are forwarded, and the answer comes back; both
//! bodies stream frame by frame, never buffered whole. Hop-by-hop headers (RFC 9110 §7.6.1)
//! are dropped both ways, `Host` becomes the origin's (a Lambda Function URL or API Gateway
//! routes on it), and the client's address, scheme and host travel in `X-Forwarded-*` and
//! `Forwarded`, as [`Forwarding`] decides.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Version};

use super::ConnInfo;
use super::body::ProxyBody;
use super::error::ProxyError;
use super::forwarding::Forwarding;
use super::router::target_host;
use crate::http::names::carries;
use crate::http::trace::REQUEST_ID;
use crate::origin::{ClientBody, Upstream};

/// `Host`, stated on every forwarded request (a static: stated names are references).
static HOST: HeaderName = header::HOST;

/// Forwards one request and returns the origin's streaming answer; the origin is told
/// `request_id` in `X-Request-Id`, whatever the client sent in it. Any client-sent copy of
/// `identity_header` is dropped: on polls that header is the proxy's statement of the
/// validated user, and a client must not be able to make the same statement through
/// passthrough (nor, in `_` spelling, any other the proxy makes: [`remove_lookalikes`]).
///
/// The request is changed where the caller keeps it (a copy per level of futures made every
/// request's future larger), and the caller reads nothing more from it: on return it may
/// have been changed for the origin, or emptied when one of hyper's origin connections took
/// it.
pub async fn forward(
    upstream: &Upstream,
    request: &mut Request<ClientBody>,
    conn: &ConnInfo,
    request_id: &HeaderValue,
    identity_header: &HeaderName,
    forwarding: &Forwarding,
) -> Result<Response<ProxyBody>, ProxyError> {
    let uri = upstream.uri_for(request.uri().path_and_query())?;
    let client_host = target_host(request.uri(), request.headers());

    let headers = request.headers_mut();
    strip_hop_by_hop(headers);
    remove_lookalikes(headers, identity_header);
    join_cookies(headers);
    // What the proxy states, each replacing the client's lines of its name, written by the
    // origin client beside the request's own headers (`origin::Stated`).
    let values = forwarding.request(headers, conn, client_host);
    let [
        x_forwarded_for,
        forwarded,
        x_real_ip,
        x_forwarded_proto,
        x_forwarded_host,
    ] = values.stated();
    let stated = [
        x_forwarded_for,
        forwarded,
        x_real_ip,
        x_forwarded_proto,
        x_forwarded_host,
        (&REQUEST_ID, Some(request_id.as_bytes())),
        // The origin's own host, not the client's: a Lambda Function URL or API Gateway
        // routes on it.
        (&HOST, None),
    ];

    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    let response = upstream.send(request, &stated).await?;
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    forwarding.response(&mut parts.headers);
    Ok(Response::from_parts(parts, ProxyBody::Upstream(body)))
}

/// Headers whose `_` spellings (`X_Real_IP`) are dropped from every client request besides
/// the identity header's: what only the proxy states (the client's address, scheme and host,
/// the request id) and what frames a message. CGI-style origins (WSGI, PHP, some nginx
/// setups) read `X_Y` and `X-Y` as the same variable, so such a spelling would let a client
/// state the proxy's facts, or frame its request for an origin that takes it as framing (the
/// next client's request on the pooled connection then being read as this one's body).
static GUARDED: [HeaderName; 10] = [
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-real-ip"),
    HeaderName::from_static("x-request-id"),
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHORIZATION,
];

/// Removes every client copy of the identity header, and every spelling with `_` for `-` of
/// it or of a [`GUARDED`] header (`X_Edge_User`, `Transfer_Encoding`).
fn remove_lookalikes(headers: &mut HeaderMap, identity_header: &HeaderName) {
    // One pass over the names before anything is removed: a client rarely sends any of
    // these, and a removal hashes the name even when it finds nothing.
    let mut identity = false;
    let lookalikes: Vec<HeaderName> = headers
        .keys()
        .filter(|&name| {
            identity |= name == identity_header;
            let name = name.as_str().as_bytes();
            name.contains(&b'_')
                && std::iter::once(identity_header)
                    .chain(&GUARDED)
                    .any(|guarded| same_but_underscores(name, guarded.as_str().as_bytes()))
        })
        .cloned()
        .collect();
    if identity {
        headers.remove(identity_header);
    }
    for name in lookalikes {
        headers.remove(name);
    }
}

/// Whether `name` is `guarded` with some `-` written as `_` (both lowercase).
fn same_but_underscores(name: &[u8], guarded: &[u8]) -> bool {
    name.len() == guarded.len()
        && name
            .iter()
            .zip(guarded)
            .all(|(&a, &b)| a == b || (a == b'_' && b == b'-'))
}

/// HTTP/2 clients send each cookie as its own field; an HTTP/1.1 origin expects one
/// `Cookie` header (RFC 9113 §8.2.3), so they are joined with `; `.
fn join_cookies(headers: &mut HeaderMap) {
    if !carries(headers, &header::COOKIE) || headers.get_all(header::COOKIE).iter().count() < 2 {
        return;
    }
    let joined: Vec<&[u8]> = headers
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    if let Ok(value) = HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
        headers.insert(header::COOKIE, value);
    }
}

/// Removes hop-by-hop headers, including any the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names first: most messages carry none of these, and each removal
    // hashes its name (16 lookups per request, both ways, for nothing).
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .chain(headers.keys().filter(|name| is_hop_by_hop(name)).cloned())
        .collect();
    for name in named {
        headers.remove(name);
    }
}

/// Whether `name` describes one connection, not the message (RFC 9110 §7.6.1, and the
/// `Keep-Alive`, `Proxy-Connection` and `Proxy-Authorization` of older practice). Told by its
/// text: every name of every message is asked, and a search of an array of names compared
/// each of them in turn (a const array was also built and dropped again for each name asked,
/// 160 instructions per request).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-authorization"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn underscore_spellings_of_what_the_proxy_states_are_removed_and_others_kept() {
        let identity = HeaderName::from_static("x-edge-user");
        let mut headers = HeaderMap::new();
        for name in [
            "x-edge-user",
            "x_edge_user",
            "x-edge_user",
            "x_real_ip",
            "x_forwarded_for",
            "transfer_encoding",
            "content_length",
            "x_custom_flag",
            "x-real-ip",
        ] {
            headers.insert(HeaderName::from_static(name), HeaderValue::from_static("1"));
        }
        remove_lookalikes(&mut headers, &identity);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        // The dash spelling of a forwarding header is `Forwarding`'s to replace.
        assert_eq!(left, ["x-real-ip", "x_custom_flag"]);
    }

    #[test]
    fn split_cookies_are_joined() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1"));
        headers.append(header::COOKIE, HeaderValue::from_static("b=2"));
        join_cookies(&mut headers);
        assert_eq!(headers.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(headers[header::COOKIE], "a=1; b=2");
    }

    #[test]
    fn hop_by_hop_headers_and_connection_listed_ones_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        headers.insert("x-secret-hop", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key(header::CONTENT_TYPE));

        // Each one alone is noticed and removed.
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "proxy-authorization",
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(name, HeaderValue::from_static("1"));
            headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
            strip_hop_by_hop(&mut headers);
            assert_eq!(
                headers.keys().collect::<Vec<_>>(),
                [header::ACCEPT],
                "{name}"
            );
        }
        for kept in [
            "content-length",
            "te-x",
            "connections",
            "upgrade-insecure-requests",
        ] {
            assert!(!is_hop_by_hop(&HeaderName::from_static(kept)), "{kept}");
        }
    }
}
