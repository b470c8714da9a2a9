//! `sse-edge load --processes N`: one load spread over several processes.
//!
//! A process may hold at most about 19,000 connections here (20,000 open files). Past that,
//! the load generator starts copies of itself (`load --worker`), each with its share of the
//! streams and connections and its own range of source addresses, all at once, and merges
//! their reports: counts and rates add up, and the spreads are recomputed from every
//! process's raw samples (percentiles cannot be averaged).

use std::process::Stdio;

use super::{LoadOptions, LoadReport, Samples, Spread};

/// Most processes one run may start.
pub const MAX_PROCESSES: usize = 64;

/// Runs `options` over `processes` worker processes and merges their reports.
pub async fn run(options: &LoadOptions, processes: usize) -> Result<LoadReport, String> {
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find this program to start workers: {e}"))?;
    let processes = processes.clamp(1, MAX_PROCESSES);
    let mut workers = tokio::task::JoinSet::new();
    let mut first_connection = 0;
    for p in 0..processes {
        let streams = share(options.streams, processes, p);
        if streams == 0 {
            continue;
        }
        let connections = if options.http2 {
            share(options.connections, processes, p).max(1)
        } else {
            streams
        };
        let mut command = tokio::process::Command::new(&exe);
        command
            .arg("load")
            .arg(&options.url)
            .args(["--streams", &streams.to_string()])
            .args(["--connections", &connections.to_string()])
            .args(["--duration", &options.duration.as_secs_f64().to_string()])
            .args(["--source-ips", &options.source_ips.to_string()])
            .args(["--first-connection", &first_connection.to_string()])
            .args(["--keys", &options.keys.to_string()])
            .arg("--worker")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if options.http2 {
            command.arg("--http2");
        }
        if let Some(rate) = options.rate {
            command.args(["--rate", &(rate / processes as f64).to_string()]);
        }
        if options.insecure {
            command.arg("--insecure");
        }
        for header in &options.headers {
            command.args(["--header", header]);
        }
        first_connection += connections;
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start a load worker: {e}"))?;
        workers.spawn(async move {
            let output = child
                .wait_with_output()
                .await
                .map_err(|e| format!("load worker {p} failed: {e}"))?;
            if !output.status.success() {
                return Err(format!("load worker {p} exited with {}", output.status));
            }
            serde_json::from_slice::<LoadReport>(&output.stdout)
                .map_err(|e| format!("load worker {p} printed no report: {e}"))
        });
    }
    let mut reports = Vec::new();
    while let Some(joined) = workers.join_next().await {
        reports.push(joined.map_err(|e| format!("load worker task failed: {e}"))??);
    }
    Ok(merge(reports))
}

/// Part `p` of `total` split `parts` ways: an even share, the first ones taking the remainder.
pub fn share(total: usize, parts: usize, p: usize) -> usize {
    total / parts + usize::from(p < total % parts)
}

/// One report for several processes' runs of the same load at the same time.
pub fn merge(reports: Vec<LoadReport>) -> LoadReport {
    let mut samples = Samples::default();
    let mut merged = LoadReport {
        streams: 0,
        opened: 0,
        failed: 0,
        first_failure: None,
        open_seconds: 0.0,
        opened_per_second: 0.0,
        headers: Spread::default(),
        first_frame: Spread::default(),
        events: 0,
        events_per_second: 0.0,
        bytes: 0,
        ended_early: 0,
        latency: Spread::default(),
        samples: None,
    };
    for report in reports {
        merged.streams += report.streams;
        merged.opened += report.opened;
        merged.failed += report.failed;
        merged.first_failure = merged.first_failure.or(report.first_failure);
        merged.open_seconds = merged.open_seconds.max(report.open_seconds);
        merged.events += report.events;
        merged.events_per_second += report.events_per_second;
        merged.bytes += report.bytes;
        merged.ended_early += report.ended_early;
        if let Some(mut more) = report.samples {
            samples.headers.append(&mut more.headers);
            samples.first_frame.append(&mut more.first_frame);
            samples.latency.append(&mut more.latency);
        }
    }
    merged.opened_per_second = merged.opened as f64 / merged.open_seconds.max(1e-9);
    merged.headers = Spread::of(samples.headers);
    merged.first_frame = Spread::of(samples.first_frame);
    merged.latency = Spread::of(samples.latency);
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(opened: usize, open_seconds: f64, first_frame: Vec<f64>) -> LoadReport {
        LoadReport {
            streams: opened,
            opened,
            failed: 0,
            first_failure: None,
            open_seconds,
            opened_per_second: opened as f64 / open_seconds,
            headers: Spread::default(),
            first_frame: Spread::of(first_frame.clone()),
            events: 10,
            events_per_second: 5.0,
            bytes: 100,
            ended_early: 0,
            latency: Spread::default(),
            samples: Some(Samples {
                first_frame,
                ..Samples::default()
            }),
        }
    }

    #[test]
    fn shares_cover_the_total() {
        for (total, parts) in [(10, 3), (19_000, 2), (1, 4), (0, 2)] {
            let shares: Vec<usize> = (0..parts).map(|p| share(total, parts, p)).collect();
            assert_eq!(shares.iter().sum::<usize>(), total);
            assert!(shares.iter().max().unwrap_or(&0) - shares.iter().min().unwrap_or(&0) <= 1);
        }
    }

    #[test]
    fn merged_reports_add_counts_and_recompute_spreads() {
        let merged = merge(vec![
            report(100, 2.0, (1..=50).map(f64::from).collect()),
            report(100, 4.0, (51..=100).map(f64::from).collect()),
        ]);
        assert_eq!(
            (merged.streams, merged.opened, merged.events),
            (200, 200, 20)
        );
        assert_eq!(merged.opened_per_second, 50.0, "by the slowest process");
        assert_eq!(merged.events_per_second, 10.0);
        assert_eq!(merged.first_frame.count, 100);
        assert_eq!(merged.first_frame.p50_ms, 51.0);
        assert_eq!(merged.first_frame.max_ms, 100.0);
    }
}
