//! Hostile HTTP/2 clients, spoken to with a raw `h2` client over TLS: streams that stall on
//! flow control, more streams than a connection or an address may hold, and control-frame
//! floods. Each is bounded, and the others stay served.

use crate::common;
use std::time::Duration;

use bytes::Bytes;
use common::client::Proto;
use common::origin::FakeOrigin;
use common::{Options, TestProxy, WAIT, start_proxy};
use h2::client::{Builder, SendRequest};
use h2::{Reason, RecvStream};
use http::Request;
use http_body_util::BodyExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn origin() -> FakeOrigin {
    let origin = FakeOrigin::start().await;
    origin.add_token("tok-alice", "alice");
    origin.set_configuration("cfg1", "alice", json!([{"symbol": "AAPL"}]));
    origin.set_configuration("big", "alice", common::padded_tickers(1));
    origin
}

/// A raw HTTP/2 connection over TLS, made with `builder`; its connection task runs until the
/// proxy closes it, and the returned handle says when that happened.
async fn connect(
    proxy: &TestProxy,
    builder: &Builder,
) -> (SendRequest<Bytes>, tokio::task::JoinHandle<()>) {
    let tls = proxy.client.tls(b"h2").await;
    let (sender, connection) = builder.handshake(tls).await.expect("h2 handshake");
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    (sender, task)
}

/// A GET for `path` on the proxy's HTTPS listener, as an HTTP/2 request.
fn get(proxy: &TestProxy, path: &str, token: Option<&str>) -> Request<()> {
    let port = proxy.proxy.https_addr().expect("https").port();
    let mut builder = Request::get(format!("https://localhost:{port}{path}"));
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    builder.body(()).expect("request")
}

/// Sends `request` and waits (bounded) for the response head.
async fn send(sender: &mut SendRequest<Bytes>, request: Request<()>) -> http::Response<RecvStream> {
    let ready = tokio::time::timeout(WAIT, sender.clone().ready())
        .await
        .expect("ready in time")
        .expect("connection usable");
    *sender = ready;
    let (response, _) = sender.send_request(request, true).expect("send");
    tokio::time::timeout(WAIT, response)
        .await
        .expect("response head in time")
        .expect("response")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_stalled_by_a_zero_window_give_their_slots_back() {
    let origin = origin().await;
    let proxy = start_proxy(
        &origin,
        Options {
            max_streams: 4,
            write_timeout_ms: 500,
            ..Options::default()
        },
    )
    .await;
    // The client: INITIAL_WINDOW_SIZE = 0, then as many streams as the pool holds.
    let mut zero = Builder::new();
    zero.initial_window_size(0);
    let (mut stalled, connection) = connect(&proxy, &zero).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let response = send(&mut stalled, get(&proxy, "/api/v2/stream", None)).await;
        assert_eq!(response.status(), 200);
        held.push(response);
    }
    let (status, _, _) = proxy
        .client
        .get_json(Proto::H2Tls, "/api/v2/stream", &[])
        .await;
    assert_eq!(status, 503, "the stalled streams hold the whole pool");

    // After write_timeout without progress they are reset, and a newcomer is served.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut stream = proxy
            .client
            .stream(Proto::H2Tls, "/api/v2/stream", &[])
            .await;
        if stream.status == 200 {
            stream.next_of("metrics", WAIT).await;
            break;
        }
        assert_eq!(stream.status, 503);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stalled streams were never released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every stream of that connection stalled, so the connection itself was closed.
    tokio::time::timeout(WAIT, connection)
        .await
        .expect("the stalled connection is closed")
        .expect("join");
    let stalled = "sse_edge_limit_rejections_total{reason=\"stalled_stream\"}";
    assert!(proxy.metric(stalled).await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stalled_stream_is_reset_and_its_connection_stays_served() {
    let origin = origin().await;
    let proxy = start_proxy(
        &origin,
        Options {
            write_timeout_ms: 500,
            ..Options::default()
        },
    )
    .await;
    // Stream windows of 64 KiB, and a connection window large enough that an unread stream
    // does not starve the others.
    let mut builder = Builder::new();
    builder.initial_connection_window_size(32 << 20);
    let (mut sender, connection) = connect(&proxy, &builder).await;
    let mut healthy = send(&mut sender, get(&proxy, "/api/v2/stream", None)).await;
    assert_eq!(healthy.status(), 200);
    // A state of about 1 MB that the client takes but never returns window for.
    let mut unread = send(
        &mut sender,
        get(
            &proxy,
            "/api/v2/configurations/big/stream",
            Some("tok-alice"),
        ),
    )
    .await;
    assert_eq!(unread.status(), 200);
    let body = unread.body_mut();
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match body.data().await {
                Some(Ok(_)) => continue, // read, but no window given back
                Some(Err(error)) => return error.reason(),
                None => return None,
            }
        }
    })
    .await
    .expect("the stalled stream was reset");
    assert_eq!(ended, Some(Reason::CANCEL));
    common::eventually("its slot to be freed", WAIT, || {
        proxy.proxy.open_streams() == 1
    })
    .await;

    // The healthy stream and the connection are untouched.
    let first = tokio::time::timeout(WAIT, healthy.body_mut().data())
        .await
        .expect("the healthy stream still delivers")
        .expect("data")
        .expect("no error");
    assert!(String::from_utf8_lossy(&first).contains("retry:"));
    let status = send(&mut sender, get(&proxy, "/api/v2/stream/status", None)).await;
    assert_eq!(
        status.status(),
        200,
        "new requests on the connection are served"
    );
    assert!(!connection.is_finished());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_over_the_connection_cap_are_refused() {
    let origin = origin().await;
    let proxy = start_proxy(
        &origin,
        Options {
            max_streams_per_connection: 2,
            ..Options::default()
        },
    )
    .await;
    // Raw frames: three stream requests at once, as a client that ignores the advertised
    // limit would send them (the `h2` crate would wait for a free stream).
    let mut tls = proxy.client.tls(b"h2").await;
    let mut out = PREFACE.to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    for stream in [1, 3, 5] {
        out.extend(frame(0x1, 0x5, stream, &hpack_get("/api/v2/stream")));
    }
    tls.write_all(&out).await.expect("write");
    // Read frames until streams 1 and 3 have their heads and stream 5 its answer.
    let mut heads = Vec::new();
    let mut refused = None;
    tokio::time::timeout(WAIT, async {
        while heads.len() < 2 || refused.is_none() {
            let (kind, stream, payload) = read_frame(&mut tls).await;
            match kind {
                0x1 => heads.push((stream, payload.first().copied())),
                0x3 => refused = Some((stream, payload)),
                _ => {}
            }
        }
    })
    .await
    .expect("all three answered");
    // 0x88 is `:status: 200` from the HPACK static table; the heads come in any order.
    heads.sort_unstable();
    assert_eq!(heads, [(1, Some(0x88)), (3, Some(0x88))]);
    let code = 7u32.to_be_bytes().to_vec(); // REFUSED_STREAM
    assert_eq!(refused, Some((5, code)));
}

