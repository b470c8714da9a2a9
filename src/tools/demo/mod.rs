//! `sse-edge demo`: the proxy from `proxy.toml` in front of a built-in buffered sample origin.
//!
//! The origin binds the `[upstream] url` address (it must be loopback), a self-signed
//! `localhost` certificate is written where `[tls]` points if none is there, and
//! `DASHBOARD_API_KEY` gets a demo value when it is not set, so the shipped `proxy.toml`
//! runs as is. It serves this machine only: every listener is moved to 127.0.0.1 (unless
//! `--listen-as-configured`, for a stand-in origin in a container).

pub mod certs;
pub mod origin;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use crate::config::{Config, ConfigError};
use crate::{Proxy, StartError};

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// `proxy.toml` is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The demo certificate could not be written.
    #[error(transparent)]
    Cert(#[from] certs::CertError),
    /// The sample origin needs a loopback `http://` upstream address to bind.
    #[error(
        "the demo origin binds [upstream] url, which must be http://127.0.0.1:PORT (found {0})"
    )]
    NotLoopback(String),
    /// The sample origin's address is taken.
    #[error(
        "cannot start the demo origin on {addr}: {source}{}",
        busy_hint(source)
    )]
    Origin {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The proxy itself could not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// A listener's port is taken (the bind error's text): most likely by a demo started
    /// earlier.
    #[error("{0}{hint}", hint = busy_hint(&std::io::Error::from(std::io::ErrorKind::AddrInUse)))]
    PortInUse(String),
}

/// What to do about an address in use (the usual cause: a demo already running).
fn busy_hint(error: &std::io::Error) -> &'static str {
    if error.kind() == std::io::ErrorKind::AddrInUse {
        "\n  a demo (or another sse-edge) may already be running: stop it (Ctrl-C in its \
         terminal), or use other ports in [listen] and [upstream] url with --config"
    } else {
        ""
    }
}

/// The demo serves this machine only: listeners on any other address (the shipped
/// `proxy.toml` listens on 0.0.0.0:8443 for real use) move to 127.0.0.1, same port.
fn loopback_only(listen: &mut crate::config::ListenConfig) {
    for addr in [&mut listen.https, &mut listen.http, &mut listen.admin]
        .into_iter()
        .flatten()
    {
        if !addr.ip().is_loopback() {
            addr.set_ip(IpAddr::from([127, 0, 0, 1]));
        }
    }
}

/// How the demo origin's clock runs.
#[derive(Debug, Clone, Copy)]
pub struct DemoClock {
    /// Delay of the origin's first answer after a quiet spell.
    pub cold_start: Duration,
    /// How often its data changes.
    pub tick: Duration,
}

impl Default for DemoClock {
    fn default() -> Self {
        DemoClock {
            cold_start: Duration::from_millis(700),
            tick: Duration::from_secs(3),
        }
    }
}

/// Starts the sample origin and the proxy, and prints what to try. The listeners move to
/// 127.0.0.1 unless `as_configured` (a container stand-in that other containers reach).
pub async fn run(
    config_path: &Path,
    clock: DemoClock,
    as_configured: bool,
) -> Result<Proxy, DemoError> {
    let api_key = std::env::var("DASHBOARD_API_KEY")
        .unwrap_or_else(|_| format!("demo-key-{:08x}", fastrand::u32(..)));
    let text = std::fs::read_to_string(config_path).map_err(|source| ConfigError::Read {
        path: config_path.to_owned(),
        source,
    })?;
    let base_dir = config_path.parent().unwrap_or(Path::new("."));
    let mut config = Config::from_toml(
        &text,
        &config_path.display().to_string(),
        base_dir,
        &|name| {
            std::env::var(name)
                .ok()
                .or_else(|| (name == "DASHBOARD_API_KEY").then(|| api_key.clone()))
        },
    )?;
    if !as_configured {
        loopback_only(&mut config.listen);
    }
    if let Some(tls) = &config.tls
        && (!tls.cert.exists() || !tls.key.exists())
    {
        certs::write_localhost(&tls.cert, &tls.key)?;
        println!(
            "wrote a self-signed localhost certificate to {}",
            tls.cert.display()
        );
    }
    let upstream = &config.upstream;
    let origin_addr = match (
        upstream.scheme.as_str(),
        upstream.authority.host().parse::<IpAddr>(),
    ) {
        ("http", Ok(ip)) if ip.is_loopback() => {
            SocketAddr::new(ip, upstream.authority.port_u16().unwrap_or(80))
        }
        _ => return Err(DemoError::NotLoopback(upstream.authority.to_string())),
    };
    let options = origin::OriginOptions {
        api_key,
        cold_start: clock.cold_start,
        tick: clock.tick,
    };
    origin::spawn(origin_addr, options)
        .await
        .map_err(|source| DemoError::Origin {
            addr: origin_addr,
            source,
        })?;
    let proxy = Proxy::start(config).await.map_err(|e| match e {
        StartError::Bind(bind) if bind.source.kind() == std::io::ErrorKind::AddrInUse => {
            DemoError::PortInUse(bind.to_string())
        }
        other => DemoError::Start(other),
    })?;
    print_instructions(&proxy, origin_addr, clock);
    Ok(proxy)
}

fn print_instructions(proxy: &Proxy, origin: SocketAddr, clock: DemoClock) {
    let base = match (proxy.https_addr(), proxy.http_addr()) {
        (Some(addr), _) => format!("https://localhost:{}", addr.port()),
        (None, Some(addr)) => format!("http://{addr}"),
        (None, None) => return,
    };
    let k = if proxy.https_addr().is_some() {
        " -k"
    } else {
        ""
    };
    let token = origin::DEMO_TOKEN;
    let id = origin::DEMO_CONFIGURATION;
    println!(
        "\nsse-edge demo: a buffered sample API on http://{origin}, sse-edge in front of it.\n\
         The origin answers its first request after a {:?} cold start; data changes every {:?}.\n\n\
         Live metrics (no login):\n  curl -N{k} {base}/api/v2/stream\n\n\
         Per-user sentiment and refresh events (demo token and configuration):\n  \
         curl -N{k} -H 'Authorization: Bearer {token}' {base}/api/v2/configurations/{id}/stream\n\n\
         Your own user and configuration:\n  \
         TOKEN=$(curl -s{k} -X POST {base}/api/v2/auth/anonymous | sed 's/.*\"token\":\"\\([^\"]*\\)\".*/\\1/')\n  \
         ID=$(curl -s{k} -X POST -H \"Authorization: Bearer $TOKEN\" -d '{{\"tickers\":[\"AAPL\",\"GOOG\"]}}' {base}/api/v2/configurations | sed 's/.*\"id\":\"\\([^\"]*\\)\".*/\\1/')\n  \
         curl -N{k} \"{base}/api/v2/configurations/$ID/stream?user_token=$TOKEN\"\n\n\
         Passthrough:  curl -s{k} {base}/api/v2/stream/status\n\
         The problem, for comparison (the buffered origin holds the stream, then sends it all at once):\n  \
         curl -N http://{origin}/api/v2/stream\n\n\
         Ctrl-C stops.\n",
        clock.cold_start, clock.tick
    );
}
