//! The shipped `proxy.toml` in front of the built-in demo origin: what `sse-edge demo` runs,
//! on port 0 and with a fast clock.

use crate::common;
use std::time::Duration;

use common::WAIT;
use common::client::{Client, Proto};
use http_body_util::BodyExt;
use serde_json::Value;
use sse_edge::Proxy;
use sse_edge::config::Config;
use sse_edge::tools::demo::origin::{self, OriginOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_streams_live_data_through_the_shipped_config() {
    let origin_addr = origin::spawn(
        "127.0.0.1:0".parse().expect("addr"),
        OriginOptions {
            api_key: "demo-key".into(),
            cold_start: Duration::from_millis(300),
            tick: Duration::from_millis(100),
        },
    )
    .await
    .expect("demo origin");
    let dir = tempfile::tempdir().expect("dir");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    sse_edge::tools::demo::certs::write_localhost(&cert, &key).expect("certificate");
    let text = include_str!("../../proxy.toml")
        .replace("0.0.0.0:8443", "127.0.0.1:0")
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("127.0.0.1:9901", "127.0.0.1:0")
        .replace("http://127.0.0.1:9000", &format!("http://{origin_addr}"))
        .replace("certs/localhost.pem", &cert.display().to_string())
        .replace("certs/localhost-key.pem", &key.display().to_string())
        .replace("every_ms = 5000", "every_ms = 100")
        .replace("every_ms = 10000", "every_ms = 100");
    let config = Config::from_toml(&text, "proxy.toml", dir.path(), &|name| {
        (name == "DASHBOARD_API_KEY").then(|| "demo-key".to_owned())
    })
    .expect("the shipped proxy.toml");
    let proxy = Proxy::start(config).await.expect("proxy");
    let cert_pem = std::fs::read_to_string(&cert).expect("cert");
    let client = Client::new(proxy.https_addr(), proxy.http_addr(), &cert_pem);

    let mut metrics = client.stream(Proto::H2Tls, "/api/v2/stream", &[]).await;
    assert_eq!(metrics.status, 200);
    let first = metrics.next_of("metrics", WAIT).await;
    let second = metrics.next_of("metrics", WAIT).await;
    assert_ne!(
        first.json()["sample"],
        second.json()["sample"],
        "data changes"
    );

    // Sign in anonymously and create a configuration through passthrough, then stream it.
    let signed_in = client
        .send(
            Proto::H1Tls,
            "POST",
            "/api/v2/auth/anonymous",
            &[],
            bytes::Bytes::new(),
        )
        .await;
    let body = signed_in
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let token = serde_json::from_slice::<Value>(&body).expect("json")["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let bearer = format!("Bearer {token}");
    let created = client
        .send(
            Proto::H1Tls,
            "POST",
            "/api/v2/configurations",
            &[("authorization", &bearer)],
            bytes::Bytes::from_static(br#"{"tickers":["AAPL","GOOG"]}"#),
        )
        .await;
    assert_eq!(created.status(), 201);
    let body = created
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let id = serde_json::from_slice::<Value>(&body).expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let path = format!("/api/v2/configurations/{id}/stream?user_token={token}");
    let mut sentiment = client.stream(Proto::H1Tls, &path, &[]).await;
    assert_eq!(sentiment.status, 200);
    let update = sentiment.next_of("sentiment_update", WAIT).await;
    assert!(["AAPL", "GOOG"].contains(&update.json()["symbol"].as_str().expect("symbol")));
    sentiment.next_of("refresh", WAIT).await;

    // Another user's configuration is not found for this token.
    let (status, _, _) = client
        .get_json(
            Proto::H2Tls,
            &format!(
                "/api/v2/configurations/{}/stream",
                origin::DEMO_CONFIGURATION
            ),
            &[("authorization", &bearer)],
        )
        .await;
    assert_eq!(status, 404);
}

/// The demo origin's long-poll mode, which the latency benchmark drives: `ETag`, `304` for a
/// known sample, and `Prefer: wait` held until the next sample.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_origin_long_polls() {
    let addr = origin::spawn(
        "127.0.0.1:0".parse().expect("addr"),
        OriginOptions {
            api_key: "k".into(),
            cold_start: Duration::ZERO,
            tick: Duration::from_millis(300),
        },
    )
    .await
    .expect("demo origin");
    let client = Client::new(None, Some(addr), "");
    let auth = ("authorization", "Bearer k");
    let first = client.get(Proto::H1Plain, "/api/v2/metrics", &[auth]).await;
    assert_eq!(first.status(), 200);
    let etag = first.headers()["etag"].to_str().expect("etag").to_owned();
    let sample =
        |body: &[u8]| serde_json::from_slice::<Value>(body).expect("JSON")["sample"].clone();
    let first_sample = sample(&first.into_body().collect().await.expect("body").to_bytes());

    // Held until the next sample, then the new one with a new tag. (Asked right at a tick
    // boundary, the plain request may already be unchanged-or-not; the held one must differ.)
    let held = client
        .get(
            Proto::H1Plain,
            "/api/v2/metrics",
            &[auth, ("if-none-match", &etag), ("prefer", "wait=30")],
        )
        .await;
    assert_eq!(held.status(), 200);
    assert_eq!(held.headers()["preference-applied"], "wait=30");
    let new_etag = held.headers()["etag"].to_str().expect("etag").to_owned();
    assert_ne!(new_etag, etag);
    let body = tokio::time::timeout(WAIT, held.into_body().collect())
        .await
        .expect("body")
        .expect("body")
        .to_bytes();
    assert_ne!(sample(&body), first_sample);

    // Without `Prefer: wait`, a known sample is a 304 (unless the tick just turned).
    let known = client
        .get(
            Proto::H1Plain,
            "/api/v2/metrics",
            &[auth, ("if-none-match", &new_etag)],
        )
        .await;
    assert!(
        known.status() == 304 || known.headers()["etag"] != new_etag.as_str(),
        "{:?}",
        known.headers()
    );
}

/// A demo config with only a plaintext listener at `http` and the origin on a free port.
fn demo_config(dir: &std::path::Path, http: &str) -> std::path::PathBuf {
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let origin = free.local_addr().expect("addr");
    drop(free);
    let path = dir.join("proxy.toml");
    let text = format!(
        "[listen]\nhttp = \"{http}\"\nadmin = \"0.0.0.0:0\"\n\n[upstream]\nurl = \"http://{origin}\"\n\n\
         [[stream]]\npath = \"/api/v2/stream\"\n  [[stream.source]]\n  poll = \"/api/v2/metrics\"\n  event = \"metrics\"\n"
    );
    std::fs::write(&path, text).expect("write config");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_listens_on_loopback_only() {
    let dir = tempfile::tempdir().expect("dir");
    let config = demo_config(dir.path(), "0.0.0.0:0");
    let proxy = sse_edge::tools::demo::run(&config, Default::default(), false)
        .await
        .expect("demo starts");
    let http = proxy.http_addr().expect("http");
    let admin = proxy.admin_addr().expect("admin");
    assert!(
        http.ip().is_loopback() && admin.ip().is_loopback(),
        "{http} {admin}"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_demo_port_says_a_demo_may_be_running() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let dir = tempfile::tempdir().expect("dir");
    let config = demo_config(dir.path(), &addr);
    let error = match sse_edge::tools::demo::run(&config, Default::default(), false).await {
        Ok(_) => panic!("the demo started on a taken port"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains(&addr), "{error}");
    assert!(
        error.contains("a demo") && error.contains("already be running"),
        "{error}"
    );
}
