//! The real binary as a child process: started on a config file, its listeners read from its
//! JSON log, stopped (killed) when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::WAIT;

/// The binary, its addresses and everything it logged.
pub struct Running {
    /// The process.
    pub child: Child,
    /// Its HTTPS listener.
    pub https: SocketAddr,
    /// Its plaintext listener.
    pub http: SocketAddr,
    /// Its admin listener, when configured.
    pub admin: Option<SocketAddr>,
    /// Every line it wrote to stderr.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Running {
    /// Starts the binary on `config` and waits until it listens.
    pub fn start(config: &Path, rust_log: &str) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sse-edge"))
            .args([
                "--config",
                &config.display().to_string(),
                "--log-format",
                "json",
            ])
            .env("RUST_LOG", rust_log)
            .env("TEST_DASHBOARD_KEY", "dashboard-key")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sse-edge");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().expect("log").push(line);
            }
        });
        // Owned by `Running` from here on, so `Drop` reaps it even if startup fails.
        let mut running = Running {
            child,
            https: SocketAddr::from(([0, 0, 0, 0], 0)),
            http: SocketAddr::from(([0, 0, 0, 0], 0)),
            admin: None,
            log,
        };
        let deadline = Instant::now() + WAIT;
        let address = |line: &str, field: &str| -> Option<SocketAddr> {
            let value: serde_json::Value = serde_json::from_str(line).ok()?;
            let text = value["fields"][field].as_str()?;
            text.parse().ok()
        };
        loop {
            let found = running
                .log
                .lock()
                .expect("log")
                .iter()
                .find(|l| l.contains("sse-edge listening"))
                .and_then(|l| Some((address(l, "https")?, address(l, "http")?)));
            if let Some((https, http)) = found {
                running.https = https;
                running.http = http;
                running.admin = running
                    .log
                    .lock()
                    .expect("log")
                    .iter()
                    .find(|l| l.contains("sse-edge listening"))
                    .and_then(|l| address(l, "admin"));
                return running;
            }
            assert!(
                Instant::now() < deadline,
                "sse-edge did not start: {:?}",
                running.log.lock().expect("log")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends the process a signal (`TERM`, `HUP`, `KILL`).
    pub fn signal(&self, name: &str) {
        signal(&self.child, name);
    }

    /// Whether a logged line contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.log
            .lock()
            .expect("log")
            .iter()
            .any(|l| l.contains(needle))
    }

    /// Waits (bounded) until a logged line contains `needle`.
    pub async fn wait_logged(&self, needle: &str) {
        super::eventually(needle, WAIT, || self.logged(needle)).await;
    }

    /// Waits (bounded) for the process to exit; returns its exit code.
    pub async fn exit_code(&mut self) -> Option<i32> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(Instant::now() < deadline, "sse-edge did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `child` the signal `name` (`TERM`, `KILL`, `STOP`, ...).
pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}
