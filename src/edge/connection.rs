//! Serving one accepted connection: HTTP/1.1 ones start on the fast path ([`super::h1`])
//! and go to hyper at the first request it does not serve; HTTP/2 ones go to hyper at once.
//! A connection idle with nothing in flight gives its slot back.
//!
//! Connections hyper serves are read through `ControlFrames` (a bound on HTTP/2 control
//! frames) and run their HTTP/2 streams under a stall watch (`stall`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::OwnedSemaphorePermit;

use super::coalesce::Coalesce;
use super::control_frames::ControlFrames;
use super::h1::Outcome;
use super::idle::{Activity, Tracked};
use super::stall::{ConnStreams, StreamExecutor, Watch};
use super::woken::Woken;
use crate::config::ListenConfig;
use crate::ops::metrics::Metrics;
use crate::ops::shutdown::ShutdownSignal;
use crate::origin::ClientBody;
use crate::request::{App, ConnInfo};

/// Largest HTTP/1.1 read buffer: bounds the request line and headers (431 beyond).
const MAX_H1_BUFFER: usize = 64 * 1024;
/// Largest HTTP/2 header list accepted.
const MAX_H2_HEADER_LIST: u32 = 64 * 1024;
/// HTTP/2 streams the client resets before they are accepted (rapid reset), at once; h2's
/// own default, set here so the bound is visible.
const MAX_H2_PENDING_RESETS: usize = 20;
/// HTTP/2 streams reset for the client's protocol errors before the connection is closed
/// with `ENHANCE_YOUR_CALM` (hyper's default is 1024; no honest client makes that many).
const MAX_H2_ERROR_RESETS: usize = 128;
/// HTTP/2 PINGs find dead peers on long-lived, quiet stream connections.
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
/// A PING unanswered this long closes the connection.
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// What hyper's connection builders are made from: one per connection, since each HTTP/2
/// connection runs its stream tasks through its own [`StreamExecutor`].
pub(super) struct Builders {
    /// `[listen] header_read_timeout_ms`.
    header_read_timeout: Duration,
    /// `[listen] write_timeout_ms`: also how long an HTTP/2 stream may make no progress.
    write_timeout: Duration,
    /// `[listen] max_streams_per_connection`.
    max_streams_per_connection: u32,
    /// `[listen] max_h2_control_frames_per_s`.
    max_control_frames_per_s: u32,
}

impl Builders {
    pub(super) fn new(config: &ListenConfig) -> Builders {
        Builders {
            header_read_timeout: config.header_read_timeout,
            write_timeout: config.write_timeout,
            max_streams_per_connection: config.max_streams_per_connection,
            max_control_frames_per_s: config.max_h2_control_frames_per_s,
        }
    }

    /// A builder for one connection, speaking the given versions.
    fn build(
        &self,
        streams: &Arc<ConnStreams>,
        versions: Versions,
    ) -> auto::Builder<StreamExecutor> {
        let mut builder = auto::Builder::new(StreamExecutor(streams.clone()));
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .max_buf_size(MAX_H1_BUFFER)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(MAX_H2_HEADER_LIST)
            .max_concurrent_streams(self.max_streams_per_connection)
            .max_pending_accept_reset_streams(MAX_H2_PENDING_RESETS)
            .max_local_error_reset_streams(MAX_H2_ERROR_RESETS)
            .keep_alive_interval(H2_PING_INTERVAL)
            .keep_alive_timeout(H2_PING_TIMEOUT);
        match versions {
            Versions::Detect => builder,
            Versions::Http1 => builder.http1_only(),
            Versions::Http2 => builder.http2_only(),
        }
    }
}

