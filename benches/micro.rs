//! Micro-benchmarks of the hot paths: SSE encoding, delta computation on a realistic
//! dashboard document, routing, and delivering one event to many subscribers' cursors.
//!
//! Run: `cargo bench --bench micro`.

use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use sse_edge::config::{Mode, SourceConfig, StreamConfig};
use sse_edge::http::path::{PathPattern, PollTemplate};
use sse_edge::request::router::Router;
use sse_edge::stream::channel::{Channel, Cursor, Next, StreamKey};
use sse_edge::stream::delta::Tracker;
use sse_edge::stream::sse::{self, Event};
use sse_edge::stream::state::State;

fn sentiment_document(tickers: usize, round: u64) -> Bytes {
    let items: Vec<_> = (0..tickers)
        .map(|i| {
            // One ticker in ten changes per round.
            let epoch = if i % 10 == 0 { round } else { 0 };
            json!({
                "symbol": format!("T{i:04}"),
                "score": ((i as u64 * 7919 + epoch) % 2000) as f64 / 1000.0 - 1.0,
                "sentiment": "neutral",
                "mentions": 100 + (i as u64 * 31 + epoch) % 900,
                "sources": {"news": 12, "social": 40},
            })
        })
        .collect();
    Bytes::from(json!({"configuration_id": "cfg", "tickers": items}).to_string())
}

fn encoding(c: &mut Criterion) {
    let mut group = c.benchmark_group("sse_encode");
    let small = json!({"symbol": "AAPL", "score": 0.42, "sentiment": "positive", "mentions": 812})
        .to_string();
    group.throughput(Throughput::Bytes(small.len() as u64));
    group.bench_function("event_100B", |b| {
        b.iter(|| {
            sse::encode(&Event {
                id: Some("0123456789abcdef0123456789abcdef"),
                event: Some("sentiment_update"),
                data: &small,
            })
        })
    });
    let multi_line = "line of text that goes on for a while\n".repeat(100);
    group.throughput(Throughput::Bytes(multi_line.len() as u64));
    group.bench_function("multiline_4KB", |b| {
        b.iter(|| {
            sse::encode(&Event {
                id: None,
                event: Some("log"),
                data: &multi_line,
            })
        })
    });
    group.finish();
}

fn deltas(c: &mut Criterion) {
    let mut group = c.benchmark_group("delta");
    let items = Mode::Items {
        pointer: "/tickers".into(),
        key: "symbol".into(),
    };
    for tickers in [100, 1000] {
        let a = sentiment_document(tickers, 1);
        let b = sentiment_document(tickers, 2);
        group.throughput(Throughput::Bytes(a.len() as u64));
        group.bench_function(format!("items_{tickers}_10pct_changed"), |bench| {
            let mut tracker = Tracker::new(items.clone(), "sentiment_update");
            let mut flip = false;
            bench.iter(|| {
                flip = !flip;
                tracker.apply(if flip { &a } else { &b }).expect("valid")
            })
        });
        group.bench_function(format!("items_{tickers}_unchanged_body"), |bench| {
            let mut tracker = Tracker::new(items.clone(), "sentiment_update");
            tracker.apply(&a).expect("valid");
            bench.iter(|| tracker.apply(&a).expect("valid"))
        });
    }
    let doc = sentiment_document(100, 1);
    group.bench_function("snapshot_100_changed", |bench| {
        let other = sentiment_document(100, 2);
        let mut tracker = Tracker::new(Mode::Snapshot, "metrics");
        let mut flip = false;
        bench.iter(|| {
            flip = !flip;
            tracker
                .apply(if flip { &doc } else { &other })
                .expect("valid")
        })
    });
    group.finish();
}

fn routing(c: &mut Criterion) {
    let router = Router::of_patterns(&["/api/v2/stream", "/api/v2/configurations/{id}/stream"])
        .expect("patterns");
    let mut group = c.benchmark_group("route");
    group.bench_function("stream_with_param", |b| {
        b.iter(|| {
            router.route_path("/api/v2/configurations/5f1c2a9e-77b1-4f0e-9d1e-0a2b3c4d5e6f/stream")
        })
    });
    group.bench_function("passthrough", |b| {
        b.iter(|| router.route_path("/api/v2/stream/status"))
    });
    group.finish();
}

struct Noop;
impl Wake for Noop {
    fn wake(self: Arc<Self>) {}
}

fn fan_out(c: &mut Criterion) {
    let path = PathPattern::parse("/s").expect("pattern");
    let route = Arc::new(StreamConfig {
        index: 0,
        sources: vec![SourceConfig {
            poll: PollTemplate::parse("/p", &path, &[]).expect("template"),
            every: Duration::from_secs(1),
            event: "metrics".into(),
            mode: Mode::Snapshot,
            headers: vec![],
            wait: None,
        }],
        path,
        auth: false,
        query: Default::default(),
        max_keys: 1,
        events: Default::default(),
    });
    let key = StreamKey {
        route,
        params: vec![],
        user: None,
    };
    let waker = Waker::from(Arc::new(Noop));
    let mut group = c.benchmark_group("fan_out");
    for subscribers in [1_000usize, 10_000] {
        group.throughput(Throughput::Elements(subscribers as u64));
        group.bench_function(format!("publish_and_deliver_to_{subscribers}"), |b| {
            b.iter_batched_ref(
                || {
                    let state = State::new(1024, 1 << 22);
                    let channel = Channel::new(key.clone(), state, Arc::default());
                    let mut tracker = Tracker::new(Mode::Snapshot, "metrics");
                    channel.publish(
                        0,
                        tracker
                            .apply(&Bytes::from_static(b"{\"v\":0}"))
                            .expect("json"),
                    );
                    let cursors: Vec<Cursor> = (0..subscribers)
                        .map(|_| channel.start(None, 3000).1)
                        .collect();
                    (channel, tracker, cursors)
                },
                |(channel, tracker, cursors)| {
                    channel.publish(
                        0,
                        tracker
                            .apply(&Bytes::from_static(b"{\"v\":1}"))
                            .expect("json"),
                    );
                    let mut cx = Context::from_waker(&waker);
                    for cursor in cursors.iter_mut() {
                        match channel.poll_next(cursor, &mut cx) {
                            Poll::Ready(Next::Frame(frame)) => assert!(!frame.is_empty()),
                            _ => panic!("every subscriber has the event"),
                        }
                    }
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = encoding, deltas, routing, fan_out
}
criterion_main!(benches);
