//! End-to-end fan-out: the real proxy in front of the demo origin, N event-stream
//! subscribers on loopback, measured over a fixed window.
//!
//! Run: `cargo bench --bench fanout` (optionally `-- 1000 10000` to pick the subscriber counts).
//!
//! For each N it reports the origin polls per poll interval (one poller serves every
//! subscriber of a stream key, so this should stay 1 whatever N is) and the events delivered
//! per second to all subscribers together. Subscribers are HTTP/2 (h2c) streams, 100 per
//! connection, so 10,000 of them need 100 sockets and stay far below the 20,000-file limit.
//! The subscribers run in the same process as the proxy, on the same 2 cores: the figures
//! are a lower bound for the proxy alone. Every run is bounded in time and touches only
//! loopback.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sse_edge::Proxy;
use sse_edge::config::Config;
use sse_edge::tools::demo::origin::{self, OriginOptions};
use tokio::net::TcpStream;

/// How often the demo origin's data changes, and how often the proxy polls it.
const TICK: Duration = Duration::from_millis(10);
/// Streams per HTTP/2 connection.
const STREAMS_PER_CONNECTION: usize = 100;
/// How long each measurement lasts.
const WINDOW: Duration = Duration::from_secs(5);

fn config(origin: SocketAddr) -> Config {
    let text = format!(
        r#"
[listen]
http = "127.0.0.1:0"
admin = "127.0.0.1:0"
max_connections = 19000

[upstream]
url = "http://{origin}"

[sse]
heartbeat_s = 3600
max_streams = 19000
max_streams_per_ip = 19000  # every load client is on loopback

[[stream]]
path = "/api/v2/stream"
  [[stream.source]]
  poll = "/api/v2/metrics?hours=24"
  every_ms = {every}
  event = "metrics"
  headers = {{ authorization = "Bearer bench-key" }}
"#,
        every = TICK.as_millis()
    );
    Config::from_toml(&text, "fanout.toml", Path::new("."), &|_| None).expect("bench config")
}

/// Opens `count` subscribers; each counts the `metrics` events it receives.
async fn subscribe(proxy: SocketAddr, count: usize, events: Arc<AtomicU64>, ready: Arc<AtomicU64>) {
    let mut left = count;
    while left > 0 {
        let streams = left.min(STREAMS_PER_CONNECTION);
        left -= streams;
        let tcp = TcpStream::connect(proxy).await.expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2c handshake");
        tokio::spawn(connection);
        for _ in 0..streams {
            let mut sender = sender.clone();
            let events = events.clone();
            let ready = ready.clone();
            tokio::spawn(async move {
                let request = http::Request::get(format!("http://{proxy}/api/v2/stream"))
                    .body(Empty::<Bytes>::new())
                    .expect("request");
                let Ok(response) = sender.send_request(request).await else {
                    return;
                };
                let mut body = response.into_body();
                let mut first = true;
                while let Some(Ok(frame)) = body.frame().await {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let n = data
                        .windows(15)
                        .filter(|w| w == b"event: metrics\n")
                        .count() as u64;
                    if n > 0 && first {
                        first = false;
                        ready.fetch_add(1, Ordering::Relaxed);
                    }
                    events.fetch_add(n, Ordering::Relaxed);
                }
            });
        }
    }
}

/// Sum of `sse_edge_polls_total` over outcomes, from the admin listener.
async fn polls(admin: SocketAddr) -> u64 {
    let tcp = TcpStream::connect(admin).await.expect("admin");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("admin handshake");
    tokio::spawn(connection);
    let request = http::Request::get("/metrics")
        .header("host", "admin")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("metrics");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| l.starts_with("sse_edge_polls_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

async fn run(subscribers: usize) {
    let origin = origin::spawn(
        "127.0.0.1:0".parse().expect("addr"),
        OriginOptions {
            api_key: "bench-key".into(),
            cold_start: Duration::ZERO,
            tick: TICK,
        },
    )
    .await
    .expect("demo origin");
    let proxy = Proxy::start(config(origin)).await.expect("proxy");
    let http = proxy.http_addr().expect("http");
    let admin = proxy.admin_addr().expect("admin");
    let events = Arc::new(AtomicU64::new(0));
    let ready = Arc::new(AtomicU64::new(0));
    let opening = Instant::now();
    subscribe(http, subscribers, events.clone(), ready.clone()).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while ready.load(Ordering::Relaxed) < subscribers as u64 {
        assert!(
            Instant::now() < deadline,
            "subscribers did not all start within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let opened_in = opening.elapsed();

    let polls_before = polls(admin).await;
    let events_before = events.load(Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(WINDOW).await;
    let elapsed = started.elapsed().as_secs_f64();
    let delivered = events.load(Ordering::Relaxed) - events_before;
    let polled = polls(admin).await - polls_before;
    let intervals = elapsed / TICK.as_secs_f64();
    println!(
        "{subscribers:>6} subscribers | opened in {:>6.0} ms | origin polls {:>4} in {:>4.0} intervals = {:.2} per interval | {:>10.0} events/s delivered ({:.1} per subscriber per s)",
        opened_in.as_secs_f64() * 1e3,
        polled,
        intervals,
        polled as f64 / intervals,
        delivered as f64 / elapsed,
        delivered as f64 / elapsed / subscribers as f64,
    );
    proxy.shutdown().await;
}

fn main() {
    let counts: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let counts = if counts.is_empty() {
        vec![1, 100, 1_000, 10_000]
    } else {
        counts
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "fan-out: demo origin changing every {} ms, polled every {} ms, {} s windows",
        TICK.as_millis(),
        TICK.as_millis(),
        WINDOW.as_secs()
    );
    for count in counts {
        runtime.block_on(run(count));
    }
}
