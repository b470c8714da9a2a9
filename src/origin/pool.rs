//! Our own pool of origin connections. Requests without a streamed body go through our own
//! HTTP/1.1 exchange ([`super::h1`]); requests with one (a client's POST) through hyper's
//! `client::conn`, which writes the body while it arrives. The two kinds of connection are
//! kept in separate idle lists.
//!
//! An HTTP/1.1 connection has no task of its own: the task that sends a request uses the
//! connection while it waits for the answer, and the answer's body reads from it while the
//! body is read. When the body has ended the connection goes back to the idle list of its
//! origin (newest first out, at most `max_idle_per_origin`, none older than `idle_timeout`).
//! So a proxied request costs no hop between tasks or worker threads, where hyper-util's
//! pooled client drove each connection in a task of its own and woke it twice per request.
//!
//! An HTTP/2 connection (`h2` by ALPN on an HTTPS origin) is multiplexed, so it runs in its own
//! task and every request to that origin from the same runtime shares it.
//!
//! On a serving thread (`[listen] serving_threads`, on by default,
//! [`keep_connections_on_this_thread`]) the idle lists and the HTTP/2 connection are that
//! thread's own: a connection is registered with the reactor of the runtime that opened it,
//! and used from another thread every readiness event would cross threads. So an origin sees
//! up to one HTTP/2 connection, and `max_idle_per_origin` idle ones, per serving thread, plus
//! those of the shared runtime (where the pollers run).

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Authority;
use http::{HeaderValue, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{TrySendError, http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::time::{Sleep, timeout_at};

use super::connect::{Connector, OriginStream, Protocol};
use super::h1::{Connection, Decoder, Failure};
use super::{ClientBody, Stated, set_stated};
use crate::ops::deadline::LazyDeadline;

/// The error of an answer's body: hyper's, or our exchange's `io::Error`.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request got no answer from the origin.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Name lookup, TCP connect or TLS handshake failed or timed out.
    #[error("cannot connect to the origin")]
    Connect(#[source] io::Error),
    /// The connection failed while the request was sent or the answer's head read.
    #[error("the exchange with the origin failed")]
    Http(#[source] hyper::Error),
    /// Our own HTTP/1.1 exchange failed while the request was sent or the answer's head read
    /// (`InvalidData`: the answer is malformed).
    #[error("the exchange with the origin failed")]
    Exchange(#[source] io::Error),
    /// No answer's head came by the call's deadline (connecting included).
    #[error("the origin did not answer in time")]
    TimedOut,
}

thread_local! {
    /// The serving thread this thread is, if it is one: its requests use origin connections
    /// of its own.
    static OWN_CONNECTIONS: Cell<Option<ThreadId>> = const { Cell::new(None) };
}

/// Makes the calling thread's requests use origin connections of their own, opened and kept
/// on this thread (a serving thread with a single-threaded runtime calls it once).
pub fn keep_connections_on_this_thread() {
    OWN_CONNECTIONS.with(|own| own.set(Some(std::thread::current().id())));
}

/// How many idle connections are kept, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Idle HTTP/1.1 connections kept per origin and runtime (each serving thread keeps its
    /// own); beyond it the oldest is closed.
    pub max_idle_per_origin: usize,
    /// An idle connection older than this is closed instead of reused.
    pub idle_timeout: Duration,
}

/// The pool, one per [`super::Upstream`]: every request to the origin (and to other hosts the
/// proxy calls) goes through it.
pub struct Pool {
    /// The state the answers' bodies give their connection back to.
    shared: Arc<Shared>,
}

/// What the pool and the bodies it lent connections to share.
struct Shared {
    /// Opens new connections.
    connector: Connector,
    /// Idle count and idle timeout.
    limits: Limits,
    /// Idle connections by origin.
    origins: Mutex<Origins>,
}

/// Idle connections by origin. Hashed with Fx, not SipHash: the keys are origins the
/// configuration names, which a client cannot choose to collide, and SipHash and parsing the
/// port were half of the cost of each request's two lookups (BENCHMARKS.md, issue 15.1).
type Origins = HashMap<Key, Idle, rustc_hash::FxBuildHasher>;

/// An origin: scheme and host with port.
#[derive(Debug, Clone, Eq)]
struct Key {
    /// TLS or plaintext.
    https: bool,
    /// Host and port, as in the URI.
    authority: Authority,
    /// The serving thread whose connections these are; `None` on the shared runtime.
    thread: Option<ThreadId>,
}

/// Hashes what is cheap to hash, as a request looks its origin up twice (taking a connection
/// and giving it back): `Authority` hashes itself a lowercased byte at a time, and finds its
/// port by parsing, most of the lookup's cost for the handful of origins a proxy calls.
/// Equal keys hash the same, as equality compares whole authorities (ignoring case), which
/// these never tell apart.
impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.https.hash(state);
        self.authority.as_str().len().hash(state);
        self.thread.hash(state);
    }
}

/// Compares authorities byte for byte first: `Authority`'s own comparison ignores case a byte
/// at a time, and a request's authority is spelled as the configuration spells it, so the
/// exact comparison nearly always decides (it was most of each lookup's cost, BENCHMARKS.md,
/// issue 15.1).
impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.https == other.https
            && self.thread == other.thread
            && (self.authority.as_str() == other.authority.as_str()
                || self.authority == other.authority)
    }
}

