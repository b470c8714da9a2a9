//! Our own HTTP/1.1 exchange with the origin, for requests without a streamed body (polls,
//! validation calls, passthrough `GET`s): one request written in one write, the answer's head
//! parsed with `httparse`, the body taken out of the read buffer as it arrives.
//!
//! Hyper's client dispatcher did the same with more per-request work (a request and an answer
//! channel, its own buffers and state machine), and passthrough spends most of its time in
//! such per-request work (BENCHMARKS.md, issue 15.1). A request with a streamed body (a
//! client's POST) still goes through hyper, which writes the body while it arrives.
//!
//! The connection keeps its read and write buffers from one request to the next.

mod body;
mod head;
#[cfg(test)]
mod tests;

use std::future::poll_fn;
use std::io;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderValue, Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub(super) use body::Decoder;
use body::{Framing, Step};

use super::connect::OriginStream;
use super::{ClientBody, Stated};

/// The most bytes one read takes from the connection.
const READ_CHUNK: usize = 16 * 1024;
/// Below this much free space the read buffer is grown (or, once every piece handed out of
/// it is gone, reclaimed in place) before a read.
const MIN_READ_SPACE: usize = 4 * 1024;
/// A body up to this size is copied behind the head, so both go in one write.
const INLINE_BODY: usize = 16 * 1024;

/// One HTTP/1.1 connection we speak ourselves.
pub(super) struct Connection {
    /// The socket, plaintext or TLS.
    io: OriginStream,
    /// What was read and not yet used; kept (and reused) from one exchange to the next.
    read: BytesMut,
    /// The request head being written; kept so its allocation serves every request.
    write: Vec<u8>,
}

/// The answer's head, and how to read its body.
pub(super) struct Answer {
    /// Status, version and headers.
    pub(super) response: Response<()>,
    /// Takes the body out of the connection's reads.
    pub(super) decoder: Decoder,
    /// The connection can take another request once the body has ended.
    pub(super) keep_alive: bool,
}

/// Why an exchange failed.
pub(super) struct Failure {
    /// What went wrong (`InvalidData` for a malformed answer).
    pub(super) error: io::Error,
    /// No byte of an answer arrived: the origin may not have seen the request, so an
    /// idempotent one may be sent again (the origin may have closed an idle connection).
    pub(super) unanswered: bool,
}

impl Failure {
    fn unanswered(error: io::Error) -> Failure {
        Failure {
            error,
            unanswered: true,
        }
    }

    fn answered(error: io::Error) -> Failure {
        Failure {
            error,
            unanswered: false,
        }
    }
}

impl Connection {
    /// A new connection, with nothing exchanged yet.
    pub(super) fn new(io: OriginStream) -> Connection {
        Connection {
            io,
            read: BytesMut::new(),
            write: Vec::new(),
        }
    }

    /// Sends `request` (its body must be `Empty` or `Full`) and reads the answer's head.
    /// `host` is the connection's own `Host`, sent when `Host` is stated `None`, or when it is
    /// not stated and the request has none; `stated` replace the request's lines of their
    /// names.
    pub(super) async fn exchange(
        &mut self,
        request: &Request<ClientBody>,
        host: Option<&HeaderValue>,
        stated: &Stated<'_>,
    ) -> Result<Answer, Failure> {
        self.write.clear();
        let closing = head::encode_request(request, host, stated, &mut self.write);
        let mut after = None;
        if let ClientBody::Full(Some(bytes)) = request.body() {
            if bytes.len() <= INLINE_BODY {
                self.write.extend_from_slice(bytes);
            } else {
                after = Some(bytes);
            }
        }
        self.io
            .write_all(&self.write)
            .await
            .map_err(Failure::unanswered)?;
        if let Some(bytes) = after {
            self.io
                .write_all(bytes)
                .await
                .map_err(Failure::unanswered)?;
        }
        self.io.flush().await.map_err(Failure::unanswered)?;

        // A connection is lent out with nothing unread, so any byte from here is the answer's.
        let mut received = false;
        let response = loop {
            if let Some(response) =
                head::parse_response(&mut self.read).map_err(Failure::answered)?
            {
                break response;
            }
            let failed = |error| {
                if received {
                    Failure::answered(error)
                } else {
                    Failure::unanswered(error)
                }
            };
            match poll_fn(|cx| self.poll_fill(cx)).await {
                Ok(0) if received => {
                    return Err(failed(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the origin closed the connection in the middle of the answer's head",
                    )));
                }
                Ok(0) => {
                    return Err(failed(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the origin closed the connection without answering",
                    )));
                }
                Ok(_) => received = true,
                Err(error) => return Err(failed(error)),
            }
        };
        let Framing {
            decoder,
            keep_alive,
        } = body::framing(request.method(), closing, &response).map_err(Failure::answered)?;
        Ok(Answer {
            response,
            decoder,
            keep_alive,
        })
    }

    /// The next piece of the answer's body, read from the connection as needed.
    pub(super) fn poll_body(
        &mut self,
        decoder: &mut Decoder,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Bytes>>> {
        loop {
            match decoder.decode(&mut self.read) {
                Ok(Step::Data(data)) => return Poll::Ready(Some(Ok(data))),
                Ok(Step::Done) => return Poll::Ready(None),
                Ok(Step::More) => {}
                Err(error) => return Poll::Ready(Some(Err(error))),
            }
            match self.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    return match decoder.eof() {
                        Ok(()) => Poll::Ready(None),
                        Err(error) => Poll::Ready(Some(Err(error))),
                    };
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(error)) => return Poll::Ready(Some(Err(error))),
            }
        }
    }

    /// Whether bytes arrived that no exchange has used (after a body: the connection is out
    /// of step with the origin and must not be reused).
    pub(super) fn has_unread(&self) -> bool {
        !self.read.is_empty()
    }

    /// Whether an idle connection is still open and quiet: one read that must find nothing
    /// (an end of file, an error or unasked bytes mean it cannot carry a request).
    pub(super) fn poll_idle(&mut self, cx: &mut Context<'_>) -> bool {
        !self.has_unread() && self.poll_fill(cx).is_pending()
    }

    /// Reads what is there (at most [`READ_CHUNK`]) behind the unread bytes.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read.capacity() - self.read.len() < MIN_READ_SPACE {
            self.read.reserve(READ_CHUNK);
        }
        let mut space = (&mut self.read).limit(READ_CHUNK);
        let read = std::pin::pin!(self.io.read_buf(&mut space));
        std::future::Future::poll(read, cx)
    }
}
