//! The origin client: our own pool of HTTP/HTTPS connections to the buffered origin
//! ([`pool`], opened by [`connect`]), and its TLS.
//!
//! Passthrough streams bodies through it both ways; pollers and the token validator fetch
//! whole (bounded) JSON bodies with it. Every call is bounded in time, and every failure is
//! classified the way the client should hear it: unreachable (502), too slow (504), or a
//! broken answer (502).

use std::error::Error as StdError;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tokio::time::{Instant, timeout_at};

use crate::config::UpstreamConfig;

pub mod connect;
mod h1;
pub mod pool;
pub mod tls;
use connect::Connector;
pub use pool::{BodyError, UpstreamBody};
use pool::{Limits, Pool, SendError};
use tls::{TlsError, origin_roots, provider};

/// How many idle connections to one origin are kept for the next requests, by each runtime
/// that keeps its own (the shared one, and every serving thread: [`pool`]).
const MAX_IDLE_PER_ORIGIN: usize = 256;
/// How long an idle connection is kept before it is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Header fields the proxy states on a request it forwards (the request id, the client's
/// address, scheme and host, the origin's `Host`): each replaces every line of its name the
/// request carries, and `None` drops the name (for `Host`: the origin's own is sent). Given
/// beside the request, not set in its header map: our own HTTP/1.1 exchange writes them into
/// the head as it writes it, where setting each in the map cost a hash and an insert on every
/// passthrough request, and clearing the map a drop (BENCHMARKS.md, issue 15.1). Hyper's
/// connections get them set in the map ([`set_stated`]). Not for the framing and connection
/// fields (`Content-Length`, `Transfer-Encoding`, `Connection`), which follow from the body
/// and the request's own lines.
pub type Stated<'a> = [StatedField<'a>];

/// One field the proxy states: its name, and its value or `None` to drop the name. The value
/// is borrowed, and must be a valid field value (what `HeaderValue::from_bytes` accepts: no CR,
/// LF or NUL): our exchange writes it as it is. Every value the proxy states is its own text
/// or copied from a `HeaderValue`; debug builds (the tests) check each one.
pub type StatedField<'a> = (&'a HeaderName, Option<&'a [u8]>);

/// Sets `stated` in `headers`, each replacing its name's lines or, when `None`, removing them:
/// the request as hyper's connections send it. A value that is not a valid field value (which
/// the proxy never states) is not sent, and the request's own lines of that name are removed
/// all the same.
pub fn set_stated(headers: &mut HeaderMap, stated: &Stated<'_>) {
    for (name, value) in stated {
        match value.map(HeaderValue::from_bytes) {
            Some(Ok(value)) => {
                headers.insert(*name, value);
            }
            stated => {
                debug_assert!(stated.is_none(), "{name}: an invalid stated value");
                headers.remove(*name);
            }
        }
    }
}

/// A request body sent to the origin.
pub enum ClientBody {
    /// Polls and most validation calls.
    Empty,
    /// A client's request body, streamed through by passthrough.
    Streamed(Incoming),
    /// A small body the proxy made (a token introspection form), sent once.
    Full(Option<Bytes>),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ClientBody::Empty => Poll::Ready(None),
            ClientBody::Streamed(incoming) => Pin::new(incoming).poll_frame(cx),
            ClientBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Empty => true,
            ClientBody::Streamed(incoming) => incoming.is_end_stream(),
            ClientBody::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Empty => SizeHint::with_exact(0),
            ClientBody::Streamed(incoming) => incoming.size_hint(),
            ClientBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

/// Why a call to the origin failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Connection refused, reset, DNS failure, TLS failure.
    #[error("cannot reach the origin: {0}")]
    Unreachable(String),
    /// No answer (or no connection) within the configured bound.
    #[error("the origin did not answer within {0} ms")]
    Timeout(u64),
    /// The origin answered something that is not usable HTTP.
    #[error("the origin's answer is broken: {0}")]
    Protocol(String),
    /// A polled body exceeded `max_poll_body_bytes`.
    #[error("the origin's body is larger than {0} bytes")]
    TooLarge(usize),
}

/// A whole, bounded answer from the origin.
#[derive(Debug)]
pub struct Fetched {
    /// The origin's status.
    pub status: StatusCode,
    /// The origin's headers (ETag, Retry-After, ...).
    pub headers: HeaderMap,
    /// The body, at most `max_poll_body_bytes`.
    pub body: Bytes,
}

