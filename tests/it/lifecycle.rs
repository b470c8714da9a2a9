//! The real binary's life: graceful shutdown on SIGTERM with open streams, certificate
//! rotation on SIGHUP, `sse-edge check`, and logs that never carry a token.

use crate::common;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::client::{Client, Proto, ReadError};
use common::origin::FakeOrigin;
use common::process::Running;
use common::{Options, WAIT, config_text};
use serde_json::json;
use sse_edge::tools::demo::certs;

fn write_config(dir: &Path, origin: &FakeOrigin, cert: &certs::SelfSigned) -> std::path::PathBuf {
    std::fs::write(dir.join("cert.pem"), &cert.cert_pem).expect("cert");
    std::fs::write(dir.join("key.pem"), &cert.key_pem).expect("key");
    let options = Options {
        max_streams: 200,
        max_streams_per_user: 200,
        ..Options::default()
    };
    let path = dir.join("proxy.toml");
    std::fs::write(&path, config_text(&origin.url, dir, &options)).expect("config");
    path
}

async fn origin() -> FakeOrigin {
    let origin = FakeOrigin::start().await;
    origin.add_token("tok-secret-alice-7f3a", "alice");
    origin.set_configuration("cfg1", "alice", json!([{"symbol": "AAPL"}]));
    origin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_every_stream_cleanly_and_exits_zero() {
    let origin = origin().await;
    let dir = tempfile::tempdir().expect("dir");
    let cert = certs::localhost().expect("cert");
    let mut proxy = Running::start(&write_config(dir.path(), &origin, &cert), "info");
    let client = Client::new(Some(proxy.https), Some(proxy.http), &cert.cert_pem);
    let mut streams = Vec::new();
    for n in 0..100 {
        let proto = if n % 2 == 0 {
            Proto::H1Plain
        } else {
            Proto::H2Tls
        };
        let mut stream = client.stream(proto, "/api/v2/stream", &[]).await;
        assert_eq!(stream.status, 200);
        stream.next(WAIT).await;
        streams.push(stream);
    }
    // A passthrough request in flight when the signal comes.
    let slow_origin = origin.hold("/api/v2/stream/status");
    let in_flight = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .get_json(Proto::H1Plain, "/api/v2/stream/status", &[])
                .await
                .0
        })
    };
    origin
        .wait_for_count("/api/v2/stream/status", 1, WAIT)
        .await;
    proxy.signal("TERM");
    for stream in &mut streams {
        match stream.try_next(WAIT).await {
            Err(ReadError::Ended) => {}
            other => panic!("expected a clean end, got {other:?}"),
        }
        assert!(
            stream.comments.iter().any(|c| c.contains("shutting down")),
            "the last frame tells the client to reconnect"
        );
    }
    slow_origin.release();
    assert_eq!(
        in_flight.await.expect("request task"),
        200,
        "in-flight passthrough finishes within the grace period"
    );
    assert_eq!(proxy.exit_code().await, Some(0));
}

/// The certificate a fresh TLS handshake is given (blocking; run it off the runtime).
async fn presented(addr: SocketAddr, trusted: Vec<String>) -> Vec<u8> {
    tokio::task::spawn_blocking(move || presented_certificate(addr, &trusted))
        .await
        .expect("handshake task")
}

fn presented_certificate(addr: SocketAddr, trusted: &[String]) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for pem in trusted {
        let cert = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).expect("pem");
        roots.add(cert).expect("root");
    }
    let config = rustls::ClientConfig::builder_with_provider(sse_edge::origin::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let mut connection = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut tcp = std::net::TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(WAIT)).expect("timeout");
    connection.complete_io(&mut tcp).expect("handshake");
    connection.peer_certificates().expect("certificates")[0].to_vec()
}

