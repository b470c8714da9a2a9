//! Cluster mode against a real `redis-server`: several proxy processes (the real binary) share
//! one poller per stream key, fan out through Redis, resume clients exactly on any instance,
//! survive the loss of the lease holder and of Redis itself.

use std::time::Duration;

use crate::common;
use common::client::{Client, Proto, ReadError, SseEvent, SseStream};
use common::origin::FakeOrigin;
use common::process::Running;
use common::redis::RedisServer;
use common::sentiment::{drain_sentiment, summary, tickers};
use common::{Options, WAIT, config_text, metric_sample, metrics_text};

const ALICE: (&str, &str) = ("authorization", "Bearer tok-alice");

fn stream_path(id: &str) -> String {
    format!("/api/v2/configurations/{id}/stream")
}

fn sentiment_path(id: &str) -> String {
    format!("/api/v2/configurations/{id}/sentiment")
}

/// One proxy process and a client of it.
struct Node {
    /// The process; dropping it kills it.
    running: Running,
    /// A client of its listeners.
    client: Client,
}

impl Node {
    /// One sample of its `/metrics` (0 when absent).
    async fn metric(&self, sample: &str) -> f64 {
        metric_sample(&metrics_text(self.running.admin).await, sample).unwrap_or(0.0)
    }

    /// Stops it with SIGTERM and waits for it to exit.
    async fn stop(mut self) {
        self.running.signal("TERM");
        assert_eq!(self.running.exit_code().await, Some(0));
    }
}

/// The config (and certificate) every node of a test runs with.
struct Setup {
    /// Holds the files.
    dir: tempfile::TempDir,
    /// The proxy's certificate, which clients trust.
    cert_pem: String,
}

impl Setup {
    /// Writes the config for proxies in front of `origin`, polling every `every_ms`, sharing
    /// `redis`.
    fn new(origin: &FakeOrigin, redis: &RedisServer, every_ms: u64) -> Setup {
        Setup::lingering(origin, redis, every_ms, Options::default().linger_ms)
    }

    /// As [`Setup::new`], with channels kept `linger_ms` after their last client left.
    fn lingering(origin: &FakeOrigin, redis: &RedisServer, every_ms: u64, linger_ms: u64) -> Setup {
        let dir = tempfile::tempdir().expect("temp dir");
        let pair = sse_edge::tools::demo::certs::localhost().expect("certificate");
        std::fs::write(dir.path().join("cert.pem"), &pair.cert_pem).expect("cert");
        std::fs::write(dir.path().join("key.pem"), &pair.key_pem).expect("key");
        let options = Options {
            cluster: Some(redis.url()),
            every_ms,
            linger_ms,
            max_streams: 1_000,
            max_streams_per_user: 1_000,
            ..Options::default()
        };
        let text = config_text(&origin.url, dir.path(), &options);
        std::fs::write(dir.path().join("proxy.toml"), text).expect("config");
        Setup {
            dir,
            cert_pem: pair.cert_pem,
        }
    }

    /// Starts one proxy process.
    fn node(&self) -> Node {
        let running = Running::start(&self.dir.path().join("proxy.toml"), "info");
        let client = Client::new(Some(running.https), Some(running.http), &self.cert_pem);
        Node { running, client }
    }

    /// Starts `n` proxy processes.
    fn nodes(&self, n: usize) -> Vec<Node> {
        (0..n).map(|_| self.node()).collect()
    }
}

/// The sum of one metric over `nodes`.
async fn total(nodes: &[Node], sample: &str) -> f64 {
    let mut sum = 0.0;
    for node in nodes {
        sum += node.metric(sample).await;
    }
    sum
}

