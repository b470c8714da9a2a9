//! `sse-edge load URL`: the project's own SSE load generator.
//!
//! Opens `streams` event streams over `connections` connections (HTTP/1.1: one stream each;
//! HTTP/2: multiplexed), as fast as it can, holds them for `duration`, and reports how fast
//! they opened, time to response headers and to the first frame, events and bytes received,
//! and, when events carry the origin's send time as `"ts_us": <unix microseconds>`, the
//! end-to-end event latency. Bounded in streams and time; meant for loopback.
//!
//! One process holds at most about 19,000 HTTP/1.1 streams here (20,000 open files); HTTP/2
//! multiplexes many streams per connection and goes far past that.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty};
use serde::Serialize;

use crate::probe::connect::{Sender, connect};
use crate::probe::decode::{Decoder, Item};

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
}

/// Percentiles of a set of samples, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
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
    fn of(mut samples: Vec<f64>) -> Spread {
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
#[derive(Debug, Clone, Serialize)]
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
}

#[derive(Default)]
struct Tally {
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
    let uri: Uri = options
        .url
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
    let path = uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    let connections = if options.http2 {
        options.connections.clamp(1, options.streams.max(1))
    } else {
        options.streams
    };

    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..connections {
        // Streams of this connection: an even share, the first ones taking the remainder.
        let share = options.streams / connections + usize::from(c < options.streams % connections);
        let (host, path, uri, tally) = (host.clone(), path.clone(), uri.clone(), tally.clone());
        let options = options.clone();
        tasks.spawn(async move {
            let connected =
                match connect(started, &host, port, tls, options.http2, options.insecure).await {
                    Ok(connected) => connected,
                    Err(error) => {
                        for _ in 0..share {
                            tally.fail(error.clone());
                        }
                        return;
                    }
                };
            let mut streams = tokio::task::JoinSet::new();
            match connected.sender {
                Sender::Http1(sender) => {
                    streams.spawn(stream(
                        Sender::Http1(sender),
                        uri,
                        path,
                        options,
                        started,
                        tally,
                    ));
                }
                Sender::Http2(sender) => {
                    for _ in 0..share {
                        let one = Sender::Http2(sender.clone());
                        let (uri, path, options, tally) =
                            (uri.clone(), path.clone(), options.clone(), tally.clone());
                        streams.spawn(stream(one, uri, path, options, started, tally));
                    }
                }
            }
            while streams.join_next().await.is_some() {}
        });
    }

    // Wait until every stream is open or failed, then hold for the duration.
    let all = options.streams;
    let open_deadline = Instant::now() + options.duration.max(Duration::from_secs(30));
    while tally.opened.load(Ordering::Relaxed) + tally.failed.load(Ordering::Relaxed) < all
        && Instant::now() < open_deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let open_seconds = started.elapsed().as_secs_f64();
    let events_before = tally.events.load(Ordering::Relaxed);
    let hold_started = Instant::now();
    tokio::time::sleep(options.duration).await;
    let held = hold_started.elapsed().as_secs_f64();
    let events_during = tally.events.load(Ordering::Relaxed) - events_before;
    tasks.abort_all();

    let opened = tally.opened.load(Ordering::Relaxed);
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
        headers: Spread::of(Tally::take(&tally.headers_ms)),
        first_frame: Spread::of(Tally::take(&tally.first_frame_ms)),
        events: tally.events.load(Ordering::Relaxed),
        events_per_second: events_during as f64 / held.max(1e-9),
        bytes: tally.bytes.load(Ordering::Relaxed),
        ended_early: tally.ended.load(Ordering::Relaxed),
        latency: Spread::of(Tally::take(&tally.latency_ms)),
    })
}

/// One stream: request, then count until the run is aborted.
async fn stream(
    sender: Sender,
    uri: Uri,
    path: String,
    options: LoadOptions,
    started: Instant,
    tally: Arc<Tally>,
) {
    let ms = || started.elapsed().as_secs_f64() * 1000.0;
    let mut builder = Request::get(if options.http2 { uri.to_string() } else { path })
        .header("accept", "text/event-stream");
    if let Some(authority) = uri.authority().filter(|_| !options.http2) {
        builder = builder.header("host", authority.as_str());
    }
    for header in &options.headers {
        if let Some((name, value)) = header.split_once(':') {
            builder = builder.header(name.trim(), value.trim());
        }
    }
    let Ok(request) = builder.body(Empty::<Bytes>::new()) else {
        tally.fail("cannot build the request".to_owned());
        return;
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
                if let Some(sent) = sent_at_us(&data) {
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
            if options.http2 {
                options.connections.clamp(1, self.streams.max(1))
            } else {
                self.streams
            },
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
