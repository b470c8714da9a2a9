//! The access log: one line per request, written when its response body ends (or the client
//! goes away), so it can say how many bytes were sent and how long the whole answer took: for
//! an event stream, that is the stream's life.
//!
//! The line is built only when it will be written ([`wanted`]): with the `access` target
//! filtered out (`RUST_LOG=warn`), a request costs no record (four allocations and a box).
//!
//! Never logged: the query string (it may carry a token, `user_token`) and any header other
//! than `User-Agent`; the path and the user agent are each cut to 256 characters.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, Method, Request, Version, header};

use super::ConnInfo;

/// Longest path written to the access log.
const MAX_LOGGED_PATH: usize = 256;
/// Longest user agent written to the access log.
const MAX_LOGGED_USER_AGENT: usize = 256;

/// What the access log line says about one request; it writes the line when dropped.
///
/// Its strings are boxed slices, not `String`s: an event stream holds this for its whole life.
pub struct AccessLog {
    /// When the request's head had been read.
    started: Instant,
    /// Milliseconds from [`AccessLog::started`] to the response head.
    head_ms: u64,
    /// The request method.
    method: Method,
    /// HTTP/1.1 or HTTP/2, for telling clients apart.
    version: Version,
    /// The path, cut to [`MAX_LOGGED_PATH`]; never the query.
    path: Box<str>,
    /// The request's id (kept from the client or generated), to join with origin logs.
    request_id: Box<str>,
    /// The client's `User-Agent`, cut to [`MAX_LOGGED_USER_AGENT`] (`-` when absent).
    user_agent: Box<str>,
    /// The client's address.
    client: SocketAddr,
    /// Whether the client came over TLS.
    tls: bool,
    /// `stream`, `passthrough` or `rejected`; `unanswered` (with status 0) when the request
    /// ended before its answer: the client left, or shutdown's grace period ran out.
    route: &'static str,
    /// The status answered (0: none).
    status: u16,
    /// Body bytes handed to the connection so far.
    pub(crate) bytes: u64,
}

impl AccessLog {
    /// Takes what the line needs from a request before the request is consumed; `started`
    /// is when its head had been read.
    pub fn of<B>(
        request: &Request<B>,
        conn: ConnInfo,
        request_id: &HeaderValue,
        started: Instant,
    ) -> AccessLog {
        AccessLog {
            started,
            head_ms: 0,
            method: request.method().clone(),
            version: request.version(),
            path: cut(request.uri().path(), MAX_LOGGED_PATH).into(),
            request_id: String::from_utf8_lossy(request_id.as_bytes()).into(),
            user_agent: user_agent(request.headers()).into(),
            client: conn.peer,
            tls: conn.tls,
            route: "unanswered",
            status: 0,
            bytes: 0,
        }
    }

    /// Records the answer's head: its route kind, status, and the time it took.
    pub fn answered(&mut self, route: &'static str, status: u16, took: Duration) {
        self.route = route;
        self.status = status;
        self.head_ms = took.as_millis() as u64;
    }
}

/// Whether access lines are written at all (the `access` target at `info`, as `RUST_LOG`
/// says): when not, no request builds a record.
pub fn wanted() -> bool {
    tracing::enabled!(target: "access", tracing::Level::INFO)
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        tracing::info!(
            target: "access",
            client = %self.client,
            request_id = %self.request_id,
            method = %self.method,
            path = %self.path,
            route = self.route,
            status = self.status,
            bytes = self.bytes,
            head_ms = self.head_ms,
            duration_ms = self.started.elapsed().as_millis() as u64,
            protocol = ?self.version,
            tls = self.tls,
            user_agent = %self.user_agent,
        );
    }
}

/// The client's user agent, as text, bounded.
fn user_agent(headers: &HeaderMap) -> String {
    match headers.get(header::USER_AGENT) {
        Some(value) => cut(
            &String::from_utf8_lossy(value.as_bytes()),
            MAX_LOGGED_USER_AGENT,
        )
        .to_owned(),
        None => "-".to_owned(),
    }
}

/// `text` cut to at most `max` characters.
fn cut(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_paths_and_user_agents_are_cut() {
        assert_eq!(cut("/abc", 2), "/a");
        assert_eq!(cut("/é", 5), "/é");
        let mut headers = HeaderMap::new();
        assert_eq!(user_agent(&headers), "-");
        headers.insert(
            header::USER_AGENT,
            HeaderValue::from_str(&"u".repeat(1000)).expect("value"),
        );
        assert_eq!(user_agent(&headers).len(), MAX_LOGGED_USER_AGENT);
    }
}
