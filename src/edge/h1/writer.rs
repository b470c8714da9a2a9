//! Writing answers on the HTTP/1.1 fast path: the head once, together with the first frame,
//! then every frame as it comes straight from its `Bytes` (one vectored write, no copy), up
//! to [`BATCH`] ready frames per system call. An event stream's frames, shared by every
//! subscriber, go out as chunks, and while it is open the read side is watched, so a client
//! that closes is released at once. Other answers (passthrough, refusals) are framed by their
//! length when it is known, else chunked.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::SystemTime;

use bytes::Bytes;
use http::{StatusCode, header, response};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::ahead::ReadAhead;
use crate::request::body::ProxyBody;

/// Bytes a client may send on a connection whose event stream is open before it is closed:
/// nothing can be answered on it until the stream ends, so it is read and dropped, not kept.
const MAX_DISCARDED: usize = 16 * 1024;
/// The chunked encoding's last chunk.
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// How an answer's body is framed on the wire, which this writer states itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body: a 204 or 304 answer (RFC 9112 §6.3).
    Empty,
    /// Exactly this many bytes, announced by `content-length`.
    Length(u64),
    /// Chunks as they come: an event stream, or a body of unknown length.
    Chunked,
}

impl Framing {
    /// The framing for an answer with this status and body.
    pub(super) fn of(status: StatusCode, body: &ProxyBody) -> Framing {
        if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            return Framing::Empty;
        }
        match body.size_hint().exact() {
            Some(len) if !body.is_stream() => Framing::Length(len),
            _ => Framing::Chunked,
        }
    }
}