fn der(pem: &str) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("pem")
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rotates_the_certificate_without_dropping_connections() {
    let origin = origin().await;
    let dir = tempfile::tempdir().expect("dir");
    let first = certs::localhost().expect("cert");
    let second = certs::localhost().expect("cert");
    let proxy = Running::start(&write_config(dir.path(), &origin, &first), "info");
    let both = vec![first.cert_pem.clone(), second.cert_pem.clone()];
    assert_eq!(
        presented(proxy.https, both.clone()).await,
        der(&first.cert_pem)
    );

    let client = Client::new(
        Some(proxy.https),
        Some(proxy.http),
        &format!("{}{}", first.cert_pem, second.cert_pem),
    );
    let mut open = client.stream(Proto::H2Tls, "/api/v2/stream", &[]).await;
    open.next(WAIT).await;

    std::fs::write(dir.path().join("cert.pem"), &second.cert_pem).expect("cert");
    std::fs::write(dir.path().join("key.pem"), &second.key_pem).expect("key");
    proxy.signal("HUP");
    proxy.wait_logged("TLS certificate and key reloaded").await;
    assert_eq!(
        presented(proxy.https, both.clone()).await,
        der(&second.cert_pem)
    );
    origin.set_metrics(json!({"requests": 2}));
    assert_eq!(
        open.next(WAIT).await.json(),
        json!({"requests": 2}),
        "the old connection lives on"
    );

    // A broken replacement is refused and the current certificate stays.
    std::fs::write(dir.path().join("key.pem"), &first.key_pem).expect("mismatched key");
    proxy.signal("HUP");
    proxy.wait_logged("TLS reload failed").await;
    assert_eq!(presented(proxy.https, both).await, der(&second.cert_pem));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_reach_the_log() {
    let origin = origin().await;
    let dir = tempfile::tempdir().expect("dir");
    let cert = certs::localhost().expect("cert");
    let proxy = Running::start(&write_config(dir.path(), &origin, &cert), "debug");
    let client = Client::new(Some(proxy.https), Some(proxy.http), &cert.cert_pem);
    let secret = "tok-secret-alice-7f3a";
    let path = "/api/v2/configurations/cfg1/stream";
    let mut by_header = client
        .stream(
            Proto::H2Tls,
            path,
            &[("authorization", &format!("Bearer {secret}"))],
        )
        .await;
    by_header.next(WAIT).await;
    let mut by_query = client
        .stream(Proto::H1Plain, &format!("{path}?user_token={secret}"), &[])
        .await;
    by_query.next(WAIT).await;
    let (status, _, _) = client
        .get_json(
            Proto::H1Tls,
            &format!("/echo?user_token={secret}"),
            &[("cookie", &format!("session={secret}"))],
        )
        .await;
    assert_eq!(status, 200);
    let (status, _, _) = client
        .get_json(
            Proto::H1Tls,
            path,
            &[("authorization", "Bearer wrong-token-9c1d")],
        )
        .await;
    assert_eq!(status, 401);
    drop((by_header, by_query));
    proxy.wait_logged("stream closed").await;
    let log = proxy.log.lock().expect("log").join("\n");
    assert!(
        log.contains("/api/v2/configurations/cfg1/stream"),
        "requests are logged"
    );
    assert!(!log.contains(secret), "a token reached the log");
    assert!(
        !log.contains("wrong-token-9c1d"),
        "a rejected token reached the log"
    );
}

#[test]
fn check_reports_a_good_config_and_a_mismatched_key() {
    let dir = tempfile::tempdir().expect("dir");
    let cert = certs::localhost().expect("cert");
    let other = certs::localhost().expect("cert");
    std::fs::write(dir.path().join("cert.pem"), &cert.cert_pem).expect("cert");
    std::fs::write(dir.path().join("key.pem"), &cert.key_pem).expect("key");
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        config_text("http://127.0.0.1:9", dir.path(), &Options::default()),
    )
    .expect("config");
    let check = || {
        Command::new(env!("CARGO_BIN_EXE_sse-edge"))
            .args(["check", "--config", &config.display().to_string()])
            .env("TEST_DASHBOARD_KEY", "k")
            .output()
            .expect("run check")
    };
    let good = check();
    assert_eq!(
        good.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert!(String::from_utf8_lossy(&good.stdout).contains("ok"));

    std::fs::write(dir.path().join("key.pem"), &other.key_pem).expect("key");
    let bad = check();
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("[tls]"), "{stderr}");
}

