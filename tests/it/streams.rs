//! Stream behaviour beyond the basic scenarios: cold origins, many clients, shared pollers,
//! credentials caching, origin refusals and outages, conditional polls, limits.

use crate::common;
use std::time::Duration;

use common::client::{Proto, ReadError};
use common::origin::FakeOrigin;
use common::{Options, WAIT, eventually, start_proxy};
use serde_json::json;
use tokio::task::JoinSet;

const METRICS: &str = "/api/v2/metrics";
const SENTIMENT: &str = "/api/v2/configurations/cfg1/sentiment";

async fn origin_with_alice() -> FakeOrigin {
    let origin = FakeOrigin::start().await;
    origin.add_token("tok-alice", "alice");
    origin.set_configuration("cfg1", "alice", json!([{"symbol": "AAPL", "score": 0.1}]));
    origin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_origin_never_delays_headers_and_first_frame() {
    let origin = origin_with_alice().await;
    let cold = origin.hold(METRICS);
    let proxy = start_proxy(
        &origin,
        Options {
            first_poll_wait_ms: 200,
            ..Options::default()
        },
    )
    .await;
    // The origin holds every answer until released: the headers and first frame must come
    // while it is still "cold", bounded by first_poll_wait_ms, not by the origin.
    let mut stream = proxy
        .client
        .stream(Proto::H2Tls, "/api/v2/stream", &[])
        .await;
    assert_eq!(stream.status, 200);
    let first = stream.first_chunk(WAIT).await;
    assert!(first.starts_with("retry: 1000\n"), "{first:?}");
    assert!(
        first.contains(": connected; waiting for the origin"),
        "{first:?}"
    );
    assert_eq!(
        origin.count(METRICS),
        1,
        "the first poll is still in flight"
    );
    cold.release();
    let event = stream.next(WAIT).await;
    assert_eq!(event.event, "metrics");
    assert_eq!(event.json(), json!({"requests": 1}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_streams_share_one_poller() {
    let origin = origin_with_alice().await;
    let proxy = start_proxy(&origin, Options::default()).await;
    let mut clients = JoinSet::new();
    for n in 0..50 {
        let client = proxy.client.clone();
        let proto = if n % 2 == 0 {
            Proto::H2Tls
        } else {
            Proto::H1Tls
        };
        clients.spawn(async move {
            let mut stream = client.stream(proto, "/api/v2/stream", &[]).await;
            assert_eq!(stream.status, 200);
            let event = stream.next(WAIT).await;
            assert_eq!(event.event, "metrics");
            stream
        });
    }
    let mut streams = Vec::new();
    while let Some(joined) = clients.join_next().await {
        streams.push(joined.expect("client task"));
    }
    assert_eq!(proxy.proxy.open_streams(), 50);
    assert_eq!(proxy.proxy.pollers(), 1, "one poller for one stream key");
    origin.set_metrics(json!({"requests": 2}));
    for stream in &mut streams {
        let event = stream.next(WAIT).await;
        assert_eq!(event.json(), json!({"requests": 2}));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_stops_when_the_client_goes_away() {
    let origin = origin_with_alice().await;
    let proxy = start_proxy(&origin, Options::default()).await;
    for proto in [Proto::H1Tls, Proto::H2Tls] {
        let mut stream = proxy.client.stream(proto, "/api/v2/stream", &[]).await;
        stream.next(WAIT).await;
        let before = origin.count(METRICS);
        origin.wait_for_count(METRICS, before + 2, WAIT).await;
        drop(stream);
        eventually("the poller to stop", WAIT, || proxy.proxy.pollers() == 0).await;
        assert_eq!(proxy.proxy.open_streams(), 0);
        let stopped_at = origin.count(METRICS);
        // An observation window of 10 poll intervals: a poller still running would poll.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            origin.count(METRICS),
            stopped_at,
            "no polls after the client left ({proto:?})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_first_requests_with_one_token_validate_once() {
    let origin = origin_with_alice().await;
    let validator = origin.hold("/api/v2/auth/validate");
    let proxy = start_proxy(
        &origin,
        Options {
            max_streams_per_user: 50,
            ..Options::default()
        },
    )
    .await;
    let mut clients = JoinSet::new();
    for _ in 0..50 {
        let client = proxy.client.clone();
        clients.spawn(async move {
            let stream = client
                .stream(
                    Proto::H1Plain,
                    "/api/v2/configurations/cfg1/stream",
                    &[("authorization", "Bearer tok-alice")],
                )
                .await;
            stream.status
        });
    }
    origin
        .wait_for_count("/api/v2/auth/validate", 1, WAIT)
        .await;
    validator.release();
    while let Some(status) = clients.join_next().await {
        assert_eq!(status.expect("client task"), 200);
    }
    assert_eq!(origin.count("/api/v2/auth/validate"), 1);
    let calls = "sse_edge_auth_total{result=\"validator_call\"}";
    assert_eq!(proxy.metric(calls).await, 1.0);
    assert_eq!(
        proxy.proxy.pollers(),
        1,
        "one user, one configuration, one poller"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_tokens_are_remembered_and_validator_failures_are_503() {
    let origin = origin_with_alice().await;
    let proxy = start_proxy(&origin, Options::default()).await;
    let bad = [("authorization", "Bearer wrong")];
    for _ in 0..3 {
        let (status, _, body) = proxy
            .client
            .get_json(Proto::H1Plain, "/api/v2/configurations/cfg1/stream", &bad)
            .await;
        assert_eq!(status, 401);
        assert_eq!(body["detail"], "invalid token");
    }
    assert_eq!(
        origin.count("/api/v2/auth/validate"),
        1,
        "the rejection is cached"
    );

    origin.force("/api/v2/auth/validate", 500, "boom", None);
    let other = [("authorization", "Bearer other")];
    for expected_calls in [2, 3] {
        let (status, headers, body) = proxy
            .client
            .get_json(Proto::H1Plain, "/api/v2/configurations/cfg1/stream", &other)
            .await;
        assert_eq!(status, 503);
        assert!(headers.contains_key("retry-after"));
        assert_eq!(body["blame"], "origin");
        assert_eq!(
            origin.count("/api/v2/auth/validate"),
            expected_calls,
            "failures are not cached"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_the_query_string_work_for_eventsource() {
    let origin = origin_with_alice().await;
    let proxy = start_proxy(&origin, Options::default()).await;
    let mut stream = proxy
        .client
        .stream(
            Proto::H2Tls,
            "/api/v2/configurations/cfg1/stream?user_token=tok-alice",
            &[],
        )
        .await;
    assert_eq!(stream.status, 200);
    assert_eq!(
        stream.next_of("sentiment_update", WAIT).await.json()["symbol"],
        "AAPL"
    );
    assert_eq!(
        origin.last_headers(SENTIMENT)["authorization"],
        "Bearer tok-alice"
    );
    // A token that would carry a second value where it is sent on (a cookie, a list) is
    // refused before any validator hears of it.
    let validations = origin.count("/api/v2/auth/validate");
    let (status, _, body) = proxy
        .client
        .get_json(
            Proto::H1Tls,
            "/api/v2/configurations/cfg1/stream?user_token=tok-alice;role=admin",
            &[],
        )
        .await;
    assert_eq!(
        (status.as_u16(), body["detail"].as_str()),
        (401, Some("malformed token"))
    );
    assert_eq!(origin.count("/api/v2/auth/validate"), validations);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_never_share_a_stream() {
    let origin = origin_with_alice().await;
    origin.add_token("tok-bob", "bob");
    let proxy = start_proxy(&origin, Options::default()).await;
    let mut alice = proxy
        .client
        .stream(
            Proto::H2Tls,
            "/api/v2/configurations/cfg1/stream",
            &[("authorization", "Bearer tok-alice")],
        )
        .await;
    alice.next_of("sentiment_update", WAIT).await;
    // Bob asks for Alice's configuration: his own poller asks the origin as Bob, who is refused.
    let (status, _, _) = proxy
        .client
        .get_json(
            Proto::H2Tls,
            "/api/v2/configurations/cfg1/stream",
            &[("authorization", "Bearer tok-bob")],
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_refusal_mid_stream_ends_it_and_reconnects_get_the_status() {
    let origin = origin_with_alice().await;
    let proxy = start_proxy(&origin, Options::default()).await;
    let alice = [("authorization", "Bearer tok-alice")];
    let path = "/api/v2/configurations/cfg1/stream";
    let mut stream = proxy.client.stream(Proto::H1Tls, path, &alice).await;
    stream.next_of("sentiment_update", WAIT).await;
    origin.force(
        SENTIMENT,
        404,
        r#"{"detail":"configuration deleted"}"#,
        None,
    );
    let error = stream.next_of("stream_refused", WAIT).await;
    assert_eq!(
        error.json(),
        json!({"status": 404, "detail": "configuration deleted"})
    );
    assert!(
        stream.ends_within(WAIT).await,
        "the stream closes after the error"
    );

    let polls = origin.count(SENTIMENT);
    let (status, _, body) = proxy.client.get_json(Proto::H1Tls, path, &alice).await;
    assert_eq!(status, 404);
    assert_eq!(body["detail"], "configuration deleted");
    assert_eq!(origin.count(SENTIMENT), polls, "answered from memory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_reported_once_and_the_stream_recovers() {
    let origin = origin_with_alice().await;
    let proxy = start_proxy(&origin, Options::default()).await;
    let mut stream = proxy
        .client
        .stream(Proto::H2Tls, "/api/v2/stream", &[])
        .await;
    stream.next(WAIT).await;
    origin.force(METRICS, 503, "<html>busy</html>", Some(0));
    let error = stream.next(WAIT).await;
    assert_eq!(error.event, "upstream_error");
    assert_eq!(error.json()["status"], 503);
    assert_eq!(error.json()["source"], "metrics");
    let failing_since = origin.count(METRICS);
    origin
        .wait_for_count(METRICS, failing_since + 3, WAIT)
        .await;
    origin.set_metrics(json!({"requests": 5}));
    origin.clear_forced(METRICS);
    let recovered = stream.next(WAIT).await;
    assert_eq!(
        recovered.event, "metrics",
        "one error event per outage, then data"
    );
    assert_eq!(recovered.json(), json!({"requests": 5}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_the_origin_keeps_the_stream_alive() {
    let origin = origin_with_alice().await;
    let proxy = start_proxy(&origin, Options::default()).await;
    let mut stream = proxy
        .client
        .stream(Proto::H1Tls, "/api/v2/stream", &[])
        .await;
    stream.next(WAIT).await;
    origin.force(METRICS, 200, r#"{"truncated": "#, None);
    let error = stream.next(WAIT).await;
    assert_eq!(error.event, "upstream_error");
    assert!(
        error.json()["detail"]
            .as_str()
            .is_some_and(|d| d.contains("not JSON"))
    );
    origin.clear_forced(METRICS);
    origin.set_metrics(json!({"requests": 9}));
    assert_eq!(stream.next(WAIT).await.json(), json!({"requests": 9}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etags_make_unchanged_polls_cheap() {
    let origin = origin_with_alice().await;
    let proxy = start_proxy(&origin, Options::default()).await;
    let mut stream = proxy
        .client
        .stream(Proto::H2Tls, "/api/v2/stream", &[])
        .await;
    stream.next(WAIT).await;
    eventually("conditional polls answered 304", WAIT, || {
        origin.not_modified(METRICS) >= 3
    })
    .await;
    let not_modified = "sse_edge_polls_total{outcome=\"not_modified\"}";
    assert!(proxy.metric(not_modified).await >= 3.0);
    assert_eq!(
        stream.try_next(Duration::from_millis(100)).await,
        Err(ReadError::Timeout)
    );
    origin.set_metrics(json!({"requests": 3}));
    assert_eq!(stream.next(WAIT).await.json(), json!({"requests": 3}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_flow_on_idle_streams() {
    let origin = origin_with_alice().await;
    let proxy = start_proxy(
        &origin,
        Options {
            heartbeat_s: 1,
            ..Options::default()
        },
    )
    .await;
    let mut stream = proxy
        .client
        .stream(Proto::H1Tls, "/api/v2/stream", &[])
        .await;
    stream.next(WAIT).await;
    let chunk = stream.first_chunk(WAIT).await;
    assert_eq!(chunk, ":\n\n", "an idle stream gets comment heartbeats");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_stream_limit_is_503_and_passthrough_still_works() {
    let origin = origin_with_alice().await;
    let proxy = start_proxy(
        &origin,
        Options {
            max_streams: 1,
            ..Options::default()
        },
    )
    .await;
    let mut held = proxy
        .client
        .stream(Proto::H2Tls, "/api/v2/stream", &[])
        .await;
    held.next(WAIT).await;
    let (status, headers, body) = proxy
        .client
        .get_json(Proto::H2Tls, "/api/v2/stream", &[])
        .await;
    assert_eq!(status, 503);
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(body["max_connections"], 1);
    assert_eq!(body["retry_after"], 1);
    assert!(body["detail"].is_string());
    let rejected = "sse_edge_limit_rejections_total{reason=\"max_streams\"}";
    assert_eq!(proxy.metric(rejected).await, 1.0);
    let (status, _, _) = proxy
        .client
        .get_json(Proto::H2Tls, "/api/v2/stream/status", &[])
        .await;
    assert_eq!(
        status, 200,
        "passthrough keeps working when every stream slot is taken"
    );
    drop(held);
    eventually("the slot to be freed", WAIT, || {
        proxy.proxy.open_streams() == 0
    })
    .await;
    let stream = proxy
        .client
        .stream(Proto::H2Tls, "/api/v2/stream", &[])
        .await;
    assert_eq!(stream.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_path_parameters_are_400_and_never_forwarded() {
    let origin = origin_with_alice().await;
    let proxy = start_proxy(&origin, Options::default()).await;
    for path in [
        "/api/v2/configurations/..%2f..%2fadmin/stream",
        "/api/v2/configurations/a%00b/stream",
        &format!("/api/v2/configurations/{}/stream", "x".repeat(200)),
    ] {
        let (status, _, body) = proxy
            .client
            .get_json(Proto::H1Tls, path, &[("authorization", "Bearer tok-alice")])
            .await;
        assert_eq!(status, 400, "{path}");
        assert!(
            body["detail"].as_str().is_some_and(|d| d.contains("`id`")),
            "{body}"
        );
    }
    assert_eq!(origin.count("/api/v2/auth/validate"), 0);
    let response = proxy
        .client
        .send(
            Proto::H1Tls,
            "POST",
            "/api/v2/stream",
            &[],
            bytes::Bytes::new(),
        )
        .await;
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_cut_off_after_the_write_timeout() {
    let origin = origin_with_alice().await;
    let document = common::padded_tickers;
    origin.set_configuration("cfg1", "alice", document(0));
    let proxy = start_proxy(
        &origin,
        Options {
            write_timeout_ms: 300,
            ..Options::default()
        },
    )
    .await;
    let stalled = common::stalled_client(
        proxy.proxy.http_addr().expect("http listener"),
        "/api/v2/configurations/cfg1/stream",
        "tok-alice",
    )
    .await;
    eventually("the stream to open", WAIT, || {
        proxy.proxy.open_streams() == 1
    })
    .await;
    // Keep data flowing (1 MB a round) until the proxy gives up on the client.
    let feeder = {
        let origin = origin.clone();
        tokio::spawn(async move {
            for round in 1..=200 {
                origin.set_configuration("cfg1", "alice", document(round));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    eventually("the stalled client to be cut off", WAIT, || {
        proxy.proxy.open_streams() == 0
    })
    .await;
    feeder.abort();
    drop(stalled);
}
