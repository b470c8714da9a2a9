//! A real HTTP client for the tests: HTTP/1.1 or HTTP/2, over TLS (ALPN checked) or plaintext
//! (HTTP/1.1, or h2c with prior knowledge), one connection per request. Plus an incremental
//! event-stream reader written from the WHATWG parsing rules, independent of the proxy's
//! encoder, whose every read is bounded by a timeout.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// How a request travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// TLS, ALPN `http/1.1`.
    H1Tls,
    /// TLS, ALPN `h2`.
    H2Tls,
    /// Plaintext HTTP/1.1.
    H1Plain,
    /// Plaintext HTTP/2 with prior knowledge (h2c).
    H2Plain,
}

impl Proto {
    fn is_h2(self) -> bool {
        matches!(self, Proto::H2Tls | Proto::H2Plain)
    }
}

/// Talks to one proxy.
#[derive(Clone)]
pub struct Client {
    https: Option<SocketAddr>,
    http: Option<SocketAddr>,
    roots: Arc<rustls::RootCertStore>,
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    async fn send(&mut self, request: Request<Full<Bytes>>) -> Response<Incoming> {
        self.try_send(request).await.expect("response head")
    }

    /// [`Sender::send`], with the error when no response head came.
    async fn try_send(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, hyper::Error> {
        // Wait until the connection can take a request (on a kept-alive HTTP/1.1 connection,
        // until the previous response has been fully read).
        match self {
            Sender::H1(s) => match s.ready().await {
                Ok(()) => s.send_request(request).await,
                Err(error) => Err(error),
            },
            Sender::H2(s) => match s.ready().await {
                Ok(()) => s.send_request(request).await,
                Err(error) => Err(error),
            },
        }
    }
}

/// One connection that carries several requests in turn (see [`Client::keep_alive`]).
pub struct KeepAlive {
    sender: Sender,
    proto: Proto,
    addr: SocketAddr,
    tls: bool,
}

impl KeepAlive {
    /// Sends a GET on this connection; fails if the connection was closed.
    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Response<Incoming> {
        self.try_get(path, headers).await.expect("response head")
    }

    /// [`KeepAlive::get`], with the error when no response head came.
    pub async fn try_get(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Response<Incoming>, hyper::Error> {
        let request = build(
            self.proto,
            self.addr,
            self.tls,
            "GET",
            path,
            headers,
            Bytes::new(),
        );
        tokio::time::timeout(Duration::from_secs(10), self.sender.try_send(request))
            .await
            .expect("response head within 10 s")
    }
}

/// Reads a whole response and parses its body as JSON.
pub async fn json_response(response: Response<Incoming>) -> (StatusCode, HeaderMap, Value) {
    let (parts, body) = response.into_parts();
    let bytes = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .expect("body within 10 s")
        .expect("body")
        .to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| panic!("JSON body, got {:?}", String::from_utf8_lossy(&bytes)));
    (parts.status, parts.headers, value)
}

/// A request as the client sends it over `proto`.
fn build(
    proto: Proto,
    addr: SocketAddr,
    tls: bool,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Request<Full<Bytes>> {
    let scheme = if tls { "https" } else { "http" };
    let uri = if proto.is_h2() {
        format!("{scheme}://localhost:{}{path}", addr.port())
    } else {
        path.to_owned()
    };
    let mut builder = Request::builder().method(method).uri(uri);
    if !proto.is_h2() {
        builder = builder.header("host", format!("localhost:{}", addr.port()));
    }
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(body)).expect("request")
}

impl Client {
    /// A client for these addresses, trusting `cert_pem`.
    pub fn new(https: Option<SocketAddr>, http: Option<SocketAddr>, cert_pem: &str) -> Client {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes()) {
            roots.add(cert.expect("pem")).expect("root");
        }
        Client {
            https,
            http,
            roots: Arc::new(roots),
        }
    }

