//! Counters for operators, rendered in the Prometheus text format on the admin listener.
//!
//! One [`Metrics`] per proxy (so several proxies in one test process never mix counts),
//! shared by reference with every part of the data path. Counters are relaxed atomics: cheap
//! on the hot path, and exact enough for a scrape.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use super::histogram::Histogram;
use super::process::ProcessStats;

/// Upper bounds of the poll-latency histogram, in seconds (the last bucket is `+Inf`).
const POLL_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How one poll ended.
#[derive(Debug, Clone, Copy)]
pub enum PollOutcome {
    /// New data: events were published.
    Changed,
    /// A body identical in content to the last one.
    Unchanged,
    /// 304 Not Modified.
    NotModified,
    /// 5xx, 429, timeout, unreachable, or a body that is not usable JSON.
    Error,
    /// 401/403/404/410: the stream was refused.
    Refused,
}

/// Why a request was turned away by a limit.
#[derive(Debug, Clone, Copy)]
pub enum Limit {
    /// `[sse] max_streams`.
    MaxStreams,
    /// `[sse] max_streams_per_user`.
    MaxStreamsPerUser,
    /// `[auth] max_validations_per_s`.
    ValidationRate,
    /// `[listen] max_connections`.
    MaxConnections,
    /// `[sse] max_streams_per_ip`.
    MaxStreamsPerIp,
    /// An HTTP/2 stream reset after `write_timeout_ms` without progress.
    StalledStream,
    /// An HTTP/2 connection closed over `[listen] max_h2_control_frames_per_s`.
    ControlFrameFlood,
    /// `[[stream]] max_keys`.
    MaxKeys,
}

impl Limit {
    const ALL: [Limit; 8] = [
        Limit::MaxStreams,
        Limit::MaxStreamsPerUser,
        Limit::ValidationRate,
        Limit::MaxConnections,
        Limit::MaxStreamsPerIp,
        Limit::StalledStream,
        Limit::ControlFrameFlood,
        Limit::MaxKeys,
    ];

    fn label(self) -> &'static str {
        match self {
            Limit::MaxStreams => "{reason=\"max_streams\"}",
            Limit::MaxStreamsPerUser => "{reason=\"max_streams_per_user\"}",
            Limit::ValidationRate => "{reason=\"validation_rate\"}",
            Limit::MaxConnections => "{reason=\"max_connections\"}",
            Limit::MaxStreamsPerIp => "{reason=\"max_streams_per_ip\"}",
            Limit::StalledStream => "{reason=\"stalled_stream\"}",
            Limit::ControlFrameFlood => "{reason=\"h2_control_flood\"}",
            Limit::MaxKeys => "{reason=\"max_keys\"}",
        }
    }
}

/// Process-wide counters of one proxy.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Open client connections over TLS.
    pub connections_tls: AtomicI64,
    /// Open plaintext client connections.
    pub connections_plain: AtomicI64,
    /// Requests answered, by kind.
    pub requests_stream: AtomicU64,
    /// Passthrough requests answered.
    pub requests_passthrough: AtomicU64,
    /// Requests refused before routing further (bad parameters).
    pub requests_rejected: AtomicU64,
    /// Event streams started.
    pub streams_started: AtomicU64,
    /// Frames (events, state bursts, notices) written to stream clients.
    pub frames_sent: AtomicU64,
    /// Bytes written to stream clients.
    pub stream_bytes_sent: AtomicU64,
    /// Heartbeat comments written.
    pub heartbeats_sent: AtomicU64,
    polls: [AtomicU64; 5],
    /// Sum of poll latencies, in microseconds; their count is the sum of `polls`.
    poll_micros: AtomicU64,
    /// Polls at most as long as each of [`POLL_BUCKETS`] (not cumulative; summed on render),
    /// and in the last slot, longer than all of them.
    poll_buckets: [AtomicU64; POLL_BUCKETS.len() + 1],
    /// Slow clients skipped ahead to the current state.
    pub resyncs_lagged: AtomicU64,
    /// Reconnects whose `Last-Event-ID` was unknown or expired.
    pub resyncs_unknown_id: AtomicU64,
    /// Reconnects that got exactly the difference since their `Last-Event-ID`.
    pub resumes: AtomicU64,
    /// Token verdicts answered from the cache.
    pub auth_cache_hits: AtomicU64,
    /// Calls made to the origin's validator.
    pub validator_calls: AtomicU64,
    /// Requests whose token was rejected or missing.
    pub auth_rejects: AtomicU64,
    limits: [AtomicU64; Limit::ALL.len()],
    /// Passthrough answers by status.
    passthrough: PassthroughStats,
    /// HTTPS handshakes that failed (`[0]`) or timed out (`[1]`).
    tls_handshake_failures: [AtomicU64; 2],
    /// Cluster mode's leases, Redis traffic and fallbacks.
    pub cluster: ClusterStats,
}

