//! Request ids and trace context: `X-Request-Id`, W3C `traceparent`/`tracestate`, and AWS
//! X-Ray's `X-Amzn-Trace-Id`.
//!
//! The proxy records no spans of its own: it keeps a client's trace context intact on the way
//! to the origin (dropping malformed or oversized values, which would otherwise reach every
//! origin log), gives each request an id, and starts a fresh trace for each call it makes by
//! itself (polls, validations), so those can be found in the origin's logs too.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::names::carries;

/// The request id header, kept from the client when valid, else generated. (A static: the
/// proxy states it on forwarded requests by reference, `origin::Stated`.)
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// W3C Trace Context: the trace and parent span.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// W3C Trace Context: vendor-specific state, only meaningful next to a `traceparent`.
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
/// AWS X-Ray's trace header (ALB, API Gateway and Lambda set and read it).
pub const AMZN_TRACE_ID: HeaderName = HeaderName::from_static("x-amzn-trace-id");

/// Longest client-sent request id kept (longer ones are replaced by a generated id).
pub const MAX_REQUEST_ID: usize = 128;
/// Longest `tracestate` forwarded (W3C: 32 members; 512 bytes is what vendors must accept).
const MAX_TRACESTATE: usize = 512;
/// Longest `X-Amzn-Trace-Id` forwarded (Root, Parent, Sampled and a few extra fields).
const MAX_AMZN_TRACE_ID: usize = 256;

/// Whether a client-sent request id is kept: 1 to [`MAX_REQUEST_ID`] characters of letters,
/// digits and `-_.:+/=@` (UUIDs, ULIDs, base64, AWS and Heroku ids), so it is safe in log
/// lines and headers as is.
pub fn valid_request_id(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= MAX_REQUEST_ID
        && value
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-_.:+/=@".contains(&b))
}

/// A new request id: 32 lowercase hex digits (128 random bits, also usable as a trace id).
pub fn new_request_id() -> String {
    id_digits(nonzero_u128())
        .iter()
        .map(|&digit| char::from(digit))
        .collect()
}

/// `bits` as 32 lowercase hex digits, written without the formatter and without allocating:
/// every passthrough request without an id of its own gets a new one.
fn id_digits(bits: u128) -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0; 32];
    for (i, digit) in digits.iter_mut().enumerate() {
        *digit = HEX[(bits >> (4 * (31 - i)) & 0xf) as usize];
    }
    digits
}

/// The request's id: the client's `X-Request-Id` when it sent one line of it and that is
/// [`valid_request_id`], else a new one. `headers` are left as they are: what the origin gets
/// is stated beside them (passthrough states the id, replacing any line the client sent),
/// which costs no insert into the map on every request.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if carries(headers, &REQUEST_ID) {
        let mut sent = headers.get_all(&REQUEST_ID).iter();
        if let (Some(id), None) = (sent.next(), sent.next())
            && valid_request_id(id.as_bytes())
        {
            return id.clone();
        }
    }
    // Owned by the value's own shared buffer: the id goes to the origin and back to the
    // client, and each copy is then a reference, not an allocation.
    HeaderValue::from_maybe_shared(Bytes::from_owner(id_digits(nonzero_u128())))
        .unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// Keeps a client's trace context fit to forward: a `traceparent` that is not valid W3C
/// (version `00` layout, non-zero ids) is dropped with its `tracestate`; an oversized
/// `tracestate` or `X-Amzn-Trace-Id`, or one sent twice, is dropped.
pub fn sanitize_trace_context(headers: &mut HeaderMap) {
    // One pass over the names first: most requests carry no trace context, and each check
    // below is a lookup.
    let traced = [&TRACEPARENT, &TRACESTATE, &AMZN_TRACE_ID];
    if !headers.keys().any(|name| traced.contains(&name)) {
        return;
    }
    if !single_valid(headers, &TRACEPARENT, valid_traceparent) {
        headers.remove(TRACEPARENT);
        headers.remove(TRACESTATE);
    }
    if !single_valid(headers, &TRACESTATE, |v| v.len() <= MAX_TRACESTATE) {
        headers.remove(TRACESTATE);
    }
    if !single_valid(headers, &AMZN_TRACE_ID, |v| {
        v.len() <= MAX_AMZN_TRACE_ID && v.starts_with(b"Root=")
    }) {
        headers.remove(AMZN_TRACE_ID);
    }
}

