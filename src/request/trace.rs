//! Request ids and trace context at the door: every request leaves here with its id (the
//! client's `X-Request-Id` when valid, else a new one), which passthrough states to the origin
//! and the answer carries back, and only well-formed trace headers, which passthrough forwards
//! as they are.

use http::{HeaderMap, HeaderValue};

use crate::http::trace::{REQUEST_ID, request_id, sanitize_trace_context};

/// Cleans the request's trace context and returns its id.
pub fn admit(headers: &mut HeaderMap) -> HeaderValue {
    sanitize_trace_context(headers);
    request_id(headers)
}

/// Returns the request's id to the client on its answer (replacing any the origin set: the
/// client asked with this one).
pub fn answer(headers: &mut HeaderMap, request_id: HeaderValue) {
    headers.insert(&REQUEST_ID, request_id);
}
