//! Accepting: the listeners, a connection permit taken before each connection is served, the
//! answer to connections over the cap, and the drain on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::server::graceful::GracefulShutdown;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;

use super::connection::{Builders, OpenConnection, Serving};
use super::write_timeout::WriteTimeout;
use crate::config::ListenConfig;
use crate::ops::metrics::{Limit, Metrics};
use crate::ops::shutdown::ShutdownSignal;
use crate::request::{App, ConnInfo};

/// Kernel accept backlog, so bursts of new streams queue instead of being refused.
const BACKLOG: u32 = 4096;

/// The bound listeners, before serving.
pub struct Listeners {
    /// The TLS listener and the TLS configuration of its connections.
    pub https: Option<(TcpListener, Arc<ServerConfig>)>,
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

/// Fails if a socket already listens on `addr`, even one that allows sharing it. Serving
/// threads bind with `SO_REUSEPORT`, which would otherwise let them join the listeners of
/// another process of the same user (a stale instance) and split its traffic silently.
pub fn check_unused(addr: SocketAddr) -> Result<(), BindError> {
    if addr.port() == 0 {
        return Ok(());
    }
    let wrap = |source| BindError { addr, source };
    bound_socket(addr, false).map(drop).map_err(wrap)
}

/// Binds a TCP listener with a deep backlog; returns it with the address actually bound.
/// `reuse_port` (`SO_REUSEPORT`) lets each serving thread bind its own listener to the same
/// address, the kernel spreading new connections over them.
pub fn bind(addr: SocketAddr, reuse_port: bool) -> Result<(TcpListener, SocketAddr), BindError> {
    let wrap = |source| BindError { addr, source };
    let listener = bound_socket(addr, reuse_port)
        .and_then(|socket| socket.listen(BACKLOG))
        .map_err(wrap)?;
    let bound = listener.local_addr().map_err(wrap)?;
    Ok((listener, bound))
}

/// A socket bound to `addr` with `SO_REUSEADDR` (connections left in TIME_WAIT do not keep a
/// restart from binding), and `SO_REUSEPORT` when asked.
fn bound_socket(addr: SocketAddr, reuse_port: bool) -> std::io::Result<TcpSocket> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }?;
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    Ok(socket)
}

/// How an accept loop's connections ended at shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every connection closed within the grace period.
    InTime,
    /// Some were still open when it ended; they are dropped with their runtime.
    Cut,
}

impl Drained {
    /// Logs once for the whole proxy, however many accept loops (one per serving thread) were
    /// cut off: an operator reads one line per shutdown, not one per core.
    pub fn report(loops: impl IntoIterator<Item = Drained>, grace: Duration) {
        let cut = loops.into_iter().filter(|d| *d == Drained::Cut).count();
        if cut > 0 {
            tracing::warn!(
                grace_s = grace.as_secs(),
                accept_loops = cut,
                "connections still open after the shutdown grace period"
            );
        }
    }
}

/// Accepts and serves until `shutdown` fires, then drains connections for at most `grace`,
/// and says whether they all closed in time ([`Drained::report`] logs it).
/// `permits` holds `max_connections` slots, shared by every serving thread's listeners.
pub async fn serve(
    listeners: Listeners,
    app: Arc<App>,
    config: ListenConfig,
    mut shutdown: ShutdownSignal,
    permits: Arc<Semaphore>,
) -> Drained {
    let builders = Arc::new(Builders::new(&config));
    let graceful = GracefulShutdown::new();
    let (https, tls_config) = match listeners.https {
        Some((listener, tls_config)) => (Some(listener), Some(tls_config)),
        None => (None, None),
    };
    let http = listeners.http;
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    loop {
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
        // The slot is taken once a connection is in hand, not before accepting: serving
        // threads share the slots, and one waiting in `accept` must not hold one that a
        // connection on another thread needs.
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Over the cap: answer clearly instead of leaving the client in the backlog.
            refuse(stream, tls, &refusals, &app.metrics);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let stream = WriteTimeout::new(stream, config.write_timeout);
        let conn = ConnInfo { peer, tls };
        let watcher = graceful.watcher();
        let builders = builders.clone();
        let open = OpenConnection::new(app.metrics.clone(), tls);
        let app = app.clone();
        let tls_config = tls_config.clone().filter(|_| tls);
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
        match tls_config {
            None => tokio::spawn(serving.serve(stream, builders, true)),
            Some(tls_config) => tokio::spawn(async move {
                let handshake = Box::pin(tokio::time::timeout(
                    handshake_timeout,
                    super::tls::accept(tls_config, stream),
                ));
                // Boxed: a TLS session is over 1 KiB, and every layer of the connection's
                // future (this task, `Serving::serve`, the fast path) that takes the stream by
                // value would otherwise keep its own slot for it in the task for the stream's
                // whole life (BENCHMARKS.md, "TLS memory per stream").
                let tls_stream = match handshake.await {
                    Ok(Ok(tls_stream)) => Box::new(tls_stream),
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "TLS handshake failed");
                        serving.app.metrics.tls_handshake_failed(false);
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        serving.app.metrics.tls_handshake_failed(true);
                        return;
                    }
                };
                let h2 = tls_stream.alpn_protocol() == Some(b"h2");
                serving.serve(tls_stream, builders, !h2).await;
            }),
        };
    }
    drop(https);
    drop(http);
    app.close_streams();
    match tokio::time::timeout(config.shutdown_grace, graceful.shutdown()).await {
        Ok(()) => Drained::InTime,
        Err(_) => Drained::Cut,
    }
}

/// Pause after a failed accept (out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Connections being refused at once by one accept loop (each serving thread runs its own);
/// beyond it, extra ones are simply closed.
const MAX_REFUSALS: usize = 64;

/// The body of the answer to a plaintext connection over `max_connections`.
const OVER_CAPACITY: &str = "{\"detail\":\"the proxy is at its connection limit; retry shortly\",\"error\":\"too_many_connections\"}\n";

/// Answers a connection over the cap: a plaintext one gets a 503, a TLS one (which would need
/// a handshake first) is closed. Either way its file descriptor is released at once.
fn refuse(mut stream: TcpStream, tls: bool, refusals: &Arc<Semaphore>, metrics: &Metrics) {
    metrics.limited(Limit::MaxConnections);
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

async fn accept(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}