    /// Sends a request with an empty body.
    pub async fn get(
        &self,
        proto: Proto,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Response<Incoming> {
        self.send(proto, "GET", path, headers, Bytes::new()).await
    }

    /// Sends a request and returns the response head with a streaming body.
    pub async fn send(
        &self,
        proto: Proto,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Response<Incoming> {
        let (addr, tls) = match proto {
            Proto::H1Tls | Proto::H2Tls => (self.https.expect("https listener"), true),
            Proto::H1Plain | Proto::H2Plain => (self.http.expect("http listener"), false),
        };
        let mut sender = self.connect(addr, tls, proto).await;
        let request = build(proto, addr, tls, method, path, headers, body);
        sender.send(request).await
    }

    /// Opens one connection to send several requests over, one after another.
    pub async fn keep_alive(&self, proto: Proto) -> KeepAlive {
        let (addr, tls) = match proto {
            Proto::H1Tls | Proto::H2Tls => (self.https.expect("https listener"), true),
            Proto::H1Plain | Proto::H2Plain => (self.http.expect("http listener"), false),
        };
        KeepAlive {
            sender: self.connect(addr, tls, proto).await,
            proto,
            addr,
            tls,
        }
    }

    async fn connect(&self, addr: SocketAddr, tls: bool, proto: Proto) -> Sender {
        if tls {
            let alpn: &[u8] = if proto.is_h2() { b"h2" } else { b"http/1.1" };
            handshake(TokioIo::new(self.tls(alpn).await), proto).await
        } else {
            let tcp = TcpStream::connect(addr).await.expect("connect");
            handshake(TokioIo::new(tcp), proto).await
        }
    }

    /// A TLS connection to the HTTPS listener with this ALPN protocol, for raw clients.
    pub async fn tls(&self, alpn: &[u8]) -> tokio_rustls::client::TlsStream<TcpStream> {
        let addr = self.https.expect("https listener");
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let mut config =
            rustls::ClientConfig::builder_with_provider(sse_edge::origin::tls::provider())
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(self.roots.clone())
                .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
        let stream = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .expect("TLS handshake");
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(alpn), "ALPN");
        stream
    }

    /// GETs a path and parses a JSON body.
    pub async fn get_json(
        &self,
        proto: Proto,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Value) {
        json_response(self.get(proto, path, headers).await).await
    }

    /// Opens `count` plaintext HTTP/1.1 streams on `path`, each seen to deliver its first
    /// event: connections the proxy holds until they are dropped.
    pub async fn hold_streams(&self, path: &str, count: usize) -> Vec<SseStream> {
        let mut held = Vec::with_capacity(count);
        for _ in 0..count {
            let mut stream = self.stream(Proto::H1Plain, path, &[]).await;
            stream.next(super::WAIT).await;
            held.push(stream);
        }
        held
    }

    /// Opens an event stream (or whatever the proxy answers instead).
    pub async fn stream(&self, proto: Proto, path: &str, headers: &[(&str, &str)]) -> SseStream {
        let response =
            tokio::time::timeout(Duration::from_secs(10), self.get(proto, path, headers))
                .await
                .expect("response headers within 10 s");
        let (parts, body) = response.into_parts();
        SseStream {
            status: parts.status,
            headers: parts.headers,
            body,
            text: String::new(),
            ready: VecDeque::new(),
            data: String::new(),
            event: String::new(),
            last_id: String::new(),
            retry: None,
            comments: Vec::new(),
        }
    }
}

async fn handshake<I>(io: I, proto: Proto) -> Sender
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    if proto.is_h2() {
        let (sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .expect("h2 handshake");
        tokio::spawn(connection);
        Sender::H2(sender)
    } else {
        let (sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .expect("h1 handshake");
        tokio::spawn(connection);
        Sender::H1(sender)
    }
}

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The last event id after this event (what `EventSource.lastEventId` would say).
    pub id: String,
    /// The event type (`message` when none was given).
    pub event: String,
    /// The data, lines joined with `\n`.
    pub data: String,
}

impl SseEvent {
    /// The data parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|_| panic!("JSON data in {self:?}"))
    }
}

