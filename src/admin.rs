//! The admin listener (`[listen] admin`): `/healthz` (the process is up), `/readyz` (the
//! listeners are bound and the origin answered its last call), and `/metrics` (Prometheus
//! text). Plain HTTP/1.1, meant for loopback or a private network, never the public edge.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::net::TcpListener;

use crate::body::ProxyBody;
use crate::error::{json_bytes, json_response};
use crate::metrics::Gauges;
use crate::service::App;
use crate::shutdown::ShutdownSignal;

/// Serves the admin endpoints until shutdown.
pub async fn serve(listener: TcpListener, app: Arc<App>, mut shutdown: ShutdownSignal) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "admin accept failed");
                    continue;
                }
            },
            _ = shutdown.fired() => break,
        };
        let app = app.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let app = app.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&app, &request)) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .http1_only()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(app: &App, request: &Request<Incoming>) -> Response<ProxyBody> {
    if request.method() != Method::GET {
        return json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            json_bytes(&json!({"detail": "use GET"})),
        );
    }
    match request.uri().path() {
        "/healthz" => json_response(StatusCode::OK, json_bytes(&json!({"status": "ok"}))),
        "/readyz" if app.upstream.reachable() => {
            json_response(StatusCode::OK, json_bytes(&json!({"status": "ready"})))
        }
        "/readyz" => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json_bytes(
                &json!({"status": "not ready", "detail": "the origin did not answer the last call"}),
            ),
        ),
        "/metrics" => {
            let text = app.metrics.render(&Gauges {
                streams_open: app.streams.open_streams(),
                routes: app.streams.hub.per_route(),
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
            json_bytes(&json!({"detail": "admin endpoints: /healthz, /readyz, /metrics"})),
        ),
    }
}
