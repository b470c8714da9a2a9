//! Our server stream against tokio-rustls' client, over in-memory pipes.

use super::*;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use crate::origin::tls::provider;

/// Every test ends within this: a TLS state machine that waits for the wrong thing hangs.
async fn bounded(test: impl std::future::Future<Output = ()>) {
    let limit = std::time::Duration::from_secs(20);
    tokio::time::timeout(limit, test)
        .await
        .expect("test timed out");
}

/// A server config and a client config that trusts it, for `localhost`.
fn configs(alpn: &[&[u8]]) -> (Arc<ServerConfig>, Arc<rustls::ClientConfig>) {
    let pair = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = CertificateDer::from(pair.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pair.signing_key.serialize_der()));
    let mut server = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    server.ticketer = rustls::crypto::ring::Ticketer::new().unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let mut client = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    (Arc::new(server), Arc::new(client))
}

/// Our server and tokio-rustls' client, connected.
type Pair = (
    TlsStream<DuplexStream>,
    tokio_rustls::client::TlsStream<DuplexStream>,
);

/// A handshake over an in-memory pipe of `pipe` bytes.
async fn connect(pipe: usize, alpn: &[&[u8]]) -> Pair {
    let (server_config, client_config) = configs(alpn);
    handshake(pipe, server_config, client_config).await
}

async fn handshake(
    pipe: usize,
    server_config: Arc<ServerConfig>,
    client_config: Arc<rustls::ClientConfig>,
) -> Pair {
    let (client_io, server_io) = tokio::io::duplex(pipe);
    let connector = tokio_rustls::TlsConnector::from(client_config);
    let name = ServerName::try_from("localhost").unwrap();
    let (server, client) = tokio::join!(
        accept(server_config, server_io),
        connector.connect(name, client_io)
    );
    (server.unwrap(), client.unwrap())
}

#[tokio::test]
async fn handshake_negotiates_alpn() {
    bounded(async {
        let (server, _client) = connect(64 * 1024, &[b"h2"]).await;
        assert_eq!(server.alpn_protocol(), Some(&b"h2"[..]));
        let (server, _client) = connect(64 * 1024, &[]).await;
        assert_eq!(server.alpn_protocol(), None);
    })
    .await;
}

#[tokio::test]
async fn a_reconnecting_client_resumes_its_session() {
    bounded(async {
        let (server_config, client_config) = configs(&[]);
        let (mut server, mut client) =
            handshake(4096, server_config.clone(), client_config.clone()).await;
        // The client takes the session tickets in with the first data it reads.
        server.write_all(b"hi").await.unwrap();
        server.flush().await.unwrap();
        let mut got = [0; 2];
        client.read_exact(&mut got).await.unwrap();
        let (_server, client) = handshake(4096, server_config, client_config).await;
        let kind = client.get_ref().1.handshake_kind();
        assert_eq!(kind, Some(rustls::HandshakeKind::Resumed));
    })
    .await;
}

#[tokio::test]
async fn data_crosses_both_ways_in_many_records_through_a_narrow_pipe() {
    bounded(async {
        // 100 KB each way through a 1 KB pipe: writes block, records arrive in pieces.
        let (mut server, mut client) = connect(1024, &[b"http/1.1"]).await;
        let sent: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let to_server = sent.clone();
        let client_side = tokio::spawn(async move {
            client.write_all(&to_server).await.unwrap();
            client.flush().await.unwrap();
            let mut back = vec![0; 100_000];
            client.read_exact(&mut back).await.unwrap();
            (client, back)
        });
        let mut got = vec![0; 100_000];
        // Small reads: a record's rest waits for the next one.
        for piece in got.chunks_mut(700) {
            server.read_exact(piece).await.unwrap();
        }
        assert_eq!(got, sent);
        server.write_all(&got).await.unwrap();
        server.flush().await.unwrap();
        let (_client, back) = client_side.await.unwrap();
        assert_eq!(back, sent);
    })
    .await;
}

#[tokio::test]
async fn vectored_writes_arrive_in_order() {
    bounded(async {
        let (mut server, mut client) = connect(64 * 1024, &[]).await;
        let parts = [&b"1a\r\n"[..], &[b'x'; 26][..], &b"\r\n"[..]];
        let slices: Vec<io::IoSlice<'_>> = parts.iter().map(|p| io::IoSlice::new(p)).collect();
        let n = server.write_vectored(&slices).await.unwrap();
        assert_eq!(n, 32);
        server.flush().await.unwrap();
        let mut got = [0; 32];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..], &[parts.concat()][0][..]);
    })
    .await;
}

#[tokio::test]
async fn an_idle_stream_holds_no_buffer() {
    bounded(async {
        let (mut server, mut client) = connect(64 * 1024, &[]).await;
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut head = [0; 18];
        server.read_exact(&mut head).await.unwrap();
        server.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        server.flush().await.unwrap();
        assert_eq!(server.incoming.capacity(), 0);
        assert_eq!(server.outgoing.capacity(), 0);
        assert_eq!(server.plain.capacity(), 0);
    })
    .await;
}

#[tokio::test]
async fn key_updates_from_the_client_are_followed() {
    bounded(async {
        let (mut server, mut client) = connect(64 * 1024, &[]).await;
        for round in 0..3u8 {
            client.get_mut().1.refresh_traffic_keys().unwrap();
            client.write_all(&[round; 10]).await.unwrap();
            client.flush().await.unwrap();
            let mut got = [0; 10];
            server.read_exact(&mut got).await.unwrap();
            assert_eq!(got, [round; 10]);
            server.write_all(&[round + 100; 5]).await.unwrap();
            server.flush().await.unwrap();
            let mut back = [0; 5];
            client.read_exact(&mut back).await.unwrap();
            assert_eq!(back, [round + 100; 5]);
        }
    })
    .await;
}

