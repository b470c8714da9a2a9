//! `sse-edge probe` against origins that stream, buffer, hang, mislabel, compress, reject or
//! go quiet; against sse-edge in front of a buffered origin; and as the real binary.

use crate::common;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::origin::FakeOrigin;
use common::{Options, start_proxy};
use http::{Request, Response};
use http_body::{Body, Frame};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use sse_edge::tools::probe::verdict::Verdict;
use sse_edge::tools::probe::{ProbeOptions, run};
use tokio::sync::mpsc;

/// A body fed by a channel, so the origin can pace its bytes.
struct Paced(mpsc::Receiver<Bytes>);

impl Body for Paced {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

fn paced(
    content_type: &'static str,
    encoding: Option<&'static str>,
    frames: Vec<(u64, &'static str)>,
) -> Response<Paced> {
    let (sender, receiver) = mpsc::channel(16);
    tokio::spawn(async move {
        for (delay_ms, text) in frames {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            if sender
                .send(Bytes::from_static(text.as_bytes()))
                .await
                .is_err()
            {
                return;
            }
        }
        // Keep the stream open (never ends) until the client goes.
        sender.closed().await;
    });
    let mut response = Response::new(Paced(receiver));
    response
        .headers_mut()
        .insert("content-type", content_type.parse().expect("value"));
    if let Some(encoding) = encoding {
        response
            .headers_mut()
            .insert("content-encoding", encoding.parse().expect("value"));
    }
    response
}

fn whole(status: u16, content_type: &'static str, body: &'static str) -> Response<Paced> {
    let (sender, receiver) = mpsc::channel(1);
    let _ = sender.try_send(Bytes::from_static(body.as_bytes()));
    drop(sender);
    let mut response = Response::new(Paced(receiver));
    *response.status_mut() = http::StatusCode::from_u16(status).expect("status");
    response
        .headers_mut()
        .insert("content-type", content_type.parse().expect("value"));
    response
}

const EVENT: &str = "event: tick\ndata: {\"n\":1}\n\n";

async fn answer(request: Request<Incoming>) -> Response<Paced> {
    match request.uri().path() {
        "/stream" => paced(
            "text/event-stream",
            None,
            vec![
                (0, "retry: 1000\n: hi\n\n"),
                (0, EVENT),
                (100, EVENT),
                (100, EVENT),
                (100, ":\n\n"),
            ],
        ),
        "/buffered" => {
            tokio::time::sleep(Duration::from_millis(700)).await;
            whole(
                200,
                "text/event-stream",
                "event: tick\ndata: 1\n\nevent: tick\ndata: 2\n\nevent: tick\ndata: 3\n\n",
            )
        }
        "/never" => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            whole(200, "text/event-stream", "")
        }
        "/octet" => paced(
            "application/octet-stream",
            None,
            vec![(0, EVENT), (100, EVENT), (100, EVENT)],
        ),
        "/gzip" => paced(
            "text/event-stream",
            Some("gzip"),
            vec![(0, "gzip-compressed bytes")],
        ),
        "/auth" => whole(401, "application/json", r#"{"detail":"token expired"}"#),
        "/missing" => whole(404, "application/json", r#"{"detail":"no such stream"}"#),
        "/rare" => paced("text/event-stream", None, vec![(0, EVENT)]),
        _ => whole(500, "application/json", r#"{"detail":"unexpected"}"#),
    }
}

async fn sse_origin() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service =
                    service_fn(|request| async move { Ok::<_, Infallible>(answer(request).await) });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn options(url: String) -> ProbeOptions {
    ProbeOptions {
        url,
        headers: Vec::new(),
        events: 3,
        timeout: Duration::from_secs(3),
        http2: false,
        insecure: false,
        idle_threshold: Duration::from_secs(30),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_endpoint_gets_its_verdict() {
    let origin = sse_origin().await;
    let cases = [
        ("/stream", Verdict::Streaming),
        ("/buffered", Verdict::Buffered),
        ("/octet", Verdict::WrongContentType),
        ("/gzip", Verdict::Compressed),
        ("/auth", Verdict::AuthRejected),
        ("/missing", Verdict::NotFound),
        ("/other", Verdict::ErrorStatus),
    ];
    for (path, expected) in cases {
        for http2 in [false, true] {
            let report = run(&ProbeOptions {
                http2,
                ..options(format!("http://{origin}{path}"))
            })
            .await;
            assert_eq!(
                report.verdict,
                expected,
                "{path} (h2: {http2}): {}",
                report.to_text()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_tells_the_story() {
    let origin = sse_origin().await;
    let report = run(&options(format!("http://{origin}/stream"))).await;
    assert_eq!(report.verdict, Verdict::Streaming);
    assert_eq!(report.events.len(), 3);
    assert_eq!(report.retry_ms, Some(1000));
    assert!(report.comments >= 1);
    assert!(report.chunk_count >= 3, "arrived in pieces");
    assert_eq!(report.headers["content-type"], "text/event-stream");
    for step in ["dns", "connect", "headers", "first_byte"] {
        assert!(
            report.timeline.contains_key(step),
            "{step} in {:?}",
            report.timeline
        );
    }

    let rejected = run(&options(format!("http://{origin}/auth"))).await;
    assert_eq!(rejected.detail.as_deref(), Some("token expired"));
    assert!(rejected.reason.contains("token expired"));

    let buffered = run(&options(format!("http://{origin}/buffered"))).await;
    assert!(buffered.ended);
    assert!(buffered.reason.contains("at once"), "{}", buffered.reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_and_timeouts() {
    let origin = sse_origin().await;
    let never = run(&ProbeOptions {
        timeout: Duration::from_millis(500),
        ..options(format!("http://{origin}/never"))
    })
    .await;
    assert_eq!(never.verdict, Verdict::NoHeaders);

    let rare = run(&ProbeOptions {
        timeout: Duration::from_millis(1500),
        idle_threshold: Duration::from_millis(500),
        ..options(format!("http://{origin}/rare"))
    })
    .await;
    assert_eq!(rare.verdict, Verdict::IdleRisk, "{}", rare.to_text());

    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = closed.local_addr().expect("addr");
    drop(closed);
    let unreachable = run(&options(format!("http://{dead}/stream"))).await;
    assert_eq!(unreachable.verdict, Verdict::Unreachable);
    let bad = run(&options("ftp://example/stream".to_owned())).await;
    assert_eq!(bad.verdict, Verdict::Unreachable);
    assert!(bad.reason.contains("http://"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buffered_origin_through_sse_edge_is_streaming() {
    let origin = FakeOrigin::start().await;
    let proxy = start_proxy(&origin, Options::default()).await;
    let https = proxy.proxy.https_addr().expect("https");
    for http2 in [false, true] {
        let report = run(&ProbeOptions {
            events: 1,
            insecure: true,
            http2,
            ..options(format!("https://localhost:{}/api/v2/stream", https.port()))
        })
        .await;
        assert_eq!(report.verdict, Verdict::Streaming, "{}", report.to_text());
        assert_eq!(
            report.alpn.as_deref(),
            Some(if http2 { "h2" } else { "http/1.1" })
        );
        assert_eq!(report.events[0].event, "metrics");
    }
    let strict = run(&ProbeOptions {
        events: 1,
        ..options(format!("https://localhost:{}/api/v2/stream", https.port()))
    })
    .await;
    assert_eq!(
        strict.verdict,
        Verdict::CertificateRejected,
        "{}",
        strict.to_text()
    );
    assert!(strict.reason.contains("-k"), "{}", strict.reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exits_zero_only_for_streaming_and_prints_json() {
    let origin = sse_origin().await;
    let probe = |path: &'static str| {
        let url = format!("http://{origin}{path}");
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_sse-edge"))
                .args([
                    "probe",
                    &url,
                    "--json",
                    "--timeout",
                    "3",
                    "-H",
                    "Authorization: Bearer t",
                ])
                .output()
                .expect("run probe")
        })
    };
    let streaming = probe("/stream").await.expect("join");
    assert_eq!(streaming.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&streaming.stdout).expect("JSON report");
    assert_eq!(json["verdict"], "streaming");
    assert_eq!(json["events"].as_array().map(Vec::len), Some(3));

    let buffered = probe("/buffered").await.expect("join");
    assert_eq!(buffered.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&buffered.stdout).expect("JSON report");
    assert_eq!(json["verdict"], "buffered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_tls_handshake_is_a_connection_problem_not_a_buffering_origin() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let report = run(&ProbeOptions {
        timeout: Duration::from_millis(500),
        ..options(format!("https://localhost:{}/stream", addr.port()))
    })
    .await;
    assert_eq!(report.verdict, Verdict::Unreachable, "{}", report.to_text());
    assert!(
        report.reason.contains("did not finish"),
        "{}",
        report.reason
    );
    held.abort();
}

#[test]
fn a_probe_of_something_that_is_not_a_url_is_a_usage_error() {
    for url in ["notaurl", "ftp://example/stream"] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_sse-edge"))
            .args(["probe", url])
            .output()
            .expect("run probe");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{url}: {stderr}");
        assert!(stderr.contains(url), "{stderr}");
        assert!(output.stdout.is_empty(), "no report for a usage error");
    }
}
