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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_origin_works_for_passthrough_and_streams() {
    let pair = sse_edge::tools::demo::certs::localhost().expect("origin certificate");
    let origin = FakeOrigin::start_tls(&pair.cert_pem, &pair.key_pem).await;
    let proxy = start_proxy(
        &origin,
        Options {
            upstream_ca: Some(pair.cert_pem.clone()),
            ..Options::default()
        },
    )
    .await;
    let (status, _, body) = proxy
        .client
        .get_json(Proto::H1Tls, "/api/v2/stream/status", &[])
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["max_connections"], 10);
    let mut stream = proxy
        .client
        .stream(Proto::H2Tls, "/api/v2/stream", &[])
        .await;
    assert_eq!(stream.next(WAIT).await.json(), json!({"requests": 1}));
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
    let (status, _, _) = admin.get_json(Proto::H1Plain, "/readyz", &[]).await;
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
    let (status, _, body) = admin.get_json(Proto::H1Plain, "/readyz", &[]).await;
    assert_eq!(status, 503, "{body}");
}
