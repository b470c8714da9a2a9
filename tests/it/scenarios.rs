//! The dashboard scenarios that time out against a buffered origin, each run through the
//! real proxy over TLS with HTTP/1.1 and again with HTTP/2.

use crate::common;
use std::collections::HashSet;

use common::client::{Proto, SseEvent};
use common::origin::FakeOrigin;
use common::{Options, TestProxy, WAIT, start_proxy};
use serde_json::json;

const ALICE: (&str, &str) = ("authorization", "Bearer tok-alice");
const CONFIG_STREAM: &str = "/api/v2/configurations/cfg1/stream";

async fn setup() -> (FakeOrigin, TestProxy) {
    let origin = FakeOrigin::start().await;
    origin.add_token("tok-alice", "alice");
    origin.set_configuration(
        "cfg1",
        "alice",
        json!([{"symbol": "AAPL", "score": 0.1}, {"symbol": "MSFT", "score": 0.2}]),
    );
    origin.set_refresh("cfg1", json!({"state": "idle", "run": 1}));
    let proxy = start_proxy(&origin, Options::default()).await;
    (origin, proxy)
}

/// Reads events until every `(event, symbol-or-empty)` in `wanted` was seen; returns them all.
async fn collect_until(
    stream: &mut common::client::SseStream,
    wanted: &[(&str, &str)],
) -> Vec<SseEvent> {
    let mut missing: HashSet<(String, String)> = wanted
        .iter()
        .map(|(e, s)| ((*e).to_owned(), (*s).to_owned()))
        .collect();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !missing.is_empty() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let event = stream.next(left).await;
        let symbol = event.json()["symbol"].as_str().unwrap_or("").to_owned();
        missing.remove(&(event.event.clone(), symbol));
        seen.push(event);
    }
    seen
}

fn assert_event_stream_head(stream: &common::client::SseStream) {
    assert_eq!(stream.status, 200);
    assert_eq!(stream.headers["content-type"], "text/event-stream");
    assert_eq!(stream.headers["cache-control"], "no-cache, no-transform");
    assert_eq!(stream.headers["x-accel-buffering"], "no");
    assert!(stream.headers.get("content-length").is_none());
}

/// 1. `GET /api/v2/stream` answers 200 `text/event-stream` and a first event at once.
async fn stream_answers_with_a_first_event(proto: Proto) {
    let (origin, proxy) = setup().await;
    let mut stream = proxy.client.stream(proto, "/api/v2/stream", &[]).await;
    assert_event_stream_head(&stream);
    let event = stream.next(WAIT).await;
    assert_eq!(event.event, "metrics");
    assert_eq!(event.json(), json!({"requests": 1}));
    assert_eq!(event.id.len(), 32, "content-derived id: {}", event.id);
    assert_eq!(stream.retry, Some(1000));
    let polled = origin.last_headers("/api/v2/metrics");
    assert_eq!(
        polled["authorization"], "Bearer dashboard-key",
        "configured poll header"
    );
}

/// 2. `GET /api/v2/stream/status` passes through and returns the origin's JSON.
async fn status_passes_through(proto: Proto) {
    let (_origin, proxy) = setup().await;
    let (status, headers, body) = proxy
        .client
        .get_json(proto, "/api/v2/stream/status", &[])
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(
        body,
        json!({"connections": 0, "max_connections": 10, "available": 10})
    );
}

/// 3. An authenticated configuration stream answers 200 `text/event-stream` with the state,
///    and polls carry the caller's credentials and validated user id.
async fn authenticated_stream_starts(proto: Proto) {
    let (origin, proxy) = setup().await;
    let mut stream = proxy.client.stream(proto, CONFIG_STREAM, &[ALICE]).await;
    assert_event_stream_head(&stream);
    collect_until(
        &mut stream,
        &[
            ("sentiment_update", "AAPL"),
            ("sentiment_update", "MSFT"),
            ("refresh", ""),
        ],
    )
    .await;
    let polled = origin.last_headers("/api/v2/configurations/cfg1/sentiment");
    assert_eq!(polled["x-edge-user"], "alice");
    assert_eq!(polled["authorization"], "Bearer tok-alice");
}

/// 4. The stream delivers `sentiment_update` (and removals) when the origin's data changes.
async fn sentiment_updates_follow_changes(proto: Proto) {
    let (origin, proxy) = setup().await;
    let mut stream = proxy.client.stream(proto, CONFIG_STREAM, &[ALICE]).await;
    collect_until(
        &mut stream,
        &[("sentiment_update", "AAPL"), ("sentiment_update", "MSFT")],
    )
    .await;
    origin.set_configuration(
        "cfg1",
        "alice",
        json!([{"symbol": "MSFT", "score": 0.9}, {"symbol": "TSLA", "score": -0.5}]),
    );
    let events = collect_until(
        &mut stream,
        &[
            ("sentiment_update", "MSFT"),
            ("sentiment_update", "TSLA"),
            ("sentiment_update_removed", "AAPL"),
        ],
    )
    .await;
    let msft = events
        .iter()
        .find(|e| e.event == "sentiment_update" && e.json()["symbol"] == "MSFT")
        .expect("MSFT update");
    assert_eq!(msft.json()["score"], 0.9);
    assert!(
        !events
            .iter()
            .any(|e| e.event == "sentiment_update" && e.json()["symbol"] == "AAPL"),
        "unchanged or removed items are not resent as updates"
    );
}

