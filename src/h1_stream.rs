//! The HTTP/1.1 fast path for event streams: no per-connection buffers.
//!
//! An event stream holds its HTTP/1.1 connection for hours, and hyper keeps a read buffer and
//! a write buffer of 8 KiB or more for a connection's whole life: two thirds of what an idle
//! stream cost (BENCHMARKS.md). So an HTTP/1.1 connection (plaintext, or TLS with ALPN
//! `http/1.1`) starts here. This phase reads the request head itself (with `httparse`, as hyper
//! does) into a buffer that lives only until the head is parsed. When the request is a plain
//! `GET` of a stream route, it is served here: the response head is written once, together
//! with the first frame, then every frame the hub shares is written as one chunk straight from
//! its `Bytes` (one vectored write, no copy), and nothing is kept per connection but the
//! stream's cursor. Error answers (401, 429...) keep the connection alive for the next request.
//!
//! Anything else (another route, a request body, an upgrade, `Expect`, h2c, HTTP/1.0, a
//! malformed or large head) is handed to hyper together with the bytes read so far
//! ([`Rewind`]), so hyper serves it exactly as if it had read them itself, errors included.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Uri, Version, request, response};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::body::ProxyBody;
use crate::listener::ConnInfo;
use crate::rewind::Rewind;
use crate::router::{Route, Router};
use crate::service::App;
use crate::shutdown::ShutdownSignal;

/// Largest request head served here; a larger one goes to hyper (which allows up to 64 KiB
/// and answers 431 beyond).
const MAX_HEAD: usize = 8 * 1024;
/// The first read's buffer: enough for a stream request with a token and a few cookies.
const FIRST_READ: usize = 2 * 1024;
/// Most request headers parsed here; more goes to hyper.
const MAX_HEADERS: usize = 64;
/// Bytes a client may send on a connection whose event stream is open before it is closed:
/// nothing can be answered on it until the stream ends, so it is read and dropped, not kept.
const MAX_DISCARDED: usize = 16 * 1024;
/// How long closing a connection (TLS `close_notify`, FIN) may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// The chunked encoding's last chunk.
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// How a connection left the fast path.
pub enum Outcome<I> {
    /// It was served and is closed.
    Closed,
    /// Hyper serves it from here, starting with the bytes already read.
    Handoff(Rewind<I>),
}

/// Serves stream requests on an HTTP/1.1 connection until it closes, or until a request
/// comes that hyper should serve. `header_timeout` bounds each request head (and the idle
/// time between requests); `shutdown` closes a connection that is waiting for one.
pub async fn serve<I>(
    mut io: I,
    app: &App,
    conn: ConnInfo,
    header_timeout: Duration,
    shutdown: &mut ShutdownSignal,
) -> Outcome<I>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::new();
    loop {
        let step = tokio::select! {
            step = tokio::time::timeout(header_timeout, read_head(&mut io, &mut buf, &app.router)) => step,
            _ = shutdown.fired() => return Outcome::Closed,
        };
        let head = match step {
            Ok(Ok(Step::Head(head))) => head,
            Ok(Ok(Step::NotOurs)) => return Outcome::Handoff(Rewind::new(buf.freeze(), io)),
            Ok(Ok(Step::Eof)) => return Outcome::Closed,
            Ok(Err(error)) => {
                tracing::debug!(peer = %conn.peer, %error, "reading a request head failed");
                return Outcome::Closed;
            }
            Err(_) => {
                tracing::debug!(peer = %conn.peer, "no complete request head in time; closed");
                return Outcome::Closed;
            }
        };
        buf.advance(head.len);
        let Head {
            parts: request,
            index,
            params,
            keep_alive,
            ..
        } = *head;
        let response = respond(app, &request, index, params, conn).await;
        drop(request);
        let (parts, body) = response.into_parts();
        let streaming = matches!(body, ProxyBody::Stream(_));
        // A stream ends only when the proxy ends it (shutdown); nothing after it is answered,
        // so its connection keeps no read buffer.
        let keep_alive = keep_alive && !streaming;
        if streaming {
            buf = BytesMut::new();
        }
        // One decision on framing, for the head and for the body alike.
        let length = body.size_hint().exact();
        let head_bytes = encode_head(&parts, length, keep_alive);
        drop(parts);
        let mut pump = Pump::new(&mut io, body, head_bytes, length.is_none(), streaming);
        if let Err(error) = std::future::poll_fn(|cx| pump.poll(cx)).await {
            tracing::debug!(peer = %conn.peer, %error, "connection ended");
            return Outcome::Closed;
        }
        if !keep_alive {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, io.shutdown()).await;
            return Outcome::Closed;
        }
    }
}

