//! A server TLS stream that holds no buffer while it is idle.
//!
//! An event stream sits idle for hours between frames. `tokio-rustls` over rustls' buffered
//! `ServerConnection` keeps a 4 KiB record buffer for the connection's whole life (rustls sizes
//! it before every read, also when the socket has nothing). This stream drives rustls'
//! unbuffered API instead, where the caller owns the buffers: ciphertext read from the socket
//! is kept only while it holds an incomplete record, ciphertext to send only until the socket
//! took it, and decrypted bytes only until the reader took them. Each is freed as soon as it
//! is empty, so an idle stream holds rustls' session state alone (BENCHMARKS.md, "TLS streams
//! on rustls' unbuffered API").
//!
//! Bounds: at most one encrypted record of ours waits for the socket (a write first sends what
//! is pending), incoming ciphertext is capped at [`MAX_INCOMING`], and decrypted bytes waiting
//! for the reader never exceed the ciphertext they came from (the socket is read only when
//! the reader asks and nothing decrypted is left).

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::ServerConfig;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, UnbufferedStatus,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes read from the socket per read call, into the stack and then into `incoming`.
const READ_SIZE: usize = 17 * 1024;

/// Plaintext taken per write: one full TLS record.
const MAX_WRITE: usize = 16 * 1024;

/// The most ciphertext kept while rustls waits for the rest of a message: the largest
/// handshake message rustls accepts (64 KiB) plus a record.
const MAX_INCOMING: usize = 64 * 1024 + READ_SIZE;

/// Room for the record header, content type, padding and tag around a record's plaintext;
/// a smaller guess only costs one retry with the size rustls asks for.
const RECORD_OVERHEAD: usize = 64;

/// A TLS connection served over `IO`, after its handshake.
pub struct TlsStream<IO> {
    /// The client's socket (with the edge's write timeout).
    io: IO,
    /// rustls' session state: keys, sequence numbers, the negotiated protocol.
    conn: UnbufferedServerConnection,
    /// Ciphertext read and not yet processed: an incomplete record or handshake message.
    incoming: Vec<u8>,
    /// Ciphertext produced and not yet taken by the socket, from `sent` on.
    outgoing: Vec<u8>,
    /// How much of `outgoing` the socket took.
    sent: usize,
    /// Decrypted bytes the reader has not taken, from `taken` on: the rest of a record that
    /// did not fit the reader's buffer, or data that arrived while writing.
    plain: Vec<u8>,
    /// How much of `plain` the reader took.
    taken: usize,
    /// The client closed: close_notify, or the socket's end. Reads return end of stream.
    read_closed: bool,
    /// Our close_notify is queued; nothing more is encrypted.
    close_queued: bool,
    /// rustls failed the session (its alert, if any, was queued): rustls is not called again,
    /// as its contract asks.
    failed: bool,
}

/// What the caller of [`TlsStream::advance`] wants from the state rustls reaches.
enum Want<'a, 'b> {
    /// Only that rustls' pending work is done (handshake records encoded, data decrypted).
    Progress,
    /// Decrypted bytes, into this buffer.
    Read(&'a mut ReadBuf<'b>),
    /// This plaintext encrypted; the answer is how much of it was taken.
    Write(&'a [u8]),
    /// A close_notify encrypted.
    Close,
}

/// Where [`TlsStream::advance`] stopped.
enum Reached {
    /// More ciphertext from the client is needed.
    NeedsData,
    /// rustls can take data, and the caller's want was met (so many bytes read or written).
    Done(usize),
    /// The client sent close_notify: no more data will come.
    PeerClosed,
    /// Both sides sent close_notify.
    Closed,
}

/// Serves the TLS handshake on `io`; the caller bounds it in time.
pub async fn accept<IO>(config: Arc<ServerConfig>, io: IO) -> io::Result<TlsStream<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let conn = UnbufferedServerConnection::new(config).map_err(invalid)?;
    let mut stream = TlsStream {
        io,
        conn,
        incoming: Vec::new(),
        outgoing: Vec::new(),
        sent: 0,
        plain: Vec::new(),
        taken: 0,
        read_closed: false,
        close_queued: false,
        failed: false,
    };
    if let Err(error) = std::future::poll_fn(|cx| stream.poll_handshake(cx)).await {
        // When rustls refused the handshake, its alert says why (no common protocol or
        // version), so the client's error names it instead of a bare reset.
        let _ = std::future::poll_fn(|cx| stream.poll_send(cx)).await;
        return Err(error);
    }
    Ok(stream)
}

