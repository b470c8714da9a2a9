//! Routing, the first request phase: is this request an event stream, and with which path
//! parameters? A request whose path matches a `[[stream]] path` is served by the stream phase,
//! everything else passes through. A bad parameter is a 400 that never reaches the origin.

use std::sync::Arc;

use crate::config::StreamConfig;
use crate::http::path::ParamError;

/// Why a request cannot be routed.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The path matches a stream route, but a parameter is unacceptable.
    #[error(transparent)]
    BadParam(#[from] ParamError),
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

    /// Routes a request path (without query).
    pub fn route(&self, path: &str) -> Result<Route, RouteError> {
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

    /// Whether `path` belongs to a stream route (parameters unchecked): the HTTP/1.1 fast
    /// path's test for a request it may serve.
    pub fn is_stream(&self, path: &str) -> bool {
        self.routes.iter().any(|r| r.path.matches(path).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::path::{MAX_PARAM_LEN, PathPattern};

    fn router() -> Router {
        let route = |path: &str, index| {
            Arc::new(StreamConfig {
                index,
                path: PathPattern::parse(path).expect("pattern"),
                auth: false,
                sources: Vec::new(),
                query: Default::default(),
                max_keys: 1,
                events: Default::default(),
            })
        };
        Router::new(vec![
            route("/api/v2/stream", 0),
            route("/api/v2/configurations/{id}/stream", 1),
        ])
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
        assert_eq!(stream(r.route("/api/v2/stream")), Some((0, vec![])));
        assert!(matches!(
            r.route("/api/v2/stream/status"),
            Ok(Route::Passthrough)
        ));
        assert!(matches!(r.route("/api/v2/stream/"), Ok(Route::Passthrough)));
        assert_eq!(
            stream(r.route("/api/v2/configurations/abc-123/stream")),
            Some((1, vec!["abc-123".into()]))
        );
        assert!(matches!(
            r.route("/api/v2/configurations/abc/sentiment"),
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
                matches!(r.route(bad), Err(RouteError::BadParam(_))),
                "{bad} should be rejected"
            );
            assert!(r.is_stream(bad), "{bad} is still a stream path");
        }
        let long = format!(
            "/api/v2/configurations/{}/stream",
            "a".repeat(MAX_PARAM_LEN + 1)
        );
        assert!(r.route(&long).is_err());
        let ok = format!(
            "/api/v2/configurations/{}/stream",
            "a".repeat(MAX_PARAM_LEN)
        );
        assert!(r.route(&ok).is_ok());
    }
}
