//! Stream routes: buffered JSON polled at the origin, served as `text/event-stream`.
//!
//! The phase a stream request goes through after routing and authentication: take a stream
//! slot, join the hub's channel for the key, wait (bounded by `first_poll_wait`) for the first
//! poll, then answer: the origin's refusal as a [`StreamError`], or an event stream that
//! starts with `retry:` and the current state (or the difference since `Last-Event-ID`).
//!
//! - [`sse`]: the frame encoder.
//! - [`delta`]: documents to changes, with content hashes.
//! - [`state`]: one key's history and current state (no IO, no locks).
//! - [`channel`]: the lock and wakes around a live key's state: fan-out.
//! - [`hub`]: channels by key, their pollers' lifecycles.
//! - [`resume`]: states kept after their poller stopped, for reconnects.
//! - [`refusals`]: keys the origin refused, answered from memory.
//! - [`poller`]: polling one source.
//! - [`cluster`]: one poller per key across instances, through Redis (`[cluster]`).
//! - [`body`]: the response body that follows a channel.
//! - [`relay`]: wake-ups of subscribers on serving threads, one per thread.
//! - [`slots`]: stream slots counted per user and per client address.
//! - [`keys`]: the bound on distinct keys per route.

pub mod body;
pub mod channel;
pub mod cluster;
pub mod delta;
pub mod hub;
pub mod keys;
pub mod poller;
pub mod refusals;
pub mod relay;
pub mod resume;
pub mod slots;
pub mod sse;
pub mod state;

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode, header, request};
use percent_encoding::percent_decode_str;
use tokio::sync::Semaphore;

pub use body::{Slots, SseBody};
use channel::StreamKey;
use hub::Hub;
use keys::KeyCounts;
use slots::{KeyedSlots, client_key};

use crate::config::{SseConfig, StreamConfig};
use crate::http::query::query_param;
use crate::ops::metrics::{Limit, Metrics};

/// `Cache-Control` of every event stream: `no-cache` so no cache answers for the origin,
/// `no-transform` so no intermediary (a CDN compressing, a mobile proxy) buffers the stream.
pub const CACHE_CONTROL: &str = "no-cache, no-transform";

/// Marks `headers` as an event stream's: `Content-Type: text/event-stream` and
/// [`CACHE_CONTROL`]. Shared by the streams and by the refusals an `EventSource` survives, so
/// both answer the same to a browser.
pub fn event_stream_headers(headers: &mut http::HeaderMap) {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
}

/// Longest `Last-Event-ID` looked up; longer ones are treated as unknown.
const MAX_EVENT_ID_LEN: usize = 256;

/// Who a validated stream belongs to, and what to forward on its behalf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The validator's user id: part of the hub key, sent upstream in `user_header`.
    pub user_id: String,
    /// `[auth] identity_header`: the header that tells the origin the validated user on polls.
    pub user_header: HeaderName,
    /// The credential that was validated, forwarded on polls (and no other one the client
    /// sent): header name and value.
    pub credential: (HeaderName, HeaderValue),
}

/// Why a stream could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The global stream limit (`[sse] max_streams`) is reached.
    #[error("too many open streams ({max}); retry in {retry_after_s} s")]
    TooManyStreams {
        /// The configured limit.
        max: usize,
        /// Seconds the client should wait.
        retry_after_s: u64,
    },
    /// `[sse] max_streams_per_user` is reached for this user.
    #[error("too many open streams for this user ({max})")]
    TooManyUserStreams {
        /// The configured per-user limit.
        max: usize,
    },
    /// `[sse] max_streams_per_ip` is reached for this client address.
    #[error("too many open streams from this address ({max})")]
    TooManyPeerStreams {
        /// The configured per-address limit.
        max: usize,
    },
    /// The route already has `[[stream]] max_keys` distinct keys open, and this is a new one.
    #[error("too many distinct streams open on this route ({max}); retry in {retry_after_s} s")]
    TooManyKeys {
        /// The configured limit.
        max: usize,
        /// Seconds the client should wait.
        retry_after_s: u64,
    },
    /// The origin refused the stream's resource (401, 403, 404, 410) on its first poll.
    #[error("{detail}")]
    Refused {
        /// The origin's status.
        status: StatusCode,
        /// The origin's `detail`, or a generic description.
        detail: String,
        /// The origin's JSON body when it sent one.
        body: Option<Bytes>,
    },
}

/// Everything the stream phase needs.
pub struct Streams {
    /// Channels by key.
    pub hub: Hub,
    /// Free stream slots (`max_streams`).
    slots: Arc<Semaphore>,
    /// Open streams per validated user (`max_streams_per_user`).
    per_user: KeyedSlots<String>,
    /// Open streams per client address (`max_streams_per_ip`).
    per_peer: KeyedSlots<IpAddr>,
    /// Distinct keys open per route (`[[stream]] max_keys`).
    keys: KeyCounts,
    /// Retry hint, first-poll wait, limits.
    sse: SseConfig,
}

impl Streams {
    /// The stream phase over this hub.
    pub fn new(hub: Hub, sse: SseConfig) -> Streams {
        Streams {
            hub,
            slots: Arc::new(Semaphore::new(sse.max_streams)),
            per_user: KeyedSlots::new(sse.max_streams_per_user),
            per_peer: KeyedSlots::new(sse.max_streams_per_ip),
            keys: KeyCounts::default(),
            sse,
        }
    }

    /// Streams open now.
    pub fn open_streams(&self) -> usize {
        self.sse.max_streams - self.slots.available_permits()
    }