impl<IO: AsyncRead + AsyncWrite + Unpin> TlsStream<IO> {
    /// The protocol chosen by ALPN (`h2` or `http/1.1`), if the client offered one.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let reached = self.advance(Want::Progress)?;
            // Our flight goes out before we wait for the client's answer to it.
            ready!(self.poll_send(cx))?;
            // TLS 1.3 lets the server send before the client's Finished came: the handshake
            // is only done once it did.
            match reached {
                Reached::NeedsData | Reached::Done(_) if self.conn.is_handshaking() => {
                    if ready!(self.poll_fill(cx))? == 0 {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the client closed the connection during the TLS handshake",
                        )));
                    }
                }
                // A client may send its Finished, a request and close_notify in one flight:
                // the request is in `plain`, and reads end after it.
                Reached::NeedsData | Reached::Done(_) | Reached::PeerClosed => {
                    return Poll::Ready(Ok(()));
                }
                Reached::Closed => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the client closed the TLS session during its handshake",
                    )));
                }
            }
        }
    }

    /// Lets rustls process what it has until it needs the socket or meets `want`.
    fn advance(&mut self, mut want: Want<'_, '_>) -> io::Result<Reached> {
        if self.failed {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the TLS session failed earlier",
            ));
        }
        loop {
            let UnbufferedStatus { discard, state } =
                self.conn.process_tls_records(&mut self.incoming);
            let state = match state {
                Ok(state) => state,
                Err(error) => {
                    self.discard(discard);
                    self.fail();
                    return Err(invalid(error));
                }
            };
            // Every failure below still applies the discard and ends the session, as rustls'
            // contract asks, so none returns early.
            let outcome: io::Result<Option<Reached>> = match state {
                ConnectionState::ReadTraffic(mut traffic) => {
                    let mut delivered = 0;
                    let mut failure = None;
                    while let Some(len) = traffic.peek_len() {
                        let room = match &want {
                            Want::Read(buf) => buf.remaining(),
                            _ => 0,
                        };
                        // A record that does not fit waits in rustls for the next read,
                        // unless nothing was delivered yet: then its rest waits in `plain`.
                        if room < len.get() && delivered > 0 {
                            break;
                        }
                        let payload = match traffic.next_record() {
                            Some(Ok(record)) => record.payload,
                            Some(Err(error)) => {
                                failure = Some(invalid(error));
                                break;
                            }
                            None => break,
                        };
                        let now = room.min(payload.len());
                        if let Want::Read(buf) = &mut want {
                            buf.put_slice(&payload[..now]);
                        }
                        self.plain.extend_from_slice(&payload[now..]);
                        delivered += now;
                    }
                    match failure {
                        Some(error) => Err(error),
                        None => Ok((delivered > 0).then_some(Reached::Done(delivered))),
                    }
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    encode_into(&mut self.outgoing, &mut encode).map(|()| None)
                }
                // What was encoded is in `outgoing`, which is sent before anything written
                // after it: to rustls it is as good as transmitted.
                ConnectionState::TransmitTlsData(transmit) => {
                    transmit.done();
                    Ok(None)
                }
                ConnectionState::BlockedHandshake => Ok(Some(Reached::NeedsData)),
                ConnectionState::PeerClosed => {
                    self.read_closed = true;
                    let writing = matches!(want, Want::Write(_) | Want::Close);
                    Ok((!writing).then_some(Reached::PeerClosed))
                }
                ConnectionState::Closed => Ok(Some(Reached::Closed)),
                ConnectionState::WriteTraffic(mut traffic) => match &want {
                    Want::Progress => Ok(Some(Reached::Done(0))),
                    Want::Read(_) => Ok(Some(Reached::NeedsData)),
                    Want::Write(data) => {
                        let data = &data[..data.len().min(MAX_WRITE)];
                        seal(&mut self.outgoing, data.len(), |out| {
                            traffic.encrypt(data, out)
                        })
                        .map(|()| Some(Reached::Done(data.len())))
                    }
                    Want::Close => {
                        let sealed =
                            seal(&mut self.outgoing, 2, |out| traffic.queue_close_notify(out));
                        self.close_queued = sealed.is_ok();
                        sealed.map(|()| Some(Reached::Done(0)))
                    }
                },
                // Early data is never accepted (`max_early_data_size` is 0), and rustls adds
                // states only for features we do not turn on.
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "unexpected TLS state",
                )),
            };
            self.discard(discard);
            match outcome {
                Ok(Some(reached)) => return Ok(reached),
                Ok(None) => {}
                Err(error) => {
                    self.fail();
                    return Err(error);
                }
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> TlsStream<IO> {
    /// Sends the pending ciphertext; frees its buffer once the socket took all of it.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.outgoing.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.outgoing[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.outgoing = Vec::new();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Reads the socket once, adding what came to `incoming`; `0` is the socket's end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.incoming.len() >= MAX_INCOMING {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "TLS message over the size limit",
            )));
        }
        // Read on the stack: an idle connection keeps no read buffer between reads.
        let mut stack = [MaybeUninit::<u8>::uninit(); READ_SIZE];
        let mut buf = ReadBuf::uninit(&mut stack);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
        self.incoming.extend_from_slice(buf.filled());
        Poll::Ready(Ok(buf.filled().len()))
    }

    /// Drops what rustls is done with from the front of `incoming`, freeing it when empty.
    fn discard(&mut self, discard: usize) {
        self.incoming.drain(..discard);
        if self.incoming.is_empty() {
            self.incoming = Vec::new();
        }
    }

    /// Marks the session failed, after taking the records rustls queued for the client (its
    /// alert). While records are queued, rustls hands them out (or plaintext it still holds)
    /// before it would look at `incoming` again, which could fail a second time.
    fn fail(&mut self) {
        self.failed = true;
        // A handful at most; the bound guards against a rustls that kept producing.
        for _ in 0..8 {
            if !self.conn.wants_write() {
                return;
            }
            let UnbufferedStatus { discard, state } =
                self.conn.process_tls_records(&mut self.incoming);
            let encoded = match state {
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    encode_into(&mut self.outgoing, &mut encode).is_ok()
                }
                _ => false,
            };
            self.discard(discard);
            if !encoded {
                return;
            }
        }
    }

    /// Hands out decrypted bytes kept from an earlier record, freeing them once taken.
    fn take_plain(&mut self, buf: &mut ReadBuf<'_>) {
        let rest = &self.plain[self.taken..];
        let n = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..n]);
        self.taken += n;
        if self.taken == self.plain.len() {
            self.plain = Vec::new();
            self.taken = 0;
        }
    }
}

