//! Stalled HTTP/2 streams: a stream whose client stops granting flow-control window is reset
//! after `write_timeout`, and a connection whose streams all stall is closed.
//!
//! [`super::write_timeout`] sees only blocked socket writes. Over HTTP/2 a client stalls one
//! stream, or all of them, without blocking the socket: it sends `INITIAL_WINDOW_SIZE = 0`, or
//! never returns window. Hyper then keeps the polled chunk until the window gives room and
//! does not poll the body meanwhile, so the body cannot notice, and its stream slot would be
//! held for as long as the client keeps the connection alive.
//!
//! So each HTTP/2 stream task runs under a watch: hyper spawns stream tasks through the
//! connection's [`StreamExecutor`], which wraps each in a [`Watched`]; the response body, polled
//! inside that task, finds the stream's [`Progress`] in a task-local and reports each chunk it
//! hands out and each time it is polled again (which hyper does only once the previous chunk
//! had window). A chunk still waiting after `write_timeout` ends the task: dropping it
//! resets the stream (`RST_STREAM CANCEL`) and drops the body, which frees its stream slots.
//! Chunks are cut to [`CHUNK`] bytes (the default HTTP/2 frame size, so no extra frames), so
//! a client that reads slowly but steadily (at least `CHUNK` per `write_timeout`) is never cut.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::Notify;
use tokio::task::futures::TaskLocalFuture;
use tokio::time::{Instant, Sleep};

use super::woken::{TaskWake, Woken};
use crate::ops::metrics::{Limit, Metrics};

/// Largest chunk handed to hyper at once: the default HTTP/2 frame size, so a chunk accepted
/// is at most one frame of window granted.
const CHUNK: usize = 16 * 1024;

tokio::task_local! {
    /// The progress of the HTTP/2 stream whose task is running.
    static STREAM: Arc<Progress>;
}

/// One HTTP/2 connection's streams, as their watches see them.
pub(super) struct ConnStreams {
    /// The client, for the log.
    peer: SocketAddr,
    /// How long a chunk may wait for window.
    limit: Duration,
    /// For the stalled-stream count.
    metrics: Arc<Metrics>,
    /// Stream tasks running.
    open: AtomicUsize,
    /// Of them, those with a chunk waiting for window.
    waiting: AtomicUsize,
    /// Told when a stream was cut while every stream of the connection was waiting.
    all_stalled: Notify,
    /// Its stream tasks woken and not run since, for the connection's write coalescing.
    woken: Arc<Woken>,
}

impl ConnStreams {
    /// No streams yet; a chunk may wait `limit`; woken stream tasks are counted in `woken`.
    pub(super) fn new(
        peer: SocketAddr,
        limit: Duration,
        metrics: Arc<Metrics>,
        woken: Arc<Woken>,
    ) -> Arc<ConnStreams> {
        Arc::new(ConnStreams {
            peer,
            limit,
            metrics,
            open: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            all_stalled: Notify::new(),
            woken,
        })
    }

    /// Resolves once a stream was cut for stalling while all the others were waiting too:
    /// the client reads none of them, so the connection should close.
    pub(super) async fn all_stalled(&self) {
        self.all_stalled.notified().await
    }
}

/// Runs one connection's HTTP/2 stream tasks, each under a stall watch.
#[derive(Clone)]
pub(super) struct StreamExecutor(pub(super) Arc<ConnStreams>);

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, task: F) {
        tokio::spawn(Watched::new(task, self.0.clone()));
    }
}

/// What a stream's body reports to its watch.
#[derive(Default)]
pub(super) struct Progress {
    /// Chunks handed to hyper so far.
    chunks: AtomicU64,
    /// Whether the last chunk handed out is still waiting (the body was not polled since).
    waiting: AtomicBool,
}

/// Counts a stream task as open, and as waiting while it waits, until it ends.
struct Counted {
    /// The connection it is counted in.
    conn: Arc<ConnStreams>,
    /// Whether it is counted as waiting now.
    waiting: bool,
}

