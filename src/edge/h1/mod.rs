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

mod detect;
mod writer;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use http::Request;
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::rewind::Rewind;
use crate::ops::shutdown::ShutdownSignal;
use crate::origin::ClientBody;
use crate::request::body::ProxyBody;
use crate::request::{App, ConnInfo};
use detect::{Head, Step, read_head};
use writer::{Pump, encode_head};

/// How long closing a connection (TLS `close_notify`, FIN) may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

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
            parts, keep_alive, ..
        } = *head;
        let request = Request::from_parts(parts, ClientBody::Empty);
        let response = respond(app, request, conn).await;
        let (parts, body) = response.into_parts();
        let streaming = body.is_stream();
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

/// The request phases for a parsed head, boxed: authentication's future is large and lives
/// only until the response head, so it must not size the task that then holds the stream for
/// hours.
fn respond(
    app: &App,
    request: Request<ClientBody>,
    conn: ConnInfo,
) -> Pin<Box<dyn Future<Output = http::Response<ProxyBody>> + Send + '_>> {
    Box::pin(app.handle(request, conn))
}
