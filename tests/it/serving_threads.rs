//! `[listen] serving_threads` (default one per core): each thread accepts from its own
//! `SO_REUSEPORT` listeners and serves its connections on a single-threaded runtime of its own.
//! Every feature keeps working across threads: passthrough on every protocol, one poller per
//! stream key, one connection cap, and the shutdown that ends streams and drains; and with
//! `serving_threads = 0`, on the shared runtime.

use crate::common;
use common::client::{Proto, ReadError};
use common::origin::FakeOrigin;
use common::{Options, WAIT, start_proxy, try_start_proxy};
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

const PROTOS: [Proto; 4] = [Proto::H1Plain, Proto::H2Plain, Proto::H1Tls, Proto::H2Tls];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_passthrough_and_shutdown_work_across_serving_threads() {
    serve_every_protocol_then_shut_down("serving_threads = 2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_passthrough_and_shutdown_work_on_the_shared_runtime() {
    serve_every_protocol_then_shut_down("serving_threads = 0").await;
}

/// Passthrough and 16 streams of one key on every protocol, an event to all of them, then a
/// shutdown that ends every stream cleanly and closes the listeners.
async fn serve_every_protocol_then_shut_down(runtime: &'static str) {
    let origin = FakeOrigin::start().await;
    let proxy = start_proxy(
        &origin,
        Options {
            listen_extra: runtime,
            ..Options::default()
        },
    )
    .await;
    // Each request is a connection of its own: the kernel spreads them over serving threads.
    for _ in 0..4 {
        for proto in PROTOS {
            let (status, _, echo) = proxy.client.get_json(proto, "/echo/threads", &[]).await;
            assert_eq!(status, 200, "{proto:?}");
            assert_eq!(echo["path"], "/echo/threads", "{proto:?}");
        }
    }
    let mut streams = Vec::new();
    for _ in 0..4 {
        for proto in PROTOS {
            let mut stream = proxy.client.stream(proto, "/api/v2/stream", &[]).await;
            assert_eq!(stream.status, 200, "{proto:?}");
            assert_eq!(stream.next(WAIT).await.event, "metrics");
            streams.push(stream);
        }
    }
    assert_eq!(proxy.proxy.open_streams(), 16);
    assert_eq!(
        proxy.proxy.pollers(),
        1,
        "one poller for one key, whichever thread"
    );
    origin.set_metrics(json!({"requests": 7}));
    for stream in &mut streams {
        assert_eq!(stream.next(WAIT).await.json(), json!({"requests": 7}));
    }

    let http = proxy.proxy.http_addr().expect("http");
    let shutdown = tokio::spawn(proxy.proxy.shutdown());
    for stream in &mut streams {
        let ended = loop {
            match stream.try_next(WAIT).await {
                Ok(_) => continue,
                Err(error) => break error,
            }
        };
        assert_eq!(ended, ReadError::Ended, "streams end cleanly on shutdown");
    }
    tokio::time::timeout(WAIT, shutdown)
        .await
        .expect("every thread drained in time")
        .expect("shutdown task");
    assert!(
        TcpStream::connect(http).await.is_err(),
        "no thread listens after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_is_shared_by_the_serving_threads() {
    let origin = FakeOrigin::start().await;
    let proxy = start_proxy(
        &origin,
        Options {
            max_connections: 2,
            listen_extra: "serving_threads = 2",
            ..Options::default()
        },
    )
    .await;
    let held = proxy.client.hold_streams("/api/v2/stream", 2).await;
    // Whichever thread the kernel gives them to, newcomers are over the one cap.
    for _ in 0..4 {
        let mut newcomer = TcpStream::connect(proxy.proxy.http_addr().expect("http"))
            .await
            .expect("connect");
        let mut answer = Vec::new();
        tokio::time::timeout(WAIT, newcomer.read_to_end(&mut answer))
            .await
            .expect("answered and closed in time")
            .expect("read");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    }
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_http2_origin_gets_one_shared_connection_per_serving_thread() {
    let pair = sse_edge::tools::demo::certs::localhost().expect("origin certificate");
    let origin = FakeOrigin::start_tls(&pair.cert_pem, &pair.key_pem).await;
    let proxy = start_proxy(
        &origin,
        Options {
            upstream_ca: Some(pair.cert_pem.clone()),
            listen_extra: "serving_threads = 2",
            ..Options::default()
        },
    )
    .await;
    for _ in 0..4 {
        for proto in PROTOS {
            let (status, _, body) = proxy
                .client
                .get_json(proto, "/api/v2/stream/status", &[])
                .await;
            assert_eq!(status, 200, "{proto:?}");
            assert_eq!(body["max_connections"], 10);
        }
    }
    let mut stream = proxy
        .client
        .stream(Proto::H2Tls, "/api/v2/stream", &[])
        .await;
    assert_eq!(stream.next(WAIT).await.json(), json!({"requests": 1}));
    // Requests use their serving thread's connection; the stream's pollers run on the shared
    // runtime and use its own.
    assert!(
        (1..=3).contains(&origin.connections()),
        "one HTTP/2 origin connection (ALPN h2) per serving thread, one for the pollers: {}",
        origin.connections()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_on_the_same_port_fails_instead_of_sharing_it() {
    let origin = FakeOrigin::start().await;
    let options = || Options {
        listen_extra: "serving_threads = 2",
        ..Options::default()
    };
    let first = start_proxy(&origin, options()).await;
    let taken = first.proxy.http_addr().expect("http");
    let second = try_start_proxy(&origin, options(), |text| {
        text.replacen("http = \"127.0.0.1:0\"", &format!("http = \"{taken}\""), 1)
    })
    .await;
    let error = second.err().expect("the port is taken").to_string();
    assert!(
        error.contains(&format!("cannot listen on {taken}")),
        "{error}"
    );
}