/// An origin's connections not in use.
#[derive(Default)]
struct Idle {
    /// Idle HTTP/1.1 connections driven by hyper (for streamed request bodies), oldest
    /// first, with the time each became idle.
    h1: VecDeque<(Instant, Box<H1>)>,
    /// Idle HTTP/1.1 connections we speak ourselves (bodiless requests), the same way.
    own: VecDeque<(Instant, Box<Own>)>,
    /// The origin's shared HTTP/2 connection, once it has shown it speaks HTTP/2.
    h2: Option<http2::SendRequest<ClientBody>>,
}

/// The HTTP/1.1 connection type.
type H1Connection = http1::Connection<TokioIo<OriginStream>, ClientBody>;

/// An HTTP/1.1 connection and its sender, polled by whichever task is using it.
struct H1 {
    /// Hands requests to the connection.
    sender: http1::SendRequest<ClientBody>,
    /// The connection itself; `None` once it has ended, so it is never polled again.
    conn: Option<H1Connection>,
    /// Where it goes back to.
    key: Key,
    /// `Host` for its requests, made once per connection.
    host: Option<HeaderValue>,
}

impl H1 {
    /// Polls the connection (writes the request, reads the answer, notices a close) and
    /// says whether it is still open.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(conn) = &mut self.conn
            && let Poll::Ready(result) = Pin::new(conn).poll(cx)
        {
            if let Err(error) = result {
                tracing::debug!(%error, "an origin connection ended");
            }
            self.conn = None;
        }
        self.conn.is_some()
    }

    /// Whether an idle connection can take a request right now. One poll lets it notice a
    /// close or finish its last exchange; one that is still busy (its request body was not
    /// all sent) is not waited for.
    fn reusable(&mut self, cx: &mut Context<'_>) -> bool {
        self.drive(cx) && matches!(self.sender.poll_ready(cx), Poll::Ready(Ok(())))
    }
}

/// An HTTP/1.1 connection on which we speak ourselves, and where it goes back to.
struct Own {
    /// The connection and its buffers.
    conn: Connection,
    /// Where it goes back to.
    key: Key,
    /// `Host` for its requests, made once per connection.
    host: Option<HeaderValue>,
    /// Bounds each wait for an answer's head; one timer for the connection's life, not one
    /// per request (its module says why).
    deadline: LazyDeadline,
}

/// Why a request sent on a connection of ours got no answer's head.
enum OwnFailure {
    /// The exchange failed; it may be sent again when nothing was answered.
    Failed(Failure),
    /// Nothing came by the call's deadline: never sent again, the deadline is the call's.
    TimedOut,
}

