//! The HTTP/1.1 fast path for event streams: no per-connection buffers.
//!
//! An event stream holds its HTTP/1.1 connection for hours, and hyper keeps a read buffer and
//! a write buffer of 8 KiB or more for a connection's whole life: two thirds of what an idle
//! stream cost (BENCHMARKS.md). So an HTTP/1.1 connection (plaintext, or TLS with ALPN
//! `http/1.1`) starts here. This phase reads the request head itself (with `httparse`, as hyper
//! does) into a buffer that lives only until the head is parsed, and routes it once. When the
//! request is a plain `GET` of a stream route, the request phases answer it; if the answer is
//! an event stream, it is written here: the response head once, together with the first
//! frame, then every frame the hub shares as one chunk straight from its `Bytes` (one vectored
//! write, no copy), and nothing is kept per connection but the stream's cursor.
//!
//! Anything else is handed to hyper together with the bytes read so far ([`Rewind`]), so
//! hyper serves it exactly as if it had read them itself, errors included: another route, a
//! request body, an upgrade, `Expect`, h2c, HTTP/1.0, a malformed or large head. So is an
//! answer that is not an event stream (a 401, a 429...): hyper reads the same head again and
//! writes that answer as it writes every other, keeping the connection for the next request.

mod detect;
mod writer;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::BytesMut;
use http::{Request, Response};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::rewind::Rewind;
use crate::ops::shutdown::ShutdownSignal;
use crate::origin::ClientBody;
use crate::request::body::ProxyBody;
use crate::request::router::{Route, RouteError};
use crate::request::{App, ConnInfo};
pub use detect::{Head, Parsed, parse_head};
use detect::{Step, read_head};
use writer::{Pump, encode_head};

/// How long closing a connection (TLS `close_notify`, FIN) may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// How a connection left the fast path.
pub enum Outcome<I> {
    /// It was served and is closed.
    Closed,
    /// Hyper serves it from here, starting with the bytes already read. With an answer, the
    /// first request hyper reads has been through the request phases already: hyper writes
    /// this answer for it instead of handling it again (boxed: a response is large, and most
    /// hand-offs carry none).
    Handoff(Rewind<I>, Option<Box<Response<ProxyBody>>>),
}

/// Serves a stream request on an HTTP/1.1 connection, or hands the connection to hyper.
/// `header_timeout` bounds the request head; `shutdown` closes a connection that is waiting
/// for one.
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
    let step = tokio::select! {
        step = tokio::time::timeout(header_timeout, read_head(&mut io, &mut buf, &app.router)) => step,
        _ = shutdown.fired() => return Outcome::Closed,
    };
    let (head, routed) = match step {
        Ok(Ok(Step::Serve(head, routed))) => (head, routed),
        Ok(Ok(Step::NotOurs)) => return Outcome::Handoff(Rewind::new(buf.freeze(), io), None),
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
    let request = head.request.map(|()| ClientBody::Empty);
    let response = respond(app, request, routed, conn).await;
    if !response.body().is_stream() {
        // Hyper reads this head again from the start and writes the answer.
        return Outcome::Handoff(Rewind::new(buf.freeze(), io), Some(Box::new(response)));
    }
    let (parts, body) = response.into_parts();
    // A stream ends only when the proxy ends it (shutdown); nothing after it is answered, so
    // its connection keeps no read buffer.
    drop(buf);
    let head_bytes = encode_head(&parts);
    drop(parts);
    let mut pump = Pump::new(&mut io, body, head_bytes);
    if let Err(error) = std::future::poll_fn(|cx| pump.poll(cx)).await {
        tracing::debug!(peer = %conn.peer, %error, "connection ended");
        return Outcome::Closed;
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, io.shutdown()).await;
    Outcome::Closed
}

/// The request phases for a parsed and routed head, boxed: authentication's future is large
/// and lives only until the response head, so it must not size the task that then holds the
/// stream for hours.
fn respond(
    app: &App,
    request: Request<ClientBody>,
    routed: Result<Route, RouteError>,
    conn: ConnInfo,
) -> Pin<Box<dyn Future<Output = Response<ProxyBody>> + Send + '_>> {
    Box::pin(app.handle_routed(request, routed, conn))
}
