//! The body of one event-stream response: a cursor into its channel's log.
//!
//! Polled by hyper whenever the connection can take more bytes, so a client that stops
//! reading simply stops advancing its cursor (its socket buffer and hyper's bounded write
//! buffer fill, nothing else grows); when it reads again it is resynced if it fell behind.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::Frame;
use tokio::sync::OwnedSemaphorePermit;

use super::channel::{Cursor, Next};
use super::hub::Subscription;
use super::keys::KeySlot;
use super::slots::{PeerSlot, UserSlot};
use super::sse::{self, Event, HEARTBEAT};
use crate::ops::metrics::Metrics;

/// The slots an open stream holds under its limits; dropping them frees them, whoever drops
/// the body (the client leaving, shutdown, or the edge resetting a stalled HTTP/2 stream).
pub struct Slots {
    /// One of `max_streams`.
    pub global: OwnedSemaphorePermit,
    /// One of the user's `max_streams_per_user`, on `auth = true` routes.
    pub user: Option<UserSlot>,
    /// One of the client address's `max_streams_per_ip`.
    pub peer: PeerSlot,
    /// The hold on this stream's key under `[[stream]] max_keys`.
    pub key: KeySlot,
}

/// A streaming response body.
pub struct SseBody {
    /// Membership in the channel; dropping it is leaving.
    subscription: Subscription,
    /// This client's position in the channel's log.
    cursor: Cursor,
    /// The first bytes (`retry:` and the initial state), sent before anything else.
    first: Option<Bytes>,
    /// Set once the end frame was sent.
    finished: bool,
    /// The stream's slots, released when the body is dropped. Boxed: only held to be dropped,
    /// inline their 144 bytes made every answer's body that size, a passthrough answer's too,
    /// which moves several times per request (BENCHMARKS.md, issue 15.1).
    _slots: Box<Slots>,
    /// For the log line at the end: when it opened and how many frames it sent.
    opened: Instant,
    frames: u64,
}

impl SseBody {
    /// A body that first sends `first`, then follows the channel from `cursor`.
    pub fn new(subscription: Subscription, first: Bytes, cursor: Cursor, slots: Slots) -> SseBody {
        SseBody {
            subscription,
            cursor,
            first: Some(first),
            finished: false,
            _slots: Box::new(slots),
            opened: Instant::now(),
            frames: 0,
        }
    }

    /// The next frame, or `None` when the stream is over.
    pub fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Frame<Bytes>>> {
        let this = self.get_mut();
        let bytes = if let Some(first) = this.first.take() {
            first
        } else if this.finished {
            return Poll::Ready(None);
        } else {
            match this.subscription.channel().poll_next(&mut this.cursor, cx) {
                Poll::Ready(Next::Frame(bytes)) => bytes,
                Poll::Ready(Next::End(bytes)) => {
                    this.finished = true;
                    bytes
                }
                Poll::Pending => return Poll::Pending,
            }
        };
        let channel = this.subscription.channel();
        let metrics = &channel.metrics;
        let bytes = if bytes[..] == *HEARTBEAT {
            Metrics::inc(&metrics.heartbeats_sent);
            match &channel.route().events.heartbeat {
                Some(name) => named_heartbeat(name),
                None => bytes,
            }
        } else {
            this.frames += 1;
            Metrics::inc(&metrics.frames_sent);
            bytes
        };
        metrics
            .stream_bytes_sent
            .fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Poll::Ready(Some(Frame::data(bytes)))
    }
}

impl Drop for SseBody {
    fn drop(&mut self) {
        let channel = self.subscription.channel();
        tracing::info!(
            route = %channel.route().path,
            lifetime_ms = self.opened.elapsed().as_millis() as u64,
            frames = self.frames,
            ended_by = if self.finished { "proxy" } else { "client" },
            "stream closed"
        );
    }
}

/// A heartbeat as a named event (`[sse] heartbeat_event`), for dashboards that listen for
/// one; its data is JSON with the proxy's clock in Unix milliseconds. Never given an `id`, so
/// it leaves the client's `Last-Event-ID` alone.
fn named_heartbeat(name: &str) -> Bytes {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    sse::encode(&Event {
        id: None,
        event: Some(name),
        data: &format!("{{\"time_ms\":{now_ms}}}"),
    })
}