#[cfg(test)]
impl Fetched {
    /// An answer with `status`, no headers and `body`, for the unit tests of the layers that
    /// judge origin answers (the poller, the validators).
    pub(crate) fn for_tests(status: u16, body: &str) -> Fetched {
        Fetched {
            status: StatusCode::from_u16(status).expect("a valid status in a test"),
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_owned()),
        }
    }
}

/// The connection pool and where the origin is.
pub struct Upstream {
    /// Pooled HTTP/1.1 + HTTP/2 (by ALPN) connections over plain TCP or rustls, to the origin
    /// and to any other host the proxy calls (validators, key sets).
    pool: Pool,
    /// Origin scheme, `http` or `https`.
    scheme: http::uri::Scheme,
    /// Origin host and port.
    authority: http::uri::Authority,
    /// Prefix put before every path (an API Gateway stage).
    base_path: String,
    /// Bound on an answer (headers for passthrough, whole body for fetches).
    timeout: Duration,
    /// Cap on fetched bodies.
    max_body: usize,
    /// Whether the last call got an HTTP answer (for `/readyz`).
    reachable: AtomicBool,
}

impl Upstream {
    /// Builds the client; fails only when the configured CA file is unusable.
    pub fn new(config: &UpstreamConfig) -> Result<Upstream, TlsError> {
        let tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(origin_roots(config.ca.as_deref())?)
            .with_no_client_auth();
        let pool = Pool::new(
            Connector::new(tls, config.connect_timeout),
            Limits {
                max_idle_per_origin: MAX_IDLE_PER_ORIGIN,
                idle_timeout: IDLE_TIMEOUT,
            },
        );
        Ok(Upstream {
            pool,
            scheme: config.scheme.clone(),
            authority: config.authority.clone(),
            base_path: config.base_path.clone(),
            timeout: config.timeout,
            max_body: config.max_poll_body_bytes,
            reachable: AtomicBool::new(true),
        })
    }

    /// The absolute origin URI for a path and query as the client sent it.
    pub fn uri(&self, path_and_query: &str) -> Result<Uri, UpstreamError> {
        let mut full = String::with_capacity(self.base_path.len() + path_and_query.len());
        full.push_str(&self.base_path);
        full.push_str(path_and_query);
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(full)
            .build()
            .map_err(|e| UpstreamError::Protocol(format!("cannot build origin URI: {e}")))
    }

    /// The absolute origin URI for a client's parsed path and query (`/` when it has none):
    /// with no base path, the parsed value is shared, not written out and parsed again.
    pub fn uri_for(&self, path_and_query: Option<&PathAndQuery>) -> Result<Uri, UpstreamError> {
        match path_and_query {
            Some(path_and_query) if self.base_path.is_empty() => {
                // Parts filled in place: the builder moves them through each setter.
                let mut parts = http::uri::Parts::default();
                parts.scheme = Some(self.scheme.clone());
                parts.authority = Some(self.authority.clone());
                parts.path_and_query = Some(path_and_query.clone());
                Uri::from_parts(parts)
                    .map_err(|e| UpstreamError::Protocol(format!("cannot build origin URI: {e}")))
            }
            _ => self.uri(path_and_query.map_or("/", PathAndQuery::as_str)),
        }
    }

    /// Whether the origin answered the last call (any status), or nothing was asked yet.
    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// Notes whether the origin answered the call that gave `result` (for `/readyz`).
    fn record<T>(&self, result: &Result<T, UpstreamError>) {
        let down = matches!(
            result,
            Err(UpstreamError::Unreachable(_) | UpstreamError::Timeout(_))
        );
        self.reachable.store(!down, Ordering::Relaxed);
    }