impl Counted {
    fn new(conn: Arc<ConnStreams>) -> Counted {
        conn.open.fetch_add(1, Ordering::Relaxed);
        Counted {
            conn,
            waiting: false,
        }
    }

    fn set_waiting(&mut self, waiting: bool) {
        if waiting != self.waiting {
            self.waiting = waiting;
            if waiting {
                self.conn.waiting.fetch_add(1, Ordering::Relaxed);
            } else {
                self.conn.waiting.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.set_waiting(false);
        self.conn.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream task that ends when it is done, or once a chunk it handed out waited `limit`
/// for window; ending it drops the task, which resets the stream.
///
/// A plain struct rather than an `async fn`: an `async fn` would hold the task twice (as its
/// argument and as the local it is moved into), and stream tasks are the bulk of an HTTP/2
/// stream's memory.
struct Watched<F> {
    /// The stream task, with its progress in the task-local.
    task: Pin<Box<TaskLocalFuture<Arc<Progress>, F>>>,
    /// The stream's progress, shared with its body.
    progress: Arc<Progress>,
    /// Its place in the connection's counts.
    counted: Counted,
    /// Fires `limit` after the chunk it was armed for; made the first time one waits.
    timer: Option<Pin<Box<Sleep>>>,
    /// The chunk the timer is armed for.
    armed_for: Option<u64>,
    /// Counts the task in its connection's woken tasks while it waits to run.
    wake: TaskWake,
}

impl<F: Future<Output = ()>> Watched<F> {
    fn new(task: F, conn: Arc<ConnStreams>) -> Watched<F> {
        let progress = Arc::new(Progress::default());
        Watched {
            task: Box::pin(STREAM.scope(progress.clone(), task)),
            progress,
            wake: TaskWake::new(conn.woken.clone()),
            counted: Counted::new(conn),
            timer: None,
            armed_for: None,
        }
    }

    /// Counts and logs a stalled stream, and tells the connection when all of its streams
    /// are waiting.
    fn stalled(&self) {
        let conn = &self.counted.conn;
        conn.metrics.limited(Limit::StalledStream);
        let open = conn.open.load(Ordering::Relaxed);
        let all = conn.waiting.load(Ordering::Relaxed) >= open;
        tracing::debug!(
            peer = %conn.peer,
            limit_ms = conn.limit.as_millis() as u64,
            open,
            all_stalled = all,
            "HTTP/2 stream made no progress; reset"
        );
        if all {
            conn.all_stalled.notify_one();
        }
    }
}

impl<F: Future<Output = ()>> Future for Watched<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let task = &mut this.task;
        if this.wake.poll(cx, |cx| task.as_mut().poll(cx)).is_ready() {
            return Poll::Ready(());
        }
        let waiting = this.progress.waiting.load(Ordering::Relaxed);
        this.counted.set_waiting(waiting);
        if !waiting {
            this.armed_for = None;
            return Poll::Pending;
        }
        let chunk = this.progress.chunks.load(Ordering::Relaxed);
        let limit = this.counted.conn.limit;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if this.armed_for != Some(chunk) {
            this.armed_for = Some(chunk);
            timer.as_mut().reset(Instant::now() + limit);
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.stalled();
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A body's side of the watch: cuts chunks to [`CHUNK`] and reports them. Present only on
/// HTTP/2 streams.
pub(super) struct Watch {
    /// The stream's progress, shared with its watch.
    progress: Arc<Progress>,
    /// What is left of a chunk larger than [`CHUNK`].
    rest: Bytes,
}

impl Watch {
    /// The watch of the HTTP/2 stream whose task is running, if this is one.
    pub(super) fn current() -> Option<Watch> {
        STREAM
            .try_with(|progress| Watch {
                progress: progress.clone(),
                rest: Bytes::new(),
            })
            .ok()
    }

    /// `body`'s next frame, in chunks of at most [`CHUNK`] bytes, reported to the watch.
    pub(super) fn poll_frame<B>(
        &mut self,
        body: Pin<&mut B>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>>
    where
        B: Body<Data = Bytes>,
    {
        // Polled again: the previous chunk had window.
        self.progress.waiting.store(false, Ordering::Relaxed);
        let mut data = if self.rest.is_empty() {
            match body.poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => data,
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                other => return other,
            }
        } else {
            std::mem::take(&mut self.rest)
        };
        if data.len() > CHUNK {
            self.rest = data.split_off(CHUNK);
        }
        if !data.is_empty() {
            self.progress.chunks.fetch_add(1, Ordering::Relaxed);
            self.progress.waiting.store(true, Ordering::Relaxed);
        }
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    /// Bytes cut off and not yet handed out: the body is not over while there are some.
    pub(super) fn pending(&self) -> usize {
        self.rest.len()
    }

    /// `hint` plus the bytes not yet handed out.
    pub(super) fn size_hint(&self, hint: SizeHint) -> SizeHint {
        let rest = self.rest.len() as u64;
        let mut sum = SizeHint::new();
        sum.set_lower(hint.lower() + rest);
        if let Some(upper) = hint.upper() {
            sum.set_upper(upper + rest);
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    const PEER: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1);

    /// A stream task that hands out a chunk now and another after `progress_after`, then
    /// never gets window again.
    async fn stalling_task(progress_after: Duration) {
        let progress = STREAM.with(Arc::clone);
        let hand_out = || {
            progress.chunks.fetch_add(1, Ordering::Relaxed);
            progress.waiting.store(true, Ordering::Relaxed);
        };
        hand_out();
        tokio::time::sleep(progress_after).await;
        progress.waiting.store(false, Ordering::Relaxed);
        hand_out();
        std::future::pending().await
    }

    #[tokio::test(start_paused = true)]
    async fn a_chunk_waiting_past_the_limit_ends_the_task_and_progress_restarts_the_clock() {
        let conn = ConnStreams::new(PEER, Duration::from_secs(5), Arc::default(), Arc::default());
        let started = Instant::now();
        Watched::new(stalling_task(Duration::from_secs(3)), conn.clone()).await;
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(8),
            "3 s of progress, then 5"
        );
        assert_eq!(conn.open.load(Ordering::Relaxed), 0);
        assert_eq!(conn.waiting.load(Ordering::Relaxed), 0);
        // Its only stream stalled: the connection is told to close.
        tokio::time::timeout(Duration::from_millis(1), conn.all_stalled())
            .await
            .expect("all stalled");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_with_nothing_waiting_is_never_cut() {
        let conn = ConnStreams::new(PEER, Duration::from_secs(5), Arc::default(), Arc::default());
        let idle = Watched::new(std::future::pending::<()>(), conn.clone());
        let outcome = tokio::time::timeout(Duration::from_secs(3600), idle).await;
        assert!(outcome.is_err(), "still running");
    }

    #[tokio::test]
    async fn large_frames_are_handed_out_in_chunks_and_the_body_ends_after_the_last() {
        let progress = Arc::new(Progress::default());
        let data = Bytes::from(vec![1u8; 2 * CHUNK + 100]);
        let (sizes, pending) = STREAM
            .scope(progress.clone(), async {
                let mut watch = Watch::current().expect("inside a stream task");
                let mut body = Full::new(data);
                let mut sizes = Vec::new();
                let mut pending = Vec::new();
                while let Some(frame) =
                    std::future::poll_fn(|cx| watch.poll_frame(Pin::new(&mut body), cx)).await
                {
                    sizes.push(frame.expect("frame").into_data().expect("data").len());
                    pending.push(watch.pending());
                }
                (sizes, pending)
            })
            .await;
        assert_eq!(sizes, [CHUNK, CHUNK, 100]);
        assert_eq!(
            pending,
            [CHUNK + 100, 100, 0],
            "not over while bytes are cut off"
        );
        assert_eq!(progress.chunks.load(Ordering::Relaxed), 3);
        assert!(Watch::current().is_none(), "outside a stream task");
    }
}