/// The stream phase for a parsed head, boxed: authentication's future is large and lives only
/// until the response head, so it must not size the task that then holds the stream for hours.
fn respond<'a>(
    app: &'a App,
    parts: &'a request::Parts,
    index: usize,
    params: Vec<String>,
    conn: ConnInfo,
) -> Pin<Box<dyn Future<Output = http::Response<ProxyBody>> + Send + 'a>> {
    Box::pin(app.handle_stream(parts, index, params, conn))
}

/// What reading a request head gave.
enum Step {
    /// A stream request to serve here (boxed: it is much larger than the other answers).
    Head(Box<Head>),
    /// Something for hyper.
    NotOurs,
    /// The client closed the connection between requests.
    Eof,
}

/// A parsed stream request.
struct Head {
    /// Method, URI, version and headers, as the stream phase takes them.
    parts: request::Parts,
    /// The stream route it matched, and its checked parameters.
    index: usize,
    params: Vec<String>,
    /// Length of the head in the read buffer.
    len: usize,
    /// False when the client sent `Connection: close`.
    keep_alive: bool,
}

async fn read_head<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
    router: &Router,
) -> io::Result<Step> {
    loop {
        if !buf.is_empty() {
            match parse(buf, router) {
                Parse::Partial if buf.len() >= MAX_HEAD => return Ok(Step::NotOurs),
                Parse::Partial => {}
                Parse::Head(head) => return Ok(Step::Head(head)),
                Parse::NotOurs => return Ok(Step::NotOurs),
            }
        }
        buf.reserve(FIRST_READ.min(MAX_HEAD - buf.len()));
        if io.read_buf(buf).await? == 0 {
            return Ok(Step::Eof);
        }
    }
}

/// What the bytes read so far are.
enum Parse {
    /// Not a whole head yet.
    Partial,
    /// A stream request this path serves.
    Head(Box<Head>),
    /// Anything else, including what hyper would reject: hyper answers it.
    NotOurs,
}

/// Parses a request head and decides whether the fast path serves it: a `GET` of a stream
/// route over HTTP/1.1, with no body, no upgrade and no `Expect`, whose headers are all valid.
fn parse(buf: &[u8], router: &Router) -> Parse {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parse::Partial,
        Err(_) => return Parse::NotOurs,
    };
    if request.version != Some(1) || request.method != Some("GET") {
        return Parse::NotOurs;
    }
    let Some(uri) = request
        .path
        .filter(|path| path.starts_with('/'))
        .and_then(|path| Uri::try_from(path).ok())
    else {
        return Parse::NotOurs;
    };
    let Ok(Route::Stream { index, params }) = router.route(uri.path()) else {
        return Parse::NotOurs;
    };
    let mut map = HeaderMap::with_capacity(request.headers.len());
    let mut keep_alive = true;
    for header in request.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(header.name.as_bytes()),
            HeaderValue::from_bytes(header.value),
        ) else {
            return Parse::NotOurs;
        };
        match name {
            header::TRANSFER_ENCODING | header::UPGRADE | header::EXPECT => return Parse::NotOurs,
            header::CONTENT_LENGTH if value != "0" => return Parse::NotOurs,
            header::CONNECTION if has_token(&value, "close") => keep_alive = false,
            _ => {}
        }
        map.append(name, value);
    }
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = Method::GET;
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    parts.headers = map;
    Parse::Head(Box::new(Head {
        parts,
        index,
        params,
        len,
        keep_alive,
    }))
}

