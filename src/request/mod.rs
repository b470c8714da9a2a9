//! The request phases, and the only place errors become HTTP answers.
//!
//! Every request, whichever way the edge read it (hyper, or the HTTP/1.1 fast path), enters
//! through [`App::handle`] (the fast path, having routed it already, through
//! [`App::handle_routed`]) and goes: route ([`router`]) → authenticate ([`auth`], on
//! `auth = true` stream routes) → stream (the [`crate::stream`] phase) or passthrough
//! ([`passthrough`]) → access log. A failure in any phase is a typed error of that phase,
//! turned into a JSON answer by [`ProxyError`] here, or, for an `EventSource` refused for a
//! reason that will pass, into an event stream it reconnects from. Stream-route answers get
//! the `[cors]` headers ([`cors`]), and their `OPTIONS` preflights are answered there.
//!
//! The query string is never logged: it may carry a token (`user_token`).

pub mod access;
mod admin;
pub mod auth;
pub mod body;
pub mod cors;
pub mod error;
pub mod forwarding;
pub mod passthrough;
pub mod router;
mod trace;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Method, Request, Response, header};

use crate::config::{EventNames, StreamConfig};
use crate::http::spare;
use crate::ops::metrics::Metrics;
use crate::origin::{ClientBody, Upstream};
use crate::stream::Streams;
use access::AccessLog;
use auth::Authenticator;
use body::ProxyBody;
use cors::Cors;
use error::{ProxyError, wants_event_stream};
use router::{Route, RouteError, Router};

/// What the request handler knows about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// The client's address (for `X-Forwarded-For`).
    pub peer: SocketAddr,
    /// Whether the connection is TLS (for `X-Forwarded-Proto`).
    pub tls: bool,
}

/// Readies the calling thread to serve requests on a single-threaded runtime of its own (a
/// serving thread, `[listen] serving_threads`): its origin connections are kept on it, and its
/// stream subscribers are woken through its relay. Returns the relay's task, to be spawned on
/// that runtime.
pub fn serve_on_this_thread() -> impl Future<Output = ()> + 'static {
    crate::origin::pool::keep_connections_on_this_thread();
    crate::stream::relay::relay_for_this_thread()
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
    /// `[auth] identity_header`: removed from every request a client sends through, since
    /// only the proxy may name the validated user to the origin.
    pub identity_header: http::HeaderName,
    /// What passthrough tells the origin about the client (`X-Forwarded-*`, `Forwarded`),
    /// and the client about the origin (`Server`).
    pub forwarding: forwarding::Forwarding,
    /// `[cors]`: cross-origin reading of stream routes; `None` adds no CORS headers.
    pub cors: Option<Cors>,
    /// The proxy's own event names, for refusals answered as event streams.
    pub events: Arc<EventNames>,
}

impl App {
    /// Serves one request through its phases; never fails (errors become responses). Hyper
    /// calls it with the request's own body.
    pub async fn handle(
        &self,
        request: Request<ClientBody>,
        conn: ConnInfo,
    ) -> Response<ProxyBody> {
        let routed = self.router.route(&request);
        self.handle_routed(request, routed, conn).await
    }

    /// [`App::handle`] for a request already routed by [`Router::route`]: the HTTP/1.1 fast
    /// path routes to decide what it serves, and passes that decision on (with an empty body).
    pub async fn handle_routed(
        &self,
        mut request: Request<ClientBody>,
        routed: Result<Route, RouteError>,
        conn: ConnInfo,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        // Judged first, before the trace context is cleaned (which drops repeated lines) and
        // passthrough joins cookies: a map whose lines were removed keeps their room unseen
        // (see `spare`).
        let keepable = spare::keepable(request.headers());
        let request_id = trace::admit(request.headers_mut());
        // Boxed: 160 bytes that would otherwise sit in this future, which the edge boxes for
        // every request and which must stay small (see the test below).
        let log =
            access::wanted().then(|| Box::new(AccessLog::of(&request, conn, &request_id, started)));
        let stream_route = !matches!(routed, Ok(Route::Passthrough));
        let browser = stream_route.then(|| Browser::of(&request));
        let (kind, result) = match routed {
            Err(error) => ("rejected", Err(error.into())),
            Ok(Route::Passthrough) => {
                // Boxed: inline, its 976 bytes would put this future, which the edge boxes for
                // every request, above glibc's per-thread cache; two boxes within it cost less
                // than one beyond it (see the test below).
                let forwarded = Box::pin(passthrough::forward(
                    &self.upstream,
                    &mut request,
                    &conn,
                    &request_id,
                    &self.identity_header,
                    &self.forwarding,
                ))
                .await;
                // Done with: the request's header map serves a later message on this thread.
                if keepable {
                    spare::give_back(std::mem::take(request.headers_mut()));
                }
                ("passthrough", forwarded)
            }
            Ok(Route::Stream { route, params }) => {
                // Boxed, the request's parts in it: authentication makes this phase's future
                // several times larger than passthrough's, and the edge moves this whole
                // future into a box per request: inline, every passthrough request would
                // copy room for it.
                let stream = Box::pin(self.stream(route, params, request, &conn));
                ("stream", stream.await)
            }
        };
        let event_stream = browser.as_ref().is_some_and(|browser| browser.event_stream);
        let answer = Answer {
            kind,
            request_id,
            started,
            event_stream,
        };
        let mut response = self.finish(log, answer, result);
        if let (Some(browser), Some(cors)) = (browser, &self.cors) {
            cors.apply(browser.origin.as_ref(), response.headers_mut());
        }
        response
    }