    /// Sends a request, with the header fields `stated` beside its own ([`Stated`]), and waits
    /// (bounded) for the response headers; the body streams after, and fails if the origin goes
    /// silent in its middle for as long as the headers may take.
    ///
    /// The request stays where the caller keeps it, and this future only borrows it (as the
    /// pool's does): each level of futures that held it by value made every request's future
    /// 264 bytes larger, and copied it once more (BENCHMARKS.md, issue 15.1). A request sent
    /// on one of hyper's connections is taken out of it.
    pub async fn send(
        &self,
        request: &mut Request<ClientBody>,
        stated: &Stated<'_>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        // Not matched around the await: the matched value would live across it.
        let (https, authority) = match target(request) {
            Ok(target) => target,
            Err(error) => {
                let refused = Err(error);
                self.record(&refused);
                return refused;
            }
        };
        let due = Instant::now() + self.timeout;
        let mut result = match self.pool.send(https, authority, request, stated, due).await {
            Ok(response) => Ok(response),
            Err(error) => Err(self.classify(&error, self.timeout, "")),
        };
        // The answer (200 bytes) is changed and judged where it lies, not moved through
        // helpers that take and give it back.
        if let Ok(response) = &mut result {
            response.body_mut().set_quiet_limit(self.timeout);
        }
        self.record(&result);
        result
    }

    /// GETs a path and reads the whole body, bounded in size and (with the headers) in time:
    /// the configured timeout, plus `held` when the origin was asked to hold the request.
    pub async fn fetch(
        &self,
        path_and_query: &str,
        headers: HeaderMap,
        held: Duration,
    ) -> Result<Fetched, UpstreamError> {
        let mut request = Request::new(ClientBody::Empty);
        *request.uri_mut() = self.uri(path_and_query)?;
        *request.headers_mut() = headers;
        let result = self.read_whole(request, self.timeout + held).await;
        self.record(&result);
        result
    }

    /// Sends a whole request to any absolute URL through the same client (pool, timeouts,
    /// TLS roots) and reads the whole answer, bounded like [`Upstream::fetch`]: for validators
    /// and key sets that may live on another host. Only calls to the origin itself count
    /// towards `/readyz`.
    pub async fn exchange(&self, request: Request<ClientBody>) -> Result<Fetched, UpstreamError> {
        let to_origin = request.uri().authority() == Some(&self.authority);
        let result = self.read_whole(request, self.timeout).await;
        if to_origin {
            self.record(&result);
        }
        result
    }

    /// Sends `request` and collects the answer, the whole within `bound`.
    /// Every call the proxy makes itself carries its own user agent and trace (see
    /// [`own_call_headers`]).
    async fn read_whole(
        &self,
        mut request: Request<ClientBody>,
        bound: Duration,
    ) -> Result<Fetched, UpstreamError> {
        let trace_id = own_call_headers(request.headers_mut());
        let due = Instant::now() + bound;
        let fetch = async {
            let (https, authority) = target(&request)?;
            let response = self
                .pool
                .send(https, authority, &mut request, &[], due)
                .await
                .map_err(|e| self.classify(&e, bound, &trace_id))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, self.max_body)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        UpstreamError::TooLarge(self.max_body)
                    } else {
                        tracing::warn!(origin = %self.authority, trace_id, error = %error_chain(e.as_ref()), "reading the origin's body failed");
                        UpstreamError::Protocol("the body ended early or was malformed".to_owned())
                    }
                })?
                .to_bytes();
            Ok(Fetched {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match timeout_at(due, fetch).await {
            Ok(result) => result,
            Err(_) => Err(UpstreamError::Timeout(bound.as_millis() as u64)),
        }
    }

    /// Sorts a client error into what the client hears. The client hears a short reason of
    /// ours; hyper's own text (its internals, the origin's resolved addresses) goes only to
    /// the log, with the call's trace id when the proxy made the call itself. A call that
    /// ran out of time (`bound`) is not logged here: its caller reports it.
    fn classify(&self, error: &SendError, bound: Duration, trace_id: &str) -> UpstreamError {
        if let SendError::TimedOut = error {
            return UpstreamError::Timeout(bound.as_millis() as u64);
        }
        let chain = error_chain(error);
        let connect = matches!(error, SendError::Connect(_));
        let mut io_kind = None;
        let mut tls = false;
        let mut source = error.source();
        while let Some(cause) = source {
            if let Some(io) = cause.downcast_ref::<std::io::Error>() {
                io_kind = Some(io.kind());
                tls |= io
                    .get_ref()
                    .is_some_and(|inner| inner.is::<rustls::Error>());
            }
            tls |= cause.is::<rustls::Error>();
            source = cause.source();
        }
        // The first failure of an outage is a warning; the rest of it would flood the log.
        if self.reachable() {
            tracing::warn!(origin = %self.authority, trace_id, error = %chain, "origin call failed");
        } else {
            tracing::debug!(origin = %self.authority, trace_id, error = %chain, "origin call failed");
        }
        if io_kind == Some(std::io::ErrorKind::TimedOut) {
            return UpstreamError::Timeout(self.timeout.as_millis() as u64);
        }
        let reason = match io_kind {
            _ if tls => "the TLS handshake with the origin failed",
            Some(std::io::ErrorKind::ConnectionRefused) => "connection refused",
            Some(std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted) => {
                "connection reset by the origin"
            }
            Some(std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::BrokenPipe) => {
                "the origin closed the connection"
            }
            _ if connect => "cannot connect",
            _ => "the origin's answer is not valid HTTP or the connection closed early",
        };
        if connect {
            UpstreamError::Unreachable(reason.to_owned())
        } else {
            UpstreamError::Protocol(reason.to_owned())
        }
    }
}