/// Whether a comma-separated header value lists `token` (case-insensitively).
fn has_token(value: &HeaderValue, token: &str) -> bool {
    value
        .as_bytes()
        .split(|&b| b == b',')
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// The response's status line and headers, framed by `content-length` when the body's
/// length is known and by chunks otherwise.
fn encode_head(parts: &response::Parts, length: Option<u64>, keep_alive: bool) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut line = |name: &[u8], value: &[u8]| {
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    };
    for (name, value) in &parts.headers {
        // Framing and connection handling are this writer's to state.
        if !matches!(
            *name,
            header::CONTENT_LENGTH | header::TRANSFER_ENCODING | header::CONNECTION
        ) {
            line(name.as_str().as_bytes(), value.as_bytes());
        }
    }
    if !parts.headers.contains_key(header::DATE) {
        line(
            b"date",
            httpdate::fmt_http_date(SystemTime::now()).as_bytes(),
        );
    }
    match length {
        Some(length) => line(b"content-length", length.to_string().as_bytes()),
        None => line(b"transfer-encoding", b"chunked"),
    }
    if !keep_alive {
        line(b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    Bytes::from(out)
}

/// Writes one response: its head, then its body's frames as they come.
struct Pump<'a, I> {
    io: &'a mut I,
    body: ProxyBody,
    /// What is queued for the socket.
    out: Out,
    /// Frames are chunks (`transfer-encoding: chunked`) rather than raw bytes.
    chunked: bool,
    /// The body has ended (and the last chunk is queued).
    ended: bool,
    /// Watch the read side: the client closing its end closes the stream. Only while an event
    /// stream is open; between requests, what the client sends is its next request.
    watch_reads: bool,
    /// Bytes read and dropped while watching.
    discarded: usize,
}

impl<'a, I: AsyncRead + AsyncWrite + Unpin> Pump<'a, I> {
    fn new(io: &'a mut I, body: ProxyBody, head: Bytes, chunked: bool, streaming: bool) -> Self {
        Pump {
            io,
            body,
            out: Out::head(head),
            chunked,
            ended: false,
            watch_reads: streaming,
            discarded: 0,
        }
    }

    /// Ready once the whole response is written and flushed; an error if the connection
    /// failed or the client closed it.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.watch_reads {
            self.poll_client(cx)?;
        }
        loop {
            if !self.ended && self.out.takes_frame() {
                match Pin::new(&mut self.body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            self.out.frame(data, self.chunked);
                        }
                        continue;
                    }
                    Poll::Ready(Some(Err(error))) => {
                        return Poll::Ready(Err(io::Error::other(error)));
                    }
                    Poll::Ready(None) => {
                        self.ended = true;
                        if self.chunked {
                            self.out.frame(Bytes::from_static(LAST_CHUNK), false);
                        }
                        continue;
                    }
                    Poll::Pending => {}
                }
            }
            if self.out.remaining() > 0 {
                let mut slices = [IoSlice::new(&[]); SLICES];
                let count = self.out.slices(&mut slices);
                let written =
                    ready!(Pin::new(&mut *self.io).poll_write_vectored(cx, &slices[..count]))?;
                if written == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.out.advance(written);
                continue;
            }
            // All that is queued is written; push it out of TLS, then wait for the next frame.
            ready!(Pin::new(&mut *self.io).poll_flush(cx))?;
            return if self.ended {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            };
        }
    }

    /// Reads and drops what the client sends while its stream is open, so that its closing
    /// the connection is seen at once rather than at the next failed write.
    fn poll_client(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let mut scratch = [0u8; 64];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut *self.io).poll_read(cx, &mut buf) {
                Poll::Pending => return Ok(()),
                Poll::Ready(Err(error)) => return Err(error),
                Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the client closed the connection",
                    ));
                }
                Poll::Ready(Ok(())) => {
                    self.discarded += buf.filled().len();
                    if self.discarded > MAX_DISCARDED {
                        return Err(io::Error::other(
                            "the client kept sending on a connection with an open event stream",
                        ));
                    }
                }
            }
        }
    }
}

