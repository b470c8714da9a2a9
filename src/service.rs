//! The request phases after a connection is established: route, then either the stream
//! phase (authenticate, subscribe, stream) or passthrough. Every request ends in one access
//! log line with its route kind, status, protocol and time to response headers, and every
//! failure is answered as JSON by [`ProxyError`](crate::error::ProxyError).
//!
//! The query string is never logged: it may carry a token (`user_token`).

use std::sync::Arc;
use std::time::Instant;

use http::{Method, Request, Response, Version, request};
use hyper::body::Incoming;

use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::listener::ConnInfo;
use crate::metrics::Metrics;
use crate::passthrough;
use crate::router::{Route, Router};
use crate::stream::Streams;
use crate::upstream::Upstream;

/// Longest path written to the access log.
const MAX_LOGGED_PATH: usize = 256;

/// Shared, immutable state of a running proxy.
pub struct App {
    /// Stream routes by path.
    pub router: Router,
    /// The origin.
    pub upstream: Arc<Upstream>,
    /// The stream phase and its hub.
    pub streams: Streams,
    /// `retry:` hint sent when streams are closed for shutdown.
    pub retry_ms: u64,
    /// The proxy's counters.
    pub metrics: Arc<Metrics>,
    /// Drop a client-sent `X-User-ID` on passthrough (it is not a token source).
    pub strip_user_header: bool,
}

impl App {
    /// Serves one request through its phases; never fails (errors become responses).
    pub async fn handle(&self, request: Request<Incoming>, conn: ConnInfo) -> Response<ProxyBody> {
        let log = RequestLog::of(request.method(), request.version(), request.uri().path());
        let (kind, result) = match self.router.route(request.uri().path()) {
            Err(error) => ("rejected", Err(error)),
            Ok(Route::Passthrough) => (
                "passthrough",
                passthrough::forward(&self.upstream, request, &conn, self.strip_user_header).await,
            ),
            Ok(Route::Stream { index, params }) => {
                let (parts, _body) = request.into_parts();
                ("stream", self.streams.open(index, params, &parts).await)
            }
        };
        self.finish(log, kind, result, conn)
    }

    /// Serves a request the HTTP/1.1 fast path ([`crate::h1_stream`]) has already routed to
    /// stream route `index`: the stream phase and the access log, as [`App::handle`] does.
    pub async fn handle_stream(
        &self,
        parts: &request::Parts,
        index: usize,
        params: Vec<String>,
        conn: ConnInfo,
    ) -> Response<ProxyBody> {
        let log = RequestLog::of(&parts.method, parts.version, parts.uri.path());
        let result = self.streams.open(index, params, parts).await;
        self.finish(log, "stream", result, conn)
    }

    /// Counts the request, turns an error into its JSON answer, and writes the access log line.
    fn finish(
        &self,
        log: RequestLog,
        kind: &'static str,
        result: Result<Response<ProxyBody>, ProxyError>,
        conn: ConnInfo,
    ) -> Response<ProxyBody> {
        Metrics::inc(match kind {
            "stream" => &self.metrics.requests_stream,
            "passthrough" => &self.metrics.requests_passthrough,
            _ => &self.metrics.requests_rejected,
        });
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                tracing::info!(
                    target: "access",
                    blame = error.blame().as_str(),
                    error = error.code(),
                    detail = %error,
                    "request failed"
                );
                error.into_response()
            }
        };
        tracing::info!(
            target: "access",
            method = %log.method,
            path = %log.path,
            route = kind,
            status = response.status().as_u16(),
            protocol = ?log.version,
            tls = conn.tls,
            ms = log.started.elapsed().as_millis() as u64,
        );
        response
    }
}

/// What the access log line says about a request, taken before the request is consumed.
struct RequestLog {
    /// When the request's head had been read.
    started: Instant,
    method: Method,
    version: Version,
    /// The path, cut to [`MAX_LOGGED_PATH`]; never the query, which may hold a token.
    path: String,
}

impl RequestLog {
    fn of(method: &Method, version: Version, path: &str) -> RequestLog {
        RequestLog {
            started: Instant::now(),
            method: method.clone(),
            version,
            path: loggable(path).to_owned(),
        }
    }
}

fn loggable(path: &str) -> &str {
    match path.char_indices().nth(MAX_LOGGED_PATH) {
        Some((cut, _)) => &path[..cut],
        None => path,
    }
}