#[tokio::test]
async fn close_notify_ends_reads_on_both_sides() {
    bounded(async {
        let (mut server, mut client) = connect(64 * 1024, &[]).await;
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        assert_eq!(server.read_to_end(&mut rest).await.unwrap(), 0);
        server.write_all(b"bye").await.unwrap();
        server.shutdown().await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"bye");
    })
    .await;
}

#[tokio::test]
async fn a_failed_handshake_tells_the_client_why() {
    bounded(async {
        let (server_config, client_config) = configs(&[b"spdy/1"]);
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let connector = tokio_rustls::TlsConnector::from(client_config);
        let name = ServerName::try_from("localhost").unwrap();
        let (server, client) = tokio::join!(
            accept(server_config, server_io),
            connector.connect(name, client_io)
        );
        assert!(server.is_err());
        let error = client.err().unwrap().to_string();
        assert!(error.contains("NoApplicationProtocol"), "{error}");
    })
    .await;
}

#[tokio::test]
async fn garbage_instead_of_a_client_hello_fails_the_handshake() {
    bounded(async {
        let (server_config, _) = configs(&[]);
        let (mut client_io, server_io) = tokio::io::duplex(1024);
        client_io
            .write_all(b"GET / HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let error = accept(server_config, server_io).await.err().unwrap();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    })
    .await;
}

/// A record holding the first 100 bytes of a 500-byte ClientHello: legal, and rustls keeps
/// the fragment in the buffer while it waits for the rest.
const PARTIAL_CLIENT_HELLO: [u8; 105] = {
    let mut record = [0; 105];
    let head = [22, 3, 1, 0, 100, 1, 0, 1, 244];
    let mut i = 0;
    while i < head.len() {
        record[i] = head[i];
        i += 1;
    }
    record
};

#[tokio::test]
async fn a_client_leaving_mid_client_hello_is_an_error_not_a_panic() {
    bounded(async {
        let (server_config, _) = configs(&[]);
        let (mut client_io, server_io) = tokio::io::duplex(4096);
        client_io.write_all(&PARTIAL_CLIENT_HELLO).await.unwrap();
        drop(client_io);
        let error = accept(server_config, server_io).await.err().unwrap();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    })
    .await;
}

#[tokio::test]
async fn a_bad_record_after_a_partial_client_hello_is_an_error_not_a_panic() {
    bounded(async {
        let (server_config, _) = configs(&[]);
        let (mut client_io, server_io) = tokio::io::duplex(4096);
        client_io.write_all(&PARTIAL_CLIENT_HELLO).await.unwrap();
        client_io.write_all(&[99, 3, 3, 0, 2, 0, 0]).await.unwrap();
        let error = accept(server_config, server_io).await.err().unwrap();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    })
    .await;
}

#[tokio::test]
async fn finished_request_and_close_notify_in_one_flight_are_all_read() {
    bounded(async {
        let (server_config, client_config) = configs(&[]);
        let (mut client_io, server_io) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move {
            let mut server = accept(server_config, server_io).await.unwrap();
            let mut request = Vec::new();
            server.read_to_end(&mut request).await.unwrap();
            request
        });
        // rustls' client driven by hand, so that its last flight is one write.
        let name = ServerName::try_from("localhost").unwrap();
        let mut client = rustls::ClientConnection::new(client_config, name).unwrap();
        let mut out = Vec::new();
        client.write_tls(&mut out).unwrap();
        client_io.write_all(&out).await.unwrap();
        let mut buf = vec![0; 16 * 1024];
        while client.is_handshaking() {
            let n = client_io.read(&mut buf).await.unwrap();
            assert!(n > 0, "the server closed during the handshake");
            client.read_tls(&mut &buf[..n]).unwrap();
            client.process_new_packets().unwrap();
        }
        std::io::Write::write_all(&mut client.writer(), b"GET / HTTP/1.1\r\n\r\n").unwrap();
        client.send_close_notify();
        let mut flight = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut flight).unwrap();
        }
        client_io.write_all(&flight).await.unwrap();
        assert_eq!(server.await.unwrap(), b"GET / HTTP/1.1\r\n\r\n");
    })
    .await;
}

/// A real ClientHello from rustls' client, as the start of hostile inputs.
fn client_hello() -> Vec<u8> {
    let (_, client_config) = configs(&[b"h2"]);
    let name = ServerName::try_from("localhost").unwrap();
    let mut client = rustls::ClientConnection::new(client_config, name).unwrap();
    let mut hello = Vec::new();
    client.write_tls(&mut hello).unwrap();
    hello
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

    /// A ClientHello with bytes changed, cut anywhere, with anything after it: the handshake
    /// ends with an answer (or an error), never a panic or a hang.
    #[test]
    fn any_bytes_from_a_client_end_the_handshake_cleanly(
        flips in proptest::collection::vec((0usize..4096, 1u8..=255), 0..4),
        cut in 0usize..4096,
        tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
    ) {
        let mut input = client_hello();
        for (at, bits) in flips {
            let len = input.len();
            input[at % len] ^= bits;
        }
        input.truncate(cut.min(input.len()));
        input.extend_from_slice(&tail);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(bounded(async move {
            let (server_config, _) = configs(&[]);
            let (mut client_io, server_io) = tokio::io::duplex(64 * 1024);
            client_io.write_all(&input).await.unwrap();
            // The client reads nothing and leaves: the server sees the end after the input.
            client_io.shutdown().await.unwrap();
            let _ = accept(server_config, server_io).await;
        }));
    }
}
