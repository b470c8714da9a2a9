//! The HTTP/1.1 fast path: bodiless `GET`s answered without hyper, and event streams held
//! with no per-connection buffers.
//!
//! An event stream holds its HTTP/1.1 connection for hours, and hyper keeps a read buffer and
//! a write buffer of 8 KiB or more for a connection's whole life: two thirds of what an idle
//! stream cost (BENCHMARKS.md). And a passthrough `GET` (a dashboard's status JSON) costs
//! hyper's server dispatch on top of the proxy's own work (BENCHMARKS.md, passthrough against
//! nginx). So an HTTP/1.1 connection (plaintext, or TLS with ALPN `http/1.1`) starts here.
//! This phase reads each request head itself (with `httparse`, as hyper does), routes it
//! once, and when it is a `GET` with no body the request phases answer it and the answer is
//! written here: the head together with the first frame, then every frame as it comes (one
//! vectored write, no copy; an event stream's frames are shared by all its subscribers). An
//! event stream keeps nothing per connection but the stream's cursor; after any other answer
//! the connection waits for its next request with one read buffer, the size of a head (1 KiB
//! for most), which serves it from one request to the next.
//!
//! Anything else is handed to hyper together with the bytes read so far ([`Rewind`]), so
//! hyper serves it, and the rest of the connection, exactly as if it had read them itself,
//! errors included: another method, a request body, an upgrade, `Expect`, h2c, HTTP/1.0, a
//! malformed or large head.

mod ahead;
mod deadline;
mod detect;
mod writer;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use http::{Request, Response};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::rewind::Rewind;
use crate::http::spare;
use crate::ops::shutdown::ShutdownSignal;
use crate::origin::ClientBody;
use crate::request::body::ProxyBody;
use crate::request::router::{Route, RouteError};
use crate::request::{App, ConnInfo};
use ahead::ReadAhead;
use deadline::Waiting;
pub use detect::{Head, Parsed, parse_head};
use detect::{Step, read_head};
use writer::{Framing, Pump, encode_head};

/// How long closing a connection (TLS `close_notify`, FIN) may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// How a connection left the fast path.
pub enum Outcome<I> {
    /// It was served and is closed.
    Closed,
    /// Hyper serves it from here, starting with the bytes already read; `true` once the fast
    /// path has answered a request on it (hyper then speaks HTTP/1.1 only: h2c by prior
    /// knowledge is allowed only at a connection's start).
    Handoff(Rewind<I>, bool),
}

/// Serves requests on an HTTP/1.1 connection until it closes, holds an event stream, or
/// sends something for hyper, to which it is then handed. `idle_limit` bounds the wait for
/// each request head; `shutdown` closes a connection that is waiting for one.
pub async fn serve<I>(
    mut io: I,
    app: &App,
    conn: ConnInfo,
    idle_limit: Duration,
    shutdown: &ShutdownSignal,
) -> Outcome<I>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let mut ahead = ReadAhead::default();
    // The head wait's timer and shutdown registration, made once per connection, not once
    // per request (BENCHMARKS.md, issue 15.1).
    let mut waiting: Option<Box<Waiting>> = None;
    let mut answered = false;
    loop {
        let due = tokio::time::Instant::now() + idle_limit;
        let Waiting {
            deadline,
            shutdown: watch,
        } = &mut **waiting.get_or_insert_with(|| Waiting::new(shutdown));
        let step = tokio::select! {
            // Shutdown first: a pipelined request already read is not started; a head that
            // is all there is read, even when its deadline has passed.
            biased;
            () = watch.fired() => return close(io).await,
            step = read_head(&mut io, &mut ahead, &app.router) => step,
            () = deadline.until(due) => {
                tracing::debug!(peer = %conn.peer, "no complete request head in time; closed");
                return close(io).await;
            }
        };
        let (head, routed) = match step {
            Ok(Step::Serve(head, routed)) => (head, routed),
            Ok(Step::NotOurs) => {
                return Outcome::Handoff(Rewind::new(ahead.buf.freeze(), io), answered);
            }
            Ok(Step::Eof) => return close(io).await,
            Err(error) => {
                tracing::debug!(peer = %conn.peer, %error, "reading a request head failed");
                return Outcome::Closed;
            }
        };
        // The head is off `ahead.buf` already: what is left is the next request.
        let Head {
            request,
            close: asked_close,
            ..
        } = *head;
        let request = request.map(|()| ClientBody::Empty);
        let Some(response) =
            answer_unless_left(app, request, routed, conn, &mut io, &mut ahead).await
        else {
            tracing::debug!(peer = %conn.peer, "the client left before its answer");
            return Outcome::Closed;
        };
        answered = true;
        let stream = response.body().is_stream();
        if stream {
            // Nothing more is read on this connection.
            waiting = None;
        }
        // An event stream ends only when the proxy ends it, so nothing after it is answered.
        let close_after = asked_close || stream || shutdown.has_fired();
        if close_after {
            // An event stream's connection (or one about to close) keeps no read buffer. A
            // keep-alive connection keeps the room after the head it read, to read the next
            // one into the same allocation (see `detect::take_head`).
            ahead.buf = BytesMut::new();
        }
        if let Err(error) = write_answer(&mut io, response, close_after, &mut ahead).await {
            tracing::debug!(peer = %conn.peer, %error, "connection ended");
            return Outcome::Closed;
        }
        if close_after {
            return close(io).await;
        }
    }
}

/// Closes a connection cleanly (TLS `close_notify`, then FIN), within [`CLOSE_TIMEOUT`].
async fn close<I: AsyncWrite + Unpin, O>(mut io: I) -> Outcome<O> {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, io.shutdown()).await;
    Outcome::Closed
}

/// The request phases' answer, or `None` if the client left first ([`ReadAhead`]): then the
/// phases (an origin request, a validation) are dropped at once, as hyper does, instead of
/// holding an origin connection for a client that is gone.
async fn answer_unless_left<I: AsyncRead + Unpin>(
    app: &App,
    request: Request<ClientBody>,
    routed: Result<Route, RouteError>,
    conn: ConnInfo,
    io: &mut I,
    ahead: &mut ReadAhead,
) -> Option<Response<ProxyBody>> {
    let mut answer = respond(app, request, routed, conn);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(response) = answer.as_mut().poll(cx) {
            return Poll::Ready(Some(response));
        }
        match ahead.poll_client(io, cx) {
            Ok(()) => Poll::Pending,
            Err(_) => Poll::Ready(None),
        }
    })
    .await
}

/// Writes an answer, and for an event stream every frame until the stream ends. While the
/// answer waits (for its body or for the socket), the client is watched: what it sends is
/// kept in `ahead` (dropped for an event stream, which nothing follows), and its leaving ends
/// the answer. An answer written at once is not waited on, and its client not watched.
async fn write_answer<I>(
    io: &mut I,
    response: Response<ProxyBody>,
    close: bool,
    ahead: &mut ReadAhead,
) -> io::Result<()>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let (parts, body) = response.into_parts();
    let framing = Framing::of(parts.status, &body);
    let head = encode_head(&parts, framing, close);
    // Written: the header map serves a later message on this thread.
    spare::give_back(parts.headers);
    let mut pump = Pump::new(io, body, head, framing, ahead);
    std::future::poll_fn(|cx| pump.poll(cx)).await
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