/// A connection taken out for one request.
enum Checkout {
    /// HTTP/1.1 through hyper, driven by the request.
    H1(Box<H1>),
    /// HTTP/1.1 we speak ourselves.
    Own(Box<Own>),
    /// A handle on a shared HTTP/2 connection.
    H2(http2::SendRequest<ClientBody>),
}

impl Pool {
    /// An empty pool. Inside a tokio runtime it starts a task that closes expired idle
    /// connections (without one, they are only dropped when next met).
    pub fn new(connector: Connector, limits: Limits) -> Pool {
        let shared = Arc::new(Shared {
            connector,
            limits,
            origins: Mutex::new(Origins::default()),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(reap_expired(Arc::downgrade(&shared)));
        }
        Pool { shared }
    }

    /// Sends `request` (absolute URI), with the header fields `stated` beside its own
    /// ([`Stated`]), to the origin `authority` and waits for the answer's head until `due`
    /// ([`SendError::TimedOut`] after). A request that failed on a reused connection before
    /// any answer came (the origin closed it meanwhile) is sent once more on a new
    /// connection, within the same `due`: always when hyper gave it back unsent, and when
    /// idempotent on our own exchange (the origin may have seen it).
    ///
    /// On a connection we speak ourselves the bound is kept by the connection's own timer
    /// ([`LazyDeadline`]); a new connection, and hyper's, get a timer for the call.
    ///
    /// The request stays where the caller keeps it (our own exchange only reads it; hyper's
    /// connections take it out, leaving an empty `GET /` behind), so this future holds a
    /// reference, not a second copy: each level of futures that held it by value made every
    /// request's future 264 bytes larger and copied it once more (BENCHMARKS.md, issue
    /// 15.1). The connections are those of the thread the call is made on, which is the
    /// thread that awaits it.
    pub fn send<'a>(
        &'a self,
        https: bool,
        authority: Authority,
        request: &'a mut Request<ClientBody>,
        stated: &'a Stated<'a>,
        due: tokio::time::Instant,
    ) -> impl Future<Output = Result<Response<UpstreamBody>, SendError>> + Send + 'a {
        let key = Key {
            https,
            authority,
            thread: OWN_CONNECTIONS.with(Cell::get),
        };
        let own = bodiless(request);
        async move {
            let mut fresh = false;
            loop {
                let (checkout, reused) = self.shared.checkout(&key, fresh, own, due).await?;
                let error = match checkout {
                    Checkout::Own(conn) => match self.send_own(conn, request, stated, due).await {
                        Ok(response) => return Ok(response),
                        Err(OwnFailure::TimedOut) => return Err(SendError::TimedOut),
                        Err(OwnFailure::Failed(failure))
                            if failure.unanswered && reused && request.method().is_idempotent() =>
                        {
                            let error = &failure.error;
                            tracing::debug!(%error, "a reused origin connection failed; sending again");
                            fresh = true;
                            continue;
                        }
                        Err(OwnFailure::Failed(failure)) => {
                            return Err(SendError::Exchange(failure.error));
                        }
                    },
                    Checkout::H1(mut h1) => {
                        set_stated(request.headers_mut(), stated);
                        to_origin_form(request, h1.host.as_ref());
                        // The connection is polled in this task until the answer's head is
                        // in; the body then carries it and gives it back when it ends.
                        let mut answer = std::pin::pin!(h1.sender.try_send_request(take(request)));
                        let answered = poll_fn(|cx| {
                            h1.drive(cx);
                            answer.as_mut().poll(cx)
                        });
                        match timeout_at(due, answered)
                            .await
                            .map_err(|_| SendError::TimedOut)?
                        {
                            Ok(response) => return Ok(self.lend(h1, response)),
                            Err(error) => error,
                        }
                    }
                    Checkout::H2(mut sender) => {
                        set_stated(request.headers_mut(), stated);
                        match timeout_at(due, sender.try_send_request(take(request)))
                            .await
                            .map_err(|_| SendError::TimedOut)?
                        {
                            Ok(response) => return Ok(response.map(UpstreamBody::new)),
                            Err(error) => {
                                self.shared.forget_h2(&key);
                                error
                            }
                        }
                    }
                };
                match unsent(error) {
                    (Some(back), _) if reused => {
                        *request = back;
                        to_absolute_form(request, &key);
                        fresh = true;
                    }
                    (_, error) => return Err(SendError::Http(error)),
                }
            }
        }
    }

    /// Sends on a connection we speak HTTP/1.1 on ourselves, and waits for the answer's head
    /// until `due`; the answer's body reads from the connection and gives it back when it
    /// ends.
    async fn send_own(
        &self,
        mut own: Box<Own>,
        request: &Request<ClientBody>,
        stated: &Stated<'_>,
        due: tokio::time::Instant,
    ) -> Result<Response<UpstreamBody>, OwnFailure> {
        let answer = {
            let Own {
                conn,
                host,
                deadline,
                ..
            } = &mut *own;
            let mut exchange = std::pin::pin!(conn.exchange(request, host.as_ref(), stated));
            let mut timer = deadline.until(due);
            poll_fn(|cx| match exchange.as_mut().poll(cx) {
                Poll::Ready(answer) => Poll::Ready(answer.map_err(OwnFailure::Failed)),
                Poll::Pending => Pin::new(&mut timer)
                    .poll(cx)
                    .map(|()| Err(OwnFailure::TimedOut)),
            })
            .await?
        };
        let body = OwnLease {
            own: Some(own),
            decoder: answer.decoder,
            keep_alive: answer.keep_alive,
            pool: Arc::downgrade(&self.shared),
        };
        Ok(answer.response.map(|()| UpstreamBody::of(Kind::Own(body))))
    }

    /// The answer hyper read on an HTTP/1.1 connection, its body carrying the connection.
    fn lend(&self, h1: Box<H1>, response: Response<Incoming>) -> Response<UpstreamBody> {
        let pool = Arc::downgrade(&self.shared);
        response.map(|incoming| {
            UpstreamBody::of(Kind::Hyper {
                incoming,
                lease: Some(Lease {
                    h1,
                    pool,
                    ended: false,
                }),
            })
        })
    }

    /// A deadline for unit tests' calls, far enough that only a test of deadlines meets it.
    #[cfg(test)]
    pub(super) fn test_due() -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_secs(30)
    }

    /// A pool for unit tests: no trusted roots, a 5 s connect bound, idle connections kept a
    /// minute.
    #[cfg(test)]
    pub(super) fn for_tests(max_idle_per_origin: usize) -> Pool {
        let tls = rustls::ClientConfig::builder_with_provider(super::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        Pool::new(
            Connector::new(tls, Duration::from_secs(5)),
            Limits {
                max_idle_per_origin,
                idle_timeout: Duration::from_secs(60),
            },
        )
    }

    /// Idle HTTP/1.1 connections (of both kinds) kept for `authority` (plaintext), for tests.
    #[cfg(test)]
    pub(super) fn idle_count(&self, authority: &Authority) -> usize {
        let key = Key {
            https: false,
            authority: authority.clone(),
            thread: None,
        };
        self.shared
            .lock()
            .get(&key)
            .map_or(0, |idle| idle.h1.len() + idle.own.len())
    }
}