/// Trace headers for a call the proxy makes by itself (a poll, a validation): a new trace
/// (`traceparent`, sampled) whose trace id is also the call's `X-Request-Id`. Headers the
/// caller set already (a configured poll header) are kept.
pub fn start_trace(headers: &mut HeaderMap) -> String {
    let trace_id = new_request_id();
    let parent = format!("00-{trace_id}-{:016x}-01", nonzero_u64());
    if let Ok(value) = HeaderValue::from_str(&parent) {
        headers.entry(TRACEPARENT).or_insert(value);
    }
    if let Ok(value) = HeaderValue::from_str(&trace_id) {
        headers.entry(&REQUEST_ID).or_insert(value);
    }
    trace_id
}

/// Whether `traceparent` is `00-<32 hex>-<16 hex>-<2 hex>` with non-zero ids (W3C Trace
/// Context §3.2; lowercase hex only). Later versions may append fields after a `-`.
pub fn valid_traceparent(value: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(value) else {
        return false;
    };
    let mut fields = text.split('-');
    let (Some(version), Some(trace), Some(parent), Some(flags)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return false;
    };
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    let known = version == "00" && fields.next().is_none();
    let future = hex(version, 2) && version != "ff" && version != "00";
    (known || future)
        && hex(trace, 32)
        && nonzero(trace)
        && hex(parent, 16)
        && nonzero(parent)
        && hex(flags, 2)
}

/// Whether `name` is absent, or present once with a value passing `check`.
fn single_valid(headers: &HeaderMap, name: &HeaderName, check: impl Fn(&[u8]) -> bool) -> bool {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => true,
        (Some(value), None) => check(value.as_bytes()),
        (Some(_), Some(_)) => false,
    }
}

fn nonzero_u128() -> u128 {
    fastrand::u128(1..)
}

fn nonzero_u64() -> u64 {
    fastrand::u64(1..)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_when_valid_and_replaced_otherwise() {
        let mut headers = HeaderMap::new();
        headers.insert(&REQUEST_ID, HeaderValue::from_static("req-42_a.b:c"));
        assert_eq!(request_id(&headers), "req-42_a.b:c");

        for bad in ["has space", "quote\"", "", &"x".repeat(129)] {
            let mut headers = HeaderMap::new();
            headers.insert(&REQUEST_ID, HeaderValue::from_str(bad).expect("value"));
            let id = request_id(&headers);
            assert_eq!(id.len(), 32, "{bad:?}");
            assert_ne!(id, bad);
        }
        let mut twice = HeaderMap::new();
        twice.append(&REQUEST_ID, HeaderValue::from_static("a"));
        twice.append(&REQUEST_ID, HeaderValue::from_static("b"));
        let id = request_id(&twice);
        assert_eq!(id.len(), 32);
        assert_ne!(request_id(&HeaderMap::new()), request_id(&HeaderMap::new()));
        assert_ne!(new_request_id(), new_request_id());
        let id = new_request_id();
        assert!(
            id.len() == 32
                && id
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
            "{id}"
        );
    }

    #[test]
    fn traceparent_is_checked_as_w3c_says() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(valid_traceparent(good.as_bytes()));
        assert!(valid_traceparent(
            b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"
        ));
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert!(!valid_traceparent(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn malformed_trace_context_is_dropped_and_good_context_kept() {
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_static("nope"));
        headers.insert(TRACESTATE, HeaderValue::from_static("a=b"));
        headers.insert(
            AMZN_TRACE_ID,
            HeaderValue::from_static("Root=1-5759e988-bd862e3fe1be46a994272793"),
        );
        sanitize_trace_context(&mut headers);
        assert!(!headers.contains_key(TRACEPARENT) && !headers.contains_key(TRACESTATE));
        assert!(headers.contains_key(AMZN_TRACE_ID));

        let mut headers = HeaderMap::new();
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        headers.insert(TRACEPARENT, HeaderValue::from_static(parent));
        headers.insert(
            TRACESTATE,
            HeaderValue::from_str(&"k=v,".repeat(200)).expect("value"),
        );
        headers.insert(AMZN_TRACE_ID, HeaderValue::from_static("Self=1"));
        sanitize_trace_context(&mut headers);
        assert_eq!(headers[TRACEPARENT], parent);
        assert!(!headers.contains_key(TRACESTATE));
        assert!(!headers.contains_key(AMZN_TRACE_ID));
    }

    #[test]
    fn own_calls_start_a_trace_without_overriding_configured_headers() {
        let mut headers = HeaderMap::new();
        let trace = start_trace(&mut headers);
        let parent = headers[TRACEPARENT].to_str().expect("ascii").to_owned();
        assert!(valid_traceparent(parent.as_bytes()), "{parent}");
        assert!(parent.contains(&trace));
        assert_eq!(headers[&REQUEST_ID], trace.as_str());

        let mut configured = HeaderMap::new();
        configured.insert(&REQUEST_ID, HeaderValue::from_static("mine"));
        start_trace(&mut configured);
        assert_eq!(configured[&REQUEST_ID], "mine");
    }
}
