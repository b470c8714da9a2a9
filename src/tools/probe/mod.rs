//! `sse-edge probe URL`: why does this SSE endpoint time out?
//!
//! Connects like a browser's `EventSource` would (GET, `Accept: text/event-stream`), times
//! every step (DNS, connect, TLS with ALPN, response headers, first body byte, each of the
//! first N events), records how the body's bytes arrived, and gives one verdict
//! ([`verdict::Verdict`]) with its reason. Everything is bounded by `--timeout`.
//!
//! - [`connect`]: DNS, TCP, TLS and the HTTP handshake.
//! - [`decode`]: an incremental event-stream decoder.
//! - [`verdict`]: timeline in, verdict out.

pub mod connect;
pub mod decode;
pub mod verdict;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Empty};
use serde::Serialize;

use connect::Sender;
use decode::{Decoder, Item};
use verdict::{Observation, Thresholds, Verdict, judge};

/// Most body chunks recorded in the report (the count goes on).
const MAX_CHUNKS_RECORDED: usize = 1000;
/// Most bytes of an error body read for its `detail`.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Events closer together than this count as one burst.
const BURST: Duration = Duration::from_millis(100);

/// What to probe and how.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// The endpoint, `http://` or `https://`.
    pub url: String,
    /// Extra request headers, `Name: value`.
    pub headers: Vec<String>,
    /// How many events to wait for.
    pub events: usize,
    /// Overall bound on the probe.
    pub timeout: Duration,
    /// Speak HTTP/2 (ALPN `h2`, or prior knowledge over plaintext).
    pub http2: bool,
    /// Accept any TLS certificate.
    pub insecure: bool,
    /// Silences longer than this are an idle risk.
    pub idle_threshold: Duration,
}

/// One event in the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct EventTiming {
    /// Milliseconds since the probe started.
    pub ms: f64,
    /// Its type.
    pub event: String,
    /// Its id (the last event id after it).
    pub id: String,
    /// Bytes of data.
    pub bytes: usize,
}

/// One body chunk as it arrived.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Chunk {
    /// Milliseconds since the probe started.
    pub ms: f64,
    /// Its size.
    pub bytes: usize,
}

/// The whole finding, printed as text or JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What was probed.
    pub url: String,
    /// The address connected to.
    pub address: Option<String>,
    /// `HTTP/1.1` or `HTTP/2`.
    pub protocol: Option<String>,
    /// TLS version, if TLS.
    pub tls_version: Option<String>,
    /// The ALPN protocol chosen, if TLS.
    pub alpn: Option<String>,
    /// Step timings in milliseconds since the start.
    pub timeline: BTreeMap<&'static str, f64>,
    /// The response status.
    pub status: Option<u16>,
    /// Headers that decide how a stream behaves (type, caching, encoding, framing).
    pub headers: BTreeMap<String, String>,
    /// The `detail` of an error body.
    pub detail: Option<String>,
    /// The first N events.
    pub events: Vec<EventTiming>,
    /// Comment frames seen (heartbeats).
    pub comments: usize,
    /// The `retry:` advice, if any.
    pub retry_ms: Option<u64>,
    /// How the body arrived, chunk by chunk (the first ones).
    pub chunks: Vec<Chunk>,
    /// Chunks received in all.
    pub chunk_count: usize,
    /// Body bytes received in all.
    pub body_bytes: usize,
    /// Whether the body ended before the probe stopped reading.
    pub ended: bool,
    /// The longest silence seen, in milliseconds.
    pub max_gap_ms: Option<f64>,
    /// The verdict.
    pub verdict: Verdict,
    /// Why.
    pub reason: String,
}

