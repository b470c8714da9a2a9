//! `sse-edge load URL`: the project's own SSE load generator.
//!
//! Opens `streams` event streams over `connections` connections (HTTP/1.1: one stream each;
//! HTTP/2: multiplexed), as fast as it can, holds them for `duration`, and reports how fast
//! they opened, time to response headers and to the first frame, events and bytes received,
//! and, when events carry the origin's send time as `"ts_us": <unix microseconds>`, the
//! end-to-end event latency. Bounded in streams and time; meant for loopback.
//!
//! One process holds at most about 19,000 HTTP/1.1 streams here (20,000 open files): past
//! that, `--processes` spreads the load over several ([`processes`]). HTTP/2 multiplexes many
//! streams per connection and goes far past it in one. `--source-ips` spreads connections over
//! loopback source addresses, since one address reaches a server port through at most ~28,000
//! ephemeral ports.

pub mod processes;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty};
use serde::{Deserialize, Serialize};

use crate::tools::probe::connect::{ConnectOptions, Sender, connect};
use crate::tools::probe::decode::{Decoder, Item};

/// Most latency and timing samples kept (beyond it, later samples are dropped).
const MAX_SAMPLES: usize = 1_000_000;

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The stream URL.
    pub url: String,
    /// Streams to open.
    pub streams: usize,
    /// Connections to spread them over (HTTP/1.1 uses one per stream regardless).
    pub connections: usize,
    /// Multiplex over HTTP/2.
    pub http2: bool,
    /// Accept any certificate.
    pub insecure: bool,
    /// How long to hold the streams after they are all open (or failed).
    pub duration: Duration,
    /// Extra request headers, `Name: value`.
    pub headers: Vec<String>,
    /// Loopback source addresses to spread connections over (1: let the kernel choose).
    /// One address and port pair reaches a server port at most ~28,000 times (the
    /// ephemeral port range); many addresses lift that bound.
    pub source_ips: usize,
    /// Index of this run's first connection among all processes' (so that processes
    /// sharing a load use different source addresses).
    pub first_connection: usize,
    /// Keep the raw samples in the report (for merging).
    pub keep_samples: bool,
    /// Open this many connections per second instead of all at once, so that each new
    /// client's time to first frame is its own, not a queue's.
    pub rate: Option<f64>,
    /// Spread streams over this many stream keys: `{key}` in the URL becomes 0, 1, ...
    pub keys: usize,
}

/// The placeholder in a URL that `keys` fills.
pub const KEY: &str = "{key}";

impl LoadOptions {
    /// How many connections the streams travel over.
    pub fn connection_count(&self) -> usize {
        if self.http2 {
            self.connections.clamp(1, self.streams.max(1))
        } else {
            self.streams
        }
    }
}

/// The `n`th loopback source address: 127.1.0.1, 127.1.0.2, ... skipping addresses that
/// end in 0 or 255.
pub fn source_ip(n: usize) -> IpAddr {
    let base = u32::from(Ipv4Addr::new(127, 1, 0, 0));
    let n = n as u32 % (254 * 256 * 254);
    IpAddr::V4(Ipv4Addr::from(base + (n / 254) * 256 + n % 254 + 1))
}