/// The `access` lines logged so far, as JSON.
fn access_lines(proxy: &Running) -> Vec<serde_json::Value> {
    proxy
        .log
        .lock()
        .expect("log")
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["target"] == "access" && l["fields"]["status"].is_u64())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_says_who_asked_what_and_how_much_was_sent() {
    let origin = origin().await;
    let dir = tempfile::tempdir().expect("dir");
    let cert = certs::localhost().expect("cert");
    let proxy = Running::start(&write_config(dir.path(), &origin, &cert), "info");
    let client = Client::new(Some(proxy.https), Some(proxy.http), &cert.cert_pem);
    let response = client
        .get(
            Proto::H1Plain,
            "/echo/logged?user_token=tok-secret-alice-7f3a",
            &[
                ("user-agent", "access-test/1.0"),
                ("x-request-id", "req-access-1"),
            ],
        )
        .await;
    assert_eq!(response.headers()["x-request-id"], "req-access-1");
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .expect("body")
        .to_bytes();
    let mut stream = client
        .stream(
            Proto::H2Tls,
            "/api/v2/stream",
            &[("user-agent", "stream-test/2")],
        )
        .await;
    stream.next(WAIT).await;
    drop(stream);
    common::eventually("two access lines", WAIT, || access_lines(&proxy).len() >= 2).await;
    let lines = access_lines(&proxy);
    let echo = lines
        .iter()
        .map(|l| &l["fields"])
        .find(|f| f["path"] == "/echo/logged")
        .expect("the passthrough's line");
    assert_eq!(echo["request_id"], "req-access-1");
    assert_eq!(echo["user_agent"], "access-test/1.0");
    assert_eq!(echo["status"], 200);
    assert_eq!(echo["route"], "passthrough");
    assert_eq!(echo["bytes"], body.len() as u64);
    assert!(
        echo["duration_ms"].is_u64() && echo["head_ms"].is_u64(),
        "{echo}"
    );
    let client_addr: SocketAddr = echo["client"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .expect("the client's address, as an address");
    assert!(client_addr.ip().is_loopback());
    let streamed = lines
        .iter()
        .map(|l| &l["fields"])
        .find(|f| f["path"] == "/api/v2/stream")
        .expect("the stream's line, once it ended");
    assert_eq!(streamed["user_agent"], "stream-test/2");
    assert_eq!(streamed["route"], "stream");
    assert!(
        streamed["bytes"].as_u64().is_some_and(|b| b > 0),
        "{streamed}"
    );
    assert_eq!(streamed["request_id"].as_str().map(str::len), Some(32));
    let log = proxy.log.lock().expect("log").join("\n");
    assert!(
        !log.contains("tok-secret-alice-7f3a"),
        "a token reached the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_off_by_the_grace_period_are_reported_once() {
    // Two serving threads (each drains its own connections), then the shared runtime.
    for (threads, accept_loops) in [("serving_threads = 2", 2), ("serving_threads = 0", 1)] {
        cut_off_connections_are_reported_once(threads, accept_loops).await;
    }
}

async fn cut_off_connections_are_reported_once(threads: &'static str, accept_loops: u64) {
    let origin = origin().await;
    let dir = tempfile::tempdir().expect("dir");
    let cert = certs::localhost().expect("cert");
    std::fs::write(dir.path().join("cert.pem"), &cert.cert_pem).expect("cert");
    std::fs::write(dir.path().join("key.pem"), &cert.key_pem).expect("key");
    // An origin slower than the 2 s grace period.
    let options = Options {
        timeout_ms: 30_000,
        listen_extra: threads,
        ..Options::default()
    };
    let config = dir.path().join("proxy.toml");
    std::fs::write(&config, config_text(&origin.url, dir.path(), &options)).expect("config");
    let mut proxy = Running::start(&config, "info");
    let held = origin.hold("/api/v2/stream/status");
    // Twenty connections, each with a request in flight: the kernel spreads them over the
    // serving threads (all on one of two: a chance of one in half a million).
    let mut connections = Vec::new();
    for _ in 0..20 {
        let request = b"GET /api/v2/stream/status HTTP/1.1\r\nhost: x\r\n\r\n";
        connections.push(common::send_raw(proxy.http, request).await);
    }
    origin
        .wait_for_count("/api/v2/stream/status", 20, WAIT)
        .await;
    proxy.signal("TERM");
    assert_eq!(proxy.exit_code().await, Some(0), "{threads}");
    held.release();
    // Once the last line is read, every line before it has been.
    proxy.wait_logged("sse-edge stopped").await;
    let log = proxy.log.lock().expect("log").clone();
    assert!(
        log.last()
            .is_some_and(|line| line.contains("sse-edge stopped")),
        "{threads}: the last line says the proxy stopped: {log:?}"
    );
    let cut: Vec<serde_json::Value> = log
        .iter()
        .filter(|line| line.contains("still open after the shutdown grace period"))
        .map(|line| serde_json::from_str(line).expect("a JSON log line"))
        .collect();
    assert_eq!(cut.len(), 1, "{threads}: one line for the proxy: {cut:?}");
    assert_eq!(cut[0]["fields"]["accept_loops"], accept_loops, "{cut:?}");
    assert_eq!(cut[0]["fields"]["grace_s"], 2, "{cut:?}");
    // Each cut request's access line says it got no answer.
    let unanswered = access_lines(&proxy)
        .into_iter()
        .filter(|l| l["fields"]["route"] == "unanswered" && l["fields"]["status"] == 0)
        .count();
    assert_eq!(unanswered, 20, "{threads}: {log:?}");
}
