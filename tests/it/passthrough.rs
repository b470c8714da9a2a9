//! Passthrough: everything that is not a stream route reaches the origin as sent, and comes
//! back as answered, with clear JSON errors when the origin is unreachable or slow.

use crate::common;
use bytes::Bytes;
use common::client::Proto;
use common::origin::FakeOrigin;
use common::{Options, WAIT, start_proxy};
use http_body_util::BodyExt;
use serde_json::{Value, json};

async fn body_json(
    response: http::Response<hyper::body::Incoming>,
) -> (http::response::Parts, Value) {
    let (parts, body) = response.into_parts();
    let bytes = tokio::time::timeout(WAIT, body.collect())
        .await
        .expect("body in time")
        .expect("body")
        .to_bytes();
    (parts, serde_json::from_slice(&bytes).expect("JSON"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_forwarded_whole_and_hop_by_hop_headers_dropped() {
    let origin = FakeOrigin::start().await;
    let proxy = start_proxy(&origin, Options::default()).await;
    for proto in [Proto::H1Tls, Proto::H2Tls, Proto::H1Plain] {
        let response = proxy
            .client
            .send(
                proto,
                "POST",
                "/echo/path?x=1&y=two",
                &[
                    ("content-type", "application/json"),
                    ("x-custom", "kept"),
                    ("x-forwarded-for", "10.9.8.7"),
                    ("authorization", "Bearer caller"),
                    ("x-request-id", "not an id"),
                ],
                Bytes::from_static(br#"{"hello":"origin"}"#),
            )
            .await;
        let (parts, echo) = body_json(response).await;
        assert_eq!(parts.status, 200);
        assert_eq!(echo["method"], "POST");
        assert_eq!(echo["path"], "/echo/path");
        assert_eq!(echo["query"], "x=1&y=two");
        assert_eq!(echo["body"], r#"{"hello":"origin"}"#);
        let headers = &echo["headers"];
        assert_eq!(headers["x-custom"], "kept");
        assert_eq!(headers["authorization"], "Bearer caller");
        assert_eq!(
            headers["x-forwarded-for"], "127.0.0.1",
            "an untrusted client's own value is replaced"
        );
        let id = parts.headers["x-request-id"].to_str().expect("ascii");
        assert_eq!(
            headers["x-request-id"], id,
            "{proto:?}: the answer's id, not the client's"
        );
        // The echo shows one value per name: the origin's own record counts the lines.
        let seen = origin.last_headers("/echo/path");
        for name in ["x-request-id", "x-forwarded-for", "host"] {
            assert_eq!(seen.get_all(name).iter().count(), 1, "{proto:?}: {name}");
        }
        let scheme = if proto == Proto::H1Plain {
            "http"
        } else {
            "https"
        };
        assert_eq!(headers["x-forwarded-proto"], scheme);
        assert!(
            headers["x-forwarded-host"]
                .as_str()
                .is_some_and(|h| h.starts_with("localhost:"))
        );
        assert_eq!(
            headers["host"],
            origin.addr.to_string(),
            "Host is the origin's"
        );
        assert_eq!(parts.headers["x-origin-hop"], "kept");
        assert!(
            parts.headers.get("keep-alive").is_none(),
            "hop-by-hop header removed"
        );
    }

    let response = proxy
        .client
        .send(
            Proto::H1Plain,
            "GET",
            "/echo",
            &[("connection", "x-secret-hop"), ("x-secret-hop", "1")],
            Bytes::new(),
        )
        .await;
    let (_, echo) = body_json(response).await;
    assert!(echo["headers"].get("x-secret-hop").is_none(), "{echo}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_origin_is_502_and_a_slow_one_504() {
    let origin = FakeOrigin::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let proxy = start_proxy(
        &origin,
        Options {
            upstream: Some(dead),
            ..Options::default()
        },
    )
    .await;
    let (status, _, body) = proxy
        .client
        .get_json(Proto::H2Tls, "/api/v2/stream/status", &[])
        .await;
    assert_eq!(status, 502);
    assert_eq!(body["error"], "upstream_unreachable");
    assert_eq!(body["blame"], "origin");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("unreachable"))
    );
    // The client hears our reason, never hyper's internal error text or the OS's.
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("connection refused"), "{detail}");
    for internal in [
        "client error",
        "Connect",
        "tcp connect",
        "os error",
        "hyper",
    ] {
        assert!(!detail.contains(internal), "{detail}");
    }

    let proxy = start_proxy(
        &origin,
        Options {
            timeout_ms: 300,
            ..Options::default()
        },
    )
    .await;
    let (status, _, body) = proxy.client.get_json(Proto::H1Tls, "/slow", &[]).await;
    assert_eq!(status, 504);
    assert_eq!(body["error"], "upstream_timeout");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("300 ms"))
    );
}

/// Origin connections are kept per runtime: the shared one, and each serving thread's (the
/// default, one per core). One serving thread makes "the" pool of a thread deterministic, as
/// the kernel spreads client connections over several.
const POOLS: [&str; 2] = ["serving_threads = 0", "serving_threads = 1"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_connections_are_reused_until_the_origin_closes_them() {
    for pool in POOLS {
        let origin = FakeOrigin::start().await;
        let options = Options {
            listen_extra: pool,
            ..Options::default()
        };
        let proxy = start_proxy(&origin, options).await;
        let get = |path: &'static str| {
            let client = &proxy.client;
            async move {
                let (status, _, body) = client.get_json(Proto::H1Plain, path, &[]).await;
                assert_eq!(status, 200, "{pool}: {body}");
            }
        };
        let before = origin.connections();
        for _ in 0..5 {
            get("/api/v2/stream/status").await;
        }
        assert_eq!(
            origin.connections() - before,
            1,
            "{pool}: one connection, reused"
        );
        // The first reuses that connection, and the origin closes it after each answer.
        for _ in 0..3 {
            get("/close").await;
        }
        assert_eq!(
            origin.connections() - before,
            3,
            "{pool}: no reuse after a close"
        );
        get("/api/v2/stream/status").await;
        assert_eq!(origin.connections() - before, 4, "{pool}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_origin_works_for_passthrough_and_streams() {
    let pair = sse_edge::tools::demo::certs::localhost().expect("origin certificate");
    for pool in POOLS {
        let origin = FakeOrigin::start_tls(&pair.cert_pem, &pair.key_pem).await;
        let proxy = start_proxy(
            &origin,
            Options {
                upstream_ca: Some(pair.cert_pem.clone()),
                listen_extra: pool,
                ..Options::default()
            },
        )
        .await;
        for _ in 0..3 {
            let (status, _, body) = proxy
                .client
                .get_json(Proto::H1Tls, "/api/v2/stream/status", &[])
                .await;
            assert_eq!(status, 200, "{pool}");
            assert_eq!(body["max_connections"], 10, "{pool}");
        }
        assert_eq!(
            origin.connections(),
            1,
            "{pool}: one TLS connection (HTTP/2 by ALPN), shared"
        );
        let mut stream = proxy
            .client
            .stream(Proto::H2Tls, "/api/v2/stream", &[])
            .await;
        assert_eq!(
            stream.next(WAIT).await.json(),
            json!({"requests": 1}),
            "{pool}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_origin_with_an_untrusted_certificate_is_502() {
    let pair = sse_edge::tools::demo::certs::localhost().expect("origin certificate");
    let origin = FakeOrigin::start_tls(&pair.cert_pem, &pair.key_pem).await;
    let proxy = start_proxy(&origin, Options::default()).await;
    let (status, _, body) = proxy
        .client
        .get_json(Proto::H1Tls, "/api/v2/stream/status", &[])
        .await;
    assert_eq!(status, 502);
    assert_eq!(body["error"], "upstream_unreachable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_reports_health_readiness_and_metrics() {
    let origin = FakeOrigin::start().await;
    let proxy = start_proxy(&origin, Options::default()).await;
    let admin = common::client::Client::new(None, proxy.proxy.admin_addr(), "");
    let (status, _, body) = admin.get_json(Proto::H1Plain, "/healthz", &[]).await;
    assert_eq!(
        (status.as_u16(), body["status"].as_str()),
        (200, Some("ok"))
    );
    let (status, _, body) = admin.get_json(Proto::H1Plain, "/readyz", &[]).await;
    assert_eq!(
        (status.as_u16(), body["origin"].as_str()),
        (200, Some("reachable"))
    );
    let (status, _, _) = admin.get_json(Proto::H1Plain, "/readyz/origin", &[]).await;
    assert_eq!(status, 200);
    proxy
        .client
        .get_json(Proto::H2Tls, "/api/v2/stream/status", &[])
        .await;
    let text = proxy.metrics().await;
    assert!(
        text.contains("sse_edge_requests_total{route=\"passthrough\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("# TYPE sse_edge_polls_total counter"));

    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let down = start_proxy(
        &origin,
        Options {
            upstream: Some(dead),
            ..Options::default()
        },
    )
    .await;
    down.client.get_json(Proto::H1Plain, "/anything", &[]).await;
    let admin = common::client::Client::new(None, down.proxy.admin_addr(), "");
    // An origin outage is a detail of readiness, not unreadiness: streams keep serving their
    // state, and the load balancer must not drop every instance at once.
    let (status, _, body) = admin.get_json(Proto::H1Plain, "/readyz", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["origin"], "unreachable");
    let (status, _, body) = admin.get_json(Proto::H1Plain, "/readyz/origin", &[]).await;
    assert_eq!(status, 503, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_and_trace_context_reach_the_origin_and_come_back() {
    let origin = FakeOrigin::start().await;
    let proxy = start_proxy(&origin, Options::default()).await;
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let xray = "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1";
    for proto in [Proto::H1Plain, Proto::H2Tls] {
        // A valid client id and trace context go through as sent, and the id comes back.
        let (status, headers, echo) = proxy
            .client
            .get_json(
                proto,
                "/echo/traced",
                &[
                    ("x-request-id", "client-req-42"),
                    ("traceparent", parent),
                    ("tracestate", "vendor=abc"),
                    ("x-amzn-trace-id", xray),
                ],
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(headers["x-request-id"], "client-req-42");
        let sent = &echo["headers"];
        assert_eq!(sent["x-request-id"], "client-req-42");
        assert_eq!(sent["traceparent"], parent);
        assert_eq!(sent["tracestate"], "vendor=abc");
        assert_eq!(sent["x-amzn-trace-id"], xray);

        // An invalid id is replaced, the same new one goes both ways; a malformed traceparent
        // is dropped with its tracestate.
        let (_, headers, echo) = proxy
            .client
            .get_json(
                proto,
                "/echo/traced",
                &[
                    ("x-request-id", "bad id with spaces"),
                    ("traceparent", "00-zz-00"),
                    ("tracestate", "vendor=abc"),
                ],
            )
            .await;
        let id = headers["x-request-id"].to_str().expect("ascii");
        assert_eq!(id.len(), 32, "{id}");
        assert_eq!(echo["headers"]["x-request-id"], id);
        assert!(echo["headers"].get("traceparent").is_none(), "{echo}");
        assert!(echo["headers"].get("tracestate").is_none(), "{echo}");
    }
    // Proxy-made answers carry an id too (here a refused stream).
    let (status, headers, _) = proxy
        .client
        .get_json(Proto::H1Plain, "/api/v2/configurations/cfg1/stream", &[])
        .await;
    assert_eq!(status, 401);
    assert_eq!(headers["x-request-id"].len(), 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_say_who_they_are_and_carry_their_own_trace() {
    let origin = FakeOrigin::start().await;
    let proxy = start_proxy(&origin, Options::default()).await;
    let mut stream = proxy
        .client
        .stream(
            Proto::H2Tls,
            "/api/v2/stream",
            &[(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )],
        )
        .await;
    stream.next(WAIT).await;
    let metrics = "/api/v2/metrics";
    let first = origin.last_headers(metrics);
    origin
        .wait_for_count(metrics, origin.count(metrics) + 1, WAIT)
        .await;
    let second = origin.last_headers(metrics);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(first["user-agent"], format!("sse-edge/{version}").as_str());
    let trace = |h: &http::HeaderMap| {
        let parent = h["traceparent"].to_str().expect("ascii").to_owned();
        assert!(parent.starts_with("00-") && parent.len() == 55, "{parent}");
        assert!(
            !parent.contains("4bf92f3577b34da6a3ce929d0e0e4736"),
            "a client's trace"
        );
        assert_eq!(h["x-request-id"], &parent[3..35]);
        parent[3..35].to_owned()
    };
    assert_ne!(trace(&first), trace(&second), "each poll is its own trace");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_latency_status_and_build_metrics_are_exported() {
    let origin = FakeOrigin::start().await;
    let proxy = start_proxy(&origin, Options::default()).await;
    proxy.client.get_json(Proto::H1Plain, "/echo/a", &[]).await;
    proxy.client.get_json(Proto::H2Tls, "/echo/b", &[]).await;
    let text = proxy.metrics().await;
    for needle in [
        "sse_edge_passthrough_responses_total{code=\"200\"} 2\n",
        "sse_edge_passthrough_duration_seconds_count{code=\"2xx\"} 2\n",
        "sse_edge_passthrough_duration_seconds_bucket{code=\"2xx\",le=\"+Inf\"} 2\n",
        "# TYPE sse_edge_build_info gauge\n",
        "# TYPE process_open_fds gauge\n",
        "# TYPE process_max_fds gauge\n",
        "# TYPE process_resident_memory_bytes gauge\n",
        "# TYPE process_cpu_seconds_total counter\n",
        "sse_edge_tls_handshake_failures_total{listener=\"https\",reason=\"error\"} 0\n",
    ] {
        assert!(text.contains(needle), "{needle} in\n{text}");
    }
    // A client that is not TLS at all on the HTTPS port is a failed handshake.
    let https = proxy.proxy.https_addr().expect("https");
    let mut raw = tokio::net::TcpStream::connect(https)
        .await
        .expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut raw, b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .expect("write");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(
        WAIT,
        tokio::io::AsyncReadExt::read_to_end(&mut raw, &mut rest),
    )
    .await;
    let failed = "sse_edge_tls_handshake_failures_total{listener=\"https\",reason=\"error\"} 1\n";
    let deadline = tokio::time::Instant::now() + WAIT;
    while !proxy.metrics().await.contains(failed) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{failed} never counted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
