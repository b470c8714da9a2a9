//! The admin listener (`[listen] admin`): plain HTTP/1.1, meant for loopback or a private
//! network, never the public edge. What it answers is [`App::admin`]'s.

use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::ops::shutdown::ShutdownSignal;
use crate::request::App;

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
                async move {
                    Ok::<_, std::convert::Infallible>(
                        app.admin(request.method(), request.uri().path()),
                    )
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .http1_only()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
