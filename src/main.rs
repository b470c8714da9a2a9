//! The `sse-edge` command: run the proxy from `proxy.toml`, or the built-in demo.

#![forbid(unsafe_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use sse_edge::Proxy;
use sse_edge::config::Config;
use tracing_subscriber::EnvFilter;

/// Turns buffered HTTP backends into Server-Sent Events streams.
#[derive(Parser)]
#[command(name = "sse-edge", version)]
struct Cli {
    /// The configuration file of the proxy (which runs when no subcommand is given).
    #[arg(long, default_value = "proxy.toml")]
    config: PathBuf,
    /// Log line format; the level comes from RUST_LOG (default `info`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy in front of a built-in buffered sample origin, and print what to try.
    #[cfg(feature = "tools")]
    Demo(DemoArgs),
    /// Diagnose an SSE endpoint: timeline and one verdict; exits 0 only for `streaming`.
    #[cfg(feature = "tools")]
    Probe(ProbeArgs),
    /// Open many event streams and measure them (loopback load testing; bounded in time).
    #[cfg(feature = "tools")]
    Load(LoadArgs),
    /// Validate the configuration (keys, environment variables, certificate and key, CA)
    /// and print every problem; exits 0 when it would start.
    Check(ConfigFile),
}

/// `--config` for the subcommands that read one (each shows only its own flags in --help).
#[derive(clap::Args)]
struct ConfigFile {
    /// The configuration file [default: proxy.toml].
    #[arg(long)]
    config: Option<PathBuf>,
}

