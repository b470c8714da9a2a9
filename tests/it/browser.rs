//! Browsers (issue 10): refusals an `EventSource` survives, event names that do not collide
//! with `onerror`, CORS on stream routes, named heartbeats, `Cache-Control`, and stream keys
//! from declared query parameters. The real-browser test is `.ci/browser/run.sh`.

use http::StatusCode;
use serde_json::json;

use crate::common::client::{Proto, ReadError, json_response};
use crate::common::origin::FakeOrigin;
use crate::common::{Options, WAIT, start_proxy};

const SSE: (&str, &str) = ("accept", "text/event-stream");
const PAGE: &str = "https://app.example";

const CORS: &str = r#"
[cors]
allow_origins = ["https://app.example"]
allow_credentials = true
expose_headers = ["x-accel-buffering"]
max_age_s = 120
"#;

const QUOTES: &str = r#"
[[stream]]
path = "/quotes"
query = ["tickers"]
query_case = "upper"
query_max_values = 3
max_keys = 2
  [[stream.source]]
  poll = "/echo/quotes?symbols={tickers}"
  every_ms = 50
  event = "quotes"
"#;

async fn origin() -> FakeOrigin {
    let origin = FakeOrigin::start().await;
    origin.add_token("tok-alice", "alice");
    origin.set_configuration("cfg1", "alice", json!([{"symbol": "AAPL", "score": 0.1}]));
    origin.set_metrics(json!({"requests": 1}));
    origin
}

