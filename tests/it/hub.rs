//! The hub: one poller per stream key for any number of clients, per-user isolation,
//! lossless resume across reconnects and instances, slow clients, origin long-poll.

use crate::common;
use std::time::{Duration, Instant};

use common::client::{Proto, ReadError, SseStream};
use common::origin::FakeOrigin;
use common::sentiment::{drain_sentiment, summary, tickers};
use common::{Options, TestProxy, WAIT, start_proxy};
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::task::JoinSet;

const METRICS: &str = "/api/v2/metrics";
const ALICE: (&str, &str) = ("authorization", "Bearer tok-alice");

async fn origin() -> FakeOrigin {
    let origin = FakeOrigin::start().await;
    origin.add_token("tok-alice", "alice");
    origin.add_token("tok-bob", "bob");
    origin.set_configuration("cfg1", "alice", tickers(&[("AAPL", 0.1), ("MSFT", 0.2)]));
    origin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_cost_the_origin_one_poll_per_interval() {
    let origin = origin().await;
    let every = Duration::from_millis(50);
    let proxy = start_proxy(
        &origin,
        Options {
            max_streams: 2000,
            every_ms: every.as_millis() as u64,
            ..Options::default()
        },
    )
    .await;
    let started = Instant::now();
    let polls_before = origin.count(METRICS);
    let mut opening = JoinSet::new();
    for _ in 0..1000 {
        let client = proxy.client.clone();
        opening.spawn(async move {
            let mut stream = client.stream(Proto::H1Plain, "/api/v2/stream", &[]).await;
            assert_eq!(stream.status, 200);
            assert_eq!(stream.next(WAIT).await.json(), json!({"requests": 1}));
            stream
        });
    }
    let mut streams = Vec::new();
    while let Some(stream) = opening.join_next().await {
        streams.push(stream.expect("client"));
    }
    assert_eq!(proxy.proxy.pollers(), 1);
    let subscribers = "sse_edge_subscribers{route=\"/api/v2/stream\"}";
    assert_eq!(proxy.metric(subscribers).await, 1000.0);
    for change in 2..=5 {
        origin.set_metrics(json!({"requests": change}));
        for stream in &mut streams {
            let event = stream.next(WAIT).await;
            assert_eq!(
                event.json(),
                json!({"requests": change}),
                "every change once, in order"
            );
        }
    }
    let polls = origin.count(METRICS) - polls_before;
    let intervals = started.elapsed().as_millis() as usize / every.as_millis() as usize;
    assert!(
        polls <= intervals + 2,
        "{polls} polls in {intervals} intervals for 1000 clients: one poller serves them all"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_of_one_configuration_get_separate_pollers_and_data() {
    let origin = origin().await;
    origin.set_configuration("shared", "*", tickers(&[("AAPL", 0.5)]));
    let proxy = start_proxy(&origin, Options::default()).await;
    let path = "/api/v2/configurations/shared/stream";
    let mut alice = proxy.client.stream(Proto::H2Tls, path, &[ALICE]).await;
    let mut bob = proxy
        .client
        .stream(Proto::H2Tls, path, &[("authorization", "Bearer tok-bob")])
        .await;
    assert_eq!(
        alice.next_of("sentiment_update", WAIT).await.json()["viewer"],
        "alice"
    );
    assert_eq!(
        bob.next_of("sentiment_update", WAIT).await.json()["viewer"],
        "bob"
    );
    assert_eq!(
        proxy.proxy.pollers(),
        2,
        "one poller per (configuration, user)"
    );
    origin.set_configuration("shared", "*", tickers(&[("AAPL", 0.7)]));
    for (stream, user) in [(&mut alice, "alice"), (&mut bob, "bob")] {
        let event = stream.next_of("sentiment_update", WAIT).await;
        assert_eq!(event.json()["viewer"], user);
        assert_eq!(event.json()["score"], 0.7);
    }
}

/// Opens an observer that keeps the channel (and its history) alive, and follows changes.
async fn observer(proxy: &TestProxy) -> SseStream {
    let mut stream = proxy
        .client
        .stream(Proto::H2Tls, "/api/v2/configurations/cfg1/stream", &[ALICE])
        .await;
    drain_sentiment(&mut stream).await;
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_sends_exactly_the_missing_changes() {
    let origin = origin().await;
    let proxy = start_proxy(&origin, Options::default()).await;
    let mut watcher = observer(&proxy).await;
    let path = "/api/v2/configurations/cfg1/stream";

    let mut client = proxy.client.stream(Proto::H1Tls, path, &[ALICE]).await;
    let initial = drain_sentiment(&mut client).await;
    assert_eq!(summary(&initial), ["AAPL=0.1", "MSFT=0.2"]);
    let last_id = client.last_event_id().to_owned();
    drop(client);

    origin.set_configuration("cfg1", "alice", tickers(&[("AAPL", 0.3), ("MSFT", 0.2)]));
    watcher.next_of("sentiment_update", WAIT).await;
    origin.set_configuration("cfg1", "alice", tickers(&[("AAPL", 0.3), ("TSLA", 0.9)]));
    let seen = drain_sentiment(&mut watcher).await;
    assert_eq!(summary(&seen), ["TSLA=0.9", "-MSFT"]);

    let mut resumed = proxy
        .client
        .stream(Proto::H1Tls, path, &[ALICE, ("last-event-id", &last_id)])
        .await;
    let missing = drain_sentiment(&mut resumed).await;
    assert_eq!(
        summary(&missing),
        ["AAPL=0.3", "TSLA=0.9", "-MSFT"],
        "exactly the difference"
    );
    assert_eq!(resumed.last_event_id(), watcher.last_event_id());
    assert_eq!(proxy.metric("sse_edge_resumes_total").await, 1.0);

    // The same through the query parameter a browser uses on its first connect.
    let query_path = format!("{path}?last_event_id={last_id}");
    let mut by_query = proxy
        .client
        .stream(Proto::H2Tls, &query_path, &[ALICE])
        .await;
    assert_eq!(
        summary(&drain_sentiment(&mut by_query).await),
        ["AAPL=0.3", "TSLA=0.9", "-MSFT"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_from_before_the_history_is_a_full_resync() {
    let origin = origin().await;
    let proxy = start_proxy(
        &origin,
        Options {
            history_events: 4,
            ..Options::default()
        },
    )
    .await;
    let mut watcher = observer(&proxy).await;
    let path = "/api/v2/configurations/cfg1/stream";
    let mut client = proxy.client.stream(Proto::H2Tls, path, &[ALICE]).await;
    drain_sentiment(&mut client).await;
    let last_id = client.last_event_id().to_owned();
    drop(client);
    for round in 1..=6 {
        let score = round as f64;
        origin.set_configuration("cfg1", "alice", tickers(&[("AAPL", score), ("MSFT", 0.2)]));
        let event = watcher.next_of("sentiment_update", WAIT).await;
        assert_eq!(event.json()["score"], score);
    }
    let mut resumed = proxy
        .client
        .stream(Proto::H2Tls, path, &[ALICE, ("last-event-id", &last_id)])
        .await;
    let events = drain_sentiment(&mut resumed).await;
    assert_eq!(summary(&events), ["resync", "MSFT=0.2", "AAPL=6.0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_on_a_second_instance_works_the_same() {
    let origin = origin().await;
    let first = start_proxy(&origin, Options::default()).await;
    let second = start_proxy(&origin, Options::default()).await;
    let mut watch_first = observer(&first).await;
    let mut watch_second = observer(&second).await;
    let path = "/api/v2/configurations/cfg1/stream";

    let mut client = first.client.stream(Proto::H1Tls, path, &[ALICE]).await;
    drain_sentiment(&mut client).await;
    let last_id = client.last_event_id().to_owned();
    drop(client);
    for change in [
        tickers(&[("AAPL", 0.4), ("MSFT", 0.2)]),
        tickers(&[("AAPL", 0.4), ("MSFT", 0.8)]),
    ] {
        origin.set_configuration("cfg1", "alice", change);
        let a = watch_first.next_of("sentiment_update", WAIT).await;
        let b = watch_second.next_of("sentiment_update", WAIT).await;
        assert_eq!(
            a.id, b.id,
            "both instances derive the same id from the same state"
        );
    }
    let mut resumed = second
        .client
        .stream(Proto::H1Tls, path, &[ALICE, ("last-event-id", &last_id)])
        .await;
    assert_eq!(
        summary(&drain_sentiment(&mut resumed).await),
        ["AAPL=0.4", "MSFT=0.8"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_resynced_not_buffered() {
    let origin = origin().await;
    let document = common::padded_tickers;
    origin.set_configuration("cfg1", "alice", document(0));
    let proxy = start_proxy(
        &origin,
        Options {
            history_events: 256,
            ..Options::default()
        },
    )
    .await;
    let path = "/api/v2/configurations/cfg1/stream";
    let mut reader = proxy.client.stream(Proto::H1Tls, path, &[ALICE]).await;
    for _ in 0..1000 {
        reader.next_of("sentiment_update", WAIT).await;
    }

    // A client with a tiny receive buffer that sends its request and then never reads.
    let http = proxy.proxy.http_addr().expect("http listener");
    let mut stalled = common::stalled_client(http, path, "tok-alice").await;
    common::eventually("the stalled stream to open", WAIT, || {
        proxy.proxy.open_streams() == 2
    })
    .await;

    // 10,000 events (~11 MB) flow; the reading client gets every one of them.
    for round in 1..=10 {
        origin.set_configuration("cfg1", "alice", document(round));
        for _ in 0..1000 {
            let event = reader.next_of("sentiment_update", WAIT).await;
            assert_eq!(event.json()["round"], round);
        }
    }

    // The stalled client now reads: it was skipped ahead (resync) instead of having every
    // event queued for it, so it receives far less than the 11 MB that flowed.
    let mut received = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + WAIT;
    let needle = b"event: resync\ndata: {\"reason\":\"lagged\"}";
    // Only the new bytes (and a needle's length before them) are searched: reads of a 4 KiB
    // receive buffer are small, and rescanning a megabyte each time is slow in debug builds.
    let mut searched = 0;
    while !received[searched..]
        .windows(needle.len())
        .any(|w| w == needle)
    {
        searched = received.len().saturating_sub(needle.len() - 1);
        let read = tokio::time::timeout_at(deadline, stalled.read(&mut buffer))
            .await
            .expect("the stalled client gets a resync in time")
            .expect("read");
        assert!(read > 0, "the stream stays open");
        received.extend_from_slice(&buffer[..read]);
    }
    let total_flowed = 10 * 1000 * 1060; // 10 rounds of 1,000 items of ~1,060 bytes
    assert!(
        received.len() < total_flowed / 2,
        "received {} bytes before the resync; {} flowed",
        received.len(),
        total_flowed
    );
    let lagged = "sse_edge_resyncs_total{reason=\"lagged\"}";
    assert!(proxy.metric(lagged).await >= 1.0, "resyncs are counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_long_poll_delivers_changes_without_waiting_for_the_interval() {
    let origin = origin().await;
    let proxy = start_proxy(
        &origin,
        Options {
            every_ms: 60_000,
            metrics_wait_s: Some(5),
            ..Options::default()
        },
    )
    .await;
    let mut stream = proxy
        .client
        .stream(Proto::H2Tls, "/api/v2/stream", &[])
        .await;
    assert_eq!(stream.next(WAIT).await.json(), json!({"requests": 1}));
    origin.wait_for_count(METRICS, 2, WAIT).await;
    assert_eq!(origin.last_headers(METRICS)["prefer"], "wait=5");
    for change in 2..=4 {
        origin.set_metrics(json!({"requests": change}));
        // With every_ms = 60 s, only a held poll can bring the change within WAIT.
        assert_eq!(stream.next(WAIT).await.json(), json!({"requests": change}));
    }
    assert_eq!(
        stream.try_next(Duration::from_millis(200)).await,
        Err(ReadError::Timeout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_joins_while_the_poller_lingers_gets_heartbeats() {
    let origin = origin().await;
    let proxy = start_proxy(
        &origin,
        Options {
            heartbeat_s: 1,
            linger_ms: 60_000,
            ..Options::default()
        },
    )
    .await;
    let mut first = proxy
        .client
        .stream(Proto::H1Tls, "/api/v2/stream", &[])
        .await;
    first.next(WAIT).await;
    drop(first);
    common::eventually("the first client to leave", WAIT, || {
        proxy.proxy.open_streams() == 0
    })
    .await;
    // The poller lingers (a minute); a client joining now reuses it, and the supervisor
    // keeps beating while it waits out the linger.
    let mut second = proxy
        .client
        .stream(Proto::H1Tls, "/api/v2/stream", &[])
        .await;
    second.next(WAIT).await;
    assert_eq!(proxy.proxy.pollers(), 1);
    let chunk = second.first_chunk(WAIT).await;
    assert_eq!(chunk, ":\n\n", "a heartbeat within the linger");
}
