//! A write timeout for client connections.
//!
//! A client that stops reading fills its socket; the kernel then refuses writes and hyper
//! waits forever, holding the connection, its buffers and its stream slot. [`WriteTimeout`]
//! wraps the connection's IO: once a write has been blocked for longer than the limit, it
//! fails with `TimedOut`, hyper closes the connection, and everything it held is released.
//! A client that reads slowly but steadily is never cut: any progress restarts the clock.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// IO whose writes may not stay blocked longer than a limit.
pub struct WriteTimeout<T> {
    inner: T,
    limit: Duration,
    /// Armed while a write is blocked; fires after `limit`.
    blocked: Option<Pin<Box<Sleep>>>,
}

impl<T> WriteTimeout<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, limit: Duration) -> WriteTimeout<T> {
        WriteTimeout {
            inner,
            limit,
            blocked: None,
        }
    }

    /// Turns a pending write into a timeout once it has been pending for too long.
    fn check<R>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        match result {
            Poll::Pending => {
                let limit = self.limit;
                let timer = self.blocked.get_or_insert_with(|| {
                    Box::pin(tokio::time::sleep_until(Instant::now() + limit))
                });
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client stopped reading: write timed out",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
            ready => {
                self.blocked = None;
                ready
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteTimeout<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.check(cx, result)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.check(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        this.check(cx, result)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_blocked_write_times_out_and_progress_resets_the_clock() {
        let (client, server) = tokio::io::duplex(64);
        let mut server = WriteTimeout::new(server, Duration::from_secs(5));
        let mut client = client;
        // Fill the pipe; the next write blocks.
        server.write_all(&[0; 64]).await.expect("fits");
        let blocked = tokio::spawn(async move {
            let result = server.write_all(&[1; 64]).await;
            (server, result)
        });
        // Reading within the limit lets the write finish.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let mut buf = [0; 64];
        client.read_exact(&mut buf).await.expect("read");
        let (mut server, result) = blocked.await.expect("join");
        result.expect("progress within the limit");
        // Now nobody reads: the write times out after the limit.
        let error = server.write_all(&[2; 128]).await.expect_err("times out");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }
}
