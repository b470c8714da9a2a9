//! Broken origins, on cue: refused and reset connections, error statuses with and without
//! `Retry-After`, hangs, garbage, and huge bodies. Passthrough clients get a clear 5xx;
//! stream clients stay connected with heartbeats and hear of each outage once; polling backs
//! off and recovers by itself.

use crate::common;
use std::time::{Duration, Instant};

use common::client::{Proto, SseStream};
use common::origin::FakeOrigin;
use common::{Options, WAIT, start_proxy};
use serde_json::json;
use tokio::io::AsyncReadExt;

const METRICS: &str = "/api/v2/metrics";

/// Reads for `window`: returns the error events seen, and checks heartbeats kept flowing.
async fn watch_outage(stream: &mut SseStream, window: Duration) -> Vec<serde_json::Value> {
    let heartbeats_before = stream.comments.len();
    let end = tokio::time::Instant::now() + window;
    let mut errors = Vec::new();
    loop {
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            break;
        }
        if let Ok(event) = stream.try_next(left).await {
            assert_eq!(
                event.event, "upstream_error",
                "only the outage is reported: {event:?}"
            );
            errors.push(event.json());
        }
    }
    assert!(
        stream.comments.len() > heartbeats_before,
        "heartbeats kept the stream alive"
    );
    errors
}

fn options() -> Options {
    Options {
        heartbeat_s: 1,
        timeout_ms: 300,
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_statuses_are_reported_once_per_outage_and_recovered_from() {
    let origin = FakeOrigin::start().await;
    let proxy = start_proxy(&origin, options()).await;
    let mut stream = proxy
        .client
        .stream(Proto::H2Tls, "/api/v2/stream", &[])
        .await;
    stream.next(WAIT).await;
    for (round, (status, retry_after)) in [(500, None), (502, None), (503, Some(0)), (429, Some(0))]
        .into_iter()
        .enumerate()
    {
        origin.force(
            METRICS,
            status,
            r#"{"detail":"origin trouble"}"#,
            retry_after,
        );
        let errors = watch_outage(&mut stream, Duration::from_millis(1500)).await;
        assert_eq!(errors.len(), 1, "status {status}: {errors:?}");
        assert_eq!(errors[0]["status"], status);
        assert_eq!(errors[0]["detail"], "origin trouble");
        origin.clear_forced(METRICS);
        origin.set_metrics(json!({"requests": round + 10}));
        let recovered = stream.next(WAIT).await;
        assert_eq!(
            recovered.json(),
            json!({"requests": round + 10}),
            "recovers by itself"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_from_the_origin_slows_polling_down() {
    let origin = FakeOrigin::start().await;
    let proxy = start_proxy(&origin, options()).await;
    let mut stream = proxy
        .client
        .stream(Proto::H1Tls, "/api/v2/stream", &[])
        .await;
    stream.next(WAIT).await;
    origin.force(METRICS, 429, r#"{"detail":"slow down"}"#, Some(2));
    let first = origin.count(METRICS);
    origin.wait_for_count(METRICS, first + 1, WAIT).await;
    let started = Instant::now();
    let asked = origin.count(METRICS);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Polling every 50 ms would have made ~30 requests; Retry-After: 2 allows none.
    assert_eq!(
        origin.count(METRICS),
        asked,
        "polled during Retry-After ({:?})",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_origin_times_out_and_a_late_one_recovers() {
    let origin = FakeOrigin::start().await;
    let proxy = start_proxy(&origin, options()).await;
    let mut stream = proxy
        .client
        .stream(Proto::H2Tls, "/api/v2/stream", &[])
        .await;
    stream.next(WAIT).await;
    let hang = origin.hold(METRICS);
    let errors = watch_outage(&mut stream, Duration::from_millis(1500)).await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("did not answer"))
    );
    let (status, _, body) = proxy.client.get_json(Proto::H2Tls, "/slow", &[]).await;
    assert_eq!(
        (status.as_u16(), body["error"].as_str()),
        (504, Some("upstream_timeout"))
    );
    hang.release();
    origin.set_metrics(json!({"requests": 7}));
    assert_eq!(stream.next(WAIT).await.json(), json!({"requests": 7}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_body_is_refused_without_being_buffered() {
    let origin = FakeOrigin::start().await;
    let proxy = start_proxy(
        &origin,
        Options {
            timeout_ms: 5000,
            ..options()
        },
    )
    .await;
    let mut stream = proxy
        .client
        .stream(Proto::H2Tls, "/api/v2/stream", &[])
        .await;
    stream.next(WAIT).await;
    let huge = format!(r#"{{"pad":"{}"}}"#, "x".repeat(50 << 20));
    origin.force(METRICS, 200, &huge, None);
    drop(huge);
    let error = stream.next_of("upstream_error", WAIT).await;
    assert!(
        error.json()["detail"]
            .as_str()
            .is_some_and(|d| d.contains("larger than 4194304 bytes")),
        "{error:?}"
    );
    origin.clear_forced(METRICS);
    origin.set_metrics(json!({"requests": 8}));
    assert_eq!(
        stream.next_of("metrics", WAIT).await.json(),
        json!({"requests": 8})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_reset_connections() {
    // An origin that takes the request and hangs up without answering.
    let slammer = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let slam_addr = slammer.local_addr().expect("addr");
    std::thread::spawn(move || {
        for mut conn in slammer.incoming().take(64).flatten() {
            let mut buf = [0u8; 1024];
            let _ = std::io::Read::read(&mut conn, &mut buf);
            drop(conn);
        }
    });
    let origin = FakeOrigin::start().await;
    let proxy = start_proxy(
        &origin,
        Options {
            upstream: Some(format!("http://{slam_addr}")),
            first_poll_wait_ms: 2000,
            ..options()
        },
    )
    .await;
    let (status, _, body) = proxy
        .client
        .get_json(Proto::H1Tls, "/api/v2/stream/status", &[])
        .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["blame"], "origin");
    let mut stream = proxy
        .client
        .stream(Proto::H1Tls, "/api/v2/stream", &[])
        .await;
    assert_eq!(
        stream.status, 200,
        "the stream starts even though the origin is broken"
    );
    let errors = watch_outage(&mut stream, Duration::from_millis(1500)).await;
    assert_eq!(errors.len(), 1, "{errors:?}");

    // Refused connections: nothing listens.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = closed.local_addr().expect("addr");
    drop(closed);
    let proxy = start_proxy(
        &origin,
        Options {
            upstream: Some(format!("http://{dead}")),
            ..options()
        },
    )
    .await;
    let mut stream = proxy
        .client
        .stream(Proto::H2Tls, "/api/v2/stream", &[])
        .await;
    let errors = watch_outage(&mut stream, Duration::from_millis(1500)).await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("cannot reach"))
    );
    let mut raw = tokio::net::TcpStream::connect(proxy.proxy.admin_addr().expect("admin"))
        .await
        .expect("admin");
    tokio::io::AsyncWriteExt::write_all(
        &mut raw,
        b"GET /readyz/origin HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
    )
    .await
    .expect("request");
    let mut answer = String::new();
    raw.read_to_string(&mut answer).await.expect("answer");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
}