/// Cluster mode's counters (rendered only when `[cluster]` is configured).
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Set once at start when `[cluster]` is configured.
    pub enabled: AtomicBool,
    /// Whether the last Redis command succeeded.
    pub redis_up: AtomicBool,
    /// Stream keys this instance polls for the cluster now.
    pub leases_held: AtomicI64,
    /// Leases taken (first holder of a key, or a takeover).
    pub leases_taken: AtomicU64,
    /// Times a stream key was polled by this instance alone because Redis was unreachable.
    pub fallbacks: AtomicU64,
    /// Batches of changes published to Redis.
    pub published: AtomicU64,
    /// Batches of changes applied from another instance.
    pub applied: AtomicU64,
    /// Times a state converged on Redis' snapshot after drifting.
    pub converged: AtomicU64,
    /// Redis commands that failed.
    pub redis_errors: AtomicU64,
}

/// Passthrough latency and status counts.
#[derive(Debug)]
struct PassthroughStats {
    /// Time to the response head, by status class (`1xx` .. `5xx`).
    latency: [Histogram; 5],
    /// Answers by exact status, 100 to 599 (index `status - 100`).
    codes: Vec<AtomicU64>,
}

impl Default for PassthroughStats {
    fn default() -> Self {
        PassthroughStats {
            latency: Default::default(),
            codes: (100..600).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Metrics {
    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a finished poll and its latency.
    pub fn poll(&self, outcome: PollOutcome, micros: u64) {
        Metrics::inc(&self.polls[outcome as usize]);
        self.poll_micros.fetch_add(micros, Ordering::Relaxed);
        let seconds = micros as f64 / 1e6;
        let bucket = POLL_BUCKETS
            .iter()
            .position(|&le| seconds <= le)
            .unwrap_or(POLL_BUCKETS.len());
        Metrics::inc(&self.poll_buckets[bucket]);
    }

    /// Counts a passthrough answer: its status and the time to its head.
    pub fn passthrough(&self, status: u16, took: Duration) {
        let stats = &self.passthrough;
        if let Some(count) = stats.codes.get(usize::from(status).wrapping_sub(100)) {
            Metrics::inc(count);
            stats.latency[usize::from(status / 100 - 1)].observe(took);
        }
    }

    /// Counts an HTTPS handshake that failed, or (`timed_out`) did not finish in time.
    pub fn tls_handshake_failed(&self, timed_out: bool) {
        Metrics::inc(&self.tls_handshake_failures[usize::from(timed_out)]);
    }

    /// Counts a request turned away by a limit.
    pub fn limited(&self, limit: Limit) {
        Metrics::inc(&self.limits[limit as usize]);
    }

    /// The Prometheus text exposition, with the gauges only the caller knows.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        family(
            &mut out,
            "connections_open",
            "gauge",
            "Open client connections.",
            &[
                (
                    "{listener=\"https\"}",
                    self.connections_tls.load(Ordering::Relaxed) as f64,
                ),
                (
                    "{listener=\"http\"}",
                    self.connections_plain.load(Ordering::Relaxed) as f64,
                ),
            ],
        );
        family(
            &mut out,
            "requests_total",
            "counter",
            "Requests answered, by route kind.",
            &[
                ("{route=\"stream\"}", get(&self.requests_stream) as f64),
                (
                    "{route=\"passthrough\"}",
                    get(&self.requests_passthrough) as f64,
                ),
                ("{route=\"rejected\"}", get(&self.requests_rejected) as f64),
            ],
        );
        family(
            &mut out,
            "streams_open",
            "gauge",
            "Event streams open now.",
            &[("", gauges.streams_open as f64)],
        );
        let by_route = |pick: fn(&RouteGauge) -> usize| -> Vec<(String, f64)> {
            gauges
                .routes
                .iter()
                .map(|r| {
                    (
                        format!("{{route=\"{}\"}}", label_value(&r.route)),
                        pick(r) as f64,
                    )
                })
                .collect()
        };
        let pollers = by_route(|r| r.pollers);
        family(
            &mut out,
            "pollers",
            "gauge",
            "Stream keys with a live channel (and, without [cluster], their poller), by route; with [cluster], sse_edge_cluster_leases counts the keys this instance polls.",
            &pollers,
        );
        let subscribers = by_route(|r| r.subscribers);
        family(
            &mut out,
            "subscribers",
            "gauge",
            "Clients (open streams) attached to stream keys, by route.",
            &subscribers,
        );
        gauges.hub.render(&mut out);
        family(
            &mut out,
            "streams_started_total",
            "counter",
            "Event streams started.",
            &[("", get(&self.streams_started) as f64)],
        );
        family(
            &mut out,
            "frames_sent_total",
            "counter",
            "Frames written to stream clients.",
            &[("", get(&self.frames_sent) as f64)],
        );
        family(
            &mut out,
            "stream_bytes_sent_total",
            "counter",
            "Bytes written to stream clients.",
            &[("", get(&self.stream_bytes_sent) as f64)],
        );
        family(
            &mut out,
            "heartbeats_sent_total",
            "counter",
            "Heartbeat comments written.",
            &[("", get(&self.heartbeats_sent) as f64)],
        );
        let names = ["changed", "unchanged", "not_modified", "error", "refused"];
        let polls: Vec<(String, f64)> = names
            .iter()
            .zip(&self.polls)
            .map(|(n, c)| (format!("{{outcome=\"{n}\"}}"), get(c) as f64))
            .collect();
        family(
            &mut out,
            "polls_total",
            "counter",
            "Origin polls by outcome.",
            &polls,
        );
        // Each bucket is read once, and +Inf and the count are their total, so a poll recorded
        // while rendering cannot make the histogram non-monotonic.
        let counts: Vec<u64> = self.poll_buckets.iter().map(get).collect();
        let count: u64 = counts.iter().sum();
        let mut cumulative = 0;
        let mut buckets: Vec<(String, f64)> = POLL_BUCKETS
            .iter()
            .zip(&counts)
            .map(|(le, n)| {
                cumulative += n;
                (format!("_bucket{{le=\"{le}\"}}"), cumulative as f64)
            })
            .collect();
        buckets.push(("_bucket{le=\"+Inf\"}".to_owned(), count as f64));
        buckets.push(("_sum".to_owned(), get(&self.poll_micros) as f64 / 1e6));
        buckets.push(("_count".to_owned(), count as f64));
        family(
            &mut out,
            "poll_duration_seconds",
            "histogram",
            "Time from sending a poll to having its whole body.",
            &buckets,
        );
        family(
            &mut out,
            "resyncs_total",
            "counter",
            "Clients sent the full state: lagged (slow client) or unknown_id (reconnect).",
            &[
                ("{reason=\"lagged\"}", get(&self.resyncs_lagged) as f64),
                (
                    "{reason=\"unknown_id\"}",
                    get(&self.resyncs_unknown_id) as f64,
                ),
            ],
        );
        family(
            &mut out,
            "resumes_total",
            "counter",
            "Reconnects served exactly the missing changes.",
            &[("", get(&self.resumes) as f64)],
        );
        family(
            &mut out,
            "auth_total",
            "counter",
            "Token checks: cache hits, validator calls, rejections.",
            &[
                ("{result=\"cache_hit\"}", get(&self.auth_cache_hits) as f64),
                (
                    "{result=\"validator_call\"}",
                    get(&self.validator_calls) as f64,
                ),
                ("{result=\"reject\"}", get(&self.auth_rejects) as f64),
            ],
        );
        family(
            &mut out,
            "limit_rejections_total",
            "counter",
            "Requests refused by a limit.",
            &Limit::ALL.map(|l| (l.label(), get(&self.limits[l as usize]) as f64)),
        );
        self.render_operations(&mut out);
        self.render_cluster(&mut out);
        out
    }

    /// Cluster mode's families, when it is on.
    fn render_cluster(&self, out: &mut String) {
        let c = &self.cluster;
        if !c.enabled.load(Ordering::Relaxed) {
            return;
        }
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed) as f64;
        let up = f64::from(u8::from(c.redis_up.load(Ordering::Relaxed)));
        family(
            out,
            "cluster_redis_up",
            "gauge",
            "Whether Redis answered the last command (1) or not (0); at 0 every instance polls alone.",
            &[("", up)],
        );
        let held = c.leases_held.load(Ordering::Relaxed) as f64;
        family(
            out,
            "cluster_leases",
            "gauge",
            "Stream keys this instance polls for the cluster.",
            &[("", held)],
        );
        family(
            out,
            "cluster_leases_taken_total",
            "counter",
            "Leases taken: a key's first holder, or a takeover.",
            &[("", get(&c.leases_taken))],
        );
        family(
            out,
            "cluster_fallbacks_total",
            "counter",
            "Times a stream key was polled alone because Redis was unreachable.",
            &[("", get(&c.fallbacks))],
        );
        family(
            out,
            "cluster_batches_total",
            "counter",
            "Batches of changes published to Redis, and applied from another instance.",
            &[
                ("{direction=\"published\"}", get(&c.published)),
                ("{direction=\"applied\"}", get(&c.applied)),
            ],
        );
        family(
            out,
            "cluster_converged_total",
            "counter",
            "Times a state converged on the shared snapshot after drifting.",
            &[("", get(&c.converged))],
        );
        family(
            out,
            "cluster_redis_errors_total",
            "counter",
            "Redis commands that failed.",
            &[("", get(&c.redis_errors))],
        );
    }