    /// Opens an event stream on `route` with these checked parameters (path parameters,
    /// then the canonical values of its declared query parameters), for `identity` (the
    /// validated user on `auth = true` routes), from the client at `peer`. `request` gives
    /// the `Last-Event-ID`.
    pub async fn open(
        &self,
        route: Arc<StreamConfig>,
        params: Vec<String>,
        identity: Option<Identity>,
        peer: IpAddr,
        request: &request::Parts,
    ) -> Result<Response<SseBody>, StreamError> {
        let last_event_id = last_event_id(request);
        let retry_after_s = self.sse.retry_ms.div_ceil(1000).max(1);
        let slot = self.slots.clone().try_acquire_owned().map_err(|_| {
            self.hub.metrics().limited(Limit::MaxStreams);
            StreamError::TooManyStreams {
                max: self.sse.max_streams,
                retry_after_s,
            }
        })?;
        let peer_slot = self.per_peer.take(&client_key(peer)).ok_or_else(|| {
            self.hub.metrics().limited(Limit::MaxStreamsPerIp);
            StreamError::TooManyPeerStreams {
                max: self.per_peer.max(),
            }
        })?;
        let user_slot = match &identity {
            Some(identity) => Some(self.user_slot(&identity.user_id)?),
            None => None,
        };
        let key = StreamKey {
            route,
            params,
            user: identity.as_ref().map(|i| i.user_id.clone()),
        };
        let key_slot = self.keys.take(&key, key.route.max_keys).ok_or_else(|| {
            self.hub.metrics().limited(Limit::MaxKeys);
            StreamError::TooManyKeys {
                max: key.route.max_keys,
                retry_after_s,
            }
        })?;
        let subscription = self
            .hub
            .join(key, identity, self.sse.first_poll_wait)
            .await
            .map_err(|answer| StreamError::Refused {
                status: answer.status,
                detail: answer.detail.clone(),
                body: answer.body.clone(),
            })?;
        let (first, cursor) = subscription
            .channel()
            .start(last_event_id.as_deref(), self.sse.retry_ms);
        Metrics::inc(&self.hub.metrics().streams_started);
        let slots = Slots {
            global: slot,
            user: user_slot,
            peer: peer_slot,
            key: key_slot,
        };
        let mut response = Response::new(SseBody::new(subscription, first, cursor, slots));
        let headers = response.headers_mut();
        event_stream_headers(headers);
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
        Ok(response)
    }
}

impl Streams {
    /// Takes one of the user's stream slots, or refuses with 429.
    fn user_slot(&self, user: &str) -> Result<slots::UserSlot, StreamError> {
        self.per_user.take(&user.to_owned()).ok_or_else(|| {
            self.hub.metrics().limited(Limit::MaxStreamsPerUser);
            StreamError::TooManyUserStreams {
                max: self.sse.max_streams_per_user,
            }
        })
    }
}

/// The client's `Last-Event-ID` header, or the `last_event_id` query parameter (a browser
/// cannot set the header on its first connect). Empty means none; unreadable or over-long
/// ids become a value that matches nothing, so the client gets a resync.
fn last_event_id(request: &request::Parts) -> Option<String> {
    let raw = match request.headers.get("last-event-id") {
        Some(value) => match value.to_str() {
            Ok(text) => text.trim().to_owned(),
            Err(_) => return Some(String::new()),
        },
        None => {
            let query = request.uri.query()?;
            let value = query_param(query, "last_event_id")?;
            match percent_decode_str(value).decode_utf8() {
                Ok(text) => text.into_owned(),
                Err(_) => return Some(String::new()),
            }
        }
    };
    match raw.len() {
        0 => None,
        n if n > MAX_EVENT_ID_LEN => Some(String::new()),
        _ => Some(raw),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, header: Option<&str>) -> request::Parts {
        let mut builder = http::Request::builder().uri(uri);
        if let Some(value) = header {
            builder = builder.header("last-event-id", value);
        }
        builder.body(()).expect("request").into_parts().0
    }

    proptest::proptest! {
        #[test]
        fn last_event_id_survives_any_input(
            header in proptest::collection::vec(proptest::num::u8::ANY, 0..400),
            query in "[ -~]{0,400}",
        ) {
            let mut builder = http::Request::builder();
            if let Ok(uri) = format!("/s?{query}").parse::<http::Uri>() {
                builder = builder.uri(uri);
            }
            if let Ok(value) = HeaderValue::from_bytes(&header) {
                builder = builder.header("last-event-id", value);
            }
            if let Ok(request) = builder.body(()) {
                let id = last_event_id(&request.into_parts().0);
                proptest::prop_assert!(id.is_none_or(|id| id.len() <= MAX_EVENT_ID_LEN));
            }
        }
    }

    #[test]
    fn last_event_id_from_header_or_query() {
        assert_eq!(
            last_event_id(&parts("/s", Some("abc"))).as_deref(),
            Some("abc")
        );
        assert_eq!(
            last_event_id(&parts("/s?last_event_id=a%62c", None)).as_deref(),
            Some("abc")
        );
        assert_eq!(
            last_event_id(&parts("/s?last_event_id=q", Some("h"))).as_deref(),
            Some("h")
        );
        assert_eq!(last_event_id(&parts("/s", Some(""))), None);
        assert_eq!(last_event_id(&parts("/s", None)), None);
        let long = "x".repeat(MAX_EVENT_ID_LEN + 1);
        assert_eq!(
            last_event_id(&parts("/s", Some(&long))).as_deref(),
            Some("")
        );
    }
}