/// Whether `request` goes through our own exchange: its body is known whole (an empty
/// streamed body, as a client's `GET` has, is made `Empty`).
fn bodiless(request: &mut Request<ClientBody>) -> bool {
    match request.body() {
        ClientBody::Empty | ClientBody::Full(_) => true,
        ClientBody::Streamed(incoming) if incoming.is_end_stream() => {
            *request.body_mut() = ClientBody::Empty;
            true
        }
        ClientBody::Streamed(_) => false,
    }
}

/// The request, moved out for hyper to send; an empty `GET /` stays behind.
fn take(request: &mut Request<ClientBody>) -> Request<ClientBody> {
    std::mem::replace(request, Request::new(ClientBody::Empty))
}

/// The request a failed send gave back unsent, if any, and the error.
fn unsent(
    mut error: TrySendError<Request<ClientBody>>,
) -> (Option<Request<ClientBody>>, hyper::Error) {
    let request = error.take_message();
    (request, error.into_error())
}

/// HTTP/1.1 to an origin (not a proxy) names the target by path, and the host in `Host`.
fn to_origin_form(request: &mut Request<ClientBody>, host: Option<&HeaderValue>) {
    if let Some(host) = host {
        request
            .headers_mut()
            .entry(http::header::HOST)
            .or_insert_with(|| host.clone());
    }
    // Moved, not copied: the path stays in the buffer it was parsed or built into.
    let parts = std::mem::take(request.uri_mut()).into_parts();
    *request.uri_mut() = match parts.path_and_query {
        Some(pq) if pq.as_str() != "/" => Uri::from(pq),
        _ => Uri::from_static("/"),
    };
}

