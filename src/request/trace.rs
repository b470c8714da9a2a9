//! Request ids and trace context at the door: every request leaves here with one valid
//! `X-Request-Id` (the client's when valid, else a new one) and only well-formed trace headers,
//! so passthrough forwards them to the origin as they are, and the answer carries the id back.

use http::{HeaderMap, HeaderValue};

use crate::http::trace::{REQUEST_ID, ensure_request_id, sanitize_trace_context};

/// Gives the request its id and cleans its trace context; returns the id.
pub fn admit(headers: &mut HeaderMap) -> HeaderValue {
    sanitize_trace_context(headers);
    ensure_request_id(headers)
}

/// Returns the request's id to the client on its answer (replacing any the origin set: the
/// client asked with this one).
pub fn answer(headers: &mut HeaderMap, request_id: HeaderValue) {
    headers.insert(REQUEST_ID, request_id);
}