    /// Build, process, passthrough and TLS handshake families.
    fn render_operations(&self, out: &mut String) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        family(
            out,
            "build_info",
            "gauge",
            "The running build: always 1, with its version as a label.",
            &[(
                concat!("{version=\"", env!("CARGO_PKG_VERSION"), "\"}"),
                1.0,
            )],
        );
        ProcessStats::read().render(out);
        let codes: Vec<(String, f64)> = (100u16..)
            .zip(&self.passthrough.codes)
            .filter(|(_, n)| get(n) > 0)
            .map(|(code, n)| (format!("{{code=\"{code}\"}}"), get(n) as f64))
            .collect();
        family(
            out,
            "passthrough_responses_total",
            "counter",
            "Passthrough answers by status code (proxy-made errors included).",
            &codes,
        );
        let latency: Vec<(String, f64)> = (1..)
            .zip(&self.passthrough.latency)
            .flat_map(|(class, h)| h.samples(&format!("code=\"{class}xx\",")))
            .collect();
        family(
            out,
            "passthrough_duration_seconds",
            "histogram",
            "Passthrough time from the request head to the response head, by status class.",
            &latency,
        );
        family(
            out,
            "tls_handshake_failures_total",
            "counter",
            "HTTPS handshakes that failed or timed out, by listener.",
            &[
                (
                    "{listener=\"https\",reason=\"error\"}",
                    get(&self.tls_handshake_failures[0]) as f64,
                ),
                (
                    "{listener=\"https\",reason=\"timeout\"}",
                    get(&self.tls_handshake_failures[1]) as f64,
                ),
            ],
        );
    }
}