#[cfg(feature = "tools")]
#[derive(clap::Args)]
struct DemoArgs {
    #[command(flatten)]
    file: ConfigFile,
    /// Log line format; the level comes from RUST_LOG (default `info`).
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Listen where the config says, not only on 127.0.0.1 (a stand-in origin that other
    /// containers reach, as in deploy/docker-compose.yml).
    #[arg(long)]
    listen_as_configured: bool,
    /// How often the sample origin's data changes, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    tick_ms: u64,
    /// How long the sample origin's first answer after a quiet spell takes, in milliseconds
    /// (above `first_poll_wait_ms`, streams start before the origin answers).
    #[arg(long, default_value_t = 700)]
    cold_start_ms: u64,
}

#[cfg(feature = "tools")]
#[derive(clap::Args)]
struct LoadArgs {
    /// The stream URL, for example http://127.0.0.1:8080/api/v2/stream.
    url: String,
    /// Streams to open.
    #[arg(long, default_value_t = 100)]
    streams: usize,
    /// Connections to multiplex them over with --http2 (HTTP/1.1 opens one per stream).
    #[arg(long, default_value_t = 10)]
    connections: usize,
    /// Speak HTTP/2 (ALPN h2; prior knowledge over http://).
    #[arg(long)]
    http2: bool,
    /// Accept any TLS certificate.
    #[arg(short = 'k', long)]
    insecure: bool,
    /// Seconds to hold the streams open once they are all open.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// An extra request header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Spread the load over this many processes (one holds at most ~19,000 connections).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    processes: u16,
    /// Connect from this many loopback source addresses (127.1.0.1, 127.1.0.2, ...) instead
    /// of the kernel's choice, past the ~28,000 ephemeral ports one address has.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    source_ips: u32,
    /// Open this many connections a second instead of all at once (each new client's time
    /// to first frame is then its own, not a queue's).
    #[arg(long)]
    rate: Option<f64>,
    /// Spread the streams over this many stream keys: `{key}` in the URL becomes 0, 1, ...
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    keys: u32,
    /// Run as one of `--processes`: print a JSON report with raw samples.
    #[arg(long, hide = true)]
    worker: bool,
    /// As a worker, the index of this process's first connection among all.
    #[arg(long, hide = true, default_value_t = 0)]
    first_connection: usize,
}

#[cfg(feature = "tools")]
#[derive(clap::Args)]
struct ProbeArgs {
    /// The endpoint, for example https://api.example.com/api/v2/stream.
    url: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// How many events to wait for.
    #[arg(long, default_value_t = 3)]
    events: usize,
    /// An extra request header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Speak HTTP/2 (ALPN h2; prior knowledge over http://).
    #[arg(long)]
    http2: bool,
    /// Accept any TLS certificate (self-signed development endpoints).
    #[arg(short = 'k', long)]
    insecure: bool,
    /// Print the timeline and verdict as JSON.
    #[arg(long)]
    json: bool,
    /// Silences longer than this many seconds are an idle risk (CloudFront: 30, ALB: 60).
    #[arg(long, default_value_t = 30.0)]
    idle_threshold: f64,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour_logs())
        .with_writer(std::io::stderr);
    let log_format = match &cli.command {
        #[cfg(feature = "tools")]
        Some(Command::Demo(args)) => args.log_format.unwrap_or(cli.log_format),
        _ => cli.log_format,
    };
    match log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("sse-edge: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let config = cli.config;
    let served = match cli.command {
        Some(Command::Check(file)) => return check(&file.config.unwrap_or(config)),
        #[cfg(feature = "tools")]
        Some(Command::Probe(args)) => return runtime.block_on(probe(args)),
        #[cfg(feature = "tools")]
        Some(Command::Load(args)) => return runtime.block_on(load(args)),
        #[cfg(feature = "tools")]
        Some(Command::Demo(args)) => {
            let config = args.file.config.unwrap_or(config);
            let clock = sse_edge::tools::demo::DemoClock {
                cold_start: Duration::from_millis(args.cold_start_ms),
                tick: Duration::from_millis(args.tick_ms.max(1)),
            };
            runtime.block_on(serve(async move {
                sse_edge::tools::demo::run(&config, clock, args.listen_as_configured)
                    .await
                    .map_err(|e| e.to_string())
            }))
        }
        None => runtime.block_on(serve(async move {
            let config = Config::load(&config).map_err(|e| e.to_string())?;
            Proxy::start(config).await.map_err(|e| e.to_string())
        })),
    };
    // Dropped here rather than at the end of `main`: connections still open after the grace
    // period on the shared runtime (`serving_threads = 0`) end with it, and what they log
    // (their access lines) comes before the last line. Bounded: a blocking task (a DNS
    // lookup) does not hold the exit.
    runtime.shutdown_timeout(RUNTIME_EXIT_WAIT);
    match served {
        Ok(()) => {
            tracing::info!("sse-edge stopped");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("sse-edge: {message}");
            ExitCode::FAILURE
        }
    }
}

/// How long the exit waits for the runtime's blocking tasks once the proxy has stopped.
const RUNTIME_EXIT_WAIT: Duration = Duration::from_secs(1);

/// Colour only for a person at a terminal: never when stderr is a file, a pipe or a log
/// collector (journald, Docker, Kubernetes), nor when `NO_COLOR` is set (no-color.org).
fn colour_logs() -> bool {
    use std::io::IsTerminal;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stderr().is_terminal()
}

/// Longest `--timeout`, `--idle-threshold` or `--duration` accepted.
#[cfg(feature = "tools")]
const MAX_SECONDS: Duration = Duration::from_secs(86_400);

#[cfg(feature = "tools")]
async fn load(args: LoadArgs) -> ExitCode {
    let duration = match Duration::try_from_secs_f64(args.duration) {
        Ok(d) if d <= MAX_SECONDS => d,
        _ => {
            eprintln!("sse-edge: --duration must be from 0 to one day, in seconds");
            return ExitCode::from(2);
        }
    };
    let options = sse_edge::tools::load::LoadOptions {
        url: args.url,
        streams: args.streams.max(1),
        connections: args.connections.max(1),
        http2: args.http2,
        insecure: args.insecure,
        duration,
        headers: args.headers,
        source_ips: args.source_ips as usize,
        first_connection: args.first_connection,
        keep_samples: args.worker,
        rate: args.rate,
        keys: args.keys as usize,
    };
    if options
        .rate
        .is_some_and(|rate| !(rate.is_finite() && rate > 0.0))
    {
        eprintln!("sse-edge: --rate must be a positive number of connections per second");
        return ExitCode::from(2);
    }
    let report = if args.processes > 1 {
        sse_edge::tools::load::processes::run(&options, usize::from(args.processes)).await
    } else {
        sse_edge::tools::load::run(&options).await
    };
    match report {
        Ok(report) if args.worker || args.json => {
            // A worker's report goes to its parent: compact, with the raw samples.
            let json = if args.worker {
                serde_json::to_string(&report)
            } else {
                serde_json::to_string_pretty(&report)
            };
            match json {
                Ok(json) => {
                    println!("{json}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("sse-edge: cannot print the report: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Ok(report) => {
            print!("{}", report.to_text(&options));
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("sse-edge: {message}");
            ExitCode::from(2)
        }
    }
}

#[cfg(feature = "tools")]
async fn probe(args: ProbeArgs) -> ExitCode {
    let seconds = |s: f64, what: &str| match Duration::try_from_secs_f64(s) {
        Ok(d) if !d.is_zero() && d <= MAX_SECONDS => Ok(d),
        _ => Err(format!(
            "--{what} must be more than 0 and at most one day, in seconds"
        )),
    };
    let (timeout, idle_threshold) = match (
        seconds(args.timeout, "timeout"),
        seconds(args.idle_threshold, "idle-threshold"),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(message), _) | (_, Err(message)) => {
            eprintln!("sse-edge: {message}");
            return ExitCode::from(2);
        }
    };
    let options = sse_edge::tools::probe::ProbeOptions {
        url: args.url,
        headers: args.headers,
        events: args.events.max(1),
        timeout,
        http2: args.http2,
        insecure: args.insecure,
        idle_threshold,
    };
    if let Err(message) = sse_edge::tools::probe::check_usage(&options) {
        eprintln!(
            "sse-edge: {message}\n\nUsage: sse-edge probe [OPTIONS] <URL>, for example https://api.example.com/api/v2/stream"
        );
        return ExitCode::from(2);
    }
    let report = sse_edge::tools::probe::run(&options).await;
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(json) => println!("{json}"),
            Err(error) => eprintln!("sse-edge: cannot print the report: {error}"),
        }
    } else {
        print!("{}", report.to_text());
    }
    if report.verdict == sse_edge::tools::probe::verdict::Verdict::Streaming {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Starts the proxy (`start`: from the config, or the demo) and runs it until SIGINT or SIGTERM.
async fn serve(start: impl Future<Output = Result<Proxy, String>>) -> Result<(), String> {
    let proxy = start.await?;
    let waited = signals(&proxy).await;
    tracing::info!("shutting down");
    // A second SIGINT or SIGTERM during the grace period stops at once.
    tokio::spawn(async {
        if signals_again().await {
            tracing::warn!("second signal: exiting without waiting for the grace period");
            std::process::exit(1);
        }
    });
    proxy.shutdown().await;
    waited
}

/// Waits for SIGINT or SIGTERM; SIGHUP meanwhile reloads the TLS certificate and key.
async fn signals(proxy: &Proxy) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let listen = |kind| signal(kind).map_err(|e| format!("cannot listen for signals: {e}"));
    let mut terminate = listen(SignalKind::terminate())?;
    let mut interrupt = listen(SignalKind::interrupt())?;
    let mut hangup = listen(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = terminate.recv() => return Ok(()),
            _ = interrupt.recv() => return Ok(()),
            _ = hangup.recv() => match proxy.reload_tls() {
                Ok(true) => tracing::info!("SIGHUP: TLS certificate and key reloaded"),
                Ok(false) => tracing::info!("SIGHUP: no HTTPS listener, nothing to reload"),
                Err(error) => tracing::error!(%error, "SIGHUP: TLS reload failed; the current certificate stays"),
            },
        }
    }
}

/// `sse-edge check`: every problem with a config, without starting anything.
fn check(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let mut problems = Vec::new();
    if let (Some(files), Some(_)) = (&config.tls, config.listen.https)
        && let Err(error) = sse_edge::edge::tls::certified_key(files)
    {
        let text = error.to_string();
        problems.push(if text.starts_with("[tls]") {
            text
        } else {
            format!("[tls] {text}")
        });
    }
    if let Err(error) = sse_edge::origin::tls::origin_roots(config.upstream.ca.as_deref()) {
        problems.push(format!("[upstream] ca: {error}"));
    }
    if problems.is_empty() {
        println!(
            "{}: ok ({} stream route(s), upstream {}://{})",
            path.display(),
            config.streams.len(),
            config.upstream.scheme,
            config.upstream.authority
        );
        ExitCode::SUCCESS
    } else {
        for problem in problems {
            eprintln!("{}: {problem}", path.display());
        }
        ExitCode::FAILURE
    }
}

/// Resolves `true` on the next SIGINT or SIGTERM (`false` if they cannot be listened for).
async fn signals_again() -> bool {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return false;
    };
    tokio::select! {
        _ = terminate.recv() => true,
        _ = interrupt.recv() => true,
    }
}
