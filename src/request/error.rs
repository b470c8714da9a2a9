//! Request-level failures and how each one is answered.
//!
//! Every failure a client can see is one variant of [`ProxyError`]. The variant decides the
//! HTTP status, a stable machine-readable `error` code, and who caused it ([`Blame`]), so the
//! access log and the JSON body tell an operator at a glance whether to look at the client,
//! the origin or the proxy. Bodies are always JSON with at least a `detail` string.

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;

use crate::http::json::json_bytes;

use super::auth::AuthError;
use super::body::ProxyBody;
use super::router::RouteError;
use crate::origin::UpstreamError;
use crate::stream::StreamError;
use crate::stream::sse::{self, Event};

/// Who caused a failure, in the pingora sense: it tells the reader of a log where to look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The request was malformed, unauthenticated or over a limit.
    Client,
    /// The upstream was unreachable, slow, or answered something unusable.
    Origin,
}

impl Blame {
    /// The word used in logs and JSON bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            Blame::Client => "client",
            Blame::Origin => "origin",
        }
    }
}

/// A failure answered to the client instead of the normal response.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request cannot be served as sent (bad path or query parameter, bad encoding).
    #[error("{0}")]
    BadRequest(String),
    /// A stream route was called with a method other than GET.
    #[error("method {0} is not allowed on a stream route; use GET")]
    MethodNotAllowed(http::Method),
    /// An `auth = true` stream route was called without any token.
    #[error("missing credentials: send a token as {0}")]
    MissingCredentials(String),
    /// The global stream limit (`[sse] max_streams`) is reached.
    #[error("too many open streams ({max}); retry in {retry_after_s} s")]
    TooManyStreams {
        /// The configured limit, echoed so a client can show it.
        max: usize,
        /// Seconds the client should wait, also sent as `Retry-After`.
        retry_after_s: u64,
    },
    /// `[sse] max_streams_per_user` is reached for this user.
    #[error("too many open streams for this user ({max}); close one or retry later")]
    TooManyUserStreams {
        /// The configured per-user limit.
        max: usize,
    },
    /// `[sse] max_streams_per_ip` is reached for this client address.
    #[error("too many open streams from this address ({max}); close one or retry later")]
    TooManyIpStreams {
        /// The configured per-address limit.
        max: usize,
    },
    /// `[[stream]] max_keys` distinct keys are open on the route and this one is new.
    #[error("too many distinct streams open on this route ({max}); retry in {retry_after_s} s")]
    TooManyKeys {
        /// The configured limit.
        max: usize,
        /// Seconds the client should wait, also sent as `Retry-After`.
        retry_after_s: u64,
    },
    /// A CORS preflight the `[cors]` policy does not admit (origin or method).
    #[error("CORS preflight refused: {0}")]
    CorsRefused(String),
    /// The upstream refused or dropped the connection.
    #[error("upstream unreachable: {0}")]
    UpstreamUnreachable(String),
    /// The upstream did not answer within `[upstream] timeout_ms` (or did not connect in time).
    #[error("upstream did not answer within {0} ms")]
    UpstreamTimeout(u64),
    /// The upstream answered something that is not valid HTTP for us.
    #[error("upstream protocol error: {0}")]
    UpstreamProtocol(String),
    /// The token validator on the origin failed (not a rejection): nothing is cached.
    #[error("could not validate credentials: {0}")]
    ValidatorUnavailable(String),
    /// The origin's own answer is relayed with its status (a rejected token, a 404 for the
    /// stream's resource). The body is JSON with `detail`.
    #[error("{detail}")]
    Relayed {
        /// The origin's status (401, 403, 404, 410).
        status: StatusCode,
        /// The origin's `detail`, or a generic description when it gave none.
        detail: String,
        /// The origin's JSON body when it sent one; relayed as is.
        body: Option<Bytes>,
    },
}

