//! Detecting what the HTTP/1.1 fast path serves: reading a request head with `httparse` into
//! a buffer that lives only until the head is parsed, and deciding whether it is a plain `GET`
//! of a stream route (served here) or anything else (handed to hyper with the bytes read).

use std::io;

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Uri, Version, request};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::request::router::Router;

/// Largest request head served here; a larger one goes to hyper (which allows up to 64 KiB
/// and answers 431 beyond).
const MAX_HEAD: usize = 8 * 1024;
/// The first read's buffer: enough for a stream request with a token and a few cookies.
const FIRST_READ: usize = 2 * 1024;
/// Most request headers parsed here; more goes to hyper.
const MAX_HEADERS: usize = 64;

/// What reading a request head gave.
pub(super) enum Step {
    /// A stream request to serve here (boxed: it is much larger than the other answers).
    Head(Box<Head>),
    /// Something for hyper.
    NotOurs,
    /// The client closed the connection between requests.
    Eof,
}

/// A parsed request for a stream route.
pub(super) struct Head {
    /// Method, URI, version and headers, as the request phases take them.
    pub(super) parts: request::Parts,
    /// Length of the head in the read buffer.
    pub(super) len: usize,
    /// False when the client sent `Connection: close`.
    pub(super) keep_alive: bool,
}

pub(super) async fn read_head<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
    router: &Router,
) -> io::Result<Step> {
    loop {
        if !buf.is_empty() {
            match parse(buf, router) {
                Parse::Partial if buf.len() >= MAX_HEAD => return Ok(Step::NotOurs),
                Parse::Partial => {}
                Parse::Head(head) => return Ok(Step::Head(head)),
                Parse::NotOurs => return Ok(Step::NotOurs),
            }
        }
        buf.reserve(FIRST_READ.min(MAX_HEAD - buf.len()));
        if io.read_buf(buf).await? == 0 {
            return Ok(Step::Eof);
        }
    }
}

/// What the bytes read so far are.
enum Parse {
    /// Not a whole head yet.
    Partial,
    /// A stream request this path serves.
    Head(Box<Head>),
    /// Anything else, including what hyper would reject: hyper answers it.
    NotOurs,
}

/// Parses a request head and decides whether the fast path serves it: a `GET` of a stream
/// route over HTTP/1.1, with no body, no upgrade and no `Expect`, whose headers are all valid.
fn parse(buf: &[u8], router: &Router) -> Parse {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parse::Partial,
        Err(_) => return Parse::NotOurs,
    };
    if request.version != Some(1) || request.method != Some("GET") {
        return Parse::NotOurs;
    }
    let Some(uri) = request
        .path
        .filter(|path| path.starts_with('/'))
        .and_then(|path| Uri::try_from(path).ok())
    else {
        return Parse::NotOurs;
    };
    if !router.is_stream(uri.path()) {
        return Parse::NotOurs;
    }
    let mut map = HeaderMap::with_capacity(request.headers.len());
    let mut keep_alive = true;
    for header in request.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(header.name.as_bytes()),
            HeaderValue::from_bytes(header.value),
        ) else {
            return Parse::NotOurs;
        };
        match name {
            header::TRANSFER_ENCODING | header::UPGRADE | header::EXPECT => return Parse::NotOurs,
            header::CONTENT_LENGTH if value != "0" => return Parse::NotOurs,
            header::CONNECTION if has_token(&value, "close") => keep_alive = false,
            _ => {}
        }
        map.append(name, value);
    }
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = Method::GET;
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    parts.headers = map;
    Parse::Head(Box::new(Head {
        parts,
        len,
        keep_alive,
    }))
}

/// Whether a comma-separated header value lists `token` (case-insensitively).
fn has_token(value: &HeaderValue, token: &str) -> bool {
    value
        .as_bytes()
        .split(|&b| b == b',')
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::StreamConfig;
    use crate::http::path::PathPattern;

    fn router() -> Router {
        let routes = ["/api/v2/stream", "/api/v2/configurations/{id}/stream"]
            .into_iter()
            .enumerate()
            .map(|(index, text)| {
                Arc::new(StreamConfig {
                    index,
                    path: PathPattern::parse(text).expect("pattern"),
                    auth: false,
                    sources: Vec::new(),
                    query: Default::default(),
                    max_keys: 1,
                    events: Default::default(),
                })
            })
            .collect();
        Router::new(routes)
    }

    fn head(text: &str) -> Parse {
        parse(text.as_bytes(), &router())
    }

    #[test]
    fn a_plain_get_of_a_stream_route_is_served_here() {
        let text = "GET /api/v2/configurations/abc/stream?user_token=t HTTP/1.1\r\nHost: x\r\n\
                    Cookie: a=1\r\nCookie: b=2\r\nConnection: keep-alive, Close\r\n\r\nGET /next";
        let Parse::Head(head) = head(text) else {
            panic!("served here");
        };
        assert_eq!(head.parts.uri.path(), "/api/v2/configurations/abc/stream");
        assert_eq!(head.parts.uri.query(), Some("user_token=t"));
        assert_eq!(head.parts.headers.get_all("cookie").iter().count(), 2);
        assert!(!head.keep_alive, "Connection: close is honoured");
        assert_eq!(
            &text[head.len..],
            "GET /next",
            "a pipelined request is left unread"
        );
    }

    #[test]
    fn everything_else_goes_to_hyper() {
        for text in [
            "POST /api/v2/stream HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /api/v2/stream/status HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /api/v2/stream HTTP/1.0\r\n\r\n",
            "GET /api/v2/stream HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            "GET /api/v2/stream HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /api/v2/stream HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            "GET /api/v2/stream HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET http://x/api/v2/stream HTTP/1.1\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET /api/v2/stream HTTP/1.1\r\nBad Header: x\r\n\r\n",
        ] {
            assert!(matches!(head(text), Parse::NotOurs), "{text:?}");
        }
        assert!(matches!(
            head("GET /api/v2/stream HTTP/1.1\r\nHost"),
            Parse::Partial
        ));
        assert!(matches!(
            head("GET /api/v2/stream HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
            Parse::Head(_)
        ));
        // A stream path with a bad parameter is served here too: the request phase answers
        // its 400, the same answer hyper's connections get.
        assert!(matches!(
            head("GET /api/v2/configurations/%2e%2e/stream HTTP/1.1\r\n\r\n"),
            Parse::Head(_)
        ));
    }
}
