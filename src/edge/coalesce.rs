//! Write coalescing on HTTP/2 connections: the frames of many streams in one system call.
//!
//! hyper polls each HTTP/2 stream's body in a task of its own, and a stream that sends data
//! wakes its connection's task, which tokio runs next (the worker's LIFO slot). When the hub
//! wakes the subscribers of one event, the connection's task therefore ran between every two
//! of its streams and wrote each stream's DATA frame with a system call of its own: 0.9
//! writes per delivered event with 100 streams per connection (BENCHMARKS.md, "CPU per
//! delivered event"), where one write per connection would do.
//!
//! [`Coalesce`] holds back the first write after a flush while stream tasks of the
//! connection are woken and have not run yet (`woken`: their frames are still to come), and
//! the connection's task sleeps meanwhile; the last of them to run wakes it, and h2 writes
//! what they all queued at once. With nothing woken, the write goes at once. A batch that is
//! already large ([`GATHERED`]) is not held back. A write that is held is not lost: nothing
//! was taken, and h2 offers it again (with whatever it gathered since).
//!
//! Before, the first write after a flush waited one turn of the scheduler (the task woke
//! itself and yielded): the streams queued on the same worker before it were gathered, but
//! not those on the other worker or in the global queue: 0.10 writes per event at 1,000
//! subscribers × 20 events/s, 0.04 with the hold (BENCHMARKS.md). Waiting with
//! `tokio::task::yield_now` gathered less (0.23): h2's wake of the connection for the next
//! frame ran it at once.
//!
//! Only HTTP/2 connections wait: hyper serves plaintext connections of both protocols
//! through the same IO, so the wrapper turns itself on when the first bytes read are the
//! HTTP/2 client preface (h2c, or h2 after TLS), and stays off otherwise (an HTTP/1.1
//! response is one stream's: there is nothing to gather, and passthrough would only wait).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::woken::Woken;

/// A batch this large goes out at once: it already holds many streams' frames (a busy
/// connection). h2 gathers up to 16 KiB of small frames before it writes on its own.
const GATHERED: usize = 15 * 1024;
/// What an HTTP/2 client sends first.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether the connection speaks HTTP/2, as far as its first bytes tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// This many bytes of the preface read so far (writes go straight through meanwhile).
    Preface(usize),
    /// HTTP/2: the first write of each batch waits for the woken stream tasks.
    Http2,
    /// Anything else: every call goes straight through.
    Other,
}

/// A connection whose first write after each flush waits for its woken stream tasks to run,
/// once it is known to speak HTTP/2.
pub(super) struct Coalesce<I> {
    /// The connection.
    io: I,
    /// Whether writes are held at all.
    protocol: Protocol,
    /// The connection's stream tasks woken and not run yet: frames still to come.
    woken: Arc<Woken>,
    /// The current batch was held (or found nothing to wait for); it goes at the next write.
    held: bool,
}

impl<I> Coalesce<I> {
    /// Wraps `io`, whose protocol its first bytes read will tell, of a connection whose
    /// woken stream tasks are counted in `woken`.
    pub(super) fn new(io: I, woken: Arc<Woken>) -> Coalesce<I> {
        Coalesce {
            io,
            protocol: Protocol::Preface(0),
            woken,
            held: false,
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

    /// `Pending` once per batch on HTTP/2 when the batch is still small (`len` bytes) and
    /// stream tasks of the connection are woken: the task is woken once they have run.
    fn wait_turn(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<()> {
        if self.protocol != Protocol::Http2 || self.held || len >= GATHERED {
            return Poll::Ready(());
        }
        self.held = true;
        if self.woken.hold(cx) {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
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
            this.held = false;
        }
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::super::woken::TaskWake;
    use super::*;
    use std::task::Waker;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// `io` after reading `first` from its peer, and the count of its woken stream tasks.
    async fn after_reading(
        first: &[u8],
    ) -> (
        Coalesce<tokio::io::DuplexStream>,
        tokio::io::DuplexStream,
        Arc<Woken>,
    ) {
        let (server, mut client) = tokio::io::duplex(2 * GATHERED);
        client.write_all(first).await.expect("write");
        let woken = Arc::new(Woken::default());
        let mut io = Coalesce::new(server, woken.clone());
        let mut read = vec![0; first.len()];
        io.read_exact(&mut read).await.expect("read");
        (io, client, woken)
    }

    /// A stream task of the connection, woken: its frame is still to come.
    fn woken_task(woken: &Arc<Woken>) -> TaskWake {
        let mut task = TaskWake::new(woken.clone());
        let mut cx = Context::from_waker(Waker::noop());
        task.poll(&mut cx, |cx| cx.waker().wake_by_ref());
        task
    }

    /// Whether a write of `bytes` goes now.
    fn goes(io: &mut Coalesce<tokio::io::DuplexStream>, bytes: &[u8]) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match Pin::new(io).poll_write(&mut cx, bytes) {
            Poll::Ready(written) => {
                assert_eq!(written.expect("write"), bytes.len());
                true
            }
            Poll::Pending => false,
        }
    }

    #[tokio::test]
    async fn on_http2_the_first_write_of_a_batch_waits_until_the_woken_streams_ran() {
        let (mut io, mut client, woken) = after_reading(PREFACE).await;
        let mut cx = Context::from_waker(Waker::noop());
        let mut task = woken_task(&woken);
        assert!(
            !goes(&mut io, b"frame"),
            "a stream's frame is still to come"
        );
        assert!(
            woken.poll_release(&cx).is_pending(),
            "the connection sleeps"
        );
        task.poll(&mut cx, |_| ());
        assert!(woken.poll_release(&cx).is_ready(), "the stream ran");
        assert!(goes(&mut io, b"frame"), "the batch goes");
        assert!(
            goes(&mut io, b"frame"),
            "the rest of the batch does not wait"
        );
        io.flush().await.expect("flush");
        let _again = woken_task(&woken);
        assert!(
            !goes(&mut io, b"frame"),
            "after a flush, a new batch waits again"
        );
        let mut read = [0; 10];
        client.read_exact(&mut read).await.expect("read");
        assert_eq!(&read, b"frameframe", "nothing held is lost or doubled");
    }

    #[tokio::test]
    async fn with_no_stream_woken_a_write_goes_at_once() {
        let (mut io, _client, _woken) = after_reading(PREFACE).await;
        assert!(goes(&mut io, b"frame"));
    }

    #[tokio::test]
    async fn a_large_batch_goes_out_at_once() {
        let (mut io, _client, woken) = after_reading(PREFACE).await;
        let _task = woken_task(&woken);
        assert!(goes(&mut io, &[0; GATHERED]));
    }

    #[tokio::test]
    async fn other_protocols_and_writes_before_the_preface_go_straight_through() {
        for first in [
            &b"GET /api HTTP/1.1\r\n"[..],
            &PREFACE[..10],             // not yet the whole preface
            &b"PRI * HTTP/1.1\r\n"[..], // a near miss
        ] {
            let (mut io, _client, woken) = after_reading(first).await;
            let _task = woken_task(&woken);
            assert!(goes(&mut io, b"frame"), "{first:?}: the write did not wait");
        }
    }
}