/// 5. The stream delivers a `refresh` event when the refresh status changes.
async fn refresh_events_follow_changes(proto: Proto) {
    let (origin, proxy) = setup().await;
    let mut stream = proxy.client.stream(proto, CONFIG_STREAM, &[ALICE]).await;
    let first = stream.next_of("refresh", WAIT).await;
    assert_eq!(first.json(), json!({"state": "idle", "run": 1}));
    origin.set_refresh("cfg1", json!({"state": "refreshing", "run": 2}));
    let next = stream.next_of("refresh", WAIT).await;
    assert_eq!(next.json(), json!({"state": "refreshing", "run": 2}));
    assert_ne!(first.id, next.id);
}

/// 6. Reconnecting with an unknown `Last-Event-ID` answers 200 with a resync and the state.
async fn unknown_last_event_id_gets_the_current_state(proto: Proto) {
    let (_origin, proxy) = setup().await;
    let mut stream = proxy
        .client
        .stream(
            proto,
            CONFIG_STREAM,
            &[ALICE, ("last-event-id", "test-event-12345")],
        )
        .await;
    assert_event_stream_head(&stream);
    let first = stream.next(WAIT).await;
    assert_eq!(first.event, "resync");
    assert_eq!(first.json()["reason"], "unknown_last_event_id");
    collect_until(
        &mut stream,
        &[("sentiment_update", "AAPL"), ("sentiment_update", "MSFT")],
    )
    .await;
}

/// 7. No token: 401 with a JSON detail naming where a token may be sent, before any stream.
async fn no_token_is_401(proto: Proto) {
    let (origin, proxy) = setup().await;
    let (status, headers, body) = proxy.client.get_json(proto, CONFIG_STREAM, &[]).await;
    assert_eq!(status, 401);
    assert_eq!(headers["www-authenticate"], "Bearer");
    let detail = body["detail"].as_str().expect("detail");
    assert!(
        detail.contains("Authorization: Bearer") && detail.contains("user_token"),
        "{detail}"
    );
    assert_eq!(origin.count("/api/v2/configurations/cfg1/sentiment"), 0);
    assert_eq!(proxy.proxy.pollers(), 0);
}

/// 8. An unknown configuration id answers the origin's 404, not a hanging stream.
async fn unknown_configuration_is_404(proto: Proto) {
    let (_origin, proxy) = setup().await;
    let (status, _, body) = proxy
        .client
        .get_json(proto, "/api/v2/configurations/nope/stream", &[ALICE])
        .await;
    assert_eq!(status, 404);
    assert_eq!(body, json!({"detail": "configuration not found"}));
}

/// 9. Status still reports `available == max_connections - connections`.
async fn status_stays_consistent(proto: Proto) {
    let (origin, proxy) = setup().await;
    origin.set_status_connections(3);
    let _open = proxy.client.stream(proto, "/api/v2/stream", &[]).await;
    let (status, _, body) = proxy
        .client
        .get_json(proto, "/api/v2/stream/status", &[])
        .await;
    assert_eq!(status, 200);
    let field = |name: &str| {
        body[name]
            .as_u64()
            .unwrap_or_else(|| panic!("{name} in {body}"))
    };
    assert_eq!(
        field("available"),
        field("max_connections") - field("connections")
    );
    assert_eq!(field("connections"), 3);
}

macro_rules! over {
    ($module:ident, $proto:expr, [$($test:ident),* $(,)?]) => {
        mod $module {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($proto).await
                }
            )*
        }
    };
}

macro_rules! scenarios {
    ($($module:ident => $proto:expr),* $(,)?) => {
        $(
            over!($module, $proto, [
                stream_answers_with_a_first_event,
                status_passes_through,
                authenticated_stream_starts,
                sentiment_updates_follow_changes,
                refresh_events_follow_changes,
                unknown_last_event_id_gets_the_current_state,
                no_token_is_401,
                unknown_configuration_is_404,
                status_stays_consistent,
            ]);
        )*
    };
}

scenarios! {
    tls_http1 => Proto::H1Tls,
    tls_http2 => Proto::H2Tls,
    plain_http1 => Proto::H1Plain,
    plain_h2c => Proto::H2Plain,
}