/// An answer's status line and headers, with its framing and, when `close`, the connection
/// closed after it.
pub(super) fn encode_head(parts: &response::Parts, framing: Framing, close: bool) -> Vec<u8> {
    // A plain vector, written from and dropped: freezing it into `Bytes` would allocate again
    // (`Bytes::from(Vec)` with spare capacity does).
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut line = |name: &[u8], value: &[u8]| {
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    };
    // Whether the answer has a `Date`, seen on the way (a lookup would hash the name).
    let mut dated = false;
    for (name, value) in &parts.headers {
        // Framing and connection handling are this writer's to state.
        if !matches!(
            *name,
            header::CONTENT_LENGTH | header::TRANSFER_ENCODING | header::CONNECTION
        ) {
            dated |= *name == header::DATE;
            line(name.as_str().as_bytes(), value.as_bytes());
        }
    }
    if !dated {
        line(
            b"date",
            httpdate::fmt_http_date(SystemTime::now()).as_bytes(),
        );
    }
    match framing {
        Framing::Empty => {}
        Framing::Length(len) => line(
            b"content-length",
            itoa::Buffer::new().format(len).as_bytes(),
        ),
        Framing::Chunked => line(b"transfer-encoding", b"chunked"),
    }
    if close {
        line(b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Writes one answer: its head, then its body's frames as they come (as chunks when
/// chunked).
pub(super) struct Pump<'a, I> {
    /// The client's connection.
    io: &'a mut I,
    /// The answer's frames.
    body: ProxyBody,
    /// How they are framed.
    framing: Framing,
    /// Body bytes queued so far, held to a `content-length`.
    sent: u64,
    /// What is queued for the socket.
    out: Out,
    /// The body has ended (and, when chunked, the last chunk is queued).
    ended: bool,
    /// The client's side, read while the answer waits (for its body or for the socket), so a
    /// client that leaves then is seen at once.
    watch: Watch<'a>,
}

/// What is done with what the client sends while its answer is written.
enum Watch<'a> {
    /// An event stream ends only when the proxy ends it, so nothing sent on its connection
    /// can be answered: it is read and dropped, this many bytes so far (bounded).
    Discard(usize),
    /// Any other answer: it is the client's next request, kept.
    Keep(&'a mut ReadAhead),
}

impl<'a, I: AsyncRead + AsyncWrite + Unpin> Pump<'a, I> {
    /// A writer of an event stream or of another answer, whose client's next requests go
    /// to `ahead`.
    pub(super) fn new(
        io: &'a mut I,
        body: ProxyBody,
        head: Vec<u8>,
        framing: Framing,
        ahead: &'a mut ReadAhead,
    ) -> Self {
        Pump {
            io,
            watch: if body.is_stream() {
                Watch::Discard(0)
            } else {
                Watch::Keep(ahead)
            },
            // An answer with no body (204, 304) is ended at once, its body dropped (see `end`).
            body: if framing == Framing::Empty {
                ProxyBody::Full(None)
            } else {
                body
            },
            framing,
            sent: 0,
            out: Out::head(head),
            ended: framing == Framing::Empty,
        }
    }

    /// Ready once the whole response is written and flushed; an error if the connection
    /// failed or the client closed it.
    pub(super) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let written = self.poll_write(cx);
        // The client is watched while the answer waits (for its body or for the socket), so
        // that its leaving is seen then: an answer written at once needs no watch, and each
        // watch is a read attempt (a readiness check and a waker's registration, ~300
        // instructions per passthrough request).
        if written.is_pending() {
            match &mut self.watch {
                Watch::Discard(discarded) => discard_client(&mut *self.io, discarded, cx)?,
                Watch::Keep(ahead) => ahead.poll_client(&mut *self.io, cx)?,
            }
        }
        written
    }

    /// Writes what the body gives until it waits or ends.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if !self.ended && self.out.takes_frame() {
                match Pin::new(&mut self.body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            self.queue(data)?;
                        }
                        // A body that knows it is done is ended before its last bytes are
                        // written: see `end`.
                        if self.body.is_end_stream() {
                            self.end()?;
                        }
                        continue;
                    }
                    Poll::Ready(Some(Err(error))) => {
                        return Poll::Ready(Err(io::Error::other(error)));
                    }
                    Poll::Ready(None) => {
                        self.end()?;
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

    /// Queues a frame of the body, refusing one that goes past the announced length.
    fn queue(&mut self, data: Bytes) -> io::Result<()> {
        self.sent += data.len() as u64;
        match self.framing {
            Framing::Length(len) if self.sent > len => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the body is longer than its content-length",
            )),
            framing => {
                self.out.frame(data, framing == Framing::Chunked);
                Ok(())
            }
        }
    }

    /// Ends the body: the last chunk, or a check that all the announced bytes came. The body
    /// is dropped here, before the client can read the answer's end: a passthrough body then
    /// gives its origin connection back to the pool, free for the request the client sends
    /// next (on this connection or another), which would otherwise race it to the pool and
    /// open a second connection.
    fn end(&mut self) -> io::Result<()> {
        self.ended = true;
        self.body = ProxyBody::Full(None);
        match self.framing {
            // Behind the frames, not in a frame's slot: the frame just queued may have filled
            // the batch.
            Framing::Chunked => self.out.last_chunk = true,
            Framing::Length(len) if self.sent < len => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the body ended before its content-length",
                ));
            }
            Framing::Length(_) | Framing::Empty => {}
        }
        Ok(())
    }
}

/// Reads and drops what the client sends while its stream is open, so that its closing the
/// connection is seen at once rather than at the next failed write.
fn discard_client<I: AsyncRead + Unpin>(
    io: &mut I,
    discarded: &mut usize,
    cx: &mut Context<'_>,
) -> io::Result<()> {
    let mut scratch = [0u8; 64];
    loop {
        let mut buf = ReadBuf::new(&mut scratch);
        match Pin::new(&mut *io).poll_read(cx, &mut buf) {
            Poll::Pending => return Ok(()),
            Poll::Ready(Err(error)) => return Err(error),
            Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the client closed the connection",
                ));
            }
            Poll::Ready(Ok(())) => {
                *discarded += buf.filled().len();
                if *discarded > MAX_DISCARDED {
                    return Err(io::Error::other(
                        "the client kept sending on a connection with an open event stream",
                    ));
                }
            }
        }
    }
}