/// Probes the endpoint; never fails: problems are verdicts.
pub async fn run(options: &ProbeOptions) -> Report {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + options.timeout;
    let ms = || started.elapsed().as_secs_f64() * 1000.0;
    let mut report = Report {
        url: options.url.clone(),
        address: None,
        protocol: None,
        tls_version: None,
        alpn: None,
        timeline: BTreeMap::new(),
        status: None,
        headers: BTreeMap::new(),
        detail: None,
        events: Vec::new(),
        comments: 0,
        retry_ms: None,
        chunks: Vec::new(),
        chunk_count: 0,
        body_bytes: 0,
        ended: false,
        max_gap_ms: None,
        verdict: Verdict::NoHeaders,
        reason: String::new(),
    };
    let mut observed = Observation::default();
    let thresholds = Thresholds {
        idle_ms: options.idle_threshold.as_secs_f64() * 1000.0,
        burst_ms: BURST.as_secs_f64() * 1000.0,
        timeout_ms: options.timeout.as_secs_f64() * 1000.0,
    };
    let finish = |mut report: Report, mut observed: Observation| {
        observed.stopped_ms = ms();
        report.max_gap_ms = observed.max_gap_ms();
        let (verdict, reason) = judge(&observed, &thresholds);
        report.verdict = verdict;
        report.reason = reason;
        report
    };

    let request = match build_request(options) {
        Ok(request) => request,
        Err(error) => {
            observed.connect_error = Some(error);
            return finish(report, observed);
        }
    };
    let uri = request.uri().clone();
    let tls = uri.scheme_str() == Some("https");
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_matches(['[', ']'])
        .to_owned();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let connecting = connect::connect(
        started,
        &host,
        port,
        connect::ConnectOptions {
            tls,
            http2: options.http2,
            insecure: options.insecure,
            source: None,
        },
    );
    let connected = match tokio::time::timeout_at(deadline, connecting).await {
        Ok(Ok(connected)) => connected,
        Ok(Err(error)) => {
            observed.connect_error = Some(error);
            return finish(report, observed);
        }
        Err(_) => {
            // No request was sent: this is a network or TLS problem, not a buffering origin.
            observed.connect_error = Some(format!(
                "DNS, TCP connect or the TLS handshake did not finish within {:.1} s",
                options.timeout.as_secs_f64()
            ));
            return finish(report, observed);
        }
    };
    report.address = Some(connected.address.to_string());
    report.timeline.insert("dns", connected.dns_ms);
    report.timeline.insert("connect", connected.connect_ms);
    if let Some(tls_ms) = connected.tls_ms {
        report.timeline.insert("tls", tls_ms);
    }
    report.alpn = connected.alpn;
    report.tls_version = connected.tls_version;

    let sending = async move {
        let mut request = request;
        match connected.sender {
            Sender::Http1(mut sender) => {
                // HTTP/1.1 servers expect the origin form: the path and query only.
                let origin_form = uri.path_and_query().map_or("/", |pq| pq.as_str());
                if let Ok(path) = origin_form.parse() {
                    *request.uri_mut() = path;
                }
                sender.send_request(request).await
            }
            Sender::Http2(mut sender) => sender.send_request(request).await,
        }
    };
    let response = match tokio::time::timeout_at(deadline, sending).await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => {
            observed.connect_error = Some(format!("the request failed: {error}"));
            return finish(report, observed);
        }
        Err(_) => return finish(report, observed),
    };
    let headers_ms = ms();
    observed.headers_ms = Some(headers_ms);
    report.timeline.insert("headers", headers_ms);
    let status = response.status().as_u16();
    observed.status = Some(status);
    report.status = Some(status);
    report.protocol = Some(format!("{:?}", response.version()));
    for name in [
        "content-type",
        "content-encoding",
        "cache-control",
        "x-accel-buffering",
        "transfer-encoding",
        "content-length",
        "connection",
    ] {
        if let Some(value) = response.headers().get(name).and_then(|v| v.to_str().ok()) {
            report.headers.insert(name.to_owned(), value.to_owned());
        }
    }
    observed.content_type = report.headers.get("content-type").cloned();
    observed.content_encoding = report.headers.get("content-encoding").cloned();

    let mut body = response.into_body();
    if !(200..300).contains(&status) {
        let mut bytes = Vec::new();
        while bytes.len() < MAX_ERROR_BODY {
            match tokio::time::timeout_at(deadline, body.frame()).await {
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        bytes.extend_from_slice(&data);
                    }
                }
                _ => break,
            }
        }
        let detail = crate::http::json::origin_detail(&bytes);
        observed.detail = detail.clone();
        report.detail = detail;
        return finish(report, observed);
    }

    let mut decoder = Decoder::default();
    let mut items = Vec::new();
    let mut read_until = deadline;
    loop {
        if report.events.len() >= options.events && !observed.got_wanted_events {
            observed.got_wanted_events = true;
            // Events that all came in one burst may be a buffered body arriving whole: read a
            // moment longer to see whether the response ends right after them.
            let one_burst = match (observed.event_ms.first(), observed.event_ms.last()) {
                (Some(first), Some(last)) => last - first <= BURST.as_secs_f64() * 1000.0,
                _ => false,
            };
            if !one_burst {
                break;
            }
            read_until = deadline.min(tokio::time::Instant::now() + BURST);
        }
        let frame = match tokio::time::timeout_at(read_until, body.frame()).await {
            Err(_) => break,
            Ok(None) | Ok(Some(Err(_))) => {
                report.ended = true;
                observed.ended_ms = Some(ms());
                report.timeline.insert("end", ms());
                break;
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        let at = ms();
        report.timeline.entry("first_byte").or_insert(at);
        observed.chunk_ms.push(at);
        report.chunk_count += 1;
        report.body_bytes += data.len();
        if report.chunks.len() < MAX_CHUNKS_RECORDED {
            report.chunks.push(Chunk {
                ms: at,
                bytes: data.len(),
            });
        }
        decoder.feed(&data, &mut items);
        for item in items.drain(..) {
            match item {
                Item::Event { event, data, id } => {
                    observed.event_ms.push(at);
                    if report.events.len() < options.events {
                        report.events.push(EventTiming {
                            ms: at,
                            event,
                            id,
                            bytes: data.len(),
                        });
                    }
                }
                Item::Comment => report.comments += 1,
                Item::Retry(retry) => report.retry_ms = Some(retry),
            }
        }
    }
    finish(report, observed)
}

/// Whether the URL and headers can be probed at all; the error is a usage error (exit 2).
pub fn check_usage(options: &ProbeOptions) -> Result<(), String> {
    build_request(options).map(|_| ())
}

fn build_request(options: &ProbeOptions) -> Result<Request<Empty<Bytes>>, String> {
    let uri: Uri = options
        .url
        .parse()
        .map_err(|_| format!("`{}` is not a URL", options.url))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => {
            return Err(format!(
                "`{}` must start with http:// or https://",
                options.url
            ));
        }
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("`{}` has no host", options.url))?
        .clone();
    let mut request = Request::get(uri.clone())
        .header("accept", "text/event-stream")
        .header("cache-control", "no-cache")
        .header(
            "user-agent",
            concat!("sse-edge-probe/", env!("CARGO_PKG_VERSION")),
        );
    if !options.http2 {
        request = request.header("host", authority.as_str());
    }
    for header in &options.headers {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| format!("header `{header}` is not `Name: value`"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("`{}` is not a header name", name.trim()))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| format!("the value of header `{name}` is not valid"))?;
        request = request.header(name, value);
    }
    request
        .body(Empty::new())
        .map_err(|e| format!("cannot build the request: {e}"))
}

