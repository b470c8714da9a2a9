//! The real binary: startup errors are clear, name what is wrong, and exit non-zero.

use std::process::Command;

fn sse_edge(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_sse-edge"))
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .expect("run sse-edge");
    let code = output.status.code().expect("exit code, not a signal");
    (code, String::from_utf8_lossy(&output.stderr).into_owned())
}

fn write_config(dir: &std::path::Path, text: &str) -> String {
    let path = dir.join("proxy.toml");
    std::fs::write(&path, text).expect("write config");
    path.display().to_string()
}

const VALID: &str = r#"
[listen]
http = "127.0.0.1:0"

[upstream]
url = "http://127.0.0.1:9"

[[stream]]
path = "/api/v2/stream"
  [[stream.source]]
  poll = "/api/v2/metrics"
  event = "metrics"
"#;

#[test]
fn a_bad_value_names_the_file_line_and_key() {
    let dir = tempfile::tempdir().expect("dir");
    let config = write_config(
        dir.path(),
        &VALID.replace(
            "event = \"metrics\"",
            "event = \"metrics\"\n  every_ms = \"fast\"",
        ),
    );
    let (code, stderr) = sse_edge(&["--config", &config]);
    assert_eq!(code, 1);
    assert!(stderr.contains("proxy.toml:13:"), "{stderr}");
    assert!(stderr.contains("stream[0].source[0].every_ms"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn an_unknown_key_is_an_error() {
    let dir = tempfile::tempdir().expect("dir");
    let config = write_config(
        dir.path(),
        &VALID.replace("[upstream]", "[upstream]\ntimeout = 5"),
    );
    let (code, stderr) = sse_edge(&["--config", &config]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("proxy.toml:6:") && stderr.contains("timeout"),
        "{stderr}"
    );
}

#[test]
fn a_missing_environment_variable_is_named() {
    let dir = tempfile::tempdir().expect("dir");
    let config = write_config(
        dir.path(),
        &VALID.replace("http://127.0.0.1:9", "${SSE_EDGE_TEST_UNSET_ORIGIN}"),
    );
    let (code, stderr) = sse_edge(&["--config", &config]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("SSE_EDGE_TEST_UNSET_ORIGIN") && stderr.contains("upstream.url"),
        "{stderr}"
    );
}

#[test]
fn a_missing_certificate_names_the_path() {
    let dir = tempfile::tempdir().expect("dir");
    let text = VALID.replace(
        "http = \"127.0.0.1:0\"",
        "https = \"127.0.0.1:0\"\n\n[tls]\ncert = \"nowhere/cert.pem\"\nkey = \"nowhere/key.pem\"",
    );
    let config = write_config(dir.path(), &text);
    let (code, stderr) = sse_edge(&["--config", &config]);
    assert_eq!(code, 1);
    assert!(stderr.contains("nowhere/cert.pem"), "{stderr}");
    assert!(stderr.contains("[tls] cert"), "names the key: {stderr}");
    assert!(
        stderr.contains("sse-edge demo") && stderr.contains("openssl req"),
        "says how to make one: {stderr}"
    );
}

#[test]
fn a_taken_port_names_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let dir = tempfile::tempdir().expect("dir");
    let config = write_config(dir.path(), &VALID.replace("127.0.0.1:0", &addr));
    let (code, stderr) = sse_edge(&["--config", &config]);
    assert_eq!(code, 1);
    assert!(stderr.contains(&addr), "{stderr}");
}

#[test]
fn a_missing_config_file_is_named() {
    let (code, stderr) = sse_edge(&["--config", "/nonexistent/proxy.toml"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("/nonexistent/proxy.toml"), "{stderr}");
    assert!(
        stderr.contains("--config"),
        "says how to give one: {stderr}"
    );
}

/// Runs the proxy with `VALID` and `envs`, returns its stderr up to the "listening" line.
fn startup_log(envs: &[(&str, &str)]) -> String {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("dir");
    let config = write_config(dir.path(), VALID);
    let mut child = Command::new(env!("CARGO_BIN_EXE_sse-edge"))
        .args(["--config", &config])
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .envs(envs.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start sse-edge");
    let stderr = child.stderr.take().expect("stderr");
    let mut log = String::new();
    // Bounded by the process: it is killed below whatever happens, ending the stream.
    for line in BufReader::new(stderr)
        .lines()
        .take(50)
        .map_while(Result::ok)
    {
        log.push_str(&line);
        log.push('\n');
        if line.contains("sse-edge listening") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    log
}

#[test]
fn logs_to_a_pipe_have_no_colour_codes_and_plain_addresses() {
    let log = startup_log(&[]);
    assert!(log.contains("sse-edge listening"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escape codes in a piped log: {log:?}"
    );
    assert!(!log.contains("Some("), "{log}");
    assert!(log.contains("https=off"), "{log}");
    // The serving threads chosen when the key is absent (one per core) are shown.
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    assert!(log.contains(&format!("serving_threads={cores}")), "{log}");
    let log = startup_log(&[("NO_COLOR", "1")]);
    assert!(!log.contains('\u{1b}'), "{log:?}");
}

#[test]
fn each_subcommand_shows_only_its_own_flags() {
    let help = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_sse-edge"))
            .args(args)
            .output()
            .expect("run sse-edge");
        assert!(output.status.success(), "{args:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let probe = help(&["probe", "--help"]);
    assert!(probe.contains("--idle-threshold"), "{probe}");
    assert!(
        !probe.contains("--config") && !probe.contains("--log-format"),
        "{probe}"
    );
    let load = help(&["load", "--help"]);
    assert!(
        !load.contains("--config") && !load.contains("--log-format"),
        "{load}"
    );
    let check = help(&["check", "--help"]);
    assert!(
        check.contains("--config") && !check.contains("--log-format"),
        "{check}"
    );
    let demo = help(&["demo", "--help"]);
    assert!(
        demo.contains("--config") && demo.contains("--tick-ms"),
        "{demo}"
    );
    let top = help(&["--help"]);
    assert!(top.contains("--config") && top.contains("check"), "{top}");
}

#[test]
fn check_takes_its_config_before_or_after_the_subcommand() {
    let dir = tempfile::tempdir().expect("dir");
    let config = write_config(dir.path(), VALID);
    for args in [
        ["check", "--config", &config],
        ["--config", &config, "check"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_sse-edge"))
            .args(args)
            .output()
            .expect("run sse-edge");
        assert_eq!(output.status.code(), Some(0), "{args:?}: {output:?}");
    }
}

#[test]
fn check_prints_every_problem_in_the_file() {
    let dir = tempfile::tempdir().expect("dir");
    let text = VALID
        .replace("http = \"127.0.0.1:0\"", "http = \"nowhere\"")
        .replace("url = \"http://127.0.0.1:9\"", "url = \"ftp://origin\"")
        .replace("event = \"metrics\"", "event = \"metrics\"\n  every_ms = 0");
    let config = write_config(dir.path(), &text);
    let output = Command::new(env!("CARGO_BIN_EXE_sse-edge"))
        .args(["check", "--config", &config])
        .output()
        .expect("run sse-edge");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    for key in [
        "listen.http",
        "upstream.url",
        "stream[0].source[0].every_ms",
    ] {
        assert!(
            stderr.contains(&format!("`{key}`")),
            "{key} missing in: {stderr}"
        );
    }
    assert_eq!(
        stderr.lines().filter(|l| l.contains("proxy.toml:")).count(),
        3,
        "{stderr}"
    );
}
