//! Opening one connection to an origin: name lookup, TCP (no Nagle), and for `https` the
//! rustls handshake whose ALPN answer says whether the connection speaks HTTP/2. The whole
//! of it is bounded by the connect timeout; every failure is an `io::Error`, so the caller
//! sorts them the way it sorts any other I/O failure (refused, reset, TLS, timed out).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::Authority;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A connection to an origin, plaintext or TLS.
pub enum OriginStream {
    /// `http` origins.
    Plain(TcpStream),
    /// `https` origins; boxed because the TLS session is large and most origins are plain.
    Tls(Box<TlsStream<TcpStream>>),
}

/// What a new connection speaks, from the TLS ALPN answer (plaintext origins: HTTP/1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1: one request at a time, pooled while idle.
    Http1,
    /// HTTP/2 (`h2` by ALPN): one shared, multiplexed connection.
    Http2,
}

/// Opens connections: the TLS client configuration and the connect bound.
pub struct Connector {
    /// rustls with the origin roots and ALPN `h2`, `http/1.1`.
    tls: TlsConnector,
    /// Bound on lookup, TCP connect and TLS handshake together.
    timeout: Duration,
}

impl Connector {
    /// A connector with this TLS configuration (ALPN is set here) and connect bound.
    pub fn new(mut tls: rustls::ClientConfig, timeout: Duration) -> Connector {
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Connector {
            tls: TlsConnector::from(Arc::new(tls)),
            timeout,
        }
    }

    /// Connects to `authority` (TLS when `https`), within the connect timeout.
    pub async fn connect(
        &self,
        https: bool,
        authority: &Authority,
    ) -> io::Result<(OriginStream, Protocol)> {
        match tokio::time::timeout(self.timeout, self.open(https, authority)).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connecting to the origin timed out",
            )),
        }
    }

    async fn open(
        &self,
        https: bool,
        authority: &Authority,
    ) -> io::Result<(OriginStream, Protocol)> {
        // `[::1]` in a URI, `::1` for the resolver and the certificate check.
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp = tcp_connect(host, port).await?;
        if !https {
            return Ok((OriginStream::Plain(tcp), Protocol::Http1));
        }
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let tls = self.tls.connect(name, tcp).await?;
        let protocol = match tls.get_ref().1.alpn_protocol() {
            Some(b"h2") => Protocol::Http2,
            _ => Protocol::Http1,
        };
        Ok((OriginStream::Tls(Box::new(tls)), protocol))
    }
}

/// Tries each address the name resolves to, in order; the last failure is the answer.
async fn tcp_connect(host: &str, port: u16) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host} resolves to no address"),
        )
    }))
}

impl AsyncRead for OriginStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            OriginStream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            OriginStream::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for OriginStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            OriginStream::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            OriginStream::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            OriginStream::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            OriginStream::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            OriginStream::Plain(tcp) => tcp.is_write_vectored(),
            OriginStream::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            OriginStream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            OriginStream::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            OriginStream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            OriginStream::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}
