//! The HTTP/1.1 event-stream fast path (`src/edge/h1/`) seen from the wire: its framing,
//! keep-alive across refused streams and passthrough requests on one connection, pipelining,
//! the hand-over to hyper for whatever it does not serve, and clients that close or flood an
//! open stream.

use crate::common;
use common::client::{Proto, json_response};
use common::origin::FakeOrigin;
use common::{Options, WAIT, eventually, send_raw, start_proxy};
use http_body_util::BodyExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CFG_STREAM: &str = "/api/v2/configurations/cfg1/stream";

async fn origin() -> FakeOrigin {
    let origin = FakeOrigin::start().await;
    origin.add_token("tok-alice", "alice");
    origin.set_configuration("cfg1", "alice", json!([{"symbol": "AAPL", "score": 0.1}]));
    origin
}

/// The first whole chunk of chunked `body` and how many bytes it took; `None` if it has not
/// all arrived. Panics on bad framing or on the last chunk.
fn next_chunk(body: &str) -> Option<(&str, usize)> {
    let (size, rest) = body.split_once("\r\n")?;
    let size = usize::from_str_radix(size, 16).expect("hex chunk size");
    assert!(size > 0, "no last chunk while the stream is open");
    if rest.len() < size + 2 {
        return None;
    }
    assert_eq!(&rest[size..size + 2], "\r\n", "a chunk ends with CRLF");
    Some((&rest[..size], body.len() - rest.len() + size + 2))
}

