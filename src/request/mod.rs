//! The request phases, and the only place errors become HTTP answers.
//!
//! Every request, whichever way the edge read it (hyper, or the HTTP/1.1 fast path), enters
//! through [`App::handle`] and goes: route ([`router`]) → authenticate ([`auth`], on
//! `auth = true` stream routes) → stream (the [`crate::stream`] phase) or passthrough
//! ([`passthrough`]) → access log. A failure in any phase is a typed error of that phase,
//! turned into a JSON answer by [`ProxyError`] here.
//!
//! The query string is never logged: it may carry a token (`user_token`).

pub mod access;
mod admin;
pub mod auth;
pub mod body;
pub mod error;
pub mod passthrough;
pub mod router;
mod trace;

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response, request};

use crate::config::StreamConfig;
use crate::ops::metrics::Metrics;
use crate::origin::{ClientBody, Upstream};
use crate::stream::Streams;
use access::AccessLog;
use auth::Authenticator;
use body::ProxyBody;
use error::ProxyError;
use router::{Route, Router};

/// What the request handler knows about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// The client's address (for `X-Forwarded-For`).
    pub peer: SocketAddr,
    /// Whether the connection is TLS (for `X-Forwarded-Proto`).
    pub tls: bool,
}

/// Shared, immutable state of a running proxy.
pub struct App {
    /// Stream routes by path.
    pub router: Router,
    /// The origin.
    pub upstream: Arc<Upstream>,
    /// Token validation for `auth = true` stream routes.
    pub auth: Option<Authenticator>,
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
    /// Serves one request through its phases; never fails (errors become responses). The
    /// HTTP/1.1 fast path calls it with an empty body, hyper with the request's own.
    pub async fn handle(
        &self,
        mut request: Request<ClientBody>,
        conn: ConnInfo,
    ) -> Response<ProxyBody> {
        let request_id = trace::admit(request.headers_mut());
        let log = AccessLog::of(&request, conn, &request_id);
        let (kind, result) = match self.router.route(request.uri().path()) {
            Err(error) => ("rejected", Err(error.into())),
            Ok(Route::Passthrough) => (
                "passthrough",
                passthrough::forward(&self.upstream, request, &conn, self.strip_user_header).await,
            ),
            Ok(Route::Stream { route, params }) => {
                let (parts, _body) = request.into_parts();
                ("stream", self.stream(route, params, &parts).await)
            }
        };
        self.finish(log, kind, result, request_id)
    }

    /// Ends every event stream with a reconnect hint (shutdown: clients move elsewhere).
    pub fn close_streams(&self) {
        self.streams.hub.close_all(self.retry_ms);
    }

    /// The stream phase: method check, authentication, then the hub.
    async fn stream(
        &self,
        route: Arc<StreamConfig>,
        params: Vec<String>,
        parts: &request::Parts,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        if parts.method != Method::GET {
            return Err(ProxyError::MethodNotAllowed(parts.method.clone()));
        }
        let identity = match (&self.auth, route.auth) {
            (Some(auth), true) => Some(
                auth.authenticate(&parts.headers, parts.uri.query(), &self.upstream)
                    .await?,
            ),
            _ => None,
        };
        let response = self.streams.open(route, params, identity, parts).await?;
        Ok(response.map(ProxyBody::Stream))
    }

    /// Counts the request, turns an error into its JSON answer, returns the request id, and
    /// hands the access log line to the body, which writes it when it ends.
    fn finish(
        &self,
        mut log: AccessLog,
        kind: &'static str,
        result: Result<Response<ProxyBody>, ProxyError>,
        request_id: HeaderValue,
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
                    request_id = log.request_id(),
                    blame = error.blame().as_str(),
                    error = error.code(),
                    detail = %error,
                    "request failed"
                );
                error.into_response()
            }
        };
        let (mut parts, body) = response.into_parts();
        trace::answer(&mut parts.headers, request_id);
        let took = log.answered(kind, parts.status.as_u16());
        if kind == "passthrough" {
            self.metrics.passthrough(parts.status.as_u16(), took);
        }
        Response::from_parts(parts, body.logged(log))
    }
}