impl Report {
    /// The human-readable timeline and verdict.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "probe {}", self.url);
        let step = |out: &mut String, name: &str, ms: Option<&f64>, note: String| {
            if let Some(ms) = ms {
                let _ = writeln!(out, "  {name:<11} {ms:>9.1} ms  {note}");
            }
        };
        step(
            &mut out,
            "dns",
            self.timeline.get("dns"),
            self.address.clone().unwrap_or_default(),
        );
        step(
            &mut out,
            "connect",
            self.timeline.get("connect"),
            String::new(),
        );
        let tls_note = format!(
            "{} ALPN {}",
            self.tls_version.as_deref().unwrap_or("?"),
            self.alpn.as_deref().unwrap_or("none")
        );
        step(&mut out, "tls", self.timeline.get("tls"), tls_note);
        let head = match (self.status, &self.protocol) {
            (Some(status), Some(protocol)) => format!("{status} over {protocol}"),
            _ => String::new(),
        };
        step(&mut out, "headers", self.timeline.get("headers"), head);
        step(
            &mut out,
            "first byte",
            self.timeline.get("first_byte"),
            String::new(),
        );
        for (n, event) in self.events.iter().enumerate() {
            let note = format!("{} ({} B) id={}", event.event, event.bytes, event.id);
            step(&mut out, &format!("event {}", n + 1), Some(&event.ms), note);
        }
        step(
            &mut out,
            "end",
            self.timeline.get("end"),
            "the response ended".to_owned(),
        );
        if !self.headers.is_empty() {
            let headers: Vec<String> = self
                .headers
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            let _ = writeln!(out, "  response    {}", headers.join(" | "));
        }
        if let Some(detail) = &self.detail {
            let _ = writeln!(out, "  detail      {detail}");
        }
        if self.status.is_some() {
            let spread = match (self.chunks.first(), self.chunks.last()) {
                (Some(first), Some(last)) => format!(
                    "{} chunks, {} bytes, from {:.1} to {:.1} ms",
                    self.chunk_count, self.body_bytes, first.ms, last.ms
                ),
                _ => "no body bytes".to_owned(),
            };
            let _ = writeln!(
                out,
                "  arrival     {spread}; {} heartbeat comment(s); longest silence {}",
                self.comments,
                self.max_gap_ms
                    .map_or("-".to_owned(), |g| format!("{g:.0} ms"))
            );
        }
        let _ = writeln!(out, "verdict: {} ({})", self.verdict.as_str(), self.reason);
        out
    }
}