/// Reads from `stream` until `needle` has arrived (or, for an empty needle, until anything
/// has); returns everything read.
async fn read_until(stream: &mut TcpStream, needle: &str) -> String {
    let mut all = Vec::new();
    let mut buffer = [0u8; 4096];
    while all.is_empty() || !String::from_utf8_lossy(&all).contains(needle) {
        match tokio::time::timeout(WAIT, stream.read(&mut buffer)).await {
            Ok(Ok(n)) if n > 0 => all.extend_from_slice(&buffer[..n]),
            other => panic!(
                "connection ended or stalled ({other:?}) before {needle:?}; got {:?}",
                String::from_utf8_lossy(&all)
            ),
        }
    }
    String::from_utf8_lossy(&all).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_carries_a_refused_stream_a_passthrough_and_a_stream() {
    let origin = origin().await;
    let proxy = start_proxy(&origin, Options::default()).await;
    for proto in [Proto::H1Plain, Proto::H1Tls, Proto::H2Plain, Proto::H2Tls] {
        let mut conn = proxy.client.keep_alive(proto).await;
        // Refused on the fast path (no token): the connection stays open.
        let (status, _, body) = json_response(conn.get(CFG_STREAM, &[]).await).await;
        assert_eq!(status, 401, "{proto:?}");
        assert_eq!(body["error"], "missing_credentials", "{proto:?}: {body}");
        // Then a passthrough request on the same connection (handed over to hyper).
        let (status, _, _) = json_response(conn.get("/api/v2/stream/status", &[]).await).await;
        assert_eq!(status, 200, "{proto:?}");
        // Then a stream, still on the same connection.
        let response = conn
            .get(CFG_STREAM, &[("authorization", "Bearer tok-alice")])
            .await;
        assert_eq!(response.status(), 200, "{proto:?}");
        let mut body = response.into_body();
        let first = tokio::time::timeout(WAIT, body.frame())
            .await
            .expect("first frame in time")
            .expect("a frame")
            .expect("frame");
        let text = String::from_utf8_lossy(first.data_ref().expect("data")).into_owned();
        assert!(text.starts_with("retry: "), "{proto:?}: {text:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let origin = origin().await;
    let proxy = start_proxy(&origin, Options::default()).await;
    // Three requests in one write: a refused stream (fast path), a passthrough (handed over
    // to hyper with the bytes already read), and a stream (now served by hyper).
    let requests = format!(
        "GET {CFG_STREAM} HTTP/1.1\r\nhost: x\r\n\r\n\
         GET /api/v2/stream/status HTTP/1.1\r\nhost: x\r\n\r\n\
         GET {CFG_STREAM}?user_token=tok-alice HTTP/1.1\r\nhost: x\r\n\r\n"
    );
    let mut tcp = send_raw(proxy.proxy.http_addr().expect("http"), requests.as_bytes()).await;
    let text = read_until(&mut tcp, "event: sentiment_update").await;
    let refused = text.find("HTTP/1.1 401").expect("the refusal first");
    let status = text.find("HTTP/1.1 200").expect("then the passthrough");
    let stream = text.rfind("HTTP/1.1 200").expect("then the stream");
    assert!(refused < status && status < stream, "{text}");
    let refusal = text[refused..status].to_ascii_lowercase();
    assert!(
        refusal.contains("content-type: application/json"),
        "{refusal}"
    );
    assert!(
        refusal.contains("\"error\":\"missing_credentials\""),
        "{refusal}"
    );
    assert!(!refusal.contains("connection: close"), "{refusal}");
    assert_eq!(origin.count("/api/v2/stream/status"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_sent_as_exact_chunks() {
    let origin = origin().await;
    let proxy = start_proxy(&origin, Options::default()).await;
    let request = format!("GET {CFG_STREAM}?user_token=tok-alice HTTP/1.1\r\nhost: x\r\n\r\n");
    let mut tcp = send_raw(proxy.proxy.http_addr().expect("http"), request.as_bytes()).await;
    let mut text = read_until(&mut tcp, "\r\n\r\n").await;
    let head = text[..text.find("\r\n\r\n").expect("head")].to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    assert!(
        head.contains("\r\ncontent-type: text/event-stream"),
        "{head}"
    );
    assert!(head.contains("\r\ncache-control: no-cache"), "{head}");
    assert!(head.contains("\r\ntransfer-encoding: chunked"), "{head}");
    assert!(head.contains("\r\ndate: "), "{head}");
    assert!(!head.contains("content-length"), "{head}");
    // Every chunk is framed by its exact length in hex and ends with CRLF; together they are
    // the event stream. Read whole chunks until the item has come.
    let mut events = String::new();
    let mut at = head.len() + 4;
    while !events.contains("\"symbol\":\"AAPL\"") {
        match next_chunk(&text[at..]) {
            Some((chunk, used)) => {
                events.push_str(chunk);
                at += used;
            }
            None => text.push_str(&read_until(&mut tcp, "").await),
        }
    }
    assert!(events.starts_with("retry: "), "{events:?}");
    assert!(events.contains("\"symbol\":\"AAPL\""), "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_close_is_honoured_after_a_refusal() {
    let origin = origin().await;
    let proxy = start_proxy(&origin, Options::default()).await;
    let request = format!("GET {CFG_STREAM} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    let mut tcp = send_raw(proxy.proxy.http_addr().expect("http"), request.as_bytes()).await;
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut answer))
        .await
        .expect("the proxy closes the connection")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 401"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    let length: usize = answer
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .expect("content-length")
        .trim()
        .parse()
        .expect("number");
    let body = answer.split_once("\r\n\r\n").expect("head").1;
    assert_eq!(body.len(), length, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_head_is_served_by_hyper_and_still_streams() {
    let origin = origin().await;
    let proxy = start_proxy(&origin, Options::default()).await;
    // 20 KB of cookies: over the fast path's 8 KiB head, under hyper's 64 KiB.
    let cookie = format!("big={}", "c".repeat(20_000));
    for proto in [Proto::H1Plain, Proto::H1Tls] {
        let mut stream = proxy
            .client
            .stream(
                proto,
                CFG_STREAM,
                &[("authorization", "Bearer tok-alice"), ("cookie", &cookie)],
            )
            .await;
        assert_eq!(stream.status, 200, "{proto:?}");
        let event = stream.next_of("sentiment_update", WAIT).await;
        assert_eq!(event.json()["symbol"], "AAPL", "{proto:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_or_flooding_an_open_stream_releases_it_at_once() {
    let origin = origin().await;
    // A heartbeat far away: only watching the read side can notice the client leaving.
    let proxy = start_proxy(
        &origin,
        Options {
            heartbeat_s: 3600,
            ..Options::default()
        },
    )
    .await;
    let addr = proxy.proxy.http_addr().expect("http");
    let request = format!("GET {CFG_STREAM}?user_token=tok-alice HTTP/1.1\r\nhost: x\r\n\r\n");

    let mut leaving = send_raw(addr, request.as_bytes()).await;
    read_until(&mut leaving, "event: sentiment_update").await;
    assert_eq!(proxy.proxy.open_streams(), 1);
    drop(leaving);
    eventually("the closed stream is released", WAIT, || {
        proxy.proxy.open_streams() == 0
    })
    .await;

    // A client that keeps sending on its open stream is cut off, not buffered.
    let mut flooding = send_raw(addr, request.as_bytes()).await;
    read_until(&mut flooding, "event: sentiment_update").await;
    let junk = vec![b'x'; 4096];
    let mut closed = false;
    for _ in 0..64 {
        if flooding.write_all(&junk).await.is_err() {
            closed = true;
            break;
        }
    }
    eventually("the flooding stream is released", WAIT, || {
        proxy.proxy.open_streams() == 0
    })
    .await;
    if !closed {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(WAIT, flooding.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "the proxy closed the flooding connection");
    }
}