/// Copies a handshake record rustls made to the end of `outgoing`.
fn encode_into(
    outgoing: &mut Vec<u8>,
    encode: &mut EncodeTlsData<'_, ServerConnectionData>,
) -> io::Result<()> {
    let at = outgoing.len();
    outgoing.resize(at + 1024, 0);
    let written = match encode.encode(&mut outgoing[at..]) {
        Err(EncodeError::InsufficientSize(size)) => {
            outgoing.resize(at + size.required_size, 0);
            encode.encode(&mut outgoing[at..])
        }
        other => other,
    }
    .map_err(invalid)?;
    outgoing.truncate(at + written);
    Ok(())
}

/// Encrypts `plain_len` bytes into the end of `outgoing`, growing it to what rustls asks for.
fn seal(
    outgoing: &mut Vec<u8>,
    plain_len: usize,
    mut encrypt: impl FnMut(&mut [u8]) -> Result<usize, EncryptError>,
) -> io::Result<()> {
    let at = outgoing.len();
    outgoing.resize(at + plain_len + RECORD_OVERHEAD, 0);
    let written = match encrypt(&mut outgoing[at..]) {
        Err(EncryptError::InsufficientSize(size)) => {
            outgoing.resize(at + size.required_size, 0);
            encrypt(&mut outgoing[at..])
        }
        other => other,
    }
    .map_err(invalid)?;
    outgoing.truncate(at + written);
    Ok(())
}

/// A TLS failure as an IO error, as hyper expects from its transport.
fn invalid(error: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.taken < this.plain.len() {
            this.take_plain(buf);
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.read_closed || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let reached = this.advance(Want::Read(buf));
            // What reading made rustls queue (an alert: for a refused renegotiation, or the
            // fatal one of a failed session) leaves when it can.
            if let Poll::Ready(Err(error)) = this.poll_send(cx) {
                return Poll::Ready(Err(error));
            }
            match reached? {
                Reached::Done(_) | Reached::PeerClosed | Reached::Closed => {
                    return Poll::Ready(Ok(()));
                }
                Reached::NeedsData => {
                    if ready!(this.poll_fill(cx))? == 0 {
                        this.read_closed = true;
                    }
                }
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.close_queued {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let reached = this.advance(Want::Write(data));
        if reached.is_err() {
            // The failed session's alert, if the socket takes it now.
            let _ = this.poll_send(cx);
        }
        match reached? {
            Reached::Done(n) => {
                // Start sending now; what the socket does not take waits for the next call.
                if let Poll::Ready(Err(error)) = this.poll_send(cx) {
                    return Poll::Ready(Err(error));
                }
                Poll::Ready(Ok(n))
            }
            Reached::Closed | Reached::PeerClosed => {
                Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()))
            }
            Reached::NeedsData => Poll::Ready(Err(io::Error::other(
                "TLS session not ready for data after its handshake",
            ))),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Nothing is gathered while the last record still waits for the socket.
        ready!(this.poll_send(cx))?;
        // One record for what would fit in one: a chunk's size line, frame and CRLF arrive
        // as three slices, and three records would cost three seals and 66 bytes more.
        let total: usize = bufs.iter().map(|b| b.len()).sum::<usize>().min(MAX_WRITE);
        match bufs.iter().find(|b| !b.is_empty()) {
            None => Pin::new(this).poll_write(cx, &[]),
            Some(first) if first.len() >= total => Pin::new(this).poll_write(cx, first),
            Some(_) => {
                let mut gathered = Vec::with_capacity(total);
                for b in bufs {
                    let room = total - gathered.len();
                    gathered.extend_from_slice(&b[..b.len().min(room)]);
                }
                Pin::new(this).poll_write(cx, &gathered)
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        if !this.close_queued {
            this.advance(Want::Close)?;
            // Also when the session was closed both ways: no close_notify is left to send.
            this.close_queued = true;
            ready!(this.poll_send(cx))?;
        }
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
