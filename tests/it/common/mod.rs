//! Shared test harness: a fake origin, the real proxy on port 0, and a real client.

pub mod client;
pub mod hyper_reference;
pub mod origin;
pub mod process;
pub mod raw_origin;
pub mod redis;
pub mod sentiment;

use std::path::Path;
use std::time::Duration;

use client::Client;
use origin::FakeOrigin;
use sse_edge::Proxy;
use sse_edge::config::Config;

/// A generous bound for anything that should take milliseconds.
pub const WAIT: Duration = Duration::from_secs(10);

/// Knobs for the proxy under test; the defaults poll fast.
#[derive(Clone)]
pub struct Options {
    /// `every_ms` of every source.
    pub every_ms: u64,
    /// `[sse] first_poll_wait_ms`.
    pub first_poll_wait_ms: u64,
    /// `[sse] max_streams`.
    pub max_streams: usize,
    /// `[sse] heartbeat_s`.
    pub heartbeat_s: u64,
    /// `[sse] linger_ms`.
    pub linger_ms: u64,
    /// `[upstream] timeout_ms`.
    pub timeout_ms: u64,
    /// `[sse] history_events`.
    pub history_events: usize,
    /// Replaces the upstream URL (default: the fake origin's).
    pub upstream: Option<String>,
    /// `[upstream] ca`, a PEM written next to the proxy's certificate.
    pub upstream_ca: Option<String>,
    /// `wait_s` of the metrics source (origin long-poll).
    pub metrics_wait_s: Option<u64>,
    /// `[sse] history_bytes`.
    pub history_bytes: usize,
    /// `[listen] write_timeout_ms`.
    pub write_timeout_ms: u64,
    /// `[auth] sources`, as TOML array items.
    pub token_sources: &'static str,
    /// `[sse] max_streams_per_user`.
    pub max_streams_per_user: usize,
    /// `[auth] max_validations_per_s`.
    pub max_validations_per_s: u64,
    /// `[listen] max_connections`.
    pub max_connections: usize,
    /// `[sse] resume_memory_bytes`.
    pub resume_memory_bytes: u64,
    /// `[sse] refusal_ttl_s`.
    pub refusal_ttl_s: u64,
    /// Replaces the whole `[auth]` table (default: `kind = "http"` on the fake origin's
    /// validator with `token_sources`).
    pub auth: Option<String>,
    /// `[listen] max_streams_per_connection` (HTTP/2).
    pub max_streams_per_connection: u32,
    /// `[listen] max_h2_control_frames_per_s`.
    pub max_h2_control_frames_per_s: u32,
    /// `[sse] max_streams_per_ip` (every test client is 127.0.0.1).
    pub max_streams_per_ip: usize,
    /// More `[listen]` lines, as TOML (`trusted_proxies`, `keep_server_header`).
    pub listen_extra: &'static str,
    /// A `[cluster]` table's Redis URL (`lease_ms` is 1000 in tests).
    pub cluster: Option<String>,
    /// More `[sse]` lines (event names, heartbeat event).
    pub sse_extra: &'static str,
    /// Tables appended to the config (`[cors]`, more `[[stream]]` routes).
    pub extra: &'static str,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            every_ms: 50,
            first_poll_wait_ms: 1000,
            max_streams: 100,
            heartbeat_s: 30,
            linger_ms: 50,
            timeout_ms: 2000,
            history_events: 1024,
            upstream: None,
            upstream_ca: None,
            metrics_wait_s: None,
            history_bytes: 4 << 20,
            write_timeout_ms: 30_000,
            token_sources: r#""bearer", "x-user-id", "query:user_token""#,
            max_streams_per_user: 20,
            max_validations_per_s: 100,
            max_connections: 10_000,
            resume_memory_bytes: 64 << 20,
            refusal_ttl_s: 5,
            auth: None,
            max_streams_per_connection: 100,
            max_h2_control_frames_per_s: 5_000,
            max_streams_per_ip: 10_000,
            listen_extra: "",
            sse_extra: "",
            extra: "",
            cluster: None,
        }
    }
}