/// Why no event came.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    /// Nothing within the wait.
    Timeout,
    /// The response body ended cleanly.
    Ended,
    /// The connection broke before the body's end.
    Broken,
}

/// A response being read as an event stream.
pub struct SseStream {
    /// The response status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    body: Incoming,
    text: String,
    ready: VecDeque<SseEvent>,
    data: String,
    event: String,
    last_id: String,
    /// The last `retry:` value seen.
    pub retry: Option<u64>,
    /// Comment lines seen (without the colon).
    pub comments: Vec<String>,
}

impl SseStream {
    /// The next event, or why none came within `wait`.
    pub async fn try_next(&mut self, wait: Duration) -> Result<SseEvent, ReadError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(event);
            }
            self.read_more(deadline).await?;
        }
    }

    /// The next event; panics if none comes within `wait`.
    pub async fn next(&mut self, wait: Duration) -> SseEvent {
        match self.try_next(wait).await {
            Ok(event) => event,
            Err(error) => panic!("no event within {wait:?}: {error:?}"),
        }
    }

    /// The next event of type `kind`, skipping others; panics if none comes within `wait`.
    pub async fn next_of(&mut self, kind: &str, wait: Duration) -> SseEvent {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let event = self.next(left).await;
            if event.event == kind {
                return event;
            }
        }
    }

    /// Reads until at least one body chunk arrived and returns it, for checks on the very
    /// first bytes (a `retry:` line and a comment count as a first frame).
    pub async fn first_chunk(&mut self, wait: Duration) -> String {
        let deadline = tokio::time::Instant::now() + wait;
        match self.read_more(deadline).await {
            Ok(chunk) => chunk,
            Err(error) => panic!("no first frame within {wait:?}: {error:?}"),
        }
    }

    /// Whether the body ends within `wait`, parsing what comes before it.
    pub async fn ends_within(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match self.read_more(deadline).await {
                Ok(_) => continue,
                Err(ReadError::Ended) => return true,
                Err(ReadError::Timeout | ReadError::Broken) => return false,
            }
        }
    }

    /// The id a browser would send as `Last-Event-ID` if it reconnected now.
    pub fn last_event_id(&self) -> &str {
        &self.last_id
    }

    /// Reads one data frame, parses it, and returns its text.
    async fn read_more(&mut self, deadline: tokio::time::Instant) -> Result<String, ReadError> {
        loop {
            let frame = match tokio::time::timeout_at(deadline, self.body.frame()).await {
                Err(_) => return Err(ReadError::Timeout),
                Ok(None) => return Err(ReadError::Ended),
                Ok(Some(Err(_))) => return Err(ReadError::Broken),
                Ok(Some(Ok(frame))) => frame,
            };
            if let Ok(data) = frame.into_data() {
                let chunk = std::str::from_utf8(&data).expect("UTF-8 stream").to_owned();
                self.text.push_str(&chunk);
                while let Some(end) = self.text.find('\n') {
                    let line: String = self.text.drain(..=end).collect();
                    let line = line.trim_end_matches('\n');
                    self.line(line.strip_suffix('\r').unwrap_or(line));
                }
                return Ok(chunk);
            }
        }
    }

    /// One line, by the WHATWG "interpret an event stream" rules.
    fn line(&mut self, line: &str) {
        if line.is_empty() {
            if !self.data.is_empty() {
                self.data.pop();
                let event = if self.event.is_empty() {
                    "message"
                } else {
                    &self.event
                };
                self.ready.push_back(SseEvent {
                    id: self.last_id.clone(),
                    event: event.to_owned(),
                    data: std::mem::take(&mut self.data),
                });
            }
            self.data.clear();
            self.event.clear();
            return;
        }
        if let Some(comment) = line.strip_prefix(':') {
            self.comments.push(comment.trim_start().to_owned());
            return;
        }
        let (name, value) = match line.split_once(':') {
            Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match name {
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "event" => self.event = value.to_owned(),
            "id" if !value.contains('\0') => self.last_id = value.to_owned(),
            "retry" => self.retry = value.parse().ok().or(self.retry),
            _ => {}
        }
    }
}
