//! HTTP rules at the edge (issue 12, items 4 and 5): every request names one valid host
//! (RFC 9112 §3.2, RFC 9113 §8.3.1) on the fast path and through hyper alike, the target's
//! authority wins over `Host`, a client cannot forge its forwarding headers unless it is a
//! trusted proxy, and the origin's `Server` banner stays private unless configured.

use crate::common;
use bytes::Bytes;
use common::client::{Proto, json_response};
use common::origin::FakeOrigin;
use common::{Options, TestProxy, WAIT, start_proxy};
use http::HeaderMap;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `request` as written on a new plaintext connection and reads the answer until the
/// proxy closes it (every request here says `Connection: close` or is HTTP/1.0). Returns the
/// status, the head's lines (lower-cased) and the body as JSON.
async fn raw(addr: std::net::SocketAddr, request: &str) -> (u16, String, Value) {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut all = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut all))
        .await
        .expect("answer and close in time")
        .expect("read");
    let text = String::from_utf8(all).expect("UTF-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let head = head.to_ascii_lowercase();
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_owned()
    };
    let json = serde_json::from_str(&body).unwrap_or_else(|_| panic!("JSON body: {text:?}"));
    (status, head, json)
}

/// The payload of a whole chunked body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("chunk size line");
        let size = usize::from_str_radix(size, 16).expect("hex size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_exactly_one_valid_host_are_400_on_every_path() {
    let origin = FakeOrigin::start().await;
    let proxy = start_proxy(&origin, Options::default()).await;
    let addr = proxy.proxy.http_addr().expect("http");
    // `/api/v2/stream` is served by the HTTP/1.1 fast path, `/echo` by hyper.
    for path in ["/api/v2/stream", "/echo"] {
        for (case, host_lines) in [
            ("no Host", ""),
            ("two Hosts", "Host: a.example\r\nHost: b.example\r\n"),
            ("two equal Hosts", "Host: a.example\r\nHost: a.example\r\n"),
            ("an invalid Host", "Host: exa mple.com\r\n"),
            ("a Host with user info", "Host: user@a.example\r\n"),
            ("an empty Host", "Host: \r\n"),
        ] {
            let request = format!("GET {path} HTTP/1.1\r\n{host_lines}Connection: close\r\n\r\n");
            let (status, head, body) = raw(addr, &request).await;
            assert_eq!(status, 400, "{path}, {case}: {body}");
            assert_eq!(body["error"], "bad_request", "{path}, {case}");
            assert!(
                body["detail"].as_str().is_some_and(|d| d.contains("Host")),
                "{path}, {case}: {body}"
            );
            assert!(head.contains("content-type: application/json"), "{head}");
        }
    }
    // Through hyper's client over TLS too: a second Host line on top of its own.
    for path in ["/api/v2/stream", "/echo"] {
        let response = proxy
            .client
            .get(Proto::H1Tls, path, &[("host", "other.example")])
            .await;
        let (status, _, body) = json_response(response).await;
        assert_eq!(status, 400, "{path}: {body}");
    }
    assert_eq!(origin.count("/echo"), 0, "nothing reached the origin");
    // HTTP/1.0 predates Host: still served.
    let (status, _, body) = raw(addr, "GET /echo HTTP/1.0\r\n\r\n").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(origin.count("/echo"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_host_must_agree_with_its_authority() {
    let origin = FakeOrigin::start().await;
    let proxy = start_proxy(&origin, Options::default()).await;
    for proto in [Proto::H2Tls, Proto::H2Plain] {
        let response = proxy
            .client
            .get(proto, "/echo", &[("host", "elsewhere.example")])
            .await;
        let (status, _, body) = json_response(response).await;
        assert_eq!(status, 400, "{proto:?}: {body}");
        assert_eq!(body["error"], "bad_request");
        let (status, _, _) = proxy.client.get_json(proto, "/echo", &[]).await;
        assert_eq!(status, 200, "{proto:?}: :authority alone names the host");
    }
    assert_eq!(origin.count("/echo"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_target_names_the_forwarded_host() {
    let origin = FakeOrigin::start().await;
    let proxy = start_proxy(&origin, Options::default()).await;
    let addr = proxy.proxy.http_addr().expect("http");
    let request = "GET http://target.example:8080/echo HTTP/1.1\r\nHost: other.example\r\n\
                   Connection: close\r\n\r\n";
    let (status, _, echo) = raw(addr, request).await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["path"], "/echo");
    let headers = &echo["headers"];
    assert_eq!(headers["x-forwarded-host"], "target.example:8080", "{echo}");
    assert_eq!(
        headers["forwarded"],
        "for=127.0.0.1;host=\"target.example:8080\";proto=http"
    );
    assert_eq!(headers["host"], origin.addr.to_string());
}

/// Forwarding headers a client might send to pass for someone else.
const FORGED: [(&str, &str); 5] = [
    ("x-forwarded-for", "10.9.8.7"),
    ("forwarded", "for=10.9.8.7;proto=https"),
    ("x-real-ip", "10.9.8.7"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "admin.internal"),
];

/// Sends [`FORGED`] to the origin's `/echo` over `proto`; the answer's headers and what the
/// origin saw.
async fn forged_echo(proxy: &TestProxy, proto: Proto) -> (HeaderMap, Value) {
    let response = proxy
        .client
        .send(proto, "GET", "/echo", &FORGED, Bytes::new())
        .await;
    let (status, response_headers, echo) = json_response(response).await;
    assert_eq!(status, 200, "{proto:?}: {echo}");
    (response_headers, echo)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_forge_forwarding_headers_or_see_the_origin_banner() {
    let origin = FakeOrigin::start().await;
    let proxy = start_proxy(&origin, Options::default()).await;
    for proto in [Proto::H1Plain, Proto::H2Plain] {
        let (response_headers, echo) = forged_echo(&proxy, proto).await;
        let headers = &echo["headers"];
        let host = format!(
            "localhost:{}",
            proxy.proxy.http_addr().expect("http").port()
        );
        assert_eq!(headers["x-forwarded-for"], "127.0.0.1", "{proto:?}: {echo}");
        assert_eq!(
            headers["forwarded"],
            format!("for=127.0.0.1;host=\"{host}\";proto=http"),
            "{proto:?}"
        );
        assert_eq!(headers["x-real-ip"], "127.0.0.1", "{proto:?}");
        assert_eq!(headers["x-forwarded-proto"], "http", "{proto:?}");
        assert_eq!(headers["x-forwarded-host"], host.as_str(), "{proto:?}");
        // The echo shows one value per name: the origin's own record counts the lines.
        let seen = origin.last_headers("/echo");
        for name in FORGED.iter().map(|(name, _)| *name).chain(["host"]) {
            assert_eq!(seen.get_all(name).iter().count(), 1, "{proto:?}: {name}");
        }
        assert!(
            response_headers.get("server").is_none(),
            "{proto:?}: the origin's banner leaked: {response_headers:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_is_believed_and_the_banner_kept_when_configured() {
    let origin = FakeOrigin::start().await;
    let options = Options {
        listen_extra: "trusted_proxies = [\"127.0.0.0/8\"]\nkeep_server_header = true",
        ..Options::default()
    };
    let proxy = start_proxy(&origin, options).await;
    let (response_headers, echo) = forged_echo(&proxy, Proto::H1Tls).await;
    let headers = &echo["headers"];
    let host = format!(
        "localhost:{}",
        proxy.proxy.https_addr().expect("https").port()
    );
    assert_eq!(headers["x-forwarded-for"], "10.9.8.7, 127.0.0.1", "{echo}");
    assert_eq!(
        headers["forwarded"],
        format!("for=10.9.8.7;proto=https, for=127.0.0.1;host=\"{host}\";proto=https")
    );
    assert_eq!(headers["x-real-ip"], "10.9.8.7");
    assert_eq!(headers["x-forwarded-proto"], "https");
    assert_eq!(headers["x-forwarded-host"], "admin.internal");
    assert_eq!(response_headers["server"], "fake-origin/1.0");
}
