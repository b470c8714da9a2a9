//! Hostile and broken clients: silence, slowloris, oversized and malformed requests, forged
//! identities, token floods, and per-user limits. Each is answered clearly and costs bounded
//! resources.

use crate::common;
use std::time::Duration;

use common::client::Proto;
use common::origin::FakeOrigin;
use common::{Options, WAIT, start_proxy};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The two users of [`FakeOrigin::start_alice_and_bob`], alice with a third configuration.
async fn origin() -> FakeOrigin {
    let origin = FakeOrigin::start_alice_and_bob().await;
    origin.set_configuration("cfg3", "alice", json!([{"symbol": "TSLA"}]));
    origin
}

/// Reads until the peer closes; returns what it sent. Panics if it stays open past `WAIT`.
async fn read_until_closed(stream: &mut (impl AsyncReadExt + Unpin)) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout(WAIT, stream.read(&mut buffer)).await {
            Err(_) => panic!("the proxy kept the connection open"),
            Ok(Ok(0)) | Ok(Err(_)) => return all,
            Ok(Ok(n)) => all.extend_from_slice(&buffer[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_slow_clients_are_cut_off() {
    let origin = origin().await;
    let proxy = start_proxy(&origin, Options::default()).await;
    let http = proxy.proxy.http_addr().expect("http");
    let https = proxy.proxy.https_addr().expect("https");

    // Connects and says nothing (the HTTP/1.1-or-h2c detection has no timer of its own).
    let mut silent = TcpStream::connect(http).await.expect("connect");
    read_until_closed(&mut silent).await;

    // Answered once, then silent: the wait for the next head is bounded too (its timer,
    // armed for the first wait, moves to the second's deadline).
    let request = b"GET /api/v2/stream/status HTTP/1.1\r\nhost: x\r\n\r\n";
    let mut then_silent = common::send_raw(http, request).await;
    let answered = String::from_utf8_lossy(&read_until_closed(&mut then_silent).await).into_owned();
    assert!(answered.starts_with("HTTP/1.1 "), "{answered}");
    assert_eq!(answered.matches("HTTP/1.1 ").count(), 1, "{answered}");

    // Slowloris: headers one byte at a time, never finished.
    let mut slow = TcpStream::connect(http).await.expect("connect");
    let dribble = tokio::spawn(async move {
        for byte in b"GET /api/v2/stream/status HTTP/1.1\r\nhost: x\r\nx-slow: "
            .iter()
            .cycle()
            .take(200)
        {
            if slow.write_all(&[*byte]).await.is_err() {
                return slow;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        slow
    });
    let mut slow = dribble.await.expect("dribbler");
    read_until_closed(&mut slow).await;

    // A TLS client that never finishes its handshake.
    let mut no_handshake = TcpStream::connect(https).await.expect("connect");
    read_until_closed(&mut no_handshake).await;
    assert_eq!(
        proxy.proxy.open_streams(),
        0,
        "none of them held a stream slot"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_requests_are_refused() {
    let origin = origin().await;
    let proxy = start_proxy(&origin, Options::default()).await;
    let http = proxy.proxy.http_addr().expect("http");

    let mut big = TcpStream::connect(http).await.expect("connect");
    let huge = format!(
        "GET /api/v2/stream/status HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(200_000)
    );
    let _ = big.write_all(huge.as_bytes()).await;
    let answer = String::from_utf8_lossy(&read_until_closed(&mut big).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");

    let mut bad = TcpStream::connect(http).await.expect("connect");
    bad.write_all(b"G(T / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let answer = String::from_utf8_lossy(&read_until_closed(&mut bad).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    assert_eq!(
        origin.count("/api/v2/stream/status"),
        0,
        "nothing reached the origin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_assert_a_user_through_passthrough() {
    let origin = origin().await;
    let proxy = start_proxy(
        &origin,
        Options {
            token_sources: r#""bearer", "query:user_token""#,
            ..Options::default()
        },
    )
    .await;
    let (status, _, _) = proxy
        .client
        .get_json(
            Proto::H1Tls,
            "/api/v2/configurations/cfg1/sentiment",
            &[("x-edge-user", "alice")],
        )
        .await;
    assert_eq!(status, 404, "the forged X-Edge-User was dropped");
    let (_, _, echo) = proxy
        .client
        .get_json(
            Proto::H2Tls,
            "/echo",
            &[
                ("x-edge-user", "alice"),
                ("cookie", "a=1"),
                ("cookie", "b=2"),
            ],
        )
        .await;
    assert!(echo["headers"].get("x-edge-user").is_none(), "{echo}");
    assert_eq!(
        echo["headers"]["cookie"], "a=1; b=2",
        "HTTP/2 cookies are joined"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_per_user_are_capped() {
    let origin = origin().await;
    let proxy = start_proxy(
        &origin,
        Options {
            max_streams_per_user: 2,
            ..Options::default()
        },
    )
    .await;
    let alice = [("authorization", "Bearer tok-alice")];
    let mut open = Vec::new();
    for id in ["cfg1", "cfg2"] {
        let mut stream = proxy
            .client
            .stream(
                Proto::H2Tls,
                &format!("/api/v2/configurations/{id}/stream"),
                &alice,
            )
            .await;
        assert_eq!(stream.status, 200);
        stream.next_of("sentiment_update", WAIT).await;
        open.push(stream);
    }
    let (status, _, body) = proxy
        .client
        .get_json(Proto::H2Tls, "/api/v2/configurations/cfg3/stream", &alice)
        .await;
    assert_eq!(status, 429);
    assert_eq!(body["max_streams_per_user"], 2);
    assert_eq!(body["error"], "too_many_user_streams");
    let bob = proxy
        .client
        .stream(
            Proto::H2Tls,
            "/api/v2/configurations/bobs/stream",
            &[("authorization", "Bearer tok-bob")],
        )
        .await;
    assert_eq!(bob.status, 200, "other users are not affected");
    drop(open.pop());
    common::eventually("alice's slot to be freed", WAIT, || {
        proxy.proxy.open_streams() == 2
    })
    .await;
    let again = proxy
        .client
        .stream(Proto::H2Tls, "/api/v2/configurations/cfg3/stream", &alice)
        .await;
    assert_eq!(again.status, 200);
    let limited = "sse_edge_limit_rejections_total{reason=\"max_streams_per_user\"}";
    assert_eq!(proxy.metric(limited).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_random_tokens_is_held_to_the_validation_rate() {
    let origin = origin().await;
    let proxy = start_proxy(
        &origin,
        Options {
            max_validations_per_s: 3,
            ..Options::default()
        },
    )
    .await;
    let mut statuses = Vec::new();
    let started = std::time::Instant::now();
    for n in 0..20 {
        let token = format!("Bearer random-{n}");
        let (status, _, _) = proxy
            .client
            .get_json(
                Proto::H1Plain,
                "/api/v2/configurations/cfg1/stream",
                &[("authorization", &token)],
            )
            .await;
        statuses.push(status.as_u16());
    }
    let calls = origin.count("/api/v2/auth/validate");
    let allowed = 3 + (3.0 * started.elapsed().as_secs_f64()).ceil() as usize;
    assert!(calls >= 3, "the first ones are checked: {calls}");
    assert!(
        calls <= allowed.min(19),
        "{calls} validator calls; the burst and refill allow {allowed}"
    );
    assert!(
        statuses.iter().all(|&s| s == 401 || s == 503),
        "{statuses:?}"
    );
    assert!(statuses.contains(&503));
    let limited = "sse_edge_limit_rejections_total{reason=\"validation_rate\"}";
    assert!(proxy.metric(limited).await >= 10.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_connection_cap_newcomers_get_503_and_admin_stays_up() {
    let origin = origin().await;
    let proxy = start_proxy(
        &origin,
        Options {
            max_connections: 2,
            ..Options::default()
        },
    )
    .await;
    let mut held = proxy.client.hold_streams("/api/v2/stream", 2).await;
    let mut newcomer = TcpStream::connect(proxy.proxy.http_addr().expect("http"))
        .await
        .expect("connect");
    let answer = String::from_utf8_lossy(&read_until_closed(&mut newcomer).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains("\"error\":\"too_many_connections\""),
        "{answer}"
    );
    let over = "sse_edge_limit_rejections_total{reason=\"max_connections\"}";
    assert!(
        proxy.metric(over).await >= 1.0,
        "admin answers over the cap"
    );
    held.pop();
    // The connection's slot frees when its task ends, just after the stream's.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        // Raw HTTP: over the cap the 503 may come before the request is even sent.
        let mut conn = TcpStream::connect(proxy.proxy.http_addr().expect("http"))
            .await
            .expect("connect");
        let request = b"GET /api/v2/stream/status HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
        let _ = conn.write_all(request).await;
        let answer = String::from_utf8_lossy(&read_until_closed(&mut conn).await).into_owned();
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "never served again under the cap"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_gives_its_slot_back() {
    let origin = origin().await;
    let proxy = start_proxy(
        &origin,
        Options {
            max_connections: 1,
            ..Options::default()
        },
    )
    .await;
    let http = proxy.proxy.http_addr().expect("http");
    // One h2c request, then the connection stays open and quiet (the client still answers
    // PINGs), holding the only slot.
    let tcp = TcpStream::connect(http).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2c");
    tokio::spawn(connection);
    let request = http::Request::get(format!("http://{http}/api/v2/stream/status"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    assert_eq!(response.status(), 200);
    drop(response);
    // Once it has been idle past the limit (2 s here), a newcomer is served again.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut conn = TcpStream::connect(http).await.expect("connect");
        let _ = conn
            .write_all(
                b"GET /api/v2/stream/status HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            )
            .await;
        let answer = String::from_utf8_lossy(&read_until_closed(&mut conn).await).into_owned();
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the idle HTTP/2 connection kept the slot: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(sender);
}