/// Waits (bounded by [`WAIT`]) until `sample` sums to `want` over `nodes`.
async fn wait_total(nodes: &[Node], sample: &str, want: f64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = total(nodes, sample).await;
        if now == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{sample}: {now}, wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads until a `sentiment_update` event arrives (skipping heartbeats and others).
async fn next_update(stream: &mut SseStream) -> SseEvent {
    stream.next_of("sentiment_update", WAIT).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_poll_each_key_once_and_fan_out_the_same_events() {
    let redis = RedisServer::start();
    let origin = FakeOrigin::start().await;
    origin.add_token("tok-alice", "alice");
    let keys: Vec<String> = (0..10).map(|k| format!("cfg{k}")).collect();
    for key in &keys {
        origin.set_configuration(key, "*", tickers(&[("AAPL", 0.1)]));
    }
    let setup = Setup::new(&origin, &redis, 200);
    let proxies = setup.nodes(3);

    // 300 clients: 30 per key, 10 per key on each instance, over HTTP/1.1 and h2c.
    let mut clients: Vec<(usize, SseStream)> = Vec::new();
    for n in 0..300 {
        let key = n % keys.len();
        let proxy = &proxies[(n / keys.len()) % proxies.len()];
        let proto = if n % 2 == 0 {
            Proto::H1Plain
        } else {
            Proto::H2Plain
        };
        let mut stream = proxy
            .client
            .stream(proto, &stream_path(&keys[key]), &[ALICE])
            .await;
        assert_eq!(stream.status, 200);
        assert_eq!(next_update(&mut stream).await.json()["score"], 0.1);
        clients.push((key, stream));
    }
    // One lease per key across the three instances: one poller each.
    wait_total(&proxies, "sse_edge_cluster_leases", keys.len() as f64).await;
    assert_eq!(total(&proxies, "sse_edge_cluster_redis_up").await, 3.0);

    // While key 0 is polled 10 times, every key is polled about 10 times, not 30.
    let before: Vec<usize> = keys
        .iter()
        .map(|k| origin.count(&sentiment_path(k)))
        .collect();
    origin
        .wait_for_count(&sentiment_path(&keys[0]), before[0] + 10, WAIT * 2)
        .await;
    for (key, was) in keys.iter().zip(&before) {
        let polls = origin.count(&sentiment_path(key)) - was;
        assert!(
            polls <= 14,
            "{key} was polled {polls} times while cfg0 was polled 10 times"
        );
    }

    // A change reaches all 30 clients of its key, on every instance, with the same id.
    origin.set_configuration(&keys[3], "*", tickers(&[("AAPL", 0.7)]));
    let mut ids = std::collections::BTreeSet::new();
    for (key, stream) in clients.iter_mut().filter(|(key, _)| *key == 3) {
        let event = next_update(stream).await;
        assert_eq!((*key, event.json()["score"].clone()), (3, 0.7.into()));
        ids.insert(event.id);
    }
    assert_eq!(ids.len(), 1, "one event id for one state: {ids:?}");
    assert!(
        total(
            &proxies,
            "sse_edge_cluster_batches_total{direction=\"applied\"}"
        )
        .await
            >= 2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_exactly_on_another_instance_and_after_every_instance_restarts() {
    let redis = RedisServer::start();
    let origin = FakeOrigin::start().await;
    origin.add_token("tok-alice", "alice");
    origin.set_configuration("cfg1", "alice", tickers(&[("AAPL", 0.1), ("MSFT", 0.2)]));
    let path = stream_path("cfg1");
    let setup = Setup::new(&origin, &redis, 50);
    let proxies = setup.nodes(3);

    let mut client = proxies[0]
        .client
        .stream(Proto::H1Plain, &path, &[ALICE])
        .await;
    assert_eq!(
        summary(&drain_sentiment(&mut client).await),
        ["AAPL=0.1", "MSFT=0.2"]
    );
    let seen = client.last_event_id().to_owned();
    drop(client);
    origin.set_configuration("cfg1", "alice", tickers(&[("AAPL", 0.3), ("TSLA", 0.9)]));

    // The other instances never served this client; instance 0 keeps polling (lingers) or not.
    let mut moved = proxies[1]
        .client
        .stream(Proto::H2Plain, &path, &[ALICE, ("last-event-id", &seen)])
        .await;
    assert_eq!(
        summary(&until_sentiment(&mut moved, 3).await),
        ["AAPL=0.3", "TSLA=0.9", "-MSFT"],
        "exactly the difference, no resync"
    );
    assert_eq!(
        proxies[1]
            .metric("sse_edge_resyncs_total{reason=\"unknown_id\"}")
            .await,
        0.0
    );
    let seen = moved.last_event_id().to_owned();
    drop(moved);

    // Every instance stops; the origin changes; new instances start.
    for proxy in proxies {
        proxy.stop().await;
    }
    origin.set_configuration("cfg1", "alice", tickers(&[("AAPL", 0.3), ("TSLA", 1.5)]));
    let proxies = setup.nodes(3);
    let mut back = proxies[2]
        .client
        .stream(Proto::H1Tls, &path, &[ALICE, ("last-event-id", &seen)])
        .await;
    assert_eq!(summary(&until_sentiment(&mut back, 1).await), ["TSLA=1.5"]);
    assert_eq!(
        proxies[2]
            .metric("sse_edge_resyncs_total{reason=\"unknown_id\"}")
            .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_instance_gives_its_leases_back_before_it_exits() {
    let redis = RedisServer::start();
    let origin = FakeOrigin::start().await;
    origin.add_token("tok-alice", "alice");
    for key in ["cfg1", "cfg2"] {
        origin.set_configuration(key, "alice", tickers(&[("AAPL", 0.1)]));
    }
    // Channels linger long after their clients left, and keep their leases meanwhile.
    let setup = Setup::lingering(&origin, &redis, 50, 60_000);
    let node = setup.node();
    let mut streams = Vec::new();
    for key in ["cfg1", "cfg2"] {
        let mut stream = node
            .client
            .stream(Proto::H1Plain, &stream_path(key), &[ALICE])
            .await;
        next_update(&mut stream).await;
        streams.push(stream);
    }
    wait_total(std::slice::from_ref(&node), "sse_edge_cluster_leases", 2.0).await;
    let lease_keys = || {
        let mut con = redis::Client::open(redis.url())
            .and_then(|client| client.get_connection())
            .expect("redis");
        redis::cmd("KEYS")
            .arg("*:lease")
            .query::<Vec<String>>(&mut con)
            .expect("KEYS")
    };
    assert_eq!(lease_keys().len(), 2, "one lease per key while polling");
    // No connection left to drain: the process would exit at once, before an aborted
    // role's release had been sent, and the others would wait for the lease to expire.
    drop(streams);
    wait_total(std::slice::from_ref(&node), "sse_edge_streams_open", 0.0).await;
    node.stop().await;
    assert_eq!(lease_keys(), Vec::<String>::new(), "released before exit");
}

/// Reads `n` sentiment events (or resyncs), then whatever follows within a moment.
async fn until_sentiment(stream: &mut SseStream, n: usize) -> Vec<SseEvent> {
    let mut events = Vec::new();
    while events.len() < n {
        match stream.try_next(WAIT).await {
            Ok(event) if event.event.starts_with("sentiment_update") || event.event == "resync" => {
                events.push(event)
            }
            Ok(_) => {}
            Err(error) => panic!("{error:?} after {:?}", summary(&events)),
        }
    }
    events.extend(drain_sentiment(stream).await);
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_flow_while_redis_is_down_and_one_poller_per_key_returns_with_it() {
    let mut redis = RedisServer::start();
    let origin = FakeOrigin::start().await;
    origin.add_token("tok-alice", "alice");
    origin.set_configuration("cfg1", "*", tickers(&[("AAPL", 0.1)]));
    let path = stream_path("cfg1");
    let setup = Setup::new(&origin, &redis, 50);
    let proxies = setup.nodes(3);
    let mut clients = Vec::new();
    for proxy in &proxies {
        let mut stream = proxy.client.stream(Proto::H1Plain, &path, &[ALICE]).await;
        assert_eq!(next_update(&mut stream).await.json()["score"], 0.1);
        clients.push(stream);
    }
    wait_total(&proxies, "sse_edge_cluster_leases", 1.0).await;

    redis.kill();
    wait_total(&proxies, "sse_edge_cluster_redis_up", 0.0).await;
    origin.set_configuration("cfg1", "*", tickers(&[("AAPL", 0.2)]));
    let mut ids = std::collections::BTreeSet::new();
    for stream in &mut clients {
        let event = next_update(stream).await;
        assert_eq!(event.json()["score"], 0.2, "no client waits for Redis");
        ids.insert(event.id);
    }
    assert_eq!(ids.len(), 1, "content ids agree without Redis: {ids:?}");
    let admin = Client::new(None, proxies[0].running.admin, "");
    let (status, _, body) =
        common::client::json_response(admin.get(Proto::H1Plain, "/readyz", &[]).await).await;
    assert_eq!(
        (status.as_u16(), body["cluster"]["redis"].as_str()),
        (200, Some("down"))
    );
    assert!(total(&proxies, "sse_edge_cluster_fallbacks_total").await >= 3.0);

    redis.restart();
    wait_total(&proxies, "sse_edge_cluster_redis_up", 3.0).await;
    wait_total(&proxies, "sse_edge_cluster_leases", 1.0).await;
    origin.set_configuration("cfg1", "*", tickers(&[("AAPL", 0.3)]));
    for stream in &mut clients {
        // Exactly the change: rejoining the cluster sent nothing twice.
        assert_eq!(summary(&until_sentiment(stream, 1).await), ["AAPL=0.3"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_back_from_a_partition_with_old_data_is_brought_up_to_date_without_a_flap() {
    let redis = RedisServer::start();
    let origin = FakeOrigin::start().await;
    origin.add_token("tok-alice", "alice");
    origin.set_configuration("cfg1", "*", tickers(&[("AAPL", 0.1), ("MSFT", 0.5)]));
    let path = stream_path("cfg1");
    let setup = Setup::new(&origin, &redis, 50);
    let proxies = setup.nodes(3);
    let mut clients = Vec::new();
    for proxy in &proxies {
        let mut stream = proxy.client.stream(Proto::H2Plain, &path, &[ALICE]).await;
        assert_eq!(
            summary(&until_sentiment(&mut stream, 2).await),
            ["AAPL=0.1", "MSFT=0.5"]
        );
        clients.push(stream);
    }
    wait_total(&proxies, "sse_edge_cluster_leases", 1.0).await;

    // Redis stops answering (its data intact): every instance polls alone.
    redis.pause();
    wait_total(&proxies, "sse_edge_cluster_redis_up", 0.0).await;
    origin.set_configuration("cfg1", "*", tickers(&[("AAPL", 0.2)]));
    for stream in &mut clients {
        assert_eq!(
            summary(&until_sentiment(stream, 2).await),
            ["AAPL=0.2", "-MSFT"]
        );
    }

    // Redis answers again with the state from before: the holder brings it up to date, and
    // no client is taken back to it.
    redis.resume();
    wait_total(&proxies, "sse_edge_cluster_redis_up", 3.0).await;
    wait_total(&proxies, "sse_edge_cluster_leases", 1.0).await;
    origin.set_configuration("cfg1", "*", tickers(&[("AAPL", 0.3)]));
    let mut ids = std::collections::BTreeSet::new();
    for stream in &mut clients {
        assert_eq!(summary(&until_sentiment(stream, 1).await), ["AAPL=0.3"]);
        ids.insert(stream.last_event_id().to_owned());
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
}

/// The holder is SIGKILLed mid-stream: another instance takes the key over and every
/// client's sequence of scores goes on with no gap and no repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_lease_holder_hands_its_keys_over_without_gap_or_duplicate() {
    let redis = RedisServer::start();
    let origin = FakeOrigin::start().await;
    origin.add_token("tok-alice", "alice");
    origin.set_configuration("cfg1", "*", tickers(&[("AAPL", 0.0)]));
    let setup = Setup::new(&origin, &redis, 100);
    let mut processes: Vec<Option<Node>> = (0..3).map(|_| Some(setup.node())).collect();
    let path = stream_path("cfg1");

    // Two clients per instance; each remembers its instance and every score it got.
    let mut clients: Vec<(usize, SseStream, Seen)> = Vec::new();
    for n in 0..6 {
        let node = processes[n % 3].as_ref().expect("running");
        let mut stream = node.client.stream(Proto::H1Plain, &path, &[ALICE]).await;
        let first = next_update(&mut stream).await;
        let score = first.json()["score"].as_f64().expect("score");
        clients.push((n % 3, stream, vec![(first.id, score)]));
    }
    let mut holder = None;
    let deadline = tokio::time::Instant::now() + WAIT;
    while holder.is_none() {
        for (i, node) in processes.iter().enumerate() {
            let node = node.as_ref().expect("running");
            if node.metric("sse_edge_cluster_leases").await == 1.0 {
                holder = Some(i);
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no instance holds the key"
        );
    }
    let holder = holder.expect("holder");

    // The origin changes every 30 ms; the holder dies in the middle.
    let changing = origin.clone();
    let changes = tokio::spawn(async move {
        for round in 1..=60u32 {
            changing.set_configuration("cfg1", "*", tickers(&[("AAPL", f64::from(round))]));
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    });
    let polls_before = loop {
        let count = origin.count(&sentiment_path("cfg1"));
        // Let a few changes flow through the holder first.
        if count > 10 {
            break count;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    if let Some(node) = processes[holder].as_ref() {
        node.running.signal("KILL");
    }
    processes[holder] = None;
    origin
        .wait_for_count(&sentiment_path("cfg1"), polls_before + 5, WAIT)
        .await;
    changes.await.expect("changes");

    // Every client reads to the last score; those of the dead instance reconnect elsewhere.
    let survivor = (holder + 1) % 3;
    for (instance, stream, seen) in &mut clients {
        loop {
            if seen.last().is_some_and(|(_, score)| *score == 60.0) {
                break;
            }
            match stream.try_next(WAIT).await {
                Ok(event) if event.event == "sentiment_update" => {
                    let score = event.json()["score"].as_f64().expect("score");
                    seen.push((event.id, score));
                }
                Ok(event) => assert_ne!(event.event, "resync", "resumed exactly"),
                Err(ReadError::Broken | ReadError::Ended) if *instance == holder => {
                    let last = seen.last().map(|(id, _)| id.clone()).unwrap_or_default();
                    let node = processes[survivor].as_ref().expect("running");
                    *stream = node
                        .client
                        .stream(Proto::H1Plain, &path, &[ALICE, ("last-event-id", &last)])
                        .await;
                    *instance = survivor;
                }
                Err(error) => panic!("client of instance {instance}: {error:?} after {seen:?}"),
            }
        }
        let scores: Vec<f64> = seen.iter().map(|(_, score)| *score).collect();
        assert!(
            scores.windows(2).all(|w| w[0] < w[1]),
            "no duplicate, no step back: {scores:?}"
        );
    }
    // Clients that stayed connected to the survivors got the very same events.
    let stayed: Vec<&Seen> = clients
        .iter()
        .enumerate()
        .filter(|(n, _)| n % 3 != holder)
        .map(|(_, (_, _, seen))| seen)
        .collect();
    assert!(stayed.windows(2).all(|w| w[0] == w[1]), "{stayed:?}");
}

/// The (id, score) of every event a client got, in order.
type Seen = Vec<(String, f64)>;