/// Writes one metric family: its help, its type, and its samples (`labels`, value).
fn family<L: AsRef<str>>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: &[(L, f64)],
) {
    let _ = writeln!(out, "# HELP sse_edge_{name} {help}");
    let _ = writeln!(out, "# TYPE sse_edge_{name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "sse_edge_{name}{} {value}", labels.as_ref());
    }
}

/// Values the metrics module cannot count itself.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// Event streams open now.
    pub streams_open: usize,
    /// Pollers and subscribers of each configured stream route.
    pub routes: Vec<RouteGauge>,
    /// What the stream hub remembers besides live channels.
    pub hub: HubGauge,
}

/// The stream hub's memory besides live channels: refusals and states kept to resume.
#[derive(Debug, Clone, Default)]
pub struct HubGauge {
    /// Stream keys the origin refused, answered from memory.
    pub refused_keys: u64,
    /// Stream keys whose state is kept after their poller stopped.
    pub resume_keys: u64,
    /// Bytes those states weigh against `resume_memory_bytes`.
    pub resume_bytes: u64,
}

impl HubGauge {
    /// Renders the hub's gauges.
    fn render(&self, out: &mut String) {
        family(
            out,
            "refused_keys",
            "gauge",
            "Stream keys the origin refused, answered from memory for refusal_ttl_s.",
            &[("", self.refused_keys as f64)],
        );
        family(
            out,
            "resume_keys",
            "gauge",
            "Stream keys whose state is kept for resume after their poller stopped.",
            &[("", self.resume_keys as f64)],
        );
        family(
            out,
            "resume_bytes",
            "gauge",
            "Bytes of kept states, bounded by resume_memory_bytes.",
            &[("", self.resume_bytes as f64)],
        );
    }
}

