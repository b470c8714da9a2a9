//! Write coalescing on HTTP/2 connections: the frames of many streams in one system call.
//!
//! hyper polls each HTTP/2 stream's body in a task of its own, and a stream that sends data
//! wakes its connection's task, which tokio runs next (the worker's LIFO slot). When the hub
//! wakes the subscribers of one event, the connection's task therefore ran between every two
//! of its streams and wrote each stream's DATA frame with a system call of its own: 0.9
//! writes per delivered event with 100 streams per connection (BENCHMARKS.md, "CPU per
//! delivered event"), where one write per connection would do. [`Coalesce`] defers the first
//! write after a flush by one turn of the scheduler: the task wakes itself and yields, which
//! puts it behind the tasks already queued (not in the LIFO slot), so the streams woken with
//! it queue their frames meanwhile, and h2 writes them together when it runs again. (Waiting
//! longer, with `tokio::task::yield_now`, which resumes only once the worker has nothing else
//! queued, gathered less and added latency: 0.23 writes per event against 0.10, BENCHMARKS.md.)
//! A batch that is already large ([`GATHERED`]) is not held back. A write that is deferred is
//! not lost: nothing was taken, and h2 offers it again (with whatever it gathered since).
//!
//! Only HTTP/2 connections wait: hyper serves plaintext connections of both protocols
//! through the same IO, so the wrapper turns itself on when the first bytes read are the
//! HTTP/2 client preface (h2c, or h2 after TLS), and stays off otherwise (an HTTP/1.1
//! response is one stream's: there is nothing to gather, and passthrough would only wait).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A batch this large goes out at once: it already holds many streams' frames (a busy
/// connection), and another turn would add latency for little more to gather.
const GATHERED: usize = 4 * 1024;
/// What an HTTP/2 client sends first.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether the connection speaks HTTP/2, as far as its first bytes tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// This many bytes of the preface read so far (writes go straight through meanwhile).
    Preface(usize),
    /// HTTP/2: the first write of each batch waits its turn.
    Http2,
    /// Anything else: every call goes straight through.
    Other,
}

/// A connection whose first write after each flush waits one turn of the scheduler, once it
/// is known to speak HTTP/2.
pub(super) struct Coalesce<I> {
    /// The connection.
    io: I,
    /// Whether writes are deferred at all.
    protocol: Protocol,
    /// The current batch has waited its turn; writes go through until the next flush.
    waited: bool,
}

impl<I> Coalesce<I> {
    /// Wraps `io`, whose protocol its first bytes read will tell.
    pub(super) fn new(io: I) -> Coalesce<I> {
        Coalesce {
            io,
            protocol: Protocol::Preface(0),
            waited: false,
        }
    }

    /// Matches bytes just read against the rest of the preface.
    fn saw(&mut self, read: &[u8]) {
        if let Protocol::Preface(matched) = self.protocol {
            let take = read.len().min(PREFACE.len() - matched);
            self.protocol = if read[..take] != PREFACE[matched..matched + take] {
                Protocol::Other
            } else if matched + take == PREFACE.len() {
                Protocol::Http2
            } else {
                Protocol::Preface(matched + take)
            };
        }
    }

    /// `Pending` once per batch on HTTP/2 when the batch is still small (`len` bytes), after
    /// waking the task: its turn comes after the tasks already queued.
    fn wait_turn(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<()> {
        if self.protocol != Protocol::Http2 || self.waited || len >= GATHERED {
            return Poll::Ready(());
        }
        self.waited = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Coalesce<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        this.saw(&buf.filled()[before..]);
        read
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Coalesce<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.wait_turn(cx, buf.len()));
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let len = bufs.iter().map(|buf| buf.len()).sum();
        ready!(this.wait_turn(cx, len));
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.io).poll_flush(cx);
        if flushed.is_ready() {
            this.waited = false;
        }
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// `io` after reading `first` from its peer.
    async fn after_reading(
        first: &[u8],
    ) -> (Coalesce<tokio::io::DuplexStream>, tokio::io::DuplexStream) {
        let (server, mut client) = tokio::io::duplex(2 * GATHERED);
        client.write_all(first).await.expect("write");
        let mut io = Coalesce::new(server);
        let mut read = vec![0; first.len()];
        io.read_exact(&mut read).await.expect("read");
        (io, client)
    }

    /// A task queued on this (current-thread) runtime; the flag says whether it has run.
    fn queued() -> Arc<AtomicBool> {
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        tokio::spawn(async move { flag.store(true, Ordering::Relaxed) });
        ran
    }

    #[tokio::test]
    async fn on_http2_the_first_write_of_a_batch_waits_for_the_queued_tasks() {
        let (mut io, mut client) = after_reading(PREFACE).await;
        let first = queued();
        io.write_all(b"frame").await.expect("write");
        assert!(
            first.load(Ordering::Relaxed),
            "the first write waited for the queued task"
        );
        let second = queued();
        io.write_all(b"frame").await.expect("write");
        assert!(
            !second.load(Ordering::Relaxed),
            "the rest of the batch does not wait"
        );
        io.flush().await.expect("flush");
        let third = queued();
        io.write_all(b"frame").await.expect("write");
        assert!(
            third.load(Ordering::Relaxed),
            "after a flush, a new batch waits again"
        );
        let mut read = [0; 15];
        client.read_exact(&mut read).await.expect("read");
        assert_eq!(
            &read, b"frameframeframe",
            "nothing deferred is lost or doubled"
        );
    }

    #[tokio::test]
    async fn a_large_batch_goes_out_at_once() {
        let (mut io, _client) = after_reading(PREFACE).await;
        let task = queued();
        io.write_all(&[0; GATHERED]).await.expect("write");
        assert!(!task.load(Ordering::Relaxed), "the write did not wait");
    }

    #[tokio::test]
    async fn other_protocols_and_writes_before_the_preface_go_straight_through() {
        for first in [
            &b"GET /api HTTP/1.1\r\n"[..],
            &PREFACE[..10],             // not yet the whole preface
            &b"PRI * HTTP/1.1\r\n"[..], // a near miss
        ] {
            let (mut io, _client) = after_reading(first).await;
            let task = queued();
            io.write_all(b"frame").await.expect("write");
            assert!(
                !task.load(Ordering::Relaxed),
                "{first:?}: the write did not wait"
            );
        }
    }
}