/// The HTTP versions hyper may speak on a connection.
#[derive(Debug, Clone, Copy)]
enum Versions {
    /// Plaintext from its first byte: HTTP/1.1, or h2c by the preface.
    Detect,
    /// TLS with ALPN `http/1.1`, or a connection that has carried HTTP/1.1 already (prior
    /// knowledge h2c is only allowed at the start of a connection, RFC 9113 §3.3).
    Http1,
    /// TLS with ALPN `h2`.
    Http2,
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
    /// Closes a connection waiting for a request on the fast path when shutdown begins.
    pub(super) shutdown: ShutdownSignal,
    /// Counts the connection as open while it lives.
    pub(super) _open: OpenConnection,
    /// Its slot under `max_connections`, given back when it closes.
    pub(super) _permit: OwnedSemaphorePermit,
}

impl Serving {
    /// Serves a connection: HTTP/1.1 ones (`h1`, or plaintext that may turn out to be h2c)
    /// start on the fast path ([`super::h1`]) and go to hyper at the first request it does
    /// not serve; HTTP/2 ones go to hyper at once.
    pub(super) async fn serve<I>(self, io: I, builders: Arc<Builders>, h1: bool)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        if !h1 {
            return self.serve_hyper(io, builders, Versions::Http2).await;
        }
        let outcome =
            super::h1::serve(io, &self.app, self.conn, self.idle_limit, &self.shutdown).await;
        match outcome {
            Outcome::Closed => {}
            Outcome::Handoff(io, answered) => {
                let versions = if self.conn.tls || answered {
                    Versions::Http1
                } else {
                    Versions::Detect
                };
                self.serve_hyper(io, builders, versions).await
            }
        }
    }

    /// Serves a connection with hyper, closing it once it has been idle (no response in
    /// flight, nothing arriving) for `idle_limit` ([`super::idle`]), or once all its HTTP/2
    /// streams stalled ([`super::stall`]).
    ///
    /// Boxed: hyper's connection state is large, and connections that never reach hyper (the
    /// fast path's event streams and keep-alive `GET`s) must not carry room for it in their
    /// task.
    fn serve_hyper<I>(
        self,
        io: I,
        builders: Arc<Builders>,
        versions: Versions,
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
            let woken = Arc::new(Woken::default());
            let streams = ConnStreams::new(
                conn.peer,
                builders.write_timeout,
                app.metrics.clone(),
                woken.clone(),
            );
            let builder = builders.build(&streams, versions);
            let io = ControlFrames::new(io, builders.max_control_frames_per_s, app.metrics.clone());
            let io = Coalesce::new(io, woken.clone());
            let activity = Activity::new();
            let requests = activity.clone();
            let service = service_fn(move |request| {
                let busy = requests.begin();
                let app = app.clone();
                async move {
                    // Polled in the stream's own task: on HTTP/2, the stall watch is found here.
                    let watch = Watch::current();
                    // Boxed: the request phases' future (authentication, validators) is large
                    // and lives only until the response head, while hyper keeps an HTTP/2
                    // stream's task, sized for its largest state, for the stream's whole life.
                    let response =
                        Box::pin(app.handle(request.map(ClientBody::Streamed), conn)).await;
                    let response = response.map(|body| Tracked { body, busy, watch });
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            let connection = watcher.watch(builder.serve_connection(TokioIo::new(io), service));
            // While the connection holds a batch of frames for its woken stream tasks
            // (`coalesce`), its task sleeps: the wakes their frames cause do not poll hyper.
            let mut connection = std::pin::pin!(connection);
            let connection = std::future::poll_fn(|cx| {
                std::task::ready!(woken.poll_release(cx));
                connection.as_mut().poll(cx)
            });
            tokio::select! {
                result = connection => {
                    if let Err(error) = result {
                        tracing::debug!(peer = %conn.peer, error = %error, "connection ended with an error");
                    }
                }
                _ = activity.idle(idle_limit) => tracing::debug!(peer = %conn.peer, "idle; closed"),
                _ = streams.all_stalled() => {
                    tracing::info!(peer = %conn.peer, "every HTTP/2 stream stalled; connection closed");
                }
            }
        })
    }
}