/// A running proxy with its client and the temp folder holding its certificate.
pub struct TestProxy {
    /// The proxy.
    pub proxy: Proxy,
    /// A client that trusts the proxy's certificate.
    pub client: Client,
    _dir: tempfile::TempDir,
}

/// The config text the tests run with.
pub fn config_text(origin_url: &str, dir: &Path, options: &Options) -> String {
    let ca = match &options.upstream_ca {
        Some(_) => format!("ca = \"{}\"", dir.join("origin-ca.pem").display()),
        None => String::new(),
    };
    format!(
        r#"
[listen]
https = "127.0.0.1:0"
http = "127.0.0.1:0"
admin = "127.0.0.1:0"
max_connections = {max_connections}
tls_handshake_timeout_ms = 2000
header_read_timeout_ms = 2000
write_timeout_ms = {write_timeout_ms}
shutdown_grace_s = 2
max_streams_per_connection = {max_streams_per_connection}
max_h2_control_frames_per_s = {max_h2_control_frames_per_s}
{listen_extra}

[tls]
cert = "{cert}"
key = "{key}"

[upstream]
url = "{upstream}"
connect_timeout_ms = 1000
timeout_ms = {timeout_ms}
{ca}

{auth}

[sse]
heartbeat_s = {heartbeat_s}
retry_ms = 1000
max_streams = {max_streams}
max_streams_per_user = {max_streams_per_user}
first_poll_wait_ms = {first_poll_wait_ms}
linger_ms = {linger_ms}
history_events = {history_events}
history_bytes = {history_bytes}
max_backoff_ms = 400
resume_memory_bytes = {resume_memory_bytes}
refusal_ttl_s = {refusal_ttl_s}
max_streams_per_ip = {max_streams_per_ip}
{sse_extra}

[[stream]]
path = "/api/v2/stream"
  [[stream.source]]
  poll = "/api/v2/metrics?hours=24"
  every_ms = {every}
  event = "metrics"
  headers = {{ authorization = "Bearer ${{TEST_DASHBOARD_KEY}}" }}
  {wait}

[[stream]]
path = "/api/v2/configurations/{{id}}/stream"
auth = true
  [[stream.source]]
  poll = "/api/v2/configurations/{{id}}/sentiment"
  every_ms = {every}
  event = "sentiment_update"
  mode = "items"
  items = "/tickers"
  key = "symbol"
  [[stream.source]]
  poll = "/api/v2/configurations/{{id}}/refresh/status"
  every_ms = {every}
  event = "refresh"

{extra}
{cluster}
"#,
        cert = dir.join("cert.pem").display(),
        key = dir.join("key.pem").display(),
        upstream = options.upstream.as_deref().unwrap_or(origin_url),
        timeout_ms = options.timeout_ms,
        heartbeat_s = options.heartbeat_s,
        max_streams = options.max_streams,
        first_poll_wait_ms = options.first_poll_wait_ms,
        linger_ms = options.linger_ms,
        history_events = options.history_events,
        history_bytes = options.history_bytes,
        write_timeout_ms = options.write_timeout_ms,
        auth = options.auth.clone().unwrap_or_else(|| format!(
            "[auth]\nvalidate = \"/api/v2/auth/validate\"\nsources = [{}]\ncache_ttl_s = 60\n\
             negative_ttl_s = 5\nmax_validations_per_s = {}\n",
            options.token_sources, options.max_validations_per_s
        )),
        max_streams_per_user = options.max_streams_per_user,
        max_connections = options.max_connections,
        resume_memory_bytes = options.resume_memory_bytes,
        refusal_ttl_s = options.refusal_ttl_s,
        max_streams_per_connection = options.max_streams_per_connection,
        max_h2_control_frames_per_s = options.max_h2_control_frames_per_s,
        max_streams_per_ip = options.max_streams_per_ip,
        listen_extra = options.listen_extra,
        every = options.every_ms,
        sse_extra = options.sse_extra,
        extra = options.extra,
        cluster = options
            .cluster
            .as_ref()
            .map_or(String::new(), |url| format!(
                "[cluster]\nredis = \"{url}\"\nlease_ms = 1000\n"
            )),
        wait = options
            .metrics_wait_s
            .map_or(String::new(), |s| format!("wait_s = {s}")),
    )
}

