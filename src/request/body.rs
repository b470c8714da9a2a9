//! The one response body type the server writes.
//!
//! An enum instead of a boxed trait object: no allocation per response, and the three kinds
//! of answer the proxy gives stay visible in one place.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::access::AccessLog;
use crate::origin::{BodyError, UpstreamBody};
use crate::stream::SseBody;

/// A response body: made by the proxy, streamed from the upstream, or an event stream.
pub enum ProxyBody {
    /// A small body the proxy made itself (JSON errors); `None` once sent.
    Full(Option<Bytes>),
    /// The upstream's body, streamed through frame by frame without buffering.
    Upstream(UpstreamBody),
    /// A long-lived `text/event-stream` fed by the hub.
    Stream(SseBody),
    /// Any of the above, counting its bytes for the access log line written when it ends.
    Logged(Box<Logged>),
}

/// A body and the access log line that it completes.
pub struct Logged {
    /// The body sent.
    body: ProxyBody,
    /// Written when this is dropped: when the body ended or the client went away.
    log: AccessLog,
}

impl ProxyBody {
    /// A body of exactly these bytes.
    pub fn full(bytes: Bytes) -> Self {
        ProxyBody::Full(Some(bytes))
    }

    /// This body, with `log` written once it ends.
    pub fn logged(self, log: AccessLog) -> Self {
        ProxyBody::Logged(Box::new(Logged { body: self, log }))
    }

    /// Whether this is an event stream (which only the proxy ends).
    pub fn is_stream(&self) -> bool {
        match self {
            ProxyBody::Stream(_) => true,
            ProxyBody::Logged(logged) => logged.body.is_stream(),
            ProxyBody::Full(_) | ProxyBody::Upstream(_) => false,
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ProxyBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Upstream(incoming) => Pin::new(incoming).poll_frame(cx),
            ProxyBody::Stream(sse) => Pin::new(sse).poll_frame(cx).map(|f| f.map(Ok)),
            ProxyBody::Logged(logged) => {
                let polled = Pin::new(&mut logged.body).poll_frame(cx);
                if let Poll::Ready(Some(Ok(frame))) = &polled
                    && let Some(data) = frame.data_ref()
                {
                    logged.log.bytes += data.len() as u64;
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(bytes) => bytes.is_none(),
            ProxyBody::Upstream(incoming) => incoming.is_end_stream(),
            ProxyBody::Stream(_) => false,
            ProxyBody::Logged(logged) => logged.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            ProxyBody::Upstream(incoming) => incoming.size_hint(),
            ProxyBody::Stream(_) => SizeHint::default(),
            ProxyBody::Logged(logged) => logged.body.size_hint(),
        }
    }
}