/// Most frames queued for one vectored write. A client that keeps up gets each frame as it
/// comes; one that fell behind (or a burst) gets up to this many per system call, which is
/// what a write costs on a busy proxy (see BENCHMARKS.md).
const BATCH: usize = 8;
/// Slices a full batch takes: the head, then a size line, a frame and a CRLF per chunk, then
/// the last chunk.
const SLICES: usize = 1 + 3 * BATCH + 1;

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
    /// The answer's head, emptied (and its memory released) once written.
    head: Vec<u8>,
    /// Frames queued behind it.
    chunks: [Chunk; BATCH],
    /// Chunks in use.
    len: usize,
    /// The chunked body's last chunk follows the frames (it has ended).
    last_chunk: bool,
    /// How much of the above has been written.
    written: usize,
}

impl Out {
    fn head(head: Vec<u8>) -> Out {
        Out {
            head,
            chunks: Default::default(),
            len: 0,
            last_chunk: false,
            written: 0,
        }
    }

    fn pieces(&self) -> impl Iterator<Item = &[u8]> {
        let last: &[u8] = if self.last_chunk { LAST_CHUNK } else { b"" };
        std::iter::once(&self.head[..])
            .chain(self.chunks[..self.len].iter().flat_map(Chunk::pieces))
            .chain(std::iter::once(last))
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
            self.head = Vec::new();
            for chunk in &mut self.chunks[..self.len] {
                chunk.data = Bytes::new();
            }
            self.len = 0;
            self.last_chunk = false;
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

    /// The answer's own `Date` is kept, once; an answer without one gets the proxy's; framing
    /// and connection lines are the writer's, whatever the answer said.
    #[test]
    fn a_head_has_one_date_and_the_writers_framing() {
        let head = |headers: &[(&'static str, &'static str)]| {
            let mut response = http::Response::new(());
            for (name, value) in headers {
                response
                    .headers_mut()
                    .append(*name, http::HeaderValue::from_static(value));
            }
            let (parts, ()) = response.into_parts();
            String::from_utf8(encode_head(&parts, Framing::Length(5), true)).expect("ascii")
        };
        let dated = head(&[
            ("date", "Mon, 07 Dec 2026 01:00:00 GMT"),
            ("content-length", "99"),
            ("connection", "keep-alive"),
            ("x-kept", "yes"),
        ]);
        assert_eq!(
            dated,
            "HTTP/1.1 200 OK\r\ndate: Mon, 07 Dec 2026 01:00:00 GMT\r\nx-kept: yes\r\n\
             content-length: 5\r\nconnection: close\r\n\r\n"
        );
        let undated = head(&[("x-kept", "yes")]);
        assert_eq!(undated.matches("\r\ndate: ").count(), 1, "{undated}");
        assert!(undated.ends_with("GMT\r\ncontent-length: 5\r\nconnection: close\r\n\r\n"));
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
        let mut out = Out::head(b"HEAD".to_vec());
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
        let mut out = Out::head(Vec::new());
        for _ in 0..BATCH {
            assert!(out.takes_frame());
            out.frame(Bytes::from_static(b"ab"), true);
        }
        assert!(!out.takes_frame());
        let mut slices = [IoSlice::new(&[]); SLICES];
        assert_eq!(out.slices(&mut slices), 3 * BATCH);
        assert_eq!(out.remaining(), BATCH * "2\r\nab\r\n".len());
        // A body that ends with the frame that filled the batch: its last chunk follows.
        out.last_chunk = true;
        let mut slices = [IoSlice::new(&[]); SLICES];
        assert_eq!(out.slices(&mut slices), 3 * BATCH + 1);
        assert_eq!(&slices[3 * BATCH][..], LAST_CHUNK);
        out.advance(out.remaining());
        assert_eq!(out.remaining(), 0, "written once");
    }
}
