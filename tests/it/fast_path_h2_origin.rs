//! Passthrough `GET`s answered on the HTTP/1.1 fast path from an HTTP/2 origin (ALPN `h2`),
//! whose body hyper's `Incoming` delivers and which knows it has ended as soon as its last
//! frame is read (the frame carries `END_STREAM`): such a body, with no `content-length`, is
//! chunked to the client, and must reach it whole however many of its frames are ready at once.

use std::sync::Arc;

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

use crate::common;
use crate::fast_path_passthrough::send_raw;
use common::origin::FakeOrigin;
use common::{Options, WAIT, start_proxy};

/// An HTTPS origin speaking HTTP/2 frame by frame: `GET /frames/<n>` is answered with `n`
/// DATA frames `frame-<i>;` and no `content-length`, the last one carrying `END_STREAM`, all
/// written together with the head; `GET /headers` with the request's header lines, one
/// `name: value` per line, in one frame. Returns its URL and the PEM of its certificate.
async fn h2_origin() -> (String, String) {
    use rustls_pki_types::pem::PemObject;
    let pair = sse_edge::tools::demo::certs::localhost().expect("origin certificate");
    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(pair.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("cert");
    let key =
        rustls_pki_types::PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).expect("key");
    let mut config = rustls::ServerConfig::builder_with_provider(sse_edge::origin::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!(
        "https://localhost:{}",
        listener.local_addr().expect("addr").port()
    );
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut conn) = h2::server::handshake(tls).await else {
                    return;
                };
                // Each answer is queued whole before the connection is polled again, so its
                // frames leave in one write.
                while let Some(Ok((request, mut respond))) = conn.accept().await {
                    if request.uri().path() == "/headers" {
                        let lines: String = request
                            .headers()
                            .iter()
                            .map(|(name, value)| {
                                format!("{name}: {}\n", String::from_utf8_lossy(value.as_bytes()))
                            })
                            .collect();
                        let head = http::Response::new(());
                        if let Ok(mut body) = respond.send_response(head, false) {
                            let _ = body.send_data(Bytes::from(lines), true);
                        }
                        continue;
                    }
                    let frames: usize = request
                        .uri()
                        .path()
                        .strip_prefix("/frames/")
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(1);
                    let head = http::Response::builder()
                        .status(200)
                        .header("content-type", "text/plain")
                        .body(())
                        .expect("head");
                    let Ok(mut body) = respond.send_response(head, false) else {
                        continue;
                    };
                    for i in 0..frames {
                        let frame = Bytes::from(format!("frame-{i};"));
                        if body.send_data(frame, i + 1 == frames).is_err() {
                            break;
                        }
                    }
                }
            });
        }
    });
    (url, pair.cert_pem)
}

/// Reads until the proxy closes the connection or fails it; everything read.
async fn read_until_closed(tcp: &mut TcpStream) -> String {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(WAIT, tcp.read(&mut buf))
            .await
            .expect("closed in time");
        match read {
            Ok(n) if n > 0 => all.extend_from_slice(&buf[..n]),
            _ => return String::from_utf8_lossy(&all).into_owned(),
        }
    }
}

/// A proxy in front of [`h2_origin`], on one serving thread: the client's connection and the
/// origin connection share it, so every frame that arrived together is read before the answer
/// is written (as it is in production whenever the client is slower than the origin).
async fn proxy_to_h2_origin(fake: &FakeOrigin) -> common::TestProxy {
    let (url, ca) = h2_origin().await;
    start_proxy(
        fake,
        Options {
            upstream: Some(url),
            upstream_ca: Some(ca),
            listen_extra: "serving_threads = 1",
            ..Options::default()
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_origin_body_reaches_the_client_whole_however_its_frames_batch() {
    let fake = FakeOrigin::start().await;
    let proxy = proxy_to_h2_origin(&fake).await;
    // The writer takes up to 8 ready frames per write: the body's end may fall on the last
    // frame of a full batch (8, 16) or not (1, 7, 9).
    for frames in [1, 7, 8, 9, 16] {
        let request =
            format!("GET /frames/{frames} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        let mut tcp = send_raw(&proxy, request.as_bytes()).await;
        let text = read_until_closed(&mut tcp).await;
        let expected: String = (0..frames)
            .map(|i| {
                let frame = format!("frame-{i};");
                format!("{:x}\r\n{frame}\r\n", frame.len())
            })
            .chain(["0\r\n\r\n".to_owned()])
            .collect();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("{frames} frames: no answer head: {text:?}"));
        assert!(
            head.starts_with("HTTP/1.1 200 OK\r\n"),
            "{frames} frames: {text:?}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains("\r\ntransfer-encoding: chunked"),
            "{frames} frames: {text:?}"
        );
        assert_eq!(
            body, expected,
            "{frames} frames: the whole body, then its end"
        );
    }
}

/// What the proxy states (the client's address, scheme and host, the request id) reaches an
/// HTTP/2 origin once each, in place of what the client sent under those names, and the
/// client's `Host` does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_origin_gets_what_the_proxy_states_once_each() {
    let fake = FakeOrigin::start().await;
    let proxy = proxy_to_h2_origin(&fake).await;
    let request = "GET /headers HTTP/1.1\r\nhost: edge.example\r\nx-forwarded-for: 10.9.8.7\r\n\
        x-real-ip: 10.9.8.7\r\nx-forwarded-proto: https\r\nforwarded: for=10.9.8.7\r\n\
        x-request-id: not an id\r\nx-kept: yes\r\nconnection: close\r\n\r\n";
    let mut tcp = send_raw(&proxy, request.as_bytes()).await;
    let text = read_until_closed(&mut tcp).await;
    let (head, body) = text.split_once("\r\n\r\n").expect("an answer head");
    let id = head
        .lines()
        .find_map(|line| line.strip_prefix("x-request-id: "))
        .unwrap_or_else(|| panic!("no request id: {head}"));
    for (name, value) in [
        ("x-forwarded-for", "127.0.0.1"),
        ("x-real-ip", "127.0.0.1"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-host", "edge.example"),
        ("forwarded", "for=127.0.0.1;host=edge.example;proto=http"),
        ("x-request-id", id),
        ("x-kept", "yes"),
    ] {
        let lines: Vec<&str> = body
            .lines()
            .filter_map(|line| line.strip_prefix(&format!("{name}: ")))
            .collect();
        assert_eq!(lines, [value], "{name}: {body}");
    }
    // HTTP/2 names the host in `:authority`, the origin's: the client's `Host` is not sent.
    assert!(!body.lines().any(|l| l.starts_with("host: ")), "{body}");
}