/// The origin a request goes to, from its absolute URI: whether it is HTTPS, and its host.
fn target(request: &Request<ClientBody>) -> Result<(bool, Authority), UpstreamError> {
    let uri = request.uri();
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => {
            return Err(UpstreamError::Protocol(
                "the URL's scheme is neither http nor https".to_owned(),
            ));
        }
    };
    let Some(authority) = uri.authority().cloned() else {
        return Err(UpstreamError::Protocol("the URL names no host".to_owned()));
    };
    Ok((https, authority))
}

/// Headers every call the proxy makes by itself carries: `User-Agent: sse-edge/<version>` (so
/// the origin's logs can tell polls from users) and a new trace. Configured headers win.
/// Returns the trace id, for the log when the call fails.
fn own_call_headers(headers: &mut HeaderMap) -> String {
    headers
        .entry(http::header::USER_AGENT)
        .or_insert(http::HeaderValue::from_static(USER_AGENT));
    crate::http::trace::start_trace(headers)
}

/// What the proxy's own calls to the origin say they are.
pub const USER_AGENT: &str = concat!("sse-edge/", env!("CARGO_PKG_VERSION"));

/// An error and its causes on one line, for logs and JSON details.
pub fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hyper's connections get what the proxy states set in the map: each name's lines
    /// replaced by the one stated, or removed.
    #[test]
    fn stated_fields_replace_the_maps_lines() {
        static FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
        static REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("x-forwarded-for", "10.0.0.1"),
            ("x-keep", "kept"),
            ("x-forwarded-for", "10.0.0.2"),
            ("x-real-ip", "10.0.0.1"),
        ] {
            headers.append(name, HeaderValue::from_static(value));
        }
        set_stated(
            &mut headers,
            &[(&FOR, Some(b"203.0.113.9")), (&REAL_IP, None)],
        );
        let lines: Vec<_> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().ok()))
            .collect();
        assert_eq!(
            lines,
            [
                ("x-forwarded-for", Some("203.0.113.9")),
                ("x-keep", Some("kept")),
            ]
        );
    }

    fn upstream(base_path: &str) -> Upstream {
        Upstream::new(&UpstreamConfig {
            scheme: http::uri::Scheme::HTTPS,
            authority: "Origin.example:8443".parse().expect("authority"),
            base_path: base_path.to_owned(),
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            ca: None,
            max_poll_body_bytes: 1024,
        })
        .expect("upstream")
    }

    #[test]
    fn the_parsed_path_gives_the_same_origin_uri_as_the_written_one() {
        for base_path in ["", "/prod"] {
            let upstream = upstream(base_path);
            for target in [
                "/",
                "/api/v2/stream/status",
                "/a%20b/%zz?x=1&y=%2F",
                "/q?",
                "*",
                "http://client.example/abs?k=v",
                "http://client.example",
            ] {
                let client: Uri = target.parse().expect("target");
                let shared = upstream.uri_for(client.path_and_query()).expect("uri_for");
                let written = upstream
                    .uri(client.path_and_query().map_or("/", PathAndQuery::as_str))
                    .expect("uri");
                assert_eq!(shared, written, "{target} under {base_path:?}");
                assert_eq!(shared.to_string(), written.to_string(), "{target}");
                assert_eq!(
                    shared.path_and_query().map(PathAndQuery::as_str),
                    written.path_and_query().map(PathAndQuery::as_str),
                    "{target}"
                );
            }
        }
    }
}
