//! Serving one accepted connection: HTTP/1.1 ones start on the event-stream fast path
//! ([`super::h1`]) and go to hyper at the first request it does not serve; HTTP/2 ones go to
//! hyper at once. A connection idle with nothing in flight gives its slot back.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::Response;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::OwnedSemaphorePermit;

use super::h1::Outcome;
use super::idle::{Activity, Tracked};
use crate::config::ListenConfig;
use crate::ops::metrics::Metrics;
use crate::ops::shutdown::ShutdownSignal;
use crate::origin::ClientBody;
use crate::request::body::ProxyBody;
use crate::request::{App, ConnInfo};

/// Largest HTTP/1.1 read buffer: bounds the request line and headers (431 beyond).
const MAX_H1_BUFFER: usize = 64 * 1024;
/// Largest HTTP/2 header list accepted.
const MAX_H2_HEADER_LIST: u32 = 64 * 1024;
/// Concurrent HTTP/2 streams per connection.
const MAX_H2_STREAMS: u32 = 256;
/// HTTP/2 PINGs find dead peers on long-lived, quiet stream connections.
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
/// A PING unanswered this long closes the connection.
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// Per-protocol connection builders, made once.
pub(super) struct Builders {
    /// Plaintext: HTTP/1.1 or h2c by the connection preface.
    auto: auto::Builder<TokioExecutor>,
    /// TLS with ALPN `http/1.1` (or none).
    http1: auto::Builder<TokioExecutor>,
    /// TLS with ALPN `h2`.
    http2: auto::Builder<TokioExecutor>,
}

impl Builders {
    pub(super) fn new(config: &ListenConfig) -> Builders {
        let mut auto = auto::Builder::new(TokioExecutor::new());
        auto.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            .max_buf_size(MAX_H1_BUFFER)
            .keep_alive(true);
        auto.http2()
            .timer(TokioTimer::new())
            .max_header_list_size(MAX_H2_HEADER_LIST)
            .max_concurrent_streams(MAX_H2_STREAMS)
            .keep_alive_interval(H2_PING_INTERVAL)
            .keep_alive_timeout(H2_PING_TIMEOUT);
        Builders {
            http1: auto.clone().http1_only(),
            http2: auto.clone().http2_only(),
            auto,
        }
    }
}

/// Counts a connection in the open-connections gauge for as long as it lives.
pub(super) struct OpenConnection {
    metrics: Arc<Metrics>,
    tls: bool,
}

impl OpenConnection {
    pub(super) fn new(metrics: Arc<Metrics>, tls: bool) -> OpenConnection {
        OpenConnection::gauge(&metrics, tls).fetch_add(1, Ordering::Relaxed);
        OpenConnection { metrics, tls }
    }

    fn gauge(metrics: &Metrics, tls: bool) -> &AtomicI64 {
        if tls {
            &metrics.connections_tls
        } else {
            &metrics.connections_plain
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        OpenConnection::gauge(&self.metrics, self.tls).fetch_sub(1, Ordering::Relaxed);
    }
}

/// One accepted connection and what serving it needs.
pub(super) struct Serving {
    pub(super) app: Arc<App>,
    pub(super) conn: ConnInfo,
    /// Keeps graceful shutdown waiting until this connection is done.
    pub(super) watcher: Watcher,
    /// How long a connection may wait for a request head, or stay idle between requests.
    pub(super) idle_limit: Duration,
    /// Closes a connection still waiting for its first request when shutdown begins.
    pub(super) shutdown: ShutdownSignal,
    /// Counts the connection as open while it lives.
    pub(super) _open: OpenConnection,
    /// Its slot under `max_connections`, given back when it closes.
    pub(super) _permit: OwnedSemaphorePermit,
}

impl Serving {
    /// Serves a connection: HTTP/1.1 ones (`h1`, or plaintext that may turn out to be h2c)
    /// start on the event-stream fast path ([`super::h1`]) and go to hyper at the
    /// first request it does not serve; HTTP/2 ones go to hyper at once.
    pub(super) async fn serve<I>(mut self, io: I, builders: Arc<Builders>, h1: bool)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let builder = move |builders: &Builders| match (self.conn.tls, h1) {
            (false, _) => builders.auto.clone(),
            (true, true) => builders.http1.clone(),
            (true, false) => builders.http2.clone(),
        };
        if !h1 {
            return self.serve_hyper(io, builder(&builders), None).await;
        }
        let outcome = super::h1::serve(
            io,
            &self.app,
            self.conn,
            self.idle_limit,
            &mut self.shutdown,
        )
        .await;
        match outcome {
            Outcome::Closed => {}
            Outcome::Handoff(io, answer) => {
                let answer = answer.map(|answer| *answer);
                self.serve_hyper(io, builder(&builders), answer).await
            }
        }
    }

    /// Serves a connection with hyper, closing it once it has been idle (no response in
    /// flight, nothing arriving) for `idle_limit`: see [`super::idle`]. `answer` is the
    /// answer to the first request, when the fast path has already handled it.
    ///
    /// Boxed: hyper's connection state is large, and connections that never reach hyper (the
    /// fast path's event streams) must not carry room for it in their task.
    fn serve_hyper<I>(
        self,
        io: I,
        builder: auto::Builder<TokioExecutor>,
        answer: Option<Response<ProxyBody>>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        Box::pin(async move {
            let Serving {
                app,
                conn,
                watcher,
                idle_limit,
                _open,
                _permit,
                ..
            } = self;
            let activity = Activity::new();
            let requests = activity.clone();
            let answer = Arc::new(Mutex::new(answer));
            let service = service_fn(move |request| {
                let busy = requests.begin();
                let app = app.clone();
                let answer = answer.lock().unwrap_or_else(PoisonError::into_inner).take();
                async move {
                    let response = match answer {
                        Some(answer) => answer,
                        None => app.handle(request.map(ClientBody::Streamed), conn).await,
                    };
                    Ok::<_, std::convert::Infallible>(response.map(|body| Tracked { body, busy }))
                }
            });
            let connection = watcher.watch(builder.serve_connection(TokioIo::new(io), service));
            tokio::select! {
                result = connection => {
                    if let Err(error) = result {
                        tracing::debug!(peer = %conn.peer, error = %error, "connection ended with an error");
                    }
                }
                _ = activity.idle(idle_limit) => tracing::debug!(peer = %conn.peer, "idle; closed"),
            }
        })
    }
}
