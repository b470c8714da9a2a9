//! Listeners: accept, TLS, and serving each connection with the protocol it chose.
//!
//! One accept loop serves both listeners. A connection permit (`[listen] max_connections`) is
//! taken before a connection is served, so the process never runs out of file descriptors.
//! Over the limit, newcomers are answered at once: a plaintext one gets a JSON 503 with
//! `Connection: close`, a TLS one (which would need a handshake first) is closed. Each connection is then bounded
//! while it has not yet sent a request: the TLS handshake by `tls_handshake_timeout`, HTTP/1.1
//! headers by `header_read_timeout`, and a write the client does not read by `write_timeout`
//! ([`WriteTimeout`]). HTTPS connections are served as HTTP/2 or HTTP/1.1 by
//! ALPN; plaintext ones auto-detect HTTP/1.1 or h2c. On shutdown the loop stops accepting and
//! every connection is asked to finish gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::config::ListenConfig;
use crate::h1_stream::Outcome;
use crate::idle::{Activity, Tracked};
use crate::metrics::Metrics;
use crate::service::App;
use crate::shutdown::ShutdownSignal;
use crate::write_timeout::WriteTimeout;

/// Largest HTTP/1.1 read buffer: bounds the request line and headers (431 beyond).
const MAX_H1_BUFFER: usize = 64 * 1024;
/// Largest HTTP/2 header list accepted.
const MAX_H2_HEADER_LIST: u32 = 64 * 1024;
/// Concurrent HTTP/2 streams per connection.
const MAX_H2_STREAMS: u32 = 256;
/// Kernel accept backlog, so bursts of new streams queue instead of being refused.
const BACKLOG: u32 = 4096;
/// HTTP/2 PINGs find dead peers on long-lived, quiet stream connections.
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
/// A PING unanswered this long closes the connection.
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// What the request handler knows about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// The client's address (for `X-Forwarded-For`).
    pub peer: SocketAddr,
    /// Whether the connection is TLS (for `X-Forwarded-Proto`).
    pub tls: bool,
}

/// The bound listeners, before serving.
pub struct Listeners {
    /// The TLS listener and its acceptor.
    pub https: Option<(TcpListener, TlsAcceptor)>,
    /// The plaintext listener.
    pub http: Option<TcpListener>,
}

/// A listener address that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    /// The address from `[listen]`.
    pub addr: SocketAddr,
    /// Why (address in use, permission denied...).
    pub source: std::io::Error,
}

/// Binds a TCP listener with a deep backlog; returns it with the address actually bound.
pub fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), BindError> {
    let wrap = |source| BindError { addr, source };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(wrap)?;
    socket.set_reuseaddr(true).map_err(wrap)?;
    socket.bind(addr).map_err(wrap)?;
    let listener = socket.listen(BACKLOG).map_err(wrap)?;
    let bound = listener.local_addr().map_err(wrap)?;
    Ok((listener, bound))
}

/// Per-protocol connection builders, made once.
struct Builders {
    /// Plaintext: HTTP/1.1 or h2c by the connection preface.
    auto: auto::Builder<TokioExecutor>,
    /// TLS with ALPN `http/1.1` (or none).
    http1: auto::Builder<TokioExecutor>,
    /// TLS with ALPN `h2`.
    http2: auto::Builder<TokioExecutor>,
}

