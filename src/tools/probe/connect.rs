//! The probe's connection: DNS, TCP, TLS (with ALPN), then an HTTP/1.1 or HTTP/2 handshake,
//! each step timed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;

use crate::origin::tls::{origin_roots, provider};

/// A request sender on an established connection.
pub enum Sender {
    /// HTTP/1.1.
    Http1(http1::SendRequest<Empty<Bytes>>),
    /// HTTP/2.
    Http2(http2::SendRequest<Empty<Bytes>>),
}

/// What connecting took and found.
pub struct Connected {
    /// The sender for the request.
    pub sender: Sender,
    /// The address connected to.
    pub address: SocketAddr,
    /// Milliseconds, from the probe's start, when DNS answered.
    pub dns_ms: f64,
    /// ... when TCP connected.
    pub connect_ms: f64,
    /// ... when TLS finished (HTTPS only).
    pub tls_ms: Option<f64>,
    /// The ALPN protocol the server chose (HTTPS only).
    pub alpn: Option<String>,
    /// The TLS version (HTTPS only).
    pub tls_version: Option<String>,
}

/// How to connect, besides where.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnectOptions {
    /// Wrap the connection in TLS.
    pub tls: bool,
    /// Speak HTTP/2 (ALPN `h2`, or prior knowledge without TLS).
    pub http2: bool,
    /// Accept any certificate.
    pub insecure: bool,
    /// The local address to connect from (the load generator spreads its connections over
    /// loopback addresses); `None` lets the kernel choose.
    pub source: Option<IpAddr>,
}

/// How a connection error starts when the server's certificate was refused (the probe's
/// `certificate-rejected` verdict).
pub const UNTRUSTED: &str = "the server's TLS certificate is not trusted";

/// Connects to `host:port` as `options` say.
pub async fn connect(
    started: Instant,
    host: &str,
    port: u16,
    options: ConnectOptions,
) -> Result<Connected, String> {
    let ConnectOptions {
        tls,
        http2,
        insecure,
        source,
    } = options;
    let ms = || started.elapsed().as_secs_f64() * 1000.0;
    let address = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("DNS lookup of {host} failed: {e}"))?
        .next()
        .ok_or_else(|| format!("DNS lookup of {host} returned no address"))?;
    let dns_ms = ms();
    let tcp = match source {
        None => TcpStream::connect(address).await,
        Some(source) => connect_from(source, address).await,
    }
    .map_err(|e| format!("TCP connect to {address} failed: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let connect_ms = ms();
    if !tls {
        let sender = handshake(TokioIo::new(tcp), http2).await?;
        return Ok(Connected {
            sender,
            address,
            dns_ms,
            connect_ms,
            tls_ms: None,
            alpn: None,
            tls_version: None,
        });
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate))
            .with_no_client_auth()
    } else {
        builder
            .with_root_certificates(origin_roots(None).map_err(|e| e.to_string())?)
            .with_no_client_auth()
    };
    config.alpn_protocols = vec![if http2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| format!("bad server name {host}: {e}"))?;
    let stream = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| {
            let certificate = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .is_some_and(|tls| matches!(tls, rustls::Error::InvalidCertificate(_)));
            if certificate {
                format!("{UNTRUSTED} ({host}: {e})")
            } else {
                format!("TLS handshake with {host} failed: {e}")
            }
        })?;
    let tls_ms = ms();
    let session = stream.get_ref().1;
    let alpn = session
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let tls_version = session.protocol_version().map(|v| format!("{v:?}"));
    let use_h2 = alpn.as_deref() == Some("h2");
    let sender = handshake(TokioIo::new(stream), use_h2).await?;
    Ok(Connected {
        sender,
        address,
        dns_ms,
        connect_ms,
        tls_ms: Some(tls_ms),
        alpn,
        tls_version,
    })
}

/// Connects from a chosen local address (any port).
async fn connect_from(source: IpAddr, address: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if source.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }?;
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(address).await
}

async fn handshake<I>(io: I, http2: bool) -> Result<Sender, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    if http2 {
        let (sender, connection) = http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| format!("HTTP/2 handshake failed: {e}"))?;
        tokio::spawn(connection);
        Ok(Sender::Http2(sender))
    } else {
        let (sender, connection) = http1::handshake(io)
            .await
            .map_err(|e| format!("HTTP/1.1 handshake failed: {e}"))?;
        tokio::spawn(connection);
        Ok(Sender::Http1(sender))
    }
}

/// `-k`: accepts any certificate (the handshake signature is still checked), for
/// self-signed development endpoints.
#[derive(Debug)]
struct AnyCertificate;

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
