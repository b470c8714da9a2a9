//! Serving threads (`[listen] serving_threads`): nginx's worker model. Each thread runs a
//! single-threaded runtime with its own `SO_REUSEPORT` copy of the listeners, so the kernel
//! spreads new connections over the threads, and a connection, its requests and their origin
//! connections (kept per thread: [`serve_on_this_thread`]) stay on the thread that accepted it:
//! no work stealing and no wake-up that crosses threads within a request. A publication wakes
//! the thread's subscribers through its relay, with one wake-up that crosses threads.
//!
//! Everything else (the admin listener, every channel's supervisor with its pollers and
//! heartbeats, cluster links) stays on the shared runtime, so a stream opened from one thread
//! and followed from others never depends on that thread's runtime. Each thread drains its
//! own connections on shutdown, as [`super::accept::serve`] does; the proxy's shutdown ends
//! when every thread has, with one warning if any was cut off ([`Drained::report`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};

use super::accept::{self, BindError, Drained, Listeners};
use crate::config::ListenConfig;
use crate::ops::shutdown::ShutdownSignal;
use crate::request::{App, serve_on_this_thread};

/// Why the serving threads could not start.
#[derive(Debug, thiserror::Error)]
pub enum ThreadsError {
    /// A thread's copy of a listener could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The kernel refused a thread, its runtime, or a listener's handover to it.
    #[error("cannot start a serving thread: {0}")]
    Start(#[from] std::io::Error),
}

/// A listener handed to a serving thread: taken off the shared runtime's reactor, registered
/// with the thread's own once it runs.
struct Handover {
    /// The TLS listener and the TLS configuration of its connections.
    https: Option<(std::net::TcpListener, Arc<ServerConfig>)>,
    /// The plaintext listener.
    http: Option<std::net::TcpListener>,
}

/// Starts `count` serving threads on `listeners` (bound with `SO_REUSEPORT`): the first takes
/// them, each other binds its own copies. Once every thread has started, returns a future
/// that ends when every thread has stopped serving (after `shutdown` fired and its
/// connections drained) and dropped its runtime.
pub async fn spawn(
    count: usize,
    listeners: Listeners,
    app: &Arc<App>,
    config: &ListenConfig,
    shutdown: &ShutdownSignal,
    permits: &Arc<Semaphore>,
) -> Result<impl Future<Output = ()> + Send + 'static, ThreadsError> {
    let Listeners { https, http } = listeners;
    let (mut https_first, tls_config) = match https {
        Some((listener, tls_config)) => (Some(listener), Some(tls_config)),
        None => (None, None),
    };
    let mut http_first = http;
    let https_addr = https_first
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;
    let http_addr = http_first
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;
    let mut handovers = Vec::with_capacity(count);
    for _ in 0..count {
        let https = match (https_addr, &tls_config) {
            (Some(addr), Some(tls_config)) => {
                Some((copy(&mut https_first, addr)?, tls_config.clone()))
            }
            _ => None,
        };
        let http = http_addr
            .map(|addr| copy(&mut http_first, addr))
            .transpose()?;
        handovers.push(Handover { https, http });
    }
    let mut stopped = Vec::with_capacity(count);
    for (index, handover) in handovers.into_iter().enumerate() {
        let (ready, started) = oneshot::channel::<std::io::Result<()>>();
        let (done, finished) = oneshot::channel::<Drained>();
        let (app, config, shutdown, permits) = (
            app.clone(),
            config.clone(),
            shutdown.clone(),
            permits.clone(),
        );
        std::thread::Builder::new()
            .name(format!("sse-edge-serve-{index}"))
            .spawn(move || {
                let drained = serve(handover, app, config, shutdown, permits, ready);
                // Sent once the runtime, and every task left on it, is gone.
                let _ = done.send(drained);
            })?;
        // Started means its runtime runs and its listeners are registered with it. A thread
        // that cannot start fails the proxy's start; those already started stop with the
        // shutdown signal, dropped with the half-built proxy.
        match started.await {
            Ok(Ok(())) => stopped.push(finished),
            Ok(Err(error)) => return Err(error.into()),
            Err(_) => {
                return Err(std::io::Error::other("a serving thread died while starting").into());
            }
        }
    }
    let grace = config.shutdown_grace;
    Ok(async move {
        let mut drained = Vec::with_capacity(stopped.len());
        for finished in stopped {
            match finished.await {
                Ok(loop_drained) => drained.push(loop_drained),
                // It ended without saying so: it panicked. Its connections were dropped (their
                // clients reconnect to the other threads); channels live on the shared runtime.
                Err(_) => tracing::error!("a serving thread panicked; its connections were closed"),
            }
        }
        Drained::report(drained, grace);
    })
}

/// A serving thread's life: its own runtime, made here so that nothing of it is ever dropped
/// on the thread that starts the proxy; its listeners registered with it; served until
/// shutdown. `ready` says whether it started; one that did not has nothing to drain.
fn serve(
    handover: Handover,
    app: Arc<App>,
    config: ListenConfig,
    shutdown: ShutdownSignal,
    permits: Arc<Semaphore>,
    ready: oneshot::Sender<std::io::Result<()>>,
) -> Drained {
    let relay = serve_on_this_thread();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = ready.send(Err(error));
            return Drained::InTime;
        }
    };
    runtime.block_on(async move {
        let registered = (|| {
            let https = handover
                .https
                .map(|(listener, tls_config)| {
                    TcpListener::from_std(listener).map(|l| (l, tls_config))
                })
                .transpose()?;
            let http = handover.http.map(TcpListener::from_std).transpose()?;
            Ok::<_, std::io::Error>(Listeners { https, http })
        })();
        match registered {
            Ok(listeners) => {
                let _ = ready.send(Ok(()));
                // Ends with the runtime, once the thread has stopped serving.
                tokio::spawn(relay);
                accept::serve(listeners, app, config, shutdown, permits).await
            }
            Err(error) => {
                let _ = ready.send(Err(error));
                Drained::InTime
            }
        }
    })
}

/// A thread's copy of a listener: the first thread takes the one bound at startup, each other
/// binds its own at the same address (the real port when configured with port 0). Taken off
/// the shared runtime's reactor, to be registered with the thread's own.
fn copy(
    first: &mut Option<TcpListener>,
    addr: SocketAddr,
) -> Result<std::net::TcpListener, ThreadsError> {
    let listener = match first.take() {
        Some(listener) => listener,
        None => accept::bind(addr, true)?.0,
    };
    Ok(listener.into_std()?)
}
