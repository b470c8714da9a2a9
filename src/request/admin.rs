//! The admin endpoints' answers, served by the edge's admin listener.

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};
use serde_json::json;

use super::App;
use super::body::ProxyBody;
use super::error::json_response;
use crate::http::json::json_bytes;
use crate::ops::metrics::Gauges;

impl App {
    /// Answers an admin request: `/healthz` (the process is up), `/readyz` (the listeners are
    /// bound: ready for traffic, with the origin's state as a detail), `/readyz/origin` (the
    /// origin answered its last call), and `/metrics` (Prometheus text).
    ///
    /// `/readyz` stays 200 through an origin outage on purpose: open streams keep serving
    /// their last state and resume by themselves, and an outage would otherwise take every
    /// instance out of the load balancer at once. Alert on `/readyz/origin` instead.
    pub fn admin(&self, method: &Method, path: &str) -> Response<ProxyBody> {
        let app = self;
        if method != Method::GET {
            return json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                json_bytes(&json!({"detail": "use GET"})),
            );
        }
        match path {
            "/healthz" => json_response(StatusCode::OK, json_bytes(&json!({"status": "ok"}))),
            "/readyz" => {
                let mut ready = json!({"status": "ready", "origin": origin_state(app)});
                if let Some(cluster) = app.streams.hub.cluster() {
                    // Redis down is a detail, not unreadiness: every instance then polls alone.
                    ready["cluster"] = if cluster.redis_up() {
                        json!({"redis": "up", "leases": cluster.leases()})
                    } else {
                        json!({"redis": "down", "detail": "Redis unreachable: this instance polls its stream keys alone until it is back"})
                    };
                }
                json_response(StatusCode::OK, json_bytes(&ready))
            }
            "/readyz/origin" if app.upstream.reachable() => {
                json_response(StatusCode::OK, json_bytes(&json!({"origin": "reachable"})))
            }
            "/readyz/origin" => json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                json_bytes(
                    &json!({"origin": "unreachable", "detail": "the origin did not answer the last call"}),
                ),
            ),
            "/metrics" => {
                let text = app.metrics.render(&Gauges {
                    streams_open: app.streams.open_streams(),
                    routes: app.streams.hub.per_route(),
                    hub: app.streams.hub.gauge(),
                });
                let mut response = Response::new(ProxyBody::full(Bytes::from(text)));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                response
            }
            _ => json_response(
                StatusCode::NOT_FOUND,
                json_bytes(
                    &json!({"detail": "admin endpoints: /healthz, /readyz, /readyz/origin, /metrics"}),
                ),
            ),
        }
    }
}

/// The origin's state as `/readyz` reports it.
fn origin_state(app: &App) -> &'static str {
    if app.upstream.reachable() {
        "reachable"
    } else {
        "unreachable"
    }
}