impl Builders {
    fn new(config: &ListenConfig) -> Builders {
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

/// Accepts and serves until `shutdown` fires, then drains connections for at most `grace`.
pub async fn serve(
    listeners: Listeners,
    app: Arc<App>,
    config: ListenConfig,
    mut shutdown: ShutdownSignal,
) {
    let builders = Arc::new(Builders::new(&config));
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let graceful = GracefulShutdown::new();
    let (https, acceptor) = match listeners.https {
        Some((listener, acceptor)) => (Some(listener), Some(acceptor)),
        None => (None, None),
    };
    let http = listeners.http;
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    loop {
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            // Over the cap: wait for a free slot, and meanwhile answer newcomers clearly
            // instead of leaving them in the backlog.
            Err(_) => tokio::select! {
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
                accepted = accept(https.as_ref()) => {
                    refuse(accepted, true, &refusals, &app.metrics).await;
                    continue;
                }
                accepted = accept(http.as_ref()) => {
                    refuse(accepted, false, &refusals, &app.metrics).await;
                    continue;
                }
                _ = shutdown.fired() => break,
            },
        };
        let (accepted, tls) = tokio::select! {
            accepted = accept(https.as_ref()) => (accepted, true),
            accepted = accept(http.as_ref()) => (accepted, false),
            _ = shutdown.fired() => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // Out of file descriptors or a transient kernel error: back off briefly
                // instead of spinning on the same error.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let stream = WriteTimeout::new(stream, config.write_timeout);
        let conn = ConnInfo { peer, tls };
        let watcher = graceful.watcher();
        let builders = builders.clone();
        let open = OpenConnection::new(app.metrics.clone(), tls);
        let app = app.clone();
        let acceptor = acceptor.clone().filter(|_| tls);
        let handshake_timeout = config.tls_handshake_timeout;
        let serving = Serving {
            app,
            conn,
            watcher,
            idle_limit: config.header_read_timeout,
            shutdown: shutdown.clone(),
            _open: open,
            _permit: permit,
        };
        // Plaintext and TLS connections are separate tasks so that each is only as large as
        // what its own kind of connection holds (a TLS session is over 1 KiB).
        match acceptor {
            None => tokio::spawn(serving.serve(stream, builders, true)),
            Some(acceptor) => tokio::spawn(async move {
                let handshake = Box::pin(tokio::time::timeout(
                    handshake_timeout,
                    acceptor.accept(stream),
                ));
                let tls_stream = match handshake.await {
                    Ok(Ok(tls_stream)) => tls_stream,
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
                let h2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2");
                serving.serve(tls_stream, builders, !h2).await;
            }),
        };
    }
    drop(https);
    drop(http);
    app.streams.hub.close_all(app.retry_ms);
    if tokio::time::timeout(config.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_s = config.shutdown_grace.as_secs(),
            "connections still open after the shutdown grace period"
        );
    }
}

/// Pause after a failed accept (out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Connections being refused at once; beyond it, extra ones are simply closed.
const MAX_REFUSALS: usize = 64;

/// The body of the answer to a plaintext connection over `max_connections`.
const OVER_CAPACITY: &str = "{\"detail\":\"the proxy is at its connection limit; retry shortly\",\"error\":\"too_many_connections\"}\n";

/// Answers a connection over the cap: a plaintext one gets a 503, a TLS one (which would need
/// a handshake first) is closed. Either way its file descriptor is released at once. A failed
/// accept (out of file descriptors) backs off instead of spinning on the same error.
async fn refuse(
    accepted: std::io::Result<(TcpStream, SocketAddr)>,
    tls: bool,
    refusals: &Arc<Semaphore>,
    metrics: &Metrics,
) {
    let (mut stream, _) = match accepted {
        Ok(pair) => pair,
        Err(error) => {
            tracing::warn!(%error, "accept failed");
            tokio::time::sleep(ACCEPT_BACKOFF).await;
            return;
        }
    };
    metrics.limited(crate::metrics::Limit::MaxConnections);
    let Ok(refusal) = refusals.clone().try_acquire_owned() else {
        return;
    };
    if tls {
        return;
    }
    tokio::spawn(async move {
        let _refusal = refusal;
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
             connection: close\r\ncontent-length: {}\r\n\r\n{OVER_CAPACITY}",
            OVER_CAPACITY.len()
        );
        let write = tokio::io::AsyncWriteExt::write_all(&mut stream, answer.as_bytes());
        let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
    });
}

/// Counts a connection in the open-connections gauge for as long as it lives.
struct OpenConnection {
    metrics: Arc<Metrics>,
    tls: bool,
}

impl OpenConnection {
    fn new(metrics: Arc<Metrics>, tls: bool) -> OpenConnection {
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

async fn accept(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// One accepted connection and what serving it needs.
struct Serving {
    app: Arc<App>,
    conn: ConnInfo,
    /// Keeps graceful shutdown waiting until this connection is done.
    watcher: Watcher,
    /// How long a connection may wait for a request head, or stay idle between requests.
    idle_limit: Duration,
    /// Closes a connection still waiting for its first request when shutdown begins.
    shutdown: ShutdownSignal,
    /// Counts the connection as open while it lives.
    _open: OpenConnection,
    /// Its slot under `max_connections`, given back when it closes.
    _permit: OwnedSemaphorePermit,
}

impl Serving {
    /// Serves a connection: HTTP/1.1 ones (`h1`, or plaintext that may turn out to be h2c)
    /// start on the event-stream fast path ([`crate::h1_stream`]) and go to hyper at the
    /// first request it does not serve; HTTP/2 ones go to hyper at once.
    async fn serve<I>(mut self, io: I, builders: Arc<Builders>, h1: bool)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let builder = move |builders: &Builders| match (self.conn.tls, h1) {
            (false, _) => builders.auto.clone(),
            (true, true) => builders.http1.clone(),
            (true, false) => builders.http2.clone(),
        };
        if !h1 {
            return self.serve_hyper(io, builder(&builders)).await;
        }
        let outcome = crate::h1_stream::serve(
            io,
            &self.app,
            self.conn,
            self.idle_limit,
            &mut self.shutdown,
        )
        .await;
        match outcome {
            Outcome::Closed => {}
            Outcome::Handoff(io) => self.serve_hyper(io, builder(&builders)).await,
        }
    }

    /// Serves a connection with hyper, closing it once it has been idle (no response in
    /// flight, nothing arriving) for `idle_limit`: see [`crate::idle`].
    ///
    /// Boxed: hyper's connection state is large, and connections that never reach hyper (the
    /// fast path's event streams) must not carry room for it in their task.
    fn serve_hyper<I>(
        self,
        io: I,
        builder: auto::Builder<TokioExecutor>,
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
            let service = service_fn(move |request| {
                let busy = requests.begin();
                let app = app.clone();
                async move {
                    let response = app.handle(request, conn).await;
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
