//! The composition root: builds every part from the config, binds the listeners, and defines
//! the shutdown order once (stop accepting → end streams with a reconnect hint → drain).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::edge::threads::ThreadsError;
use crate::edge::tls::ReloadableCert;
use crate::edge::{self, BindError, Listeners};
use crate::ops::metrics::Metrics;
use crate::ops::shutdown::Shutdown;
use crate::origin::Upstream;
use crate::origin::tls::TlsError;
use crate::request::App;
use crate::request::auth::{AuthSetupError, Authenticator};
use crate::request::cors::Cors;
use crate::request::forwarding::Forwarding;
use crate::request::router::Router;
use crate::stream::Streams;
use crate::stream::cluster::{Cluster, ClusterError};
use crate::stream::hub::Hub;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A certificate, key or CA file is missing or unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A listener address is taken or not permitted.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The token validator cannot be set up.
    #[error(transparent)]
    Auth(#[from] AuthSetupError),
    /// The Redis client refused `[cluster] redis`.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// `[listen] serving_threads` could not be started.
    #[error(transparent)]
    Threads(#[from] ThreadsError),
}

/// A running proxy.
pub struct Proxy {
    /// Where the HTTPS listener is bound (the real port when configured with port 0).
    https_addr: Option<SocketAddr>,
    /// Where the plaintext listener is bound.
    http_addr: Option<SocketAddr>,
    /// Where the admin listener is bound.
    admin_addr: Option<SocketAddr>,
    /// Shared state, for introspection.
    app: Arc<App>,
    /// The HTTPS listener's certificate, reloadable.
    cert: Option<Arc<ReloadableCert>>,
    /// Firing it starts a graceful shutdown.
    shutdown: Shutdown,
    /// The accept loop; it ends when every connection has drained (or the grace ran out).
    serving: JoinHandle<()>,
}

/// Longest wait on shutdown for the cluster leases to be given back.
const LEASE_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl Proxy {
    /// Loads certificates, binds the listeners and starts serving in the background.
    pub async fn start(config: Config) -> Result<Proxy, StartError> {
        let upstream = Arc::new(Upstream::new(&config.upstream)?);
        let cert = match &config.tls {
            Some(files) if config.listen.https.is_some() => Some(ReloadableCert::load(files)?),
            _ => None,
        };
        let tls = cert.clone().map(edge::tls::server_config).transpose()?;
        // Serving threads each bind their own copy of the listeners (`SO_REUSEPORT`), once
        // the port is known to be free of other processes.
        let reuse_port = config.listen.serving_threads > 0;
        let listen = |addr| {
            if reuse_port {
                edge::accept::check_unused(addr)?;
            }
            edge::bind(addr, reuse_port)
        };
        let (https, https_addr) = match (config.listen.https, tls) {
            (Some(addr), Some(tls_config)) => {
                let (listener, bound) = listen(addr)?;
                (Some((listener, tls_config)), Some(bound))
            }
            _ => (None, None),
        };
        let (http, http_addr) = match config.listen.http {
            Some(addr) => {
                let (listener, bound) = listen(addr)?;
                (Some(listener), Some(bound))
            }
            None => (None, None),
        };

        let admin = config
            .listen
            .admin
            .map(|addr| edge::bind(addr, false))
            .transpose()?;
        let admin_addr = admin.as_ref().map(|(_, addr)| *addr);
        let (shutdown, shutdown_rx) = Shutdown::new();
        let metrics = Arc::new(Metrics::default());
        let routes: Vec<_> = config.streams.iter().cloned().map(Arc::new).collect();
        let cluster = config
            .cluster
            .clone()
            .map(|c| Cluster::start(c, &config.sse, metrics.clone(), shutdown_rx.clone()))
            .transpose()?;
        let hub = Hub::new(
            routes.clone(),
            upstream.clone(),
            config.sse.clone(),
            shutdown_rx.clone(),
            metrics.clone(),
            cluster,
        );
        let auth = config
            .auth
            .clone()
            .map(|a| Authenticator::new(a, metrics.clone()))
            .transpose()?;
        // Without [auth] no identity is sent, but the default header is still never a
        // client's to set.
        let identity_header = config
            .auth
            .as_ref()
            .map_or(http::HeaderName::from_static("x-edge-user"), |a| {
                a.identity_header.clone()
            });
        let app = Arc::new(App {
            identity_header,
            router: Router::new(routes),
            upstream,
            auth,
            streams: Streams::new(hub, config.sse.clone()),
            retry_ms: config.sse.retry_ms,
            metrics,
            forwarding: Forwarding {
                trusted_proxies: config.listen.trusted_proxies.clone(),
                keep_server_header: config.listen.keep_server_header,
            },
            cors: config.cors.clone().map(Cors::new),
            events: config.sse.events.clone(),
        });
        if let Some((listener, _)) = admin {
            tokio::spawn(edge::admin::serve(
                listener,
                app.clone(),
                shutdown_rx.clone(),
            ));
        }
        let listeners = Listeners { https, http };
        // One set of `max_connections` slots, whichever thread accepts.
        let permits = Arc::new(Semaphore::new(config.listen.max_connections));
        let serving = match config.listen.serving_threads {
            0 => {
                let serve = edge::serve(
                    listeners,
                    app.clone(),
                    config.listen.clone(),
                    shutdown_rx,
                    permits,
                );
                let grace = config.listen.shutdown_grace;
                tokio::spawn(async move { edge::Drained::report([serve.await], grace) })
            }
            count => tokio::spawn(
                edge::threads::spawn(
                    count,
                    listeners,
                    &app,
                    &config.listen,
                    &shutdown_rx,
                    &permits,
                )
                .await?,
            ),
        };
        let shown = |addr: Option<SocketAddr>| addr.map_or("off".to_owned(), |a| a.to_string());
        tracing::info!(
            https = %shown(https_addr),
            http = %shown(http_addr),
            admin = %shown(admin_addr),
            upstream = %config.upstream.authority,
            streams = config.streams.len(),
            serving_threads = config.listen.serving_threads,
            "sse-edge listening"
        );
        Ok(Proxy {
            https_addr,
            http_addr,
            admin_addr,
            app,
            cert,
            shutdown,
            serving,
        })
    }

    /// The bound HTTPS address, if that listener is configured.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https_addr
    }

    /// The bound plaintext address, if that listener is configured.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The bound admin address, if that listener is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Reads the TLS certificate and key again (certificate rotation): new connections get
    /// the new pair, open ones keep going. On error the old pair stays. `Ok(false)`: no HTTPS.
    pub fn reload_tls(&self) -> Result<bool, TlsError> {
        match &self.cert {
            Some(cert) => cert.reload().map(|()| true),
            None => Ok(false),
        }
    }

    /// Channels with running pollers now (one per distinct stream key).
    pub fn pollers(&self) -> usize {
        self.app.streams.hub.channel_count()
    }

    /// Event streams open now.
    pub fn open_streams(&self) -> usize {
        self.app.streams.open_streams()
    }

    /// Stops accepting, ends every stream with a reconnect hint, lets other requests finish
    /// within the grace period, and returns when done.
    pub async fn shutdown(self) {
        self.shutdown.fire();
        if let Err(error) = self.serving.await {
            tracing::error!(%error, "the accept loop failed");
        }
        // The streams have ended and their channels retired: their cluster leases are given
        // back before the process exits, so the other instances poll those keys at once.
        if let Some(cluster) = self.app.streams.hub.cluster() {
            cluster.settled(LEASE_RELEASE_WAIT).await;
        }
    }
}