impl ProxyError {
    /// The HTTP status this failure is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::MissingCredentials(_) => StatusCode::UNAUTHORIZED,
            ProxyError::TooManyStreams { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::TooManyUserStreams { .. } | ProxyError::TooManyIpStreams { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ProxyError::TooManyKeys { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::CorsRefused(_) => StatusCode::FORBIDDEN,
            ProxyError::UpstreamUnreachable(_) | ProxyError::UpstreamProtocol(_) => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::ValidatorUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Relayed { status, .. } => *status,
        }
    }

    /// Who caused it.
    pub fn blame(&self) -> Blame {
        match self {
            ProxyError::BadRequest(_)
            | ProxyError::MethodNotAllowed(_)
            | ProxyError::MissingCredentials(_)
            | ProxyError::TooManyStreams { .. }
            | ProxyError::TooManyUserStreams { .. }
            | ProxyError::TooManyIpStreams { .. }
            | ProxyError::TooManyKeys { .. }
            | ProxyError::CorsRefused(_)
            // The origin judged the client's request (a bad token, an unknown resource).
            | ProxyError::Relayed { .. } => Blame::Client,
            ProxyError::UpstreamUnreachable(_)
            | ProxyError::UpstreamTimeout(_)
            | ProxyError::UpstreamProtocol(_)
            | ProxyError::ValidatorUnavailable(_) => Blame::Origin,
        }
    }

    /// A stable code for the JSON body and logs.
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::BadRequest(_) => "bad_request",
            ProxyError::MethodNotAllowed(_) => "method_not_allowed",
            ProxyError::MissingCredentials(_) => "missing_credentials",
            ProxyError::TooManyStreams { .. } => "too_many_streams",
            ProxyError::TooManyUserStreams { .. } => "too_many_user_streams",
            ProxyError::TooManyIpStreams { .. } => "too_many_ip_streams",
            ProxyError::TooManyKeys { .. } => "too_many_keys",
            ProxyError::CorsRefused(_) => "cors_refused",
            ProxyError::UpstreamUnreachable(_) => "upstream_unreachable",
            ProxyError::UpstreamTimeout(_) => "upstream_timeout",
            ProxyError::UpstreamProtocol(_) => "upstream_protocol",
            ProxyError::ValidatorUnavailable(_) => "validator_unavailable",
            ProxyError::Relayed { .. } => "origin_rejected",
        }
    }

    /// The JSON response for this failure.
    pub fn into_response(self) -> Response<ProxyBody> {
        let status = self.status();
        let body = match &self {
            ProxyError::Relayed {
                body: Some(body), ..
            } => body.clone(),
            ProxyError::TooManyUserStreams { max } => json_bytes(&json!({
                "detail": self.to_string(),
                "error": self.code(),
                "max_streams_per_user": max,
            })),
            ProxyError::TooManyIpStreams { max } => json_bytes(&json!({
                "detail": self.to_string(),
                "error": self.code(),
                "max_streams_per_ip": max,
            })),
            ProxyError::TooManyStreams { max, retry_after_s } => json_bytes(&json!({
                "detail": self.to_string(),
                "error": self.code(),
                "max_connections": max,
                "retry_after": retry_after_s,
            })),
            _ => json_bytes(&json!({
                "detail": self.to_string(),
                "error": self.code(),
                "blame": self.blame().as_str(),
            })),
        };
        let mut response = json_response(status, body);
        let headers = response.headers_mut();
        match &self {
            ProxyError::TooManyStreams { retry_after_s, .. }
            | ProxyError::TooManyKeys { retry_after_s, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_s));
            }
            ProxyError::ValidatorUnavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ProxyError::MissingCredentials(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ProxyError::Relayed { status, .. } if *status == StatusCode::UNAUTHORIZED => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ProxyError::MethodNotAllowed(_) => {
                headers.insert(header::ALLOW, HeaderValue::from_static("GET"));
            }
            _ => {}
        }
        response
    }
}

impl ProxyError {
    /// The answer to an `EventSource` (a request with `Accept: text/event-stream`) for a
    /// failure that will pass: over a limit, validator or origin down. `EventSource` gives up
    /// for good on any non-200 answer and ignores `Retry-After`, so these are answered `200
    /// text/event-stream` with `retry:` (the wait, with up to 50 % jitter so freed capacity is
    /// not stormed by every waiting page at once), one `event` (named `[sse]
    /// unavailable_event`) whose JSON data says why, and the end of the stream: the browser
    /// reconnects by itself after the wait. Failures that will not pass (bad request, missing
    /// or rejected credentials, a resource the origin refused) stay HTTP errors, which stop
    /// `EventSource` as they should: `Err(self)`.
    pub fn into_event_stream(
        self,
        retry_ms: u64,
        event: &str,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let wait_ms = match &self {
            ProxyError::TooManyStreams { retry_after_s, .. }
            | ProxyError::TooManyKeys { retry_after_s, .. } => retry_after_s * 1000,
            ProxyError::TooManyUserStreams { .. }
            | ProxyError::TooManyIpStreams { .. }
            | ProxyError::ValidatorUnavailable(_)
            | ProxyError::UpstreamUnreachable(_)
            | ProxyError::UpstreamTimeout(_)
            | ProxyError::UpstreamProtocol(_) => retry_ms,
            // Named one by one, so a new failure has to be sorted here: a limit that frees
            // must not fall by default into "stop reconnecting for good".
            ProxyError::BadRequest(_)
            | ProxyError::MethodNotAllowed(_)
            | ProxyError::MissingCredentials(_)
            | ProxyError::CorsRefused(_)
            | ProxyError::Relayed { .. } => return Err(self),
        }
        .max(1);
        let wait_ms = wait_ms + fastrand::u64(0..=wait_ms / 2);
        let data = json!({
            "error": self.code(),
            "detail": self.to_string(),
            "blame": self.blame().as_str(),
            "status": self.status().as_u16(),
            "retry_ms": wait_ms,
        })
        .to_string();
        let mut body = BytesMut::new();
        sse::retry_into(&mut body, wait_ms);
        sse::encode_into(
            &mut body,
            &Event {
                id: None,
                event: Some(event),
                data: &data,
            },
        );
        let mut response = Response::new(ProxyBody::full(body.freeze()));
        crate::stream::event_stream_headers(response.headers_mut());
        Ok(response)
    }
}