/// Percentiles of a set of samples, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Spread {
    /// How many samples.
    pub count: usize,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Spread {
    /// The spread of `samples`.
    pub fn of(mut samples: Vec<f64>) -> Spread {
        if samples.is_empty() {
            return Spread::default();
        }
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        Spread {
            count: samples.len(),
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadReport {
    /// Streams asked for.
    pub streams: usize,
    /// Streams that got a 200 `text/event-stream` answer.
    pub opened: usize,
    /// Streams that failed (connect, status, type), with the first reason.
    pub failed: usize,
    /// The first failure seen.
    pub first_failure: Option<String>,
    /// Seconds from start until every stream was open or failed.
    pub open_seconds: f64,
    /// Streams opened per second.
    pub opened_per_second: f64,
    /// Time to response headers.
    pub headers: Spread,
    /// Time to the first body frame.
    pub first_frame: Spread,
    /// Events received over the whole run.
    pub events: u64,
    /// Events received per second during the hold.
    pub events_per_second: f64,
    /// Body bytes received.
    pub bytes: u64,
    /// Streams that ended before the run did.
    pub ended_early: usize,
    /// Origin send time to receipt, for events with `ts_us`.
    pub latency: Spread,
    /// The raw samples behind the spreads, kept when processes' reports are to be merged
    /// (`--processes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<Samples>,
}

/// Raw timing samples, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Samples {
    /// Time to response headers.
    pub headers: Vec<f64>,
    /// Time to the first body frame.
    pub first_frame: Vec<f64>,
    /// Event latency.
    pub latency: Vec<f64>,
}

#[derive(Default)]
struct Tally {
    /// Set once every stream is open: latency is sampled from then on, so the storm of
    /// opening (which delays events for reasons of its own) does not count.
    holding: AtomicBool,
    opened: AtomicUsize,
    failed: AtomicUsize,
    ended: AtomicUsize,
    events: AtomicU64,
    bytes: AtomicU64,
    first_failure: Mutex<Option<String>>,
    headers_ms: Mutex<Vec<f64>>,
    first_frame_ms: Mutex<Vec<f64>>,
    latency_ms: Mutex<Vec<f64>>,
}

impl Tally {
    fn fail(&self, why: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.first_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(why);
    }

    fn sample(list: &Mutex<Vec<f64>>, value: f64) {
        let mut list = list.lock().unwrap_or_else(|e| e.into_inner());
        if list.len() < MAX_SAMPLES {
            list.push(value);
        }
    }

    fn take(list: &Mutex<Vec<f64>>) -> Vec<f64> {
        std::mem::take(&mut *list.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Runs the load and reports; `Err` only for a URL that cannot be used at all.
pub async fn run(options: &LoadOptions) -> Result<LoadReport, String> {
    // `{key}` is filled per stream; any value parses the same.
    let uri: Uri = options
        .url
        .replace(KEY, "0")
        .parse()
        .map_err(|_| format!("`{}` is not a URL", options.url))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => {
            return Err(format!(
                "`{}` must start with http:// or https://",
                options.url
            ));
        }
    };
    let host = uri
        .host()
        .ok_or_else(|| format!("`{}` has no host", options.url))?
        .trim_matches(['[', ']'])
        .to_owned();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    // What goes in the request line: the path for HTTP/1.1 (with a Host header), the whole
    // URL for HTTP/2 (`:authority`).
    let target = if options.http2 {
        options.url.clone()
    } else {
        let after_scheme = options.url.split_once("://").map_or("", |(_, rest)| rest);
        match after_scheme.find('/') {
            Some(slash) => after_scheme[slash..].to_owned(),
            None => "/".to_owned(),
        }
    };
    let authority = uri.authority().map(|a| a.as_str().to_owned());
    let connections = options.connection_count();

    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..connections {
        let share = processes::share(options.streams, connections, c);
        let (host, tally) = (host.clone(), tally.clone());
        let (target, authority) = (target.clone(), authority.clone());
        let options = options.clone();
        let global = options.first_connection + c;
        // With `--rate`, connection `c` starts at its slot; otherwise all start at once.
        let start_at = options.rate.map_or(started, |rate| {
            started + Duration::from_secs_f64(c as f64 / rate)
        });
        tasks.spawn(async move {
            tokio::time::sleep_until(start_at.into()).await;
            let began = Instant::now();
            let how = ConnectOptions {
                tls,
                http2: options.http2,
                insecure: options.insecure,
                source: (options.source_ips > 1).then(|| source_ip(global % options.source_ips)),
            };
            let connected = match connect(began, &host, port, how).await {
                Ok(connected) => connected,
                Err(error) => {
                    for _ in 0..share {
                        tally.fail(error.clone());
                    }
                    return;
                }
            };
            let key = |j: usize| target.replace(KEY, &((global + j) % options.keys).to_string());
            let mut streams = tokio::task::JoinSet::new();
            match connected.sender {
                Sender::Http1(sender) => {
                    let request = build_request(key(0), authority.as_deref(), &options.headers);
                    streams.spawn(stream(Sender::Http1(sender), request, began, tally));
                }
                Sender::Http2(sender) => {
                    for j in 0..share {
                        let one = Sender::Http2(sender.clone());
                        let request = build_request(key(j), None, &options.headers);
                        streams.spawn(stream(one, request, began, tally.clone()));
                    }
                }
            }
            while streams.join_next().await.is_some() {}
        });
    }

    // Wait until every stream is open or failed, then hold for the duration.
    let all = options.streams;
    let pacing = options.rate.map_or(Duration::ZERO, |rate| {
        Duration::from_secs_f64(connections as f64 / rate)
    });
    let open_deadline = Instant::now() + pacing + options.duration.max(Duration::from_secs(30));
    while tally.opened.load(Ordering::Relaxed) + tally.failed.load(Ordering::Relaxed) < all
        && Instant::now() < open_deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let open_seconds = started.elapsed().as_secs_f64();
    let events_before = tally.events.load(Ordering::Relaxed);
    tally.holding.store(true, Ordering::Relaxed);
    let hold_started = Instant::now();
    tokio::time::sleep(options.duration).await;
    let held = hold_started.elapsed().as_secs_f64();
    let events_during = tally.events.load(Ordering::Relaxed) - events_before;
    tasks.abort_all();

    let opened = tally.opened.load(Ordering::Relaxed);
    let samples = Samples {
        headers: Tally::take(&tally.headers_ms),
        first_frame: Tally::take(&tally.first_frame_ms),
        latency: Tally::take(&tally.latency_ms),
    };
    Ok(LoadReport {
        streams: all,
        opened,
        failed: tally.failed.load(Ordering::Relaxed),
        first_failure: tally
            .first_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
        open_seconds,
        opened_per_second: opened as f64 / open_seconds.max(1e-9),
        headers: Spread::of(samples.headers.clone()),
        first_frame: Spread::of(samples.first_frame.clone()),
        events: tally.events.load(Ordering::Relaxed),
        events_per_second: events_during as f64 / held.max(1e-9),
        bytes: tally.bytes.load(Ordering::Relaxed),
        ended_early: tally.ended.load(Ordering::Relaxed),
        latency: Spread::of(samples.latency.clone()),
        samples: options.keep_samples.then_some(samples),
    })
}

/// A stream request for `target` (a path with `authority` as Host, or a whole URL).
fn build_request(
    target: String,
    authority: Option<&str>,
    headers: &[String],
) -> Result<Request<Empty<Bytes>>, String> {
    let mut builder = Request::get(target).header("accept", "text/event-stream");
    if let Some(authority) = authority {
        builder = builder.header("host", authority);
    }
    for header in headers {
        if let Some((name, value)) = header.split_once(':') {
            builder = builder.header(name.trim(), value.trim());
        }
    }
    builder
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("cannot build the request: {e}"))
}

/// One stream: request, then count until the run is aborted. Times are from `began`, when
/// its connection started.
async fn stream(
    sender: Sender,
    request: Result<Request<Empty<Bytes>>, String>,
    began: Instant,
    tally: Arc<Tally>,
) {
    let ms = || began.elapsed().as_secs_f64() * 1000.0;
    let request = match request {
        Ok(request) => request,
        Err(error) => return tally.fail(error),
    };
    let response = match sender {
        Sender::Http1(mut s) => s.send_request(request).await,
        Sender::Http2(mut s) => s.send_request(request).await,
    };
    let response = match response {
        Ok(response) => response,
        Err(error) => return tally.fail(format!("request failed: {error}")),
    };
    let is_stream = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if !response.status().is_success() || !is_stream {
        return tally.fail(format!(
            "answered {} without an event stream",
            response.status()
        ));
    }
    Tally::sample(&tally.headers_ms, ms());
    tally.opened.fetch_add(1, Ordering::Relaxed);
    let mut body = response.into_body();
    let mut decoder = Decoder::default();
    let mut items = Vec::new();
    let mut first = true;
    while let Some(Ok(frame)) = body.frame().await {
        let Ok(data) = frame.into_data() else {
            continue;
        };
        // The first frame replays the state as it was (stamped with when it last changed),
        // so only later frames are live changes whose latency means something.
        let live = !first && tally.holding.load(Ordering::Relaxed);
        if first {
            first = false;
            Tally::sample(&tally.first_frame_ms, ms());
        }
        tally.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        decoder.feed(&data, &mut items);
        let now_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        for item in items.drain(..) {
            if let Item::Event { data, .. } = item {
                tally.events.fetch_add(1, Ordering::Relaxed);
                if let Some(sent) = sent_at_us(&data).filter(|_| live) {
                    Tally::sample(
                        &tally.latency_ms,
                        now_us.saturating_sub(sent) as f64 / 1000.0,
                    );
                }
            }
        }
    }
    tally.ended.fetch_add(1, Ordering::Relaxed);
}

/// The origin's send time stamped in an event as `"ts_us": <unix microseconds>`.
fn sent_at_us(data: &str) -> Option<u64> {
    let rest = &data[data.find("\"ts_us\":")? + 8..];
    let digits = rest.trim_start();
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

impl LoadReport {
    /// The human-readable summary.
    pub fn to_text(&self, options: &LoadOptions) -> String {
        let spread = |s: &Spread| {
            format!(
                "p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  max {:.1} ms  ({} samples)",
                s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms, s.count
            )
        };
        let mut out = format!(
            "load {}: {} streams over {} {} connection(s), held {:.0} s\n",
            options.url,
            self.streams,
            options.connection_count(),
            if options.http2 { "HTTP/2" } else { "HTTP/1.1" },
            options.duration.as_secs_f64()
        );
        out.push_str(&format!(
            "  opened       {}/{} in {:.2} s ({:.0}/s), {} failed{}\n",
            self.opened,
            self.streams,
            self.open_seconds,
            self.opened_per_second,
            self.failed,
            self.first_failure
                .as_ref()
                .map(|f| format!(" (first: {f})"))
                .unwrap_or_default()
        ));
        out.push_str(&format!("  headers      {}\n", spread(&self.headers)));
        out.push_str(&format!("  first frame  {}\n", spread(&self.first_frame)));
        out.push_str(&format!(
            "  events       {} ({:.0}/s while held), {} bytes, {} stream(s) ended early\n",
            self.events, self.events_per_second, self.bytes, self.ended_early
        ));
        if self.latency.count > 0 {
            out.push_str(&format!("  latency      {}\n", spread(&self.latency)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_are_distinct_loopback_hosts() {
        assert_eq!(source_ip(0).to_string(), "127.1.0.1");
        assert_eq!(source_ip(253).to_string(), "127.1.0.254");
        assert_eq!(source_ip(254).to_string(), "127.1.1.1");
        let all: std::collections::HashSet<_> = (0..100_000).map(source_ip).collect();
        assert_eq!(all.len(), 100_000);
        assert!(all.iter().all(|ip| ip.is_loopback()));
    }

    #[test]
    fn percentiles() {
        let s = Spread::of((1..=100).map(f64::from).collect());
        assert_eq!(
            (s.count, s.p50_ms, s.p99_ms, s.max_ms),
            (100, 51.0, 99.0, 100.0)
        );
        assert_eq!(Spread::of(Vec::new()).count, 0);
    }

    #[test]
    fn send_times_are_read_from_event_data() {
        assert_eq!(
            sent_at_us(r#"{"v":1,"ts_us": 1700000000000123}"#),
            Some(1_700_000_000_000_123)
        );
        assert_eq!(sent_at_us(r#"{"ts_us":"x"}"#), None);
        assert_eq!(sent_at_us("{}"), None);
    }
}