/// The HPACK block of `GET https://localhost{path}`: static-table method and scheme, literal
/// path and authority (RFC 7541 §6.2.2).
fn hpack_get(path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x87];
    for (index, value) in [(4u8, path), (1, "localhost")] {
        block.push(index);
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    block
}

/// Reads one frame: its type, stream and payload.
async fn read_frame(io: &mut (impl AsyncReadExt + Unpin)) -> (u8, u32, Vec<u8>) {
    let mut header = [0u8; 9];
    io.read_exact(&mut header).await.expect("frame header");
    let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; length];
    io.read_exact(&mut payload).await.expect("frame payload");
    (header[3], stream, payload)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_over_the_address_cap_get_429_on_any_protocol() {
    let origin = origin().await;
    let proxy = start_proxy(
        &origin,
        Options {
            max_streams_per_ip: 2,
            ..Options::default()
        },
    )
    .await;
    let mut open = Vec::new();
    for proto in [Proto::H1Plain, Proto::H2Tls] {
        let mut stream = proxy.client.stream(proto, "/api/v2/stream", &[]).await;
        assert_eq!(stream.status, 200);
        stream.next_of("metrics", WAIT).await;
        open.push(stream);
    }
    for proto in [Proto::H1Tls, Proto::H2Plain] {
        let (status, _, body) = proxy.client.get_json(proto, "/api/v2/stream", &[]).await;
        assert_eq!(status, 429, "{proto:?}");
        assert_eq!(body["error"], "too_many_ip_streams");
        assert_eq!(body["max_streams_per_ip"], 2);
    }
    // An EventSource gives up on any non-200 answer: it is told to come back instead.
    let accept = [("accept", "text/event-stream")];
    let mut refused = proxy
        .client
        .stream(Proto::H2Tls, "/api/v2/stream", &accept)
        .await;
    assert_eq!(refused.status, 200);
    let event = refused.next(WAIT).await;
    assert_eq!(event.event, "unavailable");
    assert_eq!(event.json()["error"], "too_many_ip_streams");
    assert!(refused.retry.is_some(), "a retry: field");
    let (status, _, _) = proxy
        .client
        .get_json(Proto::H1Tls, "/api/v2/stream/status", &[])
        .await;
    assert_eq!(status, 200, "passthrough is not limited");
    drop(open.pop());
    common::eventually("the address's slot to be freed", WAIT, || {
        proxy.proxy.open_streams() == 1
    })
    .await;
    let again = proxy
        .client
        .stream(Proto::H1Tls, "/api/v2/stream", &[])
        .await;
    assert_eq!(again.status, 200);
    let limited = "sse_edge_limit_rejections_total{reason=\"max_streams_per_ip\"}";
    assert_eq!(proxy.metric(limited).await, 3.0);
}