/// Starts the real proxy in front of `origin`.
pub async fn start_proxy(origin: &FakeOrigin, options: Options) -> TestProxy {
    try_start_proxy(origin, options, |text| text)
        .await
        .expect("proxy starts")
}

/// Starts the real proxy in front of `origin`, its config text first changed by `edit`; the
/// start's error when it fails.
pub async fn try_start_proxy(
    origin: &FakeOrigin,
    options: Options,
    edit: impl FnOnce(String) -> String,
) -> Result<TestProxy, sse_edge::proxy::StartError> {
    let dir = tempfile::tempdir().expect("temp dir");
    let pair = sse_edge::tools::demo::certs::localhost().expect("certificate");
    std::fs::write(dir.path().join("cert.pem"), &pair.cert_pem).expect("write cert");
    std::fs::write(dir.path().join("key.pem"), &pair.key_pem).expect("write key");
    if let Some(ca) = &options.upstream_ca {
        std::fs::write(dir.path().join("origin-ca.pem"), ca).expect("write ca");
    }
    let text = edit(config_text(&origin.url, dir.path(), &options));
    let config = Config::from_toml(&text, "test.toml", dir.path(), &|name| match name {
        "TEST_DASHBOARD_KEY" => Some("dashboard-key".to_owned()),
        "TEST_CLIENT_SECRET" => Some("s3cret".to_owned()),
        _ => None,
    })
    .expect("test config");
    let proxy = Proxy::start(config).await?;
    let client = Client::new(proxy.https_addr(), proxy.http_addr(), &pair.cert_pem);
    Ok(TestProxy {
        proxy,
        client,
        _dir: dir,
    })
}

impl TestProxy {
    /// The admin listener's `/metrics` text.
    pub async fn metrics(&self) -> String {
        metrics_text(self.proxy.admin_addr()).await
    }

    /// One sample from `/metrics`, by its full name with labels.
    pub async fn metric(&self, sample: &str) -> f64 {
        let text = self.metrics().await;
        metric_sample(&text, sample).unwrap_or_else(|| panic!("{sample} not in metrics:\n{text}"))
    }
}

/// A plaintext connection to `addr` on which `requests` have been sent, as written.
pub async fn send_raw(addr: std::net::SocketAddr, requests: &[u8]) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut stream, requests)
        .await
        .expect("write");
    stream
}

/// The `/metrics` text of the admin listener at `admin`.
pub async fn metrics_text(admin: Option<std::net::SocketAddr>) -> String {
    let admin = Client::new(None, admin, "");
    let response = admin.get(client::Proto::H1Plain, "/metrics", &[]).await;
    assert_eq!(response.status(), 200);
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .expect("metrics body")
        .to_bytes();
    String::from_utf8(body.to_vec()).expect("UTF-8 metrics")
}

/// One sample of a `/metrics` text, by its full name with labels.
pub fn metric_sample(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

/// 1,000 tickers of ~1 KB each (about 1 MB a document), all stamped with `round`: enough to
/// fill socket buffers within a few rounds.
pub fn padded_tickers(round: u32) -> serde_json::Value {
    let pad = "x".repeat(1000);
    serde_json::Value::Array(
        (0..1000)
            .map(|i| serde_json::json!({"symbol": format!("T{i}"), "round": round, "pad": pad}))
            .collect(),
    )
}

/// A plaintext client with a tiny receive buffer that sends a GET for `path` with `token` and
/// then never reads.
pub async fn stalled_client(
    addr: std::net::SocketAddr,
    path: &str,
    token: &str,
) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let mut stream = socket.connect(addr).await.expect("connect");
    let request =
        format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {token}\r\n\r\n");
    tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
        .await
        .expect("request");
    stream
}

/// Waits (bounded) until `check` holds, re-checking whenever the origin sees a request or
/// at most every 10 ms; for conditions no event announces (a poller stopping).
pub async fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !check() {
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