/// Whether a request asks for an event stream (`Accept: text/event-stream`, as every
/// `EventSource` sends): such a client is answered refusals it survives.
pub fn wants_event_stream(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|range| {
            let media = range.split(';').next().unwrap_or("").trim();
            media.eq_ignore_ascii_case("text/event-stream")
        })
}

/// A response with a JSON body and the headers every proxy-made answer carries.
pub fn json_response(status: StatusCode, body: Bytes) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

impl From<UpstreamError> for ProxyError {
    fn from(error: UpstreamError) -> ProxyError {
        match error {
            UpstreamError::Unreachable(m) => ProxyError::UpstreamUnreachable(m),
            UpstreamError::Timeout(ms) => ProxyError::UpstreamTimeout(ms),
            e @ (UpstreamError::Protocol(_) | UpstreamError::TooLarge(_)) => {
                ProxyError::UpstreamProtocol(e.to_string())
            }
        }
    }
}

impl From<RouteError> for ProxyError {
    fn from(error: RouteError) -> ProxyError {
        ProxyError::BadRequest(error.to_string())
    }
}

impl From<AuthError> for ProxyError {
    fn from(error: AuthError) -> ProxyError {
        match error {
            AuthError::Missing(places) => ProxyError::MissingCredentials(places),
            AuthError::Rejected { status, detail } => ProxyError::Relayed {
                status,
                detail,
                body: None,
            },
            AuthError::Unforwardable => ProxyError::BadRequest(error.to_string()),
            AuthError::Unavailable(why) => ProxyError::ValidatorUnavailable(why),
        }
    }
}

impl From<StreamError> for ProxyError {
    fn from(error: StreamError) -> ProxyError {
        match error {
            StreamError::TooManyStreams { max, retry_after_s } => {
                ProxyError::TooManyStreams { max, retry_after_s }
            }
            StreamError::TooManyUserStreams { max } => ProxyError::TooManyUserStreams { max },
            StreamError::TooManyPeerStreams { max } => ProxyError::TooManyIpStreams { max },
            StreamError::TooManyKeys { max, retry_after_s } => {
                ProxyError::TooManyKeys { max, retry_after_s }
            }
            StreamError::Refused {
                status,
                detail,
                body,
            } => ProxyError::Relayed {
                status,
                detail,
                body,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_json(response: Response<ProxyBody>) -> serde_json::Value {
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("full body")
            .to_bytes();
        serde_json::from_slice(&bytes).expect("json body")
    }

    #[tokio::test]
    async fn too_many_streams_carries_limit_and_retry_after() {
        let response = ProxyError::TooManyStreams {
            max: 7,
            retry_after_s: 3,
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
        let body = body_json(response).await;
        assert_eq!(body["max_connections"], 7);
        assert_eq!(body["retry_after"], 3);
        assert!(body["detail"].as_str().is_some_and(|d| d.contains('7')));
    }

    #[tokio::test]
    async fn passing_failures_become_a_retryable_event_stream() {
        let response = ProxyError::TooManyStreams {
            max: 1,
            retry_after_s: 2,
        }
        .into_event_stream(500, "unavailable")
        .expect("an event stream");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/event-stream"
        );
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let text = std::str::from_utf8(&bytes).expect("utf-8");
        let retry: u64 = text
            .strip_prefix("retry: ")
            .and_then(|t| t.split('\n').next())
            .and_then(|n| n.parse().ok())
            .expect("retry first");
        assert!((2000..=3000).contains(&retry), "{retry}");
        assert!(text.contains("\nevent: unavailable\ndata: {"), "{text}");
        assert!(text.contains("\"error\":\"too_many_streams\""), "{text}");
        for lasting in [
            ProxyError::MissingCredentials("x".into()),
            ProxyError::BadRequest("x".into()),
            ProxyError::Relayed {
                status: StatusCode::NOT_FOUND,
                detail: "gone".into(),
                body: None,
            },
        ] {
            assert!(lasting.into_event_stream(500, "unavailable").is_err());
        }
    }

    #[test]
    fn accept_negotiation() {
        let accept = |v: &'static str| {
            let mut h = http::HeaderMap::new();
            h.insert(header::ACCEPT, HeaderValue::from_static(v));
            wants_event_stream(&h)
        };
        assert!(accept("text/event-stream"));
        assert!(accept("application/json, Text/Event-Stream;q=0.9"));
        assert!(!accept("application/json"));
        assert!(!accept("*/*"));
        assert!(!wants_event_stream(&http::HeaderMap::new()));
    }

    #[tokio::test]
    async fn upstream_errors_blame_the_origin() {
        let response = ProxyError::UpstreamTimeout(250).into_response();
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
        let body = body_json(response).await;
        assert_eq!(body["blame"], "origin");
        assert_eq!(body["error"], "upstream_timeout");
    }
}