/// Behind a trusted load balancer every client arrives from its address: the cap counts the
/// address it forwards, and a client's own additions to the chain do not get it more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_cap_counts_the_forwarded_client() {
    let origin = origin().await;
    let proxy = start_proxy(
        &origin,
        Options {
            max_streams_per_ip: 1,
            listen_extra: "trusted_proxies = [\"127.0.0.1/32\"]",
            ..Options::default()
        },
    )
    .await;
    let alice = [("x-forwarded-for", "203.0.113.7")];
    let mut first = proxy
        .client
        .stream(Proto::H1Plain, "/api/v2/stream", &alice)
        .await;
    assert_eq!(first.status, 200);
    first.next_of("metrics", WAIT).await;
    let bob = [("x-forwarded-for", "198.51.100.2")];
    let mut other = proxy
        .client
        .stream(Proto::H2Tls, "/api/v2/stream", &bob)
        .await;
    assert_eq!(other.status, 200, "another client behind the same balancer");
    other.next_of("metrics", WAIT).await;
    // Alice again, with a made-up address in front of what the balancer appended.
    let forged = [("x-forwarded-for", "192.0.2.1, 203.0.113.7")];
    let (status, _, body) = proxy
        .client
        .get_json(Proto::H1Tls, "/api/v2/stream", &forged)
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"], "too_many_ip_streams");
}

/// What an HTTP/2 client sends first.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An HTTP/2 frame header and payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_frame_flood_closes_its_connection_only() {
    let origin = origin().await;
    let proxy = start_proxy(&origin, Options::default()).await;
    // A normal client: an event stream held open, so its connection is never idle.
    let mut normal = proxy.client.keep_alive(Proto::H2Tls).await;
    let mut held = normal.get("/api/v2/stream", &[]).await;
    assert_eq!(held.status(), 200);

    let tls = proxy.client.tls(b"h2").await;
    let (mut read, mut write) = tokio::io::split(tls);
    // Whatever the proxy sends (SETTINGS, the stream, PING acks) is read, until it closes.
    let reader = tokio::spawn(async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    // The flooder opens an event stream too (so it is not closed as idle), then floods.
    let mut flood = PREFACE.to_vec();
    flood.extend(frame(0x4, 0, 0, &[]));
    flood.extend(frame(0x1, 0x5, 1, &hpack_get("/api/v2/stream")));
    write.write_all(&flood).await.expect("write");
    let batch: Vec<u8> = (0..1000)
        .flat_map(|n| {
            if n % 2 == 0 {
                frame(0x8, 0, 0, &1u32.to_be_bytes())
            } else {
                frame(0x6, 0, 0, &[7; 8])
            }
        })
        .collect();
    // 50,000 frames at most, as fast as the proxy takes them; the proxy closes long before.
    for _ in 0..50 {
        if write.write_all(&batch).await.is_err() {
            break;
        }
    }
    tokio::time::timeout(WAIT, reader)
        .await
        .expect("the flooding connection was closed")
        .expect("join");

    let response = normal.get("/api/v2/stream/status", &[]).await;
    assert_eq!(response.status(), 200, "the normal client stays served");
    let first = tokio::time::timeout(WAIT, held.body_mut().frame())
        .await
        .expect("its stream still delivers");
    assert!(first.is_some_and(|frame| frame.is_ok()));
    let flood = "sse_edge_limit_rejections_total{reason=\"h2_control_flood\"}";
    assert_eq!(proxy.metric(flood).await, 1.0);
}