/// One stream route's live figures.
#[derive(Debug, Clone, Default)]
pub struct RouteGauge {
    /// The route's path pattern.
    pub route: String,
    /// Stream keys of this route with a running poller.
    pub pollers: usize,
    /// Clients attached to them.
    pub subscribers: usize,
}

/// Escapes a Prometheus label value.
fn label_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_stays_monotonic_while_polls_are_recorded() {
        let metrics = std::sync::Arc::new(Metrics::default());
        let writers: Vec<_> = (0..3)
            .map(|n| {
                let metrics = metrics.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000u64 {
                        metrics.poll(PollOutcome::Unchanged, (i * 7919 + n) % 20_000_000);
                    }
                })
            })
            .collect();
        for _ in 0..200 {
            let text = metrics.render(&Gauges::default());
            let values: Vec<f64> = text
                .lines()
                .filter(|l| l.starts_with("sse_edge_poll_duration_seconds_bucket"))
                .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
                .collect();
            assert!(values.windows(2).all(|w| w[0] <= w[1]), "{values:?}");
        }
        writers.into_iter().for_each(|w| w.join().expect("writer"));
    }

    #[test]
    fn renders_prometheus_text() {
        let metrics = Metrics::default();
        metrics.poll(PollOutcome::NotModified, 1500);
        Metrics::inc(&metrics.resyncs_lagged);
        metrics.limited(Limit::MaxStreams);
        let text = metrics.render(&Gauges {
            streams_open: 2,
            routes: vec![RouteGauge {
                route: "/a/{id}/s".into(),
                pollers: 1,
                subscribers: 2,
            }],
            hub: HubGauge {
                resume_bytes: 4096,
                ..HubGauge::default()
            },
        });
        assert!(text.contains("sse_edge_resume_bytes 4096\n"), "{text}");
        assert!(
            text.contains("sse_edge_subscribers{route=\"/a/{id}/s\"} 2\n"),
            "{text}"
        );
        assert_eq!(label_value("a\"b\\c"), "a\\\"b\\\\c");
        assert!(
            text.contains("sse_edge_polls_total{outcome=\"not_modified\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("sse_edge_resyncs_total{reason=\"lagged\"} 1\n"));
        assert!(text.contains("sse_edge_limit_rejections_total{reason=\"max_streams\"} 1\n"));
        assert!(text.contains("sse_edge_streams_open 2\n"));
        assert!(
            text.contains("sse_edge_poll_duration_seconds_sum 0.0015\n"),
            "{text}"
        );
        assert!(text.contains("sse_edge_poll_duration_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("sse_edge_poll_duration_seconds_bucket{le=\"+Inf\"} 1\n"));
        assert!(text.contains("sse_edge_poll_duration_seconds_count 1\n"));
        assert!(text.contains("# TYPE sse_edge_pollers gauge"));
    }

    #[test]
    fn renders_operations_families() {
        let metrics = Metrics::default();
        metrics.passthrough(404, Duration::from_millis(2));
        metrics.passthrough(200, Duration::from_millis(40));
        metrics.passthrough(200, Duration::from_millis(40));
        metrics.passthrough(99, Duration::ZERO);
        metrics.passthrough(600, Duration::ZERO);
        metrics.tls_handshake_failed(true);
        let text = metrics.render(&Gauges::default());
        let version = env!("CARGO_PKG_VERSION");
        assert!(text.contains(&format!("sse_edge_build_info{{version=\"{version}\"}} 1\n")));
        assert!(
            text.contains("sse_edge_passthrough_responses_total{code=\"200\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("sse_edge_passthrough_responses_total{code=\"404\"} 1\n"));
        assert!(!text.contains("code=\"99\"") && !text.contains("code=\"600\""));
        assert!(text.contains(
            "sse_edge_passthrough_duration_seconds_bucket{code=\"2xx\",le=\"0.05\"} 2\n"
        ));
        assert!(text.contains("sse_edge_passthrough_duration_seconds_count{code=\"4xx\"} 1\n"));
        assert!(text.contains(
            "sse_edge_tls_handshake_failures_total{listener=\"https\",reason=\"timeout\"} 1\n"
        ));
    }
}
