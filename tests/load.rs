//! A short smoke run of the load generator against the real proxy, so it cannot rot.

mod common;

use std::time::Duration;

use common::origin::FakeOrigin;
use common::{Options, start_proxy};
use serde_json::json;
use sse_edge::load::{LoadOptions, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_opens_streams_and_counts_events() {
    let origin = FakeOrigin::start().await;
    origin.set_metrics(json!({"requests": 1, "ts_us": 1}));
    let proxy = start_proxy(&origin, Options::default()).await;
    let https = proxy.proxy.https_addr().expect("https");
    let http = proxy.proxy.http_addr().expect("http");
    for (url, http2, connections) in [
        (
            format!("https://localhost:{}/api/v2/stream", https.port()),
            true,
            3,
        ),
        (format!("http://{http}/api/v2/stream"), false, 1),
    ] {
        let options = LoadOptions {
            url,
            streams: 20,
            connections,
            http2,
            insecure: true,
            duration: Duration::from_millis(300),
            headers: Vec::new(),
        };
        let report = run(&options).await.expect("load run");
        assert_eq!(
            (report.opened, report.failed),
            (20, 0),
            "{}",
            report.to_text(&options)
        );
        assert_eq!(report.first_frame.count, 20);
        assert!(
            report.events >= 20,
            "every stream got the state: {}",
            report.events
        );
        assert_eq!(report.latency.count as u64, report.events, "ts_us was read");
        assert_eq!(report.ended_early, 0);
    }
    assert!(
        run(&LoadOptions {
            url: "ftp://x".into(),
            streams: 1,
            connections: 1,
            http2: false,
            insecure: false,
            duration: Duration::ZERO,
            headers: Vec::new(),
        })
        .await
        .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_command_prints_json() {
    let origin = FakeOrigin::start().await;
    let proxy = start_proxy(&origin, Options::default()).await;
    let url = format!(
        "http://{}/api/v2/stream",
        proxy.proxy.http_addr().expect("http")
    );
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_sse-edge"))
            .args([
                "load",
                &url,
                "--streams",
                "5",
                "--duration",
                "0.2",
                "--json",
            ])
            .output()
            .expect("run load")
    })
    .await
    .expect("join");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(report["opened"], 5);
}