/// The absolute URI again, for a request sent once more (perhaps on HTTP/2).
fn to_absolute_form(request: &mut Request<ClientBody>, key: &Key) {
    let scheme = if key.https {
        http::uri::Scheme::HTTPS
    } else {
        http::uri::Scheme::HTTP
    };
    let mut parts = std::mem::take(request.uri_mut()).into_parts();
    parts.scheme = Some(scheme);
    parts.authority = Some(key.authority.clone());
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    // Scheme, authority and path are all set, so the parts make a URI.
    *request.uri_mut() = Uri::from_parts(parts).unwrap_or_default();
}

/// `Host` for an origin: its host, with the port unless it is the scheme's default.
fn host_header(https: bool, authority: &Authority) -> Option<HeaderValue> {
    let default_port = if https { 443 } else { 80 };
    let host = match authority.port_u16() {
        Some(port) if port != default_port => authority.as_str(),
        _ => authority.host(),
    };
    HeaderValue::from_str(host).ok()
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Origins> {
        // A panic while holding the lock leaves only a list of connections: keep using it.
        self.origins
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An idle connection that is still open (newest first; one we speak ourselves when
    /// `own`, else one of hyper's), the origin's HTTP/2 connection, or a new one (always new
    /// when `fresh`). Says whether it was reused.
    async fn checkout(
        &self,
        key: &Key,
        fresh: bool,
        own: bool,
        due: tokio::time::Instant,
    ) -> Result<(Checkout, bool), SendError> {
        if !fresh {
            loop {
                let candidate = {
                    let mut origins = self.lock();
                    let Some(idle) = origins.get_mut(key) else {
                        break;
                    };
                    if let Some(h2) = &idle.h2 {
                        if !h2.is_closed() {
                            return Ok((Checkout::H2(h2.clone()), true));
                        }
                        idle.h2 = None;
                    }
                    if own {
                        idle.own
                            .pop_back()
                            .map(|(since, c)| (since, Checkout::Own(c)))
                    } else {
                        idle.h1
                            .pop_back()
                            .map(|(since, c)| (since, Checkout::H1(c)))
                    }
                };
                let Some((since, mut candidate)) = candidate else {
                    break;
                };
                if since.elapsed() < self.limits.idle_timeout
                    && poll_fn(|cx| {
                        Poll::Ready(match &mut candidate {
                            Checkout::H1(h1) => h1.reusable(cx),
                            Checkout::Own(own) => own.conn.poll_idle(cx),
                            Checkout::H2(_) => false,
                        })
                    })
                    .await
                {
                    return Ok((candidate, true));
                }
            }
        }
        // Boxed: opening is rare (the pool reuses), and its future is large; inline, it would
        // make every request's future, which the edge boxes per request, that much larger.
        let opened = timeout_at(due, Box::pin(self.open(key, own)))
            .await
            .map_err(|_| SendError::TimedOut)??;
        Ok((opened, false))
    }

    /// Opens a new connection to the origin and sets it up for HTTP/1.1 (ours when `own`,
    /// else hyper's) or HTTP/2.
    async fn open(&self, key: &Key, own: bool) -> Result<Checkout, SendError> {
        let (stream, protocol) = self
            .connector
            .connect(key.https, &key.authority)
            .await
            .map_err(SendError::Connect)?;
        if own && protocol == Protocol::Http1 {
            return Ok(Checkout::Own(Box::new(Own {
                conn: Connection::new(stream),
                key: key.clone(),
                host: host_header(key.https, &key.authority),
                deadline: LazyDeadline::default(),
            })));
        }
        let io = TokioIo::new(stream);
        Ok(match protocol {
            Protocol::Http1 => {
                let (sender, conn) = http1::handshake(io).await.map_err(SendError::Http)?;
                Checkout::H1(Box::new(H1 {
                    sender,
                    conn: Some(conn),
                    key: key.clone(),
                    host: host_header(key.https, &key.authority),
                }))
            }
            Protocol::Http2 => {
                let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(SendError::Http)?;
                tokio::spawn(async move {
                    if let Err(error) = conn.await {
                        tracing::debug!(%error, "an HTTP/2 origin connection ended");
                    }
                });
                self.lock().entry(key.clone()).or_default().h2 = Some(sender.clone());
                Checkout::H2(sender)
            }
        })
    }

    /// Takes back a hyper connection whose exchange ended; closes the oldest beyond the limit.
    fn checkin(&self, h1: Box<H1>) {
        if h1.conn.is_none() || h1.sender.is_closed() {
            return;
        }
        let evicted = self.idle_push(h1, |h1| &h1.key, |idle| &mut idle.h1);
        // Closed outside the lock.
        drop(evicted);
    }

    /// Takes back a connection of ours whose body ended cleanly; closes the oldest beyond
    /// the limit.
    fn checkin_own(&self, own: Box<Own>) {
        let evicted = self.idle_push(own, |own| &own.key, |idle| &mut idle.own);
        // Closed outside the lock.
        drop(evicted);
    }

    /// Puts `conn` at the new end of one of its origin's idle lists; gives back the oldest
    /// if the list is then over the limit. The key is read from the connection, and cloned
    /// only for an origin the pool has no entry for.
    fn idle_push<T>(
        &self,
        conn: T,
        key: impl Fn(&T) -> &Key,
        list: impl FnOnce(&mut Idle) -> &mut VecDeque<(Instant, T)>,
    ) -> Option<(Instant, T)> {
        let mut origins = self.lock();
        let idle = match origins.get_mut(key(&conn)) {
            Some(idle) => idle,
            None => origins.entry(key(&conn).clone()).or_default(),
        };
        let list = list(idle);
        list.push_back((Instant::now(), conn));
        if list.len() > self.limits.max_idle_per_origin {
            list.pop_front()
        } else {
            None
        }
    }

    /// Forgets an origin's HTTP/2 connection that refused a request.
    fn forget_h2(&self, key: &Key) {
        if let Some(idle) = self.lock().get_mut(key) {
            idle.h2 = None;
        }
    }

    /// Takes out every idle connection older than the idle timeout.
    fn expired(&self) -> (Aged<Box<H1>>, Aged<Box<Own>>) {
        let (mut h1, mut own) = (Vec::new(), Vec::new());
        let timeout = self.limits.idle_timeout;
        let mut origins = self.lock();
        for idle in origins.values_mut() {
            take_expired(&mut idle.h1, timeout, &mut h1);
            take_expired(&mut idle.own, timeout, &mut own);
        }
        origins.retain(|_, idle| {
            !idle.h1.is_empty()
                || !idle.own.is_empty()
                || idle.h2.as_ref().is_some_and(|h2| !h2.is_closed())
        });
        (h1, own)
    }
}

/// Connections with the time each became idle.
type Aged<T> = Vec<(Instant, T)>;

/// Moves the entries of an idle list (oldest first) that are `timeout` old into `out`.
fn take_expired<T>(list: &mut VecDeque<(Instant, T)>, timeout: Duration, out: &mut Aged<T>) {
    while list
        .front()
        .is_some_and(|(since, _)| since.elapsed() >= timeout)
    {
        out.extend(list.pop_front());
    }
}

/// Closes expired idle connections every idle timeout, until the pool is gone, so an idle
/// proxy holds no connection the origin has long given up on.
async fn reap_expired(shared: Weak<Shared>) {
    let Some(every) = shared.upgrade().map(|s| s.limits.idle_timeout) else {
        return;
    };
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        // Closed outside the lock.
        drop(shared.expired());
    }
}

/// An HTTP/1.1 connection lent to an answer's body.
struct Lease {
    /// The connection, polled while the body is read.
    h1: Box<H1>,
    /// Where it goes back to (weak: an idle connection must not keep the pool alive).
    pool: Weak<Shared>,
    /// The body was read to its end, so the connection is free for the next request.
    ended: bool,
}

/// The origin's answer body. On HTTP/1.1 it reads from its connection and gives it back to
/// the pool once read to the end; dropped before that, it closes the connection.
pub struct UpstreamBody {
    /// Where the body comes from.
    kind: Kind,
    /// How long the origin may stay silent mid-body ([`UpstreamBody::set_quiet_limit`]).
    quiet: Option<Quiet>,
}

/// A bound on the origin's silence between two reads of a body, as nginx's
/// `proxy_read_timeout`: an origin that sent a head and part of a body, then nothing, would
/// otherwise hold the client's answer (and a connection on both sides) forever.
struct Quiet {
    /// The bound.
    limit: Duration,
    /// Armed while a read is pending; dropped at each frame, as the write timeout does.
    timer: Option<Pin<Box<Sleep>>>,
}

/// Where the body comes from.
enum Kind {
    /// Hyper's connection (HTTP/2, or HTTP/1.1 after a streamed request body).
    Hyper {
        /// The body as hyper delivers it.
        incoming: Incoming,
        /// The HTTP/1.1 connection it arrives on (`None` on HTTP/2).
        lease: Option<Lease>,
    },
    /// A connection we speak HTTP/1.1 on ourselves.
    Own(OwnLease),
}

/// A connection of ours lent to an answer's body.
struct OwnLease {
    /// The connection, read while the body is read; taken out when the body is dropped.
    own: Option<Box<Own>>,
    /// Where in the body it is.
    decoder: Decoder,
    /// The answer (and request) allow another request on the connection after this body.
    keep_alive: bool,
    /// Where it goes back to (weak: an idle connection must not keep the pool alive).
    pool: Weak<Shared>,
}

impl UpstreamBody {
    fn of(kind: Kind) -> UpstreamBody {
        UpstreamBody { kind, quiet: None }
    }

    /// The body fails once the origin has sent nothing for `limit` while it is read.
    pub(super) fn set_quiet_limit(&mut self, limit: Duration) {
        self.quiet = Some(Quiet { limit, timer: None });
    }

    /// A body on a shared HTTP/2 connection, which its own task drives.
    fn new(incoming: Incoming) -> UpstreamBody {
        UpstreamBody::of(Kind::Hyper {
            incoming,
            lease: None,
        })
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let polled = this.kind.poll_frame(cx);
        let Some(quiet) = &mut this.quiet else {
            return polled;
        };
        if polled.is_ready() {
            quiet.timer = None;
            return polled;
        }
        let limit = quiet.limit;
        let timer = quiet
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the origin sent nothing for {} ms in the middle of a body",
                    limit.as_millis()
                ),
            ))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Hyper { incoming, .. } => incoming.is_end_stream(),
            Kind::Own(lease) => lease.decoder.is_done(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Hyper { incoming, .. } => incoming.size_hint(),
            Kind::Own(lease) => lease
                .decoder
                .remaining()
                .map_or_else(SizeHint::default, SizeHint::with_exact),
        }
    }
}

