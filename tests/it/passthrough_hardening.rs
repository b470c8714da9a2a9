//! Passthrough against clients and origins that misbehave: a client that leaves while a body
//! is pending, an origin that goes quiet mid-body, pipelined requests then a half-close, and
//! `_` spellings of the headers the proxy states. The real proxy on 127.0.0.1:0 in front of a
//! raw loopback origin; where hyper serves the same bytes (a POST or a HEAD, which the fast
//! path hands to it), both paths are held to the same behaviour.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::common;
use crate::fast_path_passthrough::{read_to_close, send_raw};
use common::origin::FakeOrigin;
use common::raw_origin;
use common::{Options, TestProxy, WAIT};

/// What the raw origin tells about its `/stall` requests.
#[derive(Clone, Default)]
struct Stall {
    /// A `/stall` answer's head and first body bytes were written.
    started: Arc<Notify>,
    /// The proxy closed a `/stall` request's connection.
    hung_up: Arc<Notify>,
    /// Every request head the origin read, as sent.
    heads: Arc<std::sync::Mutex<Vec<String>>>,
}

/// A raw origin: `/stall` gets a head announcing 10 bytes and 5 of them, then nothing more
/// (the connection stays open, read until the proxy closes it); anything else gets `ok`.
async fn raw_origin() -> (SocketAddr, Stall) {
    let stall = Stall::default();
    let signals = stall.clone();
    let addr = raw_origin::start(move |head, mut stream| {
        let stall = stall.clone();
        Box::pin(async move {
            stall.heads.lock().expect("heads").push(head.clone());
            if raw_origin::path(&head) == "/stall" {
                let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello";
                if stream.write_all(answer).await.is_err() {
                    return None;
                }
                stall.started.notify_one();
                raw_origin::until_closed(&mut stream).await;
                stall.hung_up.notify_one();
                return None;
            }
            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
            stream.write_all(answer).await.is_ok().then_some(stream)
        })
    })
    .await;
    (addr, signals)
}

/// The proxy, with `options`, in front of [`raw_origin`].
async fn proxy_with(fake: &FakeOrigin, options: Options) -> (TestProxy, Stall) {
    let (addr, stall) = raw_origin().await;
    (raw_origin::proxy_to(fake, options, addr).await, stall)
}

/// Reads until `needle` has arrived (bounded by [`WAIT`]).
async fn read_until(tcp: &mut TcpStream, needle: &str) -> String {
    let mut all = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&all).contains(needle) {
        let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
            .await
            .expect("data in time")
            .expect("read");
        assert!(
            n > 0,
            "closed before {needle:?}: {:?}",
            String::from_utf8_lossy(&all)
        );
        all.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&all).into_owned()
}

/// One client asks for `/stall` with `request`, receives the head and the first bytes, and
/// leaves; the proxy must then give up the origin request.
async fn leave_a_stalled_body(request: &[u8]) {
    let fake = FakeOrigin::start().await;
    // The origin's bound is far beyond the test's: only the client leaving can end it.
    let options = Options {
        timeout_ms: 60_000,
        ..Options::default()
    };
    let (proxy, stall) = proxy_with(&fake, options).await;
    let mut tcp = send_raw(&proxy, request).await;
    tokio::time::timeout(WAIT, stall.started.notified())
        .await
        .expect("the origin answered");
    read_until(&mut tcp, "hello").await;
    drop(tcp);
    tokio::time::timeout(WAIT, stall.hung_up.notified())
        .await
        .expect("the proxy gives up the origin request when its client is gone");
}

/// Hyper (a POST is handed to it) notices the client leaving while the body is pending and
/// drops the origin request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_releases_a_stalled_body_when_its_client_leaves() {
    leave_a_stalled_body(b"POST /stall HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n").await;
}

/// So does the fast path: the client is watched while a passthrough body is pending, or a
/// client that left would be seen only at the next write, which a quiet origin never causes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fast_path_releases_a_stalled_body_when_its_client_leaves() {
    leave_a_stalled_body(b"GET /stall HTTP/1.1\r\nhost: x\r\n\r\n").await;
}

/// An origin silent mid-body for `[upstream] timeout_ms` is given up, on both paths (as nginx's
/// `proxy_read_timeout`): the client sees its answer end, cut short, instead of waiting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_origin_body_is_cut_off() {
    let fake = FakeOrigin::start().await;
    let options = Options {
        timeout_ms: 500,
        ..Options::default()
    };
    let (proxy, _stall) = proxy_with(&fake, options).await;
    for request in [
        &b"POST /stall HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n"[..],
        &b"GET /stall HTTP/1.1\r\nhost: x\r\n\r\n"[..],
    ] {
        let mut tcp = send_raw(&proxy, request).await;
        let text = read_to_close(&mut tcp).await;
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text:?}");
    }
}

/// Pipelined requests followed by a half-close (`shutdown(SHUT_WR)`, as `nc -N` or a scripted
/// client does) are answered: an end of file while a request is buffered is not the client
/// leaving (hyper's rule too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_then_a_half_close_are_answered() {
    let fake = FakeOrigin::start().await;
    let (proxy, _stall) = proxy_with(&fake, Options::default()).await;
    for method in ["HEAD", "GET"] {
        let requests = format!(
            "{method} /plain HTTP/1.1\r\nhost: x\r\n\r\n{method} /plain HTTP/1.1\r\nhost: x\r\n\r\n"
        );
        let mut tcp = send_raw(&proxy, requests.as_bytes()).await;
        tcp.shutdown().await.expect("half-close");
        let text = read_to_close(&mut tcp).await;
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\n"),
            "{method}: the first pipelined request is answered: {text:?}"
        );
    }
}

/// The head the origin received for `request` (a `GET /plain` that closes its connection),
/// once the client had its `200`.
async fn head_at_the_origin(request: &[u8]) -> String {
    let fake = FakeOrigin::start().await;
    let (proxy, origin) = proxy_with(&fake, Options::default()).await;
    let mut tcp = send_raw(&proxy, request).await;
    let text = read_to_close(&mut tcp).await;
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text:?}");
    let heads = origin.heads.lock().expect("heads").clone();
    heads
        .into_iter()
        .find(|head| head.starts_with("GET /plain "))
        .expect("the request reached the origin")
}

/// A client's `Transfer_Encoding` / `Content_Length` never reach the origin: CGI-style origins
/// (WSGI, PHP, some nginx setups) read `X_Y` and `X-Y` as the same variable, and an origin that
/// took one as framing would read the next client's request on the pooled connection as this
/// one's body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_header_lookalikes_do_not_reach_the_origin() {
    let forwarded = head_at_the_origin(
        b"GET /plain HTTP/1.1\r\nhost: x\r\ntransfer_encoding: chunked\r\n\
          content_length: 40\r\nconnection: close\r\n\r\n",
    )
    .await;
    let lower = forwarded.to_ascii_lowercase();
    assert!(
        !lower.contains("transfer_encoding") && !lower.contains("content_length"),
        "framing lookalikes forwarded: {forwarded:?}"
    );
}

/// Nor do `_` spellings of the forwarding headers the proxy states (`X_Real_IP`,
/// `X_Forwarded_For`): to a CGI-style origin they are the same variable as the proxy's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_header_lookalikes_do_not_reach_the_origin() {
    let forwarded = head_at_the_origin(
        b"GET /plain HTTP/1.1\r\nhost: x\r\nx_real_ip: 10.0.0.1\r\n\
          x_forwarded_for: 10.0.0.1\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(
        !forwarded.contains("10.0.0.1"),
        "a client-chosen address reaches the origin: {forwarded:?}"
    );
}