    /// Ends every event stream with a reconnect hint (shutdown: clients move elsewhere).
    pub fn close_streams(&self) {
        self.streams.hub.close_all(self.retry_ms);
    }

    /// The stream phase: method check (and CORS preflight), declared query parameters,
    /// authentication, then the hub.
    async fn stream(
        &self,
        route: Arc<StreamConfig>,
        mut params: Vec<String>,
        request: Request<ClientBody>,
        conn: &ConnInfo,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let (parts, _body) = request.into_parts();
        let parts = &parts;
        if let (&Method::OPTIONS, Some(cors)) = (&parts.method, &self.cors) {
            return cors.preflight(parts);
        }
        if parts.method != Method::GET {
            return Err(ProxyError::MethodNotAllowed(parts.method.clone()));
        }
        let query = route.query.values(parts.uri.query());
        params.extend(query.map_err(RouteError::from)?);
        let identity = match (&self.auth, route.auth) {
            (Some(auth), true) => Some(
                auth.authenticate(&parts.headers, parts.uri.query(), &self.upstream)
                    .await?,
            ),
            _ => None,
        };
        let peer = self.forwarding.client_ip(&parts.headers, conn.peer.ip());
        let response = self
            .streams
            .open(route, params, identity, peer, parts)
            .await?;
        Ok(response.map(ProxyBody::Stream))
    }

    /// Counts the request, turns an error into its JSON answer, returns the request id, and
    /// hands the access log line, if one is written, to the body, which writes it when it ends.
    fn finish(
        &self,
        log: Option<Box<AccessLog>>,
        answer: Answer,
        result: Result<Response<ProxyBody>, ProxyError>,
    ) -> Response<ProxyBody> {
        let Answer {
            kind,
            request_id,
            started,
            event_stream,
        } = answer;
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
                    request_id = request_id.to_str().unwrap_or("-"),
                    blame = error.blame().as_str(),
                    error = error.code(),
                    detail = %error,
                    "request failed"
                );
                if event_stream {
                    error
                        .into_event_stream(self.retry_ms, &self.events.unavailable)
                        .unwrap_or_else(ProxyError::into_response)
                } else {
                    error.into_response()
                }
            }
        };
        let (mut parts, body) = response.into_parts();
        trace::answer(&mut parts.headers, request_id);
        let took = started.elapsed();
        if kind == "passthrough" {
            self.metrics.passthrough(parts.status.as_u16(), took);
        }
        let body = match log {
            Some(mut log) => {
                log.answered(kind, parts.status.as_u16(), took);
                body.logged(*log)
            }
            None => body,
        };
        Response::from_parts(parts, body)
    }
}

/// What [`App::finish`] needs to know about a request besides its result and access record.
struct Answer {
    /// `stream`, `passthrough` or `rejected`.
    kind: &'static str,
    /// The request's id, returned to the client.
    request_id: HeaderValue,
    /// When the request's head had been read (for the passthrough latency histogram).
    started: Instant,
    /// Whether refusals are answered as an event stream (an `EventSource` on a stream route).
    event_stream: bool,
}

/// What a browser's request to a stream route says about the answer it can use, read before
/// the request is consumed (passthrough answers are the origin's: no CORS, no event-stream
/// refusals).
struct Browser {
    /// The page's origin (`Origin`), for CORS.
    origin: Option<HeaderValue>,
    /// `Accept: text/event-stream` (an `EventSource`): refusals that will pass are answered
    /// as an event stream it reconnects from.
    event_stream: bool,
}

impl Browser {
    fn of<B>(request: &Request<B>) -> Browser {
        Browser {
            origin: request.headers().get(header::ORIGIN).cloned(),
            event_stream: wants_event_stream(request.headers()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of what `phase` returns, without calling it.
    fn returned<A, B, C, D, F>(_phase: fn(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// The edge boxes the request phases' future for every request, and passthrough boxes
    /// its own: above 1,032 bytes glibc serves an allocation from its slow path, not its
    /// per-thread cache (malloc and free both), which showed on every passthrough request
    /// (BENCHMARKS.md, issue 15.1).
    #[test]
    fn a_passthrough_requests_futures_fit_the_allocators_thread_cache() {
        fn phases(
            app: &'static App,
            request: Request<ClientBody>,
            routed: Result<Route, RouteError>,
            conn: ConnInfo,
        ) -> impl Future<Output = Response<ProxyBody>> {
            app.handle_routed(request, routed, conn)
        }
        fn forward(
            app: &'static App,
            request: &'static mut Request<ClientBody>,
            conn: &'static ConnInfo,
            request_id: &'static HeaderValue,
        ) -> impl Future<Output = Result<Response<ProxyBody>, ProxyError>> {
            passthrough::forward(
                &app.upstream,
                request,
                conn,
                request_id,
                &app.identity_header,
                &app.forwarding,
            )
        }
        let (phases, forward) = (returned(phases), returned(forward));
        assert!(
            phases <= 1032,
            "the request phases' future is {phases} bytes"
        );
        assert!(forward <= 1032, "passthrough's future is {forward} bytes");
    }
}
