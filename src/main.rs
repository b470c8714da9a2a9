//! The `sse-edge` command: run the proxy from `proxy.toml`, or the built-in demo.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use sse_edge::Proxy;
use sse_edge::config::Config;
use tracing_subscriber::EnvFilter;

/// Turns buffered HTTP backends into Server-Sent Events streams.
#[derive(Parser)]
#[command(name = "sse-edge", version)]
struct Cli {
    /// The configuration file.
    #[arg(long, global = true, default_value = "proxy.toml")]
    config: PathBuf,
    /// Log line format; the level comes from RUST_LOG (default `info`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy in front of a built-in buffered sample origin, and print what to try.
    Demo,
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
        .with_writer(std::io::stderr);
    match cli.log_format {
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
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("sse-edge: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let proxy = match cli.command {
        Some(Command::Demo) => sse_edge::demo::run(&cli.config)
            .await
            .map_err(|e| e.to_string())?,
        None => {
            let config = Config::load(&cli.config).map_err(|e| e.to_string())?;
            Proxy::start(config).await.map_err(|e| e.to_string())?
        }
    };
    stop_signal().await;
    tracing::info!("shutting down");
    proxy.shutdown().await;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn stop_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
