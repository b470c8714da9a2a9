//! A short smoke run of the load generator against the real proxy, so it cannot rot.

use crate::common;
use std::time::Duration;

use common::origin::FakeOrigin;
use common::{Options, start_proxy};
use serde_json::json;
use sse_edge::tools::load::{LoadOptions, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_opens_streams_and_counts_events() {
    let origin = FakeOrigin::start().await;
    origin.set_metrics(json!({"requests": 0, "ts_us": 1}));
    let proxy = start_proxy(&origin, Options::default()).await;
    // Live changes, stamped with their time, while the streams are held.
    let changes = {
        let origin = origin.clone();
        tokio::spawn(async move {
            for i in 1.. {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("clock")
                    .as_micros() as u64;
                origin.set_metrics(json!({"requests": i, "ts_us": now}));
            }
        })
    };
    let https = proxy.proxy.https_addr().expect("https");
    let http = proxy.proxy.http_addr().expect("http");
    for (url, http2, connections, source_ips) in [
        (
            format!("https://localhost:{}/api/v2/stream", https.port()),
            true,
            3,
            1,
        ),
        // Spread over four loopback source addresses.
        (format!("http://{http}/api/v2/stream"), false, 1, 4),
    ] {
        let options = LoadOptions {
            url,
            streams: 20,
            connections,
            http2,
            insecure: true,
            duration: Duration::from_millis(300),
            headers: Vec::new(),
            source_ips,
            first_connection: 0,
            keep_samples: false,
            rate: None,
            keys: 1,
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
        assert!(
            report.latency.count > 0 && report.latency.count as u64 <= report.events - 20,
            "ts_us was read from live events only: {} of {}",
            report.latency.count,
            report.events
        );
        assert_eq!(report.ended_early, 0);
    }
    changes.abort();
    assert!(
        run(&LoadOptions {
            url: "ftp://x".into(),
            streams: 1,
            connections: 1,
            http2: false,
            insecure: false,
            duration: Duration::ZERO,
            headers: Vec::new(),
            source_ips: 1,
            first_connection: 0,
            keep_samples: false,
            rate: None,
            keys: 1,
        })
        .await
        .is_err()
    );
}

/// The load over two processes (the way past one process's file limit) from three source
/// addresses: the parent merges the workers' reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_command_spreads_over_processes_and_prints_json() {
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
                "--processes",
                "2",
                "--source-ips",
                "3",
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
    assert_eq!(report["opened"], 5, "{report}");
    assert_eq!(report["streams"], 5, "{report}");
    assert_eq!(
        report["first_frame"]["count"], 5,
        "spreads merged from every worker's samples: {report}"
    );
    assert!(report.get("samples").is_none(), "raw samples stay internal");
}

/// Paced opening (`rate`) and streams spread over keys (`{key}` in the URL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_paces_and_spreads_over_keys() {
    let origin = FakeOrigin::start().await;
    origin.add_token("tok-alice", "alice");
    for key in ["cfg0", "cfg1", "cfg2"] {
        origin.set_configuration(key, "alice", json!([{"symbol": "AAPL"}]));
    }
    let proxy = start_proxy(&origin, Options::default()).await;
    let http = proxy.proxy.http_addr().expect("http");
    let options = LoadOptions {
        url: format!("http://{http}/api/v2/configurations/cfg{{key}}/stream"),
        streams: 6,
        connections: 6,
        http2: false,
        insecure: false,
        duration: Duration::from_millis(100),
        headers: vec!["Authorization: Bearer tok-alice".to_owned()],
        source_ips: 1,
        first_connection: 0,
        keep_samples: false,
        rate: Some(100.0),
        keys: 2,
    };
    let report = run(&options).await.expect("load run");
    assert_eq!(report.opened, 6, "{}", report.to_text(&options));
    // Six connections at 100/s take at least 50 ms to start.
    assert!(report.open_seconds >= 0.05, "{}", report.open_seconds);
    for (path, polled) in [
        ("/api/v2/configurations/cfg0/sentiment", true),
        ("/api/v2/configurations/cfg1/sentiment", true),
        ("/api/v2/configurations/cfg2/sentiment", false),
    ] {
        assert_eq!(origin.count(path) > 0, polled, "{path}");
    }
}
