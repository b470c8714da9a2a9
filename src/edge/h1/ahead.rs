//! The client's side of a fast-path connection while an answer is prepared, and while it
//! waits to be written (for its body or for the socket).
//!
//! What the client sends meanwhile (its next, pipelined, requests) is kept, up to
//! [`MAX_PIPELINED`]. An end of file with nothing kept is the client leaving: the answer is
//! dropped as soon as that is seen, and with it the origin request or the body still coming
//! from the origin, as hyper does, instead of holding them (and the client's connection slot)
//! until the next write, which a quiet origin never causes. An end of file after bytes are
//! kept is a half-close (`shutdown(SHUT_WR)`, as `nc -N` or a scripted client does): what was
//! sent is answered, as hyper does too.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, ReadBuf};

/// Bytes read ahead while a request is answered; beyond them the client is not read until
/// the answer is written.
const MAX_PIPELINED: usize = 8 * 1024;

/// What the client sent beyond the request being answered.
#[derive(Default)]
pub(super) struct ReadAhead {
    /// Bytes read and not parsed yet: the next requests.
    pub(super) buf: BytesMut,
    /// The client closed its side: nothing more will come.
    eof: bool,
    /// The size of the last request head served: the next head is read into room for one
    /// of that size.
    pub(super) last_head: usize,
}

impl ReadAhead {
    /// Reads what the client has sent so far (up to [`MAX_PIPELINED`] kept). An error when
    /// the client left (an end of file with nothing kept) or its connection failed.
    pub(super) fn poll_client<I: AsyncRead + Unpin>(
        &mut self,
        io: &mut I,
        cx: &mut Context<'_>,
    ) -> io::Result<()> {
        // Not zeroed: a read fills what it returns, and most watches read nothing.
        let mut scratch = [const { MaybeUninit::<u8>::uninit() }; 1024];
        while !self.eof && self.buf.len() < MAX_PIPELINED {
            let mut read = ReadBuf::uninit(&mut scratch);
            match Pin::new(&mut *io).poll_read(cx, &mut read) {
                Poll::Pending => break,
                Poll::Ready(Err(error)) => return Err(error),
                Poll::Ready(Ok(())) if read.filled().is_empty() => {
                    if self.buf.is_empty() {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the client closed the connection",
                        ));
                    }
                    self.eof = true;
                }
                Poll::Ready(Ok(())) => self.buf.extend_from_slice(read.filled()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn poll(ahead: &mut ReadAhead, mut input: &[u8]) -> io::Result<()> {
        let mut cx = Context::from_waker(Waker::noop());
        ahead.poll_client(&mut input, &mut cx)
    }

    #[test]
    fn an_end_of_file_is_leaving_only_when_nothing_was_sent() {
        assert!(poll(&mut ReadAhead::default(), b"").is_err());
        let mut ahead = ReadAhead::default();
        poll(&mut ahead, b"GET / HTTP/1.1\r\n\r\n").expect("a half-close after a request");
        assert!(ahead.eof);
        assert_eq!(&ahead.buf[..], b"GET / HTTP/1.1\r\n\r\n");
        // Once closed, the client is not read again (a read would return the end of file at
        // once, for ever).
        poll(&mut ahead, b"more").expect("not read");
        assert_eq!(ahead.buf.len(), 18);
    }

    #[test]
    fn read_ahead_is_bounded() {
        let mut ahead = ReadAhead::default();
        poll(&mut ahead, &[b'x'; 3 * MAX_PIPELINED]).expect("kept");
        assert!(ahead.buf.len() >= MAX_PIPELINED && ahead.buf.len() < MAX_PIPELINED + 1024);
        assert!(!ahead.eof, "not read to its end");
    }
}