/// Reads a refusal answered as an event stream: 200, `retry:` first, one `unavailable`
/// event with the reason, then the end.
async fn assert_retryable(
    proxy: &crate::common::TestProxy,
    proto: Proto,
    path: &str,
    headers: &[(&str, &str)],
    code: &str,
) {
    let mut stream = proxy.client.stream(proto, path, headers).await;
    assert_eq!(stream.status, StatusCode::OK, "{proto:?} {code}");
    assert_eq!(stream.headers["content-type"], "text/event-stream");
    let event = stream.next(WAIT).await;
    assert_eq!(event.event, "unavailable", "{proto:?}");
    assert_eq!(event.json()["error"], code, "{proto:?}");
    let retry = stream.retry.expect("a retry: field");
    assert!((1000..=1500).contains(&retry), "retry {retry}");
    assert_eq!(event.json()["retry_ms"], retry);
    assert_eq!(
        stream.try_next(WAIT).await,
        Err(ReadError::Ended),
        "{proto:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_that_pass_are_event_streams_for_eventsource_and_json_for_others() {
    let origin = origin().await;
    let proxy = start_proxy(
        &origin,
        Options {
            max_streams: 2,
            max_streams_per_user: 1,
            ..Options::default()
        },
    )
    .await;
    let cfg = "/api/v2/configurations/cfg1/stream";
    let alice = [("authorization", "Bearer tok-alice"), SSE];
    let mut first = proxy.client.stream(Proto::H2Tls, cfg, &alice).await;
    first.next(WAIT).await;
    for proto in [Proto::H1Tls, Proto::H2Plain] {
        assert_retryable(&proxy, proto, cfg, &alice, "too_many_user_streams").await;
    }
    let (status, _, body) = proxy.client.get_json(Proto::H1Tls, cfg, &alice[..1]).await;
    assert_eq!(
        (status.as_u16(), body["error"].as_str()),
        (429, Some("too_many_user_streams"))
    );

    let mut second = proxy
        .client
        .stream(Proto::H1Plain, "/api/v2/stream", &[SSE])
        .await;
    second.next(WAIT).await;
    for proto in [Proto::H1Plain, Proto::H2Tls] {
        assert_retryable(&proxy, proto, "/api/v2/stream", &[SSE], "too_many_streams").await;
    }
    let (status, headers, _) = proxy
        .client
        .get_json(Proto::H1Plain, "/api/v2/stream", &[])
        .await;
    assert_eq!(status, 503);
    assert!(headers.contains_key("retry-after"));
    drop((first, second));

    // The validator is down: EventSource retries; a rejected token stays a 401, which ends
    // EventSource for good, as it should.
    origin.force("/api/v2/auth/validate", 500, "<html>down</html>", None);
    let fresh = [("authorization", "Bearer tok-new"), SSE];
    for proto in [Proto::H1Tls, Proto::H2Tls] {
        assert_retryable(&proxy, proto, cfg, &fresh, "validator_unavailable").await;
    }
    origin.clear_forced("/api/v2/auth/validate");
    let bad = [("authorization", "Bearer tok-wrong"), SSE];
    let (status, _, _) = json_response(proxy.client.get(Proto::H1Tls, cfg, &bad).await).await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_outage_at_connect_is_retryable() {
    let origin = origin().await;
    let proxy = start_proxy(
        &origin,
        Options {
            upstream: Some("http://127.0.0.1:9".to_owned()),
            ..Options::default()
        },
    )
    .await;
    let cfg = "/api/v2/configurations/cfg1/stream";
    let headers = [("authorization", "Bearer tok-alice"), SSE];
    for proto in [Proto::H1Plain, Proto::H2Tls] {
        assert_retryable(&proxy, proto, cfg, &headers, "validator_unavailable").await;
    }
    // An unauthenticated stream starts, and tells of the outage by name.
    let mut stream = proxy
        .client
        .stream(Proto::H1Tls, "/api/v2/stream", &[SSE])
        .await;
    assert_eq!(stream.status, StatusCode::OK);
    let outage = stream.next(WAIT).await;
    assert_eq!(outage.event, "upstream_error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_on_stream_routes_only_for_listed_origins() {
    let origin = origin().await;
    let proxy = start_proxy(
        &origin,
        Options {
            extra: CORS,
            ..Options::default()
        },
    )
    .await;
    for proto in [Proto::H1Tls, Proto::H2Tls, Proto::H1Plain] {
        let mut stream = proxy
            .client
            .stream(proto, "/api/v2/stream", &[SSE, ("origin", PAGE)])
            .await;
        let h = &stream.headers;
        assert_eq!(h["access-control-allow-origin"], PAGE, "{proto:?}");
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert_eq!(h["access-control-expose-headers"], "x-accel-buffering");
        assert_eq!(h["vary"], "origin");
        assert_eq!(h["cache-control"], "no-cache, no-transform");
        stream.next_of("metrics", WAIT).await;

        let other = proxy
            .client
            .stream(
                proto,
                "/api/v2/stream",
                &[SSE, ("origin", "https://evil.example")],
            )
            .await;
        assert!(!other.headers.contains_key("access-control-allow-origin"));
        assert!(
            !other
                .headers
                .contains_key("access-control-allow-credentials")
        );
        assert_eq!(other.headers["vary"], "origin");

        // A refusal is readable by the page too (it can tell it from a network error).
        let response = proxy
            .client
            .get(
                proto,
                "/api/v2/configurations/cfg1/stream",
                &[("origin", PAGE)],
            )
            .await;
        assert_eq!(response.status(), 401);
        assert_eq!(response.headers()["access-control-allow-origin"], PAGE);

        let preflight = proxy
            .client
            .send(
                proto,
                "OPTIONS",
                "/api/v2/configurations/cfg1/stream",
                &[
                    ("origin", PAGE),
                    ("access-control-request-method", "GET"),
                    ("access-control-request-headers", "authorization"),
                ],
                bytes::Bytes::new(),
            )
            .await;
        assert_eq!(preflight.status(), 204, "{proto:?}");
        let h = preflight.headers();
        assert_eq!(h["access-control-allow-origin"], PAGE);
        assert_eq!(h["access-control-allow-methods"], "GET");
        assert_eq!(
            h["access-control-allow-headers"],
            "authorization, last-event-id"
        );
        assert_eq!(h["access-control-max-age"], "120");
        assert_eq!(h["access-control-allow-credentials"], "true");

        let refused = proxy
            .client
            .send(
                proto,
                "OPTIONS",
                "/api/v2/stream",
                &[
                    ("origin", "https://evil.example"),
                    ("access-control-request-method", "GET"),
                ],
                bytes::Bytes::new(),
            )
            .await;
        assert_eq!(refused.status(), 403);
        assert!(
            !refused
                .headers()
                .contains_key("access-control-allow-origin")
        );
    }
    // Passthrough answers are the origin's: the proxy adds no CORS headers.
    let response = proxy
        .client
        .get(Proto::H1Tls, "/echo/x", &[("origin", PAGE)])
        .await;
    assert_eq!(response.status(), 200);
    assert!(
        !response
            .headers()
            .contains_key("access-control-allow-origin")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_names_and_the_heartbeat_event_are_configurable() {
    let origin = origin().await;
    let proxy = start_proxy(
        &origin,
        Options {
            heartbeat_s: 1,
            sse_extra: "outage_event = \"api_down\"\nheartbeat_event = \"heartbeat\"",
            ..Options::default()
        },
    )
    .await;
    for proto in [Proto::H1Plain, Proto::H2Tls] {
        let mut stream = proxy.client.stream(proto, "/api/v2/stream", &[SSE]).await;
        let metrics = stream.next_of("metrics", WAIT).await;
        let beat = stream.next_of("heartbeat", WAIT).await;
        assert!(
            beat.json()["time_ms"].as_u64().is_some_and(|t| t > 0),
            "{beat:?}"
        );
        assert_eq!(
            beat.id, metrics.id,
            "a heartbeat leaves Last-Event-ID alone"
        );
    }
    let mut stream = proxy
        .client
        .stream(Proto::H1Tls, "/api/v2/stream", &[])
        .await;
    stream.next_of("metrics", WAIT).await;
    origin.force("/api/v2/metrics", 503, "busy", Some(0));
    let outage = stream.next_of("api_down", WAIT).await;
    assert_eq!(outage.json()["status"], 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_query_parameters_key_the_stream() {
    let origin = origin().await;
    let proxy = start_proxy(
        &origin,
        Options {
            extra: QUOTES,
            ..Options::default()
        },
    )
    .await;
    let path = "/quotes?tickers=msft,aapl&secret=x&tickers=AAPL";
    let mut a = proxy.client.stream(Proto::H1Plain, path, &[SSE]).await;
    let event = a.next_of("quotes", WAIT).await;
    assert_eq!(event.json()["path"], "/echo/quotes");
    assert_eq!(
        event.json()["query"],
        "symbols=AAPL,MSFT",
        "normalised, and undeclared parameters never forwarded"
    );
    // Another spelling of the same set shares the key, so the one poller.
    let mut b = proxy
        .client
        .stream(Proto::H2Tls, "/quotes?tickers=AAPL%2CMSFT", &[SSE])
        .await;
    b.next_of("quotes", WAIT).await;
    assert_eq!(
        proxy.metric("sse_edge_pollers{route=\"/quotes\"}").await,
        1.0
    );

    // A second key fits; a third new one is refused; a known one still joins.
    let mut c = proxy
        .client
        .stream(Proto::H1Tls, "/quotes?tickers=goog", &[SSE])
        .await;
    assert_eq!(
        c.next_of("quotes", WAIT).await.json()["query"],
        "symbols=GOOG"
    );
    let (status, headers, body) = proxy
        .client
        .get_json(Proto::H1Tls, "/quotes?tickers=IBM", &[])
        .await;
    assert_eq!(
        (status.as_u16(), body["error"].as_str()),
        (503, Some("too_many_keys"))
    );
    assert!(headers.contains_key("retry-after"));
    let mut refused = proxy
        .client
        .stream(Proto::H2Plain, "/quotes?tickers=IBM", &[SSE])
        .await;
    assert_eq!(refused.next(WAIT).await.json()["error"], "too_many_keys");
    let mut d = proxy
        .client
        .stream(Proto::H2Plain, "/quotes?tickers=GOOG", &[SSE])
        .await;
    d.next_of("quotes", WAIT).await;

    // Values are checked like path parameters, and bounded in number.
    for bad in [
        "/quotes?tickers=a/b",
        "/quotes?tickers=%2e%2e",
        "/quotes?tickers=a,b,c,d",
        "/quotes?tickers=a%00",
    ] {
        let (status, _, body) = proxy.client.get_json(Proto::H1Plain, bad, &[]).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    drop((a, b, c, d));
}