impl Kind {
    /// The next frame of the body, from wherever it comes.
    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self {
            Kind::Hyper { incoming, lease } => {
                if let Some(lease) = lease {
                    lease.h1.drive(cx);
                }
                let polled = Pin::new(incoming).poll_frame(cx);
                if let (Poll::Ready(None), Some(lease)) = (&polled, lease) {
                    lease.ended = true;
                }
                polled.map_err(BodyError::from)
            }
            Kind::Own(lease) => match &mut lease.own {
                Some(own) => own
                    .conn
                    .poll_body(&mut lease.decoder, cx)
                    .map_ok(Frame::data)
                    .map_err(BodyError::from),
                None => Poll::Ready(None),
            },
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        match &mut self.kind {
            Kind::Hyper { incoming, lease } => {
                if let Some(lease) = lease.take()
                    && (lease.ended || incoming.is_end_stream())
                    && let Some(pool) = lease.pool.upgrade()
                {
                    pool.checkin(lease.h1);
                }
            }
            Kind::Own(lease) => {
                if lease.keep_alive
                    && lease.decoder.is_done()
                    && let Some(own) = lease.own.take()
                    && !own.conn.has_unread()
                    && let Some(pool) = lease.pool.upgrade()
                {
                    pool.checkin_own(own);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A loopback origin that answers every request with `body`, adding `Connection: close`
    /// (and closing) when `close` is set. Counts the connections it accepted.
    async fn origin(close: bool) -> (Authority, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let authority = Authority::try_from(listener.local_addr().expect("addr").to_string())
            .expect("authority");
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut seen = Vec::new();
                    loop {
                        let Ok(n) = stream.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            let answer: &[u8] = if close {
                                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                            } else {
                                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                            };
                            if stream.write_all(answer).await.is_err() || close {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (authority, connections)
    }

    fn get(authority: &Authority) -> Request<ClientBody> {
        let mut request = Request::new(ClientBody::Empty);
        *request.uri_mut() = format!("http://{authority}/x").parse().expect("uri");
        request
    }

    /// Sends a GET; its answer, the body unread.
    async fn answer(pool: &Pool, authority: &Authority) -> Response<UpstreamBody> {
        pool.send(
            false,
            authority.clone(),
            &mut get(authority),
            &[],
            Pool::test_due(),
        )
        .await
        .expect("answer")
    }

    /// Sends a GET and reads the whole body.
    async fn fetch(pool: &Pool, authority: &Authority) -> Bytes {
        let body = answer(pool, authority).await.into_body().collect().await;
        body.expect("body").to_bytes()
    }

    #[tokio::test]
    async fn an_idle_connection_is_reused() {
        let (authority, connections) = origin(false).await;
        let pool = Pool::for_tests(4);
        for _ in 0..5 {
            assert_eq!(fetch(&pool, &authority).await, "ok");
        }
        assert_eq!(connections.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(&authority), 1);
    }

    #[tokio::test]
    async fn a_connection_the_origin_closes_is_not_reused() {
        let (authority, connections) = origin(true).await;
        let pool = Pool::for_tests(4);
        for _ in 0..3 {
            assert_eq!(fetch(&pool, &authority).await, "ok");
        }
        assert_eq!(connections.load(Ordering::SeqCst), 3);
        assert_eq!(pool.idle_count(&authority), 0);
    }

    #[tokio::test]
    async fn the_idle_count_is_bounded() {
        let (authority, connections) = origin(false).await;
        let pool = Pool::for_tests(2);
        // Four answers in flight at once need four connections.
        let mut answers = Vec::new();
        for _ in 0..4 {
            answers.push(answer(&pool, &authority).await);
        }
        for answer in answers {
            answer.into_body().collect().await.expect("body");
        }
        assert_eq!(connections.load(Ordering::SeqCst), 4);
        assert_eq!(
            pool.idle_count(&authority),
            2,
            "two of the four were closed"
        );
        // Two kept: four more at once reuse them and open two.
        let mut answers = Vec::new();
        for _ in 0..4 {
            answers.push(answer(&pool, &authority).await);
        }
        drop(answers);
        assert_eq!(connections.load(Ordering::SeqCst), 6);
    }

    #[tokio::test]
    async fn a_body_dropped_unread_closes_its_connection() {
        let (authority, connections) = origin(false).await;
        let pool = Pool::for_tests(4);
        let response = answer(&pool, &authority).await;
        drop(response);
        assert_eq!(pool.idle_count(&authority), 0);
        assert_eq!(fetch(&pool, &authority).await, "ok");
        assert_eq!(connections.load(Ordering::SeqCst), 2);
    }
}