/// Most frames queued for one vectored write. A client that keeps up gets each frame as it
/// comes; one that fell behind (or a burst) gets up to this many per system call, which is
/// what a write costs on a busy proxy (see BENCHMARKS.md).
const BATCH: usize = 8;
/// Slices a full batch takes: the head, then a size line, a frame and a CRLF per chunk.
const SLICES: usize = 1 + 3 * BATCH;

/// One queued frame: its chunk-size line (when chunked), the frame shared with every other
/// subscriber, and the chunk's closing CRLF.
#[derive(Default)]
struct Chunk {
    size: [u8; 18],
    size_len: u8,
    data: Bytes,
    trailer: bool,
}

impl Chunk {
    fn pieces(&self) -> [&[u8]; 3] {
        let trailer: &[u8] = if self.trailer { b"\r\n" } else { b"" };
        [
            &self.size[..usize::from(self.size_len)],
            &self.data,
            trailer,
        ]
    }
}

/// Bytes queued for one vectored write: the response head (until written), then frames.
struct Out {
    head: Bytes,
    chunks: [Chunk; BATCH],
    /// Chunks in use.
    len: usize,
    /// How much of the above has been written.
    written: usize,
}

impl Out {
    fn head(head: Bytes) -> Out {
        Out {
            head,
            chunks: Default::default(),
            len: 0,
            written: 0,
        }
    }

    fn pieces(&self) -> impl Iterator<Item = &[u8]> {
        std::iter::once(&self.head[..])
            .chain(self.chunks[..self.len].iter().flat_map(Chunk::pieces))
    }

    fn remaining(&self) -> usize {
        self.pieces().map(<[u8]>::len).sum::<usize>() - self.written
    }

    /// Whether another frame fits in this batch (the head and the first frame go out in one
    /// write, and so do frames that are ready together).
    fn takes_frame(&self) -> bool {
        self.len < BATCH
    }

    /// Queues `data`, as a chunk when `chunked`. An empty frame is skipped: as a chunk it
    /// would end the body. Call only when [`Out::takes_frame`].
    fn frame(&mut self, data: Bytes, chunked: bool) {
        if data.is_empty() {
            return;
        }
        let chunk = &mut self.chunks[self.len];
        chunk.size_len = 0;
        if chunked {
            chunk.size_len = chunk_size_line(data.len(), &mut chunk.size) as u8;
        }
        chunk.trailer = chunked;
        chunk.data = data;
        self.len += 1;
    }

    /// Fills `into` with what remains to be written; returns how many slices it used.
    fn slices<'s>(&'s self, into: &mut [IoSlice<'s>; SLICES]) -> usize {
        let mut skip = self.written;
        let mut count = 0;
        for piece in self.pieces() {
            if skip >= piece.len() {
                skip -= piece.len();
                continue;
            }
            into[count] = IoSlice::new(&piece[skip..]);
            skip = 0;
            count += 1;
        }
        count
    }

    /// Counts `written` bytes as sent; once all are, empties the batch (releasing the shared
    /// frames at once).
    fn advance(&mut self, written: usize) {
        self.written += written;
        if self.remaining() == 0 {
            self.head = Bytes::new();
            for chunk in &mut self.chunks[..self.len] {
                chunk.data = Bytes::new();
            }
            self.len = 0;
            self.written = 0;
        }
    }
}

