//! Routing, the first request phase: is this request an event stream, and with which path
//! parameters? A request whose path matches a `[[stream]] path` is served by the stream phase,
//! everything else passes through. A bad parameter is a 400 that never reaches the origin, and
//! so is a request that does not say which host it is for ([`HostError`]).

use std::sync::Arc;

use http::Request;

use crate::config::StreamConfig;
use crate::http::path::{ParamError, PathPattern};

mod host;

pub use host::{HostError, target_host};

/// Why a request cannot be routed.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The path matches a stream route, but a parameter is unacceptable.
    #[error(transparent)]
    BadParam(#[from] ParamError),
    /// The request's `Host` (or HTTP/2 `:authority`) breaks RFC 9112 §3.2 / RFC 9113 §8.3.1.
    #[error(transparent)]
    BadHost(#[from] HostError),
}

/// What the router decided for a request path.
#[derive(Debug)]
pub enum Route {
    /// Serve this stream route as an event stream with these parameter values.
    Stream {
        /// The matched route, carried through the stream phase.
        route: Arc<StreamConfig>,
        /// Decoded, checked parameter values, in the pattern's order.
        params: Vec<String>,
    },
    /// Forward to the upstream unchanged.
    Passthrough,
}

/// Matches request paths against the configured stream routes.
#[derive(Debug, Clone)]
pub struct Router {
    /// The stream routes, tried in order.
    routes: Vec<Arc<StreamConfig>>,
}

impl Router {
    /// A router over these routes, tried in order.
    pub fn new(routes: Vec<Arc<StreamConfig>>) -> Router {
        Router { routes }
    }

    /// A router over bare routes (no sources, no authentication) for these patterns, in
    /// order: for the tests and the routing benchmark, where only paths matter.
    pub fn of_patterns(patterns: &[&str]) -> Result<Router, String> {
        let routes = patterns
            .iter()
            .enumerate()
            .map(|(index, text)| {
                Ok(Arc::new(StreamConfig {
                    index,
                    path: PathPattern::parse(text).map_err(|why| format!("{text}: {why}"))?,
                    auth: false,
                    sources: Vec::new(),
                    query: Default::default(),
                    max_keys: 1,
                    events: Default::default(),
                }))
            })
            .collect::<Result<_, String>>()?;
        Ok(Router::new(routes))
    }

    /// Routes a request: its host first (every request must name one, once and validly), then
    /// its path. Called once per request, by whichever reads it first (hyper's connections
    /// through [`super::App::handle`], the HTTP/1.1 fast path to decide what it serves).
    pub fn route<B>(&self, request: &Request<B>) -> Result<Route, RouteError> {
        host::check(request.version(), request.uri(), request.headers())?;
        self.route_path(request.uri().path())
    }

    /// Routes a request path (without query).
    pub fn route_path(&self, path: &str) -> Result<Route, RouteError> {
        for route in &self.routes {
            if let Some(result) = route.path.matches(path) {
                let params = result?;
                return Ok(Route::Stream {
                    route: route.clone(),
                    params,
                });
            }
        }
        Ok(Route::Passthrough)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::path::MAX_PARAM_LEN;

    fn router() -> Router {
        Router::of_patterns(&["/api/v2/stream", "/api/v2/configurations/{id}/stream"])
            .expect("patterns")
    }

    fn stream(route: Result<Route, RouteError>) -> Option<(usize, Vec<String>)> {
        match route {
            Ok(Route::Stream { route, params }) => Some((route.index, params)),
            _ => None,
        }
    }

    #[test]
    fn stream_routes_and_passthrough() {
        let r = router();
        assert_eq!(stream(r.route_path("/api/v2/stream")), Some((0, vec![])));
        assert!(matches!(
            r.route_path("/api/v2/stream/status"),
            Ok(Route::Passthrough)
        ));
        assert!(matches!(
            r.route_path("/api/v2/stream/"),
            Ok(Route::Passthrough)
        ));
        assert_eq!(
            stream(r.route_path("/api/v2/configurations/abc-123/stream")),
            Some((1, vec!["abc-123".into()]))
        );
        assert!(matches!(
            r.route_path("/api/v2/configurations/abc/sentiment"),
            Ok(Route::Passthrough)
        ));
    }

    #[test]
    fn hostile_parameters_are_rejected() {
        let r = router();
        for bad in [
            "/api/v2/configurations/..%2fadmin/stream",
            "/api/v2/configurations/%2e%2e/stream",
            "/api/v2/configurations/a%00b/stream",
            "/api/v2/configurations/%ff/stream",
            "/api/v2/configurations/a%20b/stream",
            "/api/v2/configurations//stream",
        ] {
            assert!(
                matches!(r.route_path(bad), Err(RouteError::BadParam(_))),
                "{bad} should be rejected"
            );
        }
        let long = format!(
            "/api/v2/configurations/{}/stream",
            "a".repeat(MAX_PARAM_LEN + 1)
        );
        assert!(r.route_path(&long).is_err());
        let ok = format!(
            "/api/v2/configurations/{}/stream",
            "a".repeat(MAX_PARAM_LEN)
        );
        assert!(r.route_path(&ok).is_ok());
    }
}
