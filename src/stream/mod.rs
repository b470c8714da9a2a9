//! Stream routes: buffered JSON polled at the origin, served as `text/event-stream`.
//!
//! The phase a stream request goes through after routing and authentication: take a stream
//! slot, join the hub's channel for the key, wait (bounded by `first_poll_wait`) for the first
//! poll, then answer: the origin's refusal as a [`StreamError`], or an event stream that
//! starts with `retry:` and the current state (or the difference since `Last-Event-ID`).
//!
//! - [`sse`]: the frame encoder.
//! - [`delta`]: documents to changes, with content hashes.
//! - [`channel`]: one key's log, state and fan-out.
//! - [`hub`]: channels by key, their pollers' lifecycles.
//! - [`poller`]: polling one source.
//! - [`body`]: the response body that follows a channel.
//! - [`keys`]: the bound on distinct keys per route.

pub mod body;
pub mod channel;
pub mod delta;
pub mod hub;
pub mod keys;
pub mod poller;
pub mod sse;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header, request};
use percent_encoding::percent_decode_str;
use tokio::sync::Semaphore;

pub use body::SseBody;
use channel::{Phase, StreamKey};
use hub::Hub;
use keys::KeyCounts;

use crate::config::{SseConfig, StreamConfig};
use crate::http::query::query_param;
use crate::ops::metrics::{Limit, Metrics};

/// `Cache-Control` of every event stream: `no-cache` so no cache answers for the origin,
/// `no-transform` so no intermediary (a CDN compressing, a mobile proxy) buffers the stream.
pub const CACHE_CONTROL: &str = "no-cache, no-transform";

/// Longest `Last-Event-ID` looked up; longer ones are treated as unknown.
const MAX_EVENT_ID_LEN: usize = 256;

/// Who a validated stream belongs to, and what to forward on its behalf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The validator's user id: part of the hub key, sent upstream as `X-User-ID`.
    pub user_id: String,
    /// The `Authorization` forwarded on polls: the caller's own header, or
    /// `Bearer <token>` when the token came from elsewhere.
    pub authorization: HeaderValue,
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
    per_user: Arc<Mutex<HashMap<String, usize>>>,
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
            per_user: Arc::default(),
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
    /// validated user on `auth = true` routes). `request` gives the `Last-Event-ID`.
    pub async fn open(
        &self,
        route: Arc<StreamConfig>,
        params: Vec<String>,
        identity: Option<Identity>,
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
        let user_slot = match &identity {
            Some(identity) => Some(self.user_slot(&identity.user_id)?),
            None => None,
        };
        let key = StreamKey {
            route: route.index,
            params,
            user: identity.as_ref().map(|i| i.user_id.clone()),
        };
        let key_slot = self.keys.take(&key, route.max_keys).ok_or_else(|| {
            self.hub.metrics().limited(Limit::MaxKeys);
            StreamError::TooManyKeys {
                max: route.max_keys,
                retry_after_s,
            }
        })?;
        let subscription = self.hub.subscribe(route, key, identity);
        if let Phase::Failed(answer) = subscription.wait_ready(self.sse.first_poll_wait).await {
            return Err(StreamError::Refused {
                status: answer.status,
                detail: answer.detail.clone(),
                body: answer.body.clone(),
            });
        }
        let (first, cursor) = subscription
            .channel()
            .start(last_event_id.as_deref(), self.sse.retry_ms);
        Metrics::inc(&self.hub.metrics().streams_started);
        let mut response = Response::new(SseBody::new(
            subscription,
            first,
            cursor,
            slot,
            user_slot,
            key_slot,
        ));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(CACHE_CONTROL),
        );
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
        Ok(response)
    }
}

impl Streams {
    /// Takes one of the user's stream slots, or refuses with 429.
    fn user_slot(&self, user: &str) -> Result<UserSlot, StreamError> {
        let mut counts = self.per_user.lock().unwrap_or_else(|e| e.into_inner());
        let open = counts.entry(user.to_owned()).or_default();
        if *open >= self.sse.max_streams_per_user {
            self.hub.metrics().limited(Limit::MaxStreamsPerUser);
            return Err(StreamError::TooManyUserStreams {
                max: self.sse.max_streams_per_user,
            });
        }
        *open += 1;
        Ok(UserSlot {
            counts: self.per_user.clone(),
            user: user.to_owned(),
        })
    }
}

/// One of a user's stream slots, given back when the stream's body is dropped.
pub struct UserSlot {
    counts: Arc<Mutex<HashMap<String, usize>>>,
    user: String,
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = counts.get_mut(&self.user) {
            *open -= 1;
            if *open == 0 {
                counts.remove(&self.user);
            }
        }
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