/// Writes `len` as a chunk-size line (`1a2\r\n`) into `out`; returns its length.
fn chunk_size_line(len: usize, out: &mut [u8; 18]) -> usize {
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1) as usize;
    for (i, slot) in out[..digits].iter_mut().enumerate() {
        let nibble = (len >> (4 * (digits - 1 - i))) & 0xf;
        *slot = b"0123456789abcdef"[nibble];
    }
    out[digits] = b'\r';
    out[digits + 1] = b'\n';
    digits + 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::Router;

    fn router() -> Router {
        Router::new(
            ["/api/v2/stream", "/api/v2/configurations/{id}/stream"]
                .into_iter()
                .map(|text| crate::router::PathPattern::parse(text).expect("pattern"))
                .collect(),
        )
    }

    fn head(text: &str) -> Parse {
        parse(text.as_bytes(), &router())
    }

    #[test]
    fn a_plain_get_of_a_stream_route_is_served_here() {
        let text = "GET /api/v2/configurations/abc/stream?user_token=t HTTP/1.1\r\nHost: x\r\n\
                    Cookie: a=1\r\nCookie: b=2\r\nConnection: keep-alive, Close\r\n\r\nGET /next";
        let Parse::Head(head) = head(text) else {
            panic!("served here");
        };
        assert_eq!(head.index, 1);
        assert_eq!(head.params, ["abc"]);
        assert_eq!(head.parts.uri.query(), Some("user_token=t"));
        assert_eq!(head.parts.headers.get_all("cookie").iter().count(), 2);
        assert!(!head.keep_alive, "Connection: close is honoured");
        assert_eq!(
            &text[head.len..],
            "GET /next",
            "a pipelined request is left unread"
        );
    }

    #[test]
    fn everything_else_goes_to_hyper() {
        for text in [
            "POST /api/v2/stream HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /api/v2/stream/status HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /api/v2/stream HTTP/1.0\r\n\r\n",
            "GET /api/v2/stream HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            "GET /api/v2/stream HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /api/v2/stream HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            "GET /api/v2/stream HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET http://x/api/v2/stream HTTP/1.1\r\n\r\n",
            "GET /api/v2/configurations/%2e%2e/stream HTTP/1.1\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET /api/v2/stream HTTP/1.1\r\nBad Header: x\r\n\r\n",
        ] {
            assert!(matches!(head(text), Parse::NotOurs), "{text:?}");
        }
        assert!(matches!(
            head("GET /api/v2/stream HTTP/1.1\r\nHost"),
            Parse::Partial
        ));
        assert!(matches!(
            head("GET /api/v2/stream HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
            Parse::Head(_)
        ));
    }

    #[test]
    fn chunk_size_lines_are_lowercase_hex() {
        for (len, line) in [
            (0, "0\r\n"),
            (1, "1\r\n"),
            (15, "f\r\n"),
            (16, "10\r\n"),
            (0x1a2b, "1a2b\r\n"),
            (usize::MAX, "ffffffffffffffff\r\n"),
        ] {
            let mut out = [0; 18];
            let n = chunk_size_line(len, &mut out);
            assert_eq!(std::str::from_utf8(&out[..n]).expect("ascii"), line);
        }
    }

    #[test]
    fn queued_bytes_survive_partial_writes() {
        let mut out = Out::head(Bytes::from_static(b"HEAD"));
        out.frame(Bytes::from_static(b"hello"), true);
        out.frame(Bytes::new(), true);
        out.frame(Bytes::from_static(b"0123456789abcdef"), true);
        assert_eq!(out.len, 2, "empty frames are skipped");
        let mut written = Vec::new();
        while out.remaining() > 0 {
            let mut slices = [IoSlice::new(&[]); SLICES];
            let count = out.slices(&mut slices);
            // Write at most 3 bytes at a time, across slice boundaries.
            let mut take = 3;
            for slice in &slices[..count] {
                let n = slice.len().min(take);
                written.extend_from_slice(&slice[..n]);
                take -= n;
            }
            out.advance(3 - take);
        }
        assert_eq!(written, b"HEAD5\r\nhello\r\n10\r\n0123456789abcdef\r\n");
        assert_eq!(out.len, 0, "a written batch is emptied");
        out.frame(Bytes::from_static(b"x"), false);
        assert_eq!(out.remaining(), 1, "the head is not written twice");
    }

    #[test]
    fn a_batch_holds_at_most_batch_frames() {
        let mut out = Out::head(Bytes::new());
        for _ in 0..BATCH {
            assert!(out.takes_frame());
            out.frame(Bytes::from_static(b"ab"), true);
        }
        assert!(!out.takes_frame());
        let mut slices = [IoSlice::new(&[]); SLICES];
        assert_eq!(out.slices(&mut slices), 3 * BATCH);
        assert_eq!(out.remaining(), BATCH * "2\r\nab\r\n".len());
    }
}
