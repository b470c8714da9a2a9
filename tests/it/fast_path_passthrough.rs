//! Passthrough `GET`s answered on the HTTP/1.1 fast path (`src/edge/h1/`), seen from the
//! wire: every framing an origin may use reaches the client whole (or, cut short, visibly
//! cut), keep-alive and pipelining carry several answers on one connection, a request hyper
//! must serve (a POST) still follows them, and `Connection: close` is honoured.

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::common;
use common::client::Proto;
use common::origin::FakeOrigin;
use common::raw_origin;
use common::{Options, TestProxy, WAIT, start_proxy, try_start_proxy};

/// An origin written byte by byte, for the framings a hyper origin never chooses: each path
/// gets its canned answer, and the answers that end by closing close. `/hang` is never
/// answered; [`Hang`] says when such a request arrived and when the proxy closed it.
async fn raw_origin() -> (SocketAddr, Hang) {
    let hang = Hang::default();
    let signals = hang.clone();
    let addr = raw_origin::start(move |head, mut stream| {
        let hang = hang.clone();
        Box::pin(async move {
            let path = raw_origin::path(&head);
            if path == "/hang" {
                hang.started.notify_one();
                raw_origin::until_closed(&mut stream).await;
                hang.hung_up.notify_one();
                return None;
            }
            let (answer, close): (&[u8], bool) = match path {
                "/chunked" => (
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\
                      transfer-encoding: chunked\r\n\r\n\
                      5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n",
                    false,
                ),
                "/empty" => (b"HTTP/1.1 204 No Content\r\nx-kind: empty\r\n\r\n", false),
                "/short" => (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello", true),
                "/until-close" => (
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nall of it",
                    true,
                ),
                _ => (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", false),
            };
            (stream.write_all(answer).await.is_ok() && !close).then_some(stream)
        })
    })
    .await;
    (addr, signals)
}

/// What [`raw_origin`] tells about its `/hang` requests.
#[derive(Clone, Default)]
struct Hang {
    /// A `/hang` request arrived.
    started: Arc<Notify>,
    /// The proxy closed a `/hang` request's connection.
    hung_up: Arc<Notify>,
}

/// The proxy, with `options`, in front of [`raw_origin`] (a fake origin still serves nothing
/// else), and the origin's `/hang` signals.
async fn proxy_to_raw_origin_with(fake: &FakeOrigin, options: Options) -> (TestProxy, Hang) {
    let (addr, hang) = raw_origin().await;
    (raw_origin::proxy_to(fake, options, addr).await, hang)
}

/// The proxy in front of [`raw_origin`].
async fn proxy_to_raw_origin(fake: &FakeOrigin) -> TestProxy {
    proxy_to_raw_origin_with(fake, Options::default()).await.0
}

/// A plaintext connection to the proxy on which `requests` have been sent, as written.
pub(crate) async fn send_raw(proxy: &TestProxy, requests: &[u8]) -> TcpStream {
    common::send_raw(proxy.proxy.http_addr().expect("http"), requests).await
}

/// Reads until the peer closes (bounded by [`WAIT`]); returns everything read.
pub(crate) async fn read_to_close(tcp: &mut TcpStream) -> String {
    let mut all = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut all))
        .await
        .expect("closed in time")
        .expect("read");
    String::from_utf8_lossy(&all).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_origin_framing_reaches_the_client_whole() {
    let fake = FakeOrigin::start().await;
    let proxy = proxy_to_raw_origin(&fake).await;
    // HTTP/1.1 plaintext and TLS take the fast path; HTTP/2 takes hyper's, for comparison.
    for proto in [Proto::H2Plain, Proto::H1Plain, Proto::H1Tls] {
        let mut conn = proxy.client.keep_alive(proto).await;
        for (path, status, body) in [
            ("/chunked", 200, "hello world"),
            ("/empty", 204, ""),
            ("/until-close", 200, "all of it"),
            // The same connection still works after each of them.
            ("/plain", 200, "ok"),
        ] {
            let response = conn.get(path, &[]).await;
            assert_eq!(response.status(), status, "{proto:?} {path}");
            if path == "/empty" {
                assert_eq!(response.headers()["x-kind"], "empty", "{proto:?}");
            }
            let bytes = tokio::time::timeout(WAIT, response.into_body().collect())
                .await
                .expect("body in time")
                .unwrap_or_else(|e| panic!("{proto:?} {path}: {e}"))
                .to_bytes();
            assert_eq!(bytes, body.as_bytes(), "{proto:?} {path}");
        }
        // A body the origin cuts short is cut short for the client too, never padded or
        // passed off as whole: the answer fails, in its body or (when the origin's bytes all
        // came at once, before any was written) before its head.
        if let Ok(response) = conn.try_get("/short", &[]).await {
            assert_eq!(response.status(), 200, "{proto:?}");
            let body = tokio::time::timeout(WAIT, response.into_body().collect())
                .await
                .expect("ends in time");
            assert!(body.is_err(), "{proto:?}: a short body must fail");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_connection_ended_by_its_answer_is_not_reused() {
    let fake = FakeOrigin::start().await;
    let proxy = proxy_to_raw_origin(&fake).await;
    // A body read until the origin closes leaves nothing to reuse: the next request, with a
    // body (hyper's exchange) or without (ours), must go on a new connection.
    for method in ["GET", "POST", "GET"] {
        for (path, body) in [("/until-close", "all of it"), ("/plain", "ok")] {
            let response = proxy
                .client
                .send(
                    Proto::H1Plain,
                    method,
                    path,
                    &[],
                    bytes::Bytes::from_static(b"x"),
                )
                .await;
            assert_eq!(response.status(), 200, "{method} {path}");
            let got = tokio::time::timeout(WAIT, response.into_body().collect())
                .await
                .expect("body in time")
                .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
                .to_bytes();
            assert_eq!(got, body.as_bytes(), "{method} {path}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_framed_by_length_when_known_else_chunked() {
    let fake = FakeOrigin::start().await;
    let proxy = proxy_to_raw_origin(&fake).await;
    let mut tcp = send_raw(
        &proxy,
        b"GET /plain HTTP/1.1\r\nhost: x\r\n\r\n\
          GET /chunked HTTP/1.1\r\nhost: x\r\n\r\n\
          GET /empty HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    let text = read_to_close(&mut tcp).await.to_ascii_lowercase();
    let heads: Vec<&str> = text.split("http/1.1 ").skip(1).collect();
    assert_eq!(heads.len(), 3, "{text}");
    assert!(
        heads[0].contains("\r\ncontent-length: 2\r\n"),
        "{}",
        heads[0]
    );
    assert!(heads[0].ends_with("\r\n\r\nok"), "{}", heads[0]);
    assert!(
        heads[1].contains("\r\ntransfer-encoding: chunked\r\n"),
        "{}",
        heads[1]
    );
    assert!(!heads[1].contains("content-length"), "{}", heads[1]);
    assert!(heads[1].ends_with("\r\n0\r\n\r\n"), "{}", heads[1]);
    assert!(heads[2].starts_with("204 no content\r\n"), "{}", heads[2]);
    assert!(
        heads[2].contains("\r\nconnection: close\r\n"),
        "{}",
        heads[2]
    );
    assert!(
        !heads[2].contains("content-length") && !heads[2].contains("transfer-encoding"),
        "a 204 has no body framing: {}",
        heads[2]
    );
    assert!(heads[2].ends_with("\r\n\r\n"), "{}", heads[2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_gets_then_a_post_share_one_connection() {
    let origin = FakeOrigin::start().await;
    let proxy = start_proxy(&origin, Options::default()).await;
    // Two GETs answered on the fast path, then a POST with a body, which hyper serves from
    // the bytes the fast path had already read, then the connection is closed by request.
    let mut tcp = send_raw(
        &proxy,
        b"GET /api/v2/stream/status HTTP/1.1\r\nhost: x\r\n\r\n\
          GET /api/v2/stream/status HTTP/1.1\r\nhost: x\r\n\r\n\
          POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
    )
    .await;
    let text = read_to_close(&mut tcp).await;
    assert_eq!(text.matches("HTTP/1.1 200 OK\r\n").count(), 3, "{text}");
    let echo = text.rfind("HTTP/1.1 200").expect("the echo last");
    assert!(text[echo..].contains("hello"), "{text}");
    assert_eq!(
        text[..echo].matches("\"max_connections\"").count(),
        2,
        "both status answers come first, whole: {text}"
    );
    assert_eq!(origin.count("/api/v2/stream/status"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_close_ends_the_connection_after_the_answer() {
    let origin = FakeOrigin::start().await;
    let proxy = start_proxy(&origin, Options::default()).await;
    // The second request is never answered: the first asked to close.
    let mut tcp = send_raw(
        &proxy,
        b"GET /api/v2/stream/status HTTP/1.1\r\nhost: x\r\nConnection: Close\r\n\r\n\
          GET /api/v2/stream/status HTTP/1.1\r\nhost: x\r\n\r\n",
    )
    .await;
    let text = read_to_close(&mut tcp).await.to_ascii_lowercase();
    assert_eq!(text.matches("http/1.1 200 ok\r\n").count(), 1, "{text}");
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
    assert!(text.contains("\"max_connections\""), "{text}");
    assert_eq!(origin.count("/api/v2/stream/status"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_a_connection_idle_between_requests() {
    let origin = FakeOrigin::start().await;
    // Idle connections and the drain may both last longer than the test waits: shutdown has
    // to close this connection itself.
    let proxy = try_start_proxy(&origin, Options::default(), |text| {
        text.replace(
            "header_read_timeout_ms = 2000",
            "header_read_timeout_ms = 60000",
        )
        .replace("shutdown_grace_s = 2", "shutdown_grace_s = 30")
    })
    .await
    .expect("proxy starts");
    let mut tcp = send_raw(
        &proxy,
        b"GET /api/v2/stream/status HTTP/1.1\r\nhost: x\r\n\r\n",
    )
    .await;
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    // The whole JSON body, which ends the answer.
    while !String::from_utf8_lossy(&answer).ends_with('}') {
        let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
            .await
            .expect("answer in time")
            .expect("read");
        assert!(n > 0, "closed before the answer");
        answer.extend_from_slice(&buf[..n]);
    }
    // The connection now waits for its next request; shutdown must not wait for it.
    tokio::time::timeout(WAIT, proxy.proxy.shutdown())
        .await
        .expect("shutdown does not wait for an idle keep-alive connection");
    let rest = read_to_close(&mut tcp).await;
    assert!(rest.is_empty(), "nothing more is sent: {rest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_preface_after_an_answered_get_is_not_taken_as_h2c() {
    let origin = FakeOrigin::start().await;
    let proxy = start_proxy(&origin, Options::default()).await;
    // Prior-knowledge h2c is allowed only at a connection's start (RFC 9113 §3.3): after the
    // GET the fast path answered, the preface is an HTTP/1.1 request that hyper refuses.
    let mut tcp = send_raw(
        &proxy,
        b"GET /api/v2/stream/status HTTP/1.1\r\nhost: x\r\n\r\n\
          PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    )
    .await;
    let text = read_to_close(&mut tcp).await;
    let second = text[1..].find("HTTP/1.1 ").map(|at| at + 1);
    let first = &text[..second.unwrap_or(text.len())];
    assert!(first.starts_with("HTTP/1.1 200 OK\r\n"), "{text:?}");
    assert!(first.ends_with('}'), "the status answer, whole: {text:?}");
    if let Some(at) = second {
        assert!(
            !text[at..].starts_with("HTTP/1.1 2"),
            "the preface is refused: {text:?}"
        );
    }
    assert!(
        !text.contains('\0'),
        "no HTTP/2 frame (a SETTINGS frame starts with zero bytes) after HTTP/1.1: {text:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_before_its_answer_releases_the_origin_request() {
    let fake = FakeOrigin::start().await;
    // The origin's bound is far beyond the test's: only the client leaving can end it.
    let options = Options {
        timeout_ms: 60_000,
        ..Options::default()
    };
    let (proxy, hang) = proxy_to_raw_origin_with(&fake, options).await;
    let tcp = send_raw(&proxy, b"GET /hang HTTP/1.1\r\nhost: x\r\n\r\n").await;
    tokio::time::timeout(WAIT, hang.started.notified())
        .await
        .expect("the request reaches the origin");
    drop(tcp);
    tokio::time::timeout(WAIT, hang.hung_up.notified())
        .await
        .expect("the proxy gives up the origin request when its client is gone");
}
