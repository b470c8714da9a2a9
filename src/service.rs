//! The request phases after a connection is established: route, then either the stream
//! phase (authenticate, subscribe, stream) or passthrough. Every request ends in one access
//! log line with its route kind, status, protocol and time to response headers, and every
//! failure is answered as JSON by [`ProxyError`](crate::error::ProxyError).
//!
//! The query string is never logged: it may carry a token (`user_token`).

use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::body::ProxyBody;
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
        let started = Instant::now();
        let method = request.method().clone();
        let version = request.version();
        let path = loggable(request.uri().path()).to_owned();
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
            %method,
            path = %path,
            route = kind,
            status = response.status().as_u16(),
            protocol = ?version,
            tls = conn.tls,
            ms = started.elapsed().as_millis() as u64,
        );
        response
    }
}

fn loggable(path: &str) -> &str {
    match path.char_indices().nth(MAX_LOGGED_PATH) {
        Some((cut, _)) => &path[..cut],
        None => path,
    }
}
