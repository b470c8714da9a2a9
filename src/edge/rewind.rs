//! IO that first replays bytes already read from it.
//!
//! The HTTP/1.1 fast path ([`super::h1`]) reads a request head before it knows whether
//! it will serve the request itself; when it hands the connection to hyper, hyper must see
//! every byte the fast path read and did not answer. [`Rewind`] gives those bytes back, then
//! reads on.
//!
//! The prefix is a view into the fast path's whole read buffer, and `Bytes::advance` keeps
//! that allocation alive; a connection handed to hyper lives on (h2c, keep-alive
//! requests with a body), so the buffer is dropped as soon as the last byte is handed out.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, ReadBuf};

/// `io`, with `prefix` read before anything else.
pub struct Rewind<I> {
    /// Bytes already taken from `io`, still to be handed out; empty and unallocated once
    /// they all were.
    prefix: Bytes,
    /// The connection.
    io: I,
}

impl<I> Rewind<I> {
    /// Replays `prefix`, then reads from `io`.
    pub fn new(prefix: Bytes, io: I) -> Rewind<I> {
        Rewind { prefix, io }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.is_empty() {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let n = this.prefix.len().min(buf.remaining());
        buf.put_slice(&this.prefix[..n]);
        this.prefix.advance(n);
        if this.prefix.is_empty() {
            // Frees the read buffer the prefix was a view into.
            this.prefix = Bytes::new();
        }
        Poll::Ready(Ok(()))
    }
}

super::write_through::write_through!(Rewind);

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn replays_the_prefix_then_reads_on_in_small_reads_too() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b" world").await.expect("write");
        drop(client);
        let mut io = Rewind::new(Bytes::from_static(b"hello"), server);
        let mut first = [0u8; 3];
        io.read_exact(&mut first).await.expect("read");
        assert_eq!(&first, b"hel");
        let mut rest = Vec::new();
        io.read_to_end(&mut rest).await.expect("read");
        assert_eq!(rest, b"lo world");
    }

    #[tokio::test]
    async fn lets_go_of_the_read_buffer_once_replayed() {
        let (_client, server) = tokio::io::duplex(64);
        // The fast path's buffer: larger than the prefix it hands over.
        let buffer = Bytes::from(vec![7u8; 8192]);
        let mut io = Rewind::new(buffer.slice(..100), server);
        let mut head = [0u8; 100];
        io.read_exact(&mut head).await.expect("read");
        assert!(buffer.is_unique(), "the rewind still holds the read buffer");
    }
}
