//! Idle connections: a connection with no response in flight that sends nothing for a while
//! is closed, whatever its protocol.
//!
//! HTTP/1.1 has hyper's header-read timeout between requests, but the HTTP/1.1-or-h2c
//! detection and HTTP/2 have no idle timer at all (and HTTP/2 clients answer PINGs on their
//! own), so without this a client could hold a connection slot forever by going quiet.
//! [`Activity`] counts a connection's responses in flight (a [`Tracked`] body holds a guard
//! until it is dropped, so an open event stream keeps its connection busy) and when the last
//! one ended; [`Activity::idle`] resolves once the connection has been idle for the limit.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use super::stall::Watch;
use crate::origin::BodyError;
use crate::request::body::ProxyBody;

/// One connection's activity.
pub struct Activity {
    /// When the connection started; `last` counts from here.
    started: Instant,
    /// Responses whose body is still being sent.
    in_flight: AtomicUsize,
    /// Milliseconds after `started` when a request last arrived or a response last ended.
    last: AtomicU64,
}

impl Activity {
    /// A connection that has just started (and so is idle from now).
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last.fetch_max(now, Ordering::Relaxed);
    }

    /// A request arrived: the connection is busy until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.touch();
        Busy(self.clone())
    }

    /// Resolves once no response has been in flight and nothing has arrived for `limit`.
    pub async fn idle(&self, limit: Duration) {
        loop {
            let last = self.started + Duration::from_millis(self.last.load(Ordering::Relaxed));
            let deadline = last + limit;
            if Instant::now() >= deadline {
                if self.in_flight.load(Ordering::Relaxed) == 0 {
                    return;
                }
                // Busy: look again a full period later.
                tokio::time::sleep(limit).await;
            } else {
                tokio::time::sleep_until(deadline).await;
            }
        }
    }
}

/// Marks one response in flight.
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its connection counted as busy until it is dropped.
pub struct Tracked {
    /// The actual body.
    pub body: ProxyBody,
    /// Released with the body.
    pub busy: Busy,
    /// On HTTP/2, reports the stream's progress to its stall watch ([`super::stall`]).
    pub(super) watch: Option<Watch>,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match &mut this.watch {
            Some(watch) => watch.poll_frame(Pin::new(&mut this.body), cx),
            None => Pin::new(&mut this.body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.watch.as_ref().is_none_or(|w| w.pending() == 0) && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.watch {
            Some(watch) => watch.size_hint(self.body.size_hint()),
            None => self.body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_only_without_responses_in_flight() {
        let activity = Activity::new();
        let limit = Duration::from_secs(2);
        let busy = activity.begin();
        let idle = tokio::spawn({
            let activity = activity.clone();
            async move { activity.idle(limit).await }
        });
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(
            !idle.is_finished(),
            "a response in flight keeps the connection busy"
        );
        drop(busy);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!idle.is_finished(), "not idle for the full limit yet");
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(idle.is_finished(), "idle past the limit");
    }
}
